//! Models and layers straight from Hugging Face checkpoints (`Model::from_hf`,
//! `BitLinear::load` through a `VarBuilder`) against the converter's GGUF of the same checkpoint.
//!
//! With the GGUF's embedding and head kept in the checkpoint's own precision, the two models
//! must be the same model: logits equal bit for bit on every row, the same tokens. Checked on
//! the transformers fixtures and on synthetic checkpoints of every kind the converter reads
//! (packed autobitlinear / bitlinear, float codes, bf16 and f16 masters, exact ternary floats,
//! sharded, a ternary Llama with permuted q/k and an untied head, a 1bitLLM with SentencePiece).

#[path = "../../convert/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use bitnet_candle::{
    bit_linear, BitLinear, HeadType, HfConfig, KvDtype, LoadOptions, Model, WeightRule,
};
use bitnet_convert::{ConvertOptions, EmbeddingType, NoProgress};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::{generate, Spec, Weights};
use safetensors::Dtype;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// The embedding type that keeps a checkpoint's floats exactly.
fn exact_type(dtype: Dtype) -> EmbeddingType {
    match dtype {
        Dtype::F32 => EmbeddingType::F32,
        Dtype::F16 => EmbeddingType::F16,
        Dtype::BF16 => EmbeddingType::BF16,
        other => panic!("not a float dtype: {other:?}"),
    }
}

/// Converts `dir` to I2_S with the embedding and head in `float` and loads the file.
fn converted(dir: &Path, float: EmbeddingType, tmp: &Path) -> Model {
    converted_with(dir, float, tmp, &LoadOptions::default())
}

/// [`converted`], the file loaded with `options`.
fn converted_with(dir: &Path, float: EmbeddingType, tmp: &Path, options: &LoadOptions) -> Model {
    let out = tmp.join("model.gguf");
    let mut opts = ConvertOptions::new(dir.to_string_lossy());
    opts.outfile = Some(out.clone());
    opts.token_embedding_type = Some(float);
    opts.output_tensor_type = Some(float);
    bitnet_convert::convert(&opts, &NoProgress).unwrap();
    Model::load(&out, options).unwrap()
}

