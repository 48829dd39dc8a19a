//! CUDA for the model: the `cuda_fwd` bodies of the ops in [`super::ops`], and the decode plan —
//! one token through the whole model on preallocated buffers, launched eagerly or replayed as
//! one CUDA graph.
//!
//! The plan issues the same kernels as the Candle-ops forward with the same arguments, fusing
//! only what is bit-identical to run apart (RMSNorm or the gated activation into the quantizer,
//! the residual add into the GEMV's store), so its logits equal the Candle-ops path's exactly.
//! The token and its position are read from device memory, so one captured graph serves every
//! step of a sequence.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::{
    CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use candle_core::cuda_backend::cudarc::driver::{CudaGraph, CudaSlice};
use candle_core::{CudaStorage, DType, Device, Layout, Shape, Storage, Tensor};

use super::ops::{cache_dims, AttentionOp, GatedOp, KvWriteOp, RmsNormOp, RopeOp};
use super::tensor_forward::TensorModel;
use crate::op::cuda::{
    addr, kernels, perm_stride, product, storage_addr, tensor_addr, upload, ActBuffers, Attention,
    Kernels, Quantize, RopeKv, GEMV_MAX_TOKENS,
};
use crate::{Error, Result};

type CResult<T> = candle_core::Result<T>;

fn err(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(std::io::Error::other(e.to_string())))
}

/// The contiguous start of a storage, or an error naming the op.
fn start(l: &Layout, what: &str) -> CResult<usize> {
    Ok(l.contiguous_offsets()
        .ok_or_else(|| err(format!("{what}: input must be contiguous")))?
        .0)
}

fn f32_only(s: &CudaStorage, what: &str) -> CResult<()> {
    match s.dtype() {
        DType::F32 => Ok(()),
        other => candle_core::bail!("{what}: CUDA inputs must be f32, got {other:?}"),
    }
}

pub(crate) fn rms_norm(
    op: &RmsNormOp,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> CResult<(CudaStorage, Shape)> {
    f32_only(s1, "rms norm")?;
    let k = kernels(s1.device())?;
    let st = k.stream().clone();
    let cols = l2.shape().elem_count();
    let n = l1.shape().elem_count() / cols.max(1);
    // SAFETY: every element is written by the kernel.
    let out = unsafe { st.alloc::<f32>(n * cols) }.map_err(err)?;
    k.rms_norm(
        storage_addr(s1, start(l1, "rms norm")?, &st)?,
        storage_addr(s2, start(l2, "rms norm")?, &st)?,
        op.eps,
        n,
        cols,
        addr(&out, &st, 0),
    )?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, s1.device().clone()),
        l1.shape().clone(),
    ))
}

pub(crate) fn rope(op: &RopeOp<'_>, s: &mut CudaStorage, l: &Layout) -> CResult<()> {
    let h = op.heads;
    let k = kernels(s.device())?;
    let st = k.stream().clone();
    let n = l.shape().elem_count() / h.qkv_width();
    if h.start_pos + n > op.rope.n_ctx() {
        candle_core::bail!("rope: positions past the table of {}", op.rope.n_ctx())
    }
    k.rope_kv(&RopeKv {
        rows: storage_addr(s, start(l, "rope")?, &st)?,
        row_stride: h.qkv_width(),
        n_tokens: n,
        n_head: h.n_head,
        n_kv: h.n_kv,
        d: h.head_dim,
        k_off: h.k_offset(),
        v_off: h.v_offset(),
        cos: tensor_addr(&op.tables.0, &st)?,
        sin: tensor_addr(&op.tables.1, &st)?,
        start_ptr: 0,
        start_val: h.start_pos,
        neox: op.neox(),
        rotate: true,
        cache: 0,
        n_ctx: 0,
    })
}

pub(crate) fn kv_write(
    op: &KvWriteOp,
    cache: &mut CudaStorage,
    lc: &Layout,
    s: &CudaStorage,
    l: &Layout,
) -> CResult<()> {
    let h = op.heads;
    let (_, n_ctx, _) = cache_dims(lc, &h, "kv write")?;
    let k = kernels(s.device())?;
    let st = k.stream().clone();
    let n = l.shape().elem_count() / h.qkv_width();
    if h.start_pos + n > n_ctx {
        candle_core::bail!("kv write: positions past the cache of {n_ctx}")
    }
    k.rope_kv(&RopeKv {
        rows: storage_addr(s, start(l, "kv write")?, &st)?,
        row_stride: h.qkv_width(),
        n_tokens: n,
        n_head: h.n_head,
        n_kv: h.n_kv,
        d: h.head_dim,
        k_off: h.k_offset(),
        v_off: h.v_offset(),
        cos: 0,
        sin: 0,
        start_ptr: 0,
        start_val: h.start_pos,
        neox: false,
        rotate: false,
        cache: storage_addr(cache, start(lc, "kv write")?, &st)?,
        n_ctx,
    })
}

