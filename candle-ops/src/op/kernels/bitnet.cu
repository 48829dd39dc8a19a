// BitNet b1.58 CUDA kernels: int8 activation quantization (optionally fused with RMSNorm and the
// gated FFN activation), the ternary GEMV (dp4a) and GEMM (int8 tensor-core mma.sync), the dense
// LM head, the embedding gather, RoPE with the KV-cache write, and causal attention.
//
// Compiled to PTX by candle-ops/build.rs with -fmad=false: every float result that the CPU
// reference also computes (quantization, rescaling, norms, RoPE) uses the same IEEE operations in
// the same order, so no multiply-add may be contracted.
//
// Ternary weight layout ("GPU layout", built by candle-ops/src/op/cuda.rs from the CPU matrix):
// row-major, each row `kp / 4` bytes (kp = in_features rounded up to 128), in 32-byte blocks of
// 128 columns. Stored byte s = 8t + 4h + b (t = 0..3, h = 0..1, b = 0..3) of block B holds the
// 2-bit codes (w + 1) of columns 128B + 32p + 16h + 4t + b at bits 6-2p, p = 0..3. So
//  - the 8 bytes at 8t are exactly the two mma B-fragment words of lane t of a row (k = 4t.. and
//    16 + 4t.. of each 32-column step p), and
//  - each 32-bit word gives, per plane p, four codes whose four columns are consecutive.
// Rows are padded to a multiple of 64 with zero weights (code 1).
//
// Activation layouts written by the quantizer:
//  - ROWS: int8 [m_pad, kp] row-major (GEMM A operand), padded rows and columns zero.
//  - PERM: per token, the order in which GEMV lanes consume it: 16-byte chunk q of a weight row
//    (lane q % 32 of iteration q / 32) needs, per plane p, 16 activation bytes, stored at
//    (q / 32) * 2048 + p * 512 + (q % 32) * 16, so each warp load is 512 contiguous bytes.

#include <stdint.h>
#include <cuda_fp16.h>

#define FULL_MASK 0xffffffffu
// Values per thread of a quantizer row kept in registers (rows up to 8 x 1024 columns).
#define QROW_REGS 8

