//! Bit-exactness of the token-embedding quantizers (Q8_0, Q6_K, Q4_0) against ggml's own C
//! reference (`quantize_row_*_ref` in ggml-quants.c), compiled here from the llama.cpp sources
//! vendored in the `llama-cpp-sys-2` crate. gguf-py has no numpy Q6_K quantizer, so this is the
//! outside reference for Q6_K.
//!
//! Ignored by default: it fetches that crate's source from crates.io once (`cargo info`) and
//! needs `cc` and `tar`. Run: `cargo test -p bitnet-convert --test ggml_c_quants -- --ignored`.
//! ggml is compiled with `-ffp-contract=off`: with fused multiply-adds (GCC's default under
//! `-march=native`) ggml's own output changes with the build, and the reference is the
//! unfused arithmetic.

use std::path::{Path, PathBuf};
use std::process::Command;

use bitnet_backend::formats::{q4_0, q6_k, q8_0};
use common::{llama_cpp_sources, run};

mod common;

/// Builds a driver that quantizes a raw f32 file with ggml's reference functions.
fn build_driver(work: &Path) -> PathBuf {
    let ggml = llama_cpp_sources(work).join("ggml");
    let driver = work.join("driver.c");
    std::fs::write(
        &driver,
        r#"#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <stddef.h>
void quantize_row_q6_K_ref(const float *, void *, int64_t);
void quantize_row_q8_0_ref(const float *, void *, int64_t);
void quantize_row_q4_0_ref(const float *, void *, int64_t);
/* ggml-quants.c references these only on paths the reference quantizers never take. */
void ggml_abort(const char * f, int l, const char * fmt, ...) { abort(); }
size_t ggml_row_size(int t, long n) { abort(); }
const char * ggml_type_name(int t) { abort(); }
size_t ggml_type_size(int t) { abort(); }
int main(int argc, char ** argv) {
    int64_t n = atoll(argv[3]);
    float * x = malloc(n * 4);
    FILE * f = fopen(argv[2], "rb");
    if (!f || fread(x, 4, n, f) != (size_t) n) return 1;
    fclose(f);
    void * y = malloc(n * 2);
    size_t bytes;
    if (argv[1][1] == '6') { quantize_row_q6_K_ref(x, y, n); bytes = n / 256 * 210; }
    else if (argv[1][1] == '8') { quantize_row_q8_0_ref(x, y, n); bytes = n / 32 * 34; }
    else { quantize_row_q4_0_ref(x, y, n); bytes = n / 32 * 18; }
    f = fopen(argv[4], "wb");
    return !f || fwrite(y, 1, bytes, f) != bytes;
}
"#,
    )
    .unwrap();
    let exe = work.join("ggml-quant");
    run(Command::new("cc")
        .args(["-O2", "-ffp-contract=off", "-std=gnu11"])
        .arg("-I")
        .arg(ggml.join("include"))
        .arg("-I")
        .arg(ggml.join("src"))
        .arg(ggml.join("src/ggml-quants.c"))
        .arg(&driver)
        .arg("-o")
        .arg(&exe)
        .arg("-lm"));
    exe
}

/// Deterministic test inputs of several distributions, `n` values each.
fn inputs(n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut sets = Vec::new();
    sets.push((
        "uniform",
        (0..n).map(|_| (rnd() * 2.0 - 1.0) as f32).collect(),
    ));
    sets.push((
        "gaussian",
        (0..n)
            .map(|_| {
                let (u, v) = (rnd().max(1e-12), rnd());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 0.02) as f32
            })
            .collect(),
    ));
    sets.push((
        "outliers",
        (0..n)
            .map(|i| {
                let x = (rnd() * 2.0 - 1.0) as f32;
                match (i % 97, i % 13) {
                    (0, _) => x * 1000.0,
                    (_, 0) => 0.0,
                    _ => x * 1e-3,
                }
            })
            .collect(),
    ));
    sets.push((
        "bf16",
        (0..n)
            .map(|_| half::bf16::from_f32((rnd() * 2.0 - 1.0) as f32 * 0.05).to_f32())
            .collect(),
    ));
    sets.push((
        "tiny",
        (0..n)
            .map(|i| {
                if (i / 256) % 3 == 0 {
                    0.0
                } else {
                    (rnd() as f32 - 0.5) * 1e-20
                }
            })
            .collect(),
    ));
    sets.push((
        "integers",
        (0..n)
            .map(|_| ((rnd() * 64.0) as i32 - 32) as f32)
            .collect(),
    ));
    sets
}

#[test]
#[ignore = "fetches llama.cpp sources from crates.io once and needs a C compiler"]
fn q8_0_q6_k_q4_0_match_ggml_reference_bit_for_bit() {
    let work = tempfile::tempdir().unwrap();
    let exe = build_driver(work.path());
    let n = 256 * 1024;
    for (name, x) in inputs(n) {
        let input = work.path().join(format!("{name}.f32"));
        std::fs::write(
            &input,
            x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        for (ty, ours) in [
            ("q6_k", q6_k::quantize(&x).unwrap()),
            ("q8_0", q8_0::quantize(&x).unwrap()),
            ("q4_0", q4_0::quantize(&x).unwrap()),
        ] {
            let out = work.path().join(format!("{name}.{ty}"));
            run(Command::new(&exe)
                .arg(ty)
                .arg(&input)
                .arg(n.to_string())
                .arg(&out));
            let theirs = std::fs::read(&out).unwrap();
            let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert!(
                ours == theirs,
                "{ty} on {name}: {differing} of {} bytes differ from ggml",
                theirs.len()
            );
        }
    }
}
