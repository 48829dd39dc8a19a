//! Turning `-m MODEL` into a loaded model: a GGUF path, a Hugging Face checkpoint folder, or a
//! hub repo id. Checkpoints load directly (no conversion, no cache file).

use crate::args::ModelArgs;
use crate::error::{CliError, CliResult};
use bitnet_candle::{is_checkpoint_dir, BareModel, LoadOptions, Model};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `-m` names, once resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face checkpoint: a local folder, or a hub repo id fetched into the HF cache.
    Checkpoint(String),
}

impl Source {
    /// The path or repo id, for messages and the served model id.
    pub fn path(&self) -> PathBuf {
        match self {
            Source::Gguf(p) => p.clone(),
            Source::Checkpoint(c) => PathBuf::from(c),
        }
    }

    /// The weights alone (no tokenizer needed: `bench`).
    pub fn load_bare(&self, options: &LoadOptions) -> CliResult<BareModel> {
        match self {
            Source::Gguf(p) => BareModel::load(p, options),
            Source::Checkpoint(c) => BareModel::from_hf(c, options),
        }
        .map_err(|e| self.load_error(e))
    }

    pub fn load(&self, options: &LoadOptions) -> CliResult<Model> {
        match self {
            Source::Gguf(p) => Model::load(p, options),
            Source::Checkpoint(c) => Model::from_hf(c, options),
        }
        .map_err(|e| self.load_error(e))
    }

    fn load_error(&self, e: bitnet_candle::Error) -> CliError {
        CliError::Load {
            path: self.path(),
            source: e,
        }
    }
}

/// A loaded model plus what the commands report about loading it.
pub struct Loaded {
    pub model: Model,
    pub path: PathBuf,
    pub load_time: Duration,
}

/// Resolves and loads `args.model`, applying the thread and context options.
pub fn load(args: &ModelArgs) -> CliResult<Loaded> {
    if args.threads == Some(0) {
        return Err(CliError::Usage("-t/--threads must be at least 1".into()));
    }
    let source = resolve(&args.model, args.offline)?;
    let options = LoadOptions {
        device: bitnet_candle::parse_device(&args.device)?,
        n_threads: args.threads,
        max_context: args.ctx_size,
        tokenizer_json: args.tokenizer.clone(),
        offline: args.offline,
        head_type: args.head_type.into(),
        ..LoadOptions::default()
    };
    let start = Instant::now();
    let model = source.load(&options)?;
    let load_time = start.elapsed();
    let path = source.path();
    eprintln!(
        "loaded {} from {} in {:.2} s ({}, LM head {:?})",
        model.description(),
        path.display(),
        load_time.as_secs_f64(),
        match model.device() {
            bitnet_candle::Device::Cpu => format!(
                "{} threads, kernel {:?}",
                bitnet_backend::threads::num_threads(),
                bitnet_backend::kernels::selected()
            ),
            d => format!("{:?}", d.location()),
        },
        model.weights().output().ggml_type(),
    );
    Ok(Loaded {
        model,
        path,
        load_time,
    })
}

/// A local GGUF file or checkpoint folder as is; otherwise a hub repo id: its GGUF, downloaded
/// into the HF cache, or its checkpoint.
pub fn resolve(model: &str, offline: bool) -> CliResult<Source> {
    let path = Path::new(model);
    if path.is_dir() {
        if is_checkpoint_dir(path) {
            return Ok(Source::Checkpoint(model.to_owned()));
        }
        return Err(CliError::Usage(format!(
            "`{model}` is a folder without config.json; pass a .gguf file or a Hugging Face checkpoint folder"
        )));
    }
    if path.exists() {
        return Ok(Source::Gguf(path.to_path_buf()));
    }
    if crate::hub::looks_like_repo_id(model) && !model.ends_with(".gguf") {
        return crate::hub::resolve_repo(model, offline);
    }
    Err(CliError::Usage(format!(
        "model `{model}` not found: pass a GGUF file, a Hugging Face checkpoint folder or a hub repo id (owner/name)"
    )))
}
