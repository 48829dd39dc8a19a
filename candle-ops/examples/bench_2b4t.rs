//! Prompt processing and generation speed on a BitNet b1.58 2B4T-shaped model, as llama-bench
//! measures them (pp: one prefill of N tokens; tg: N single-token steps from an empty cache),
//! with the bytes each generated token reads, the machine's read bandwidth, the resulting share
//! of the memory roofline, and peak RSS.
//!
//! ```text
//! cargo run --release -p bitnet-candle --example bench_2b4t -- \
//!     [--threads 2] [--pp 128] [--tg 128] [--reps 5] [--embd f16|q8_0|q6_k] [--model FILE]
//!     [--pool spin|rayon|candle]
//! ```
//! Without `--model`, a synthetic 2B4T-shaped file (random ternary weights, real layout) is
//! written to a temporary directory by a child process, so its memory does not count.

use std::path::PathBuf;
use std::time::Instant;

use bitnet_backend::gguf::GgmlType;
use bitnet_backend::threads::PoolKind;
use bitnet_candle::synthetic::write_2b4t_like_gguf;
use bitnet_candle::{KvDtype, LoadOptions, Model};

struct Args {
    threads: usize,
    pp: usize,
    tg: usize,
    reps: usize,
    embd: GgmlType,
    model: Option<PathBuf>,
    write_only: Option<PathBuf>,
    pool: Pool,
}

