//! AVX-VNNI kernels: `vpdpbusd` on ymm registers (Alder Lake and later, Zen 5), for CPUs
//! without AVX-512. Each 64-byte group is two ymm halves (rows 0-7 and 8-15).
//!
//! Single token: plane-scaled accumulation as in the AVX-512 kernel (mask, no shift), one half
//! strip at a time so the 4 accumulators, 4 masks and 4 broadcasts fit in 16 registers; the
//! second half re-reads the strip from L1/L2. Token tiles: planes shifted down once per half.
//!
//! Safety contract of every function here: the CPU supports AVX2 and AVX-VNNI and the slice
//! lengths satisfy the asserts in `kernels::mod` (checked by the dispatcher).

use core::arch::x86_64::*;

use crate::kernels::{BLOCK_COLS, GROUPS_PER_BLOCK, GROUP_BYTES, STRIP_BLOCK_BYTES, STRIP_ROWS};

/// Broadcasts the 4 bytes at `p` to every 32-bit lane.
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn bcast(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    _mm256_set1_epi32(unsafe { (p as *const i32).read_unaligned() })
}

#[target_feature(enable = "avx2,avxvnni")]
pub(crate) unsafe fn dot_strips(
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let strip_bytes = n_blocks * STRIP_BLOCK_BYTES;
    let masks = [
        _mm256_set1_epi8(0xC0u8 as i8),
        _mm256_set1_epi8(0x30),
        _mm256_set1_epi8(0x0C),
        _mm256_set1_epi8(0x03),
    ];
    let a = act.as_ptr();
    for (strip, o) in strips.chunks_exact(strip_bytes).zip(out.iter_mut()) {
        let w = strip.as_ptr();
        for (h, rows) in o.chunks_exact_mut(8).enumerate() {
            let mut acc = [_mm256_setzero_si256(); 4];
            for blk in 0..n_blocks {
                for m in 0..GROUPS_PER_BLOCK {
                    let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES + 32 * h;
                    // SAFETY: `off + 32 <= strip_bytes`.
                    let v = unsafe { _mm256_loadu_si256(w.add(off) as *const __m256i) };
                    for (p, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: column blk·128 + 32p + 4m + 3 < act.len().
                        let x = unsafe { bcast(a.add(blk * BLOCK_COLS + p * 32 + m * 4)) };
                        let c = _mm256_and_si256(v, masks[p]);
                        *acc = _mm256_dpbusd_avx_epi32(*acc, c, x);
                    }
                }
            }
            // Remove the 64/16/4/1 plane scales (exact below MAX_COLS).
            let hi = _mm256_add_epi32(
                _mm256_srai_epi32::<6>(acc[0]),
                _mm256_srai_epi32::<4>(acc[1]),
            );
            let lo = _mm256_add_epi32(_mm256_srai_epi32::<2>(acc[2]), acc[3]);
            // SAFETY: `rows` is 8 i32 = 32 writable bytes.
            unsafe {
                _mm256_storeu_si256(rows.as_mut_ptr() as *mut __m256i, _mm256_add_epi32(hi, lo))
            };
        }
    }
}

#[target_feature(enable = "avx2,avxvnni")]
pub(crate) unsafe fn dot_strip_tile<const N: usize>(
    strip: &[u8],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let three = _mm256_set1_epi8(3);
    let w = strip.as_ptr();
    let a = acts.as_ptr();
    let mut acc = [[_mm256_setzero_si256(); 2]; N];
    for blk in 0..n_blocks {
        for m in 0..GROUPS_PER_BLOCK {
            let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
            for h in 0..2 {
                // SAFETY: the half group lies inside the strip.
                let v = unsafe { _mm256_loadu_si256(w.add(off + 32 * h) as *const __m256i) };
                let c = [
                    _mm256_and_si256(_mm256_srli_epi16::<6>(v), three),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(v), three),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(v), three),
                    _mm256_and_si256(v, three),
                ];
                for (p, c) in c.into_iter().enumerate() {
                    let kq = blk * (BLOCK_COLS / 4) + p * 8 + m;
                    for (t, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: (kq · N + t) · 4 + 3 < n_blocks · 128 · N = acts.len().
                        let x = unsafe { bcast(a.add((kq * N + t) * 4)) };
                        acc[h] = _mm256_dpbusd_avx_epi32(acc[h], c, x);
                    }
                }
            }
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is 16 i32 = 64 writable bytes.
        unsafe {
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, acc[0]);
            _mm256_storeu_si256(o.as_mut_ptr().add(8) as *mut __m256i, acc[1]);
        }
    }
}
