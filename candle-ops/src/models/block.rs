//! The block every supported architecture is made of: pre-norm attention and a gated FFN whose
//! seven projections are ternary [`BitLinear`]s, with BitNet's optional "sub-norms" before
//! `W_o` and `W_down`.
//! ```text
//! h  = attn_norm(x)
//! x  = x + W_o · [attn_sub_norm](attention(W_q·h, W_k·h, W_v·h))
//! h  = ffn_norm(x)
//! x  = x + W_down · [ffn_sub_norm](act(W_gate·h) ⊙ W_up·h)
//! ```
//! The architecture modules ([`super::bitnet_b158`], [`super::bitnet`],
//! [`super::llama_ternary`]) choose the activation, the sub-norms and the projection scales.

use super::attention::causal_self_attention;
use super::config::ModelConfig;
use super::rows::{add_assign, relu2_mul, silu_mul, RmsNorm};
use super::source::WeightSource;
use super::{sized, Step, Work};
use crate::bit_linear::BitLinear;
use crate::Result;

/// The gate activation of the FFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FfnActivation {
    /// `relu(x)²` (BitNet b1.58 2B4T).
    Relu2,
    /// `x · sigmoid(x)` (1bitLLM bitnet_b1_58 as llama.cpp runs it, ternary Llama / Falcon3).
    Silu,
}

/// What distinguishes one architecture's block from another's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockSpec {
    pub activation: FfnActivation,
    /// `attn_sub_norm` before `W_o` and `ffn_sub_norm` before `W_down` (BitNet).
    pub sub_norms: bool,
    /// Each projection's optional `blk.N.<name>.scale` tensor multiplies its output (llama.cpp
    /// `bitnet` files).
    pub projection_scales: bool,
}

pub(crate) struct TernaryBlock {
    attn_norm: RmsNorm,
    w_q: BitLinear,
    w_k: BitLinear,
    w_v: BitLinear,
    attn_sub_norm: Option<RmsNorm>,
    w_o: BitLinear,
    ffn_norm: RmsNorm,
    w_gate: BitLinear,
    w_up: BitLinear,
    ffn_sub_norm: Option<RmsNorm>,
    w_down: BitLinear,
    activation: FfnActivation,
}

impl TernaryBlock {
    fn load(l: &dyn WeightSource, i: usize, cfg: &ModelConfig, spec: BlockSpec) -> Result<Self> {
        let (e, ff, eps) = (cfg.n_embd, cfg.n_ff, cfg.rms_eps);
        let (q_dim, kv_dim) = (cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim);
        let linear = |name: &str, out_f: usize, in_f: usize| -> Result<BitLinear> {
            let full = format!("blk.{i}.{name}");
            let layer = l.bit_linear(&format!("{full}.weight"), out_f, in_f)?;
            if !spec.projection_scales {
                return Ok(layer);
            }
            Ok(match l.optional_scale(&format!("{full}.scale"))? {
                Some(s) => layer.with_output_scale(s),
                None => layer,
            })
        };
        let norm =
            |name: &str, width: usize| l.rms_norm(&format!("blk.{i}.{name}.weight"), width, eps);
        let sub_norm = |name: &str, width: usize| -> Result<Option<RmsNorm>> {
            spec.sub_norms.then(|| norm(name, width)).transpose()
        };
        Ok(Self {
            attn_norm: norm("attn_norm", e)?,
            w_q: linear("attn_q", q_dim, e)?,
            w_k: linear("attn_k", kv_dim, e)?,
            w_v: linear("attn_v", kv_dim, e)?,
            attn_sub_norm: sub_norm("attn_sub_norm", q_dim)?,
            w_o: linear("attn_output", e, q_dim)?,
            ffn_norm: norm("ffn_norm", e)?,
            w_gate: linear("ffn_gate", ff, e)?,
            w_up: linear("ffn_up", ff, e)?,
            ffn_sub_norm: sub_norm("ffn_sub_norm", ff)?,
            w_down: linear("ffn_down", e, ff)?,
            activation: spec.activation,
        })
    }

    /// Updates the residual stream `x` (`[n_tokens, n_embd]` rows) in place.
    pub(crate) fn forward(
        &self,
        x: &mut [f32],
        n_tokens: usize,
        step: &mut Step<'_>,
        work: &mut Work,
    ) -> Result<()> {
        self.attention(x, n_tokens, step, work)?;
        self.ffn(x, n_tokens, work)
    }

