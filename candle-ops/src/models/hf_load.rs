//! [`super::Model::from_hf`]: a checkpoint folder or hub repo id → weights (through a
//! `VarBuilder` over [`SafetensorsBackend`]) and the tokenizer metadata the converter would
//! write for it.

use std::path::Path;
use std::sync::Arc;

use bitnet_backend::gguf::Value;
use bitnet_convert::hf::config::HfConfig;
use bitnet_convert::hf::safetensors_source::SafetensorsSource;
use bitnet_convert::tokenizer::Vocab;
use bitnet_convert::NoProgress;
use candle_core::Device;
use candle_nn::VarBuilder;

use super::{hf, BareModel, LoadOptions, ModelInfo, ModelWeights};
use crate::safetensors_backend::SafetensorsBackend;
use crate::Result;

/// The weights of `dir_or_repo` and its vocabulary as GGUF `tokenizer.*` metadata.
pub(crate) fn load(
    dir_or_repo: &str,
    options: &LoadOptions,
) -> Result<(BareModel, Vec<(String, Value)>)> {
    options.check_and_apply_threads()?;
    let dir = bitnet_convert::resolve_checkpoint(
        dir_or_repo,
        options.revision.as_deref(),
        options.offline,
        &NoProgress,
    )?;
    let cfg = HfConfig::load(&dir)?;
    let src = SafetensorsSource::open(&dir)?;
    let plan = bitnet_convert::arch::plan(&cfg, &src)?;
    let dtype = hf::checkpoint_dtype(&src, &plan);
    let weight_format = hf::weight_format(&src, &plan);
    let file_size = src.data_bytes();
    let vb = VarBuilder::from_backend(Box::new(SafetensorsBackend::new(src)), dtype, Device::Cpu);
    let weights = options.place(ModelWeights::from_varbuilder_with_head(
        vb,
        &cfg,
        options.max_context,
        options.head_type,
    )?)?;
    let vocab = Vocab::load(&dir, &cfg, plan.n_vocab)?.metadata();
    let info = ModelInfo {
        name: folder_name(&dir).or_else(|| Some(dir_or_repo.to_owned())),
        chat_template: hf::lookup(&vocab, "tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        file_size,
        weight_format,
    };
    Ok((
        BareModel {
            weights: Arc::new(weights),
            info: Arc::new(info),
        },
        vocab,
    ))
}

/// The folder's name, as the converter's `general.name` (a hub snapshot folder is a commit hash,
/// so the repo id is used there instead by the caller's fallback).
fn folder_name(dir: &Path) -> Option<String> {
    let canonical = dir.canonicalize().ok()?;
    let name = canonical.file_name()?.to_string_lossy().into_owned();
    let is_snapshot = canonical
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|p| p == "snapshots");
    (!is_snapshot).then_some(name)
}
