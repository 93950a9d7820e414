//! `deepsim sample`: images drawn from a trained VAE's prior.

use std::path::PathBuf;

use anyhow::Result;
use candle::Tensor;
use deepsim_train::{write_grid, write_image, PerceptualDistance};

use crate::args::RunDeviceArg;
use crate::checkpoint::load_model;
use crate::output::create_dir;

/// Draws images from a trained VAE's prior: `<out>/sample_NNN.png` and `<out>/grid.png`.
#[derive(clap::Args)]
pub struct SampleArgs {
    /// A checkpoint of a VAE run (`run.task = "vae"`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// How many (1 to 4096; one PNG each, and the grid).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=4096))]
    n: u16,
    /// Seed of the latent draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Also print the samples' perceptual spread: the mean ST-LPIPS-alex over all pairs.
    #[arg(long)]
    spread: bool,
    #[command(flatten)]
    device: RunDeviceArg,
}

impl SampleArgs {
    /// `n` images from a VAE's prior, `<out>/sample_NNN.png` and `<out>/grid.png` (rows of
    /// ⌈√n⌉, the last padded with white).
    pub fn run(self) -> Result<()> {
        let (n, seed, out) = (usize::from(self.n), self.seed, &self.out);
        let model = load_model(&self.checkpoint, &self.device)?;
        let images = model.sample(n, seed)?;
        create_dir(out)?;
        for i in 0..n {
            write_image(&out.join(format!("sample_{i:03}.png")), &images.get(i)?)?;
        }
        let per_row = (n as f64).sqrt().ceil() as usize;
        let rows: Vec<Tensor> = (0..n)
            .step_by(per_row)
            .map(|start| {
                let len = per_row.min(n - start);
                let row = images.narrow(0, start, len)?;
                if len == per_row {
                    return Ok(row);
                }
                // The last row is padded with white.
                let (_, c, h, w) = row.dims4()?;
                let pad = Tensor::ones((per_row - len, c, h, w), row.dtype(), row.device())?;
                Ok(Tensor::cat(&[&row, &pad], 0)?)
            })
            .collect::<Result<_>>()?;
        write_grid(&out.join("grid.png"), &rows.iter().collect::<Vec<_>>())?;
        println!("{n} samples (seed {seed}) → {}/sample_*.png and grid.png", out.display());
        if self.spread {
            if n < 2 {
                anyhow::bail!("--spread needs at least two samples (--n {n})");
            }
            let judge = PerceptualDistance::new(None, model.device())?;
            let spread = judge.mean_pairwise(&images)?;
            println!(
                "spread: mean {} over the {} pairs: {spread:.4}",
                PerceptualDistance::NAME,
                n * (n - 1) / 2
            );
        }
        Ok(())
    }
}
