//! The DeePSiM objective (Dosovitskiy & Brox 2016, eq. 1 and §3.2):
//! `L = λ_feat L_feat + λ_adv L_adv + λ_img L_img (+ λ_KL L_KL for the VAE)`, each term
//! reported on its own; the discriminator's pause rule; and the adaptive adversarial weight of
//! later work (Esser et al. 2021, taming transformers).

use std::sync::Arc;

use candle::{Tensor, Var};

use crate::adversarial::{generator_loss, AdversarialKind};
use crate::error::{same_shape, Error, Result};
use crate::feature::FeatureLoss;
use crate::image::{image_loss, ImageDistance};
use crate::kl::kl_divergence;
use crate::lpips::LpipsLoss;
use crate::reduction::Reduction;

/// The feature term L_feat of the objective.
#[derive(Clone)]
pub enum FeatureTerm {
    /// `Σ ‖C(G(y)) − C(x)‖²` at taps of a comparator: the paper's.
    Taps(FeatureLoss),
    /// A learned perceptual metric (LPIPS, ST-LPIPS) between G(y) and x: the comparator's
    /// features unit-normalized per channel, weighted by heads fitted to human judgments.
    Metric(Arc<LpipsLoss>),
}

impl From<FeatureLoss> for FeatureTerm {
    fn from(f: FeatureLoss) -> Self {
        FeatureTerm::Taps(f)
    }
}

impl From<LpipsLoss> for FeatureTerm {
    fn from(m: LpipsLoss) -> Self {
        FeatureTerm::Metric(Arc::new(m))
    }
}

impl FeatureTerm {
    /// The term between `generated` and `target` (the target's taps precomputed in `want`).
    fn value(
        &self,
        generated: &Tensor,
        target: &Tensor,
        want: Option<&[Tensor]>,
    ) -> Result<Tensor> {
        match (self, want) {
            (FeatureTerm::Taps(f), Some(want)) => Ok(f.forward_to(generated, want)?.total),
            (FeatureTerm::Taps(f), None) => Ok(f.forward(generated, target)?.total),
            (FeatureTerm::Metric(m), None) => Ok(m.forward(generated, target)?.0),
            (FeatureTerm::Metric(_), Some(_)) => Err(Error::Config {
                what: "StepInputs::target_features",
                reason: "a learned metric compares images: it takes no precomputed features".into(),
            }),
        }
    }
}

/// The weights λ of the DeePSiM objective. A weight of 0 switches its term off (it is not
/// computed): the paper's ablations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeepSimWeights {
    /// λ_feat, on the feature term.
    pub feat: f64,
    /// λ_adv, on the generator's adversarial term.
    pub adv: f64,
    /// λ_img, on the image term.
    pub img: f64,
    /// λ_KL, on the VAE's KL term.
    pub kl: f64,
    /// Pixel values are multiplied by this before the image term: the paper's λ_img assumes
    /// Caffe's 0–255 pixels, ours are in [0, 1].
    pub pixel_scale: f64,
}

impl DeepSimWeights {
    /// The paper's weights for AlexNet conv5 as comparator (§3.2): λ_feat 0.01, λ_adv 100,
    /// λ_img 2·10⁻⁶ on 0–255 pixels, and λ_KL 20 for the VAE (§4.2; 0 elsewhere).
    pub fn paper_alexnet_conv5() -> Self {
        Self { feat: 0.01, adv: 100.0, img: 2e-6, kl: 20.0, pixel_scale: 255.0 }
    }

    /// Only the image term (Dosovitskiy & Brox's earlier inverter; the paper's baseline), on
    /// [0, 1] pixels.
    pub fn image_only() -> Self {
        Self { feat: 0.0, adv: 0.0, img: 1.0, kl: 0.0, pixel_scale: 1.0 }
    }

    fn check(&self) -> Result<()> {
        for (name, v) in
            [("feat", self.feat), ("adv", self.adv), ("img", self.img), ("kl", self.kl)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Config {
                    what: "DeepSimWeights",
                    reason: format!("λ_{name} = {v}, expected a finite number ≥ 0"),
                });
            }
        }
        if !(self.pixel_scale.is_finite() && self.pixel_scale > 0.0) {
            return Err(Error::Config {
                what: "DeepSimWeights",
                reason: format!("pixel_scale = {}, expected a finite number > 0", self.pixel_scale),
            });
        }
        Ok(())
    }
}

