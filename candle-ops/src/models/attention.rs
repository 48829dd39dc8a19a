//! Causal self-attention over the KV cache, with grouped-query attention (GQA).
//!
//! `softmax(q·kᵀ/√d + causal mask) · v`, in f32. Query head `j` reads key/value head
//! `j / (n_head / n_head_kv)`; instead of repeating the K/V heads, the query heads of one group
//! are stacked into one matrix, so each K/V head is read once per step.

use candle_core::{Device, Tensor};

use super::Step;
use crate::Result;

/// Attention output `[n_tokens, n_head · head_dim]` for projected `q` `[n_tokens, n_head · d]`
/// and `k`, `v` `[n_tokens, n_head_kv · d]` of the tokens at `step.start_pos..`.
pub(crate) fn causal_self_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    step: &mut Step<'_>,
) -> Result<Tensor> {
    let (n_head, n_kv, d) = (step.n_head, step.n_head_kv, step.head_dim);
    let n_rep = n_head / n_kv;
    let t = q.dim(0)?;
    let heads = |x: &Tensor, h: usize| -> Result<Tensor> {
        Ok(x.reshape((t, h, d))?.transpose(0, 1)?.contiguous()?)
    };
    let q = step.rope.apply(&heads(q, n_head)?, step.start_pos)?;
    let k = step.rope.apply(&heads(k, n_kv)?, step.start_pos)?;
    let v = heads(v, n_kv)?;
    let (k_all, v_all) = step.cache.append(step.layer, step.start_pos, &k, &v)?;

    // [n_head, t, d] -> [n_kv, n_rep · t, d]: row r of group g is query head g·n_rep + r / t,
    // token r % t.
    let q = q.reshape((n_kv, n_rep * t, d))?;
    let scores = (q.matmul(&k_all.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = match t {
        1 => scores,
        _ => scores.broadcast_add(&causal_mask(n_rep, t, step.start_pos, q.device())?)?,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(&v_all)?; // [n_kv, n_rep · t, d]
    Ok(out
        .reshape((n_head, t, d))?
        .transpose(0, 1)?
        .reshape((t, n_head * d))?)
}

/// `[n_rep · t, start_pos + t]` additive mask: row `r` (token `r % t`) sees keys up to its own
/// position `start_pos + r % t`.
fn causal_mask(n_rep: usize, t: usize, start_pos: usize, device: &Device) -> Result<Tensor> {
    let kv_len = start_pos + t;
    let mut mask = vec![0f32; n_rep * t * kv_len];
    for (r, row) in mask.chunks_mut(kv_len).enumerate() {
        let visible = start_pos + r % t + 1;
        row[visible..].fill(f32::NEG_INFINITY);
    }
    Ok(Tensor::from_vec(mask, (n_rep * t, kv_len), device)?)
}
