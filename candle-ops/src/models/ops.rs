//! The Candle custom ops of the device-generic forward ([`super::tensor_forward`]) besides the
//! ternary projections: RMSNorm, RoPE, the KV-cache write, causal attention over the cache, the
//! gated FFN activation and the dense LM head.
//!
//! Each has a CPU implementation here (the same arithmetic as the tuned row path, so the
//! generic forward can be checked against it on any machine) and a CUDA one in
//! [`super::cuda`] (the `bitnet.cu` kernels; without the `cuda` feature it answers "not
//! compiled with cuda"). The layouts the ops share:
//! - token rows `[n_tokens, width]` f32; the fused q/k/v projection puts q, k and v side by side;
//! - one layer's cache: `[2, n_kv, n_ctx, head_dim]` f32 (keys, then values), position-major.

// Parts of this module serve only the CUDA side (feature `cuda`).
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use bitnet_backend::dense::attention::{attend_heads, KvHead, PAGE};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, InplaceOp1, InplaceOp2, Layout, Shape, Tensor,
};

use super::block::FfnActivation;
use super::cuda;
use super::rows::{relu2_mul, rms_norm_rows, silu_mul};
use crate::rope::{RopeStyle, RotaryEmbedding};

type CResult<T> = candle_core::Result<T>;

/// The contiguous f32 values of a CPU storage.
pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> CResult<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))?;
    Ok(&s.as_slice::<f32>()?[a..b])
}

fn cpu_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> CResult<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        other => candle_core::bail!("{what}: expected f32, got {:?}", other.dtype()),
    }
}

/// `x / sqrt(mean(x²) + eps) · w` on every row (x `[n, w]`, w `[w]`).
pub(crate) struct RmsNormOp {
    pub eps: f32,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "bitnet-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, w) = (cpu_f32(s1, l1, self.name())?, cpu_f32(s2, l2, self.name())?);
        if w.is_empty() || !x.len().is_multiple_of(w.len()) {
            candle_core::bail!(
                "{}: rows of {} values, weight of {}",
                self.name(),
                x.len(),
                w.len()
            )
        }
        let mut out = vec![0f32; x.len()];
        rms_norm_rows(x, w, self.eps, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> CResult<(CudaStorage, Shape)> {
        cuda::rms_norm(self, s1, l1, s2, l2)
    }
}

/// The shape of the attention part of a layer, at one run of positions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// First position of the rows.
    pub start_pos: usize,
}

impl Heads {
    /// Width of the fused q/k/v rows.
    pub(crate) fn qkv_width(&self) -> usize {
        (self.n_head + 2 * self.n_kv) * self.head_dim
    }

    pub(crate) fn k_offset(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub(crate) fn v_offset(&self) -> usize {
        (self.n_head + self.n_kv) * self.head_dim
    }

    fn check_rows(&self, len: usize, what: &str) -> CResult<usize> {
        let w = self.qkv_width();
        if !len.is_multiple_of(w) {
            candle_core::bail!("{what}: {len} values are not rows of q/k/v width {w}")
        }
        Ok(len / w)
    }
}

/// RoPE, in place, on the q and k parts of fused q/k/v rows.
pub(crate) struct RopeOp<'a> {
    pub heads: Heads,
    pub rope: &'a RotaryEmbedding,
    /// The rope's cos / sin tables on the device of the rows.
    pub tables: &'a (Tensor, Tensor),
}

impl RopeOp<'_> {
    pub(crate) fn neox(&self) -> bool {
        self.rope.style() == RopeStyle::Neox
    }
}

impl InplaceOp1 for RopeOp<'_> {
    fn name(&self) -> &'static str {
        "bitnet-rope"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> CResult<()> {
        let h = self.heads;
        let rows = cpu_f32_mut(s, l, self.name())?;
        let n = h.check_rows(rows.len(), self.name())?;
        if h.start_pos + n > self.rope.n_ctx() {
            candle_core::bail!(
                "{}: positions past the rope table of {}",
                self.name(),
                self.rope.n_ctx()
            )
        }
        let d = h.head_dim;
        for (t, row) in rows.chunks_exact_mut(h.qkv_width()).enumerate() {
            for head in row[..h.v_offset()].chunks_exact_mut(d) {
                self.rope.rotate_head(head, h.start_pos + t);
            }
        }
        Ok(())
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> CResult<()> {
        cuda::rope(self, s, l)
    }
}

