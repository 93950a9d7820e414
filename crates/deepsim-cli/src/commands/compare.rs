//! `deepsim compare`: the perceptual distance between two images, or between the files of two
//! folders matched by name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use clap::ValueEnum;
use deepsim_comparators::{by_name, Comparator, Lpips, Tap, Vit, VitPreset, COMPARATORS};
use deepsim_metrics::{self as metrics, SsimConfig};
use serde::Serialize;

use crate::args::{self, DeviceArg};
use crate::images;

/// The perceptual distance between two images (one number), or between the files of two
/// folders matched by name (one CSV line each). By default ST-LPIPS-alex, from the weights
/// that ship with the repository.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// stlpips-alex (default), stlpips-vgg (ST-LPIPS, shift-tolerant), lpips-alex,
    /// lpips-vgg, lpips-squeeze, clip or dino (cosine distance of the CLIP ViT-B/32 or
    /// DINOv2 ViT-S/14 image embeddings, as DreamSim compares), clip:TAP or dino:TAP (e.g.
    /// dino:block11.cls), feature:COMPARATOR:TAP (mean squared difference at the tap); or,
    /// needing no weights: ssim, ms-ssim (a similarity: 1 for identical images),
    /// psnr (dB), delta-e76, delta-e2000 (mean CIELAB colour difference per pixel), opponent
    /// (mean squared opponent-colour difference, equal weights).
    #[arg(long, default_value = "stlpips-alex", value_parser = metric_arg)]
    metric: MetricArg,
    /// Converted weights: the trunk (LPIPS), the whole model (ST-LPIPS) or the comparator
    /// (default: the weights cache, then the shipped copy).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Converted LPIPS heads (default: the weights cache).
    #[arg(long)]
    heads: Option<PathBuf>,
    /// Print JSON with the per-layer values and their taps ((ST-)LPIPS).
    #[arg(long)]
    json: bool,
    /// Write the spatial distance map ((ST-)LPIPS, at the input's size) as a PNG heat map,
    /// scaled to its largest value (printed on stderr); one pair only.
    #[arg(long)]
    map: Option<PathBuf>,
    /// Resize B to A's size instead of refusing different sizes.
    #[arg(long)]
    resize: bool,
    /// `native` (the metric's own unit) or `jnd`: a colour difference (delta-e2000,
    /// delta-e76) in just-noticeable differences, ΔE / 2.3 (Sharma 2003): below 1, a viewer
    /// would not tell the two images' colours apart.
    #[arg(long, value_enum, default_value_t = Units::Native)]
    units: Units,
    // The device of the networks (the measures needing no weights run on the CPU).
    #[command(flatten)]
    device: DeviceArg,
    /// First image or folder.
    a: PathBuf,
    /// Second image or folder.
    b: PathBuf,
}

/// `--units`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Units {
    /// The metric's own unit.
    Native,
    /// Just-noticeable differences of colour: ΔE / 2.3.
    Jnd,
}

/// A `--metric`: the text as given (which the CSV header and the JSON repeat) and what it
/// measures.
#[derive(Clone, Debug)]
struct MetricArg {
    text: String,
    kind: MetricKind,
}

#[derive(Clone, Debug)]
enum MetricKind {
    Named(Named),
    /// `feature:COMPARATOR:TAP`, and `clip:TAP` / `dino:TAP` for the vision transformers.
    Feature {
        comparator: String,
        tap: Tap,
    },
    /// `clip` or `dino`: the cosine distance of the images' embeddings, as DreamSim compares.
    Embedding(VitPreset),
}

/// `clip` and `dino`: the short names of the vision transformers' metrics.
fn vit_metric(name: &str) -> Option<VitPreset> {
    match name {
        "clip" => Some(VitPreset::ClipVitB32),
        "dino" => Some(VitPreset::Dinov2VitS14),
        _ => None,
    }
}

/// The metrics called by a name alone (used for parsing and listing, not as the argument's
/// type, since `feature:COMPARATOR:TAP` is open-ended).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Named {
    #[value(name = "stlpips-alex")]
    StlpipsAlex,
    #[value(name = "stlpips-vgg")]
    StlpipsVgg,
    #[value(name = "lpips-alex")]
    LpipsAlex,
    #[value(name = "lpips-vgg")]
    LpipsVgg,
    #[value(name = "lpips-squeeze")]
    LpipsSqueeze,
    #[value(name = "ssim")]
    Ssim,
    #[value(name = "ms-ssim")]
    MsSsim,
    #[value(name = "psnr")]
    Psnr,
    #[value(name = "delta-e76")]
    DeltaE76,
    #[value(name = "delta-e2000")]
    DeltaE2000,
    #[value(name = "opponent")]
    Opponent,
}

