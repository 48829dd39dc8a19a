//! Kernels for ggml's TQ×Q8_K dot product ([`crate::matmul_q8k`]) over the repacked layout.
//!
//! ggml's x86 AVX2 `ggml_vec_dot_tq{1,2}_0_q8_K` keeps eight 32-bit lanes per 256-column block:
//! lane `L` sums `code·q` over the columns whose position in their 32-column group is
//! `4L..4L+4`, minus the activation sum of columns `32L..32L+32` (two of Q8_K's `bsums`). Each
//! lane is converted to float and accumulated across blocks with one fused multiply-add by
//! `d_x·d_w`; the eight lanes are finally added in `hsum_float_8`'s order. In the repacked
//! layout, lane `L` is exactly group `L` of each 128-column block, so the kernels produce those
//! lane integers with the same `vpdpbusd` arithmetic as the plain kernels and then repeat
//! ggml's float steps bit for bit.
//!
//! Output of every kernel: `out[t][r]` = the dot product of row `r` of the strip with token `t`.

use super::{BLOCK_COLS, GROUP_BYTES, STRIP_BLOCK_BYTES, STRIP_ROWS};

/// Q8_K block length (ggml's `QK_K`).
pub const QK_K: usize = 256;
/// Lanes of ggml's AVX2 accumulator.
pub const LANES: usize = 8;

/// One token's quantized activations as the kernels read them.
#[derive(Clone, Copy)]
pub(crate) struct TokenQ8k<'a> {
    /// `cols` int8 values.
    pub qs: &'a [i8],
    /// Q8_K block scale `d` per 256 columns.
    pub d: &'a [f32],
    /// Per block, per lane: the activation sum that lane subtracts (`bsums[2L] + bsums[2L+1]`).
    pub corr: &'a [[i32; LANES]],
}

impl TokenQ8k<'_> {
    /// Whether the token holds `nb` Q8_K blocks (values, scales and corrections), as every
    /// kernel reads.
    pub(crate) fn has_blocks(&self, nb: usize) -> bool {
        self.qs.len() == nb * QK_K && self.d.len() == nb && self.corr.len() == nb
    }
}

/// `hsum_float_8` of ggml's x86 code: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline]
pub(crate) fn hsum8(l: &[f32; LANES]) -> f32 {
    let r0 = l[4] + l[0];
    let r1 = l[5] + l[1];
    let r2 = l[6] + l[2];
    let r3 = l[7] + l[3];
    (r0 + r2) + (r1 + r3)
}

/// Code of row lane `r`, column `k` of one strip (as `kernels::scalar`).
#[inline]
fn code(strip: &[u8], r: usize, k: usize) -> i32 {
    let (blk, kk) = (k / BLOCK_COLS, k % BLOCK_COLS);
    let (p, m, b) = (kk / 32, (kk % 32) / 4, kk % 4);
    let byte = strip[blk * STRIP_BLOCK_BYTES + m * GROUP_BYTES + r * 4 + b];
    i32::from((byte >> (6 - 2 * p)) & 3)
}

