//! `deepsim ablation`: the loss terms side by side (paper Fig. 1), one row of
//! reconstructions per checkpoint.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle::Tensor;
use deepsim_train::write_labelled_grid;

use crate::args::ImagesArgs;
use crate::checkpoint::{batched, load_model, ImageSets};
use crate::output::create_parent;

/// Loss terms side by side (paper Fig. 1): the originals, then one row of reconstructions
/// per checkpoint (e.g. runs with λ_adv or λ_feat set to 0), each labelled with its method.
#[derive(clap::Args)]
pub struct AblationArgs {
    /// Checkpoints, one row each, in order.
    #[arg(long = "checkpoint", required = true)]
    checkpoints: Vec<PathBuf>,
    #[command(flatten)]
    io: ImagesArgs,
}

impl AblationArgs {
    /// The originals, then each checkpoint's reconstructions, one row each (the checkpoints'
    /// methods are printed in row order).
    pub fn run(self) -> Result<()> {
        let mut rows = Vec::new();
        let mut names = vec!["originals".to_owned()];
        // The grid's row labels: the methods (the names printed add the checkpoints).
        let mut labels = names.clone();
        let mut sets = ImageSets::default();
        // The row of originals is the first checkpoint's view of the images; every other
        // checkpoint must see the same (resize, crop), or its row would show other pixels.
        let mut first: Option<(u32, u32)> = None;
        for ckpt in &self.checkpoints {
            let model = load_model(ckpt, &self.io.device)?;
            let d = &model.config().data;
            match first {
                None => first = Some((d.resize, d.crop)),
                Some((resize, crop)) if (d.resize, d.crop) != (resize, crop) => bail!(
                    "{}: validates on images resized to {} and cropped to {}, the first \
                     checkpoint on {resize} and {crop}; one grid needs the same view of the \
                     images",
                    ckpt.display(),
                    d.resize,
                    d.crop
                ),
                Some(_) => {}
            }
            let x = sets.get(&model, &self.io.images)?;
            if rows.is_empty() {
                rows.push(x.clone());
            }
            rows.push(batched(&x, |b| Ok(model.reconstruct(b)?))?);
            labels.push(model.config().method());
            names.push(format!("{} ({})", model.config().method(), ckpt.display()));
        }
        create_parent(&self.io.out)?;
        let labelled: Vec<(&str, &Tensor)> =
            labels.iter().map(String::as_str).zip(rows.iter()).collect();
        write_labelled_grid(&self.io.out, &labelled)?;
        for (i, n) in names.iter().enumerate() {
            println!("row {}: {n}", i + 1);
        }
        println!("→ {}", self.io.out.display());
        Ok(())
    }
}