/// Writes the (rotated) k and the v parts of fused q/k/v rows into one layer's cache.
pub(crate) struct KvWriteOp {
    pub heads: Heads,
}

/// `(n_kv, n_ctx, head_dim)` of a layer cache `[2, n_kv, n_ctx, head_dim]`.
pub(crate) fn cache_dims(l: &Layout, heads: &Heads, what: &str) -> CResult<(usize, usize, usize)> {
    match l.dims() {
        &[2, n_kv, n_ctx, d] if n_kv == heads.n_kv && d == heads.head_dim => Ok((n_kv, n_ctx, d)),
        dims => candle_core::bail!(
            "{what}: cache of shape {dims:?} does not hold {} kv heads x {}",
            heads.n_kv,
            heads.head_dim
        ),
    }
}

impl InplaceOp2 for KvWriteOp {
    fn name(&self) -> &'static str {
        "bitnet-kv-write"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        lc: &Layout,
        s: &CpuStorage,
        l: &Layout,
    ) -> CResult<()> {
        let h = self.heads;
        let (n_kv, n_ctx, d) = cache_dims(lc, &h, self.name())?;
        let rows = cpu_f32(s, l, self.name())?;
        let n = h.check_rows(rows.len(), self.name())?;
        if h.start_pos + n > n_ctx {
            candle_core::bail!("{}: positions past the cache of {n_ctx}", self.name())
        }
        let cache = cpu_f32_mut(cache, lc, self.name())?;
        let plane = n_kv * n_ctx * d;
        for (t, row) in rows.chunks_exact(h.qkv_width()).enumerate() {
            let pos = h.start_pos + t;
            for g in 0..n_kv {
                let at = (g * n_ctx + pos) * d;
                let k = &row[h.k_offset() + g * d..][..d];
                let v = &row[h.v_offset() + g * d..][..d];
                cache[at..at + d].copy_from_slice(k);
                cache[plane + at..plane + at + d].copy_from_slice(v);
            }
        }
        Ok(())
    }

    fn cuda_fwd(
        &self,
        cache: &mut CudaStorage,
        lc: &Layout,
        s: &CudaStorage,
        l: &Layout,
    ) -> CResult<()> {
        cuda::kv_write(self, cache, lc, s, l)
    }
}

/// Causal attention of the q part of fused q/k/v rows over one layer's cache (which already
/// holds the rows' own keys and values): `[n_tokens, n_head · head_dim]`.
pub(crate) struct AttentionOp {
    pub heads: Heads,
}

impl AttentionOp {
    pub(crate) fn scale(&self) -> f32 {
        (1.0 / (self.heads.head_dim as f64).sqrt()) as f32
    }
}

