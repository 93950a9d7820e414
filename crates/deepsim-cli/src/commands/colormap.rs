//! `deepsim colormap`: designs a sequential colormap with equal ΔE2000 steps (a PNG swatch and
//! a CSV), or checks a map's uniformity (`--check FILE`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use deepsim_metrics::{
    check_colormap, design_colormap, hex_color, parse_hex_color, to_u8, ColormapCheck,
    ColormapConfig,
};
use serde::Serialize;

use crate::images;

/// Designs a sequential colormap as an optimization: the longest ΔE2000 path in the sRGB gamut
/// through (or within --radius of) the anchor colours, lightness strictly monotone, cut into
/// --steps levels with equal ΔE2000 between neighbours; writes OUT.png (a swatch) and OUT.csv.
/// With --check FILE, measures a map instead: the coefficient of variation of its neighbouring
/// ΔE2000 and whether its lightness is monotone.
#[derive(clap::Args)]
pub struct ColormapArgs {
    /// Measure this map instead of designing one: a CSV with one level per line (r,g,b in
    /// [0, 1] or 0–255, or #rrggbb; a header line is skipped) or a PNG swatch (its middle
    /// row, runs of one colour read as one level).
    #[arg(long, conflicts_with_all = ["out", "anchors", "bends", "radius", "bend_radius", "lightness_share", "iterations"])]
    check: Option<PathBuf>,
    /// Levels of the designed map.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(2..=65536))]
    steps: u32,
    /// Anchor colours, dark to light (or light to dark), as #rrggbb separated by commas
    /// (default: viridis' ends and middle, #440154,#21918c,#fde725).
    #[arg(long, value_delimiter = ',', value_parser = hex_arg)]
    anchors: Option<Vec<HexColor>>,
    /// Free bends of the path between neighbouring anchors (0: straight in LCh; more bends
    /// make longer, more colourful and less even-looking maps).
    #[arg(long, default_value_t = 0)]
    bends: usize,
    /// How far (ΔE76) the path may pass from each anchor.
    #[arg(long, default_value_t = 6.0)]
    radius: f64,
    /// How far (ΔE76) each bend may move from its place on the straight path between its
    /// anchors.
    #[arg(long, default_value_t = 20.0)]
    bend_radius: f64,
    /// The least share of every step that must be lightness (ΔL* ≥ share × ΔE2000).
    #[arg(long, default_value_t = 0.3)]
    lightness_share: f64,
    /// Proposals of the search.
    #[arg(long, default_value_t = 4000)]
    iterations: usize,
    /// Seed of the search.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write OUT.png and OUT.csv (required unless --check).
    #[arg(long, required_unless_present = "check")]
    out: Option<PathBuf>,
    /// Print the measures as one JSON object.
    #[arg(long)]
    json: bool,
}

/// An anchor given as `#rrggbb`.
#[derive(Clone, Copy, Debug)]
struct HexColor([f64; 3]);

fn hex_arg(text: &str) -> Result<HexColor, String> {
    parse_hex_color(text)
        .map(HexColor)
        .ok_or_else(|| format!("`{text}` is not a colour as #rrggbb (six hexadecimal digits)"))
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report<'a> {
    map: &'a str,
    levels: usize,
    mean_step: f64,
    min_step: f64,
    max_step: f64,
    step_cv: f64,
    total: f64,
    lightness_monotone: bool,
    lightness_reversals: usize,
    lightness_first: f64,
    lightness_last: f64,
}

fn report(name: &str, c: &ColormapCheck, json: bool) -> Result<()> {
    if json {
        let r = Report {
            map: name,
            levels: c.levels,
            mean_step: c.mean_step,
            min_step: c.min_step,
            max_step: c.max_step,
            step_cv: c.step_cv,
            total: c.total,
            lightness_monotone: c.lightness_monotone,
            lightness_reversals: c.lightness_reversals,
            lightness_first: c.lightness_range.0,
            lightness_last: c.lightness_range.1,
        };
        serde_json::to_writer(std::io::stdout().lock(), &r)?;
        println!();
    } else {
        println!("{name}: {} levels", c.levels);
        println!(
            "  neighbouring ΔE2000: mean {:.4}, min {:.4}, max {:.4}, CV {:.4}; total {:.1}",
            c.mean_step, c.min_step, c.max_step, c.step_cv, c.total
        );
        println!(
            "  lightness L* {:.1} → {:.1}: {}",
            c.lightness_range.0,
            c.lightness_range.1,
            if c.lightness_monotone {
                "monotone".to_owned()
            } else {
                format!("not monotone ({} reversals)", c.lightness_reversals)
            }
        );
    }
    Ok(())
}

