//! Malformed or unsupported inputs: each gives a clear error naming the file or tensor, and
//! nothing (not even a temporary file) is left where the output was to go.

mod common;

use std::path::Path;

use bitnet_convert::{
    convert, convert_to, ConvertError, ConvertOptions, EmbeddingType, NoProgress, OutType,
};
use common::*;
use safetensors::Dtype;
use serde_json::json;

/// Converts `dir` into an empty output folder and returns the error text, checking that the
/// output folder is still empty afterwards.
fn fails(dir: &Path, outtype: OutType) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("model.gguf");
    let err = convert_to(dir, &out, outtype).expect_err("conversion should fail");
    assert!(
        file_names(out_dir.path()).is_empty(),
        "left behind: {:?} (error was: {err})",
        file_names(out_dir.path())
    );
    err.to_string()
}

fn assert_contains(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "error `{text}` lacks `{p}`");
    }
}

fn edit_tensor(ck: &mut Checkpoint, name: &str, f: impl FnOnce(&mut Raw)) {
    let t = ck
        .tensors
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name}"));
    f(&mut t.1);
    ck.rewrite_weights();
}

#[test]
fn bad_config_json() {
    let ck = generate(Spec::two_b4t());
    std::fs::write(
        ck.path().join("config.json"),
        "{\"architectures\": [\"BitNetForCausalLM\"],",
    )
    .unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["config.json", "invalid JSON"],
    );
    std::fs::remove_file(ck.path().join("config.json")).unwrap();
    assert_contains(&fails(ck.path(), OutType::I2S), &["config.json"]);
}

#[test]
fn config_missing_a_key() {
    let ck = generate(Spec::two_b4t());
    let mut c = ck.spec.config();
    c.as_object_mut().unwrap().remove("num_hidden_layers");
    write_json(&ck.path().join("config.json"), &c);
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["config.json", "num_hidden_layers"],
    );
}

#[test]
fn unsupported_architecture() {
    let ck = generate(Spec::two_b4t());
    let mut c = ck.spec.config();
    c["architectures"] = json!(["MistralForCausalLM"]);
    write_json(&ck.path().join("config.json"), &c);
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["MistralForCausalLM", "not supported", "BitNetForCausalLM"],
    );
}

#[test]
fn missing_tensor() {
    let mut ck = generate(Spec::two_b4t());
    ck.tensors
        .retain(|(n, _)| n != "model.layers.1.mlp.down_proj.weight");
    ck.rewrite_weights();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.layers.1.mlp.down_proj.weight", "missing"],
    );
}

#[test]
fn packed_weight_without_scale() {
    let mut ck = generate(Spec::two_b4t());
    ck.tensors
        .retain(|(n, _)| n != "model.layers.0.self_attn.k_proj.weight_scale");
    ck.rewrite_weights();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.layers.0.self_attn.k_proj.weight_scale", "missing"],
    );
}

#[test]
fn wrong_dtype() {
    let mut ck = generate(Spec::two_b4t());
    edit_tensor(&mut ck, "model.layers.0.input_layernorm.weight", |r| {
        r.dtype = Dtype::I16;
    });
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.layers.0.input_layernorm.weight", "I16"],
    );
    let mut ck = generate(Spec::two_b4t());
    edit_tensor(&mut ck, "model.layers.0.self_attn.q_proj.weight", |r| {
        r.dtype = Dtype::I8;
    });
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.layers.0.self_attn.q_proj.weight", "I8"],
    );
}

#[test]
fn wrong_shape() {
    let mut ck = generate(Spec::two_b4t());
    edit_tensor(&mut ck, "model.layers.1.self_attn.v_proj.weight", |r| {
        r.shape = vec![r.shape[1], r.shape[0]];
    });
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.layers.1.self_attn.v_proj.weight", "shape"],
    );
    let mut ck = generate(Spec::two_b4t());
    edit_tensor(&mut ck, "model.embed_tokens.weight", |r| {
        r.shape = vec![r.shape[0] / 2, r.shape[1] * 2];
    });
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.embed_tokens.weight", "shape"],
    );
}

#[test]
fn truncated_safetensors() {
    let ck = generate(Spec::two_b4t());
    let path = ck.path().join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 1000).unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.safetensors", "truncated"],
    );
}

