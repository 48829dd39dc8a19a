//! Every architecture against an independent f32 reference written here with plain Candle ops.
//!
//! Small synthetic GGUF files (random ternary weights in real layouts) are written with
//! `bitnet_candle::synthetic`, loaded with `Model::load`, and compared with a straightforward
//! implementation of the same maths on weights dequantized by the format decoders
//! (`bitnet_backend::formats`, Candle's `QTensor::dequantize`): per-token int8 fake quantization
//! in float, rope written out by hand, attention with explicitly repeated K/V heads, the whole
//! sequence at once without a cache. The model runs the packed kernels, its own rope, GQA
//! grouping and KV cache, so the two share no code beyond Candle's basic tensor ops.

use std::path::Path;

use bitnet_backend::formats::{i2s, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufFile, TensorInfo};
use bitnet_candle::synthetic::{write_synthetic_gguf, SyntheticSpec};
use bitnet_candle::{Error, KvDtype, LoadOptions, Model, Session};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::{DType, Device, Tensor, D};
use half::f16;

/// Float weights of a model file, as the reference needs them.
struct RefWeights<'a> {
    file: &'a GgufFile,
}

impl RefWeights<'_> {
    fn info(&self, name: &str) -> &TensorInfo {
        self.file
            .tensor(name)
            .unwrap_or_else(|| panic!("missing {name}"))
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// Any supported tensor as f32 with shape [ne1, ne0] (or [ne0] for vectors).
    fn tensor(&self, name: &str) -> Tensor {
        let info = self.info(name);
        let data = self.file.tensor_data(info).unwrap();
        let n = info.n_elements() as usize;
        let values: Vec<f32> = match info.ggml_type {
            GgmlType::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            GgmlType::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            GgmlType::I2S => {
                let (codes, scale) = i2s::unpack(data, n).unwrap();
                codes.iter().map(|&c| c as f32 * scale).collect()
            }
            GgmlType::TQ2_0 => tq2_0::dequantize(data, n).unwrap(),
            GgmlType::TQ1_0 => tq1_0::dequantize(data, n).unwrap(),
            t => {
                let dtype = match t {
                    GgmlType::Q8_0 => GgmlDType::Q8_0,
                    GgmlType::Q6_K => GgmlDType::Q6K,
                    GgmlType::Q4_0 => GgmlDType::Q4_0,
                    other => panic!("reference cannot decode {other:?}"),
                };
                let dims: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
                let q = qtensor_from_ggml(dtype, data, dims, &Device::Cpu).unwrap();
                q.dequantize(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            }
        };
        let dims: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    fn scalar(&self, name: &str) -> Option<f32> {
        self.has(name).then(|| {
            self.tensor(name)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0]
        })
    }
}

#[derive(Clone, Copy)]
enum Rope {
    Neox,
    Interleaved,
}

struct Arch {
    sub_norms: bool,
    relu2: bool,
    rope: Rope,
}

fn arch_of(name: &str) -> Arch {
    match name {
        "bitnet-b1.58" | "bitnet-25" => Arch {
            sub_norms: true,
            relu2: true,
            rope: Rope::Neox,
        },
        "bitnet" => Arch {
            sub_norms: true,
            relu2: false,
            rope: Rope::Neox,
        },
        "llama" => Arch {
            sub_norms: false,
            relu2: false,
            rope: Rope::Interleaved,
        },
        other => panic!("no reference for {other}"),
    }
}

fn rms_norm(x: &Tensor, w: &Tensor) -> Tensor {
    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let inv = (ms + 1e-5).unwrap().sqrt().unwrap().recip().unwrap();
    x.broadcast_mul(&inv).unwrap().broadcast_mul(w).unwrap()
}

/// BitNet's activation quantization, in float: per row, s = 127 / max|x|, round half to even,
/// clamp to [-128, 127], divide by s again.
fn act_quant(x: &Tensor) -> Tensor {
    let (rows, cols) = x.dims2().unwrap();
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut out = Vec::with_capacity(v.len());
    for row in v.chunks(cols) {
        let m = row.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-5);
        let s = 127.0 / m;
        out.extend(
            row.iter()
                .map(|x| (x * s).round_ties_even().clamp(-128.0, 127.0) / s),
        );
    }
    Tensor::from_vec(out, (rows, cols), &Device::Cpu).unwrap()
}

