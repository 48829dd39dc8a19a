//! Causal self-attention over the KV cache, with grouped-query attention (GQA), for a batch of
//! rows from several sequences.
//!
//! `softmax(q·kᵀ/√d + causal mask) · v`, in f32. Query head `j` reads key/value head
//! `j / (n_head / n_head_kv)`. Each sequence's rows (a [`Run`]) attend only to that sequence's
//! cached positions. A task on the backend pool is one sequence's query heads that share a
//! key/value head (or a chunk of them, when there are too few tasks for the threads); it reads
//! that head straight from the cache's pages and computes each query row with
//! [`bitnet_backend::dense::attention::attend_heads`], which visits only the positions the
//! causal mask lets it see, once for all the chunk's heads.

use std::cell::RefCell;
use std::sync::Mutex;

use bitnet_backend::dense::attention::attend_heads;
use bitnet_backend::threads;

use super::Step;
use crate::kv_cache::{HeadScratch, Run};
use crate::{Error, Result};

#[derive(Default)]
struct Scratch {
    head: HeadScratch,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Attention output `out` `[n_rows, n_head · head_dim]` for projected `q` `[n_rows, n_head · d]`
/// and `k`, `v` `[n_rows, n_head_kv · d]` (token-major rows, grouped into `step.runs`). Rotates
/// `q` and `k` in place and writes `k`, `v` into each run's sequence. `heads` is scratch.
pub(crate) fn causal_self_attention(
    q: &mut [f32],
    k: &mut [f32],
    v: &[f32],
    n_rows: usize,
    step: &mut Step<'_>,
    heads: &mut Vec<f32>,
    out: &mut [f32],
) -> Result<()> {
    let (n_head, n_kv, d) = (step.n_head, step.n_head_kv, step.head_dim);
    let layer = step.layer;
    let (q_w, kv_w) = (n_head * d, n_kv * d);
    if q.len() != n_rows * q_w || out.len() != q.len() || k.len() != n_rows * kv_w {
        return Err(Error::InvalidArgument(format!(
            "attention: {} query, {} key and {} output values for {n_rows} row(s) of {n_head} \
             heads x {d}",
            q.len(),
            k.len(),
            out.len()
        )));
    }
    for r in step.runs {
        let (q_rows, k_rows) = (rows_of(q, r, q_w), rows_of(k, r, kv_w));
        step.rope.apply_rows(q_rows, n_head, r.start_pos)?;
        step.rope.apply_rows(k_rows, n_kv, r.start_pos)?;
        step.cache
            .write(layer, r, k_rows, &v[r.row0 * kv_w..][..r.n_rows * kv_w])?;
    }
    let cache = step.cache.paged()?;
    let runs = step.runs;
    let n_rep = n_head / n_kv;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let q: &[f32] = q;
    // A task computes a chunk of the query heads that share one key/value head, reading that
    // head's keys and values once for all of them. Chunks are as large as possible while
    // there are still a few tasks per thread to balance (a single sequence's decode step has
    // only n_kv groups: 5 for 2B4T, which two threads would split 3 : 2).
    let groups = runs.len() * n_kv;
    let parts = (4 * threads::num_threads())
        .div_ceil(groups)
        .clamp(1, n_rep.max(1));
    let chunk = n_rep.div_ceil(parts);
    let chunks_per_group = n_rep.div_ceil(chunk);

    // Results head-major within a run (`[n_head, n_rows_of_run, d]` at the run's rows),
    // gathered into token-major rows below; one slot per task (a run's chunk of heads).
    heads.clear();
    heads.resize(n_rows * q_w, 0.0);
    let mut tasks: Vec<(usize, usize, usize)> = Vec::with_capacity(groups * chunks_per_group);
    let mut slots: Vec<Mutex<&mut [f32]>> = Vec::with_capacity(tasks.capacity());
    let mut rest = &mut heads[..];
    for (ri, r) in runs.iter().enumerate() {
        for g in 0..n_kv {
            for c in 0..chunks_per_group {
                let h0 = g * n_rep + c * chunk;
                let h1 = (h0 + chunk).min((g + 1) * n_rep);
                let (slot, tail) = std::mem::take(&mut rest).split_at_mut((h1 - h0) * r.n_rows * d);
                slots.push(Mutex::new(slot));
                tasks.push((ri, h0, h1));
                rest = tail;
            }
        }
    }
    let task = |i: usize| {
        let (ri, h0, h1) = tasks[i];
        let r = &runs[ri];
        let mut dst = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        SCRATCH.with(|cell| {
            let mut fresh = Scratch::default();
            let mut held = cell.try_borrow_mut();
            let s: &mut Scratch = match held.as_deref_mut() {
                Ok(s) => s,
                Err(_) => &mut fresh,
            };
            let Scratch { head, scores } = s;
            let kv_len = r.end_pos();
            let kv = cache.head(layer, r.seq, h0 / n_rep, kv_len, head);
            if scores.len() < (h1 - h0) * kv_len {
                scores.resize((h1 - h0) * kv_len, 0.0);
            }
            for t in 0..r.n_rows {
                let row = r.row0 + t;
                let qt = &q[row * q_w + h0 * d..row * q_w + h1 * d];
                let visible = r.start_pos + t + 1;
                attend_heads(
                    qt,
                    d,
                    &kv,
                    visible,
                    scale,
                    scores,
                    &mut dst[t * d..],
                    r.n_rows * d,
                );
            }
        });
    };
    threads::parallel_for(slots.len(), task);
    drop(slots);
    let mut at = 0;
    for r in runs {
        for h in 0..n_head {
            let head = &heads[at..at + r.n_rows * d];
            for (t, row) in head.chunks_exact(d).enumerate() {
                out[(r.row0 + t) * q_w + h * d..][..d].copy_from_slice(row);
            }
            at += r.n_rows * d;
        }
    }
    Ok(())
}

/// The rows of `run` in token-major `x` of `width` values per row.
fn rows_of<'a>(x: &'a mut [f32], run: &Run, width: usize) -> &'a mut [f32] {
    &mut x[run.row0 * width..(run.row0 + run.n_rows) * width]
}
