//! Causal self-attention over the KV cache, with grouped-query attention (GQA).
//!
//! `softmax(q·kᵀ/√d + causal mask) · v`, in f32. Query head `j` reads key/value head
//! `j / (n_head / n_head_kv)`. Every query head is one task on the backend pool; a task reads
//! its key/value head straight from the cache (keys stored transposed, see
//! [`crate::kv_cache`]) and computes each of its query rows with
//! [`bitnet_backend::dense::attention::attend`], which visits only the positions the causal
//! mask lets it see.

use std::cell::RefCell;
use std::sync::Mutex;

use bitnet_backend::dense::attention::attend;
use bitnet_backend::threads;

use super::Step;
use crate::{Error, Result};

#[derive(Default)]
struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Attention output `out` `[n_tokens, n_head · head_dim]` for projected `q`
/// `[n_tokens, n_head · d]` and `k`, `v` `[n_tokens, n_head_kv · d]` of the tokens at
/// `step.start_pos..` (token-major rows). Rotates `q` and `k` in place and appends `k`, `v` to
/// the cache. `heads` is scratch (resized here).
pub(crate) fn causal_self_attention(
    q: &mut [f32],
    k: &mut [f32],
    v: &[f32],
    n_tokens: usize,
    step: &mut Step<'_>,
    heads: &mut Vec<f32>,
    out: &mut [f32],
) -> Result<()> {
    let (n_head, n_kv, d) = (step.n_head, step.n_head_kv, step.head_dim);
    let (start, layer) = (step.start_pos, step.layer);
    if q.len() != n_tokens * n_head * d || out.len() != q.len() {
        return Err(Error::InvalidArgument(format!(
            "attention: {} query and {} output values for {n_tokens} token(s) of {n_head} heads x {d}",
            q.len(),
            out.len()
        )));
    }
    step.rope.apply_rows(q, n_head, start)?;
    step.rope.apply_rows(k, n_kv, start)?;
    step.cache.write(layer, start, n_tokens, k, v)?;
    let cache = &*step.cache;
    let kv_len = start + n_tokens;
    let n_rep = n_head / n_kv;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let q: &[f32] = q;

    // Head-major results, one slot per task; gathered into token-major rows below.
    heads.clear();
    heads.resize(n_head * n_tokens * d, 0.0);
    let slots: Vec<Mutex<&mut [f32]>> = heads.chunks_mut(n_tokens * d).map(Mutex::new).collect();
    let run = |h: usize| {
        let mut dst = slots[h].lock().unwrap_or_else(|e| e.into_inner());
        SCRATCH.with(|cell| {
            let mut fresh = Scratch::default();
            let mut held = cell.try_borrow_mut();
            let s: &mut Scratch = match held.as_deref_mut() {
                Ok(s) => s,
                Err(_) => &mut fresh,
            };
            let Scratch {
                keys,
                values,
                scores,
            } = s;
            let kv = cache.head(layer, h / n_rep, kv_len, keys, values);
            if scores.len() < kv_len {
                scores.resize(kv_len, 0.0);
            }
            for (t, o) in dst.chunks_exact_mut(d).enumerate() {
                let qt = &q[(t * n_head + h) * d..(t * n_head + h + 1) * d];
                attend(qt, &kv, start + t + 1, scale, scores, o);
            }
        });
    };
    threads::parallel_for(n_head, run);
    drop(slots);
    for (h, head) in heads.chunks_exact(n_tokens * d).enumerate() {
        for (t, row) in head.chunks_exact(d).enumerate() {
            out[(t * n_head + h) * d..(t * n_head + h + 1) * d].copy_from_slice(row);
        }
    }
    Ok(())
}
