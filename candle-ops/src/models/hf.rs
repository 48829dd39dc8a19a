//! Models straight from Hugging Face checkpoints, through a Candle `VarBuilder`.
//!
//! The tensors, their roles and the scale rule come from the converter's plan
//! ([`bitnet_convert::arch::plan`]), the one mapping table both use; the hyper-parameters are
//! the GGUF keys that plan would write. So a model built here is the model the converted GGUF
//! gives, tensor for tensor, with the embedding and LM head kept in the checkpoint's own dtype.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bitnet_backend::gguf::{GgmlType, Value};
use bitnet_convert::arch::{self, ArchPlan, TensorNames};
use bitnet_convert::hf::config::HfConfig;
use bitnet_convert::tensor_map::{PlannedTensor, TensorKind};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use half::{bf16, f16};

use super::config::ModelConfig;
use super::rows::RmsNorm;
use super::source::WeightSource;
use super::{HeadType, ModelWeights};
use crate::bit_linear::BitLinear;
use crate::embedding::{DenseWeights, SharedBytes};
use crate::{Error, Result};

/// The names a `VarBuilder` holds, for the plan.
struct VbNames<'a>(&'a VarBuilder<'a>);

impl TensorNames for VbNames<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// The plan of a checkpoint reachable through `vb` (rooted at the checkpoint's top level).
pub(crate) fn plan(cfg: &HfConfig, vb: &VarBuilder) -> Result<ArchPlan> {
    Ok(arch::plan(cfg, &VbNames(vb))?)
}

/// The GGUF metadata the converter would write for `plan` (architecture and hyper-parameters).
pub(crate) fn plan_metadata(plan: &ArchPlan) -> Vec<(String, Value)> {
    let mut md = vec![(
        "general.architecture".to_owned(),
        Value::String(plan.arch.name().into()),
    )];
    md.extend(plan.hparams.iter().cloned());
    md
}

/// Looks a key up in a metadata list.
pub(crate) fn lookup<'a>(md: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    md.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl ModelWeights {
    /// Builds the model from a `VarBuilder` over a Hugging Face checkpoint (rooted at its top
    /// level: `model.embed_tokens.weight`, `model.layers.N...`) and its `config.json`, as
    /// candle-transformers models load (`Llama::load(vb, &cfg)`). Every checkpoint kind the
    /// converter reads works; see [`BitLinear::load`] for the projections. Give `vb` the
    /// checkpoint's float dtype so the embedding keeps its precision and nothing is converted.
    pub fn from_varbuilder(
        vb: VarBuilder,
        cfg: &HfConfig,
        max_context: Option<usize>,
    ) -> Result<Self> {
        Self::from_varbuilder_with_head(vb, cfg, max_context, HeadType::File)
    }

    /// [`Self::from_varbuilder`] with the LM head stored as `head_type` (quantized once here,
    /// from the checkpoint's float table, unless it is [`HeadType::File`]).
    pub fn from_varbuilder_with_head(
        vb: VarBuilder,
        cfg: &HfConfig,
        max_context: Option<usize>,
        head_type: HeadType,
    ) -> Result<Self> {
        let plan = plan(cfg, &vb)?;
        let md = plan_metadata(&plan);
        let config = ModelConfig::from_metadata(&|k| lookup(&md, k), &|| Some(plan.n_vocab))?;
        let source = HfWeights::new(vb, &plan);
        Self::from_source(config, &source, max_context, head_type)
    }
}

/// The plan's tensors, read through a `VarBuilder`, under their GGUF names.
pub(crate) struct HfWeights<'a> {
    vb: VarBuilder<'a>,
    plan: &'a ArchPlan,
    by_name: HashMap<&'a str, &'a PlannedTensor>,
}

impl<'a> HfWeights<'a> {
    pub(crate) fn new(vb: VarBuilder<'a>, plan: &'a ArchPlan) -> Self {
        let by_name = plan.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        Self { vb, plan, by_name }
    }

    fn planned(&self, name: &str) -> Result<&'a PlannedTensor> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_owned(),
                arch: self.plan.arch.name().to_owned(),
            })
    }

    /// A float dtype to read `source` in: the builder's when it is a float type, else f32.
    fn float_dtype(&self) -> DType {
        match self.vb.dtype() {
            d @ (DType::F32 | DType::F16 | DType::BF16) => d,
            _ => DType::F32,
        }
    }
}

