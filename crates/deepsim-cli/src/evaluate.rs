//! The paper's evidence from trained checkpoints: `deepsim eval` (Table 2's normalized errors,
//! with Mahendran & Vedaldi's optimization baseline beside the trained inverters),
//! `deepsim invert-optim`, and the figures `reencode` (Fig. 5), `neighbours` (supplementary)
//! and `ablation` (Fig. 1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use deepsim_comparators::{by_name, Comparator, Tap};
use deepsim_train::{
    edge_ratio, invert_by_optimization, normalized_error, parse_device, write_grid, write_image,
    write_labelled_grid, Model, OptimInversionConfig, PerceptualDistance,
};

use crate::generate::{
    create_dir, load_all, load_model, load_square, output_names, stem, write_png_rows,
};

/// Images per forward pass when encoding and decoding many.
const BATCH: usize = 32;

/// The image files of a folder (the extensions of `deepsim_data::IMAGE_EXTENSIONS`, which
/// its decoder reads), sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                deepsim_data::IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no images (files ending in {})",
            dir.display(),
            deepsim_data::IMAGE_EXTENSIONS.join(", ")
        );
    }
    Ok(files)
}

/// Decoded image sets by the (resize, crop) of a model's validation, so that checkpoints
/// sharing them decode the files once.
#[derive(Default)]
struct ImageSets(BTreeMap<(u32, u32), Tensor>);

impl ImageSets {
    /// `files` as `model`'s validation sees them, `[N, 3, side, side]` on the CPU.
    fn get(&mut self, model: &Model, files: &[PathBuf]) -> Result<Tensor> {
        let d = &model.config().data;
        let key = (d.resize, d.crop);
        if let Some(x) = self.0.get(&key) {
            return Ok(x.clone());
        }
        let x = load_all(model, files)?;
        self.0.insert(key, x.clone());
        Ok(x)
    }
}

