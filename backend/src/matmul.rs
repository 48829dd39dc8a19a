//! `y = W·x` for a ternary [`TernaryMatrix`] and float activations, BitNet b1.58 style:
//! per-token int8 absmax quantization, exact integer `Σ w·q`, then
//! `y = (Σ w·q) as f32 · (w_scale / s)` with `s = 127 / max(|x|, 1e-5)`.
//!
//! One token (decode) runs the GEMV kernels, streaming each 16-row strip once. Several tokens
//! (prefill) are cut into tiles (16 tokens on AVX-512) whose activations are interleaved per
//! 4-column group, so one unpacked weight register feeds every token of the tile; the tiles are
//! quantized and interleaved in parallel. Either way the 16-row strips are then split into one
//! contiguous range per thread of the persistent pool ([`crate::threads`]); each thread writes
//! only its own rows of `y`.
//!
//! The `_i32` entry points return the integers `Σ w·q` themselves; every kernel produces exactly
//! the same ones (see `kernels::available()`).

use std::cell::RefCell;
use std::sync::Mutex;

use crate::activation_quant::QuantizedActivations;
use crate::kernels::{self, KernelKind, TileActs, TileScratch, BLOCK_COLS, STRIP_ROWS};
use crate::repack::TernaryMatrix;
use crate::threads;
use crate::{Error, Result};

/// Below this many multiply-adds a matmul runs on the calling thread only.
const PARALLEL_MIN_MACS: usize = 1 << 18;
/// Below this many activation values, tiles are prepared on the calling thread only.
const PARALLEL_MIN_ACTS: usize = 1 << 16;
/// Guided-schedule divisor: each work chunk is `1 / (GUIDE · threads)` of the strips left.
const GUIDE: usize = 2;
/// Smallest single-token chunk, in strips (the AVX-512 GEMV streams 4 strips at once).
const MIN_GEMV_CHUNK: usize = 4;

#[derive(Default)]
struct Scratch {
    tiles: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    factors: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are already in use).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

fn shape_error(problem: String) -> Error {
    Error::Shape {
        op: "ternary matmul",
        problem,
    }
}

fn check_out_len(w: &TernaryMatrix, n_tokens: usize, got: usize) -> Result<()> {
    match n_tokens.checked_mul(w.rows()) {
        Some(n) if n == got => Ok(()),
        _ => Err(shape_error(format!(
            "output has {got} values, expected n_tokens × rows = {n_tokens} × {}",
            w.rows()
        ))),
    }
}

/// `y = W·x` with the [`kernels::selected`] kernel. `x` is `[n_tokens, cols]` row-major,
/// `y` is `[n_tokens, rows]`.
pub fn ternary_matmul(w: &TernaryMatrix, x: &[f32], n_tokens: usize, y: &mut [f32]) -> Result<()> {
    ternary_matmul_with(kernels::selected(), w, x, n_tokens, y)
}

