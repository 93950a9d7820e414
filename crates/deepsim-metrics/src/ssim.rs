//! SSIM and MS-SSIM (Wang et al., *Image Quality Assessment: From Error Visibility to
//! Structural Similarity*, 2004; Wang, Simoncelli & Bovik, *Multiscale Structural Similarity*,
//! 2003) and PSNR, differentiable, on NCHW images of 1 or 3 channels.
//!
//! SSIM follows the reference definition: an 11×11 Gaussian window of σ 1.5 applied without
//! padding ("valid"), K1 0.01, K2 0.03, population (not sample) covariances, the map averaged
//! over channels and positions — as `pytorch-msssim` and scikit-image (`gaussian_weights=True,
//! use_sample_covariance=False`) compute it. MS-SSIM uses five scales with the exponents 0.0448,
//! 0.2856, 0.3001, 0.2363, 0.1333, 2×2 average pooling between scales (an odd side padded with
//! one zero on each end, as `pytorch-msssim`), and negative contrast terms clamped at 0.
//!
//! One difference from Wang's MATLAB code: it first downsamples images whose shorter side
//! exceeds 256 pixels by `round(min(H, W) / 256)`; these functions never do (neither do
//! `pytorch-msssim` nor scikit-image), so downsample large images first to reproduce it.

use candle::Tensor;
use deepsim_kernels::{conv2d, Conv2dConfig};

use crate::error::{float_dtype, image_pair, Error, Result};

/// SSIM's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SsimConfig {
    /// Side of the Gaussian window (odd).
    pub window: usize,
    /// Standard deviation of the Gaussian window, in pixels.
    pub sigma: f64,
    /// K1 of the luminance term's constant `C1 = (K1·L)²`.
    pub k1: f64,
    /// K2 of the contrast term's constant `C2 = (K2·L)²`.
    pub k2: f64,
    /// The range L of pixel values (1 for [0, 1] images, 255 for 8-bit ones).
    pub data_range: f64,
}

impl Default for SsimConfig {
    /// Wang et al.'s settings for [0, 1] images.
    fn default() -> Self {
        Self { window: 11, sigma: 1.5, k1: 0.01, k2: 0.03, data_range: 1.0 }
    }
}

/// MS-SSIM's scale exponents (Wang, Simoncelli & Bovik 2003).
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

impl SsimConfig {
    fn check(&self) -> Result<()> {
        let ok = self.window % 2 == 1
            && self.sigma > 0.0
            && self.k1 > 0.0
            && self.k2 > 0.0
            && self.data_range > 0.0
            && [self.sigma, self.k1, self.k2, self.data_range].iter().all(|v| v.is_finite());
        if !ok {
            return Err(Error::Config {
                what: "SsimConfig",
                reason: format!("{self:?}: expected an odd window and positive, finite constants"),
            });
        }
        Ok(())
    }

    /// The normalized 2-D Gaussian window as a depthwise conv weight `[C, 1, w, w]`.
    fn kernel(&self, channels: usize, like: &Tensor) -> Result<Tensor> {
        let half = (self.window / 2) as f64;
        let g: Vec<f64> = (0..self.window)
            .map(|i| (-(i as f64 - half).powi(2) / (2.0 * self.sigma * self.sigma)).exp())
            .collect();
        let s: f64 = g.iter().sum();
        let g: Vec<f64> = g.iter().map(|v| v / s).collect();
        let w2: Vec<f64> = (0..channels)
            .flat_map(|_| g.iter().flat_map(|&a| g.iter().map(move |&b| a * b)).collect::<Vec<_>>())
            .collect();
        Ok(Tensor::from_vec(w2, (channels, 1, self.window, self.window), like.device())?
            .to_dtype(like.dtype())?)
    }
}

/// Per image and channel: (SSIM, contrast–structure), each `[N, C]`.
fn ssim_and_cs(a: &Tensor, b: &Tensor, cfg: &SsimConfig) -> Result<(Tensor, Tensor)> {
    let c = a.dim(1)?;
    // x, y, x², y², xy through one depthwise Gaussian filter.
    let stacked = Tensor::cat(&[a, b, &a.sqr()?, &b.sqr()?, &(a * b)?], 1)?;
    let kernel = cfg.kernel(5 * c, a)?;
    let f = conv2d(&stacked, &kernel, None, &Conv2dConfig::new(1, 0).with_groups(5 * c))?;
    let part = |i: usize| f.narrow(1, i * c, c);
    let (mx, my) = (part(0)?, part(1)?);
    let (mx2, my2, mxy) = (mx.sqr()?, my.sqr()?, (&mx * &my)?);
    let sx = (part(2)? - &mx2)?;
    let sy = (part(3)? - &my2)?;
    let sxy = (part(4)? - &mxy)?;
    let c1 = (cfg.k1 * cfg.data_range).powi(2);
    let c2 = (cfg.k2 * cfg.data_range).powi(2);
    let cs_map = (((&sxy * 2.0)? + c2)? / ((sx + sy)? + c2)?)?;
    let l_map = (((&mxy * 2.0)? + c1)? / ((mx2 + my2)? + c1)?)?;
    let mean = |m: &Tensor| -> Result<Tensor> { Ok(m.flatten_from(2)?.mean(2)?) };
    Ok((mean(&(l_map * &cs_map)?)?, mean(&cs_map)?))
}

