//! `tq_test_models <out-dir>`: the small end-to-end models of tests/llama_cpp/run.sh.
//!
//! Generates the converter's synthetic 1bitLLM-style checkpoint (`BitnetForCausalLM`, SiLU,
//! f16 masters, SentencePiece vocabulary; from convert/tests/common) and converts it with
//! bitnet-convert to mainline llama.cpp's `bitnet` architecture as `tiny-tq2_0.gguf` and
//! `tiny-tq1_0.gguf`.

#[path = "../../convert/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use bitnet_convert::{convert_to, OutType};

fn main() {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: tq_test_models <out-dir>");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        std::process::exit(1);
    }
    let ck = common::generate(common::Spec::one_bit_llm());
    for (outtype, name) in [
        (OutType::Tq2_0, "tiny-tq2_0.gguf"),
        (OutType::Tq1_0, "tiny-tq1_0.gguf"),
    ] {
        let path = out.join(name);
        match convert_to(ck.path(), &path, outtype) {
            Ok(_) => println!("{}", path.display()),
            Err(e) => {
                eprintln!("error: converting to {name}: {e}");
                std::process::exit(1);
            }
        }
    }
}
