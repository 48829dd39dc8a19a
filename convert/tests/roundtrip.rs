//! Round trips: generated checkpoints of every input kind are converted, and the ternary codes,
//! scales and float tensors read back from the GGUF (decoded with the backend's formats) equal
//! the checkpoint's.

mod common;

use std::path::Path;

use bitnet_backend::formats::{i2s, q4_0, q6_k, q8_0, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufFile, Value};
use bitnet_convert::{convert, convert_to, ConvertOptions, EmbeddingType, NoProgress, OutType};
use common::*;
use half::f16;
use safetensors::Dtype;

const ALL_OUTTYPES: [OutType; 5] = [
    OutType::I2S,
    OutType::Tq2_0,
    OutType::Tq1_0,
    OutType::F16,
    OutType::F32,
];

/// Ternary codes and the scale(s) of a projection as stored in the GGUF.
fn read_ternary(f: &GgufFile, name: &str, n: usize, outtype: OutType) -> (Vec<i8>, Vec<f32>) {
    let info = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    let data = f.tensor_data(info).unwrap();
    let to_codes = |vals: &[f32], scale: f32| -> Vec<i8> {
        vals.iter()
            .map(|&v| {
                if v == 0.0 {
                    0
                } else if v == scale {
                    1
                } else if v == -scale {
                    -1
                } else {
                    panic!("{name}: {v} is not ±{scale}")
                }
            })
            .collect()
    };
    match outtype {
        OutType::I2S => {
            assert_eq!(info.ggml_type, GgmlType::I2S);
            let (codes, scale) = i2s::unpack(data, n).unwrap();
            (codes, vec![scale])
        }
        OutType::Tq2_0 | OutType::Tq1_0 => {
            let (codes, scales) = if outtype == OutType::Tq2_0 {
                assert_eq!(info.ggml_type, GgmlType::TQ2_0);
                tq2_0::unpack_ternary(data, n).unwrap()
            } else {
                assert_eq!(info.ggml_type, GgmlType::TQ1_0);
                tq1_0::unpack_ternary(data, n).unwrap()
            };
            (codes, scales.iter().map(|s| s.to_f32()).collect())
        }
        OutType::F32 => {
            assert_eq!(info.ggml_type, GgmlType::F32);
            let v: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let scale = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            (to_codes(&v, scale), vec![scale])
        }
        OutType::F16 => {
            assert_eq!(info.ggml_type, GgmlType::F16);
            let v: Vec<f32> = data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            let scale = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            (to_codes(&v, scale), vec![scale])
        }
    }
}

/// The scale a type stores for β.
fn stored_scale(beta: f32, outtype: OutType) -> f32 {
    match outtype {
        OutType::I2S | OutType::F32 => beta,
        OutType::Tq2_0 | OutType::Tq1_0 | OutType::F16 => f16::from_f32(beta).to_f32(),
    }
}

/// llama.cpp's q/k permutation, written out independently of the crate: within each head,
/// output row `2i + j` is input row `j * head_dim/2 + i`.
fn permuted(codes: &[i8], rows: usize, cols: usize, heads: usize) -> Vec<i8> {
    let hd = rows / heads;
    let mut out = vec![0i8; codes.len()];
    for r in 0..rows {
        let (h, within) = (r / hd, r % hd);
        let (i, j) = (within / 2, within % 2);
        let src = h * hd + j * (hd / 2) + i;
        out[r * cols..(r + 1) * cols].copy_from_slice(&codes[src * cols..(src + 1) * cols]);
    }
    out
}

