//! `llama` files with ternary projections (HF1BitLLM Llama3-8B-1.58, Falcon3 *-1.58bit,
//! Falcon-E): a plain Llama block whose projections are [`BitLinear`]s.
//! ```text
//! x = x + W_o · attention(W_q·attn_norm(x), W_k·…, W_v·…)     (GQA, interleaved rope)
//! x = x + W_down · (silu(W_gate·ffn_norm(x)) ⊙ W_up·ffn_norm(x))
//! ```
//! llama.cpp's converters permute the q/k rows for its interleaved ("NORM") rope, which is why
//! this architecture uses [`crate::rope::RopeStyle::Interleaved`].

use candle_core::{Module, Tensor};
use candle_nn::RmsNorm;

use super::attention::causal_self_attention;
use super::config::ModelConfig;
use super::loader::Loader;
use super::{Block, Step};
use crate::bit_linear::BitLinear;
use crate::Result;

pub(crate) struct LlamaBlock {
    attn_norm: RmsNorm,
    w_q: BitLinear,
    w_k: BitLinear,
    w_v: BitLinear,
    w_o: BitLinear,
    ffn_norm: RmsNorm,
    w_gate: BitLinear,
    w_up: BitLinear,
    w_down: BitLinear,
}

impl LlamaBlock {
    fn load(l: &Loader<'_>, i: usize, cfg: &ModelConfig) -> Result<Self> {
        let (e, ff, eps) = (cfg.n_embd, cfg.n_ff, cfg.rms_eps);
        let (q_dim, kv_dim) = (cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim);
        let linear =
            |name: &str, out_f, in_f| l.bit_linear(&format!("blk.{i}.{name}.weight"), out_f, in_f);
        let norm = |name: &str| l.rms_norm(&format!("blk.{i}.{name}.weight"), e, eps);
        Ok(Self {
            attn_norm: norm("attn_norm")?,
            w_q: linear("attn_q", q_dim, e)?,
            w_k: linear("attn_k", kv_dim, e)?,
            w_v: linear("attn_v", kv_dim, e)?,
            w_o: linear("attn_output", e, q_dim)?,
            ffn_norm: norm("ffn_norm")?,
            w_gate: linear("ffn_gate", ff, e)?,
            w_up: linear("ffn_up", ff, e)?,
            w_down: linear("ffn_down", e, ff)?,
        })
    }

    /// `W_o · attention(W_q·h, W_k·h, W_v·h)`.
    fn attention(&self, h: &Tensor, step: &mut Step<'_>) -> Result<Tensor> {
        let q = self.w_q.forward(h)?;
        let k = self.w_k.forward(h)?;
        let v = self.w_v.forward(h)?;
        let a = causal_self_attention(&q, &k, &v, step)?;
        Ok(self.w_o.forward(&a)?)
    }

    /// `W_down · (silu(W_gate·h) ⊙ W_up·h)`.
    fn ffn(&self, h: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.w_gate.forward(h)?)?;
        let m = (gate * self.w_up.forward(h)?)?;
        Ok(self.w_down.forward(&m)?)
    }
}

impl Block for LlamaBlock {
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

/// Loads every block of a ternary `llama` model.
pub(crate) fn load_blocks(l: &Loader<'_>, cfg: &ModelConfig) -> Result<Vec<Box<dyn Block>>> {
    (0..cfg.n_layer)
        .map(|i| LlamaBlock::load(l, i, cfg).map(|b| Box::new(b) as Box<dyn Block>))
        .collect()
}
