//! The CLI's one error type: every failure becomes one line saying what failed, where, and
//! what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Backend(#[from] bitnet_backend::Error),

    #[error("{0}")]
    Model(#[from] bitnet_candle::Error),

    #[error("loading `{}`: {source}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: bitnet_candle::Error,
    },

    #[error("{0}")]
    Convert(#[from] bitnet_convert::ConvertError),

    #[error("{what} `{}`: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Usage(String),
}

pub type CliResult<T = ()> = Result<T, CliError>;