fn f32_tensor(f: &GgufFile, name: &str) -> Vec<f32> {
    let info = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(info.ggml_type, GgmlType::F32, "{name}");
    f.tensor_data(info)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Checks every projection, norm and the embedding of a converted checkpoint.
fn check_conversion(ck: &Checkpoint, out: &Path, outtype: OutType, arch: &str) {
    let f = GgufFile::open(out).unwrap();
    let spec = &ck.spec;
    assert_eq!(f.architecture().unwrap(), arch);
    assert_eq!(f.get_u32("general.file_type").unwrap(), outtype.file_type());
    assert_eq!(
        f.get_u32(&format!("{arch}.block_count")).unwrap() as usize,
        spec.layers
    );
    assert_eq!(
        f.get_u32(&format!("{arch}.attention.head_count_kv"))
            .unwrap() as usize,
        spec.kv_heads
    );
    assert_eq!(
        f.get_u32(&format!("{arch}.rope.dimension_count")).unwrap() as usize,
        spec.head_dim()
    );
    assert_eq!(
        f.get_f32(&format!("{arch}.rope.freq_base")).unwrap(),
        500000.0
    );
    assert_eq!(
        f.get_array("tokenizer.ggml.tokens").unwrap().len(),
        spec.vocab
    );
    let permute = arch == "llama";
    for layer in 0..spec.layers {
        for (hf, [rows, cols]) in spec.projections(layer) {
            let (codes, beta) = &ck.ternary[&hf];
            let name = gguf_name(&hf);
            let want = match (permute, name.contains("attn_q"), name.contains("attn_k")) {
                (true, true, _) => permuted(codes, rows, cols, spec.heads),
                (true, _, true) => permuted(codes, rows, cols, spec.kv_heads),
                _ => codes.clone(),
            };
            let (got, scales) = read_ternary(&f, &name, rows * cols, outtype);
            assert!(got == want, "{name}: ternary codes differ ({outtype})");
            let info = f.tensor(&name).unwrap();
            assert_eq!(info.dims, vec![cols as u64, rows as u64], "{name}");
            if got.iter().any(|&c| c != 0)
                || matches!(outtype, OutType::I2S | OutType::Tq2_0 | OutType::Tq1_0)
            {
                let s = stored_scale(*beta, outtype);
                assert!(
                    scales.iter().all(|&x| x == s),
                    "{name}: scales {:?} != {s} ({outtype})",
                    &scales[..1]
                );
            }
        }
        let mut norms = vec![
            ("attn_norm", "input_layernorm"),
            ("ffn_norm", "post_attention_layernorm"),
        ];
        if let Some((a, fnn)) = spec.subnorms {
            norms.push(("attn_sub_norm", a));
            norms.push(("ffn_sub_norm", fnn));
        }
        for (g, h) in norms {
            assert_eq!(
                f32_tensor(&f, &format!("blk.{layer}.{g}.weight")),
                ck.floats[&format!("model.layers.{layer}.{h}.weight")],
                "blk.{layer}.{g}"
            );
        }
    }
    assert_eq!(
        f32_tensor(&f, "output_norm.weight"),
        ck.floats["model.norm.weight"]
    );
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dims, vec![spec.hidden as u64, spec.vocab as u64]);
    let want_emb = &ck.floats["model.embed_tokens.weight"];
    let data = f.tensor_data(emb).unwrap();
    if outtype == OutType::F32 {
        assert_eq!(emb.ggml_type, GgmlType::F32);
        assert_eq!(&f32_tensor(&f, "token_embd.weight"), want_emb);
    } else {
        assert_eq!(emb.ggml_type, GgmlType::F16);
        let got: Vec<f32> = data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let want: Vec<f32> = want_emb
            .iter()
            .map(|&v| f16::from_f32(v).to_f32())
            .collect();
        assert_eq!(got, want);
    }
    assert_eq!(
        f.tensor("output.weight").is_some(),
        spec.lm_head,
        "output.weight presence"
    );
}

