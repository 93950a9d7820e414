//! The crate's error type.

use std::path::PathBuf;

/// Errors of deepsim-train.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing, unknown or out of range (the message names it).
    #[error("config: {0}")]
    Config(String),
    /// An augmentation's input is outside its contract (shape, value range, strength, budget;
    /// the message names it).
    #[error("augment: {0}")]
    Augment(String),
    /// A linear probe's input or settings are outside its contract (the message names the
    /// argument).
    #[error("probe: {0}")]
    Probe(String),
    /// A loss term became NaN or infinite.
    #[error("step {step}: {term} is {value}; stopped (the last good checkpoint is kept)")]
    NonFinite {
        /// The step.
        step: u64,
        /// The term's name (`feat`, `adv`, `img`, `discr`, `total`).
        term: String,
        /// Its value.
        value: f64,
    },
    /// A checkpoint cannot be used (corrupt, truncated, or from another configuration).
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The data.
    #[error(transparent)]
    Data(#[from] deepsim_data::Error),
    /// The comparator.
    #[error(transparent)]
    Comparator(#[from] deepsim_comparators::Error),
    /// The loss.
    #[error(transparent)]
    Loss(#[from] deepsim_losses::Error),
    /// The models.
    #[error(transparent)]
    Model(#[from] deepsim_models::Error),
    /// The image measures (the optimization baseline's priors).
    #[error(transparent)]
    Metrics(#[from] deepsim_metrics::Error),
    /// A kernel (the straight-through clamp).
    #[error(transparent)]
    Kernels(#[from] deepsim_kernels::Error),
    /// A tensor operation.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
