//! The losses crate's error type.

/// Errors of deepsim-losses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument's shape does not fit the loss or the other arguments.
    #[error("{loss}: `{arg}` of shape {shape:?}: {reason}")]
    Shape {
        /// The loss.
        loss: &'static str,
        /// The argument.
        arg: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range (a negative weight, a NaN threshold).
    #[error("{what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An error from a comparator.
    #[error(transparent)]
    Comparators(#[from] deepsim_comparators::Error),
    /// An error from a measure of deepsim-metrics (the ε-insensitive colour distance).
    #[error(transparent)]
    Metrics(#[from] deepsim_metrics::Error),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle::Error),
}

/// Results of deepsim-losses.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that `a` and `b` have the same shape and at least one dimension (the batch).
pub(crate) fn same_shape(loss: &'static str, a: &candle::Tensor, b: &candle::Tensor) -> Result<()> {
    if a.rank() == 0 {
        return Err(Error::Shape {
            loss,
            arg: "a",
            shape: vec![],
            reason: "a scalar; expected a batch dimension first".into(),
        });
    }
    if a.dims() != b.dims() {
        return Err(Error::Shape {
            loss,
            arg: "b",
            shape: b.dims().to_vec(),
            reason: format!("differs from the first argument's shape {:?}", a.dims()),
        });
    }
    Ok(())
}