#[test]
fn two_b4t_packed_to_every_outtype() {
    let ck = generate(Spec::two_b4t());
    for outtype in ALL_OUTTYPES {
        let out = ck.path().join(format!("out-{outtype}.gguf"));
        let summary = convert_to(ck.path(), &out, outtype).unwrap();
        check_conversion(&ck, &out, outtype, "bitnet-b1.58");
        assert_eq!(summary.n_tensors, 2 + 11 * ck.spec.layers);
        assert_eq!(summary.architecture, "bitnet-b1.58");
        if outtype == OutType::I2S {
            assert_eq!(summary.count(GgmlType::I2S), 7 * ck.spec.layers);
            assert_eq!(summary.count(GgmlType::F32), 1 + 4 * ck.spec.layers);
            assert_eq!(summary.count(GgmlType::F16), 1);
            assert_eq!(summary.file_size, std::fs::metadata(&out).unwrap().len());
        }
    }
}

#[test]
fn bitlinear_weight_scale_divides() {
    let ck = generate(Spec {
        weights: Weights::Packed { autobit: false },
        ..Spec::two_b4t()
    });
    let out = ck.path().join("m.gguf");
    convert_to(ck.path(), &out, OutType::I2S).unwrap();
    check_conversion(&ck, &out, OutType::I2S, "bitnet-b1.58");
}

#[test]
fn bf16_masters_are_absmean_ternarized() {
    let ck = generate(Spec {
        weights: Weights::Masters(Dtype::BF16),
        ..Spec::two_b4t()
    });
    for outtype in [OutType::I2S, OutType::Tq2_0] {
        let out = ck.path().join("m.gguf");
        convert_to(ck.path(), &out, outtype).unwrap();
        check_conversion(&ck, &out, outtype, "bitnet-b1.58");
    }
}

#[test]
fn float_codes_with_weight_scale() {
    let ck = generate(Spec {
        weights: Weights::FloatCodes,
        ..Spec::two_b4t()
    });
    let out = ck.path().join("m.gguf");
    convert_to(ck.path(), &out, OutType::Tq1_0).unwrap();
    check_conversion(&ck, &out, OutType::Tq1_0, "bitnet-b1.58");
}

#[test]
fn exact_ternary_floats_without_quantization_config() {
    let ck = generate(Spec {
        weights: Weights::ExactTernary,
        architecture: "LlamaForCausalLM",
        act: "silu",
        subnorms: None,
        ..Spec::two_b4t()
    });
    let out = ck.path().join("m.gguf");
    convert_to(ck.path(), &out, OutType::I2S).unwrap();
    check_conversion(&ck, &out, OutType::I2S, "llama");
}

#[test]
fn sharded_checkpoint() {
    let ck = generate(Spec {
        shards: 3,
        ..Spec::two_b4t()
    });
    assert!(ck.path().join("model.safetensors.index.json").is_file());
    let out = ck.path().join("m.gguf");
    convert_to(ck.path(), &out, OutType::Tq2_0).unwrap();
    check_conversion(&ck, &out, OutType::Tq2_0, "bitnet-b1.58");
}

#[test]
fn one_bit_llm_becomes_mainline_bitnet_with_sentencepiece_vocab() {
    let ck = generate(Spec::one_bit_llm());
    for outtype in [OutType::Tq2_0, OutType::I2S] {
        let out = ck.path().join("m.gguf");
        convert_to(ck.path(), &out, outtype).unwrap();
        check_conversion(&ck, &out, outtype, "bitnet");
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.get_str("bitnet.rope.scaling.type").unwrap(), "linear");
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "llama");
        assert!(f.get("tokenizer.ggml.pre").is_none());
        let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
        let types = f.get_array("tokenizer.ggml.token_type").unwrap();
        let scores = f.get_array("tokenizer.ggml.scores").unwrap();
        let v = ck.spec.vocab;
        assert_eq!(
            (tokens[0], tokens[1], tokens[6]),
            ("<unk>", "<s>", "\u{2581}p0")
        );
        assert_eq!(tokens[v - 2], "<pad>");
        assert_eq!(tokens[v - 1], format!("[PAD{}]", v - 1));
        let ty = |i: usize| types[i].as_i32().unwrap();
        assert_eq!(
            (ty(0), ty(1), ty(3), ty(6), ty(v - 2), ty(v - 1)),
            (2, 3, 6, 1, 4, 5)
        );
        assert_eq!(scores[7].as_f32(), Some(-0.1));
        assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
        assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
        assert_eq!(f.get_u32("tokenizer.ggml.unknown_token_id").unwrap(), 0);
        assert!(f.get("tokenizer.ggml.padding_token_id").is_none());
        assert!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
        assert!(f.get_bool("tokenizer.ggml.add_space_prefix").unwrap());
    }
}

