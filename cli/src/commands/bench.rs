//! `bitnet bench`: llama-bench's tests, flags and output formats.
//!
//! `pp<N>` evaluates an N-token prompt in one batch from an empty cache; `tg<N>` generates N
//! tokens one at a time from an empty cache (no sampling: token ids are fixed pseudo-random,
//! as llama-bench does). Each test runs once to warm up, then `-r` times; the figure is the mean
//! and standard deviation of the per-repetition tokens/s. With no `-m`, a BitNet b1.58
//! 2B4T-shaped model with random ternary weights is generated first, so the command needs no
//! download. The memory read bandwidth is measured in the same run and the decode roofline
//! fraction (bytes read per token ÷ bandwidth) is printed beside the table. `--head-type`
//! takes a list: each model is loaded once per head type, and the generation speed of every
//! quantized head is printed as a ratio to the `file` head's, from the same run.
//!
//! `--batched` runs llama-batched-bench's test instead (see [`super::bench_batched`]).
//! `--temp T` (a list) adds tg tests that sample each next token from the logits with
//! temperature `T` (and `--top-k`, `--top-p`), timing the sampling apart, and prints its cost
//! as a share of the decode step.

use crate::args::HeadTypeArg;
use crate::error::{CliError, CliResult};
use crate::model_source;
use bitnet_backend::bandwidth::{self, BandwidthReport};
use bitnet_backend::gguf::GgmlType;
use bitnet_candle::{BareModel, HeadType, KvDtype, LoadOptions, Logits, Sampler, SamplingParams};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF files or hub repo ids [default: the built-in synthetic 2B4T-shaped model].
    #[arg(short = 'm', long = "model", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Prompt lengths to test (pp), comma-separated; 0 skips.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (tg), comma-separated; 0 skips.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Thread counts to test, comma-separated [default: every available CPU].
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Md)]
    pub output: OutputFormat,
    /// LM head / embedding type of the built-in synthetic model.
    #[arg(long = "synthetic-embedding", value_enum, default_value_t = SyntheticEmbedding::F16)]
    pub synthetic_embedding: SyntheticEmbedding,
    /// Ternary weight type of the built-in synthetic model.
    #[arg(long = "synthetic-type", value_enum, default_value_t = SyntheticTernary::I2S)]
    pub synthetic_type: SyntheticTernary,
    /// Skip the memory bandwidth measurement.
    #[arg(long = "no-bandwidth")]
    pub no_bandwidth: bool,
    /// Benchmark many sequences decoded together, like llama-batched-bench (uses -npp, -ntg,
    /// -npl, -pps, -c, -b; the first -t value).
    #[arg(long)]
    pub batched: bool,
    /// --batched: prompt tokens per sequence, comma-separated (also `-npp`).
    #[arg(long = "npp", value_delimiter = ',', default_value = "128")]
    pub npp: Vec<usize>,
    /// --batched: tokens generated per sequence, comma-separated (also `-ntg`).
    #[arg(long = "ntg", value_delimiter = ',', default_value = "128")]
    pub ntg: Vec<usize>,
    /// --batched: numbers of sequences decoded together, comma-separated (also `-npl`).
    #[arg(long = "npl", value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub npl: Vec<usize>,
    /// --batched: all sequences share one prompt, read once and copied (also `-pps`).
    #[arg(long = "pps")]
    pub pps: bool,
    /// --batched: KV cache positions shared by the sequences [default: enough for every test].
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// --batched: most tokens in one forward pass (the prompt chunk).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch_size: usize,
    /// LM head storage types to test, comma-separated (see `run --help`).
    #[arg(
        long = "head-type",
        value_enum,
        value_delimiter = ',',
        default_value = "file"
    )]
    pub head_types: Vec<HeadTypeArg>,
    /// Where the model runs: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long = "device", default_value = "cpu")]
    pub device: String,
    /// Also run the tg tests sampling each token at these temperatures (0 = greedy), timing
    /// the sampling; comma-separated.
    #[arg(long = "temp", value_delimiter = ',')]
    pub temps: Vec<f32>,
    /// Top-k of the sampled tg tests (0 = the whole vocabulary).
    #[arg(long = "top-k", default_value_t = 0)]
    pub top_k: usize,
    /// Top-p of the sampled tg tests (1.0 = disabled).
    #[arg(long = "top-p", default_value_t = 1.0)]
    pub top_p: f32,
}

