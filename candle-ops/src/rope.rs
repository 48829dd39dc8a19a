//! Rotary position embeddings (RoPE), precomputed for a context length.
//!
//! Two conventions exist in GGUF files and both are used here:
//! - [`RopeStyle::Neox`]: dimension `i` rotates with `i + d/2` (Hugging Face `rotate_half`).
//!   BitNet b1.58 (`bitnet-b1.58`, `bitnet-25`, `bitnet`) uses it; its converters do not permute q/k.
//! - [`RopeStyle::Interleaved`]: dimension `2i` rotates with `2i + 1` (ggml's "NORM" mode).
//!   `llama` files use it because llama.cpp's converters permute the q/k rows to match.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Which pairs of dimensions a rotation mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(i, i + d/2)`.
    Neox,
    /// Pairs `(2i, 2i + 1)`.
    Interleaved,
}

/// cos/sin tables `[n_ctx, head_dim/2]` for one model.
#[derive(Clone, Debug)]
pub struct RotaryEmbedding {
    /// `[n_ctx, head_dim/2]` row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// `head_dim / 2`, the width of a table row.
    half: usize,
    style: RopeStyle,
    n_ctx: usize,
    /// Where [`RotaryEmbedding::apply`] puts the table rows it uses.
    device: Device,
}

