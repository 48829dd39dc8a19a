//! `bitnet bench --batched`: llama-batched-bench's test, columns and JSON fields, run through
//! the continuous-batching scheduler that `serve` and the C API share.
//!
//! For every `(npp, ntg, npl)`: `npl` requests with `npp`-token prompts (distinct pseudo-random
//! tokens, or with `-pps` one prompt shared by all, read once and copied) each generate `ntg`
//! tokens greedily, ignoring end-of-generation tokens. `T_PP` runs from the first step until
//! every request has its first token (all prompts read; with a shared prompt this includes the
//! one-token step in which the copies compute their own last prompt token); `T_TG` from there
//! until every request has `ntg` more tokens: `ntg` decode steps of `npl` rows. Speeds are
//! llama-batched-bench's: `S_PP = prompt tokens / T_PP` (`npp` once when shared),
//! `S_TG = npl·ntg / T_TG`, `S = N_KV / (T_PP + T_TG)`. One warm-up request runs first.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bitnet_candle::scheduler::{BatchGenerator, Request, SchedulerConfig, PAGE};
use bitnet_candle::{GenerationParams, KvDtype, Model};
use serde::Serialize;

use super::bench::{bench_tokens, BenchArgs, OutputFormat};
use crate::error::{CliError, CliResult};

/// One row, with llama-batched-bench's JSON field names.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct BatchedRecord {
    pub n_kv_max: usize,
    pub n_batch: usize,
    pub is_pp_shared: bool,
    pub n_threads: usize,
    pub pp: usize,
    pub tg: usize,
    pub pl: usize,
    pub n_kv: usize,
    pub t_pp: f64,
    pub speed_pp: f64,
    pub t_tg: f64,
    pub speed_tg: f64,
    pub t: f64,
    pub speed: f64,
}

/// KV positions a test needs (llama-batched-bench's `n_ctx_req`).
fn n_kv(pp: usize, tg: usize, pl: usize, shared: bool) -> usize {
    match shared {
        true => pp + pl * tg,
        false => pl * (pp + tg),
    }
}

/// Runs every test on one model with `n_threads` threads.
pub fn run_model(
    model: &Model,
    path: &Path,
    args: &BenchArgs,
    n_threads: usize,
) -> CliResult<Vec<BatchedRecord>> {
    let tests: Vec<(usize, usize, usize)> = args
        .npp
        .iter()
        .flat_map(|&pp| {
            args.ntg
                .iter()
                .flat_map(move |&tg| args.npl.iter().map(move |&pl| (pp, tg, pl)))
        })
        .collect();
    if tests.iter().any(|&(pp, _, pl)| pp == 0 || pl == 0) {
        return Err(CliError::Usage(
            "-npp and -npl values must be at least 1".into(),
        ));
    }
    // Enough for every test even unshared, each sequence rounded up to whole KV pages.
    let need = tests
        .iter()
        .map(|&(pp, tg, pl)| pl * (pp + tg).next_multiple_of(PAGE))
        .max()
        .unwrap_or(1);
    let n_kv_max = args.ctx_size.unwrap_or(need);
    eprintln!(
        "{}: n_kv_max = {n_kv_max}, n_batch = {}, is_pp_shared = {}, n_threads = {n_threads}",
        path.display(),
        args.batch_size,
        args.pps
    );
    warm_up(model)?;
    let mut records = Vec::new();
    for (pp, tg, pl) in tests {
        if n_kv(pp, tg, pl, args.pps) > n_kv_max {
            eprintln!("skipping pp {pp}, tg {tg}, pl {pl}: needs more than n_kv_max = {n_kv_max}");
            continue;
        }
        let r = measure(model, args, n_kv_max, n_threads, (pp, tg, pl))?;
        if args.output == OutputFormat::Md {
            eprintln!("done: pp {pp}, tg {tg}, pl {pl}");
        }
        records.push(r);
    }
    Ok(records)
}

fn config(n_seq_max: usize, n_ctx: usize, n_batch: usize) -> SchedulerConfig {
    SchedulerConfig {
        n_seq_max,
        n_ctx,
        n_batch: n_batch.max(n_seq_max),
        prefill_chunk: n_batch.max(n_seq_max),
        kv_dtype: KvDtype::F32,
        prefix_reuse: true,
        resident_kv: false,
    }
}

