//! The crate's error type: files that cannot be read or are malformed, weights that do not
//! match an architecture, missing weights with the command that makes them, Hub failures.

use std::path::PathBuf;

/// Errors returned by deepsim-comparators.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is malformed: truncated, corrupt, of another format, or hostile (a pickle naming
    /// a global outside the allow-list, a storage shorter than its tensors).
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tensors of a file are not those of the architecture asked for.
    #[error("{path}: {reason}")]
    Verify {
        /// The architecture's name.
        arch: String,
        /// The file converted.
        path: PathBuf,
        /// Missing, misshapen, unexpected or non-finite tensors.
        reason: String,
    },
    /// Converted weights are not where they were looked for.
    #[error("no {arch} weights at {path}; convert the published file with:\n    {command}")]
    MissingWeights {
        /// The architecture's name.
        arch: String,
        /// Where they were looked for.
        path: PathBuf,
        /// The command that creates them.
        command: String,
    },
    /// An architecture name that does not exist.
    #[error("unknown architecture `{name}` (known: {known})")]
    UnknownArch {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// A Hub file could not be had.
    #[error("Hub file {spec}: {reason}")]
    Hub {
        /// `owner/name:file`.
        spec: String,
        /// Why, and what to do.
        reason: String,
    },
    /// An input that breaks a comparator's contract (NCHW f32 RGB in [0, 1], large enough).
    #[error("{comparator}: input of shape {shape:?}: {reason}")]
    Input {
        /// The comparator.
        comparator: String,
        /// The input's shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A tap the comparator does not offer.
    #[error("{comparator} has no tap `{tap}` (offers: {offered})")]
    UnknownTap {
        /// The comparator.
        comparator: String,
        /// The tap asked for.
        tap: String,
        /// The taps it offers.
        offered: String,
    },
    /// A network configuration that cannot be built.
    #[error("{what}: {reason}")]
    Config {
        /// The configuration's type.
        what: String,
        /// What is inconsistent.
        reason: String,
    },
    /// An error raised by the kernels.
    #[error(transparent)]
    Kernels(#[from] deepsim_kernels::Error),
    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
