//! The KL term of the variational autoencoder (Kingma & Welling 2014; DeePSiM §4.2):
//! `KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − log σ² − 1)` over the latent dimensions.

use candle::Tensor;

use crate::error::{same_shape, Result};
use crate::reduction::{per_sample_sum, Reduction};

/// The KL divergence of each sample's posterior `N(μ, exp(log σ²))` from the standard normal,
/// summed over latent dimensions, reduced over the batch.
///
/// # Shapes
/// `mu`, `log_var`: `[N, D]` (or any `[N, …]`) → `[N]` or a scalar.
///
/// # Errors
/// `mu` and `log_var` differ in shape.
pub fn kl_divergence(mu: &Tensor, log_var: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape("kl_divergence", mu, log_var)?;
    let terms = ((mu.sqr()? + log_var.exp()?)? - log_var)?;
    let per_sample =
        ((per_sample_sum(&terms)? - (terms.elem_count() / terms.dim(0)?) as f64)? * 0.5)?;
    reduction.apply(&per_sample)
}

/// [`kl_divergence`] with its reduction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KlLoss {
    /// The reduction over the batch.
    pub reduction: Reduction,
}

impl KlLoss {
    /// See [`kl_divergence`].
    ///
    /// # Errors
    /// As [`kl_divergence`].
    pub fn forward(&self, mu: &Tensor, log_var: &Tensor) -> Result<Tensor> {
        kl_divergence(mu, log_var, self.reduction)
    }
}
