//! `deepsim augment`: images changed by brightness, contrast, saturation, hue, blur, noise or
//! JPEG at the strength whose perceptual distance to the original hits a budget; one PNG per
//! image and operation, and a CSV of the strength and distance each got.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use deepsim_data::{splitmix64, write_atomic_io, Rng};
use deepsim_train::{
    write_image, Augmentation, Budget, BudgetMetric, Calibrated, Calibrator, Reach,
};

use crate::images;

/// Writes each image changed by each operation at the strength (found per image) whose
/// distance to the original is the budget: mean ΔE00 / 2.3 in just-noticeable differences
/// (`delta-e2000`), or ST-LPIPS-alex. Writes `OUT/STEM_OP.png` and `OUT/augment.csv` (also
/// printed): image, op, unit, strength, distance, budget, metric, reach (`met`, or `short` /
/// `coarse` when the operation cannot reach the budget on that image, also warned on stderr).
/// With `--strength` instead of `--budget`, every image gets that one strength and the CSV
/// shows the distance it makes (reach `fixed`): how unequal a fixed strength is.
#[derive(clap::Args)]
pub struct AugmentArgs {
    /// The images (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The folder the PNGs and augment.csv go to (created when missing).
    #[arg(long)]
    out: PathBuf,
    /// The operations, comma-separated.
    #[arg(long, required = true, value_delimiter = ',', value_parser = op_arg())]
    ops: Vec<Augmentation>,
    /// The distance to reach: JND for delta-e2000, the raw distance for stlpips-alex.
    #[arg(long, value_parser = positive, required_unless_present = "strength")]
    budget: Option<f64>,
    /// Apply this strength to every image instead of searching one (in each operation's unit:
    /// brightness |sRGB offset|, contrast and saturation |log2 factor|, hue degrees, blur
    /// sigma in pixels, noise sigma, jpeg quality) and report the distance it makes.
    #[arg(long, conflicts_with = "budget")]
    strength: Option<f64>,
    /// The distance the budget is measured in.
    #[arg(long, default_value = "delta-e2000", value_parser = metric_arg())]
    metric: BudgetMetric,
    /// The accepted deviation from the budget [default: 0.05 for delta-e2000, 0.005 for
    /// stlpips-alex].
    #[arg(long, value_parser = positive)]
    tolerance: Option<f64>,
    /// Seeds each image's direction (brighter or darker, …) and noise, with its file name.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ST-LPIPS-alex weights (default: the weights cache, then the shipped copy).
    #[arg(long)]
    weights: Option<PathBuf>,
}

fn op_arg() -> impl TypedValueParser<Value = Augmentation> {
    let names: Vec<&str> = Augmentation::ALL.iter().map(|a| a.name()).collect();
    PossibleValuesParser::new(names)
        .try_map(|s| s.parse::<Augmentation>().map_err(|e| e.to_string()))
}

fn metric_arg() -> impl TypedValueParser<Value = BudgetMetric> {
    let names: Vec<&str> = BudgetMetric::ALL.iter().map(|m| m.name()).collect();
    PossibleValuesParser::new(names)
        .try_map(|s| s.parse::<BudgetMetric>().map_err(|e| e.to_string()))
}

/// A positive, finite number.
fn positive(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a positive number")),
        Err(e) => Err(e.to_string()),
    }
}

/// The seed of `file`'s augmentations: the run's seed mixed with its file name, so that an
/// image gets the same direction and noise whatever else is on the command line.
fn file_seed(seed: u64, file: &Path) -> u64 {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.bytes().fold(splitmix64(seed), |h, b| splitmix64(h ^ u64::from(b)))
}

impl AugmentArgs {
    pub fn run(self) -> Result<()> {
        if self.weights.is_some() && self.metric != BudgetMetric::StlpipsAlex {
            bail!("--weights are ST-LPIPS-alex's: they go with --metric stlpips-alex");
        }
        let mut stems: BTreeMap<String, &Path> = BTreeMap::new();
        for path in &self.images {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .with_context(|| format!("{}: not a file name", path.display()))?;
            if let Some(other) = stems.insert(stem.clone(), path) {
                bail!(
                    "{} and {} would both be written as {stem}_OP.png in {}: rename one",
                    other.display(),
                    path.display(),
                    self.out.display()
                );
            }
        }
        let budget = Budget {
            metric: self.metric,
            // With --strength the calibrator only measures: any valid budget serves.
            value: self.budget.unwrap_or(1.0),
            tolerance: self.tolerance.unwrap_or(Budget::default_tolerance(self.metric)),
        };
        let calibrator = Calibrator::new(budget, self.weights.as_deref())?;
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create --out {}", self.out.display()))?;
        let header = ["image", "op", "unit", "strength", "distance", "budget", "metric", "reach"];
        let mut file = csv::Writer::from_writer(Vec::new());
        let mut shown = csv::Writer::from_writer(std::io::stdout());
        file.write_record(header)?;
        shown.write_record(header)?;
        let mut missed = 0;
        for path in &self.images {
            let image = images::load(path, None)?;
            let seed = file_seed(self.seed, path);
            let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
            for &op in &self.ops {
                let op_seed = Rng::derive(seed, &[op as u64]).next_u64();
                let c = match self.strength {
                    Some(s) => op.apply(&image, s, op_seed).and_then(|changed| {
                        let distance = calibrator.distance(&image, &changed)?;
                        Ok(Calibrated {
                            op,
                            image: changed,
                            strength: s,
                            distance,
                            reach: Reach::Met,
                            evaluations: 1,
                        })
                    }),
                    None => calibrator.calibrate(op, &image, op_seed),
                }
                .with_context(|| format!("{}: {op}", path.display()))?;
                let png = self.out.join(format!("{stem}_{op}.png"));
                write_image(&png, &c.image)?;
                let strength = match op {
                    Augmentation::Jpeg => format!("{}", c.strength),
                    _ => format!("{:.4}", c.strength),
                };
                let row = [
                    path.display().to_string(),
                    op.to_string(),
                    op.unit().to_string(),
                    strength,
                    format!("{:.4}", c.distance),
                    self.budget.map(|b| b.to_string()).unwrap_or_default(),
                    budget.metric.to_string(),
                    if self.strength.is_some() { "fixed" } else { c.reach.name() }.to_string(),
                ];
                file.write_record(&row)?;
                shown.write_record(&row)?;
                shown.flush()?;
                if c.reach != Reach::Met {
                    missed += 1;
                    eprintln!(
                        "warning: {} {op}: the budget {} ± {} {} is out of reach ({}): {:.4} at \
                         {} {}",
                        path.display(),
                        budget.value,
                        budget.tolerance,
                        budget.metric.unit(),
                        match c.reach {
                            Reach::Short => "its strongest setting falls short",
                            _ => "the distance jumps across it between neighbouring settings",
                        },
                        c.distance,
                        c.strength,
                        op.unit()
                    );
                }
            }
        }
        let csv_path = self.out.join("augment.csv");
        let bytes = file.into_inner().context("augment.csv")?;
        write_atomic_io(&csv_path, &bytes).with_context(|| format!("{}", csv_path.display()))?;
        if missed > 0 {
            eprintln!(
                "{missed} image and operation pairs missed the budget (reach ≠ met in the CSV)"
            );
        }
        Ok(())
    }
}
