//! Causal attention of one query row over cached keys and values, in f32.
//!
//! Keys come transposed (`[head_dim, stride]`, position-contiguous), so the scores of one query
//! against every visible position are `head_dim` row `axpy`s with no horizontal sums; the weighted
//! sum of values is one `axpy` per position. The same body is compiled for AVX-512F and for
//! AVX2+FMA (chosen at run time) and portably; only the summation order differs between them.

/// Keys and values of one key/value head, positions `0..len`.
#[derive(Debug, Clone, Copy)]
pub struct KvHead<'a> {
    /// Dimension `c` of position `j` is `keys_t[c * key_stride + j]`.
    pub keys_t: &'a [f32],
    /// Row stride of `keys_t` (at least `len`).
    pub key_stride: usize,
    /// `[len, head_dim]` row-major.
    pub values: &'a [f32],
    /// Positions held.
    pub len: usize,
}

/// `out = softmax(scale · q·Kᵀ) · V` over the first `visible` positions of `kv`
/// (`q` and `out` have `head_dim` values; `scores` is scratch of at least `visible` values).
///
/// Panics if the slices are shorter than the shapes say (a caller bug, not bad input).
pub fn attend(
    q: &[f32],
    kv: &KvHead<'_>,
    visible: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = q.len();
    assert!(
        visible >= 1
            && visible <= kv.len
            && out.len() == d
            && scores.len() >= visible
            && kv.key_stride >= kv.len
            && kv.keys_t.len() >= (d - 1) * kv.key_stride + kv.len
            && kv.values.len() >= kv.len * d,
        "attend: inconsistent shapes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above); the body only
            // indexes slices (bounds-checked).
            return unsafe { attend_avx512(q, kv, visible, scale, scores, out) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { attend_avx2(q, kv, visible, scale, scores, out) };
        }
    }
    attend_body::<false>(q, kv, visible, scale, scores, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn attend_avx512(
    q: &[f32],
    kv: &KvHead<'_>,
    visible: usize,
    scale: f32,
    s: &mut [f32],
    out: &mut [f32],
) {
    attend_body::<true>(q, kv, visible, scale, s, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_avx2(
    q: &[f32],
    kv: &KvHead<'_>,
    visible: usize,
    scale: f32,
    s: &mut [f32],
    out: &mut [f32],
) {
    attend_body::<true>(q, kv, visible, scale, s, out)
}

/// `a · b + c`, fused where the caller's target features make that one instruction.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Keys scored together: their sums stay in registers across every dimension (four AVX-512
/// registers, four independent FMA chains).
const KEY_BLOCK: usize = 64;

// Every score and every output value is summed in the same order (dimension by dimension,
// position by position) whatever the blocking, so all blockings give identical results.
#[inline(always)]
fn attend_body<const FMA: bool>(
    q: &[f32],
    kv: &KvHead<'_>,
    visible: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (d, stride) = (q.len(), kv.key_stride);
    let s = &mut scores[..visible];
    let full = visible / KEY_BLOCK * KEY_BLOCK;
    for j0 in (0..full).step_by(KEY_BLOCK) {
        let mut acc = [0f32; KEY_BLOCK];
        for (c, &qc) in q.iter().enumerate() {
            let at = c * stride + j0;
            let k: &[f32; KEY_BLOCK] = kv.keys_t[at..at + KEY_BLOCK].try_into().expect("block");
            for l in 0..KEY_BLOCK {
                acc[l] = madd::<FMA>(qc, k[l], acc[l]);
            }
        }
        s[j0..j0 + KEY_BLOCK].copy_from_slice(&acc);
    }
    let tail = &mut s[full..];
    tail.fill(0.0);
    for (c, &qc) in q.iter().enumerate() {
        let row = &kv.keys_t[c * stride + full..c * stride + visible];
        for (x, &k) in tail.iter_mut().zip(row) {
            *x = madd::<FMA>(qc, k, *x);
        }
    }

    let mut max = f32::NEG_INFINITY;
    for x in s.iter_mut() {
        *x *= scale;
        max = max.max(*x);
    }
    let mut sum = 0f32;
    for x in s.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;

    let mut c0 = 0;
    while c0 + 128 <= d {
        weighted_values::<128, FMA>(s, kv.values, d, c0, inv, out);
        c0 += 128;
    }
    while c0 + 32 <= d {
        weighted_values::<32, FMA>(s, kv.values, d, c0, inv, out);
        c0 += 32;
    }
    while c0 < d {
        weighted_values::<1, FMA>(s, kv.values, d, c0, inv, out);
        c0 += 1;
    }
}

/// `out[c0..c0 + B] = inv · Σ_j w[j] · values[j, c0..c0 + B]`, the B sums kept in registers.
#[inline(always)]
fn weighted_values<const B: usize, const FMA: bool>(
    w: &[f32],
    values: &[f32],
    d: usize,
    c0: usize,
    inv: f32,
    out: &mut [f32],
) {
    let mut acc = [0f32; B];
    for (j, &p) in w.iter().enumerate() {
        let v: &[f32; B] = values[j * d + c0..j * d + c0 + B]
            .try_into()
            .expect("block");
        for l in 0..B {
            acc[l] = madd::<FMA>(p, v[l], acc[l]);
        }
    }
    for (o, a) in out[c0..c0 + B].iter_mut().zip(acc) {
        *o = a * inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_softmax_in_f64() {
        for (d, len, stride) in [(24usize, 9usize, 13usize), (168, 70, 75), (26, 130, 130)] {
            check(d, len, stride);
        }
    }

    fn check(d: usize, len: usize, stride: usize) {
        let val = |i: usize| ((i as f32) * 0.731).sin();
        let keys: Vec<Vec<f32>> = (0..len)
            .map(|j| (0..d).map(|c| val(j * d + c)).collect())
            .collect();
        let mut keys_t = vec![f32::NAN; d * stride];
        for (j, k) in keys.iter().enumerate() {
            for c in 0..d {
                keys_t[c * stride + j] = k[c];
            }
        }
        let values: Vec<f32> = (0..len * d).map(|i| val(i + 1000)).collect();
        let q: Vec<f32> = (0..d).map(|c| val(c + 5000) * 3.0).collect();
        let kv = KvHead {
            keys_t: &keys_t,
            key_stride: stride,
            values: &values,
            len,
        };
        let scale = 1.0 / (d as f32).sqrt();
        for visible in [1, 4, 64, 65, len].into_iter().filter(|&v| v <= len) {
            let logits: Vec<f64> = keys[..visible]
                .iter()
                .map(|k| {
                    k.iter()
                        .zip(&q)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let z: f64 = e.iter().sum();
            let mut scores = vec![0f32; len];
            let mut out = vec![0f32; d];
            attend(&q, &kv, visible, scale, &mut scores, &mut out);
            for c in 0..d {
                let want: f64 = (0..visible)
                    .map(|j| e[j] / z * values[j * d + c] as f64)
                    .sum();
                assert!(
                    (out[c] as f64 - want).abs() < 1e-5,
                    "visible {visible}, dim {c}: {} vs {want}",
                    out[c]
                );
            }
        }
    }
}
