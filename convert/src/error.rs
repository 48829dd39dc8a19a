//! The one error type of the converter. Every variant names the file or tensor at fault and,
//! where the user can do something about it, what to do.

use std::path::PathBuf;

/// Result alias used throughout `bitnet-convert`.
pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

/// Everything that can go wrong while converting a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// An I/O operation on `path` failed.
    #[error("{op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The input is neither a folder nor something that looks like a hub repo id.
    #[error("input `{input}`: {problem}")]
    Input { input: String, problem: String },

    /// A JSON file (config.json, tokenizer.json, ...) is malformed or lacks a field.
    #[error("`{}`: {problem}", path.display())]
    Json { path: PathBuf, problem: String },

    /// The checkpoint's architecture (or a variant of it) is not one we convert.
    #[error("{0}")]
    Unsupported(String),

    /// A safetensors file is malformed (bad header, truncated, inconsistent offsets).
    #[error("safetensors `{}`: {problem}", path.display())]
    Safetensors { path: PathBuf, problem: String },

    /// A tensor the architecture needs is absent.
    #[error("tensor `{name}` is missing from the checkpoint ({where_})")]
    MissingTensor { name: String, where_: String },

    /// A tensor exists but has the wrong dtype, shape or values.
    #[error("tensor `{name}`: {problem}")]
    Tensor { name: String, problem: String },

    /// A tensor cannot be stored in the requested output type.
    #[error("tensor `{name}` cannot be stored as {ty}: {problem}; {hint}")]
    OutType {
        name: String,
        ty: &'static str,
        problem: String,
        hint: String,
    },

    /// The tokenizer files cannot be turned into GGUF tokenizer metadata.
    #[error("tokenizer `{}`: {problem}", path.display())]
    Tokenizer { path: PathBuf, problem: String },

    /// Resolving or downloading a hub repo failed.
    #[error("hub repo `{repo}`: {problem} (cache looked in: `{}`)", cache.display())]
    Hub {
        repo: String,
        problem: String,
        cache: PathBuf,
    },

    /// The progress sink asked to stop; nothing was written at the output path.
    #[error("conversion cancelled; nothing was written")]
    Cancelled,

    /// An option value is invalid.
    #[error("invalid option: {0}")]
    Option(String),

    /// The backend (formats, GGUF writer) rejected something.
    #[error(transparent)]
    Backend(#[from] bitnet_backend::Error),
}

impl ConvertError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConvertError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        ConvertError::Json {
            path: path.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn tensor(name: impl Into<String>, problem: impl Into<String>) -> Self {
        ConvertError::Tensor {
            name: name.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn safetensors(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        ConvertError::Safetensors {
            path: path.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn tokenizer(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        ConvertError::Tokenizer {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
