//! Synthetic Hugging Face checkpoints for the converter's tests: every input kind, tiny shapes,
//! random weights, and the ternary codes and scales each projection must come out as.

#![allow(dead_code)]

pub mod sentencepiece_model;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bitnet_backend::formats::{hf_packed, ternarize};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

/// How the seven projections are stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weights {
    /// uint8 `[out/4, in]` + `weight_scale` (bf16); `autobit` says whether scale = β or 1/β.
    Packed { autobit: bool },
    /// Float codes in {-1, 0, 1} + `weight_scale` (autobitlinear).
    FloatCodes,
    /// Float masters without scale, absmean-ternarized by the model (online / 1bitLLM).
    Masters(Dtype),
    /// Float values that are exactly {-β, 0, β}, no scale, no quantization_config.
    ExactTernary,
}

/// The shape and flavour of a synthetic checkpoint.
#[derive(Clone, Debug)]
pub struct Spec {
    pub architecture: &'static str,
    pub act: &'static str,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub inter: usize,
    pub layers: usize,
    pub vocab: usize,
    pub weights: Weights,
    /// `attn_sub_norm`/`ffn_sub_norm`, 1bitLLM's names, or none (Llama).
    pub subnorms: Option<(&'static str, &'static str)>,
    /// Write an untied `lm_head.weight`.
    pub lm_head: bool,
    /// SentencePiece `tokenizer.model` instead of a byte-level BPE `tokenizer.json`.
    pub sentencepiece: bool,
    /// Split the tensors over this many shards (1 = a single model.safetensors).
    pub shards: usize,
    /// Float dtype of embeddings and norms.
    pub float_dtype: Dtype,
    pub seed: u64,
}

impl Spec {
    /// A tiny BitNet b1.58 2B4T-style checkpoint (packed, autobitlinear, ReLU², GQA 2).
    pub fn two_b4t() -> Spec {
        Spec {
            architecture: "BitNetForCausalLM",
            act: "relu2",
            hidden: 256,
            heads: 2,
            kv_heads: 1,
            inter: 512,
            layers: 2,
            vocab: 300,
            weights: Weights::Packed { autobit: true },
            subnorms: Some(("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")),
            lm_head: false,
            sentencepiece: false,
            shards: 1,
            float_dtype: Dtype::BF16,
            seed: 7,
        }
    }

    /// A tiny 1bitLLM-style checkpoint (BitnetForCausalLM, SiLU, f16 masters, SentencePiece).
    pub fn one_bit_llm() -> Spec {
        Spec {
            architecture: "BitnetForCausalLM",
            act: "silu",
            heads: 4,
            kv_heads: 4,
            weights: Weights::Masters(Dtype::F16),
            subnorms: Some(("self_attn.inner_attn_ln", "mlp.ffn_layernorm")),
            sentencepiece: true,
            float_dtype: Dtype::F16,
            vocab: 288,
            seed: 11,
            ..Spec::two_b4t()
        }
    }

