//! `deepsim eval`: the paper's Table 2, the normalized errors of trained inverters'
//! reconstructions, with Mahendran & Vedaldi's optimization baseline beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use candle::{Device, Tensor};
use deepsim_comparators::{Comparator, Tap};
use deepsim_train::{edge_ratio, normalized_error, OptimInversionConfig, PerceptualDistance};
use serde::Serialize;

use super::invert_optim::optimize_in_batches;
use crate::args::{OptimArgs, RunDeviceArg};
use crate::checkpoint::{batched, load_model, ImageSets};
use crate::images::image_files;
use crate::output::create_dir;

/// The paper's Table 2: the normalized error of each inverter's reconstructions of the
/// images in a folder, in image space and in the inverted layer's feature space (‖a − b‖
/// over the mean distance between two different images: 100 % = as good as a random other
/// image), as a markdown table of methods × layers; with --optim, inversion by
/// optimization (Mahendran & Vedaldi) of each layer beside them.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Checkpoints of inverters written by `deepsim train` (one row each).
    #[arg(long = "checkpoint", required = true)]
    checkpoints: Vec<PathBuf>,
    /// Folder of test images (resized and cropped as each run's validation images).
    #[arg(long)]
    data: PathBuf,
    /// Use only the first N images (sorted by name).
    #[arg(long)]
    limit: Option<usize>,
    /// Also invert each layer by optimization.
    #[arg(long)]
    optim: bool,
    #[command(flatten)]
    optim_cfg: OptimArgs,
    /// Write table.md and table.json into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: RunDeviceArg,
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        eval(
            &self.checkpoints,
            &self.data,
            self.limit,
            self.optim.then(|| self.optim_cfg.config()).as_ref(),
            self.out.as_deref(),
            &self.device,
        )
    }
}

/// `table.json`.
#[derive(Serialize)]
struct Table<'a> {
    /// The folder of images.
    data: String,
    /// How many of its images were used.
    images: usize,
    rows: &'a [Row],
}

/// One row of the evaluation (one entry of `table.json`).
#[derive(Serialize)]
struct Row {
    method: String,
    layer: String,
    source: String,
    image_error: f64,
    feature_error: Option<f64>,
    edge_ratio: f64,
    /// Mean ST-LPIPS-alex to the originals (a network no run here trains against); absent
    /// when its weights are not found.
    perceptual: Option<f64>,
    seconds: f64,
    #[serde(skip)]
    tap: Tap,
}

