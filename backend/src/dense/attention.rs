//! Causal attention of one query row over cached keys and values, in f32.
//!
//! The cache is paged: a sequence's positions live in pages of [`PAGE`] positions, anywhere in
//! the cache's buffers, so sequences can grow, shrink and share prefixes without moving data.
//! Within a page, keys are transposed (`[head_dim, PAGE]`, one 64-byte line per dimension), so
//! the scores of one query against a page are `head_dim` row `axpy`s with no horizontal sums;
//! values are `[PAGE, head_dim]`, so the weighted sum of values is one `axpy` per position. The
//! same body is compiled for AVX-512F and for AVX2+FMA (chosen at run time) and portably; only
//! the summation order differs between them, and within one of them the result does not depend
//! on where the pages lie or how they are grouped.

/// Positions per page of a paged KV cache.
pub const PAGE: usize = 16;

/// Keys and values of one key/value head, positions `0..len`, in pages.
///
/// Page `i` (positions `i·PAGE..`) starts at element `pages[i] · page_stride + head_offset` of
/// both `keys` and `values`, and spans `head_dim · PAGE` elements of each: keys transposed
/// (dimension `c` of the page's position `j` at `c · PAGE + j`), values row-major (`j · head_dim
/// + c`). Elements of a page past `len` are read but never used, so they may hold anything.
#[derive(Debug, Clone, Copy)]
pub struct KvHead<'a> {
    /// The buffer holding the pages' keys.
    pub keys: &'a [f32],
    /// The buffer holding the pages' values (same layout of pages as `keys`).
    pub values: &'a [f32],
    /// Page ids, in position order; at least `len.div_ceil(PAGE)` of them.
    pub pages: &'a [u32],
    /// Elements from the start of page id `p` to the start of page id `p + 1`.
    pub page_stride: usize,
    /// Offset of this head's block within every page.
    pub head_offset: usize,
    /// Positions held.
    pub len: usize,
}

impl KvHead<'_> {
    /// First element of page `i` (checked against both buffers for `head_dim`-wide pages).
    fn page_start(&self, i: usize, head_dim: usize) -> usize {
        let at = self.pages[i] as usize * self.page_stride + self.head_offset;
        assert!(
            at + head_dim * PAGE <= self.keys.len().min(self.values.len()),
            "attend: page {i} lies outside the cache buffers"
        );
        at
    }
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
        d > 0
            && visible >= 1
            && visible <= kv.len
            && out.len() == d
            && scores.len() >= visible
            && kv.pages.len() >= visible.div_ceil(PAGE),
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

/// Pages scored together: their sums stay in registers across every dimension (four AVX-512
/// registers, four independent FMA chains).
const PAGE_GROUP: usize = 4;

// Every score and every output value is summed in the same order (dimension by dimension,
// position by position) whatever the grouping of pages, so all groupings give identical results.
#[inline(always)]
fn attend_body<const FMA: bool>(
    q: &[f32],
    kv: &KvHead<'_>,
    visible: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = q.len();
    let s = &mut scores[..visible];
    let full_groups = visible / (PAGE * PAGE_GROUP);
    for g in 0..full_groups {
        let starts: [usize; PAGE_GROUP] =
            std::array::from_fn(|i| kv.page_start(g * PAGE_GROUP + i, d));
        let mut acc = [[0f32; PAGE]; PAGE_GROUP];
        for (c, &qc) in q.iter().enumerate() {
            for (a, &at) in acc.iter_mut().zip(&starts) {
                let k: &[f32; PAGE] = kv.keys[at + c * PAGE..][..PAGE].try_into().expect("page");
                for l in 0..PAGE {
                    a[l] = madd::<FMA>(qc, k[l], a[l]);
                }
            }
        }
        let j0 = g * PAGE * PAGE_GROUP;
        for (i, a) in acc.iter().enumerate() {
            s[j0 + i * PAGE..j0 + (i + 1) * PAGE].copy_from_slice(a);
        }
    }
    // The remaining pages, one at a time (the last one possibly partial).
    for p in full_groups * PAGE_GROUP..visible.div_ceil(PAGE) {
        let at = kv.page_start(p, d);
        let mut acc = [0f32; PAGE];
        for (c, &qc) in q.iter().enumerate() {
            let k: &[f32; PAGE] = kv.keys[at + c * PAGE..][..PAGE].try_into().expect("page");
            for l in 0..PAGE {
                acc[l] = madd::<FMA>(qc, k[l], acc[l]);
            }
        }
        let n = (visible - p * PAGE).min(PAGE);
        s[p * PAGE..p * PAGE + n].copy_from_slice(&acc[..n]);
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
        weighted_values::<128, FMA>(s, kv, d, c0, inv, out);
        c0 += 128;
    }
    while c0 + 32 <= d {
        weighted_values::<32, FMA>(s, kv, d, c0, inv, out);
        c0 += 32;
    }
    while c0 < d {
        weighted_values::<1, FMA>(s, kv, d, c0, inv, out);
        c0 += 1;
    }
}