/// `act_quant(x) · Wᵀ`, times the optional projection scale.
fn bit_linear(w: &RefWeights<'_>, name: &str, x: &Tensor) -> Tensor {
    let weight = w.tensor(&format!("{name}.weight"));
    let y = act_quant(x).matmul(&weight.t().unwrap()).unwrap();
    match w.scalar(&format!("{name}.scale")) {
        Some(s) => (y * s as f64).unwrap(),
        None => y,
    }
}

/// Rotates `x` [t, heads, d] at positions 0..t, pair by pair.
fn rope(x: &Tensor, theta: f32, style: Rope) -> Tensor {
    let (t, h, d) = x.dims3().unwrap();
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut out = v.clone();
    for pos in 0..t {
        for head in 0..h {
            let base = (pos * h + head) * d;
            for i in 0..d / 2 {
                let inv = 1.0 / theta.powf((2 * i) as f32 / d as f32);
                let (c, s) = ((pos as f32 * inv).cos(), (pos as f32 * inv).sin());
                let (a, b) = match style {
                    Rope::Neox => (base + i, base + i + d / 2),
                    Rope::Interleaved => (base + 2 * i, base + 2 * i + 1),
                };
                out[a] = v[a] * c - v[b] * s;
                out[b] = v[b] * c + v[a] * s;
            }
        }
    }
    Tensor::from_vec(out, (t, h, d), &Device::Cpu).unwrap()
}

/// Logits [t, vocab] of `tokens` (positions 0..t).
fn reference_logits(path: &Path, tokens: &[u32]) -> Tensor {
    let file = GgufFile::open(path).unwrap();
    let w = RefWeights { file: &file };
    let arch_name = file.architecture().unwrap().to_owned();
    let arch = arch_of(&arch_name);
    let key = |k: &str| format!("{arch_name}.{k}");
    let n_layer = file.get_u32(&key("block_count")).unwrap() as usize;
    let n_head = file.get_u32(&key("attention.head_count")).unwrap() as usize;
    let n_kv = file.get_u32(&key("attention.head_count_kv")).unwrap() as usize;
    let theta = file.get_f32(&key("rope.freq_base")).unwrap();
    let emb = w.tensor("token_embd.weight");
    let (_, e) = emb.dims2().unwrap();
    let d = e / n_head;
    let t = tokens.len();
    let ids = Tensor::new(tokens, &Device::Cpu).unwrap();
    let mut x = emb.index_select(&ids, 0).unwrap();
    let mut mask = vec![0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            mask[i * t + j] = f32::NEG_INFINITY;
        }
    }
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    for l in 0..n_layer {
        let p = |n: &str| format!("blk.{l}.{n}");
        let h = rms_norm(&x, &w.tensor(&p("attn_norm.weight")));
        let q = rope(
            &bit_linear(&w, &p("attn_q"), &h)
                .reshape((t, n_head, d))
                .unwrap(),
            theta,
            arch.rope,
        );
        let k = rope(
            &bit_linear(&w, &p("attn_k"), &h)
                .reshape((t, n_kv, d))
                .unwrap(),
            theta,
            arch.rope,
        );
        let v = bit_linear(&w, &p("attn_v"), &h)
            .reshape((t, n_kv, d))
            .unwrap();
        let mut heads = Vec::new();
        for j in 0..n_head {
            let kv = j / (n_head / n_kv);
            let qj = q.narrow(1, j, 1).unwrap().squeeze(1).unwrap();
            let kj = k.narrow(1, kv, 1).unwrap().squeeze(1).unwrap();
            let vj = v.narrow(1, kv, 1).unwrap().squeeze(1).unwrap();
            let scores = (qj.matmul(&kj.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
            let probs = candle_nn::ops::softmax(&(scores + &mask).unwrap(), D::Minus1).unwrap();
            heads.push(probs.matmul(&vj).unwrap());
        }
        let mut a = Tensor::cat(&heads, 1).unwrap();
        if arch.sub_norms {
            a = rms_norm(&a, &w.tensor(&p("attn_sub_norm.weight")));
        }
        x = (x + bit_linear(&w, &p("attn_output"), &a)).unwrap();
        let h = rms_norm(&x, &w.tensor(&p("ffn_norm.weight")));
        let gate = bit_linear(&w, &p("ffn_gate"), &h);
        let gate = match arch.relu2 {
            true => gate.relu().unwrap().sqr().unwrap(),
            false => (&gate * candle_nn::ops::sigmoid(&gate).unwrap()).unwrap(),
        };
        let mut m = (gate * bit_linear(&w, &p("ffn_up"), &h)).unwrap();
        if arch.sub_norms {
            m = rms_norm(&m, &w.tensor(&p("ffn_sub_norm.weight")));
        }
        x = (x + bit_linear(&w, &p("ffn_down"), &m)).unwrap();
    }
    let x = rms_norm(&x, &w.tensor("output_norm.weight"));
    let head = match w.has("output.weight") {
        true => w.tensor("output.weight"),
        false => emb,
    };
    x.matmul(&head.t().unwrap()).unwrap()
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 13) % (vocab - 3)) as u32)
        .collect()
}