/// llama.cpp spells some multi-letter flags with one dash (`-npp 128`); clap needs two.
pub fn llama_style_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(flag @ ("-npp" | "-ntg" | "-npl" | "-pps")) => format!("-{flag}").into(),
            _ => a,
        })
        .collect()
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Md,
    Json,
    /// One JSON record per line.
    Jsonl,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticEmbedding {
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q6_k")]
    Q6K,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticTernary {
    #[value(name = "i2_s")]
    I2S,
    #[value(name = "tq2_0")]
    Tq2_0,
    #[value(name = "tq1_0")]
    Tq1_0,
}

/// One result row, with llama-bench's JSON field names.
#[derive(Serialize, Debug, Clone)]
pub struct Record {
    pub build_commit: &'static str,
    pub cpu_info: String,
    pub backends: &'static str,
    pub kernel: String,
    pub model_filename: String,
    pub model_type: String,
    pub model_size: u64,
    pub model_n_params: u64,
    pub n_threads: usize,
    pub type_k: &'static str,
    pub type_v: &'static str,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub test_time: String,
    pub avg_ns: u64,
    pub stddev_ns: u64,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub samples_ns: Vec<u64>,
    pub samples_ts: Vec<f64>,
    /// Bytes of weights one decode step reads.
    pub weight_bytes_per_token: u64,
    /// `--head-type` of this record (`file`, `q8_0`, `q6_k`, `q4_0`).
    pub head_type: String,
    /// Sampled tg tests: the sampling settings and the mean sampling time per token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingRecord>,
}

/// What a sampled tg test adds to its record.
#[derive(Serialize, Debug, Clone)]
pub struct SamplingRecord {
    pub temp: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// Vocabulary size (the logits sampled from).
    pub n_vocab: usize,
    /// Mean time to choose one token (the sampler alone).
    pub sample_avg_ns: u64,
    /// The sampler's share of a whole decode step (forward and sampling).
    pub sample_share: f64,
}

/// Decode roofline for one thread count: the read bandwidth probe's passes before and after
/// the tests (the machine's bandwidth drifts while other work shares it, so the roofline is the
/// median of both probes' passes).
struct Roofline {
    n_threads: usize,
    probes: Option<BandwidthReport>,
}

impl Roofline {
    fn probe(&mut self, when: &str) {
        let r = bandwidth::measure_read_bandwidth_with(
            self.n_threads,
            bandwidth::DEFAULT_BYTES,
            bandwidth::DEFAULT_PASSES,
        );
        eprintln!(
            "memory read bandwidth, {} threads, {when}: {:.1} GB/s",
            self.n_threads,
            r.median_gb_s()
        );
        match &mut self.probes {
            Some(all) => all.passes_gb_s.extend(r.passes_gb_s),
            None => self.probes = Some(r),
        }
    }

    fn bandwidth_gb_s(&self) -> f64 {
        self.probes
            .as_ref()
            .map_or(0.0, BandwidthReport::median_gb_s)
    }
}

pub fn run(args: &BenchArgs) -> CliResult {
    if args.repetitions == 0 {
        return Err(CliError::Usage("-r must be at least 1".into()));
    }
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) {
        return Err(CliError::Usage("-t values must be at least 1".into()));
    }
    let device = bitnet_candle::parse_device(&args.device)?;
    // The CPU read bandwidth says nothing about a GPU run.
    let no_bandwidth = args.no_bandwidth || !device.is_cpu();
    let samplings = args
        .temps
        .iter()
        .map(|&temperature| {
            let params = SamplingParams {
                temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                ..SamplingParams::default()
            };
            params
                .validate()
                .map(|()| params)
                .map_err(|e| CliError::Usage(format!("--temp/--top-k/--top-p: {e}")))
        })
        .collect::<CliResult<Vec<_>>>()?;

    // Kept alive until the end: the synthetic model's file lives in it.
    let mut _synthetic_dir = None;
    let sources: Vec<model_source::Source> = if args.models.is_empty() {
        let dir = tempfile::tempdir().map_err(|e| CliError::Io {
            what: "create temporary folder",
            path: std::env::temp_dir(),
            source: e,
        })?;
        let path = dir.path().join("synthetic-2b4t.gguf");
        write_synthetic(&path, args)?;
        _synthetic_dir = Some(dir);
        vec![model_source::Source::Gguf(path)]
    } else {
        args.models
            .iter()
            .map(|m| model_source::resolve(m, false))
            .collect::<CliResult<_>>()?
    };

    if args.batched {
        if !device.is_cpu() {
            return Err(CliError::Usage(format!(
                "--batched measures the CPU's batched engine; a model on {} serves one sequence \
                 per cache (drop --device or --batched)",
                args.device
            )));
        }
        return run_batched(args, &sources, threads[0]);
    }
    let mut records = Vec::new();
    let mut rooflines = Vec::new();
    if !no_bandwidth {
        for &t in &threads {
            let mut roof = Roofline {
                n_threads: t,
                probes: None,
            };
            roof.probe("before the tests");
            rooflines.push(roof);
        }
    }
    for (source, head) in sources
        .iter()
        .flat_map(|s| args.head_types.iter().map(move |&h| (s, HeadType::from(h))))
    {
        // Weights only: benchmarking needs no tokenizer, so a file whose vocabulary is missing
        // or unsupported still runs.
        let options = LoadOptions {
            head_type: head,
            device: device.clone(),
            ..LoadOptions::default()
        };
        let model = source.load_bare(&options)?;
        let path = &source.path();
        let loaded = Loaded {
            model: &model,
            path,
            head,
        };
        let done = |what: String, t: usize| {
            if args.output == OutputFormat::Md {
                eprintln!("done: {what}, {t} threads, head {head}");
            }
        };
        for &t in &threads {
            bitnet_backend::threads::set_num_threads(t);
            for &n in args.n_prompt.iter().filter(|&&n| n > 0) {
                records.push(measure(&loaded, t, n, 0, args.repetitions, None)?);
                done(format!("pp{n}"), t);
            }
            for &n in args.n_gen.iter().filter(|&&n| n > 0) {
                records.push(measure(&loaded, t, 0, n, args.repetitions, None)?);
                done(format!("tg{n}"), t);
                for sampling in &samplings {
                    let r = measure(&loaded, t, 0, n, args.repetitions, Some(sampling))?;
                    done(test_name(&r), t);
                    records.push(r);
                }
            }
        }
    }

    for roof in &mut rooflines {
        roof.probe("after the tests");
    }

    match args.output {
        OutputFormat::Md => {
            print!("{}", markdown(&records));
            print!("{}", roofline_notes(&records, &rooflines));
            print!("{}", sampling_notes(&records));
        }
        OutputFormat::Json | OutputFormat::Jsonl => {
            print_json(&records, args.output)?;
            eprint!("{}", roofline_notes(&records, &rooflines));
            eprint!("{}", sampling_notes(&records));
        }
    }
    Ok(())
}

