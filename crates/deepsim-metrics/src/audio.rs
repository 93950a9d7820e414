//! Spectrogram losses for audio: a differentiable short-time Fourier transform (Hann window,
//! any size and hop), distances between magnitude and log-magnitude spectrograms, and the
//! multi-resolution STFT loss of Yamamoto, Song & Kim (*Parallel WaveGAN*, ICASSP 2020):
//! spectral convergence plus log-magnitude distance, averaged over three resolutions.
//!
//! The STFT is `torch.stft`'s with `center=True`, `pad_mode='reflect'`, a periodic Hann window
//! of `win_length` samples centred in `n_fft`, and one-sided output: frames are gathered from
//! the reflect-padded signal, windowed, and multiplied by the DFT's cosine and sine matrices,
//! so every step is a differentiable candle op.

use candle::{DType, Tensor};

use crate::color::floor_at;
use crate::error::{Error, Result};

/// The framing of an STFT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StftConfig {
    /// FFT size: frequencies `0 ..= n_fft / 2`.
    pub n_fft: usize,
    /// Samples between frame starts.
    pub hop: usize,
    /// Length of the Hann window (≤ `n_fft`), centred in the frame.
    pub win_length: usize,
}

impl StftConfig {
    /// The three resolutions of Parallel WaveGAN's multi-resolution loss: (FFT, hop, window)
    /// = (1024, 120, 600), (2048, 240, 1200), (512, 50, 240).
    pub fn parallel_wavegan() -> [StftConfig; 3] {
        [
            StftConfig { n_fft: 1024, hop: 120, win_length: 600 },
            StftConfig { n_fft: 2048, hop: 240, win_length: 1200 },
            StftConfig { n_fft: 512, hop: 50, win_length: 240 },
        ]
    }

    fn check(&self) -> Result<()> {
        if self.n_fft < 2 || self.hop == 0 || self.win_length == 0 || self.win_length > self.n_fft {
            return Err(Error::Config {
                what: "StftConfig",
                reason: format!("{self:?}: expected n_fft ≥ 2, hop ≥ 1, 1 ≤ win_length ≤ n_fft"),
            });
        }
        Ok(())
    }
}

/// Waveforms `[N, T]` (or `[T]`) as `[N, T]`, checked long enough for the reflect padding.
fn waveforms(x: &Tensor, cfg: &StftConfig) -> Result<Tensor> {
    let x = match x.rank() {
        1 => x.unsqueeze(0)?,
        2 => x.clone(),
        _ => {
            return Err(Error::Input {
                measure: "stft",
                arg: "x",
                shape: x.dims().to_vec(),
                reason: "expected waveforms [N, T] or [T]".into(),
            })
        }
    };
    let t = x.dim(1)?;
    if t <= cfg.n_fft / 2 {
        return Err(Error::Input {
            measure: "stft",
            arg: "x",
            shape: x.dims().to_vec(),
            reason: format!(
                "{t} samples; reflect padding needs more than n_fft / 2 = {}",
                cfg.n_fft / 2
            ),
        });
    }
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Err(Error::Input {
            measure: "stft",
            arg: "x",
            shape: x.dims().to_vec(),
            reason: format!("dtype {:?}, expected f32 or f64", x.dtype()),
        });
    }
    Ok(x)
}

/// The real and imaginary parts of the one-sided STFT, each `[N, n_fft / 2 + 1, frames]`.
///
/// # Errors
/// A bad config, waveforms of another rank or dtype, or too short for the padding.
pub fn stft(x: &Tensor, cfg: &StftConfig) -> Result<(Tensor, Tensor)> {
    cfg.check()?;
    let x = waveforms(x, cfg)?;
    let (n, t) = x.dims2()?;
    let (n_fft, pad) = (cfg.n_fft, cfg.n_fft / 2);
    let frames = 1 + (t + 2 * pad - n_fft) / cfg.hop;
    // Sample index of each frame position in the reflect-padded signal.
    let reflect = |j: usize| -> u32 {
        let s = j as isize - pad as isize;
        let s = if s < 0 { -s } else { s };
        let last = t as isize - 1;
        (if s > last { 2 * last - s } else { s }) as u32
    };
    let idx: Vec<u32> =
        (0..frames).flat_map(|f| (0..n_fft).map(move |k| reflect(f * cfg.hop + k))).collect();
    let idx = Tensor::from_vec(idx, frames * n_fft, x.device())?;
    let framed = x.index_select(&idx, 1)?.reshape((n, frames, n_fft))?;
    // Periodic Hann window of win_length, centred in n_fft.
    let left = (n_fft - cfg.win_length) / 2;
    let window: Vec<f64> = (0..n_fft)
        .map(|i| match i.checked_sub(left) {
            Some(m) if m < cfg.win_length => {
                0.5 - 0.5 * (2.0 * std::f64::consts::PI * m as f64 / cfg.win_length as f64).cos()
            }
            _ => 0.0,
        })
        .collect();
    let bins = n_fft / 2 + 1;
    // Window folded into the DFT matrices: cos(2πkm/N)·w[m] and −sin(2πkm/N)·w[m], [n_fft, bins].
    let mut cos = Vec::with_capacity(n_fft * bins);
    let mut sin = Vec::with_capacity(n_fft * bins);
    for (m, w) in window.iter().enumerate() {
        for k in 0..bins {
            let angle = 2.0 * std::f64::consts::PI * ((k * m) % n_fft) as f64 / n_fft as f64;
            cos.push(angle.cos() * w);
            sin.push(-angle.sin() * w);
        }
    }
    let dev = x.device();
    let mat = |v: Vec<f64>| -> Result<Tensor> {
        Ok(Tensor::from_vec(v, (n_fft, bins), dev)?.to_dtype(x.dtype())?)
    };
    let flat = framed.reshape((n * frames, n_fft))?;
    let spectrum = |m: Tensor| -> Result<Tensor> {
        Ok(flat.matmul(&m)?.reshape((n, frames, bins))?.transpose(1, 2)?.contiguous()?)
    };
    Ok((spectrum(mat(cos)?)?, spectrum(mat(sin)?)?))
}

