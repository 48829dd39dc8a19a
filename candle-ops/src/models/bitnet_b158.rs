//! BitNet b1.58 2B4T (`general.architecture` = `bitnet-b1.58`, formerly `bitnet-25`).
//!
//! Each block is a pre-norm transformer block with BitNet's two extra "sub-norms":
//! ```text
//! h  = attn_norm(x)
//! x  = x + W_o · attn_sub_norm(attention(W_q·h, W_k·h, W_v·h))      (GQA, NEOX rope)
//! h  = ffn_norm(x)
//! x  = x + W_down · ffn_sub_norm(relu2(W_gate·h) ⊙ W_up·h)
//! ```
//! Every `W` is a ternary [`BitLinear`] (int8 activations per token). The same block with SiLU
//! instead of ReLU² is llama.cpp's `bitnet` architecture ([`super::bitnet`]).

use super::attention::causal_self_attention;
use super::config::ModelConfig;
use super::loader::Loader;
use super::rows::{add_assign, relu2_mul, silu_mul, RmsNorm};
use super::{sized, Block, Step, Work};
use crate::bit_linear::BitLinear;
use crate::Result;

/// The gate activation of the FFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FfnActivation {
    /// `relu(x)²` (BitNet b1.58 2B4T).
    Relu2,
    /// `x · sigmoid(x)` (1bitLLM bitnet_b1_58, as llama.cpp runs it).
    Silu,
}

/// One BitNet block with attention and FFN sub-norms.
pub(crate) struct SubLnBlock {
    attn_norm: RmsNorm,
    w_q: BitLinear,
    w_k: BitLinear,
    w_v: BitLinear,
    attn_sub_norm: RmsNorm,
    w_o: BitLinear,
    ffn_norm: RmsNorm,
    w_gate: BitLinear,
    w_up: BitLinear,
    ffn_sub_norm: RmsNorm,
    w_down: BitLinear,
    activation: FfnActivation,
}

impl SubLnBlock {
    /// Loads block `i`; with `projection_scales`, each projection's optional `<name>.scale`
    /// tensor multiplies its output (llama.cpp `bitnet` files).
    pub(crate) fn load(
        l: &Loader<'_>,
        i: usize,
        cfg: &ModelConfig,
        activation: FfnActivation,
        projection_scales: bool,
    ) -> Result<Self> {
        let (e, ff, eps) = (cfg.n_embd, cfg.n_ff, cfg.rms_eps);
        let (q_dim, kv_dim) = (cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim);
        let linear = |name: &str, out_f: usize, in_f: usize| -> Result<BitLinear> {
            let full = format!("blk.{i}.{name}");
            let layer = l.bit_linear(&format!("{full}.weight"), out_f, in_f)?;
            match projection_scales {
                true => match l.optional_scale(&format!("{full}.scale"))? {
                    Some(s) => Ok(layer.with_output_scale(s)),
                    None => Ok(layer),
                },
                false => Ok(layer),
            }
        };
        let norm =
            |name: &str, width: usize| l.rms_norm(&format!("blk.{i}.{name}.weight"), width, eps);
        Ok(Self {
            attn_norm: norm("attn_norm", e)?,
            w_q: linear("attn_q", q_dim, e)?,
            w_k: linear("attn_k", kv_dim, e)?,
            w_v: linear("attn_v", kv_dim, e)?,
            attn_sub_norm: norm("attn_sub_norm", q_dim)?,
            w_o: linear("attn_output", e, q_dim)?,
            ffn_norm: norm("ffn_norm", e)?,
            w_gate: linear("ffn_gate", ff, e)?,
            w_up: linear("ffn_up", ff, e)?,
            ffn_sub_norm: norm("ffn_sub_norm", ff)?,
            w_down: linear("ffn_down", e, ff)?,
            activation,
        })
    }

    /// `x += W_o · attn_sub_norm(attention(W_q·h, W_k·h, W_v·h))`, `h = attn_norm(x)`.
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
        self.attn_sub_norm.forward(a, q)?;
        let o = sized(&mut w.o, x.len());
        BitLinear::forward_rows(&[&self.w_o], q, n, &mut [o])?;
        add_assign(x, o);
        Ok(())
    }

    /// `x += W_down · ffn_sub_norm(act(W_gate·h) ⊙ W_up·h)`, `h = ffn_norm(x)`.
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
        self.ffn_sub_norm.forward(gate, up)?;
        let o = sized(&mut w.o, x.len());
        BitLinear::forward_rows(&[&self.w_down], up, n, &mut [o])?;
        add_assign(x, o);
        Ok(())
    }
}

impl Block for SubLnBlock {
    fn forward(
        &self,
        x: &mut [f32],
        n_tokens: usize,
        step: &mut Step<'_>,
        work: &mut Work,
    ) -> Result<()> {
        self.attention(x, n_tokens, step, work)?;
        self.ffn(x, n_tokens, work)
    }

    fn projections(&self) -> Vec<&BitLinear> {
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
}

/// Loads every block of a `bitnet-b1.58` / `bitnet-25` model.
pub(crate) fn load_blocks(l: &Loader<'_>, cfg: &ModelConfig) -> Result<Vec<Box<dyn Block>>> {
    (0..cfg.n_layer)
        .map(|i| {
            SubLnBlock::load(l, i, cfg, FfnActivation::Relu2, false)
                .map(|b| Box::new(b) as Box<dyn Block>)
        })
        .collect()
}