#[test]
fn header_length_beyond_the_file() {
    let ck = generate(Spec::two_b4t());
    let path = ck.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let too_long = bytes.len() as u64 * 2;
    bytes[..8].copy_from_slice(&too_long.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.safetensors", "header length", "past the end"],
    );
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.safetensors", "too short"],
    );
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.safetensors", "limit"],
    );
}

#[test]
fn garbage_safetensors_header() {
    let ck = generate(Spec::two_b4t());
    let path = ck.path().join("model.safetensors");
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\": {\"dtype\":1");
    std::fs::write(&path, &bytes).unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.safetensors", "JSON"],
    );
}

#[test]
fn inconsistent_offsets() {
    let ck = generate(Spec::two_b4t());
    let header =
        json!({"model.norm.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}})
            .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(ck.path().join("model.safetensors"), &bytes).unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.safetensors", "inconsistent header"],
    );
}

#[test]
fn no_weights_at_all() {
    let ck = generate(Spec::two_b4t());
    std::fs::remove_file(ck.path().join("model.safetensors")).unwrap();
    std::fs::write(ck.path().join("pytorch_model.bin"), b"pickle").unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["no model.safetensors", "pytorch_model.bin"],
    );
}

#[test]
fn rows_that_do_not_fit_the_block() {
    // hidden 192: rows of q/k/v/gate/up hold 192 values, not a multiple of 128 or 256.
    let spec = Spec {
        hidden: 192,
        heads: 3,
        kv_heads: 1,
        inter: 384,
        ..Spec::two_b4t()
    };
    let ck = generate(spec);
    for (outtype, block) in [
        (OutType::I2S, "128"),
        (OutType::Tq2_0, "256"),
        (OutType::Tq1_0, "256"),
    ] {
        let e = fails(ck.path(), outtype);
        assert_contains(
            &e,
            &["blk.0.attn_q.weight", "192", block, "--outtype", "f16"],
        );
    }
    // F16 stores any shape; the file is real, not a silent fallback.
    let out = ck.path().join("m.gguf");
    convert_to(ck.path(), &out, OutType::F16).unwrap();
    // ...but Q6_K embeddings need rows of 256.
    let mut opts = ConvertOptions::new(ck.path().to_string_lossy());
    opts.outtype = OutType::F16;
    opts.token_embedding_type = Some(EmbeddingType::Q6K);
    opts.outfile = Some(ck.path().join("q6.gguf"));
    let e = convert(&opts, &NoProgress).unwrap_err().to_string();
    assert_contains(&e, &["token_embd.weight", "q6_k", "--token-embedding-type"]);
    assert!(!ck.path().join("q6.gguf").exists());
}

#[test]
fn non_ternary_floats_without_online_quantization() {
    let ck = generate(Spec {
        weights: Weights::Masters(Dtype::BF16),
        architecture: "LlamaForCausalLM",
        act: "silu",
        subnorms: None,
        ..Spec::two_b4t()
    });
    let mut c = ck.spec.config();
    c.as_object_mut().unwrap().remove("quantization_config");
    write_json(&ck.path().join("config.json"), &c);
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &[
            "model.layers.0.self_attn.q_proj.weight",
            "is not ternary",
            "quantization_mode",
        ],
    );
}

#[test]
fn nan_in_a_norm_fails_mid_write_and_leaves_nothing() {
    let mut ck = generate(Spec::two_b4t());
    edit_tensor(
        &mut ck,
        "model.layers.1.post_attention_layernorm.weight",
        |r| {
            r.data[2..4].copy_from_slice(&half::bf16::NAN.to_le_bytes());
        },
    );
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &[
            "model.layers.1.post_attention_layernorm.weight",
            "not finite",
        ],
    );
}

#[test]
fn packed_code_three_is_rejected() {
    let mut ck = generate(Spec::two_b4t());
    edit_tensor(&mut ck, "model.layers.0.mlp.up_proj.weight", |r| {
        r.data[5] = 0xff
    });
    assert_contains(
        &fails(ck.path(), OutType::Tq2_0),
        &["model.layers.0.mlp.up_proj.weight"],
    );
}

