//! NEON bodies of the attention loops (a page of keys is four 4-lane registers). The portable
//! loops, which LLVM leaves scalar, round each product before adding it (`a * b + c`, never
//! fused); these do the same per lane (`vmulq_f32` then `vaddq_f32`), in the same order, so the
//! results are bit-identical to them.

use std::arch::aarch64::*;

use super::{KvHead, PAGE};

/// Scores of `G` query heads against the one page starting at `at`:
/// `acc[h][l] = Σ_c q_h[c] · key(position l)[c]`, dimension by dimension.
#[target_feature(enable = "neon")]
pub(super) fn page_scores<const G: usize>(
    kv: &KvHead<'_>,
    at: usize,
    qs: &[&[f32]; G],
    d: usize,
) -> [[f32; PAGE]; G] {
    assert!(at + d * PAGE <= kv.keys.len());
    assert!(qs.iter().all(|q| q.len() == d));
    let keys = kv.keys.as_ptr();
    let mut acc = [[vdupq_n_f32(0.0); 4]; G];
    for c in 0..d {
        // SAFETY: at + c·PAGE + 16 <= at + d·PAGE <= keys.len() (asserted).
        let k: [float32x4_t; 4] =
            std::array::from_fn(|i| unsafe { vld1q_f32(keys.add(at + c * PAGE + 4 * i)) });
        for (a, q_h) in acc.iter_mut().zip(qs) {
            let qc = vdupq_n_f32(q_h[c]);
            for (a, k) in a.iter_mut().zip(&k) {
                *a = vaddq_f32(vmulq_f32(qc, *k), *a);
            }
        }
    }
    acc.map(|a| {
        let mut page = [0f32; PAGE];
        for (dst, v) in page.chunks_exact_mut(4).zip(a) {
            // SAFETY: dst holds exactly four f32.
            unsafe { vst1q_f32(dst.as_mut_ptr(), v) };
        }
        page
    })
}

/// For each of the `G` heads, `out[h·out_stride + c0..][..16] = inv[h] · Σ_j w[h·visible + j]
/// · value(j)[c0..c0 + 16]`, position by position.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub(super) fn weighted_values<const G: usize>(
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
    let mut acc = [[vdupq_n_f32(0.0); 4]; G];
    for p in 0..visible.div_ceil(PAGE) {
        // page_start checks that the page's d·PAGE values lie inside the buffer.
        let page = kv.page_start(p, d);
        for j in p * PAGE..visible.min((p + 1) * PAGE) {
            let row = page + (j - p * PAGE) * d + c0;
            // SAFETY: row + 16 <= page + d·PAGE, inside the buffer (checked by page_start),
            // since c0 + 16 <= d (asserted).
            let v: [float32x4_t; 4] =
                std::array::from_fn(|i| unsafe { vld1q_f32(values.add(row + 4 * i)) });
            for (h, a) in acc.iter_mut().enumerate() {
                let wj = vdupq_n_f32(w[h * visible + j]);
                for (a, v) in a.iter_mut().zip(&v) {
                    *a = vaddq_f32(vmulq_f32(wj, *v), *a);
                }
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        let o = &mut out[h * out_stride + c0..][..16];
        let scale = vdupq_n_f32(inv[h]);
        for (dst, v) in o.chunks_exact_mut(4).zip(a) {
            // SAFETY: dst holds exactly four f32.
            unsafe { vst1q_f32(dst.as_mut_ptr(), vmulq_f32(*v, scale)) };
        }
    }
}
