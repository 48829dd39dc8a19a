//! NEON kernels. A 64-byte group is four 16-byte quads (rows 0-3, 4-7, 8-11, 12-15); NEON has
//! per-byte shifts, so code planes are `(v >> 2k) & 3`. Both operands are treated as signed
//! (codes 0..=2 fit), as `sdot`/`smull` require.
//!
//! `vdotq_s32` is unstable in Rust, so `sdot` is emitted with `asm!` inside functions that
//! enable the `dotprod` target feature. Without dotprod: `smlal` into i16 over one 128-column
//! block (at most 32 products of |2·128| per lane = 8192), then `sadalp` into i32.
//!
//! Safety contract of every function here: the CPU supports the enabled target features and
//! the slice lengths satisfy the asserts in `kernels::mod` (checked by the dispatcher).

use core::arch::aarch64::*;
use core::arch::asm;

use crate::kernels::{act_scale, BLOCK_COLS, GROUPS_PER_BLOCK, GROUP_BYTES, NON_FINITE_BITS};
use crate::kernels::{STRIP_BLOCK_BYTES, STRIP_ROWS};

/// The 4 bytes at `p` repeated in every 32-bit lane.
///
/// # Safety
/// `p` must point to 4 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bcast(p: *const i8) -> int8x16_t {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    vreinterpretq_s8_s32(vdupq_n_s32(unsafe { (p as *const i32).read_unaligned() }))
}

/// The four code planes (bits 7-6, 5-4, 3-2, 1-0) of a quad, as bytes 0..=2.
#[inline]
#[target_feature(enable = "neon")]
fn planes(v: uint8x16_t) -> [int8x16_t; 4] {
    let three = vdupq_n_u8(3);
    [
        vreinterpretq_s8_u8(vshrq_n_u8::<6>(v)),
        vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(v), three)),
        vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(v), three)),
        vreinterpretq_s8_u8(vandq_u8(v, three)),
    ]
}

/// Loads quad `quad` of the group at byte offset `off`.
///
/// # Safety
/// `w + off + 16·quad .. + 16` must be readable.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_quad(w: *const u8, off: usize, quad: usize) -> uint8x16_t {
    // SAFETY: guaranteed by the caller.
    unsafe { vld1q_u8(w.add(off + 16 * quad)) }
}

/// `acc += Σ` of each 4-byte group of `a·b` (signed), i.e. the `sdot` instruction.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` reads two vector registers and updates a third; no memory, stack or
    // flags are touched, and this function enables the dotprod feature it needs.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

#[inline]
#[target_feature(enable = "neon")]
fn store_quad(out: &mut [i32; STRIP_ROWS], quad: usize, v: int32x4_t) {
    let dst = &mut out[4 * quad..4 * quad + 4];
    // SAFETY: `dst` is 4 writable i32.
    unsafe { vst1q_s32(dst.as_mut_ptr(), v) }
}

