//! `deepsim interpolate`: images decoded from codes evenly spaced between two images'
//! features (paper Fig. 7).

use std::path::PathBuf;

use anyhow::Result;
use candle::Tensor;

use crate::args::RunDeviceArg;
use crate::checkpoint::{load_image, load_model};
use crate::output::{stem, write_png_rows};

/// Decodes codes evenly spaced between two images' features (paper Fig. 7) into one row:
/// A, the interpolation, B.
#[derive(clap::Args)]
pub struct InterpolateArgs {
    /// A checkpoint written by `deepsim train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images decoded between the two ends, both included (2 to 256: one row of them).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=256))]
    steps: u16,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: RunDeviceArg,
    /// The first image.
    a: PathBuf,
    /// The second image.
    b: PathBuf,
}

impl InterpolateArgs {
    /// `steps` images decoded from codes evenly spaced between A's and B's (both ends
    /// included), between A and B themselves, as one row.
    pub fn run(self) -> Result<()> {
        let (a, b, steps) = (&self.a, &self.b, usize::from(self.steps));
        let model = load_model(&self.checkpoint, &self.device)?;
        let xa = load_image(&model, a)?.to_device(model.device())?;
        let xb = load_image(&model, b)?.to_device(model.device())?;
        let (ya, yb) = (model.encode(&xa)?, model.encode(&xb)?);
        let codes = (0..steps)
            .map(|k| {
                let t = k as f64 / (steps - 1) as f64;
                Ok(((&ya * (1.0 - t))? + (&yb * t)?)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let decoded = model.decode(&Tensor::cat(&codes, 0)?)?;
        write_png_rows(&self.out, &[Tensor::cat(&[&xa, &decoded, &xb], 0)?])?;
        println!(
            "{} | {steps} images from {}'s code to {}'s | {} → {}",
            stem(a),
            stem(a),
            stem(b),
            stem(b),
            self.out.display()
        );
        Ok(())
    }
}