/// Which threads run the ternary kernels.
#[derive(Clone, Copy, Debug)]
enum Pool {
    /// The backend's spin-then-park pool (default).
    Spin,
    /// A dedicated rayon pool.
    Rayon,
    /// candle's `barrier_pool()`, shared with candle's own ops.
    Candle,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        pp: 128,
        tg: 128,
        reps: 5,
        embd: GgmlType::F16,
        model: None,
        write_only: None,
        pool: Pool::Spin,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--threads" => a.threads = num(value()?)?,
            "--pp" => a.pp = num(value()?)?,
            "--tg" => a.tg = num(value()?)?,
            "--reps" => a.reps = num(value()?)?.max(1),
            "--model" => a.model = Some(value()?.into()),
            "--write-only" => a.write_only = Some(value()?.into()),
            "--pool" => {
                a.pool = match value()?.as_str() {
                    "spin" => Pool::Spin,
                    "rayon" => Pool::Rayon,
                    "candle" => Pool::Candle,
                    other => return Err(format!("unknown pool {other} (spin, rayon, candle)")),
                }
            }
            "--embd" => {
                a.embd = match value()?.as_str() {
                    "f16" => GgmlType::F16,
                    "f32" => GgmlType::F32,
                    "q8_0" => GgmlType::Q8_0,
                    "q6_k" => GgmlType::Q6_K,
                    "q4_0" => GgmlType::Q4_0,
                    other => return Err(format!("unknown embedding type {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// A `/proc/self/status` memory line (Linux), in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if let Some(path) = &args.write_only {
        write_2b4t_like_gguf(path, args.embd)?;
        return Ok(());
    }
    // Candle's own ops (norms, softmax, attention matmuls) use these pools.
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, args.threads.to_string());
        }
    }
    let tmp = tempfile::tempdir()?;
    let path = match &args.model {
        Some(p) => p.clone(),
        None => {
            let p = tmp.path().join("synthetic-2b4t.gguf");
            let t = Instant::now();
            let embd = match args.embd {
                GgmlType::F16 => "f16",
                GgmlType::F32 => "f32",
                GgmlType::Q8_0 => "q8_0",
                GgmlType::Q6_K => "q6_k",
                _ => "q4_0",
            };
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(["--embd", embd, "--write-only"])
                .arg(&p)
                .status()?;
            if !status.success() {
                return Err("writing the synthetic model failed".into());
            }
            eprintln!(
                "wrote synthetic model in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            p
        }
    };
    let t = Instant::now();
    let model = Model::load(
        &path,
        &LoadOptions {
            n_threads: Some(args.threads),
            ..Default::default()
        },
    )?;
    let load_s = t.elapsed().as_secs_f64();
    match args.pool {
        Pool::Spin => {}
        Pool::Rayon => bitnet_backend::threads::set_pool_kind(PoolKind::Rayon),
        Pool::Candle => bitnet_candle::pool::use_candle_barrier_pool(),
    }
    let rss_loaded = status_bytes("VmRSS:").unwrap_or(0) as f64;
    let cfg = model.config().clone();
    let file_size = model.file_size();
    let n_ctx = args.pp.max(args.tg + 1);
    let mut cache = model.new_cache(n_ctx, KvDtype::F32)?;
    let tokens: Vec<u32> = (0..n_ctx as u32)
        .map(|i| (i * 7919) % 100_000 + 100)
        .collect();

    // Warm-up: page in the mmap'd head, start the pools.
    model.forward(&mut cache, &tokens[..8.min(args.pp.max(1))], 0)?;

    let mut pp = Vec::new();
    for _ in 0..args.reps {
        cache.reset();
        let t = Instant::now();
        model.forward(&mut cache, &tokens[..args.pp], 0)?;
        pp.push(args.pp as f64 / t.elapsed().as_secs_f64());
    }
    let mut tg = Vec::new();
    for _ in 0..args.reps {
        cache.reset();
        let t = Instant::now();
        for (i, &tok) in tokens[..args.tg].iter().enumerate() {
            model.forward(&mut cache, &[tok], i)?;
        }
        tg.push(args.tg as f64 / t.elapsed().as_secs_f64());
    }

    // Before the bandwidth probe, which allocates its own 1 GiB buffer.
    let rss = peak_rss_bytes().unwrap_or(0) as f64;
    let weights = model.weights().weight_bytes_per_token() as f64;
    // Average KV bytes read per generated token over the tg run (keys and values, f32).
    let kv_per_pos = (2 * cfg.n_layer * cfg.n_head_kv * cfg.head_dim * 4) as f64;
    let kv = kv_per_pos * (args.tg as f64 + 1.0) / 2.0;
    let bytes = weights + kv;
    let bw = bitnet_backend::bandwidth::measure_read_bandwidth(args.threads) * 1e9;
    let (pp_m, tg_m) = (median(pp.clone()), median(tg.clone()));
    let kv_cache_bytes = kv_per_pos * n_ctx as f64;
    println!(
        "model            {} ({:.2} GB file, embedding {:?})",
        model.description(),
        file_size as f64 / 1e9,
        model.weights().token_embedding().ggml_type()
    );
    println!("threads          {} ({:?} pool)", args.threads, args.pool);
    println!(
        "load             {load_s:.2} s (RSS after load {:.2} GB)",
        rss_loaded / 1e9
    );
    println!(
        "pp{:<4}           {pp_m:.1} tok/s (median of {}: {:?})",
        args.pp,
        args.reps,
        pp.iter()
            .map(|v| (v * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    println!(
        "tg{:<4}           {tg_m:.1} tok/s (median of {}: {:?})",
        args.tg,
        args.reps,
        tg.iter()
            .map(|v| (v * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    println!(
        "bytes/token      {:.1} MB (weights {:.1} MB + mean KV {:.1} MB)",
        bytes / 1e6,
        weights / 1e6,
        kv / 1e6
    );
    println!(
        "read bandwidth   {:.1} GB/s ({} threads)",
        bw / 1e9,
        args.threads
    );
    println!(
        "roofline         {:.1} tok/s; tg at {:.1}% of it",
        bw / bytes,
        100.0 * tg_m * bytes / bw
    );
    println!(
        "peak RSS         {:.2} GB (file {:.2} GB + KV cache {:.3} GB = {:.2} GB; ratio {:.3})",
        rss / 1e9,
        file_size as f64 / 1e9,
        kv_cache_bytes / 1e9,
        (file_size as f64 + kv_cache_bytes) / 1e9,
        rss / (file_size as f64 + kv_cache_bytes)
    );
    Ok(())
}
