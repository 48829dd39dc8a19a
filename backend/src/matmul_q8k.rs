//! `y = W·x` for ggml TQ2_0 / TQ1_0 weights with ggml's own numerics, so a llama.cpp host gets
//! the same floats from us as from its CPU backend (x86 AVX2 build).
//!
//! ggml does not quantize activations per token as BitNet does: it converts each row of `x` to
//! Q8_K (per 256 values: `d = max/-127` of the value with the largest magnitude,
//! `q = round(x·(-127/max))`), takes exact integer dot products per 256-column block, and
//! accumulates them in float with each block's `d_x·d_w` in eight lanes (see
//! [`crate::kernels::block_q8k`]). This module repeats those steps exactly:
//! [`Q8kActivations`] is ggml's `quantize_row_q8_K_ref`, [`TqMatrix`] keeps every weight block's
//! own scale next to the repacked codes, and [`reference`] is a scalar transcription of ggml's
//! math on the original bytes that the fast path is tested against bit for bit.

use std::cell::RefCell;
use std::sync::Mutex;

use half::f16;

use crate::formats::{tq1_0, tq2_0};
use crate::kernels::block_q8k::{self, TileQ8k, LANES, LANE_GROUP, QK_K};
use crate::kernels::{self, KernelKind, STRIP_ROWS};
use crate::repack::TernaryMatrix;
use crate::threads;
use crate::{Error, Result};

/// Below this many multiply-adds a matmul runs on the calling thread only.
const PARALLEL_MIN_MACS: usize = 1 << 18;
/// Below this many activation values, Q8_K quantization runs on the calling thread only.
const PARALLEL_MIN_QUANT: usize = 1 << 15;
/// Tasks a parallel mat-mul is cut into, per thread.
const TASKS_PER_THREAD: usize = 4;

fn shape_error(op: &'static str, problem: String) -> Error {
    Error::Shape { op, problem }
}

/// ggml's `nearest_int`: round half to even through the float adder (exact for |v| < 2^22).
#[inline]
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007F_FFFF) - 0x0040_0000
}

/// Token tiles the kernels take, largest first (the AVX-512 kernel has one per size; a
/// prompt is cut greedily, so only its last few tokens run in smaller tiles).
const TILE_SIZES: [usize; 5] = [16, 8, 4, 2, 1];

/// Cuts `n_tokens` into `(first token, count)` tiles of [`TILE_SIZES`].
fn tile_plan(n_tokens: usize) -> Vec<(usize, usize)> {
    let mut plan = Vec::new();
    let mut t0 = 0;
    for size in TILE_SIZES {
        while n_tokens - t0 >= size {
            plan.push((t0, size));
            t0 += size;
        }
    }
    plan
}

/// Activations quantized to ggml's Q8_K, in token tiles laid out for the kernels
/// ([`block_q8k::TileQ8k`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Q8kActivations {
    n_tokens: usize,
    cols: usize,
    /// Row-major values, one row per token (quantization writes them; tiling reads them).
    row_qs: Vec<i8>,
    /// Per token and block: the lane sums.
    row_corr: Vec<[i32; LANES]>,
    /// `d[t·nb + b]`: block scales (the tiles use them in place).
    d: Vec<f32>,
    /// `(first token, count)` per tile.
    tiles: Vec<(usize, usize)>,
    /// The tiles' values, tile after tile (tile `(t0, n)` at `t0 · cols`).
    tile_qs: Vec<i8>,
    /// The tiles' negated lane sums, tile after tile (tile `(t0, n)` at `t0 · nb · 8`).
    tile_neg_corr: Vec<i32>,
}

impl Q8kActivations {
    /// An empty buffer for [`Self::quantize_into`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x` (`[n_tokens, cols]` row-major, `cols % 256 == 0`).
    pub fn quantize(x: &[f32], n_tokens: usize, cols: usize) -> Result<Self> {
        let mut a = Self::new();
        a.quantize_into(x, n_tokens, cols)?;
        Ok(a)
    }

