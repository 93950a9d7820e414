//! Inversion by optimization (Mahendran & Vedaldi 2015), the baseline of the paper's Table 2:
//! no generator, but gradient descent on the image itself until its features match the
//! target's, held to natural-looking images by hand-made priors (total variation and a bound
//! on the pixel range) instead of the learned one of the adversarial term.

use std::sync::Arc;

use candle::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use deepsim_comparators::{Comparator, Tap};
use deepsim_metrics::alpha_norm;

use crate::adam::Adam;
use crate::config::OptimConfig;
use crate::error::{Error, Result};

/// The objective's weights and the descent's schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimInversionConfig {
    /// Gradient steps.
    pub steps: usize,
    /// Adam's learning rate on pixels in [0, 1].
    pub lr: f64,
    /// Weight of the total variation prior (β = 2): the mean over pixels of the squared
    /// differences to the right and lower neighbours.
    pub lambda_tv: f64,
    /// Weight of the α-norm prior: the mean of |2x − 1|^α, which keeps pixels off the
    /// bounds of their range.
    pub lambda_alpha: f64,
    /// The exponent α of that prior (Mahendran & Vedaldi: 6).
    pub alpha: i32,
}

impl Default for OptimInversionConfig {
    /// 200 Adam steps of 0.05 from a uniform grey image; λ_TV 20 and λ_α 0.01 with α = 6.
    /// λ_TV was chosen on the 8 validation tiles of `docs/results/optim-conv5.png` inverted
    /// from random AlexNet's conv5 (`deepsim invert-optim --network alexnet-random --tap conv5
    /// --resize 80 --lambda-tv L`; image / feature error in %): λ_TV 2 → 58.9 / 9.2 (coloured
    /// noise), 20 → 49.4 / 15.3, 100 → 51.2 / 26.2, 500 → 76.3 / 61.1.
    fn default() -> Self {
        Self { steps: 200, lr: 0.05, lambda_tv: 20.0, lambda_alpha: 0.01, alpha: 6 }
    }
}

/// What the descent produced.
pub struct OptimInversion {
    /// The reconstructions, `[N, 3, side, side]` in [0, 1].
    pub images: Tensor,
    /// The objective (mean over images) before each step and after the last: `steps + 1`
    /// values.
    pub objective: Vec<f64>,
    /// The encoder's features of `images` at the tap (as `encoder.features` returns them),
    /// from the objective's last evaluation.
    pub features: Tensor,
}

/// Per image: the squared feature distance over the target's squared norm (so 1 for the
/// zero image's features), plus the priors. Returns the per-image objectives `[N]`.
///
/// # Errors
/// Shapes that differ, or tensor errors.
pub fn inversion_objective(
    features: &Tensor,
    target: &Tensor,
    x: &Tensor,
    cfg: &OptimInversionConfig,
) -> Result<Tensor> {
    if features.dims() != target.dims() {
        return Err(Error::Config(format!(
            "inversion objective: features {:?} and target {:?} differ",
            features.dims(),
            target.dims()
        )));
    }
    let f = features.flatten_from(1)?;
    let t = target.flatten_from(1)?;
    let norm = t.sqr()?.sum(1)?.clamp(1e-12, f64::MAX)?;
    let fit = ((&f - &t)?.sqr()?.sum(1)? / norm)?;
    Ok(((fit + (tv_prior(x)? * cfg.lambda_tv)?)?
        + (alpha_norm(x, cfg.alpha)? * cfg.lambda_alpha)?)?)
}

/// The total variation prior of the objective for each image of `x` `[N, C, H, W]`:
/// Mahendran & Vedaldi's TV^β with β = 2 (eq. 5, [`deepsim_metrics::total_variation`]: the
/// squared right and down differences over the `(H − 1)·(W − 1)` positions that have both),
/// over `C·H·W` so that λ_TV does not depend on the image size. `[N]`.
///
/// # Errors
/// Rank other than 4, or a side below 2.
fn tv_prior(x: &Tensor) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    Ok((deepsim_metrics::total_variation(x, 2.0)? / (c * h * w) as f64)?)
}

/// Reconstructs images from `target`, the features of `encoder` at `tap` (as
/// `encoder.features` returns them, `[N, …]`), by Adam on the pixels of `[N, 3, side, side]`
/// images that start uniform grey and are projected back into [0, 1] after every step. The
/// objective is [`inversion_objective`] summed over images, so each image's descent is its own.
///
/// # Errors
/// A bad configuration, a target of the wrong shape for `side`, or a non-finite objective.
pub fn invert_by_optimization(
    encoder: &Arc<dyn Comparator + Send + Sync>,
    tap: Tap,
    target: &Tensor,
    side: usize,
    cfg: &OptimInversionConfig,
    device: &Device,
) -> Result<OptimInversion> {
    let bad_weight = |w: f64| !w.is_finite() || w < 0.0;
    if cfg.steps == 0
        || bad_weight(cfg.lr)
        || cfg.lr == 0.0
        || bad_weight(cfg.lambda_tv)
        || bad_weight(cfg.lambda_alpha)
    {
        return Err(Error::Config(format!(
            "inversion by optimization: needs steps > 0, lr > 0 and non-negative weights, got \
             {cfg:?}"
        )));
    }
    let n = target.dim(0)?;
    let target = target.to_device(device)?.to_dtype(DType::F32)?.detach();
    let map = VarMap::new();
    map.get((n, 3, side, side), "x", candle_nn::Init::Const(0.5), DType::F32, device)?;
    let var = map.all_vars().remove(0);
    let paper = OptimConfig::default();
    let mut adam = Adam::new(&map, cfg.lr, paper.beta1, paper.beta2, paper.eps)?;
    let mut objective = Vec::with_capacity(cfg.steps + 1);
    let mut step = 0;
    loop {
        let x = var.as_tensor();
        let features = encoder.features(x, &[tap])?.remove(0);
        let total = inversion_objective(&features, &target, x, cfg)?.sum_all()?;
        let value = total.to_dtype(DType::F64)?.to_scalar::<f64>()? / n as f64;
        if !value.is_finite() {
            return Err(Error::Config(format!(
                "inversion by optimization: the objective is {value} at step {step}"
            )));
        }
        objective.push(value);
        if step == cfg.steps {
            let features = features.detach();
            return Ok(OptimInversion { images: var.as_tensor().detach(), objective, features });
        }
        adam.step(&deepsim_kernels::backward(&total)?)?;
        project(&var)?;
        step += 1;
    }
}

