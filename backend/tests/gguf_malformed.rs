//! Malformed GGUF input: every kind of damage is a typed error naming what is wrong, never a
//! panic, a huge allocation or an out-of-bounds read.

use bitnet_backend::error::GgufErrorKind;
use bitnet_backend::gguf::{GgmlType, GgufFile, GgufWriter, Value, MAX_ARRAY_DEPTH};
use bitnet_backend::Error;

/// Hand-assembles GGUF bytes, so headers can say anything.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw::default()
            .bytes(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn u8(self, v: u8) -> Raw {
        self.bytes(&[v])
    }
    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A metadata entry holding a u32.
    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads to `align` and appends `n` data bytes.
    fn data(mut self, align: usize, n: usize) -> Raw {
        self.0.resize(self.0.len().next_multiple_of(align), 0);
        self.0.extend((0..n).map(|i| i as u8));
        self
    }
}

fn kind(bytes: &[u8]) -> GgufErrorKind {
    match GgufFile::parse(bytes) {
        Err(Error::Gguf { kind, .. }) => kind,
        Err(e) => panic!("expected a GGUF format error, got {e}"),
        Ok(_) => panic!("malformed file was accepted"),
    }
}

#[test]
fn hand_built_v2_and_v3_files_parse() {
    for version in [2, 3] {
        let raw = Raw::header(version, 2, 1)
            .kv_u32("k", 5)
            .tensor("a", &[4], 0, 0)
            .tensor("b", &[2, 2], 1, 32)
            .data(32, 40);
        let f = GgufFile::parse(&raw.0).unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.get_u32("k").unwrap(), 5);
        let b = f.tensor("b").unwrap();
        assert_eq!(
            f.tensor_data(b).unwrap(),
            &(32..40).collect::<Vec<u8>>()[..]
        );
    }
}

#[test]
fn bad_magic_version_endianness() {
    assert_eq!(kind(b"GGUX\x03\0\0\0"), GgufErrorKind::BadMagic(*b"GGUX"));
    let v1 = Raw::header(1, 0, 0);
    assert_eq!(kind(&v1.0), GgufErrorKind::UnsupportedVersion(1));
    let v9 = Raw::header(9, 0, 0);
    assert_eq!(kind(&v9.0), GgufErrorKind::UnsupportedVersion(9));
    let be = Raw::default()
        .bytes(b"GGUF")
        .bytes(&3u32.to_be_bytes())
        .u64(0)
        .u64(0);
    assert_eq!(kind(&be.0), GgufErrorKind::BigEndian);
    assert!(matches!(kind(b"GG"), GgufErrorKind::Truncated { .. }));
    assert!(matches!(GgufFile::parse(b""), Err(Error::Gguf { .. })));
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::from("bitnet-b1.58"))
        .unwrap();
    w.add("a", Value::string_array(["x", "yy"])).unwrap();
    w.add("n", Value::F64(2.5)).unwrap();
    w.add_tensor("t0", &[3], GgmlType::F32).unwrap();
    w.add_tensor("t1", &[128], GgmlType::I2S).unwrap();
    let mut s = w.begin(&path).unwrap();
    s.write_tensor("t0", &[1; 12]).unwrap();
    s.write_tensor("t1", &[0x55; 64]).unwrap();
    s.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let f = GgufFile::parse(&bytes).unwrap();
    let t1 = f.tensor("t1").unwrap();
    let data_end = (f.data_offset() + t1.offset + t1.n_bytes) as usize;
    for len in 0..bytes.len() {
        let r = GgufFile::parse(&bytes[..len]);
        if len < data_end {
            assert!(r.is_err(), "prefix of {len} bytes accepted");
        } else {
            assert!(r.is_ok(), "only padding was cut at {len}");
        }
    }
}

