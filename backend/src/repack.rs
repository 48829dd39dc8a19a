//! Load-time repacking of ternary weights into the kernels' in-memory layout.
//!
//! # Layout
//! Rows are grouped into strips of 16 (the last strip padded with zero weights); columns into
//! blocks of 128 (the last block padded with zero weights). Codes are 2 bits, `w + 1`
//! (0 = -1, 1 = 0, 2 = +1), exactly as in I2_S. Strip `s` is contiguous:
//! `n_blocks × 512` bytes; block `B` of a strip is 8 groups of 64 bytes; in group `m`, bytes
//! `4r..4r+4` belong to row `16s + r` and byte `b` of them holds the codes of columns
//! `128B + 32p + 4m + b` for `p = 0..4` at bits `6-2p..8-2p`.
//!
//! In other words: row `r`'s I2_S bytes of block `B` are cut into 4-byte pieces and the 16 rows
//! of a strip are interleaved piecewise. One 64-byte group then feeds one `vpdpbusd`
//! (16 lanes = 16 rows, 4 columns each) per 2-bit plane against a single broadcast 4-byte
//! activation group, which is what lets one unpacked register serve several tokens.
//! Repacking from I2_S is a 4-byte gather; from TQ2_0 it adds a bit-pair reversal.
//!
//! The packed buffer is 64-byte aligned, and its size is `rows/16 · cols/128 · 512` bytes
//! (2 bits per weight) rounded up to whole strips and blocks.

use crate::formats::{i2s, tq1_0, tq2_0};
use crate::kernels::{BLOCK_COLS, GROUP_BYTES, MAX_COLS, STRIP_BLOCK_BYTES, STRIP_ROWS};
use crate::{Error, Result};

/// A ternary weight matrix (`rows` = out_features, `cols` = in_features) with one scale,
/// repacked for the kernels.
#[derive(Clone)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    n_blocks: usize,
    scale: f32,
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for TernaryMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TernaryMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("scale", &self.scale)
            .field("packed_bytes", &self.len)
            .finish()
    }
}

// Shared by every thread of the pool and by model code: must stay Send + Sync.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TernaryMatrix>();
};

/// Every 2-bit field = 1: all weights zero (also the padding).
const ZERO_CODES: u8 = 0x55;
const LOW_BIT_OF_PAIRS: u64 = 0x5555_5555_5555_5555;

fn shape_error(op: &'static str, problem: String) -> Error {
    Error::Shape { op, problem }
}

/// Whether any 2-bit field of `x` holds code 3.
#[inline]
fn has_code3(x: u64) -> bool {
    x & (x >> 1) & LOW_BIT_OF_PAIRS != 0
}

/// Reverses the order of the four 2-bit fields in every byte (TQ2_0 plane order → I2_S order).
#[inline]
fn reverse_pairs(x: u64) -> u64 {
    let x = ((x >> 4) & 0x0F0F_0F0F_0F0F_0F0F) | ((x & 0x0F0F_0F0F_0F0F_0F0F) << 4);
    ((x >> 2) & 0x3333_3333_3333_3333) | ((x & 0x3333_3333_3333_3333) << 2)
}

