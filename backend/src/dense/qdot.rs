//! Q6_K and Q4_0 rows against activations quantized per block to 8 bits, in integers, the way
//! ggml multiplies them (Q6_K × Q8_K, Q4_0 × Q8_0):
//!
//! - Q6_K: each 256-value block of a token gets ggml's Q8_K (`quantize_row_q8_K_ref`: scale
//!   `d = -max/127` where `max` is the first value of largest magnitude, `q = nearest_int(x/d)`)
//!   and the sums of its 16-value groups (ggml's `bsums`). The product of a row block is
//!   `d_w · d_x · Σ_j sc_j · (Σ code·q − 32 · bsum_j)` over the 16 sub-blocks `j`.
//! - Q4_0: each 32-value block gets `d = max|x| / 127`, `q = round(x / d)` (ggml's
//!   `quantize_row_q8_0_ref`, with `d` kept in f32 rather than rounded to f16) and `Σq`; the
//!   product is `d_w · d_x · (Σ nibble·q − 8 · Σq)`.
//!
//! The integer sums are exact; only the float sum over blocks differs between the kernels
//! (order), so they agree to rounding. The activation error (about 0.4 % of a block's largest
//! value per element) adds to the weights' own; `bitnet_candle`'s fidelity table measures both.
//!
//! Q4_0 activations are stored with each pair of blocks interleaved by halves
//! (`a0[0..16], a1[0..16], a0[16..32], a1[16..32]`), the order in which the SIMD kernels unpack
//! two blocks' nibbles (low nibbles of both, then high nibbles of both); an odd last block stays
//! in natural order.

use half::f16;

use super::DenseType;
use crate::formats::{q4_0, q6_k};
use crate::{Error, Result};

/// Q8_K block length.
pub(crate) const QK_K: usize = 256;
/// Values per Q6_K sub-block (one scale each).
pub(crate) const SUB: usize = 16;

/// Every token's activations, quantized for one integer weight type.
#[derive(Debug, Clone)]
pub(crate) struct QuantizedTokens {
    cols: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<i16>,
}

/// One token's quantized activations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    /// `cols` int8 values (Q4_0: pair-interleaved, see the module docs).
    pub qs: &'a [i8],
    /// Scale per block (256 values for Q6_K, 32 for Q4_0).
    pub d: &'a [f32],
    /// Q6_K: 16 group sums per block; Q4_0: one sum per block.
    pub sums: &'a [i16],
}

impl QuantizedTokens {
    /// Quantizes `x` (`[n_tokens, cols]`) for weights of type `ty` (Q6_K or Q4_0).
    pub(crate) fn new(ty: DenseType, x: &[f32], n_tokens: usize, cols: usize) -> Result<Self> {
        let (block, sums_per_block) = match ty {
            DenseType::Q6K => (QK_K, QK_K / SUB),
            DenseType::Q4_0 => (q4_0::BLOCK, 1),
            other => unreachable!("{other:?} is multiplied in float"),
        };
        debug_assert_eq!(x.len(), n_tokens * cols);
        debug_assert!(cols.is_multiple_of(block));
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::format(
                "dense",
                format!(
                    "token {}, column {}: activation {} is not finite",
                    i / cols,
                    i % cols,
                    x[i]
                ),
            ));
        }
        let nb = cols / block;
        let mut t = Self {
            cols,
            qs: vec![0; x.len()],
            d: vec![0.0; n_tokens * nb],
            sums: vec![0; n_tokens * nb * sums_per_block],
        };
        let rows = x.chunks_exact(cols).zip(t.qs.chunks_exact_mut(cols));
        let meta =
            t.d.chunks_exact_mut(nb)
                .zip(t.sums.chunks_exact_mut(nb * sums_per_block));
        for ((x, qs), (d, sums)) in rows.zip(meta) {
            match ty {
                DenseType::Q6K => quantize_q8_k(x, qs, d, sums),
                _ => quantize_q8_0(x, qs, d, sums),
            }
        }
        Ok(t)
    }

    /// Token `t`.
    pub(crate) fn token(&self, t: usize) -> Token<'_> {
        let nb = self.d.len() / (self.qs.len() / self.cols);
        let per = self.sums.len() / (self.qs.len() / self.cols);
        Token {
            qs: &self.qs[t * self.cols..(t + 1) * self.cols],
            d: &self.d[t * nb..(t + 1) * nb],
            sums: &self.sums[t * per..(t + 1) * per],
        }
    }
}

/// ggml's `quantize_row_q8_K_ref` for one token, plus its 16-value group sums.
fn quantize_q8_k(x: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i16]) {
    let blocks = x.chunks_exact(QK_K).zip(qs.chunks_exact_mut(QK_K));
    for ((xb, qb), (d, sums)) in blocks.zip(d.iter_mut().zip(sums.chunks_exact_mut(QK_K / SUB))) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            qb.fill(0);
            sums.fill(0);
            *d = 0.0;
            continue;
        }
        let iscale = -127.0f32 / max;
        for (o, &v) in qb.iter_mut().zip(xb) {
            *o = q6_k::nearest_int(iscale * v).min(127) as i8;
        }
        for (s, g) in sums.iter_mut().zip(qb.chunks_exact(SUB)) {
            *s = g.iter().map(|&v| i16::from(v)).sum();
        }
        *d = 1.0 / iscale;
    }
}