/// `f` over `x` in batches of [`BATCH`], concatenated.
fn batched(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let n = x.dim(0)?;
    let parts = (0..n)
        .step_by(BATCH)
        .map(|s| Ok(f(&x.narrow(0, s, BATCH.min(n - s))?)?.to_device(&Device::Cpu)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// One row of the evaluation (one entry of `table.json`).
#[derive(serde::Serialize)]
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
pub fn eval(
    checkpoints: &[PathBuf],
    data: &Path,
    limit: Option<usize>,
    optim: Option<&OptimInversionConfig>,
    out: Option<&Path>,
    device: Option<&str>,
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
        let json = serde_json::to_string_pretty(&serde_json::json!({
            "data": data.display().to_string(),
            "images": files.len(),
            "rows": rows,
        }))?;
        for (name, text) in [("table.md", &table), ("table.json", &json)] {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        eprintln!("→ {}/table.md and table.json", dir.display());
    }
    Ok(())
}

/// What [`optimize_in_batches`] returns, on the CPU.
struct BatchedInversion {
    /// The reconstructions.
    images: Tensor,
    /// The features they were fitted to.
    targets: Tensor,
    /// The features the reconstructions reached.
    reached: Tensor,
    /// The mean objective at each step of the first batch.
    curve: Vec<f64>,
}

/// Inversion by optimization of `x`'s features, [`BATCH`] images at a time.
fn optimize_in_batches(
    encoder: &Arc<dyn Comparator + Send + Sync>,
    tap: Tap,
    x: &Tensor,
    side: usize,
    cfg: &OptimInversionConfig,
    device: &Device,
) -> Result<BatchedInversion> {
    let n = x.dim(0)?;
    let (mut images, mut targets, mut reached) = (Vec::new(), Vec::new(), Vec::new());
    let mut curve = Vec::new();
    for s in (0..n).step_by(BATCH) {
        let xb = x.narrow(0, s, BATCH.min(n - s))?.to_device(device)?;
        let target = encoder.features(&xb, &[tap])?.remove(0).detach();
        let inv = invert_by_optimization(encoder, tap, &target, side, cfg, device)?;
        if curve.is_empty() {
            curve = inv.objective;
        }
        images.push(inv.images.to_device(&Device::Cpu)?);
        targets.push(target.to_device(&Device::Cpu)?);
        reached.push(inv.features.to_device(&Device::Cpu)?);
    }
    Ok(BatchedInversion {
        images: Tensor::cat(&images, 0)?,
        targets: Tensor::cat(&targets, 0)?,
        reached: Tensor::cat(&reached, 0)?,
        curve,
    })
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

/// `deepsim invert-optim`: reconstructions of `images` from `network`'s features at `tap` by
/// optimization, `<out>/<stem>.png` and `<out>/grid.png`, with the objective's descent and
/// the normalized errors.
#[allow(clippy::too_many_arguments)]
pub fn invert_optim(
    network: &str,
    weights: Option<&Path>,
    tap: &str,
    size: u32,
    resize: Option<u32>,
    images: &[PathBuf],
    out: &Path,
    cfg: &OptimInversionConfig,
    device: Option<&str>,
) -> Result<()> {
    let device = parse_device(device.unwrap_or("cpu"))?;
    let encoder: Arc<dyn Comparator + Send + Sync> = Arc::from(by_name(network, weights, &device)?);
    let tap = crate::parse_tap(tap)?;
    let x = Tensor::cat(
        &images
            .iter()
            .map(|p| load_square(p, resize.unwrap_or(size), size))
            .collect::<Result<Vec<_>>>()?,
        0,
    )?;
    let inv = optimize_in_batches(&encoder, tap, &x, size as usize, cfg, &device)?;
    create_dir(out)?;
    for (i, name) in output_names(images).iter().enumerate() {
        write_image(&out.join(format!("{name}.png")), &inv.images.get(i)?)?;
    }
    write_grid(&out.join("grid.png"), &[&x, &inv.images])?;
    let (first, last) = (inv.curve[0], inv.curve[inv.curve.len() - 1]);
    println!(
        "objective (first batch, mean per image): {first:.4} → {last:.4} in {} steps",
        cfg.steps
    );
    if images.len() >= 2 {
        println!(
            "normalized error over these {} images: image space {:.1} %, feature space ({}) {:.1} %",
            images.len(),
            normalized_error(&inv.images, &x)? * 100.0,
            tap.name(),
            normalized_error(&inv.reached, &inv.targets)? * 100.0
        );
    }
    println!("grid (originals | reconstructions) → {}", out.join("grid.png").display());
    Ok(())
}

/// `deepsim reencode` (Fig. 5): each image encoded and reconstructed, the reconstruction
/// encoded and reconstructed again, and so on; one row of `images` per iteration listed in
/// `iterations` under the originals.
pub fn reencode(
    checkpoint: &Path,
    iterations: &[usize],
    images: &[PathBuf],
    out: &Path,
    device: Option<&str>,
) -> Result<()> {
    if iterations.is_empty() || iterations.contains(&0) {
        bail!("--iterations {iterations:?}: needs one or more counts of at least 1");
    }
    let model = load_model(checkpoint, device)?;
    let x = load_all(&model, images)?;
    let last = iterations.iter().copied().max().unwrap_or(1);
    let mut rows = vec![x.clone()];
    let mut h = x;
    for k in 1..=last {
        h = batched(&h, |b| Ok(model.reconstruct(b)?))?;
        if iterations.contains(&k) {
            rows.push(h.clone());
        }
    }
    write_png_rows(out, &rows)?;
    println!(
        "rows: originals, then after {} re-encodings → {}",
        iterations.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
        out.display()
    );
    Ok(())
}

/// `deepsim ablation` (Fig. 1): the originals, then each checkpoint's reconstructions, one row
/// each (the checkpoints' methods are printed in row order).
pub fn ablation(
    checkpoints: &[PathBuf],
    images: &[PathBuf],
    out: &Path,
    device: Option<&str>,
) -> Result<()> {
    let mut rows = Vec::new();
    let mut names = vec!["originals".to_owned()];
    // The grid's row labels: the methods (the names printed add the checkpoints).
    let mut labels = names.clone();
    let mut sets = ImageSets::default();
    // The row of originals is the first checkpoint's view of the images; every other
    // checkpoint must see the same (resize, crop), or its row would show other pixels.
    let mut first: Option<(u32, u32)> = None;
    for ckpt in checkpoints {
        let model = load_model(ckpt, device)?;
        let d = &model.config().data;
        match first {
            None => first = Some((d.resize, d.crop)),
            Some((resize, crop)) if (d.resize, d.crop) != (resize, crop) => bail!(
                "{}: validates on images resized to {} and cropped to {}, the first checkpoint \
                 on {resize} and {crop}; one grid needs the same view of the images",
                ckpt.display(),
                d.resize,
                d.crop
            ),
            Some(_) => {}
        }
        let x = sets.get(&model, images)?;
        if rows.is_empty() {
            rows.push(x.clone());
        }
        rows.push(batched(&x, |b| Ok(model.reconstruct(b)?))?);
        labels.push(model.config().method());
        names.push(format!("{} ({})", model.config().method(), ckpt.display()));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    let labelled: Vec<(&str, &Tensor)> =
        labels.iter().map(String::as_str).zip(rows.iter()).collect();
    write_labelled_grid(out, &labelled)?;
    for (i, n) in names.iter().enumerate() {
        println!("row {}: {n}", i + 1);
    }
    println!("→ {}", out.display());
    Ok(())
}

/// `deepsim neighbours` (the paper's supplementary): for each query, one row: the query, its
/// reconstruction, its `k` nearest images of `train` in image space, then its `k` nearest in
/// the inverted layer's feature space (Euclidean distances).
pub fn neighbours(
    checkpoint: &Path,
    train: &Path,
    queries: &[PathBuf],
    k: usize,
    out: &Path,
    device: Option<&str>,
) -> Result<()> {
    let model = load_model(checkpoint, device)?;
    let Some((_, tap)) = model.encoder() else {
        bail!("{}: nearest neighbours need an inverter's feature space", checkpoint.display());
    };
    let space = tap.name();
    let files = image_files(train)?;
    if k == 0 || k > files.len() {
        bail!("--k {k}: must be between 1 and the {} images of {}", files.len(), train.display());
    }
    let base = load_all(&model, &files)?;
    let q = load_all(&model, queries)?;
    let q_code = batched(&q, |b| Ok(model.encode(b)?))?;
    let recon = batched(&q_code, |c| Ok(model.decode(c)?))?;
    let base_code = batched(&base, |b| Ok(model.encode(b)?))?;
    let by_pixels = nearest(&q.flatten_from(1)?, &base.flatten_from(1)?, k)?;
    let by_features = nearest(&q_code.flatten_from(1)?, &base_code.flatten_from(1)?, k)?;
    let rows = (0..queries.len())
        .map(|i| {
            let mut row = vec![q.get(i)?, recon.get(i)?];
            for &j in by_pixels[i].iter().chain(&by_features[i]) {
                row.push(base.get(j)?);
            }
            Ok(Tensor::stack(&row, 0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    write_png_rows(out, &rows)?;
    for (i, path) in queries.iter().enumerate() {
        let names =
            |idx: &[usize]| idx.iter().map(|&j| stem(&files[j])).collect::<Vec<_>>().join(", ");
        println!(
            "{}: image space {} | feature space {}",
            stem(path),
            names(&by_pixels[i]),
            names(&by_features[i])
        );
    }
    println!(
        "rows: query | reconstruction | {k} nearest in image space | {k} nearest in {space} space → {}",
        out.display()
    );
    Ok(())
}

/// For each row of `q` `[Q, D]`, the indices of its `k` nearest rows of `base` `[B, D]`.
fn nearest(q: &Tensor, base: &Tensor, k: usize) -> Result<Vec<Vec<usize>>> {
    let q = q.to_dtype(candle::DType::F64)?.to_vec2::<f64>()?;
    let base = base.to_dtype(candle::DType::F64)?.to_vec2::<f64>()?;
    Ok(q.iter()
        .map(|a| {
            let mut d: Vec<(f64, usize)> = base
                .iter()
                .enumerate()
                .map(|(j, b)| (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(), j))
                .collect();
            d.sort_by(|x, y| x.0.total_cmp(&y.0));
            d.iter().take(k).map(|&(_, j)| j).collect()
        })
        .collect())
}
