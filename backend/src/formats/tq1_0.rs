//! ggml's TQ1_0 layout (GGML type 34): blocks of 256 values in 54 bytes (1.6875 bits each).
//!
//! A block is `qs[48]`, `qh[4]`, then an f16 scale `d`. Trits are `v + 1` in {0, 1, 2}. Five trits
//! form a base-3 number with the first element most significant, stored as the fixed-point
//! fraction `ceil(q * 256 / 243)`, so digit `n` decodes as `((byte * 3^n) mod 256) * 3 >> 8`.
//! - `qs[m]`, m < 32: elements `m + 32n`, n = 0..5 (elements 0..160);
//! - `qs[32 + m]`, m < 16: elements `160 + m + 16n`, n = 0..5 (elements 160..240);
//! - `qh[j]`, j < 4: elements `240 + j + 4n`, n = 0..4, the number times 3 so the 5th trit is 0.

use half::f16;

use super::tq_blocks::{self, BlockLayout};
use crate::Result;

const FORMAT: &str = "TQ1_0";

/// Elements per block.
pub const BLOCK: usize = tq_blocks::BLOCK;
/// Bytes per block: 48 + 4 trit bytes + f16 scale.
pub const BLOCK_BYTES: usize = 54;

/// Total byte size of `n` elements (`n` must be a multiple of [`BLOCK`]).
pub fn packed_size(n: usize) -> usize {
    LAYOUT.packed_size(n)
}

/// Encodes up to five trits (most significant first) as ggml's fixed-point byte.
#[inline]
fn encode(trits: impl Iterator<Item = u8>) -> u8 {
    let q = trits.fold(0u16, |q, t| q * 3 + t as u16);
    (q * 256).div_ceil(243) as u8
}

/// Decodes trit `n` (0 = most significant) of a fixed-point byte.
#[inline]
fn digit(byte: u8, n: usize) -> u8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    ((byte.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as u8
}

fn pack_block(t: &[u8; BLOCK], d: f16, out: &mut [u8]) {
    for m in 0..32 {
        out[m] = encode((0..5).map(|n| t[m + 32 * n]));
    }
    for m in 0..16 {
        out[32 + m] = encode((0..5).map(|n| t[160 + m + 16 * n]));
    }
    for j in 0..4 {
        // The trailing 0 shifts the four trits up so the byte's last digit is unused.
        out[48 + j] = encode((0..4).map(|n| t[240 + j + 4 * n]).chain([0]));
    }
    out[52..54].copy_from_slice(&d.to_le_bytes());
}

fn unpack_block(block: &[u8], t: &mut [u8; BLOCK]) -> f16 {
    for n in 0..5 {
        for m in 0..32 {
            t[m + 32 * n] = digit(block[m], n);
        }
        for m in 0..16 {
            t[160 + m + 16 * n] = digit(block[32 + m], n);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            t[240 + j + 4 * n] = digit(block[48 + j], n);
        }
    }
    f16::from_le_bytes([block[52], block[53]])
}

const LAYOUT: BlockLayout = BlockLayout {
    format: FORMAT,
    block_bytes: BLOCK_BYTES,
    pack: pack_block,
    unpack: unpack_block,
};

/// Quantizes floats exactly as ggml's `quantize_row_tq1_0_ref`: per block `d = max|x|`,
/// code = `round_half_away(x * (1/d)) + 1`, `d` stored as f16. Input must be finite.
pub fn quantize(x: &[f32]) -> Result<Vec<u8>> {
    LAYOUT.quantize(x)
}

/// Dequantizes exactly as ggml's `dequantize_row_tq1_0`.
pub fn dequantize(bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    LAYOUT.dequantize(bytes, n)
}

/// Packs ternary values with one scale for every block (`d = f16(scale)`).
pub fn pack_ternary(values: &[i8], scale: f32) -> Result<Vec<u8>> {
    LAYOUT.pack_ternary(values, scale)
}

/// Unpacks ternary values and the per-block scales. Every byte decodes to valid trits, so only
/// the length can be wrong.
pub fn unpack_ternary(bytes: &[u8], n: usize) -> Result<(Vec<i8>, Vec<f16>)> {
    LAYOUT.unpack_ternary(bytes, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_of_every_byte_are_trits() {
        for b in 0..=255u8 {
            for n in 0..5 {
                assert!(digit(b, n) <= 2);
            }
        }
    }

    #[test]
    fn encode_decode_all_five_trit_numbers() {
        for q in 0..243u16 {
            let trits: Vec<u8> = (0..5).rev().map(|n| (q / 3u16.pow(n) % 3) as u8).collect();
            let b = encode(trits.iter().copied());
            let back: Vec<u8> = (0..5).map(|n| digit(b, n)).collect();
            assert_eq!(back, trits, "q = {q}, byte = {b}");
        }
    }

    #[test]
    fn hand_computed_block() {
        let mut v = vec![0i8; 256];
        v[0] = 1; // qs[0], digit 0
        v[128] = -1; // qs[0], digit 4: trits 2,1,1,1,0 -> q = 201 -> ceil(201*256/243) = 212
        v[160 + 3 + 16 * 2] = 1; // qs[35], digit 2: trits 1,1,2,1,1 -> q = 130 -> 137
        v[240 + 1 + 4 * 3] = -1; // qh[1], digit 3: trits 1,1,1,0 (,0) -> q = 39*3 = 117 -> 124
                                 // All-zero bytes: qs trits 1,1,1,1,1 -> q = 121 -> 128; qh q = 40*3 = 120 -> 127.
        let mut want = vec![128u8; 48];
        want.extend([127u8; 4]);
        want[0] = 212;
        want[35] = 137;
        want[49] = 124;
        want.extend([0x00, 0xB8]); // f16 -0.5
        let got = pack_ternary(&v, -0.5).unwrap();
        assert_eq!(got, want);
        let (back, d) = unpack_ternary(&got, 256).unwrap();
        assert_eq!(back, v);
        assert_eq!(d, vec![f16::from_f32(-0.5)]);
        let y = dequantize(&got, 256).unwrap();
        assert_eq!((y[0], y[1], y[128]), (-0.5, 0.0, 0.5));
    }

    #[test]
    fn quantize_hand_computed() {
        let mut x = vec![0.0f32; 256];
        x[0] = -2.0; // d = 2 (f16 0x4000), trit 0
        x[32] = 1.0; // x/d = 0.5 rounds away from zero -> trit 2
        x[64] = -0.9; // -0.45 -> trit 1
                      // qs[0] trits 0,2,1,1,1 -> q = 0 + 54 + 9 + 3 + 1 = 67 -> ceil(67*256/243) = 71
        let got = quantize(&x).unwrap();
        let mut want = vec![128u8; 48];
        want.extend([127u8; 4]);
        want[0] = 71;
        want.extend([0x00, 0x40]);
        assert_eq!(got, want);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(quantize(&[0.0; 255]).is_err());
        assert!(quantize(&[f32::NAN; 256]).is_err());
        assert!(pack_ternary(&[2i8; 256], 1.0).is_err());
        assert!(pack_ternary(&[0i8; 256], f32::INFINITY).is_err());
        assert!(dequantize(&[0u8; 53], 256).is_err());
        assert!(unpack_ternary(&[0u8; 54], 512).is_err());
    }
}
