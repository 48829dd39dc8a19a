//! BitNet b1.58 with ReLU² (microsoft/bitnet-b1.58-2B-4T, packed or -bf16 masters) →
//! bitnet.cpp's `bitnet-b1.58` architecture, whatever the tensor type.
//!
//! Layout as in the official `ggml-model-i2_s.gguf`: `token_embd` (also the LM head when tied),
//! `output_norm`, and per layer `attn_norm`, `attn_sub_norm`, `ffn_norm`, `ffn_sub_norm` (F32)
//! and the seven projections `attn_{q,k,v,output}`, `ffn_{gate,up,down}` in HF row order (NEOX
//! RoPE, no permutation). An untied `lm_head` is written as `output.weight`; note that
//! bitnet.cpp itself ignores it, while this project's engine uses it.

use super::{subln_plan, ArchPlan, GgufArch, TensorNames};
use crate::error::Result;
use crate::hf::config::HfConfig;

pub fn plan(cfg: &HfConfig, src: &dyn TensorNames) -> Result<ArchPlan> {
    subln_plan(cfg, src, GgufArch::BitnetB158)
}
