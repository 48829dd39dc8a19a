//! x86-64 dense kernels: four rows (anywhere in the matrix) against one activation vector per
//! call.
//!
//! Weights are widened to f32 in registers (`vcvtph2ps` for F16, a 16-bit shift for BF16,
//! `vpmovsxbd` + `vcvtdq2ps` for Q8_0) and accumulated with FMA; the four rows share every
//! activation load. Results differ from the scalar path only by summation order.

use std::arch::x86_64::*;

use super::{DenseMatrix, DenseType, Q8_0_BLOCK, Q8_0_BLOCK_BYTES, ROW_GROUP};
use crate::kernels::x86::prefetch_lines_l2;

/// AVX-512F (with F16C) for the float kernels. The float kernel a CPU runs decides the order of
/// the sums, so this test must not change: `--head-type file` logits stay bit-identical.
pub(super) fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c")
}

/// BW, VBMI and VNNI on top, for the integer kernels (`x86_qdot`). CPUs with AVX-512 but without
/// them (Skylake-X, Cascade Lake) run the integer kernels' AVX2 versions, and the float ones on
/// AVX-512 still.
pub(super) fn has_avx512_int() -> bool {
    has_avx512()
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("avx512vnni")
        && has_avx2()
}

pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Pointers to rows `rs`, after checking they and `x` are in bounds.
fn row_ptrs(w: &DenseMatrix<'_>, rs: [usize; ROW_GROUP], x: &[f32]) -> [*const u8; ROW_GROUP] {
    assert!(
        rs.iter().all(|&r| r < w.rows) && x.len() == w.cols,
        "dense x86 kernel out of bounds"
    );
    rs.map(|r| w.data[r * w.row_bytes..(r + 1) * w.row_bytes].as_ptr())
}

/// Dot products of rows `r[0..4]` of `w` with `x` (AVX-512F).
pub(super) fn dot4_avx512(
    w: &DenseMatrix<'_>,
    r: [usize; ROW_GROUP],
    x: &[f32],
    out: &mut [f32; ROW_GROUP],
) {
    assert!(has_avx512(), "AVX-512F kernel called on a CPU without it");
    let rows = row_ptrs(w, r, x);
    // SAFETY: the CPU supports AVX-512F and F16C (checked above); `row_ptrs` checked that the four
    // rows of `w.cols` values and `x` are in bounds, which is all the kernels read.
    unsafe {
        match w.ty {
            DenseType::Q8_0 => q8_0_avx512(rows, x, out),
            ty => float_avx512(ty, rows, x, out),
        }
    }
}

/// Dot products of rows `r[0..4]` of `w` with every token of `x` (`[n_tokens, cols]`; AVX-512F,
/// float types only): `out[t][j]` is row `r[j]` against token `t`. Every dot product is summed
/// exactly as [`dot4_avx512`] sums it, so the results are bit-identical to one call per token.
pub(super) fn dot4_tokens_avx512(
    w: &DenseMatrix<'_>,
    r: [usize; ROW_GROUP],
    x: &[f32],
    out: &mut [[f32; ROW_GROUP]],
) {
    assert!(has_avx512(), "AVX-512F kernel called on a CPU without it");
    assert!(w.ty != DenseType::Q8_0, "dot4_tokens takes float rows only");
    assert_eq!(
        x.len(),
        out.len() * w.cols,
        "dense x86 kernel out of bounds"
    );
    let rows = row_ptrs(w, r, &x[..w.cols.min(x.len())]);
    // SAFETY: the CPU supports AVX-512F and F16C (checked above); `row_ptrs` checked the rows
    // are in bounds, and `x` holds `out.len()` tokens of `w.cols` values.
    unsafe { float_tokens_avx512(w.ty, rows, x, w.cols, out) }
}

/// Dot products of rows `r[0..4]` of `w` with `x` (AVX2 + FMA + F16C).
pub(super) fn dot4_avx2(
    w: &DenseMatrix<'_>,
    r: [usize; ROW_GROUP],
    x: &[f32],
    out: &mut [f32; ROW_GROUP],
) {
    assert!(has_avx2(), "AVX2 kernel called on a CPU without it");
    let rows = row_ptrs(w, r, x);
    // SAFETY: as in `dot4_avx512`, for AVX2/FMA/F16C.
    unsafe {
        match w.ty {
            DenseType::Q8_0 => q8_0_avx2(rows, x, out),
            ty => float_avx2(ty, rows, x, out),
        }
    }
}