    /// As [`Self::quantize`], reusing this buffer.
    pub fn quantize_into(&mut self, x: &[f32], n_tokens: usize, cols: usize) -> Result<()> {
        const OP: &str = "Q8_K activation quantization";
        if cols == 0 || !cols.is_multiple_of(QK_K) {
            return Err(shape_error(
                OP,
                format!("cols = {cols} is not a positive multiple of {QK_K}"),
            ));
        }
        if n_tokens.checked_mul(cols) != Some(x.len()) {
            return Err(shape_error(
                OP,
                format!("x has {} values, expected {n_tokens} × {cols}", x.len()),
            ));
        }
        let nb = cols / QK_K;
        self.n_tokens = n_tokens;
        self.cols = cols;
        self.row_qs.resize(x.len(), 0);
        self.d.resize(n_tokens * nb, 0.0);
        self.row_corr.resize(n_tokens * nb, [0; LANES]);
        self.quantize_rows(x);
        self.build_tiles();
        Ok(())
    }

    /// Quantizes every row (on every thread for large batches: on the caller alone this was
    /// a serial stretch in every mat-mul while the other threads waited).
    fn quantize_rows(&mut self, x: &[f32]) {
        let (n_tokens, cols, nb) = (self.n_tokens, self.cols, self.cols / QK_K);
        let n_tasks = if x.len() < PARALLEL_MIN_QUANT {
            1
        } else {
            (threads::num_threads() * TASKS_PER_THREAD).min(n_tokens)
        };
        if n_tasks <= 1 {
            quantize_blocks(x, &mut self.row_qs, &mut self.d, &mut self.row_corr);
            return;
        }
        // Task i quantizes tokens [n_tokens·i/n_tasks, n_tokens·(i+1)/n_tasks): disjoint
        // slices, each behind its own (never contended) lock so the closure can be shared.
        let mut parts = Vec::with_capacity(n_tasks);
        let (mut x, mut qs, mut d, mut corr) = (
            x,
            &mut self.row_qs[..],
            &mut self.d[..],
            &mut self.row_corr[..],
        );
        for i in 0..n_tasks {
            let toks = n_tokens * (i + 1) / n_tasks - n_tokens * i / n_tasks;
            let (x0, x1) = x.split_at(toks * cols);
            let (q0, q1) = qs.split_at_mut(toks * cols);
            let (d0, d1) = d.split_at_mut(toks * nb);
            let (c0, c1) = corr.split_at_mut(toks * nb);
            parts.push(Mutex::new((x0, q0, d0, c0)));
            (x, qs, d, corr) = (x1, q1, d1, c1);
        }
        threads::parallel_for(n_tasks, |i| {
            let mut part = parts[i].lock().unwrap_or_else(|e| e.into_inner());
            let (x, qs, d, corr) = &mut *part;
            quantize_blocks(x, qs, d, corr);
        });
    }

    /// Interleaves the rows into tiles. Lane `m` of a tile is one contiguous part of its
    /// values and of its sums, so (tile, lane) pairs are independent tasks.
    fn build_tiles(&mut self) {
        let (cols, nb) = (self.cols, self.cols / QK_K);
        self.tiles = tile_plan(self.n_tokens);
        self.tile_qs.resize(self.row_qs.len(), 0);
        self.tile_neg_corr.resize(self.row_corr.len() * LANES, 0);
        let mut jobs = Vec::with_capacity(self.tiles.len() * LANES);
        let (mut qs, mut corr) = (&mut self.tile_qs[..], &mut self.tile_neg_corr[..]);
        for &(t0, n) in &self.tiles {
            let (tq, rq) = std::mem::take(&mut qs).split_at_mut(n * cols);
            let (tc, rc) = std::mem::take(&mut corr).split_at_mut(n * nb * LANES);
            (qs, corr) = (rq, rc);
            let lanes = tq.chunks_exact_mut(n * cols / LANES);
            for (m, (q, c)) in lanes.zip(tc.chunks_exact_mut(n * nb)).enumerate() {
                jobs.push(Mutex::new((t0, n, m, q, c)));
            }
        }
        let (row_qs, row_corr) = (&self.row_qs[..], &self.row_corr[..]);
        let run = |i: usize| {
            let mut job = jobs[i].lock().unwrap_or_else(|e| e.into_inner());
            let (t0, n, m, ref mut q, ref mut c) = *job;
            let rows_q = &row_qs[t0 * cols..(t0 + n) * cols];
            let rows_corr = &row_corr[t0 * nb..(t0 + n) * nb];
            fill_lane(rows_q, rows_corr, n, m, q, c);
        };
        if self.row_qs.len() < PARALLEL_MIN_QUANT {
            (0..jobs.len()).for_each(run);
        } else {
            threads::parallel_for(jobs.len(), run);
        }
    }