/// [`ternary_matmul`] with an explicit kernel.
pub fn ternary_matmul_with(
    kind: KernelKind,
    w: &TernaryMatrix,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<()> {
    kernels::check_available(kind)?;
    check_out_len(w, n_tokens, y.len())?;
    check_in_len(w.cols(), n_tokens, x.len())?;
    with_scratch(|s| {
        let src = Source::Float { x, cols: w.cols() };
        matmul_f32(kind, vec![(w, y)], src, n_tokens, s)
    })
}

fn check_in_len(cols: usize, n_tokens: usize, got: usize) -> Result<()> {
    match n_tokens.checked_mul(cols) {
        Some(n) if n == got => Ok(()),
        _ => Err(shape_error(format!(
            "input has {got} values, expected n_tokens × cols = {n_tokens} × {cols}"
        ))),
    }
}

/// Several matrices applied to the same input, e.g. the q, k and v (or gate and up)
/// projections: the input is quantized once and every matrix is computed in one pool dispatch.
/// All matrices must have the same `cols`; `ys[i]` is `[n_tokens, ws[i].rows()]`. Results are
/// identical to separate [`ternary_matmul`] calls.
pub fn ternary_matmul_multi(
    ws: &[&TernaryMatrix],
    x: &[f32],
    n_tokens: usize,
    ys: &mut [&mut [f32]],
) -> Result<()> {
    ternary_matmul_multi_with(kernels::selected(), ws, x, n_tokens, ys)
}

/// [`ternary_matmul_multi`] with an explicit kernel.
pub fn ternary_matmul_multi_with(
    kind: KernelKind,
    ws: &[&TernaryMatrix],
    x: &[f32],
    n_tokens: usize,
    ys: &mut [&mut [f32]],
) -> Result<()> {
    kernels::check_available(kind)?;
    let Some(first) = ws.first() else {
        return if ys.is_empty() {
            Ok(())
        } else {
            Err(shape_error(format!("{} outputs for 0 matrices", ys.len())))
        };
    };
    let cols = first.cols();
    if ys.len() != ws.len() {
        return Err(shape_error(format!(
            "{} outputs for {} matrices",
            ys.len(),
            ws.len()
        )));
    }
    for (i, (w, y)) in ws.iter().zip(ys.iter()).enumerate() {
        if w.cols() != cols {
            return Err(shape_error(format!(
                "matrix {i} has {} columns, matrix 0 has {cols}",
                w.cols()
            )));
        }
        check_out_len(w, n_tokens, y.len())?;
    }
    check_in_len(cols, n_tokens, x.len())?;
    with_scratch(|s| {
        let jobs = ws
            .iter()
            .copied()
            .zip(ys.iter_mut().map(|y| &mut **y))
            .collect();
        matmul_f32(kind, jobs, Source::Float { x, cols }, n_tokens, s)
    })
}

/// `y = W·x` for activations already quantized (e.g. shared by the q, k and v projections,
/// which quantize the same input identically).
pub fn ternary_matmul_quantized(
    w: &TernaryMatrix,
    acts: &QuantizedActivations,
    y: &mut [f32],
) -> Result<()> {
    ternary_matmul_quantized_with(kernels::selected(), w, acts, y)
}

/// [`ternary_matmul_quantized`] with an explicit kernel.
pub fn ternary_matmul_quantized_with(
    kind: KernelKind,
    w: &TernaryMatrix,
    acts: &QuantizedActivations,
    y: &mut [f32],
) -> Result<()> {
    check(kind, w, acts, y.len())?;
    with_scratch(|s| matmul_f32(kind, vec![(w, y)], Source::Int(acts), acts.n_tokens(), s))
}

/// The exact integers `out[t · rows + r] = Σ_k w[r, k] · q[t, k]`.
pub fn ternary_matmul_i32(
    w: &TernaryMatrix,
    acts: &QuantizedActivations,
    out: &mut [i32],
) -> Result<()> {
    ternary_matmul_i32_with(kernels::selected(), w, acts, out)
}

/// [`ternary_matmul_i32`] with an explicit kernel.
pub fn ternary_matmul_i32_with(
    kind: KernelKind,
    w: &TernaryMatrix,
    acts: &QuantizedActivations,
    out: &mut [i32],
) -> Result<()> {
    check(kind, w, acts, out.len())?;
    with_scratch(|s| {
        let n_tokens = acts.n_tokens();
        let stride = w.n_blocks() * BLOCK_COLS;
        let plan = tile_plan(kind, n_tokens);
        prepare_tiles(kind, Source::Int(acts), &plan, stride, s)?;
        let tiles = tiles(&plan, stride, &s.tiles);
        drive(kind, vec![(w, out)], &tiles, &s.sums, |v, _, _| v);
        Ok(())
    })
}

fn check(
    kind: KernelKind,
    w: &TernaryMatrix,
    acts: &QuantizedActivations,
    out_len: usize,
) -> Result<()> {
    kernels::check_available(kind)?;
    if acts.n_tokens() > 0 && acts.cols() != w.cols() {
        return Err(shape_error(format!(
            "activations have {} columns, the matrix has {}",
            acts.cols(),
            w.cols()
        )));
    }
    check_out_len(w, acts.n_tokens(), out_len)
}

fn matmul_f32(
    kind: KernelKind,
    jobs: Vec<(&TernaryMatrix, &mut [f32])>,
    src: Source<'_>,
    n_tokens: usize,
    s: &mut Scratch,
) -> Result<()> {
    let Some(&(w0, _)) = jobs.first() else {
        return Ok(());
    };
    let stride = w0.n_blocks() * BLOCK_COLS;
    let plan = tile_plan(kind, n_tokens);
    prepare_tiles(kind, src, &plan, stride, s)?;
    // factors[j · n_tokens + t] = w_scale(j) / s(t)
    s.factors.clear();
    for (w, _) in &jobs {
        s.factors.extend(s.scales.iter().map(|&a| w.scale() / a));
    }
    let tiles = tiles(&plan, stride, &s.tiles);
    let factors = &s.factors[..];
    drive(kind, jobs, &tiles, &s.sums, |v, j, t| {
        v as f32 * factors[j * n_tokens + t]
    });
    Ok(())
}

/// Where tile activations come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Float rows `[n_tokens, cols]`, quantized while tiling.
    Float { x: &'a [f32], cols: usize },
    /// Already-quantized rows.
    Int(&'a QuantizedActivations),
}

/// Cuts `n_tokens` into `(first token, count)` tiles of the kernel's sizes, largest first.
fn tile_plan(kind: KernelKind, n_tokens: usize) -> Vec<(usize, usize)> {
    let mut plan = Vec::new();
    let mut t0 = 0;
    for &size in kind.tile_sizes() {
        while n_tokens - t0 >= size {
            plan.push((t0, size));
            t0 += size;
        }
    }
    plan
}

/// One tile's share of the scratch buffers, handed to whichever thread prepares it.
struct TileJob<'a> {
    t0: usize,
    n: usize,
    acts: &'a mut [i8],
    scales: &'a mut [f32],
    sums: &'a mut [i32],
}

/// Quantizes (or copies) every token into its tile in the interleaved layout: for every
/// 4-column group, the 4 values of each token of the tile in turn (a 1-token tile is just the
/// zero-padded row). Also fills the per-token scales and sums. Tiles run in parallel.
fn prepare_tiles(
    kind: KernelKind,
    src: Source<'_>,
    plan: &[(usize, usize)],
    stride: usize,
    s: &mut Scratch,
) -> Result<()> {
    let n_tokens: usize = plan.iter().map(|&(_, n)| n).sum();
    s.tiles.clear();
    s.tiles.resize(n_tokens * stride, 0);
    s.scales.clear();
    s.scales.resize(n_tokens, 0.0);
    s.sums.clear();
    s.sums.resize(n_tokens, 0);
    let mut jobs = Vec::with_capacity(plan.len());
    let (mut acts, mut scales, mut sums) = (&mut s.tiles[..], &mut s.scales[..], &mut s.sums[..]);
    for &(t0, n) in plan {
        let (a, ra) = std::mem::take(&mut acts).split_at_mut(n * stride);
        let (sc, rsc) = std::mem::take(&mut scales).split_at_mut(n);
        let (su, rsu) = std::mem::take(&mut sums).split_at_mut(n);
        (acts, scales, sums) = (ra, rsc, rsu);
        jobs.push(Mutex::new(TileJob {
            t0,
            n,
            acts: a,
            scales: sc,
            sums: su,
        }));
    }
    // First non-finite activation found: (token, column).
    let bad: Mutex<Option<(usize, usize)>> = Mutex::new(None);
    let run = |i: usize| {
        let mut job = jobs[i].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = fill_tile(kind, src, stride, &mut job) {
            let mut b = bad.lock().unwrap_or_else(|e| e.into_inner());
            if b.is_none_or(|prev| at < prev) {
                *b = Some(at);
            }
        }
    };
    let cols = match src {
        Source::Float { cols, .. } => cols,
        Source::Int(a) => a.cols(),
    };
    if n_tokens * cols >= PARALLEL_MIN_ACTS && jobs.len() > 1 {
        threads::parallel_for(jobs.len(), run);
    } else {
        (0..jobs.len()).for_each(run);
    }
    match bad.into_inner().unwrap_or_else(|e| e.into_inner()) {
        None => Ok(()),
        Some((t, c)) => Err(Error::Shape {
            op: "activation quantization",
            problem: format!("token {t}, column {c}: activation is not finite"),
        }),
    }
}

/// Fills one tile; returns the first non-finite input `(token, column)`, if any.
fn fill_tile(
    kind: KernelKind,
    src: Source<'_>,
    stride: usize,
    job: &mut TileJob<'_>,
) -> Option<(usize, usize)> {
    let n = job.n;
    let mut row = vec![0i8; if n == 1 { 0 } else { stride }];
    for j in 0..n {
        let t = job.t0 + j;
        // A 1-token tile is the plain row: write it in place.
        let dst: &mut [i8] = if n == 1 {
            &mut job.acts[..]
        } else {
            &mut row[..]
        };
        match src {
            Source::Float { x, cols } => {
                let xt = &x[t * cols..(t + 1) * cols];
                match kernels::quantize_row(kind, xt, &mut dst[..cols]) {
                    Some((s, sum)) => {
                        job.scales[j] = s;
                        job.sums[j] = sum;
                    }
                    None => return Some((t, xt.iter().position(|v| !v.is_finite()).unwrap_or(0))),
                }
            }
            Source::Int(a) => {
                dst.copy_from_slice(a.padded_row(t));
                job.scales[j] = a.scales()[t];
                job.sums[j] = a.sums()[t];
            }
        }
        if n > 1 {
            for (kq, group) in row.chunks_exact(4).enumerate() {
                job.acts[(kq * n + j) * 4..][..4].copy_from_slice(group);
            }
        }
    }
    None
}

/// A run of `n` tokens starting at `t0` and its activations in the kernels' tile layout.
struct Tile<'a> {
    t0: usize,
    n: usize,
    acts: &'a [i8],
}