__device__ __forceinline__ float warp_sum_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ unsigned warp_max_u(unsigned v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
__device__ __forceinline__ float warp_max_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Block-wide reductions (blockDim.x a multiple of 32, at most 1024). Every thread gets the result.
__device__ float block_sum_f(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_f(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = lane < nw ? red[lane] : 0.f;
    return warp_sum_f(r);
}
__device__ int block_sum_i(int v, int* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_i(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    int r = lane < nw ? red[lane] : 0;
    return warp_sum_i(r);
}
__device__ unsigned block_max_u(unsigned v, unsigned* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max_u(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    unsigned r = lane < nw ? red[lane] : 0u;
    return warp_max_u(r);
}

// Position of column k in a PERM activation row.
__device__ __forceinline__ int perm_index(int k) {
    const int blk = k >> 7, r = k & 127, p = r >> 5, u = r & 31;
    const int h = u >> 4, v = u & 15, t = v >> 2, b = v & 3;
    const int s = 8 * t + 4 * h + b;
    const int q = 2 * blk + (s >> 4), o = s & 15;
    return (q >> 5) * 2048 + p * 512 + (q & 31) * 16 + o;
}

// The gated FFN activation act(gate) * up: relu(g)^2 (act 0, BitNet) or silu(g) (act 1).
__device__ __forceinline__ float gated_value(float g, float u, int act) {
    if (act == 0) {
        const float r = fmaxf(g, 0.f);
        return __fmul_rn(__fmul_rn(r, r), u);
    }
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.f, expf(-g))), u);
}

// Value i of the quantizer's input row: plain, or the gated activation of (x, up).
__device__ __forceinline__ float input_value(const float* x, const float* up, int act, int i) {
    return up == nullptr ? x[i] : gated_value(x[i], up[i], act);
}

// One block per row (gridDim.x = m_pad). Optional RMSNorm (norm_w != null):
//   h = v / sqrt(sum(v^2) / cols + eps) * w       (v / m * w, as the CPU computes it)
// then BitNet's per-token absmax int8 quantization of h:
//   s = 127 / max(max|h|, 1e-5), q = clamp(round_half_even(h * s), -128, 127), sum = sum(q).
// A non-finite input makes s NaN, so every output of the row is NaN.
// perm != 0 writes the PERM layout (row stride perm_stride), else ROWS (row stride kp).
// h_out (optional) receives h as f32 [m, cols].
extern "C" __global__ void bitnet_quantize(
    const float* __restrict__ x, const float* __restrict__ up, long long x_stride,
    const float* __restrict__ norm_w, float eps, int act,
    int m, int cols, int kp, int perm, int perm_stride,
    int8_t* __restrict__ q, float* __restrict__ scales, int* __restrict__ sums,
    float* __restrict__ h_out)
{
    __shared__ float redf[32];
    __shared__ unsigned redu[32];
    __shared__ int redi[32];
    const int row = blockIdx.x;
    int8_t* qrow = q + (long long)row * (perm ? perm_stride : kp);
    if (row >= m) {  // padding rows of the GEMM operand
        for (int i = threadIdx.x; i < kp; i += blockDim.x) qrow[i] = 0;
        if (threadIdx.x == 0) { scales[row] = 1.f; sums[row] = 0; }
        return;
    }
    const float* xr = x + (long long)row * x_stride;
    const float* ur = up ? up + (long long)row * x_stride : nullptr;

    const bool norm = norm_w != nullptr;
    const int bd = blockDim.x;
    int sum = 0;
    if (kp <= QROW_REGS * bd) {
        // The whole row in registers: one read of the input (same sums in the same order as
        // the loops below and as bitnet_rms_norm).
        float v[QROW_REGS];
#pragma unroll
        for (int r = 0; r < QROW_REGS; ++r) {
            const int i = threadIdx.x + r * bd;
            v[r] = i < cols ? input_value(xr, ur, act, i) : 0.f;
        }
        float m_rms = 1.f;
        if (norm) {
            float s2 = 0.f;
#pragma unroll
            for (int r = 0; r < QROW_REGS; ++r)
                if (threadIdx.x + r * bd < cols) s2 = __fadd_rn(s2, __fmul_rn(v[r], v[r]));
            s2 = block_sum_f(s2, redf);
            m_rms = __fsqrt_rn(__fadd_rn(__fdiv_rn(s2, (float)cols), eps));
        }
        unsigned bits = 0;
#pragma unroll
        for (int r = 0; r < QROW_REGS; ++r) {
            const int i = threadIdx.x + r * bd;
            if (i < cols) {
                if (norm) v[r] = __fmul_rn(__fdiv_rn(v[r], m_rms), norm_w[i]);
                bits = max(bits, __float_as_uint(v[r]) & 0x7fffffffu);
            }
        }
        bits = block_max_u(bits, redu);
        const float s = bits >= 0x7f800000u ? __int_as_float(0x7fc00000)
                                             : __fdiv_rn(127.f, fmaxf(__uint_as_float(bits), 1e-5f));
#pragma unroll
        for (int r = 0; r < QROW_REGS; ++r) {
            const int i = threadIdx.x + r * bd;
            if (i < kp) {
                int qi = 0;
                if (i < cols) {
                    if (h_out) h_out[(long long)row * cols + i] = v[r];
                    qi = (int)fminf(fmaxf(rintf(__fmul_rn(v[r], s)), -128.f), 127.f);
                }
                sum += qi;
                qrow[perm ? perm_index(i) : i] = (int8_t)qi;
            }
        }
        sum = block_sum_i(sum, redi);
        if (threadIdx.x == 0) { scales[row] = s; sums[row] = sum; }
        return;
    }
    float m_rms = 1.f;
    if (norm) {
        float s2 = 0.f;
        for (int i = threadIdx.x; i < cols; i += blockDim.x) {
            const float v = input_value(xr, ur, act, i);
            s2 = __fadd_rn(s2, __fmul_rn(v, v));
        }
        s2 = block_sum_f(s2, redf);
        m_rms = __fsqrt_rn(__fadd_rn(__fdiv_rn(s2, (float)cols), eps));
    }
    unsigned bits = 0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = input_value(xr, ur, act, i);
        if (norm) v = __fmul_rn(__fdiv_rn(v, m_rms), norm_w[i]);
        bits = max(bits, __float_as_uint(v) & 0x7fffffffu);
    }
    bits = block_max_u(bits, redu);
    const float absmax = __uint_as_float(bits);
    const float s = bits >= 0x7f800000u ? __int_as_float(0x7fc00000) : __fdiv_rn(127.f, fmaxf(absmax, 1e-5f));
    for (int i = threadIdx.x; i < kp; i += blockDim.x) {
        int qi = 0;
        if (i < cols) {
            float v = input_value(xr, ur, act, i);
            if (norm) v = __fmul_rn(__fdiv_rn(v, m_rms), norm_w[i]);
            if (h_out) h_out[(long long)row * cols + i] = v;
            const float r = rintf(__fmul_rn(v, s));
            qi = (int)fminf(fmaxf(r, -128.f), 127.f);  // a NaN row gives NaN outputs through s anyway
        }
        sum += qi;
        qrow[perm ? perm_index(i) : i] = (int8_t)qi;
    }
    sum = block_sum_i(sum, redi);
    if (threadIdx.x == 0) { scales[row] = s; sums[row] = sum; }
}

