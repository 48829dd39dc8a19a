//! The one error type of `bitnet-candle`.
//!
//! Every fallible entry point returns [`Result`]; bad files, shapes and options are reported
//! through these variants (naming the tensor, key or value at fault) and never by panicking.

/// Result alias used throughout `bitnet-candle`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the `bitnet-candle` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the backend crate (GGUF container, weight formats, kernels).
    #[error(transparent)]
    Backend(#[from] bitnet_backend::Error),

    /// An error from a Candle operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An I/O operation on `path` failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The GGUF's `general.architecture` is not one this crate implements.
    #[error("unsupported model architecture `{0}` (supported: bitnet-b1.58, bitnet-25, bitnet, llama with ternary weights)")]
    UnsupportedArchitecture(String),

    /// A tensor the architecture needs is not in the file.
    #[error("model file lacks tensor `{name}` required by architecture `{arch}`")]
    MissingTensor { name: String, arch: String },

    /// A metadata key the architecture needs is not in the file.
    #[error("model file lacks metadata key `{key}`")]
    MissingMetadata { key: String },

    /// A tensor exists but cannot be used: wrong type, wrong shape, non-ternary values, ...
    #[error("tensor `{name}`: {problem}")]
    BadTensor { name: String, problem: String },

    /// The metadata describes an inconsistent or unsupported model.
    #[error("model configuration: {0}")]
    Config(String),

    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Rendering a chat template failed.
    #[error("chat template: {0}")]
    ChatTemplate(String),

    /// A call was made with arguments the callee cannot accept.
    #[error("{0}")]
    InvalidArgument(String),

    /// A Hugging Face checkpoint (config, safetensors, tokenizer files, hub) cannot be used.
    #[error(transparent)]
    Checkpoint(#[from] bitnet_convert::ConvertError),

    /// The KV cache has no room left: a sequence would pass its context, or the pages shared by
    /// all sequences are used up.
    #[error("KV cache full: {0}")]
    KvBudget(String),

    /// Positions of a batch do not continue their sequence (a gap, or not consecutive).
    #[error("positions: {0}")]
    Position(String),

    /// A sequence id outside the cache's `0..n_seq_max`.
    #[error("{0}")]
    UnknownSequence(String),
}

impl Error {
    pub(crate) fn bad_tensor(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::BadTensor {
            name: name.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}
