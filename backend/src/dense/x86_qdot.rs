//! x86-64 Q6_K and Q4_0 kernels: four rows (anywhere in the matrix) against one token's
//! quantized activations per call, with `vpmaddubsw` (unsigned codes × signed activations into
//! 16-bit pair sums) and `vpmaddwd` (× sub-block scales, or × 1, into 32-bit lanes), as ggml's
//! AVX2 kernels do; the AVX-512 versions take twice the values per instruction. Integer sums
//! are exact (see `qdot`); each block's lanes are converted to float and accumulated with one
//! fused multiply-add by `d_w · d_x`.
//!
//! Bounds: a Q6_K code is at most 63 and an activation at most 127 in magnitude, so a pair sum
//! fits 16 bits (16 002) and a block's weighted sum 32 bits (256 · 63 · 127 · 128 < 2^31).

use std::arch::x86_64::*;

use super::qdot::{Token, QK_K};
use super::{DenseMatrix, DenseType, ROW_GROUP};
use crate::formats::{q4_0, q6_k};
use crate::kernels::x86::prefetch_lines;

/// How far ahead each row stream is prefetched (as the float kernels).
const PREFETCH_BYTES: usize = 2048;

/// Dot products of rows `rs` of `w` (Q6_K or Q4_0) with token `t`.
pub(super) fn dot4(
    avx512: bool,
    w: &DenseMatrix<'_>,
    rs: [usize; ROW_GROUP],
    t: Token<'_>,
    out: &mut [f32; ROW_GROUP],
) {
    let n_blocks = w.cols / w.ty.block().0;
    assert!(
        rs.iter().all(|&r| r < w.rows)
            && t.qs.len() == w.cols
            && t.d.len() == n_blocks
            && t.sums.len() == n_blocks * if w.ty == DenseType::Q6K { 16 } else { 1 },
        "dense integer kernel out of bounds"
    );
    let rows = rs.map(|r| w.data[r * w.row_bytes..(r + 1) * w.row_bytes].as_ptr());
    match avx512 {
        true => assert!(
            super::x86::has_avx512_int(),
            "AVX-512 kernel called on a CPU without it"
        ),
        false => assert!(
            super::x86::has_avx2(),
            "AVX2 kernel called on a CPU without it"
        ),
    }
    // SAFETY: the CPU has the features asserted just above; the four rows hold `n_blocks`
    // blocks each and the token `cols` activations with `n_blocks` scales and the sums checked
    // above, which is all the kernels read.
    unsafe {
        match (w.ty, avx512) {
            (DenseType::Q6K, true) => q6_k_avx512(rows, n_blocks, t, out),
            (DenseType::Q6K, false) => q6_k_avx2(rows, n_blocks, t, out),
            (DenseType::Q4_0, true) => q4_0_avx512(rows, n_blocks, t, out),
            (DenseType::Q4_0, false) => q4_0_avx2(rows, n_blocks, t, out),
            (other, _) => unreachable!("{other:?} is multiplied in float"),
        }
    }
}

/// `f16` bits at `p` as f32.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees two readable bytes at `p`.
    let bits = unsafe { (p as *const u16).read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// `vpermw` indices: for 64 values (32 pair sums) starting at sub-block `4k`, pair `m` takes
/// the scale of sub-block `4k + m / 8`.
const fn scale_index(k: i16) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut m = 0;
    while m < 32 {
        idx[m] = 4 * k + (m as i16) / 8;
        m += 1;
    }
    idx
}

const SCALE_INDEX: [[i16; 32]; 4] = [
    scale_index(0),
    scale_index(1),
    scale_index(2),
    scale_index(3),
];

