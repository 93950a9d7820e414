//! Images in: PNG and JPEG (whatever deepsim-data's decoder reads) to NCHW f32 RGB in [0, 1];
//! grayscale becomes three channels and alpha is dropped. Image folders listed; heat maps out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use deepsim_data::{to_chw, ColorMode, Rng, Transform};
use image::imageops::FilterType;

/// `path` decoded by deepsim-data's loader, the one every command reads images through: a
/// JPEG cut short, a header declaring more than [`deepsim_data::MAX_PIXELS`] or content in no
/// supported format is an error naming the file.
pub fn open(path: &Path) -> Result<image::DynamicImage> {
    if path.is_dir() {
        bail!("{} is a folder, not an image", path.display());
    }
    let (img, _) = deepsim_data::decode(path, ColorMode::Rgb)
        .map_err(|why| anyhow::anyhow!("{}: cannot use the image: {why}", path.display()))?;
    Ok(img)
}

/// The image at `path` as `[1, 3, H, W]`, optionally resized to `size` (width, height).
pub fn load(path: &Path, size: Option<(u32, u32)>) -> Result<Tensor> {
    let img = open(path)?;
    let img = match size {
        Some((w, h)) if (w, h) != (img.width(), img.height()) => {
            img.resize_exact(w, h, FilterType::Triangle)
        }
        _ => img,
    };
    rgb_image_tensor(&img.to_rgb8())
}

/// 8-bit RGB pixels, row-major, `width × height` of them, as `[1, 3, height, width]` in
/// [0, 1] on the CPU.
pub fn rgb_tensor(pixels: &[[u8; 3]], width: usize, height: usize) -> Result<Tensor> {
    let chw: Vec<f32> =
        (0..3).flat_map(|c| pixels.iter().map(move |p| f32::from(p[c]) / 255.0)).collect();
    Ok(Tensor::from_vec(chw, (1, 3, height, width), &Device::Cpu)?)
}

/// An 8-bit RGB image as [`rgb_tensor`] makes it.
fn rgb_image_tensor(rgb: &image::RgbImage) -> Result<Tensor> {
    let (pixels, _) = rgb.as_raw().as_chunks::<3>();
    rgb_tensor(pixels, rgb.width() as usize, rgb.height() as usize)
}

/// The shorter side resized to `side` (bilinear), then the centre `side × side`: the usual
/// ImageNet evaluation crop.
///
/// An image more than 64 times longer than wide (or the reverse) is refused: resized to
/// `side` on its short side it would be 64 crops long, and a 100000×1 strip would need
/// gigabytes.
pub fn load_center_crop(path: &Path, side: u32) -> Result<Tensor> {
    let img = open(path)?;
    let (w, h) = (img.width(), img.height());
    if w.max(h) > 64 * w.min(h) {
        bail!(
            "{} is {w}×{h}: an aspect ratio beyond 64:1 is not a photo to classify (crop it first)",
            path.display()
        );
    }
    let scale = f64::from(side) / f64::from(w.min(h));
    let (nw, nh) = (
        ((f64::from(w) * scale).round() as u32).max(side),
        ((f64::from(h) * scale).round() as u32).max(side),
    );
    let img = img.resize_exact(nw, nh, FilterType::Triangle);
    let img = img.crop_imm((nw - side) / 2, (nh - side) / 2, side, side);
    rgb_image_tensor(&img.to_rgb8())
}

/// An image with its shorter side resized to `resize`, then its centre `crop` square, as
/// training's validation transform makes it; `[1, 3, crop, crop]` in [0, 1] on the CPU.
pub fn load_square(path: &Path, resize: u32, crop: u32) -> Result<Tensor> {
    let img = Transform::eval(resize, crop).apply(open(path)?, &mut Rng::new(0));
    let side = crop as usize;
    Ok(Tensor::from_vec(to_chw(&img, ColorMode::Rgb), (1, 3, side, side), &Device::Cpu)?)
}

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

/// Two images of one size: an error naming both sizes unless `resize` (then `b` is resized to
/// `a`'s size).
pub fn load_pair(a: &Path, b: &Path, resize: bool) -> Result<(Tensor, Tensor)> {
    let ta = load(a, None)?;
    let (_, _, h, w) = ta.dims4()?;
    let tb = load(b, resize.then_some((w as u32, h as u32)))?;
    let (_, _, hb, wb) = tb.dims4()?;
    if (hb, wb) != (h, w) {
        bail!(
            "{} is {w}×{h} but {} is {wb}×{hb}; give --resize to resize the second to the first",
            a.display(),
            b.display()
        );
    }
    Ok((ta, tb))
}

/// Writes a `[1, 1, H, W]` map of non-negative values as an RGB PNG heat map (black through
/// purple, red and orange to pale yellow: matplotlib's magma at five stops, linearly
/// interpolated), scaled so that the largest value is the brightest; returns that value.
pub fn write_heat_map(map: &Tensor, path: &Path) -> Result<f32> {
    const STOPS: [[f32; 3]; 5] =
        [[0., 0., 4.], [81., 18., 124.], [183., 55., 121.], [252., 137., 97.], [252., 253., 191.]];
    let (_, _, h, w) = map.dims4()?;
    let values: Vec<f32> = map.flatten_all()?.to_vec1()?;
    let peak = values.iter().copied().fold(0f32, f32::max);
    let colour = |v: f32| -> [u8; 3] {
        let t = if peak > 0.0 { (v / peak).clamp(0.0, 1.0) } else { 0.0 } * 4.0;
        let i = (t as usize).min(3);
        let f = t - i as f32;
        std::array::from_fn(|c| (STOPS[i][c] + f * (STOPS[i + 1][c] - STOPS[i][c])).round() as u8)
    };
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (p, &v) in img.pixels_mut().zip(&values) {
        *p = image::Rgb(colour(v));
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    deepsim_data::write_atomic(path, &png)
        .with_context(|| format!("{}: cannot write the map", path.display()))?;
    Ok(peak)
}
