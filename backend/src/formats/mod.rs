//! Ternary weight formats, as pure functions over bytes.
//!
//! Ternary values are `i8` in `{-1, 0, 1}`. Each submodule packs and unpacks one on-disk
//! layout bit-exactly:
//! - [`i2s`]: bitnet.cpp's I2_S (GGML type 36 in bitnet.cpp files), one f32 scale per tensor.
//! - [`tq2_0`] / [`tq1_0`]: ggml mainline's TQ2_0 (35) and TQ1_0 (34), one f16 scale per 256 values.
//! - [`hf_packed`]: the uint8 layout of Hugging Face transformers' `pack_weights`.
//! - [`ternarize`]: absmean ternarization of float weights (BitNet b1.58 `weight_quant`).

pub mod hf_packed;
pub mod i2s;
pub mod q4_0;
pub mod q6_k;
#[cfg(target_arch = "x86_64")]
mod q6_k_x86;
pub mod q8_0;
pub mod ternarize;
pub mod tq1_0;
pub mod tq2_0;
mod tq_blocks;

use crate::{Error, Result};

/// Checks every value is in `{-1, 0, 1}`, naming the first offender.
pub(crate) fn check_ternary(format: &'static str, values: &[i8]) -> Result<()> {
    match values.iter().position(|v| !(-1..=1).contains(v)) {
        None => Ok(()),
        Some(i) => Err(Error::format(
            format,
            format!(
                "value {} at index {i} is not ternary (-1, 0 or 1)",
                values[i]
            ),
        )),
    }
}

/// Checks a float input has no NaN or infinity (ggml's reference quantizers are undefined there).
pub(crate) fn check_finite(format: &'static str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::format(
            format,
            format!("input value {} at index {i} is not finite", x[i]),
        )),
    }
}

/// Checks `n` is a positive-or-zero multiple of `block`.
pub(crate) fn check_multiple(format: &'static str, n: usize, block: usize) -> Result<()> {
    if n.is_multiple_of(block) {
        Ok(())
    } else {
        Err(Error::format(
            format,
            format!("element count {n} is not a multiple of the block size {block}"),
        ))
    }
}

/// Checks a byte buffer has exactly the expected length.
pub(crate) fn check_len(format: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::format(
            format,
            format!("{what} is {got} bytes, expected {want}"),
        ))
    }
}