#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,f16c,fma")]
unsafe fn q6_k_avx512(rows: [*const u8; 4], n_blocks: usize, t: Token<'_>, out: &mut [f32; 4]) {
    const BB: usize = q6_k::BLOCK_BYTES;
    let low4 = _mm512_set1_epi8(0x0f);
    let bits45 = _mm512_set1_epi8(0x30);
    // SAFETY (whole body): block `b` of a row spans bytes b·210..b·210+210 and activations
    // b·256..b·256+256, sums b·16..b·16+16, inside the row and token for b < n_blocks.
    unsafe {
        let sidx: [__m512i; 4] = SCALE_INDEX.map(|i| _mm512_loadu_si512(i.as_ptr() as *const _));
        let mut acc = [_mm512_setzero_ps(); 4];
        for b in 0..n_blocks {
            let a = t.qs.as_ptr().add(b * QK_K);
            let bsums = _mm256_loadu_si256(t.sums.as_ptr().add(b * 16) as *const __m256i);
            let dx = t.d[b];
            for i in 0..4 {
                let blk = rows[i].add(b * BB);
                prefetch_lines(blk.wrapping_add(PREFETCH_BYTES), BB);
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i));
                let scz = _mm512_castsi256_si512(sc16);
                let mut isum = _mm512_setzero_si512();
                for h in 0..2 {
                    let l = _mm512_loadu_si512(blk.add(64 * h) as *const _);
                    let hb = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
                    // Bytes 0..32: qh; 32..64: qh >> 2. Bits 0-1 then hold the high bits of
                    // quarters 0 and 1, bits 4-5 those of quarters 2 and 3.
                    let h01 = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(hb),
                        _mm256_srli_epi16::<2>(hb),
                    );
                    let codes_a = _mm512_or_si512(
                        _mm512_and_si512(l, low4),
                        _mm512_and_si512(_mm512_slli_epi16::<4>(h01), bits45),
                    );
                    let codes_b = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(l), low4),
                        _mm512_and_si512(h01, bits45),
                    );
                    for (k, codes) in [(2 * h, codes_a), (2 * h + 1, codes_b)] {
                        let q = _mm512_loadu_si512(a.add(64 * k) as *const _);
                        let pairs = _mm512_maddubs_epi16(codes, q);
                        let scales = _mm512_permutexvar_epi16(sidx[k], scz);
                        isum = _mm512_add_epi32(isum, _mm512_madd_epi16(pairs, scales));
                    }
                }
                // Σ_j sc_j · 32 · bsum_j, subtracted from the low 8 lanes.
                let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bsums));
                isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(corr));
                let d = _mm512_set1_ps(f16_at(blk.add(208)) * dx);
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc[i]);
            }
        }
        for i in 0..4 {
            out[i] = _mm512_reduce_add_ps(acc[i]);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_avx2(rows: [*const u8; 4], n_blocks: usize, t: Token<'_>, out: &mut [f32; 4]) {
    const BB: usize = q6_k::BLOCK_BYTES;
    let low4 = _mm256_set1_epi8(0x0f);
    let low2 = _mm256_set1_epi8(0x03);
    // SAFETY (whole body): as in `q6_k_avx512`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..n_blocks {
            let a = t.qs.as_ptr().add(b * QK_K);
            let bsums = _mm256_loadu_si256(t.sums.as_ptr().add(b * 16) as *const __m256i);
            let dx = t.d[b];
            for i in 0..4 {
                let blk = rows[i].add(b * BB);
                prefetch_lines(blk.wrapping_add(PREFETCH_BYTES), BB);
                let sc = _mm_loadu_si128(blk.add(192) as *const __m128i);
                let mut isum = _mm256_setzero_si256();
                for h in 0..2 {
                    let l0 = _mm256_loadu_si256(blk.add(64 * h) as *const __m256i);
                    let l1 = _mm256_loadu_si256(blk.add(64 * h + 32) as *const __m256i);
                    let hb = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
                    let high = |shift: i32| {
                        let bits = match shift {
                            0 => hb,
                            2 => _mm256_srli_epi16::<2>(hb),
                            4 => _mm256_srli_epi16::<4>(hb),
                            _ => _mm256_srli_epi16::<6>(hb),
                        };
                        _mm256_slli_epi16::<4>(_mm256_and_si256(bits, low2))
                    };
                    let quarters = [
                        _mm256_or_si256(_mm256_and_si256(l0, low4), high(0)),
                        _mm256_or_si256(_mm256_and_si256(l1, low4), high(2)),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(l0), low4),
                            high(4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(l1), low4),
                            high(6),
                        ),
                    ];
                    for (p, codes) in quarters.into_iter().enumerate() {
                        // 32 values = sub-blocks j and j + 1.
                        let j = 8 * h + 2 * p;
                        let q = _mm256_loadu_si256(a.add(128 * h + 32 * p) as *const __m256i);
                        let pairs = _mm256_maddubs_epi16(codes, q);
                        let s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, scale_shuffle(j)));
                        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, s));
                    }
                }
                let sc16 = _mm256_cvtepi8_epi16(sc);
                let corr = _mm256_madd_epi16(sc16, bsums);
                isum = _mm256_sub_epi32(isum, _mm256_slli_epi32::<5>(corr));
                let d = _mm256_set1_ps(f16_at(blk.add(208)) * dx);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[i]);
            }
        }
        for i in 0..4 {
            out[i] = super::x86::hsum256(acc[i]);
        }
    }
}

