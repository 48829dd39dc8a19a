//! ggml's Q6_K layout (GGML type 14): super-blocks of 256 values in 210 bytes — `ql[128]` (low
//! 4 bits), `qh[64]` (high 2 bits), 16 int8 sub-block scales, then an f16 super-block scale `d`.
//! bitnet.cpp's recommended token-embedding type (`--token-embedding-type q6_k`).
//!
//! The quantizer follows ggml's `quantize_row_q6_K_ref` operation by operation in f32 (without
//! fused multiply-adds), so it is bit-exact with ggml built without FMA contraction.

use half::f16;

use super::{check_finite, check_len, check_multiple};
use crate::Result;

const FORMAT: &str = "Q6_K";

/// Elements per super-block.
pub const BLOCK: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 210;
const SUB: usize = 16;
const QL: usize = 128;
const QH: usize = 64;
/// ggml's GROUP_MAX_EPS: a group whose largest magnitude is below this is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Total byte size of `n` elements (`n` must be a multiple of [`BLOCK`]).
pub fn packed_size(n: usize) -> usize {
    n / BLOCK * BLOCK_BYTES
}

/// ggml's `nearest_int`: round half to even through the 1.5·2^23 magic constant. Meaningful for
/// |x| <= 2^22; larger inputs give the same (meaningless) value as ggml's release builds.
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `make_qx_quants` with `rmse_type = 1` (weights x²) and no importance weights:
/// codes `L` in `0..2*nmax`, returns the sub-block scale.
fn make_qx_quants(x: &[f32], nmax: i32, l_out: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (o, &v) in l_out.iter_mut().zip(x) {
        *o = (code(iscale, v) + nmax) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in TRIALS {
        iscale = trial_numerator(nmax, is) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l_out.iter_mut().zip(x) {
                *o = (code(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The offsets `is` of the trial scales `make_qx_quants` tries after the first, in its order.
pub(crate) const TRIALS: [i32; 18] = [
    -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9,
];

/// `-(nmax + 0.1f*is)` in ggml's float arithmetic: trial `is` uses this over `max`.
pub(crate) fn trial_numerator(nmax: i32, is: i32) -> f32 {
    -(nmax as f32 + 0.1 * is as f32)
}

/// Which implementation computes the per-value loops: the fastest this CPU has, or the scalar
/// reference (tests compare the two).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Fastest,
    #[cfg_attr(not(test), allow(dead_code))]
    Scalar,
}

/// Whether `path` runs the vector implementation on this CPU.
#[cfg(target_arch = "x86_64")]
fn simd(path: Path) -> bool {
    path == Path::Fastest && super::q6_k_x86::available()
}

/// The scales of one super-block's 16 sub-blocks and their codes (`make_qx_quants` with
/// `nmax = 32` on each), computed by `path` (all give the same bits).
fn sub_block_scales(path: Path, xb: &[f32], scales: &mut [f32; BLOCK / SUB], l: &mut [u8; BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    if simd(path) {
        // SAFETY: the CPU has the features `available` checks; `xb` holds one super-block.
        unsafe { super::q6_k_x86::sub_block_scales(xb, scales, l) };
        return;
    }
    let _ = path;
    sub_block_scales_scalar(xb, scales, l);
}

/// The final codes `clamp(nearest_int(x / d), -32, 31) + 32` of every sub-block `j` whose
/// `d = d_super · sc[j]` is not zero (the others keep their `make_qx_quants` codes).
fn final_codes(path: Path, xb: &[f32], d_super: f32, sc: &[u8], l: &mut [u8; BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    if simd(path) {
        // SAFETY: the CPU has the features `available` checks; `xb` holds one super-block and
        // `sc` its 16 scales.
        unsafe { super::q6_k_x86::final_codes(xb, d_super, sc, l) };
        return;
    }
    let _ = path;
    for j in 0..BLOCK / SUB {
        let d = d_super * (sc[j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..SUB {
            let q = nearest_int(xb[SUB * j + ii] / d).clamp(-32, 31);
            l[SUB * j + ii] = (q + 32) as u8;
        }
    }
}

fn sub_block_scales_scalar(xb: &[f32], scales: &mut [f32; BLOCK / SUB], l: &mut [u8; BLOCK]) {
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = make_qx_quants(
            &xb[SUB * ib..SUB * (ib + 1)],
            32,
            &mut l[SUB * ib..SUB * (ib + 1)],
        );
    }
}

/// Quantizes exactly as ggml's `quantize_row_q6_K_ref`. Input must be finite.
pub fn quantize(x: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; packed_size(x.len())];
    quantize_into(x, &mut out)?;
    Ok(out)
}

/// [`quantize`] into `out` (exactly [`packed_size`]`(x.len())` bytes).
pub fn quantize_into(x: &[f32], out: &mut [u8]) -> Result<()> {
    quantize_into_with(x, out, Path::Fastest)
}

fn quantize_into_with(x: &[f32], out: &mut [u8], path: Path) -> Result<()> {
    check_multiple(FORMAT, x.len(), BLOCK)?;
    check_finite(FORMAT, x)?;
    check_len(FORMAT, "output", out.len(), packed_size(x.len()))?;
    let mut l = [0u8; BLOCK];
    let mut scales = [0.0f32; BLOCK / SUB];
    for (xb, ob) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        ob.fill(0);
        sub_block_scales(path, xb, &mut scales, &mut l);
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for s in &scales {
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = *s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            continue; // the block stays all zero, d = 0
        }
        let iscale = -128.0 / max_scale;
        let d16 = f16::from_f32(1.0 / iscale);
        let (ql, rest) = ob.split_at_mut(QL);
        let (qh, rest) = rest.split_at_mut(QH);
        let (sc, dbytes) = rest.split_at_mut(BLOCK / SUB);
        dbytes.copy_from_slice(&d16.to_le_bytes());
        for (o, s) in sc.iter_mut().zip(&scales) {
            *o = nearest_int(iscale * s).min(127) as i8 as u8;
        }
        final_codes(path, xb, d16.to_f32(), sc, &mut l);
        pack(&l, ql, qh);
    }
    Ok(())
}

/// Splits the codes into the low 4 bits (`ql`) and high 2 bits (`qh`) in ggml's order.
fn pack(l: &[u8; BLOCK], ql: &mut [u8], qh: &mut [u8]) {
    for half in 0..2 {
        let (lh, ql, qh) = (&l[128 * half..], &mut ql[64 * half..], &mut qh[32 * half..]);
        for i in 0..32 {
            ql[i] = (lh[i] & 0xf) | (lh[i + 64] & 0xf) << 4;
            ql[i + 32] = (lh[i + 32] & 0xf) | (lh[i + 96] & 0xf) << 4;
            qh[i] = (lh[i] >> 4)
                | (lh[i + 32] >> 4) << 2
                | (lh[i + 64] >> 4) << 4
                | (lh[i + 96] >> 4) << 6;
        }
    }
}

/// Dequantizes exactly as ggml's `dequantize_row_q6_K`.
pub fn dequantize(bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; n];
    dequantize_into(bytes, &mut out)?;
    Ok(out)
}

/// [`dequantize`] into `out`, whose length is the number of values.
pub fn dequantize_into(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let n = out.len();
    check_multiple(FORMAT, n, BLOCK)?;
    check_len(FORMAT, "tensor data", bytes.len(), packed_size(n))?;
    for (ob, block) in out
        .chunks_exact_mut(BLOCK)
        .zip(bytes.chunks_exact(BLOCK_BYTES))
    {
        let (ql, rest) = block.split_at(QL);
        let (qh, rest) = rest.split_at(QH);
        let (sc, dbytes) = rest.split_at(BLOCK / SUB);
        let d = f16::from_le_bytes([dbytes[0], dbytes[1]]).to_f32();
        for half in 0..2 {
            let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
            let y = &mut ob[128 * half..];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(
            [0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -3.51].map(nearest_int),
            [0, 2, 2, 0, -2, 3, -4]
        );
    }

    #[test]
    fn integers_in_range_round_trip_exactly() {
        // Every sub-block holds -32 and other integers in -31..=31, times 0.25: the best scale of
        // each is exactly 0.25, the super-block scale -1/512 and the sub-block scales -128, so
        // dequantization gives the input back.
        let x: Vec<f32> = (0..512)
            .map(|i| {
                if i % 16 == 0 {
                    -32.0
                } else {
                    ((i * 7) % 63) as f32 - 31.0
                }
            })
            .map(|v| v * 0.25)
            .collect();
        let q = quantize(&x).unwrap();
        assert_eq!(q.len(), 2 * BLOCK_BYTES);
        assert_eq!(dequantize(&q, 512).unwrap(), x);
    }

    #[test]
    fn error_is_small_on_random_data() {
        let mut s = 12345u32;
        let x: Vec<f32> = (0..1024)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        let back = dequantize(&quantize(&x).unwrap(), x.len()).unwrap();
        let err = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.03, "max error {err}");
    }

    /// Sub-blocks of every kind the quantizer branches on: all zero, tiny (below and above
    /// GROUP_MAX_EPS), outliers, exact integers (rounding ties), f16-valued rows, uniform noise.
    fn awkward_inputs(n_blocks: usize) -> Vec<f32> {
        let mut rnd = crate::formats::awkward::uniform(0x9e37_79b9_7f4a_7c15);
        (0..n_blocks * BLOCK)
            .map(|i| {
                let x = rnd();
                match (i / SUB) % 8 {
                    0 => 0.0,
                    1 => x * 1e-16,
                    2 => x * 1e-14,
                    3 if i % 7 == 0 => x * 1e4,
                    3 => x * 1e-2,
                    4 => ((x * 40.0) as i32) as f32 * 0.5,
                    5 => half::f16::from_f32(x * 0.05).to_f32(),
                    6 if (i / BLOCK).is_multiple_of(3) => 0.0,
                    _ => x,
                }
            })
            .collect()
    }

    #[test]
    fn every_path_gives_the_scalar_bytes() {
        let mut x = awkward_inputs(96);
        x.extend(crate::formats::awkward::blocks(14 * 4, BLOCK));
        let mut want = vec![0u8; packed_size(x.len())];
        quantize_into_with(&x, &mut want, Path::Scalar).unwrap();
        let mut got = vec![0xAAu8; want.len()];
        quantize_into(&x, &mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn zero_block_and_errors() {
        assert!(quantize(&[0.0; 256]).unwrap().iter().all(|&b| b == 0));
        assert!(quantize(&[1.0; 128]).is_err());
        assert!(dequantize(&[0u8; 209], 256).is_err());
    }
}
