//! Perceptually calibrated augmentation: brightness, contrast, saturation, hue, blur, noise and
//! JPEG whose strength is searched per image so that the change hits a perceptual budget —
//! mean CIEDE2000 in just-noticeable differences (ΔE00 / 2.3) or ST-LPIPS-alex — instead of
//! one fixed strength whose visible effect differs from image to image.
//!
//! [`Augmentation`] names an operation and applies it at a strength; [`Calibrator`] searches
//! the strength for a [`Budget`] ([`Calibrator::calibrate`]); [`AugmentConfig`] is a training
//! configuration's `[augment]` section and [`Augmenter`] applies it to a batch, every random
//! choice drawn from the run's seed, the step and the image's index in the batch.

use std::path::Path;
use std::sync::OnceLock;

use candle::{DType, Device, Tensor};
use deepsim_comparators::{Lpips, ShiftTolerantTrunk};
use deepsim_data::Rng;
use deepsim_metrics::{delta_e2000, lab_to_srgb, srgb_to_lab, Ciede2000Weights, JND_DELTA_E};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Domains of an augmentation's random streams (with its seed).
const SIGN: u64 = 0x5167;
const NOISE: u64 = 0x4E01;
/// Domain of the trainer's per-image choices (with the run's seed, the step and the index).
const BATCH: u64 = 0xA097;
/// Strength evaluations after which a search that has not met its budget stops.
const MAX_EVALUATIONS: usize = 64;

/// An image operation with one strength parameter; strength 0 (quality 100 for
/// [`Augmentation::Jpeg`]) leaves the image as it is (up to 8-bit rounding and, for JPEG, the
/// codec's loss), and the change grows with the strength. Where an operation has two
/// directions (brighter or darker, more or less contrast or saturation, hue turned either
/// way), the seed picks one and the strength is its magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augmentation {
    /// `f·x` on every sRGB channel, clamped to [0, 1] (torchvision's `adjust_brightness`);
    /// strength |log₂ f| in [0, 4]. A gain rather than an offset: pixels cross 8-bit levels
    /// at different gains, so the distance grows smoothly, where an offset moves every pixel
    /// of an 8-bit image by whole levels at once.
    Brightness,
    /// `m + f·(x − m)` with m the image's mean luma (Rec. 601 weights, as torchvision's
    /// `adjust_contrast`), clamped; strength |log₂ f| in [0, 4].
    Contrast,
    /// CIELAB a*, b* multiplied by f (chroma scaled, lightness and hue kept), back to sRGB and
    /// clamped; strength |log₂ f| in [0, 4].
    Saturation,
    /// CIELAB (a*, b*) rotated by θ degrees (lightness and chroma kept), back to sRGB and
    /// clamped; strength |θ| in [0, 180].
    Hue,
    /// A Gaussian blur of standard deviation σ pixels (separable, radius ⌈3σ⌉, mirrored edges);
    /// strength σ in [0, 16].
    Blur,
    /// `x + σ·z` with z standard normal per pixel and channel (drawn from the seed), clamped;
    /// strength σ in [0, 1].
    Noise,
    /// Encoded and decoded as a JPEG (the `image` crate's baseline encoder); strength is the
    /// quality, an integer in [1, 100], lower being stronger.
    Jpeg,
}

impl Augmentation {
    /// Every operation, in the order of the documentation.
    pub const ALL: [Augmentation; 7] = [
        Augmentation::Brightness,
        Augmentation::Contrast,
        Augmentation::Saturation,
        Augmentation::Hue,
        Augmentation::Blur,
        Augmentation::Noise,
        Augmentation::Jpeg,
    ];

