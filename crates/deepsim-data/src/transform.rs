//! Resizing, cropping and flipping, and the conversion to [0, 1] CHW samples.

use image::imageops::FilterType;
use image::DynamicImage;

use crate::decode::ColorMode;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Which part of the (resized) image becomes the sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Crop {
    /// The whole image; every image must then have the same size.
    Full,
    /// A centred square of this side (evaluation).
    Center(u32),
    /// A square of this side at a uniformly random position (training).
    Random(u32),
}

/// The resampling filter used to resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Bilinear with antialiasing when shrinking (PIL's and torchvision's `BILINEAR`).
    Bilinear,
    /// Bicubic (Catmull–Rom) with antialiasing when shrinking.
    Bicubic,
    /// Lanczos with a 3-lobe window.
    Lanczos3,
    /// Nearest neighbour.
    Nearest,
}

impl Filter {
    fn image_filter(self) -> FilterType {
        match self {
            Filter::Bilinear => FilterType::Triangle,
            Filter::Bicubic => FilterType::CatmullRom,
            Filter::Lanczos3 => FilterType::Lanczos3,
            Filter::Nearest => FilterType::Nearest,
        }
    }
}

/// How an image becomes a sample: resize the shorter side, crop, maybe flip (in this order,
/// as torchvision's `Resize(s)`, `RandomCrop`/`CenterCrop`, `RandomHorizontalFlip` do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transform {
    /// Resize so that the shorter side has this many pixels (the longer side scaled by the
    /// same factor, rounded down); `None` keeps the stored size.
    pub resize: Option<u32>,
    /// The crop taken after resizing.
    pub crop: Crop,
    /// Mirror left–right with probability ½ (training augmentation).
    pub hflip: bool,
    /// The resampling filter.
    pub filter: Filter,
}

impl Transform {
    /// Training: shorter side to `resize`, random `crop`×`crop` square, random horizontal flip.
    pub fn train(resize: u32, crop: u32) -> Self {
        Transform {
            resize: Some(resize),
            crop: Crop::Random(crop),
            hflip: true,
            filter: Filter::Bilinear,
        }
    }

    /// Evaluation: shorter side to `resize`, centred `crop`×`crop` square, no flip.
    pub fn eval(resize: u32, crop: u32) -> Self {
        Transform {
            resize: Some(resize),
            crop: Crop::Center(crop),
            hflip: false,
            filter: Filter::Bilinear,
        }
    }

    /// The stored image, unchanged.
    pub fn identity() -> Self {
        Transform { resize: None, crop: Crop::Full, hflip: false, filter: Filter::Bilinear }
    }

    /// Whether the transform returns the stored image unchanged.
    pub fn is_identity(&self) -> bool {
        self.resize.is_none() && self.crop == Crop::Full && !self.hflip
    }

    /// Whether the transform draws random numbers (random crop or flip).
    pub fn is_random(&self) -> bool {
        self.hflip || matches!(self.crop, Crop::Random(_))
    }

    /// Checks the sizes: positive, and a resize at least as large as the crop.
    pub fn validate(&self) -> Result<()> {
        let side = match self.crop {
            Crop::Full => None,
            Crop::Center(s) | Crop::Random(s) => Some(s),
        };
        if self.resize == Some(0) || side == Some(0) {
            return Err(Error::InvalidArgument(format!(
                "transform {self:?}: sizes must be positive"
            )));
        }
        if let (Some(r), Some(s)) = (self.resize, side) {
            if r < s {
                return Err(Error::InvalidArgument(format!(
                    "transform: resize {r} is smaller than the {s}-pixel crop"
                )));
            }
        }
        Ok(())
    }

    /// The smallest stored side an image must have (the crop side when nothing is resized).
    pub fn min_side(&self) -> u32 {
        match (self.resize, self.crop) {
            (Some(_), _) | (None, Crop::Full) => 1,
            (None, Crop::Center(s) | Crop::Random(s)) => s,
        }
    }

