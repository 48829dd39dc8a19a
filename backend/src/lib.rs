//! bitnet-backend: ternary weight formats, the GGUF container and SIMD ternary matmul kernels.
//!
//! Knows nothing of Candle, C or HTTP: every consumer (Candle op, C ABI, ggml plugin, benches)
//! calls the same entry points here.

pub mod error;
pub mod formats;
pub mod gguf;

pub mod dense;

pub use error::{Error, Result};