/// `pshufb` pattern: sub-block `j`'s scale byte 8 times, then sub-block `j + 1`'s.
#[inline]
#[target_feature(enable = "avx2")]
fn scale_shuffle(j: usize) -> __m128i {
    let (a, b) = (j as i8, j as i8 + 1);
    _mm_setr_epi8(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
}

/// The nibbles of the two 16-byte `qs` at `p0` and `p1` (Q4_0 blocks), as
/// `[low(p0), low(p1)]` and `[high(p0), high(p1)]`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles2(p0: *const u8, p1: *const u8) -> (__m256i, __m256i) {
    // SAFETY: the caller guarantees 16 readable bytes at `p0` and at `p1`.
    let q = unsafe {
        _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(p0 as *const __m128i)),
            _mm_loadu_si128(p1 as *const __m128i),
        )
    };
    let low4 = _mm256_set1_epi8(0x0f);
    (
        _mm256_and_si256(q, low4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4),
    )
}

/// `[d(p0) × 4, d(p1) × 4]` for the f16 scales at `p0` and `p1`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scales2(p0: *const u8, p1: *const u8) -> __m256 {
    // SAFETY: the caller guarantees two readable bytes at `p0` and at `p1`.
    let (d0, d1) = unsafe {
        (
            (p0 as *const i16).read_unaligned(),
            (p1 as *const i16).read_unaligned(),
        )
    };
    _mm256_cvtph_ps(_mm_unpacklo_epi64(_mm_set1_epi16(d0), _mm_set1_epi16(d1)))
}

/// Per-pair activation factors: `[d_x0 × 4, d_x1 × 4]` and the corrections
/// `[-8 Σq0, 0, 0, 0, -8 Σq1, 0, 0, 0]`.
#[inline]
#[target_feature(enable = "avx2")]
fn pair_factors(t: Token<'_>, b: usize) -> (__m256, __m256i) {
    let (d0, d1) = (t.d[b], t.d[b + 1]);
    let (s0, s1) = (-8 * i32::from(t.sums[b]), -8 * i32::from(t.sums[b + 1]));
    (
        _mm256_setr_ps(d0, d0, d0, d0, d1, d1, d1, d1),
        _mm256_setr_epi32(s0, 0, 0, 0, s1, 0, 0, 0),
    )
}

/// `vpermb` indices taking the 16 `qs` bytes of both blocks of a pair (`[d0, qs0, d1, qs1]`,
/// 36 bytes) twice: `[qs0, qs1, qs0, qs1]`.
const fn q4_0_code_bytes() -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let block = (i / 16) % 2;
        idx[i] = (2 + 18 * block + i % 16) as u8;
        i += 1;
    }
    idx
}

/// `vpermb` indices for the pair's f16 scales as 16 words `[d0 × 4, d1 × 4, d0 × 4, d1 × 4]`
/// (the lane order of the `vpdpbusd` sums), in the low 32 bytes.
const fn q4_0_scale_bytes() -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        let block = (i / 8) % 2;
        idx[i] = (18 * block + i % 2) as u8;
        i += 1;
    }
    idx
}

const Q4_0_CODE_BYTES: [u8; 64] = q4_0_code_bytes();
const Q4_0_SCALE_BYTES: [u8; 64] = q4_0_scale_bytes();