/// `deepsim eval`: the normalized errors of each checkpoint's reconstructions of the images in
/// `data`, and with `optim` those of inversion by optimization of each inverted layer, as a
/// markdown table in Table 2's form (methods × layers, "image / feature" in %) on stdout and,
/// with `out`, as `table.md` and `table.json` there.
fn eval(
    checkpoints: &[PathBuf],
    data: &Path,
    limit: Option<usize>,
    optim: Option<&OptimInversionConfig>,
    out: Option<&Path>,
    device: &RunDeviceArg,
) -> Result<()> {
    let mut files = image_files(data)?;
    if let Some(n) = limit {
        files.truncate(n);
    }
    if files.len() < 2 {
        bail!(
            "{}: the normalized error needs at least 2 images, found {}",
            data.display(),
            files.len()
        );
    }
    let mut rows = Vec::new();
    // The first inverter of each (network, layer), with its images: the encoder, image size
    // and device of that layer's optimization baseline.
    type Baseline = (Arc<dyn Comparator + Send + Sync>, usize, Device, Tensor);
    let mut layers: BTreeMap<(String, Tap), Baseline> = BTreeMap::new();
    let mut sets = ImageSets::default();
    let perceptual = match PerceptualDistance::new(None, &Device::Cpu) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("warning: no {} column: {e}", PerceptualDistance::NAME);
            None
        }
    };
    let distance = |a: &Tensor, b: &Tensor| -> Result<Option<f64>> {
        Ok(perceptual.as_ref().map(|p| p.mean(a, b)).transpose()?)
    };
    for ckpt in checkpoints {
        let model = load_model(ckpt, device)?;
        let Some((encoder, tap)) = model.encoder() else {
            bail!(
                "{}: a VAE has no inverted layer; `deepsim eval` takes inverters",
                ckpt.display()
            );
        };
        let started = std::time::Instant::now();
        let x = sets.get(&model, &files)?;
        let code = batched(&x, |b| Ok(model.encode(b)?))?;
        let recon = batched(&code, |c| Ok(model.decode(c)?))?;
        let recon_code = batched(&recon, |b| Ok(model.encode(b)?))?;
        rows.push(Row {
            method: model.config().method(),
            layer: tap.name().to_owned(),
            tap,
            source: ckpt.display().to_string(),
            image_error: normalized_error(&recon, &x)?,
            feature_error: Some(normalized_error(&recon_code, &code)?),
            edge_ratio: edge_ratio(&recon, &x)?,
            perceptual: distance(&recon, &x)?,
            seconds: started.elapsed().as_secs_f64(),
        });
        let (encoder, side, dev) = (encoder.clone(), model.side(), model.device().clone());
        let network = encoder.name().to_owned();
        layers.entry((network, tap)).or_insert((encoder, side, dev, x));
    }
    if let Some(cfg) = optim {
        // Inverters of more than one network: each baseline row names its network.
        let networks: std::collections::BTreeSet<&str> =
            layers.keys().map(|(network, _)| network.as_str()).collect();
        for ((network, tap), (encoder, side, dev, x)) in &layers {
            eprintln!(
                "inversion by optimization of {network} {} ({} steps)…",
                tap.name(),
                cfg.steps
            );
            let started = std::time::Instant::now();
            let inv = optimize_in_batches(encoder, *tap, x, *side, cfg, dev)?;
            rows.push(Row {
                method: if networks.len() > 1 {
                    format!("Mahendran & Vedaldi (optimization, {network})")
                } else {
                    "Mahendran & Vedaldi (optimization)".into()
                },
                layer: tap.name().to_owned(),
                tap: *tap,
                source: format!("{} steps, λ_TV {}", cfg.steps, cfg.lambda_tv),
                image_error: normalized_error(&inv.images, x)?,
                feature_error: Some(normalized_error(&inv.reached, &inv.targets)?),
                edge_ratio: edge_ratio(&inv.images, x)?,
                perceptual: distance(&inv.images, x)?,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    let table = markdown_table(&rows, files.len(), data);
    print!("{table}");
    if let Some(dir) = out {
        create_dir(dir)?;
        let json = serde_json::to_string_pretty(&Table {
            data: data.display().to_string(),
            images: files.len(),
            rows: &rows,
        })?;
        for (name, text) in [("table.md", &table), ("table.json", &json)] {
            let path = dir.join(name);
            deepsim_data::write_atomic(&path, text.as_bytes())?;
        }
        eprintln!("→ {}/table.md and table.json", dir.display());
    }
    Ok(())
}

/// Table 2's layout: a row per method, a column per layer, "image / feature" error in %.
fn markdown_table(rows: &[Row], images: usize, data: &Path) -> String {
    let mut taps: Vec<Tap> = rows.iter().map(|r| r.tap).collect();
    taps.sort();
    taps.dedup();
    let mut methods: Vec<&str> = Vec::new();
    for r in rows {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let mut s = format!(
        "Normalized error in % (image space / feature space of the inverted layer; 100 % = as \
         good as a random other image) on the {images} images of `{}`:\n\n| method |",
        data.display()
    );
    for t in &taps {
        s.push_str(&format!(" {} |", t.name()));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(taps.len()));
    s.push('\n');
    for m in methods {
        s.push_str(&format!("| {m} |"));
        for t in &taps {
            let cells: Vec<String> = rows
                .iter()
                .filter(|r| r.method == m && r.tap == *t)
                .map(|r| {
                    let feat =
                        r.feature_error.map_or("−".into(), |f| format!("{:.0}", f * 100.0));
                    format!("{:.0}/{feat}", r.image_error * 100.0)
                })
                .collect();
            s.push_str(&format!(
                " {} |",
                if cells.is_empty() { "−/−".into() } else { cells.join(", ") }
            ));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "\n{} to the originals (a perceptual distance no run here trains against; lower is \
         closer) and edge ratio (neighbour contrast of the reconstructions over the originals'), \
         with the source and the seconds taken to reconstruct the images (or to optimize \
         them):\n\n",
        PerceptualDistance::NAME
    ));
    for r in rows {
        s.push_str(&format!(
            "- {} at {}: {}, edge {:.2} ({}, {:.1} s)\n",
            r.method,
            r.tap.name(),
            r.perceptual.map_or("−".into(), |p| format!("{p:.3}")),
            r.edge_ratio,
            r.source,
            r.seconds
        ));
    }
    s
}
