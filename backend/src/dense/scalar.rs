//! Portable dense kernels: the reference for the SIMD paths and the fallback everywhere else.

use half::{bf16, f16};

use super::{DenseType, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use crate::formats::{q4_0, q6_k};

/// Decodes one row (`out.len()` values) from its bytes.
pub(super) fn dequantize_row(ty: DenseType, row: &[u8], out: &mut [f32]) {
    match ty {
        DenseType::F32 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DenseType::F16 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DenseType::BF16 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DenseType::Q8_0 => {
            for (o, blk) in out
                .chunks_mut(Q8_0_BLOCK)
                .zip(row.chunks_exact(Q8_0_BLOCK_BYTES))
            {
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                for (v, &q) in o.iter_mut().zip(&blk[2..]) {
                    *v = d * (q as i8) as f32;
                }
            }
        }
        // The row length was checked against the type when the matrix was made.
        DenseType::Q6K => q6_k::dequantize_into(row, out).expect("whole Q6_K blocks"),
        DenseType::Q4_0 => q4_0::dequantize_into(row, out).expect("whole Q4_0 blocks"),
    }
}

/// Dot product of the row starting at `row[0]` (`x.len()` values) with `x`, in float (Q6_K and
/// Q4_0 rows are widened first: the kernels multiply those in integers, see `qdot`).
pub(super) fn dot_row(ty: DenseType, row: &[u8], x: &[f32]) -> f32 {
    match ty {
        DenseType::Q6K | DenseType::Q4_0 => {
            let mut w = vec![0f32; x.len()];
            dequantize_row(
                ty,
                &row[..ty.row_bytes(x.len()).expect("whole blocks")],
                &mut w,
            );
            w.iter().zip(x).map(|(a, b)| a * b).sum()
        }
        DenseType::F32 => row
            .chunks_exact(4)
            .zip(x)
            .map(|(b, x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x)
            .sum(),
        DenseType::F16 => row
            .chunks_exact(2)
            .zip(x)
            .map(|(b, x)| f16::from_le_bytes([b[0], b[1]]).to_f32() * x)
            .sum(),
        DenseType::BF16 => row
            .chunks_exact(2)
            .zip(x)
            .map(|(b, x)| bf16::from_le_bytes([b[0], b[1]]).to_f32() * x)
            .sum(),
        DenseType::Q8_0 => row
            .chunks_exact(Q8_0_BLOCK_BYTES)
            .zip(x.chunks_exact(Q8_0_BLOCK))
            .map(|(blk, xb)| {
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let s: f32 = blk[2..]
                    .iter()
                    .zip(xb)
                    .map(|(&q, x)| (q as i8) as f32 * x)
                    .sum();
                d * s
            })
            .sum(),
    }
}
