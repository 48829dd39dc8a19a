//! Dense (non-ternary) weight matrices: the token embedding and the LM head.
//!
//! BitNet models keep these in F16 (or Q8_0 / F32 / BF16). For a 128k vocabulary the LM head is
//! the largest single read of a decode step (656 MB in F16 for BitNet b1.58 2B4T), so its
//! matrix-vector product must stream the weights at memory bandwidth: each thread takes a
//! contiguous band of rows, walks it as four sequential streams, converts weights to f32 in
//! registers (no dequantized copy) and accumulates four rows at once against activations that
//! stay in L1.
//!
//! A [`DenseMatrix`] borrows its bytes, so the weights can stay zero-copy in a GGUF mmap.
//! Q8_0 is multiplied in float (weights dequantized in registers, activations not quantized),
//! so results differ from the f32 reference only by the weights' own rounding. Q6_K and Q4_0
//! are multiplied in integers against activations quantized per block to 8 bits, as ggml does
//! (Q8_K and Q8_0 activations; see [`qdot`]): their 6 and 4.5 bits per weight would otherwise
//! make the product compute-bound on two cores.

pub mod attention;
mod qdot;
pub mod quantize;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_qdot;

use crate::formats::{q4_0, q6_k};
use crate::gguf::GgmlType;
use crate::{threads, Error, Result};

/// Element layouts a [`DenseMatrix`] can hold (all little-endian, as in GGUF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenseType {
    /// 4-byte floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// ggml Q8_0: blocks of 32 values, an f16 scale then 32 int8 (34 bytes).
    Q8_0,
    /// ggml Q6_K: super-blocks of 256 values in 210 bytes (6.56 bits per value).
    Q6K,
    /// ggml Q4_0: blocks of 32 values, an f16 scale then 16 bytes of nibbles (18 bytes).
    Q4_0,
}

/// Bytes of one Q8_0 block.
pub const Q8_0_BLOCK_BYTES: usize = 34;
/// Values per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;

impl DenseType {
    /// The dense type of a ggml type, if it is one of ours.
    pub fn from_ggml(t: GgmlType) -> Option<DenseType> {
        match t {
            GgmlType::F32 => Some(DenseType::F32),
            GgmlType::F16 => Some(DenseType::F16),
            GgmlType::BF16 => Some(DenseType::BF16),
            GgmlType::Q8_0 => Some(DenseType::Q8_0),
            GgmlType::Q6_K => Some(DenseType::Q6K),
            GgmlType::Q4_0 => Some(DenseType::Q4_0),
            _ => None,
        }
    }

    /// The ggml type with this layout.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            DenseType::F32 => GgmlType::F32,
            DenseType::F16 => GgmlType::F16,
            DenseType::BF16 => GgmlType::BF16,
            DenseType::Q8_0 => GgmlType::Q8_0,
            DenseType::Q6K => GgmlType::Q6_K,
            DenseType::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// `(values, bytes)` of one block: 1 for the float types.
    pub fn block(self) -> (usize, usize) {
        match self {
            DenseType::F32 => (1, 4),
            DenseType::F16 | DenseType::BF16 => (1, 2),
            DenseType::Q8_0 => (Q8_0_BLOCK, Q8_0_BLOCK_BYTES),
            DenseType::Q6K => (q6_k::BLOCK, q6_k::BLOCK_BYTES),
            DenseType::Q4_0 => (q4_0::BLOCK, q4_0::BLOCK_BYTES),
        }
    }

    /// Bytes of one row of `cols` values (Q8_0 needs `cols % 32 == 0`).
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        let (block, bytes) = self.block();
        if !cols.is_multiple_of(block) {
            return Err(Error::format(
                "dense",
                format!("{self:?} rows need a multiple of {block} values, got {cols}"),
            ));
        }
        (cols / block)
            .checked_mul(bytes)
            .ok_or_else(|| Error::format("dense", format!("row of {cols} values is too large")))
    }

    /// Whether the products run in integers against quantized activations (see [`qdot`]).
    fn is_integer(self) -> bool {
        matches!(self, DenseType::Q6K | DenseType::Q4_0)
    }
}

