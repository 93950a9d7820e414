//! The generator of image restoration and super-resolution: it takes the degraded image `y`
//! itself, not features, and predicts what to add to a fixed estimate of the clean image —
//! `y` bicubically enlarged for ×2, ×4, … super-resolution, `y` for denoising and JPEG
//! artifact removal. Convolutions at the input's size, then per doubling a nearest-neighbour
//! ×2 enlargement and two convolutions (a resize-convolution: unlike the paper's
//! up-convolution, a transposed convolution of stride 2, it cannot leave the 2-pixel
//! checkerboard a perceptual loss tends to let through — Odena, Dumoulin & Olah, *Deconvolution
//! and Checkerboard Artifacts*, 2016), then a last convolution to the three channels, which starts at
//! zero: an untrained restorer returns the estimate exactly, so training starts from the
//! baseline it must beat (the other layers are He-initialized; the first step's gradient
//! reaches them through the last layer's updated weights).

use candle::Tensor;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::layers::{scaled, Conv};

/// A restorer's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct RestorerConfig {
    /// The output's side over the input's: 1 (restoration) or a power of two
    /// (super-resolution).
    pub scale: usize,
    /// Channels of every hidden layer.
    pub width: usize,
    /// 3×3 convolutions at the input's size after the first one, bridged by a skip
    /// connection from the first.
    pub body: usize,
    /// Slope of the leaky ReLU after every hidden layer.
    pub alpha: f64,
}

impl RestorerConfig {
    /// The CPU preset: 64 channels times `width` (rounded, at least 1), four body
    /// convolutions, leaky ReLU slope 0.2.
    ///
    /// # Errors
    /// [`Error::Config`] for a scale that is not 1 or a power of two up to 8.
    pub fn cpu(scale: usize, width: f64) -> Result<Self> {
        let cfg = Self { scale, width: scaled(64, width), body: 4, alpha: 0.2 };
        cfg.check()?;
        Ok(cfg)
    }

    /// Up-convolution stages (log₂ of the scale).
    pub fn doublings(&self) -> usize {
        self.scale.trailing_zeros() as usize
    }

    /// Trainable values.
    pub fn param_count(&self) -> usize {
        let w = self.width;
        let conv = |i: usize, o: usize, k: usize| i * o * k * k + o;
        conv(3, w, 3)
            + self.body * conv(w, w, 3)
            + self.doublings() * 2 * conv(w, w, 3)
            + conv(w, 3, 3)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config { what: "RestorerConfig", reason });
        if !(self.scale.is_power_of_two() && self.scale <= 8) {
            return bad(format!("scale {}: must be 1, 2, 4 or 8", self.scale));
        }
        if self.width == 0 {
            return bad("width 0".into());
        }
        if !(self.alpha.is_finite() && (0.0..1.0).contains(&self.alpha)) {
            return bad(format!("leaky ReLU slope {}", self.alpha));
        }
        Ok(())
    }
}

/// The restoration generator (see the module's documentation); variables `head`,
/// `body.{i}`, `up.{i}` (the convolution after each enlargement), `up_conv.{i}` and `tail`
/// under its `VarBuilder`.
pub struct Restorer {
    cfg: RestorerConfig,
    head: Conv,
    body: Vec<Conv>,
    ups: Vec<(Conv, Conv)>,
    tail: Conv,
}

impl Restorer {
    /// A restorer of shape `cfg`, He-initialized, the tail at zero.
    ///
    /// # Errors
    /// An invalid configuration; variable builder errors (a loaded tensor of another shape).
    pub fn new(cfg: RestorerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.check()?;
        let (w, a) = (cfg.width, cfg.alpha);
        let head = Conv::new(3, w, 3, 1, 1, a, vb.pp("head"))?;
        let body = (0..cfg.body)
            .map(|i| Conv::new(w, w, 3, 1, 1, a, vb.pp(format!("body.{i}"))))
            .collect::<Result<_>>()?;
        let ups = (0..cfg.doublings())
            .map(|i| {
                Ok((
                    Conv::new(w, w, 3, 1, 1, a, vb.pp(format!("up.{i}")))?,
                    Conv::new(w, w, 3, 1, 1, a, vb.pp(format!("up_conv.{i}")))?,
                ))
            })
            .collect::<Result<_>>()?;
        let tail = Conv::new_scaled(w, 3, 3, 1, 1, 1.0, 0.0, 0.0, vb.pp("tail"))?;
        Ok(Self { cfg, head, body, ups, tail })
    }

