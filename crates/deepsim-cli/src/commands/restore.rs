//! `deepsim restore` and `deepsim restore-eval`: super-resolution and restoration models
//! (`run.task = "superres"` / `"restore"`) applied to image files, and judged on held-out
//! photos against their baseline (bicubic enlargement, or the degraded input) by PSNR, SSIM
//! and ST-LPIPS.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle::{DType, Tensor};
use deepsim_metrics::{psnr, ssim, SsimConfig};
use deepsim_train::{write_labelled_grid, Model, PerceptualDistance};
use serde::Serialize;

use crate::args::RunDeviceArg;
use crate::checkpoint::load_model;
use crate::images::{image_files, load};
use crate::output::{create_dir, create_parent, output_names};

/// Restore image files with a trained super-resolution or restoration model: each input is
/// enlarged by the model's scale (superres) or cleaned at its size (restore) and written as
/// `OUT/<name>.png`. With --degrade, the inputs are clean photos: each is first degraded as
/// in training (written as `<name>_degraded.png`, with `<name>_baseline.png`, its bicubic
/// enlargement), so that the model can be tried on any photo.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// A checkpoint of task superres or restore written by `deepsim train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Folder to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Degrade each input as the model was trained to undo before restoring it.
    #[arg(long)]
    degrade: bool,
    #[command(flatten)]
    device: RunDeviceArg,
    /// Images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

impl RestoreArgs {
    pub fn run(self) -> Result<()> {
        let model = load_restorer(&self.checkpoint, &self.device)?;
        create_dir(&self.out)?;
        let scale = model.degradation().map_or(1, |d| d.scale);
        for (path, name) in self.images.iter().zip(output_names(&self.images)) {
            let mut y = load(path, None)?;
            if self.degrade {
                y = model.encode(&fit_to_scale(&y, scale, path)?)?;
                write(&self.out.join(format!("{name}_degraded.png")), &y)?;
                if let Some(d) = model.degradation() {
                    write(&self.out.join(format!("{name}_baseline.png")), &d.estimate(&y)?)?;
                }
            }
            let restored = model.restore(&y)?;
            let target = self.out.join(format!("{name}.png"));
            write(&target, &restored)?;
            let (_, _, h, w) = restored.dims4()?;
            println!("{} → {} ({w}×{h})", path.display(), target.display());
        }
        Ok(())
    }
}

/// Judge super-resolution or restoration models on held-out photos: each photo (cropped to a
/// multiple of the scale) is degraded as in training (noise from a fixed seed), then
/// enlarged bicubically or left as it is (the baseline) and restored by each model; PSNR
/// (dB), SSIM (Gaussian 11×11, σ 1.5, on RGB in [0, 1], no border cropped) and ST-LPIPS-alex
/// of each to the original, averaged over the photos. Outputs are rounded to 8 bits first,
/// as a written file holds them. A markdown table on stdout (and table.md, table.json,
/// grid.png under --out).
#[derive(clap::Args)]
pub struct RestoreEvalArgs {
    /// Checkpoints of task superres or restore with the same degradation (one row each).
    #[arg(long = "checkpoint", required = true)]
    checkpoints: Vec<PathBuf>,
    /// Folder of held-out photos, used at their own size.
    #[arg(long)]
    data: PathBuf,
    /// Use only the first N photos (sorted by name).
    #[arg(long)]
    limit: Option<usize>,
    /// Write table.md, table.json and grid.png (original, baseline and each model on the
    /// centre 72×72 of photos spread over the set, enlarged 2× without interpolation) into
    /// this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Photos in the grid.
    #[arg(long, default_value_t = 6)]
    grid_images: usize,
    #[command(flatten)]
    device: RunDeviceArg,
}

/// One row of `table.json`.
#[derive(Serialize)]
struct Row {
    method: String,
    source: String,
    psnr: f64,
    ssim: f64,
    stlpips_alex: f64,
}

/// `table.json`.
#[derive(Serialize)]
struct Table<'a> {
    data: String,
    images: usize,
    degradation: String,
    rows: &'a [Row],
}

