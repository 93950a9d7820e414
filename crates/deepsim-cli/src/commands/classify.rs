//! `deepsim classify`: the five most likely ImageNet classes of each image.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use deepsim_comparators::{imagenet_classes, EfficientNetLite, EfficientNetVariant};

use crate::args::DeviceArg;
use crate::images;

/// The five most likely ImageNet classes of each image (EfficientNet-Lite; shorter side
/// resized to the model's size, 224, 240 or 260, centre crop).
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// The classifier (lite0 ships with the repository; lite1, lite2 need converting).
    #[arg(long, value_enum, default_value_t = Classifier::Lite0)]
    model: Classifier,
    /// Converted weights (default: the weights cache, then the shipped copy).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Class names, one per line in class order (default: the ImageNet-1k names).
    #[arg(long)]
    labels: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArg,
    /// Images (PNG, JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// The ImageNet classifiers `classify` offers.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Classifier {
    /// EfficientNet-Lite0 at 224×224 (ships with the repository).
    Lite0,
    /// EfficientNet-Lite1 at 240×240.
    Lite1,
    /// EfficientNet-Lite2 at 260×260.
    Lite2,
}

impl Classifier {
    fn variant(self) -> EfficientNetVariant {
        match self {
            Classifier::Lite0 => EfficientNetVariant::Lite0,
            Classifier::Lite1 => EfficientNetVariant::Lite1,
            Classifier::Lite2 => EfficientNetVariant::Lite2,
        }
    }
}

impl ClassifyArgs {
    pub fn run(self) -> Result<()> {
        let variant = self.model.variant();
        let device = self.device.device();
        let net = EfficientNetLite::pretrained(variant, self.weights.as_deref(), device)?;
        let labels: Vec<String> = match &self.labels {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
                let names: Vec<String> = text.lines().map(str::to_owned).collect();
                if names.len() != 1000 {
                    bail!(
                        "{}: {} lines, expected the 1000 ImageNet classes",
                        p.display(),
                        names.len()
                    );
                }
                names
            }
            None => imagenet_classes().into_iter().map(str::to_owned).collect(),
        };
        for path in &self.images {
            let x =
                images::load_center_crop(path, variant.input_size() as u32)?.to_device(device)?;
            let logits = net.logits(&x)?.squeeze(0)?;
            let probs = candle_nn::ops::softmax(&logits, 0)?.to_vec1::<f32>()?;
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
            println!("{}", path.display());
            for &i in &order[..5] {
                println!("  {:>6.2}%  class {i:>3}  {}", probs[i] * 100.0, labels[i]);
            }
        }
        Ok(())
    }
}