/// The value parser of `--metric`: a name of [`Named`] or `feature:COMPARATOR:TAP`, with
/// COMPARATOR one of [`COMPARATORS`] and TAP a tap name; the error lists the allowed forms.
fn metric_arg(text: &str) -> Result<MetricArg, String> {
    let kind = match text.split(':').collect::<Vec<_>>()[..] {
        ["feature", comparator, tap] => {
            if !COMPARATORS.contains(&comparator) {
                return Err(format!(
                    "unknown comparator `{comparator}` in `{text}`: {}",
                    COMPARATORS.join(", ")
                ));
            }
            MetricKind::Feature { comparator: comparator.to_owned(), tap: args::tap(tap)? }
        }
        [short] if vit_metric(short).is_some() => {
            MetricKind::Embedding(vit_metric(short).expect("matched"))
        }
        [short, tap] if vit_metric(short).is_some() => {
            let preset = vit_metric(short).expect("matched");
            MetricKind::Feature { comparator: preset.name().to_owned(), tap: args::tap(tap)? }
        }
        ["feature", comparator] => {
            return Err(format!(
                "`{text}` needs a tap: feature:{comparator}:TAP, e.g. feature:alexnet:conv5 or \
                 feature:efficientnet-lite0:block2"
            ))
        }
        _ => match Named::from_str(text, false) {
            Ok(named) => MetricKind::Named(named),
            Err(_) => {
                let names: Vec<String> = Named::value_variants()
                    .iter()
                    .filter_map(|n| n.to_possible_value().map(|v| v.get_name().to_owned()))
                    .collect();
                return Err(format!(
                    "unknown metric `{text}`: {}, clip or dino (embeddings' cosine distance), \
                     clip:TAP or dino:TAP, or feature:COMPARATOR:TAP with COMPARATOR one of {}",
                    names.join(", "),
                    COMPARATORS.join(", ")
                ));
            }
        },
    };
    Ok(MetricArg { text: text.to_owned(), kind })
}

/// A perceptual distance of image pairs.
enum Metric {
    Lpips(Lpips, Device),
    Feature(Box<dyn Comparator + Send + Sync>, Tap, Device),
    Embedding(Box<Vit>, Device),
    Pixel(PixelMetric),
}

/// The measures of deepsim-metrics, computed in f64 on the CPU.
#[derive(Clone, Copy)]
enum PixelMetric {
    Ssim,
    MsSsim,
    Psnr,
    DeltaE76,
    DeltaE2000,
    Opponent,
}

impl PixelMetric {
    fn value(self, a: &Tensor, b: &Tensor) -> Result<f32> {
        let (a, b) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
        let cfg = SsimConfig::default();
        let per_image = match self {
            PixelMetric::Ssim => metrics::ssim(&a, &b, &cfg)?,
            PixelMetric::MsSsim => metrics::ms_ssim(&a, &b, &cfg)?,
            PixelMetric::Psnr => metrics::psnr(&a, &b, 1.0)?,
            PixelMetric::DeltaE76 => metrics::spatial_mean(&metrics::delta_e76(
                &metrics::srgb_to_lab(&a)?,
                &metrics::srgb_to_lab(&b)?,
            )?)?,
            PixelMetric::DeltaE2000 => metrics::spatial_mean(&metrics::delta_e2000(
                &metrics::srgb_to_lab(&a)?,
                &metrics::srgb_to_lab(&b)?,
                metrics::Ciede2000Weights::default(),
            )?)?,
            PixelMetric::Opponent => metrics::opponent_loss(&a, &b, [1.0, 1.0, 1.0])?,
        };
        Ok(per_image.squeeze(0)?.to_scalar::<f64>()? as f32)
    }
}