    /// The name in configurations and on the command line (`brightness`, …, `jpeg`).
    pub fn name(self) -> &'static str {
        static NAMES: OnceLock<[String; 7]> = OnceLock::new();
        serde_name(&NAMES, &Augmentation::ALL, self)
    }

    /// What the strength measures (`|log2 factor|`, `degrees`,
    /// `sigma (px)`, `sigma`, `quality`).
    pub fn unit(self) -> &'static str {
        match self {
            Augmentation::Brightness | Augmentation::Contrast | Augmentation::Saturation => {
                "|log2 factor|"
            }
            Augmentation::Hue => "degrees",
            Augmentation::Blur => "sigma (px)",
            Augmentation::Noise => "sigma",
            Augmentation::Jpeg => "quality",
        }
    }

    /// The weakest and the strongest strength searched: `(0, max)`, or `(100, 1)` for JPEG.
    pub fn range(self) -> (f64, f64) {
        match self {
            Augmentation::Noise => (0.0, 1.0),
            Augmentation::Brightness | Augmentation::Contrast | Augmentation::Saturation => {
                (0.0, 4.0)
            }
            Augmentation::Hue => (0.0, 180.0),
            Augmentation::Blur => (0.0, 16.0),
            Augmentation::Jpeg => (100.0, 1.0),
        }
    }

    /// The direction `seed` picks for a two-way operation: +1 (brighter, more contrast or
    /// saturation, hue turned counter-clockwise in the a*b* plane) or −1; +1 for the others.
    pub fn direction(self, seed: u64) -> f64 {
        match self {
            Augmentation::Blur | Augmentation::Noise | Augmentation::Jpeg => 1.0,
            _ if Rng::derive(seed, &[SIGN]).below(2) == 0 => 1.0,
            _ => -1.0,
        }
    }

    /// The image changed by this operation at `strength`, rounded to 8-bit levels (what a PNG
    /// of it holds); `seed` picks the direction and the noise.
    ///
    /// # Shapes
    /// `image`: `[3, H, W]` or `[1, 3, H, W]`, values in [0, 1] → `[3, H, W]` f32 on the CPU.
    ///
    /// # Errors
    /// [`Error::Augment`] for another shape, values outside [0, 1] or NaN, or a strength
    /// outside [`Augmentation::range`] (naming the operation and the value).
    pub fn apply(self, image: &Tensor, strength: f64, seed: u64) -> Result<Tensor> {
        let x = check_image(image)?;
        self.check_strength(strength)?;
        self.apply_checked(&x, strength, seed)
    }

    fn check_strength(self, strength: f64) -> Result<()> {
        let (a, b) = self.range();
        let (lo, hi) = (a.min(b), a.max(b));
        if !(strength >= lo && strength <= hi) {
            return Err(Error::Augment(format!(
                "{}: strength {strength} lies outside [{lo}, {hi}] ({})",
                self.name(),
                self.unit()
            )));
        }
        Ok(())
    }

    /// [`Augmentation::apply`] on a checked `[1, 3, H, W]` f32 CPU image; `[3, H, W]` out.
    fn apply_checked(self, x: &Tensor, s: f64, seed: u64) -> Result<Tensor> {
        let sign = self.direction(seed);
        let changed = match self {
            Augmentation::Brightness => (x * (sign * s).exp2())?,
            Augmentation::Contrast => {
                let luma =
                    Tensor::new(&[0.299f32, 0.587, 0.114], &Device::Cpu)?.reshape((1, 3, 1, 1))?;
                let m = x.broadcast_mul(&luma)?.sum_keepdim(1)?.mean_all()?;
                let f = (sign * s).exp2();
                ((x.broadcast_sub(&m)? * f)?.broadcast_add(&m))?
            }
            Augmentation::Saturation | Augmentation::Hue => {
                let lab = srgb_to_lab(&x.to_dtype(DType::F64)?)?;
                let (l, a, b) = (lab.narrow(1, 0, 1)?, lab.narrow(1, 1, 1)?, lab.narrow(1, 2, 1)?);
                let (a2, b2) = if self == Augmentation::Saturation {
                    let f = (sign * s).exp2();
                    ((a * f)?, (b * f)?)
                } else {
                    let (sin, cos) = (sign * s).to_radians().sin_cos();
                    (((&a * cos)? - (&b * sin)?)?, ((&a * sin)? + (&b * cos)?)?)
                };
                lab_to_srgb(&Tensor::cat(&[l, a2, b2], 1)?)?.to_dtype(DType::F32)?
            }
            Augmentation::Blur => gaussian_blur(x, s)?,
            Augmentation::Noise => {
                let mut rng = Rng::derive(seed, &[NOISE]);
                let z: Vec<f32> = (0..x.elem_count()).map(|_| rng.normal() as f32).collect();
                (x + (Tensor::from_vec(z, x.dims(), &Device::Cpu)? * s)?)?
            }
            Augmentation::Jpeg => return jpeg(x, s.round() as u8),
        };
        quantize(&changed)
    }
}

