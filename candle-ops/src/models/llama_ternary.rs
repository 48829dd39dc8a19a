//! `llama` files with ternary projections (HF1BitLLM Llama3-8B-1.58, Falcon3 *-1.58bit,
//! Falcon-E): a plain Llama block whose projections are [`BitLinear`]s.
//! ```text
//! x = x + W_o · attention(W_q·attn_norm(x), W_k·…, W_v·…)     (GQA, interleaved rope)
//! x = x + W_down · (silu(W_gate·ffn_norm(x)) ⊙ W_up·ffn_norm(x))
//! ```
//! llama.cpp's converters permute the q/k rows for its interleaved ("NORM") rope, which is why
//! this architecture uses [`crate::rope::RopeStyle::Interleaved`].

use super::attention::causal_self_attention;
use super::config::ModelConfig;
use super::loader::Loader;
use super::rows::{add_assign, silu_mul, RmsNorm};
use super::{sized, Block, Step, Work};
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

    /// `x += W_o · attention(W_q·h, W_k·h, W_v·h)`, `h = attn_norm(x)`.
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
        let o = sized(&mut w.o, x.len());
        BitLinear::forward_rows(&[&self.w_o], a, n, &mut [o])?;
        add_assign(x, o);
        Ok(())
    }

    /// `x += W_down · (silu(W_gate·h) ⊙ W_up·h)`, `h = ffn_norm(x)`.
    fn ffn(&self, x: &mut [f32], n: usize, w: &mut Work) -> Result<()> {
        let ff = self.w_gate.out_features();
        let h = sized(&mut w.h, x.len());
        self.ffn_norm.forward(x, h)?;
        let (gate, up) = (sized(&mut w.gate, n * ff), sized(&mut w.up, n * ff));
        BitLinear::forward_rows(&[&self.w_gate, &self.w_up], h, n, &mut [gate, up])?;
        silu_mul(gate, up);
        let o = sized(&mut w.o, x.len());
        BitLinear::forward_rows(&[&self.w_down], gate, n, &mut [o])?;
        add_assign(x, o);
        Ok(())
    }
}

impl Block for LlamaBlock {
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

/// Loads every block of a ternary `llama` model.
pub(crate) fn load_blocks(l: &Loader<'_>, cfg: &ModelConfig) -> Result<Vec<Box<dyn Block>>> {
    (0..cfg.n_layer)
        .map(|i| LlamaBlock::load(l, i, cfg).map(|b| Box::new(b) as Box<dyn Block>))
        .collect()
}
