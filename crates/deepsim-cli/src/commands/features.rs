//! `deepsim features`: a comparator's activations at one tap for each image, as safetensors.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use deepsim_comparators::weights::{self, write_safetensors_atomic, RawTensor, TensorSet};
use deepsim_comparators::{by_name, Tap};

use crate::args::{self, DeviceArg};
use crate::images;

/// Activations of a comparator at one tap for each image, written as safetensors (one
/// tensor per image, named by its file stem).
#[derive(clap::Args)]
pub struct FeaturesArgs {
    /// The comparator (the `*-random` ones are seeded AlexNets that need no weights).
    #[arg(long, value_parser = args::comparator())]
    comparator: String,
    /// Converted weights (default: the weights cache, then the shipped copy).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Tap, e.g. pool5, relu5_3, block15.
    #[arg(long, value_parser = args::tap)]
    tap: Tap,
    /// Output file (.safetensors), written atomically.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArg,
    /// Images (PNG, JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

impl FeaturesArgs {
    pub fn run(self) -> Result<()> {
        let device = self.device.device();
        let net = by_name(&self.comparator, self.weights.as_deref(), device)?;
        let mut set = TensorSet::default();
        for path in &self.images {
            let x = images::load(path, None)?.to_device(device)?;
            let f = net
                .features(&x, &[self.tap])
                .with_context(|| format!("{}", path.display()))?
                .remove(0)
                .squeeze(0)?;
            let values: Vec<f32> = f.flatten_all()?.to_vec1()?;
            let name =
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            set.insert(name, RawTensor::from_f32(f.dims().to_vec(), &values))
                .map_err(anyhow::Error::msg)?;
        }
        let meta = HashMap::from([
            ("comparator".to_owned(), self.comparator.clone()),
            ("tap".to_owned(), self.tap.name().to_owned()),
            ("writer".to_owned(), weights::CONVERTER_VERSION.to_owned()),
        ]);
        write_safetensors_atomic(&self.out, &set, meta)?;
        println!("{} images → {}", set.len(), self.out.display());
        Ok(())
    }
}
