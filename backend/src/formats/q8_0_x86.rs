//! ggml's `quantize_row_q8_0_ref` with AVX-512, one 32-value block in two registers.
//!
//! Every step is the scalar one lane-wise: the block's largest magnitude is a max (exact, in
//! any order), the scale and its reciprocal are the same scalar divisions, each value is one
//! rounded multiply, and `roundf` (half away from zero) is rebuilt exactly: truncate, then step
//! one away from zero when the dropped fraction (`p - trunc(p)`, exact in f32) is at least one
//! half. The conversion to `i8` saturates and maps NaN to 0 like Rust's `as i8`, so even a
//! block whose reciprocal scale overflows (subnormal scales) gives the scalar bytes.
//!
//! This is what makes `--head-type q8_0` cheap at load: the scalar loop calls `roundf` for
//! every value of the head.

use std::arch::x86_64::*;

use half::f16;

use super::q8_0::{BLOCK, BLOCK_BYTES};

pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Truncation toward zero, no exceptions (`_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC`).
pub(super) const TRUNC: i32 = 0x0B;

/// One 32-value block as two registers.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn load_block(xb: &[f32]) -> (__m512, __m512) {
    assert!(xb.len() >= 32, "a 32-value block");
    // SAFETY: `xb` holds at least 32 floats.
    unsafe {
        (
            _mm512_loadu_ps(xb.as_ptr()),
            _mm512_loadu_ps(xb.as_ptr().add(16)),
        )
    }
}

/// `p.round()` (half away from zero) in every lane; NaN and infinities pass through.
#[inline]
#[target_feature(enable = "avx512f")]
fn round_half_away(p: __m512) -> __m512 {
    let t = _mm512_roundscale_ps::<TRUNC>(p);
    let frac = _mm512_abs_ps(_mm512_sub_ps(p, t));
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    // ±1 with the sign of p.
    let step = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(_mm512_castps_si512(p), _mm512_set1_epi32(i32::MIN)),
        _mm512_castps_si512(_mm512_set1_ps(1.0)),
    ));
    _mm512_mask_add_ps(t, up, t, step)
}

/// Rust's `f as i8` for integral (or non-finite) lanes: saturating, NaN to 0.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn saturate_i8(t: __m512) -> __m512i {
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(t, t);
    let c = _mm512_min_ps(
        _mm512_max_ps(t, _mm512_set1_ps(-128.0)),
        _mm512_set1_ps(127.0),
    );
    _mm512_maskz_cvtps_epi32(!nan, c)
}

/// Quantizes `x` (a whole number of blocks) into `out` (as many 34-byte blocks).
///
/// # Safety
/// The CPU supports AVX-512F; `out.len() / BLOCK_BYTES == x.len() / BLOCK`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize_blocks(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len() / BLOCK, out.len() / BLOCK_BYTES);
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let (a, b) = load_block(xb);
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        let id = _mm512_set1_ps(id);
        for (half, v) in [a, b].into_iter().enumerate() {
            let q = saturate_i8(round_half_away(_mm512_mul_ps(v, id)));
            // SAFETY: 16 bytes at 2 + 16·half inside the 34-byte block.
            unsafe {
                _mm_storeu_si128(
                    ob.as_mut_ptr().add(2 + 16 * half) as *mut __m128i,
                    _mm512_cvtepi32_epi8(q),
                )
            };
        }
    }
}