// y = acc_int * (row_scale / s): the CPU's `v as f32 * (w_scale / s)`, then the optional output
// scale, stored or added to y (the residual stream).
__device__ __forceinline__ void store_out(float* y, long long at, int acc, int sum, float s,
                                          float rscale, const float* oscale, int n, int add) {
    float v = __fmul_rn(__int2float_rn(acc - sum), __fdiv_rn(rscale, s));
    if (oscale) v = __fmul_rn(v, oscale[n]);
    y[at] = add ? __fadd_rn(y[at], v) : v;
}

// GEMV for NT tokens: one warp per weight row, dp4a over the PERM activations.
template <int NT>
__device__ void gemv_body(const uint8_t* __restrict__ w, int kp, int n_rows,
                          const int8_t* __restrict__ act, int perm_stride,
                          const float* __restrict__ scales, const int* __restrict__ sums,
                          const float* __restrict__ row_scale, const float* __restrict__ row_oscale,
                          float* __restrict__ y, long long y_stride, int add)
{
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n_rows) return;
    const int nch = kp >> 6;  // 16-byte chunks per row
    const uint4* wrow = reinterpret_cast<const uint4*>(w + (long long)row * (kp >> 2));
    int acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0;
    for (int base = 0; base < nch; base += 128) {
        uint4 wv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = base + u * 32 + lane;
            wv[u] = c < nch ? __ldg(wrow + c) : make_uint4(0x55555555u, 0x55555555u, 0x55555555u, 0x55555555u);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = base + u * 32 + lane;
            if (c >= nch) break;
            const int it = c >> 5;
            const uint32_t ww[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                const int8_t* a = act + (long long)t * perm_stride + it * 2048 + lane * 16;
#pragma unroll
                for (int p = 0; p < 4; ++p) {
                    const uint4 av = __ldg(reinterpret_cast<const uint4*>(a + p * 512));
                    const int shift = 6 - 2 * p;
                    acc[t] = __dp4a((int)((ww[0] >> shift) & 0x03030303u), (int)av.x, acc[t]);
                    acc[t] = __dp4a((int)((ww[1] >> shift) & 0x03030303u), (int)av.y, acc[t]);
                    acc[t] = __dp4a((int)((ww[2] >> shift) & 0x03030303u), (int)av.z, acc[t]);
                    acc[t] = __dp4a((int)((ww[3] >> shift) & 0x03030303u), (int)av.w, acc[t]);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = warp_sum_i(acc[t]);
    if (lane < NT) {
        int mine = 0;
#pragma unroll
        for (int t = 0; t < NT; ++t) if (t == lane) mine = acc[t];
        store_out(y, (long long)lane * y_stride + row, mine, sums[lane], scales[lane], row_scale[row],
                  row_oscale, row, add);
    }
}

#define GEMV_KERNEL(NT)                                                                          \
    extern "C" __global__ void bitnet_gemv_##NT(                                                 \
        const uint8_t* w, int kp, int n_rows, const int8_t* act, int perm_stride,                \
        const float* scales, const int* sums, const float* row_scale, const float* row_oscale,   \
        float* y, long long y_stride, int add) {                                                 \
        gemv_body<NT>(w, kp, n_rows, act, perm_stride, scales, sums, row_scale, row_oscale, y,   \
                      y_stride, add);                                                            \
    }
GEMV_KERNEL(1)
GEMV_KERNEL(2)
GEMV_KERNEL(3)
GEMV_KERNEL(4)
GEMV_KERNEL(5)
GEMV_KERNEL(6)
GEMV_KERNEL(7)
GEMV_KERNEL(8)

__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    // PTX ISA, mma.m16n8k32 with .s8: lane = 4 * g + t.
    //   A (16x32, row): a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]
    //   B (32x8, col):  b0 = B[4t..][g], b1 = B[16+4t..][g]
    //   C (16x8):       c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_AST 144  // A tile row stride in bytes (128 + 16: conflict-free fragment loads)

// GEMM: y[m, n] = sum_k act[m, k] * W[n, k] for m < m_real, n < n_rows, tensor cores.
// 128 threads = 4 warps as 2 (tokens) x 2 (rows); each warp owns 32 tokens x 32 rows.
// act: ROWS layout [m_pad, kp] (m_pad a multiple of 64), w: GPU layout with rows padded to 64.
extern "C" __global__ void __launch_bounds__(128) bitnet_gemm(
    const uint8_t* __restrict__ w, int kp, int n_rows, const int8_t* __restrict__ act, int m_real,
    const float* __restrict__ scales, const int* __restrict__ sums,
    const float* __restrict__ row_scale, const float* __restrict__ row_oscale,
    float* __restrict__ y, long long y_stride, int add)
{
    __shared__ __align__(16) uint8_t as[GEMM_BM * GEMM_AST];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = warp >> 1, wn = warp & 1;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int nblk = kp >> 7;
    const long long rb = kp >> 2;  // weight bytes per row

    // This thread's share of the A tile: 64 rows x 128 bytes = 512 uint4, 4 per thread.
    const uint4* arow = reinterpret_cast<const uint4*>(act + (long long)m0 * kp);
    uint4 a_next[4];
    uint2 b_next[4];
    const uint8_t* wbase = w + (long long)(n0 + wn * 32 + g) * rb + 8 * t;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int idx = tid + i * 128, r = idx >> 3, c = idx & 7;
        a_next[i] = arow[(long long)r * (kp >> 4) + c];
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) b_next[j] = *reinterpret_cast<const uint2*>(wbase + (long long)j * 8 * rb);

    int acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[i][j][c] = 0;

    for (int blk = 0; blk < nblk; ++blk) {
        __syncthreads();  // the previous block's fragments have been read
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int idx = tid + i * 128, r = idx >> 3, c = idx & 7;
            *reinterpret_cast<uint4*>(as + r * GEMM_AST + c * 16) = a_next[i];
        }
        uint2 bw[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) bw[j] = b_next[j];
        __syncthreads();
        if (blk + 1 < nblk) {  // prefetch the next 128 columns while this block computes
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int idx = tid + i * 128, r = idx >> 3, c = idx & 7;
                a_next[i] = arow[(long long)r * (kp >> 4) + (blk + 1) * 8 + c];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j)
                b_next[j] = *reinterpret_cast<const uint2*>(wbase + (long long)j * 8 * rb + (blk + 1) * 32);
        }
