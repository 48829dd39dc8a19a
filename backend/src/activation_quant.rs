//! Per-token int8 activation quantization, as BitNet b1.58 defines it (HF `BitLinear` ActQuant,
//! bitnet.cpp `quantize_row_i8_s`): for each token (row)
//! `s = 127 / max(max|x|, 1e-5)`, `q = clamp(round_half_even(x·s), -128, 127)`, plus `Σq`.
//!
//! Rows are stored with a stride rounded up to the kernels' 128-column block and zero-padded,
//! so the kernels never need a tail loop.

use crate::kernels::{self, KernelKind, BLOCK_COLS, MAX_COLS};
use crate::{Error, Result};

/// Quantized activations of `n_tokens` rows of `cols` values: int8 values, per-row scale `s`
/// and per-row sum `Σq`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizedActivations {
    n_tokens: usize,
    cols: usize,
    stride: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

fn shape_error(problem: String) -> Error {
    Error::Shape {
        op: "activation quantization",
        problem,
    }
}

fn check_shape(len: usize, n_tokens: usize, cols: usize, what: &str) -> Result<()> {
    if cols == 0 || cols > MAX_COLS {
        return Err(shape_error(format!(
            "cols = {cols} is outside 1..={MAX_COLS}"
        )));
    }
    match n_tokens.checked_mul(cols) {
        Some(n) if n == len => Ok(()),
        _ => Err(shape_error(format!(
            "{what} has {len} values, expected n_tokens × cols = {n_tokens} × {cols}"
        ))),
    }
}

impl QuantizedActivations {
    /// An empty buffer, to be filled (and reused) by [`Self::quantize_into`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x` (`[n_tokens, cols]`, row-major) with the [`kernels::selected`] kernel.
    pub fn quantize(x: &[f32], n_tokens: usize, cols: usize) -> Result<Self> {
        Self::quantize_with(kernels::selected(), x, n_tokens, cols)
    }

    /// Quantizes with an explicit kernel (all kernels give identical results).
    pub fn quantize_with(
        kind: KernelKind,
        x: &[f32],
        n_tokens: usize,
        cols: usize,
    ) -> Result<Self> {
        let mut qa = Self::new();
        qa.quantize_into(kind, x, n_tokens, cols)?;
        Ok(qa)
    }

