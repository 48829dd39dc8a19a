//! Shared by the CLI integration tests: a tiny synthetic model and running the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A tiny BitNet b1.58 model (random ternary weights, real tensor layout), written once per
/// test binary.
pub fn tiny_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tiny.gguf");
        bitnet_candle::synthetic::write_synthetic_gguf(
            &path,
            &bitnet_candle::synthetic::SyntheticSpec::tiny(),
        )
        .expect("write tiny model");
        (dir, path)
    });
    path
}

pub fn bitnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(args)
        .env("BITNET_NUM_THREADS", "2")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run bitnet")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure reported as one `error:` line, without a panic or backtrace.
pub fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("stack backtrace"), "backtrace: {err}");
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "expected one error line: {err}");
    assert!(
        error_lines[0].contains(needle),
        "error line lacks `{needle}`: {err}"
    );
}

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}