fn tiles<'a>(plan: &[(usize, usize)], stride: usize, buf: &'a [i8]) -> Vec<Tile<'a>> {
    let mut rest = buf;
    plan.iter()
        .map(|&(t0, n)| {
            let (acts, tail) = rest.split_at(n * stride);
            rest = tail;
            Tile { t0, n, acts }
        })
        .collect()
}

/// Splits the strips of every matrix into contiguous chunks claimed by the pool's threads
/// and runs the kernels; `emit(Σw·q, matrix, token)` makes an output.
fn drive<O, F>(
    kind: KernelKind,
    jobs: Vec<(&TernaryMatrix, &mut [O])>,
    tiles: &[Tile<'_>],
    sums: &[i32],
    emit: F,
) where
    O: Send,
    F: Fn(i32, usize, usize) -> O + Sync,
{
    let n_tokens = sums.len();
    if n_tokens == 0 {
        return;
    }
    let total_strips: usize = jobs.iter().map(|(w, _)| w.n_strips()).sum();
    let macs: usize = jobs
        .iter()
        .map(|(w, _)| n_tokens * w.rows() * w.cols())
        .sum();
    let nth = if macs < PARALLEL_MIN_MACS {
        1
    } else {
        threads::num_threads()
    };
    // Guided schedule: each chunk takes 1/(GUIDE · nth) of the strips still left, so chunks
    // start large (long weight streams) and shrink towards the end (short tail when one thread
    // finishes before the other). Threads claim them in order.
    let min_chunk = if n_tokens == 1 { MIN_GEMV_CHUNK } else { 1 };
    let mut remaining = total_strips;
    // Chunk c covers strips s0..s1 of matrix j and owns, for every token, the slice of that
    // matrix's output holding those rows (chunk-major in `pieces`).
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    let mut pieces: Vec<&mut [O]> = Vec::new();
    let mut mats = Vec::with_capacity(jobs.len());
    for (j, (w, out)) in jobs.into_iter().enumerate() {
        let rows = w.rows();
        let mut rest: Vec<&mut [O]> = out.chunks_exact_mut(rows).collect();
        let n_strips = w.n_strips();
        let mut s0 = 0;
        while s0 < n_strips {
            let want = if nth == 1 {
                n_strips
            } else {
                (remaining / (GUIDE * nth)).max(min_chunk)
            };
            let s1 = s0.saturating_add(want).min(n_strips);
            let len = (s1 * STRIP_ROWS).min(rows) - s0 * STRIP_ROWS;
            for r in rest.iter_mut() {
                let (mine, tail) = std::mem::take(r).split_at_mut(len);
                pieces.push(mine);
                *r = tail;
            }
            chunks.push((j, s0, s1));
            remaining -= s1 - s0;
            s0 = s1;
        }
        mats.push(w);
    }
    let job = |c: usize, pieces: &mut [&mut [O]]| {
        let (j, s0, s1) = chunks[c];
        let w = mats[j];
        let sink = Sink {
            sums,
            rows: w.rows(),
            row0: s0 * STRIP_ROWS,
            matrix: j,
            emit: &emit,
        };
        if n_tokens == 1 {
            gemv(kind, w, tiles[0].acts, s0, s1, &sink, pieces[0]);
        } else {
            gemm(kind, w, tiles, s0, s1, &sink, pieces);
        }
    };
    if chunks.len() == 1 {
        job(0, &mut pieces);
        return;
    }
    let slots: Vec<Mutex<&mut [&mut [O]]>> = pieces.chunks_mut(n_tokens).map(Mutex::new).collect();
    threads::parallel_for(chunks.len(), |c| {
        let mut p = slots[c].lock().unwrap_or_else(|e| e.into_inner());
        job(c, &mut p);
    });
}

/// Turns raw kernel sums into outputs for one chunk's rows.
struct Sink<'a, F> {
    sums: &'a [i32],
    rows: usize,
    /// First row of the chunk.
    row0: usize,
    /// Index of the matrix in a multi-matmul.
    matrix: usize,
    emit: &'a F,
}