    /// Quantizes into this buffer, reusing its allocations. Non-finite inputs are an error
    /// naming the token.
    pub fn quantize_into(
        &mut self,
        kind: KernelKind,
        x: &[f32],
        n_tokens: usize,
        cols: usize,
    ) -> Result<()> {
        kernels::check_available(kind)?;
        check_shape(x.len(), n_tokens, cols, "input")?;
        self.reshape(n_tokens, cols);
        for t in 0..n_tokens {
            let row = &mut self.q[t * self.stride..(t + 1) * self.stride];
            let (vals, pad) = row.split_at_mut(cols);
            pad.fill(0);
            match kernels::quantize_row(kind, &x[t * cols..(t + 1) * cols], vals) {
                Some((s, sum)) => {
                    self.scales[t] = s;
                    self.sums[t] = sum;
                }
                None => {
                    let bad = x[t * cols..(t + 1) * cols]
                        .iter()
                        .position(|v| !v.is_finite())
                        .unwrap_or(0);
                    self.reshape(0, cols);
                    return Err(shape_error(format!(
                        "token {t}, column {bad}: activation is not finite"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Wraps already-quantized int8 rows (`[n_tokens, cols]`) with their scales `s`; the sums
    /// are computed. Any int8 value is accepted, which lets tests drive the kernels to extremes.
    pub fn from_int8(q: &[i8], n_tokens: usize, cols: usize, scales: &[f32]) -> Result<Self> {
        check_shape(q.len(), n_tokens, cols, "int8 input")?;
        if scales.len() != n_tokens {
            return Err(shape_error(format!(
                "{} scales for {n_tokens} tokens",
                scales.len()
            )));
        }
        let mut qa = Self::new();
        qa.reshape(n_tokens, cols);
        for t in 0..n_tokens {
            let src = &q[t * cols..(t + 1) * cols];
            qa.q[t * qa.stride..t * qa.stride + cols].copy_from_slice(src);
            qa.sums[t] = src.iter().map(|&v| i32::from(v)).sum();
        }
        qa.scales.copy_from_slice(scales);
        Ok(qa)
    }

    fn reshape(&mut self, n_tokens: usize, cols: usize) {
        self.n_tokens = n_tokens;
        self.cols = cols;
        self.stride = cols.div_ceil(BLOCK_COLS) * BLOCK_COLS;
        self.q.resize(n_tokens * self.stride, 0);
        self.scales.resize(n_tokens, 0.0);
        self.sums.resize(n_tokens, 0);
    }

    /// Number of tokens (rows).
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Values per token.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Token `t`'s int8 values (`cols` of them).
    pub fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.stride..t * self.stride + self.cols]
    }

    /// Token `t`'s values zero-padded to a multiple of 128 (what the kernels read).
    pub(crate) fn padded_row(&self, t: usize) -> &[i8] {
        &self.q[t * self.stride..(t + 1) * self.stride]
    }

    /// Per-token scales `s = 127 / max(|x|, 1e-5)`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Per-token sums `Σq`.
    pub fn sums(&self) -> &[i32] {
        &self.sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_row() {
        // absmax 127 -> s = 1: 31.75 -> 32, ties 0.5 -> 0, 1.5 -> 2, 2.5 -> 2 (half to even).
        let x = [31.75f32, 0.5, 1.5, -127.0, 2.5];
        for kind in kernels::available() {
            let qa = QuantizedActivations::quantize_with(kind, &x, 1, 5).unwrap();
            assert_eq!(qa.row(0), &[32, 0, 2, -127, 2], "{kind}");
            assert_eq!(qa.scales(), &[1.0], "{kind}");
            assert_eq!(qa.sums(), &[32 + 2 - 127 + 2], "{kind}");
            assert_eq!(qa.padded_row(0).len(), 128);
            assert!(qa.padded_row(0)[5..].iter().all(|&v| v == 0));
        }
        // absmax 2 -> s = 63.5 exactly; 0.5 -> 31.75 -> 32.
        let qa =
            QuantizedActivations::quantize_with(KernelKind::Scalar, &[0.5, -2.0], 1, 2).unwrap();
        assert_eq!(
            (qa.row(0), qa.scales()),
            (&[32i8, -127][..], &[63.5f32][..])
        );
    }

    #[test]
    fn all_zero_row_uses_the_floor() {
        let qa = QuantizedActivations::quantize_with(KernelKind::Scalar, &[0.0; 3], 1, 3).unwrap();
        assert_eq!(qa.scales(), &[127.0 / 1e-5]);
        assert_eq!(qa.row(0), &[0, 0, 0]);
    }

    #[test]
    fn every_kernel_matches_scalar_bit_for_bit() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for cols in [1usize, 15, 16, 31, 32, 33, 100, 128, 129, 300] {
            let n = 3;
            let mut x: Vec<f32> = (0..n * cols)
                .map(|_| ((next() % 20001) as f32 - 10000.0) / 997.0)
                .collect();
            // Exact .5 ties after scaling: absmax 127 gives s = 1.
            x[0] = 127.0;
            if cols > 2 {
                x[1] = 2.5;
                x[2] = -3.5;
            }
            let want =
                QuantizedActivations::quantize_with(KernelKind::Scalar, &x, n, cols).unwrap();
            assert_eq!(want.row(0)[0], 127);
            if cols > 2 {
                assert_eq!(&want.row(0)[1..3], &[2, -4]);
            }
            for kind in kernels::available() {
                let got = QuantizedActivations::quantize_with(kind, &x, n, cols).unwrap();
                assert_eq!(got, want, "{kind}, cols {cols}");
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        for kind in kernels::available() {
            let mut x = vec![1.0f32; 40];
            x[37] = f32::NAN;
            let err = QuantizedActivations::quantize_with(kind, &x, 2, 20).unwrap_err();
            assert!(
                err.to_string().contains("token 1, column 17"),
                "{kind}: {err}"
            );
            x[37] = f32::NEG_INFINITY;
            assert!(QuantizedActivations::quantize_with(kind, &x, 2, 20).is_err());
        }
        assert!(QuantizedActivations::quantize(&[1.0; 10], 3, 3).is_err());
        assert!(QuantizedActivations::quantize(&[], 0, 0).is_err());
        assert!(QuantizedActivations::from_int8(&[1; 6], 2, 3, &[1.0]).is_err());
    }
}
