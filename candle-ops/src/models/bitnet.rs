//! llama.cpp's `bitnet` architecture (1bitLLM bitnet_b1_58 family), as llama.cpp defines it:
//! the [`super::bitnet_b158`] block (attention and FFN sub-norms, NEOX rope) with a SiLU-gated
//! FFN, and an optional `blk.N.<projection>.scale` tensor per projection that multiplies its
//! output.

use super::bitnet_b158::{FfnActivation, SubLnBlock};
use super::config::ModelConfig;
use super::loader::Loader;
use super::Block;
use crate::Result;

/// Loads every block of a `bitnet` model.
pub(crate) fn load_blocks(l: &Loader<'_>, cfg: &ModelConfig) -> Result<Vec<Box<dyn Block>>> {
    (0..cfg.n_layer)
        .map(|i| {
            SubLnBlock::load(l, i, cfg, FfnActivation::Silu, true)
                .map(|b| Box::new(b) as Box<dyn Block>)
        })
        .collect()
}