    /// Number of tokens (rows).
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Token `t`'s int8 values.
    pub fn qs(&self, t: usize) -> &[i8] {
        &self.row_qs[t * self.cols..(t + 1) * self.cols]
    }

    /// Token `t`'s block scales `d`.
    pub fn d(&self, t: usize) -> &[f32] {
        let nb = self.cols / QK_K;
        &self.d[t * nb..(t + 1) * nb]
    }

    /// Tiles in token order: `(first token, tile)`.
    fn tiles(&self) -> Vec<(usize, TileQ8k<'_>)> {
        let nb = self.cols / QK_K;
        self.tiles
            .iter()
            .map(|&(t0, n)| {
                let tile = TileQ8k {
                    n,
                    nb,
                    qs: &self.tile_qs[t0 * self.cols..(t0 + n) * self.cols],
                    neg_corr: &self.tile_neg_corr[t0 * nb * LANES..(t0 + n) * nb * LANES],
                    d: &self.d[t0 * nb..(t0 + n) * nb],
                };
                (t0, tile)
            })
            .collect()
    }
}

/// Lane `m` of a tile of `n` tokens (their rows `rows_q` and lane sums `rows_corr`): for
/// every block and token, the lane's 32 values ([`block_q8k::lane_position`]) and its
/// negated sum.
fn fill_lane(
    rows_q: &[i8],
    rows_corr: &[[i32; LANES]],
    n: usize,
    m: usize,
    qs: &mut [i8],
    neg_corr: &mut [i32],
) {
    let (cols, nb) = (rows_q.len() / n, rows_corr.len() / n);
    for b in 0..nb {
        for t in 0..n {
            let block = &rows_q[t * cols + b * QK_K..][..QK_K];
            let group = &mut qs[(b * n + t) * LANE_GROUP..][..LANE_GROUP];
            for (i, piece) in group.chunks_exact_mut(4).enumerate() {
                let (h, p) = (i / 4, i % 4);
                piece.copy_from_slice(&block[128 * h + 32 * p + 4 * m..][..4]);
            }
            neg_corr[b * n + t] = -rows_corr[t * nb + b][m];
        }
    }
}

/// Quantizes consecutive 256-value blocks of `x` into `qs`, `d` and `corr`.
fn quantize_blocks(x: &[f32], qs: &mut [i8], d: &mut [f32], corr: &mut [[i32; LANES]]) {
    let blocks = x
        .chunks_exact(QK_K)
        .zip(qs.chunks_exact_mut(QK_K))
        .zip(d.iter_mut().zip(corr.iter_mut()));
    for ((xb, qb), (d, corr)) in blocks {
        *d = quantize_block(xb, qb, corr);
    }
}

/// One block of ggml's `quantize_row_q8_K_ref`; returns `d` and fills the per-lane sums of
/// `q` over columns `32L..32L+32` (ggml's `bsums[2L] + bsums[2L+1]`).
fn quantize_block(x: &[f32], q: &mut [i8], corr: &mut [i32; LANES]) -> f32 {
    // ggml keeps the first value of largest magnitude (NaNs never compare greater).
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
    if amax == 0.0 {
        q.fill(0);
        *corr = [0; LANES];
        return 0.0;
    }
    let iscale = -127.0f32 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = nearest_int(iscale * v).min(127) as i8;
    }
    for (c, g) in corr.iter_mut().zip(q.chunks_exact(32)) {
        *c = g.iter().map(|&v| i32::from(v)).sum();
    }
    1.0 / iscale
}

