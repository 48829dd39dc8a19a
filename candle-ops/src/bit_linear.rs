//! `BitLinear`: a ternary linear layer usable by any Candle model.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use bitnet_candle::BitLinear;
//!
//! # fn main() -> bitnet_candle::Result<()> {
//! let device = Device::Cpu;
//! // Float weights [out_features = 256, in_features = 128], ternarized with BitNet b1.58's
//! // absmean rule (β = mean|W|, T = clamp(round(W / β), -1, 1)).
//! let w = Tensor::randn(0f32, 1.0, (256, 128), &device)?;
//! let layer = BitLinear::from_float(&w)?;
//! let x = Tensor::randn(0f32, 1.0, (2, 7, 128), &device)?; // any rank >= 2
//! let y = layer.forward(&x)?;
//! assert_eq!(y.dims(), &[2, 7, 256]);
//! # Ok(())
//! # }
//! ```
//!
//! The layer owns an [`Arc`]-shared [`TernaryMatrix`], so cloning it is cheap. Activations are
//! quantized to int8 per token inside the op (BitNet's W1.58A8); there is no bias, as in every
//! BitNet b1.58 model.
//!
//! From a Hugging Face checkpoint, a Candle model swaps `candle_nn::linear_no_bias` for
//! [`bit_linear`] (same argument order, plus the checkpoint's [`WeightRule`]):
//! ```ignore
//! let rule = WeightRule::for_config(&HfConfig::load(dir)?);
//! let q_proj = bit_linear(hidden, n_head * head_dim, &rule, vb.pp("q_proj"))?;
//! ```

use std::sync::Arc;

use bitnet_backend::formats::ternarize;
use bitnet_backend::gguf::{GgmlType, TensorInfo};
use bitnet_backend::matmul::ternary_matmul_multi;
use bitnet_backend::TernaryMatrix;
use candle_core::{DType, Module, Tensor};

use bitnet_convert::arch::WeightRule;
use candle_nn::VarBuilder;

use crate::op::TernaryMatMul;
use crate::{Error, Result};

mod load;

/// `candle_nn::linear_no_bias` for ternary checkpoints: the [`BitLinear`] stored under `vb`'s
/// prefix (`weight`, and `weight_scale` when the checkpoint has one). See [`BitLinear::load`].
pub fn bit_linear(
    in_dim: usize,
    out_dim: usize,
    rule: &WeightRule,
    vb: VarBuilder,
) -> candle_core::Result<BitLinear> {
    Ok(BitLinear::load(vb, in_dim, out_dim, rule)?)
}

/// A bias-free linear layer with ternary weights `W = β · T`, `T ∈ {-1, 0, 1}`.
#[derive(Clone, Debug)]
pub struct BitLinear {
    op: TernaryMatMul,
}

impl BitLinear {
    /// Wraps already repacked weights.
    pub fn new(weights: Arc<TernaryMatrix>) -> Self {
        Self {
            op: TernaryMatMul::new(weights),
        }
    }

