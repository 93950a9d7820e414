//! SSIM, PSNR, CIEDE2000 and MS-SSIM between two image files of the same size.
//!
//!     cargo run --release -p deepsim-metrics --example compare_images -- [A B]
//!
//! The default pair is the repository's `data/coffee_224.png` and `data/chelsea_224.png`.

// ANCHOR: readme
use candle::Tensor;
use deepsim_metrics::{delta_e2000, ms_ssim, psnr, spatial_mean, srgb_to_lab, ssim};
use deepsim_metrics::{Ciede2000Weights, SsimConfig};

/// Each measure of `a` against `b`, `[1, 3, H, W]` sRGB in [0, 1]; MS-SSIM needs sides > 160.
fn measures(a: &Tensor, b: &Tensor) -> deepsim_metrics::Result<Vec<(&'static str, f32)>> {
    let value = |t: Tensor| t.flatten_all()?.get(0)?.to_scalar::<f32>();
    let cfg = SsimConfig::default();
    let (lab_a, lab_b) = (srgb_to_lab(a)?, srgb_to_lab(b)?);
    let de00 = delta_e2000(&lab_a, &lab_b, Ciede2000Weights::default())?;
    let mut out = vec![
        ("SSIM", value(ssim(a, b, &cfg)?)?),
        ("PSNR (dB)", value(psnr(a, b, 1.0)?)?),
        ("mean ΔE00", value(spatial_mean(&de00)?)?),
    ];
    if a.dim(2)?.min(a.dim(3)?) > 160 {
        out.push(("MS-SSIM", value(ms_ssim(a, b, &cfg)?)?));
    }
    Ok(out)
}
// ANCHOR_END: readme

use std::path::{Path, PathBuf};

use anyhow::bail;

/// An image file as a `[1, 3, H, W]` f32 tensor in [0, 1], read by deepsim-data's decoder
/// (format from the content, files cut short and decompression bombs refused).
fn load(path: &Path) -> anyhow::Result<Tensor> {
    Ok(deepsim_data::load_image(path, deepsim_data::ColorMode::Rgb)?)
}

fn main() -> anyhow::Result<()> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let data = data.canonicalize().unwrap_or(data);
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (a, b) = match args.as_slice() {
        [] => (data.join("coffee_224.png"), data.join("chelsea_224.png")),
        [a, b] => (a.clone(), b.clone()),
        _ => bail!("usage: compare_images [A B] (two image files of the same size)"),
    };
    let (x, y) = (load(&a)?, load(&b)?);
    if x.dims() != y.dims() {
        bail!(
            "{} is {:?} but {} is {:?}: the measures compare images of one size",
            a.display(),
            x.dims(),
            b.display(),
            y.dims()
        );
    }
    println!("{} vs {}", a.display(), b.display());
    for (name, value) in measures(&x, &y)? {
        println!("{name:>10}: {value:.4}");
    }
    Ok(())
}
