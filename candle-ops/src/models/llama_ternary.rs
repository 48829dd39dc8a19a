//! `llama` files with ternary projections (HF1BitLLM Llama3-8B-1.58, Falcon3 *-1.58bit,
//! Falcon-E): a plain Llama block whose projections are [`crate::BitLinear`]s.
//! ```text
//! x = x + W_o · attention(W_q·attn_norm(x), W_k·…, W_v·…)     (GQA, interleaved rope)
//! x = x + W_down · (silu(W_gate·ffn_norm(x)) ⊙ W_up·ffn_norm(x))
//! ```
//! llama.cpp's converters permute the q/k rows for its interleaved ("NORM") rope, which is why
//! this architecture uses [`crate::rope::RopeStyle::Interleaved`].

use super::block::{BlockSpec, FfnActivation};

/// The block of a ternary `llama` model: no sub-norms, no per-projection scales.
pub(crate) const BLOCK: BlockSpec = BlockSpec {
    activation: FfnActivation::Silu,
    sub_norms: false,
    projection_scales: false,
};
