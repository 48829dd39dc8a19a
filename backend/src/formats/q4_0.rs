//! ggml's Q4_0 layout (GGML type 2): blocks of 32 values in 18 bytes, an f16 scale `d` then 16
//! bytes; byte `j` holds element `j` in its low nibble and element `j + 16` in its high nibble.
//! Used for token embeddings (`--token-embedding-type q4_0`).

use half::f16;

use super::{check_finite, check_len, check_multiple};
use crate::Result;

const FORMAT: &str = "Q4_0";

/// Elements per block.
pub const BLOCK: usize = 32;
/// Bytes per block: f16 scale + 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 18;

/// Total byte size of `n` elements (`n` must be a multiple of [`BLOCK`]).
pub fn packed_size(n: usize) -> usize {
    n / BLOCK * BLOCK_BYTES
}

/// Quantizes exactly as ggml's `quantize_row_q4_0_ref`: `d = m / -8` where `m` is the first
/// value of largest magnitude (sign kept), nibble = `min(15, trunc(x * (1/d) + 8.5))`.
pub fn quantize(x: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; packed_size(x.len())];
    quantize_into(x, &mut out)?;
    Ok(out)
}

/// [`quantize`] into `out` (exactly [`packed_size`]`(x.len())` bytes).
pub fn quantize_into(x: &[f32], out: &mut [u8]) -> Result<()> {
    check_multiple(FORMAT, x.len(), BLOCK)?;
    check_finite(FORMAT, x)?;
    check_len(FORMAT, "output", out.len(), packed_size(x.len()))?;
    #[cfg(target_arch = "x86_64")]
    if super::q4_0_x86::available() {
        // SAFETY: the CPU has the features `available` checks; lengths checked above.
        unsafe { super::q4_0_x86::quantize_blocks(x, out) };
        return Ok(());
    }
    quantize_blocks_scalar(x, out);
    Ok(())
}

/// The reference loop over whole blocks (lengths already checked).
fn quantize_blocks_scalar(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        // `as i8` truncates toward zero like C's (int8_t) cast for these in-range values.
        let nibble = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..BLOCK / 2 {
            ob[2 + j] = nibble(xb[j]) | nibble(xb[j + BLOCK / 2]) << 4;
        }
    }
}

/// Dequantizes exactly as ggml's `dequantize_row_q4_0`: `x = (nibble - 8) * d`.
pub fn dequantize(bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; n];
    dequantize_into(bytes, &mut out)?;
    Ok(out)
}

/// [`dequantize`] into `out`, whose length is the number of values.
pub fn dequantize_into(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let n = out.len();
    check_multiple(FORMAT, n, BLOCK)?;
    check_len(FORMAT, "tensor data", bytes.len(), packed_size(n))?;
    for (ob, block) in out
        .chunks_exact_mut(BLOCK)
        .zip(bytes.chunks_exact(BLOCK_BYTES))
    {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        for j in 0..BLOCK / 2 {
            let b = block[2 + j];
            ob[j] = ((b & 0x0f) as i32 - 8) as f32 * d;
            ob[j + BLOCK / 2] = ((b >> 4) as i32 - 8) as f32 * d;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        // Largest magnitude -8 gives d = 1: nibble = trunc(x + 8.5) clamped to 15.
        let mut x = [0.0f32; 32];
        x[0] = -8.0;
        x[1] = 7.0;
        x[2] = 7.6; // 16.1 -> 16 -> clamped to 15
        x[16] = 1.4; // 9.9 -> 9
        x[17] = -0.6; // 7.9 -> 7
        let q = quantize(&x).unwrap();
        assert_eq!(f16::from_le_bytes([q[0], q[1]]), f16::from_f32(1.0));
        assert_eq!(q[2], 9 << 4); // element 0 -> 0, element 16 -> 9
        assert_eq!(q[3], 7 << 4 | 15);
        assert_eq!(q[4], 8 << 4 | 15);
        let back = dequantize(&q, 32).unwrap();
        assert_eq!(
            (back[0], back[1], back[2], back[16], back[17]),
            (-8.0, 7.0, 7.0, 1.0, -1.0)
        );
    }

    #[test]
    fn first_largest_magnitude_sets_the_sign() {
        let mut x = [0.0f32; 32];
        x[3] = 4.0;
        x[5] = -4.0;
        let q = quantize(&x).unwrap();
        assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), -0.5);
        assert!(quantize(&[0.0; 33]).is_err());
    }

    #[test]
    fn every_path_gives_the_scalar_bytes() {
        crate::formats::awkward::assert_fastest_matches_scalar(
            BLOCK,
            BLOCK_BYTES,
            quantize_blocks_scalar,
            quantize_into,
        );
    }
}
