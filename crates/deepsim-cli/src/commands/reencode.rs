//! `deepsim reencode`: iterative re-encoding (paper Fig. 5).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::args::ImagesArgs;
use crate::checkpoint::{batched, load_all, load_model};
use crate::output::write_png_rows;

/// Iterative re-encoding (paper Fig. 5): encode, reconstruct, encode the reconstruction,
/// and so on; one PNG with the originals and a row after each listed iteration.
#[derive(clap::Args)]
pub struct ReencodeArgs {
    /// A checkpoint written by `deepsim train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Iterations to show, e.g. 1,2,4,8.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    iterations: Vec<usize>,
    #[command(flatten)]
    io: ImagesArgs,
}

impl ReencodeArgs {
    /// Each image encoded and reconstructed, the reconstruction encoded and reconstructed
    /// again, and so on; one row of the images per listed iteration under the originals.
    pub fn run(self) -> Result<()> {
        let iterations = &self.iterations;
        if iterations.is_empty() || iterations.contains(&0) {
            bail!("--iterations {iterations:?}: needs one or more counts of at least 1");
        }
        let model = load_model(&self.checkpoint, &self.io.device)?;
        let x = load_all(&model, &self.io.images)?;
        let last = iterations.iter().copied().max().unwrap_or(1);
        let mut rows = vec![x.clone()];
        let mut h = x;
        for k in 1..=last {
            h = batched(&h, |b| Ok(model.reconstruct(b)?))?;
            if iterations.contains(&k) {
                rows.push(h.clone());
            }
        }
        write_png_rows(&self.io.out, &rows)?;
        println!(
            "rows: originals, then after {} re-encodings → {}",
            iterations.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
            self.io.out.display()
        );
        Ok(())
    }
}
