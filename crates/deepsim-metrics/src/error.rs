//! The metrics crate's error type.

/// Errors of deepsim-metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument's shape, dtype or size does not fit the measure.
    #[error("{measure}: `{arg}` of shape {shape:?}: {reason}")]
    Input {
        /// The measure.
        measure: &'static str,
        /// The argument.
        arg: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range.
    #[error("{what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
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

/// Results of deepsim-metrics.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that `x` is `[N, C, H, W]` with `C` among `channels` and that `y`, when given, has the
/// same shape; returns the dims.
pub(crate) fn image_pair(
    measure: &'static str,
    x: &candle::Tensor,
    y: Option<&candle::Tensor>,
    channels: &[usize],
) -> Result<[usize; 4]> {
    let &[n, c, h, w] = x.dims() else {
        return Err(Error::Input {
            measure,
            arg: "a",
            shape: x.dims().to_vec(),
            reason: "expected [N, C, H, W]".into(),
        });
    };
    if !channels.contains(&c) {
        return Err(Error::Input {
            measure,
            arg: "a",
            shape: x.dims().to_vec(),
            reason: format!("{c} channels, expected {channels:?}"),
        });
    }
    if let Some(y) = y {
        if y.dims() != x.dims() {
            return Err(Error::Input {
                measure,
                arg: "b",
                shape: y.dims().to_vec(),
                reason: format!("differs from the first image's shape {:?}", x.dims()),
            });
        }
    }
    Ok([n, c, h, w])
}

/// Checks that an image tensor is f32 or f64 (the measures compute in its dtype).
pub(crate) fn float_dtype(measure: &'static str, x: &candle::Tensor) -> Result<()> {
    match x.dtype() {
        candle::DType::F32 | candle::DType::F64 => Ok(()),
        other => Err(Error::Input {
            measure,
            arg: "a",
            shape: x.dims().to_vec(),
            reason: format!("dtype {other:?}, expected f32 or f64"),
        }),
    }
}