/// Records as one JSON array (`json`) or one record per line (`jsonl`).
fn print_json<T: Serialize>(records: &[T], format: OutputFormat) -> CliResult {
    let encode = |r: Result<String, serde_json::Error>| {
        r.map_err(|e| CliError::Usage(format!("cannot encode results as JSON: {e}")))
    };
    match format {
        OutputFormat::Jsonl => {
            for r in records {
                println!("{}", encode(serde_json::to_string(r))?);
            }
        }
        _ => println!("{}", encode(serde_json::to_string_pretty(records))?),
    }
    Ok(())
}

fn run_batched(args: &BenchArgs, sources: &[model_source::Source], n_threads: usize) -> CliResult {
    let head_type = match args.head_types.as_slice() {
        [one] => HeadType::from(*one),
        _ => {
            return Err(CliError::Usage(
                "--batched takes one --head-type (its table has no head column)".into(),
            ))
        }
    };
    bitnet_backend::threads::set_num_threads(n_threads);
    let options = LoadOptions {
        head_type,
        ..LoadOptions::default()
    };
    let mut records = Vec::new();
    for source in sources {
        // The scheduler stops at end-of-generation tokens, so it needs the vocabulary.
        let model = source.load(&options)?;
        records.extend(super::bench_batched::run_model(
            &model,
            &source.path(),
            args,
            n_threads,
        )?);
    }
    match args.output {
        OutputFormat::Md => print!("{}", super::bench_batched::markdown(&records)),
        format => print_json(&records, format)?,
    }
    Ok(())
}

fn write_synthetic(path: &Path, args: &BenchArgs) -> CliResult {
    use bitnet_candle::synthetic::{write_synthetic_gguf, SyntheticSpec};
    let start = Instant::now();
    let spec = SyntheticSpec {
        embedding_type: match args.synthetic_embedding {
            SyntheticEmbedding::F16 => GgmlType::F16,
            SyntheticEmbedding::Q8_0 => GgmlType::Q8_0,
            SyntheticEmbedding::Q6K => GgmlType::Q6_K,
        },
        ternary_type: match args.synthetic_type {
            SyntheticTernary::I2S => GgmlType::I2S,
            SyntheticTernary::Tq2_0 => GgmlType::TQ2_0,
            SyntheticTernary::Tq1_0 => GgmlType::TQ1_0,
        },
        ..SyntheticSpec::bitnet_2b4t()
    };
    write_synthetic_gguf(path, &spec)?;
    eprintln!(
        "generated a BitNet b1.58 2B4T-shaped model with random ternary weights in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fixed pseudo-random token ids (no sampling in benchmarks).
pub fn bench_tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n_vocab as u64) as u32
        })
        .collect()
}

