//! The GPU device check (`tests/cuda/device-check.sh` runs it on the lent machine; feature `cuda`).
//!
//! ```text
//! cuda_check --out report.json [--sections op,model,fixtures,bench] [--model 2b4t.gguf]
//!            [--fixtures tests/fixtures] [--tg 128] [--pp 512]
//! ```
//! Sections, each continuing past failures (recorded in the report):
//! - `op`: `TernaryMatMul` on CUDA against the CPU op, 2B4T and random shapes, 1..512 tokens,
//!   concatenated and output-scaled ops: bit-exact element counts and max |Δ|.
//! - `model`: a 2B4T-shaped synthetic model on CPU and CUDA: prompt logits, greedy tokens, and the
//!   three CUDA decode modes (graph, eager, tensor) against each other.
//! - `fixtures`: the transformers fixtures converted to I2_S, on CUDA, against transformers'
//!   logits and greedy tokens and against the CPU.
//! - `bench`: copy bandwidth, ternary GEMV over a whole decode step's weights (eager and graph),
//!   Candle's F16 matmul on the same shapes, per-op overhead, GEMM rate, tg and pp.
//!
//! Exits 0 when the CUDA device opened (the report says what passed), 2 when it did not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bitnet_candle::cuda_bench::{copy_gb_s, ternary_products};
use bitnet_candle::{
    BitLinear, Device, GenerationParams, KvDtype, LoadOptions, Model, Session, TernaryMatMul,
};
use candle_core::{DType, Module, Tensor};
use serde_json::{json, Value};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    out: PathBuf,
    sections: Vec<String>,
    model: Option<PathBuf>,
    fixtures: PathBuf,
    tg: usize,
    pp: usize,
}

