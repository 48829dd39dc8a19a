//! `synthetic_gguf <out.gguf> <tq2_0|tq1_0|i2_s>`: a BitNet b1.58 2B4T-shaped model (2560
//! wide, 30 blocks, 20/5 heads, FFN 6912, 128256 vocabulary, F16 tied embedding, random ternary
//! weights), for the llama-bench comparisons: TQ2_0/TQ1_0 in llama.cpp mainline's `bitnet`
//! architecture, I2_S in bitnet.cpp's `bitnet-b1.58`. All three hold the same weights.

use std::path::PathBuf;

use bitnet_backend::gguf::GgmlType;
use bitnet_candle::synthetic::{write_synthetic_gguf, SyntheticSpec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ty, architecture) = match args.get(1).map(String::as_str) {
        Some("tq2_0") => (GgmlType::TQ2_0, "bitnet"),
        Some("tq1_0") => (GgmlType::TQ1_0, "bitnet"),
        Some("i2_s") => (GgmlType::I2S, "bitnet-b1.58"),
        _ => {
            eprintln!("usage: synthetic_gguf <out.gguf> <tq2_0|tq1_0|i2_s>");
            std::process::exit(2);
        }
    };
    let spec = SyntheticSpec {
        architecture: architecture.into(),
        ternary_type: ty,
        ..SyntheticSpec::bitnet_2b4t()
    };
    if let Err(e) = write_synthetic_gguf(PathBuf::from(&args[0]), &spec) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
