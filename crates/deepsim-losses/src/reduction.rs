//! How per-sample losses become one number.

use candle::Tensor;

use crate::error::Result;

/// What a loss returns from its per-sample values `[N]`: all of them, their mean or their sum
/// (the DeePSiM paper sums over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The per-sample values, `[N]`.
    None,
    /// Their mean, a scalar.
    #[default]
    Mean,
    /// Their sum, a scalar.
    Sum,
}

impl Reduction {
    /// Applies the reduction to per-sample values `[N]`.
    ///
    /// # Errors
    /// From candle.
    pub fn apply(self, per_sample: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Reduction::None => per_sample.clone(),
            Reduction::Mean => per_sample.mean_all()?,
            Reduction::Sum => per_sample.sum_all()?,
        })
    }
}

/// Sums every dimension but the first: `[N, …]` → `[N]`.
pub(crate) fn per_sample_sum(t: &Tensor) -> Result<Tensor> {
    if t.rank() == 1 {
        return Ok(t.clone());
    }
    Ok(t.flatten_from(1)?.sum(1)?)
}

/// Averages every dimension but the first: `[N, …]` → `[N]`.
pub(crate) fn per_sample_mean(t: &Tensor) -> Result<Tensor> {
    if t.rank() == 1 {
        return Ok(t.clone());
    }
    Ok(t.flatten_from(1)?.mean(1)?)
}