impl std::fmt::Display for Augmentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Augmentation {
    type Err = Error;

    /// An operation by its name.
    ///
    /// # Errors
    /// [`Error::Augment`] naming the value and listing the operations.
    fn from_str(name: &str) -> Result<Self> {
        Augmentation::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Augmentation::ALL.iter().map(|a| a.name()).collect();
            Error::Augment(format!(
                "unknown augmentation {name:?}; expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// The name serde gives `value`, one of the unit variants `all`: the spelling of
/// configurations, kept in one place (the serde attributes) for the command line and messages
/// too. The names are serialized once into `names`.
fn serde_name<T, const N: usize>(
    names: &'static OnceLock<[String; N]>,
    all: &[T; N],
    value: T,
) -> &'static str
where
    T: Serialize + PartialEq,
{
    let names = names.get_or_init(|| {
        all.each_ref().map(|v| match serde_json::to_value(v) {
            Ok(serde_json::Value::String(name)) => name,
            other => unreachable!("a unit variant serializes as its name, not {other:?}"),
        })
    });
    let i = all.iter().position(|v| *v == value).expect("`all` lists every variant");
    &names[i]
}

/// `[1, 3, H, W]` (or `[3, H, W]`) in [0, 1] → `[1, 3, H, W]` f32 on the CPU.
fn check_image(image: &Tensor) -> Result<Tensor> {
    let x = match image.dims() {
        [3, _, _] => image.unsqueeze(0)?,
        [1, 3, _, _] => image.clone(),
        dims => {
            return Err(Error::Augment(format!(
                "an image to augment is [3, H, W] or [1, 3, H, W] RGB, got {dims:?}"
            )))
        }
    };
    if x.elem_count() == 0 {
        return Err(Error::Augment(format!("the image to augment is empty ({:?})", x.dims())));
    }
    let x = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let (lo, hi) =
        v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    if v.iter().any(|p| p.is_nan()) || lo < 0.0 || hi > 1.0 {
        return Err(Error::Augment(format!(
            "the image to augment must hold values in [0, 1]; it spans [{lo}, {hi}]{}",
            if v.iter().any(|p| p.is_nan()) { " and holds NaN" } else { "" }
        )));
    }
    Ok(x)
}

/// Clamped to [0, 1] and rounded to 8-bit levels, `[3, H, W]`.
fn quantize(x: &Tensor) -> Result<Tensor> {
    let q = (x.clamp(0f32, 1f32)? * 255.0)?.round()?;
    Ok((q / 255.0)?.squeeze(0)?)
}

/// The mirror index of `i` in `0..n` (edge pixels not repeated), for any offset.
fn mirror(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let r = i.rem_euclid(period);
    (if r < n as isize { r } else { period - r }) as usize
}

/// A separable Gaussian blur of `[1, C, H, W]` with standard deviation `sigma` pixels.
fn gaussian_blur(x: &Tensor, sigma: f64) -> Result<Tensor> {
    if sigma <= 0.0 {
        return Ok(x.clone());
    }
    let (_, c, h, w) = x.dims4()?;
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f64> =
        (-radius..=radius).map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let mut rows = vec![0f32; v.len()];
    let mut out = vec![0f32; v.len()];
    for plane in 0..c {
        let p = plane * h * w;
        for y in 0..h {
            for xx in 0..w {
                let mut acc = 0.0;
                for (k, d) in kernel.iter().zip(-radius..=radius) {
                    acc += k * f64::from(v[p + y * w + mirror(xx as isize + d, w)]);
                }
                rows[p + y * w + xx] = acc as f32;
            }
        }
        for y in 0..h {
            for xx in 0..w {
                let mut acc = 0.0;
                for (k, d) in kernel.iter().zip(-radius..=radius) {
                    acc += k * f64::from(rows[p + mirror(y as isize + d, h) * w + xx]);
                }
                out[p + y * w + xx] = acc as f32;
            }
        }
    }
    Ok(Tensor::from_vec(out, x.dims(), &Device::Cpu)?)
}

/// `[1, 3, H, W]` through the JPEG encoder at `quality` and back, `[3, H, W]`.
pub(crate) fn jpeg(x: &Tensor, quality: u8) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let v = (x.clamp(0f32, 1f32)? * 255.0)?.round()?.flatten_all()?.to_vec1::<f32>()?;
    let plane = h * w;
    let mut rgb = vec![0u8; 3 * plane];
    for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
        for (c, p) in px.iter_mut().enumerate() {
            *p = v[c * plane + i] as u8;
        }
    }
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(&rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Augment(format!("jpeg: encoding at quality {quality}: {e}")))?;
    let (decoded, _) = deepsim_data::decode_bytes(&bytes, deepsim_data::ColorMode::Rgb)
        .map_err(|e| Error::Augment(format!("jpeg: decoding at quality {quality}: {e}")))?;
    let rgb = decoded.to_rgb8();
    let chw: Vec<f32> =
        (0..3).flat_map(|c| rgb.pixels().map(move |p| f32::from(p[c]) / 255.0)).collect();
    Ok(Tensor::from_vec(chw, (3, h, w), &Device::Cpu)?)
}

/// The distance a [`Budget`] is measured in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetMetric {
    /// Mean CIEDE2000 over the pixels divided by [`JND_DELTA_E`] (2.3): just-noticeable
    /// differences of colour (Sharma 2003's JND; ΔE00 per Sharma, Wu & Dalal 2005).
    #[default]
    #[serde(rename = "delta-e2000")]
    DeltaE2000,
    /// ST-LPIPS over the shift-tolerant AlexNet (Ghildyal & Liu 2022), its raw distance, from
    /// the shipped weights (or an explicit file).
    #[serde(rename = "stlpips-alex")]
    StlpipsAlex,
}

impl BudgetMetric {
    /// Every metric.
    pub const ALL: [BudgetMetric; 2] = [BudgetMetric::DeltaE2000, BudgetMetric::StlpipsAlex];

