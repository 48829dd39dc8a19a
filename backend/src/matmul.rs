//! `y = W·x` for a ternary [`TernaryMatrix`] and float activations, BitNet b1.58 style:
//! per-token int8 absmax quantization, exact integer `Σ w·q`, then
//! `y = (Σ w·q) as f32 · (w_scale / s)` with `s = 127 / max(|x|, 1e-5)`.
//!
//! One token (decode) runs the GEMV kernels, streaming each 16-row strip once. Several tokens
//! (prefill) are cut into tiles (16 tokens on AVX-512) whose activations are interleaved per
//! 4-column group, so one unpacked weight register feeds every token of the tile. Either way
//! the 16-row strips are split into one contiguous range per thread of the persistent pool
//! ([`crate::threads`]); each thread writes only its own rows of `y`.
//!
//! The `_i32` entry points return the integers `Σ w·q` themselves; every kernel produces exactly
//! the same ones (see `kernels::available()`).

use std::cell::RefCell;
use std::sync::Mutex;

use crate::activation_quant::QuantizedActivations;
use crate::kernels::{self, KernelKind, STRIP_ROWS};
use crate::repack::TernaryMatrix;
use crate::threads;
use crate::{Error, Result};

/// Below this many multiply-adds a matmul runs on the calling thread only.
const PARALLEL_MIN_MACS: usize = 1 << 18;
/// Strips per GEMV kernel call (bounds the stack buffer of raw sums).
const GEMV_CHUNK: usize = 8;

#[derive(Default)]
struct Scratch {
    acts: QuantizedActivations,
    tiles: Vec<i8>,
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
    check_out_len(w, n_tokens, y.len())?;
    if n_tokens == 0 && x.is_empty() {
        return Ok(());
    }
    with_scratch(|s| {
        s.acts.quantize_into(kind, x, n_tokens, w.cols())?;
        matmul_f32(kind, w, &s.acts, &mut s.tiles, &mut s.factors, y)
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
    with_scratch(|s| matmul_f32(kind, w, acts, &mut s.tiles, &mut s.factors, y))
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
        let tiles = build_tiles(kind, acts, &mut s.tiles);
        drive(kind, w, acts, &tiles, out, |v, _| v);
    });
    Ok(())
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
    w: &TernaryMatrix,
    acts: &QuantizedActivations,
    tile_buf: &mut Vec<i8>,
    factors: &mut Vec<f32>,
    y: &mut [f32],
) -> Result<()> {
    check(kind, w, acts, y.len())?;
    factors.clear();
    factors.extend(acts.scales().iter().map(|&s| w.scale() / s));
    let tiles = build_tiles(kind, acts, tile_buf);
    let factors = &factors[..];
    drive(kind, w, acts, &tiles, y, |v, t| v as f32 * factors[t]);
    Ok(())
}

/// A run of `n` tokens starting at `t0` and its activations in the kernels' tile layout.
struct Tile<'a> {
    t0: usize,
    n: usize,
    acts: &'a [i8],
}

/// Cuts the tokens into the kernel's tile sizes (largest first) and interleaves each tile's
/// activations: for every 4-column group, the 4 values of each token in turn.
fn build_tiles<'a>(
    kind: KernelKind,
    acts: &'a QuantizedActivations,
    buf: &'a mut Vec<i8>,
) -> Vec<Tile<'a>> {
    let n_tokens = acts.n_tokens();
    let stride = acts.stride();
    let mut sizes = Vec::new();
    let mut left = n_tokens;
    for &size in kind.tile_sizes() {
        while left >= size {
            sizes.push(size);
            left -= size;
        }
    }
    // Tiles of one token read the row itself; only wider tiles need the buffer.
    let interleaved: usize = sizes.iter().filter(|&&n| n > 1).map(|&n| n * stride).sum();
    buf.clear();
    buf.resize(interleaved, 0);
    let mut t0 = 0;
    let mut rest: &mut [i8] = buf;
    let mut pending = Vec::with_capacity(sizes.len());
    for &n in &sizes {
        if n == 1 {
            pending.push((t0, n, None));
        } else {
            let (seg, tail) = std::mem::take(&mut rest).split_at_mut(n * stride);
            rest = tail;
            for t in 0..n {
                let row = acts.padded_row(t0 + t);
                for (kq, group) in row.chunks_exact(4).enumerate() {
                    seg[(kq * n + t) * 4..][..4].copy_from_slice(group);
                }
            }
            pending.push((t0, n, Some(&*seg)));
        }
        t0 += n;
    }
    pending
        .into_iter()
        .map(|(t0, n, seg)| Tile {
            t0,
            n,
            acts: seg.unwrap_or_else(|| acts.padded_row(t0)),
        })
        .collect()
}

