//! Flags shared by several subcommands, named as llama.cpp names them.

use bitnet_candle::{GenerationParams, HeadType, KvDtype, SamplingParams};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF file, or a Hugging Face repo id (e.g. microsoft/bitnet-b1.58-2B-4T-gguf).
    #[arg(short = 'm', long = "model")]
    pub model: String,
    /// Threads for the kernels [default: every available CPU, or BITNET_NUM_THREADS].
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Context size in tokens [default: the model's training context].
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Key/value cache type.
    #[arg(long = "cache-type", value_enum, default_value_t = CacheType::F32)]
    pub cache_type: CacheType,
    /// A tokenizer.json to use instead of the vocabulary in the GGUF.
    #[arg(long = "tokenizer")]
    pub tokenizer: Option<PathBuf>,
    /// Use only the local Hugging Face cache for repo ids (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Where the model runs: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long = "device", default_value = "cpu")]
    pub device: String,
    /// LM head storage: as in the file, or quantized once at load (fewer bytes per token,
    /// slightly different logits; see the README's fidelity table).
    #[arg(long = "head-type", value_enum, default_value_t = HeadTypeArg::File)]
    pub head_type: HeadTypeArg,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadTypeArg {
    /// As the file stores it.
    File,
    /// ggml Q8_0 (8.5 bits per weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// ggml Q6_K (6.56 bits per weight).
    #[value(name = "q6_k")]
    Q6K,
    /// ggml Q4_0 (4.5 bits per weight).
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<HeadTypeArg> for HeadType {
    fn from(h: HeadTypeArg) -> HeadType {
        match h {
            HeadTypeArg::File => HeadType::File,
            HeadTypeArg::Q8_0 => HeadType::Q8_0,
            HeadTypeArg::Q6K => HeadType::Q6K,
            HeadTypeArg::Q4_0 => HeadType::Q4_0,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheType {
    /// f32 keys and values (matches the reference implementation).
    F32,
    /// f16 keys and values (half the memory; logits move slightly).
    F16,
}

impl From<CacheType> for KvDtype {
    fn from(c: CacheType) -> KvDtype {
        match c {
            CacheType::F32 => KvDtype::F32,
            CacheType::F16 => KvDtype::F16,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Number of tokens to generate (-1 = until end of generation or a full context).
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 256,
        allow_hyphen_values = true
    )]
    pub n_predict: i64,
    /// Temperature; 0 = greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k sampling (0 = disabled).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (nucleus) sampling (1.0 = disabled).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Penalize repeated tokens (1.0 = disabled).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Last n tokens considered by the repeat penalty.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// RNG seed [default: random].
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
    /// Keep generating past end-of-generation tokens (benchmarks, tests).
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    /// Sampling settings, with a fresh random seed when none was given.
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed.unwrap_or_else(random_seed),
        }
    }

    /// Generation settings for a context of `n_ctx` tokens.
    pub fn generation(&self, n_ctx: usize) -> GenerationParams {
        let max_new_tokens = usize::try_from(self.n_predict).unwrap_or(n_ctx);
        GenerationParams {
            max_new_tokens,
            sampling: self.sampling(),
            ignore_eos: self.ignore_eos,
            ..GenerationParams::default()
        }
    }
}

fn random_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    RandomState::new().hash_one(std::time::SystemTime::now())
}
