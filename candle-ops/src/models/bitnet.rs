//! llama.cpp's `bitnet` architecture (1bitLLM bitnet_b1_58 family), as llama.cpp defines it:
//! the [`super::bitnet_b158`] block (attention and FFN sub-norms, NEOX rope) with a SiLU-gated
//! FFN, and an optional `blk.N.<projection>.scale` tensor per projection that multiplies its
//! output.

use super::block::{BlockSpec, FfnActivation};

/// The block of a `bitnet` model.
pub(crate) const BLOCK: BlockSpec = BlockSpec {
    activation: FfnActivation::Silu,
    sub_norms: true,
    projection_scales: true,
};
