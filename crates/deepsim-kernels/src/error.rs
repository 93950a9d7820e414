//! The crate's error type: invalid arguments named by op, argument and shape, or candle's errors.

/// Errors returned by deepsim-kernels.
///
/// Inside a candle graph (custom ops, backward passes) these travel as [`candle::Error`]; the
/// `From` conversion below keeps the message, so the op, the argument and the shape stay visible.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument does not fit the op: wrong rank, zero-sized or mismatched dimension,
    /// unsupported dtype, kernel larger than the padded input, bad configuration.
    #[error("{op}: invalid `{arg}` (shape {shape:?}): {reason}")]
    InvalidArgument {
        /// The op that rejected the argument, e.g. `max_pool2d`.
        op: &'static str,
        /// The argument's name as in the function signature, e.g. `input` or `config.kernel`.
        arg: &'static str,
        /// The shape that was received (empty for scalar configuration values).
        shape: Vec<usize>,
        /// What is wrong with it.
        reason: String,
    },
    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

impl From<Error> for candle::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Candle(inner) => inner,
            other => candle::Error::Msg(other.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error::InvalidArgument`].
pub(crate) fn invalid(
    op: &'static str,
    arg: &'static str,
    shape: &[usize],
    reason: impl Into<String>,
) -> Error {
    Error::InvalidArgument { op, arg, shape: shape.to_vec(), reason: reason.into() }
}