    /// A tiny HF1BitLLM-style ternary Llama (packed, bitlinear, untied LM head).
    pub fn llama() -> Spec {
        Spec {
            architecture: "LlamaForCausalLM",
            act: "silu",
            heads: 4,
            kv_heads: 2,
            weights: Weights::Packed { autobit: false },
            subnorms: None,
            lm_head: true,
            seed: 13,
            ..Spec::two_b4t()
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn quantization_config(&self) -> Option<Value> {
        match self.weights {
            Weights::Packed { autobit } => Some(json!({
                "quant_method": "bitnet",
                "linear_class": if autobit { "autobitlinear" } else { "bitlinear" },
                "quantization_mode": "offline"
            })),
            Weights::FloatCodes => {
                Some(json!({"quant_method": "bitnet", "linear_class": "autobitlinear"}))
            }
            Weights::Masters(_) if self.architecture == "BitnetForCausalLM" => None,
            Weights::Masters(_) => Some(json!({
                "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"
            })),
            Weights::ExactTernary => None,
        }
    }

    pub fn config(&self) -> Value {
        let mut c = json!({
            "architectures": [self.architecture],
            "hidden_act": self.act,
            "hidden_size": self.hidden,
            "intermediate_size": self.inter,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "num_hidden_layers": self.layers,
            "vocab_size": self.vocab,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "tie_word_embeddings": !self.lm_head,
            "bos_token_id": 1,
            "eos_token_id": 2,
        });
        if let Some(q) = self.quantization_config() {
            c["quantization_config"] = q;
        }
        c
    }

    /// HF projection names and `[out, in]` shapes of one layer.
    pub fn projections(&self, layer: usize) -> Vec<(String, [usize; 2])> {
        let (h, q, kv, ff) = (
            self.hidden,
            self.heads * self.head_dim(),
            self.kv_heads * self.head_dim(),
            self.inter,
        );
        [
            ("self_attn.q_proj", [q, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, q]),
            ("mlp.gate_proj", [ff, h]),
            ("mlp.up_proj", [ff, h]),
            ("mlp.down_proj", [h, ff]),
        ]
        .into_iter()
        .map(|(n, s)| (format!("model.layers.{layer}.{n}.weight"), s))
        .collect()
    }
}

/// One tensor to be written.
pub struct Raw {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A generated checkpoint and what the converter must produce from it.
pub struct Checkpoint {
    pub dir: tempfile::TempDir,
    pub spec: Spec,
    /// Per HF projection name: ternary codes (HF row order) and β.
    pub ternary: HashMap<String, (Vec<i8>, f32)>,
    /// Per HF float tensor name: values as f32 (after the on-disk dtype's rounding).
    pub floats: HashMap<String, Vec<f32>>,
    pub tensors: Vec<(String, Raw)>,
}

impl Checkpoint {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the safetensors file(s) after `tensors` was edited.
    pub fn rewrite_weights(&self) {
        write_weights(self.path(), &self.tensors, self.spec.shards);
    }
}

fn float_bytes(values: &[f32], dtype: Dtype) -> (Vec<u8>, Vec<f32>) {
    match dtype {
        Dtype::F32 => (
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            values.to_vec(),
        ),
        Dtype::F16 => {
            let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        Dtype::BF16 => {
            let h: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        other => panic!("not a float dtype: {other:?}"),
    }
}

/// Generates the checkpoint folder for `spec`.
pub fn generate(spec: Spec) -> Checkpoint {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut tensors: Vec<(String, Raw)> = Vec::new();
    let mut floats = HashMap::new();
    let mut ternary = HashMap::new();

    let mut add_float = |name: String,
                         shape: Vec<usize>,
                         values: Vec<f32>,
                         dtype: Dtype,
                         tensors: &mut Vec<(String, Raw)>| {
        let (data, rounded) = float_bytes(&values, dtype);
        floats.insert(name.clone(), rounded);
        tensors.push((name, Raw { dtype, shape, data }));
    };
    let n = spec.vocab * spec.hidden;
    let emb: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    add_float(
        "model.embed_tokens.weight".into(),
        vec![spec.vocab, spec.hidden],
        emb,
        spec.float_dtype,
        &mut tensors,
    );
    let norm: Vec<f32> = (0..spec.hidden)
        .map(|_| rng.random_range(0.5f32..1.5))
        .collect();
    add_float(
        "model.norm.weight".into(),
        vec![spec.hidden],
        norm,
        spec.float_dtype,
        &mut tensors,
    );
    if spec.lm_head {
        let head: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        add_float(
            "lm_head.weight".into(),
            vec![spec.vocab, spec.hidden],
            head,
            spec.float_dtype,
            &mut tensors,
        );
    }
    for layer in 0..spec.layers {
        let mut norms = vec![
            ("input_layernorm", spec.hidden),
            ("post_attention_layernorm", spec.hidden),
        ];
        if let Some((a, f)) = spec.subnorms {
            norms.push((a, spec.heads * spec.head_dim()));
            norms.push((f, spec.inter));
        }
        for (n, width) in norms {
            let v: Vec<f32> = (0..width).map(|_| rng.random_range(0.5f32..1.5)).collect();
            add_float(
                format!("model.layers.{layer}.{n}.weight"),
                vec![width],
                v,
                spec.float_dtype,
                &mut tensors,
            );
        }
        for (name, [out, inp]) in spec.projections(layer) {
            let codes: Vec<i8> = (0..out * inp).map(|_| rng.random_range(-1i8..=1)).collect();
            let beta: f32 = bf16::from_f32(rng.random_range(0.01f32..0.1)).to_f32();
            match spec.weights {
                Weights::Packed { autobit } => {
                    let packed = hf_packed::pack(&codes, out, inp).expect("pack");
                    tensors.push((
                        name.clone(),
                        Raw {
                            dtype: Dtype::U8,
                            shape: vec![out / 4, inp],
                            data: packed,
                        },
                    ));
                    // bitlinear stores 1/β; pick a power-of-two β so 1/β is exact in bf16.
                    let (scale_value, beta) = if autobit {
                        (beta, beta)
                    } else {
                        let b = 1.0 / 32.0 * (1 << (layer % 3)) as f32;
                        (1.0 / b, b)
                    };
                    let (data, _) = float_bytes(&[scale_value], Dtype::BF16);
                    tensors.push((
                        format!("{name}_scale"),
                        Raw {
                            dtype: Dtype::BF16,
                            shape: vec![1],
                            data,
                        },
                    ));
                    ternary.insert(name, (codes, beta));
                }
                Weights::FloatCodes => {
                    let v: Vec<f32> = codes.iter().map(|&c| c as f32).collect();
                    let (data, _) = float_bytes(&v, Dtype::BF16);
                    tensors.push((
                        name.clone(),
                        Raw {
                            dtype: Dtype::BF16,
                            shape: vec![out, inp],
                            data,
                        },
                    ));
                    let (data, _) = float_bytes(&[beta], Dtype::F32);
                    tensors.push((
                        format!("{name}_scale"),
                        Raw {
                            dtype: Dtype::F32,
                            shape: vec![1],
                            data,
                        },
                    ));
                    ternary.insert(name, (codes, beta));
                }
                Weights::Masters(dtype) => {
                    let v: Vec<f32> = (0..out * inp)
                        .map(|_| rng.random_range(-0.1f32..0.1))
                        .collect();
                    let (data, rounded) = float_bytes(&v, dtype);
                    tensors.push((
                        name.clone(),
                        Raw {
                            dtype,
                            shape: vec![out, inp],
                            data,
                        },
                    ));
                    ternary.insert(name, ternarize::absmean(&rounded));
                }
                Weights::ExactTernary => {
                    let v: Vec<f32> = codes.iter().map(|&c| c as f32 * beta).collect();
                    let (data, _) = float_bytes(&v, Dtype::BF16);
                    tensors.push((
                        name.clone(),
                        Raw {
                            dtype: Dtype::BF16,
                            shape: vec![out, inp],
                            data,
                        },
                    ));
                    let beta = if codes.iter().all(|&c| c == 0) {
                        ternarize::MIN_SCALE
                    } else {
                        beta
                    };
                    ternary.insert(name, (codes, beta));
                }
            }
        }
    }
    write_weights(dir.path(), &tensors, spec.shards);
    write_json(&dir.path().join("config.json"), &spec.config());
    if spec.sentencepiece {
        write_sentencepiece(dir.path(), spec.vocab);
    } else {
        write_bpe(dir.path(), spec.vocab);
    }
    Checkpoint {
        dir,
        spec,
        ternary,
        floats,
        tensors,
    }
}

pub fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// Writes `model.safetensors`, or `model-0000i-of-0000n.safetensors` + index for `shards > 1`.
pub fn write_weights(dir: &Path, tensors: &[(String, Raw)], shards: usize) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().contains("safetensors") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    fn views<'a>(items: &[&'a (String, Raw)]) -> Vec<(String, TensorView<'a>)> {
        items
            .iter()
            .map(|(n, r)| {
                (
                    n.clone(),
                    TensorView::new(r.dtype, r.shape.clone(), &r.data).expect("view"),
                )
            })
            .collect()
    }
    if shards <= 1 {
        let all: Vec<&(String, Raw)> = tensors.iter().collect();
        safetensors::serialize_to_file(views(&all), None, &dir.join("model.safetensors")).unwrap();
        return;
    }
    let mut weight_map = serde_json::Map::new();
    for s in 0..shards {
        let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
        let part: Vec<&(String, Raw)> = tensors
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == s)
            .map(|(_, t)| t)
            .collect();
        for (n, _) in &part {
            weight_map.insert(n.clone(), json!(file));
        }
        safetensors::serialize_to_file(views(&part), None, &dir.join(&file)).unwrap();
    }
    write_json(
        &dir.join("model.safetensors.index.json"),
        &json!({"metadata": {"total_size": 0}, "weight_map": weight_map}),
    );
}

/// The Llama-3 pre-tokenizer regex as tokenizer.json stores it.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A byte-level BPE tokenizer with `vocab - 20` regular tokens, 4 added tokens and gaps.
pub fn write_bpe(dir: &Path, vocab: usize) {
    let regular = vocab - 20;
    let mut v = serde_json::Map::new();
    for i in 0..regular {
        v.insert(format!("t{i}"), json!(i));
    }
    let merges: Vec<Value> = (0..10)
        .map(|i| json!(format!("t{} t{}", i, i + 1)))
        .collect();
    let added = [
        (regular, "<|begin_of_text|>", true),
        (regular + 1, "<|end_of_text|>", true),
        (regular + 2, "<|eot_id|>", true),
        (regular + 3, "hello world", false),
    ];
    let added_json: Vec<Value> = added
        .iter()
        .map(|(id, c, special)| json!({"id": id, "content": c, "special": special, "normalized": false}))
        .collect();
    let tok = json!({
        "version": "1.0",
        "added_tokens": added_json,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": v, "merges": merges, "ignore_merges": true}
    });
    write_json(&dir.join("tokenizer.json"), &tok);
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                "chat_template": "{% for m in messages %}{{ m['content'] }}<|eot_id|>{% endfor %}"}),
    );
    write_json(
        &dir.join("generation_config.json"),
        &json!({"eos_token_id": [regular + 1, regular + 2]}),
    );
}