/// The levels of a CSV map; errors name the file and line.
fn read_csv(path: &Path) -> Result<Vec<[f64; 3]>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut rows: Vec<[f64; 3]> = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: line {}", path.display(), i + 1))?;
        let fields: Vec<&str> = record.iter().filter(|f| !f.is_empty()).collect();
        let parsed = match fields[..] {
            [hex] => parse_hex_color(hex),
            [r, g, b] => match (r.parse::<f64>(), g.parse::<f64>(), b.parse::<f64>()) {
                (Ok(r), Ok(g), Ok(b)) => Some([r, g, b]),
                _ => None,
            },
            [] => continue,
            _ => None,
        };
        match parsed {
            Some(c) if c.iter().all(|v| v.is_finite()) => rows.push(c),
            // A first line that is not a colour is a header.
            _ if i == 0 => continue,
            _ => bail!(
                "{}: line {}: `{}` is not a colour (r,g,b or #rrggbb)",
                path.display(),
                i + 1,
                fields.join(",")
            ),
        }
    }
    // 0–255 values when any exceeds 1.
    if rows.iter().flatten().any(|&v| v > 1.0) {
        for c in &mut rows {
            *c = c.map(|v| v / 255.0);
        }
    }
    Ok(rows)
}

/// The levels of a PNG swatch: its middle row, each run of one colour one level.
fn read_png(path: &Path) -> Result<Vec<[f64; 3]>> {
    let rgb = images::open(path)?.to_rgb8();
    let y = rgb.height() / 2;
    let mut levels: Vec<[u8; 3]> = Vec::new();
    for x in 0..rgb.width() {
        let p = rgb.get_pixel(x, y).0;
        if levels.last() != Some(&p) {
            levels.push(p);
        }
    }
    Ok(levels.iter().map(|p| p.map(|v| f64::from(v) / 255.0)).collect())
}

/// A swatch: each level a column block, 64 pixels high, about 768 wide.
fn swatch(colors: &[[f64; 3]]) -> image::RgbImage {
    let cell = (768 / colors.len()).max(1) as u32;
    let width = cell * colors.len() as u32;
    image::RgbImage::from_fn(width, 64, |x, _| image::Rgb(colors[(x / cell) as usize].map(to_u8)))
}

impl ColormapArgs {
    pub fn run(self) -> Result<()> {
        if let Some(path) = &self.check {
            let is_png = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            let colors = if is_png { read_png(path)? } else { read_csv(path)? };
            let c = check_colormap(&colors).with_context(|| path.display().to_string())?;
            return report(&path.display().to_string(), &c, self.json);
        }
        let out = self.out.as_ref().context("--out is required to design a map")?;
        let mut cfg = ColormapConfig::viridis_like(self.steps as usize);
        if let Some(anchors) = &self.anchors {
            cfg.anchors = anchors.iter().map(|a| a.0).collect();
        }
        cfg.bends = self.bends;
        cfg.radius = self.radius;
        cfg.bend_radius = self.bend_radius;
        cfg.lightness_share = self.lightness_share;
        cfg.iterations = self.iterations;
        cfg.seed = self.seed;
        let map = design_colormap(&cfg)?;
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(["r", "g", "b", "hex", "L", "a", "b*"])?;
        for (c, lab) in map.colors.iter().zip(&map.lab) {
            let mut row: Vec<String> = c.iter().map(|v| format!("{v:.6}")).collect();
            row.push(hex_color(*c));
            row.extend(lab.iter().map(|v| format!("{v:.4}")));
            csv.write_record(&row)?;
        }
        let csv_path = out.with_extension("csv");
        let png_path = out.with_extension("png");
        let bytes = csv.into_inner().context("finishing the CSV")?;
        deepsim_data::write_atomic_io(&csv_path, &bytes)
            .with_context(|| format!("writing {}", csv_path.display()))?;
        let mut png = std::io::Cursor::new(Vec::new());
        swatch(&map.colors).write_to(&mut png, image::ImageFormat::Png)?;
        deepsim_data::write_atomic_io(&png_path, png.get_ref())
            .with_context(|| format!("writing {}", png_path.display()))?;
        if !self.json {
            println!(
                "{} and {}: path length {:.1} ΔE2000 (straight through the anchors: {:.1})",
                png_path.display(),
                csv_path.display(),
                map.length,
                map.straight_length
            );
        }
        report(&csv_path.display().to_string(), &check_colormap(&map.colors)?, self.json)
    }
}