#[test]
fn unexpected_tensor_is_not_dropped_silently() {
    let mut ck = generate(Spec::two_b4t());
    ck.tensors.push((
        "model.layers.0.self_attn.q_proj.bias".into(),
        Raw {
            dtype: Dtype::F32,
            shape: vec![4],
            data: vec![0; 16],
        },
    ));
    ck.rewrite_weights();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["model.layers.0.self_attn.q_proj.bias", "refusing to drop"],
    );
}

#[test]
fn bad_tokenizer() {
    let ck = generate(Spec::two_b4t());
    std::fs::write(ck.path().join("tokenizer.json"), "{ not json").unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["tokenizer.json", "invalid JSON"],
    );
    std::fs::remove_file(ck.path().join("tokenizer.json")).unwrap();
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["neither tokenizer.json nor tokenizer.model"],
    );
}

#[test]
fn unknown_pre_tokenizer() {
    let ck = generate(Spec::two_b4t());
    let path = ck.path().join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = json!("\\s+|\\w+");
    write_json(&path, &tok);
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["tokenizer.json", "unknown pre-tokenizer", "llama-bpe"],
    );
}

#[test]
fn bad_sentencepiece_model() {
    let ck = generate(Spec::one_bit_llm());
    std::fs::write(ck.path().join("tokenizer.model"), b"\x0a\x05ab").unwrap();
    assert_contains(&fails(ck.path(), OutType::I2S), &["tokenizer.model"]);
}

#[test]
fn weight_scale_without_quantization_config() {
    let ck = generate(Spec::two_b4t());
    let mut c = ck.spec.config();
    c.as_object_mut().unwrap().remove("quantization_config");
    write_json(&ck.path().join("config.json"), &c);
    assert_contains(
        &fails(ck.path(), OutType::I2S),
        &["weight_scale", "quantization_config", "autobitlinear"],
    );
}

#[test]
fn untied_head_cannot_be_mainline_bitnet() {
    let ck = generate(Spec {
        lm_head: true,
        ..Spec::one_bit_llm()
    });
    assert_contains(
        &fails(ck.path(), OutType::Tq2_0),
        &["lm_head.weight", "`bitnet`", "token_embd"],
    );
}

#[test]
fn input_that_is_neither_folder_nor_repo() {
    let e = convert(&ConvertOptions::new("/definitely/not/here"), &NoProgress).unwrap_err();
    assert!(matches!(e, ConvertError::Input { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("neither an existing folder nor a Hugging Face repo id"),
        "{e}"
    );
    let ck = generate(Spec::two_b4t());
    let e = convert(
        &ConvertOptions::new(ck.path().join("config.json").to_string_lossy()),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("is a file"), "{e}");
}

#[test]
fn outfile_checks() {
    let ck = generate(Spec::two_b4t());
    let e = convert_to(
        ck.path(),
        &ck.path().join("model.safetensors"),
        OutType::I2S,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("would overwrite an input file"),
        "{e}"
    );
    let e = convert_to(
        ck.path(),
        &ck.path().join("no/such/dir/m.gguf"),
        OutType::I2S,
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = convert_to(ck.path(), ck.path(), OutType::I2S).unwrap_err();
    assert!(e.to_string().contains("is a folder"), "{e}");
}

/// A sink that asks to stop once `after` progress updates have arrived.
struct CancelAfter {
    after: usize,
    seen: std::sync::atomic::AtomicUsize,
}

impl bitnet_convert::ProgressSink for CancelAfter {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: &str) {
        self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn end(&self) {}
    fn cancelled(&self) -> bool {
        self.seen.load(std::sync::atomic::Ordering::SeqCst) >= self.after
    }
}

#[test]
fn cancellation_leaves_nothing() {
    let ck = generate(Spec::two_b4t());
    for after in [0, 1, 5] {
        let out_dir = tempfile::tempdir().unwrap();
        let mut opts = ConvertOptions::new(ck.path().to_string_lossy());
        opts.outfile = Some(out_dir.path().join("m.gguf"));
        let sink = CancelAfter {
            after,
            seen: 0.into(),
        };
        let e = convert(&opts, &sink).unwrap_err();
        assert!(matches!(e, ConvertError::Cancelled), "{e}");
        assert!(
            file_names(out_dir.path()).is_empty(),
            "{:?}",
            file_names(out_dir.path())
        );
    }
}