/// Indices of the BPE tokenizer's special tokens for `vocab` (bos, eos, eot).
pub fn bpe_specials(vocab: usize) -> (u32, u32, u32) {
    let r = (vocab - 20) as u32;
    (r, r + 1, r + 2)
}

/// A SentencePiece model: `<unk>`, `<s>`, `</s>`, 3 byte pieces, then `vocab - 8` normal pieces,
/// plus `<pad>` in added_tokens.json.
pub fn write_sentencepiece(dir: &Path, vocab: usize) {
    let mut pieces: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
        ("<0x00>".into(), 0.0, 6),
        ("<0x01>".into(), 0.0, 6),
        ("<0x02>".into(), 0.0, 6),
    ];
    for i in 0..vocab - 8 {
        pieces.push((format!("\u{2581}p{i}"), -(i as f32) / 10.0, 1));
    }
    std::fs::write(dir.join("tokenizer.model"), encode_sentencepiece(&pieces)).unwrap();
    write_json(&dir.join("added_tokens.json"), &json!({"<pad>": vocab - 2}));
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"add_bos_token": true, "add_eos_token": false}),
    );
}

pub fn encode_sentencepiece(pieces: &[(String, f32, i32)]) -> Vec<u8> {
    let pieces: Vec<(&str, f32, i32)> = pieces
        .iter()
        .map(|(p, s, t)| (p.as_str(), *s, *t))
        .collect();
    sentencepiece_model::encode(&pieces, 1, 2, 0, -1, true)
}