    /// The output width and height for a stored image of `width`×`height`.
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.crop {
            Crop::Center(s) | Crop::Random(s) => (s, s),
            Crop::Full => self.resized_size(width, height),
        }
    }

    fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let Some(s) = self.resize else { return (width, height) };
        let scale = |long: u32, short: u32| ((long as u64 * s as u64) / short as u64).max(1) as u32;
        if width <= height {
            (s, scale(height, width))
        } else {
            (scale(width, height), s)
        }
    }

    /// Applies the transform; the random choices come from `rng` (crop x, crop y, then flip).
    /// The image must be at least [`Transform::min_side`] on each side.
    pub fn apply(&self, image: DynamicImage, rng: &mut Rng) -> DynamicImage {
        let (w, h) = self.resized_size(image.width(), image.height());
        let image = if (w, h) == (image.width(), image.height()) {
            image
        } else {
            image.resize_exact(w, h, self.filter.image_filter())
        };
        let image = match self.crop {
            Crop::Full => image,
            Crop::Center(s) => {
                // torchvision rounds the centred offset: int(round((w - s) / 2)).
                let x = ((w - s) as f64 / 2.0).round_ties_even() as u32;
                let y = ((h - s) as f64 / 2.0).round_ties_even() as u32;
                image.crop_imm(x, y, s, s)
            }
            Crop::Random(s) => {
                let x = rng.below((w - s + 1) as u64) as u32;
                let y = rng.below((h - s + 1) as u64) as u32;
                image.crop_imm(x, y, s, s)
            }
        };
        if self.hflip && rng.uniform() < 0.5 {
            image.fliph()
        } else {
            image
        }
    }
}

/// The image as `[C, H, W]` values in [0, 1] (row-major), with `mode`'s channels: 8-bit
/// samples divided by 255, 16-bit by 65535, floats clamped.
pub fn to_chw(image: &DynamicImage, mode: ColorMode) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let hw = w * h;
    match mode {
        ColorMode::Gray => {
            image.to_luma32f().into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect()
        }
        ColorMode::Rgb => {
            let hwc = image.to_rgb32f().into_raw();
            let mut chw = vec![0f32; 3 * hw];
            for (p, px) in hwc.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    chw[c * hw + p] = px[c].clamp(0.0, 1.0);
                }
            }
            chw
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn ramp(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 7])))
    }

    #[test]
    fn sizes_follow_torchvision() {
        let t = Transform::eval(64, 56);
        assert_eq!(t.resized_size(300, 200), (96, 64));
        assert_eq!(t.resized_size(200, 301), (64, 96));
        assert_eq!(t.output_size(300, 200), (56, 56));
        assert!(Transform::eval(32, 56).validate().is_err());
        assert_eq!(Transform { resize: None, ..t }.min_side(), 56);
    }

    #[test]
    fn centre_crop_offsets_and_flip() {
        // No resize: a 10×7 ramp, centre 4×4 crop starts at (3, 2) (round(1.5) = 2, ties even).
        let t = Transform {
            resize: None,
            crop: Crop::Center(4),
            hflip: false,
            filter: Filter::Bilinear,
        };
        let out = t.apply(ramp(10, 7), &mut Rng::new(0));
        let chw = to_chw(&out, ColorMode::Rgb);
        assert_eq!(chw[0] * 255.0, 3.0); // red = x of the top-left pixel
        assert_eq!(chw[16] * 255.0, 2.0); // green = y
        let mut flips = 0;
        let t = Transform { hflip: true, ..t };
        for seed in 0..200 {
            let out = to_chw(&t.apply(ramp(10, 7), &mut Rng::new(seed)), ColorMode::Rgb);
            if out[0] * 255.0 == 6.0 {
                flips += 1;
            }
        }
        assert!((70..130).contains(&flips), "{flips} flips in 200");
    }

    #[test]
    fn random_crops_cover_every_offset() {
        let t = Transform {
            resize: None,
            crop: Crop::Random(8),
            hflip: false,
            filter: Filter::Bilinear,
        };
        let mut seen = [false; 3];
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            let out = to_chw(&t.apply(ramp(10, 8), &mut rng), ColorMode::Rgb);
            seen[(out[0] * 255.0) as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
