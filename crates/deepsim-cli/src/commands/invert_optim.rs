//! `deepsim invert-optim`: reconstructions of images from a network's features by
//! optimization (Mahendran & Vedaldi 2015), and the batched inversion `eval` shares.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use candle::{Device, Tensor};
use deepsim_comparators::{by_name, Comparator, Tap};
use deepsim_train::{
    invert_by_optimization, normalized_error, write_grid, write_image, OptimInversionConfig,
};

use crate::args::{self, DeviceArg, OptimArgs};
use crate::checkpoint::batches;
use crate::images::load_square;
use crate::output::{create_dir, output_names};

/// Reconstructs images from a network's features by gradient descent on the image with a
/// total-variation prior (Mahendran & Vedaldi 2015, the paper's optimization baseline):
/// `<out>/<stem>.png` and `<out>/grid.png`.
#[derive(clap::Args)]
pub struct InvertOptimArgs {
    /// The network (as for `features`).
    #[arg(long, value_parser = args::comparator())]
    network: String,
    /// Converted weights (default: the weights cache).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The layer to invert, e.g. conv5, fc6.
    #[arg(long, value_parser = args::tap)]
    tap: Tap,
    /// Side of the square images (centre crop).
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Resize the shorter side to this before cropping (default: --size).
    #[arg(long)]
    resize: Option<u32>,
    #[command(flatten)]
    optim_cfg: OptimArgs,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArg,
    /// Images (PNG, JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

impl InvertOptimArgs {
    /// Reconstructions of the images from the network's features at the tap by optimization,
    /// `<out>/<stem>.png` and `<out>/grid.png`, with the objective's descent and the
    /// normalized errors.
    pub fn run(self) -> Result<()> {
        let (images, out, tap, size) = (&self.images, &self.out, self.tap, self.size);
        let cfg = self.optim_cfg.config();
        let device = self.device.device();
        let encoder: Arc<dyn Comparator + Send + Sync> =
            Arc::from(by_name(&self.network, self.weights.as_deref(), device)?);
        let x = Tensor::cat(
            &images
                .iter()
                .map(|p| load_square(p, self.resize.unwrap_or(size), size))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let inv = optimize_in_batches(&encoder, tap, &x, size as usize, &cfg, device)?;
        create_dir(out)?;
        for (i, name) in output_names(images).iter().enumerate() {
            write_image(&out.join(format!("{name}.png")), &inv.images.get(i)?)?;
        }
        write_grid(&out.join("grid.png"), &[&x, &inv.images])?;
        let (first, last) = (inv.curve[0], inv.curve[inv.curve.len() - 1]);
        println!(
            "objective (first batch, mean per image): {first:.4} → {last:.4} in {} steps",
            cfg.steps
        );
        if images.len() >= 2 {
            println!(
                "normalized error over these {} images: image space {:.1} %, feature space ({}) \
                 {:.1} %",
                images.len(),
                normalized_error(&inv.images, &x)? * 100.0,
                tap.name(),
                normalized_error(&inv.reached, &inv.targets)? * 100.0
            );
        }
        println!("grid (originals | reconstructions) → {}", out.join("grid.png").display());
        Ok(())
    }
}

/// What [`optimize_in_batches`] returns, on the CPU.
pub struct BatchedInversion {
    /// The reconstructions.
    pub images: Tensor,
    /// The features they were fitted to.
    pub targets: Tensor,
    /// The features the reconstructions reached.
    pub reached: Tensor,
    /// The mean objective at each step of the first batch.
    pub curve: Vec<f64>,
}

/// Inversion by optimization of `x`'s features, a batch of images at a time.
pub fn optimize_in_batches(
    encoder: &Arc<dyn Comparator + Send + Sync>,
    tap: Tap,
    x: &Tensor,
    side: usize,
    cfg: &OptimInversionConfig,
    device: &Device,
) -> Result<BatchedInversion> {
    let (mut images, mut targets, mut reached) = (Vec::new(), Vec::new(), Vec::new());
    let mut curve = Vec::new();
    for xb in batches(x)? {
        let xb = xb.to_device(device)?;
        let target = encoder.features(&xb, &[tap])?.remove(0).detach();
        let inv = invert_by_optimization(encoder, tap, &target, side, cfg, device)?;
        if curve.is_empty() {
            curve = inv.objective;
        }
        images.push(inv.images.to_device(&Device::Cpu)?);
        targets.push(target.to_device(&Device::Cpu)?);
        reached.push(inv.features.to_device(&Device::Cpu)?);
    }
    Ok(BatchedInversion {
        images: Tensor::cat(&images, 0)?,
        targets: Tensor::cat(&targets, 0)?,
        reached: Tensor::cat(&reached, 0)?,
        curve,
    })
}
