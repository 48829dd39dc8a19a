//! ggml's `make_qx_quants` for the 16 sub-blocks of a Q6_K super-block at once, one sub-block
//! per AVX-512 lane.
//!
//! ggml's loop sums each sub-block's 16 values in order; here lane `j` walks sub-block `j`'s
//! values in that same order, with the same separately rounded multiplies and adds (no fused
//! multiply-add), so every lane reproduces the scalar arithmetic bit for bit. `nearest_int`
//! (round half to even via the float adder) equals `vrndscaleps` to nearest even for the
//! |v| <= 33 it sees here (|iscale · x| <= (nmax + 0.9) · |x| / max|x|).
//!
//! This is the slow part of quantizing an LM head to Q6_K at load time (19 passes over every
//! value); one lane per sub-block makes it 16 times cheaper than the scalar loop. The values
//! are put into that layout with shuffles rather than gathers, and the final codes are written
//! in value order directly (no byte-wise transpose back).

use std::arch::x86_64::*;

use super::q6_k::{trial_numerator, BLOCK, TRIALS};

const SUB: usize = 16;
const NMAX: i32 = 32;
const GROUP_MAX_EPS: f32 = 1e-15;

pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Round to nearest even, no exceptions (`_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC`).
const RNE: i32 = 0x08;

/// Code of every lane for `iscale`: `clamp(nearest_int(iscale · x), -nmax, nmax - 1)` as f32.
#[inline]
#[target_feature(enable = "avx512f")]
fn codes(iscale: __m512, x: __m512) -> __m512 {
    let l = _mm512_roundscale_ps::<RNE>(_mm512_mul_ps(iscale, x));
    _mm512_min_ps(
        _mm512_max_ps(l, _mm512_set1_ps(-(NMAX as f32))),
        _mm512_set1_ps((NMAX - 1) as f32),
    )
}

/// `(Σ (w·x)·l, Σ (w·l)·l)` per lane for `iscale`, with `w = x²`, in ggml's order.
#[inline]
#[target_feature(enable = "avx512f")]
fn sums(iscale: __m512, x: &[__m512; SUB], w: &[__m512; SUB], wx: &[__m512; SUB]) -> [__m512; 2] {
    let mut sumlx = _mm512_setzero_ps();
    let mut suml2 = _mm512_setzero_ps();
    for v in 0..SUB {
        let l = codes(iscale, x[v]);
        sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(wx[v], l));
        suml2 = _mm512_add_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(w[v], l), l));
    }
    [sumlx, suml2]
}

/// The 16 × 16 transpose of `r` (`out[c]` lane `i` = `r[i]` lane `c`) in shuffles: gathers
/// are slow on some CPUs (a quarter of this quantizer's time on AMD Zen 4).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(r: &[__m512; SUB]) -> [__m512; SUB] {
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved by 32 bits within each 128-bit lane.
    let t: [__m512; SUB] = std::array::from_fn(|n| {
        let (a, b) = (r[n & !1], r[n | 1]);
        if n % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4i + k] 128-bit lane L: rows 4i..4i+3 at column 4L + k.
    let u: [__m512; SUB] = std::array::from_fn(|n| {
        let (i, k) = (n / 4, n % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * i + k / 2]),
            _mm512_castps_pd(t[4 * i + 2 + k / 2]),
        );
        _mm512_castpd_ps(if k % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // out[4L + k] = lane L of u[k], u[4 + k], u[8 + k], u[12 + k].
    let mut out = [_mm512_setzero_ps(); SUB];
    for k in 0..4 {
        let p0 = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
        let p1 = _mm512_shuffle_f32x4::<0xDD>(u[k], u[4 + k]);
        let q0 = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
        let q1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + k], u[12 + k]);
        out[k] = _mm512_shuffle_f32x4::<0x88>(p0, q0);
        out[4 + k] = _mm512_shuffle_f32x4::<0x88>(p1, q1);
        out[8 + k] = _mm512_shuffle_f32x4::<0xDD>(p0, q0);
        out[12 + k] = _mm512_shuffle_f32x4::<0xDD>(p1, q1);
    }
    out
}

