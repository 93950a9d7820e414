//! The models crate's error type.

/// Errors of deepsim-models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration that cannot build a network.
    #[error("{what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An input of the wrong shape.
    #[error("{model}: input `{arg}` of shape {shape:?}: {reason}")]
    Input {
        /// The network.
        model: &'static str,
        /// The argument.
        arg: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// An error from the kernels.
    #[error(transparent)]
    Kernels(#[from] deepsim_kernels::Error),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Results of deepsim-models.
pub type Result<T> = std::result::Result<T, Error>;
