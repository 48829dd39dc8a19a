//! libbitnet.so exports exactly the functions bitnet.h declares (the compile-time checks of this
//! crate cover the other direction and the signatures).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// libbitnet.so as cargo built it for this test: a dependency's cdylib lands in `deps/`, next
/// to the test executable.
fn shared_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let lib = exe.with_file_name("libbitnet.so");
    assert!(lib.is_file(), "{} is missing", lib.display());
    lib
}

#[test]
#[cfg(target_os = "linux")]
fn the_shared_library_exports_exactly_the_header_functions() {
    let lib = shared_library();
    let nm = std::env::var("NM").unwrap_or_else(|_| "nm".into());
    let out = Command::new(&nm)
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .unwrap_or_else(|e| panic!("running {nm} (binutils): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    let declared: BTreeSet<String> = bitnet_ffi_header_check::FUNCTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    assert!(
        undeclared.is_empty() && missing.is_empty(),
        "exported but not in bitnet.h: {undeclared:?}; declared but not exported: {missing:?}"
    );
}