fn args() -> Args {
    let mut a = Args {
        out: "cuda-check.json".into(),
        sections: ["op", "model", "fixtures", "bench"]
            .map(String::from)
            .to_vec(),
        model: None,
        fixtures: "tests/fixtures".into(),
        tg: 128,
        pp: 512,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = argv[i + 1].clone();
        match argv[i].as_str() {
            "--out" => a.out = v.into(),
            "--sections" => a.sections = v.split(',').map(String::from).collect(),
            "--model" => a.model = Some(v.into()),
            "--fixtures" => a.fixtures = v.into(),
            "--tg" => a.tg = v.parse().unwrap_or(128),
            "--pp" => a.pp = v.parse().unwrap_or(512),
            other => eprintln!("cuda_check: ignoring unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn ternary(&mut self) -> i8 {
        (self.next() % 3) as i8 - 1
    }
}

fn ternary_layer(rng: &mut Rng, rows: usize, cols: usize) -> Res<BitLinear> {
    let codes: Vec<f32> = (0..rows * cols).map(|_| f32::from(rng.ternary())).collect();
    let t = Tensor::from_vec(codes, (rows, cols), &Device::Cpu)?;
    Ok(BitLinear::from_ternary(&t, 0.01 + rng.uniform())?)
}

/// Activations with per-token magnitudes from 1e-3 to 1e3, a few exact .5 ties after scaling.
fn activations(rng: &mut Rng, tokens: usize, cols: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(tokens * cols);
    for t in 0..tokens {
        let mag = 10f32.powf(rng.uniform() * 6.0 - 3.0);
        for c in 0..cols {
            x.push((rng.uniform() * 2.0 - 1.0) * mag);
            if t % 3 == 0 && c < 3 {
                // absmax 127 makes the scale exactly 1: 2.5 and -3.5 are ties.
                x[t * cols + c] = [127.0, 2.5, -3.5][c];
            }
        }
    }
    x
}

/// Bitwise-equal count, max |Δ| and max |Δ| / max |ref| of two outputs.
fn compare(got: &[f32], want: &[f32]) -> Value {
    let exact = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() == b.to_bits())
        .count();
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = want
        .iter()
        .map(|v| v.abs())
        .fold(0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let nan = got.iter().filter(|v| !v.is_finite()).count();
    json!({
        "elements": want.len(),
        "bit_exact": exact,
        "all_bit_exact": exact == want.len() && got.len() == want.len(),
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / scale,
        "non_finite": nan,
    })
}

fn op_case(layer: &BitLinear, rng: &mut Rng, tokens: usize, gpu: &Device) -> Res<Value> {
    let cols = layer.in_features();
    let x = activations(rng, tokens, cols);
    let xc = Tensor::from_vec(x.clone(), (tokens, cols), &Device::Cpu)?;
    let want = layer.forward(&xc)?.flatten_all()?.to_vec1::<f32>()?;
    let xg = Tensor::from_vec(x, (tokens, cols), gpu)?;
    let start = Instant::now();
    let got = layer.forward(&xg)?.flatten_all()?.to_vec1::<f32>()?;
    let mut v = compare(&got, &want);
    v["rows"] = json!(layer.out_features());
    v["cols"] = json!(cols);
    v["tokens"] = json!(tokens);
    v["kernel"] = json!(
        match (tokens <= 8, std::env::var("BITNET_CUDA_GEMM").as_deref()) {
            (true, _) => "gemv-dp4a",
            (false, Ok("dp4a")) => "gemv-dp4a (fallback)",
            (false, _) => "gemm-mma",
        }
    );
    v["first_call_ms"] = json!(start.elapsed().as_secs_f64() * 1e3);
    Ok(v)
}

fn section_op(gpu: &Device) -> Res<Value> {
    let mut rng = Rng(0x0b17_5eed);
    let mut cases = Vec::new();
    let shapes_2b4t = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)];
    let random = [(1, 128), (17, 384), (100, 1000), (64, 256), (333, 1280)];
    for (rows, cols) in shapes_2b4t.iter().chain(&random) {
        let layer = ternary_layer(&mut rng, *rows, *cols)?;
        let tokens: &[usize] = if *cols >= 2560 {
            &[1, 2, 8, 9, 64, 100, 512]
        } else {
            &[1, 3, 8, 9, 33, 130]
        };
        for &t in tokens {
            cases.push(op_case(&layer, &mut rng, t, gpu).unwrap_or_else(
                |e| json!({"rows": rows, "cols": cols, "tokens": t, "error": e.to_string()}),
            ));
        }
    }
    // A concatenated op (q, k, v) and an output-scaled one.
    let (q, k, v) = (
        ternary_layer(&mut rng, 256, 512)?,
        ternary_layer(&mut rng, 64, 512)?,
        ternary_layer(&mut rng, 64, 512)?,
    );
    let cat = TernaryMatMul::concat(&[q.op(), k.op(), v.op()])?;
    let scaled = ternary_layer(&mut rng, 96, 384)?.with_output_scale(0.37);
    for tokens in [1, 5, 70] {
        let x = activations(&mut rng, tokens, 512);
        let xc = Tensor::from_vec(x.clone(), (tokens, 512), &Device::Cpu)?;
        let xg = Tensor::from_vec(x, (tokens, 512), gpu)?;
        let want = xc.apply_op1_no_bwd(&cat)?.flatten_all()?.to_vec1::<f32>()?;
        let got = xg.apply_op1_no_bwd(&cat)?.flatten_all()?.to_vec1::<f32>()?;
        let mut c = compare(&got, &want);
        c["case"] = json!("concat q/k/v 256+64+64 x 512");
        c["tokens"] = json!(tokens);
        cases.push(c);
        let x = activations(&mut rng, tokens, 384);
        let want = scaled
            .forward(&Tensor::from_vec(x.clone(), (tokens, 384), &Device::Cpu)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let got = scaled
            .forward(&Tensor::from_vec(x, (tokens, 384), gpu)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut c = compare(&got, &want);
        c["case"] = json!("output scale 0.37, 96 x 384");
        c["tokens"] = json!(tokens);
        cases.push(c);
    }
    let all_exact = cases.iter().all(|c| c["all_bit_exact"] == json!(true));
    let worst = cases
        .iter()
        .filter_map(|c| c["max_rel_diff"].as_f64())
        .fold(0f64, f64::max);
    Ok(json!({"cases": cases, "all_bit_exact": all_exact, "worst_max_rel_diff": worst}))
}

fn synthetic_model(path: Option<&Path>) -> Res<PathBuf> {
    if let Some(p) = path {
        if p.exists() {
            return Ok(p.to_path_buf());
        }
    }
    let p = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("bitnet-2b4t-synthetic.gguf"));
    let start = Instant::now();
    bitnet_candle::synthetic::write_2b4t_like_gguf(&p, bitnet_backend::gguf::GgmlType::F16)?;
    eprintln!(
        "cuda_check: wrote {} in {:.1} s",
        p.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(p)
}

fn bench_tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| (rng.next() % n_vocab as u64) as u32)
        .collect()
}