/// The GGUF projection name for an HF one (`model.layers.0.self_attn.q_proj.weight` → `blk.0.attn_q.weight`).
pub fn gguf_name(hf: &str) -> String {
    let rest = hf.strip_prefix("model.layers.").expect("layer tensor");
    let (layer, module) = rest.split_once('.').unwrap();
    let short = match module {
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        other => panic!("not a projection: {other}"),
    };
    format!("blk.{layer}.{short}.weight")
}

/// Files in `dir` (names), to check nothing was left behind.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Root of the workspace (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// llama.cpp sources vendored in the `llama-cpp-sys-2` crate (fetched into cargo's registry
/// cache with `cargo info` when absent), extracted under `work`; returns the llama.cpp root.
pub fn llama_cpp_sources(work: &Path) -> PathBuf {
    const CRATE: &str = "llama-cpp-sys-2";
    const VERSION: &str = "0.1.161";
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(cargo_home.join("registry/cache"))
            .ok()?
            .flatten()
            .map(|d| d.path().join(format!("{CRATE}-{VERSION}.crate")))
            .find(|p| p.is_file())
    };
    let archive = match find() {
        Some(p) => p,
        None => {
            run(std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .args(["info", &format!("{CRATE}@{VERSION}")]));
            find().expect("cargo info did not leave the crate in the registry cache")
        }
    };
    let root = work.join(format!("{CRATE}-{VERSION}/llama.cpp"));
    if !root.is_dir() {
        std::fs::create_dir_all(work).unwrap();
        run(std::process::Command::new("tar")
            .arg("xzf")
            .arg(archive)
            .arg("-C")
            .arg(work));
    }
    root
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