    /// The name in configurations and on the command line.
    pub fn name(self) -> &'static str {
        static NAMES: OnceLock<[String; 2]> = OnceLock::new();
        serde_name(&NAMES, &BudgetMetric::ALL, self)
    }

    /// The unit of a budget in this metric (`JND` or `ST-LPIPS`).
    pub fn unit(self) -> &'static str {
        match self {
            BudgetMetric::DeltaE2000 => "JND",
            BudgetMetric::StlpipsAlex => "ST-LPIPS",
        }
    }
}

impl std::fmt::Display for BudgetMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BudgetMetric {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        BudgetMetric::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            Error::Augment(format!(
                "unknown budget metric {name:?}; expected delta-e2000 or stlpips-alex"
            ))
        })
    }
}

/// How far an augmentation should move an image: `value` in `metric`'s unit, met when the
/// distance lies within `value ± tolerance`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// The distance.
    pub metric: BudgetMetric,
    /// The target (JND for ΔE2000).
    pub value: f64,
    /// The accepted deviation, in the same unit.
    pub tolerance: f64,
}

impl Budget {
    /// The default tolerance of a budget in `metric`: 0.05 JND, or 0.005 ST-LPIPS.
    pub fn default_tolerance(metric: BudgetMetric) -> f64 {
        match metric {
            BudgetMetric::DeltaE2000 => 0.05,
            BudgetMetric::StlpipsAlex => 0.005,
        }
    }

    /// Checks that value and tolerance are positive and finite.
    ///
    /// # Errors
    /// [`Error::Augment`] naming `budget` or `tolerance` and the value.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("budget", self.value), ("tolerance", self.tolerance)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Augment(format!(
                    "{name} {v} must be a positive number ({})",
                    self.metric.unit()
                )));
            }
        }
        Ok(())
    }
}

/// Whether a search met its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// The distance lies within the budget's tolerance.
    Met,
    /// Out of reach: even the strongest setting stays below the budget (a grey image has no
    /// hue to turn); the result is that strongest setting.
    Short,
    /// Out of reach: the distance jumps across the budget between neighbouring settings
    /// (JPEG's integer qualities, the weakest JPEG already beyond the budget, or a budget
    /// finer than 8-bit levels); the result is the setting nearest the budget.
    Coarse,
}

