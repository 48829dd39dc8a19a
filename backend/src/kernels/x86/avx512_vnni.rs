//! AVX-512 VNNI kernels: one 64-byte group (16 rows × 16 columns of 2-bit codes) per zmm,
//! `vpdpbusd` against a broadcast 4-byte activation group (codes unsigned, activations signed).
//!
//! Single token: the 2-bit planes are only masked, not shifted (`w & 0xC0` is `64·code`), into
//! four accumulators whose scale (64, 16, 4, 1) is removed exactly by arithmetic shifts at the
//! end: 4 ANDs + 4 `vpdpbusd` per 256 weights. Token tiles: the planes are shifted down once
//! and reused by every token of the tile.
//!
//! Safety contract of every function here: the CPU supports the enabled target features and
//! the slice lengths satisfy the asserts in `kernels::mod` (checked by the dispatcher).

use core::arch::x86_64::*;

use crate::kernels::{act_scale, BLOCK_COLS, GROUPS_PER_BLOCK, GROUP_BYTES, NON_FINITE_BITS};
use crate::kernels::{STRIP_BLOCK_BYTES, STRIP_ROWS};

/// How far ahead of the loads the weight streams are prefetched.
const PREFETCH_BYTES: usize = 1024;

/// Broadcasts the 4 bytes at `p` to every 32-bit lane (folds into `vpdpbusd`'s `{1to16}`
/// memory operand).
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn bcast(p: *const i8) -> __m512i {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    _mm512_set1_epi32(unsafe { (p as *const i32).read_unaligned() })
}