/// Writes `spec`, loads it, and checks all-position logits, cached decoding and greedy
/// generation against the reference. Returns the worst max|Δ| / max|logit| over rows.
fn check(spec: &SyntheticSpec) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    write_synthetic_gguf(&path, spec).unwrap();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(model.architecture(), spec.architecture);
    assert_eq!(model.n_vocab(), spec.n_vocab);
    let toks = tokens(12, spec.n_vocab);
    let want: Vec<Vec<f32>> = reference_logits(&path, &toks).to_vec2().unwrap();

    // Whole sequence in one prefill. Q4_0 and Q6_K heads multiply 8-bit activations, as
    // llama.cpp does; F16/F32/BF16/Q8_0 heads run in float like the reference.
    let float_head = matches!(
        spec.embedding_type,
        GgmlType::F16 | GgmlType::F32 | GgmlType::BF16 | GgmlType::Q8_0
    );
    let tol = if float_head { 1e-3 } else { 2e-2 };
    let mut cache = model.new_cache(32, KvDtype::F32).unwrap();
    let got: Vec<Vec<f32>> = model
        .forward_all(&mut cache, &toks, 0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let mut worst = 0f32;
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max(diff / scale);
        assert!(
            diff <= tol * scale,
            "{}: row {r}: max|Δ| {diff} vs max|logit| {scale}",
            spec.architecture
        );
        if top2_margin(w) > 2.0 * diff {
            assert_eq!(
                argmax(g),
                argmax(w),
                "{}: argmax of row {r}",
                spec.architecture
            );
        }
    }

    // Prefill of 5, then one token at a time through the cache: same logits as one prefill.
    let mut cache = model.new_cache(32, KvDtype::F32).unwrap();
    model.forward(&mut cache, &toks[..5], 0).unwrap();
    for (i, &tok) in toks.iter().enumerate().skip(5) {
        let step: Vec<f32> = model
            .forward(&mut cache, &[tok], i)
            .unwrap()
            .to_vec1()
            .unwrap();
        let diff = step
            .iter()
            .zip(&got[i])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale = got[i].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            diff <= 1e-3 * scale,
            "{}: cached step {i}: {diff}",
            spec.architecture
        );
    }
    // An f16 cache stays close.
    let mut cache = model.new_cache(32, KvDtype::F16).unwrap();
    let half: Vec<Vec<f32>> = model
        .forward_all(&mut cache, &toks, 0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let agree = half
        .iter()
        .zip(&got)
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    assert!(
        agree >= toks.len() - 2,
        "{}: f16 cache argmax agreement {agree}",
        spec.architecture
    );

    // Greedy generation follows the reference argmax of the sequence it builds.
    let mut session = Session::new(&model, 32, KvDtype::F32).unwrap();
    let out = session
        .generate(&toks[..4], &Default::default(), |_| {
            std::ops::ControlFlow::Continue(())
        })
        .map(|g| g.tokens)
        .unwrap();
    let seq: Vec<u32> = toks[..4].iter().chain(&out).copied().take(16).collect();
    let reference: Vec<Vec<f32>> = reference_logits(&path, &seq).to_vec2().unwrap();
    for (i, &t) in out.iter().enumerate().take(seq.len() - 4) {
        let row = &reference[3 + i];
        if float_head || top2_margin(row) > 0.1 {
            assert_eq!(
                t as usize,
                argmax(row),
                "{}: greedy step {i}",
                spec.architecture
            );
        }
    }
    worst
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |b, (i, x)| if *x > v[b] { i } else { b })
}

