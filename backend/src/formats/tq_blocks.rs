//! What TQ2_0 and TQ1_0 share: blocks of 256 codes `v + 1` with one f16 scale `d`, quantized,
//! dequantized, packed and unpacked the same way. Only the bit layout of a block differs; each
//! format supplies it as a [`BlockLayout`].

use half::f16;

use super::{check_finite, check_len, check_multiple, check_ternary};
use crate::{Error, Result};

/// Elements per block.
pub(crate) const BLOCK: usize = 256;

/// One format's block encoding.
pub(crate) struct BlockLayout {
    pub format: &'static str,
    pub block_bytes: usize,
    /// Writes 256 codes (0..=2; TQ2_0 can also hold 3) and `d` into one block.
    pub pack: fn(&[u8; BLOCK], f16, &mut [u8]),
    /// Reads one block's 256 codes and its scale.
    pub unpack: fn(&[u8], &mut [u8; BLOCK]) -> f16,
}

impl BlockLayout {
    pub fn packed_size(&self, n: usize) -> usize {
        n / BLOCK * self.block_bytes
    }

    /// ggml's `quantize_row_tq*_ref`: per block `d = max|x|`, code = `round_half_away(x / d) + 1`.
    pub fn quantize(&self, x: &[f32]) -> Result<Vec<u8>> {
        check_multiple(self.format, x.len(), BLOCK)?;
        check_finite(self.format, x)?;
        let mut out = vec![0u8; self.packed_size(x.len())];
        let mut codes = [0u8; BLOCK];
        for (xb, ob) in x
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(self.block_bytes))
        {
            let d = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (c, &v) in codes.iter_mut().zip(xb) {
                // f32::round is C's lroundf rounding: half away from zero.
                *c = ((v * id).round() as i32 + 1) as u8;
            }
            (self.pack)(&codes, f16::from_f32(d), ob);
        }
        Ok(out)
    }

    /// ggml's `dequantize_row_tq*`: `(code - 1) * d`.
    pub fn dequantize(&self, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
        check_multiple(self.format, n, BLOCK)?;
        check_len(self.format, "tensor data", bytes.len(), self.packed_size(n))?;
        let mut out = vec![0f32; n];
        let mut codes = [0u8; BLOCK];
        for (ob, block) in out
            .chunks_exact_mut(BLOCK)
            .zip(bytes.chunks_exact(self.block_bytes))
        {
            let d = (self.unpack)(block, &mut codes).to_f32();
            for (o, &c) in ob.iter_mut().zip(&codes) {
                *o = (c as i32 - 1) as f32 * d;
            }
        }
        Ok(out)
    }

    /// Ternary values with one scale for every block (`d = f16(scale)`).
    pub fn pack_ternary(&self, values: &[i8], scale: f32) -> Result<Vec<u8>> {
        check_multiple(self.format, values.len(), BLOCK)?;
        check_ternary(self.format, values)?;
        let d = scale_to_f16(self.format, scale)?;
        let mut out = vec![0u8; self.packed_size(values.len())];
        let mut codes = [0u8; BLOCK];
        for (vb, ob) in values
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(self.block_bytes))
        {
            for (c, &v) in codes.iter_mut().zip(vb) {
                *c = (v + 1) as u8;
            }
            (self.pack)(&codes, d, ob);
        }
        Ok(out)
    }

    /// Ternary values and the per-block scales; a code above 2 is not ternary and an error.
    pub fn unpack_ternary(&self, bytes: &[u8], n: usize) -> Result<(Vec<i8>, Vec<f16>)> {
        check_multiple(self.format, n, BLOCK)?;
        check_len(self.format, "tensor data", bytes.len(), self.packed_size(n))?;
        let mut values = vec![0i8; n];
        let mut scales = Vec::with_capacity(n / BLOCK);
        let mut codes = [0u8; BLOCK];
        for (b, (vb, block)) in values
            .chunks_exact_mut(BLOCK)
            .zip(bytes.chunks_exact(self.block_bytes))
            .enumerate()
        {
            scales.push((self.unpack)(block, &mut codes));
            if let Some(i) = codes.iter().position(|&c| c > 2) {
                return Err(Error::format(
                    self.format,
                    format!("invalid code {} for element {}", codes[i], b * BLOCK + i),
                ));
            }
            for (v, &c) in vb.iter_mut().zip(&codes) {
                *v = c as i8 - 1;
            }
        }
        Ok((values, scales))
    }
}

/// Converts a per-tensor scale to the f16 block scale, refusing values f16 cannot hold.
pub(crate) fn scale_to_f16(format: &'static str, scale: f32) -> Result<f16> {
    let d = f16::from_f32(scale);
    if scale.is_finite() && d.is_finite() {
        Ok(d)
    } else {
        Err(Error::format(
            format,
            format!("scale {scale} is not representable as a finite f16"),
        ))
    }
}
