//! The feature-space term L_feat of DeePSiM (Dosovitskiy & Brox 2016, eq. 2): the squared
//! distance between a comparator's features of the generated image and of the target, at one
//! or several taps.

use std::sync::Arc;

use candle::Tensor;
use deepsim_comparators::{Comparator, Tap};

use crate::error::{same_shape, Error, Result};
use crate::reduction::{per_sample_mean, per_sample_sum, Reduction};

/// How a tap's squared differences are summed within a sample (`sum` or `mean` with serde).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FeatureNorm {
    /// `‖C(a) − C(b)‖²`, the sum over the tap's elements: the paper's L_feat.
    #[default]
    Sum,
    /// The mean over the tap's elements (independent of the tap's size, as most
    /// reimplementations use it).
    Mean,
}

/// The values of a [`FeatureLoss`]: the weighted total and each tap's unweighted term.
#[derive(Clone, Debug)]
pub struct FeatureLossOutput {
    /// `Σ_t w_t · term_t`, reduced.
    pub total: Tensor,
    /// Each tap's term (before its weight), reduced, in the order of the taps.
    pub per_tap: Vec<Tensor>,
}

/// L_feat at weighted taps of a frozen comparator.
///
/// The target's features are computed without a graph (the target is data, not a variable),
/// and the generated image's through the comparator's differentiable forward pass.
#[derive(Clone)]
pub struct FeatureLoss {
    comparator: Arc<dyn Comparator + Send + Sync>,
    taps: Vec<(Tap, f64)>,
    norm: FeatureNorm,
    reduction: Reduction,
}

impl FeatureLoss {
    /// The loss at `taps`, each with its weight.
    ///
    /// # Errors
    /// No taps, a tap the comparator does not offer, or a weight that is negative or not
    /// finite.
    pub fn new(
        comparator: Arc<dyn Comparator + Send + Sync>,
        taps: &[(Tap, f64)],
        norm: FeatureNorm,
        reduction: Reduction,
    ) -> Result<Self> {
        if taps.is_empty() {
            return Err(Error::Config { what: "FeatureLoss taps", reason: "none given".into() });
        }
        for &(tap, w) in taps {
            if !comparator.taps().contains(&tap) {
                return Err(Error::Config {
                    what: "FeatureLoss taps",
                    reason: format!("{} has no tap `{}`", comparator.name(), tap.name()),
                });
            }
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Config {
                    what: "FeatureLoss weights",
                    reason: format!("weight {w} of `{}` is not a finite number ≥ 0", tap.name()),
                });
            }
        }
        Ok(Self { comparator, taps: taps.to_vec(), norm, reduction })
    }

    /// The comparator.
    pub fn comparator(&self) -> &Arc<dyn Comparator + Send + Sync> {
        &self.comparator
    }

    /// The target's features at the taps, detached: compute them once when the target is
    /// reused (a feature cache, an inversion target).
    ///
    /// # Errors
    /// The comparator's input contract.
    pub fn target_features(&self, target: &Tensor) -> Result<Vec<Tensor>> {
        let taps: Vec<Tap> = self.taps.iter().map(|(t, _)| *t).collect();
        let f = self.comparator.features(&target.detach(), &taps)?;
        Ok(f.into_iter().map(|t| t.detach()).collect())
    }

    /// The loss between `generated` and `target`.
    ///
    /// # Shapes
    /// `generated`, `target`: `[N, 3, H, W]` in [0, 1] → scalars (or `[N]` with
    /// [`Reduction::None`]).
    ///
    /// # Errors
    /// Shapes differ, or the comparator's input contract.
    pub fn forward(&self, generated: &Tensor, target: &Tensor) -> Result<FeatureLossOutput> {
        same_shape("FeatureLoss", generated, target)?;
        let want = self.target_features(target)?;
        self.forward_to(generated, &want)
    }

    /// The loss between `generated` and precomputed target features
    /// ([`FeatureLoss::target_features`]).
    ///
    /// # Errors
    /// The comparator's input contract, or features of the wrong shape.
    pub fn forward_to(
        &self,
        generated: &Tensor,
        target_features: &[Tensor],
    ) -> Result<FeatureLossOutput> {
        let taps: Vec<Tap> = self.taps.iter().map(|(t, _)| *t).collect();
        if target_features.len() != taps.len() {
            return Err(Error::Config {
                what: "FeatureLoss target features",
                reason: format!("{} given for {} taps", target_features.len(), taps.len()),
            });
        }
        let got = self.comparator.features(generated, &taps)?;
        let mut per_tap = Vec::with_capacity(taps.len());
        let mut total: Option<Tensor> = None;
        for ((g, w), &(tap, weight)) in got.iter().zip(target_features).zip(&self.taps) {
            if g.dims() != w.dims() {
                return Err(Error::Shape {
                    loss: "FeatureLoss",
                    arg: "target_features",
                    shape: w.dims().to_vec(),
                    reason: format!(
                        "tap `{}` of the generated image is {:?}",
                        tap.name(),
                        g.dims()
                    ),
                });
            }
            let sq = (g - w)?.sqr()?;
            let per_sample = match self.norm {
                FeatureNorm::Sum => per_sample_sum(&sq)?,
                FeatureNorm::Mean => per_sample_mean(&sq)?,
            };
            let term = self.reduction.apply(&per_sample)?;
            let weighted = (&term * weight)?;
            total = Some(match total {
                Some(acc) => (acc + weighted)?,
                None => weighted,
            });
            per_tap.push(term);
        }
        Ok(FeatureLossOutput { total: total.expect("at least one tap"), per_tap })
    }
}

/// L_feat between `generated` and `target` at weighted `taps` of `comparator`, in one call (the
/// free-function form of [`FeatureLoss`]; build the struct to reuse it or cache targets).
///
/// # Errors
/// As [`FeatureLoss::new`] and [`FeatureLoss::forward`].
pub fn feature_loss(
    comparator: Arc<dyn Comparator + Send + Sync>,
    taps: &[(Tap, f64)],
    generated: &Tensor,
    target: &Tensor,
    norm: FeatureNorm,
    reduction: Reduction,
) -> Result<FeatureLossOutput> {
    FeatureLoss::new(comparator, taps, norm, reduction)?.forward(generated, target)
}
