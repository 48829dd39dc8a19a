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

/// Bytes of one (lane, block, token) activation group: the 8 four-byte pieces lane `m` of a
/// 256-column block multiplies (2 halves × 4 planes), see [`TileQ8k`].
pub(crate) const LANE_GROUP: usize = 32;

/// A tile of tokens' Q8_K activations in the kernels' interleaved layout.
///
/// For lane `m` of 256-column block `b`, token `t` needs the values of columns
/// `256b + 128h + 32p + 4m + j` (`h` < 2, `p` < 4, `j` < 4): 32 bytes, stored contiguously as
/// piece `i = 4h + p` at bytes `4i..4i + 4`. The pieces are ordered lane, block, token
/// (`qs[((m·nb + b)·n + t)·32..]`), so one lane's pass over a strip reads the tile's values in
/// one sequential stream, each once, and every token's piece sits beside the other tokens'
/// for the same weight register.
#[derive(Clone, Copy)]
pub(crate) struct TileQ8k<'a> {
    /// Tokens in the tile.
    pub n: usize,
    /// 256-column blocks per token.
    pub nb: usize,
    /// `n · nb · 256` values in the order above.
    pub qs: &'a [i8],
    /// `neg_corr[(m·nb + b)·n + t]`: minus the activation sum lane `m` subtracts
    /// (`-(bsums[2m] + bsums[2m+1])`), the value a lane's integer accumulator starts from.
    pub neg_corr: &'a [i32],
    /// `d[t·nb + b]`: Q8_K block scale.
    pub d: &'a [f32],
}

impl TileQ8k<'_> {
    /// Whether the tile holds `n` tokens of `nb` blocks, as every kernel reads.
    pub(crate) fn is_complete(&self) -> bool {
        self.qs.len() == self.n * self.nb * QK_K
            && self.neg_corr.len() == self.n * self.nb * LANES
            && self.d.len() == self.n * self.nb
    }

    /// Offset in `qs` of the 32 bytes of lane `m`, block `b`, token `t`.
    #[inline]
    pub(crate) fn group_offset(&self, m: usize, b: usize, t: usize) -> usize {
        ((m * self.nb + b) * self.n + t) * LANE_GROUP
    }
}