pub(crate) fn attention(
    op: &AttentionOp,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> CResult<(CudaStorage, Shape)> {
    let h = op.heads;
    let (_, n_ctx, d) = cache_dims(l2, &h, "attention")?;
    let k = kernels(s1.device())?;
    let st = k.stream().clone();
    let n = l1.shape().elem_count() / h.qkv_width();
    let len = h.start_pos + n;
    if len > n_ctx {
        candle_core::bail!("attention: {len} positions in a cache of {n_ctx}")
    }
    // SAFETY: every score a query reads is written first by its own block.
    let scores = unsafe { st.alloc::<f32>(n * h.n_head * len) }.map_err(err)?;
    // SAFETY: every output element is written by the kernel.
    let out = unsafe { st.alloc::<f32>(n * h.n_head * d) }.map_err(err)?;
    k.attention(&Attention {
        q: storage_addr(s1, start(l1, "attention")?, &st)?,
        q_stride: h.qkv_width(),
        cache: storage_addr(s2, start(l2, "attention")?, &st)?,
        n_ctx,
        n_head: h.n_head,
        n_kv: h.n_kv,
        d,
        n_tokens: n,
        start_ptr: 0,
        start_val: h.start_pos,
        scale: op.scale(),
        scores: addr(&scores, &st, 0),
        score_stride: len,
        out: addr(&out, &st, 0),
        out_stride: h.n_head * d,
    })?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, s1.device().clone()),
        Shape::from((n, h.n_head * d)),
    ))
}

pub(crate) fn gated(op: &GatedOp, s: &CudaStorage, l: &Layout) -> CResult<(CudaStorage, Shape)> {
    f32_only(s, "gated ffn")?;
    let (n, two_ff) = l.shape().dims2()?;
    let ff = two_ff / 2;
    let k = kernels(s.device())?;
    let st = k.stream().clone();
    // SAFETY: every element is written by the kernel.
    let out = unsafe { st.alloc::<f32>(n * ff) }.map_err(err)?;
    k.gated(
        storage_addr(s, start(l, "gated ffn")?, &st)?,
        ff,
        n,
        op.code(),
        addr(&out, &st, 0),
    )?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, s.device().clone()),
        Shape::from((n, ff)),
    ))
}

pub(crate) fn dense(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> CResult<(CudaStorage, Shape)> {
    f32_only(s1, "dense head")?;
    let (m, kx) = l1.shape().dims2()?;
    let (rows, cols) = l2.shape().dims2()?;
    if kx != cols {
        candle_core::bail!("dense head: input width {kx}, table width {cols}")
    }
    let f16 = match s2.dtype() {
        DType::F16 => true,
        DType::F32 => false,
        other => candle_core::bail!("dense head: table must be f16 or f32, got {other:?}"),
    };
    let k = kernels(s1.device())?;
    let st = k.stream().clone();
    let (x, w) = (
        storage_addr(s1, start(l1, "dense head")?, &st)?,
        storage_addr(s2, start(l2, "dense head")?, &st)?,
    );
    // SAFETY: every element is written by the kernels.
    let y = unsafe { st.alloc::<f32>(m * rows) }.map_err(err)?;
    let y0 = addr(&y, &st, 0);
    for t0 in (0..m).step_by(GEMV_MAX_TOKENS) {
        let n = GEMV_MAX_TOKENS.min(m - t0);
        k.dense(
            f16,
            w,
            rows,
            cols,
            x + (t0 * cols * 4) as u64,
            n,
            y0 + (t0 * rows * 4) as u64,
            rows,
        )?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, s1.device().clone()),
        Shape::from((m, rows)),
    ))
}

/// How a single-token step runs on CUDA (`BITNET_CUDA_DECODE`): `graph` (default) replays one
/// CUDA graph per token, `eager` launches the plan's kernels one by one, `tensor` runs the
/// Candle-ops forward like any other batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeMode {
    Graph,
    Eager,
    Tensor,
}

pub(crate) fn decode_mode() -> DecodeMode {
    match std::env::var("BITNET_CUDA_DECODE").as_deref() {
        Ok("eager") => DecodeMode::Eager,
        Ok("tensor") => DecodeMode::Tensor,
        _ => DecodeMode::Graph,
    }
}