/// Weight type of a [`TqMatrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TqType {
    /// ggml TQ2_0 (66 bytes per 256 weights).
    Tq2_0,
    /// ggml TQ1_0 (54 bytes per 256 weights).
    Tq1_0,
}

impl TqType {
    /// Bytes per 256-weight block.
    pub fn block_bytes(self) -> usize {
        match self {
            TqType::Tq2_0 => tq2_0::BLOCK_BYTES,
            TqType::Tq1_0 => tq1_0::BLOCK_BYTES,
        }
    }
}

/// A TQ2_0 / TQ1_0 matrix repacked for the kernels, with every block's own scale.
#[derive(Debug, Clone)]
pub struct TqMatrix {
    codes: TernaryMatrix,
    /// `dw[(strip · nb + b) · 16 + r]`: scale of block `b` of row `16·strip + r` (0 for padding).
    dw: Vec<f32>,
    nb: usize,
}

impl TqMatrix {
    /// Repacks a tensor of `rows` rows of `cols` weights (`cols % 256 == 0`). TQ2_0's invalid
    /// code 3 is an error (use [`reference`] for such data).
    pub fn new(ty: TqType, bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| shape_error("TQ repack", format!("{rows} × {cols} overflows")))?;
        let (values, scales) = match ty {
            TqType::Tq2_0 => tq2_0::unpack_ternary(bytes, n)?,
            TqType::Tq1_0 => tq1_0::unpack_ternary(bytes, n)?,
        };
        let codes = TernaryMatrix::from_ternary(&values, rows, cols, 1.0)?;
        let nb = cols / QK_K;
        let n_strips = rows.div_ceil(STRIP_ROWS);
        let mut dw = vec![0f32; n_strips * nb * STRIP_ROWS];
        for (row, ds) in scales.chunks_exact(nb).enumerate() {
            let (s, r) = (row / STRIP_ROWS, row % STRIP_ROWS);
            for (b, d) in ds.iter().enumerate() {
                dw[(s * nb + b) * STRIP_ROWS + r] = d.to_f32();
            }
        }
        Ok(TqMatrix { codes, dw, nb })
    }

    /// The code bytes and weight scales of strip `s` (rows `16·s..16·s + 16`).
    fn strip(&self, s: usize) -> (&[u8], &[f32]) {
        (
            self.codes.strips(s, s + 1),
            &self.dw[s * self.nb * STRIP_ROWS..(s + 1) * self.nb * STRIP_ROWS],
        )
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.codes.rows()
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.codes.cols()
    }

    /// Bytes held (codes and scales).
    pub fn heap_bytes(&self) -> usize {
        self.codes.packed_bytes() + self.dw.len() * 4
    }

    /// Row-major ternary values (`[rows, cols]`).
    pub fn to_ternary(&self) -> Vec<i8> {
        self.codes.to_ternary()
    }

    /// Block scale of row `row`, block `b`.
    pub fn block_scale(&self, row: usize, b: usize) -> f32 {
        self.dw[((row / STRIP_ROWS) * self.nb + b) * STRIP_ROWS + row % STRIP_ROWS]
    }

    /// Re-encodes the original tensor bytes (exact: codes and f16 scales are kept).
    pub fn to_bytes(&self, ty: TqType) -> Result<Vec<u8>> {
        let values = self.to_ternary();
        let mut out = Vec::with_capacity(self.rows() * self.nb * ty.block_bytes());
        for (i, v) in values.chunks_exact(QK_K).enumerate() {
            let d = self.block_scale(i / self.nb, i % self.nb);
            let block = match ty {
                TqType::Tq2_0 => tq2_0::pack_ternary(v, d)?,
                TqType::Tq1_0 => tq1_0::pack_ternary(v, d)?,
            };
            out.extend_from_slice(&block);
        }
        Ok(out)
    }
}

/// Raw output pointer shared by the workers; each writes only its own rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: workers write disjoint elements (their own strips' rows) and the pointer outlives
// the parallel section (`parallel_for` returns only when every task is done).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Going through a method makes closures capture the whole (Sync) wrapper.
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

thread_local! {
    static ACTS: RefCell<Q8kActivations> = RefCell::new(Q8kActivations::new());
}

