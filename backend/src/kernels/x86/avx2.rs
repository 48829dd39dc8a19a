//! AVX2 kernels (no VNNI): each 64-byte group is two ymm halves (rows 0-7 and 8-15).
//! Codes are shifted out of their 2-bit planes, multiplied with `vpmaddubsw` (unsigned codes ×
//! signed activations → i16 pairs, at most 2·2·128 = 512 so never saturating), summed in i16
//! over a whole 128-column block (≤ 32·512 = 16384) and widened with `vpmaddwd`.
//!
//! Safety contract of every function here: the CPU supports AVX2 and the slice lengths satisfy
//! the asserts in `kernels::mod` (checked by the dispatcher).

use core::arch::x86_64::*;

use crate::kernels::{act_scale, BLOCK_COLS, GROUPS_PER_BLOCK, GROUP_BYTES, NON_FINITE_BITS};
use crate::kernels::{STRIP_BLOCK_BYTES, STRIP_ROWS};

/// Broadcasts the 4 bytes at `p` to every 32-bit lane.
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bcast(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    _mm256_set1_epi32(unsafe { (p as *const i32).read_unaligned() })
}

/// The four code planes (bits 7-6, 5-4, 3-2, 1-0) of a 32-byte half group, as bytes 0..=2.
#[inline]
#[target_feature(enable = "avx2")]
fn planes(v: __m256i, three: __m256i) -> [__m256i; 4] {
    [
        _mm256_and_si256(_mm256_srli_epi16::<6>(v), three),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), three),
        _mm256_and_si256(_mm256_srli_epi16::<2>(v), three),
        _mm256_and_si256(v, three),
    ]
}

#[inline]
#[target_feature(enable = "avx2")]
fn store(out: &mut [i32; STRIP_ROWS], lo: __m256i, hi: __m256i) {
    // SAFETY: `out` is 16 i32: rows 0-7 go to bytes 0..32, rows 8-15 to bytes 32..64.
    unsafe {
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, lo);
        _mm256_storeu_si256(out.as_mut_ptr().add(8) as *mut __m256i, hi);
    }
}

#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_strips(
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let strip_bytes = n_blocks * STRIP_BLOCK_BYTES;
    let three = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let a = act.as_ptr();
    for (strip, o) in strips.chunks_exact(strip_bytes).zip(out.iter_mut()) {
        let w = strip.as_ptr();
        let mut acc = [_mm256_setzero_si256(); 2];
        for blk in 0..n_blocks {
            let mut acc16 = [_mm256_setzero_si256(); 2];
            for m in 0..GROUPS_PER_BLOCK {
                let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
                // SAFETY: column blk·128 + 32p + 4m + 3 < act.len() for p < 4.
                let x = unsafe {
                    [
                        bcast(a.add(blk * BLOCK_COLS + m * 4)),
                        bcast(a.add(blk * BLOCK_COLS + 32 + m * 4)),
                        bcast(a.add(blk * BLOCK_COLS + 64 + m * 4)),
                        bcast(a.add(blk * BLOCK_COLS + 96 + m * 4)),
                    ]
                };
                for (h, acc16) in acc16.iter_mut().enumerate() {
                    // SAFETY: `off + 32h + 32 <= strip_bytes`.
                    let v = unsafe { _mm256_loadu_si256(w.add(off + 32 * h) as *const __m256i) };
                    for (c, x) in planes(v, three).into_iter().zip(x) {
                        *acc16 = _mm256_add_epi16(*acc16, _mm256_maddubs_epi16(c, x));
                    }
                }
            }
            for (acc, acc16) in acc.iter_mut().zip(acc16) {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(acc16, ones));
            }
        }
        store(o, acc[0], acc[1]);
    }
}