impl Reach {
    const ALL: [Reach; 3] = [Reach::Met, Reach::Short, Reach::Coarse];

    /// `met`, `short` or `coarse`.
    pub fn name(self) -> &'static str {
        static NAMES: OnceLock<[String; 3]> = OnceLock::new();
        serde_name(&NAMES, &Reach::ALL, self)
    }
}

/// The outcome of [`Calibrator::calibrate`].
#[derive(Clone, Debug)]
pub struct Calibrated {
    /// The operation.
    pub op: Augmentation,
    /// The augmented image, `[3, H, W]` f32 on 8-bit levels on the CPU.
    pub image: Tensor,
    /// The strength used, in [`Augmentation::unit`].
    pub strength: f64,
    /// Its distance to the original, in the budget's unit.
    pub distance: f64,
    /// Whether that distance is within the budget's tolerance, and if not why.
    pub reach: Reach,
    /// How many strengths were tried.
    pub evaluations: usize,
}

/// Searches each image's strength for a [`Budget`].
pub struct Calibrator {
    budget: Budget,
    stlpips: Option<Lpips>,
}

impl Calibrator {
    /// A calibrator for `budget`; ST-LPIPS-alex is loaded from `weights`, the weights cache or
    /// the shipped copy (and runs on the CPU).
    ///
    /// # Errors
    /// [`Error::Augment`] for a budget or tolerance that is not a positive number; missing or
    /// damaged ST-LPIPS weights, named.
    pub fn new(budget: Budget, weights: Option<&Path>) -> Result<Self> {
        budget.validate()?;
        let stlpips = match budget.metric {
            BudgetMetric::DeltaE2000 => None,
            BudgetMetric::StlpipsAlex => Some(Lpips::pretrained_shift_tolerant(
                ShiftTolerantTrunk::Alex,
                weights,
                &Device::Cpu,
            )?),
        };
        Ok(Calibrator { budget, stlpips })
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The distance of `b` to `a` in the budget's unit: mean ΔE00 / 2.3, or ST-LPIPS-alex.
    ///
    /// # Shapes
    /// `a`, `b`: `[3, H, W]` or `[1, 3, H, W]` in [0, 1], the same H and W (at least 21 for
    /// ST-LPIPS).
    ///
    /// # Errors
    /// [`Error::Augment`] for shapes or values outside the contract; the network's errors.
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        let (a, b) = (check_image(a)?, check_image(b)?);
        if a.dims() != b.dims() {
            return Err(Error::Augment(format!(
                "the images differ in shape: {:?} and {:?}",
                a.dims(),
                b.dims()
            )));
        }
        let reference = self.reference(&a)?;
        self.distance_to(&reference, &a, &b)
    }

    /// What a distance to `x` needs of `x` computed once: its CIELAB for ΔE2000.
    fn reference(&self, x: &Tensor) -> Result<Tensor> {
        match self.budget.metric {
            BudgetMetric::DeltaE2000 => Ok(srgb_to_lab(&x.to_dtype(DType::F64)?)?),
            BudgetMetric::StlpipsAlex => Ok(x.clone()),
        }
    }

    fn distance_to(&self, reference: &Tensor, x: &Tensor, y: &Tensor) -> Result<f64> {
        let y = if y.rank() == 3 { y.unsqueeze(0)? } else { y.clone() };
        match &self.stlpips {
            None => {
                let lab = srgb_to_lab(&y.to_dtype(DType::F64)?)?;
                let d = delta_e2000(reference, &lab, Ciede2000Weights::default())?;
                Ok(d.mean_all()?.to_scalar::<f64>()? / JND_DELTA_E)
            }
            Some(net) => {
                let d = net.forward(x, &y)?.distance;
                Ok(d.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[0])
            }
        }
    }