impl<F> Sink<'_, F> {
    /// Writes token `t`'s rows of strip `s` from raw `Σ code·q` (`Σ w·q = raw − Σq`).
    #[inline]
    fn put<O>(&self, s: usize, t: usize, raw: &[i32; STRIP_ROWS], dst: &mut [O])
    where
        F: Fn(i32, usize, usize) -> O,
    {
        let first = s * STRIP_ROWS;
        let n = STRIP_ROWS.min(self.rows - first);
        let sum = self.sums[t];
        let dst = &mut dst[first - self.row0..first - self.row0 + n];
        for (d, &r) in dst.iter_mut().zip(raw) {
            *d = (self.emit)(r - sum, self.matrix, t);
        }
    }
}

fn gemv<O, F: Fn(i32, usize, usize) -> O>(
    kind: KernelKind,
    w: &TernaryMatrix,
    act: &[i8],
    s0: usize,
    s1: usize,
    sink: &Sink<'_, F>,
    dst: &mut [O],
) {
    // The whole chunk in one kernel call, so the kernel can lay out long sequential streams.
    let mut raw = vec![[0i32; STRIP_ROWS]; s1 - s0];
    kernels::dot_strips(kind, w.strips(s0, s1), w.n_blocks(), act, &mut raw);
    for (i, r) in raw.iter().enumerate() {
        sink.put(s0 + i, 0, r, dst);
    }
}