#[test]
fn ternary_llama_permutes_q_and_k_and_keeps_the_lm_head() {
    let ck = generate(Spec::llama());
    for outtype in [OutType::I2S, OutType::Tq2_0, OutType::F32] {
        let out = ck.path().join("m.gguf");
        convert_to(ck.path(), &out, outtype).unwrap();
        check_conversion(&ck, &out, outtype, "llama");
        let f = GgufFile::open(&out).unwrap();
        let head = f.tensor("output.weight").unwrap();
        let want: Vec<f32> = ck.floats["lm_head.weight"]
            .iter()
            .map(|&v| f16::from_f32(v).to_f32())
            .collect();
        if outtype != OutType::F32 {
            let got: Vec<f32> = f
                .tensor_data(head)
                .unwrap()
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn bpe_tokenizer_metadata() {
    let ck = generate(Spec::two_b4t());
    let out = ck.path().join("m.gguf");
    convert_to(ck.path(), &out, OutType::I2S).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let v = ck.spec.vocab;
    let (bos, eos, eot) = bpe_specials(v);
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens[0], "t0");
    assert_eq!(tokens[bos as usize], "<|begin_of_text|>");
    assert_eq!(tokens[v - 1], format!("[PAD{}]", v - 1));
    let types = f.get_array("tokenizer.ggml.token_type").unwrap();
    let ty = |i: usize| types[i].as_i32().unwrap();
    assert_eq!(
        (ty(0), ty(bos as usize), ty(eot as usize + 1), ty(v - 1)),
        (1, 3, 4, 5)
    );
    assert_eq!(
        f.get_str_array("tokenizer.ggml.merges").unwrap()[..2],
        ["t0 t1", "t1 t2"]
    );
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), bos);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), eos);
    assert_eq!(f.get_u32("tokenizer.ggml.eot_token_id").unwrap(), eot);
    assert!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert!(f
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("<|eot_id|>"));
    assert_eq!(f.get_u32("general.quantization_version").unwrap(), 2);
    // Official bitnet.cpp file order: architecture first, quantization_version last.
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys[0], "general.architecture");
    assert_eq!(*keys.last().unwrap(), "general.quantization_version");
}

#[test]
fn embedding_types_are_ggml_quantizations_of_the_checkpoint() {
    let ck = generate(Spec::two_b4t());
    let emb = &ck.floats["model.embed_tokens.weight"];
    for (ty, ggml) in [
        (EmbeddingType::Q8_0, GgmlType::Q8_0),
        (EmbeddingType::Q6K, GgmlType::Q6_K),
        (EmbeddingType::Q4_0, GgmlType::Q4_0),
        (EmbeddingType::F32, GgmlType::F32),
        (EmbeddingType::BF16, GgmlType::BF16),
    ] {
        let out = ck.path().join(format!("e-{ty}.gguf"));
        let mut opts = ConvertOptions::new(ck.path().to_string_lossy());
        opts.token_embedding_type = Some(ty);
        opts.outfile = Some(out.clone());
        convert(&opts, &NoProgress).unwrap();
        let f = GgufFile::open(&out).unwrap();
        let info = f.tensor("token_embd.weight").unwrap();
        assert_eq!(info.ggml_type, ggml);
        let data = f.tensor_data(info).unwrap();
        let (want, back, tol) = match ty {
            EmbeddingType::Q8_0 => (
                q8_0::quantize(emb).unwrap(),
                q8_0::dequantize(data, emb.len()).unwrap(),
                0.01,
            ),
            EmbeddingType::Q6K => (
                q6_k::quantize(emb).unwrap(),
                q6_k::dequantize(data, emb.len()).unwrap(),
                0.03,
            ),
            EmbeddingType::Q4_0 => (
                q4_0::quantize(emb).unwrap(),
                q4_0::dequantize(data, emb.len()).unwrap(),
                0.15,
            ),
            EmbeddingType::BF16 => (
                emb.iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
                data.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                // Round to nearest in 8 significant bits.
                emb.iter().fold(0f32, |m, v| m.max(v.abs())) / 256.0,
            ),
            _ => (
                emb.iter().flat_map(|v| v.to_le_bytes()).collect(),
                emb.clone(),
                0.0,
            ),
        };
        assert!(
            data == want.as_slice(),
            "{ty}: bytes differ from the quantizer's"
        );
        let err = emb
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err <= tol, "{ty}: max dequantization error {err}");
        assert_eq!(f.get_u32("general.file_type").unwrap(), 40);
    }
}

