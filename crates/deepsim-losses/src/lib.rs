//! The DeePSiM loss family (Dosovitskiy & Brox, *Generating Images with Perceptual Similarity
//! Metrics based on Deep Networks*, NIPS 2016) for candle: every term on its own and as the
//! paper's weighted sum, all differentiable, each reported separately so that a trainer can
//! log it.
//!
//! | term | function | struct |
//! |---|---|---|
//! | L_feat, feature distance at comparator taps (eq. 2) | [`feature_loss`] | [`FeatureLoss`] |
//! | L_img, squared Euclidean or L1 in pixels (eq. 5) | [`image_loss`] | [`ImageLoss`] |
//! | L_discr and L_adv from logits, with hinge and least-squares variants (eqs. 3–4) | [`discriminator_loss`], [`generator_loss`] | [`AdversarialLoss`] |
//! | the VAE's KL term (§4.2) | [`kl_divergence`] | [`KlLoss`] |
//! | λ_feat L_feat + λ_adv L_adv + λ_img L_img (+ λ_KL L_KL) (eq. 1) | — | [`DeepSimLoss`] |
//! | LPIPS as a loss | — | [`LpipsLoss`] |
//!
//! Plus the discriminator's pause rule ([`DiscriminatorPause`]) and the adaptive adversarial
//! weight of later work ([`AdaptiveAdversarialWeight`]), the article's perceptual gradient
//! norm ([`perceptual_gradient_norm`]) and a diversity penalty ([`diversity_penalty`]). Every loss reduces its per-sample
//! values by a [`Reduction`]. This crate never loads files: comparators come built.
//!
//! ```
//! use candle::{Device, Tensor};
//! use deepsim_losses::{discriminator_loss, generator_loss, AdversarialKind, Reduction};
//!
//! # fn main() -> deepsim_losses::Result<()> {
//! let real = Tensor::new(&[3.0f32, 100.0], &Device::Cpu)?;
//! let fake = Tensor::new(&[-2.0f32, -100.0], &Device::Cpu)?;
//! let d = discriminator_loss(&real, &fake, AdversarialKind::Logistic, Reduction::Sum)?;
//! let g = generator_loss(&fake, AdversarialKind::Logistic, Reduction::Sum)?;
//! assert!(d.to_scalar::<f32>()? < 0.2 && g.to_scalar::<f32>()? > 100.0);
//! # Ok(())
//! # }
//! ```

mod adversarial;
mod deepsim;
mod error;
mod feature;
mod image;
mod kl;
mod lpips;
mod perceptual;
mod reduction;

pub use adversarial::{
    discriminator_loss, generator_loss, softplus, two_way_logit, AdversarialKind, AdversarialLoss,
};
pub use deepsim::{
    AdaptiveAdversarialWeight, DeepSimLoss, DeepSimTerms, DeepSimWeights, DiscriminatorPause,
    FeatureTerm, StepInputs,
};
pub use error::{Error, Result};
pub use feature::{feature_loss, FeatureLoss, FeatureLossOutput, FeatureNorm};
pub use image::{image_loss, ImageDistance, ImageLoss};
pub use kl::{kl_divergence, KlLoss};
pub use lpips::LpipsLoss;
pub use perceptual::{diversity_penalty, perceptual_gradient_norm};
pub use reduction::Reduction;
