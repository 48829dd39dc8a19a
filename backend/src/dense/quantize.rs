//! Quantizing a float matrix (F32, F16 or BF16 rows) to Q8_0, Q6_K or Q4_0 once, at load time:
//! the LM head for `--head-type`.
//!
//! The bytes are exactly those of ggml's reference quantizers (`quantize_row_*_ref`, see
//! [`crate::formats`]) applied to the rows widened to f32, which is what `llama-quantize
//! --output-tensor-type` writes for the same rows. Rows are read and quantized in bands of
//! [`TASK_ROWS`] on the backend pool, each band read by the caller's function into a scratch
//! buffer, so the source never needs to be resident as a whole; the result lives in a
//! [`HugePageBuffer`].

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

use super::DenseType;
use crate::formats::{q4_0, q6_k, q8_0};
use crate::huge_pages::HugePageBuffer;
use crate::{threads, Error, Result};

/// Rows per task: 1.3 MB of F16 source for a 2560-wide head, enough to amortise a read call,
/// small enough that the two threads finish within a band of each other.
pub const TASK_ROWS: usize = 256;

/// Per-thread scratch: the band's source bytes (in 4-byte words, so rows can be viewed as
/// f16/bf16/f32 slices) and one row widened to f32.
#[derive(Default)]
struct Scratch {
    src: Vec<u32>,
    row: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Fills `buf` (exactly the bytes of those rows) with the source rows `rows`; called from several
/// threads at once, for disjoint row ranges.
pub type ReadRows<'a> = dyn Fn(Range<usize>, &mut [u8]) -> Result<()> + Sync + 'a;

/// Quantizes a `[rows, cols]` matrix of `src_ty` (F32, F16 or BF16) to `target` (Q8_0, Q6_K or
/// Q4_0). `read(rows, buf)` must fill `buf` (exactly the bytes of those rows) with the source
/// rows; it is called from several threads at once, for disjoint row ranges.
pub fn quantize_matrix(
    src_ty: DenseType,
    rows: usize,
    cols: usize,
    target: DenseType,
    read: &ReadRows<'_>,
) -> Result<HugePageBuffer> {
    if !matches!(src_ty, DenseType::F32 | DenseType::F16 | DenseType::BF16) {
        return Err(Error::format(
            "dense",
            format!("can only quantize F32, F16 or BF16 rows, not {src_ty:?}"),
        ));
    }
    if !matches!(target, DenseType::Q8_0 | DenseType::Q6K | DenseType::Q4_0) {
        return Err(Error::format(
            "dense",
            format!("{target:?} is not a quantized type"),
        ));
    }
    let src_row = src_ty.row_bytes(cols)?;
    let dst_row = target.row_bytes(cols)?;
    let len = dst_row
        .checked_mul(rows)
        .ok_or_else(|| Error::format("dense", format!("{rows} rows are too many")))?;
    let mut out = HugePageBuffer::zeroed(len).map_err(|e| {
        Error::format(
            "dense",
            format!("cannot allocate {len} bytes for the quantized matrix: {e}"),
        )
    })?;
    if len == 0 {
        return Ok(out);
    }
    let bands: Vec<Mutex<&mut [u8]>> = out
        .chunks_mut(TASK_ROWS * dst_row)
        .map(Mutex::new)
        .collect();
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    threads::parallel_for(bands.len(), |i| {
        let mut band = bands[i].lock().unwrap_or_else(|e| e.into_inner());
        let r0 = i * TASK_ROWS;
        let n = band.len() / dst_row;
        let done = SCRATCH.with(|cell| {
            let mut fresh = Scratch::default();
            let mut held = cell.try_borrow_mut();
            let s: &mut Scratch = match held.as_deref_mut() {
                Ok(s) => s,
                Err(_) => &mut fresh,
            };
            s.src.resize((n * src_row).div_ceil(4), 0);
            s.row.resize(cols, 0.0);
            let src = &mut bytemuck_bytes(&mut s.src)[..n * src_row];
            read(r0..r0 + n, src)?;
            for (r, dst) in band.chunks_exact_mut(dst_row).enumerate() {
                widen_row(src_ty, &s.src, r * cols, &mut s.row);
                quantize_row(target, &s.row, dst)?;
            }
            Ok(())
        });
        if let Err(e) = done {
            let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert(e);
        }
    });
    drop(bands);
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The words of `v` as bytes.
fn bytemuck_bytes(v: &mut [u32]) -> &mut [u8] {
    // SAFETY: u8 has no alignment or validity requirements; the byte slice covers exactly the
    // words' memory and borrows `v` mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 4) }
}

/// Values `at..at + out.len()` of the little-endian `src_ty` words in `src`, as f32 (F16C
/// conversions where the CPU has them: this runs over every value of the matrix).
fn widen_row(src_ty: DenseType, src: &[u32], at: usize, out: &mut [f32]) {
    use half::slice::HalfBitsSliceExt;
    use half::slice::HalfFloatSliceExt;
    let n = out.len();
    match src_ty {
        DenseType::F32 => {
            for (o, w) in out.iter_mut().zip(&src[at..at + n]) {
                *o = f32::from_bits(u32::from_le(*w));
            }
        }
        _ => {
            // SAFETY: u32 words are two u16 each, suitably aligned; the slice covers `src`.
            let halves: &[u16] =
                unsafe { std::slice::from_raw_parts(src.as_ptr() as *const u16, src.len() * 2) };
            let bits = &halves[at..at + n];
            if cfg!(target_endian = "big") {
                for (o, &h) in out.iter_mut().zip(bits) {
                    let h = u16::from_le(h);
                    *o = match src_ty {
                        DenseType::F16 => half::f16::from_bits(h).to_f32(),
                        _ => half::bf16::from_bits(h).to_f32(),
                    };
                }
                return;
            }
            match src_ty {
                DenseType::F16 => bits
                    .reinterpret_cast::<half::f16>()
                    .convert_to_f32_slice(out),
                _ => bits
                    .reinterpret_cast::<half::bf16>()
                    .convert_to_f32_slice(out),
            }
        }
    }
}

/// One row of f32 values into `target`'s bytes.
fn quantize_row(target: DenseType, x: &[f32], out: &mut [u8]) -> Result<()> {
    match target {
        DenseType::Q8_0 => q8_0::quantize_into(x, out),
        DenseType::Q6K => q6_k::quantize_into(x, out),
        DenseType::Q4_0 => q4_0::quantize_into(x, out),
        other => unreachable!("checked above: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn equals_the_row_quantizers_over_many_bands() {
        let (rows, cols) = (2 * TASK_ROWS + 3, 512);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0).to_f32())
            .collect();
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let read = |r: Range<usize>, buf: &mut [u8]| {
            buf.copy_from_slice(&bytes[r.start * cols * 2..r.end * cols * 2]);
            Ok(())
        };
        for (target, quantize) in [
            (
                DenseType::Q8_0,
                q8_0::quantize as fn(&[f32]) -> Result<Vec<u8>>,
            ),
            (DenseType::Q6K, q6_k::quantize),
            (DenseType::Q4_0, q4_0::quantize),
        ] {
            let got = quantize_matrix(DenseType::F16, rows, cols, target, &read).unwrap();
            assert_eq!(&got[..], &quantize(&values).unwrap()[..], "{target:?}");
        }
    }

    #[test]
    fn read_errors_and_bad_types_are_reported() {
        let fail = |_: Range<usize>, _: &mut [u8]| Err(Error::format("test", "disk on fire"));
        let e = quantize_matrix(DenseType::F16, 600, 64, DenseType::Q8_0, &fail).unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
        let ok = |_: Range<usize>, _: &mut [u8]| Ok(());
        assert!(quantize_matrix(DenseType::Q8_0, 4, 64, DenseType::Q4_0, &ok).is_err());
        assert!(quantize_matrix(DenseType::F16, 4, 64, DenseType::F16, &ok).is_err());
        assert!(quantize_matrix(DenseType::F16, 4, 100, DenseType::Q6K, &ok).is_err());
    }
}
