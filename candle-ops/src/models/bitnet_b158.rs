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

use candle_core::{Module, Tensor};
use candle_nn::RmsNorm;

use super::attention::causal_self_attention;
use super::config::ModelConfig;
use super::loader::Loader;
use super::{Block, Step};
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

/// `relu(x)²`. Kept in f32: the square overflows f16.
pub(crate) fn relu2(x: &Tensor) -> Result<Tensor> {
    Ok(x.relu()?.sqr()?)
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

    /// `W_o · attn_sub_norm(attention(W_q·h, W_k·h, W_v·h))`.
    fn attention(&self, h: &Tensor, step: &mut Step<'_>) -> Result<Tensor> {
        let q = self.w_q.forward(h)?;
        let k = self.w_k.forward(h)?;
        let v = self.w_v.forward(h)?;
        let a = causal_self_attention(&q, &k, &v, step)?;
        Ok(self.w_o.forward(&self.attn_sub_norm.forward(&a)?)?)
    }

    /// `W_down · ffn_sub_norm(act(W_gate·h) ⊙ W_up·h)`.
    fn ffn(&self, h: &Tensor) -> Result<Tensor> {
        let gate = self.w_gate.forward(h)?;
        let gate = match self.activation {
            FfnActivation::Relu2 => relu2(&gate)?,
            FfnActivation::Silu => candle_nn::ops::silu(&gate)?,
        };
        let m = (gate * self.w_up.forward(h)?)?;
        Ok(self.w_down.forward(&self.ffn_sub_norm.forward(&m)?)?)
    }
}

impl Block for SubLnBlock {
    fn forward(&self, x: &Tensor, step: &mut Step<'_>) -> Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let x = (x + self.attention(&h, step)?)?;
        let h = self.ffn_norm.forward(&x)?;
        Ok((&x + self.ffn(&h)?)?)
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