    /// `image` changed by `op` at the strength whose distance to `image` lies within the
    /// budget's tolerance, found by bisection between the operation's weakest and strongest
    /// setting ([`Augmentation::range`]; integer qualities for JPEG). The seed's random parts
    /// (direction, noise) stay fixed during the search, so the distance grows with the
    /// strength. A budget out of reach is no error: [`Calibrated::reach`] says
    /// [`Reach::Short`] or [`Reach::Coarse`] and the result is the setting nearest the budget.
    ///
    /// # Shapes
    /// `image`: `[3, H, W]` or `[1, 3, H, W]` in [0, 1] (at least 21 × 21 for ST-LPIPS).
    ///
    /// # Errors
    /// [`Error::Augment`] for shapes or values outside the contract; the network's errors.
    pub fn calibrate(&self, op: Augmentation, image: &Tensor, seed: u64) -> Result<Calibrated> {
        let x = check_image(image)?;
        let reference = self.reference(&x)?;
        let Budget { value: target, tolerance, .. } = self.budget;
        let mut evaluations = 0;
        let mut eval = |s: f64| -> Result<Calibrated> {
            evaluations += 1;
            let image = op.apply_checked(&x, s, seed)?;
            let distance = self.distance_to(&reference, &x, &image)?;
            let reach =
                if (distance - target).abs() <= tolerance { Reach::Met } else { Reach::Coarse };
            Ok(Calibrated { op, image, strength: s, distance, reach, evaluations })
        };
        let (mut weak, mut strong) = op.range();
        let discrete = op == Augmentation::Jpeg;
        let top = eval(strong)?;
        if top.reach == Reach::Met {
            return Ok(top);
        }
        if top.distance < target {
            return Ok(Calibrated { reach: Reach::Short, ..top });
        }
        let bottom = eval(weak)?;
        if bottom.reach == Reach::Met || bottom.distance > target {
            // Met, or even the weakest setting overshoots: nothing lies nearer.
            return Ok(bottom);
        }
        // `weak` lies below the budget and `strong` beyond it; `best` is the nearer so far.
        let mut best = if target - bottom.distance < top.distance - target { bottom } else { top };
        loop {
            let gap = (strong - weak).abs();
            let finished = if discrete { gap <= 1.0 } else { gap <= 1e-6 * op.range().1.max(1.0) };
            if finished || best.evaluations >= MAX_EVALUATIONS {
                return Ok(best);
            }
            let mid =
                if discrete { ((weak + strong) / 2.0).floor() } else { (weak + strong) / 2.0 };
            let c = eval(mid)?;
            if c.reach == Reach::Met {
                return Ok(c);
            }
            if c.distance < target {
                weak = mid;
            } else {
                strong = mid;
            }
            let n = c.evaluations;
            if (c.distance - target).abs() < (best.distance - target).abs() {
                best = c;
            }
            best.evaluations = n;
        }
    }
}

/// A training configuration's `[augment]` section: each training image, with probability
/// `probability`, is changed by one of `ops` (uniformly drawn) at the strength whose mean ΔE00
/// to it is `budget` just-noticeable differences (± `tolerance`), before the encoder sees it —
/// it is the target x. The search runs ΔE2000 only: ST-LPIPS would run the network a dozen
/// times per image per step.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// The operations drawn from (`brightness`, `contrast`, `saturation`, `hue`, `blur`,
    /// `noise`, `jpeg`), each at most once.
    pub ops: Vec<Augmentation>,
    /// The budget in JND (mean ΔE00 / 2.3).
    pub budget: f64,
    /// The accepted deviation in JND (default 0.05).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// The chance that an image is augmented (default 1).
    #[serde(default = "always")]
    pub probability: f64,
}

fn default_tolerance() -> f64 {
    Budget::default_tolerance(BudgetMetric::DeltaE2000)
}
fn always() -> f64 {
    1.0
}

impl AugmentConfig {
    /// The budget of the section.
    pub fn budget(&self) -> Budget {
        Budget { metric: BudgetMetric::DeltaE2000, value: self.budget, tolerance: self.tolerance }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming `augment.ops`, `augment.budget`, `augment.tolerance` or
    /// `augment.probability` and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("augment.{field}: {why}")));
        if self.ops.is_empty() {
            let names: Vec<&str> = Augmentation::ALL.iter().map(|a| a.name()).collect();
            return bad("ops", format!("the list is empty; name some of {}", names.join(", ")));
        }
        for (i, op) in self.ops.iter().enumerate() {
            if self.ops[..i].contains(op) {
                return bad("ops", format!("{op} is listed twice"));
            }
        }
        for (field, v) in [("budget", self.budget), ("tolerance", self.tolerance)] {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, format!("{v} must be a positive number of JND"));
            }
        }
        if !(self.probability > 0.0 && self.probability <= 1.0) {
            return bad("probability", format!("{} must lie in (0, 1]", self.probability));
        }
        Ok(())
    }
}