/// Loads 16 weights at element `c` of a float-typed row as f32.
#[inline]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn load16(ty: DenseType, row: *const u8, c: usize) -> __m512 {
    // SAFETY: the caller guarantees elements c..c+16 are in the row.
    unsafe {
        match ty {
            DenseType::F32 => _mm512_loadu_ps(row.add(4 * c) as *const f32),
            DenseType::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(row.add(2 * c) as *const __m256i)),
            _ => {
                let h = _mm256_loadu_si256(row.add(2 * c) as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
            }
        }
    }
}

#[target_feature(enable = "avx512f,f16c")]
unsafe fn float_avx512(ty: DenseType, rows: [*const u8; 4], x: &[f32], out: &mut [f32; 4]) {
    let cols = x.len();
    let xp = x.as_ptr();
    let mut a = [_mm512_setzero_ps(); 4];
    let mut b = [_mm512_setzero_ps(); 4];
    let mut c = 0;
    // SAFETY (whole body): every load reads elements c..c+32 or c..c+16 with that range inside
    // `cols`, which the caller checked is in bounds for `x` and each row.
    unsafe {
        while c + 32 <= cols {
            let x0 = _mm512_loadu_ps(xp.add(c));
            let x1 = _mm512_loadu_ps(xp.add(c + 16));
            for i in 0..4 {
                prefetch(rows[i], c * elem_bytes(ty), 32 * elem_bytes(ty));
                a[i] = _mm512_fmadd_ps(load16(ty, rows[i], c), x0, a[i]);
                b[i] = _mm512_fmadd_ps(load16(ty, rows[i], c + 16), x1, b[i]);
            }
            c += 32;
        }
        *out = float_finish(ty, rows, x, c, [a, b]);
    }
}

/// The end of [`float_avx512`] (and of [`float_tokens_avx512`], which must match it bit for
/// bit): from column `c`, one more 16-column step into the first accumulators when it fits,
/// the two accumulators summed, then the scalar tail.
///
/// # Safety
/// AVX-512F and F16C present; the four rows hold `x.len()` values.
#[inline]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn float_finish(
    ty: DenseType,
    rows: [*const u8; 4],
    x: &[f32],
    mut c: usize,
    [mut a, b]: [[__m512; 4]; 2],
) -> [f32; 4] {
    let cols = x.len();
    // SAFETY (whole body): elements c..c+16 (when they fit) and c..cols are inside the rows.
    unsafe {
        if c + 16 <= cols {
            let x0 = _mm512_loadu_ps(x.as_ptr().add(c));
            for i in 0..4 {
                a[i] = _mm512_fmadd_ps(load16(ty, rows[i], c), x0, a[i]);
            }
            c += 16;
        }
        std::array::from_fn(|i| {
            let s = _mm512_reduce_add_ps(_mm512_add_ps(a[i], b[i]));
            // An empty tail's sum is -0.0, which adds nothing: skipping it is exact.
            if c == cols {
                return s;
            }
            let row = std::slice::from_raw_parts(rows[i], cols * elem_bytes(ty));
            s + super::scalar::dot_row(ty, &row[c * elem_bytes(ty)..], &x[c..])
        })
    }
}

/// Columns per block of [`float_tokens_avx512`]: a block of 4 F16 rows (4 KiB) and of
/// [`TOKEN_GROUP`] tokens' activations (16 KiB) stay in L1 while every token runs over them.
const COL_BLOCK: usize = 512;
/// Tokens whose accumulators live (in memory) across the column blocks.
const TOKEN_GROUP: usize = 8;

/// Accumulators of one token: `[half][row]`, half 0 for the 32-column loop's first 16 columns
/// (`a` in [`float_avx512`]), half 1 for its second 16 (`b`).
type TokenAcc = [[__m512; ROW_GROUP]; 2];