impl WeightSource for HfWeights<'_> {
    fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn bit_linear(&self, name: &str, out_f: usize, in_f: usize) -> Result<BitLinear> {
        let t = self.planned(name)?;
        let TensorKind::Ternary { permute_heads } = t.kind else {
            return Err(Error::bad_tensor(name, "is not a ternary projection"));
        };
        let module = t.source.strip_suffix(".weight").unwrap_or(&t.source);
        BitLinear::load_permuted(
            &self.vb.pp(module),
            in_f,
            out_f,
            &self.plan.weights,
            permute_heads,
        )
    }

    fn optional_scale(&self, _name: &str) -> Result<Option<f32>> {
        // Per-projection output scales exist only in llama.cpp `bitnet` GGUF files.
        Ok(None)
    }

    fn rms_norm(&self, name: &str, width: usize, eps: f32) -> Result<RmsNorm> {
        let t = self.planned(name)?;
        let values = self
            .vb
            .get_with_hints_dtype(width, &t.source, Default::default(), DType::F32)?
            .to_vec1::<f32>()?;
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::bad_tensor(
                &t.source,
                format!("value {v} is not finite"),
            ));
        }
        Ok(RmsNorm::new(values, eps))
    }

    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<DenseWeights> {
        let t = self.planned(name)?;
        let w = self.vb.get_with_hints_dtype(
            (rows, cols),
            &t.source,
            Default::default(),
            self.float_dtype(),
        )?;
        dense_from_tensor(&t.source, &w.to_device(&Device::Cpu)?)
    }

    fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        match self.by_name.get(name).map(|t| &t.kind) {
            Some(TensorKind::Computed(v)) if v.len() == len => Ok(Some(v.clone())),
            Some(TensorKind::Computed(v)) => Err(Error::bad_tensor(
                name,
                format!("{} values, expected {len}", v.len()),
            )),
            Some(_) => Err(Error::bad_tensor(name, "is not a computed vector")),
            None => Ok(None),
        }
    }
}

/// A Vec of plain values seen as bytes (the dense kernels read raw little-endian rows).
struct TypedBytes<T>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for TypedBytes<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// The embedding / head table in the tensor's own float type, multiplied by the same dense
/// kernels as a GGUF table of that type.
fn dense_from_tensor(name: &str, w: &Tensor) -> Result<DenseWeights> {
    let (rows, cols) = w.dims2()?;
    let flat = w.flatten_all()?;
    let (ty, bytes, len): (GgmlType, SharedBytes, usize) = match w.dtype() {
        DType::F32 => typed(GgmlType::F32, flat.to_vec1::<f32>()?),
        DType::F16 => typed(GgmlType::F16, flat.to_vec1::<f16>()?),
        DType::BF16 => typed(GgmlType::BF16, flat.to_vec1::<bf16>()?),
        other => {
            return Err(Error::bad_tensor(
                name,
                format!("dtype {other:?}; an embedding must be f32, f16 or bf16"),
            ))
        }
    };
    DenseWeights::from_bytes(name, ty, &[cols as u64, rows as u64], bytes, 0..len)
}

fn typed<T: bytemuck::Pod + Send + Sync>(
    ty: GgmlType,
    v: Vec<T>,
) -> (GgmlType, SharedBytes, usize) {
    let len = std::mem::size_of_val(v.as_slice());
    let bytes: SharedBytes = Arc::new(TypedBytes(v));
    (ty, bytes, len)
}

/// The float dtype a `VarBuilder` over `src` should have: the one every float tensor that keeps
/// its precision (embedding, LM head, master projections) shares, else f32 (exact for all).
pub(crate) fn checkpoint_dtype(
    src: &bitnet_convert::hf::safetensors_source::SafetensorsSource,
    plan: &ArchPlan,
) -> DType {
    use safetensors::Dtype;
    let mut seen: Option<Dtype> = None;
    for t in &plan.tensors {
        if matches!(t.kind, TensorKind::Norm | TensorKind::Computed(_)) {
            continue;
        }
        let Some(e) = src.get(&t.source) else {
            continue;
        };
        if !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            continue;
        }
        match seen {
            None => seen = Some(e.dtype),
            Some(d) if d == e.dtype => {}
            Some(_) => return DType::F32,
        }
    }
    match seen {
        Some(Dtype::F16) => DType::F16,
        Some(Dtype::BF16) => DType::BF16,
        _ => DType::F32,
    }
}

/// Which form the projections are stored in, for the model description.
pub(crate) fn weight_format(
    src: &bitnet_convert::hf::safetensors_source::SafetensorsSource,
    plan: &ArchPlan,
) -> String {
    let first = plan
        .tensors
        .iter()
        .find(|t| matches!(t.kind, TensorKind::Ternary { .. }))
        .and_then(|t| src.get(&t.source));
    match first.map(|e| e.dtype) {
        Some(safetensors::Dtype::U8) => "HF-packed".into(),
        Some(d) if plan.weights.online => format!("{d:?} masters"),
        Some(d) => format!("{d:?} ternary"),
        None => "unknown".into(),
    }
}

/// `true` when `path` is a Hugging Face checkpoint folder (has a `config.json`).
pub fn is_checkpoint_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}
