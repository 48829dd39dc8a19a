//! Fuzzes the GGUF reader: any input must parse to `Ok` or `Err` without panicking, and an
//! accepted file must be fully usable. Run with `cargo +nightly fuzz run gguf_read` in fuzz/.
//! The normal test suite has a deterministic counterpart (backend/tests/gguf_mutation.rs).

#![no_main]

use bitnet_backend::formats::{i2s, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data) else {
        return;
    };
    for (key, value) in file.metadata() {
        assert!(file.get(key).is_some());
        let _ = value.to_string();
    }
    for t in file.tensors() {
        let Ok(bytes) = file.tensor_data(t) else {
            assert!(!t.ggml_type.is_known());
            continue;
        };
        assert_eq!(bytes.len() as u64, t.n_bytes);
        let n = t.n_elements() as usize;
        match t.ggml_type {
            GgmlType::TQ1_0 => assert!(tq1_0::dequantize(bytes, n).is_ok()),
            GgmlType::TQ2_0 => assert!(tq2_0::dequantize(bytes, n).is_ok()),
            GgmlType::I2S => assert!(i2s::scale(bytes, n).is_ok()),
            _ => {}
        }
    }
});