/// [`float_avx512`] for many tokens. Four rows against a group of tokens, block of columns by
/// block of columns, so the rows and activations are read from L1 rather than L2 by every token
/// after the first; within a block, the tokens run four at a time over one half of the columns
/// (16 accumulators in registers, each widened weight vector feeding four FMAs). Every lane of
/// every accumulator sees the same FMAs in the same column order as in [`float_avx512`], and the
/// tail and the final sums are the same code, so the results are bit-identical to it.
#[target_feature(enable = "avx512f,f16c")]
unsafe fn float_tokens_avx512(
    ty: DenseType,
    rows: [*const u8; 4],
    x: &[f32],
    cols: usize,
    out: &mut [[f32; 4]],
) {
    let main = cols / 32 * 32;
    for (g, (xg, og)) in x
        .chunks(TOKEN_GROUP * cols)
        .zip(out.chunks_mut(TOKEN_GROUP))
        .enumerate()
    {
        let mut acc = [[[_mm512_setzero_ps(); 4]; 2]; TOKEN_GROUP];
        let n = og.len();
        let mut c0 = 0;
        while c0 < main {
            let c1 = (c0 + COL_BLOCK).min(main);
            let mut t = 0;
            while t < n {
                let q = (n - t).min(4);
                // Weights come from memory for the first tokens of the first group only.
                let fetch = g == 0 && t == 0;
                let xs = xg[t * cols..].as_ptr();
                let acc = &mut acc[t..t + q];
                // SAFETY: tokens t..t+q of the group and columns c0..c1 <= cols are in bounds
                // of `x` and of every row (the caller's contract).
                unsafe {
                    match q {
                        4 => float_tokens_block::<4>(ty, rows, xs, cols, c0, c1, fetch, acc),
                        3 => float_tokens_block::<3>(ty, rows, xs, cols, c0, c1, fetch, acc),
                        2 => float_tokens_block::<2>(ty, rows, xs, cols, c0, c1, fetch, acc),
                        _ => float_tokens_block::<1>(ty, rows, xs, cols, c0, c1, fetch, acc),
                    }
                }
                t += q;
            }
            c0 = c1;
        }
        for (t, (o, acc)) in og.iter_mut().zip(&acc).enumerate() {
            // SAFETY: token t's `cols` values, and the rows hold as many (caller).
            *o = unsafe { float_finish(ty, rows, &xg[t * cols..(t + 1) * cols], main, *acc) };
        }
    }
}

/// Columns `c0..c1` (32-column steps) of [`float_tokens_avx512`] for `T` consecutive tokens
/// starting at `xs` (row stride `cols`): the first 16 columns of every step into half 0, then
/// the second 16 into half 1. `fetch`: prefetch the rows ahead (the first pass over a block).
///
/// # Safety
/// AVX-512F and F16C present; columns `c0..c1` of the four rows and of `T` tokens readable.
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn float_tokens_block<const T: usize>(
    ty: DenseType,
    rows: [*const u8; 4],
    xs: *const f32,
    cols: usize,
    c0: usize,
    c1: usize,
    fetch: bool,
    acc: &mut [TokenAcc],
) {
    for half in [0, 1] {
        let mut a: [[__m512; 4]; T] = std::array::from_fn(|t| acc[t][half]);
        let mut c = c0 + 16 * half;
        while c < c1 {
            // SAFETY: elements c..c+16 of every row and token are in bounds (caller).
            unsafe {
                if fetch && half == 0 {
                    for row in rows {
                        prefetch(row, c * elem_bytes(ty), 32 * elem_bytes(ty));
                    }
                }
                let wv: [__m512; 4] = std::array::from_fn(|i| load16(ty, rows[i], c));
                for (t, a) in a.iter_mut().enumerate() {
                    let xv = _mm512_loadu_ps(xs.add(t * cols + c));
                    for i in 0..4 {
                        a[i] = _mm512_fmadd_ps(wv[i], xv, a[i]);
                    }
                }
            }
            c += 32;
        }
        for (t, a) in a.into_iter().enumerate() {
            acc[t][half] = a;
        }
    }
}

#[target_feature(enable = "avx512f,f16c")]
unsafe fn q8_0_avx512(rows: [*const u8; 4], x: &[f32], out: &mut [f32; 4]) {
    let n_blocks = x.len() / Q8_0_BLOCK;
    let xp = x.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 4];
    // SAFETY (whole body): block `blk` of a row spans bytes blk*34..blk*34+34 and activations
    // blk*32..blk*32+32, inside the row / `x` for blk < n_blocks (x.len() == cols, cols % 32 == 0).
    unsafe {
        for blk in 0..n_blocks {
            let x0 = _mm512_loadu_ps(xp.add(blk * Q8_0_BLOCK));
            let x1 = _mm512_loadu_ps(xp.add(blk * Q8_0_BLOCK + 16));
            let d = block_scales(rows, blk);
            for i in 0..4 {
                prefetch(rows[i], blk * Q8_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES);
                let q = rows[i].add(blk * Q8_0_BLOCK_BYTES + 2);
                let q0 =
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q as *const __m128i)));
                let q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    q.add(16) as *const __m128i
                )));
                let t = _mm512_fmadd_ps(q1, x1, _mm512_mul_ps(q0, x0));
                acc[i] = _mm512_fmadd_ps(t, _mm512_set1_ps(d[i]), acc[i]);
            }
        }
        for i in 0..4 {
            out[i] = _mm512_reduce_add_ps(acc[i]);
        }
    }
}

/// The f16 scales of block `blk` of the four rows, as f32. Each is converted on its own
/// (`vcvtph2ps` from a register): gathering them through a small stack array first stalls on
/// store forwarding once per block.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn block_scales(rows: [*const u8; 4], blk: usize) -> [f32; 4] {
    // SAFETY: the caller guarantees block `blk` (whose first two bytes are d) is in each row.
    std::array::from_fn(|i| unsafe {
        let bits = (rows[i].add(blk * Q8_0_BLOCK_BYTES) as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    })
}