#pragma unroll
        for (int p = 0; p < 4; ++p) {
            const int shift = 6 - 2 * p;
            uint32_t af[2][4];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const uint8_t* base = as + (wm * 32 + i * 16 + g) * GEMM_AST + p * 32 + 4 * t;
                af[i][0] = *reinterpret_cast<const uint32_t*>(base);
                af[i][1] = *reinterpret_cast<const uint32_t*>(base + 8 * GEMM_AST);
                af[i][2] = *reinterpret_cast<const uint32_t*>(base + 16);
                af[i][3] = *reinterpret_cast<const uint32_t*>(base + 8 * GEMM_AST + 16);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const uint32_t b0 = (bw[j].x >> shift) & 0x03030303u;
                const uint32_t b1 = (bw[j].y >> shift) & 0x03030303u;
#pragma unroll
                for (int i = 0; i < 2; ++i) mma_s8(acc[i][j], af[i], b0, b1);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int m = m0 + wm * 32 + i * 16 + g + 8 * half;
            if (m >= m_real) continue;
            const int sum = sums[m];
            const float s = scales[m];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int n = n0 + wn * 32 + j * 8 + 2 * t + e;
                    if (n < n_rows)
                        store_out(y, (long long)m * y_stride + n, acc[i][j][2 * half + e], sum, s,
                                  row_scale[n], row_oscale, n, add);
                }
            }
        }
    }
}

