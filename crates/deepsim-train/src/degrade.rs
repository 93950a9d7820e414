//! The degradations a restorer learns to undo (tasks `superres` and `restore`): Pillow's
//! anti-aliased bicubic shrink ([`deepsim_data::bicubic_weights`]), 8-bit rounding, Gaussian
//! noise, JPEG; and the bicubic enlargement that super-resolution starts from.
//!
//! Shrinking and enlarging are linear, `Aₕ · x · A_wᵀ` per channel, and run as two matrix
//! products on the images' device, so the shrink is differentiable: the cycle term shrinks
//! the generator's output again and compares it with the input.

use candle::{Device, Tensor};
use deepsim_data::{bicubic_weights, Rng};

use crate::augment::jpeg;
use crate::config::RestoreSection;
use crate::error::{Error, Result};

/// A degradation: shrink by `scale` (1: none), then round to 8 bits, then noise, then JPEG.
#[derive(Clone, Debug, PartialEq)]
pub struct Degradation {
    /// The side of the clean image over the degraded one's.
    pub scale: usize,
    /// Standard deviation of the added Gaussian noise, in 8-bit levels.
    pub noise: f64,
    /// The JPEG quality the degraded image is stored at (none: lossless).
    pub jpeg_quality: Option<u8>,
}

impl Degradation {
    /// The degradation a `[restore]` section describes.
    pub fn from_section(r: &RestoreSection) -> Self {
        Degradation { scale: r.scale.unwrap_or(1), noise: r.noise, jpeg_quality: r.jpeg_quality }
    }

    /// A short description (`×4 bicubic, noise σ 5, JPEG q30`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.scale > 1 {
            parts.push(format!("×{} bicubic", self.scale));
        }
        if self.noise > 0.0 {
            parts.push(format!("noise σ {}", self.noise));
        }
        if let Some(q) = self.jpeg_quality {
            parts.push(format!("JPEG q{q}"));
        }
        parts.join(", ")
    }

    /// The degraded images of clean images `x` `[N, 3, H, W]` in [0, 1] (H and W multiples of
    /// the scale), `[N, 3, H/scale, W/scale]` on `x`'s device, 8-bit values; noise from `rng`.
    ///
    /// # Errors
    /// Sizes that are not multiples of the scale; tensor errors.
    pub fn apply(&self, x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let device = x.device().clone();
        let (n, c, h, w) = x.dims4()?;
        let shrunk = if self.scale > 1 { self.shrink(x)? } else { x.clone() };
        let (sh, sw) = (h / self.scale, w / self.scale);
        let mut v = shrunk.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        deepsim_data::quantize_8bit(&mut v);
        if self.noise > 0.0 {
            let sigma = self.noise / 255.0;
            for p in &mut v {
                *p += (rng.normal() * sigma) as f32;
            }
            deepsim_data::quantize_8bit(&mut v);
        }
        let mut y = Tensor::from_vec(v, (n, c, sh, sw), &Device::Cpu)?;
        if let Some(q) = self.jpeg_quality {
            let images =
                (0..n).map(|i| jpeg(&y.narrow(0, i, 1)?, q)).collect::<Result<Vec<_>>>()?;
            y = Tensor::stack(&images, 0)?;
        }
        Ok(y.to_device(&device)?)
    }

    /// `x` shrunk by the scale with Pillow's anti-aliased bicubic, unrounded and
    /// differentiable (the degradation's linear part).
    ///
    /// # Errors
    /// Sizes that are not multiples of the scale.
    pub fn shrink(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if !(h.is_multiple_of(self.scale) && w.is_multiple_of(self.scale)) {
            return Err(Error::Config(format!(
                "restore.scale {}: the images are {h}×{w}, not a multiple of it",
                self.scale
            )));
        }
        resample(x, h / self.scale, w / self.scale)
    }

    /// What the restorer corrects: `y` enlarged bicubically by the scale (Pillow's bicubic,
    /// clamped to [0, 1]), or `y` itself at scale 1. The baseline of an evaluation.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn estimate(&self, y: &Tensor) -> Result<Tensor> {
        if self.scale == 1 {
            return Ok(y.clone());
        }
        let (_, _, h, w) = y.dims4()?;
        Ok(resample(y, h * self.scale, w * self.scale)?.clamp(0f32, 1f32)?)
    }
}

/// `x` `[N, C, H, W]` resampled bicubically (Pillow's weights) to `oh × ow`, on its device,
/// as [`deepsim_data::resize_bicubic`] does.
fn resample(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let dev = x.device();
    let ah = Tensor::from_vec(bicubic_weights(h, oh)?, (oh, h), dev)?.to_dtype(x.dtype())?;
    let aw = Tensor::from_vec(bicubic_weights(w, ow)?, (ow, w), dev)?.to_dtype(x.dtype())?;
    // Pillow's 8-bit intermediate image clamps the first pass.
    let rows = x.broadcast_matmul(&aw.t()?)?.clamp(0f32, 1f32)?;
    Ok(ah.broadcast_matmul(&rows)?)
}

#[cfg(test)]
mod tests {
    use candle::DType;

    use super::*;

    #[test]
    fn shrink_agrees_with_the_data_crates_resize() {
        let x = Tensor::rand(0f32, 1f32, (2, 3, 16, 12), &Device::Cpu).unwrap();
        let d = Degradation { scale: 4, noise: 0.0, jpeg_quality: None };
        let ours = d.shrink(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut theirs = Vec::new();
        for image in v.chunks_exact(3 * 16 * 12) {
            theirs.extend(deepsim_data::resize_bicubic(image, (3, 16, 12), (4, 3)).unwrap());
        }
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn noise_has_the_asked_spread_and_jpeg_keeps_the_size() {
        let x = (Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
        let d = Degradation { scale: 1, noise: 10.0, jpeg_quality: None };
        let y = d.apply(&x, &mut Rng::new(3)).unwrap();
        let std = ((y - &x).unwrap().sqr().unwrap().mean_all().unwrap())
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
            * 255.0;
        assert!((std - 10.0).abs() < 0.4, "σ {std} levels");
        let d = Degradation { scale: 2, noise: 0.0, jpeg_quality: Some(20) };
        assert_eq!(d.apply(&x, &mut Rng::new(3)).unwrap().dims(), &[1, 3, 32, 32]);
    }

    #[test]
    fn sizes_that_are_not_multiples_are_named() {
        let x = Tensor::zeros((1, 3, 10, 12), DType::F32, &Device::Cpu).unwrap();
        let d = Degradation { scale: 4, noise: 0.0, jpeg_quality: None };
        let e = d.shrink(&x).unwrap_err().to_string();
        assert!(e.contains("10×12") && e.contains("restore.scale 4"), "{e}");
    }
}
