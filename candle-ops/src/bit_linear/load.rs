//! `BitLinear` from a Candle `VarBuilder` over a Hugging Face checkpoint.
//!
//! Every checkpoint kind `bitnet convert` reads is accepted, decided by the same functions
//! ([`bitnet_convert::ternary::stored_as`], [`bitnet_convert::ternary::beta_from_scale`]):
//! - packed uint8 `weight [out/4, in]` + `weight_scale` (2B4T, Falcon3 and Llama3-8B 1.58bit);
//! - float codes in {-1, 0, 1} + `weight_scale`;
//! - float master weights (f32/f16/bf16) absmean-ternarized at load when the model quantizes
//!   online (1bitLLM, the 2B4T `-bf16` release);
//! - float weights that are already exactly {-β, 0, β}.
//!
//! Each matrix is repacked row by row straight into the kernel layout
//! ([`TernaryMatrix::from_row_fn`]): no dequantized or unpacked full-size copy is made. Master
//! weights are read twice in their stored dtype (the mean, then the codes), one row of f32 at a
//! time.

use bitnet_backend::formats::{hf_packed, ternarize};
use bitnet_backend::TernaryMatrix;
use bitnet_convert::arch::WeightRule;
use bitnet_convert::tensor_map::permuted_source_row;
use bitnet_convert::ternary::{self, StoredAs};
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use candle_nn::VarBuilder;
use half::{bf16, f16};
use std::sync::Arc;

use super::BitLinear;
use crate::{Error, Result};

/// Rows of a float tensor read (and widened to f32) at a time in the mean pass.
const CHUNK: usize = 1 << 16;

/// Loads `weight` (and `weight_scale`, if present) under `vb`'s prefix as a
/// `[out_features, in_features]` ternary layer. `permute_heads` reorders rows for llama.cpp's
/// interleaved RoPE, as the converter does for `llama` files.
pub(crate) fn load(
    vb: &VarBuilder,
    in_features: usize,
    out_features: usize,
    rule: &WeightRule,
    permute_heads: Option<usize>,
) -> Result<BitLinear> {
    let name = full_name(vb, "weight");
    let has_scale = vb.contains_tensor("weight_scale");
    let (weight, stored) = fetch_weight(vb, &name, out_features, has_scale, rule)?;
    let (rows, cols) = (out_features, in_features);
    let want = match stored {
        StoredAs::Packed => {
            if !rows.is_multiple_of(4) {
                return Err(Error::bad_tensor(
                    &name,
                    format!("{rows} output features cannot be HF-packed (not a multiple of 4)"),
                ));
            }
            [rows / 4, cols]
        }
        _ => [rows, cols],
    };
    if weight.dims() != want {
        return Err(Error::bad_tensor(
            &name,
            format!("shape {:?}, expected {want:?}", weight.dims()),
        ));
    }
    let source_row = |r: usize| match permute_heads {
        Some(heads) => permuted_source_row(r, rows, heads),
        None => r,
    };
    let with_name = |e: bitnet_backend::Error| Error::bad_tensor(&name, e.to_string());
    let matrix = match stored {
        StoredAs::Packed => {
            let bytes = weight.flatten_all()?.to_vec1::<u8>()?;
            let beta = scale(vb, rule)?;
            TernaryMatrix::from_row_fn(rows, cols, beta, |r, out| {
                hf_packed::unpack_row(&bytes, rows, cols, source_row(r), out)
            })
            .map_err(with_name)?
        }
        StoredAs::FloatCodes => {
            let beta = scale(vb, rule)?;
            with_floats(&weight, &name, |w| {
                let mut row = vec![0f32; cols];
                from_float_rows(rows, cols, beta, &name, |r, out| {
                    w.read(source_row(r) * cols, &mut row);
                    ternary::float_codes(&name, &row, out)
                })
            })?
        }
        StoredAs::OnlineMaster => with_floats(&weight, &name, |w| {
            let mut sum = ternarize::AbsSum::default();
            let mut buf = vec![0f32; CHUNK.min(w.len())];
            for start in (0..w.len()).step_by(CHUNK) {
                let piece = &mut buf[..CHUNK.min(w.len() - start)];
                w.read(start, piece);
                sum.add(piece);
            }
            let beta = sum.beta();
            let mut row = vec![0f32; cols];
            from_float_rows(rows, cols, beta, &name, |r, out| {
                w.read(source_row(r) * cols, &mut row);
                ternarize::ternarize_into(&row, beta, out);
                Ok(())
            })
        })?,
        StoredAs::ExactTernary => with_floats(&weight, &name, |w| {
            let mut max_abs = 0f32;
            let mut buf = vec![0f32; CHUNK.min(w.len())];
            for start in (0..w.len()).step_by(CHUNK) {
                let piece = &mut buf[..CHUNK.min(w.len() - start)];
                w.read(start, piece);
                max_abs = piece.iter().fold(max_abs, |m, v| m.max(v.abs()));
            }
            let mut row = vec![0f32; cols];
            from_float_rows(rows, cols, ternary::exact_beta(max_abs), &name, |r, out| {
                let src = source_row(r);
                w.read(src * cols, &mut row);
                ternary::exact_codes(&name, &row, max_abs, src * cols, out)
            })
        })?,
    };
    Ok(BitLinear::new(Arc::new(matrix)))
}

