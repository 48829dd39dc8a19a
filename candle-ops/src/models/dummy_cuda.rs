//! Without the `cuda` feature: the entry points of `cuda.rs`, answering that CUDA support was not
//! compiled in (no `Device::Cuda` can exist then, so a model never reaches them).

use candle_core::{CudaStorage, Layout, Shape, Tensor};

use super::ops::{AttentionOp, GatedOp, KvWriteOp, RmsNormOp, RopeOp};
use super::tensor_forward::TensorModel;
use crate::op::cuda::no_cuda;
use crate::Result;

type CResult<T> = candle_core::Result<T>;

pub(crate) fn rms_norm(
    _: &RmsNormOp,
    _: &CudaStorage,
    _: &Layout,
    _: &CudaStorage,
    _: &Layout,
) -> CResult<(CudaStorage, Shape)> {
    Err(no_cuda())
}

pub(crate) fn rope(_: &RopeOp<'_>, _: &mut CudaStorage, _: &Layout) -> CResult<()> {
    Err(no_cuda())
}

pub(crate) fn kv_write(
    _: &KvWriteOp,
    _: &mut CudaStorage,
    _: &Layout,
    _: &CudaStorage,
    _: &Layout,
) -> CResult<()> {
    Err(no_cuda())
}

pub(crate) fn attention(
    _: &AttentionOp,
    _: &CudaStorage,
    _: &Layout,
    _: &CudaStorage,
    _: &Layout,
) -> CResult<(CudaStorage, Shape)> {
    Err(no_cuda())
}

pub(crate) fn gated(_: &GatedOp, _: &CudaStorage, _: &Layout) -> CResult<(CudaStorage, Shape)> {
    Err(no_cuda())
}

pub(crate) fn dense(
    _: &CudaStorage,
    _: &Layout,
    _: &CudaStorage,
    _: &Layout,
) -> CResult<(CudaStorage, Shape)> {
    Err(no_cuda())
}

/// How a single-token step runs on CUDA (see the `cuda` feature's version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeMode {
    Graph,
    Eager,
    Tensor,
}

pub(crate) fn decode_mode() -> DecodeMode {
    DecodeMode::Tensor
}

/// The single-token decode plan: never built without CUDA.
pub(crate) struct DecodePlan;

impl DecodePlan {
    pub(crate) fn new(_: &TensorModel, _: usize) -> Result<Self> {
        Err(no_cuda().into())
    }

    pub(crate) fn model_id(&self) -> usize {
        0
    }

    pub(crate) fn graph_error(&self) -> Option<&str> {
        None
    }

    pub(crate) fn step(
        &mut self,
        _: &TensorModel,
        _: &[Tensor],
        _: u32,
        _: usize,
        _: DecodeMode,
    ) -> Result<Tensor> {
        Err(no_cuda().into())
    }
}
