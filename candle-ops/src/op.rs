//! `TernaryMatMul`: a Candle custom op that multiplies activations by a ternary weight matrix.
//!
//! The op owns the repacked weights (an [`Arc`]-shared [`TernaryMatrix`], so clones of a layer
//! and several models built from one file share one copy) and the per-tensor scale inside it.
//! It follows the pattern of Candle's own `QTensor`, which implements `CustomOp1` for
//! quantized weights: activations go in, `activations · Wᵀ` comes out.
//!
//! Numerics are BitNet b1.58's W1.58A8: each token's activations are quantized to int8 with a
//! per-token absmax scale inside the backend kernel, multiplied exactly in integers by the
//! ternary codes, and rescaled by `weight_scale · absmax / 127`.
//!
//! Only a CPU implementation exists. A CUDA one would override [`CustomOp1::cuda_fwd`], keeping
//! a device copy of the packed codes next to [`TernaryMatMul::weights`]; until then Candle's
//! default `cuda_fwd` reports "no cuda implementation for bitnet-ternary-matmul".

use std::sync::Arc;

use bitnet_backend::{matmul::ternary_matmul, TernaryMatrix};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

/// The ternary matmul custom op: `y[.., out_features] = x[.., in_features] · Wᵀ`.
#[derive(Clone)]
pub struct TernaryMatMul {
    weights: Arc<TernaryMatrix>,
    /// Extra factor applied to every output (llama.cpp's optional per-projection `.scale`).
    output_scale: Option<f32>,
}

impl std::fmt::Debug for TernaryMatMul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TernaryMatMul")
            .field("out_features", &self.out_features())
            .field("in_features", &self.in_features())
            .field("scale", &self.scale())
            .field("output_scale", &self.output_scale)
            .finish()
    }
}

impl TernaryMatMul {
    /// Wraps already repacked weights (rows = out_features, cols = in_features).
    pub fn new(weights: Arc<TernaryMatrix>) -> Self {
        Self {
            weights,
            output_scale: None,
        }
    }

    /// Multiplies every output by `factor` (used for llama.cpp `bitnet` files whose projections
    /// carry a separate `.scale` tensor).
    pub fn with_output_scale(mut self, factor: f32) -> Self {
        self.output_scale = Some(factor);
        self
    }

    /// The extra output factor, if any.
    pub fn output_scale(&self) -> Option<f32> {
        self.output_scale
    }

    /// Multiplies kernel results by the output scale, if there is one.
    pub(crate) fn scale_output(&self, y: &mut [f32]) {
        if let Some(factor) = self.output_scale {
            y.iter_mut().for_each(|v| *v *= factor);
        }
    }

    /// The shared repacked weights.
    pub fn weights(&self) -> &Arc<TernaryMatrix> {
        &self.weights
    }

    /// Width of the input (the last activation dimension).
    pub fn in_features(&self) -> usize {
        self.weights.cols()
    }

    /// Width of the output.
    pub fn out_features(&self) -> usize {
        self.weights.rows()
    }

    /// The per-tensor weight scale β (`W = β · T`).
    pub fn scale(&self) -> f32 {
        self.weights.scale()
    }

    /// Output shape for an input of shape `dims`, or a clear error.
    fn output_shape(&self, dims: &[usize]) -> candle_core::Result<Vec<usize>> {
        if dims.len() < 2 {
            candle_core::bail!(
                "{}: input must have rank >= 2 (got shape {dims:?})",
                self.name()
            )
        }
        let k = dims[dims.len() - 1];
        if k != self.in_features() {
            candle_core::bail!(
                "{}: input last dimension is {k} but the weights have in_features = {} (input shape {dims:?})",
                self.name(),
                self.in_features()
            )
        }
        let mut out = dims.to_vec();
        *out.last_mut().expect("rank >= 2") = self.out_features();
        Ok(out)
    }

    /// Runs the kernel on a contiguous f32 slice of `n_tokens` rows.
    fn matmul_f32(&self, x: &[f32], n_tokens: usize) -> candle_core::Result<Vec<f32>> {
        let mut y = vec![0f32; n_tokens * self.out_features()];
        ternary_matmul(&self.weights, x, n_tokens, &mut y).map_err(candle_core::Error::wrap)?;
        self.scale_output(&mut y);
        Ok(y)
    }
}

impl CustomOp1 for TernaryMatMul {
    fn name(&self) -> &'static str {
        "bitnet-ternary-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.dims();
        let out_dims = self.output_shape(dims)?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!(
                "{}: input must be contiguous (shape {dims:?}, stride {:?}); call .contiguous() first",
                self.name(),
                layout.stride()
            )
        };
        let n_tokens = (end - start) / self.in_features();
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(self.matmul_f32(&v[start..end], n_tokens)?),
            CpuStorage::BF16(v) => {
                let x: Vec<f32> = v[start..end].iter().map(|x| x.to_f32()).collect();
                let y = self.matmul_f32(&x, n_tokens)?;
                CpuStorage::BF16(y.into_iter().map(half::bf16::from_f32).collect())
            }
            CpuStorage::F16(v) => {
                let x: Vec<f32> = v[start..end].iter().map(|x| x.to_f32()).collect();
                let y = self.matmul_f32(&x, n_tokens)?;
                CpuStorage::F16(y.into_iter().map(half::f16::from_f32).collect())
            }
            other => candle_core::bail!(
                "{}: activations must be f32, bf16 or f16, got {:?}",
                self.name(),
                other.dtype()
            ),
        };
        Ok((out, Shape::from(out_dims)))
    }
}