/// The weight tensor and how it is stored. A `weight_scale` means packed uint8 or float codes:
/// uint8 is asked for first (a `VarBuilder` cannot tell a tensor's dtype without reading it). A
/// float tensor converted to u8 keeps its float shape `[out, in]`; only the packed layout has a
/// quarter of the rows, so the shape tells the two apart.
fn fetch_weight(
    vb: &VarBuilder,
    name: &str,
    out_features: usize,
    has_scale: bool,
    rule: &WeightRule,
) -> Result<(Tensor, StoredAs)> {
    if has_scale {
        if let Ok(t) = vb.get_unchecked_dtype("weight", DType::U8) {
            if t.rank() == 2 && t.dims()[0] * 4 == out_features && out_features > 0 {
                let stored = ternary::stored_as(name, safetensors::Dtype::U8, true, rule)?;
                return Ok((t.to_device(&Device::Cpu)?, stored));
            }
        }
    }
    fetch_float(vb, name, has_scale, rule)
}

/// The weight in a float dtype: the builder's dtype when it is a float type (the checkpoint's
/// own, nothing converted), else f32.
fn fetch_float(
    vb: &VarBuilder,
    name: &str,
    has_scale: bool,
    rule: &WeightRule,
) -> Result<(Tensor, StoredAs)> {
    let dtype = match vb.dtype() {
        d @ (DType::F32 | DType::F16 | DType::BF16) => d,
        _ => DType::F32,
    };
    let t = vb
        .get_unchecked_dtype("weight", dtype)?
        .to_device(&Device::Cpu)?;
    // The tensor has the float dtype asked for.
    let as_stored = match dtype {
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        _ => safetensors::Dtype::F32,
    };
    let stored = ternary::stored_as(name, as_stored, has_scale, rule)?;
    Ok((t, stored))
}

/// β from the layer's `weight_scale`, per the rule's `linear_class`.
fn scale(vb: &VarBuilder, rule: &WeightRule) -> Result<f32> {
    let name = full_name(vb, "weight_scale");
    let stored = vb
        .get_unchecked_dtype("weight_scale", DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(ternary::beta_from_scale(&name, &stored, rule)?)
}

fn full_name(vb: &VarBuilder, leaf: &str) -> String {
    match vb.prefix() {
        p if p.is_empty() => leaf.to_owned(),
        p => format!("{p}.{leaf}"),
    }
}

/// `TernaryMatrix::from_row_fn` for fills that report checkpoint errors.
fn from_float_rows(
    rows: usize,
    cols: usize,
    beta: f32,
    name: &str,
    mut fill: impl FnMut(usize, &mut [i8]) -> bitnet_convert::Result<()>,
) -> Result<TernaryMatrix> {
    let mut failure = None;
    let m = TernaryMatrix::from_row_fn(rows, cols, beta, |r, out| {
        fill(r, out).map_err(|e| {
            let problem = e.to_string();
            failure = Some(e);
            bitnet_backend::Error::Tensor {
                name: name.to_owned(),
                problem,
            }
        })
    });
    match (m, failure) {
        (_, Some(e)) => Err(e.into()),
        (Ok(m), None) => Ok(m),
        (Err(e), None) => Err(Error::bad_tensor(name, e.to_string())),
    }
}

/// A contiguous float tensor's values in their stored type.
enum Floats<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl Floats<'_> {
    fn len(&self) -> usize {
        match self {
            Floats::F32(v) => v.len(),
            Floats::F16(v) => v.len(),
            Floats::BF16(v) => v.len(),
        }
    }

    /// Values `start..start + out.len()` widened to f32.
    fn read(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Floats::F32(v) => out.copy_from_slice(&v[start..end]),
            Floats::F16(v) => out
                .iter_mut()
                .zip(&v[start..end])
                .for_each(|(o, x)| *o = x.to_f32()),
            Floats::BF16(v) => out
                .iter_mut()
                .zip(&v[start..end])
                .for_each(|(o, x)| *o = x.to_f32()),
        }
    }
}

/// Runs `f` on the values of a float CPU tensor without copying them; NaN or infinity is an
/// error naming the element, as in the converter.
fn with_floats<R>(t: &Tensor, name: &str, f: impl FnOnce(&Floats) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Some((a, b)) = layout.contiguous_offsets() else {
        return Err(Error::bad_tensor(name, "weight tensor is not contiguous"));
    };
    let floats = match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => Floats::F32(&v[a..b]),
        Storage::Cpu(CpuStorage::F16(v)) => Floats::F16(&v[a..b]),
        Storage::Cpu(CpuStorage::BF16(v)) => Floats::BF16(&v[a..b]),
        _ => {
            return Err(Error::bad_tensor(
                name,
                format!("dtype {:?}: expected f32, f16 or bf16", t.dtype()),
            ))
        }
    };
    let mut buf = vec![0f32; CHUNK.min(floats.len())];
    for start in (0..floats.len()).step_by(CHUNK) {
        let piece = &mut buf[..CHUNK.min(floats.len() - start)];
        floats.read(start, piece);
        if let Some(i) = piece.iter().position(|v| !v.is_finite()) {
            return Err(Error::bad_tensor(
                name,
                format!("value {} at element {} is not finite", piece[i], start + i),
            ));
        }
    }
    f(&floats)
}
