//! `TernaryMatMul`: a Candle custom op that multiplies activations by a ternary weight matrix.
//!
//! The op owns the repacked weights (an [`Arc`]-shared [`TernaryMatrix`], so clones of a layer
//! and several models built from one file share one copy) and the per-tensor scale inside it.
//! It follows the pattern of Candle's own `QTensor`, which implements `CustomOp1` for
//! quantized weights: activations go in, `activations · Wᵀ` comes out.
//!
//! Numerics are BitNet b1.58's W1.58A8: each token's activations are quantized to int8 with a
//! per-token absmax scale, multiplied exactly in integers by the ternary codes, and rescaled by
//! `weight_scale · absmax / 127`.
//!
//! One room per device, as in candle-core: [`cpu`] runs the `bitnet-backend` kernels; `cuda`
//! (feature `cuda`) keeps a device copy of the weights, uploaded once per device in its own
//! layout, and quantizes, multiplies (dp4a GEMV or int8 tensor-core GEMM) and rescales on the
//! GPU with the same integers and the same float operations as the CPU; without the feature the
//! same functions answer "not compiled with cuda".
//!
//! Several matrices that read the same input (q/k/v, gate/up) can be [`TernaryMatMul::concat`]ed:
//! one quantization and one launch produce their outputs side by side.

mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "dummy_cuda.rs"]
pub(crate) mod cuda;
pub(crate) mod gpu_layout;

use std::sync::Arc;

use bitnet_backend::TernaryMatrix;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape};

/// One matrix of an op, with its optional output factor.
#[derive(Clone)]
pub(crate) struct Part {
    pub(crate) weights: Arc<TernaryMatrix>,
    pub(crate) output_scale: Option<f32>,
}

/// The ternary matmul custom op: `y[.., out_features] = x[.., in_features] · Wᵀ`.
#[derive(Clone)]
pub struct TernaryMatMul {
    parts: Arc<[Part]>,
    /// Device copies of the weights, made on first use on each GPU (or at model load).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    device: cuda::DeviceCopies,
}

impl std::fmt::Debug for TernaryMatMul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TernaryMatMul")
            .field("out_features", &self.out_features())
            .field("in_features", &self.in_features())
            .field("parts", &self.parts.len())
            .field("scale", &self.scale())
            .field("output_scale", &self.output_scale())
            .finish()
    }
}

impl TernaryMatMul {
    /// Wraps already repacked weights (rows = out_features, cols = in_features).
    pub fn new(weights: Arc<TernaryMatrix>) -> Self {
        Self::from_parts(vec![Part {
            weights,
            output_scale: None,
        }])
    }

    fn from_parts(parts: Vec<Part>) -> Self {
        Self {
            parts: parts.into(),
            device: cuda::DeviceCopies::default(),
        }
    }

    /// Several ops reading the same input as one: the output holds each op's columns in turn
    /// (`[.., Σ out_features]`), from one activation quantization and one kernel launch.
    pub fn concat(ops: &[&TernaryMatMul]) -> crate::Result<Self> {
        let Some(first) = ops.first() else {
            return Err(crate::Error::InvalidArgument(
                "TernaryMatMul::concat needs at least one op".into(),
            ));
        };
        if let Some(bad) = ops.iter().find(|o| o.in_features() != first.in_features()) {
            return Err(crate::Error::InvalidArgument(format!(
                "TernaryMatMul::concat: in_features {} and {} differ",
                first.in_features(),
                bad.in_features()
            )));
        }
        Ok(Self::from_parts(
            ops.iter().flat_map(|o| o.parts.iter().cloned()).collect(),
        ))
    }

    /// Multiplies every output by `factor` (used for llama.cpp `bitnet` files whose projections
    /// carry a separate `.scale` tensor).
    pub fn with_output_scale(self, factor: f32) -> Self {
        let parts = self
            .parts
            .iter()
            .map(|p| Part {
                weights: p.weights.clone(),
                output_scale: Some(factor),
            })
            .collect();
        Self::from_parts(parts)
    }

    /// The extra output factor, if any (of the first matrix of a concatenated op).
    pub fn output_scale(&self) -> Option<f32> {
        self.parts[0].output_scale
    }

    /// Multiplies kernel results of a single-matrix op by its output scale, if there is one.
    pub(crate) fn scale_output(&self, y: &mut [f32]) {
        cpu::scale_output(self.parts[0].output_scale, y);
    }

    /// The shared repacked weights (of the first matrix of a concatenated op).
    pub fn weights(&self) -> &Arc<TernaryMatrix> {
        &self.parts[0].weights
    }

    /// Width of the input (the last activation dimension).
    pub fn in_features(&self) -> usize {
        self.parts[0].weights.cols()
    }

    /// Width of the output (summed over the matrices of a concatenated op).
    pub fn out_features(&self) -> usize {
        self.parts.iter().map(|p| p.weights.rows()).sum()
    }

    /// The per-tensor weight scale β (`W = β · T`) (of the first matrix of a concatenated op).
    pub fn scale(&self) -> f32 {
        self.parts[0].weights.scale()
    }

    pub(crate) fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Uploads the weights to `device` now (models do this at load time) instead of on the
    /// first CUDA forward. A no-op on the CPU.
    pub fn to_device(&self, device: &candle_core::Device) -> crate::Result<()> {
        if let candle_core::Device::Cuda(dev) = device {
            cuda::upload(self, dev)?;
        }
        Ok(())
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn device_copies(&self) -> &cuda::DeviceCopies {
        &self.device
    }

    /// Output shape for an input of shape `dims`, or a clear error.
    pub(crate) fn output_shape(&self, dims: &[usize]) -> candle_core::Result<Vec<usize>> {
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

    /// `(start, end)` of a contiguous input, or a clear error.
    pub(crate) fn contiguous_range(&self, layout: &Layout) -> candle_core::Result<(usize, usize)> {
        layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: input must be contiguous (shape {:?}, stride {:?}); call .contiguous() first",
                self.name(),
                layout.dims(),
                layout.stride()
            ))
        })
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
        cpu::forward(self, storage, layout)
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        cuda::forward(self, storage, layout)
    }
}
