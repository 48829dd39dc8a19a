//! Causal attention of one query row over cached keys and values, in f32.
//!
//! The cache is paged: a sequence's positions live in pages of [`PAGE`] positions, anywhere in
//! the cache's buffers, so sequences can grow, shrink and share prefixes without moving data.
//! Within a page, keys are transposed (`[head_dim, PAGE]`, one 64-byte line per dimension), so
//! the scores of one query against a page are `head_dim` row `axpy`s with no horizontal sums;
//! values are `[PAGE, head_dim]`, so the weighted sum of values is one `axpy` per position.
//! Query heads that share a key/value head (grouped-query attention) are computed in one pass
//! ([`attend_heads`]), each key and value read once for up to four heads.
//!
//! LLVM leaves the portable loops scalar, so the AVX-512F, AVX2+FMA (`x86`) and NEON
//! (`aarch64`) paths, chosen at run time, spell them out in registers. The x86 paths fuse each
//! multiply-add, as the scalar code compiled for FMA does; NEON and the portable code round
//! the product first. Each path performs exactly its scalar counterpart's operations lane by
//! lane, in the same order (tests compare them bit for bit), and within one of them the result
//! does not depend on where the pages lie or how pages and heads are grouped.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86;

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
    assert!(out.len() == d, "attend: inconsistent shapes");
    attend_heads(q, d, kv, visible, scale, scores, out, d);
}

/// [`attend`] for `q.len() / d` query heads that share the key/value head `kv` (grouped-query
/// attention), in one pass over its keys and values: each is read once for up to four heads
/// instead of once per head. Head `i`'s query is `q[i·d..][..d]` and its output goes to
/// `out[i·out_stride..][..d]`; `scores` is scratch of at least `n_heads · visible` values.
/// Every head's output is bit-identical to [`attend`] of that head alone.
///
/// Panics if the slices are shorter than the shapes say (a caller bug, not bad input).
#[allow(clippy::too_many_arguments)]
pub fn attend_heads(
    q: &[f32],
    d: usize,
    kv: &KvHead<'_>,
    visible: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let n_heads = q.len().checked_div(d).unwrap_or(0);
    assert!(
        d > 0
            && n_heads >= 1
            && q.len() == n_heads * d
            && out_stride >= d
            && out.len() >= (n_heads - 1) * out_stride + d
            && visible >= 1
            && visible <= kv.len
            && scores.len() >= n_heads * visible
            && kv.pages.len() >= visible.div_ceil(PAGE),
        "attend: inconsistent shapes"
    );
    let args = Heads {
        q,
        d,
        kv,
        visible,
        scale,
    };
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above); the body only
            // indexes slices (bounds-checked).
            return unsafe { heads_avx512(&args, scores, out, out_stride) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { heads_avx2(&args, scores, out, out_stride) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        // SAFETY: the CPU supports NEON (checked just above).
        return unsafe { heads_neon(&args, scores, out, out_stride) };
    }
    heads_body::<PORTABLE>(&args, scores, out, out_stride)
}

/// How [`attend_pass`] is compiled: plain multiply-adds, fused ones (the reference the tests hold
/// the registers to), or AVX2 or AVX-512 registers (the same fused operations lane by lane, so
/// the last three give identical results).
const PORTABLE: u8 = 0;
#[cfg(all(test, target_arch = "x86_64"))]
const FUSED: u8 = 1;
const AVX2: u8 = 2;
#[cfg(target_arch = "x86_64")]
const AVX512: u8 = 3;
/// NEON registers, rounding each product before the add as the portable loops do.
const NEON: u8 = 4;