/// A row-major `[rows, cols]` matrix over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct DenseMatrix<'a> {
    ty: DenseType,
    data: &'a [u8],
    rows: usize,
    cols: usize,
    row_bytes: usize,
}

impl<'a> DenseMatrix<'a> {
    /// Wraps `data`, which must hold exactly `rows` rows of `cols` values of type `ty`.
    pub fn new(ty: DenseType, data: &'a [u8], rows: usize, cols: usize) -> Result<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        let want = row_bytes
            .checked_mul(rows)
            .ok_or_else(|| Error::format("dense", format!("{rows} rows are too many")))?;
        if data.len() != want {
            return Err(Error::format(
                "dense",
                format!(
                    "{ty:?} matrix [{rows}, {cols}] needs {want} bytes, got {}",
                    data.len()
                ),
            ));
        }
        Ok(Self {
            ty,
            data,
            rows,
            cols,
            row_bytes,
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DenseType {
        self.ty
    }

    /// Number of rows (vocabulary entries for an embedding).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (hidden size).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw bytes of row `r`.
    pub fn row_data(&self, r: usize) -> Result<&'a [u8]> {
        if r >= self.rows {
            return Err(Error::format(
                "dense",
                format!("row {r} is out of range (matrix has {} rows)", self.rows),
            ));
        }
        Ok(&self.data[r * self.row_bytes..(r + 1) * self.row_bytes])
    }

    /// Writes row `r` as f32 into `out` (length `cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if out.len() != self.cols {
            return Err(Error::format(
                "dense",
                format!(
                    "output row has {} values, expected {}",
                    out.len(),
                    self.cols
                ),
            ));
        }
        scalar::dequantize_row(self.ty, self.row_data(r)?, out);
        Ok(())
    }
}

/// One implementation of the dense dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenseKernel {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (8 lanes).
    Avx2,
    /// x86-64 AVX-512F and BW (16 lanes).
    Avx512,
}