#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_strip_tile<const N: usize>(
    strip: &[u8],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let three = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let w = strip.as_ptr();
    let a = acts.as_ptr();
    let mut acc = [[_mm256_setzero_si256(); 2]; N];
    for blk in 0..n_blocks {
        for m in 0..GROUPS_PER_BLOCK {
            let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
            for h in 0..2 {
                // SAFETY: the half group lies inside the strip.
                let v = unsafe { _mm256_loadu_si256(w.add(off + 32 * h) as *const __m256i) };
                let c = planes(v, three);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let kq = blk * (BLOCK_COLS / 4) + m;
                    // SAFETY: ((kq + 8p) · N + t) · 4 + 3 < n_blocks · 128 · N = acts.len().
                    let x = unsafe {
                        [
                            bcast(a.add((kq * N + t) * 4)),
                            bcast(a.add(((kq + 8) * N + t) * 4)),
                            bcast(a.add(((kq + 16) * N + t) * 4)),
                            bcast(a.add(((kq + 24) * N + t) * 4)),
                        ]
                    };
                    let s01 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c[0], x[0]),
                        _mm256_maddubs_epi16(c[1], x[1]),
                    );
                    let s23 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c[2], x[2]),
                        _mm256_maddubs_epi16(c[3], x[3]),
                    );
                    let s = _mm256_madd_epi16(_mm256_add_epi16(s01, s23), ones);
                    acc[h] = _mm256_add_epi32(acc[h], s);
                }
            }
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        store(o, acc[0], acc[1]);
    }
}

/// `round_half_even(x · s)` of the 8 floats at `p`, as i32.
///
/// # Safety
/// `p` must point to 8 readable floats.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scale_round(p: *const f32, sv: __m256) -> __m256i {
    // SAFETY: the caller guarantees 8 readable floats. cvtps rounds with MXCSR's default
    // round-to-nearest-even, exactly like `f32::round_ties_even`.
    _mm256_cvtps_epi32(_mm256_mul_ps(unsafe { _mm256_loadu_ps(p) }, sv))
}

#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_row(x: &[f32], q: &mut [i8]) -> Option<(f32, i32)> {
    let px = x.as_ptr();
    let abs = _mm256_set1_epi32(0x7FFF_FFFF);
    let mut mx = _mm256_setzero_si256();
    let full8 = x.len() / 8;
    for i in 0..full8 {
        // SAFETY: 8 floats at 8·i are inside `x`.
        let v = unsafe { _mm256_loadu_si256(px.add(8 * i) as *const __m256i) };
        mx = _mm256_max_epu32(mx, _mm256_and_si256(v, abs));
    }
    let mut lanes = [0u32; 8];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, mx) };
    let bits = x[8 * full8..]
        .iter()
        .map(|v| v.to_bits() & 0x7FFF_FFFF)
        .chain(lanes)
        .max()
        .unwrap_or(0);
    if bits >= NON_FINITE_BITS {
        return None;
    }
    let s = act_scale(f32::from_bits(bits));
    let sv = _mm256_set1_ps(s);
    // packs_* interleave the 128-bit lanes; this puts the dwords back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut sum = _mm256_setzero_si256();
    let full32 = x.len() / 32;
    for i in 0..full32 {
        // SAFETY: 32 floats in / 32 bytes out at index 32·i, inside `x` and `q` (same length).
        unsafe {
            let p = px.add(32 * i);
            let r = [
                scale_round(p, sv),
                scale_round(p.add(8), sv),
                scale_round(p.add(16), sv),
                scale_round(p.add(24), sv),
            ];
            sum = _mm256_add_epi32(
                sum,
                _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3])),
            );
            let packed = _mm256_packs_epi16(
                _mm256_packs_epi32(r[0], r[1]),
                _mm256_packs_epi32(r[2], r[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(packed, order);
            _mm256_storeu_si256(q.as_mut_ptr().add(32 * i) as *mut __m256i, bytes);
        }
    }
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, sum) };
    let mut total: i32 = lanes.iter().sum();
    for (o, &v) in q[32 * full32..].iter_mut().zip(&x[32 * full32..]) {
        let r = (v * s).round_ties_even().clamp(-128.0, 127.0) as i32;
        *o = r as i8;
        total += r;
    }
    Some((s, total))
}

#[target_feature(enable = "avx2")]
pub(crate) unsafe fn read_checksum(bytes: &[u8]) -> u64 {
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut chunks = bytes.chunks_exact(128);
    for c in &mut chunks {
        let p = c.as_ptr();
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: the chunk holds 128 bytes; load i reads bytes 32i..32i+32.
            let v = unsafe { _mm256_loadu_si256(p.add(32 * i) as *const __m256i) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut lanes = [0u64; 4];
    let total = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, total) };
    let tail = crate::kernels::scalar::read_checksum(chunks.remainder());
    lanes.iter().fold(tail, |s, &l| s.wrapping_add(l))
}