fn params(max_new_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_new_tokens,
        ignore_eos: true,
        ..GenerationParams::default()
    }
}

/// Pages in the weights and the pool's threads before the first timing.
fn warm_up(model: &Model) -> CliResult {
    let mut g = BatchGenerator::new(model, config(1, 64, 64))?;
    g.add(Request::new(bench_tokens(16, model.n_vocab()), params(4)))?;
    while !g.is_idle() {
        g.step()?;
    }
    Ok(())
}

fn measure(
    model: &Model,
    args: &BenchArgs,
    n_kv_max: usize,
    n_threads: usize,
    (pp, tg, pl): (usize, usize, usize),
) -> CliResult<BatchedRecord> {
    let mut g = BatchGenerator::new(model, config(pl, n_kv_max, args.batch_size))?;
    let prompts = bench_tokens(pp * pl, model.n_vocab());
    let started = Arc::new(AtomicUsize::new(0));
    for i in 0..pl {
        let prompt = match args.pps {
            true => prompts[..pp].to_vec(),
            false => prompts[i * pp..(i + 1) * pp].to_vec(),
        };
        let started = Arc::clone(&started);
        let request = Request::new(prompt, params(tg + 1)).on_token(move |ev| {
            if ev.n_generated == 1 {
                started.fetch_add(1, Ordering::Relaxed);
            }
            ControlFlow::Continue(())
        });
        g.add(request)?;
    }
    let t0 = Instant::now();
    while started.load(Ordering::Relaxed) < pl {
        g.step()?;
    }
    let t_pp = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    while !g.is_idle() {
        for done in g.step()? {
            if let Some(e) = done.error {
                return Err(CliError::Usage(format!("request {} failed: {e}", done.id)));
            }
        }
    }
    let t_tg = t1.elapsed().as_secs_f64();
    let n_kv = n_kv(pp, tg, pl, args.pps);
    let prompt_tokens = if args.pps { pp } else { pp * pl };
    let per_s = |n: usize, t: f64| if t > 0.0 { n as f64 / t } else { 0.0 };
    Ok(BatchedRecord {
        n_kv_max,
        n_batch: args.batch_size,
        is_pp_shared: args.pps,
        n_threads,
        pp,
        tg,
        pl,
        n_kv,
        t_pp,
        speed_pp: per_s(prompt_tokens, t_pp),
        t_tg,
        speed_tg: per_s(pl * tg, t_tg),
        t: t_pp + t_tg,
        speed: per_s(n_kv, t_pp + t_tg),
    })
}

/// llama-batched-bench's table.
pub fn markdown(records: &[BatchedRecord]) -> String {
    let mut out = String::from(
        "|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |\n\
         |-------|--------|------|--------|----------|----------|----------|----------|----------|----------|\n",
    );
    for r in records {
        out.push_str(&format!(
            "| {:5} | {:6} | {:4} | {:6} | {:8.3} | {:8.2} | {:8.3} | {:8.2} | {:8.3} | {:8.2} |\n",
            r.pp, r.tg, r.pl, r.n_kv, r.t_pp, r.speed_pp, r.t_tg, r.speed_tg, r.t, r.speed
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_counts_follow_llama_batched_bench() {
        assert_eq!(n_kv(128, 128, 8, false), 2048);
        assert_eq!(n_kv(128, 128, 8, true), 128 + 8 * 128);
    }

    #[test]
    fn table_has_llama_batched_bench_columns() {
        let r = BatchedRecord {
            n_kv_max: 512,
            n_batch: 2048,
            is_pp_shared: false,
            n_threads: 2,
            pp: 128,
            tg: 64,
            pl: 2,
            n_kv: 384,
            t_pp: 1.0,
            speed_pp: 256.0,
            t_tg: 2.0,
            speed_tg: 64.0,
            t: 3.0,
            speed: 128.0,
        };
        let t = markdown(&[r]);
        for col in [
            "PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s",
        ] {
            assert!(t.contains(col), "{col}: {t}");
        }
        assert!(t.contains("|   128 |     64 |    2 |    384 |"), "{t}");
    }
}