fn row_ratios(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f64, usize) {
    let mut worst = 0f64;
    let mut argmax_equal = 0;
    for (g, w) in got.iter().zip(want) {
        let v = compare(g, w);
        worst = worst.max(v["max_rel_diff"].as_f64().unwrap_or(f64::INFINITY));
        argmax_equal += usize::from(argmax(g) == argmax(w));
    }
    (worst, argmax_equal)
}

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

/// Greedy continuation of `prompt` by `n` single-token steps; logits of every step.
fn greedy(model: &Model, prompt: &[u32], n: usize) -> Res<(Vec<u32>, Vec<Vec<f32>>)> {
    let mut cache = model.new_cache(prompt.len() + n + 1, KvDtype::F32)?;
    let mut logits = model.forward(&mut cache, prompt, 0)?.to_vec1::<f32>()?;
    let (mut out, mut all) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = argmax(&logits) as u32;
        out.push(t);
        all.push(logits);
        logits = model
            .forward(&mut cache, &[t], prompt.len() + i)?
            .to_vec1::<f32>()?;
    }
    Ok((out, all))
}

fn set_decode(mode: &str) {
    std::env::set_var("BITNET_CUDA_DECODE", mode);
}

fn section_model(path: &Path, gpu: &Device) -> Res<Value> {
    let cpu = Model::load(path, &LoadOptions::default())?;
    let start = Instant::now();
    let cuda = Model::load(
        path,
        &LoadOptions {
            device: gpu.clone(),
            ..Default::default()
        },
    )?;
    let load_s = start.elapsed().as_secs_f64();
    let prompt = bench_tokens(24, cpu.n_vocab(), 7);
    let mut c1 = cpu.new_cache(64, KvDtype::F32)?;
    let mut c2 = cuda.new_cache(64, KvDtype::F32)?;
    let want: Vec<Vec<f32>> = cpu.forward_all(&mut c1, &prompt, 0)?.to_vec2()?;
    let got: Vec<Vec<f32>> = cuda.forward_all(&mut c2, &prompt, 0)?.to_vec2()?;
    let (prompt_worst, prompt_argmax) = row_ratios(&got, &want);
    let n = 24;
    let (cpu_tokens, cpu_logits) = greedy(&cpu, &prompt[..8], n)?;
    let mut modes = serde_json::Map::new();
    let mut mode_logits = Vec::new();
    for mode in ["graph", "eager", "tensor"] {
        set_decode(mode);
        let (tokens, logits) = greedy(&cuda, &prompt[..8], n)?;
        let equal = tokens
            .iter()
            .zip(&cpu_tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let (worst, _) = row_ratios(
            &logits[..equal.clamp(1, logits.len())],
            &cpu_logits[..equal.clamp(1, logits.len())],
        );
        modes.insert(mode.into(), json!({"tokens": tokens, "equal_prefix_with_cpu": equal, "max_rel_diff_vs_cpu_on_equal_prefix": worst}));
        mode_logits.push(logits);
    }
    set_decode("graph");
    let same = |a: &Vec<Vec<f32>>, b: &Vec<Vec<f32>>| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| x.to_bits() == y.to_bits())
    };
    let mut cache = cuda.new_cache(8, KvDtype::F32)?;
    cuda.forward(&mut cache, &prompt[..1], 0)?;
    let graph_error = cuda.weights().cuda_graph_error(&cache);
    Ok(json!({
        "load_seconds": load_s,
        "prompt_tokens": prompt.len(),
        "prompt_worst_row_max_rel_diff": prompt_worst,
        "prompt_argmax_equal_rows": prompt_argmax,
        "cpu_greedy_tokens": cpu_tokens,
        "cuda_modes": modes,
        "graph_equals_eager_bitwise": same(&mode_logits[0], &mode_logits[1]),
        "graph_equals_tensor_bitwise": same(&mode_logits[0], &mode_logits[2]),
        "graph_error": graph_error,
    }))
}