/// The inputs of [`attend_heads`].
struct Heads<'a, 'k> {
    q: &'a [f32],
    d: usize,
    kv: &'a KvHead<'k>,
    visible: usize,
    scale: f32,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn heads_avx512(a: &Heads<'_, '_>, scores: &mut [f32], out: &mut [f32], out_stride: usize) {
    heads_body::<AVX512>(a, scores, out, out_stride)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn heads_avx2(a: &Heads<'_, '_>, scores: &mut [f32], out: &mut [f32], out_stride: usize) {
    heads_body::<AVX2>(a, scores, out, out_stride)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn heads_neon(a: &Heads<'_, '_>, scores: &mut [f32], out: &mut [f32], out_stride: usize) {
    heads_body::<NEON>(a, scores, out, out_stride)
}

/// Query heads computed in one pass (their sums stay in registers together).
const HEAD_GROUP: usize = 4;

/// Splits the heads into passes of up to [`HEAD_GROUP`].
#[inline(always)]
fn heads_body<const P: u8>(
    a: &Heads<'_, '_>,
    scores: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let (d, n) = (a.d, a.visible);
    let n_heads = a.q.len() / d;
    let mut h0 = 0;
    while h0 < n_heads {
        let g = (n_heads - h0).min(HEAD_GROUP);
        let q = &a.q[h0 * d..(h0 + g) * d];
        let s = &mut scores[h0 * n..(h0 + g) * n];
        let o = &mut out[h0 * out_stride..];
        match g {
            4 => attend_pass::<4, P>(a, q, s, o, out_stride),
            3 => attend_pass::<3, P>(a, q, s, o, out_stride),
            2 => attend_pass::<2, P>(a, q, s, o, out_stride),
            _ => attend_pass::<1, P>(a, q, s, o, out_stride),
        }
        h0 += g;
    }
}

/// `a · b + c`, fused on the x86 paths (whose target features make that one instruction);
/// rounded twice on the portable and NEON ones.
#[inline(always)]
fn madd<const P: u8>(a: f32, b: f32, c: f32) -> f32 {
    if P != PORTABLE && P != NEON {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Pages scored together: their sums stay in registers across every dimension (with
/// [`HEAD_GROUP`] heads, sixteen AVX-512 registers, sixteen independent FMA chains).
const PAGE_GROUP: usize = 4;

// Every score and every output value is summed in the same order (dimension by dimension,
// position by position) whatever the grouping of pages and heads, so all groupings give
// identical results.
#[inline(always)]
fn attend_pass<const G: usize, const P: u8>(
    a: &Heads<'_, '_>,
    q: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let (d, kv, visible) = (a.d, a.kv, a.visible);
    let qs: [&[f32]; G] = std::array::from_fn(|h| &q[h * d..(h + 1) * d]);
    // AVX2's sixteen registers (and NEON's 32 of a quarter the width) hold the sums of one
    // page for four heads, not of four pages.
    #[cfg(target_arch = "aarch64")]
    let one_page = P == AVX2 || P == NEON;
    #[cfg(not(target_arch = "aarch64"))]
    let one_page = P == AVX2;
    let full_groups = match one_page {
        true => 0,
        false => visible / (PAGE * PAGE_GROUP),
    };
    let n_pages = visible.div_ceil(PAGE);
    // The pages scored next, whose keys the register loops prefetch.
    let next = |p: usize| kv.page_start(p.min(n_pages - 1), d);
    for g in 0..full_groups {
        let starts: [usize; PAGE_GROUP] =
            std::array::from_fn(|i| kv.page_start(g * PAGE_GROUP + i, d));
        let ahead: [usize; PAGE_GROUP] = std::array::from_fn(|i| next((g + 1) * PAGE_GROUP + i));
        let acc = score_page_group::<G, P>(kv, &starts, &ahead, &qs, d);
        let j0 = g * PAGE * PAGE_GROUP;
        for (h, acc_h) in acc.iter().enumerate() {
            for (i, acc_p) in acc_h.iter().enumerate() {
                let at = h * visible + j0 + i * PAGE;
                scores[at..at + PAGE].copy_from_slice(acc_p);
            }
        }
    }
    // The remaining pages, one at a time (the last one possibly partial).
    for p in full_groups * PAGE_GROUP..n_pages {
        let at = kv.page_start(p, d);
        let acc = score_page::<G, P>(kv, at, next(p + 1), &qs, d);
        let n = (visible - p * PAGE).min(PAGE);
        for (h, acc_h) in acc.iter().enumerate() {
            let at = h * visible + p * PAGE;
            scores[at..at + n].copy_from_slice(&acc_h[..n]);
        }
    }

    let mut inv = [0f32; G];
    for (s, inv) in scores.chunks_exact_mut(visible).zip(&mut inv) {
        let mut max = f32::NEG_INFINITY;
        for x in s.iter_mut() {
            *x *= a.scale;
            max = max.max(*x);
        }
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        *inv = 1.0 / sum;
    }

    let mut c0 = 0;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (every call): P == AVX512 only in heads_avx512, which requires AVX-512F, and
        // P == AVX2 only in heads_avx2, which requires AVX2 and FMA.
        while P == AVX512 && c0 + 64 <= d {
            unsafe {
                x86::weighted_values::<G, 4>(scores, kv, d, visible, c0, &inv, out, out_stride)
            };
            c0 += 64;
        }
        while P == AVX512 && c0 + 16 <= d {
            unsafe {
                x86::weighted_values::<G, 1>(scores, kv, d, visible, c0, &inv, out, out_stride)
            };
            c0 += 16;
        }
        while P == AVX2 && c0 + 16 <= d {
            unsafe { x86::weighted_values_avx2(scores, kv, d, visible, c0, &inv, out, out_stride) };
            c0 += 16;
        }
    }
    #[cfg(target_arch = "aarch64")]
    while P == NEON && c0 + 16 <= d {
        // SAFETY: P == NEON only in heads_neon, which requires NEON.
        unsafe { aarch64::weighted_values(scores, kv, d, visible, c0, &inv, out, out_stride) };
        c0 += 16;
    }
    while c0 + 64 <= d {
        weighted_values::<G, 64, P>(scores, kv, d, visible, c0, &inv, out, out_stride);
        c0 += 64;
    }
    while c0 + 16 <= d {
        weighted_values::<G, 16, P>(scores, kv, d, visible, c0, &inv, out, out_stride);
        c0 += 16;
    }
    while c0 < d {
        weighted_values::<G, 1, P>(scores, kv, d, visible, c0, &inv, out, out_stride);
        c0 += 1;
    }
}

/// The scores of `G` heads against [`PAGE_GROUP`] pages, in registers where `P` has them
/// (`ahead`: the pages scored next, prefetched).
#[inline(always)]
fn score_page_group<const G: usize, const P: u8>(
    kv: &KvHead<'_>,
    starts: &[usize; PAGE_GROUP],
    ahead: &[usize; PAGE_GROUP],
    qs: &[&[f32]; G],
    d: usize,
) -> [[[f32; PAGE]; PAGE_GROUP]; G] {
    #[cfg(target_arch = "x86_64")]
    if P == AVX512 {
        // SAFETY: P == AVX512 only in heads_avx512, which requires AVX-512F.
        return unsafe { x86::page_group_scores(kv, starts, ahead, qs, d) };
    }
    let _ = ahead;
    page_group_scores::<G, P>(kv, starts, qs, d)
}

/// The scores of `G` heads against the page at `at`, in registers where `P` has them
/// (`ahead`: the page scored next, prefetched).
#[inline(always)]
fn score_page<const G: usize, const P: u8>(
    kv: &KvHead<'_>,
    at: usize,
    ahead: usize,
    qs: &[&[f32]; G],
    d: usize,
) -> [[f32; PAGE]; G] {
    #[cfg(target_arch = "x86_64")]
    {
        if P == AVX512 {
            // SAFETY: P == AVX512 only in heads_avx512, which requires AVX-512F.
            return unsafe { x86::page_scores(kv, at, ahead, qs, d) };
        }
        if P == AVX2 {
            // SAFETY: P == AVX2 only in heads_avx2, which requires AVX2 and FMA.
            return unsafe { x86::page_scores_avx2(kv, at, ahead, qs, d) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    if P == NEON {
        // SAFETY: P == NEON only in heads_neon, which requires NEON.
        return unsafe { aarch64::page_scores(kv, at, qs, d) };
    }
    let _ = ahead;
    page_scores::<G, P>(kv, at, qs, d)
}

/// Portable [`x86::page_group_scores`]: the scores of `G` heads against [`PAGE_GROUP`] pages.
#[inline(always)]
fn page_group_scores<const G: usize, const P: u8>(
    kv: &KvHead<'_>,
    starts: &[usize; PAGE_GROUP],
    qs: &[&[f32]; G],
    d: usize,
) -> [[[f32; PAGE]; PAGE_GROUP]; G] {
    let mut acc = [[[0f32; PAGE]; PAGE_GROUP]; G];
    for c in 0..d {
        let k: [&[f32; PAGE]; PAGE_GROUP] = std::array::from_fn(|i| {
            kv.keys[starts[i] + c * PAGE..][..PAGE]
                .try_into()
                .expect("page")
        });
        for (acc_h, q_h) in acc.iter_mut().zip(qs) {
            let qc = q_h[c];
            for (acc_p, k_p) in acc_h.iter_mut().zip(&k) {
                for l in 0..PAGE {
                    acc_p[l] = madd::<P>(qc, k_p[l], acc_p[l]);
                }
            }
        }
    }
    acc
}

/// Portable [`x86::page_scores`]: the scores of `G` heads against the page at `at`.
#[inline(always)]
fn page_scores<const G: usize, const P: u8>(
    kv: &KvHead<'_>,
    at: usize,
    qs: &[&[f32]; G],
    d: usize,
) -> [[f32; PAGE]; G] {
    let mut acc = [[0f32; PAGE]; G];
    for c in 0..d {
        let k: &[f32; PAGE] = kv.keys[at + c * PAGE..][..PAGE].try_into().expect("page");
        for (acc_h, q_h) in acc.iter_mut().zip(qs) {
            let qc = q_h[c];
            for l in 0..PAGE {
                acc_h[l] = madd::<P>(qc, k[l], acc_h[l]);
            }
        }
    }
    acc
}

/// For each of the `G` heads: `out[c0..c0 + B] = inv · Σ_j w[j] · values[j, c0..c0 + B]`, the
/// `G · B` sums kept in registers across every page.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn weighted_values<const G: usize, const B: usize, const P: u8>(
    w: &[f32],
    kv: &KvHead<'_>,
    d: usize,
    visible: usize,
    c0: usize,
    inv: &[f32; G],
    out: &mut [f32],
    out_stride: usize,
) {
    let mut acc = [[0f32; B]; G];
    for p in 0..visible.div_ceil(PAGE) {
        let at = kv.page_start(p, d) + c0;
        for j in p * PAGE..visible.min((p + 1) * PAGE) {
            let v: &[f32; B] = kv.values[at + (j - p * PAGE) * d..][..B]
                .try_into()
                .expect("block");
            for (h, acc_h) in acc.iter_mut().enumerate() {
                let wj = w[h * visible + j];
                for l in 0..B {
                    acc_h[l] = madd::<P>(wj, v[l], acc_h[l]);
                }
            }
        }
    }
    for (h, acc_h) in acc.iter().enumerate() {
        let o = &mut out[h * out_stride + c0..][..B];
        for (o, a) in o.iter_mut().zip(acc_h) {
            *o = a * inv[h];
        }
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
    fn heads_in_one_pass_equal_each_head_alone_bit_for_bit() {
        // 1..=9 heads cover passes of 4, 3, 2 and 1 heads; 130 positions a partial last page
        // after two page groups; d = 88 the 64-, 16- and 1-wide value blocks.
        let (d, len) = (88usize, 130usize);
        let stride = d * PAGE;
        let val = |i: usize| ((i as f32) * 0.377).sin();
        let (keys, values, pages) = reversed_pages(len, stride, val, 7919);
        let kv = KvHead {
            keys: &keys,
            values: &values,
            pages: &pages,
            page_stride: stride,
            head_offset: 0,
            len,
        };
        for n_heads in 1..=9usize {
            let q: Vec<f32> = (0..n_heads * d).map(|i| val(i + 31) * 2.0).collect();
            for visible in [1, 17, 64, 65, len] {
                let out_stride = d + 5;
                let mut together = vec![f32::NAN; n_heads * out_stride];
                let mut scores = vec![0f32; n_heads * visible];
                attend_heads(
                    &q,
                    d,
                    &kv,
                    visible,
                    0.1,
                    &mut scores,
                    &mut together,
                    out_stride,
                );
                for h in 0..n_heads {
                    let mut alone = vec![0f32; d];
                    let qh = &q[h * d..(h + 1) * d];
                    attend(qh, &kv, visible, 0.1, &mut vec![0f32; visible], &mut alone);
                    let got = &together[h * out_stride..h * out_stride + d];
                    assert!(
                        same_bits(got, &alone),
                        "{n_heads} heads, visible {visible}, head {h}"
                    );
                }
            }
        }
    }

    /// Calls `check(args, n_heads)` on awkward cases for the register paths: d = 88 takes the
    /// 64- and 16-wide value blocks and a scalar tail, 24 a 16-wide block and a tail, 128 two
    /// 64-wide blocks; 1 to 5 heads (passes of 4 and 1); partial pages and page groups; pages
    /// in reverse order, another head's block between them.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn register_cases(mut check: impl FnMut(&Heads<'_, '_>, usize)) {
        for (d, len) in [(88usize, 150usize), (24, 70), (128, 64), (16, 5)] {
            let stride = 2 * d * PAGE;
            let val = |i: usize| ((i as f32) * 0.613).cos();
            let (keys, values, pages) = reversed_pages(len, stride, val, 101);
            let kv = KvHead {
                keys: &keys,
                values: &values,
                pages: &pages,
                page_stride: stride,
                head_offset: d * PAGE,
                len,
            };
            for n_heads in 1..=5usize {
                let q: Vec<f32> = (0..n_heads * d).map(|i| val(i + 7) * 3.0).collect();
                for visible in [1, 16, 63, 64, 65, len].into_iter().filter(|&v| v <= len) {
                    let args = Heads {
                        q: &q,
                        d,
                        kv: &kv,
                        visible,
                        scale: 0.2,
                    };
                    check(&args, n_heads);
                }
            }
        }
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// Key and value buffers of `len` positions, `stride` elements per page, filled from
    /// `val` (values offset by `value_offset`), and page ids in reverse order.
    fn reversed_pages(
        len: usize,
        stride: usize,
        val: impl Fn(usize) -> f32,
        value_offset: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        let n_pages = len.div_ceil(PAGE);
        let keys = (0..n_pages * stride).map(&val).collect();
        let values = (0..n_pages * stride)
            .map(|i| val(i + value_offset))
            .collect();
        (keys, values, (0..n_pages as u32).rev().collect())
    }

    /// The scalar fused path, the reference for the x86 register paths.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    fn heads_fused(a: &Heads<'_, '_>, scores: &mut [f32], out: &mut [f32], out_stride: usize) {
        heads_body::<FUSED>(a, scores, out, out_stride)
    }

    /// The AVX2 and AVX-512 registers perform the fused path's `mul_add`s lane by lane:
    /// identical bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn register_paths_equal_the_fused_scalar_path_bit_for_bit() {
        if !(is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma"))
        {
            eprintln!("skipped: this CPU lacks AVX-512F, AVX2 or FMA");
            return;
        }
        register_cases(|args, n_heads| {
            let (d, visible) = (args.d, args.visible);
            let mut scores = vec![0f32; n_heads * visible];
            let mut fused = vec![0f32; n_heads * d];
            let (mut zmm, mut ymm) = (fused.clone(), fused.clone());
            // SAFETY: every feature was detected above.
            unsafe {
                heads_fused(args, &mut scores, &mut fused, d);
                heads_avx512(args, &mut scores, &mut zmm, d);
                heads_avx2(args, &mut scores, &mut ymm, d);
            }
            let case = format!("d {d}, {n_heads} heads, visible {visible}");
            assert!(same_bits(&zmm, &fused), "AVX-512: {case}");
            assert!(same_bits(&ymm, &fused), "AVX2: {case}");
        });
    }

    /// NEON rounds each product before adding it, as the portable loops do: identical bits.
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_registers_equal_the_portable_path_bit_for_bit() {
        register_cases(|args, n_heads| {
            let (d, visible) = (args.d, args.visible);
            let mut scores = vec![0f32; n_heads * visible];
            let mut portable = vec![0f32; n_heads * d];
            let mut neon = portable.clone();
            heads_body::<PORTABLE>(args, &mut scores, &mut portable, d);
            // SAFETY: NEON is part of every aarch64 Linux target.
            unsafe { heads_neon(args, &mut scores, &mut neon, d) };
            assert!(
                same_bits(&neon, &portable),
                "d {d}, {n_heads} heads, visible {visible}"
            );
        });
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
