//! AVX-512F and AVX2 bodies of the attention loops. LLVM leaves the portable loops scalar (one
//! `vfmadd213ss` per element, accumulators on the stack), so these spell the same fused
//! multiply-adds out one 16- or 8-lane register at a time: every lane performs exactly the
//! portable code's `mul_add`s in the same order, so the results are bit-identical to it.

use std::arch::x86_64::*;

use super::{KvHead, PAGE, PAGE_GROUP};

/// Scores of `G` query heads against the [`PAGE_GROUP`] pages starting at `starts`:
/// `acc[h][i][l] = Σ_c q_h[c] · key(page i, position l)[c]`, dimension by dimension.
///
/// A head's pages are a few KiB each, scattered through the cache, too short for the hardware
/// prefetchers to ramp up on, so each dimension step also prefetches one line of the keys of
/// the pages scored next (`ahead`) and one line of these pages' values (read right after the
/// scores).
#[target_feature(enable = "avx512f")]
pub(super) fn page_group_scores<const G: usize>(
    kv: &KvHead<'_>,
    starts: &[usize; PAGE_GROUP],
    ahead: &[usize; PAGE_GROUP],
    qs: &[&[f32]; G],
    d: usize,
) -> [[[f32; PAGE]; PAGE_GROUP]; G] {
    assert!(starts.iter().all(|&s| s + d * PAGE <= kv.keys.len()));
    assert!(qs.iter().all(|q| q.len() == d));
    let (keys, values) = (kv.keys.as_ptr(), kv.values.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); PAGE_GROUP]; G];
    for c in 0..d {
        for i in 0..PAGE_GROUP {
            prefetch(keys.wrapping_add(ahead[i] + c * PAGE));
            prefetch(values.wrapping_add(starts[i] + c * PAGE));
        }
        // SAFETY: starts[i] + c·PAGE + PAGE <= starts[i] + d·PAGE <= keys.len() (asserted).
        let k: [__m512; PAGE_GROUP] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_ps(keys.add(starts[i] + c * PAGE)) });
        for (acc_h, q_h) in acc.iter_mut().zip(qs) {
            let qc = _mm512_set1_ps(q_h[c]);
            for (a, k) in acc_h.iter_mut().zip(&k) {
                *a = _mm512_fmadd_ps(qc, *k, *a);
            }
        }
    }
    acc.map(|acc_h| acc_h.map(to_array))
}

/// Scores of `G` query heads against the one page starting at `at`, prefetching as
/// [`page_group_scores`] does (`ahead`: the page scored next).
#[target_feature(enable = "avx512f")]
pub(super) fn page_scores<const G: usize>(
    kv: &KvHead<'_>,
    at: usize,
    ahead: usize,
    qs: &[&[f32]; G],
    d: usize,
) -> [[f32; PAGE]; G] {
    assert!(at + d * PAGE <= kv.keys.len());
    assert!(qs.iter().all(|q| q.len() == d));
    let (keys, values) = (kv.keys.as_ptr(), kv.values.as_ptr());
    let mut acc = [_mm512_setzero_ps(); G];
    for c in 0..d {
        prefetch(keys.wrapping_add(ahead + c * PAGE));
        prefetch(values.wrapping_add(at + c * PAGE));
        // SAFETY: at + c·PAGE + PAGE <= at + d·PAGE <= keys.len() (asserted).
        let k = unsafe { _mm512_loadu_ps(keys.add(at + c * PAGE)) };
        for (a, q_h) in acc.iter_mut().zip(qs) {
            *a = _mm512_fmadd_ps(_mm512_set1_ps(q_h[c]), k, *a);
        }
    }
    acc.map(to_array)
}

/// For each of the `G` heads, `out[h·out_stride + c0..][..16·V] = inv[h] · Σ_j w[h·visible + j]
/// · value(j)[c0..c0 + 16·V]`, position by position.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) fn weighted_values<const G: usize, const V: usize>(
    w: &[f32],
    kv: &KvHead<'_>,
    d: usize,
    visible: usize,
    c0: usize,
    inv: &[f32; G],
    out: &mut [f32],
    out_stride: usize,
) {
    assert!(c0 + 16 * V <= d && w.len() >= G * visible);
    let values = kv.values.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); V]; G];
    for p in 0..visible.div_ceil(PAGE) {
        // page_start checks that the page's d·PAGE values lie inside the buffer.
        let page = kv.page_start(p, d);
        for j in p * PAGE..visible.min((p + 1) * PAGE) {
            let row = page + (j - p * PAGE) * d + c0;
            // SAFETY: row + 16·V <= page + (PAGE - 1)·d + d <= page + d·PAGE, inside the
            // buffer (checked by page_start), since c0 + 16·V <= d (asserted).
            let v: [__m512; V] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_ps(values.add(row + 16 * i)) });
            for (h, acc_h) in acc.iter_mut().enumerate() {
                let wj = _mm512_set1_ps(w[h * visible + j]);
                for (a, v) in acc_h.iter_mut().zip(&v) {
                    *a = _mm512_fmadd_ps(wj, *v, *a);
                }
            }
        }
    }
    for (h, acc_h) in acc.iter().enumerate() {
        let o = &mut out[h * out_stride + c0..][..16 * V];
        let scale = _mm512_set1_ps(inv[h]);
        for (o, a) in o.chunks_exact_mut(16).zip(acc_h) {
            o.copy_from_slice(&to_array(_mm512_mul_ps(*a, scale)));
        }
    }
}