impl RestoreEvalArgs {
    pub fn run(self) -> Result<()> {
        let models = self
            .checkpoints
            .iter()
            .map(|c| load_restorer(c, &self.device))
            .collect::<Result<Vec<_>>>()?;
        let degradation = models[0].degradation().cloned().expect("load_restorer checked");
        for (m, path) in models.iter().zip(&self.checkpoints).skip(1) {
            if m.degradation() != Some(&degradation) {
                bail!(
                    "{} undoes {}, {} undoes {}: compare models of one degradation",
                    self.checkpoints[0].display(),
                    degradation.describe(),
                    path.display(),
                    m.degradation().map_or(String::new(), |d| d.describe())
                );
            }
        }
        let mut files = image_files(&self.data)?;
        if let Some(n) = self.limit {
            files.truncate(n);
        }
        if files.is_empty() {
            bail!("{}: no image files", self.data.display());
        }
        let judge = PerceptualDistance::new(None, models[0].device())?;
        let baseline_name = if degradation.scale > 1 { "bicubic" } else { "degraded input" };
        let mut names = vec![(baseline_name.to_owned(), "-".to_owned())];
        names.extend(
            models
                .iter()
                .zip(&self.checkpoints)
                .map(|(m, c)| (m.config().method(), c.display().to_string())),
        );
        // Sums over the photos of (PSNR, SSIM, ST-LPIPS) per method.
        let mut sums = vec![[0f64; 3]; names.len()];
        let mut grid: Vec<Vec<Tensor>> = vec![Vec::new(); names.len() + 1];
        let mut grid_side = None;
        for (i, path) in files.iter().enumerate() {
            let x = fit_to_scale(&load(path, None)?, degradation.scale, path)?
                .to_device(models[0].device())?;
            let (_, _, h, w) = x.dims4()?;
            if h.min(w) < SsimConfig::default().window.max(21) {
                bail!("{}: {w}×{h} is too small to judge (at least 21×21)", path.display());
            }
            let y = models[0].encode(&x)?;
            let mut outputs = vec![degradation.estimate(&y)?];
            for m in &models {
                outputs.push(m.restore(&y)?);
            }
            for (sum, out) in sums.iter_mut().zip(&outputs) {
                let out = round_8bit(out)?;
                sum[0] += scalar(&psnr(&out, &x, 1.0)?)?;
                sum[1] += scalar(&ssim(&out, &x, &SsimConfig::default())?)?;
                sum[2] += judge.mean(&out, &x)?;
            }
            // Photos evenly spread over the set, the first included.
            let every = (files.len() / self.grid_images.max(1)).max(1);
            if i % every == 0 && i / every < self.grid_images {
                let (_, _, h, w) = x.dims4()?;
                // The first photo sets the crop's side (at most 72); smaller ones are left out.
                let side = *grid_side.get_or_insert(GRID_SIDE.min(h).min(w));
                if h.min(w) >= side {
                    grid[0].push(centre_zoom(&x, side)?);
                    for (g, out) in grid[1..].iter_mut().zip(&outputs) {
                        g.push(centre_zoom(out, side)?);
                    }
                } else {
                    eprintln!(
                        "{}: {w}×{h}, smaller than the grid's {side}×{side}: not shown",
                        path.display()
                    );
                }
            }
        }
        let n = files.len() as f64;
        let rows: Vec<Row> = names
            .iter()
            .zip(&sums)
            .map(|((method, source), s)| Row {
                method: method.clone(),
                source: source.clone(),
                psnr: s[0] / n,
                ssim: s[1] / n,
                stlpips_alex: s[2] / n,
            })
            .collect();
        let md = markdown(&rows, files.len(), &self.data, &degradation.describe());
        print!("{md}");
        if let Some(dir) = &self.out {
            create_dir(dir)?;
            let table = Table {
                data: self.data.display().to_string(),
                images: files.len(),
                degradation: degradation.describe(),
                rows: &rows,
            };
            write_file(&dir.join("table.md"), md.as_bytes())?;
            write_file(&dir.join("table.json"), serde_json::to_string_pretty(&table)?.as_bytes())?;
            if !grid[0].is_empty() {
                let rows: Vec<Tensor> =
                    grid.iter().map(|r| Tensor::cat(r, 0)).collect::<candle::Result<_>>()?;
                let mut labels = vec!["original".to_owned()];
                labels.extend(names.iter().map(|(m, _)| short_label(m)));
                let labelled: Vec<(&str, &Tensor)> =
                    labels.iter().map(String::as_str).zip(rows.iter()).collect();
                let path = dir.join("grid.png");
                write_labelled_grid(&path, &labelled)?;
                println!("grid → {}", path.display());
            }
        }
        Ok(())
    }
}

/// The largest side of the centre crops in the grid.
const GRID_SIDE: usize = 72;

/// The model of a checkpoint, which must be a restorer.
fn load_restorer(checkpoint: &Path, device: &RunDeviceArg) -> Result<Model> {
    let model = load_model(checkpoint, device)?;
    if model.degradation().is_none() {
        bail!(
            "{}: a checkpoint of {}, not of task superres or restore",
            checkpoint.display(),
            model.describe()
        );
    }
    Ok(model)
}

/// `x` cropped at its top-left to a multiple of `scale` on each side.
fn fit_to_scale(x: &Tensor, scale: usize, path: &Path) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (fh, fw) = (h / scale * scale, w / scale * scale);
    if fh == 0 || fw == 0 {
        bail!("{}: {w}×{h} is smaller than the scale {scale}", path.display());
    }
    Ok(x.narrow(2, 0, fh)?.narrow(3, 0, fw)?)
}

/// Values rounded to 8 bits.
fn round_8bit(x: &Tensor) -> Result<Tensor> {
    Ok(((x.clamp(0f32, 1f32)? * 255.0)?.round()? / 255.0)?)
}

/// The centre `side × side` of `x` (at least that large), each pixel repeated 2×2 (so that
/// a grid shows pixels).
fn centre_zoom(x: &Tensor, side: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let crop = x.narrow(2, (h - side) / 2, side)?.narrow(3, (w - side) / 2, side)?;
    let up = crop
        .reshape((n, c, side, 1, side, 1))?
        .broadcast_as((n, c, side, 2, side, 2))?
        .reshape((n, c, 2 * side, 2 * side))?;
    Ok(up.to_device(&candle::Device::Cpu)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?)
}

/// A grid label: the method without the comparator's details after a comma.
fn short_label(method: &str) -> String {
    method.split(',').next().unwrap_or(method).to_owned()
}

fn write(path: &Path, image: &Tensor) -> Result<()> {
    deepsim_train::write_image(path, &image.to_device(&candle::Device::Cpu)?)?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    deepsim_data::write_atomic(path, bytes)?;
    Ok(())
}

fn markdown(rows: &[Row], images: usize, data: &Path, degradation: &str) -> String {
    let mut s = format!(
        "{images} images of {} ({degradation}), means; PSNR and SSIM on RGB, higher is \
         better; ST-LPIPS-alex lower is better\n\n| method | PSNR (dB) | SSIM | ST-LPIPS-alex |\n\
         |---|---|---|---|\n",
        data.display()
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.2} | {:.4} | {:.4} |\n",
            r.method, r.psnr, r.ssim, r.stlpips_alex
        ));
    }
    s
}