fn check(
    measure: &'static str,
    a: &Tensor,
    b: &Tensor,
    cfg: &SsimConfig,
    min: usize,
) -> Result<()> {
    cfg.check()?;
    let [_, _, h, w] = image_pair(measure, a, Some(b), &[1, 3])?;
    float_dtype(measure, a)?;
    if h < min || w < min {
        return Err(Error::Input {
            measure,
            arg: "a",
            shape: a.dims().to_vec(),
            reason: format!("{h}×{w} is smaller than the minimum {min}×{min}"),
        });
    }
    Ok(())
}

/// SSIM of each image pair, averaged over channels and window positions.
///
/// # Shapes
/// `a`, `b`: `[N, C, H, W]`, C 1 or 3, H and W at least the window → `[N]`.
///
/// # Errors
/// Shapes that differ or do not fit, another dtype than f32/f64, a bad config.
pub fn ssim(a: &Tensor, b: &Tensor, cfg: &SsimConfig) -> Result<Tensor> {
    check("ssim", a, b, cfg, cfg.window)?;
    Ok(ssim_and_cs(a, b, cfg)?.0.mean(1)?)
}

/// MS-SSIM of each image pair over five scales.
///
/// # Shapes
/// `a`, `b`: `[N, C, H, W]`, C 1 or 3, the shorter side above `(window − 1)·16` (161 pixels
/// for the 11-pixel window) → `[N]`.
///
/// # Errors
/// As [`ssim`], and images too small for five scales.
pub fn ms_ssim(a: &Tensor, b: &Tensor, cfg: &SsimConfig) -> Result<Tensor> {
    let levels = MS_SSIM_WEIGHTS.len();
    check("ms_ssim", a, b, cfg, (cfg.window - 1) * (1 << (levels - 1)) + 1)?;
    let (mut x, mut y) = (a.clone(), b.clone());
    let mut factors = Vec::with_capacity(levels);
    for (i, &w) in MS_SSIM_WEIGHTS.iter().enumerate() {
        let (s, cs) = ssim_and_cs(&x, &y, cfg)?;
        let last = i + 1 == levels;
        let term = if last { s } else { cs }.relu()?;
        factors.push(term.powf(w)?);
        if !last {
            x = halve(&x)?;
            y = halve(&y)?;
        }
    }
    let mut prod = factors[0].clone();
    for f in &factors[1..] {
        prod = (prod * f)?;
    }
    Ok(prod.mean(1)?)
}

/// 2×2 average pooling, an odd side padded with a zero at each end (PyTorch's
/// `avg_pool2d(kernel_size=2, padding=side % 2)`, zeros counted).
fn halve(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let mut x = x.clone();
    if h % 2 == 1 {
        x = x.pad_with_zeros(2, 1, 1)?;
    }
    if w % 2 == 1 {
        x = x.pad_with_zeros(3, 1, 1)?;
    }
    let (_, _, h, w) = x.dims4()?;
    // Windows at stride 2 from the top-left; a padded side keeps its first window.
    Ok(x.narrow(2, 0, h / 2 * 2)?.narrow(3, 0, w / 2 * 2)?.avg_pool2d(2)?)
}

/// PSNR of each pair in decibels, `10·log10(L² / MSE)`; identical images give +∞.
///
/// # Shapes
/// `a`, `b`: `[N, …]` → `[N]`.
///
/// # Errors
/// Shapes that differ, a non-positive data range.
pub fn psnr(a: &Tensor, b: &Tensor, data_range: f64) -> Result<Tensor> {
    if a.dims() != b.dims() || a.rank() < 2 {
        return Err(Error::Input {
            measure: "psnr",
            arg: "b",
            shape: b.dims().to_vec(),
            reason: format!("expected the first image's shape {:?} (batch first)", a.dims()),
        });
    }
    if !(data_range.is_finite() && data_range > 0.0) {
        return Err(Error::Config { what: "psnr", reason: format!("data range {data_range}") });
    }
    let mse = (a - b)?.sqr()?.flatten_from(1)?.mean(1)?;
    Ok(((mse.recip()? * (data_range * data_range))?.log()? * (10.0 / std::f64::consts::LN_10))?)
}