// Dense LM head: logits[t, n] = sum_k x[t, k] * W[n, k] for up to 8 tokens, W f16 or f32
// [n_rows, cols], one warp per row, f32 accumulation.
template <typename T, int NT>
__device__ void dense_body(const T* __restrict__ w, int n_rows, int cols, const float* __restrict__ x,
                           float* __restrict__ y, long long y_stride)
{
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n_rows) return;
    const T* wr = w + (long long)row * cols;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;
    for (int k = lane; k < cols; k += 32) {
        float wv;
        if constexpr (sizeof(T) == 2) wv = __half2float(reinterpret_cast<const __half*>(wr)[k]);
        else wv = reinterpret_cast<const float*>(wr)[k];
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[t] = __fadd_rn(acc[t], __fmul_rn(wv, x[(long long)t * cols + k]));
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const float v = warp_sum_f(acc[t]);
        if (lane == 0) y[(long long)t * y_stride + row] = v;
    }
}

// Vectorized f16 version for the common case (cols a multiple of 256): 8 halves per load.
template <int NT>
__device__ void dense_f16_vec(const __half* __restrict__ w, int n_rows, int cols, const float* __restrict__ x,
                              float* __restrict__ y, long long y_stride)
{
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n_rows) return;
    const uint4* wr = reinterpret_cast<const uint4*>(w + (long long)row * cols);
    const int nv = cols >> 3;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;
    for (int base = 0; base < nv; base += 128) {
        uint4 wv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = base + u * 32 + lane;
            wv[u] = c < nv ? __ldcs(wr + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = base + u * 32 + lane;
            if (c >= nv) break;
            const __half2* h2 = reinterpret_cast<const __half2*>(&wv[u]);
            float wf[8];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 f = __half22float2(h2[e]);
                wf[2 * e] = f.x;
                wf[2 * e + 1] = f.y;
            }
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                const float4* xv = reinterpret_cast<const float4*>(x + (long long)t * cols + c * 8);
                const float4 x0 = xv[0], x1 = xv[1];
                float s = acc[t];
                s = __fadd_rn(s, __fmul_rn(wf[0], x0.x));
                s = __fadd_rn(s, __fmul_rn(wf[1], x0.y));
                s = __fadd_rn(s, __fmul_rn(wf[2], x0.z));
                s = __fadd_rn(s, __fmul_rn(wf[3], x0.w));
                s = __fadd_rn(s, __fmul_rn(wf[4], x1.x));
                s = __fadd_rn(s, __fmul_rn(wf[5], x1.y));
                s = __fadd_rn(s, __fmul_rn(wf[6], x1.z));
                s = __fadd_rn(s, __fmul_rn(wf[7], x1.w));
                acc[t] = s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const float v = warp_sum_f(acc[t]);
        if (lane == 0) y[(long long)t * y_stride + row] = v;
    }
}

#define DENSE_KERNELS(NT)                                                                         \
    extern "C" __global__ void bitnet_dense_f16_##NT(const __half* w, int n_rows, int cols,       \
                                                     const float* x, float* y, long long ys) {    \
        if ((cols & 255) == 0) dense_f16_vec<NT>(w, n_rows, cols, x, y, ys);                      \
        else dense_body<__half, NT>(w, n_rows, cols, x, y, ys);                                   \
    }                                                                                             \
    extern "C" __global__ void bitnet_dense_f32_##NT(const float* w, int n_rows, int cols,        \
                                                     const float* x, float* y, long long ys) {    \
        dense_body<float, NT>(w, n_rows, cols, x, y, ys);                                         \
    }
