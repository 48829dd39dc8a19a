//! Deterministic mutation testing of the GGUF reader: a few thousand damaged variants of valid
//! files (bit flips, truncations, huge counts/lengths, shifted bytes) from a seeded RNG.
//! The reader must return `Ok` or `Err` for each, never panic; whatever it accepts must be
//! fully usable (tensor data in bounds, values printable, TQ/I2_S data decodable).

use bitnet_backend::formats::{i2s, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITERATIONS: usize = 4000;

fn base_files() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, bitnet) in [true, false].into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.gguf"));
        let mut w = GgufWriter::new();
        let arch = if bitnet { "bitnet-b1.58" } else { "llama" };
        w.add("general.architecture", Value::from(arch)).unwrap();
        w.add("u32", Value::U32(7)).unwrap();
        w.add("f64", Value::F64(0.5)).unwrap();
        w.add("tokens", Value::string_array(["<s>", "a", "bc", "déf"]))
            .unwrap();
        w.add("scores", Value::array([0.0f32, -1.0, -2.0, -3.0]))
            .unwrap();
        let nested = Value::Array(
            ValueType::Array,
            vec![Value::array([1u16, 2]), Value::array([3u16])],
        );
        w.add("nested", nested).unwrap();
        w.add("flag", Value::Bool(true)).unwrap();
        w.add_tensor("norm", &[8], GgmlType::F32).unwrap();
        w.add_tensor("tq1", &[256], GgmlType::TQ1_0).unwrap();
        w.add_tensor("tq2", &[256], GgmlType::TQ2_0).unwrap();
        if bitnet {
            w.add_tensor("i2s", &[128, 2], GgmlType::I2S).unwrap();
        }
        let mut s = w.begin(&path).unwrap();
        s.write_tensor("norm", &[0x3F; 32]).unwrap();
        let v: Vec<i8> = (0..256).map(|i| (i % 3) as i8 - 1).collect();
        s.write_tensor("tq1", &tq1_0::pack_ternary(&v, 0.5).unwrap())
            .unwrap();
        s.write_tensor("tq2", &tq2_0::pack_ternary(&v, 0.5).unwrap())
            .unwrap();
        if bitnet {
            let w2: Vec<i8> = v.iter().rev().copied().collect();
            s.write_tensor("i2s", &i2s::pack(&w2, 0.5).unwrap())
                .unwrap();
        }
        s.finish().unwrap();
        files.push(std::fs::read(&path).unwrap());
    }
    // The same bytes as GGUF v2 (identical layout) exercise the other version.
    let mut v2 = files[0].clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    files.push(v2);
    files
}

fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>, header_len: usize) {
    let header_len = header_len.min(bytes.len()).max(1);
    match rng.random_range(0..7) {
        0 => {
            // Flip a few bits anywhere.
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => {
            // Flip a bit in the header, where it changes structure.
            let i = rng.random_range(0..header_len);
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        2 => bytes.truncate(rng.random_range(0..bytes.len())),
        3 | 4 => {
            // Overwrite 8 header bytes (often a count or a length) with a hostile u64.
            let i = rng.random_range(0..header_len);
            let v: u64 = match rng.random_range(0..6) {
                0 => u64::MAX,
                1 => 1 << 60,
                2 => 1 << rng.random_range(0..64),
                3 => rng.random_range(0..64),
                4 => (bytes.len() as u64).wrapping_add(rng.random_range(0..64)),
                _ => rng.random(),
            };
            let end = (i + 8).min(bytes.len());
            bytes[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
        }
        5 => {
            // Overwrite a u32 in the header (a value type, n_dims or ggml type).
            let i = rng.random_range(0..header_len);
            let v: u32 = rng.random_range(0..50);
            let end = (i + 4).min(bytes.len());
            bytes[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
        }
        _ => {
            // Insert or delete a header byte, shifting everything after it.
            let i = rng.random_range(0..header_len);
            if rng.random_bool(0.5) {
                bytes.insert(i, rng.random());
            } else {
                bytes.remove(i);
            }
        }
    }
}

/// Uses everything a parsed file offers; must not panic.
fn exercise(f: &GgufFile) {
    for (key, value) in f.metadata() {
        assert!(f.get(key).is_some());
        let _ = value.to_string();
    }
    let _ = f.architecture();
    for t in f.tensors() {
        let Ok(data) = f.tensor_data(t) else {
            assert!(!t.ggml_type.is_known());
            continue;
        };
        assert_eq!(data.len() as u64, t.n_bytes);
        let n = t.n_elements() as usize;
        match t.ggml_type {
            GgmlType::TQ1_0 => {
                tq1_0::dequantize(data, n).unwrap();
            }
            GgmlType::TQ2_0 => {
                tq2_0::dequantize(data, n).unwrap();
            }
            GgmlType::I2S => {
                i2s::scale(data, n).unwrap();
                let _ = i2s::unpack(data, n);
            }
            _ => {}
        }
    }
}

#[test]
fn mutated_files_never_panic() {
    let bases = base_files();
    let header_lens: Vec<usize> = bases
        .iter()
        .map(|b| GgufFile::parse(b).unwrap().data_offset() as usize)
        .collect();
    let mut rng = StdRng::seed_from_u64(0x6767_7566);
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for i in 0..ITERATIONS {
        let which = i % bases.len();
        let mut bytes = bases[which].clone();
        for _ in 0..rng.random_range(1..=3) {
            if bytes.is_empty() {
                break;
            }
            mutate(&mut rng, &mut bytes, header_lens[which]);
        }
        match GgufFile::parse(&bytes) {
            Ok(f) => {
                exercise(&f);
                accepted += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                rejected += 1;
            }
        }
    }
    eprintln!("{ITERATIONS} mutated files: {accepted} accepted, {rejected} rejected");
    // Both outcomes must be common, or the mutations are not reaching the parser's logic.
    assert!(accepted > ITERATIONS / 40, "accepted only {accepted}");
    assert!(rejected > ITERATIONS / 4, "rejected only {rejected}");
}
