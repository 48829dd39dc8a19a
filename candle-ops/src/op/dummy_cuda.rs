//! Without the `cuda` feature: the same entry points as `cuda.rs`, answering that CUDA support
//! was not compiled in (a `Device::Cuda` cannot be created then, so they are never reached
//! through a model).

use candle_core::{CudaDevice, CudaStorage, Layout, Shape};

use super::TernaryMatMul;

/// Device copies of one op's weights: none without CUDA.
#[derive(Clone, Default)]
pub(crate) struct DeviceCopies(());

pub(crate) fn no_cuda() -> candle_core::Error {
    candle_core::Error::Msg(
        "bitnet-candle was built without CUDA support (enable the `cuda` feature)".into(),
    )
}

pub(crate) fn upload(_op: &TernaryMatMul, _dev: &CudaDevice) -> candle_core::Result<()> {
    Err(no_cuda())
}

pub(crate) fn forward(
    _op: &TernaryMatMul,
    _storage: &CudaStorage,
    _layout: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    Err(no_cuda())
}
