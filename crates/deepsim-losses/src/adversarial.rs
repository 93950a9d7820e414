//! The adversarial terms of DeePSiM (Dosovitskiy & Brox 2016, eqs. 3–4): the discriminator's
//! `L_discr = −Σ log D(x) + log(1 − D(G(y)))` and the generator's `L_adv = −Σ log D(G(y))`,
//! computed from logits without ever forming a probability (finite at logits of ±100 and
//! beyond), plus the hinge and least-squares variants of later GANs.
//!
//! With `D = σ(l)`: `−log D = softplus(−l)` and `−log(1 − D) = softplus(l)`. The paper's
//! discriminator ends in a 2-way softmax; with logits `(l₀, l₁)` for (generated, real),
//! `D = softmax₁ = σ(l₁ − l₀)`, so the 2-way form is the 1-logit form of `l₁ − l₀`.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::error::{Error, Result};
use crate::reduction::Reduction;

/// The adversarial objective (`logistic`, `hinge` or `least_squares` with serde).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum AdversarialKind {
    /// The paper's (and the original GAN's) log-loss: discriminator
    /// `softplus(−l_real) + softplus(l_fake)`, generator `softplus(−l_fake)` (the
    /// non-saturating `−log D(G(y))`).
    #[default]
    Logistic,
    /// Hinge loss (Lim & Ye 2017; Miyato et al. 2018): discriminator
    /// `relu(1 − l_real) + relu(1 + l_fake)`, generator `−l_fake`.
    Hinge,
    /// Least squares (Mao et al. 2017, a = 0, b = c = 1): discriminator
    /// `(l_real − 1)² + l_fake²`, generator `(l_fake − 1)²`.
    LeastSquares,
}

/// `log(1 + eˣ)` elementwise, stable for any x, with the gradient σ(x).
///
/// On the CPU a kernel computes `max(x, 0) + ln(1 + e^(−|x|))`. Elsewhere the same formula runs
/// as candle ops, whose gradient at exactly x = 0 is 0 instead of ½ (the kinks of `max` and
/// `|x|`).
///
/// # Errors
/// From candle (a dtype other than f32/f64 on the CPU).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        return Ok(x.apply_op1(Softplus)?);
    }
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

struct Softplus;

fn softplus_f64(v: f64) -> f64 {
    v.max(0.0) + (-v.abs()).exp().ln_1p()
}

impl CustomOp1 for Softplus {
    fn name(&self) -> &'static str {
        "deepsim-softplus"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            return Err(candle::Error::Msg("softplus: the input is not contiguous".into()));
        };
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(
                v[start..end].iter().map(|&x| softplus_f64(f64::from(x)) as f32).collect(),
            ),
            CpuStorage::F64(v) => {
                CpuStorage::F64(v[start..end].iter().map(|&x| softplus_f64(x)).collect())
            }
            other => {
                return Err(candle::Error::Msg(format!(
                    "softplus: dtype {:?}, expected f32 or f64",
                    other.dtype()
                )))
            }
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some((grad * candle_nn::ops::sigmoid(x)?)?))
    }
}

/// Logits `[N]` or `[N, 1]` as `[N]`; other shapes are an error naming `arg`.
fn logits(loss: &'static str, arg: &'static str, l: &Tensor) -> Result<Tensor> {
    match *l.dims() {
        [_] => Ok(l.contiguous()?),
        [_, 1] => Ok(l.squeeze(1)?.contiguous()?),
        ref other => Err(Error::Shape {
            loss,
            arg,
            shape: other.to_vec(),
            reason: "expected one logit per sample, [N] or [N, 1]".into(),
        }),
    }
}

/// The discriminator's loss on the logits of real images and of generated ones, each
/// sample's real and fake terms summed (the paper's `L_discr`), reduced over the batch.
///
/// # Shapes
/// `real`, `fake`: `[N]` or `[N, 1]` (the same N) → `[N]` or a scalar.
///
/// # Errors
/// Other shapes, or batches of different sizes.
pub fn discriminator_loss(
    real: &Tensor,
    fake: &Tensor,
    kind: AdversarialKind,
    reduction: Reduction,
) -> Result<Tensor> {
    const LOSS: &str = "discriminator_loss";
    let (r, f) = (logits(LOSS, "real", real)?, logits(LOSS, "fake", fake)?);
    if r.dims() != f.dims() {
        return Err(Error::Shape {
            loss: LOSS,
            arg: "fake",
            shape: fake.dims().to_vec(),
            reason: format!("{} samples, real has {}", f.dim(0)?, r.dim(0)?),
        });
    }
    let per_sample = match kind {
        AdversarialKind::Logistic => (softplus(&r.neg()?)? + softplus(&f)?)?,
        AdversarialKind::Hinge => ((1.0 - &r)?.relu()? + (&f + 1.0)?.relu()?)?,
        AdversarialKind::LeastSquares => ((&r - 1.0)?.sqr()? + f.sqr()?)?,
    };
    reduction.apply(&per_sample)
}

/// The generator's adversarial loss on the discriminator's logits of generated images (the
/// paper's `L_adv = −Σ log D(G(y))`), reduced over the batch.
///
/// # Shapes
/// `fake`: `[N]` or `[N, 1]` → `[N]` or a scalar.
///
/// # Errors
/// Other shapes.
pub fn generator_loss(
    fake: &Tensor,
    kind: AdversarialKind,
    reduction: Reduction,
) -> Result<Tensor> {
    let f = logits("generator_loss", "fake", fake)?;
    let per_sample = match kind {
        AdversarialKind::Logistic => softplus(&f.neg()?)?,
        AdversarialKind::Hinge => f.neg()?,
        AdversarialKind::LeastSquares => (&f - 1.0)?.sqr()?,
    };
    reduction.apply(&per_sample)
}

/// The 2-way softmax output `[N, 2]` (column 0: generated, column 1: real) as the single
/// logit `l₁ − l₀` that the functions above take.
///
/// # Errors
/// `two_way` is not `[N, 2]`.
pub fn two_way_logit(two_way: &Tensor) -> Result<Tensor> {
    match *two_way.dims() {
        [_, 2] => Ok((two_way.narrow(1, 1, 1)? - two_way.narrow(1, 0, 1)?)?.squeeze(1)?),
        ref other => Err(Error::Shape {
            loss: "two_way_logit",
            arg: "two_way",
            shape: other.to_vec(),
            reason: "expected [N, 2] logits (generated, real)".into(),
        }),
    }
}

/// [`discriminator_loss`] and [`generator_loss`] with their settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdversarialLoss {
    /// The objective.
    pub kind: AdversarialKind,
    /// The reduction over the batch.
    pub reduction: Reduction,
}

impl AdversarialLoss {
    /// See [`discriminator_loss`].
    ///
    /// # Errors
    /// As [`discriminator_loss`].
    pub fn discriminator(&self, real: &Tensor, fake: &Tensor) -> Result<Tensor> {
        discriminator_loss(real, fake, self.kind, self.reduction)
    }

    /// See [`generator_loss`].
    ///
    /// # Errors
    /// As [`generator_loss`].
    pub fn generator(&self, fake: &Tensor) -> Result<Tensor> {
        generator_loss(fake, self.kind, self.reduction)
    }
}
