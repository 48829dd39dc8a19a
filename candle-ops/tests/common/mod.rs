//! Shared by the integration tests of this crate: the tiny synthetic model.

#![allow(dead_code)]

use bitnet_candle::synthetic::{write_synthetic_gguf, SyntheticSpec};
use bitnet_candle::{LoadOptions, Model};

/// `SyntheticSpec::tiny()` written to a temporary folder and loaded (keep the folder alive).
pub fn tiny_model() -> (tempfile::TempDir, Model) {
    tiny_model_with(&LoadOptions::default())
}

/// [`tiny_model`] loaded with `options`.
pub fn tiny_model_with(options: &LoadOptions) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_synthetic_gguf(&path, &SyntheticSpec::tiny()).unwrap();
    let model = Model::load(&path, options).unwrap();
    (dir, model)
}

/// The tiny model on the device-generic Candle-ops forward (what a GPU runs), on the CPU.
pub fn tiny_tensor_path_model() -> (tempfile::TempDir, Model) {
    tiny_model_with(&LoadOptions {
        tensor_ops_on_cpu: true,
        ..LoadOptions::default()
    })
}