/// Two Q4_0 blocks per step: one masked load of the pair's 36 bytes, `vpermb` to place both
/// blocks' nibble bytes as `[qs0, qs1, qs0, qs1]` and their scales as 16 f16 words, a variable
/// shift (0 for the low half, 4 for the high half) and a mask give the codes in the activations'
/// pair-interleaved order, and one `vpdpbusd` (started from the `-8 Σq` corrections) sums them.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,avx2,f16c,fma")]
unsafe fn q4_0_avx512(rows: [*const u8; 4], n_blocks: usize, t: Token<'_>, out: &mut [f32; 4]) {
    const BB: usize = q4_0::BLOCK_BYTES;
    const PAIR_MASK: u64 = (1 << (2 * BB)) - 1;
    let low4 = _mm512_set1_epi8(0x0f);
    // SAFETY (whole body): the masked load reads only bytes b·18..b·18+36 of a row (block pair
    // b, b + 1) and activations b·32..b·32+64, inside the row and token for b + 1 < n_blocks.
    unsafe {
        let code_idx = _mm512_loadu_si512(Q4_0_CODE_BYTES.as_ptr() as *const _);
        let scale_idx = _mm512_loadu_si512(Q4_0_SCALE_BYTES.as_ptr() as *const _);
        let shifts = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut b = 0;
        while b + 2 <= n_blocks {
            let q = _mm512_loadu_si512(t.qs.as_ptr().add(32 * b) as *const _);
            let (dx, corr) = pair_factors(t, b);
            let dx = _mm256_castps_pd(dx);
            let dx = _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(dx), dx));
            let corr = _mm512_zextsi256_si512(corr);
            for i in 0..4 {
                let blk = rows[i].add(b * BB);
                prefetch_lines(blk.wrapping_add(PREFETCH_BYTES), 2 * BB);
                let pair = _mm512_maskz_loadu_epi8(PAIR_MASK, blk as *const i8);
                let bytes = _mm512_permutexvar_epi8(code_idx, pair);
                let codes = _mm512_and_si512(_mm512_srlv_epi16(bytes, shifts), low4);
                let sums = _mm512_dpbusd_epi32(corr, codes, q);
                let dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi8(
                    scale_idx, pair,
                )));
                let d = _mm512_mul_ps(dw, dx);
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), d, acc[i]);
            }
            b += 2;
        }
        let mut tail = [0f32; 4];
        if b < n_blocks {
            q4_0_last_block(rows, b, n_blocks, t, &mut tail);
        }
        for i in 0..4 {
            out[i] = _mm512_reduce_add_ps(acc[i]) + tail[i];
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_avx2(rows: [*const u8; 4], n_blocks: usize, t: Token<'_>, out: &mut [f32; 4]) {
    const BB: usize = q4_0::BLOCK_BYTES;
    let ones = _mm256_set1_epi16(1);
    // SAFETY (whole body): as in `q4_0_avx512`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut b = 0;
        while b + 2 <= n_blocks {
            let a = t.qs.as_ptr().add(32 * b);
            let q_lo = _mm256_loadu_si256(a as *const __m256i);
            let q_hi = _mm256_loadu_si256(a.add(32) as *const __m256i);
            let (dx, corr) = pair_factors(t, b);
            for i in 0..4 {
                let blk = rows[i].add(b * BB);
                prefetch_lines(blk.wrapping_add(PREFETCH_BYTES), 2 * BB);
                let (lo, hi) = nibbles2(blk.add(2), blk.add(BB + 2));
                let pairs = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, q_lo),
                    _mm256_maddubs_epi16(hi, q_hi),
                );
                let sum = _mm256_madd_epi16(pairs, ones);
                let d = _mm256_mul_ps(scales2(blk, blk.add(BB)), dx);
                acc[i] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(sum, corr)), d, acc[i]);
            }
            b += 2;
        }
        let mut tail = [0f32; 4];
        if b < n_blocks {
            q4_0_last_block(rows, b, n_blocks, t, &mut tail);
        }
        for i in 0..4 {
            out[i] = super::x86::hsum256(acc[i]) + tail[i];
        }
    }
}

/// The unpaired last block of an odd-length row (natural activation order), in scalar code.
///
/// # Safety
/// Block `b` of every row is readable.
unsafe fn q4_0_last_block(
    rows: [*const u8; 4],
    b: usize,
    n_blocks: usize,
    t: Token<'_>,
    out: &mut [f32; 4],
) {
    const BB: usize = q4_0::BLOCK_BYTES;
    for (o, row) in out.iter_mut().zip(rows) {
        // SAFETY: block b (BB bytes) is inside the row per the contract.
        let blk = unsafe { std::slice::from_raw_parts(row.add(b * BB), BB) };
        let one = Token {
            qs: &t.qs[32 * b..],
            d: &t.d[b..],
            sums: &t.sums[b..],
        };
        debug_assert_eq!(b + 1, n_blocks);
        *o = super::qdot::dot_row(DenseType::Q4_0, blk, one);
    }
}
