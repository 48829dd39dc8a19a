//! Element-wise pieces of the forward pass on token-major `f32` rows (`[n_tokens, width]`), the
//! layout the ternary kernels read and write, so a block runs without tensor copies.

use std::sync::Mutex;

use bitnet_backend::threads;
use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// RMSNorm `x / sqrt(mean(x²) + eps) · w` (computed in f32, like transformers and candle).
#[derive(Clone, Debug)]
pub(crate) struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: Vec<f32>, eps: f32) -> Self {
        Self { weight, eps }
    }

    /// The weight as an f32 tensor on `device`.
    pub(crate) fn tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.weight, self.weight.len(), device)?)
    }

    /// Normalizes every row of `x` into `out` (same length, a multiple of the width).
    pub(crate) fn forward(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let w = self.weight.len();
        if x.len() != out.len() || !x.len().is_multiple_of(w) {
            return Err(Error::InvalidArgument(format!(
                "RMSNorm of width {w}: input has {} values, output {}",
                x.len(),
                out.len()
            )));
        }
        let n_rows = x.len() / w;
        let n_tasks = match n_rows * w >= PARALLEL_MIN_VALUES {
            true => threads::num_threads().min(n_rows),
            false => 1,
        };
        if n_tasks <= 1 {
            self.rows(x, out);
            return Ok(());
        }
        // One contiguous band of rows per thread (rows are independent).
        let per = n_rows.div_ceil(n_tasks) * w;
        let bands: Vec<Mutex<(&[f32], &mut [f32])>> = x
            .chunks(per)
            .zip(out.chunks_mut(per))
            .map(Mutex::new)
            .collect();
        threads::parallel_for(bands.len(), |i| {
            let mut band = bands[i].lock().unwrap_or_else(|e| e.into_inner());
            let (xb, ob) = &mut *band;
            self.rows(xb, ob);
        });
        Ok(())
    }

    fn rows(&self, x: &[f32], out: &mut [f32]) {
        rms_norm_rows(x, &self.weight, self.eps, out);
    }
}

/// RMSNorm of every row of `x` with weight `w`. The sum of squares runs in order, as candle's and
/// the reference tests' do: the activation quantization after a norm is sensitive to its last bit.
pub(crate) fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let width = w.len();
    for (row, o) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let sum2: f32 = row.iter().map(|v| v * v).sum();
        let m = (sum2 / width as f32 + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v / m * g;
        }
    }
}

/// Below this many values a norm runs on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 15;

/// `x += y`.
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// `gate = relu(gate)² · up`.
pub(crate) fn relu2_mul(gate: &mut [f32], up: &[f32]) {
    gate.iter_mut().zip(up).for_each(|(g, u)| {
        let r = g.max(0.0);
        *g = r * r * u;
    });
}

/// `gate = silu(gate) · up` with `silu(x) = x / (1 + e^-x)`.
pub(crate) fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gate.iter_mut()
        .zip(up)
        .for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The rows of an f32 `[n, width]` tensor (copied out).
    fn tensor_rows(t: &Tensor) -> Result<Vec<f32>> {
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// An f32 `[n_rows, width]` tensor holding `rows`.
    fn rows_tensor(rows: Vec<f32>, width: usize) -> Result<Tensor> {
        let n = rows.len() / width;
        Ok(Tensor::from_vec(rows, (n, width), &Device::Cpu)?)
    }

    #[test]
    fn rms_norm_matches_candle_nn() -> Result<()> {
        // The second shape is large enough to be split across the pool.
        for (rows, width) in [(3, 37), (64, 600)] {
            rms_norm_case(rows, width)?;
        }
        Ok(())
    }

    fn rms_norm_case(rows: usize, width: usize) -> Result<()> {
        let x: Vec<f32> = (0..rows * width)
            .map(|i| ((i as f32) * 0.61).sin() * 4.0)
            .collect();
        let w: Vec<f32> = (0..width).map(|i| 0.5 + (i as f32) * 0.01).collect();
        let norm = RmsNorm::new(w.clone(), 1e-5);
        let mut got = vec![0f32; x.len()];
        norm.forward(&x, &mut got)?;
        let reference = candle_nn::RmsNorm::new(Tensor::new(w.as_slice(), &Device::Cpu)?, 1e-5);
        let want = tensor_rows(&candle_core::Module::forward(
            &reference,
            &rows_tensor(x.clone(), width)?,
        )?)?;
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a, b, "same operations in the same order as candle");
        }
        assert!(norm.forward(&x[1..], &mut got[1..]).is_err());
        Ok(())
    }

    #[test]
    fn gated_activations() {
        let mut g = vec![-2.0f32, 0.0, 3.0];
        relu2_mul(&mut g, &[5.0, 5.0, 0.5]);
        assert_eq!(g, vec![0.0, 0.0, 4.5]);
        let mut g = vec![0.0f32, 2.0];
        silu_mul(&mut g, &[1.0, 3.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-2f32).exp()) * 3.0).abs() < 1e-6);
    }
}