/// Where column `j` (0..256) of a block goes in the tile layout: `(lane m, byte in the group)`.
#[inline]
pub(crate) fn lane_position(j: usize) -> (usize, usize) {
    let (h, p, m, byte) = (j / 128, (j % 128) / 32, (j % 32) / 4, j % 4);
    (m, (4 * h + p) * 4 + byte)
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
    tile: &TileQ8k<'_>,
    out: &mut [[f32; STRIP_ROWS]],
) {
    for (t, o) in out.iter_mut().enumerate().take(tile.n) {
        for (r, y) in o.iter_mut().enumerate() {
            let mut sumf = [0f32; LANES];
            for b in 0..nb {
                let mut lane = [0i32; LANES];
                for (m, l) in lane.iter_mut().enumerate() {
                    *l = tile.neg_corr[(m * nb + b) * tile.n + t];
                }
                for j in 0..QK_K {
                    let (m, at) = lane_position(j);
                    let q = tile.qs[tile.group_offset(m, b, t) + at];
                    lane[m] += code(strip, r, b * QK_K + j) * i32::from(q);
                }
                let d = tile.d[t * nb + b] * dw[b * STRIP_ROWS + r];
                for (s, l) in sumf.iter_mut().zip(lane) {
                    *s = (l as f32).mul_add(d, *s);
                }
            }
            *y = hsum8(&sumf);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! AVX-512 VNNI: 16 rows per zmm; the 2-bit planes of a 64-byte group are shifted down once
    //! and reused by every token of the tile, whose activation pieces for that group lie side
    //! by side ([`TileQ8k`]).

    use core::arch::x86_64::*;

    use super::{TileQ8k, LANES, LANE_GROUP};
    use crate::kernels::x86::prefetch_lines_l2;
    use crate::kernels::{GROUP_BYTES, STRIP_BLOCK_BYTES, STRIP_ROWS};

    /// How far ahead of the weights being read the single-token kernel prefetches (into L2;
    /// on the Zen 4 guest, 2B4T decode step of 8 layers, one thread: 4 KiB and 8 KiB within
    /// noise of each other at ~17-19 GB/s, 16-32 KiB no better; into L1 the best distance,
    /// 1 KiB, gave ~11.7 GB/s).
    const PREFETCH_AHEAD: usize = 8192;

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

    /// One lane's integers for one token and block: `neg_corr + Σ code·q` over the lane's
    /// 32 columns, whose values are the 32 bytes at `g`.
    ///
    /// # Safety
    /// `g` must point to 32 readable bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn lane_sum(c: &[__m512i; 8], g: *const i8, neg_corr: i32) -> __m512i {
        let mut acc = _mm512_set1_epi32(neg_corr);
        for (i, c) in c.iter().enumerate() {
            // SAFETY: piece i is bytes 4i..4i + 4 of the group.
            acc = _mm512_dpbusd_epi32(acc, *c, unsafe { bcast(g.add(4 * i)) });
        }
        acc
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
    /// `dw[i].len() == nb·16`; `tok` is a complete tile of one token of `nb` blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn strips_1tok<const S: usize>(
        strips: [&[u8]; S],
        nb: usize,
        dw: [&[f32]; S],
        tok: &TileQ8k<'_>,
        out: [&mut [f32; STRIP_ROWS]; S],
    ) {
        let w = strips.map(|s| s.as_ptr());
        let q = tok.qs.as_ptr();
        let mut sumf = [[_mm512_setzero_ps(); LANES]; S];
        for b in 0..nb {
            // Decoding streams each weight once: ask for the data PREFETCH_AHEAD bytes ahead
            // (hardware prefetchers stop at 4 KiB pages). Past a strip's end that is the next
            // strip of its run, which the task reads next; a prefetch never faults. Into L2
            // only: L1 prefetches at this rate of decoding hold too few lines in flight (the
            // kernel read ~11 GB/s from memory on the Zen 4 guest, ~18 GB/s this way).
            for w in w {
                prefetch_lines_l2(
                    w.wrapping_add(2 * b * STRIP_BLOCK_BYTES + PREFETCH_AHEAD),
                    2 * STRIP_BLOCK_BYTES,
                );
            }
            let dx = _mm512_set1_ps(tok.d[b]);
            for ((w, dw), sumf) in w.iter().zip(&dw).zip(sumf.iter_mut()) {
                // SAFETY: 16 scales of block b are inside `dw`.
                let d = _mm512_mul_ps(
                    unsafe { _mm512_loadu_ps(dw.as_ptr().add(b * STRIP_ROWS)) },
                    dx,
                );
                for (m, s) in sumf.iter_mut().enumerate() {
                    // SAFETY: b < nb: groups inside the strip, the lane group inside the tile.
                    let lane = unsafe {
                        let c = codes(*w, b, m);
                        lane_sum(
                            &c,
                            q.add(tok.group_offset(m, b, 0)),
                            tok.neg_corr[m * nb + b],
                        )
                    };
                    *s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lane), d, *s);
                }
            }
        }
        for (o, sumf) in out.into_iter().zip(&sumf) {
            store(o, hsum(sumf));
        }
    }

    /// Most tokens one unrolled step handles: the compiler unrolls a loop of 8 fully (each
    /// accumulator a register) but not one of 16, whose accumulators then went through memory.
    const STEP_TOKENS: usize = 8;

    /// One block of lane `m` for `K` consecutive tokens of a tile: `g`, `neg_corr` and `dx`
    /// point at the first token's lane group, negated lane sum and block scale.
    ///
    /// # Safety
    /// `g` must point to `K · 32` readable bytes, `neg_corr` to `K` values, `dx` to a value at
    /// every `t · nb` for `t < K`.
    #[inline(always)]
    unsafe fn lane_step<const K: usize>(
        c: &[__m512i; 8],
        dv: __m512,
        g: *const i8,
        neg_corr: *const i32,
        dx: *const f32,
        nb: usize,
        sumf: &mut [__m512; K],
    ) {
        for (t, s) in sumf.iter_mut().enumerate() {
            // SAFETY: per the contract.
            let (lane, d) = unsafe {
                (
                    lane_sum(c, g.add(t * LANE_GROUP), *neg_corr.add(t)),
                    _mm512_mul_ps(dv, _mm512_set1_ps(*dx.add(t * nb))),
                )
            };
            *s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lane), d, *s);
        }
    }

    /// Lane `m` of the tile's `N` tokens (16 rows each), accumulated over all blocks in
    /// registers: one decoded group serves every token, and the tokens' activation pieces are
    /// read in one sequential run.
    ///
    /// # Safety
    /// As [`strip_n`]; `N` is at most 8, or 16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn lane_n<const N: usize>(
        w: *const u8,
        nb: usize,
        dw: &[f32],
        tile: &TileQ8k<'_>,
        m: usize,
    ) -> [__m512; N] {
        let mut sumf = [_mm512_setzero_ps(); N];
        // Raw pointers: no bounds checks in the token loop, so that it unrolls.
        let q = tile.qs.as_ptr().wrapping_add(tile.group_offset(m, 0, 0));
        let neg_corr = tile.neg_corr.as_ptr().wrapping_add(m * nb * N);
        let dx = tile.d.as_ptr();
        for b in 0..nb {
            // SAFETY: 16 scales of block b are inside `dw`; groups inside the strip.
            let (dv, c) = unsafe {
                (
                    _mm512_loadu_ps(dw.as_ptr().add(b * STRIP_ROWS)),
                    codes(w, b, m),
                )
            };
            let (g, nc) = (
                q.wrapping_add(b * N * LANE_GROUP),
                neg_corr.wrapping_add(b * N),
            );
            let d = dx.wrapping_add(b);
            // SAFETY (every call below): the tile holds N tokens of nb blocks (contract), so
            // lane m's groups and negated sums of block b exist for every token, and token
            // t's scale of block b is at t·nb + b < N·nb.
            if N <= STEP_TOKENS {
                unsafe { lane_step::<N>(&c, dv, g, nc, d, nb, &mut sumf) };
            } else {
                // Two steps at constant offsets (a loop over the halves kept them in memory).
                let (lo, hi) = sumf.split_at_mut(STEP_TOKENS);
                let lo: &mut [__m512; STEP_TOKENS] = lo.try_into().expect("N = 16");
                let hi: &mut [__m512; STEP_TOKENS] = hi.try_into().expect("N = 16");
                let h = STEP_TOKENS;
                unsafe {
                    lane_step(&c, dv, g, nc, d, nb, lo);
                    lane_step(
                        &c,
                        dv,
                        g.add(h * LANE_GROUP),
                        nc.add(h),
                        d.add(h * nb),
                        nb,
                        hi,
                    );
                }
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
        tile: &TileQ8k<'_>,
        m: usize,
    ) -> [__m512; N] {
        // SAFETY: forwarded contract.
        let (lo, hi) = unsafe {
            (
                lane_n::<N>(w, nb, dw, tile, m),
                lane_n::<N>(w, nb, dw, tile, m + 4),
            )
        };
        let mut r = hi;
        for (r, l) in r.iter_mut().zip(lo) {
            *r = _mm512_add_ps(*r, l);
        }
        r
    }

    /// A tile of `N` tokens: lanes outer, so one decoded group serves every token; the lanes
    /// are combined in `hsum_float_8`'s order as they complete.
    ///
    /// # Safety
    /// CPU has AVX-512 F/BW/VNNI; `strip.len() == 2·nb·512`, `dw.len() == nb·16`; `tile` is a
    /// complete tile of `N` tokens of `nb` blocks; `out.len() == N`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn strip_n<const N: usize>(
        strip: &[u8],
        nb: usize,
        dw: &[f32],
        tile: &TileQ8k<'_>,
        out: &mut [[f32; STRIP_ROWS]],
    ) {
        let w = strip.as_ptr();
        // SAFETY: forwarded contract.
        let (r0, r2) = unsafe {
            (
                lane_pair::<N>(w, nb, dw, tile, 0),
                lane_pair::<N>(w, nb, dw, tile, 2),
            )
        };
        let mut r02 = r0;
        for (a, b) in r02.iter_mut().zip(r2) {
            *a = _mm512_add_ps(*a, b);
        }
        // SAFETY: forwarded contract.
        let (r1, r3) = unsafe {
            (
                lane_pair::<N>(w, nb, dw, tile, 1),
                lane_pair::<N>(w, nb, dw, tile, 3),
            )
        };
        for (((o, a), b), c) in out.iter_mut().zip(r02).zip(r1).zip(r3) {
            store(o, _mm512_add_ps(a, _mm512_add_ps(b, c)));
        }
    }
}