/// An [`AugmentConfig`] ready to apply to batches.
pub struct Augmenter {
    config: AugmentConfig,
    calibrator: Calibrator,
}

/// What [`Augmenter::augment`] did to one image of a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Applied {
    /// The image's index in the batch.
    pub index: usize,
    /// The operation.
    pub op: Augmentation,
    /// Its strength.
    pub strength: f64,
    /// The distance reached, in JND.
    pub distance: f64,
    /// Whether it met the budget.
    pub reach: Reach,
}

impl Augmenter {
    /// The section's augmenter.
    ///
    /// # Errors
    /// As [`AugmentConfig::validate`].
    pub fn new(config: AugmentConfig) -> Result<Self> {
        config.validate()?;
        let calibrator = Calibrator::new(config.budget(), None)?;
        Ok(Augmenter { config, calibrator })
    }

    /// The batch with its images augmented, and what was done to each changed one. Image `i`
    /// at `step` is augmented or not, by which operation and with which direction and noise,
    /// as `Rng::derive(seed, [domain, step, i])` draws: a resumed run augments as an
    /// uninterrupted one, whatever the number of threads. An image whose budget is out of
    /// reach gets the setting nearest it (see [`Reach`]).
    ///
    /// # Shapes
    /// `images`: `[N, 3, H, W]` in [0, 1] → the same shape, f32 on the CPU.
    ///
    /// # Errors
    /// [`Error::Augment`] for another shape or values outside [0, 1].
    pub fn augment(&self, images: &Tensor, seed: u64, step: u64) -> Result<(Tensor, Vec<Applied>)> {
        let [n, 3, _, _] = images.dims()[..] else {
            return Err(Error::Augment(format!(
                "a batch to augment is [N, 3, H, W], got {:?}",
                images.dims()
            )));
        };
        let images = images.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let results: Vec<Result<(Tensor, Option<Applied>)>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let x = images.narrow(0, i, 1)?;
                let mut rng = Rng::derive(seed, &[BATCH, step, i as u64]);
                if rng.uniform() >= self.config.probability {
                    return Ok((x.squeeze(0)?, None));
                }
                let op = self.config.ops[rng.below(self.config.ops.len() as u64) as usize];
                let c = self.calibrator.calibrate(op, &x, rng.next_u64())?;
                let applied = Applied {
                    index: i,
                    op,
                    strength: c.strength,
                    distance: c.distance,
                    reach: c.reach,
                };
                Ok((c.image, Some(applied)))
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        let mut applied = Vec::new();
        for r in results {
            let (x, a) = r?;
            out.push(x);
            applied.extend(a);
        }
        Ok((Tensor::stack(&out, 0)?, applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_folds_any_offset_into_the_image() {
        // 0 1 2 3 | 2 1 0 1 2 3 …
        let got: Vec<usize> = (-5..9).map(|i| mirror(i, 4)).collect();
        assert_eq!(got, [1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
        assert_eq!(mirror(-7, 1), 0);
    }

    #[test]
    fn blur_keeps_constants_and_sums() {
        let v: Vec<f32> = (0..3 * 5 * 7).map(|i| if i % 9 == 0 { 1.0 } else { 0.25 }).collect();
        let x = Tensor::from_vec(v.clone(), (1, 3, 5, 7), &Device::Cpu).unwrap();
        let flat = Tensor::full(0.4f32, (1, 3, 5, 7), &Device::Cpu).unwrap();
        let b = gaussian_blur(&flat, 2.5).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(b.iter().all(|p| (p - 0.4).abs() < 1e-6));
        // Blurring spreads the peaks: the maximum falls, the minimum rises.
        let b = gaussian_blur(&x, 1.0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max = b.iter().cloned().fold(0f32, f32::max);
        assert!(max < 1.0 && b.iter().all(|&p| p >= 0.25 - 1e-6), "{max}");
    }
}
