//! The one error type of the backend crate.
//!
//! Every fallible entry point returns [`Result`]; malformed input (files, buffers, shapes)
//! is always reported through these variants and never by panicking.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout `bitnet-backend`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the backend crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An I/O error with no file path at hand (e.g. from a tensor-writing callback).
    #[error("I/O error: {0}")]
    RawIo(#[from] std::io::Error),

    /// A GGUF byte stream is malformed; `offset` is where the problem was found.
    #[error("malformed GGUF at byte {offset}: {kind}")]
    Gguf { offset: u64, kind: GgufErrorKind },

    /// A metadata key is missing or holds a value of the wrong type.
    #[error("GGUF metadata key `{key}`: {problem}")]
    Metadata { key: String, problem: String },

    /// A tensor cannot be used as asked (unknown type, wrong size, not in the file, ...).
    #[error("tensor `{name}`: {problem}")]
    Tensor { name: String, problem: String },

    /// A ggml type id this crate cannot size or decode.
    #[error("unknown or unsupported ggml type id {id}")]
    UnknownGgmlType { id: u32 },

    /// Input to a weight-format routine (`formats::*`) is invalid.
    #[error("{format}: {problem}")]
    Format {
        format: &'static str,
        problem: String,
    },

    /// Misuse of the GGUF writer (duplicate names, wrong order, wrong sizes, ...).
    #[error("GGUF writer: {0}")]
    Writer(String),

    /// Shapes or buffer lengths passed to a kernel entry point (repack, activation
    /// quantization, matmul) do not fit together, or an input value is out of range.
    #[error("{op}: {problem}")]
    Shape { op: &'static str, problem: String },

    /// A kernel was requested (explicitly or through `BITNET_KERNEL`) that this CPU or build
    /// target cannot run.
    #[error("kernel `{name}` is not available: {reason}")]
    KernelUnavailable { name: String, reason: String },
}

impl Error {
    pub(crate) fn format(format: &'static str, problem: impl Into<String>) -> Self {
        Error::Format {
            format,
            problem: problem.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// What exactly is wrong with a malformed GGUF stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GgufErrorKind {
    /// The first four bytes are not `GGUF`.
    BadMagic([u8; 4]),
    /// Only GGUF versions 2 and 3 are supported.
    UnsupportedVersion(u32),
    /// The file is big-endian GGUF, which this reader does not support.
    BigEndian,
    /// The file ends before `needed` more bytes could be read.
    Truncated { needed: u64 },
    /// A count (array items, keys, tensors) cannot possibly fit in the bytes that remain.
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: u64,
    },
    /// A string is not valid UTF-8.
    InvalidUtf8,
    /// Unknown metadata value type id.
    InvalidValueType(u32),
    /// A boolean byte other than 0 or 1.
    InvalidBool(u8),
    /// Arrays nested deeper than the reader allows.
    NestingTooDeep { limit: usize },
    /// A metadata key appears twice.
    DuplicateKey(String),
    /// A tensor name appears twice.
    DuplicateTensor(String),
    /// `general.alignment` is not a non-zero power of two held as u32.
    BadAlignment(String),
    /// A tensor has more dimensions than ggml supports.
    TooManyDims { tensor: String, n_dims: u32 },
    /// A tensor dimension is negative as i64, or the element count overflows.
    BadDims { tensor: String, dims: Vec<u64> },
    /// A tensor's shape does not fit its type (e.g. rows not a multiple of the block size).
    BadShape { tensor: String, problem: String },
    /// A tensor's data offset is not a multiple of the alignment.
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    /// A tensor's data lies (partly) outside the file.
    DataOutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    /// Two tensors' data ranges overlap.
    Overlap { first: String, second: String },
}

impl fmt::Display for GgufErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GgufErrorKind::*;
        match self {
            BadMagic(m) => write!(f, "bad magic {m:02x?}, expected \"GGUF\""),
            UnsupportedVersion(v) => write!(f, "unsupported GGUF version {v} (supported: 2, 3)"),
            BigEndian => write!(f, "big-endian GGUF files are not supported"),
            Truncated { needed } => write!(f, "file truncated: {needed} more byte(s) needed"),
            CountTooLarge {
                what,
                count,
                remaining,
            } => write!(
                f,
                "{what} count {count} cannot fit in the {remaining} remaining byte(s)"
            ),
            InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            InvalidValueType(t) => write!(f, "unknown metadata value type {t}"),
            InvalidBool(b) => write!(f, "boolean byte {b} is neither 0 nor 1"),
            NestingTooDeep { limit } => write!(f, "arrays nested deeper than {limit} levels"),
            DuplicateKey(k) => write!(f, "duplicate metadata key `{k}`"),
            DuplicateTensor(t) => write!(f, "duplicate tensor name `{t}`"),
            BadAlignment(why) => write!(f, "bad general.alignment: {why}"),
            TooManyDims { tensor, n_dims } => {
                write!(f, "tensor `{tensor}` has {n_dims} dims (at most 4)")
            }
            BadDims { tensor, dims } => write!(
                f,
                "tensor `{tensor}` has invalid dims {dims:?} (negative or element count overflows)"
            ),
            BadShape { tensor, problem } => write!(f, "tensor `{tensor}`: {problem}"),
            MisalignedOffset {
                tensor,
                offset,
                alignment,
            } => write!(
                f,
                "tensor `{tensor}` data offset {offset} is not a multiple of the alignment {alignment}"
            ),
            DataOutOfBounds {
                tensor,
                start,
                end,
                file_len,
            } => write!(
                f,
                "tensor `{tensor}` data [{start}, {end}) lies outside the file ({file_len} bytes)"
            ),
            Overlap { first, second } => {
                write!(f, "data of tensors `{first}` and `{second}` overlap")
            }
        }
    }
}
