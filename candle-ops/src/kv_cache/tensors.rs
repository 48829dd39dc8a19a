//! The device memory of a one-sequence KV cache, for the device-generic Candle-ops forward (on a
//! GPU, or on the CPU when asked): one f32 tensor per layer on the model's device, `[2,
//! n_kv_head, n_ctx, head_dim]` (keys, then values, position-major), plus, on CUDA, the
//! sequence's decode plan once a single-token step has built it. The page table still does the
//! bookkeeping (lengths, budget); positions live at their own index here, so pages never move
//! data.

use candle_core::{DType, Device, Tensor};

use crate::models::DecodePlan;
use crate::{Error, Result};

use super::KvDtype;

/// Every layer's keys and values on one device.
pub(crate) struct LayerTensors {
    layers: Vec<Tensor>,
    plan: Option<Box<DecodePlan>>,
}

impl std::fmt::Debug for LayerTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.layers.first() {
            Some(t) => write!(
                f,
                "LayerTensors({} on {:?})",
                self.layers.len(),
                t.device().location()
            ),
            None => write!(f, "LayerTensors(0)"),
        }
    }
}

impl LayerTensors {
    pub(crate) fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        n_ctx: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        if dtype != KvDtype::F32 {
            return Err(Error::InvalidArgument(format!(
                "a {dtype:?} KV cache is only available on the CPU path; use F32 on {:?}",
                device.location()
            )));
        }
        n_kv_head
            .checked_mul(head_dim)
            .and_then(|x| x.checked_mul(n_ctx))
            .ok_or_else(|| Error::InvalidArgument("KV cache size overflows".into()))?;
        let layers = (0..n_layer)
            .map(|_| Tensor::zeros((2, n_kv_head, n_ctx, head_dim), DType::F32, device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, plan: None })
    }

    pub(crate) fn n_layer(&self) -> usize {
        self.layers.len()
    }

    pub(crate) fn device(&self) -> Device {
        self.layers
            .first()
            .map_or(Device::Cpu, |t| t.device().clone())
    }

    /// The layer tensors and the decode plan slot.
    pub(crate) fn parts(&mut self) -> (&[Tensor], &mut Option<Box<DecodePlan>>) {
        (&self.layers, &mut self.plan)
    }

    /// The decode plan, if one was built.
    pub(crate) fn plan(&self) -> Option<&DecodePlan> {
        self.plan.as_deref()
    }
}
