//! Validates the whole plan against the checkpoint, then streams tensors one by one into the
//! backend's atomic GGUF writer (temporary file + rename: an error, Ctrl-C or kill never leaves
//! a partial file at the target path). Temporary files that killed conversions left in the
//! output folder are removed first, with a one-line notice; a running conversion's are kept.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use bitnet_backend::gguf::{remove_stale_partials, GgmlType, GgufWriter, StalePartial, Value};
use rayon::prelude::*;
use safetensors::Dtype;

use crate::arch::ArchPlan;
use crate::encode::{
    check_float_shape, check_ternary_shape, encode_float, encode_ternary, float_type, ternary_type,
};
use crate::error::{ConvertError, Result};
use crate::hf::safetensors_source::SafetensorsSource;
use crate::options::{EmbeddingType, OutType};
use crate::progress::ProgressSink;
use crate::summary::{ConvertSummary, TypeCount};
use crate::tensor_map::{permute_qk_rows, PlannedTensor, TensorKind};
use crate::ternary;
use crate::tokenizer::Vocab;

/// ggml's quantization format version written by llama.cpp's tools.
const QUANTIZATION_VERSION: u32 = 2;
/// Rows of the embedding converted at a time: bounds memory to a few tens of MB.
const ROWS_PER_CHUNK: usize = 2048;

/// Output types of the three kinds of tensors.
#[derive(Clone, Copy, Debug)]
pub struct Types {
    pub ternary: OutType,
    pub embedding: EmbeddingType,
    pub output: EmbeddingType,
}

impl Types {
    fn ggml_type(&self, kind: &TensorKind) -> GgmlType {
        match kind {
            TensorKind::Embedding => float_type(self.embedding),
            TensorKind::Output => float_type(self.output),
            TensorKind::Norm | TensorKind::Computed(_) => GgmlType::F32,
            TensorKind::Ternary { .. } => ternary_type(self.ternary),
        }
    }
}