DENSE_KERNELS(1)
DENSE_KERNELS(2)
DENSE_KERNELS(3)
DENSE_KERNELS(4)
DENSE_KERNELS(5)
DENSE_KERNELS(6)
DENSE_KERNELS(7)
DENSE_KERNELS(8)

// out[t, :] = table[ids[t], :] as f32. grid = n_tokens.
extern "C" __global__ void bitnet_embed_f16(const __half* __restrict__ table, const uint32_t* __restrict__ ids,
                                            int cols, float* __restrict__ out) {
    const long long row = ids[blockIdx.x];
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        out[(long long)blockIdx.x * cols + i] = __half2float(table[row * cols + i]);
}
extern "C" __global__ void bitnet_embed_f32(const float* __restrict__ table, const uint32_t* __restrict__ ids,
                                            int cols, float* __restrict__ out) {
    const long long row = ids[blockIdx.x];
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        out[(long long)blockIdx.x * cols + i] = table[row * cols + i];
}

// RoPE in place on the q and k parts of token-major rows [n_tokens, row_stride] (q at column 0,
// n_head heads; k at column k_off, n_kv heads), tokens at positions *start_pos + t. cos/sin:
// [n_ctx, d/2] (the start position is *start_pos when that pointer is set, else start_val: the
// decode graph reads it from device memory). neox: pairs (i, i + d/2), else (2i, 2i + 1).
// rotate = 0 skips the rotation. Then, when cache != null, the
// rotated k and the v part (column v_off) of each token are written to the layer's cache
// [2][n_kv][n_ctx][d] at its position. grid = (n_tokens), block = 128.
extern "C" __global__ void bitnet_rope_kv(
    float* __restrict__ rows, long long row_stride, int n_head, int n_kv, int d, int k_off, int v_off,
    const float* __restrict__ cos_t, const float* __restrict__ sin_t, const int* __restrict__ start_pos,
    int start_val, int neox, int rotate, float* __restrict__ cache, int n_ctx)
{
    const int tok = blockIdx.x;
    const int pos = (start_pos ? *start_pos : start_val) + tok;
    const int half = d >> 1;
    float* row = rows + (long long)tok * row_stride;
    const float* cs = cos_t + (long long)pos * half;
    const float* sn = sin_t + (long long)pos * half;
    const int pairs = rotate ? (n_head + n_kv) * half : 0;
    for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
        const int h = i / half, j = i % half;
        float* head = h < n_head ? row + h * d : row + k_off + (h - n_head) * d;
        const int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
        const float x1 = head[a], x2 = head[b];
        head[a] = __fsub_rn(__fmul_rn(x1, cs[j]), __fmul_rn(x2, sn[j]));
        head[b] = __fadd_rn(__fmul_rn(x1, sn[j]), __fmul_rn(x2, cs[j]));
    }
    if (cache == nullptr) return;
    __syncthreads();
    const long long plane = (long long)n_kv * n_ctx * d;
    for (int i = threadIdx.x; i < n_kv * d; i += blockDim.x) {
        const int gk = i / d, c = i % d;
        const long long at = ((long long)gk * n_ctx + pos) * d + c;
        cache[at] = row[k_off + i];
        cache[plane + at] = row[v_off + i];
    }
}

