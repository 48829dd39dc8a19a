//! ggml's `quantize_row_q4_0_ref` with AVX-512, one 32-value block in two registers.
//!
//! The scalar loop keeps the first value of largest magnitude (with its sign) in a
//! data-dependent branch per value; here the largest magnitude is a max (exact in any order)
//! and the first lane holding it is found from a compare mask. Nibbles are the scalar
//! `min(15, (x·id + 8.5) as i8)` lane-wise: separately rounded multiply and add, truncation,
//! the saturating `as i8` (NaN to 0), then the same byte arithmetic, so even blocks whose
//! reciprocal scale overflows give the scalar bytes.

use std::arch::x86_64::*;

use half::f16;

use super::q4_0::{BLOCK, BLOCK_BYTES};
use super::q8_0_x86::{load_block, saturate_i8, TRUNC};

pub(super) fn available() -> bool {
    super::q8_0_x86::available()
}

/// `((v·id + 8.5) as i8).min(15)` per lane, as i32.
#[inline]
#[target_feature(enable = "avx512f")]
fn nibbles(v: __m512, id: __m512) -> __m512i {
    let p = _mm512_add_ps(_mm512_mul_ps(v, id), _mm512_set1_ps(8.5));
    let c = saturate_i8(_mm512_roundscale_ps::<TRUNC>(p));
    _mm512_min_epi32(c, _mm512_set1_epi32(15))
}

/// Quantizes `x` (a whole number of blocks) into `out` (as many 18-byte blocks).
///
/// # Safety
/// The CPU supports AVX-512F; `out.len() / BLOCK_BYTES == x.len() / BLOCK`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize_blocks(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len() / BLOCK, out.len() / BLOCK_BYTES);
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let (a, b) = load_block(xb);
        let (abs_a, abs_b) = (_mm512_abs_ps(a), _mm512_abs_ps(b));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs_a, abs_b));
        // The scalar loop starts from +0.0 and only replaces it on a strictly larger magnitude.
        let max = if amax == 0.0 {
            0.0
        } else {
            let in_a = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(abs_a, _mm512_set1_ps(amax));
            let in_b = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(abs_b, _mm512_set1_ps(amax));
            let first = (in_a as u32 | (in_b as u32) << 16).trailing_zeros() as usize;
            xb[first]
        };
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        let id = _mm512_set1_ps(id);
        let (lo, hi) = (nibbles(a, id), nibbles(b, id));
        // The scalar `lo as u8 | (hi as u8) << 4` on the low byte of each lane.
        let bytes = _mm512_or_si512(
            _mm512_and_si512(lo, _mm512_set1_epi32(0xff)),
            _mm512_and_si512(_mm512_slli_epi32::<4>(hi), _mm512_set1_epi32(0xf0)),
        );
        // SAFETY: 16 bytes at 2 inside the 18-byte block.
        unsafe {
            _mm_storeu_si128(
                ob.as_mut_ptr().add(2) as *mut __m128i,
                _mm512_cvtepi32_epi8(bytes),
            )
        };
    }
}
