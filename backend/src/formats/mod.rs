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
#[cfg(target_arch = "x86_64")]
mod q4_0_x86;
pub mod q6_k;
#[cfg(target_arch = "x86_64")]
mod q6_k_x86;
pub mod q8_0;
#[cfg(target_arch = "x86_64")]
mod q8_0_x86;
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
    // Whole chunks without an early exit per value, so the compiler vectorizes the scan (it
    // runs over every value of an LM head quantized at load).
    const CHUNK: usize = 256;
    let all_finite = |c: &[f32]| c.iter().fold(true, |ok, v| ok & v.is_finite());
    let Some(chunk) = x.chunks(CHUNK).position(|c| !all_finite(c)) else {
        return Ok(());
    };
    match x
        .iter()
        .skip(chunk * CHUNK)
        .position(|v| !v.is_finite())
        .map(|i| i + chunk * CHUNK)
    {
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

/// Float inputs for comparing a vector quantizer with its scalar reference.
#[cfg(test)]
pub(crate) mod awkward {
    /// `n_blocks` blocks of `block` values, each block of one kind the quantizers branch or
    /// round on: all zero (both signs), exact ties (halves with the largest magnitude 127 or
    /// -8, so the scale is 1), subnormal and borderline-tiny magnitudes (scales whose
    /// reciprocal overflows, with zeros among them), huge magnitudes, equal magnitudes of both signs, one lone value,
    /// f16-valued and plain uniform noise.
    pub(crate) fn blocks(n_blocks: usize, block: usize) -> Vec<f32> {
        let mut rnd = uniform(0x2545_f491_4f6c_dd1d);
        let mut x = Vec::with_capacity(n_blocks * block);
        for b in 0..n_blocks {
            let kind = b % 14;
            for i in 0..block {
                let r = rnd();
                x.push(match kind {
                    0 => 0.0,
                    1 => {
                        if r < 0.0 {
                            -0.0
                        } else {
                            0.0
                        }
                    }
                    2 if i == block / 3 => 127.0,
                    3 if i == block / 2 => -8.0,
                    2 => (r * 120.0).trunc() + 0.5f32.copysign(r),
                    3 => (r * 7.0).trunc() + 0.5f32.copysign(r),
                    4 | 5 if i % 4 == 1 => 0.0,
                    4 => r * 1e-40,
                    5 => r * 1e-44,
                    6 => r * 3e-39,
                    7 => r * 3e38,
                    8 => {
                        if r < 0.0 {
                            -0.75
                        } else {
                            0.75
                        }
                    }
                    9 if i == (b * 7) % block => r,
                    9 => 0.0,
                    10 => half::f16::from_f32(r * 0.05).to_f32(),
                    11 => r * 1e-30,
                    _ => r,
                });
            }
        }
        x
    }

    /// A xorshift generator of floats in [-1, 1) (a fixed sequence per seed).
    pub(crate) fn uniform(mut s: u64) -> impl FnMut() -> f32 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        }
    }

    /// Asserts that `quantize_into` (the fastest path this CPU has) writes the bytes of the
    /// scalar reference `scalar` for [`blocks`] of `block` values, block by block.
    pub(crate) fn assert_fastest_matches_scalar(
        block: usize,
        block_bytes: usize,
        scalar: fn(&[f32], &mut [u8]),
        quantize_into: fn(&[f32], &mut [u8]) -> crate::Result<()>,
    ) {
        let x = blocks(14 * 64, block);
        let mut want = vec![0u8; x.len() / block * block_bytes];
        scalar(&x, &mut want);
        let mut got = vec![0xAAu8; want.len()];
        quantize_into(&x, &mut got).unwrap();
        for (b, (g, w)) in got
            .chunks(block_bytes)
            .zip(want.chunks(block_bytes))
            .enumerate()
        {
            assert_eq!(g, w, "block {b}: {:?}", &x[b * block..(b + 1) * block]);
        }
    }
}