/// One loaded model under test: what every record of it shares.
#[derive(Clone, Copy)]
struct Loaded<'a> {
    model: &'a BareModel,
    path: &'a Path,
    head: HeadType,
}

/// Runs one test `repetitions` times after a warm-up. With `sampling`, each generated token
/// is sampled from the previous step's logits (the sampler timed apart) instead of taken from
/// the fixed list.
fn measure(
    loaded: &Loaded,
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    repetitions: usize,
    sampling: Option<&SamplingParams>,
) -> CliResult<Record> {
    let Loaded { model, path, head } = *loaded;
    let n_ctx = (n_prompt + n_gen).max(1);
    let weights = model.weights();
    let mut cache = weights.new_cache(n_ctx, KvDtype::F32)?;
    let tokens = bench_tokens(n_ctx, weights.config().n_vocab);
    let mut sampler = sampling.map(|p| Sampler::new(p.clone())).transpose()?;
    let mut run_once = || -> CliResult<(u64, u64)> {
        cache.reset();
        let mut sample_ns = 0u64;
        let start = Instant::now();
        if n_prompt > 0 {
            weights.forward(&mut cache, &tokens[..n_prompt], 0, Logits::Last)?;
        }
        let mut history: Vec<u32> = tokens.get(n_prompt).copied().into_iter().collect();
        for i in 0..n_gen {
            let token = history[i];
            let logits = weights.forward(&mut cache, &[token], n_prompt + i, Logits::Last)?;
            let next = match sampler.as_mut() {
                Some(sampler) => {
                    let logits = logits
                        .to_vec1::<f32>()
                        .map_err(bitnet_candle::Error::from)?;
                    let t = Instant::now();
                    let next = sampler.sample(&logits, &history)?;
                    sample_ns += t.elapsed().as_nanos() as u64;
                    next
                }
                None => tokens.get(n_prompt + i + 1).copied().unwrap_or(0),
            };
            history.push(next);
        }
        // A GPU runs the steps asynchronously: the time is up only when they are done.
        model
            .device()
            .synchronize()
            .map_err(bitnet_candle::Error::from)?;
        Ok((start.elapsed().as_nanos() as u64, sample_ns))
    };
    run_once()?; // warm-up
    let runs: Vec<(u64, u64)> = (0..repetitions)
        .map(|_| run_once())
        .collect::<CliResult<_>>()?;
    let samples_ns: Vec<u64> = runs.iter().map(|r| r.0).collect();
    let n_tokens = (n_prompt + n_gen) as f64;
    let samples_ts: Vec<f64> = samples_ns
        .iter()
        .map(|&ns| n_tokens * 1e9 / ns as f64)
        .collect();
    let (avg_ns, stddev_ns) =
        mean_stddev(&samples_ns.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let (avg_ts, stddev_ts) = mean_stddev(&samples_ts);
    let sampling = sampling.map(|p| {
        let sample_total: u64 = runs.iter().map(|r| r.1).sum();
        let step_total: u64 = runs.iter().map(|r| r.0).sum();
        SamplingRecord {
            temp: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            n_vocab: weights.config().n_vocab,
            sample_avg_ns: sample_total / (runs.len() * n_gen).max(1) as u64,
            sample_share: sample_total as f64 / step_total.max(1) as f64,
        }
    });
    Ok(Record {
        build_commit: env!("CARGO_PKG_VERSION"),
        cpu_info: cpu_name(),
        backends: if model.device().is_cuda() {
            "CUDA"
        } else {
            "CPU"
        },
        kernel: format!("{:?}", bitnet_backend::kernels::selected()),
        model_filename: path.display().to_string(),
        model_type: model.description(),
        model_size: model.file_size(),
        model_n_params: model.weights().n_params(),
        n_threads,
        type_k: "f32",
        type_v: "f32",
        n_prompt,
        n_gen,
        test_time: now_rfc3339(),
        avg_ns: avg_ns as u64,
        stddev_ns: stddev_ns as u64,
        avg_ts,
        stddev_ts,
        samples_ns,
        samples_ts,
        weight_bytes_per_token: model.weights().weight_bytes_per_token() as u64,
        head_type: head.name().to_string(),
        sampling,
    })
}

/// One line per sampled test: the sampler's time per token and its share of a decode step.
fn sampling_notes(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        let Some(s) = &r.sampling else { continue };
        out.push_str(&format!(
            "\n{} with {} threads: sampling (temp {}, top-k {}, top-p {}, {} tokens) takes {:.3} ms per token = {:.2}% of a decode step",
            test_name(r),
            r.n_threads,
            s.temp,
            s.top_k,
            s.top_p,
            s.n_vocab,
            s.sample_avg_ns as f64 / 1e6,
            100.0 * s.sample_share
        ));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Mean and sample standard deviation (0 for one sample), as llama-bench reports them.
pub fn mean_stddev(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn test_name(r: &Record) -> String {
    let name = match (r.n_prompt, r.n_gen) {
        (p, 0) => format!("pp{p}"),
        (0, g) => format!("tg{g}"),
        (p, g) => format!("pp{p}+tg{g}"),
    };
    match &r.sampling {
        Some(s) => format!("{name} temp {}", s.temp),
        None => name,
    }
}

/// llama-bench's markdown table.
pub fn markdown(records: &[Record]) -> String {
    let mut out = String::new();
    out.push_str("| model                          |       size |     params | backend    | threads |            test |                  t/s |\n");
    out.push_str("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: |\n");
    for r in records {
        let model = match r.head_type.as_str() {
            "file" => r.model_type.clone(),
            head => format!("{}, head {head}", r.model_type),
        };
        out.push_str(&format!(
            "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |\n",
            model,
            format!("{:.2} GiB", r.model_size as f64 / (1u64 << 30) as f64),
            format!("{:.2} B", r.model_n_params as f64 / 1e9),
            match r.backends {
                "CPU" => format!("CPU {}", r.kernel.to_lowercase()),
                other => other.to_owned(),
            },
            r.n_threads,
            test_name(r),
            format!("{:.2} ± {:.2}", r.avg_ts, r.stddev_ts),
        ));
    }
    out
}

fn roofline_notes(records: &[Record], rooflines: &[Roofline]) -> String {
    let mut out = String::new();
    for r in records
        .iter()
        .filter(|r| r.n_prompt == 0 && r.n_gen > 0 && r.sampling.is_none())
    {
        let Some(roof) = rooflines.iter().find(|x| x.n_threads == r.n_threads) else {
            continue;
        };
        let gb_per_token = r.weight_bytes_per_token as f64 / 1e9;
        let roof_ts = roof.bandwidth_gb_s() / gb_per_token;
        out.push_str(&format!(
            "\n{} with {} threads, head {}: {:.1} tok/s × {:.3} GB/token = {:.1} GB/s of {:.1} GB/s measured read bandwidth (median of the probes before and after the tests; {:.0}% of the {:.1} tok/s roofline)",
            test_name(r),
            r.n_threads,
            r.head_type,
            r.avg_ts,
            gb_per_token,
            r.avg_ts * gb_per_token,
            roof.bandwidth_gb_s(),
            100.0 * r.avg_ts / roof_ts,
            roof_ts
        ));
    }
    for r in records
        .iter()
        .filter(|r| r.n_gen > 0 && r.head_type != "file")
    {
        let file = records.iter().find(|f| {
            f.head_type == "file"
                && f.model_filename == r.model_filename
                && (f.n_prompt, f.n_gen, f.n_threads) == (r.n_prompt, r.n_gen, r.n_threads)
        });
        if let Some(f) = file {
            out.push_str(&format!(
                "\n{} with {} threads: head {} is {:.2}× head file ({:.1} vs {:.1} tok/s)",
                test_name(r),
                r.n_threads,
                r.head_type,
                r.avg_ts / f.avg_ts,
                r.avg_ts,
                f.avg_ts
            ));
        }
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// UTC time in RFC 3339 (llama-bench's `test_time`), without a date crate.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_stddev() {
        let (m, s) = mean_stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m - 5.0).abs() < 1e-12);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_stddev(&[3.0]), (3.0, 0.0));
    }

    #[test]
    fn bench_tokens_are_in_vocab_and_deterministic() {
        let a = bench_tokens(1000, 321);
        assert!(a.iter().all(|&t| t < 321));
        assert_eq!(a, bench_tokens(1000, 321));
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 100);
    }

    #[test]
    fn rfc3339_shape() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
