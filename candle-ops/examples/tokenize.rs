//! Token ids the way `llama-tokenize --ids` prints them, for checking our GGUF tokenizer against
//! llama.cpp's (tests/llama_cpp/run.sh).
//!
//! - `tokenize vocab-gguf <checkpoint folder> <out.gguf>`: a vocabulary-only GGUF of llama.cpp's
//!   mainline `bitnet` architecture from the folder's tokenizer files (through the converter's
//!   vocabulary code), without `tokenizer.ggml.pre`, as old `bitnet` files are.
//! - `tokenize ids <model.gguf> <text file>`: the ids of the file's text, BOS first when the
//!   vocabulary asks for it, special-token texts parsed.

use std::path::Path;

use bitnet_backend::gguf::{GgufFile, GgufWriter, Value};
use bitnet_candle::tokenizer::VocabMetadata;
use bitnet_candle::{HfConfig, Tokenizer};
use bitnet_convert::tokenizer::Vocab;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("vocab-gguf") if args.len() == 4 => {
            vocab_gguf(Path::new(&args[2]), Path::new(&args[3]))
        }
        Some("ids") if args.len() == 4 => ids(Path::new(&args[2]), Path::new(&args[3])),
        _ => {
            eprintln!("usage: tokenize vocab-gguf <checkpoint folder> <out.gguf> | ids <model.gguf> <text file>");
            std::process::exit(2);
        }
    }
}

fn vocab_gguf(dir: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = HfConfig::load(dir)?;
    let vocab = Vocab::load(dir, &cfg, cfg.vocab_size)?;
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("bitnet".into()))?;
    let u = |v: usize| Value::U32(v as u32);
    for (key, value) in [
        ("context_length", u(cfg.max_position_embeddings)),
        ("embedding_length", u(cfg.hidden_size)),
        ("block_count", u(cfg.num_hidden_layers)),
        ("feed_forward_length", u(cfg.intermediate_size)),
        ("attention.head_count", u(cfg.num_attention_heads)),
        ("attention.head_count_kv", u(cfg.num_key_value_heads)),
        (
            "attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps),
        ),
        ("vocab_size", u(cfg.vocab_size)),
    ] {
        w.add(format!("bitnet.{key}"), value)?;
    }
    for (key, value) in vocab.metadata() {
        if key != "tokenizer.ggml.pre" {
            w.add(key, value)?;
        }
    }
    w.begin(out)?.finish()?;
    Ok(())
}

fn ids(model: &Path, text: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let file = GgufFile::open(model)?;
    let arch = file
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let tok = Tokenizer::from_metadata(&VocabMetadata::from_gguf(&file)?, &arch)?;
    let text = std::fs::read_to_string(text)?;
    let ids: Vec<String> = tok
        .encode(&text, true)?
        .iter()
        .map(u32::to_string)
        .collect();
    println!("[{}]", ids.join(", "));
    Ok(())
}
