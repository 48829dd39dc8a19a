//! bitnet-backend: ternary weight formats, the GGUF container and SIMD ternary matmul kernels.
//!
//! Knows nothing of Candle, C or HTTP: every consumer (Candle op, C ABI, ggml plugin, benches)
//! calls the same entry points here.

pub mod error;
pub mod formats;
pub mod gguf;

pub mod activation_quant;
pub mod bandwidth;
pub mod compute_peak;
pub mod dense;
pub mod huge_pages;
pub mod kernels;
pub mod matmul;
pub mod matmul_q8k;
pub mod repack;
pub mod threads;

pub use activation_quant::QuantizedActivations;
pub use repack::TernaryMatrix;

pub use error::{Error, Result};
