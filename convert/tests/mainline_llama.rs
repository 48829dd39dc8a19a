//! Mainline llama.cpp loads and runs the converter's `bitnet` (1bitLLM-style) and `llama`
//! (ternary Llama) files: TQ2_0 and TQ1_0 give identical logits (same ternary values and
//! scales), within ggml's Q8_K activation rounding of the F32 reference file's; I2_S, which only
//! bitnet.cpp knows, is refused by mainline as expected.
//!
//! Ignored by default: it builds libllama from the llama.cpp sources vendored in the
//! `llama-cpp-sys-2` crate (fetched once from crates.io; about 10 minutes on 2 cores, cached in
//! the target directory) and needs cmake and a C/C++ compiler.
//! Run: `cargo test -p bitnet-convert --test mainline_llama -- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bitnet_convert::{convert_to, OutType};
use common::*;

const HOST: &str = r#"
#include <stdio.h>
#include "llama.h"
/* host <model.gguf> <logits.f32>: decodes 5 fixed token ids, writes the last position's logits. */
int main(int argc, char ** argv) {
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) return 2;
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 64; cp.n_batch = 64; cp.n_threads = 2; cp.n_threads_batch = 2;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) return 3;
    llama_token toks[5] = {1, 10, 20, 30, 40};
    if (llama_decode(ctx, llama_batch_get_one(toks, 5))) return 4;
    float * lg = llama_get_logits_ith(ctx, -1);
    FILE * f = fopen(argv[2], "wb");
    if (!f || fwrite(lg, 4, nv, f) != (size_t) nv) return 5;
    fclose(f);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
"#;

/// Builds libllama (once) and the host program; returns the host's path.
fn build_host() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mainline-llama");
    let src = llama_cpp_sources(&cache);
    let build = cache.join("build");
    let lib = build.join("src/libllama.a");
    if !lib.is_file() {
        run(Command::new("cmake")
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(&build)
            .args([
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DLLAMA_BUILD_APP=OFF",
                "-DLLAMA_BUILD_TOOLS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_SERVER=OFF",
                "-DLLAMA_BUILD_COMMON=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DGGML_OPENMP=OFF",
            ]));
        run(Command::new("cmake")
            .arg("--build")
            .arg(&build)
            .args(["-j2", "--target", "llama"]));
    }
    let host_c = cache.join("host.c");
    std::fs::write(&host_c, HOST).unwrap();
    let host = cache.join("host");
    let ggml_libs = [
        "ggml/src/libggml.a",
        "ggml/src/libggml-cpu.a",
        "ggml/src/libggml-base.a",
    ]
    .map(|l| build.join(l));
    run(Command::new("cc")
        .args(["-O2"])
        .arg(&host_c)
        .arg("-I")
        .arg(src.join("include"))
        .arg("-I")
        .arg(src.join("ggml/include"))
        .arg("-o")
        .arg(&host)
        .arg(&lib)
        .args(&ggml_libs)
        .args(&ggml_libs)
        .args(["-lstdc++", "-lm", "-lpthread"]));
    host
}

fn logits(host: &Path, model: &Path) -> Result<Vec<f32>, String> {
    let out = model.with_extension("logits");
    let status = Command::new(host).arg(model).arg(&out).output().unwrap();
    if !status.status.success() {
        return Err(String::from_utf8_lossy(&status.stderr).into_owned());
    }
    Ok(std::fs::read(&out)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

#[test]
#[ignore = "builds llama.cpp from crates.io sources (about 10 minutes); needs cmake and a C++ compiler"]
fn mainline_llama_cpp_runs_bitnet_and_llama_files() {
    let host = build_host();
    // Mainline needs a vocabulary with byte-level tokens: borrow a fixture's tokenizer.
    let fixture = workspace_root().join("tests/fixtures/bitnet-gqa4-autobitlinear");
    let specs = [
        (
            "bitnet",
            Spec {
                vocab: 383,
                sentencepiece: false,
                ..Spec::one_bit_llm()
            },
        ),
        (
            "llama",
            Spec {
                vocab: 383,
                lm_head: false,
                ..Spec::llama()
            },
        ),
    ];
    for (arch, spec) in specs {
        let ck = generate(spec);
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            std::fs::copy(fixture.join(f), ck.path().join(f)).unwrap();
        }
        let file = |t: OutType| {
            let p = ck.path().join(format!("{arch}-{t}.gguf"));
            convert_to(ck.path(), &p, t).unwrap();
            p
        };
        let reference =
            logits(&host, &file(OutType::F32)).unwrap_or_else(|e| panic!("{arch} f32: {e}"));
        let tq2 =
            logits(&host, &file(OutType::Tq2_0)).unwrap_or_else(|e| panic!("{arch} tq2_0: {e}"));
        let tq1 =
            logits(&host, &file(OutType::Tq1_0)).unwrap_or_else(|e| panic!("{arch} tq1_0: {e}"));
        assert_eq!(reference.len(), 383);
        assert!(
            reference.iter().all(|v| v.is_finite()),
            "{arch}: non-finite logits"
        );
        assert_eq!(tq1, tq2, "{arch}: TQ1_0 and TQ2_0 hold the same weights");
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = reference
            .iter()
            .zip(&tq2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err <= 0.02 * scale,
            "{arch}: TQ2_0 logits differ from F32 by {err} (max |logit| {scale})"
        );
        let e = logits(&host, &file(OutType::I2S)).expect_err("mainline must refuse I2_S");
        assert!(
            e.contains("failed to read tensor info") || e.contains("type 36"),
            "{arch}: {e}"
        );
    }
}