fn top2_margin(x: &[f32]) -> f32 {
    let best = argmax(x);
    let second = x
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .fold(f32::NEG_INFINITY, |m, (_, v)| m.max(*v));
    x[best] - second
}

#[test]
fn bitnet_b158_i2s_f16_gqa4_matches_reference() {
    let spec = SyntheticSpec {
        n_vocab: 301,
        ..SyntheticSpec::tiny()
    };
    let r = check(&spec);
    eprintln!("bitnet-b1.58 I2_S F16 GQA4: worst ratio {r:.2e}");
}

#[test]
fn bitnet_25_i2s_q4_0_gqa5_untied_matches_reference() {
    let spec = SyntheticSpec {
        architecture: "bitnet-25".into(),
        n_vocab: 333,
        n_embd: 640,
        n_head: 10,
        n_head_kv: 2,
        n_ff: 256,
        embedding_type: GgmlType::Q4_0,
        untied_output: true,
        ..SyntheticSpec::tiny()
    };
    let r = check(&spec);
    eprintln!("bitnet-25 I2_S Q4_0 GQA5 untied: worst ratio {r:.2e}");
}

#[test]
fn bitnet_1bitllm_tq2_0_q8_0_mha_with_scales_matches_reference() {
    let spec = SyntheticSpec {
        architecture: "bitnet".into(),
        n_vocab: 299,
        n_head: 4,
        n_head_kv: 4,
        ternary_type: GgmlType::TQ2_0,
        embedding_type: GgmlType::Q8_0,
        projection_scales: true,
        rope_theta: 10_000.0,
        ..SyntheticSpec::tiny()
    };
    let r = check(&spec);
    eprintln!("bitnet TQ2_0 Q8_0 MHA scales: worst ratio {r:.2e}");
}

#[test]
fn llama_ternary_tq1_0_q6_k_untied_gqa2_matches_reference() {
    let spec = SyntheticSpec {
        architecture: "llama".into(),
        n_vocab: 311,
        n_layer: 3,
        n_head: 4,
        n_head_kv: 2,
        ternary_type: GgmlType::TQ1_0,
        embedding_type: GgmlType::Q6_K,
        untied_output: true,
        rope_theta: 10_000.0,
        ..SyntheticSpec::tiny()
    };
    let r = check(&spec);
    eprintln!("llama TQ1_0 Q6_K GQA2 untied: worst ratio {r:.2e}");
}