    /// The ops of the projections q, k, v, o, gate, up, down.
    pub(crate) fn projection_ops(&self) -> [&crate::op::TernaryMatMul; 7] {
        [
            self.w_q.op(),
            self.w_k.op(),
            self.w_v.op(),
            self.w_o.op(),
            self.w_gate.op(),
            self.w_up.op(),
            self.w_down.op(),
        ]
    }

    /// attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm.
    pub(crate) fn norms(&self) -> (&RmsNorm, Option<&RmsNorm>, &RmsNorm, Option<&RmsNorm>) {
        (
            &self.attn_norm,
            self.attn_sub_norm.as_ref(),
            &self.ffn_norm,
            self.ffn_sub_norm.as_ref(),
        )
    }

    pub(crate) fn activation(&self) -> FfnActivation {
        self.activation
    }

    /// The ternary projections (for accounting).
    pub(crate) fn projections(&self) -> Vec<&BitLinear> {
        vec![
            &self.w_q,
            &self.w_k,
            &self.w_v,
            &self.w_o,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    /// `x += W_o · [attn_sub_norm](attention(W_q·h, W_k·h, W_v·h))`, `h = attn_norm(x)`.
    fn attention(&self, x: &mut [f32], n: usize, step: &mut Step<'_>, w: &mut Work) -> Result<()> {
        let (q_dim, kv_dim) = (self.w_q.out_features(), self.w_k.out_features());
        let h = sized(&mut w.h, x.len());
        self.attn_norm.forward(x, h)?;
        let (q, k, v) = (
            sized(&mut w.q, n * q_dim),
            sized(&mut w.k, n * kv_dim),
            sized(&mut w.v, n * kv_dim),
        );
        BitLinear::forward_rows(&[&self.w_q, &self.w_k, &self.w_v], h, n, &mut [q, k, v])?;
        let a = sized(&mut w.a, n * q_dim);
        causal_self_attention(q, k, v, n, step, &mut w.heads, a)?;
        // q is free again: it holds the normed attention output.
        let a = sub_normed(&self.attn_sub_norm, a, q)?;
        let o = sized(&mut w.o, x.len());
        BitLinear::forward_rows(&[&self.w_o], a, n, &mut [o])?;
        add_assign(x, o);
        Ok(())
    }

    /// `x += W_down · [ffn_sub_norm](act(W_gate·h) ⊙ W_up·h)`, `h = ffn_norm(x)`.
    fn ffn(&self, x: &mut [f32], n: usize, w: &mut Work) -> Result<()> {
        let ff = self.w_gate.out_features();
        let h = sized(&mut w.h, x.len());
        self.ffn_norm.forward(x, h)?;
        let (gate, up) = (sized(&mut w.gate, n * ff), sized(&mut w.up, n * ff));
        BitLinear::forward_rows(&[&self.w_gate, &self.w_up], h, n, &mut [gate, up])?;
        match self.activation {
            FfnActivation::Relu2 => relu2_mul(gate, up),
            FfnActivation::Silu => silu_mul(gate, up),
        }
        // up is free again: it holds the normed product.
        let g = sub_normed(&self.ffn_sub_norm, gate, up)?;
        let o = sized(&mut w.o, x.len());
        BitLinear::forward_rows(&[&self.w_down], g, n, &mut [o])?;
        add_assign(x, o);
        Ok(())
    }
}

/// `x` through the block's optional sub-norm: normed into `spare` when it has one, else `x`.
fn sub_normed<'a>(norm: &Option<RmsNorm>, x: &'a [f32], spare: &'a mut [f32]) -> Result<&'a [f32]> {
    match norm {
        Some(norm) => {
            norm.forward(x, spare)?;
            Ok(spare)
        }
        None => Ok(x),
    }
}

/// Loads every block of a model.
pub(crate) fn load_blocks(
    l: &dyn WeightSource,
    cfg: &ModelConfig,
    spec: BlockSpec,
) -> Result<Vec<TernaryBlock>> {
    (0..cfg.n_layer)
        .map(|i| TernaryBlock::load(l, i, cfg, spec))
        .collect()
}