/// Each term of one generator step, unweighted, and the weighted total. A term that is
/// switched off is `None`.
#[derive(Clone, Debug)]
pub struct DeepSimTerms {
    /// L_feat.
    pub feat: Option<Tensor>,
    /// L_adv (the generator's).
    pub adv: Option<Tensor>,
    /// L_img.
    pub img: Option<Tensor>,
    /// L_KL.
    pub kl: Option<Tensor>,
    /// The factor the adversarial term's λ was multiplied by (1 without an adaptive weight).
    pub adv_factor: f64,
    /// `Σ λ · term`, what the generator's optimizer minimizes.
    pub total: Tensor,
}

/// The inputs of one generator step beside the images.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepInputs<'a> {
    /// The discriminator's logits of the generated images (`[N]` or `[N, 1]`); needed when
    /// λ_adv > 0.
    pub fake_logits: Option<&'a Tensor>,
    /// The encoder's (μ, log σ²) for the VAE; needed when λ_KL > 0.
    pub posterior: Option<(&'a Tensor, &'a Tensor)>,
    /// The target's precomputed comparator features (optional: computed from the target when
    /// absent).
    pub target_features: Option<&'a [Tensor]>,
    /// The step and the generator's last layer, for the adaptive adversarial weight (needed
    /// when the loss has one, [`DeepSimLoss::with_adaptive_weight`]).
    pub adaptive: Option<(u64, &'a Var)>,
    /// Feature-term phase jitter: both images enter the comparator one pixel smaller in each
    /// direction, starting at row `dy` and column `dx` (each 0 or 1). Drawn at random each
    /// step, it moves the comparator's stride-2 sampling grid against the image, so that a
    /// pattern the network cannot see at one phase (the 2-pixel checkerboard of
    /// up-convolutions) is seen at the other. Needs the target's features to be computed
    /// here (`target_features` absent).
    pub feature_phase: Option<(usize, usize)>,
}

/// The generator's DeePSiM objective.
#[derive(Clone)]
pub struct DeepSimLoss {
    weights: DeepSimWeights,
    feature: Option<FeatureTerm>,
    adversarial: AdversarialKind,
    reduction: Reduction,
    adaptive: Option<AdaptiveAdversarialWeight>,
    image_distance: ImageDistance,
}

impl DeepSimLoss {
    /// The objective with `weights`; `feature` (a [`FeatureLoss`] or an [`LpipsLoss`], through
    /// [`FeatureTerm`]'s `From`) is required when λ_feat > 0.
    ///
    /// # Errors
    /// A weight out of range, or λ_feat > 0 without a feature loss.
    pub fn new(
        weights: DeepSimWeights,
        feature: Option<FeatureTerm>,
        adversarial: AdversarialKind,
        reduction: Reduction,
    ) -> Result<Self> {
        weights.check()?;
        if weights.feat > 0.0 && feature.is_none() {
            return Err(Error::Config {
                what: "DeepSimLoss",
                reason: "λ_feat > 0 needs a feature term (a comparator and taps, or a metric)"
                    .into(),
            });
        }
        Ok(Self {
            weights,
            feature,
            adversarial,
            reduction,
            adaptive: None,
            image_distance: ImageDistance::SquaredL2,
        })
    }

    /// The same loss with λ_adv scaled each step by the adaptive weight of `rule`, computed
    /// from the reconstruction terms (λ-weighted feature, image and KL terms) and the
    /// adversarial term at the generator's last layer ([`StepInputs::adaptive`]).
    pub fn with_adaptive_weight(self, rule: AdaptiveAdversarialWeight) -> Self {
        Self { adaptive: Some(rule), ..self }
    }

    /// The same loss with L_img measured by `distance` (the paper's squared L2 by default;
    /// [`ImageDistance::Jnd`] for the article's ε = JND colour loss). `pixel_scale` scales
    /// the pixel distances (squared for L2); the JND distance is in ΔE units and is not scaled.
    pub fn with_image_distance(self, distance: ImageDistance) -> Self {
        Self { image_distance: distance, ..self }
    }

    /// The feature term's distance between `a` and `b`, unweighted and reduced as in
    /// [`DeepSimLoss::generator_terms`] (`None` when the loss has no feature term): the same
    /// comparator applied to another pair, such as a super-resolution model's output shrunk
    /// again against its input (a perceptual cycle-consistency term).
    ///
    /// # Errors
    /// Shapes that differ; the comparator's input contract (its minimum size).
    pub fn feature_distance(&self, a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
        same_shape("DeepSimLoss::feature_distance", a, b)?;
        self.feature.as_ref().map(|f| f.value(a, b, None)).transpose()
    }