/// Writes the GGUF file at `path`.
pub fn write(
    src: &SafetensorsSource,
    plan: &ArchPlan,
    vocab: &Vocab,
    general_name: &str,
    types: Types,
    path: &Path,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary> {
    let started = Instant::now();
    validate(src, plan, types)?;

    let mut w = GgufWriter::new();
    w.add(
        "general.architecture",
        Value::String(plan.arch.name().into()),
    )?;
    w.add("general.name", Value::String(general_name.into()))?;
    for (k, v) in &plan.hparams {
        w.add(k.clone(), v.clone())?;
    }
    w.add("general.file_type", Value::U32(types.ternary.file_type()))?;
    for (k, v) in vocab.metadata() {
        w.add(k, v)?;
    }
    w.add(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    )?;

    let mut counts: Vec<TypeCount> = Vec::new();
    let mut total_bytes = 0u64;
    let mut n_params = 0u64;
    for t in &plan.tensors {
        let ty = types.ggml_type(&t.kind);
        let dims = t.ggml_dims();
        w.add_tensor(t.name.clone(), &dims, ty)?;
        let bytes = ty.tensor_bytes(&dims)?;
        total_bytes += bytes;
        n_params += t.n_elements() as u64;
        match counts.iter_mut().find(|c| c.ggml_type == ty) {
            Some(c) => {
                c.count += 1;
                c.bytes += bytes;
            }
            None => counts.push(TypeCount {
                ggml_type: ty,
                count: 1,
                bytes,
            }),
        }
    }

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Some(line) = stale_notice(&remove_stale_partials(dir), dir) {
        progress.note(&line);
    }
    let mut out = w.begin(path)?;
    progress.begin("converting", total_bytes);
    for t in &plan.tensors {
        if progress.cancelled() {
            return Err(ConvertError::Cancelled);
        }
        let ty = types.ggml_type(&t.kind);
        let n_bytes = ty.tensor_bytes(&t.ggml_dims())?;
        match &t.kind {
            TensorKind::Embedding | TensorKind::Output => {
                let float_ty = if t.kind == TensorKind::Embedding {
                    types.embedding
                } else {
                    types.output
                };
                let entry = src.require(&t.source)?;
                let rows = t.n_rows();
                let mut failure: Option<ConvertError> = None;
                let result = out.write_tensor_with(&t.name, |sink| {
                    let mut row = 0;
                    while row < rows {
                        let n = ROWS_PER_CHUNK.min(rows - row);
                        if progress.cancelled() {
                            failure = Some(ConvertError::Cancelled);
                            return Err(bitnet_backend::Error::Writer("cancelled".into()));
                        }
                        let chunk = src
                            .read_f32_rows(entry, row, n)
                            .and_then(|x| encode_rows_parallel(&x, t.row_len(), float_ty));
                        match chunk {
                            Ok(bytes) => sink.write_all(&bytes)?,
                            Err(e) => {
                                failure = Some(e);
                                return Err(bitnet_backend::Error::Writer(format!(
                                    "converting `{}` failed",
                                    t.name
                                )));
                            }
                        }
                        progress.advance(bytes_of(n_bytes, n, rows), &t.name);
                        row += n;
                    }
                    Ok(())
                });
                if let Some(e) = failure {
                    return Err(e);
                }
                result?;
            }
            TensorKind::Norm => {
                let x = src.read_f32(src.require(&t.source)?)?;
                out.write_tensor(&t.name, &encode_float(&x, EmbeddingType::F32)?)?;
                progress.advance(n_bytes, &t.name);
            }
            TensorKind::Computed(x) => {
                out.write_tensor(&t.name, &encode_float(x, EmbeddingType::F32)?)?;
                progress.advance(n_bytes, &t.name);
            }
            TensorKind::Ternary { permute_heads } => {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let mut tern = ternary::load(src, &t.source, rows, cols, &plan.weights)?;
                if let Some(heads) = permute_heads {
                    tern.codes = permute_qk_rows(&tern.codes, rows, cols, *heads);
                }
                let bytes = encode_ternary(&tern.codes, tern.scale, types.ternary)
                    .map_err(|e| ConvertError::tensor(&t.source, e.to_string()))?;
                out.write_tensor(&t.name, &bytes)?;
                progress.advance(n_bytes, &t.name);
            }
        }
    }
    out.finish()?;
    progress.end();

    let file_size = std::fs::metadata(path)
        .map_err(|e| ConvertError::io("stat", path, e))?
        .len();
    Ok(ConvertSummary {
        output: path.to_path_buf(),
        architecture: plan.arch.name().to_string(),
        outtype: types.ternary,
        by_type: counts,
        n_tensors: plan.tensors.len(),
        n_params,
        file_size,
        elapsed: started.elapsed(),
    })
}

/// One line saying which stale temporary files were removed, if any.
fn stale_notice(removed: &[StalePartial], dir: &Path) -> Option<String> {
    let mb = removed.iter().map(|p| p.bytes).sum::<u64>() as f64 / 1e6;
    match removed {
        [] => None,
        [one] => Some(format!(
            "removed {} ({mb:.0} MB), left by a conversion that was killed",
            one.path.display()
        )),
        many => Some(format!(
            "removed {} partial files ({mb:.0} MB) from {}, left by conversions that were killed",
            many.len(),
            dir.display()
        )),
    }
}

/// Encodes whole rows on all cores (Q6_K of a large embedding takes a while), in order.
fn encode_rows_parallel(x: &[f32], row_len: usize, ty: EmbeddingType) -> Result<Vec<u8>> {
    const ROWS_PER_TASK: usize = 64;
    let parts: Vec<Vec<u8>> = x
        .par_chunks(row_len * ROWS_PER_TASK)
        .map(|rows| encode_float(rows, ty))
        .collect::<Result<_>>()?;
    Ok(parts.concat())
}

/// The share of a tensor's bytes that `n` of its `rows` rows account for (for progress only).
fn bytes_of(total: u64, n: usize, rows: usize) -> u64 {
    total * n as u64 / rows.max(1) as u64
}

/// Everything that can be checked without reading tensor data, before any file is created:
/// presence, dtype and shape of every source tensor, block fit of every output type, and that
/// no checkpoint tensor would be dropped silently.
fn validate(src: &SafetensorsSource, plan: &ArchPlan, types: Types) -> Result<()> {
    let mut used: HashSet<String> = HashSet::new();
    for t in &plan.tensors {
        match &t.kind {
            TensorKind::Computed(_) => continue,
            TensorKind::Ternary { .. } => {
                check_ternary_shape(&t.name, t.row_len(), types.ternary)?;
                check_ternary_source(src, t, &plan.weights)?;
                used.insert(format!("{}_scale", t.source));
            }
            TensorKind::Embedding => {
                check_float_source(src, t, types.embedding, "--token-embedding-type")?
            }
            TensorKind::Output => check_float_source(src, t, types.output, "--output-tensor-type")?,
            TensorKind::Norm => check_float_source(src, t, EmbeddingType::F32, "")?,
        }
        used.insert(t.source.clone());
    }
    // A tied LM head duplicates the embedding: transformers ignores it, and so do we.
    used.insert("lm_head.weight".into());
    let mut unused: Vec<&str> = src
        .names()
        .filter(|n| !used.contains(*n) && !n.ends_with(".rotary_emb.inv_freq"))
        .collect();
    unused.sort_unstable();
    if let Some(first) = unused.first() {
        return Err(ConvertError::Unsupported(format!(
            "checkpoint tensor `{first}`{} has no place in the `{}` architecture; refusing to drop it silently",
            if unused.len() > 1 { format!(" (and {} more)", unused.len() - 1) } else { String::new() },
            plan.arch.name()
        )));
    }
    Ok(())
}

fn check_float_source(
    src: &SafetensorsSource,
    t: &PlannedTensor,
    ty: EmbeddingType,
    option: &str,
) -> Result<()> {
    let e = src.require(&t.source)?;
    if !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(ConvertError::tensor(
            &t.source,
            format!("dtype {:?}; expected F32, F16 or BF16", e.dtype),
        ));
    }
    if e.shape != t.shape {
        return Err(ConvertError::tensor(
            &t.source,
            format!(
                "shape {:?}, expected {:?} from config.json",
                e.shape, t.shape
            ),
        ));
    }
    if !option.is_empty() {
        check_float_shape(&t.name, t.row_len(), ty, option)?;
    }
    Ok(())
}

fn check_ternary_source(
    src: &SafetensorsSource,
    t: &PlannedTensor,
    rule: &crate::arch::WeightRule,
) -> Result<()> {
    let e = src.require(&t.source)?;
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let scale = format!("{}_scale", t.source);
    let stored = ternary::stored_as(&t.source, e.dtype, src.get(&scale).is_some(), rule)?;
    let want = match stored {
        ternary::StoredAs::Packed => {
            if !rows.is_multiple_of(4) {
                return Err(ConvertError::tensor(
                    &t.source,
                    format!("{rows} output features cannot be HF-packed (not a multiple of 4)"),
                ));
            }
            vec![rows / 4, cols]
        }
        _ => vec![rows, cols],
    };
    if e.shape != want {
        return Err(ConvertError::tensor(
            &t.source,
            format!("shape {:?}, expected {want:?} from config.json", e.shape),
        ));
    }
    if matches!(
        stored,
        ternary::StoredAs::Packed | ternary::StoredAs::FloatCodes
    ) && rule.linear_class.is_none()
    {
        // The scale's meaning is unknown: the same error reading the data would give.
        ternary::beta_from_scale(&scale, &[1.0], rule)?;
    }
    Ok(())
}