#[test]
fn default_outfile_is_in_the_input_folder() {
    let ck = generate(Spec::two_b4t());
    let mut opts = ConvertOptions::new(ck.path().to_string_lossy());
    opts.outtype = OutType::Tq1_0;
    let s = convert(&opts, &NoProgress).unwrap();
    assert_eq!(s.output, ck.path().join("ggml-model-tq1_0.gguf"));
    assert!(s.output.is_file());
    let f = GgufFile::open(&s.output).unwrap();
    let name = ck
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(f.get("general.name"), Some(&Value::String(name)));
}

/// The transformers-generated fixtures: codes and scales come back as transformers' own
/// `unpack_weights` and `weight_scale` semantics define them.
#[test]
fn transformers_fixtures_round_trip() {
    let root = workspace_root().join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let dir = entry.path();
        if !dir.join("config.json").is_file() {
            continue;
        }
        seen += 1;
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let q = &config["quantization_config"];
        let online = q["quantization_mode"] == "online";
        let autobit = q["linear_class"] == "autobitlinear";
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("m.gguf");
        convert_to(&dir, &out, OutType::I2S).unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.architecture().unwrap(), "bitnet-b1.58");
        assert_eq!(
            f.get_array("tokenizer.ggml.tokens").unwrap().len(),
            config["vocab_size"].as_u64().unwrap() as usize
        );
        let mut checked = 0;
        for (name, view) in st.tensors() {
            let Some(gguf) = name
                .strip_suffix(".weight")
                .filter(|n| n.ends_with("_proj"))
                .map(|_| gguf_name(&name))
            else {
                continue;
            };
            let shape = view.shape();
            let (codes, beta) = if online {
                let w: Vec<f32> = view
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                bitnet_backend::formats::ternarize::absmean(&w)
            } else {
                let (rows, cols) = (shape[0] * 4, shape[1]);
                let codes =
                    bitnet_backend::formats::hf_packed::unpack(view.data(), rows, cols).unwrap();
                let s = st.tensor(&format!("{name}_scale")).unwrap();
                let ws = match s.dtype() {
                    Dtype::BF16 => half::bf16::from_le_bytes([s.data()[0], s.data()[1]]).to_f32(),
                    _ => f32::from_le_bytes(s.data()[..4].try_into().unwrap()),
                };
                (codes, if autobit { ws } else { 1.0 / ws })
            };
            let (got, scales) = read_ternary(&f, &gguf, codes.len(), OutType::I2S);
            assert!(got == codes, "{}: {gguf} codes differ", dir.display());
            assert_eq!(scales[0], beta, "{}: {gguf} scale", dir.display());
            checked += 1;
        }
        assert!(checked > 0, "{}: no projections checked", dir.display());
    }
    assert!(
        seen >= 4,
        "expected the four transformers fixtures in {}",
        root.display()
    );
}