#[test]
fn huge_counts_and_lengths_fail_without_allocating() {
    // Array of 2^60 u64 items: rejected from the count alone.
    let arr = Raw::header(3, 0, 1).str("k").u32(9).u32(10).u64(1 << 60);
    assert!(matches!(
        kind(&arr.0),
        GgufErrorKind::CountTooLarge {
            what: "array item",
            count,
            ..
        } if count == 1 << 60
    ));
    // Array of 2^61 empty strings.
    let strs = Raw::header(3, 0, 1).str("k").u32(9).u32(8).u64(1 << 61);
    assert!(matches!(kind(&strs.0), GgufErrorKind::CountTooLarge { .. }));
    // u64::MAX items of a 1-byte type: count * size must not overflow into acceptance.
    let max = Raw::header(3, 0, 1).str("k").u32(9).u32(0).u64(u64::MAX);
    assert!(matches!(kind(&max.0), GgufErrorKind::CountTooLarge { .. }));
    // Key length and value string length beyond the file.
    let key = Raw::header(3, 0, 1).u64(u64::MAX - 3).bytes(b"abc");
    assert!(matches!(kind(&key.0), GgufErrorKind::CountTooLarge { .. }));
    let val = Raw::header(3, 0, 1).str("k").u32(8).u64(1 << 40);
    assert!(matches!(kind(&val.0), GgufErrorKind::CountTooLarge { .. }));
    // Metadata and tensor counts.
    let kvs = Raw::header(3, 0, u64::MAX);
    assert!(matches!(kind(&kvs.0), GgufErrorKind::CountTooLarge { .. }));
    let ts = Raw::header(3, 1 << 59, 0);
    assert!(matches!(kind(&ts.0), GgufErrorKind::CountTooLarge { .. }));
}

#[test]
fn bad_values() {
    let bad_type = Raw::header(3, 0, 1).str("k").u32(13).u32(0);
    assert_eq!(kind(&bad_type.0), GgufErrorKind::InvalidValueType(13));
    let bad_item_type = Raw::header(3, 0, 1).str("k").u32(9).u32(99).u64(0);
    assert_eq!(kind(&bad_item_type.0), GgufErrorKind::InvalidValueType(99));
    let bad_bool = Raw::header(3, 0, 1).str("k").u32(7).u8(2);
    assert_eq!(kind(&bad_bool.0), GgufErrorKind::InvalidBool(2));
    let bad_utf8 = Raw::header(3, 0, 1)
        .str("k")
        .u32(8)
        .u64(2)
        .bytes(&[0xC3, 0x28]);
    assert_eq!(kind(&bad_utf8.0), GgufErrorKind::InvalidUtf8);
    let dup = Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2);
    assert_eq!(kind(&dup.0), GgufErrorKind::DuplicateKey("k".into()));
}

#[test]
fn nesting_depth_is_bounded() {
    let nested = |levels: usize| {
        let mut r = Raw::header(3, 0, 1).str("k").u32(9);
        for _ in 0..levels - 1 {
            r = r.u32(9).u64(1); // an array holding one array
        }
        r.u32(0).u64(1).u8(7) // innermost: one u8
    };
    assert!(GgufFile::parse(&nested(MAX_ARRAY_DEPTH).0).is_ok());
    assert_eq!(
        kind(&nested(MAX_ARRAY_DEPTH + 1).0),
        GgufErrorKind::NestingTooDeep {
            limit: MAX_ARRAY_DEPTH
        }
    );
    // Far deeper than the limit: still an error, no stack overflow.
    assert!(matches!(
        kind(&nested(100_000).0),
        GgufErrorKind::NestingTooDeep { .. }
    ));
}

#[test]
fn bad_alignment() {
    for (ty, value) in [(4u32, 0u32), (4, 48)] {
        let r = Raw::header(3, 0, 1)
            .str("general.alignment")
            .u32(ty)
            .u32(value);
        assert!(matches!(kind(&r.0), GgufErrorKind::BadAlignment(_)));
    }
    let wrong_type = Raw::header(3, 0, 1)
        .str("general.alignment")
        .u32(10)
        .u64(32);
    assert!(matches!(
        kind(&wrong_type.0),
        GgufErrorKind::BadAlignment(_)
    ));
    let ok = Raw::header(3, 1, 1)
        .kv_u32("general.alignment", 8)
        .tensor("t", &[2], 0, 8)
        .data(8, 16);
    let f = GgufFile::parse(&ok.0).unwrap();
    assert_eq!(f.alignment(), 8);
    assert_eq!(
        f.tensor_data(&f.tensors()[0]).unwrap(),
        &[8, 9, 10, 11, 12, 13, 14, 15]
    );
}