/// Sums the four plane accumulators, removing their 64/16/4/1 scale (exact: no i32 overflow
/// below `MAX_COLS`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn combine_planes(acc: [__m512i; 4]) -> __m512i {
    let hi = _mm512_add_epi32(
        _mm512_srai_epi32::<6>(acc[0]),
        _mm512_srai_epi32::<4>(acc[1]),
    );
    let lo = _mm512_add_epi32(_mm512_srai_epi32::<2>(acc[2]), acc[3]);
    _mm512_add_epi32(hi, lo)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn store(out: &mut [i32; STRIP_ROWS], v: __m512i) {
    // SAFETY: `out` is 16 i32 = 64 writable bytes.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, v) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_strips(
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let strip_bytes = n_blocks * STRIP_BLOCK_BYTES;
    let masks = [
        _mm512_set1_epi8(0xC0u8 as i8),
        _mm512_set1_epi8(0x30),
        _mm512_set1_epi8(0x0C),
        _mm512_set1_epi8(0x03),
    ];
    let a = act.as_ptr();
    let mut pairs = out.chunks_exact_mut(2);
    let mut base = strips.as_ptr();
    for pair in &mut pairs {
        let wa = base;
        // SAFETY: two strips remain in `strips`, so both starts are in bounds.
        let wb = unsafe { wa.add(strip_bytes) };
        let mut acc_a = [_mm512_setzero_si512(); 4];
        let mut acc_b = [_mm512_setzero_si512(); 4];
        for blk in 0..n_blocks {
            for m in 0..GROUPS_PER_BLOCK {
                let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
                // SAFETY: `off + 64 <= strip_bytes`, so both loads stay inside their strip;
                // prefetches never fault, and their addresses are only formed with
                // wrapping arithmetic.
                let (va, vb) = unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(wa.wrapping_add(off + PREFETCH_BYTES) as _);
                    _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(off + PREFETCH_BYTES) as _);
                    (
                        _mm512_loadu_si512(wa.add(off) as *const __m512i),
                        _mm512_loadu_si512(wb.add(off) as *const __m512i),
                    )
                };
                for p in 0..4 {
                    // SAFETY: column blk·128 + 32p + 4m + 3 < n_blocks·128 = act.len().
                    let x = unsafe { bcast(a.add(blk * BLOCK_COLS + p * 32 + m * 4)) };
                    acc_a[p] = _mm512_dpbusd_epi32(acc_a[p], _mm512_and_si512(va, masks[p]), x);
                    acc_b[p] = _mm512_dpbusd_epi32(acc_b[p], _mm512_and_si512(vb, masks[p]), x);
                }
            }
        }
        store(&mut pair[0], combine_planes(acc_a));
        store(&mut pair[1], combine_planes(acc_b));
        // SAFETY: moves past the two strips just read (at most to one-past-the-end).
        base = unsafe { base.add(2 * strip_bytes) };
    }
    if let [last] = pairs.into_remainder() {
        let mut acc = [_mm512_setzero_si512(); 4];
        for blk in 0..n_blocks {
            for m in 0..GROUPS_PER_BLOCK {
                let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
                // SAFETY: one strip remains at `base`; `off + 64 <= strip_bytes`.
                let v = unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(off + PREFETCH_BYTES) as _);
                    _mm512_loadu_si512(base.add(off) as *const __m512i)
                };
                for p in 0..4 {
                    // SAFETY: column index < act.len(), as in the paired loop.
                    let x = unsafe { bcast(a.add(blk * BLOCK_COLS + p * 32 + m * 4)) };
                    acc[p] = _mm512_dpbusd_epi32(acc[p], _mm512_and_si512(v, masks[p]), x);
                }
            }
        }
        store(last, combine_planes(acc));
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_strip_tile<const N: usize>(
    strip: &[u8],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let three = _mm512_set1_epi8(3);
    let mut acc = [_mm512_setzero_si512(); N];
    let w = strip.as_ptr();
    let a = acts.as_ptr();
    for blk in 0..n_blocks {
        for m in 0..GROUPS_PER_BLOCK {
            // SAFETY: the group lies inside the strip (`strip.len() = n_blocks · 512`).
            let v = unsafe {
                _mm512_loadu_si512(w.add((blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES) as _)
            };
            let codes = [
                _mm512_and_si512(_mm512_srli_epi16::<6>(v), three),
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), three),
                _mm512_and_si512(_mm512_srli_epi16::<2>(v), three),
                _mm512_and_si512(v, three),
            ];
            for (p, c) in codes.into_iter().enumerate() {
                let kq = blk * (BLOCK_COLS / 4) + p * 8 + m;
                for (t, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: (kq · N + t) · 4 + 3 < n_blocks · 128 · N = acts.len().
                    let x = unsafe { bcast(a.add((kq * N + t) * 4)) };
                    *acc = _mm512_dpbusd_epi32(*acc, c, x);
                }
            }
        }
    }
    for (o, v) in out.iter_mut().zip(acc) {
        store(o, v);
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn quantize_row(x: &[f32], q: &mut [i8]) -> Option<(f32, i32)> {
    let n = x.len();
    let full = n / 16;
    let rem = n % 16;
    let tail_mask: __mmask16 = ((1u32 << rem) - 1) as u16;
    let px = x.as_ptr();
    let pq = q.as_mut_ptr();
    let abs = _mm512_set1_epi32(0x7FFF_FFFF);
    let mut mx = _mm512_setzero_si512();
    for i in 0..full {
        // SAFETY: 16 floats at 16·i are inside `x`.
        let v = unsafe { _mm512_loadu_si512(px.add(16 * i) as *const __m512i) };
        mx = _mm512_max_epu32(mx, _mm512_and_si512(v, abs));
    }
    // SAFETY: masked-off lanes are neither read nor faulted; enabled lanes are inside `x`.
    let v = unsafe { _mm512_maskz_loadu_epi32(tail_mask, px.add(16 * full) as *const i32) };
    mx = _mm512_max_epu32(mx, _mm512_and_si512(v, abs));
    let bits = _mm512_reduce_max_epu32(mx);
    if bits >= NON_FINITE_BITS {
        return None;
    }
    let s = act_scale(f32::from_bits(bits));
    let sv = _mm512_set1_ps(s);
    let mut sum = _mm512_setzero_si512();
    for i in 0..full {
        // SAFETY: 16 floats in, 16 bytes out at index 16·i, inside `x` and `q` (same length).
        unsafe {
            let r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(px.add(16 * i)), sv));
            sum = _mm512_add_epi32(sum, r);
            _mm_storeu_si128(pq.add(16 * i) as *mut __m128i, _mm512_cvtsepi32_epi8(r));
        }
    }
    // SAFETY: masked load/store touch only the `rem` valid lanes at the end of `x` / `q`.
    unsafe {
        let v = _mm512_maskz_loadu_ps(tail_mask, px.add(16 * full));
        // cvtps rounds with MXCSR's default round-to-nearest-even, like round_ties_even.
        let r = _mm512_cvtps_epi32(_mm512_mul_ps(v, sv));
        sum = _mm512_add_epi32(sum, r);
        _mm512_mask_cvtsepi32_storeu_epi8(pq.add(16 * full), tail_mask, r);
    }
    Some((s, _mm512_reduce_add_epi32(sum)))
}

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn read_checksum(bytes: &[u8]) -> u64 {
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut chunks = bytes.chunks_exact(256);
    for c in &mut chunks {
        let p = c.as_ptr();
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: the chunk holds 256 bytes; load i reads bytes 64i..64i+64.
            let v = unsafe { _mm512_loadu_si512(p.add(64 * i) as *const __m512i) };
            *a = _mm512_add_epi64(*a, v);
        }
    }
    let tail = crate::kernels::scalar::read_checksum(chunks.remainder());
    let total = _mm512_add_epi64(
        _mm512_add_epi64(acc[0], acc[1]),
        _mm512_add_epi64(acc[2], acc[3]),
    );
    tail.wrapping_add(_mm512_reduce_add_epi64(total) as u64)
}
