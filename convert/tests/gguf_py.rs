//! gguf-py (PyPI `gguf` 0.19.0), an independent implementation, reads the TQ2_0/TQ1_0 files the
//! converter writes: its numpy dequantization of every tensor equals ours, and its numpy Q8_0 and
//! Q4_0 quantizers reproduce our token-embedding bytes.
//!
//! Needs a Python with `gguf==0.19.0` and numpy: `$BITNET_PYTHON`, else
//! `<workspace>/.venv/bin/python` (create it with `bash tests/setup-python.sh`). Without it these
//! tests fail with that message; they never skip.

mod common;
#[path = "../../tests/gguf_py/python.rs"]
mod gguf_python;

use std::path::Path;
use std::process::Command;

use bitnet_backend::formats::{q4_0, q6_k, q8_0, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufFile};
use bitnet_convert::{convert, ConvertOptions, EmbeddingType, NoProgress, OutType};
use common::*;
use gguf_python::python;
use half::f16;
use serde_json::{json, Value};

/// Our own f32 decoding of a tensor.
fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Vec<f32> {
    match ty {
        GgmlType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        GgmlType::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GgmlType::TQ2_0 => tq2_0::dequantize(data, n).unwrap(),
        GgmlType::TQ1_0 => tq1_0::dequantize(data, n).unwrap(),
        GgmlType::Q8_0 => q8_0::dequantize(data, n).unwrap(),
        GgmlType::Q6_K => q6_k::dequantize(data, n).unwrap(),
        GgmlType::Q4_0 => q4_0::dequantize(data, n).unwrap(),
        other => panic!("no decoder for {other}"),
    }
}

fn write_f32(path: &Path, v: &[f32]) {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

/// Converts `ck` and has gguf-py check every tensor of the result.
fn check_with_gguf_py(ck: &Checkpoint, outtype: OutType, emb: EmbeddingType, arch: &str) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model.gguf");
    let mut opts = ConvertOptions::new(ck.path().to_string_lossy());
    opts.outtype = outtype;
    opts.token_embedding_type = Some(emb);
    opts.outfile = Some(out.clone());
    convert(&opts, &NoProgress).unwrap();

    let f = GgufFile::open(&out).unwrap();
    let mut tensors = Vec::new();
    for (i, t) in f.tensors().iter().enumerate() {
        let n = t.n_elements() as usize;
        let raw = work.path().join(format!("{i}.f32"));
        write_f32(&raw, &dequantize(t.ggml_type, f.tensor_data(t).unwrap(), n));
        let mut e = json!({
            "name": t.name,
            "type": t.ggml_type.name(),
            "shape": t.dims,
            "dequant": raw,
        });
        if t.name == "token_embd.weight" && matches!(emb, EmbeddingType::Q8_0 | EmbeddingType::Q4_0)
        {
            let src = work.path().join("embedding-source.f32");
            write_f32(&src, &ck.floats["model.embed_tokens.weight"]);
            e["quant_of"] = json!(src);
        }
        tensors.push(e);
    }
    let spec = &ck.spec;
    let mut metadata = serde_json::Map::new();
    metadata.insert("general.file_type".into(), json!(outtype.file_type()));
    for (key, value) in [
        ("block_count", json!(spec.layers)),
        ("attention.head_count", json!(spec.heads)),
        ("attention.head_count_kv", json!(spec.kv_heads)),
        ("embedding_length", json!(spec.hidden)),
        ("attention.layer_norm_rms_epsilon", json!(1e-5)),
    ] {
        metadata.insert(format!("{arch}.{key}"), value);
    }
    let expect =
        json!({"architecture": arch, "metadata": metadata, "tensors": Value::Array(tensors)});
    let expect_path = work.path().join("expect.json");
    write_json(&expect_path, &expect);
    let script = workspace_root().join("tests/gguf_py/check_converted.py");
    let run = Command::new(python())
        .arg(&script)
        .arg(&out)
        .arg(&expect_path)
        .output()
        .expect("spawn python");
    assert!(
        run.status.success(),
        "gguf-py check of a {outtype} file failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn gguf_py_reads_tq2_0_and_tq1_0_of_2b4t() {
    let ck = generate(Spec::two_b4t());
    check_with_gguf_py(&ck, OutType::Tq2_0, EmbeddingType::Q8_0, "bitnet-b1.58");
    check_with_gguf_py(&ck, OutType::Tq1_0, EmbeddingType::Q4_0, "bitnet-b1.58");
}

#[test]
fn gguf_py_reads_mainline_bitnet_and_llama_files() {
    let ck = generate(Spec::one_bit_llm());
    check_with_gguf_py(&ck, OutType::Tq2_0, EmbeddingType::Q6K, "bitnet");
    let ck = generate(Spec::llama());
    check_with_gguf_py(&ck, OutType::Tq1_0, EmbeddingType::F16, "llama");
    check_with_gguf_py(&ck, OutType::F32, EmbeddingType::F32, "llama");
}
