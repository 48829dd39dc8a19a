//! Per-sequence key/value cache.
//!
//! One cache holds the state of one sequence (llama.cpp's "context"): it is separate from the
//! shared, immutable model weights, so several caches can run on one model from several threads.
//! Buffers are allocated zeroed for the whole context up front; the OS maps pages only when a
//! position is first written, so memory grows with the positions actually used.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Element type of the cached keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    /// Exact: matches the f32 reference (default).
    #[default]
    F32,
    /// Half the memory; moves logits slightly (bitnet.cpp's default).
    F16,
}

impl KvDtype {
    fn dtype(self) -> DType {
        match self {
            KvDtype::F32 => DType::F32,
            KvDtype::F16 => DType::F16,
        }
    }

    /// Bytes per cached element.
    pub fn size_in_bytes(self) -> usize {
        self.dtype().size_in_bytes()
    }
}

/// Keys and values of every layer, `[n_kv_head, n_ctx, head_dim]` each.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    n_ctx: usize,
    len: usize,
    dtype: KvDtype,
}

impl KvCache {
    /// Allocates a cache for `n_ctx` positions.
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        n_ctx: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        if n_ctx == 0 {
            return Err(Error::InvalidArgument("context length must be > 0".into()));
        }
        let alloc = || Tensor::zeros((n_kv_head, n_ctx, head_dim), dtype.dtype(), device);
        let keys = (0..n_layer)
            .map(|_| alloc())
            .collect::<candle_core::Result<_>>()?;
        let values = (0..n_layer)
            .map(|_| alloc())
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            keys,
            values,
            n_ctx,
            len: 0,
            dtype,
        })
    }

    /// Number of positions currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of positions.
    pub fn capacity(&self) -> usize {
        self.n_ctx
    }

    /// Element type of the cache.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Forgets every position (start a new sequence).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` positions (e.g. to re-use a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `n_tokens` tokens can be written at `start_pos`.
    pub(crate) fn check_room(&self, start_pos: usize, n_tokens: usize) -> Result<()> {
        if start_pos > self.len {
            return Err(Error::InvalidArgument(format!(
                "start position {start_pos} is past the {} cached position(s); positions must be contiguous",
                self.len
            )));
        }
        if start_pos + n_tokens > self.n_ctx {
            return Err(Error::InvalidArgument(format!(
                "{n_tokens} token(s) at position {start_pos} exceed the context of {} positions",
                self.n_ctx
            )));
        }
        Ok(())
    }

    /// Writes `k`, `v` (`[n_kv_head, n_tokens, head_dim]`, f32) of `layer` at `start_pos` and
    /// returns f32 views of positions `0..start_pos + n_tokens`.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        start_pos: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (_, n_tokens, _) = k.dims3()?;
        self.check_room(start_pos, n_tokens)?;
        let dtype = self.dtype.dtype();
        let (kc, vc) = (&self.keys[layer], &self.values[layer]);
        kc.slice_set(&k.to_dtype(dtype)?.contiguous()?, 1, start_pos)?;
        vc.slice_set(&v.to_dtype(dtype)?.contiguous()?, 1, start_pos)?;
        let end = start_pos + n_tokens;
        let (k_all, v_all) = (kc.narrow(1, 0, end)?, vc.narrow(1, 0, end)?);
        Ok(match self.dtype {
            KvDtype::F32 => (k_all, v_all),
            KvDtype::F16 => (k_all.to_dtype(DType::F32)?, v_all.to_dtype(DType::F32)?),
        })
    }

    /// Records that positions `0..len` are now filled (called once per forward pass).
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_returns_all_positions_written_so_far() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, 2, 3, 8, KvDtype::F32, &dev)?;
        let a = Tensor::ones((2, 2, 3), DType::F32, &dev)?;
        let (k, _) = cache.append(0, 0, &a, &a)?;
        cache.set_len(2);
        assert_eq!(k.dims(), &[2, 2, 3]);
        let b = (Tensor::ones((2, 1, 3), DType::F32, &dev)? * 2.0)?;
        let (k, v) = cache.append(0, 2, &b, &b)?;
        cache.set_len(3);
        assert_eq!(k.dims(), &[2, 3, 3]);
        let kv = k.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(&kv[..9], &[1., 1., 1., 1., 1., 1., 2., 2., 2.]);
        assert_eq!(v.dims(), &[2, 3, 3]);
        assert!(cache.check_room(4, 1).is_err(), "gap in positions");
        assert!(cache.check_room(3, 6).is_err(), "past the context");
        cache.reset();
        assert!(cache.is_empty());
        Ok(())
    }

    #[test]
    fn f16_cache_round_trips_within_half_precision() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, 1, 4, 4, KvDtype::F16, &dev)?;
        let x = Tensor::new(&[[[0.1f32, -2.5, 3.0, 1e-3]]], &dev)?;
        let (k, _) = cache.append(0, 0, &x, &x)?;
        assert_eq!(k.dtype(), DType::F32);
        let got = k.flatten_all()?.to_vec1::<f32>()?;
        for (a, b) in got.iter().zip([0.1f32, -2.5, 3.0, 1e-3]) {
            assert!((a - b).abs() <= b.abs() * 1e-3);
        }
        Ok(())
    }
}
