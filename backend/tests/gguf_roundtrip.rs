//! GGUF writer -> reader round trips, exact header bytes, atomic-write behaviour.

use bitnet_backend::formats::{i2s, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};
use bitnet_backend::Error;

fn all_value_kinds() -> Vec<(String, Value)> {
    let nested = Value::Array(
        ValueType::Array,
        vec![
            Value::array([1i32, -2, 3]),
            Value::string_array(["x", "yz"]),
            Value::Array(ValueType::Array, vec![Value::array([true, false])]),
            Value::Array(ValueType::F64, vec![]),
        ],
    );
    vec![
        ("general.architecture".into(), Value::from("bitnet-b1.58")),
        ("t.u8".into(), Value::U8(250)),
        ("t.i8".into(), Value::I8(-120)),
        ("t.u16".into(), Value::U16(65000)),
        ("t.i16".into(), Value::I16(-32000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(1e-5)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.string".into(), Value::from("héllo ✓")),
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(-0.1)),
        ("t.empty_string".into(), Value::from("")),
        ("t.array_u8".into(), Value::array([0u8, 1, 255])),
        ("t.array_f32".into(), Value::array([0.5f32, -1.25])),
        ("t.array_str".into(), Value::string_array(["a", "", "ccc"])),
        ("t.nested".into(), nested),
    ]
}

fn pattern_i8(n: usize, seed: usize) -> Vec<i8> {
    (0..n).map(|i| ((i * 7 + seed) % 3) as i8 - 1).collect()
}

#[test]
fn round_trip_all_metadata_and_tensor_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let meta = all_value_kinds();

    let f32_data: Vec<u8> = (0..15)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let f16_data: Vec<u8> = (0..7u16).flat_map(|i| i.to_le_bytes()).collect();
    let q8_data: Vec<u8> = (0..34 * 2).map(|i| i as u8).collect();
    let tq1 = tq1_0::pack_ternary(&pattern_i8(512, 1), 0.25).unwrap();
    let tq2 = tq2_0::pack_ternary(&pattern_i8(256, 2), 0.5).unwrap();
    let i2 = i2s::pack(&pattern_i8(256, 3), 0.75).unwrap();
    let tensors: Vec<(&str, Vec<u64>, GgmlType, &[u8])> = vec![
        ("a.f32", vec![5, 3], GgmlType::F32, &f32_data),
        ("b.f16", vec![7], GgmlType::F16, &f16_data),
        ("c.q8_0", vec![64], GgmlType::Q8_0, &q8_data),
        ("d.tq1_0", vec![256, 2], GgmlType::TQ1_0, &tq1),
        ("e.tq2_0", vec![256, 1, 1, 1], GgmlType::TQ2_0, &tq2),
        ("f.i2s", vec![128, 2], GgmlType::I2S, &i2),
    ];

    let mut w = GgufWriter::new();
    for (k, v) in &meta {
        w.add(k.clone(), v.clone()).unwrap();
    }
    for (name, dims, ty, _) in &tensors {
        w.add_tensor(*name, dims, *ty).unwrap();
    }
    let mut s = w.begin(&path).unwrap();
    for (name, _, _, data) in &tensors {
        s.write_tensor(name, data).unwrap();
    }
    s.finish().unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert!(f.is_bitnet_flavoured());
    assert_eq!(f.metadata(), &meta[..]);
    assert_eq!(f.architecture().unwrap(), "bitnet-b1.58");
    assert_eq!(f.get_u32("t.u16").unwrap(), 65000);
    assert_eq!(f.get_f32("t.f32").unwrap(), 1e-5);
    assert!(f.get_u32("t.i8").is_err());
    assert!(f
        .get_str("missing")
        .unwrap_err()
        .to_string()
        .contains("missing"));
    assert_eq!(
        f.get_str_array("t.array_str").unwrap(),
        vec!["a", "", "ccc"]
    );
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.tensors().len(), tensors.len());
    for (info, (name, dims, ty, data)) in f.tensors().iter().zip(&tensors) {
        assert_eq!(info.name, *name);
        assert_eq!(&info.dims, dims);
        assert_eq!(info.ggml_type, *ty);
        assert_eq!(info.raw_type, ty.id());
        assert_eq!(info.offset % 32, 0);
        assert_eq!(info.n_bytes, data.len() as u64);
        assert_eq!(f.tensor_data(info).unwrap(), *data);
        let range = f.tensor_range(info).unwrap();
        assert_eq!(&f.mmap()[range], *data);
    }
    let i2_back = f.tensor_data(f.tensor("f.i2s").unwrap()).unwrap();
    assert_eq!(
        i2s::unpack(i2_back, 256).unwrap(),
        (pattern_i8(256, 3), 0.75)
    );
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(file_len % 32, 0, "last tensor is padded too");
}