#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dot_strips_dotprod(
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let strip_bytes = n_blocks * STRIP_BLOCK_BYTES;
    let a = act.as_ptr();
    for (strip, o) in strips.chunks_exact(strip_bytes).zip(out.iter_mut()) {
        let w = strip.as_ptr();
        let mut acc = [vdupq_n_s32(0); 4];
        for blk in 0..n_blocks {
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
                for (quad, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: the group (64 bytes at `off`) lies inside the strip.
                    let c = planes(unsafe { load_quad(w, off, quad) });
                    for (c, x) in c.into_iter().zip(x) {
                        *acc = sdot(*acc, c, x);
                    }
                }
            }
        }
        for (quad, v) in acc.into_iter().enumerate() {
            store_quad(o, quad, v);
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dot_strip_tile_dotprod<const N: usize>(
    strip: &[u8],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let w = strip.as_ptr();
    let a = acts.as_ptr();
    let mut acc = [[vdupq_n_s32(0); 4]; N];
    for blk in 0..n_blocks {
        for m in 0..GROUPS_PER_BLOCK {
            let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
            for quad in 0..4 {
                // SAFETY: the group lies inside the strip.
                let c = planes(unsafe { load_quad(w, off, quad) });
                for (p, c) in c.into_iter().enumerate() {
                    let kq = blk * (BLOCK_COLS / 4) + p * 8 + m;
                    for (t, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: (kq · N + t) · 4 + 3 < n_blocks · 128 · N = acts.len().
                        let x = unsafe { bcast(a.add((kq * N + t) * 4)) };
                        acc[quad] = sdot(acc[quad], c, x);
                    }
                }
            }
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        for (quad, v) in acc.into_iter().enumerate() {
            store_quad(o, quad, v);
        }
    }
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_strips(
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    // A single token in the interleaved tile layout is just the plain row.
    let strip_bytes = n_blocks * STRIP_BLOCK_BYTES;
    for (strip, o) in strips.chunks_exact(strip_bytes).zip(out.iter_mut()) {
        // SAFETY: same contract as this function, for one strip and a 1-token tile.
        unsafe { dot_strip_tile::<1>(strip, n_blocks, act, core::slice::from_mut(o)) };
    }
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_strip_tile<const N: usize>(
    strip: &[u8],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let w = strip.as_ptr();
    let a = acts.as_ptr();
    // One quad (4 rows) at a time keeps 4N accumulators within the 32 registers.
    for quad in 0..4 {
        // [rows 0-1 of the quad, rows 2-3], each lane the sum of a pair of columns.
        let mut acc = [[vdupq_n_s32(0); 2]; N];
        for blk in 0..n_blocks {
            let mut acc16 = [[vdupq_n_s16(0); 2]; N];
            for m in 0..GROUPS_PER_BLOCK {
                let off = (blk * GROUPS_PER_BLOCK + m) * GROUP_BYTES;
                // SAFETY: the group lies inside the strip.
                let c = planes(unsafe { load_quad(w, off, quad) });
                for (p, c) in c.into_iter().enumerate() {
                    let kq = blk * (BLOCK_COLS / 4) + p * 8 + m;
                    for (t, acc16) in acc16.iter_mut().enumerate() {
                        // SAFETY: (kq · N + t) · 4 + 3 < n_blocks · 128 · N = acts.len().
                        let x = unsafe { bcast(a.add((kq * N + t) * 4)) };
                        acc16[0] = vmlal_s8(acc16[0], vget_low_s8(c), vget_low_s8(x));
                        acc16[1] = vmlal_high_s8(acc16[1], c, x);
                    }
                }
            }
            for (acc, acc16) in acc.iter_mut().zip(acc16) {
                acc[0] = vpadalq_s16(acc[0], acc16[0]);
                acc[1] = vpadalq_s16(acc[1], acc16[1]);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            store_quad(o, quad, vpaddq_s32(acc[0], acc[1]));
        }
    }
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn quantize_row(x: &[f32], q: &mut [i8]) -> Option<(f32, i32)> {
    let px = x.as_ptr();
    let abs = vdupq_n_u32(0x7FFF_FFFF);
    let mut mx = vdupq_n_u32(0);
    let full4 = x.len() / 4;
    for i in 0..full4 {
        // SAFETY: 4 floats at 4·i are inside `x`.
        let v = unsafe { vld1q_u32(px.add(4 * i) as *const u32) };
        mx = vmaxq_u32(mx, vandq_u32(v, abs));
    }
    let bits = x[4 * full4..]
        .iter()
        .map(|v| v.to_bits() & 0x7FFF_FFFF)
        .fold(vmaxvq_u32(mx), u32::max);
    if bits >= NON_FINITE_BITS {
        return None;
    }
    let s = act_scale(f32::from_bits(bits));
    let sv = vdupq_n_f32(s);
    let mut sum = vdupq_n_s32(0);
    let full16 = x.len() / 16;
    for i in 0..full16 {
        // SAFETY: 16 floats in / 16 bytes out at index 16·i, inside `x` and `q` (same length).
        unsafe {
            let p = px.add(16 * i);
            // vcvtnq rounds to nearest, ties to even, like `f32::round_ties_even`.
            let r0 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p), sv));
            let r1 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p.add(4)), sv));
            let r2 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p.add(8)), sv));
            let r3 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p.add(12)), sv));
            sum = vaddq_s32(sum, vaddq_s32(vaddq_s32(r0, r1), vaddq_s32(r2, r3)));
            let lo = vcombine_s16(vqmovn_s32(r0), vqmovn_s32(r1));
            let hi = vcombine_s16(vqmovn_s32(r2), vqmovn_s32(r3));
            vst1q_s8(
                q.as_mut_ptr().add(16 * i),
                vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)),
            );
        }
    }
    let mut total = vaddvq_s32(sum);
    for (o, &v) in q[16 * full16..].iter_mut().zip(&x[16 * full16..]) {
        let r = (v * s).round_ties_even().clamp(-128.0, 127.0) as i32;
        *o = r as i8;
        total += r;
    }
    Some((s, total))
}