impl RotaryEmbedding {
    /// Builds tables for positions `0..n_ctx` with frequencies `θ^(-2i/d) / linear_scale`, each
    /// further divided by `freq_factors[i]` when given (llama.cpp's optional `rope_freqs.weight`).
    pub fn new(
        head_dim: usize,
        theta: f32,
        linear_scale: f32,
        n_ctx: usize,
        style: RopeStyle,
        freq_factors: Option<&[f32]>,
        device: &Device,
    ) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "rope needs an even, non-zero head dimension, got {head_dim}"
            )));
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(Error::Config(format!(
                "rope base θ must be positive, got {theta}"
            )));
        }
        if !(linear_scale.is_finite() && linear_scale > 0.0) {
            return Err(Error::Config(format!(
                "rope scale must be positive, got {linear_scale}"
            )));
        }
        let half = head_dim / 2;
        if let Some(f) = freq_factors {
            if f.len() != half {
                return Err(Error::Config(format!(
                    "rope_freqs has {} factors, expected head_dim/2 = {half}",
                    f.len()
                )));
            }
        }
        // Same order of operations as transformers: inv_freq in f32, then pos · inv_freq in f32.
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let f = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
                f / freq_factors.map_or(1.0, |ff| ff[i]) / linear_scale
            })
            .collect();
        let mut cos = Vec::with_capacity(n_ctx * half);
        let mut sin = Vec::with_capacity(n_ctx * half);
        for pos in 0..n_ctx {
            for &f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos,
            sin,
            half,
            style,
            n_ctx,
            device: device.clone(),
        })
    }

    /// The rotation convention.
    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// Rotates `x` of shape `[n_heads, n_tokens, head_dim]` (f32, contiguous) whose tokens sit at
    /// positions `start_pos..start_pos + n_tokens`.
    pub fn apply(&self, x: &Tensor, start_pos: usize) -> Result<Tensor> {
        let (_, n_tokens, _) = x.dims3()?;
        if start_pos + n_tokens > self.n_ctx {
            return Err(Error::InvalidArgument(format!(
                "positions {start_pos}..{} exceed the rope table of {} positions",
                start_pos + n_tokens,
                self.n_ctx
            )));
        }
        let half = self.half;
        let rows = start_pos * half..(start_pos + n_tokens) * half;
        let cos = Tensor::from_slice(&self.cos[rows.clone()], (n_tokens, half), &self.device)?;
        let sin = Tensor::from_slice(&self.sin[rows], (n_tokens, half), &self.device)?;
        let x4 = x.to_dtype(DType::F32)?.contiguous()?.unsqueeze(0)?;
        let y = match self.style {
            RopeStyle::Neox => candle_nn::rotary_emb::rope(&x4, &cos, &sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x4, &cos, &sin)?,
        };
        Ok(y.squeeze(0)?)
    }

    /// Rotates, in place, token-major rows `x` `[n_tokens, n_heads · head_dim]` whose tokens sit
    /// at positions `start_pos..` (the layout the projections produce; same math as
    /// [`RotaryEmbedding::apply`]).
    pub(crate) fn apply_rows(&self, x: &mut [f32], n_heads: usize, start_pos: usize) -> Result<()> {
        let half = self.half;
        let width = n_heads * 2 * half;
        if width == 0 || !x.len().is_multiple_of(width) {
            return Err(Error::InvalidArgument(format!(
                "rope: {} values are not rows of {n_heads} heads x {}",
                x.len(),
                2 * half
            )));
        }
        let n_tokens = x.len() / width;
        if start_pos + n_tokens > self.n_ctx {
            return Err(Error::InvalidArgument(format!(
                "positions {start_pos}..{} exceed the rope table of {} positions",
                start_pos + n_tokens,
                self.n_ctx
            )));
        }
        for (t, row) in x.chunks_exact_mut(width).enumerate() {
            for head in row.chunks_exact_mut(2 * half) {
                self.rotate_head(head, start_pos + t);
            }
        }
        Ok(())
    }

    /// Rotates one head (`head_dim` values) of a token at `pos` (< the table length) in place.
    pub(crate) fn rotate_head(&self, head: &mut [f32], pos: usize) {
        let half = self.half;
        let at = pos * half;
        let (cos, sin) = (&self.cos[at..at + half], &self.sin[at..at + half]);
        match self.style {
            RopeStyle::Neox => {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x1, x2) = (a[i], b[i]);
                    a[i] = x1 * cos[i] - x2 * sin[i];
                    b[i] = x1 * sin[i] + x2 * cos[i];
                }
            }
            RopeStyle::Interleaved => {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (x1, x2) = (pair[0], pair[1]);
                    pair[0] = x1 * cos[i] - x2 * sin[i];
                    pair[1] = x1 * sin[i] + x2 * cos[i];
                }
            }
        }
    }

    /// Positions the tables cover.
    pub(crate) fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The cos and sin tables `[n_ctx, head_dim/2]` as f32 tensors on `device`.
    pub(crate) fn tables(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let shape = (self.n_ctx, self.half);
        Ok((
            Tensor::from_slice(&self.cos, shape, device)?,
            Tensor::from_slice(&self.sin, shape, device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotates one head by hand, pair by pair, as the definitions say.
    fn reference(x: &[f32], pos: usize, theta: f32, style: RopeStyle) -> Vec<f32> {
        let d = x.len();
        let mut out = x.to_vec();
        for i in 0..d / 2 {
            let angle = pos as f64 * (theta as f64).powf(-2.0 * i as f64 / d as f64);
            let (c, s) = (angle.cos() as f32, angle.sin() as f32);
            let (a, b) = match style {
                RopeStyle::Neox => (i, i + d / 2),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            out[a] = x[a] * c - x[b] * s;
            out[b] = x[b] * c + x[a] * s;
        }
        out
    }

    #[test]
    fn matches_pairwise_definition_for_both_styles() -> Result<()> {
        let d = 8;
        let x: Vec<f32> = (0..2 * 3 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            let rope = RotaryEmbedding::new(d, 10000.0, 1.0, 16, style, None, &Device::Cpu)?;
            let t = Tensor::from_vec(x.clone(), (2, 3, d), &Device::Cpu)?;
            let y = rope.apply(&t, 5)?.flatten_all()?.to_vec1::<f32>()?;
            for h in 0..2 {
                for tok in 0..3 {
                    let off = (h * 3 + tok) * d;
                    let want = reference(&x[off..off + d], 5 + tok, 10000.0, style);
                    for (a, b) in y[off..off + d].iter().zip(&want) {
                        assert!((a - b).abs() < 1e-5, "{style:?}: {a} vs {b}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn rows_layout_matches_the_tensor_layout() -> Result<()> {
        let (d, heads, tokens) = (8, 2, 3);
        let x: Vec<f32> = (0..heads * tokens * d)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            let rope = RotaryEmbedding::new(d, 10000.0, 1.0, 16, style, None, &Device::Cpu)?;
            // Token-major rows -> [heads, tokens, d] for the tensor path.
            let t = Tensor::from_vec(x.clone(), (tokens, heads, d), &Device::Cpu)?
                .transpose(0, 1)?
                .contiguous()?;
            let want = rope
                .apply(&t, 4)?
                .transpose(0, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut rows = x.clone();
            rope.apply_rows(&mut rows, heads, 4)?;
            for (a, b) in rows.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "{style:?}: {a} vs {b}");
            }
            assert!(rope.apply_rows(&mut rows, heads, 14).is_err());
            assert!(rope.apply_rows(&mut rows[1..], heads, 0).is_err());
        }
        Ok(())
    }

    #[test]
    fn rejects_positions_past_the_table() -> Result<()> {
        let rope = RotaryEmbedding::new(4, 10000.0, 1.0, 4, RopeStyle::Neox, None, &Device::Cpu)?;
        let t = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu)?;
        assert!(rope.apply(&t, 3).is_err());
        Ok(())
    }
}
