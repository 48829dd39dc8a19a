//! AVX-512 VNNI kernels: one 64-byte group (16 rows × 16 columns of 2-bit codes) per zmm,
//! `vpdpbusd` against a broadcast 4-byte activation group (codes unsigned, activations signed).
//!
//! Single token: the 2-bit planes are only masked, not shifted (`w & 0xC0` is `64·code`), into
//! four accumulators whose scale (64, 16, 4, 1) is removed exactly by arithmetic shifts at the
//! end: 4 ANDs + 4 `vpdpbusd` per 256 weights; four strips are streamed at once (more memory
//! parallelism). Token tiles: the planes are shifted down once and reused by every token of the
//! tile; with enough tokens a strip is unpacked once into scratch memory and shared by all
//! tiles, leaving only `vpdpbusd` in the token loop.
//!
//! Safety contract of every function here: the CPU supports the enabled target features and
//! the slice lengths satisfy the asserts in `kernels::mod` (checked by the dispatcher).

use core::arch::x86_64::*;

use crate::kernels::{act_scale, BLOCK_COLS, GROUPS_PER_BLOCK, GROUP_BYTES, NON_FINITE_BITS};
use crate::kernels::{Line, TileActs, STRIP_BLOCK_BYTES, STRIP_ROWS};

/// How far ahead of the loads each weight stream is prefetched (measured: 2 KiB beats 0.5-1 KiB
/// and 4 KiB with 4 streams per thread).
const PREFETCH_BYTES: usize = 2048;

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

/// `S` strips at once (`bases[i]` is strip i): `S` weight streams in flight, each prefetched
/// ahead, sharing one set of 4 broadcast activation groups.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; every `bases[i]` points to a strip of `strip_bytes` bytes;
/// `act` points to `n_blocks · 128` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn strips_s<const S: usize>(
    bases: [*const u8; S],
    n_blocks: usize,
    act: *const i8,
) -> [[i32; STRIP_ROWS]; S] {
    let masks = [
        _mm512_set1_epi8(0xC0u8 as i8),
        _mm512_set1_epi8(0x30),
        _mm512_set1_epi8(0x0C),
        _mm512_set1_epi8(0x03),
    ];
    let mut acc = [[_mm512_setzero_si512(); 4]; S];
    for blk in 0..n_blocks {
        for m in 0..GROUPS_PER_BLOCK {
            let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
            let mut v = [_mm512_setzero_si512(); S];
            for (v, &strip) in v.iter_mut().zip(&bases) {
                // SAFETY: `off + 64 <= strip_bytes`, so the load stays inside the strip;
                // prefetches never fault and their address is formed with wrapping arithmetic.
                // Past the strip's end they run into the stream's next strip.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(strip.wrapping_add(off + PREFETCH_BYTES) as _);
                    *v = _mm512_loadu_si512(strip.add(off) as *const __m512i);
                }
            }
            for (p, mask) in masks.iter().enumerate() {
                // SAFETY: column blk·128 + 32p + 4m + 3 < n_blocks · 128.
                let x = unsafe { bcast(act.add(blk * BLOCK_COLS + p * 32 + m * 4)) };
                for (acc, v) in acc.iter_mut().zip(&v) {
                    acc[p] = _mm512_dpbusd_epi32(acc[p], _mm512_and_si512(*v, *mask), x);
                }
            }
        }
    }
    let mut out = [[0i32; STRIP_ROWS]; S];
    for (o, acc) in out.iter_mut().zip(acc) {
        store(o, combine_planes(acc));
    }
    out
}

/// Streams: the strips are cut into 4 contiguous runs walked in lockstep, so each of the 4
/// streams reads memory sequentially from its first strip to its last (one ramp-up per run,
/// prefetches flowing from one strip into the next).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_strips(
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let strip_bytes = n_blocks * STRIP_BLOCK_BYTES;
    let a = act.as_ptr();
    let w = strips.as_ptr();
    let n = out.len();
    let q = n / 4;
    let strip = |s: usize| w.wrapping_add(s * strip_bytes);
    for j in 0..q {
        let runs = [j, q + j, 2 * q + j, 3 * q + j];
        // SAFETY: every strip index is < 4q <= n, inside `strips`; `act` has n_blocks·128 values.
        let r = unsafe { strips_s::<4>(runs.map(strip), n_blocks, a) };
        for (&s, r) in runs.iter().zip(r) {
            out[s] = r;
        }
    }
    // The last n - 4q (< 4) strips, side by side.
    let t = 4 * q;
    // SAFETY (all arms): strips t..n are inside `strips`.
    match n - t {
        3 => out[t..].copy_from_slice(&unsafe {
            strips_s::<3>([strip(t), strip(t + 1), strip(t + 2)], n_blocks, a)
        }),
        2 => out[t..]
            .copy_from_slice(&unsafe { strips_s::<2>([strip(t), strip(t + 1)], n_blocks, a) }),
        1 => out[t..].copy_from_slice(&unsafe { strips_s::<1>([strip(t)], n_blocks, a) }),
        _ => {}
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

/// From this many tokens on, a strip's codes are unpacked once and reused by every tile
/// (the stores cost more than they save for a single small tile).
pub(crate) const UNPACK_MIN_TOKENS: usize = 24;

/// Unpacks every group of a strip into 4 code planes (bytes 0..=2), 4 lines per group.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn unpack_strip(strip: &[u8], n_groups: usize, buf: &mut [Line]) {
    let three = _mm512_set1_epi8(3);
    let w = strip.as_ptr();
    let b = buf.as_mut_ptr() as *mut __m512i;
    for g in 0..n_groups {
        // SAFETY: group g lies inside the strip and lines 4g..4g+4 inside `buf` (both checked
        // by the caller); `Line` is 64-byte aligned, as the aligned stores require.
        unsafe {
            let v = _mm512_loadu_si512(w.add(g * GROUP_BYTES) as *const __m512i);
            _mm512_store_si512(
                b.add(4 * g),
                _mm512_and_si512(_mm512_srli_epi16::<6>(v), three),
            );
            _mm512_store_si512(
                b.add(4 * g + 1),
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), three),
            );
            _mm512_store_si512(
                b.add(4 * g + 2),
                _mm512_and_si512(_mm512_srli_epi16::<2>(v), three),
            );
            _mm512_store_si512(b.add(4 * g + 3), _mm512_and_si512(v, three));
        }
    }
}

