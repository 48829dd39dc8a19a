//! Reading Hugging Face model folders: config, safetensors weights, and hub resolution.

pub mod config;
pub mod hub;
pub mod safetensors_source;