/// Splits the strips over the pool and runs the kernels; `emit(Σw·q, token)` makes an output.
fn drive<O, F>(
    kind: KernelKind,
    w: &TernaryMatrix,
    acts: &QuantizedActivations,
    tiles: &[Tile<'_>],
    out: &mut [O],
    emit: F,
) where
    O: Send,
    F: Fn(i32, usize) -> O + Sync,
{
    let n_tokens = acts.n_tokens();
    let rows = w.rows();
    if n_tokens == 0 {
        return;
    }
    let n_strips = w.n_strips();
    let macs = n_tokens * rows * w.cols();
    let nth = if macs < PARALLEL_MIN_MACS {
        1
    } else {
        threads::num_threads().clamp(1, n_strips)
    };
    let bound = |i: usize| n_strips * i / nth;
    let row_of = |strip: usize| (strip * STRIP_ROWS).min(rows);
    // Each thread gets, for every token, the slice of y holding its rows.
    let mut pieces: Vec<Vec<&mut [O]>> = (0..nth).map(|_| Vec::with_capacity(n_tokens)).collect();
    for y_row in out.chunks_exact_mut(rows) {
        let mut rest = y_row;
        for (i, p) in pieces.iter_mut().enumerate() {
            let (mine, tail) =
                std::mem::take(&mut rest).split_at_mut(row_of(bound(i + 1)) - row_of(bound(i)));
            p.push(mine);
            rest = tail;
        }
    }
    let job = |i: usize, pieces: &mut [&mut [O]]| {
        let (s0, s1) = (bound(i), bound(i + 1));
        let sink = Sink {
            acts,
            rows,
            row0: row_of(s0),
            emit: &emit,
        };
        if n_tokens == 1 {
            gemv(kind, w, acts.padded_row(0), s0, s1, &sink, pieces[0]);
        } else {
            gemm(kind, w, tiles, s0, s1, &sink, pieces);
        }
    };
    if nth == 1 {
        job(0, &mut pieces[0]);
        return;
    }
    let slots: Vec<Mutex<Vec<&mut [O]>>> = pieces.into_iter().map(Mutex::new).collect();
    threads::parallel_for(nth, |i| {
        let mut p = slots[i].lock().unwrap_or_else(|e| e.into_inner());
        job(i, &mut p);
    });
}

/// Turns raw kernel sums into outputs for one thread's rows.
struct Sink<'a, F> {
    acts: &'a QuantizedActivations,
    rows: usize,
    /// First row owned by this thread.
    row0: usize,
    emit: &'a F,
}

impl<F> Sink<'_, F> {
    /// Writes token `t`'s rows of strip `s` from raw `Σ code·q` (`Σ w·q = raw − Σq`).
    #[inline]
    fn put<O>(&self, s: usize, t: usize, raw: &[i32; STRIP_ROWS], dst: &mut [O])
    where
        F: Fn(i32, usize) -> O,
    {
        let first = s * STRIP_ROWS;
        let n = STRIP_ROWS.min(self.rows - first);
        let sum = self.acts.sums()[t];
        let dst = &mut dst[first - self.row0..first - self.row0 + n];
        for (d, &r) in dst.iter_mut().zip(raw) {
            *d = (self.emit)(r - sum, t);
        }
    }
}

fn gemv<O, F: Fn(i32, usize) -> O>(
    kind: KernelKind,
    w: &TernaryMatrix,
    act: &[i8],
    s0: usize,
    s1: usize,
    sink: &Sink<'_, F>,
    dst: &mut [O],
) {
    let mut raw = [[0i32; STRIP_ROWS]; GEMV_CHUNK];
    let mut s = s0;
    while s < s1 {
        let e = (s + GEMV_CHUNK).min(s1);
        let raw = &mut raw[..e - s];
        kernels::dot_strips(kind, w.strips(s, e), w.n_blocks(), act, raw);
        for (i, r) in raw.iter().enumerate() {
            sink.put(s + i, 0, r, dst);
        }
        s = e;
    }
}

fn gemm<O, F: Fn(i32, usize) -> O>(
    kind: KernelKind,
    w: &TernaryMatrix,
    tiles: &[Tile<'_>],
    s0: usize,
    s1: usize,
    sink: &Sink<'_, F>,
    dst: &mut [&mut [O]],
) {
    let mut raw = [[0i32; STRIP_ROWS]; 16];
    for s in s0..s1 {
        let strip = w.strips(s, s + 1);
        for tile in tiles {
            let raw = &mut raw[..tile.n];
            kernels::dot_strip_tile(kind, strip, w.n_blocks(), tile.acts, raw);
            for (j, r) in raw.iter().enumerate() {
                let t = tile.t0 + j;
                sink.put(s, t, r, dst[t]);
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
    }
}