impl CustomOp2 for AttentionOp {
    fn name(&self) -> &'static str {
        "bitnet-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let h = self.heads;
        let rows = cpu_f32(s1, l1, self.name())?;
        let n = h.check_rows(rows.len(), self.name())?;
        let (n_kv, n_ctx, d) = cache_dims(l2, &h, self.name())?;
        let cache = cpu_f32(s2, l2, self.name())?;
        let len = h.start_pos + n;
        if len > n_ctx || n_kv == 0 || !h.n_head.is_multiple_of(n_kv) {
            candle_core::bail!(
                "{}: {len} positions in a cache of {n_ctx}, {} heads over {n_kv}",
                self.name(),
                h.n_head
            )
        }
        let plane = n_kv * n_ctx * d;
        let mut out = vec![0f32; n * h.n_head * d];
        // The backend kernel reads pages of PAGE positions, keys transposed within a page and
        // values row-major, as the row path's cache stores them: one head's positions become
        // consecutive pages here.
        let n_pages = len.div_ceil(PAGE);
        let pages: Vec<u32> = (0..n_pages as u32).collect();
        let (mut keys_t, mut values) = (
            vec![0f32; n_pages * PAGE * d],
            vec![0f32; n_pages * PAGE * d],
        );
        let n_rep = h.n_head / n_kv;
        let mut scores = vec![0f32; n_rep * len];
        for g in 0..n_kv {
            let keys = &cache[g * n_ctx * d..][..len * d];
            for (pos, k) in keys.chunks_exact(d).enumerate() {
                let page = &mut keys_t[(pos / PAGE) * PAGE * d..][..PAGE * d];
                for (c, &v) in k.iter().enumerate() {
                    page[c * PAGE + pos % PAGE] = v;
                }
            }
            values[..len * d].copy_from_slice(&cache[plane + g * n_ctx * d..][..len * d]);
            let kv = KvHead {
                keys: &keys_t,
                values: &values,
                pages: &pages,
                page_stride: PAGE * d,
                head_offset: 0,
                len,
            };
            for t in 0..n {
                let q = &rows[t * h.qkv_width() + g * n_rep * d..][..n_rep * d];
                let o = &mut out[(t * h.n_head + g * n_rep) * d..][..n_rep * d];
                let visible = h.start_pos + t + 1;
                attend_heads(q, d, &kv, visible, self.scale(), &mut scores, o, d);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, h.n_head * d))))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> CResult<(CudaStorage, Shape)> {
        cuda::attention(self, s1, l1, s2, l2)
    }
}

/// `act(gate) · up` on rows `[n, 2 · ff]` holding gate then up: `[n, ff]`.
pub(crate) struct GatedOp {
    pub activation: FfnActivation,
}

impl GatedOp {
    /// The kernels' code for the activation.
    pub(crate) fn code(&self) -> i32 {
        match self.activation {
            FfnActivation::Relu2 => 0,
            FfnActivation::Silu => 1,
        }
    }
}

impl CustomOp1 for GatedOp {
    fn name(&self) -> &'static str {
        "bitnet-gated-ffn"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, two_ff) = l.shape().dims2()?;
        let rows = cpu_f32(s, l, self.name())?;
        let ff = two_ff / 2;
        let mut out = Vec::with_capacity(n * ff);
        for row in rows.chunks_exact(two_ff) {
            let (g, u) = row.split_at(ff);
            let mut g = g.to_vec();
            match self.activation {
                FfnActivation::Relu2 => relu2_mul(&mut g, u),
                FfnActivation::Silu => silu_mul(&mut g, u),
            }
            out.extend_from_slice(&g);
        }
        Ok((CpuStorage::F32(out), Shape::from((n, ff))))
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> CResult<(CudaStorage, Shape)> {
        cuda::gated(self, s, l)
    }
}

/// The dense LM head on a device table: `x [m, cols] · Wᵀ` for W `[rows, cols]` (f16 or f32),
/// accumulated in f32.
pub(crate) struct DenseOp;

impl CustomOp2 for DenseOp {
    fn name(&self) -> &'static str {
        "bitnet-dense-head"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (rows, cols) = l2.shape().dims2()?;
        if k != cols {
            candle_core::bail!("{}: input width {k}, table width {cols}", self.name())
        }
        let x = cpu_f32(s1, l1, self.name())?;
        let (a, b) = l2.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("dense head: table must be contiguous".into())
        })?;
        let w: Vec<f32> = match s2 {
            CpuStorage::F32(v) => v[a..b].to_vec(),
            CpuStorage::F16(v) => v[a..b].iter().map(|h| h.to_f32()).collect(),
            other => candle_core::bail!(
                "{}: table must be f16 or f32, got {:?}",
                self.name(),
                other.dtype()
            ),
        };
        let mut y = vec![0f32; m * rows];
        for (t, xr) in x.chunks_exact(k).enumerate() {
            for (r, wr) in w.chunks_exact(k).enumerate() {
                y[t * rows + r] = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((m, rows))))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> CResult<(CudaStorage, Shape)> {
        cuda::dense(s1, l1, s2, l2)
    }
}