/// The 32 I2_S-order bytes of one 128-value block (byte `j` holds values `j`, `j+32`, `j+64`,
/// `j+96` at bits 7-6, 5-4, 3-2, 1-0), or `None` if a value is not in {-1, 0, 1}.
/// Written as plain fixed-size loops so the compiler vectorizes it with baseline SIMD.
#[inline]
fn pack_block128(v: &[i8; BLOCK_COLS]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    // Largest code seen; valid codes are 0, 1, 2 (value + 1, wrapping: -2 -> 255).
    let mut max = 0u8;
    for (j, o) in out.iter_mut().enumerate() {
        let c = |k: usize| (v[k] as u8).wrapping_add(1);
        let (a, b, c2, d) = (c(j), c(j + 32), c(j + 64), c(j + 96));
        max = max.max(a).max(b).max(c2).max(d);
        *o = a << 6 | b << 4 | c2 << 2 | d;
    }
    (max <= 2).then_some(out)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let b = &bytes[at..at + 8];
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Writes the two 4-byte pieces of `word` (groups `m` and `m + 1`) for lane `r` of the
/// strip block at `out`.
#[inline]
fn put_pair(out: &mut [u8], m: usize, r: usize, word: u64) {
    let [a, b, c, d, e, f, g, h] = word.to_le_bytes();
    out[m * GROUP_BYTES + 4 * r..][..4].copy_from_slice(&[a, b, c, d]);
    out[(m + 1) * GROUP_BYTES + 4 * r..][..4].copy_from_slice(&[e, f, g, h]);
}

impl TernaryMatrix {
    fn alloc(rows: usize, cols: usize, scale: f32, op: &'static str) -> Result<Self> {
        if rows == 0 || cols == 0 || cols > MAX_COLS {
            return Err(shape_error(
                op,
                format!("shape {rows} × {cols}: rows must be > 0 and cols in 1..={MAX_COLS}"),
            ));
        }
        if !scale.is_finite() {
            return Err(shape_error(op, format!("scale {scale} is not finite")));
        }
        let n_blocks = cols.div_ceil(BLOCK_COLS);
        let len = rows
            .div_ceil(STRIP_ROWS)
            .checked_mul(n_blocks * STRIP_BLOCK_BYTES)
            .ok_or_else(|| shape_error(op, format!("shape {rows} × {cols} is too large")))?;
        let buf = vec![ZERO_CODES; len + 63];
        let start = match buf.as_ptr().align_offset(64) {
            off if off < 64 => off,
            _ => 0,
        };
        Ok(TernaryMatrix {
            rows,
            cols,
            n_blocks,
            scale,
            buf,
            start,
            len,
        })
    }

    fn expect_len(
        op: &'static str,
        rows: usize,
        cols: usize,
        got: usize,
        want: Option<usize>,
    ) -> Result<()> {
        match want {
            Some(w) if w == got => Ok(()),
            Some(w) => Err(shape_error(
                op,
                format!("{rows} × {cols} needs {w} bytes of data, got {got}"),
            )),
            None => Err(shape_error(op, format!("shape {rows} × {cols} overflows"))),
        }
    }

    fn packed_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The byte region of block `blk` in strip `s`.
    fn block_mut(&mut self, s: usize, blk: usize) -> &mut [u8] {
        let at = (s * self.n_blocks + blk) * STRIP_BLOCK_BYTES;
        &mut self.packed_mut()[at..at + STRIP_BLOCK_BYTES]
    }

    /// Repacks row `row` from ternary values; `Err(column)` names the first non-ternary value.
    fn pack_row(&mut self, row: usize, vals: &[i8]) -> std::result::Result<(), usize> {
        let (s, r) = (row / STRIP_ROWS, row % STRIP_ROWS);
        for blk in 0..self.n_blocks {
            let lo = blk * BLOCK_COLS;
            let bytes = match vals.get(lo..lo + BLOCK_COLS) {
                Some(full) => {
                    let full: &[i8; BLOCK_COLS] = full.try_into().map_err(|_| lo)?;
                    pack_block128(full)
                }
                None => {
                    // Last, partial block: zero weights after the row's end.
                    let mut block = [0i8; BLOCK_COLS];
                    block[..vals.len() - lo].copy_from_slice(&vals[lo..]);
                    pack_block128(&block)
                }
            }
            .ok_or(lo)?;
            let out = self.block_mut(s, blk);
            for (m, piece) in bytes.chunks_exact(4).enumerate() {
                out[m * GROUP_BYTES + 4 * r..][..4].copy_from_slice(piece);
            }
        }
        Ok(())
    }

    /// Repacks row-major ternary values (`[rows, cols]`, each in {-1, 0, 1}) with one scale.
    /// Any shape works; rows and columns are padded internally.
    pub fn from_ternary(values: &[i8], rows: usize, cols: usize, scale: f32) -> Result<Self> {
        const OP: &str = "ternary repack";
        let mut m = Self::alloc(rows, cols, scale, OP)?;
        Self::expect_len(OP, rows, cols, values.len(), rows.checked_mul(cols))?;
        for (row, vals) in values.chunks_exact(cols).enumerate() {
            m.pack_row(row, vals)
                .map_err(|block_start| non_ternary(OP, row, block_start, vals))?;
        }
        Ok(m)
    }

    /// Repacks a matrix row by row: `fill(row, out)` writes row `row`'s ternary values into
    /// `out` (`cols` values). Only one row of values exists at a time, so weights stored in
    /// another layout (HF-packed bytes, float masters) go straight into the kernel layout with no
    /// full-size intermediate. An error from `fill` stops the repack and is returned as is.
    pub fn from_row_fn(
        rows: usize,
        cols: usize,
        scale: f32,
        mut fill: impl FnMut(usize, &mut [i8]) -> Result<()>,
    ) -> Result<Self> {
        const OP: &str = "ternary repack";
        let mut m = Self::alloc(rows, cols, scale, OP)?;
        let mut vals = vec![0i8; cols];
        for row in 0..rows {
            fill(row, &mut vals)?;
            m.pack_row(row, &vals)
                .map_err(|block_start| non_ternary(OP, row, block_start, &vals))?;
        }
        Ok(m)
    }

    /// Repacks a bitnet.cpp I2_S tensor (`rows · cols / 4 + 32` bytes, `cols % 128 == 0`);
    /// the scale comes from the tail. Code 3 is rejected, as in `formats::i2s`.
    pub fn from_i2s(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        const OP: &str = "I2_S repack";
        if !cols.is_multiple_of(i2s::BLOCK) {
            return Err(Error::format(
                "I2_S",
                format!("cols = {cols} is not a multiple of 128"),
            ));
        }
        let n = rows.checked_mul(cols);
        Self::expect_len(OP, rows, cols, bytes.len(), n.map(i2s::packed_size))?;
        let scale = i2s::scale(bytes, rows * cols)?;
        let mut m = Self::alloc(rows, cols, scale, OP)?;
        let row_bytes = cols / 4;
        for row in 0..rows {
            let (s, r) = (row / STRIP_ROWS, row % STRIP_ROWS);
            let src = &bytes[row * row_bytes..(row + 1) * row_bytes];
            for blk in 0..m.n_blocks {
                let out = m.block_mut(s, blk);
                for j in 0..4 {
                    let at = blk * 32 + 8 * j;
                    let word = read_u64(src, at);
                    if has_code3(word) {
                        return Err(code3_error("I2_S", row * row_bytes + at, word));
                    }
                    put_pair(out, 2 * j, r, word);
                }
            }
        }
        Ok(m)
    }

    /// Repacks a ggml TQ2_0 tensor (`cols % 256 == 0`). All blocks with a nonzero scale must
    /// share it (it becomes the matrix scale); blocks with scale 0 are zero weights.
    pub fn from_tq2_0(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        const OP: &str = "TQ2_0 repack";
        if !cols.is_multiple_of(tq2_0::BLOCK) {
            return Err(Error::format(
                "TQ2_0",
                format!("cols = {cols} is not a multiple of 256"),
            ));
        }
        let n = rows.checked_mul(cols);
        Self::expect_len(OP, rows, cols, bytes.len(), n.map(tq2_0::packed_size))?;
        let d_of = |blk: &[u8]| half::f16::from_le_bytes([blk[64], blk[65]]);
        let mut scale = SharedScale::new("TQ2_0");
        for (i, blk) in bytes.chunks_exact(tq2_0::BLOCK_BYTES).enumerate() {
            scale.add(i, d_of(blk))?;
        }
        let mut m = Self::alloc(rows, cols, scale.value(), OP)?;
        let blocks_per_row = cols / tq2_0::BLOCK;
        for (i, blk) in bytes.chunks_exact(tq2_0::BLOCK_BYTES).enumerate() {
            let (row, b) = (i / blocks_per_row, i % blocks_per_row);
            let (s, r) = (row / STRIP_ROWS, row % STRIP_ROWS);
            let zero = d_of(blk).to_f32() == 0.0;
            for half in 0..2 {
                let out = m.block_mut(s, 2 * b + half);
                for j in 0..4 {
                    let at = 32 * half + 8 * j;
                    let word = read_u64(blk, at);
                    if has_code3(word) {
                        return Err(code3_error("TQ2_0", i * tq2_0::BLOCK_BYTES + at, word));
                    }
                    // A zero-scale block dequantizes to zeros whatever its codes: keep the
                    // buffer's zero codes.
                    if !zero {
                        put_pair(out, 2 * j, r, reverse_pairs(word));
                    }
                }
            }
        }
        Ok(m)
    }

    /// Repacks a ggml TQ1_0 tensor (`cols % 256 == 0`), decoding 16 rows at a time with
    /// `formats::tq1_0` so the temporary stays small. Scales as in [`Self::from_tq2_0`].
    pub fn from_tq1_0(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        const OP: &str = "TQ1_0 repack";
        if !cols.is_multiple_of(tq1_0::BLOCK) {
            return Err(Error::format(
                "TQ1_0",
                format!("cols = {cols} is not a multiple of 256"),
            ));
        }
        let n = rows.checked_mul(cols);
        Self::expect_len(OP, rows, cols, bytes.len(), n.map(tq1_0::packed_size))?;
        let mut m = Self::alloc(rows, cols, 0.0, OP)?;
        let mut scale = SharedScale::new("TQ1_0");
        let row_bytes = tq1_0::packed_size(cols);
        let blocks_per_row = cols / tq1_0::BLOCK;
        for row0 in (0..rows).step_by(STRIP_ROWS) {
            let nr = STRIP_ROWS.min(rows - row0);
            let chunk = &bytes[row0 * row_bytes..(row0 + nr) * row_bytes];
            let (mut vals, ds) = tq1_0::unpack_ternary(chunk, nr * cols)?;
            for (i, (d, v)) in ds
                .iter()
                .zip(vals.chunks_exact_mut(tq1_0::BLOCK))
                .enumerate()
            {
                scale.add(row0 * blocks_per_row + i, *d)?;
                if d.to_f32() == 0.0 {
                    v.fill(0);
                }
            }
            for (i, row_vals) in vals.chunks_exact(cols).enumerate() {
                // Values from unpack_ternary are always ternary.
                m.pack_row(row0 + i, row_vals).map_err(|col| {
                    shape_error(
                        OP,
                        format!("row {}: non-ternary value near column {col}", row0 + i),
                    )
                })?;
            }
        }
        m.scale = scale.value();
        Ok(m)
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The per-tensor weight scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Bytes of the packed weights (memory held, excluding ≤ 63 bytes of alignment slack).
    pub fn packed_bytes(&self) -> usize {
        self.len
    }

    /// Unpacks to row-major ternary values (`[rows, cols]`).
    pub fn to_ternary(&self) -> Vec<i8> {
        let packed = self.packed();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for row in 0..self.rows {
            let (s, r) = (row / STRIP_ROWS, row % STRIP_ROWS);
            out.extend((0..self.cols).map(|k| {
                let (blk, kk) = (k / BLOCK_COLS, k % BLOCK_COLS);
                let (p, m, b) = (kk / 32, (kk % 32) / 4, kk % 4);
                let at =
                    (s * self.n_blocks + blk) * STRIP_BLOCK_BYTES + m * GROUP_BYTES + 4 * r + b;
                ((packed[at] >> (6 - 2 * p)) & 3) as i8 - 1
            }));
        }
        out
    }

    /// The repacked codes, in the layout of the module docs (what a device copy is made from).
    pub fn packed(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// 128-column blocks per row (padded).
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Number of 16-row strips (padded).
    pub(crate) fn n_strips(&self) -> usize {
        self.rows.div_ceil(STRIP_ROWS)
    }

    /// Bytes of strips `s0..s1`.
    pub(crate) fn strips(&self, s0: usize, s1: usize) -> &[u8] {
        let sb = self.n_blocks * STRIP_BLOCK_BYTES;
        &self.packed()[s0 * sb..s1 * sb]
    }
}

/// The error for a row whose block starting at `block_start` holds a non-ternary value.
fn non_ternary(op: &'static str, row: usize, block_start: usize, vals: &[i8]) -> Error {
    let col = vals[block_start..]
        .iter()
        .position(|v| !(-1..=1).contains(v))
        .map_or(block_start, |i| block_start + i);
    shape_error(
        op,
        format!(
            "value {} at row {row}, column {col} is not ternary (-1, 0 or 1)",
            vals[col]
        ),
    )
}

fn code3_error(format: &'static str, at: usize, word: u64) -> Error {
    let bad = (0..32).find(|i| (word >> (2 * i)) & 3 == 3).unwrap_or(0);
    Error::format(
        format,
        format!("invalid 2-bit code 3 in packed byte {}", at + bad / 4),
    )
}

/// The one nonzero block scale a TQ tensor may have.
struct SharedScale {
    format: &'static str,
    first: Option<(usize, half::f16)>,
}

impl SharedScale {
    fn new(format: &'static str) -> Self {
        SharedScale {
            format,
            first: None,
        }
    }

    fn add(&mut self, block: usize, d: half::f16) -> Result<()> {
        if !d.is_finite() {
            return Err(Error::format(
                self.format,
                format!("block {block} has scale {d}"),
            ));
        }
        if d.to_f32() == 0.0 {
            return Ok(());
        }
        match self.first {
            None => self.first = Some((block, d)),
            Some((_, f)) if f.to_f32() == d.to_f32() => {}
            Some((b0, f)) => {
                return Err(Error::format(
                    self.format,
                    format!(
                        "block scales differ (block {b0}: {f}, block {block}: {d}); \
                         a ternary matrix needs one scale per tensor"
                    ),
                ))
            }
        }
        Ok(())
    }

    fn value(&self) -> f32 {
        self.first.map_or(0.0, |(_, d)| d.to_f32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_ternary(n: usize, seed: u64) -> Vec<i8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 3) as i8 - 1
            })
            .collect()
    }

    #[test]
    fn hand_computed_layout() {
        // Row 1, column 128 + 32·2 + 4·5 + 3 = 215 is +1: block 1, group 5, lane 1, byte 3,
        // plane 2 (bits 3-2) -> that byte is 0b01_01_10_01.
        let (rows, cols) = (2, 256);
        let mut v = vec![0i8; rows * cols];
        v[cols + 215] = 1;
        v[0] = -1; // row 0, col 0: block 0, group 0, lane 0, byte 0, plane 0 (bits 7-6)
        let m = TernaryMatrix::from_ternary(&v, rows, cols, 0.5).unwrap();
        let p = m.packed();
        assert_eq!(p.len(), 2 * STRIP_BLOCK_BYTES);
        let at = STRIP_BLOCK_BYTES + 5 * GROUP_BYTES + 4 + 3;
        assert_eq!(p[at], 0b01_01_10_01);
        assert_eq!(p[0], 0b00_01_01_01);
        assert_eq!(p.iter().filter(|&&b| b != ZERO_CODES).count(), 2);
        assert_eq!(p.as_ptr() as usize % 64, 0);
        assert_eq!(m.to_ternary(), v);
    }

    #[test]
    fn round_trips_odd_shapes() {
        for (rows, cols) in [(1, 1), (17, 129), (33, 300), (16, 128), (5, 1000)] {
            let v = pseudo_ternary(rows * cols, (rows * 1000 + cols) as u64);
            let m = TernaryMatrix::from_ternary(&v, rows, cols, 1.0).unwrap();
            assert_eq!((m.rows(), m.cols()), (rows, cols));
            assert_eq!(m.to_ternary(), v, "{rows} × {cols}");
        }
    }

    #[test]
    fn row_fn_equals_whole_matrix_and_stops_at_errors() {
        let (rows, cols) = (19, 300);
        let v = pseudo_ternary(rows * cols, 11);
        let whole = TernaryMatrix::from_ternary(&v, rows, cols, 0.25).unwrap();
        let by_row = TernaryMatrix::from_row_fn(rows, cols, 0.25, |r, out| {
            out.copy_from_slice(&v[r * cols..(r + 1) * cols]);
            Ok(())
        })
        .unwrap();
        assert_eq!(by_row.packed(), whole.packed());
        assert_eq!(by_row.scale(), 0.25);

        let e = TernaryMatrix::from_row_fn(2, 4, 1.0, |r, out| {
            out.fill(if r == 1 { 2 } else { 0 });
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("value 2 at row 1, column 0"), "{e}");
        let e = TernaryMatrix::from_row_fn(3, 4, 1.0, |r, _| match r {
            2 => Err(Error::format("test", "row 2 is unreadable")),
            _ => Ok(()),
        })
        .unwrap_err();
        assert!(e.to_string().contains("row 2 is unreadable"), "{e}");
    }

    #[test]
    fn i2s_and_tq2_0_repack_like_the_format_decoders() {
        for (rows, cols) in [(1, 256), (19, 512), (40, 1024)] {
            let v = pseudo_ternary(rows * cols, 7 + rows as u64);
            let from_values = TernaryMatrix::from_ternary(&v, rows, cols, 0.75).unwrap();

            let i2 = i2s::pack(&v, 0.75).unwrap();
            let m = TernaryMatrix::from_i2s(&i2, rows, cols).unwrap();
            assert_eq!(m.packed(), from_values.packed());
            assert_eq!(m.scale(), 0.75);

            let tq = tq2_0::pack_ternary(&v, 0.75).unwrap();
            let m = TernaryMatrix::from_tq2_0(&tq, rows, cols).unwrap();
            assert_eq!(m.packed(), from_values.packed());
            assert_eq!(m.scale(), 0.75);

            let tq = tq1_0::pack_ternary(&v, 0.75).unwrap();
            let m = TernaryMatrix::from_tq1_0(&tq, rows, cols).unwrap();
            assert_eq!(m.packed(), from_values.packed());
            assert_eq!(m.scale(), 0.75);
        }
    }

    #[test]
    fn tq_zero_scale_blocks_are_zero_weights() {
        let (rows, cols) = (2, 512);
        let v = pseudo_ternary(rows * cols, 3);
        let mut tq = tq2_0::pack_ternary(&v, 2.0).unwrap();
        // Block 1 (row 0, columns 256..512) gets d = 0.
        tq[66 + 64..66 + 66].fill(0);
        let m = TernaryMatrix::from_tq2_0(&tq, rows, cols).unwrap();
        let mut want = v.clone();
        want[256..512].fill(0);
        assert_eq!(m.to_ternary(), want);
        assert_eq!(m.scale(), 2.0);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(TernaryMatrix::from_ternary(&[0, 1, 2], 1, 3, 1.0)
            .unwrap_err()
            .to_string()
            .contains("value 2 at row 0, column 2"));
        assert!(TernaryMatrix::from_ternary(&[0; 6], 2, 2, 1.0).is_err());
        assert!(TernaryMatrix::from_ternary(&[], 0, 4, 1.0).is_err());
        assert!(TernaryMatrix::from_ternary(&[0; 4], 1, 4, f32::NAN).is_err());
        let v = pseudo_ternary(256, 1);
        let mut i2 = i2s::pack(&v, 1.0).unwrap();
        assert!(TernaryMatrix::from_i2s(&i2, 2, 64).is_err());
        assert!(TernaryMatrix::from_i2s(&i2[..50], 1, 256).is_err());
        i2[9] |= 0x0C;
        i2[9] |= 0x30;
        let err = TernaryMatrix::from_i2s(&i2, 1, 256)
            .unwrap_err()
            .to_string();
        assert!(err.contains("code 3 in packed byte 9"), "{err}");
        let mut tq = tq2_0::pack_ternary(&v, 1.0).unwrap();
        tq[64..66].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        let mut two = tq2_0::pack_ternary(&v, 1.0).unwrap();
        two.extend_from_slice(&tq);
        let err = TernaryMatrix::from_tq2_0(&two, 1, 512)
            .unwrap_err()
            .to_string();
        assert!(err.contains("block scales differ"), "{err}");
        assert!(TernaryMatrix::from_tq2_0(&tq, 1, 128).is_err());
    }
}
