//! The device-generic forward: the same block as [`super::block`], written in Candle tensor ops
//! with the custom ops inside (ternary projections, RMSNorm, RoPE, the KV write, attention, the
//! gated activation, the dense head), so it runs wherever those ops run: CUDA, or the CPU (where
//! the tuned row path stays the default and this one serves as its cross-check).
//!
//! Projections and the head run once over all rows; attention is a per-sequence function of
//! (that sequence's rows, its first position, its cache), so a batch of sequences can share the
//! rest. On CUDA a single-token step of a sequence goes through its decode plan (one CUDA graph
//! per token, see [`super::cuda`]), whose logits equal this path's exactly.

// Parts of this module serve only the CUDA side (feature `cuda`).
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};

use super::block::{FfnActivation, TernaryBlock};
use super::cuda::{decode_mode, DecodeMode, DecodePlan};
use super::ops::{AttentionOp, DenseOp, GatedOp, Heads, KvWriteOp, RmsNormOp, RopeOp};
use super::{Logits, ModelWeights};
use crate::embedding::DenseWeights;
use crate::kv_cache::KvCache;
use crate::op::TernaryMatMul;
use crate::{Error, Result};

/// One block's weights for the tensor forward (q/k/v and gate/up concatenated).
pub(crate) struct TensorBlock {
    pub attn_norm: Tensor,
    pub qkv: TernaryMatMul,
    pub attn_sub_norm: Option<Tensor>,
    pub o: TernaryMatMul,
    pub ffn_norm: Tensor,
    pub gate_up: TernaryMatMul,
    pub ffn_sub_norm: Option<Tensor>,
    pub down: TernaryMatMul,
}

/// The embedding table or LM head: the CPU path's weights, or a device tensor (f16 or f32).
pub(crate) enum Table {
    Host(DenseWeights),
    Device(Tensor),
}

impl Table {
    fn new(w: &DenseWeights, device: &Device) -> Result<Self> {
        Ok(match device {
            Device::Cpu => Table::Host(w.clone()),
            _ => Table::Device(w.device_table(device)?),
        })
    }

    fn lookup(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Table::Host(w) => w.lookup(ids),
            Table::Device(t) => {
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= t.dim(0).unwrap_or(0)) {
                    return Err(Error::InvalidArgument(format!(
                        "token id {bad} is outside the vocabulary of {} tokens",
                        t.dim(0)?
                    )));
                }
                let ids = Tensor::new(ids, device)?;
                Ok(t.embedding(&ids)?.to_dtype(DType::F32)?)
            }
        }
    }

    fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Table::Host(w) => w.matmul_t(x),
            Table::Device(t) => Ok(x.apply_op2_no_bwd(t, &DenseOp)?),
        }
    }

    /// The device tensor and whether it is f16.
    fn device_tensor(&self) -> Result<(&Tensor, bool)> {
        match self {
            Table::Device(t) => Ok((t, t.dtype() == DType::F16)),
            Table::Host(_) => Err(Error::InvalidArgument("the table lives on the CPU".into())),
        }
    }
}

/// Hyper-parameters the tensor forward and the decode plan read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub eps: f32,
}

impl Dims {
    pub(crate) fn heads(&self, start_pos: usize) -> Heads {
        Heads {
            n_head: self.n_head,
            n_kv: self.n_kv,
            head_dim: self.head_dim,
            start_pos,
        }
    }
}

/// The model's weights placed on a device for the tensor forward.
pub(crate) struct TensorModel {
    id: usize,
    device: Device,
    dims: Dims,
    activation: FfnActivation,
    embed: Table,
    head: Table,
    output_norm: Tensor,
    blocks: Vec<TensorBlock>,
    rope_tables: (Tensor, Tensor),
    rope_neox: bool,
}

impl TensorModel {
    pub(crate) fn new(w: &ModelWeights, device: &Device) -> Result<Self> {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
        let c = &w.config;
        let blocks = w
            .blocks
            .iter()
            .map(|b| b.tensor_block(device))
            .collect::<Result<Vec<_>>>()?;
        let embed = Table::new(&w.token_embd, device)?;
        let head = match (&embed, w.output.name() == w.token_embd.name()) {
            (Table::Device(t), true) => Table::Device(t.clone()),
            _ => Table::new(&w.output, device)?,
        };
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            device: device.clone(),
            dims: Dims {
                n_embd: c.n_embd,
                n_head: c.n_head,
                n_kv: c.n_head_kv,
                head_dim: c.head_dim,
                n_ff: c.n_ff,
                n_vocab: c.n_vocab,
                eps: c.rms_eps,
            },
            activation: w
                .blocks
                .first()
                .map_or(FfnActivation::Relu2, |b| b.activation()),
            embed,
            head,
            output_norm: w.output_norm.tensor(device)?,
            blocks,
            rope_tables: w.rope.tables(device)?,
            rope_neox: w.rope.style() == crate::rope::RopeStyle::Neox,
        })
    }

    pub(crate) fn id(&self) -> usize {
        self.id
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn dims(&self) -> Dims {
        self.dims
    }

    pub(crate) fn blocks(&self) -> &[TensorBlock] {
        &self.blocks
    }

    pub(crate) fn output_norm(&self) -> &Tensor {
        &self.output_norm
    }

    pub(crate) fn rope_tables(&self) -> (&Tensor, &Tensor) {
        (&self.rope_tables.0, &self.rope_tables.1)
    }

    pub(crate) fn rope_neox(&self) -> bool {
        self.rope_neox
    }

    pub(crate) fn embedding_table(&self) -> Result<(&Tensor, bool)> {
        self.embed.device_tensor()
    }

    pub(crate) fn head_table(&self) -> Result<(&Tensor, bool)> {
        self.head.device_tensor()
    }

    pub(crate) fn activation_code(&self) -> i32 {
        GatedOp {
            activation: self.activation,
        }
        .code()
    }
}