/// How far ahead of the bytes being multiplied each row is prefetched. Four rows stream at
/// once; the hardware prefetcher alone leaves a GEMV well short of read bandwidth on two threads.
/// Near a row's end the prefetch runs into the next row in memory, which is the next row the
/// same stream reads (see `rows_kernel`). Into L2 only (`prefetcht1`): on the 2-core Zen 4
/// guest that made llama.cpp's tg128 with the plugin (whose single-token F16 head is this
/// kernel) ~1.09× faster with one thread than L1 prefetches at the same distance.
const PREFETCH_BYTES: usize = 2048;

/// Prefetches the cache lines `PREFETCH_BYTES` ahead of bytes `at..at + len` of `row`
/// (addresses past the matrix are never dereferenced, so they need no bounds).
#[inline(always)]
fn prefetch(row: *const u8, at: usize, len: usize) {
    prefetch_lines_l2(row.wrapping_add(at + PREFETCH_BYTES), len);
}

fn elem_bytes(ty: DenseType) -> usize {
    match ty {
        DenseType::F32 => 4,
        _ => 2,
    }
}

/// Loads 8 weights at element `c` of a float-typed row as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(ty: DenseType, row: *const u8, c: usize) -> __m256 {
    // SAFETY: the caller guarantees elements c..c+8 are in the row.
    unsafe {
        match ty {
            DenseType::F32 => _mm256_loadu_ps(row.add(4 * c) as *const f32),
            DenseType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * c) as *const __m128i)),
            _ => {
                let h = _mm_loadu_si128(row.add(2 * c) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum256(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_avx2(ty: DenseType, rows: [*const u8; 4], x: &[f32], out: &mut [f32; 4]) {
    let cols = x.len();
    let xp = x.as_ptr();
    let mut a = [_mm256_setzero_ps(); 4];
    let mut b = [_mm256_setzero_ps(); 4];
    let mut c = 0;
    // SAFETY (whole body): as in `float_avx512`, with 16- and 8-element steps.
    unsafe {
        while c + 16 <= cols {
            let x0 = _mm256_loadu_ps(xp.add(c));
            let x1 = _mm256_loadu_ps(xp.add(c + 8));
            for i in 0..4 {
                prefetch(rows[i], c * elem_bytes(ty), 16 * elem_bytes(ty));
                a[i] = _mm256_fmadd_ps(load8(ty, rows[i], c), x0, a[i]);
                b[i] = _mm256_fmadd_ps(load8(ty, rows[i], c + 8), x1, b[i]);
            }
            c += 16;
        }
        if c + 8 <= cols {
            let x0 = _mm256_loadu_ps(xp.add(c));
            for i in 0..4 {
                a[i] = _mm256_fmadd_ps(load8(ty, rows[i], c), x0, a[i]);
            }
            c += 8;
        }
        for i in 0..4 {
            let mut s = hsum256(_mm256_add_ps(a[i], b[i]));
            let row = std::slice::from_raw_parts(rows[i], cols * elem_bytes(ty));
            s += super::scalar::dot_row(ty, &row[c * elem_bytes(ty)..], &x[c..]);
            out[i] = s;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_avx2(rows: [*const u8; 4], x: &[f32], out: &mut [f32; 4]) {
    let n_blocks = x.len() / Q8_0_BLOCK;
    let xp = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    // SAFETY (whole body): as in `q8_0_avx512`.
    unsafe {
        for blk in 0..n_blocks {
            let xb = xp.add(blk * Q8_0_BLOCK);
            let xs = [
                _mm256_loadu_ps(xb),
                _mm256_loadu_ps(xb.add(8)),
                _mm256_loadu_ps(xb.add(16)),
                _mm256_loadu_ps(xb.add(24)),
            ];
            let d = block_scales(rows, blk);
            for i in 0..4 {
                prefetch(rows[i], blk * Q8_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES);
                let q = rows[i].add(blk * Q8_0_BLOCK_BYTES + 2);
                let mut t = _mm256_setzero_ps();
                for (j, xv) in xs.iter().enumerate() {
                    let q8 = _mm_loadl_epi64(q.add(8 * j) as *const __m128i);
                    let qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
                    t = _mm256_fmadd_ps(qf, *xv, t);
                }
                acc[i] = _mm256_fmadd_ps(t, _mm256_set1_ps(d[i]), acc[i]);
            }
        }
        for i in 0..4 {
            out[i] = hsum256(acc[i]);
        }
    }
}
