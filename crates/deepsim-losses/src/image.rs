//! The image-space term L_img of DeePSiM (Dosovitskiy & Brox 2016, eq. 5): the distance
//! between the generated and the target image in pixel space.

use candle::Tensor;

use crate::error::{same_shape, Result};
use crate::reduction::{per_sample_sum, Reduction};

/// The pixel distance of [`image_loss`] (`squared_l2`, `l1` or `jnd` with serde).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ImageDistance {
    /// `‖a − b‖²`, summed over each sample's elements: the paper's L_img.
    #[default]
    SquaredL2,
    /// `‖a − b‖₁`, summed over each sample's elements.
    L1,
    /// The ε-insensitive colour distance of the article, in just-noticeable differences:
    /// `max(0, ΔE00 − 2.3)` averaged over each sample's pixels (deepsim-metrics'
    /// `jnd_insensitive_loss`), so differences a viewer would not see cost nothing. sRGB
    /// images `[N, 3, H, W]` in [0, 1], on the CPU.
    Jnd,
}

/// The per-sample pixel distance between `a` and `b`, reduced over the batch.
///
/// # Shapes
/// `a`, `b`: `[N, …]` (any rank ≥ 1) → `[N]` or a scalar by `reduction`.
///
/// # Errors
/// `a` and `b` differ in shape, or `a` has no batch dimension.
pub fn image_loss(
    a: &Tensor,
    b: &Tensor,
    distance: ImageDistance,
    reduction: Reduction,
) -> Result<Tensor> {
    same_shape("image_loss", a, b)?;
    let diff = (a - b)?;
    let per_sample = match distance {
        ImageDistance::SquaredL2 => per_sample_sum(&diff.sqr()?)?,
        ImageDistance::L1 => per_sample_sum(&diff.abs()?)?,
        ImageDistance::Jnd => deepsim_metrics::jnd_insensitive_loss(a, b, None)?,
    };
    reduction.apply(&per_sample)
}

/// [`image_loss`] with its settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageLoss {
    /// The pixel distance.
    pub distance: ImageDistance,
    /// The reduction over the batch.
    pub reduction: Reduction,
}

impl ImageLoss {
    /// The loss between `a` and `b`; see [`image_loss`].
    ///
    /// # Errors
    /// As [`image_loss`].
    pub fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        image_loss(a, b, self.distance, self.reduction)
    }
}