/// One sequence's single-token decode on preallocated buffers (kept in its KV cache).
pub(crate) struct DecodePlan {
    k: Arc<Kernels>,
    /// `[token, position]`, read by the kernels.
    io: CudaSlice<i32>,
    x: CudaSlice<f32>,
    qkv: CudaSlice<f32>,
    attn: CudaSlice<f32>,
    gate_up: CudaSlice<f32>,
    normed: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    scores: CudaSlice<f32>,
    acts: ActBuffers,
    n_ctx: usize,
    graph: Option<CudaGraph>,
    /// Why no graph is used, when capture was tried and failed.
    graph_error: Option<String>,
    model_id: usize,
}

// SAFETY: the plan (its CUDA graph holds raw driver handles) is only used through `&mut` of the
// one KV cache that owns it, so never from two threads at once; the driver objects themselves may
// be used from any thread of the process.
unsafe impl Send for DecodePlan {}
// SAFETY: as above: shared references never touch the graph.
unsafe impl Sync for DecodePlan {}

impl DecodePlan {
    pub(crate) fn new(tm: &TensorModel, n_ctx: usize) -> Result<Self> {
        let Device::Cuda(dev) = tm.device() else {
            return Err(Error::InvalidArgument(
                "the decode plan needs a CUDA model".into(),
            ));
        };
        let k = kernels(dev)?;
        let st = k.stream().clone();
        let c = tm.dims();
        let zeros = |n: usize| st.alloc_zeros::<f32>(n).map_err(err);
        let max_kp = tm
            .blocks()
            .iter()
            .flat_map(|b| [b.qkv.in_features(), b.o.in_features(), b.down.in_features()])
            .map(|cols| cols.div_ceil(128) * 128)
            .max()
            .unwrap_or(128);
        Ok(Self {
            io: st.alloc_zeros::<i32>(2).map_err(err)?,
            x: zeros(c.n_embd)?,
            qkv: zeros(c.heads(0).qkv_width())?,
            attn: zeros(c.n_head * c.head_dim)?,
            gate_up: zeros(2 * c.n_ff)?,
            normed: zeros(c.n_embd)?,
            logits: zeros(c.n_vocab)?,
            scores: zeros(c.n_head * n_ctx)?,
            acts: ActBuffers::new(&st, 1, max_kp)?,
            n_ctx,
            graph: None,
            graph_error: None,
            model_id: tm.id(),
            k,
        })
    }

    pub(crate) fn model_id(&self) -> usize {
        self.model_id
    }

    /// Why the plan runs without a graph, if capture failed.
    pub(crate) fn graph_error(&self) -> Option<&str> {
        self.graph_error.as_deref()
    }

