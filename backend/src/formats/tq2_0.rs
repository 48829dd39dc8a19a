//! ggml's TQ2_0 layout (GGML type 35): blocks of 256 values in 66 bytes.
//!
//! A block is `qs[64]` followed by an f16 scale `d`. Codes are `v + 1` in 2 bits. The block is
//! two halves of 128 values; within half `h`, byte `32h + m` holds elements `128h + 32l + m`
//! for `l = 0..4` at bits `2l..2l+2` (four 32-element planes). Dequantized value: `(code - 1) * d`.

use half::f16;

use super::tq_blocks::{self, BlockLayout};
use crate::Result;

const FORMAT: &str = "TQ2_0";

/// Elements per block.
pub const BLOCK: usize = tq_blocks::BLOCK;
/// Bytes per block: 64 code bytes + f16 scale.
pub const BLOCK_BYTES: usize = 66;
const QS_BYTES: usize = 64;

/// Total byte size of `n` elements (`n` must be a multiple of [`BLOCK`]).
pub fn packed_size(n: usize) -> usize {
    LAYOUT.packed_size(n)
}

/// Writes 256 codes (each 0..=3) and `d` into one block.
fn pack_block(codes: &[u8; BLOCK], d: f16, out: &mut [u8]) {
    let (qs, tail) = out.split_at_mut(QS_BYTES);
    for (half, bytes) in qs.chunks_exact_mut(32).enumerate() {
        let codes = &codes[128 * half..128 * half + 128];
        for (m, byte) in bytes.iter_mut().enumerate() {
            *byte = codes[m] | codes[32 + m] << 2 | codes[64 + m] << 4 | codes[96 + m] << 6;
        }
    }
    tail.copy_from_slice(&d.to_le_bytes());
}

/// Reads one block's 256 codes (0..=3) and its scale.
fn unpack_block(block: &[u8], codes: &mut [u8; BLOCK]) -> f16 {
    let (qs, tail) = block.split_at(QS_BYTES);
    for (half, bytes) in qs.chunks_exact(32).enumerate() {
        let codes = &mut codes[128 * half..128 * half + 128];
        for (m, &b) in bytes.iter().enumerate() {
            for l in 0..4 {
                codes[32 * l + m] = (b >> (2 * l)) & 3;
            }
        }
    }
    f16::from_le_bytes([tail[0], tail[1]])
}

const LAYOUT: BlockLayout = BlockLayout {
    format: FORMAT,
    block_bytes: BLOCK_BYTES,
    pack: pack_block,
    unpack: unpack_block,
};

/// Quantizes floats exactly as ggml's `quantize_row_tq2_0_ref`: per block `d = max|x|`,
/// code = `round_half_away(x * (1/d)) + 1`, `d` stored as f16. Input must be finite.
pub fn quantize(x: &[f32]) -> Result<Vec<u8>> {
    LAYOUT.quantize(x)
}

/// Dequantizes exactly as ggml's `dequantize_row_tq2_0` (code 3, unused, decodes to `2 * d`).
pub fn dequantize(bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    LAYOUT.dequantize(bytes, n)
}

/// Packs ternary values with one scale for every block (`d = f16(scale)`).
pub fn pack_ternary(values: &[i8], scale: f32) -> Result<Vec<u8>> {
    LAYOUT.pack_ternary(values, scale)
}

/// Unpacks ternary values and the per-block scales. Code 3 is not ternary and is an error.
pub fn unpack_ternary(bytes: &[u8], n: usize) -> Result<(Vec<i8>, Vec<f16>)> {
    LAYOUT.unpack_ternary(bytes, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        let mut v = vec![0i8; 256];
        v[0] = 1; // byte 0, bits 1-0 -> code 2
        v[32] = -1; // byte 0, bits 3-2 -> code 0
        v[255] = 1; // half 1, plane 3, m 31 -> byte 63, bits 7-6 -> code 2
        v[128 + 5] = -1; // half 1, plane 0, m 5 -> byte 37, bits 1-0 -> code 0
        let mut want = vec![0x55u8; 64]; // all zeros: code 1 in every 2-bit slot
        want[0] = 0b01_01_00_10;
        want[63] = 0b10_01_01_01;
        want[37] = 0b01_01_01_00;
        want.extend([0x00, 0x3C]); // f16 1.0
        let got = pack_ternary(&v, 1.0).unwrap();
        assert_eq!(got, want);
        let (back, d) = unpack_ternary(&got, 256).unwrap();
        assert_eq!(back, v);
        assert_eq!(d, vec![f16::ONE]);
    }

    #[test]
    fn quantize_hand_computed_rounds_half_away_from_zero() {
        let mut x = vec![0.0f32; 256];
        x[0] = 1.0; // amax -> d = 1.0 (f16 0x3C00), code 2
        x[1] = 0.5; // exactly half -> away from zero -> code 2 (half-even would give 0)
        x[2] = -0.5; // -> code 0
        x[3] = 0.4; // -> code 1
        x[40] = -0.9; // byte 8, bits 3-2 -> code 0
        let got = quantize(&x).unwrap();
        let mut want = vec![0x55u8; 64];
        want[0] = 0x56;
        want[1] = 0x56;
        want[2] = 0x54;
        want[8] = 0x51;
        want.extend([0x00, 0x3C]);
        assert_eq!(got, want);
        let y = dequantize(&got, 256).unwrap();
        assert_eq!(&y[..4], &[1.0, 1.0, -1.0, 0.0]);
        assert_eq!(y[40], -1.0);
    }

    #[test]
    fn zero_block_has_zero_scale_and_zero_codes() {
        let got = quantize(&[0.0; 256]).unwrap();
        assert!(got[..64].iter().all(|&b| b == 0x55));
        assert_eq!(&got[64..], &[0, 0]);
    }

    #[test]
    fn code3_dequantizes_like_ggml_but_is_not_ternary() {
        let mut bytes = pack_ternary(&[0i8; 256], 1.0).unwrap();
        bytes[0] = 0x57; // element 0 gets code 3
        assert_eq!(dequantize(&bytes, 256).unwrap()[0], 2.0);
        assert!(unpack_ternary(&bytes, 256).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(quantize(&[0.0; 100]).is_err());
        let mut x = vec![0.0f32; 256];
        x[9] = f32::INFINITY;
        assert!(quantize(&x).is_err());
        assert!(pack_ternary(&[0i8; 256], 1e6).is_err());
        assert!(pack_ternary(&[5i8; 256], 1.0).is_err());
        assert!(dequantize(&[0u8; 65], 256).is_err());
        assert!(unpack_ternary(&[0u8; 132], 256).is_err());
    }
}