impl DenseKernel {
    /// Whether this CPU can run it.
    pub fn is_available(self) -> bool {
        match self {
            DenseKernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            DenseKernel::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            DenseKernel::Avx512 => x86::has_avx512(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// Kernels this machine can run, slowest first.
pub fn available() -> Vec<DenseKernel> {
    [DenseKernel::Scalar, DenseKernel::Avx2, DenseKernel::Avx512]
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

/// The fastest available kernel.
pub fn best() -> DenseKernel {
    available().pop().unwrap_or(DenseKernel::Scalar)
}

/// Rows computed together (they share each activation load).
pub(crate) const ROW_GROUP: usize = 4;

/// `y[t, r] = Σ_c w[r, c] · x[t, c]` for `n_tokens` tokens: `x` is `[n_tokens, cols]`,
/// `y` is `[n_tokens, rows]`, both row-major f32. Runs on the backend thread pool.
pub fn matmul(w: &DenseMatrix<'_>, x: &[f32], n_tokens: usize, y: &mut [f32]) -> Result<()> {
    matmul_with(best(), w, x, n_tokens, y)
}

/// [`matmul`] with an explicit kernel (tests compare every available one).
pub fn matmul_with(
    kernel: DenseKernel,
    w: &DenseMatrix<'_>,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<()> {
    if !kernel.is_available() {
        return Err(Error::KernelUnavailable {
            name: format!("{kernel:?}"),
            reason: "not supported by this CPU or build target".into(),
        });
    }
    if x.len() != n_tokens * w.cols {
        return Err(Error::format(
            "dense",
            format!(
                "activations have {} values, expected {n_tokens} tokens x {} columns",
                x.len(),
                w.cols
            ),
        ));
    }
    if y.len() != n_tokens * w.rows {
        return Err(Error::format(
            "dense",
            format!(
                "output has {} values, expected {n_tokens} tokens x {} rows",
                y.len(),
                w.rows
            ),
        ));
    }
    if w.rows == 0 || n_tokens == 0 {
        return Ok(());
    }
    let quantized = match w.ty.is_integer() {
        true => Some(qdot::QuantizedTokens::new(w.ty, x, n_tokens, w.cols)?),
        false => None,
    };
    let acts = match &quantized {
        Some(q) => Acts::Quantized(q),
        None => Acts::Float(x),
    };
    // One contiguous band of whole row groups per thread (so the four runs of `rows_kernel`
    // leave no remainder but at the matrix's end): each streams its own part of the matrix
    // once, whatever the number of tokens.
    let n_groups = w.rows.div_ceil(ROW_GROUP);
    let n_tasks = threads::num_threads().min(n_groups).max(1);
    let out = SharedOut(y.as_mut_ptr(), y.len());
    threads::parallel_for(n_tasks, |task| {
        let g0 = n_groups * task / n_tasks;
        let g1 = n_groups * (task + 1) / n_tasks;
        let (r0, r1) = (g0 * ROW_GROUP, (g1 * ROW_GROUP).min(w.rows));
        rows_kernel(kernel, w, r0, r1, acts, n_tokens, |t, r, dot| {
            // SAFETY: tasks own disjoint row ranges, so every (t, r) index of `y` is written by
            // exactly one task; `y` outlives `parallel_for`, which returns after all tasks.
            unsafe { out.write(t * w.rows + r, dot) }
        });
    });
    Ok(())
}

/// The activations a kernel reads: float rows, or rows quantized for the integer types.
#[derive(Clone, Copy)]
enum Acts<'a> {
    Float(&'a [f32]),
    Quantized(&'a qdot::QuantizedTokens),
}

/// Rows `r0..r1` for every token; `put(t, r, dot)` receives each result.
///
/// The band is cut into four contiguous runs walked in lockstep: each call of a four-row kernel
/// takes the next row of every run, so each of the four weight streams reads memory
/// sequentially from its run's first row to its last, and a stream's prefetches flow from one
/// row into the next. (Four adjacent rows per call would restart four short streams every
/// `4 · row_bytes`; that measured 1.3× slower for F16 and 2× slower for Q8_0.)
// Without x86 kernels every row takes the scalar loop, which needs neither the kernel nor runs.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_mut))]
fn rows_kernel(
    kernel: DenseKernel,
    w: &DenseMatrix<'_>,
    r0: usize,
    r1: usize,
    acts: Acts<'_>,
    n_tokens: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    let run = (r1 - r0) / ROW_GROUP;
    let mut scalar_from = r0;
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, DenseKernel::Avx512 | DenseKernel::Avx2) {
        let avx512 = kernel == DenseKernel::Avx512;
        let int512 = avx512 && x86::has_avx512_int();
        // Several tokens (batched decode, prefill logits): on AVX-512, float rows are widened
        // once for up to four tokens, column block by column block (same sums, bit for bit).
        let many_x = match acts {
            Acts::Float(x) if avx512 && w.ty != DenseType::Q8_0 && n_tokens > 1 => Some(x),
            _ => None,
        };
        let mut dots = vec![[0f32; ROW_GROUP]; if many_x.is_some() { n_tokens } else { 0 }];
        for k in 0..run {
            let rs: [usize; ROW_GROUP] = std::array::from_fn(|j| r0 + j * run + k);
            if let Some(x) = many_x {
                x86::dot4_tokens_avx512(w, rs, x, &mut dots);
                for (t, d) in dots.iter().enumerate() {
                    for (r, &dot) in rs.into_iter().zip(d) {
                        put(t, r, dot);
                    }
                }
                continue;
            }
            for t in 0..n_tokens {
                let mut dots = [0f32; ROW_GROUP];
                match acts {
                    Acts::Float(x) => {
                        let x = &x[t * w.cols..(t + 1) * w.cols];
                        match avx512 {
                            true => x86::dot4_avx512(w, rs, x, &mut dots),
                            false => x86::dot4_avx2(w, rs, x, &mut dots),
                        }
                    }
                    Acts::Quantized(q) => x86_qdot::dot4(int512, w, rs, q.token(t), &mut dots),
                }
                for (r, dot) in rs.into_iter().zip(dots) {
                    put(t, r, dot);
                }
            }
        }
        scalar_from = r0 + ROW_GROUP * run;
    }
    for r in scalar_from..r1 {
        let row = &w.data[r * w.row_bytes..(r + 1) * w.row_bytes];
        for t in 0..n_tokens {
            let dot = match acts {
                Acts::Float(x) => scalar::dot_row(w.ty, row, &x[t * w.cols..(t + 1) * w.cols]),
                Acts::Quantized(q) => qdot::dot_row(w.ty, row, q.token(t)),
            };
            put(t, r, dot);
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint ranges.
struct SharedOut(*mut f32, usize);

// SAFETY: tasks only write disjoint index ranges (see `matmul_with`), and the pointer is valid
// for the whole `parallel_for` call.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// No other task writes index `i`.
    unsafe fn write(&self, i: usize, value: f32) {
        assert!(i < self.1, "dense output write out of bounds");
        // SAFETY: bounds checked above; exclusivity is the caller's contract.
        unsafe { self.0.add(i).write(value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn encode(ty: DenseType, v: &[f32]) -> Vec<u8> {
        match ty {
            DenseType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DenseType::F16 => v
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect(),
            DenseType::BF16 => v
                .iter()
                .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                .collect(),
            DenseType::Q8_0 => v
                .chunks(Q8_0_BLOCK)
                .flat_map(|b| {
                    let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let d = amax / 127.0;
                    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                    let mut out = f16::from_f32(d).to_le_bytes().to_vec();
                    out.extend(b.iter().map(|x| ((x * inv).round() as i8) as u8));
                    out
                })
                .collect(),
            DenseType::Q6K => crate::formats::q6_k::quantize(v).unwrap(),
            DenseType::Q4_0 => crate::formats::q4_0::quantize(v).unwrap(),
        }
    }

    /// The integer types' reference: the portable integer dot of `qdot`.
    fn integer_reference(w: &DenseMatrix<'_>, x: &[f32], n_tokens: usize) -> Vec<f32> {
        let q = qdot::QuantizedTokens::new(w.dtype(), x, n_tokens, w.cols()).unwrap();
        let mut y = vec![0f32; n_tokens * w.rows()];
        for r in 0..w.rows() {
            for t in 0..n_tokens {
                y[t * w.rows() + r] = qdot::dot_row(w.dtype(), w.row_data(r).unwrap(), q.token(t));
            }
        }
        y
    }

    /// f64 reference over the dequantized rows.
    fn reference(w: &DenseMatrix<'_>, x: &[f32], n_tokens: usize) -> Vec<f32> {
        let mut row = vec![0f32; w.cols()];
        let mut y = vec![0f32; n_tokens * w.rows()];
        for r in 0..w.rows() {
            w.dequantize_row(r, &mut row).unwrap();
            for t in 0..n_tokens {
                let xt = &x[t * w.cols()..(t + 1) * w.cols()];
                y[t * w.rows() + r] = row
                    .iter()
                    .zip(xt)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn every_kernel_and_type_matches_the_reference() {
        // Odd row counts exercise the rows left over after the four runs; 37 and 64 rows give
        // runs of several rows per thread; 96 and 160 columns exercise the 32-wide main loop,
        // the 16/8-wide remainder, (for floats) the scalar tail and (Q4_0) an unpaired last
        // block.
        let small = [
            (7usize, 96usize),
            (13, 160),
            (4, 32),
            (1, 64),
            (37, 96),
            (64, 32),
        ];
        let k_quant = [(7usize, 256usize), (13, 512), (1, 256), (37, 768)];
        for ty in [
            DenseType::F32,
            DenseType::F16,
            DenseType::BF16,
            DenseType::Q8_0,
            DenseType::Q6K,
            DenseType::Q4_0,
        ] {
            let shapes = if ty == DenseType::Q6K {
                &k_quant[..]
            } else {
                &small[..]
            };
            for &(rows, cols) in shapes {
                let bytes = encode(ty, &values(rows * cols, 1));
                let w = DenseMatrix::new(ty, &bytes, rows, cols).unwrap();
                for n_tokens in [1usize, 3] {
                    let x = values(n_tokens * cols, 2);
                    let want = match ty.is_integer() {
                        true => integer_reference(&w, &x, n_tokens),
                        false => reference(&w, &x, n_tokens),
                    };
                    for kernel in available() {
                        let mut y = vec![f32::NAN; n_tokens * rows];
                        matmul_with(kernel, &w, &x, n_tokens, &mut y).unwrap();
                        for (a, b) in y.iter().zip(&want) {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{kernel:?} {ty:?} [{rows},{cols}] x{n_tokens}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn several_tokens_give_each_token_its_single_token_result_bit_for_bit() {
        // Batched decode relies on this: a row's logits must not depend on its batch.
        for ty in [
            DenseType::F16,
            DenseType::F32,
            DenseType::BF16,
            DenseType::Q8_0,
            DenseType::Q6K,
            DenseType::Q4_0,
        ] {
            // 184 columns: the 32-wide loop, a 16-wide step and a scalar tail (quantized types:
            // whole blocks). Float types also take 1080 columns and 11 tokens: more than one
            // column block and token group of the many-token kernel, with partial ones.
            let shapes: &[(usize, usize)] = match ty {
                DenseType::Q8_0 | DenseType::Q4_0 => &[(160, 5)],
                DenseType::Q6K => &[(512, 5)],
                _ => &[(184, 5), (1080, 11), (40, 2)],
            };
            for &(cols, n_tokens) in shapes {
                let rows = 37;
                let bytes = encode(ty, &values(rows * cols, 5));
                let w = DenseMatrix::new(ty, &bytes, rows, cols).unwrap();
                let x = values(n_tokens * cols, 6);
                for kernel in available() {
                    let mut all = vec![0f32; n_tokens * rows];
                    matmul_with(kernel, &w, &x, n_tokens, &mut all).unwrap();
                    for t in 0..n_tokens {
                        let mut one = vec![0f32; rows];
                        let xt = &x[t * cols..(t + 1) * cols];
                        matmul_with(kernel, &w, xt, 1, &mut one).unwrap();
                        assert_eq!(
                            one,
                            all[t * rows..(t + 1) * rows],
                            "{kernel:?} {ty:?} {cols} columns, token {t} of {n_tokens}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn integer_products_stay_within_the_activation_rounding_bound() {
        // |Σ w·(x - x̂)| <= Σ|w| · max|x - x̂|, and rounding to 8 bits per block moves a value
        // by at most half a step: max|x| / 254 (Q8_0 steps) or a hair more for Q8_K, whose
        // step is set by the same largest magnitude.
        for (ty, cols) in [(DenseType::Q6K, 512usize), (DenseType::Q4_0, 96)] {
            let rows = 9;
            let bytes = encode(ty, &values(rows * cols, 5));
            let w = DenseMatrix::new(ty, &bytes, rows, cols).unwrap();
            let x = values(cols, 6);
            let (exact, ints) = (reference(&w, &x, 1), integer_reference(&w, &x, 1));
            let step = x.iter().fold(0f32, |m, v| m.max(v.abs())) / 254.0;
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut row).unwrap();
                let bound = row.iter().map(|v| v.abs()).sum::<f32>() * step * 1.01 + 1e-5;
                let err = (exact[r] - ints[r]).abs();
                assert!(err <= bound, "{ty:?} row {r}: error {err} > bound {bound}");
                assert!(err > 0.0, "{ty:?} row {r}: activations were not quantized");
            }
        }
    }

    #[test]
    fn odd_columns_work_for_float_types() {
        let (rows, cols) = (5, 37);
        let bytes = encode(DenseType::F16, &values(rows * cols, 3));
        let w = DenseMatrix::new(DenseType::F16, &bytes, rows, cols).unwrap();
        let x = values(cols, 4);
        let want = reference(&w, &x, 1);
        for kernel in available() {
            let mut y = vec![0f32; rows];
            matmul_with(kernel, &w, &x, 1, &mut y).unwrap();
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{kernel:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let bytes = vec![0u8; 2 * 34];
        assert!(DenseMatrix::new(DenseType::Q8_0, &bytes, 2, 32).is_ok());
        assert!(DenseMatrix::new(DenseType::Q8_0, &bytes, 2, 33).is_err());
        assert!(DenseMatrix::new(DenseType::F16, &bytes, 2, 32).is_err());
        let w = DenseMatrix::new(DenseType::Q8_0, &bytes, 2, 32).unwrap();
        let mut y = vec![0f32; 2];
        assert!(matmul(&w, &[0.0; 31], 1, &mut y).is_err());
        assert!(matmul(&w, &[0.0; 32], 1, &mut y[..1]).is_err());
        assert!(w.row_data(2).is_err());
        assert!(w.dequantize_row(0, &mut [0.0; 31]).is_err());
    }
}