impl Metric {
    fn new(
        arg: &MetricArg,
        weights: Option<&Path>,
        heads: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        let spec = &arg.text;
        let lpips = || -> Result<Metric> {
            if heads.is_some() && spec.starts_with("stlpips-") {
                bail!(
                    "{spec} keeps its trunk and heads in one file: give it as --weights, \
                     without --heads"
                );
            }
            let lpips = Lpips::pretrained_by_name(spec, weights, heads, device)?;
            Ok(Metric::Lpips(lpips, device.clone()))
        };
        let named = match &arg.kind {
            MetricKind::Feature { comparator, tap } => {
                let net = by_name(comparator, weights, device)?;
                return Ok(Metric::Feature(net, *tap, device.clone()));
            }
            MetricKind::Embedding(preset) => {
                return Ok(Metric::Embedding(
                    Box::new(Vit::pretrained(*preset, weights, device)?),
                    device.clone(),
                ));
            }
            MetricKind::Named(named) => named,
        };
        Ok(match named {
            Named::StlpipsAlex
            | Named::StlpipsVgg
            | Named::LpipsAlex
            | Named::LpipsVgg
            | Named::LpipsSqueeze => lpips()?,
            Named::Ssim => Metric::Pixel(PixelMetric::Ssim),
            Named::MsSsim => Metric::Pixel(PixelMetric::MsSsim),
            Named::Psnr => Metric::Pixel(PixelMetric::Psnr),
            Named::DeltaE76 => Metric::Pixel(PixelMetric::DeltaE76),
            Named::DeltaE2000 => Metric::Pixel(PixelMetric::DeltaE2000),
            Named::Opponent => Metric::Pixel(PixelMetric::Opponent),
        })
    }

    /// The two images to compare: of one size (or the second resized to the first's with
    /// `resize`), except for comparators that resize each image themselves.
    fn load_pair(&self, a: &Path, b: &Path, resize: bool) -> Result<(Tensor, Tensor)> {
        match self {
            Metric::Embedding(..) => Ok((images::load(a, None)?, images::load(b, None)?)),
            Metric::Feature(c, ..) if c.resizes_input() => {
                Ok((images::load(a, None)?, images::load(b, None)?))
            }
            _ => images::load_pair(a, b, resize),
        }
    }

    /// The distance of two images on the CPU, and per-layer values where the metric has them.
    fn distance(&self, a: &Tensor, b: &Tensor) -> Result<(f32, Vec<f32>)> {
        match self {
            Metric::Lpips(l, device) => {
                let out = l.forward(&a.to_device(device)?, &b.to_device(device)?)?;
                let layers = out
                    .per_layer
                    .iter()
                    .map(|t| t.squeeze(0)?.to_scalar::<f32>())
                    .collect::<candle::Result<Vec<_>>>()?;
                Ok((out.distance.squeeze(0)?.to_scalar::<f32>()?, layers))
            }
            Metric::Feature(c, tap, device) => {
                let fa = c.features(&a.to_device(device)?, &[*tap])?.remove(0);
                let fb = c.features(&b.to_device(device)?, &[*tap])?.remove(0);
                Ok(((fa - fb)?.sqr()?.mean_all()?.to_scalar::<f32>()?, Vec::new()))
            }
            Metric::Embedding(vit, device) => {
                let d = vit.cosine_distance(&a.to_device(device)?, &b.to_device(device)?)?;
                Ok((d.squeeze(0)?.to_scalar::<f32>()?, Vec::new()))
            }
            Metric::Pixel(m) => Ok((m.value(a, b)?, Vec::new())),
        }
    }

    /// The names of the per-layer values' taps.
    fn taps(&self) -> Vec<&'static str> {
        match self {
            Metric::Lpips(l, _) => l.taps().into_iter().map(Tap::name).collect(),
            _ => Vec::new(),
        }
    }
}

/// One line of `compare --json`.
#[derive(Serialize)]
struct CompareRow<'a> {
    metric: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    distance: f32,
    /// Each layer's share of the distance ((ST-)LPIPS), in the order of `taps`.
    per_layer: &'a [f32],
    taps: &'a [&'static str],
}

/// Where `compare` writes its answers: one number, CSV lines, or JSON lines.
struct Report<'a> {
    spec: &'a str,
    /// Multiplies every distance (the units).
    scale: f32,
    json: bool,
    taps: Vec<&'static str>,
    csv: csv::Writer<std::io::Stdout>,
}

