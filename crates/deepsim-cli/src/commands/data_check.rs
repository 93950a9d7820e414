//! `deepsim data-check`: an image folder decoded as training would read it, with a summary.

use std::path::PathBuf;

use anyhow::Result;
use deepsim_data::{
    Crop, Dataset, Filter, FolderConfig, ImageFolder, Labels, Transform, Validation,
};

/// Checks an image folder as training would read it: decodes every file and prints one
/// warning per unusable file and a summary (usable, skipped by reason, converted).
#[derive(clap::Args)]
pub struct DataCheckArgs {
    /// The folder (searched recursively).
    dir: PathBuf,
    /// The crop side training will use: smaller images are reported.
    #[arg(long, default_value_t = 64)]
    crop: u32,
    /// Resize the shorter side to this first (then no image is too small).
    #[arg(long)]
    resize: Option<u32>,
    /// Labels from first-level sub-folders (files in the root are reported).
    #[arg(long)]
    labels: bool,
    /// Stop at the first unusable file with an error naming it.
    #[arg(long)]
    strict: bool,
}

impl DataCheckArgs {
    pub fn run(self) -> Result<()> {
        let transform = Transform {
            resize: self.resize,
            crop: Crop::Center(self.crop),
            hflip: false,
            filter: Filter::Bilinear,
        };
        let mut config = FolderConfig::new(transform);
        config.validation = Validation::Full;
        config.strict = self.strict;
        if self.labels {
            config.labels = Labels::Subfolders;
        }
        let set = ImageFolder::open(&self.dir, config)?;
        if let Some(classes) = set.classes() {
            println!("{} classes: {}", classes.len(), classes.join(", "));
        }
        println!("{}: {}", self.dir.display(), set.summary());
        Ok(())
    }
}