/// One tile against codes already unpacked by [`unpack_strip`]: the token loop is nothing but
/// `vpdpbusd` with broadcast memory operands.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_unpacked<const N: usize>(
    buf: &[Line],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let b = buf.as_ptr() as *const __m512i;
    let a = acts.as_ptr();
    let mut acc = [_mm512_setzero_si512(); N];
    for blk in 0..n_blocks {
        for m in 0..GROUPS_PER_BLOCK {
            let g = blk * GROUPS_PER_BLOCK + m;
            for p in 0..4 {
                // SAFETY: line 4g + p is inside `buf` (4 lines per group, aligned).
                let c = unsafe { _mm512_load_si512(b.add(4 * g + p)) };
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

/// One strip against several tiles: unpack once, then run every tile on the unpacked codes.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_strip_tiles(
    strip: &[u8],
    n_blocks: usize,
    tiles: &[TileActs<'_>],
    buf: &mut [Line],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let n_groups = n_blocks * GROUPS_PER_BLOCK;
    // SAFETY: forwarded contract; `buf` has 4 lines per group (checked by the dispatcher).
    unsafe { unpack_strip(strip, n_groups, buf) };
    let buf = &*buf;
    let mut rest = out;
    for t in tiles {
        let (o, tail) = std::mem::take(&mut rest).split_at_mut(t.n);
        rest = tail;
        // SAFETY: forwarded contract: tile sizes and lengths were checked by the dispatcher.
        unsafe {
            match t.n {
                16 => tile_unpacked::<16>(buf, n_blocks, t.acts, o),
                8 => tile_unpacked::<8>(buf, n_blocks, t.acts, o),
                4 => tile_unpacked::<4>(buf, n_blocks, t.acts, o),
                2 => tile_unpacked::<2>(buf, n_blocks, t.acts, o),
                _ => tile_unpacked::<1>(buf, n_blocks, t.acts, o),
            }
        }
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

/// Sums the bytes the way the GEMV streams weights (4 sequential runs in lockstep, each
/// prefetched [`PREFETCH_BYTES`] ahead), so the probe measures what that access pattern can get.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn read_checksum(bytes: &[u8]) -> u64 {
    const LINE: usize = 64;
    let run = bytes.len() / 4 / LINE * LINE;
    let mut acc = [_mm512_setzero_si512(); 4];
    let p = bytes.as_ptr();
    for off in (0..run).step_by(LINE) {
        for (i, a) in acc.iter_mut().enumerate() {
            let at = i * run + off;
            // SAFETY: at + 64 <= 4·run <= bytes.len(); prefetches never fault and their address
            // is formed with wrapping arithmetic.
            let v = unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at + PREFETCH_BYTES) as _);
                _mm512_loadu_si512(p.add(at) as *const __m512i)
            };
            *a = _mm512_add_epi64(*a, v);
        }
    }
    let tail = crate::kernels::scalar::read_checksum(&bytes[4 * run..]);
    let total = _mm512_add_epi64(
        _mm512_add_epi64(acc[0], acc[1]),
        _mm512_add_epi64(acc[2], acc[3]),
    );
    tail.wrapping_add(_mm512_reduce_add_epi64(total) as u64)
}

/// `rounds` rounds of 16 independent `vpdpbusd` (register operands, all bytes 1): the
/// instruction's throughput ceiling, which bounds every kernel here. Returns the sum of all
/// lanes, `256 · 4 · rounds` (wrapping), so the work cannot be optimized away.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dpbusd_rounds(rounds: usize) -> i32 {
    let ones = std::hint::black_box(_mm512_set1_epi8(1));
    let mut acc = [_mm512_setzero_si512(); 16];
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = _mm512_dpbusd_epi32(*a, ones, ones);
        }
    }
    let total = acc
        .iter()
        .fold(_mm512_setzero_si512(), |t, a| _mm512_add_epi32(t, *a));
    _mm512_reduce_add_epi32(total)
}