fn rms(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    Ok(x.apply_op2_no_bwd(w, &RmsNormOp { eps })?)
}

/// Attention of one sequence: its fused q/k/v rows at positions `start_pos..`, its cache layer.
/// Rotates q and k in place, appends k and v to the cache, returns `[n, n_head · head_dim]`.
pub(crate) fn attend_sequence(
    w: &ModelWeights,
    tm: &TensorModel,
    qkv: &Tensor,
    start_pos: usize,
    cache_layer: &Tensor,
) -> Result<Tensor> {
    let heads = tm.dims.heads(start_pos);
    qkv.inplace_op1(&RopeOp {
        heads,
        rope: &w.rope,
        tables: &tm.rope_tables,
    })?;
    cache_layer.inplace_op2(qkv, &KvWriteOp { heads })?;
    Ok(qkv.apply_op2_no_bwd(cache_layer, &AttentionOp { heads })?)
}

/// `x + block(x)` for rows `x` `[n, n_embd]` of one sequence at `start_pos..`.
fn block_forward(
    w: &ModelWeights,
    tm: &TensorModel,
    b: &TensorBlock,
    x: &Tensor,
    start_pos: usize,
    cache_layer: &Tensor,
) -> Result<Tensor> {
    let eps = tm.dims.eps;
    let qkv = rms(x, &b.attn_norm, eps)?.apply_op1_no_bwd(&b.qkv)?;
    let mut a = attend_sequence(w, tm, &qkv, start_pos, cache_layer)?;
    if let Some(n) = &b.attn_sub_norm {
        a = rms(&a, n, eps)?;
    }
    let x = (x + a.apply_op1_no_bwd(&b.o)?)?;
    let gu = rms(&x, &b.ffn_norm, eps)?.apply_op1_no_bwd(&b.gate_up)?;
    let mut g = gu.apply_op1_no_bwd(&GatedOp {
        activation: tm.activation,
    })?;
    if let Some(n) = &b.ffn_sub_norm {
        g = rms(&g, n, eps)?;
    }
    Ok((&x + g.apply_op1_no_bwd(&b.down)?)?)
}

/// The tensor path's pass over `tokens` of the one sequence of `cache` at positions
/// `start_pos..` (the caller has checked the positions and reserved them in the cache's page
/// table, and records them when this succeeds).
pub(crate) fn forward(
    w: &ModelWeights,
    tm: &TensorModel,
    cache: &mut KvCache,
    tokens: &[u32],
    start_pos: usize,
    logits: Logits,
) -> Result<Tensor> {
    let n = tokens.len();
    let n_ctx = cache.capacity();
    let (layers, plan) = cache.tensor_parts()?;
    let mode = decode_mode();
    if n == 1 && logits == Logits::Last && tm.device.is_cuda() && mode != DecodeMode::Tensor {
        if plan.as_ref().is_none_or(|p| p.model_id() != tm.id) {
            *plan = Some(Box::new(DecodePlan::new(tm, n_ctx)?));
        }
        let p = plan.as_mut().expect("set above");
        return p.step(tm, layers, tokens[0], start_pos, mode);
    }
    let mut x = tm.embed.lookup(tokens, &tm.device)?;
    for (b, layer) in tm.blocks.iter().zip(layers) {
        x = block_forward(w, tm, b, &x, start_pos, layer)?;
    }
    let x = match logits {
        Logits::Last => x.narrow(0, n - 1, 1)?,
        Logits::All => x,
    };
    let out = tm.head.matmul_t(&rms(&x, &tm.output_norm, tm.dims.eps)?)?;
    Ok(match logits {
        Logits::Last => out.squeeze(0)?,
        Logits::All => out,
    })
}

impl TernaryBlock {
    /// This block's weights for the tensor forward on `device` (uploaded now on a GPU).
    pub(crate) fn tensor_block(&self, device: &Device) -> Result<TensorBlock> {
        let p = self.projection_ops();
        let qkv = TernaryMatMul::concat(&[p[0], p[1], p[2]])?;
        let gate_up = TernaryMatMul::concat(&[p[4], p[5]])?;
        let (o, down) = (p[3].clone(), p[6].clone());
        for op in [&qkv, &o, &gate_up, &down] {
            op.to_device(device)?;
        }
        let (attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm) = self.norms();
        let opt = |n: Option<&super::rows::RmsNorm>| n.map(|n| n.tensor(device)).transpose();
        Ok(TensorBlock {
            attn_norm: attn_norm.tensor(device)?,
            qkv,
            attn_sub_norm: opt(attn_sub_norm)?,
            o,
            ffn_norm: ffn_norm.tensor(device)?,
            gate_up,
            ffn_sub_norm: opt(ffn_sub_norm)?,
            down,
        })
    }
}