    /// Its shape.
    pub fn config(&self) -> &RestorerConfig {
        &self.cfg
    }

    /// `base + f(y)`: the degraded images `y` `[N, 3, H, W]` and the estimate `base`
    /// `[N, 3, H·scale, W·scale]` (bicubic enlargement or `y` itself) to correct. Unclamped.
    ///
    /// # Errors
    /// [`Error::Config`] naming the shapes when they do not fit each other or the scale.
    pub fn forward(&self, y: &Tensor, base: &Tensor) -> Result<Tensor> {
        let s = self.cfg.scale;
        let fits = match (y.dims(), base.dims()) {
            (&[n, 3, h, w], &[bn, 3, bh, bw]) => n == bn && bh == h * s && bw == w * s,
            _ => false,
        };
        if !fits {
            return Err(Error::Config {
                what: "Restorer::forward",
                reason: format!(
                    "input {:?} and estimate {:?}: expected [N, 3, H, W] and [N, 3, {s}H, {s}W]",
                    y.dims(),
                    base.dims()
                ),
            });
        }
        let a = self.cfg.alpha;
        let first = self.head.forward_leaky_relu(y, a)?;
        let mut h = first.clone();
        for conv in &self.body {
            h = conv.forward_leaky_relu(&h, a)?;
        }
        let mut h = if self.body.is_empty() { h } else { (h + first)? };
        for (up, conv) in &self.ups {
            h = up.forward_leaky_relu(&nearest_2x(&h)?, a)?;
            h = conv.forward_leaky_relu(&h, a)?;
        }
        let residual = self.tail.forward_leaky_relu(&h, 1.0)?;
        Ok((base + residual)?)
    }
}

/// `x` `[N, C, H, W]` enlarged ×2 by repeating each value in a 2×2 block (differentiable:
/// the backward pass sums each block's gradients).
fn nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    Ok(x.reshape((n, c, h, 1, w, 1))?.broadcast_as((n, c, h, 2, w, 2))?.reshape((
        n,
        c,
        2 * h,
        2 * w,
    ))?)
}

#[cfg(test)]
mod tests {
    use candle::{DType, Device};
    use candle_nn::VarMap;

    use super::*;

    fn build(scale: usize) -> (Restorer, VarMap) {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        (Restorer::new(RestorerConfig::cpu(scale, 0.25).unwrap(), vb).unwrap(), vars)
    }

    #[test]
    fn parameter_count_matches_the_variables() {
        for scale in [1, 2, 4] {
            let (r, vars) = build(scale);
            let n: usize = vars.all_vars().iter().map(|v| v.elem_count()).sum();
            assert_eq!(n, r.config().param_count(), "scale {scale}");
        }
    }

    #[test]
    fn an_untrained_restorer_returns_the_estimate() {
        let dev = Device::Cpu;
        let (r, _) = build(4);
        let y = Tensor::rand(0f32, 1f32, (2, 3, 6, 5), &dev).unwrap();
        let base = Tensor::rand(0f32, 1f32, (2, 3, 24, 20), &dev).unwrap();
        let out = r.forward(&y, &base).unwrap();
        let diff = (out - &base).unwrap().abs().unwrap().mean_all().unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "mean |out − base|");
    }

    #[test]
    fn nearest_enlargement_repeats_values_and_sums_gradients() {
        let x = candle::Var::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = nearest_2x(&x).unwrap();
        let rows = y.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(rows[0], [1., 1., 2., 2.]);
        assert_eq!(rows[3], [3., 3., 4., 4.]);
        let weights =
            Tensor::arange(0f32, 16., &Device::Cpu).unwrap().reshape((1, 1, 4, 4)).unwrap();
        let grads = (y * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Block (0, 0) holds weights 0, 1, 4, 5.
        assert_eq!(g, [10., 18., 42., 50.]);
    }

    #[test]
    fn mismatched_shapes_and_scales_are_named() {
        let dev = Device::Cpu;
        let (r, _) = build(2);
        let y = Tensor::zeros((1, 3, 6, 6), DType::F32, &dev).unwrap();
        let base = Tensor::zeros((1, 3, 6, 6), DType::F32, &dev).unwrap();
        let e = r.forward(&y, &base).unwrap_err().to_string();
        assert!(e.contains("[1, 3, 6, 6]") && e.contains("2H"), "{e}");
        let e = RestorerConfig::cpu(3, 1.0).unwrap_err().to_string();
        assert!(e.contains("scale 3"), "{e}");
    }
}
