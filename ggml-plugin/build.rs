//! Generates the ggml bindings from the vendored headers (see vendor/ggml/README.md), so every
//! struct the plugin shares with the host has the host's layout by construction; bindgen also
//! emits size/offset tests for each of them.

use std::path::PathBuf;

fn main() {
    let vendor = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vendor/ggml");
    for f in [
        "ggml.h",
        "ggml-alloc.h",
        "ggml-backend.h",
        "ggml-backend-impl.h",
        "VERSION",
    ] {
        println!("cargo:rerun-if-changed={}", vendor.join(f).display());
    }
    let version = std::fs::read_to_string(vendor.join("VERSION")).expect("vendor/ggml/VERSION");
    println!("cargo:rustc-env=BITNET_GGML_VERSION={}", version.trim());

    let bindings = bindgen::Builder::default()
        .header(vendor.join("ggml-backend-impl.h").to_string_lossy())
        .clang_arg(format!("-I{}", vendor.display()))
        .allowlist_type("ggml_.*")
        .allowlist_var("GGML_.*")
        // Functions are resolved from the host at run time (no link-time libggml dependency).
        .blocklist_function(".*")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(true)
        .generate()
        .expect("bindgen over vendor/ggml/ggml-backend-impl.h (needs libclang: apt-get install libclang-dev)");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("ggml_bindings.rs"))
        .expect("write bindings");
}
