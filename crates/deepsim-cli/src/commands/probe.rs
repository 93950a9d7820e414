//! `deepsim probe`: a linear classifier on the frozen codes of trained models (and on raw
//! pixels, and on untrained models), fitted on Fashion-MNIST's training images and scored on
//! its test images: how useful a learned code is beyond reconstruction.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use deepsim_data::{ColorMode, IdxDataset, Split, Transform};
use deepsim_train::{
    encode_labelled, pixels_labelled, Labelled, LinearProbe, Model, ProbeConfig, TrainConfig,
};

use crate::args::RunDeviceArg;
use crate::checkpoint::load_model;
use crate::output::create_parent;

/// Images per forward pass of an encoder.
const BATCH: usize = 250;

/// Fits a linear classifier (multinomial logistic regression on standardized features,
/// full-batch Adam, fixed steps) on the codes of the first `--train` Fashion-MNIST training
/// images and reports its accuracy on the first `--test` test images, for each checkpoint (a
/// VAE's posterior mean μ, an inverter's encoder features), each untrained configuration and,
/// with `--pixels`, the raw 28×28 pixels.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// A checkpoint whose encoder gives the codes (repeatable).
    #[arg(long)]
    checkpoint: Vec<PathBuf>,
    /// A configuration whose networks are probed untrained, as its `run.seed` initializes them
    /// (repeatable): the random-encoder baseline.
    #[arg(long)]
    untrained: Vec<PathBuf>,
    /// Also probe the raw pixels at Fashion-MNIST's own 28×28: the baseline a code must beat.
    #[arg(long)]
    pixels: bool,
    /// Fashion-MNIST's directory (`train-images-idx3-ubyte[.gz]` and the other three files).
    #[arg(long)]
    data: PathBuf,
    /// Training images the classifier is fitted on (the first N of the training split).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    train: u32,
    /// Test images it is scored on (the first N of the test split).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    test: u32,
    /// Full-batch Adam steps of the fit.
    #[arg(long, default_value_t = ProbeConfig::default().steps)]
    steps: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = ProbeConfig::default().lr)]
    lr: f64,
    /// L2 weight on the classifier's weights.
    #[arg(long, default_value_t = ProbeConfig::default().l2)]
    l2: f64,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    device: RunDeviceArg,
}

/// One probed code: a line of the table and of the JSON.
#[derive(serde::Serialize)]
struct Row {
    /// The checkpoint or configuration file, or `pixels`.
    source: String,
    /// `checkpoint`, `untrained` or `pixels`.
    kind: &'static str,
    /// Features per image.
    dim: usize,
    train_accuracy: f64,
    test_accuracy: f64,
    /// Mean training cross-entropy at the end of the fit.
    train_loss: f64,
    /// Seconds spent encoding both sets.
    encode_seconds: f64,
    /// Seconds spent fitting.
    fit_seconds: f64,
}

/// The settings and rows `--json` writes.
#[derive(serde::Serialize)]
struct Report<'a> {
    data: String,
    train_images: u32,
    test_images: u32,
    steps: usize,
    lr: f64,
    l2: f64,
    rows: &'a [Row],
}

impl ProbeArgs {
    fn open(&self, split: Split, transform: Transform, color: ColorMode) -> Result<IdxDataset> {
        IdxDataset::fashion_mnist(&self.data, split, transform, color).with_context(|| {
            format!("--data {}: not Fashion-MNIST's IDX files", self.data.display())
        })
    }

    /// Both sets as `model` takes them, encoded.
    fn codes(&self, model: &Model) -> Result<(Labelled, Labelled)> {
        let d = &model.config().data;
        let t = Transform::eval(d.resize, d.crop);
        let train = self.open(Split::Train, t, ColorMode::Rgb)?;
        let test = self.open(Split::Test, t, ColorMode::Rgb)?;
        Ok((
            encode_labelled(model, &train, self.train as usize, BATCH)?,
            encode_labelled(model, &test, self.test as usize, BATCH)?,
        ))
    }

    fn row(
        &self,
        source: &Path,
        kind: &'static str,
        cfg: &ProbeConfig,
        sets: impl FnOnce() -> Result<(Labelled, Labelled)>,
    ) -> Result<Row> {
        let t = Instant::now();
        let (train, test) = sets()?;
        let encode_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let probe = LinearProbe::fit(&train.x, &train.labels, 10, cfg)
            .with_context(|| format!("{}: fitting the probe", source.display()))?;
        let row = Row {
            source: source.display().to_string(),
            kind,
            dim: train.x.dim(1)?,
            train_accuracy: probe.accuracy(&train.x, &train.labels)?,
            test_accuracy: probe.accuracy(&test.x, &test.labels)?,
            train_loss: probe.train_loss(),
            encode_seconds,
            fit_seconds: t.elapsed().as_secs_f64(),
        };
        println!(
            "{:<60} {:>5} {:>9.2} % {:>8.2} % {:>7.1} s",
            row.source,
            row.dim,
            row.train_accuracy * 100.0,
            row.test_accuracy * 100.0,
            row.encode_seconds + row.fit_seconds
        );
        Ok(row)
    }

    pub fn run(self) -> Result<()> {
        if self.checkpoint.is_empty() && self.untrained.is_empty() && !self.pixels {
            bail!("nothing to probe: give --checkpoint, --untrained or --pixels");
        }
        let cfg = ProbeConfig { steps: self.steps, lr: self.lr, l2: self.l2 };
        // The data first, so that a wrong --data fails before any model is loaded.
        let pixels_train = self.open(Split::Train, Transform::identity(), ColorMode::Gray)?;
        let pixels_test = self.open(Split::Test, Transform::identity(), ColorMode::Gray)?;
        println!(
            "{:<60} {:>5} {:>11} {:>10} {:>9}",
            "source", "dim", "train acc", "test acc", "time"
        );
        let mut rows = Vec::new();
        if self.pixels {
            rows.push(self.row(Path::new("pixels"), "pixels", &cfg, || {
                Ok((
                    pixels_labelled(&pixels_train, self.train as usize)?,
                    pixels_labelled(&pixels_test, self.test as usize)?,
                ))
            })?);
        }
        for path in &self.untrained {
            let mut config = TrainConfig::from_file(path)?;
            if let Some(d) = self.device.name() {
                config.run.device = d.to_owned();
            }
            let model = Model::untrained(&config)
                .with_context(|| format!("--untrained {}", path.display()))?;
            rows.push(self.row(path, "untrained", &cfg, || self.codes(&model))?);
        }
        for path in &self.checkpoint {
            let model = load_model(path, &self.device)?;
            rows.push(self.row(path, "checkpoint", &cfg, || self.codes(&model))?);
        }
        if let Some(out) = &self.json {
            create_parent(out)?;
            let report = Report {
                data: self.data.display().to_string(),
                train_images: self.train,
                test_images: self.test,
                steps: self.steps,
                lr: self.lr,
                l2: self.l2,
                rows: &rows,
            };
            deepsim_data::write_atomic(out, &serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("--json {}", out.display()))?;
        }
        Ok(())
    }
}