#[test]
fn bad_tensor_infos() {
    let too_many_dims = Raw::header(3, 1, 0).tensor("t", &[1, 1, 1, 1, 1], 0, 0);
    assert!(matches!(
        kind(&too_many_dims.0),
        GgufErrorKind::TooManyDims { n_dims: 5, .. }
    ));
    let overflow = Raw::header(3, 1, 0).tensor("t", &[1 << 32, 1 << 32], 0, 0);
    assert!(matches!(kind(&overflow.0), GgufErrorKind::BadDims { .. }));
    let negative = Raw::header(3, 1, 0).tensor("t", &[u64::MAX], 0, 0);
    assert!(matches!(kind(&negative.0), GgufErrorKind::BadDims { .. }));
    let partial_block = Raw::header(3, 1, 0).tensor("t", &[100], 35, 0).data(32, 66);
    assert!(matches!(
        kind(&partial_block.0),
        GgufErrorKind::BadShape { .. }
    ));
    let misaligned = Raw::header(3, 1, 0).tensor("t", &[1], 0, 4).data(32, 64);
    assert!(matches!(
        kind(&misaligned.0),
        GgufErrorKind::MisalignedOffset {
            offset: 4,
            alignment: 32,
            ..
        }
    ));
    let out_of_bounds = Raw::header(3, 1, 0).tensor("t", &[16], 0, 0).data(32, 63);
    assert!(matches!(
        kind(&out_of_bounds.0),
        GgufErrorKind::DataOutOfBounds { .. }
    ));
    let far = Raw::header(3, 1, 0)
        .tensor("t", &[1], 0, u64::MAX - 31)
        .data(32, 4);
    assert!(matches!(
        kind(&far.0),
        GgufErrorKind::DataOutOfBounds { .. }
    ));
    let overlap = Raw::header(3, 2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[4], 0, 32)
        .data(32, 64);
    assert!(matches!(kind(&overlap.0), GgufErrorKind::Overlap { .. }));
    let dup = Raw::header(3, 2, 0)
        .tensor("a", &[1], 0, 0)
        .tensor("a", &[1], 0, 32)
        .data(32, 64);
    assert_eq!(kind(&dup.0), GgufErrorKind::DuplicateTensor("a".into()));
}

#[test]
fn unknown_types_are_listed_and_only_fail_on_use() {
    // 36 without bitnet.cpp metadata, 99 anywhere: the header still reads.
    let raw = Raw::header(3, 3, 0)
        .tensor("removed", &[256, 4], 36, 0)
        .tensor("future", &[7], 99, 0)
        .tensor("ok", &[2], 0, 0)
        .data(32, 8);
    let f = GgufFile::parse(&raw.0).unwrap();
    let names: Vec<_> = f.tensors().iter().map(|t| t.ggml_type).collect();
    assert_eq!(
        names,
        [GgmlType::Unknown(36), GgmlType::Unknown(99), GgmlType::F32]
    );
    for t in &f.tensors()[..2] {
        assert!(matches!(f.tensor_data(t), Err(Error::Tensor { .. })));
        assert!(t.byte_len().is_err());
    }
    assert_eq!(
        f.tensor_data(&f.tensors()[2]).unwrap(),
        &[0, 1, 2, 3, 4, 5, 6, 7]
    );

    // With general.file_type 40 the same id is I2_S and is sized and bounds-checked.
    let i2s = Raw::header(3, 1, 1)
        .kv_u32("general.file_type", 40)
        .tensor("q", &[128, 2], 36, 0);
    assert!(matches!(
        kind(&i2s.clone().data(32, 10).0),
        GgufErrorKind::DataOutOfBounds { .. }
    ));
    let f = GgufFile::parse(&i2s.data(32, 96).0).unwrap();
    assert_eq!(f.tensors()[0].ggml_type, GgmlType::I2S);
    assert_eq!(f.tensor_data(&f.tensors()[0]).unwrap().len(), 96);
}

#[test]
fn typed_getters_explain_mismatches() {
    let raw = Raw::header(3, 0, 2)
        .kv_u32("n", 7)
        .str("s")
        .u32(8)
        .str("text");
    let f = GgufFile::parse(&raw.0).unwrap();
    let err = f.get_str("n").unwrap_err().to_string();
    assert!(
        err.contains("`n`") && err.contains("expected a string"),
        "{err}"
    );
    assert!(f.get_u32("s").is_err());
    assert!(f.architecture().is_err());
    assert_eq!(f.get_f32("n").unwrap(), 7.0);
    assert_eq!(f.get_u64("n").unwrap(), 7);
}