    /// The weights.
    pub fn weights(&self) -> &DeepSimWeights {
        &self.weights
    }

    /// The terms of one generator step for `generated` = G(y) against `target` = x.
    ///
    /// # Errors
    /// Shapes that differ, a term switched on without its input (`fake_logits`,
    /// `posterior`), the comparator's input contract.
    pub fn generator_terms(
        &self,
        generated: &Tensor,
        target: &Tensor,
        inputs: StepInputs<'_>,
    ) -> Result<DeepSimTerms> {
        let w = &self.weights;
        let mut total: Option<Tensor> = None;
        let feat = match (&self.feature, w.feat > 0.0) {
            (Some(f), true) => Some(match (inputs.target_features, inputs.feature_phase) {
                (Some(_), Some(_)) => {
                    return Err(Error::Config {
                        what: "StepInputs::feature_phase",
                        reason: "the target's features were precomputed at phase (0, 0)".into(),
                    })
                }
                (want, None) => f.value(generated, target, want)?,
                (None, Some(phase)) => {
                    let (a, b) = (phase_crop(generated, phase)?, phase_crop(target, phase)?);
                    f.value(&a, &b, None)?
                }
            }),
            _ => None,
        };
        if let Some(t) = &feat {
            accumulate(&mut total, t, w.feat)?;
        }
        let img = if w.img > 0.0 {
            // ‖s·a − s·b‖² = s²‖a − b‖²: the scale applies to the (small) loss, not the images.
            let scale = match self.image_distance {
                ImageDistance::SquaredL2 => w.pixel_scale * w.pixel_scale,
                ImageDistance::L1 => w.pixel_scale,
                ImageDistance::Jnd => 1.0,
            };
            let l = image_loss(generated, target, self.image_distance, self.reduction)?;
            Some((l * scale)?)
        } else {
            None
        };
        if let Some(t) = &img {
            accumulate(&mut total, t, w.img)?;
        }
        let kl = if w.kl > 0.0 {
            let (mu, log_var) = inputs.posterior.ok_or_else(|| missing("posterior", "λ_KL"))?;
            Some(kl_divergence(mu, log_var, self.reduction)?)
        } else {
            None
        };
        if let Some(t) = &kl {
            accumulate(&mut total, t, w.kl)?;
        }
        let adv = if w.adv > 0.0 {
            let logits = inputs.fake_logits.ok_or_else(|| missing("fake_logits", "λ_adv"))?;
            Some(generator_loss(logits, self.adversarial, self.reduction)?)
        } else {
            None
        };
        let mut adv_factor = 1.0;
        if let Some(t) = &adv {
            if let Some(rule) = &self.adaptive {
                let (step, last) =
                    inputs.adaptive.ok_or_else(|| missing("adaptive", "an adaptive weight"))?;
                let rec = total.as_ref().ok_or_else(|| Error::Config {
                    what: "DeepSimLoss",
                    reason: "the adaptive weight needs a reconstruction term (λ_feat, λ_img or λ_KL > 0)".into(),
                })?;
                adv_factor = rule.weight(step, rec, t, last)?;
            }
            accumulate(&mut total, t, w.adv * adv_factor)?;
        }
        let total = match total {
            Some(t) => t,
            None => {
                return Err(Error::Config {
                    what: "DeepSimLoss",
                    reason: "every weight is 0: nothing to minimize".into(),
                })
            }
        };
        Ok(DeepSimTerms { feat, adv, img, kl, adv_factor, total })
    }
}

/// `total += lambda · term`.
fn accumulate(total: &mut Option<Tensor>, term: &Tensor, lambda: f64) -> Result<()> {
    let weighted = (term * lambda)?;
    *total = Some(match total.take() {
        Some(t) => (t + weighted)?,
        None => weighted,
    });
    Ok(())
}

fn missing(input: &str, lambda: &str) -> Error {
    Error::Config { what: "DeepSimLoss", reason: format!("{lambda} > 0 needs `{input}`") }
}

/// The paper's rule for training the discriminator alongside the generator (§3.2): the
/// discriminator is paused while it wins too clearly, `L_discr / L_adv < threshold` (0.1 by
/// default), so that the generator can catch up. Holds the threshold and how many steps were
/// paused and updated (plain fields: a checkpoint saves and restores them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiscriminatorPause {
    /// The ratio below which the discriminator skips its update.
    pub threshold: f64,
    /// Steps on which the discriminator was paused.
    pub paused_steps: u64,
    /// Steps on which it was updated.
    pub updated_steps: u64,
}

