//! Portable reference kernels: plain Rust over the repacked layout, written for clarity.
//! Every SIMD kernel must produce exactly these integers.

use super::{act_scale, BLOCK_COLS, GROUP_BYTES, NON_FINITE_BITS, STRIP_BLOCK_BYTES, STRIP_ROWS};

/// Code (0, 1 or 2) of row lane `r`, column `k` (within the strip) of one strip.
#[inline]
fn code(strip: &[u8], r: usize, k: usize) -> i32 {
    let (blk, kk) = (k / BLOCK_COLS, k % BLOCK_COLS);
    // Within a block, column 32p + 4m + b sits in group m, byte b of the row's lane, bits 6-2p.
    let (p, m, b) = (kk / 32, (kk % 32) / 4, kk % 4);
    let byte = strip[blk * STRIP_BLOCK_BYTES + m * GROUP_BYTES + r * 4 + b];
    i32::from((byte >> (6 - 2 * p)) & 3)
}

pub(crate) fn dot_strips(
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let strip_bytes = n_blocks * STRIP_BLOCK_BYTES;
    for (strip, o) in strips.chunks_exact(strip_bytes).zip(out.iter_mut()) {
        for (r, acc) in o.iter_mut().enumerate() {
            *acc = act
                .iter()
                .enumerate()
                .map(|(k, &a)| code(strip, r, k) * i32::from(a))
                .sum();
        }
    }
}

pub(crate) fn dot_strip_tile(
    strip: &[u8],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let n = out.len();
    for (t, o) in out.iter_mut().enumerate() {
        for (r, acc) in o.iter_mut().enumerate() {
            *acc = (0..n_blocks * BLOCK_COLS)
                .map(|k| {
                    let a = acts[((k / 4) * n + t) * 4 + k % 4];
                    code(strip, r, k) * i32::from(a)
                })
                .sum();
        }
    }
}

pub(crate) fn quantize_row(x: &[f32], q: &mut [i8]) -> Option<(f32, i32)> {
    // On |x| bit patterns, integer order is float order and NaN/inf sort above every finite value.
    let bits = x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7FFF_FFFF));
    if bits >= NON_FINITE_BITS {
        return None;
    }
    let s = act_scale(f32::from_bits(bits));
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        // |v·s| <= 127 (plus rounding), so the clamp only documents the int8 range.
        let r = (v * s).round_ties_even().clamp(-128.0, 127.0) as i32;
        *o = r as i8;
        sum += r;
    }
    Some((s, sum))
}

/// Wrapping sum of the little-endian u64 words at offsets 0, 8, 16, ... plus the trailing
/// bytes; every SIMD version computes the same value.
pub(crate) fn read_checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let sum = words.by_ref().fold(0u64, |s, w| {
        s.wrapping_add(u64::from_le_bytes(
            <[u8; 8]>::try_from(w).unwrap_or_default(),
        ))
    });
    words
        .remainder()
        .iter()
        .fold(sum, |s, &b| s.wrapping_add(u64::from(b)))
}
