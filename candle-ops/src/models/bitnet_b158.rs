//! BitNet b1.58 2B4T (`general.architecture` = `bitnet-b1.58`, formerly `bitnet-25`).
//!
//! Each block is a pre-norm transformer block with BitNet's two extra "sub-norms":
//! ```text
//! h  = attn_norm(x)
//! x  = x + W_o · attn_sub_norm(attention(W_q·h, W_k·h, W_v·h))      (GQA, NEOX rope)
//! h  = ffn_norm(x)
//! x  = x + W_down · ffn_sub_norm(relu2(W_gate·h) ⊙ W_up·h)
//! ```
//! Every `W` is a ternary [`crate::BitLinear`] (int8 activations per token). The same block
//! with SiLU instead of ReLU² is llama.cpp's `bitnet` architecture ([`super::bitnet`]).

use super::block::{BlockSpec, FfnActivation};

/// The block of a `bitnet-b1.58` / `bitnet-25` model.
pub(crate) const BLOCK: BlockSpec = BlockSpec {
    activation: FfnActivation::Relu2,
    sub_norms: true,
    projection_scales: false,
};
