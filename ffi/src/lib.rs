//! The C API of bitnet-rs (`include/bitnet.h`): libbitnet.so / libbitnet.a.
//!
//! A thin layer over `bitnet-candle` in the style of llama.h. Every exported function runs
//! inside [`error::guard`]: arguments from C are checked (NULL, UTF-8, token and position
//! ranges, sizes) and turned into status codes, and a Rust panic becomes `BITNET_ERR_INTERNAL`
//! instead of unwinding into C. bitnet.h documents ownership and threading; the
//! `bitnet-ffi-header-check` crate checks it against these definitions with bindgen.

// C names, as spelled in bitnet.h.
#![allow(non_camel_case_types)]

pub mod batch;
pub mod chat;
pub mod context;
pub mod error;
pub mod info;
pub mod kv_cache;
pub mod model;
mod params;
pub mod sampler;
mod text;
pub mod tokenize;

pub use batch::*;
pub use chat::*;
pub use context::*;
pub use error::*;
pub use info::*;
pub use kv_cache::*;
pub use model::*;
pub use sampler::*;
pub use tokenize::*;

/// A token id.
pub type bitnet_token = i32;
/// A position in a sequence.
pub type bitnet_pos = i32;
/// A sequence of a context (`0..n_seq_max`).
pub type bitnet_seq_id = i32;
/// `enum bitnet_status_code` (C gives an enum with negative values the type `int`).
pub type bitnet_status_code = std::ffi::c_int;

/// Version of the API (`BITNET_API_VERSION`).
pub const BITNET_API_VERSION: u32 = 2;
/// "No such token".
pub const BITNET_TOKEN_NULL: bitnet_token = -1;
/// Sampler seed meaning "the context's seed".
pub const BITNET_DEFAULT_SEED: u32 = 0xFFFF_FFFF;
