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
//! value); one lane per sub-block makes it 16 times cheaper than the scalar loop.

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

/// The scales and codes (`l + 32`) of the 16 sub-blocks of `xb` (256 values), exactly as
/// `make_qx_quants(16, 32, x, L, 1, NULL)` computes them for each.
///
/// # Safety
/// The CPU supports AVX-512F; `xb` has at least 256 values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sub_block_scales(xb: &[f32], scales: &mut [f32; SUB], l: &mut [u8; BLOCK]) {
    assert!(xb.len() >= BLOCK, "Q6_K super-block needs {BLOCK} values");
    // x[v] lane j = value v of sub-block j (a 16 × 16 transpose).
    let index = _mm512_setr_epi32(
        0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
    );
    // SAFETY: lane j reads xb[16j + v] with 16j + v < 256 <= xb.len().
    let x: [__m512; SUB] =
        std::array::from_fn(|v| unsafe { _mm512_i32gather_ps::<4>(index, xb.as_ptr().add(v)) });
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

    // Codes of the best scale, zero for all-zero sub-blocks; transposed back to value order.
    let mut lt = [[0u8; SUB]; SUB];
    for (v, row) in lt.iter_mut().enumerate() {
        let c = _mm512_cvtps_epi32(codes(best_iscale, x[v]));
        let c = _mm512_maskz_add_epi32(!zero_lanes, c, _mm512_set1_epi32(NMAX));
        // SAFETY: 16 bytes written into the 16-byte `row`.
        unsafe { _mm_storeu_si128(row.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(c)) };
    }
    for (v, row) in lt.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            l[SUB * j + v] = c;
        }
    }
}
