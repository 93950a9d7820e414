//! `deepsim quantize`: an image reduced to K colours by a palette fitted in CIELAB (or sRGB),
//! written as an indexed PNG, with its mean ΔE00 and ST-LPIPS to the original.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::Device;
use clap::ValueEnum;
use deepsim_metrics::{mean_delta_e00, quantize, PaletteSpace, QuantizeConfig, JND_DELTA_E};
use deepsim_train::PerceptualDistance;
use serde::Serialize;

use crate::images;

/// Reduces an image to K colours: a palette by k-means (seeded k-means++ start) in CIELAB,
/// each pixel mapped to the entry nearest by ΔE2000, optionally Floyd–Steinberg dithered;
/// writes an indexed PNG and prints the mean ΔE2000 and ST-LPIPS-alex to the original.
#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The image (PNG, JPEG, …).
    image: PathBuf,
    /// Palette size K, 1 to 256.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    colors: u16,
    /// Where the palette is fitted and pixels are matched: lab (perceptual) or rgb (the usual
    /// non-perceptual quantizer, for comparison).
    #[arg(long, value_enum, default_value_t = Space::Lab)]
    space: Space,
    /// Floyd–Steinberg error diffusion.
    #[arg(long)]
    dither: bool,
    /// The share of each pixel's error that --dither passes on (1: classic Floyd–Steinberg).
    #[arg(long, default_value_t = 0.75, requires = "dither")]
    diffusion: f64,
    /// Seed of the k-means++ start.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// At most this many k-means iterations.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// The indexed PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// ST-LPIPS-alex weights (default: the weights cache, then the shipped copy); without
    /// them the ST-LPIPS figure is left out with a warning.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Leave out the ST-LPIPS figure (it runs a network: the slowest part for small images).
    #[arg(long)]
    no_stlpips: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `--space`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Space {
    /// CIELAB, pixels mapped by ΔE2000.
    Lab,
    /// sRGB values, pixels mapped by Euclidean distance.
    Rgb,
}

/// What `quantize --json` prints.
#[derive(Serialize)]
struct Summary {
    image: String,
    out: String,
    space: &'static str,
    dither: bool,
    colors: usize,
    palette: usize,
    iterations: usize,
    mean_delta_e2000: f64,
    mean_delta_e2000_jnd: f64,
    stlpips_alex: Option<f64>,
    bytes: usize,
    seconds: f64,
}

/// An indexed PNG of `palette` and one index per pixel, at the smallest bit depth (1, 2, 4
/// or 8) that holds the palette.
fn indexed_png(
    width: usize,
    height: usize,
    palette: &[[u8; 3]],
    indices: &[u8],
) -> Result<Vec<u8>> {
    let depth: u8 = match palette.len() {
        0..=2 => 1,
        3..=4 => 2,
        5..=16 => 4,
        _ => 8,
    };
    let per_byte = usize::from(8 / depth);
    let row_bytes = width.div_ceil(per_byte);
    let mut packed = vec![0u8; row_bytes * height];
    for (y, row) in indices.chunks(width).enumerate() {
        for (x, &i) in row.iter().enumerate() {
            let shift = 8 - depth as usize * (x % per_byte + 1);
            packed[y * row_bytes + x / per_byte] |= i << shift;
        }
    }
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(match depth {
        1 => png::BitDepth::One,
        2 => png::BitDepth::Two,
        4 => png::BitDepth::Four,
        _ => png::BitDepth::Eight,
    });
    enc.set_palette(palette.iter().flatten().copied().collect::<Vec<u8>>());
    enc.set_compression(png::Compression::High);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&packed)?;
    writer.finish()?;
    Ok(bytes)
}

impl QuantizeArgs {
    pub fn run(self) -> Result<()> {
        if self.out.is_dir() {
            bail!("--out {} is a folder; give the PNG file to write", self.out.display());
        }
        let rgb = images::open(&self.image)?.to_rgb8();
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        let pixels: Vec<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
        let cfg = QuantizeConfig {
            colors: usize::from(self.colors),
            space: match self.space {
                Space::Lab => PaletteSpace::Lab,
                Space::Rgb => PaletteSpace::Rgb,
            },
            dither: self.dither,
            diffusion: self.diffusion,
            seed: self.seed,
            max_iterations: self.iterations,
            ..QuantizeConfig::lab(usize::from(self.colors))
        };
        let start = Instant::now();
        let q = quantize(&pixels, width, height, &cfg)?;
        let seconds = start.elapsed().as_secs_f64();
        let bytes = indexed_png(width, height, &q.palette, &q.indices)?;
        deepsim_data::write_atomic_io(&self.out, &bytes)
            .with_context(|| format!("writing {}", self.out.display()))?;
        let out_pixels = q.pixels();
        let de = mean_delta_e00(&pixels, &out_pixels)?;
        let stlpips = if self.no_stlpips {
            None
        } else if width.min(height) < 21 {
            eprintln!("warning: ST-LPIPS left out: the image is smaller than 21 pixels");
            None
        } else {
            match PerceptualDistance::new(self.weights.as_deref(), &Device::Cpu) {
                Ok(metric) => Some(metric.mean(
                    &images::rgb_tensor(&pixels, width, height)?,
                    &images::rgb_tensor(&out_pixels, width, height)?,
                )?),
                Err(e) => {
                    eprintln!("warning: ST-LPIPS left out: {e}");
                    None
                }
            }
        };
        let summary = Summary {
            image: self.image.display().to_string(),
            out: self.out.display().to_string(),
            space: match self.space {
                Space::Lab => "lab",
                Space::Rgb => "rgb",
            },
            dither: self.dither,
            colors: cfg.colors,
            palette: q.palette.len(),
            iterations: q.iterations,
            mean_delta_e2000: de,
            mean_delta_e2000_jnd: de / JND_DELTA_E,
            stlpips_alex: stlpips,
            bytes: bytes.len(),
            seconds,
        };
        if self.json {
            serde_json::to_writer(std::io::stdout().lock(), &summary)?;
            println!();
        } else {
            println!(
                "{} → {}: {} colours in {} ({}{}), {} k-means iterations, {:.2} s",
                summary.image,
                summary.out,
                summary.palette,
                summary.space,
                if self.dither { "dithered, " } else { "" },
                human_bytes(summary.bytes),
                summary.iterations,
                seconds
            );
            println!("mean ΔE2000 {:.3} ({:.2} JND)", de, summary.mean_delta_e2000_jnd);
            if let Some(d) = stlpips {
                println!("{} {:.4}", PerceptualDistance::NAME, d);
            }
        }
        Ok(())
    }
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
