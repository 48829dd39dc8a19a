//! Cross-checks against gguf-py (PyPI `gguf` 0.19.0), an independent GGUF implementation:
//! files it writes are read identically by ours, files we write are read identically by it,
//! and its numpy TQ1_0, TQ2_0, Q8_0 and Q4_0 (de)quantizers and its Q6_K dequantizer agree with
//! ours bit for bit.
//!
//! Needs a Python with `gguf==0.19.0` and numpy: `$BITNET_PYTHON`, else `<workspace>/.venv/bin/python`.
//! Create it with `bash tests/setup-python.sh`. Without it these tests fail; they never skip.

#[path = "../../tests/gguf_py/python.rs"]
mod gguf_python;

use std::path::Path;
use std::process::Command;

use gguf_python::{python, workspace_root};

use bitnet_backend::formats::{q4_0, q6_k, q8_0, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};
use serde_json::{json, Value as Json};

fn run_script(script: &str, args: &[&Path]) {
    let path = workspace_root().join("tests/gguf_py").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("spawn python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn hex(s: &Json) -> Vec<u8> {
    let s = s.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "UINT8",
        ValueType::I8 => "INT8",
        ValueType::U16 => "UINT16",
        ValueType::I16 => "INT16",
        ValueType::U32 => "UINT32",
        ValueType::I32 => "INT32",
        ValueType::F32 => "FLOAT32",
        ValueType::Bool => "BOOL",
        ValueType::String => "STRING",
        ValueType::Array => "ARRAY",
        ValueType::U64 => "UINT64",
        ValueType::I64 => "INT64",
        ValueType::F64 => "FLOAT64",
    }
}

/// Same type-tagged JSON as tests/gguf_py/tagged.py (floats as bit patterns).
fn tagged(v: &Value) -> Json {
    let t = type_name(v.value_type());
    match v {
        Value::U8(x) => json!({"t": t, "v": x}),
        Value::I8(x) => json!({"t": t, "v": x}),
        Value::U16(x) => json!({"t": t, "v": x}),
        Value::I16(x) => json!({"t": t, "v": x}),
        Value::U32(x) => json!({"t": t, "v": x}),
        Value::I32(x) => json!({"t": t, "v": x}),
        Value::U64(x) => json!({"t": t, "v": x}),
        Value::I64(x) => json!({"t": t, "v": x}),
        Value::F32(x) => json!({"t": t, "v": x.to_bits()}),
        Value::F64(x) => json!({"t": t, "v": x.to_bits()}),
        Value::Bool(x) => json!({"t": t, "v": x}),
        Value::String(s) => json!({"t": t, "v": s}),
        Value::Array(item, items) => json!({
            "t": t,
            "item": type_name(*item),
            "v": items.iter().map(tagged).collect::<Vec<_>>(),
        }),
    }
}

fn tagged_metadata(f: &GgufFile) -> Json {
    Json::Array(
        f.metadata()
            .iter()
            .map(|(k, v)| json!([k, tagged(v)]))
            .collect(),
    )
}

#[test]
fn files_written_by_gguf_py_read_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, desc) = (dir.path().join("py.gguf"), dir.path().join("py.json"));
    run_script("write_with_gguf_py.py", &[&gguf, &desc]);
    let want = read_json(&desc);
    let f = GgufFile::open(&gguf).unwrap();

    assert_eq!(tagged_metadata(&f), want["metadata"]);
    let tensors = want["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    for (t, w) in f.tensors().iter().zip(tensors) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        let dims: Vec<u64> = serde_json::from_value(w["dims"].clone()).unwrap();
        assert_eq!(t.dims, dims, "{}", t.name);
        assert_eq!(t.raw_type as u64, w["type"].as_u64().unwrap());
        assert_eq!(t.ggml_type.id(), t.raw_type);
        assert_eq!(f.tensor_data(t).unwrap(), hex(&w["data"]), "{}", t.name);
    }
    // The TQ tensors decode to what gguf-py quantized.
    let tq1 = f.tensor("w.tq1_0").unwrap();
    let (codes, scales) = tq1_0::unpack_ternary(f.tensor_data(tq1).unwrap(), 512).unwrap();
    assert_eq!(scales.len(), 2);
    assert!(codes.iter().any(|&c| c != 0));
}

fn rust_metadata() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::from("crosscheck")),
        ("general.alignment", Value::U32(64)),
        ("m.u8", Value::U8(255)),
        ("m.i8", Value::I8(-128)),
        ("m.u16", Value::U16(1)),
        ("m.i16", Value::I16(-2)),
        ("m.u32", Value::U32(u32::MAX)),
        ("m.i32", Value::I32(i32::MIN)),
        ("m.f32", Value::F32(-1.5e-3)),
        ("m.bool", Value::Bool(false)),
        ("m.string", Value::from("naïve ✓")),
        ("m.empty_string", Value::from("")),
        ("m.u64", Value::U64(u64::MAX)),
        ("m.i64", Value::I64(i64::MIN)),
        ("m.f64", Value::F64(std::f64::consts::PI)),
        ("m.arr_u8", Value::array([1u8, 2, 3])),
        ("m.arr_i16", Value::array([-1i16, 300])),
        ("m.arr_u64", Value::array([u64::MAX, 0])),
        ("m.arr_f32", Value::array([0.1f32, 2.5])),
        ("m.arr_f64", Value::array([1e300f64, -0.0])),
        ("m.arr_bool", Value::array([true, false])),
        ("m.arr_str", Value::string_array(["x", "", "üñí"])),
        ("m.arr_empty", Value::Array(ValueType::I32, vec![])),
        (
            "m.nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::array([1u64, 2]),
                    Value::string_array(["a"]),
                    Value::Array(ValueType::Array, vec![Value::array([-1i8])]),
                ],
            ),
        ),
    ]
}