/// The scales and codes (`l + 32`) of the 16 sub-blocks of `xb` (256 values), exactly as
/// `make_qx_quants(16, 32, x, L, 1, NULL)` computes them for each.
///
/// # Safety
/// The CPU supports AVX-512F; `xb` has at least 256 values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sub_block_scales(xb: &[f32], scales: &mut [f32; SUB], l: &mut [u8; BLOCK]) {
    assert!(xb.len() >= BLOCK, "Q6_K super-block needs {BLOCK} values");
    // x[v] lane j = value v of sub-block j (a 16 × 16 transpose).
    // SAFETY: row j is values 16j..16j + 16 of the 256.
    let rows: [__m512; SUB] =
        std::array::from_fn(|j| unsafe { _mm512_loadu_ps(xb.as_ptr().add(SUB * j)) });
    let x = transpose(&rows);
    let w: [__m512; SUB] = std::array::from_fn(|v| _mm512_mul_ps(x[v], x[v]));
    let wx: [__m512; SUB] = std::array::from_fn(|v| _mm512_mul_ps(w[v], x[v]));

    // The first value of largest magnitude (strictly greater, as ggml's loop).
    let (mut amax, mut max) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for xv in &x {
        let ax = _mm512_abs_ps(*xv);
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(ax, amax);
        amax = _mm512_mask_blend_ps(gt, amax, ax);
        max = _mm512_mask_blend_ps(gt, max, *xv);
    }
    let zero_lanes = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(amax, _mm512_set1_ps(GROUP_MAX_EPS));

    let mut best_iscale = _mm512_div_ps(_mm512_set1_ps(-(NMAX as f32)), max);
    let [sumlx, suml2] = sums(best_iscale, &x, &w, &wx);
    let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(suml2, _mm512_setzero_ps());
    let mut scale = _mm512_maskz_div_ps(nonzero, sumlx, suml2);
    let mut best = _mm512_mul_ps(scale, sumlx);
    for is in TRIALS {
        let iscale = _mm512_div_ps(_mm512_set1_ps(trial_numerator(NMAX, is)), max);
        let [sumlx, suml2] = sums(iscale, &x, &w, &wx);
        let better = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(suml2, _mm512_setzero_ps())
            & _mm512_cmp_ps_mask::<_CMP_GT_OQ>(
                _mm512_mul_ps(sumlx, sumlx),
                _mm512_mul_ps(best, suml2),
            );
        best_iscale = _mm512_mask_blend_ps(better, best_iscale, iscale);
        scale = _mm512_mask_div_ps(scale, better, sumlx, suml2);
        best = _mm512_mask_mul_ps(best, better, scale, sumlx);
    }
    // SAFETY: `scales` is 16 writable floats.
    unsafe {
        _mm512_storeu_ps(
            scales.as_mut_ptr(),
            _mm512_mask_mov_ps(scale, zero_lanes, _mm512_setzero_ps()),
        )
    };

    // Codes of the best scale, zero for all-zero sub-blocks, in value order: sub-block j's 16
    // contiguous values with lane j's scale in every lane (the same products as in the lanes).
    for j in 0..SUB {
        let code = if zero_lanes & (1 << j) != 0 {
            _mm_setzero_si128()
        } else {
            let iscale = _mm512_permutexvar_ps(_mm512_set1_epi32(j as i32), best_iscale);
            // SAFETY: values 16j..16j + 16 of the 256.
            let xj = unsafe { _mm512_loadu_ps(xb.as_ptr().add(SUB * j)) };
            let c = _mm512_add_epi32(
                _mm512_cvtps_epi32(codes(iscale, xj)),
                _mm512_set1_epi32(NMAX),
            );
            _mm512_cvtepi32_epi8(c)
        };
        // SAFETY: 16 bytes at 16j inside the 256-byte `l`.
        unsafe { _mm_storeu_si128(l.as_mut_ptr().add(SUB * j) as *mut __m128i, code) };
    }
}

/// The final codes of the sub-blocks whose scale `d = d_super · sc[j]` is not zero, as the
/// scalar loop computes them: `clamp(nearest_int(x / d), -32, 31) + 32`, with the same IEEE
/// division and ggml's `nearest_int` rebuilt bit for bit (add 1.5·2^23, keep the low mantissa
/// bits), so even out-of-range quotients give the scalar codes.
///
/// # Safety
/// The CPU supports AVX-512F; `xb` has at least 256 values and `sc` at least 16.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn final_codes(xb: &[f32], d_super: f32, sc: &[u8], l: &mut [u8; BLOCK]) {
    assert!(xb.len() >= BLOCK && sc.len() >= SUB, "one Q6_K super-block");
    for (j, &s) in sc[..SUB].iter().enumerate() {
        let d = d_super * (s as i8) as f32;
        if d == 0.0 {
            continue;
        }
        // SAFETY: values 16j..16j + 16 of the 256.
        let x = unsafe { _mm512_loadu_ps(xb.as_ptr().add(SUB * j)) };
        let v = _mm512_add_ps(
            _mm512_div_ps(x, _mm512_set1_ps(d)),
            _mm512_set1_ps(12_582_912.0),
        );
        let q = _mm512_sub_epi32(
            _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x007f_ffff)),
            _mm512_set1_epi32(0x0040_0000),
        );
        let q = _mm512_min_epi32(
            _mm512_max_epi32(q, _mm512_set1_epi32(-NMAX)),
            _mm512_set1_epi32(NMAX - 1),
        );
        let code = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, _mm512_set1_epi32(NMAX)));
        // SAFETY: 16 bytes at 16j inside the 256-byte `l`.
        unsafe { _mm_storeu_si128(l.as_mut_ptr().add(SUB * j) as *mut __m128i, code) };
    }
}