#[test]
fn exact_bytes_of_a_tiny_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let mut w = GgufWriter::new();
    w.add("k", Value::U8(7)).unwrap();
    w.add_tensor("t", &[2], GgmlType::F32).unwrap();
    let mut s = w.begin(&path).unwrap();
    s.write_tensor("t", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    s.finish().unwrap();

    let mut want = Vec::new();
    want.extend(b"GGUF");
    want.extend(3u32.to_le_bytes());
    want.extend(1u64.to_le_bytes()); // tensors
    want.extend(1u64.to_le_bytes()); // metadata entries
    want.extend(1u64.to_le_bytes()); // key length
    want.push(b'k');
    want.extend(0u32.to_le_bytes()); // U8
    want.push(7);
    want.extend(1u64.to_le_bytes()); // name length
    want.push(b't');
    want.extend(1u32.to_le_bytes()); // n_dims
    want.extend(2u64.to_le_bytes());
    want.extend(0u32.to_le_bytes()); // F32
    want.extend(0u64.to_le_bytes()); // offset
    assert_eq!(want.len(), 71);
    want.resize(96, 0); // pad header to 32
    want.extend(1..=8u8);
    want.resize(128, 0); // pad data to 32
    assert_eq!(std::fs::read(&path).unwrap(), want);
}

#[test]
fn custom_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.gguf");
    let mut w = GgufWriter::new();
    w.add("general.alignment", Value::U32(256)).unwrap();
    w.add_tensor("x", &[3], GgmlType::F32).unwrap();
    w.add_tensor("y", &[1], GgmlType::I8).unwrap();
    let mut s = w.begin(&path).unwrap();
    s.write_tensor("x", &[0; 12]).unwrap();
    s.write_tensor("y", &[9]).unwrap();
    s.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 256);
    assert_eq!(f.data_offset(), 256);
    assert_eq!(f.tensor("y").unwrap().offset, 256);
    assert_eq!(f.tensor_data(f.tensor("y").unwrap()).unwrap(), &[9]);
}

#[test]
fn streaming_writes_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.gguf");
    let mut w = GgufWriter::new();
    w.add_tensor("big", &[1000], GgmlType::I8).unwrap();
    let mut s = w.begin(&path).unwrap();
    s.write_tensor_with("big", |out| {
        for chunk in 0..10u8 {
            out.write_all(&[chunk; 100])?;
        }
        Ok(())
    })
    .unwrap();
    s.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    let data = f.tensor_data(&f.tensors()[0]).unwrap();
    assert_eq!(data[0], 0);
    assert_eq!(data[999], 9);
}

fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn abandoned_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[4], GgmlType::F32).unwrap();
    w.add_tensor("b", &[4], GgmlType::F32).unwrap();
    let mut s = w.begin(&path).unwrap();
    s.write_tensor("a", &[0; 16]).unwrap();
    assert_eq!(
        dir_entries(dir.path()).len(),
        1,
        "only the temporary file exists"
    );
    assert!(!path.exists());
    drop(s);
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn failed_write_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, b"old contents").unwrap();
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[4], GgmlType::F32).unwrap();
    w.add_tensor("b", &[4], GgmlType::F32).unwrap();
    let mut s = w.begin(&path).unwrap();
    let err = s.write_tensor("b", &[0; 16]).unwrap_err();
    assert!(err.to_string().contains("expected tensor `a`"), "{err}");
    s.write_tensor("a", &[0; 16]).unwrap();
    let err = s.write_tensor("b", &[0; 15]).unwrap_err();
    assert!(err.to_string().contains("15 bytes written"), "{err}");
    assert!(
        s.write_tensor("b", &[0; 16]).is_err(),
        "poisoned after a failure"
    );
    assert!(s.finish().is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old contents");
    assert_eq!(dir_entries(dir.path()), vec!["m.gguf".to_string()]);

    let mut w = GgufWriter::new();
    w.add_tensor("a", &[4], GgmlType::F32).unwrap();
    let s = w.begin(&path).unwrap();
    let err = s.finish().unwrap_err();
    assert!(err.to_string().contains("not written"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old contents");
    assert_eq!(dir_entries(dir.path()), vec!["m.gguf".to_string()]);
}

#[test]
fn callback_errors_propagate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[256], GgmlType::TQ2_0).unwrap();
    let mut s = w.begin(&path).unwrap();
    let err = s
        .write_tensor_with("a", |out| {
            let bytes = tq2_0::pack_ternary(&[3i8; 256], 1.0)?;
            out.write_all(&bytes)?;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    drop(s);
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn writer_rejects_misuse() {
    let mut w = GgufWriter::new();
    w.add("k", Value::U8(1)).unwrap();
    assert!(w.add("k", Value::U8(2)).is_err());
    assert!(w.add("general.alignment", Value::U32(48)).is_err());
    assert!(w.add("general.alignment", Value::U64(64)).is_err());
    let mixed = Value::Array(ValueType::U8, vec![Value::U8(1), Value::I8(1)]);
    assert!(w.add("mixed", mixed).is_err());
    let mut deep = Value::array([1u8]);
    for _ in 0..10 {
        deep = Value::Array(ValueType::Array, vec![deep]);
    }
    assert!(w.add("deep", deep).is_err());
    w.add_tensor("t", &[256], GgmlType::TQ1_0).unwrap();
    assert!(w.add_tensor("t", &[256], GgmlType::TQ1_0).is_err());
    assert!(w.add_tensor("u", &[100], GgmlType::TQ1_0).is_err());
    assert!(w.add_tensor("v", &[1, 1, 1, 1, 1], GgmlType::F32).is_err());
    assert!(w.add_tensor("w", &[128], GgmlType::Unknown(36)).is_err());
    assert!(w
        .add_tensor("x", &[1 << 40, 1 << 40], GgmlType::F32)
        .is_err());

    // I2_S needs a bitnet.cpp-flavoured file, or type 36 would be misread.
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::from("llama")).unwrap();
    w.add_tensor("q", &[128], GgmlType::I2S).unwrap();
    assert!(w.begin(dir.path().join("x.gguf")).is_err());
    let mut w = GgufWriter::new();
    w.add("general.file_type", Value::U32(40)).unwrap();
    w.add_tensor("q", &[128], GgmlType::I2S).unwrap();
    assert!(w.begin(dir.path().join("y.gguf")).is_ok());
}

#[test]
fn type_36_outside_bitnet_files_is_listed_but_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::from("bitnet-b1.58"))
        .unwrap();
    w.add_tensor("q", &[128, 2], GgmlType::I2S).unwrap();
    let mut s = w.begin(&path).unwrap();
    s.write_tensor("q", &i2s::pack(&[0; 256], 1.0).unwrap())
        .unwrap();
    s.finish().unwrap();

    // Rewrite the architecture string in place: same length, different flavour.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"bitnet-b1.58")
        .unwrap();
    bytes[at..at + 12].copy_from_slice(b"llama-xx1.58");
    let f = GgufFile::parse(&bytes).unwrap();
    assert!(!f.is_bitnet_flavoured());
    let t = &f.tensors()[0];
    assert_eq!(t.raw_type, 36);
    assert_eq!(t.ggml_type, GgmlType::Unknown(36));
    assert_eq!(t.dims, vec![128, 2]);
    assert!(t.byte_len().is_err());
    let err = f.tensor_data(t).unwrap_err().to_string();
    assert!(err.contains("type id 36"), "{err}");
    assert!(f.tensor_range(t).is_err());
}

#[test]
fn foreign_tensor_info_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[4], GgmlType::F32).unwrap();
    let mut s = w.begin(&path).unwrap();
    s.write_tensor("a", &[0; 16]).unwrap();
    s.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    let mut fake = f.tensors()[0].clone();
    fake.n_bytes = 1 << 40;
    assert!(f.tensor_data(&fake).is_err());
    fake.name = "zzz".into();
    assert!(f.tensor_data(&fake).is_err());
    assert!(f.require_tensor("zzz").is_err());
}

#[test]
fn open_reports_io_errors_with_the_path() {
    let err = GgufFile::open("/nonexistent/dir/x.gguf").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/dir/x.gguf"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(GgufFile::open(&empty), Err(Error::Gguf { .. })));
}