/// `y = W·x` with ggml's Q8_K numerics; `x` is `[n_tokens, cols]`, `y` is `[n_tokens, rows]`.
pub fn ternary_matmul_q8k(w: &TqMatrix, x: &[f32], n_tokens: usize, y: &mut [f32]) -> Result<()> {
    ternary_matmul_q8k_with(kernels::selected(), w, x, n_tokens, y)
}

/// [`ternary_matmul_q8k`] with an explicit kernel (AVX-512 VNNI, or the portable one for
/// every other kind).
pub fn ternary_matmul_q8k_with(
    kind: KernelKind,
    w: &TqMatrix,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<()> {
    ACTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut a) => {
            a.quantize_into(x, n_tokens, w.cols())?;
            ternary_matmul_q8k_quantized_with(kind, w, &a, y)
        }
        Err(_) => {
            let a = Q8kActivations::quantize(x, n_tokens, w.cols())?;
            ternary_matmul_q8k_quantized_with(kind, w, &a, y)
        }
    })
}

/// `y = W·x` for activations already quantized (shared by several matrices).
pub fn ternary_matmul_q8k_quantized_with(
    kind: KernelKind,
    w: &TqMatrix,
    acts: &Q8kActivations,
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "ternary matmul (Q8_K)";
    kernels::check_available(kind)?;
    let (rows, n_tokens) = (w.rows(), acts.n_tokens());
    if n_tokens > 0 && acts.cols() != w.cols() {
        return Err(shape_error(
            OP,
            format!(
                "activations have {} columns, the matrix {}",
                acts.cols(),
                w.cols()
            ),
        ));
    }
    if n_tokens.checked_mul(rows) != Some(y.len()) {
        return Err(shape_error(
            OP,
            format!("y has {} values, expected {n_tokens} × {rows}", y.len()),
        ));
    }
    if n_tokens == 0 {
        return Ok(());
    }
    let n_strips = rows.div_ceil(STRIP_ROWS);
    // Several tasks per thread: threads claim them dynamically, so one that starts late or is
    // preempted (a shared machine, a host's thread team arriving one by one) is made up for
    // by the others instead of the whole job waiting for its one large share.
    let n_tasks = if n_tokens * rows * w.cols() < PARALLEL_MIN_MACS {
        1
    } else {
        (threads::num_threads() * TASKS_PER_THREAD).clamp(1, n_strips)
    };
    let tiles = acts.tiles();
    let out = OutPtr(y.as_mut_ptr());
    threads::parallel_for(n_tasks, |i| {
        let (s0, s1) = (n_strips * i / n_tasks, n_strips * (i + 1) / n_tasks);
        let put = |s: usize, t: usize, res: &[f32; STRIP_ROWS]| {
            let n_rows = STRIP_ROWS.min(rows - s * STRIP_ROWS);
            let at = t * rows + s * STRIP_ROWS;
            // SAFETY: `at + n_rows <= n_tokens · rows = y.len()`, and rows of strip `s` belong
            // to this task only, so no other thread writes these elements.
            unsafe { std::ptr::copy_nonoverlapping(res.as_ptr(), out.at(at), n_rows) };
        };
        // Only x86 has the single-token kernel that takes strips before the tile loop.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut s_rest = s0;
        #[cfg(target_arch = "x86_64")]
        if n_tokens == 1 && kind == KernelKind::Avx512Vnni {
            s_rest = single_token_runs(w, s0, s1, &tiles[0].1, put);
        }
        let mut buf = [[0f32; STRIP_ROWS]; TILE_SIZES[0]];
        for s in s_rest..s1 {
            let (strip, dw) = w.strip(s);
            for (t0, tile) in &tiles {
                let res = &mut buf[..tile.n];
                run_tile(kind, strip, w.nb, dw, tile, res);
                for (j, r) in res.iter().enumerate() {
                    put(s, t0 + j, r);
                }
            }
        }
    });
    Ok(())
}