/// The magnitude spectrogram `√max(re² + im², 10⁻⁷)`, `[N, n_fft / 2 + 1, frames]` (the floor
/// keeps the log and the gradient finite in silence, as Parallel WaveGAN's loss does).
///
/// # Errors
/// As [`stft`].
pub fn magnitude(x: &Tensor, cfg: &StftConfig) -> Result<Tensor> {
    let (re, im) = stft(x, cfg)?;
    Ok(floor_at(&(re.sqr()? + im.sqr()?)?, 1e-7)?.sqrt()?)
}

/// The scale on which [`spectrogram_distance`] compares magnitudes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpectrogramScale {
    /// |S|.
    Magnitude,
    /// log |S|: relative differences, closer to loudness perception.
    #[default]
    LogMagnitude,
}

/// The mean absolute difference of two waveforms' spectrograms on `scale`, per waveform.
///
/// # Shapes
/// `x`, `y`: `[N, T]` (or `[T]`) → `[N]`.
///
/// # Errors
/// As [`stft`]; shapes that differ.
pub fn spectrogram_distance(
    x: &Tensor,
    y: &Tensor,
    cfg: &StftConfig,
    scale: SpectrogramScale,
) -> Result<Tensor> {
    let (sx, sy) = magnitudes(x, y, cfg)?;
    mean_abs_difference(&sx, &sy, scale)
}

/// Spectral convergence `‖|Y| − |X|‖_F / ‖|Y|‖_F` per waveform (`y` the reference).
///
/// # Errors
/// As [`spectrogram_distance`].
pub fn spectral_convergence(x: &Tensor, y: &Tensor, cfg: &StftConfig) -> Result<Tensor> {
    let (sx, sy) = magnitudes(x, y, cfg)?;
    convergence(&sx, &sy)
}

/// The multi-resolution STFT loss per waveform: the mean over `resolutions` of spectral
/// convergence plus log-magnitude distance ([`StftConfig::parallel_wavegan`] for the
/// published setting).
///
/// # Errors
/// As [`spectrogram_distance`]; no resolutions.
pub fn multi_resolution_stft_loss(
    x: &Tensor,
    y: &Tensor,
    resolutions: &[StftConfig],
) -> Result<Tensor> {
    if resolutions.is_empty() {
        return Err(Error::Config {
            what: "multi_resolution_stft_loss",
            reason: "no resolutions".into(),
        });
    }
    let mut total: Option<Tensor> = None;
    for cfg in resolutions {
        let (sx, sy) = magnitudes(x, y, cfg)?;
        let term = (convergence(&sx, &sy)?
            + mean_abs_difference(&sx, &sy, SpectrogramScale::LogMagnitude)?)?;
        total = Some(match total {
            Some(t) => (t + term)?,
            None => term,
        });
    }
    Ok((total.expect("at least one resolution") / resolutions.len() as f64)?)
}

/// Both waveforms' magnitude spectrograms, after checking that their shapes agree.
fn magnitudes(x: &Tensor, y: &Tensor, cfg: &StftConfig) -> Result<(Tensor, Tensor)> {
    if x.dims() != y.dims() {
        return Err(Error::Input {
            measure: "spectrogram loss",
            arg: "y",
            shape: y.dims().to_vec(),
            reason: format!("differs from the first waveform's shape {:?}", x.dims()),
        });
    }
    // One transform of both: the framing indices and the windowed DFT matrices are built once.
    let both = Tensor::cat(&[&waveforms(x, cfg)?, &waveforms(y, cfg)?], 0)?;
    let m = magnitude(&both, cfg)?;
    let n = m.dim(0)? / 2;
    Ok((m.narrow(0, 0, n)?, m.narrow(0, n, n)?))
}

fn mean_abs_difference(sx: &Tensor, sy: &Tensor, scale: SpectrogramScale) -> Result<Tensor> {
    let d = match scale {
        SpectrogramScale::Magnitude => (sx - sy)?,
        SpectrogramScale::LogMagnitude => (sx.log()? - sy.log()?)?,
    };
    Ok(d.abs()?.flatten_from(1)?.mean(1)?)
}

fn convergence(sx: &Tensor, sy: &Tensor) -> Result<Tensor> {
    let frob = |t: &Tensor| -> Result<Tensor> { Ok(t.sqr()?.flatten_from(1)?.sum(1)?.sqrt()?) };
    Ok((frob(&(sy - sx)?)? / frob(sy)?)?)
}