/// Portable version: the reference the SIMD kernel must match bit for bit.
///
/// `strip` holds `2·nb` 128-column blocks; `dw[b·16 + r]` is row `r`'s weight scale of block `b`.
pub(crate) fn strip_scalar(
    strip: &[u8],
    nb: usize,
    dw: &[f32],
    toks: &[TokenQ8k<'_>],
    out: &mut [[f32; STRIP_ROWS]],
) {
    for (tok, o) in toks.iter().zip(out.iter_mut()) {
        for (r, y) in o.iter_mut().enumerate() {
            let mut sumf = [0f32; LANES];
            for b in 0..nb {
                let mut lane = [0i32; LANES];
                for j in 0..QK_K {
                    let k = b * QK_K + j;
                    lane[(j % 32) / 4] += code(strip, r, k) * i32::from(tok.qs[k]);
                }
                let d = tok.d[b] * dw[b * STRIP_ROWS + r];
                for (l, s) in sumf.iter_mut().enumerate() {
                    *s = ((lane[l] - tok.corr[b][l]) as f32).mul_add(d, *s);
                }
            }
            *y = hsum8(&sumf);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! AVX-512 VNNI: 16 rows per zmm; the 2-bit planes of a 64-byte group are shifted down once
    //! and reused by every token of the tile.

    use core::arch::x86_64::*;

    use super::{TokenQ8k, LANES, QK_K};
    use crate::kernels::x86::prefetch_lines;
    use crate::kernels::{GROUP_BYTES, STRIP_BLOCK_BYTES, STRIP_ROWS};

    /// How far ahead of the weights being read the single-token kernel prefetches.
    const PREFETCH_AHEAD: usize = 4096;

    /// # Safety
    /// `p` must point to 4 readable bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn bcast(p: *const i8) -> __m512i {
        // SAFETY: the caller guarantees 4 readable bytes at `p`.
        _mm512_set1_epi32(unsafe { (p as *const i32).read_unaligned() })
    }

    /// The 8 code vectors (2 blocks × 4 planes) of group `m` of 256-column block `b`.
    ///
    /// # Safety
    /// The strip at `w` must hold at least `2b + 2` blocks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn codes(w: *const u8, b: usize, m: usize) -> [__m512i; 8] {
        let three = _mm512_set1_epi8(3);
        // SAFETY: both groups lie inside blocks 2b and 2b + 1 of the strip.
        let (g0, g1) = unsafe {
            (
                _mm512_loadu_si512(
                    w.add(2 * b * STRIP_BLOCK_BYTES + m * GROUP_BYTES) as *const __m512i
                ),
                _mm512_loadu_si512(
                    w.add((2 * b + 1) * STRIP_BLOCK_BYTES + m * GROUP_BYTES) as *const __m512i
                ),
            )
        };
        [
            _mm512_and_si512(_mm512_srli_epi16::<6>(g0), three),
            _mm512_and_si512(_mm512_srli_epi16::<4>(g0), three),
            _mm512_and_si512(_mm512_srli_epi16::<2>(g0), three),
            _mm512_and_si512(g0, three),
            _mm512_and_si512(_mm512_srli_epi16::<6>(g1), three),
            _mm512_and_si512(_mm512_srli_epi16::<4>(g1), three),
            _mm512_and_si512(_mm512_srli_epi16::<2>(g1), three),
            _mm512_and_si512(g1, three),
        ]
    }

    /// Lane `m` integers of block `b` for one token: Σ code·q − corr.
    ///
    /// # Safety
    /// `q` must hold the token's `2·nb·128` values with `b < nb`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn lane_sum(c: &[__m512i; 8], q: *const i8, b: usize, m: usize, corr: i32) -> __m512i {
        let mut acc = _mm512_setzero_si512();
        for (i, c) in c.iter().enumerate() {
            let (half, p) = (i / 4, i % 4);
            // SAFETY: column 256b + 128·half + 32p + 4m + 3 < 256·nb = q.len().
            let x = unsafe { bcast(q.add(b * QK_K + half * 128 + p * 32 + m * 4)) };
            acc = _mm512_dpbusd_epi32(acc, *c, x);
        }
        _mm512_sub_epi32(acc, _mm512_set1_epi32(corr))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn hsum(l: &[__m512; LANES]) -> __m512 {
        let r0 = _mm512_add_ps(l[4], l[0]);
        let r1 = _mm512_add_ps(l[5], l[1]);
        let r2 = _mm512_add_ps(l[6], l[2]);
        let r3 = _mm512_add_ps(l[7], l[3]);
        _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn store(o: &mut [f32; STRIP_ROWS], v: __m512) {
        // SAFETY: `o` is 16 writable f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) }
    }

    /// One token, `S` strips at once: blocks outer, eight lane accumulators per strip. The
    /// strips come from `S` runs of a task's strips walked in lockstep (see `matmul_q8k`), so
    /// `S` sequential weight streams are in flight; each strip's arithmetic is exactly that of
    /// a strip on its own.
    ///
    /// # Safety
    /// CPU has AVX-512 F/BW/VNNI; for each `i`, `strips[i].len() == 2·nb·512` and
    /// `dw[i].len() == nb·16`; the token has `nb·256` values, `nb` scales and `nb` corrections.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn strips_1tok<const S: usize>(
        strips: [&[u8]; S],
        nb: usize,
        dw: [&[f32]; S],
        tok: &TokenQ8k<'_>,
        out: [&mut [f32; STRIP_ROWS]; S],
    ) {
        let w = strips.map(|s| s.as_ptr());
        let q = tok.qs.as_ptr();
        let mut sumf = [[_mm512_setzero_ps(); LANES]; S];
        for b in 0..nb {
            // Decoding streams each weight once: ask for the data PREFETCH_AHEAD bytes ahead
            // (hardware prefetchers stop at 4 KiB pages). Past a strip's end that is the next
            // strip of its run, which the task reads next; a prefetch never faults.
            for w in w {
                prefetch_lines(
                    w.wrapping_add(2 * b * STRIP_BLOCK_BYTES + PREFETCH_AHEAD),
                    2 * STRIP_BLOCK_BYTES,
                );
            }
            let corr = &tok.corr[b];
            for ((w, dw), sumf) in w.iter().zip(&dw).zip(sumf.iter_mut()) {
                // SAFETY: 16 scales of block b are inside `dw`.
                let dv = unsafe { _mm512_loadu_ps(dw.as_ptr().add(b * STRIP_ROWS)) };
                let d = _mm512_mul_ps(dv, _mm512_set1_ps(tok.d[b]));
                for (m, s) in sumf.iter_mut().enumerate() {
                    // SAFETY: b < nb: groups inside the strip, columns inside the token.
                    let lane = unsafe {
                        let c = codes(*w, b, m);
                        lane_sum(&c, q, b, m, corr[m])
                    };
                    *s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lane), d, *s);
                }
            }
        }
        for (o, sumf) in out.into_iter().zip(&sumf) {
            store(o, hsum(sumf));
        }
    }

    /// Lane `m` of `N` tokens (16 rows each), accumulated over all blocks in registers.
    ///
    /// # Safety
    /// As [`strip_n`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn lane_n<const N: usize>(
        w: *const u8,
        nb: usize,
        dw: &[f32],
        toks: &[TokenQ8k<'_>],
        m: usize,
    ) -> [__m512; N] {
        let mut sumf = [_mm512_setzero_ps(); N];
        for b in 0..nb {
            // SAFETY: 16 scales of block b are inside `dw`; groups inside the strip.
            let (dv, c) = unsafe {
                (
                    _mm512_loadu_ps(dw.as_ptr().add(b * STRIP_ROWS)),
                    codes(w, b, m),
                )
            };
            for (s, tok) in sumf.iter_mut().zip(toks) {
                // SAFETY: b < nb: columns inside the token's values.
                let lane = unsafe { lane_sum(&c, tok.qs.as_ptr(), b, m, tok.corr[b][m]) };
                let d = _mm512_mul_ps(dv, _mm512_set1_ps(tok.d[b]));
                *s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lane), d, *s);
            }
        }
        sumf
    }

    /// `lane[m + 4] + lane[m]` for `N` tokens (the first step of `hsum_float_8`).
    ///
    /// # Safety
    /// As [`strip_n`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn lane_pair<const N: usize>(
        w: *const u8,
        nb: usize,
        dw: &[f32],
        toks: &[TokenQ8k<'_>],
        m: usize,
    ) -> [__m512; N] {
        // SAFETY: forwarded contract.
        let (lo, hi) = unsafe {
            (
                lane_n::<N>(w, nb, dw, toks, m),
                lane_n::<N>(w, nb, dw, toks, m + 4),
            )
        };
        let mut r = hi;
        for (r, l) in r.iter_mut().zip(lo) {
            *r = _mm512_add_ps(*r, l);
        }
        r
    }

    /// `N` tokens: lanes outer, so one decoded group serves every token; the lanes are
    /// combined in `hsum_float_8`'s order as they complete.
    ///
    /// # Safety
    /// As [`strip_1`], for each of the `N` tokens; `out.len() == N`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn strip_n<const N: usize>(
        strip: &[u8],
        nb: usize,
        dw: &[f32],
        toks: &[TokenQ8k<'_>],
        out: &mut [[f32; STRIP_ROWS]],
    ) {
        let w = strip.as_ptr();
        // SAFETY: forwarded contract.
        let (r0, r2) = unsafe {
            (
                lane_pair::<N>(w, nb, dw, toks, 0),
                lane_pair::<N>(w, nb, dw, toks, 2),
            )
        };
        let mut r02 = r0;
        for (a, b) in r02.iter_mut().zip(r2) {
            *a = _mm512_add_ps(*a, b);
        }
        // SAFETY: forwarded contract.
        let (r1, r3) = unsafe {
            (
                lane_pair::<N>(w, nb, dw, toks, 1),
                lane_pair::<N>(w, nb, dw, toks, 3),
            )
        };
        for (((o, a), b), c) in out.iter_mut().zip(r02).zip(r1).zip(r3) {
            store(o, _mm512_add_ps(a, _mm512_add_ps(b, c)));
        }
    }
}
