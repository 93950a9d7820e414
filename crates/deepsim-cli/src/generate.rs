//! `deepsim invert`, `deepsim interpolate` and `deepsim sample`: a trained checkpoint applied
//! to images (reconstructions from their features, interpolation in feature space) or to the
//! VAE's prior.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::Tensor;
use deepsim_data::{decode, to_chw, ColorMode, Rng, Transform};
use deepsim_train::{normalized_error, write_grid, write_image, Model};

/// The model of a checkpoint, saying what it is.
pub(crate) fn load_model(checkpoint: &Path, device: Option<&str>) -> Result<Model> {
    let model = Model::load(checkpoint, device)?;
    let c = model.config();
    let what = match &c.encoder {
        Some(e) => format!("inverter of {} {}", e.network, e.tap),
        None => format!("VAE, latent {}", c.vae.as_ref().map_or(0, |v| v.latent)),
    };
    eprintln!("{}: {what}, {}×{} images", checkpoint.display(), model.side(), model.side());
    Ok(model)
}

/// An image as the run's validation saw it: the shorter side resized to `data.resize`, the
/// centre `data.crop` square; `[1, 3, crop, crop]` in [0, 1].
pub(crate) fn load_image(model: &Model, path: &Path) -> Result<Tensor> {
    let d = &model.config().data;
    load_square(path, d.resize, d.crop)
}

/// An image with its shorter side resized to `resize`, then its centre `crop` square;
/// `[1, 3, crop, crop]` in [0, 1] on the CPU.
pub(crate) fn load_square(path: &Path, resize: u32, crop: u32) -> Result<Tensor> {
    let (img, _) = decode(path, ColorMode::Rgb)
        .map_err(|why| anyhow::anyhow!("{}: cannot use the image: {why}", path.display()))?;
    let img = Transform::eval(resize, crop).apply(img, &mut Rng::new(0));
    let side = crop as usize;
    Ok(Tensor::from_vec(to_chw(&img, ColorMode::Rgb), (1, 3, side, side), &candle::Device::Cpu)?)
}

/// The images of `files` as `model`'s validation saw them, `[N, 3, side, side]` on the CPU.
pub(crate) fn load_all(model: &Model, files: &[PathBuf]) -> Result<Tensor> {
    Ok(Tensor::cat(&files.iter().map(|p| load_image(model, p)).collect::<Result<Vec<_>>>()?, 0)?)
}

pub(crate) fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

/// The names (without `.png`) of the per-image files a command writes beside `grid.png`: each
/// input's stem, with `_` appended until it differs from `grid` and from every earlier name
/// (`a/x.png` and `b/x.jpg` become `x` and `x_`; an input named `grid.png` becomes `grid_`).
pub(crate) fn output_names(images: &[PathBuf]) -> Vec<String> {
    let mut taken = std::collections::HashSet::from(["grid".to_owned()]);
    images
        .iter()
        .map(|path| {
            let mut name = stem(path);
            while !taken.insert(name.clone()) {
                name.push('_');
            }
            name
        })
        .collect()
}

pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// `deepsim invert`: each image's reconstruction from its features, as `<out>/<stem>.png`, and
/// `<out>/grid.png` (originals above reconstructions).
pub fn invert(
    checkpoint: &Path,
    images: &[PathBuf],
    out: &Path,
    device: Option<&str>,
) -> Result<()> {
    let model = load_model(checkpoint, device)?;
    let x = load_all(&model, images)?.to_device(model.device())?;
    let code = model.encode(&x)?;
    let recon = model.decode(&code)?;
    create_dir(out)?;
    for (i, (path, name)) in images.iter().zip(output_names(images)).enumerate() {
        let file = out.join(format!("{name}.png"));
        write_image(&file, &recon.get(i)?)?;
        println!("{} → {}", path.display(), file.display());
    }
    write_grid(&out.join("grid.png"), &[&x, &recon])?;
    if images.len() >= 2 {
        let img = normalized_error(&recon, &x)?;
        let feat = normalized_error(&model.encode(&recon)?, &code)?;
        println!(
            "normalized error over these {} images: image space {:.1} %, feature space {:.1} %",
            images.len(),
            img * 100.0,
            feat * 100.0
        );
    }
    println!("grid (originals | reconstructions) → {}", out.join("grid.png").display());
    Ok(())
}

/// `deepsim interpolate`: `steps` images decoded from codes evenly spaced between A's and B's
/// (both ends included), between A and B themselves, as one row.
pub fn interpolate(
    checkpoint: &Path,
    a: &Path,
    b: &Path,
    steps: usize,
    out: &Path,
    device: Option<&str>,
) -> Result<()> {
    if steps < 2 {
        bail!("--steps {steps}: needs at least 2 (the two ends)");
    }
    let model = load_model(checkpoint, device)?;
    let xa = load_image(&model, a)?.to_device(model.device())?;
    let xb = load_image(&model, b)?.to_device(model.device())?;
    let (ya, yb) = (model.encode(&xa)?, model.encode(&xb)?);
    let codes = (0..steps)
        .map(|k| {
            let t = k as f64 / (steps - 1) as f64;
            Ok(((&ya * (1.0 - t))? + (&yb * t)?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let decoded = model.decode(&Tensor::cat(&codes, 0)?)?;
    write_png_rows(out, &[Tensor::cat(&[&xa, &decoded, &xb], 0)?])?;
    println!(
        "{} | {steps} images from {}'s code to {}'s | {} → {}",
        stem(a),
        stem(a),
        stem(b),
        stem(b),
        out.display()
    );
    Ok(())
}

/// `deepsim sample`: `n` images from a VAE's prior, `<out>/sample_NNN.png` and `<out>/grid.png`.
pub fn sample(
    checkpoint: &Path,
    n: usize,
    seed: u64,
    out: &Path,
    device: Option<&str>,
) -> Result<()> {
    if n == 0 {
        bail!("--n 0: nothing to sample");
    }
    let model = load_model(checkpoint, device)?;
    let images = model.sample(n, seed)?;
    create_dir(out)?;
    for i in 0..n {
        write_image(&out.join(format!("sample_{i:03}.png")), &images.get(i)?)?;
    }
    let per_row = (n as f64).sqrt().ceil() as usize;
    let rows: Vec<Tensor> = (0..n)
        .step_by(per_row)
        .map(|start| {
            let len = per_row.min(n - start);
            let row = images.narrow(0, start, len)?;
            if len == per_row {
                return Ok(row);
            }
            // The last row is padded with white.
            let (_, c, h, w) = row.dims4()?;
            let pad = Tensor::ones((per_row - len, c, h, w), row.dtype(), row.device())?;
            Ok(Tensor::cat(&[&row, &pad], 0)?)
        })
        .collect::<Result<_>>()?;
    write_grid(&out.join("grid.png"), &rows.iter().collect::<Vec<_>>())?;
    println!("{n} samples (seed {seed}) → {}/sample_*.png and grid.png", out.display());
    Ok(())
}

/// Writes `rows` (each `[n, 3, s, s]`) as one PNG, creating its folder.
pub(crate) fn write_png_rows(out: &Path, rows: &[Tensor]) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    write_grid(out, &rows.iter().collect::<Vec<_>>())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_image_files_never_overwrite_the_grid_or_each_other() {
        let paths: Vec<PathBuf> =
            ["a/grid.png", "a/x.png", "b/x.jpg", "c/x_.png", "y.png"].map(PathBuf::from).into();
        assert_eq!(output_names(&paths), ["grid_", "x", "x_", "x__", "y"]);
    }
}
