//! Per-sequence key/value cache.
//!
//! One cache holds the state of one sequence (llama.cpp's "context"): it is separate from the
//! shared, immutable model weights, so several caches can run on one model from several threads.
//! Buffers are allocated zeroed for the whole context up front; the OS maps pages only when a
//! position is first written, so memory grows with the positions actually used.
//!
//! Layout, per layer and key/value head: keys are stored transposed, `[head_dim, n_ctx]`, so
//! the scores of one query against every position are row-by-row `axpy`s over contiguous keys
//! (no horizontal sums); values are `[n_ctx, head_dim]`, so the weighted sum of values is an
//! `axpy` per position. F16 caches keep the raw half-precision bits.

use bitnet_backend::dense::attention::KvHead;
use candle_core::{DType, Device};
use half::f16;

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

/// One layer's keys or values for every key/value head.
#[derive(Debug)]
enum Buf {
    F32(Vec<f32>),
    /// Raw `f16` bits (`vec![0u16; n]` is a zeroed allocation the OS maps lazily).
    F16(Vec<u16>),
}

impl Buf {
    fn zeroed(dtype: KvDtype, n: usize) -> Self {
        match dtype {
            KvDtype::F32 => Buf::F32(vec![0f32; n]),
            KvDtype::F16 => Buf::F16(vec![0u16; n]),
        }
    }

    fn set(&mut self, i: usize, v: f32) {
        match self {
            Buf::F32(b) => b[i] = v,
            Buf::F16(b) => b[i] = f16::from_f32(v).to_bits(),
        }
    }
}

/// Keys and values of every layer (layout in the module docs).
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Buf>,
    values: Vec<Buf>,
    n_kv_head: usize,
    head_dim: usize,
    n_ctx: usize,
    len: usize,
    dtype: KvDtype,
}