/// One token on AVX-512 VNNI: strips `s0..s1` cut into two runs walked in lockstep, two
/// strips per kernel call, so two sequential weight streams are in flight (measured on the
/// 2B4T decode step: 1.1× with one thread and ~1.3× with two, against one strip at a time).
/// Returns the first strip it left (the odd one out, if any).
#[cfg(target_arch = "x86_64")]
fn single_token_runs(
    w: &TqMatrix,
    s0: usize,
    s1: usize,
    tok: &TileQ8k<'_>,
    put: impl Fn(usize, usize, &[f32; STRIP_ROWS]),
) -> usize {
    assert!(kernels::KernelKind::Avx512Vnni.is_available());
    assert!(tok.n == 1 && tok.nb == w.nb && tok.is_complete());
    let half = (s1 - s0) / 2;
    for k in 0..half {
        let (a, b) = (s0 + k, s0 + half + k);
        let ((wa, da), (wb, db)) = (w.strip(a), w.strip(b));
        let (mut ra, mut rb) = ([0f32; STRIP_ROWS], [0f32; STRIP_ROWS]);
        // SAFETY: AVX-512 F/BW/VNNI is present (asserted); `TqMatrix::strip` returns whole
        // strips (2·nb·512 code bytes, nb·16 scales) and the token is a complete tile of nb
        // blocks (asserted).
        unsafe {
            block_q8k::avx512::strips_1tok::<2>([wa, wb], w.nb, [da, db], tok, [&mut ra, &mut rb])
        };
        put(a, 0, &ra);
        put(b, 0, &rb);
    }
    s0 + 2 * half
}

fn run_tile(
    kind: KernelKind,
    strip: &[u8],
    nb: usize,
    dw: &[f32],
    tile: &TileQ8k<'_>,
    out: &mut [[f32; STRIP_ROWS]],
) {
    assert_eq!(strip.len(), 2 * nb * kernels::STRIP_BLOCK_BYTES);
    assert_eq!(dw.len(), nb * STRIP_ROWS);
    assert_eq!(tile.n, out.len());
    assert!(tile.nb == nb && tile.is_complete());
    match kind {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512Vnni => {
            use block_q8k::avx512;
            // SAFETY: the kind was checked available (AVX-512 F/BW/VNNI); lengths asserted above.
            unsafe {
                match tile.n {
                    16 => avx512::strip_n::<16>(strip, nb, dw, tile, out),
                    8 => avx512::strip_n::<8>(strip, nb, dw, tile, out),
                    4 => avx512::strip_n::<4>(strip, nb, dw, tile, out),
                    2 => avx512::strip_n::<2>(strip, nb, dw, tile, out),
                    _ => avx512::strips_1tok::<1>([strip], nb, [dw], tile, [&mut out[0]]),
                }
            }
        }
        _ => block_q8k::strip_scalar(strip, nb, dw, tile, out),
    }
}

/// ggml's math transcribed literally on the original bytes: the oracle for tests, and the path
/// for tensors the repacked layout cannot hold (TQ2_0 with code 3).
pub mod reference {
    use super::*;

    /// Trit `n` of a TQ1_0 byte as ggml's AVX2 kernel extracts it: `q = b·3ⁿ mod 256`, then
    /// "×3, take the top bits" through two rounding averages.
    pub fn tq1_trit(byte: u8, n: u32) -> i32 {
        let q = (u32::from(byte) * 3u32.pow(n)) as u8;
        let q = u32::from(q.saturating_sub(1));
        let half = (q + 1) >> 1;
        let r = (q + half + 1) >> 1;
        (r >> 6) as i32
    }

    /// Code (0..=3) of element `e` (0..256) of one block.
    pub fn code(ty: TqType, block: &[u8], e: usize) -> i32 {
        match ty {
            TqType::Tq2_0 => {
                let (half, l, k) = (e / 128, (e % 128) / 32, e % 32);
                i32::from((block[32 * half + k] >> (2 * l)) & 3)
            }
            TqType::Tq1_0 => {
                let (byte, n) = if e < 160 {
                    (block[e % 32], e / 32)
                } else if e < 240 {
                    (block[32 + (e - 160) % 16], (e - 160) / 16)
                } else {
                    (block[48 + (e - 240) % 4], (e - 240) / 4)
                };
                tq1_trit(byte, n as u32)
            }
        }
    }