// Causal attention over the cache for n_tokens queries at positions *start_pos + t:
// out[t, h*d ..] = softmax(q . k_j * scale, j <= pos) . v_j, GQA head h reads kv head h / n_rep.
// grid = (n_head, n_tokens), block = 256 (d a multiple of 4, at most 1024).
// scores: scratch [n_tokens, n_head, score_stride >= *start_pos + n_tokens].
extern "C" __global__ void __launch_bounds__(256) bitnet_attention(
    const float* __restrict__ q, long long q_stride, const float* __restrict__ cache, int n_ctx,
    int n_head, int n_kv, int d, const int* __restrict__ start_pos, int start_val, float scale,
    float* __restrict__ scores, int score_stride, float* __restrict__ out, long long out_stride)
{
    extern __shared__ float sm[];  // the query (d floats), then partial outputs (1024 floats)
    __shared__ float red[32];
    const int h = blockIdx.x, tok = blockIdx.y;
    const int gk = h / (n_head / n_kv);
    const int len = (start_pos ? *start_pos : start_val) + tok + 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const float* kbase = cache + (long long)gk * n_ctx * d;
    const float* vbase = cache + (long long)n_kv * n_ctx * d + (long long)gk * n_ctx * d;
    const float* qh = q + (long long)tok * q_stride + (long long)h * d;
    float* qs = sm;
    for (int i = threadIdx.x; i < d; i += blockDim.x) qs[i] = qh[i];
    __syncthreads();
    float* sc = scores + ((long long)tok * n_head + h) * score_stride;
    // Scores: one warp per position.
    float mx = -INFINITY;
#pragma unroll 4
    for (int j = warp; j < len; j += nw) {
        const float* kj = kbase + (long long)j * d;
        float s = 0.f;
        for (int c = lane; c < d; c += 32) s = __fadd_rn(s, __fmul_rn(qs[c], kj[c]));
        s = warp_sum_f(s) * scale;
        if (lane == 0) sc[j] = s;
        mx = fmaxf(mx, s);
    }
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = lane < nw ? red[lane] : -INFINITY;
    mx = warp_max_f(mx);
    __syncthreads();
    float tot = 0.f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const float e = expf(sc[j] - mx);
        sc[j] = e;
        tot += e;
    }
    tot = block_sum_f(tot, red);  // its barriers also order the writes to sc before the reads
    const float inv = 1.f / tot;
    // out = sum_j p_j v_j: thread (group g, quad c4) adds 4 channels over positions g, g + groups, ...
    const int quads = d >> 2, groups = blockDim.x / quads;
    const int grp = threadIdx.x / quads, c4 = (threadIdx.x % quads) * 4;
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    if (grp < groups) {
#pragma unroll 4
        for (int j = grp; j < len; j += groups) {
            const float p = sc[j];
            const float4 v = *reinterpret_cast<const float4*>(vbase + (long long)j * d + c4);
            o.x += p * v.x;
            o.y += p * v.y;
            o.z += p * v.z;
            o.w += p * v.w;
        }
        *reinterpret_cast<float4*>(sm + d + grp * d + c4) = o;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float v = 0.f;
        for (int g = 0; g < groups; ++g) v += sm[d + g * d + c];
        out[(long long)tok * out_stride + (long long)h * d + c] = v * inv;
    }
}

// gate = relu(gate)^2 * up on [n_tokens, 2 * ff] rows (gate first), written to out [n_tokens, ff].
// (silu for act == 1.)
extern "C" __global__ void bitnet_gated(const float* __restrict__ gu, int ff, int n_tokens, int act,
                                        float* __restrict__ out) {
    const long long total = (long long)n_tokens * ff;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long t = i / ff, c = i % ff;
        out[i] = gated_value(gu[t * 2 * ff + c], gu[t * 2 * ff + ff + c], act);
    }
}

// Plain RMSNorm rows (the final norm before the head): one block per row.
extern "C" __global__ void bitnet_rms_norm(const float* __restrict__ x, const float* __restrict__ w, float eps,
                                           int cols, float* __restrict__ out) {
    __shared__ float red[32];
    const float* xr = x + (long long)blockIdx.x * cols;
    float s2 = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s2 = __fadd_rn(s2, __fmul_rn(xr[i], xr[i]));
    s2 = block_sum_f(s2, red);
    const float m = __fsqrt_rn(__fadd_rn(__fdiv_rn(s2, (float)cols), eps));
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        out[(long long)blockIdx.x * cols + i] = __fmul_rn(__fdiv_rn(xr[i], m), w[i]);
}

// Device-to-device streaming copy, the bandwidth anchor of the benchmarks (16-byte accesses).
extern "C" __global__ void bitnet_copy(const uint4* __restrict__ src, uint4* __restrict__ dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        dst[i] = __ldcs(src + i);
}