/// Position of value `i` of block `b` (of `nb`) in a Q4_0 token's pair-interleaved `qs`.
pub(crate) fn q4_0_position(b: usize, i: usize, nb: usize) -> usize {
    const B: usize = q4_0::BLOCK;
    if b == nb - 1 && nb % 2 == 1 {
        return b * B + i;
    }
    let (pair, second) = (b / 2, b % 2);
    2 * B * pair + B * (i / (B / 2)) + (B / 2) * second + i % (B / 2)
}

/// ggml's `quantize_row_q8_0_ref` per 32-value block (scale kept in f32), in the pair-interleaved
/// order, plus each block's sum.
fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i16]) {
    const B: usize = q4_0::BLOCK;
    let nb = x.len() / B;
    for (b, xb) in x.chunks_exact(B).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = amax / 127.0;
        let id = if db != 0.0 { 1.0 / db } else { 0.0 };
        let mut sum = 0i16;
        for (i, &v) in xb.iter().enumerate() {
            // f32::round is C's roundf: half away from zero.
            let q = (v * id).round() as i8;
            qs[q4_0_position(b, i, nb)] = q;
            sum += i16::from(q);
        }
        d[b] = db;
        sums[b] = sum;
    }
}

/// Dot product of one Q6_K or Q4_0 row (its bytes) with one token: the reference the SIMD
/// kernels agree with up to the order of the float sum.
pub(crate) fn dot_row(ty: DenseType, row: &[u8], t: Token<'_>) -> f32 {
    match ty {
        DenseType::Q6K => row
            .chunks_exact(q6_k::BLOCK_BYTES)
            .enumerate()
            .map(|(b, blk)| q6_k_block(blk, b, t))
            .sum(),
        DenseType::Q4_0 => {
            let nb = t.d.len();
            row.chunks_exact(q4_0::BLOCK_BYTES)
                .enumerate()
                .map(|(b, blk)| {
                    let dw = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    let dot: i32 = (0..q4_0::BLOCK)
                        .map(|i| {
                            let byte = blk[2 + i % 16];
                            let nibble = if i < 16 { byte & 0xf } else { byte >> 4 };
                            i32::from(nibble) * i32::from(t.qs[q4_0_position(b, i, nb)])
                        })
                        .sum();
                    dw * t.d[b] * (dot - 8 * i32::from(t.sums[b])) as f32
                })
                .sum()
        }
        other => unreachable!("{other:?} is multiplied in float"),
    }
}

/// One Q6_K block `b` of a row against the token.
fn q6_k_block(blk: &[u8], b: usize, t: Token<'_>) -> f32 {
    let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
    let dw = f16::from_le_bytes([blk[208], blk[209]]).to_f32();
    let q = &t.qs[b * QK_K..(b + 1) * QK_K];
    let mut isum = 0i32;
    for (j, (&scale, qs)) in sc.iter().zip(q.chunks_exact(SUB)).enumerate() {
        let mut dot = 0i32;
        for (k, &qv) in qs.iter().enumerate() {
            // Value i: half h = i / 128, then l = i % 32 and quarter p = (i % 128) / 32 pick the
            // nibble of ql and the bit pair of qh.
            let i = SUB * j + k;
            let (h, p, l) = (i / 128, (i % 128) / 32, i % 32);
            let lo = ql[64 * h + l + 32 * (p % 2)];
            let nibble = if p < 2 { lo & 0xf } else { lo >> 4 };
            let high = (qh[32 * h + l] >> (2 * p)) & 3;
            dot += i32::from(nibble | high << 4) * i32::from(qv);
        }
        let bsum = i32::from(t.sums[b * (QK_K / SUB) + j]);
        isum += i32::from(scale as i8) * (dot - 32 * bsum);
    }
    dw * t.d[b] * isum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_positions_are_a_permutation() {
        for nb in [1usize, 2, 3, 6, 7] {
            let mut seen = vec![false; nb * 32];
            for b in 0..nb {
                for i in 0..32 {
                    let p = q4_0_position(b, i, nb);
                    assert!(!seen[p], "nb {nb}: position {p} twice");
                    seen[p] = true;
                }
            }
        }
        // Pair 0: a0[0..16], a1[0..16], a0[16..32], a1[16..32].
        assert_eq!(q4_0_position(0, 16, 2), 32);
        assert_eq!(q4_0_position(1, 0, 2), 16);
        assert_eq!(q4_0_position(1, 31, 2), 63);
    }

    #[test]
    fn q8_k_activations_match_ggml_reference_formula() {
        // max = -2 (first largest magnitude): iscale = 63.5, d = 1/63.5.
        let mut x = vec![0f32; 256];
        x[0] = 1.0;
        x[1] = -2.0;
        x[2] = 2.0;
        x[17] = 0.5;
        let t = QuantizedTokens::new(DenseType::Q6K, &x, 1, 256).unwrap();
        let tok = t.token(0);
        assert_eq!(&tok.qs[..3], &[64, -127, 127]);
        assert_eq!(tok.qs[17], 32);
        assert_eq!(tok.d[0], 1.0 / 63.5);
        assert_eq!(tok.sums[0], 64);
        assert_eq!(tok.sums[1], 32);
    }

    #[test]
    fn non_finite_activations_are_errors() {
        let mut x = vec![0f32; 64];
        x[40] = f32::NAN;
        let e = QuantizedTokens::new(DenseType::Q4_0, &x, 2, 32).unwrap_err();
        assert!(e.to_string().contains("token 1, column 8"), "{e}");
    }
}