fn gemm<O, F: Fn(i32, usize, usize) -> O>(
    kind: KernelKind,
    w: &TernaryMatrix,
    tiles: &[Tile<'_>],
    s0: usize,
    s1: usize,
    sink: &Sink<'_, F>,
    dst: &mut [&mut [O]],
) {
    let refs: Vec<TileActs<'_>> = tiles
        .iter()
        .map(|t| TileActs {
            n: t.n,
            acts: t.acts,
        })
        .collect();
    let mut raw = vec![[0i32; STRIP_ROWS]; sink.sums.len()];
    let mut scratch = TileScratch::default();
    for s in s0..s1 {
        let strip = w.strips(s, s + 1);
        kernels::dot_strip_tiles(kind, strip, w.n_blocks(), &refs, &mut scratch, &mut raw);
        for tile in tiles {
            for t in tile.t0..tile.t0 + tile.n {
                sink.put(s, t, &raw[t], dst[t]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(w: &TernaryMatrix, acts: &QuantizedActivations) -> Vec<i32> {
        let v = w.to_ternary();
        let mut out = Vec::new();
        for t in 0..acts.n_tokens() {
            for r in 0..w.rows() {
                let row = &v[r * w.cols()..(r + 1) * w.cols()];
                out.push(
                    row.iter()
                        .zip(acts.row(t))
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum(),
                );
            }
        }
        out
    }

    #[test]
    fn hand_computed_matmul() {
        // W = [[1, -1, 0], [0, 1, 1]], x = [127, 2.5, -1] (s = 1): q = [127, 2, -1].
        let w = TernaryMatrix::from_ternary(&[1, -1, 0, 0, 1, 1], 2, 3, 0.5).unwrap();
        for kind in kernels::available() {
            let acts =
                QuantizedActivations::quantize_with(kind, &[127.0, 2.5, -1.0], 1, 3).unwrap();
            let mut out = [0i32; 2];
            ternary_matmul_i32_with(kind, &w, &acts, &mut out).unwrap();
            assert_eq!(out, [125, 1], "{kind}");
            let mut y = [0f32; 2];
            ternary_matmul_with(kind, &w, &[127.0, 2.5, -1.0], 1, &mut y).unwrap();
            assert_eq!(y, [62.5, 0.5], "{kind}");
        }
    }

    #[test]
    fn every_kernel_and_tile_size_matches_the_reference() {
        let (rows, cols) = (37, 384);
        let mut seed = 99u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let v: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let w = TernaryMatrix::from_ternary(&v, rows, cols, 1.0).unwrap();
        for n_tokens in [1usize, 2, 3, 5, 16, 23] {
            let q: Vec<i8> = (0..n_tokens * cols).map(|_| next() as i8).collect();
            let acts =
                QuantizedActivations::from_int8(&q, n_tokens, cols, &vec![1.0; n_tokens]).unwrap();
            let want = reference(&w, &acts);
            for kind in kernels::available() {
                let mut got = vec![0i32; n_tokens * rows];
                ternary_matmul_i32_with(kind, &w, &acts, &mut got).unwrap();
                assert_eq!(got, want, "{kind}, {n_tokens} tokens");
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let w = TernaryMatrix::from_ternary(&[1; 8], 2, 4, 1.0).unwrap();
        let mut y = [0f32; 2];
        assert!(ternary_matmul(&w, &[1.0; 3], 1, &mut y).is_err());
        assert!(ternary_matmul(&w, &[1.0; 4], 1, &mut [0f32; 3]).is_err());
        assert!(ternary_matmul(&w, &[1.0; 8], 2, &mut y).is_err());
        let acts = QuantizedActivations::quantize(&[1.0; 5], 1, 5).unwrap();
        assert!(ternary_matmul_quantized(&w, &acts, &mut y).is_err());
        ternary_matmul(&w, &[], 0, &mut []).unwrap();
        let mut bad = [1.0f32; 8];
        bad[6] = f32::INFINITY;
        let err = ternary_matmul(&w, &bad, 2, &mut [0f32; 4])
            .unwrap_err()
            .to_string();
        assert!(err.contains("token 1, column 2"), "{err}");
    }
}
