//! ggml's Q8_0 layout (GGML type 8): blocks of 32 values in 34 bytes, an f16 scale `d` then 32
//! signed bytes. Used for token embeddings (`--token-embedding-type q8_0`).

use half::f16;

use super::{check_finite, check_len, check_multiple};
use crate::Result;

const FORMAT: &str = "Q8_0";

/// Elements per block.
pub const BLOCK: usize = 32;
/// Bytes per block: f16 scale + 32 int8 values.
pub const BLOCK_BYTES: usize = 34;

/// Total byte size of `n` elements (`n` must be a multiple of [`BLOCK`]).
pub fn packed_size(n: usize) -> usize {
    n / BLOCK * BLOCK_BYTES
}

/// Quantizes exactly as ggml's `quantize_row_q8_0_ref`: per block `d = max|x| / 127`,
/// `q = round_half_away(x * (1/d))`, `d` stored as f16. Input must be finite.
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
    if super::q8_0_x86::available() {
        // SAFETY: the CPU has the features `available` checks; lengths checked above.
        unsafe { super::q8_0_x86::quantize_blocks(x, out) };
        return Ok(());
    }
    quantize_blocks_scalar(x, out);
    Ok(())
}

/// The reference loop over whole blocks (lengths already checked).
fn quantize_blocks_scalar(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (o, &v) in ob[2..].iter_mut().zip(xb) {
            // f32::round is C's roundf: half away from zero.
            *o = (v * id).round() as i8 as u8;
        }
    }
}

/// Dequantizes exactly as ggml's `dequantize_row_q8_0`: `x = q * d`.
pub fn dequantize(bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    check_multiple(FORMAT, n, BLOCK)?;
    check_len(FORMAT, "tensor data", bytes.len(), packed_size(n))?;
    let mut out = Vec::with_capacity(n);
    for block in bytes.chunks_exact(BLOCK_BYTES) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        // max|x| = 127 gives d = 1 exactly: values round half away from zero.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = -2.5;
        x[2] = 2.5;
        x[3] = 0.49;
        x[4] = -127.0;
        let q = quantize(&x).unwrap();
        assert_eq!(q.len(), 34);
        assert_eq!(f16::from_le_bytes([q[0], q[1]]), f16::from_f32(1.0));
        assert_eq!(&q[2..7], &[127u8, (-3i8) as u8, 3, 0, (-127i8) as u8]);
        let back = dequantize(&q, 32).unwrap();
        assert_eq!(&back[..5], &[127.0, -3.0, 3.0, 0.0, -127.0]);
    }

    #[test]
    fn zero_block_and_errors() {
        let q = quantize(&[0.0; 64]).unwrap();
        assert!(q.iter().all(|&b| b == 0));
        assert!(quantize(&[1.0; 31]).is_err());
        assert!(quantize(&[f32::NAN; 32]).is_err());
        assert!(dequantize(&q[..33], 64).is_err());
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
