//! The Python interpreter of the cross-language tests, shared by the backend, converter and
//! server integration tests (`#[path]`-included): `BITNET_PYTHON`, else the workspace's
//! `.venv`, which must have the pinned packages (tests/setup-python.sh installs them: gguf and
//! numpy for the gguf-py cross-checks, openai and prometheus-client for the server's).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (every including crate sits one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate has a parent folder")
        .to_path_buf()
}

/// The checked interpreter for the gguf-py cross-checks; panics with the fix when there is none.
pub fn python() -> PathBuf {
    python_with(&[("gguf", "0.19.0"), ("numpy", "")])
}

/// The interpreter, checked to have each `(package, version)` (`""`: any version); panics with
/// the fix when it does not.
pub fn python_with(packages: &[(&str, &str)]) -> PathBuf {
    let py = std::env::var_os("BITNET_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let wanted: Vec<String> = packages
        .iter()
        .map(|(name, version)| format!("('{name}', '{version}')"))
        .collect();
    let check = format!(
        "import importlib.metadata as m\n\
         for name, version in [{}]:\n    \
             v = m.version(name)\n    \
             assert not version or v == version, f'{{name}} {{v}} installed, {{version}} needed'",
        wanted.join(", ")
    );
    let ok = Command::new(&py)
        .args(["-c", &check])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let list: Vec<String> = packages
        .iter()
        .map(|(n, v)| {
            if v.is_empty() {
                n.to_string()
            } else {
                format!("{n}=={v}")
            }
        })
        .collect();
    assert!(
        ok,
        "no usable Python with {} at {} (set BITNET_PYTHON or run \
         `bash tests/setup-python.sh` in the workspace root)",
        list.join(", "),
        py.display()
    );
    py
}