impl Default for DiscriminatorPause {
    fn default() -> Self {
        Self { threshold: 0.1, paused_steps: 0, updated_steps: 0 }
    }
}

impl DiscriminatorPause {
    /// The rule with another threshold.
    ///
    /// # Errors
    /// A threshold that is negative or not finite.
    pub fn with_threshold(threshold: f64) -> Result<Self> {
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(Error::Config {
                what: "DiscriminatorPause",
                reason: format!("threshold {threshold}, expected a finite number ≥ 0"),
            });
        }
        Ok(Self { threshold, ..Self::default() })
    }

    /// Whether the discriminator updates, given this step's `L_discr` and `L_adv` (both ≥ 0).
    /// A non-finite loss pauses nothing: the trainer's NaN check reports it.
    pub fn discriminator_updates(&self, l_discr: f64, l_adv: f64) -> bool {
        if !(l_discr.is_finite() && l_adv.is_finite()) || l_adv <= 0.0 {
            return true;
        }
        l_discr / l_adv >= self.threshold
    }

    /// [`DiscriminatorPause::discriminator_updates`], counting the step.
    pub fn step(&mut self, l_discr: f64, l_adv: f64) -> bool {
        let update = self.discriminator_updates(l_discr, l_adv);
        if update {
            self.updated_steps += 1;
        } else {
            self.paused_steps += 1;
        }
        update
    }
}

/// The adaptive adversarial weight of Esser et al. (2021): `λ = ‖∇_w L_rec‖ / (‖∇_w L_adv‖ +
/// 10⁻⁴)` at the generator's last layer `w`, clamped to `[0, max]`, and 0 before `start_step`.
/// With serde, every field may be left out (its default is taken).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct AdaptiveAdversarialWeight {
    /// Steps before the adversarial term starts (the weight is 0 until then).
    pub start_step: u64,
    /// The largest weight.
    pub max: f64,
    /// Added to the adversarial gradient's norm.
    pub eps: f64,
}

impl Default for AdaptiveAdversarialWeight {
    fn default() -> Self {
        Self { start_step: 0, max: 1e4, eps: 1e-4 }
    }
}

impl AdaptiveAdversarialWeight {
    /// The weight at `step` for the reconstruction loss `rec` and the adversarial loss `adv`
    /// (scalars), through the generator's last layer `last` (a weight both depend on). Runs two
    /// backward passes; the value is a constant (no graph).
    ///
    /// # Errors
    /// `rec` or `adv` is not a scalar, or does not depend on `last`.
    pub fn weight(&self, step: u64, rec: &Tensor, adv: &Tensor, last: &Var) -> Result<f64> {
        if step < self.start_step {
            return Ok(0.0);
        }
        let norm = |loss: &Tensor, what: &'static str| -> Result<f64> {
            if loss.rank() != 0 {
                return Err(Error::Shape {
                    loss: "AdaptiveAdversarialWeight",
                    arg: what,
                    shape: loss.dims().to_vec(),
                    reason: "expected a scalar loss".into(),
                });
            }
            let grads = loss.backward()?;
            let g = grads.get(last.as_tensor()).ok_or_else(|| Error::Config {
                what: "AdaptiveAdversarialWeight",
                reason: format!("`{what}` does not depend on the given last layer"),
            })?;
            Ok(g.sqr()?.sum_all()?.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?.sqrt())
        };
        let (r, a) = (norm(rec, "rec")?, norm(adv, "adv")?);
        Ok((r / (a + self.eps)).clamp(0.0, self.max))
    }
}

/// `x` (`[N, C, H, W]`) one pixel smaller in each direction, from row `dy` and column `dx`.
fn phase_crop(x: &Tensor, (dy, dx): (usize, usize)) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() != 4 || dims[2] < 2 || dims[3] < 2 || dy > 1 || dx > 1 {
        return Err(Error::Shape {
            loss: "DeepSimLoss",
            arg: "generated",
            shape: dims.to_vec(),
            reason: format!(
                "feature_phase ({dy}, {dx}) needs [N, C, H ≥ 2, W ≥ 2] images and offsets of 0 \
                 or 1"
            ),
        });
    }
    Ok(x.narrow(2, dy, dims[2] - 1)?.narrow(3, dx, dims[3] - 1)?)
}
