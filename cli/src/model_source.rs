//! Turning `-m MODEL` into a loaded model: a GGUF path, or a Hugging Face repo id.

use crate::args::ModelArgs;
use crate::error::{CliError, CliResult};
use bitnet_candle::{LoadOptions, Model};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A loaded model plus what the commands report about loading it.
pub struct Loaded {
    pub model: Model,
    pub path: PathBuf,
    pub load_time: Duration,
}

/// Resolves and loads `args.model`, applying the thread and context options.
pub fn load(args: &ModelArgs) -> CliResult<Loaded> {
    let path = resolve(&args.model, args.offline)?;
    let options = LoadOptions {
        n_threads: args.threads,
        max_context: args.ctx_size,
        tokenizer_json: args.tokenizer.clone(),
    };
    if args.threads == Some(0) {
        return Err(CliError::Usage("-t/--threads must be at least 1".into()));
    }
    let start = Instant::now();
    let model = Model::load(&path, &options).map_err(|e| CliError::Load {
        path: path.clone(),
        source: e,
    })?;
    let load_time = start.elapsed();
    eprintln!(
        "loaded {} from {} in {:.2} s ({} threads, kernel {:?})",
        model.description(),
        path.display(),
        load_time.as_secs_f64(),
        bitnet_backend::threads::num_threads(),
        bitnet_backend::kernels::selected(),
    );
    Ok(Loaded {
        model,
        path,
        load_time,
    })
}

/// A local file as is; otherwise a hub repo id, fetched (or converted) into the cache.
pub fn resolve(model: &str, offline: bool) -> CliResult<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        if path.is_dir() {
            return Err(CliError::Usage(format!(
                "`{model}` is a folder; pass a .gguf file, or convert a Hugging Face folder first with `bitnet convert {model}`"
            )));
        }
        return Ok(path.to_path_buf());
    }
    if crate::hub::looks_like_repo_id(model) && !model.ends_with(".gguf") {
        return crate::hub::fetch_model(model, offline);
    }
    Err(CliError::Usage(format!(
        "model `{model}` not found: pass a GGUF file path or a Hugging Face repo id (owner/name)"
    )))
}