    /// Logits `[n_vocab]` of `token` at `pos`, whose cache layers are `caches`.
    pub(crate) fn step(
        &mut self,
        tm: &TensorModel,
        caches: &[Tensor],
        token: u32,
        pos: usize,
        mode: DecodeMode,
    ) -> Result<Tensor> {
        if pos >= self.n_ctx {
            return Err(Error::InvalidArgument(format!(
                "position {pos} is past the context of {}",
                self.n_ctx
            )));
        }
        let st = self.k.stream().clone();
        let io = [token as i32, pos as i32];
        st.memcpy_htod(&io[..], &mut self.io).map_err(err)?;
        match (mode, &self.graph) {
            (DecodeMode::Graph, Some(g)) => g.launch().map_err(err)?,
            (DecodeMode::Graph, None) if self.graph_error.is_none() => {
                match self.capture(tm, caches) {
                    Ok(g) => {
                        g.launch().map_err(err)?;
                        self.graph = Some(g);
                    }
                    Err(e) => {
                        self.graph_error = Some(e.to_string());
                        self.record(tm, caches)?;
                    }
                }
            }
            _ => self.record(tm, caches)?,
        }
        let Device::Cuda(dev) = tm.device() else {
            unreachable!("checked in new")
        };
        let out = st.clone_dtod(&self.logits).map_err(err)?;
        let n = out.len();
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, dev.clone()));
        Ok(Tensor::from_storage(
            storage,
            n,
            candle_core::op::BackpropOp::none(),
            false,
        ))
    }

    fn capture(&self, tm: &TensorModel, caches: &[Tensor]) -> Result<CudaGraph> {
        let st = self.k.stream().clone();
        st.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(err)?;
        let recorded = self.record(tm, caches);
        let graph = st.end_capture(CUgraphInstantiate_flags(0)).map_err(err);
        recorded?;
        graph?.ok_or_else(|| Error::InvalidArgument("CUDA graph capture recorded nothing".into()))
    }

    /// Issues every kernel of one decode step on the stream.
    fn record(&self, tm: &TensorModel, caches: &[Tensor]) -> Result<()> {
        let (k, st) = (&*self.k, self.k.stream());
        let c = tm.dims();
        let io = addr(&self.io, st, 0);
        let pos = io + 4;
        let (x, qkv, attn, gu) = (
            addr(&self.x, st, 0),
            addr(&self.qkv, st, 0),
            addr(&self.attn, st, 0),
            addr(&self.gate_up, st, 0),
        );
        let (q, scales, sums) = (
            self.acts.q(st, 0, 0),
            self.acts.scales(st, 0),
            self.acts.sums(st, 0),
        );
        let (table, f16) = tm.embedding_table()?;
        k.embed(f16, tensor_addr(table, st)?, io, 1, c.n_embd, x)?;
        let (cos, sin) = tm.rope_tables();
        let (cos, sin) = (tensor_addr(cos, st)?, tensor_addr(sin, st)?);
        let opt = |t: Option<&Tensor>| t.map_or(Ok(0), |t| tensor_addr(t, st));
        for (b, cache) in tm.blocks().iter().zip(caches) {
            let h = c.heads(0);
            let cache = tensor_addr(cache, st)?;
            let quantize = |src: u64, up: u64, stride: usize, norm: u64, cols: usize| {
                k.quantize(&Quantize {
                    x: src,
                    up,
                    x_stride: stride,
                    norm_w: norm,
                    eps: c.eps,
                    act: tm.activation_code(),
                    m: 1,
                    m_pad: 1,
                    cols,
                    kp: cols.div_ceil(128) * 128,
                    perm: true,
                    q,
                    scales,
                    sums,
                    h_out: 0,
                })
            };
            debug_assert!(
                perm_stride(b.qkv.in_features().div_ceil(128) * 128) <= self.acts.q_bytes()
            );
            let gemv =
                |op: &crate::TernaryMatMul, y: u64, y_stride: usize, add: bool| -> Result<()> {
                    let Device::Cuda(dev) = tm.device() else {
                        unreachable!("checked in new")
                    };
                    let w = upload(op, dev)?;
                    product(k, &w, &self.acts, 1, y, y_stride, add)?;
                    Ok(())
                };
            quantize(x, 0, c.n_embd, tensor_addr(&b.attn_norm, st)?, c.n_embd)?;
            gemv(&b.qkv, qkv, h.qkv_width(), false)?;
            k.rope_kv(&RopeKv {
                rows: qkv,
                row_stride: h.qkv_width(),
                n_tokens: 1,
                n_head: h.n_head,
                n_kv: h.n_kv,
                d: h.head_dim,
                k_off: h.k_offset(),
                v_off: h.v_offset(),
                cos,
                sin,
                start_ptr: pos,
                start_val: 0,
                neox: tm.rope_neox(),
                rotate: true,
                cache,
                n_ctx: self.n_ctx,
            })?;
            k.attention(&Attention {
                q: qkv,
                q_stride: h.qkv_width(),
                cache,
                n_ctx: self.n_ctx,
                n_head: h.n_head,
                n_kv: h.n_kv,
                d: h.head_dim,
                n_tokens: 1,
                start_ptr: pos,
                start_val: 0,
                scale: AttentionOp { heads: h }.scale(),
                scores: addr(&self.scores, st, 0),
                score_stride: self.n_ctx,
                out: attn,
                out_stride: h.n_head * h.head_dim,
            })?;
            let q_dim = h.n_head * h.head_dim;
            quantize(attn, 0, q_dim, opt(b.attn_sub_norm.as_ref())?, q_dim)?;
            gemv(&b.o, x, c.n_embd, true)?;
            quantize(x, 0, c.n_embd, tensor_addr(&b.ffn_norm, st)?, c.n_embd)?;
            gemv(&b.gate_up, gu, 2 * c.n_ff, false)?;
            quantize(
                gu,
                gu + (c.n_ff * 4) as u64,
                2 * c.n_ff,
                opt(b.ffn_sub_norm.as_ref())?,
                c.n_ff,
            )?;
            gemv(&b.down, x, c.n_embd, true)?;
        }
        let normed = addr(&self.normed, st, 0);
        k.rms_norm(
            x,
            tensor_addr(tm.output_norm(), st)?,
            c.eps,
            1,
            c.n_embd,
            normed,
        )?;
        let (head, f16) = tm.head_table()?;
        k.dense(
            f16,
            tensor_addr(head, st)?,
            c.n_vocab,
            c.n_embd,
            normed,
            1,
            addr(&self.logits, st, 0),
            c.n_vocab,
        )?;
        Ok(())
    }
}