    /// The f16 scale `d` of one block.
    pub fn block_d(ty: TqType, block: &[u8]) -> f32 {
        let at = ty.block_bytes() - 2;
        f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
    }

    /// `ggml_vec_dot_tq{1,2}_0_q8_K` (x86 AVX2) of one weight row (`cols / 256` blocks) with
    /// one Q8_K row (`qs`, and `d` per block).
    pub fn vec_dot(ty: TqType, row: &[u8], qs: &[i8], d: &[f32]) -> f32 {
        let mut sumf = [0f32; LANES];
        for (b, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
            let q = &qs[b * QK_K..(b + 1) * QK_K];
            let mut lane = [0i32; LANES];
            for (e, &v) in q.iter().enumerate() {
                lane[(e % 32) / 4] += code(ty, block, e) * i32::from(v);
                lane[e / 32] -= i32::from(v);
            }
            let dd = d[b] * block_d(ty, block);
            for (s, l) in sumf.iter_mut().zip(lane) {
                *s = (l as f32).mul_add(dd, *s);
            }
        }
        block_q8k::hsum8(&sumf)
    }

    /// ggml's `quantize_row_q8_K_ref` for one row: (`qs`, `d` per block).
    pub fn quantize_row_q8k(x: &[f32]) -> (Vec<i8>, Vec<f32>) {
        let mut qs = vec![0i8; x.len()];
        let mut d = Vec::with_capacity(x.len() / QK_K);
        for (xb, qb) in x.chunks_exact(QK_K).zip(qs.chunks_exact_mut(QK_K)) {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                d.push(0.0);
                continue;
            }
            let iscale = -127.0f32 / max;
            for (o, &v) in qb.iter_mut().zip(xb) {
                *o = nearest_int(iscale * v).min(127) as i8;
            }
            d.push(1.0 / iscale);
        }
        (qs, d)
    }

    /// The whole mat-mul as ggml's CPU backend computes it: `y[t·rows + r]`.
    pub fn matmul(
        ty: TqType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
        x: &[f32],
        n_tokens: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let row_bytes = cols / QK_K * ty.block_bytes();
        if !cols.is_multiple_of(QK_K)
            || bytes.len() != rows * row_bytes
            || x.len() != n_tokens * cols
            || y.len() != n_tokens * rows
        {
            return Err(shape_error(
                "reference TQ matmul",
                format!(
                    "{rows} × {cols} weights ({} bytes), {} inputs, {} outputs",
                    bytes.len(),
                    x.len(),
                    y.len()
                ),
            ));
        }
        for (t, yt) in y.chunks_exact_mut(rows).enumerate() {
            let (qs, d) = quantize_row_q8k(&x[t * cols..(t + 1) * cols]);
            for (r, o) in yt.iter_mut().enumerate() {
                *o = vec_dot(ty, &bytes[r * row_bytes..(r + 1) * row_bytes], &qs, &d);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random TQ bytes with valid codes and a few different block scales (one of them 0).
    fn random_tq(ty: TqType, rng: &mut StdRng, rows: usize, cols: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..rows * cols / QK_K {
            let v: Vec<i8> = (0..QK_K).map(|_| rng.random_range(-1i8..=1)).collect();
            let d = if i % 11 == 5 {
                0.0
            } else {
                [0.0125f32, 0.5, 1.75][i % 3]
            };
            out.extend(match ty {
                TqType::Tq2_0 => tq2_0::pack_ternary(&v, d).unwrap(),
                TqType::Tq1_0 => tq1_0::pack_ternary(&v, d).unwrap(),
            });
        }
        out
    }

    #[test]
    fn tq1_trit_matches_the_plain_formula_for_every_byte() {
        for b in 0..=255u8 {
            for n in 0..5u32 {
                let q = (u32::from(b) * 3u32.pow(n)) as u8;
                assert_eq!(
                    reference::tq1_trit(b, n),
                    ((u32::from(q) * 3) >> 8) as i32,
                    "byte {b}, trit {n}"
                );
            }
        }
    }

    #[test]
    fn hand_computed_q8k_block() {
        let mut x = vec![0f32; 256];
        x[3] = -2.0; // largest magnitude, negative: iscale = 63.5, d = 1/63.5
        x[0] = 1.0;
        x[1] = 0.5 / 63.5; // exactly half a step: ties to even -> 0
        x[2] = 1.5 / 63.5; // 1.5 steps -> 2
        let (qs, d) = reference::quantize_row_q8k(&x);
        assert_eq!(&qs[..4], &[64, 0, 2, -127]);
        assert_eq!(d, vec![1.0 / 63.5]);
        let a = Q8kActivations::quantize(&x, 1, 256).unwrap();
        assert_eq!(a.qs(0), &qs[..]);
        assert_eq!(a.d(0), &d[..]);
        assert_eq!(a.row_corr[0], [64 + 2 - 127, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn hand_computed_dot() {
        // One TQ2_0 block: w[0] = +1, w[4] = -1, rest 0, d = 0.5; q[0] = 10, q[4] = 3, q[40] = 7.
        let mut w = vec![0i8; 256];
        w[0] = 1;
        w[4] = -1;
        let bytes = tq2_0::pack_ternary(&w, 0.5).unwrap();
        let mut qs = vec![0i8; 256];
        qs[0] = 10;
        qs[4] = 3;
        qs[40] = 7;
        // Lanes (codes w+1, minus the sums of q over 32-column groups): L0 = 10·2 - (10 + 3) = 7,
        // L1 = 3·0 - 7 = -7, L2 = 7·1 = 7; d = 2·0.5 = 1; hsum = (7 + 7) + (-7 + 0) = 7.
        let y = reference::vec_dot(TqType::Tq2_0, &bytes, &qs, &[2.0]);
        assert_eq!(y, 7.0);
    }

    #[test]
    fn fast_path_equals_reference_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        for ty in [TqType::Tq2_0, TqType::Tq1_0] {
            for (rows, cols) in [(37, 512), (16, 256), (64, 768)] {
                let bytes = random_tq(ty, &mut rng, rows, cols);
                let w = TqMatrix::new(ty, &bytes, rows, cols).unwrap();
                assert_eq!(w.to_bytes(ty).unwrap(), bytes);
                // 48 × 768 values: quantized on several threads (PARALLEL_MIN_QUANT).
                for n_tokens in [1usize, 2, 3, 7, 8, 16, 21, 29, 48] {
                    let mut x: Vec<f32> = (0..n_tokens * cols)
                        .map(|_| rng.random_range(-3.0f32..3.0))
                        .collect();
                    let zero_block = cols..(cols + 256).min(x.len());
                    x[zero_block].iter_mut().for_each(|v| *v = 0.0);
                    let mut want = vec![0f32; n_tokens * rows];
                    reference::matmul(ty, &bytes, rows, cols, &x, n_tokens, &mut want).unwrap();
                    for kind in kernels::available() {
                        let mut got = vec![0f32; n_tokens * rows];
                        ternary_matmul_q8k_with(kind, &w, &x, n_tokens, &mut got).unwrap();
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{ty:?} {rows}×{cols}, {n_tokens} tokens, {kind}");
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_bad_shapes_and_code_3() {
        let bytes = vec![0x55u8; 66];
        assert!(TqMatrix::new(TqType::Tq2_0, &bytes, 1, 128).is_err());
        assert!(TqMatrix::new(TqType::Tq2_0, &bytes[..60], 1, 256).is_err());
        let mut bad = bytes.clone();
        bad[3] = 0xFF;
        assert!(TqMatrix::new(TqType::Tq2_0, &bad, 1, 256).is_err());
        let w = TqMatrix::new(TqType::Tq2_0, &bytes, 1, 256).unwrap();
        assert!(ternary_matmul_q8k(&w, &[0.0; 255], 1, &mut [0.0]).is_err());
        assert!(ternary_matmul_q8k(&w, &[0.0; 256], 1, &mut [0.0; 2]).is_err());
        assert!(Q8kActivations::quantize(&[0.0; 100], 1, 100).is_err());
    }
}
