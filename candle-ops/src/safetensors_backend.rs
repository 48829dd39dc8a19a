//! A Candle `VarBuilder` backend over a Hugging Face checkpoint folder's safetensors (one file or
//! shards), reading each tensor with positioned file reads straight into its typed buffer.
//!
//! No memory map (so no `unsafe`, and a file that shrinks under us is an error rather than a
//! SIGBUS), and only the tensor being built is resident: page cache is not process memory.
//! Dtype conversions are allowed only when exact (u8, f16 and bf16 widen to f32); anything else
//! is an error naming the tensor, so a loader never loses precision silently.

use bitnet_convert::hf::safetensors_source::{SafetensorsSource, TensorEntry};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use half::{bf16, f16};

/// The tensors of one checkpoint folder, as a [`SimpleBackend`].
pub struct SafetensorsBackend {
    src: SafetensorsSource,
}

impl SafetensorsBackend {
    pub fn new(src: SafetensorsSource) -> Self {
        Self { src }
    }

    /// The checkpoint's tensor index.
    pub fn source(&self) -> &SafetensorsSource {
        &self.src
    }

    fn read<T: bytemuck::Pod + candle_core::WithDType>(
        &self,
        t: &TensorEntry,
        zero: T,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut values = vec![zero; t.n_elements()];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut values);
        self.src
            .read_into(t, 0, bytes)
            .map_err(candle_core::Error::wrap)?;
        if cfg!(target_endian = "big") {
            // safetensors stores little-endian values.
            for v in bytes.chunks_exact_mut(std::mem::size_of::<T>()) {
                v.reverse();
            }
        }
        Tensor::from_vec(values, t.shape.as_slice(), dev)
    }
}

fn stored_dtype(t: &TensorEntry) -> candle_core::Result<DType> {
    use safetensors::Dtype;
    Ok(match t.dtype {
        Dtype::U8 => DType::U8,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        other => candle_core::bail!(
            "tensor `{}`: dtype {other:?} is not supported (U8, F16, BF16, F32)",
            t.name
        ),
    })
}

/// Conversions that keep every value exactly.
fn exact(from: DType, to: DType) -> bool {
    from == to || (to == DType::F32 && matches!(from, DType::U8 | DType::F16 | DType::BF16))
}

impl SimpleBackend for SafetensorsBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "tensor `{name}`: shape {:?}, expected {:?}",
                t.dims(),
                s.dims()
            )
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.src.require(name).map_err(candle_core::Error::wrap)?;
        let stored = stored_dtype(t)?;
        if !exact(stored, dtype) {
            candle_core::bail!(
                "tensor `{name}` is stored as {stored:?}; reading it as {dtype:?} would change its values"
            )
        }
        let tensor = match stored {
            DType::U8 => self.read(t, 0u8, dev)?,
            DType::F16 => self.read(t, f16::ZERO, dev)?,
            DType::BF16 => self.read(t, bf16::ZERO, dev)?,
            _ => self.read(t, 0f32, dev)?,
        };
        tensor.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.src.get(name).is_some()
    }
}