impl Report<'_> {
    /// The header of a folder comparison's CSV.
    fn header(&mut self) -> Result<()> {
        if !self.json {
            self.csv.write_record(["file", self.spec])?;
        }
        Ok(())
    }

    /// One answer: of the pair of files called `file`, or of the two images given.
    fn row(&mut self, file: Option<&str>, distance: f32, per_layer: &[f32]) -> Result<()> {
        let distance = distance * self.scale;
        match (self.json, file) {
            (true, file) => {
                let row =
                    CompareRow { metric: self.spec, file, distance, per_layer, taps: &self.taps };
                let mut out = std::io::stdout().lock();
                serde_json::to_writer(&mut out, &row)?;
                std::io::Write::write_all(&mut out, b"\n")?;
            }
            (false, Some(n)) => {
                self.csv.write_record([n, &distance.to_string()])?;
                self.csv.flush()?;
            }
            (false, None) => println!("{distance}"),
        }
        Ok(())
    }
}

impl CompareArgs {
    pub fn run(self) -> Result<()> {
        let (a, b) = (self.a.as_path(), self.b.as_path());
        let metric = Metric::new(
            &self.metric,
            self.weights.as_deref(),
            self.heads.as_deref(),
            self.device.device(),
        )?;
        let colour = matches!(
            self.metric.kind,
            MetricKind::Named(Named::DeltaE2000) | MetricKind::Named(Named::DeltaE76)
        );
        let (spec, scale) = match (self.units, colour) {
            (Units::Native, _) => (self.metric.text.clone(), 1.0),
            (Units::Jnd, true) => {
                (format!("{} (JND)", self.metric.text), (1.0 / metrics::JND_DELTA_E) as f32)
            }
            (Units::Jnd, false) => bail!(
                "--units jnd counts colour differences in just-noticeable steps of ΔE 2.3: it \
                 needs --metric delta-e2000 or delta-e76, not {}",
                self.metric.text
            ),
        };
        let mut report = Report {
            spec: &spec,
            scale,
            json: self.json,
            taps: metric.taps(),
            csv: csv::Writer::from_writer(std::io::stdout()),
        };
        if a.is_dir() || b.is_dir() {
            if !(a.is_dir() && b.is_dir()) {
                bail!(
                    "{} is a folder and {} is not: give two images, or two folders to compare \
                     their files of the same name",
                    if a.is_dir() { a } else { b }.display(),
                    if a.is_dir() { b } else { a }.display()
                );
            }
            if self.map.is_some() {
                bail!("--map writes the map of one pair of images, not of two folders");
            }
            return compare_folders(&metric, &mut report, a, b, self.resize);
        }
        let (x, y) = metric.load_pair(a, b, self.resize)?;
        let (d, layers) = metric.distance(&x, &y)?;
        report.row(None, d, &layers)?;
        if let Some(path) = &self.map {
            let Metric::Lpips(l, device) = &metric else {
                bail!(
                    "--map needs a metric with a spatial map: stlpips-alex, stlpips-vgg or \
                     lpips-*"
                );
            };
            let map = l.spatial_map(&x.to_device(device)?, &y.to_device(device)?)?;
            let peak = images::write_heat_map(&map, path)?;
            eprintln!("map → {} (white = {peak:.4} per pixel)", path.display());
        }
        Ok(())
    }
}

/// The files of folders `a` and `b` of the same name, compared pair by pair: a warning for
/// each file in one folder only and for each pair that cannot be compared (then an error
/// after the others are reported).
fn compare_folders(
    metric: &Metric,
    report: &mut Report<'_>,
    a: &Path,
    b: &Path,
    resize: bool,
) -> Result<()> {
    let files = |dir: &Path| -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    };
    let (names, in_b) = (files(a)?, files(b)?);
    for name in in_b.iter().filter(|n| names.binary_search(n).is_err()) {
        eprintln!("warning: {name} is in {} only; skipped", b.display());
    }
    let pairs: Vec<&String> = names.iter().filter(|n| in_b.binary_search(n).is_ok()).collect();
    for name in names.iter().filter(|n| in_b.binary_search(n).is_err()) {
        eprintln!("warning: {name} is in {} only; skipped", a.display());
    }
    if pairs.is_empty() {
        bail!(
            "{} and {} have no file of the same name to compare ({} and {} files)",
            a.display(),
            b.display(),
            names.len(),
            in_b.len()
        );
    }
    report.header()?;
    let mut failed = 0;
    for name in pairs {
        let pair = metric
            .load_pair(&a.join(name), &b.join(name), resize)
            .and_then(|(x, y)| metric.distance(&x, &y));
        match pair {
            Ok((d, layers)) => report.row(Some(name), d, &layers)?,
            Err(e) => {
                eprintln!("warning: {name}: {}; skipped", crate::output::error_chain(&e));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} pair(s) could not be compared (warnings above); the others are printed");
    }
    Ok(())
}