/// `out[c0..c0 + B] = inv · Σ_j w[j] · values[j, c0..c0 + B]`, the B sums kept in registers
/// across every page.
#[inline(always)]
fn weighted_values<const B: usize, const FMA: bool>(
    w: &[f32],
    kv: &KvHead<'_>,
    d: usize,
    c0: usize,
    inv: f32,
    out: &mut [f32],
) {
    let mut acc = [0f32; B];
    for (p, wp) in w.chunks(PAGE).enumerate() {
        let at = kv.page_start(p, d) + c0;
        for (j, &pj) in wp.iter().enumerate() {
            let v: &[f32; B] = kv.values[at + j * d..][..B].try_into().expect("block");
            for l in 0..B {
                acc[l] = madd::<FMA>(pj, v[l], acc[l]);
            }
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
        // Head dims exercising the 128-, 32- and 1-wide value blocks; lengths with whole page
        // groups, single pages and a partial last page.
        for (d, len) in [(24usize, 9usize), (168, 70), (26, 130), (128, 64)] {
            check(d, len);
        }
    }

    /// Pages scattered through the buffers in reverse order, other heads' blocks between them.
    fn check(d: usize, len: usize) {
        let val = |i: usize| ((i as f32) * 0.731).sin();
        let n_pages = len.div_ceil(PAGE);
        let (n_heads, head) = (3usize, 1usize);
        let page_stride = n_heads * d * PAGE;
        let pages: Vec<u32> = (0..n_pages as u32).rev().collect();
        let mut keys_buf = vec![f32::NAN; (n_pages + 1) * page_stride];
        let mut values_buf = keys_buf.clone();
        let keys: Vec<Vec<f32>> = (0..len)
            .map(|j| (0..d).map(|c| val(j * d + c)).collect())
            .collect();
        let values: Vec<f32> = (0..len * d).map(|i| val(i + 1000)).collect();
        for j in 0..len {
            let at = pages[j / PAGE] as usize * page_stride + head * d * PAGE;
            for c in 0..d {
                keys_buf[at + c * PAGE + j % PAGE] = keys[j][c];
                values_buf[at + (j % PAGE) * d + c] = values[j * d + c];
            }
        }
        // Unused slots of the last page hold finite garbage (NaN elsewhere proves they are
        // the only unused elements read).
        let last = pages[n_pages - 1] as usize * page_stride + head * d * PAGE;
        for x in &mut keys_buf[last..last + d * PAGE] {
            if x.is_nan() {
                *x = 1e3;
            }
        }
        let q: Vec<f32> = (0..d).map(|c| val(c + 5000) * 3.0).collect();
        let kv = KvHead {
            keys: &keys_buf,
            values: &values_buf,
            pages: &pages,
            page_stride,
            head_offset: head * d * PAGE,
            len,
        };
        let scale = 1.0 / (d as f32).sqrt();
        for visible in [1, 4, 16, 17, 64, 65, len]
            .into_iter()
            .filter(|&v| v <= len)
        {
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
                    "d {d}, visible {visible}, dim {c}: {} vs {want}",
                    out[c]
                );
            }
        }
    }

    #[test]
    fn page_placement_does_not_change_the_result() {
        let (d, len) = (64usize, 100usize);
        let n_pages = len.div_ceil(PAGE);
        let stride = d * PAGE;
        let fill = |pages: &[u32]| {
            let mut k = vec![0f32; 2 * n_pages * stride];
            let mut v = k.clone();
            for j in 0..len {
                let at = pages[j / PAGE] as usize * stride;
                for c in 0..d {
                    k[at + c * PAGE + j % PAGE] = ((j * 7 + c) as f32 * 0.37).cos();
                    v[at + (j % PAGE) * d + c] = ((j * 3 + c) as f32 * 0.11).sin();
                }
            }
            (k, v)
        };
        let q: Vec<f32> = (0..d).map(|c| (c as f32 * 0.5).sin()).collect();
        let run = |pages: &[u32]| {
            let (k, v) = fill(pages);
            let kv = KvHead {
                keys: &k,
                values: &v,
                pages,
                page_stride: stride,
                head_offset: 0,
                len,
            };
            let mut out = vec![0f32; d];
            attend(&q, &kv, len, 0.125, &mut vec![0f32; len], &mut out);
            out
        };
        let in_order: Vec<u32> = (0..n_pages as u32).collect();
        let scattered: Vec<u32> = (0..n_pages as u32).map(|p| 2 * p + 1).collect();
        assert_eq!(run(&in_order), run(&scattered), "bit-identical");
    }
}
