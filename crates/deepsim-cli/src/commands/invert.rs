//! `deepsim invert`: a trained checkpoint's reconstructions of images from their features.

use std::path::PathBuf;

use anyhow::Result;
use deepsim_train::{normalized_error, write_grid, write_image};

use crate::args::ImagesArgs;
use crate::checkpoint::{load_all, load_model};
use crate::output::{create_dir, output_names};

/// Reconstructs images from their features with a trained inverter (or a VAE from its
/// posterior mean): `<out>/<stem>.png` for each and `<out>/grid.png`.
#[derive(clap::Args)]
#[command(mut_arg("out", |a| a.help("Output directory")))]
pub struct InvertArgs {
    /// A checkpoint written by `deepsim train`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    io: ImagesArgs,
}

impl InvertArgs {
    /// Each image's reconstruction from its features, as `<out>/<stem>.png`, and
    /// `<out>/grid.png` (originals above reconstructions).
    pub fn run(self) -> Result<()> {
        let ImagesArgs { out, device, images } = &self.io;
        let model = load_model(&self.checkpoint, device)?;
        let x = load_all(&model, images)?.to_device(model.device())?;
        let code = model.encode(&x)?;
        let recon = model.decode(&code)?;
        create_dir(out)?;
        for (i, (path, name)) in images.iter().zip(output_names(images)).enumerate() {
            let file = out.join(format!("{name}.png"));
            write_image(&file, &recon.get(i)?)?;
            println!("{} → {}", path.display(), file.display());
        }
        write_grid(&out.join("grid.png"), &[&x, &recon])?;
        if images.len() >= 2 {
            let img = normalized_error(&recon, &x)?;
            let feat = normalized_error(&model.encode(&recon)?, &code)?;
            println!(
                "normalized error over these {} images: image space {:.1} %, feature space \
                 {:.1} %",
                images.len(),
                img * 100.0,
                feat * 100.0
            );
        }
        println!("grid (originals | reconstructions) → {}", out.join("grid.png").display());
        Ok(())
    }
}