impl KvCache {
    /// Allocates a cache for `n_ctx` positions (CPU only).
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
        if !device.is_cpu() {
            return Err(Error::InvalidArgument(
                "the KV cache lives in CPU memory; other devices are not supported".into(),
            ));
        }
        let n = n_kv_head
            .checked_mul(head_dim)
            .and_then(|x| x.checked_mul(n_ctx))
            .ok_or_else(|| Error::InvalidArgument("KV cache size overflows".into()))?;
        let alloc = || (0..n_layer).map(|_| Buf::zeroed(dtype, n)).collect();
        Ok(Self {
            keys: alloc(),
            values: alloc(),
            n_kv_head,
            head_dim,
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

    /// Writes the keys and values of `n_tokens` tokens of `layer` at positions `start_pos..`;
    /// `k` and `v` are token-major `[n_tokens, n_kv_head · head_dim]`.
    pub(crate) fn write(
        &mut self,
        layer: usize,
        start_pos: usize,
        n_tokens: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        self.check_room(start_pos, n_tokens)?;
        let (h, d, n_ctx) = (self.n_kv_head, self.head_dim, self.n_ctx);
        if layer >= self.keys.len() || k.len() != n_tokens * h * d || v.len() != k.len() {
            return Err(Error::InvalidArgument(format!(
                "KV write: layer {layer} of {}, {} keys and {} values for {n_tokens} token(s) of {h} heads x {d}",
                self.keys.len(),
                k.len(),
                v.len()
            )));
        }
        let (kb, vb) = (&mut self.keys[layer], &mut self.values[layer]);
        for t in 0..n_tokens {
            let pos = start_pos + t;
            for g in 0..h {
                let src = (t * h + g) * d;
                for c in 0..d {
                    kb.set((g * d + c) * n_ctx + pos, k[src + c]);
                }
                let at = (g * n_ctx + pos) * d;
                match &mut *vb {
                    Buf::F32(dst) => dst[at..at + d].copy_from_slice(&v[src..src + d]),
                    Buf::F16(dst) => {
                        for (o, &x) in dst[at..at + d].iter_mut().zip(&v[src..src + d]) {
                            *o = f16::from_f32(x).to_bits();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// f32 keys and values of key/value head `g` of `layer`, positions `0..kv_len`. F32 caches
    /// are borrowed; F16 ones are widened into `kbuf` / `vbuf`.
    pub(crate) fn head<'a>(
        &'a self,
        layer: usize,
        g: usize,
        kv_len: usize,
        kbuf: &'a mut Vec<f32>,
        vbuf: &'a mut Vec<f32>,
    ) -> KvHead<'a> {
        let (d, n_ctx) = (self.head_dim, self.n_ctx);
        let kbase = g * d * n_ctx;
        let vbase = g * n_ctx * d;
        match (&self.keys[layer], &self.values[layer]) {
            (Buf::F32(k), Buf::F32(v)) => KvHead {
                keys_t: &k[kbase..kbase + (d - 1) * n_ctx + kv_len],
                key_stride: n_ctx,
                values: &v[vbase..vbase + kv_len * d],
                len: kv_len,
            },
            (k, v) => {
                let widen = |b: &Buf, i: usize| match b {
                    Buf::F32(x) => x[i],
                    Buf::F16(x) => f16::from_bits(x[i]).to_f32(),
                };
                kbuf.clear();
                for c in 0..d {
                    kbuf.extend((0..kv_len).map(|j| widen(k, kbase + c * n_ctx + j)));
                }
                vbuf.clear();
                vbuf.extend((0..kv_len * d).map(|i| widen(v, vbase + i)));
                KvHead {
                    keys_t: kbuf,
                    key_stride: kv_len,
                    values: vbuf,
                    len: kv_len,
                }
            }
        }
    }

    /// Records that positions `0..len` are now filled (called once per forward pass).
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(view: &KvHead<'_>, pos: usize, c: usize) -> f32 {
        view.keys_t[c * view.key_stride + pos]
    }

    #[test]
    fn write_then_read_every_position_of_every_head() -> Result<()> {
        let dev = Device::Cpu;
        // 2 heads of 3 dims, 8 positions.
        let mut cache = KvCache::new(1, 2, 3, 8, KvDtype::F32, &dev)?;
        // Token-major [n_tokens, heads · dims]: value = 100·pos + 10·head + dim.
        let tokens = |start: usize, n: usize, sign: f32| -> Vec<f32> {
            (0..n * 6)
                .map(|i| {
                    let (t, g, c) = (i / 6, (i / 3) % 2, i % 3);
                    sign * (100 * (start + t) + 10 * g + c) as f32
                })
                .collect()
        };
        cache.write(0, 0, 2, &tokens(0, 2, 1.0), &tokens(0, 2, -1.0))?;
        cache.set_len(2);
        cache.write(0, 2, 1, &tokens(2, 1, 1.0), &tokens(2, 1, -1.0))?;
        cache.set_len(3);
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for g in 0..2 {
            let view = cache.head(0, g, 3, &mut kb, &mut vb);
            assert_eq!(view.values.len(), 9);
            for pos in 0..3 {
                for c in 0..3 {
                    let want = (100 * pos + 10 * g + c) as f32;
                    assert_eq!(key(&view, pos, c), want);
                    assert_eq!(view.values[pos * 3 + c], -want);
                }
            }
        }
        assert!(cache.check_room(4, 1).is_err(), "gap in positions");
        assert!(cache.check_room(3, 6).is_err(), "past the context");
        assert!(
            cache.write(0, 3, 1, &[0.0; 5], &[0.0; 6]).is_err(),
            "short keys"
        );
        assert!(
            cache.write(1, 3, 1, &[0.0; 6], &[0.0; 6]).is_err(),
            "no such layer"
        );
        cache.reset();
        assert!(cache.is_empty());
        Ok(())
    }

    #[test]
    fn f16_cache_round_trips_within_half_precision() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(1, 1, 4, 4, KvDtype::F16, &dev)?;
        let x = [0.1f32, -2.5, 3.0, 1e-3];
        cache.write(0, 0, 1, &x, &x)?;
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        let view = cache.head(0, 0, 1, &mut kb, &mut vb);
        for (c, want) in x.iter().enumerate() {
            for got in [key(&view, 0, c), view.values[c]] {
                assert!((got - want).abs() <= want.abs() * 1e-3, "{got} vs {want}");
            }
        }
        Ok(())
    }
}