/// Clamps a variable back into [0, 1].
fn project(var: &Var) -> Result<()> {
    Ok(var.set(&var.as_tensor().clamp(0f32, 1f32)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepsim_comparators::by_name;

    fn t(v: Vec<f32>, shape: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn scalars(x: &Tensor) -> Vec<f64> {
        x.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    }

    /// Two demo tiles, centre 64×64 of the 80×80 files, `[2, 3, 64, 64]`.
    fn tiles() -> Tensor {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/val");
        let mut v = Vec::new();
        for name in ["astronaut_s240_r2_c1.jpg", "coffee_s400_r0_c3.jpg"] {
            let img = image::open(dir.join(name)).unwrap().crop_imm(8, 8, 64, 64).to_rgb8();
            for c in 0..3 {
                v.extend(img.pixels().map(|p| f32::from(p[c]) / 255.0));
            }
        }
        t(v, (2, 3, 64, 64))
    }

    #[test]
    fn priors_on_constructed_images() {
        // TV counts the (H − 1)·(W − 1) positions with a right and a down neighbour. A flat
        // image has no variation; a 4×4 one-channel image whose right half is 1 has one unit
        // jump in each of the 3 counted rows: 3 / (1·4·4) = 0.1875. A 2×2 checkerboard: one
        // position, a unit jump right and down: 2 / 4 = 0.5.
        let flat = t(vec![0.3; 16], (1, 1, 4, 4));
        let step: Vec<f32> = (0..16).map(|i| if i % 4 >= 2 { 1.0 } else { 0.0 }).collect();
        let checker = t(vec![0.0, 1.0, 1.0, 0.0], (1, 1, 2, 2));
        let tv = tv_prior(&Tensor::cat(&[&flat, &t(step, (1, 1, 4, 4))], 0).unwrap());
        assert_eq!(scalars(&tv.unwrap()), [0.0, 0.1875]);
        assert_eq!(scalars(&tv_prior(&checker).unwrap()), [0.5]);
        assert!(tv_prior(&t(vec![0.0; 3], (1, 1, 1, 3))).is_err());
    }

    #[test]
    fn the_fit_term_is_relative_to_the_target() {
        let x = t(vec![0.5; 12], (1, 3, 2, 2)); // no prior cost
        let target = t(vec![3.0, 4.0], (1, 2, 1, 1));
        let cfg = OptimInversionConfig::default();
        let at = |f: Vec<f32>| {
            scalars(&inversion_objective(&t(f, (1, 2, 1, 1)), &target, &x, &cfg).unwrap())[0]
        };
        assert_eq!(at(vec![3.0, 4.0]), 0.0);
        assert!((at(vec![0.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((at(vec![3.0, 9.0]) - 1.0).abs() < 1e-12); // 25 / 25
        let wrong = t(vec![0.0; 3], (1, 3, 1, 1));
        assert!(inversion_objective(&wrong, &target, &x, &cfg).is_err());
    }

    #[test]
    fn descent_lowers_the_objective_and_the_feature_error() {
        let device = Device::Cpu;
        let encoder: Arc<dyn Comparator + Send + Sync> =
            Arc::from(by_name("alexnet-random", None, &device).unwrap());
        let x = tiles();
        let target = encoder.features(&x, &[Tap::Conv5]).unwrap().remove(0);
        let cfg = OptimInversionConfig { steps: 40, ..OptimInversionConfig::default() };
        let inv = invert_by_optimization(&encoder, Tap::Conv5, &target, 64, &cfg, &device).unwrap();
        assert_eq!(inv.objective.len(), 41);
        assert_eq!(inv.images.dims(), [2, 3, 64, 64]);
        let (first, last) = (inv.objective[0], inv.objective[40]);
        assert!(last < 0.5 * first, "objective {first} → {last}");
        // The fit alone, recomputed from the result: below the grey start's.
        let fit = |img: &Tensor| {
            let f = encoder.features(img, &[Tap::Conv5]).unwrap().remove(0);
            let none = OptimInversionConfig { lambda_tv: 0.0, lambda_alpha: 0.0, ..cfg.clone() };
            scalars(&inversion_objective(&f, &target, img, &none).unwrap())
        };
        let grey = (x.ones_like().unwrap() * 0.5).unwrap();
        for (after, before) in fit(&inv.images).iter().zip(fit(&grey)) {
            assert!(*after < 0.5 * before, "fit {before} → {after}");
        }
        let (lo, hi) = (inv.images.min_all().unwrap(), inv.images.max_all().unwrap());
        assert!(lo.to_scalar::<f32>().unwrap() >= 0.0 && hi.to_scalar::<f32>().unwrap() <= 1.0);
        let bad = OptimInversionConfig { steps: 0, ..cfg };
        let e = invert_by_optimization(&encoder, Tap::Conv5, &target, 64, &bad, &device);
        assert!(e.is_err_and(|e| e.to_string().contains("steps > 0")));
    }
}
