//! BitNet b1.58 for Candle.
//!
//! - [`TernaryMatMul`]: a Candle `CustomOp1` owning repacked ternary weights, running the
//!   `bitnet-backend` kernels (int8 activations per token, exact integer dot products).
//! - [`BitLinear`]: a `candle_nn::Module` around it, from GGUF tensors (I2_S, TQ2_0, TQ1_0) or
//!   Candle tensors.
//! - [`Model`]: GGUF models of the `bitnet-b1.58` / `bitnet-25` (BitNet b1.58 2B4T), `bitnet`
//!   (1bitLLM, as llama.cpp defines it) and ternary `llama` architectures, with the tokenizer
//!   built from the file's metadata, chat templates, sampling and streaming generation.
//!
//! Weights are shared (`Arc<ModelWeights>`); each sequence has its own [`KvCache`] /
//! [`Session`]. Activations are f32 end to end (BitNet's ReLU² overflows f16).

pub mod batch;
pub mod bit_linear;
pub mod chat_template;
#[cfg(feature = "cuda")]
pub mod cuda_bench;
pub mod device;
pub mod embedding;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod models;
pub mod op;
pub mod piece;
pub mod pool;
pub mod rope;
pub mod safetensors_backend;
pub mod sampling;
pub mod scheduler;
pub mod synthetic;
pub mod tokenizer;

pub use batch::{Batch, BatchLogits};
pub use bit_linear::{bit_linear, BitLinear};
pub use bitnet_convert::arch::WeightRule;
pub use bitnet_convert::hf::config::HfConfig;
pub use candle_core::Device;
pub use chat_template::{ChatMessage, ChatTemplate};
pub use device::{cuda_device, parse_device};
pub use embedding::DenseWeights;
pub use error::{Error, Result};
pub use generate::{
    Generation, GenerationParams, Generator, Session, StopReason, TextStreamer, TokenStep,
};
pub use kv_cache::{KvCache, KvDtype, SeqId};
pub use models::{
    is_checkpoint_dir, Architecture, BareModel, DecodeMode, HeadType, LoadOptions, Logits, Model,
    ModelConfig, ModelWeights,
};
pub use op::TernaryMatMul;
pub use piece::Pieces;
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::Tokenizer;
