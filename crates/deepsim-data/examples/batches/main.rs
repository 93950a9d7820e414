//! A folder of images as training batches: opens the folder (recursively; bad files skipped and
//! counted), then takes a few batches of random 128×128 crops and flips from the loader,
//! printing their shapes and statistics and where a checkpoint would resume.
//!
//!     cargo run --release -p deepsim-data --example batches -- [DIR] [BATCHES]
//!
//! The default folder is the repository's `data/photos/train`, the default count 3.

// ANCHOR: readme
use std::sync::Arc;

use deepsim_data::{Dataset, FolderConfig, ImageFolder, Loader, LoaderConfig, Transform};

/// Batches of 8 random 128×128 crops (after resizing the shorter side to 144) of the images
/// under `dir`, the same for a seed whatever the thread count.
fn loader(dir: &str) -> deepsim_data::Result<Loader> {
    let folder = ImageFolder::open(dir, FolderConfig::new(Transform::train(144, 128)))?;
    println!("{dir}: {} images; {}", folder.len(), folder.summary());
    let config = LoaderConfig { seed: 7, ..LoaderConfig::new(8) };
    Loader::new(Arc::new(folder), config)
}
// ANCHOR_END: readme

use std::path::Path;

use anyhow::Context;
use deepsim_data::Position;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        data.canonicalize().unwrap_or(data).join("photos/train").display().to_string()
    });
    let batches = match args.next() {
        Some(a) => {
            a.parse::<usize>().with_context(|| format!("BATCHES must be a number, got {a:?}"))?
        }
        None => 3,
    };
    let loader = loader(&dir)?;
    println!("{} batches per epoch", loader.batches_per_epoch());
    let mut stream = loader.stream(Position::default())?;
    for _ in 0..batches {
        let Some(batch) = stream.next() else { break };
        let batch = batch?;
        let x = &batch.images;
        println!(
            "epoch {} batch {}: images {:?}, values in [{:.3}, {:.3}], mean {:.3}; samples {:?}",
            batch.position.epoch,
            batch.position.batch,
            x.dims(),
            x.min_all()?.to_scalar::<f32>()?,
            x.max_all()?.to_scalar::<f32>()?,
            x.mean_all()?.to_scalar::<f32>()?,
            batch.indices
        );
    }
    println!("resume at {:?}", stream.next_position());
    Ok(())
}