/// AVX2 [`page_scores`]: a page is two 8-lane registers, so `G` heads take `2·G` of the sixteen.
#[target_feature(enable = "avx2,fma")]
pub(super) fn page_scores_avx2<const G: usize>(
    kv: &KvHead<'_>,
    at: usize,
    ahead: usize,
    qs: &[&[f32]; G],
    d: usize,
) -> [[f32; PAGE]; G] {
    assert!(at + d * PAGE <= kv.keys.len());
    assert!(qs.iter().all(|q| q.len() == d));
    let (keys, values) = (kv.keys.as_ptr(), kv.values.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); 2]; G];
    for c in 0..d {
        prefetch(keys.wrapping_add(ahead + c * PAGE));
        prefetch(values.wrapping_add(at + c * PAGE));
        // SAFETY: at + c·PAGE + 16 <= at + d·PAGE <= keys.len() (asserted).
        let k = unsafe {
            let line = keys.add(at + c * PAGE);
            [_mm256_loadu_ps(line), _mm256_loadu_ps(line.add(8))]
        };
        for (a, q_h) in acc.iter_mut().zip(qs) {
            let qc = _mm256_set1_ps(q_h[c]);
            a[0] = _mm256_fmadd_ps(qc, k[0], a[0]);
            a[1] = _mm256_fmadd_ps(qc, k[1], a[1]);
        }
    }
    acc.map(|[lo, hi]| {
        let mut page = [0f32; PAGE];
        page[..8].copy_from_slice(&to_array8(lo));
        page[8..].copy_from_slice(&to_array8(hi));
        page
    })
}

/// AVX2 [`weighted_values`] for 16 output values (two registers) per head.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) fn weighted_values_avx2<const G: usize>(
    w: &[f32],
    kv: &KvHead<'_>,
    d: usize,
    visible: usize,
    c0: usize,
    inv: &[f32; G],
    out: &mut [f32],
    out_stride: usize,
) {
    assert!(c0 + 16 <= d && w.len() >= G * visible);
    let values = kv.values.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; G];
    for p in 0..visible.div_ceil(PAGE) {
        // page_start checks that the page's d·PAGE values lie inside the buffer.
        let page = kv.page_start(p, d);
        for j in p * PAGE..visible.min((p + 1) * PAGE) {
            let row = page + (j - p * PAGE) * d + c0;
            // SAFETY: row + 16 <= page + d·PAGE, inside the buffer (checked by page_start),
            // since c0 + 16 <= d (asserted).
            let v = unsafe {
                let at = values.add(row);
                [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))]
            };
            for (h, a) in acc.iter_mut().enumerate() {
                let wj = _mm256_set1_ps(w[h * visible + j]);
                a[0] = _mm256_fmadd_ps(wj, v[0], a[0]);
                a[1] = _mm256_fmadd_ps(wj, v[1], a[1]);
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        let o = &mut out[h * out_stride + c0..][..16];
        let scale = _mm256_set1_ps(inv[h]);
        o[..8].copy_from_slice(&to_array8(_mm256_mul_ps(a[0], scale)));
        o[8..].copy_from_slice(&to_array8(_mm256_mul_ps(a[1], scale)));
    }
}

/// Asks for the line holding `p` in every cache level. Never faults, so `p` may lie anywhere.
#[inline(always)]
fn prefetch(p: *const f32) {
    // SAFETY: prefetching is a hint that never faults or changes memory contents.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

#[inline(always)]
fn to_array8(v: __m256) -> [f32; 8] {
    // SAFETY: __m256 and [f32; 8] have the same size, and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<__m256, [f32; 8]>(v) }
}

#[inline(always)]
fn to_array(v: __m512) -> [f32; 16] {
    // SAFETY: __m512 and [f32; 16] have the same size, and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<__m512, [f32; 16]>(v) }
}
