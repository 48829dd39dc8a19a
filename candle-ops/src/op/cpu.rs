//! The CPU side of [`TernaryMatMul`]: the `bitnet-backend` kernels on contiguous rows.

use bitnet_backend::matmul::ternary_matmul_multi;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

use super::TernaryMatMul;

/// Multiplies kernel results by an optional output factor.
pub(super) fn scale_output(factor: Option<f32>, y: &mut [f32]) {
    if let Some(factor) = factor {
        y.iter_mut().for_each(|v| *v *= factor);
    }
}

/// `x · Wᵀ` of every matrix of the op on `n_tokens` rows, side by side in each output row.
fn matmul_f32(op: &TernaryMatMul, x: &[f32], n_tokens: usize) -> candle_core::Result<Vec<f32>> {
    let parts = op.parts();
    let mut outs: Vec<Vec<f32>> = parts
        .iter()
        .map(|p| vec![0f32; n_tokens * p.weights.rows()])
        .collect();
    let ws: Vec<_> = parts.iter().map(|p| &*p.weights).collect();
    let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
    ternary_matmul_multi(&ws, x, n_tokens, &mut ys).map_err(candle_core::Error::wrap)?;
    for (p, y) in parts.iter().zip(outs.iter_mut()) {
        scale_output(p.output_scale, y);
    }
    if let [only] = &mut outs[..] {
        return Ok(std::mem::take(only));
    }
    let width = op.out_features();
    let mut y = Vec::with_capacity(n_tokens * width);
    for t in 0..n_tokens {
        for (p, o) in parts.iter().zip(&outs) {
            let r = p.weights.rows();
            y.extend_from_slice(&o[t * r..(t + 1) * r]);
        }
    }
    Ok(y)
}

pub(super) fn forward(
    op: &TernaryMatMul,
    storage: &CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let out_dims = op.output_shape(layout.dims())?;
    let (start, end) = op.contiguous_range(layout)?;
    let n_tokens = (end - start) / op.in_features();
    let out = match storage {
        CpuStorage::F32(v) => CpuStorage::F32(matmul_f32(op, &v[start..end], n_tokens)?),
        CpuStorage::BF16(v) => {
            let x: Vec<f32> = v[start..end].iter().map(|x| x.to_f32()).collect();
            let y = matmul_f32(op, &x, n_tokens)?;
            CpuStorage::BF16(y.into_iter().map(half::bf16::from_f32).collect())
        }
        CpuStorage::F16(v) => {
            let x: Vec<f32> = v[start..end].iter().map(|x| x.to_f32()).collect();
            let y = matmul_f32(op, &x, n_tokens)?;
            CpuStorage::F16(y.into_iter().map(half::f16::from_f32).collect())
        }
        other => candle_core::bail!(
            "{}: activations must be f32, bf16 or f16, got {:?}",
            op.name(),
            other.dtype()
        ),
    };
    Ok((out, Shape::from(out_dims)))
}