fn all_logits(model: &Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len(), KvDtype::F32).unwrap();
    model
        .forward_all(&mut cache, tokens, 0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// Same architecture, description, tokens and logits (bit for bit) as the converted GGUF.
fn assert_same_model(what: &str, hf: &Model, gguf: &Model, tokens: &[u32]) {
    assert_eq!(hf.config(), gguf.config(), "{what}: hyper-parameters");
    let (a, b) = (all_logits(hf, tokens), all_logits(gguf, tokens));
    for (r, (x, y)) in a.iter().zip(&b).enumerate() {
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{what}: logits row {r} differ");
    }
    for text in [
        "Hello world, 12345 times!",
        "  two spaces\nand a newline",
        "",
    ] {
        assert_eq!(
            hf.tokenizer().encode(text, true).unwrap(),
            gguf.tokenizer().encode(text, true).unwrap(),
            "{what}: tokens of {text:?}"
        );
    }
    assert_eq!(hf.chat_template(), gguf.chat_template(), "{what}");
    assert_eq!(hf.eos(), gguf.eos(), "{what}");
}

#[test]
fn transformers_fixtures_give_the_converted_gguf_bit_for_bit() {
    for name in [
        "bitnet-mha-bitlinear-f32",
        "bitnet-gqa4-autobitlinear",
        "bitnet-gqa5-hd128-autobitlinear",
        "bitnet-bf16-online",
    ] {
        let dir = fixture(name);
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        let float = match reference["model"]["float_dtype_on_disk"].as_str().unwrap() {
            "float32" => EmbeddingType::F32,
            _ => EmbeddingType::BF16,
        };
        let tmp = tempfile::tempdir().unwrap();
        let gguf = converted(&dir, float, tmp.path());
        let hf = Model::from_hf(dir.to_str().unwrap(), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let sequence: Vec<u32> = reference["sequence_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_same_model(name, &hf, &gguf, &sequence[..sequence.len() - 1]);
    }
}

#[test]
fn a_quantized_head_from_a_checkpoint_equals_the_converted_gguf_s() {
    // A tied head (the fixture) and an untied one (the ternary Llama): the checkpoint's table is
    // quantized in memory, the GGUF's from its rows on disk, by the same quantizer.
    let llama = generate(Spec::llama());
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let from = fixture("bitnet-gqa5-hd128-autobitlinear").join(f);
        std::fs::copy(from, llama.path().join(f)).unwrap();
    }
    for (name, dir, float) in [
        (
            "tied fixture",
            fixture("bitnet-gqa4-autobitlinear"),
            EmbeddingType::BF16,
        ),
        (
            "untied llama",
            llama.path().to_owned(),
            exact_type(llama.spec.float_dtype),
        ),
    ] {
        let tokens: Vec<u32> = (1..12).collect();
        let file_head = Model::from_hf(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
        for head_type in [HeadType::Q8_0, HeadType::Q6K, HeadType::Q4_0] {
            let options = LoadOptions {
                head_type,
                ..Default::default()
            };
            let tmp = tempfile::tempdir().unwrap();
            let gguf = converted_with(&dir, float, tmp.path(), &options);
            let hf = Model::from_hf(dir.to_str().unwrap(), &options).unwrap();
            let what = format!("{name} head {head_type}");
            assert_same_model(&what, &hf, &gguf, &tokens);
            assert_ne!(
                all_logits(&hf, &tokens),
                all_logits(&file_head, &tokens),
                "{what}: the head was not quantized"
            );
        }
    }
}

#[test]
fn every_checkpoint_kind_gives_the_converted_gguf_bit_for_bit() {
    let packed_bitlinear = Spec {
        weights: Weights::Packed { autobit: false },
        ..Spec::two_b4t()
    };
    let kinds = [
        ("packed autobitlinear", Spec::two_b4t()),
        ("packed bitlinear", packed_bitlinear),
        (
            "float codes",
            Spec {
                weights: Weights::FloatCodes,
                ..Spec::two_b4t()
            },
        ),
        (
            "bf16 masters (online)",
            Spec {
                weights: Weights::Masters(Dtype::BF16),
                ..Spec::two_b4t()
            },
        ),
        (
            "exact ternary f32",
            Spec {
                weights: Weights::ExactTernary,
                float_dtype: Dtype::F32,
                ..Spec::two_b4t()
            },
        ),
        (
            "3 shards",
            Spec {
                shards: 3,
                ..Spec::two_b4t()
            },
        ),
        ("ternary llama, untied head", Spec::llama()),
        ("1bitLLM f16 masters, SentencePiece", Spec::one_bit_llm()),
    ];
    for (what, spec) in kinds {
        let ck = generate(spec);
        if !ck.spec.sentencepiece {
            // The generator's BPE vocabulary is structural only (merges into tokens it lacks);
            // a real byte-level one (269 tokens, padded to the embedding's rows) replaces it.
            for f in [
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
            ] {
                let from = fixture("bitnet-gqa5-hd128-autobitlinear").join(f);
                std::fs::copy(from, ck.path().join(f)).unwrap();
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let gguf = converted(ck.path(), exact_type(ck.spec.float_dtype), tmp.path());
        let hf = Model::from_hf(ck.path().to_str().unwrap(), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let n = hf.n_vocab() as u32;
        let tokens: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % n).collect();
        assert_same_model(what, &hf, &gguf, &tokens);
    }
}

#[test]
fn bit_linear_loads_every_kind_through_a_plain_varbuilder() {
    // Candle's own in-memory backend (not ours): tensors in their stored dtypes, read as the
    // builder's dtype where a float is needed.
    for spec in [
        Spec::two_b4t(),
        Spec {
            weights: Weights::FloatCodes,
            ..Spec::two_b4t()
        },
        Spec {
            weights: Weights::Masters(Dtype::BF16),
            ..Spec::two_b4t()
        },
        Spec {
            weights: Weights::ExactTernary,
            float_dtype: Dtype::F32,
            ..Spec::two_b4t()
        },
    ] {
        let ck = generate(spec);
        let cfg = HfConfig::load(ck.path()).unwrap();
        let rule = WeightRule::for_config(&cfg);
        let tensors =
            candle_core::safetensors::load(ck.path().join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let dtype = match ck.spec.float_dtype {
            Dtype::F32 => DType::F32,
            _ => DType::BF16,
        };
        let vb = VarBuilder::from_tensors(tensors, dtype, &Device::Cpu);
        for (name, [out, inp]) in ck.spec.projections(1) {
            let module = name.strip_suffix(".weight").unwrap();
            let layer = bit_linear(inp, out, &rule, vb.pp(module)).unwrap();
            let (codes, beta) = &ck.ternary[&name];
            assert_eq!(&layer.weights().to_ternary(), codes, "{name}");
            assert_eq!(layer.weights().scale(), *beta, "{name}");
        }
    }
}

#[test]
fn bad_checkpoints_are_errors_that_name_the_tensor() {
    let ck = generate(Spec::two_b4t());
    let tensors =
        candle_core::safetensors::load(ck.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::BF16, &Device::Cpu);
    let q = "model.layers.0.self_attn.q_proj";
    let cfg = HfConfig::load(ck.path()).unwrap();
    let rule = WeightRule::for_config(&cfg);

    // The scale's meaning is unknown without quantization_config.
    let no_class = WeightRule {
        linear_class: None,
        ..rule
    };
    let e = BitLinear::load(vb.pp(q), 256, 256, &no_class).unwrap_err();
    assert!(e.to_string().contains("quantization_config"), "{e}");
    // Wrong expected shape.
    let e = BitLinear::load(vb.pp(q), 256, 128, &rule).unwrap_err();
    assert!(e.to_string().contains(q), "{e}");
    // Missing tensor.
    assert!(BitLinear::load(vb.pp("model.layers.9.mlp.up_proj"), 256, 512, &rule).is_err());

    // A folder that is not a checkpoint, and a truncated shard.
    let e = Model::from_hf("/nonexistent/folder", &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/folder"), "{e}");
    let st = ck.path().join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(len - 10).unwrap();
    let e = Model::from_hf(ck.path().to_str().unwrap(), &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}