#[test]
fn unknown_architecture_and_missing_tensor_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    // A complete file, then the same without one projection.
    let spec = SyntheticSpec::tiny();
    write_synthetic_gguf(&path, &spec).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let mut w = bitnet_backend::gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        let v = match k.as_str() {
            "general.architecture" => "gpt-neox".into(),
            _ => v.clone(),
        };
        w.add(k.clone(), v).unwrap();
    }
    let bad = dir.path().join("neox.gguf");
    let out = w.begin(&bad).unwrap();
    out.finish().unwrap();
    let err = Model::load(&bad, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedArchitecture(ref a) if a == "gpt-neox"),
        "{err}"
    );

    let mut w = bitnet_backend::gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add(k.clone(), v.clone()).unwrap();
    }
    let kept: Vec<&TensorInfo> = file
        .tensors()
        .iter()
        .filter(|t| t.name != "blk.1.ffn_up.weight")
        .collect();
    for t in &kept {
        w.add_tensor(t.name.clone(), &t.dims, t.ggml_type).unwrap();
    }
    let missing = dir.path().join("missing.gguf");
    let mut out = w.begin(&missing).unwrap();
    for t in &kept {
        out.write_tensor(&t.name, file.tensor_data(t).unwrap())
            .unwrap();
    }
    out.finish().unwrap();
    let err = Model::load(&missing, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("blk.1.ffn_up.weight"), "{err}");
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
}

#[test]
fn dtype_of_logits_is_f32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_synthetic_gguf(&path, &SyntheticSpec::tiny()).unwrap();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let mut cache = model.new_cache(8, KvDtype::F32).unwrap();
    let logits = model.forward(&mut cache, &[1, 2, 3], 0).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    assert_eq!(logits.dims(), &[model.n_vocab()]);
    assert!(
        model.description().starts_with("bitnet-b1.58 "),
        "{}",
        model.description()
    );
}

/// The device-generic Candle-ops forward (what runs on a GPU), run on the CPU, against the tuned
/// row path: every architecture's options (sub-norms or not, relu² or silu, NEOX or interleaved
/// RoPE, projection scales, quantized heads), one prefill and then cached single-token steps.
#[test]
fn tensor_path_matches_tuned_path_on_every_architecture() {
    let specs = [
        SyntheticSpec {
            n_vocab: 301,
            ..SyntheticSpec::tiny()
        },
        SyntheticSpec {
            architecture: "bitnet".into(),
            n_vocab: 299,
            n_head: 4,
            n_head_kv: 4,
            ternary_type: GgmlType::TQ2_0,
            embedding_type: GgmlType::Q8_0,
            projection_scales: true,
            ..SyntheticSpec::tiny()
        },
        SyntheticSpec {
            architecture: "llama".into(),
            n_vocab: 311,
            n_head: 4,
            n_head_kv: 2,
            embedding_type: GgmlType::Q6_K,
            untied_output: true,
            ..SyntheticSpec::tiny()
        },
    ];
    for spec in specs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        write_synthetic_gguf(&path, &spec).unwrap();
        let tuned = Model::load(&path, &LoadOptions::default()).unwrap();
        let options = LoadOptions {
            tensor_ops_on_cpu: true,
            ..LoadOptions::default()
        };
        let generic = Model::load(&path, &options).unwrap();
        let toks = tokens(10, spec.n_vocab);
        let run = |m: &Model| -> Vec<Vec<f32>> {
            let mut cache = m.new_cache(16, KvDtype::F32).unwrap();
            let mut rows: Vec<Vec<f32>> = m
                .forward_all(&mut cache, &toks[..6], 0)
                .unwrap()
                .to_vec2()
                .unwrap();
            for (i, &t) in toks.iter().enumerate().skip(6) {
                rows.push(m.forward(&mut cache, &[t], i).unwrap().to_vec1().unwrap());
            }
            rows
        };
        let (want, got) = (run(&tuned), run(&generic));
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "{}: row {r}: max|Δ| {diff} vs max|logit| {scale}",
                spec.architecture
            );
        }
        // A cache of one path does not fit the other.
        let mut cache = tuned.new_cache(16, KvDtype::F32).unwrap();
        assert!(generic.forward(&mut cache, &toks[..1], 0).is_err());
        assert!(
            generic.new_cache(16, KvDtype::F16).is_err(),
            "F16 caches are CPU-path only"
        );
    }
}