    /// Builds the layer from a `[out_features, in_features]` tensor whose values are exactly
    /// -1, 0 or 1 (any dtype), and the per-tensor scale β.
    pub fn from_ternary(values: &Tensor, scale: f32) -> Result<Self> {
        let (rows, cols) = values.dims2()?;
        let flat = values
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut codes = Vec::with_capacity(flat.len());
        for (i, &v) in flat.iter().enumerate() {
            codes.push(match v {
                -1.0 => -1i8,
                0.0 => 0,
                1.0 => 1,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "BitLinear::from_ternary: value {v} at row {}, column {} is not -1, 0 or 1",
                        i / cols,
                        i % cols
                    )))
                }
            });
        }
        Ok(Self::new(Arc::new(TernaryMatrix::from_ternary(
            &codes, rows, cols, scale,
        )?)))
    }

    /// Ternarizes float weights `[out_features, in_features]` with BitNet b1.58's absmean rule
    /// (β = max(mean|W|, 1e-5), T = clamp(round(W / β), -1, 1)).
    pub fn from_float(weight: &Tensor) -> Result<Self> {
        let (rows, cols) = weight.dims2()?;
        let flat = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (codes, scale) = ternarize::absmean(&flat);
        Ok(Self::new(Arc::new(TernaryMatrix::from_ternary(
            &codes, rows, cols, scale,
        )?)))
    }

    /// Loads the layer stored under `vb`'s prefix (e.g. `model.layers.0.self_attn.q_proj`) in
    /// any form `bitnet convert` reads: packed uint8 `weight` + `weight_scale` (whose meaning
    /// `rule.linear_class` gives), float codes + `weight_scale`, float masters ternarized by
    /// absmean when `rule.online`, or exactly ternary floats. The weights go straight into the
    /// kernel layout, one row at a time. Float weights are read in `vb`'s dtype when it is a float
    /// type: give the builder the checkpoint's dtype so nothing is converted.
    pub fn load(
        vb: VarBuilder,
        in_features: usize,
        out_features: usize,
        rule: &WeightRule,
    ) -> Result<Self> {
        load::load(&vb, in_features, out_features, rule, None)
    }

    /// [`Self::load`] with the rows of a q/k projection reordered for interleaved RoPE
    /// (`permute_heads` = its head count), as the converter writes `llama` files.
    pub(crate) fn load_permuted(
        vb: &VarBuilder,
        in_features: usize,
        out_features: usize,
        rule: &WeightRule,
        permute_heads: Option<usize>,
    ) -> Result<Self> {
        load::load(vb, in_features, out_features, rule, permute_heads)
    }

    /// Builds the layer from one GGUF tensor: I2_S, TQ2_0 and TQ1_0 are repacked directly;
    /// F32/F16/BF16 are accepted when every value is 0 or ±β for one β (a ternarized float
    /// export, as llama.cpp's converter writes with `--outtype f16`).
    pub fn from_gguf(info: &TensorInfo, data: &[u8]) -> Result<Self> {
        let (cols, rows) = match info.dims.as_slice() {
            [cols, rows] => (to_usize(*cols, info)?, to_usize(*rows, info)?),
            dims => {
                return Err(Error::bad_tensor(
                    &info.name,
                    format!("a linear weight must be 2-D, got dims {dims:?}"),
                ))
            }
        };
        let with_name = |e: bitnet_backend::Error| Error::bad_tensor(&info.name, e.to_string());
        let matrix = match info.ggml_type {
            GgmlType::I2S => TernaryMatrix::from_i2s(data, rows, cols).map_err(with_name)?,
            GgmlType::TQ2_0 => TernaryMatrix::from_tq2_0(data, rows, cols).map_err(with_name)?,
            GgmlType::TQ1_0 => TernaryMatrix::from_tq1_0(data, rows, cols).map_err(with_name)?,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let values = crate::embedding::decode_float_row(info, data)?;
                let (codes, scale) = exact_ternary(&values).ok_or_else(|| {
                    Error::bad_tensor(
                        &info.name,
                        "float weights are not ternary-valued (every value must be 0 or ±β for one β)",
                    )
                })?;
                TernaryMatrix::from_ternary(&codes, rows, cols, scale).map_err(with_name)?
            }
            other => {
                return Err(Error::bad_tensor(
                    &info.name,
                    format!("type {other:?} cannot hold ternary weights (expected I2_S, TQ2_0, TQ1_0, or ternary-valued F32/F16/BF16)"),
                ))
            }
        };
        Ok(Self::new(Arc::new(matrix)))
    }

    /// Multiplies every output by `factor` (llama.cpp `bitnet` per-projection `.scale`).
    pub fn with_output_scale(self, factor: f32) -> Self {
        Self {
            op: self.op.with_output_scale(factor),
        }
    }

    /// The custom op this layer applies.
    pub fn op(&self) -> &TernaryMatMul {
        &self.op
    }

    /// The shared repacked weights.
    pub fn weights(&self) -> &Arc<TernaryMatrix> {
        self.op.weights()
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.op.in_features()
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.op.out_features()
    }

    /// `ys[i] = x · Wᵢᵀ` for several layers sharing the input `x` (`[n_tokens, in_features]`
    /// rows; `ys[i]` is `[n_tokens, layers[i].out_features()]`): one activation quantization and
    /// one pool dispatch for all of them (e.g. q/k/v, gate/up). Same results as separate calls.
    pub fn forward_rows(
        layers: &[&BitLinear],
        x: &[f32],
        n_tokens: usize,
        ys: &mut [&mut [f32]],
    ) -> Result<()> {
        let ws: Vec<&TernaryMatrix> = layers.iter().map(|l| &**l.weights()).collect();
        ternary_matmul_multi(&ws, x, n_tokens, ys)?;
        for (l, y) in layers.iter().zip(ys.iter_mut()) {
            l.op.scale_output(y);
        }
        Ok(())
    }

    /// The per-tensor weight scale β, times the output scale when there is one: the float
    /// weight this layer represents is `effective_scale() · T`.
    pub fn effective_scale(&self) -> f32 {
        self.op.scale() * self.op.output_scale().unwrap_or(1.0)
    }
}

impl Module for BitLinear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.apply_op1_no_bwd(&self.op)
    }
}

fn to_usize(v: u64, info: &TensorInfo) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| Error::bad_tensor(&info.name, format!("dimension {v} is too large")))
}

/// If every value is 0 or ±β for a single β > 0, returns the codes and β.
fn exact_ternary(values: &[f32]) -> Option<(Vec<i8>, f32)> {
    if values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let beta = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if beta == 0.0 {
        return Some((vec![0; values.len()], 1.0));
    }
    values
        .iter()
        .map(|&v| match v {
            v if v == beta => Some(1i8),
            v if v == -beta => Some(-1),
            0.0 => Some(0),
            _ => None,
        })
        .collect::<Option<Vec<i8>>>()
        .map(|codes| (codes, beta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_ternary_accepts_only_three_levels() {
        let (codes, beta) = exact_ternary(&[0.5, -0.5, 0.0, 0.5]).unwrap();
        assert_eq!(codes, vec![1, -1, 0, 1]);
        assert_eq!(beta, 0.5);
        assert!(exact_ternary(&[0.5, 0.25, 0.0]).is_none());
        assert_eq!(exact_ternary(&[0.0, 0.0]).unwrap().0, vec![0, 0]);
        assert!(exact_ternary(&[f32::NAN]).is_none());
    }
}
