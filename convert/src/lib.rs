//! bitnet-convert: Hugging Face BitNet b1.58 checkpoints → GGUF, in Rust, no Python.
//!
//! Input: a local model folder or a hub repo id (resolved through the standard Hugging Face
//! cache). Architectures: `BitNetForCausalLM` (2B4T, packed uint8 + `weight_scale`, or bf16
//! masters), `BitnetForCausalLM` (1bitLLM float weights) and ternary `LlamaForCausalLM`.
//! Output: I2_S (bitnet.cpp), TQ2_0/TQ1_0 (ggml mainline) or F16/F32 reference files; the GGUF
//! architecture always states the model's true math (see [`arch`]). A tensor that cannot be
//! stored in the requested type is an error naming it, never a silent fallback to F16.
//!
//! Conversion streams tensor by tensor and writes atomically (temporary file + rename), so a
//! failure or interruption never leaves a partial file at the output path.

pub mod arch;
pub mod encode;
mod error;
pub mod hf;
mod options;
mod progress;
mod summary;
pub mod tensor_map;
pub mod ternary;
pub mod tokenizer;
mod write;

use std::path::{Path, PathBuf};

pub use error::{ConvertError, Result};
pub use hf::hub::HubConfig;
pub use options::{ConvertArgs, ConvertOptions, EmbeddingType, OutType};
pub use progress::{NoProgress, ProgressSink, StderrProgress};
pub use summary::{ConvertSummary, TypeCount};

use hf::config::HfConfig;
use hf::safetensors_source::SafetensorsSource;
use tokenizer::Vocab;

/// Converts `opts.input` (folder or hub repo id) as the options say.
pub fn convert(opts: &ConvertOptions, progress: &dyn ProgressSink) -> Result<ConvertSummary> {
    let input = resolve_input(opts, progress)?;
    let outfile = match &opts.outfile {
        Some(p) => p.clone(),
        None => input.default_outfile(opts.outtype),
    };
    let types = write::Types {
        ternary: opts.outtype,
        embedding: opts.embedding_type(),
        output: opts.output_type(),
    };
    convert_folder(&input.dir, &outfile, &input.name, types, progress)
}

/// The simple entry point for tests and tools: converts the local folder `input` to `output`
/// with default embedding types and no progress output.
pub fn convert_to(input: &Path, output: &Path, outtype: OutType) -> Result<ConvertSummary> {
    let mut opts = ConvertOptions::new(input.to_string_lossy());
    opts.outtype = outtype;
    opts.outfile = Some(output.to_path_buf());
    convert(&opts, &NoProgress)
}

/// A model folder ready to read.
struct ResolvedInput {
    dir: PathBuf,
    /// `general.name`: the folder or repo name.
    name: String,
    from_hub: bool,
}

impl ResolvedInput {
    fn default_outfile(&self, outtype: OutType) -> PathBuf {
        let file = format!("ggml-model-{}.gguf", outtype.name());
        if self.from_hub {
            // Never write into the cache's snapshot folder; use the working directory.
            PathBuf::from(format!("{}-{file}", self.name))
        } else {
            self.dir.join(file)
        }
    }
}

/// The local folder of a checkpoint given as a folder or a hub repo id (fetched into the Hugging
/// Face cache, at `revision` or `main`), exactly as [`convert`] resolves its input.
pub fn resolve_checkpoint(
    input: &str,
    revision: Option<&str>,
    offline: bool,
    progress: &dyn ProgressSink,
) -> Result<PathBuf> {
    let mut opts = ConvertOptions::new(input);
    opts.revision = revision.map(str::to_owned);
    opts.offline = offline;
    Ok(resolve_input(&opts, progress)?.dir)
}

fn resolve_input(opts: &ConvertOptions, progress: &dyn ProgressSink) -> Result<ResolvedInput> {
    let path = Path::new(&opts.input);
    if path.is_dir() {
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| opts.input.clone());
        return Ok(ResolvedInput {
            dir: path.to_path_buf(),
            name,
            from_hub: false,
        });
    }
    if path.exists() {
        return Err(ConvertError::Input {
            input: opts.input.clone(),
            problem:
                "is a file; give the model folder (with config.json and model.safetensors) instead"
                    .into(),
        });
    }
    if !hf::hub::looks_like_repo_id(&opts.input) {
        return Err(ConvertError::Input {
            input: opts.input.clone(),
            problem: "is neither an existing folder nor a Hugging Face repo id (owner/name)".into(),
        });
    }
    let cfg = HubConfig::from_env(opts.offline)?;
    let revision = opts.revision.as_deref().unwrap_or("main");
    let dir = hf::hub::fetch(&opts.input, revision, &cfg, progress)?;
    Ok(ResolvedInput {
        dir,
        name: opts
            .input
            .rsplit('/')
            .next()
            .unwrap_or(&opts.input)
            .to_string(),
        from_hub: true,
    })
}

fn convert_folder(
    dir: &Path,
    outfile: &Path,
    name: &str,
    types: write::Types,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary> {
    check_outfile(dir, outfile)?;
    let config = HfConfig::load(dir)?;
    let src = SafetensorsSource::open(dir)?;
    let mut plan = arch::plan(&config, &src)?;
    arch::fit_head_to_gguf(&mut plan, &src)?;
    let vocab = Vocab::load(dir, &config, plan.n_vocab)?;
    write::write(&src, &plan, &vocab, name, types, outfile, progress)
}

/// The output must go to a file in an existing folder and must not replace an input file.
fn check_outfile(dir: &Path, outfile: &Path) -> Result<()> {
    let bad = |problem: String| {
        ConvertError::Option(format!("--outfile `{}`: {problem}", outfile.display()))
    };
    if outfile.is_dir() {
        return Err(bad(
            "is a folder; give a file name such as model.gguf".into()
        ));
    }
    let parent = match outfile.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(bad(format!("folder `{}` does not exist", parent.display())));
    }
    if let (Ok(out), Ok(input)) = (outfile.canonicalize(), dir.canonicalize()) {
        let is_input = out.parent() == Some(input.as_path())
            && out.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".safetensors") || n.ends_with(".json") || n == "tokenizer.model"
            });
        if is_input {
            return Err(bad("would overwrite an input file".into()));
        }
    }
    Ok(())
}
