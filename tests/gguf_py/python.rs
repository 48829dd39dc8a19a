//! The Python interpreter for the gguf-py cross-checks, shared by the backend and converter
//! integration tests (`#[path]`-included): `BITNET_PYTHON`, else the workspace's `.venv`, and
//! it must have gguf 0.19.0 and numpy (tests/setup-python.sh installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (every including crate sits one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate has a parent folder")
        .to_path_buf()
}

/// The checked interpreter; panics with the fix when there is none.
pub fn python() -> PathBuf {
    let py = std::env::var_os("BITNET_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let check = "import importlib.metadata as m, numpy; v = m.version('gguf'); \
                 assert v == '0.19.0', 'gguf ' + v + ' installed, 0.19.0 needed'";
    let ok = Command::new(&py)
        .args(["-c", check])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "no usable Python with gguf==0.19.0 and numpy at {} (set BITNET_PYTHON or run \
         `bash tests/setup-python.sh` in the workspace root)",
        py.display()
    );
    py
}