fn section_fixtures(dir: &Path, gpu: &Device) -> Res<Value> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("reference.json").exists())
        .collect();
    names.sort();
    for fixture in names {
        let name = fixture
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        out.push(
            check_fixture(&fixture, gpu)
                .unwrap_or_else(|e| json!({"fixture": name.clone(), "error": e.to_string()})),
        );
        let last = out.last_mut().expect("pushed");
        last["fixture"] = json!(name);
    }
    let ok = out.iter().all(|f| f["pass"] == json!(true));
    Ok(json!({"fixtures": out, "all_pass": ok}))
}

fn check_fixture(dir: &Path, gpu: &Device) -> Res<Value> {
    let reference: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json"))?)?;
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    let prompt = ids(&reference["prompt"]["ids"]);
    let sequence = ids(&reference["sequence_ids"]);
    let new_ids = ids(&reference["generation"]["new_ids"]);
    let vocab = reference["model"]["vocab_size"].as_u64().unwrap_or(0) as usize;
    let bytes = std::fs::read(dir.join("logits.bin"))?;
    let logits: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let rows: Vec<Vec<f32>> = logits
        .chunks_exact(vocab.max(1))
        .map(<[f32]>::to_vec)
        .collect();
    let tmp = tempfile::tempdir()?;
    let gguf = tmp.path().join("fixture-i2_s.gguf");
    let mut opts = bitnet_convert::ConvertOptions::new(dir.to_string_lossy());
    opts.outfile = Some(gguf.clone());
    if reference["model"]["float_dtype_on_disk"] == "float32" {
        opts.token_embedding_type = Some(bitnet_convert::EmbeddingType::F32);
    }
    bitnet_convert::convert(&opts, &bitnet_convert::NoProgress)?;
    let cpu = Model::load(&gguf, &LoadOptions::default())?;
    let cuda = Model::load(
        &gguf,
        &LoadOptions {
            device: gpu.clone(),
            ..Default::default()
        },
    )?;
    let n_rows = sequence.len() - 1;
    let run_all = |m: &Model| -> Res<Vec<Vec<f32>>> {
        let mut c = m.new_cache(sequence.len(), KvDtype::F32)?;
        Ok(m.forward_all(&mut c, &sequence[..n_rows], 0)?.to_vec2()?)
    };
    let (g_all, c_all) = (run_all(&cuda)?, run_all(&cpu)?);
    // The fixture test's bars: prompt rows before the first rounding flip within 1e-3 of
    // max |logit|; every teacher-forced row max |Δ| <= 1.0, median <= 0.5.
    let strict = match reference["checks"]["independent_numpy_f32_first_row_over_1e-3"].as_u64() {
        Some(first) => prompt.len().min(first as usize),
        None => prompt.len(),
    };
    let (strict_ratio, _) = row_ratios(&g_all[..strict], &rows[..strict]);
    let mut row_max: Vec<f32> = g_all
        .iter()
        .zip(&rows)
        .map(|(g, w)| {
            g.iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        })
        .collect();
    let max = row_max.iter().cloned().fold(0f32, f32::max);
    row_max.sort_by(f32::total_cmp);
    let median = row_max[row_max.len() / 2];
    let (vs_cpu, argmax_vs_cpu) = row_ratios(&g_all, &c_all);
    let mut session = Session::new(&cuda, sequence.len() + 1, KvDtype::F32)?;
    let params = GenerationParams {
        max_new_tokens: new_ids.len(),
        ..Default::default()
    };
    let out = session.generate(&prompt, &params, |_| std::ops::ControlFlow::Continue(()))?;
    let equal = out
        .tokens
        .iter()
        .zip(&new_ids)
        .take_while(|(a, b)| a == b)
        .count();
    let pass =
        strict_ratio <= 1e-3 && max <= 1.0 && median <= 0.5 && equal >= 32.min(new_ids.len());
    Ok(json!({
        "strict_rows": strict,
        "strict_max_rel_diff_vs_transformers": strict_ratio,
        "teacher_forced_max_abs_diff": max,
        "teacher_forced_median_abs_diff": median,
        "max_rel_diff_vs_cpu": vs_cpu,
        "argmax_equal_rows_vs_cpu": argmax_vs_cpu,
        "rows": n_rows,
        "greedy_equal_prefix": equal,
        "greedy_reference_len": new_ids.len(),
        "pass": pass,
    }))
}

fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, f64)> {
    let start = Instant::now();
    let v = f()?;
    Ok((v, start.elapsed().as_secs_f64()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn section_bench(
    path: &Path,
    gpu: &Device,
    tg: usize,
    pp: usize,
    out: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    let copy = copy_gb_s(gpu, 1 << 30, 20)?;
    out.insert("copy_gb_s".into(), json!(copy));
    let model = Model::load(
        path,
        &LoadOptions {
            device: gpu.clone(),
            ..Default::default()
        },
    )?;
    let layers = model.weights().ternary_layers();
    let ops: Vec<&TernaryMatMul> = layers.iter().map(|l| l.op()).collect();
    let mut gemv = serde_json::Map::new();
    for graph in [false, true] {
        let t = ternary_products(gpu, &ops, 1, 20, graph)?;
        gemv.insert(
            if graph { "graph" } else { "eager" }.into(),
            json!({"ms_per_step": t.ms, "weight_bytes": t.weight_bytes, "gb_s": t.weight_gb_s(), "fraction_of_copy": t.weight_gb_s() / copy}),
        );
    }
    out.insert("gemv_decode_step_210_matrices".into(), Value::Object(gemv));
    // Candle's F16 matmul on the same 210 shapes, each its own weights.
    let mut f16 = Vec::new();
    for l in &layers {
        f16.push(
            Tensor::randn(0f32, 1.0, (l.out_features(), l.in_features()), gpu)?
                .to_dtype(DType::F16)?,
        );
    }
    let xs: BTreeMap<usize, Tensor> = layers
        .iter()
        .map(|l| l.in_features())
        .map(|k| {
            Ok((
                k,
                Tensor::randn(0f32, 1.0, (1, k), gpu)?.to_dtype(DType::F16)?,
            ))
        })
        .collect::<Res<_>>()?;
    let f16_pass = || -> Res<()> {
        for w in &f16 {
            xs[&w.dim(1)?].matmul(&w.t()?)?;
        }
        Ok(())
    };
    f16_pass()?;
    gpu.synchronize()?;
    let mut f16_times = Vec::new();
    for _ in 0..5 {
        let ((), s) = timed(|| {
            f16_pass()?;
            gpu.synchronize()?;
            Ok(())
        })?;
        f16_times.push(s * 1e3);
    }
    let f16_ms = median(f16_times);
    let f16_bytes: usize = layers
        .iter()
        .map(|l| 2 * l.in_features() * l.out_features())
        .sum();
    // The public op (BitLinear::forward on a CUDA tensor: quantize + GEMV + allocation), eager.
    let xs32: BTreeMap<usize, Tensor> = layers
        .iter()
        .map(|l| l.in_features())
        .map(|k| Ok((k, Tensor::randn(0f32, 1.0, (1, k), gpu)?)))
        .collect::<Res<_>>()?;
    let op_pass = || -> Res<()> {
        for l in &layers {
            l.forward(&xs32[&l.in_features()])?;
        }
        Ok(())
    };
    op_pass()?;
    gpu.synchronize()?;
    let mut op_times = Vec::new();
    for _ in 0..5 {
        let ((), s) = timed(|| {
            op_pass()?;
            gpu.synchronize()?;
            Ok(())
        })?;
        op_times.push(s * 1e3);
    }
    let op_ms = median(op_times);
    out.insert(
        "candle_f16_matmul_210_matrices".into(),
        json!({"ms_per_step": f16_ms, "weight_bytes": f16_bytes, "gb_s": f16_bytes as f64 / (f16_ms * 1e-3) / 1e9,
               "bitlinear_forward_ms_per_step": op_ms, "speedup_bitlinear_vs_f16": f16_ms / op_ms}),
    );
    // Per-op host overhead: a tiny Candle add and a tiny ternary op, 2000 calls each.
    let a = Tensor::ones(16, DType::F32, gpu)?;
    let small = ternary_layer(&mut Rng(3), 64, 128)?;
    let xs = Tensor::ones((1, 128), DType::F32, gpu)?;
    small.forward(&xs)?;
    let ((), add_s) = timed(|| {
        for _ in 0..2000 {
            (&a + &a)?;
        }
        gpu.synchronize()?;
        Ok(())
    })?;
    let ((), op_s) = timed(|| {
        for _ in 0..2000 {
            small.forward(&xs)?;
        }
        gpu.synchronize()?;
        Ok(())
    })?;
    out.insert(
        "overhead_us".into(),
        json!({"candle_add": add_s / 2000.0 * 1e6, "ternary_op_64x128": op_s / 2000.0 * 1e6}),
    );
    // The GEMM alone for pp tokens over every matrix (graph).
    let g = ternary_products(gpu, &ops, pp, 3, true)?;
    out.insert(
        "gemm_prefill_210_matrices".into(),
        json!({"tokens": pp, "ms": g.ms, "tops": g.tera_ops()}),
    );
    // Whole model.
    let tokens = bench_tokens(pp.max(tg) + 1, model.n_vocab(), 11);
    let mut tgs = serde_json::Map::new();
    for (mode, n) in [("graph", tg), ("eager", tg.min(32)), ("tensor", tg.min(32))] {
        set_decode(mode);
        let mut cache = model.new_cache(n + 1, KvDtype::F32)?;
        let mut runs = Vec::new();
        for _ in 0..3 {
            cache.reset();
            let ((), s) = timed(|| {
                for (i, t) in tokens[..n].iter().enumerate() {
                    model.forward(&mut cache, &[*t], i)?;
                }
                gpu.synchronize()?;
                Ok(())
            })?;
            runs.push(n as f64 / s);
        }
        tgs.insert(format!("{mode}_tg{n}_tok_s"), json!(median(runs)));
    }
    set_decode("graph");
    out.insert("tg".into(), Value::Object(tgs));
    let mut cache = model.new_cache(pp, KvDtype::F32)?;
    let mut runs = Vec::new();
    for _ in 0..5 {
        cache.reset();
        let ((), s) = timed(|| {
            model.forward(&mut cache, &tokens[..pp], 0)?;
            gpu.synchronize()?;
            Ok(())
        })?;
        runs.push(pp as f64 / s);
    }
    out.insert(format!("pp{pp}_tok_s"), json!(median(runs)));
    Ok(())
}

fn main() {
    let a = args();
    let mut report = serde_json::Map::new();
    report.insert(
        "env".into(),
        json!({
            "BITNET_CUDA_GEMM": std::env::var("BITNET_CUDA_GEMM").ok(),
            "BITNET_CUDA_DECODE": std::env::var("BITNET_CUDA_DECODE").ok(),
        }),
    );
    let gpu = match bitnet_candle::cuda_device(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cuda_check: no CUDA device: {e}");
            report.insert("device_error".into(), json!(e.to_string()));
            write(&a.out, &report);
            std::process::exit(2);
        }
    };
    let model_path = || synthetic_model(a.model.as_deref());
    for s in a.sections.clone() {
        eprintln!("cuda_check: section {s}");
        let start = Instant::now();
        let result = match s.as_str() {
            "op" => section_op(&gpu),
            "model" => model_path().and_then(|p| section_model(&p, &gpu)),
            "fixtures" => section_fixtures(&a.fixtures, &gpu),
            "bench" => {
                let mut m = serde_json::Map::new();
                let r = model_path().and_then(|p| section_bench(&p, &gpu, a.tg, a.pp, &mut m));
                if let Err(e) = r {
                    m.insert("error".into(), json!(e.to_string()));
                }
                Ok(Value::Object(m))
            }
            other => Err(format!("unknown section {other}").into()),
        };
        let mut v = result.unwrap_or_else(|e| json!({"error": e.to_string()}));
        v["seconds"] = json!(start.elapsed().as_secs_f64());
        eprintln!("cuda_check: {s}: {}", summary(&v));
        report.insert(s, v);
        write(&a.out, &report);
    }
}

/// One line per section for the log.
fn summary(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 1500 {
        s.truncate(1500);
        s.push_str("...");
    }
    s
}

fn write(path: &Path, report: &serde_json::Map<String, Value>) {
    let text = serde_json::to_string_pretty(report).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        eprintln!("cuda_check: cannot write {}", path.display());
    }
}