#[test]
fn files_written_by_us_are_read_identically_by_gguf_py() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, dump) = (dir.path().join("rs.gguf"), dir.path().join("rs.json"));

    let floats: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let f32_data = f32_bytes(&floats[..6]);
    let f16_data: Vec<u8> = [1.0f32, -2.0, 0.5, 65504.0]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let mut q8_data = half::f16::from_f32(0.125).to_le_bytes().to_vec();
    q8_data.extend((0..32i32).map(|i| (i * 7 - 100) as i8 as u8));
    let tq1 = tq1_0::quantize(&floats).unwrap();
    let ternary: Vec<i8> = (0..256).map(|i| (i % 3) as i8 - 1).collect();
    let tq2 = tq2_0::pack_ternary(&ternary, 0.0421).unwrap();
    let tensors: Vec<(&str, Vec<u64>, GgmlType, &[u8])> = vec![
        ("t.f32", vec![3, 2], GgmlType::F32, &f32_data),
        ("t.f16", vec![4], GgmlType::F16, &f16_data),
        ("t.q8_0", vec![32, 1], GgmlType::Q8_0, &q8_data),
        ("t.tq1_0", vec![256, 2], GgmlType::TQ1_0, &tq1),
        ("t.tq2_0", vec![256], GgmlType::TQ2_0, &tq2),
    ];

    let mut w = GgufWriter::new();
    for (k, v) in rust_metadata() {
        w.add(k, v).unwrap();
    }
    for (name, dims, ty, _) in &tensors {
        w.add_tensor(*name, dims, *ty).unwrap();
    }
    let mut s = w.begin(&gguf).unwrap();
    for (name, _, _, data) in &tensors {
        s.write_tensor(name, data).unwrap();
    }
    s.finish().unwrap();

    run_script("read_with_gguf_py.py", &[&gguf, &dump]);
    let got = read_json(&dump);
    assert_eq!(got["version"], 3);
    assert_eq!(got["alignment"], 64);
    let ours = GgufFile::open(&gguf).unwrap();
    assert_eq!(got["metadata"], tagged_metadata(&ours));
    let py_tensors = got["tensors"].as_array().unwrap();
    assert_eq!(py_tensors.len(), tensors.len());
    for ((name, dims, ty, data), p) in tensors.iter().zip(py_tensors) {
        assert_eq!(p["name"], *name);
        assert_eq!(p["dims"], json!(dims));
        assert_eq!(p["type"], ty.id());
        assert_eq!(p["n_bytes"], data.len());
        assert_eq!(hex(&p["data"]), *data, "{name}");
    }
    let py_deq = |i: usize| hex(&py_tensors[i]["dequant"]);
    assert_eq!(py_deq(0), f32_data);
    assert_eq!(py_deq(3), f32_bytes(&tq1_0::dequantize(&tq1, 512).unwrap()));
    assert_eq!(py_deq(4), f32_bytes(&tq2_0::dequantize(&tq2, 256).unwrap()));
    let d = half::f16::from_f32(0.0421).to_f32();
    let expect_tq2: Vec<f32> = ternary.iter().map(|&t| t as f32 * d).collect();
    assert_eq!(py_deq(4), f32_bytes(&expect_tq2));
}

type Quantize = fn(&[f32]) -> bitnet_backend::Result<Vec<u8>>;
type Dequantize = fn(&[u8], usize) -> bitnet_backend::Result<Vec<f32>>;

#[test]
fn blocks_match_gguf_py_quants_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.json");
    run_script("quant_vectors.py", &[&path]);
    let all = read_json(&path);
    // gguf-py quantizes every type here but Q6_K (whose blocks are still compared dequantized).
    let impls: [(&str, Quantize, Dequantize, bool); 5] = [
        ("TQ1_0", tq1_0::quantize, tq1_0::dequantize, true),
        ("TQ2_0", tq2_0::quantize, tq2_0::dequantize, true),
        ("Q8_0", q8_0::quantize, q8_0::dequantize, true),
        ("Q4_0", q4_0::quantize, q4_0::dequantize, true),
        ("Q6_K", q6_k::quantize, q6_k::dequantize, false),
    ];
    for (name, quantize, dequantize, quantized_by_gguf_py) in impls {
        let cases = all[name]["float_cases"].as_array().unwrap();
        assert_eq!(
            cases.len() >= 5,
            quantized_by_gguf_py,
            "{name}: float cases"
        );
        for c in cases {
            let label = format!("{name} {}", c["case"]);
            let n = c["n"].as_u64().unwrap() as usize;
            let input: Vec<f32> = hex(&c["input"])
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let want_q = hex(&c["quantized"]);
            assert_eq!(quantize(&input).unwrap(), want_q, "{label}: quantize");
            let deq = dequantize(&want_q, n).unwrap();
            assert_eq!(
                f32_bytes(&deq),
                hex(&c["dequantized"]),
                "{label}: dequantize"
            );
        }
        for c in all[name]["byte_cases"].as_array().unwrap() {
            let n = c["n"].as_u64().unwrap() as usize;
            let deq = dequantize(&hex(&c["bytes"]), n).unwrap();
            assert_eq!(f32_bytes(&deq), hex(&c["dequantized"]), "{name}: raw bytes");
        }
    }
}
