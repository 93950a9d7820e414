//! Two uses of a comparator's geometry beyond distances between pairs: how much a change is
//! *seen* (the perceptual gradient norm) and how far apart a batch's samples look (a
//! diversity penalty for generators prone to mode collapse).

use candle::Tensor;
use deepsim_comparators::{Comparator, Tap};

use crate::error::{same_shape, Error, Result};

/// The length of a change `v` at image `x` in a comparator's feature space next to its plain
/// length: per image, `(‖J_C(x)·v‖, ‖v‖)` with `J_C` the Jacobian of the tap `C` — how much of
/// a change the comparator "sees" (a large ratio: a visible change; a small one: a change the
/// features, and perhaps a viewer, barely register).
///
/// Computed by a central finite difference, `J·v ≈ (C(x + h·v) − C(x − h·v)) / 2h` with
/// `h = step / max|v|` (so the largest pixel moves by `step`): exact for a comparator that is
/// linear in its input, accurate to O(h²) for a smooth one, and for ReLU networks the mean
/// slope over the segment (exact where no unit changes sign on it). The comparators' fused
/// ReLU kernels have no second derivative, which the exact double-backward product would need.
///
/// # Shapes
/// `x`, `v`: `[N, 3, H, W]` → two `[N]` tensors.
///
/// # Errors
/// Shapes differ; `step` is not positive and finite; `v` is zero; `x ± h·v` leaves the
/// comparator's input range (use a smaller `step`).
pub fn perceptual_gradient_norm(
    comparator: &dyn Comparator,
    tap: Tap,
    x: &Tensor,
    v: &Tensor,
    step: f64,
) -> Result<(Tensor, Tensor)> {
    same_shape("perceptual_gradient_norm", x, v)?;
    if !(step.is_finite() && step > 0.0) {
        return Err(Error::Config {
            what: "perceptual_gradient_norm",
            reason: format!("step {step}, expected a positive number"),
        });
    }
    let (x, v) = (x.detach(), v.detach());
    let largest =
        v.abs()?.flatten_all()?.max(0)?.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?;
    if largest.is_nan() || largest == 0.0 {
        return Err(Error::Config {
            what: "perceptual_gradient_norm",
            reason: "the change v is zero (or NaN)".into(),
        });
    }
    let h = step / largest;
    let plus = comparator.features(&(&x + (&v * h)?)?, &[tap])?.remove(0);
    let minus = comparator.features(&(&x - (&v * h)?)?, &[tap])?.remove(0);
    let jv = ((plus - minus)? / (2.0 * h))?;
    let norm = |t: &Tensor| -> Result<Tensor> { Ok(t.sqr()?.flatten_from(1)?.sum(1)?.sqrt()?) };
    Ok((norm(&jv)?, norm(&v)?))
}

/// A diversity penalty on a batch of generated samples: the mean over pairs `i < j` of
/// `exp(−‖C(x_i) − C(x_j)‖² / (D·σ²))`, with `D` the number of feature elements per sample and
/// `σ` the feature distance (root mean square per element) at which a pair counts as half
/// apart (e^−1). It lies in (0, 1]: 1 when all samples look alike, towards 0 as they spread;
/// adding it to a generator's loss pushes its samples apart in the comparator's feature space
/// (a bounded, perceptual form of the repulsion of Yang et al. 2019, *Diversity-Sensitive
/// Conditional GANs*, and Mao et al. 2019, *Mode Seeking GANs*).
///
/// # Shapes
/// `samples`: `[N, 3, H, W]`, N ≥ 2 → a scalar.
///
/// # Errors
/// Fewer than two samples; σ not positive; the comparator's input contract.
pub fn diversity_penalty(
    comparator: &dyn Comparator,
    tap: Tap,
    samples: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    let n = samples.dim(0)?;
    if n < 2 {
        return Err(Error::Shape {
            loss: "diversity_penalty",
            arg: "samples",
            shape: samples.dims().to_vec(),
            reason: "needs at least two samples".into(),
        });
    }
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::Config { what: "diversity_penalty", reason: format!("σ = {sigma}") });
    }
    let f = comparator.features(samples, &[tap])?.remove(0).flatten_from(1)?;
    let d = f.dim(1)? as f64;
    // ‖f_i − f_j‖² = |f_i|² + |f_j|² − 2 f_i·f_j for all pairs at once.
    let sq = f.sqr()?.sum_keepdim(1)?;
    let gram = f.matmul(&f.t()?)?;
    let dist = ((sq.broadcast_add(&sq.t()?)? - (gram * 2.0)?)?.relu())?;
    let kernel = (dist / (-d * sigma * sigma))?.exp()?;
    // The mean over i < j: (sum of all entries − the diagonal's n ones) / (n(n − 1)).
    Ok(((kernel.sum_all()? - n as f64)? / (n * (n - 1)) as f64)?)
}
