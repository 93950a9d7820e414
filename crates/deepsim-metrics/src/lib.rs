//! Perceptual measures beyond deep features, for candle: the structural similarity family
//! ([`ssim`], [`ms_ssim`], [`psnr`]) and colour ([`srgb_to_lab`] and back, [`delta_e76`],
//! [`delta_e2000`], the opponent colour space and [`opponent_loss`]), and priors
//! ([`total_variation`], [`alpha_norm`], the ε = JND colour loss [`jnd_insensitive_loss`]),
//! measures of reconstructions ([`normalized_error`], the paper's Table 2 measure, and
//! [`edge_ratio`]), and spectrogram
//! losses for audio ([`stft`], [`spectrogram_distance`], [`multi_resolution_stft_loss`]);
//! and two applications of colour difference: palettes fitted in CIELAB ([`quantize`]) and
//! sequential colormaps with equal ΔE00 steps ([`design_colormap`], [`check_colormap`]),
//! on scalar colour functions ([`lab_from_srgb`], [`ciede2000`]). Each is differentiable
//! where it serves as a loss, and checked against published values (the CIEDE2000 test data of
//! Sharma, Wu & Dalal) and reference implementations (scikit-image, pytorch-msssim).
//!
//! ```
//! use candle::{Device, Tensor};
//! use deepsim_metrics::{delta_e2000, Ciede2000Weights};
//!
//! # fn main() -> deepsim_metrics::Result<()> {
//! // Pair 1 of Sharma et al.'s test data: ΔE00 = 2.0425.
//! let lab1 = Tensor::new(&[50.0f64, 2.6772, -79.7751], &Device::Cpu)?.reshape((1, 3, 1, 1))?;
//! let lab2 = Tensor::new(&[50.0f64, 0.0, -82.7485], &Device::Cpu)?.reshape((1, 3, 1, 1))?;
//! let d = delta_e2000(&lab1, &lab2, Ciede2000Weights::default())?;
//! assert!((d.flatten_all()?.to_vec1::<f64>()?[0] - 2.0425).abs() < 1e-4);
//! # Ok(())
//! # }
//! ```

mod audio;
mod color;
mod colormap;
mod error;
mod lab;
mod priors;
mod quantize;
mod reconstruction;
mod ssim;

pub use audio::{
    magnitude, multi_resolution_stft_loss, spectral_convergence, spectrogram_distance, stft,
    SpectrogramScale, StftConfig,
};
pub use color::{
    delta_e2000, delta_e76, lab_to_srgb, linear_to_srgb, opponent_loss, spatial_mean, srgb_to_lab,
    srgb_to_linear, srgb_to_opponent, Ciede2000Weights,
};
pub use colormap::{check_colormap, design_colormap, Colormap, ColormapCheck, ColormapConfig};
pub use error::{Error, Result};
pub use lab::{
    ciede2000, delta_e00, hex_color, in_srgb_gamut, lab_from_srgb, parse_hex_color, srgb_from_lab,
    to_u8,
};
pub use priors::{alpha_norm, jnd_insensitive_loss, total_variation, JND_DELTA_E};
pub use quantize::{mean_delta_e00, quantize, PaletteSpace, QuantizeConfig, Quantized, MAX_COLORS};
pub use reconstruction::{edge_ratio, normalized_error};
pub use ssim::{ms_ssim, psnr, ssim, SsimConfig, MS_SSIM_WEIGHTS};
