//! The crate's error type.

use std::path::PathBuf;

/// Errors of deepsim-data. Each names the file, directory or argument that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// An image could not be used (strict mode turns every skip into this error).
    #[error("{}: {reason}", path.display())]
    BadImage {
        /// The image file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: crate::SkipReason,
    },
    /// A dataset file (IDX, CIFAR-10, feature cache) is malformed.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and where.
        reason: String,
    },
    /// A source holds no usable sample.
    #[error("no usable image in {location}: {detail}")]
    Empty {
        /// The directory or file that was read.
        location: String,
        /// What was found instead.
        detail: String,
    },
    /// A configuration value or argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The background loader failed (a worker stopped or panicked).
    #[error("data loader: {0}")]
    Loader(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format { path: path.into(), reason: reason.into() }
    }
}
