//! Colour quantization by perceptual distance: a palette of K colours found by k-means
//! (seeded k-means++ start) in CIELAB, each pixel mapped to the entry nearest by ΔE00, with
//! optional Floyd–Steinberg dithering; the same in sRGB as the baseline the article argues
//! against. Works on 8-bit sRGB pixels, the form images are quantized in.

use deepsim_data::Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::lab::{delta_e00, lab_from_srgb, srgb_from_lab, to_u8};

/// The most colours a palette may have (an indexed PNG's limit).
pub const MAX_COLORS: usize = 256;

/// The space in which the palette is fitted and pixels are matched to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaletteSpace {
    /// CIELAB: k-means in CIELAB with chroma compressed as ΔE00 weighs it (Euclidean
    /// distance there follows ΔE00, and the mean is its best centre), pixels mapped to the
    /// palette entry nearest by ΔE00.
    Lab,
    /// sRGB values: k-means and mapping by Euclidean distance in 8-bit sRGB, the usual
    /// non-perceptual quantizer.
    Rgb,
}

/// Settings of [`quantize`].
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeConfig {
    /// The palette size K, 1 to [`MAX_COLORS`]. An image with at most K distinct colours keeps
    /// them all, exactly.
    pub colors: usize,
    /// Where the palette is fitted and pixels are matched.
    pub space: PaletteSpace,
    /// Floyd–Steinberg error diffusion (serpentine), the error carried in the palette's space;
    /// each diffused colour is matched by Euclidean distance in that space.
    pub dither: bool,
    /// The share of each pixel's error that dithering passes on, 0 to 1. All of it (1) keeps
    /// the local mean exactly but scatters far colours into smooth areas; three quarters,
    /// the default, measured lower mean ΔE00 and ST-LPIPS on the photos of
    /// docs/APPLICATIONS.md.
    pub diffusion: f64,
    /// Seed of the k-means++ start.
    pub seed: u64,
    /// At most this many Lloyd iterations.
    pub max_iterations: usize,
    /// Stop when no centre moves farther than this (in the space's units: about ΔE00 for
    /// Lab, 8-bit levels for RGB).
    pub tolerance: f64,
}

impl QuantizeConfig {
    /// K colours in CIELAB, no dithering (diffusion 0.75 when turned on), seed 0, at most 100 iterations, tolerance 0.05.
    pub fn lab(colors: usize) -> Self {
        Self {
            colors,
            space: PaletteSpace::Lab,
            dither: false,
            diffusion: 0.75,
            seed: 0,
            max_iterations: 100,
            tolerance: 0.05,
        }
    }
}

/// A quantized image: its palette and one palette index per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// The palette, 8-bit sRGB, distinct entries (at most [`QuantizeConfig::colors`]).
    pub palette: Vec<[u8; 3]>,
    /// One palette index per pixel, row-major.
    pub indices: Vec<u8>,
    /// Lloyd iterations run.
    pub iterations: usize,
}

impl Quantized {
    /// The quantized pixels, 8-bit sRGB, row-major.
    pub fn pixels(&self) -> Vec<[u8; 3]> {
        self.indices.iter().map(|&i| self.palette[usize::from(i)]).collect()
    }
}

/// ΔE00's chroma weighting: a chroma difference counts 1 / S_C = 1 / (1 + 0.045 C̄).
const CHROMA_K: f64 = 0.045;

/// CIELAB with chroma compressed as ΔE00 compresses it: C′ = ln(1 + 0.045 C) / 0.045 (so
/// dC′ = dC / S_C), hue and lightness kept. Euclidean distance here follows ΔE00 far more
/// closely than ΔE76 does, so that k-means, which minimizes squared Euclidean distance, fits
/// the palette ΔE00 will judge.
fn lab_to_fit(lab: [f64; 3]) -> [f64; 3] {
    map_chroma(lab, f64::ln_1p)
}

/// The inverse of [`lab_to_fit`].
fn fit_to_lab(p: [f64; 3]) -> [f64; 3] {
    map_chroma(p, f64::exp_m1)
}

/// `p` with its chroma C (the length of its a, b) replaced by `f(0.045 C) / 0.045`, hue and
/// lightness kept.
fn map_chroma(p: [f64; 3], f: fn(f64) -> f64) -> [f64; 3] {
    let c = p[1].hypot(p[2]);
    if c == 0.0 {
        return [p[0], 0.0, 0.0];
    }
    let s = f(CHROMA_K * c) / CHROMA_K / c;
    [p[0], p[1] * s, p[2] * s]
}

/// The colour of each pixel in the palette's space.
fn coords(space: PaletteSpace, rgb: [u8; 3]) -> [f64; 3] {
    match space {
        PaletteSpace::Lab => lab_to_fit(lab_from_srgb(rgb.map(|v| f64::from(v) / 255.0))),
        PaletteSpace::Rgb => rgb.map(f64::from),
    }
}

/// A centre in the palette's space as an 8-bit sRGB colour (clipped to the gamut).
fn to_rgb(space: PaletteSpace, c: [f64; 3]) -> [u8; 3] {
    match space {
        PaletteSpace::Lab => srgb_from_lab(fit_to_lab(c)).map(to_u8),
        PaletteSpace::Rgb => c.map(|v| v.clamp(0.0, 255.0).round() as u8),
    }
}

fn dist2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// The index and squared distance of the centre nearest to `p`.
fn nearest(p: [f64; 3], centres: &[[f64; 3]]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (k, &c) in centres.iter().enumerate() {
        let d = dist2(p, c);
        if d < best.1 {
            best = (k, d);
        }
    }
    best
}

/// The distinct colours of an image, sorted by their packed value, with their pixel counts.
fn histogram(pixels: &[[u8; 3]]) -> (Vec<u32>, Vec<f64>) {
    let mut keys: Vec<u32> = pixels.par_iter().map(|&p| pack(p)).collect();
    keys.par_sort_unstable();
    let (mut colors, mut counts) = (Vec::new(), Vec::new());
    for key in keys {
        if colors.last() == Some(&key) {
            *counts.last_mut().expect("a count per colour") += 1.0;
        } else {
            colors.push(key);
            counts.push(1.0);
        }
    }
    (colors, counts)
}

fn pack(p: [u8; 3]) -> u32 {
    (u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2])
}

fn unpack(key: u32) -> [u8; 3] {
    [(key >> 16) as u8, (key >> 8) as u8, key as u8]
}

/// Draws an index with probability proportional to `weights` (their sum `total` > 0).
fn draw(weights: &[f64], total: f64, rng: &mut Rng) -> usize {
    let mut target = rng.uniform() * total;
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return i;
        }
        target -= w;
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// Weighted k-means++ (Arthur & Vassilvitskii 2007): the first centre drawn by weight, each
/// next one by weight × squared distance to the nearest centre so far.
fn kmeans_pp(points: &[[f64; 3]], weights: &[f64], k: usize, rng: &mut Rng) -> Vec<[f64; 3]> {
    let total: f64 = weights.iter().sum();
    let mut centres = vec![points[draw(weights, total, rng)]];
    let mut d2: Vec<f64> = points.par_iter().map(|&p| dist2(p, centres[0])).collect();
    while centres.len() < k {
        let scores: Vec<f64> = d2.iter().zip(weights).map(|(d, w)| d * w).collect();
        let sum: f64 = scores.iter().sum();
        if sum <= 0.0 {
            break;
        }
        let c = points[draw(&scores, sum, rng)];
        centres.push(c);
        d2.par_iter_mut().zip(points).for_each(|(d, &p)| *d = d.min(dist2(p, c)));
    }
    centres
}

/// Lloyd's iterations on weighted points; an emptied cluster restarts at the point that costs
/// the most. Returns the centres and the iterations run.
fn lloyd(
    points: &[[f64; 3]],
    weights: &[f64],
    mut centres: Vec<[f64; 3]>,
    cfg: &QuantizeConfig,
) -> (Vec<[f64; 3]>, usize) {
    let k = centres.len();
    for iteration in 1..=cfg.max_iterations {
        let zero = || (vec![[0.0; 3]; k], vec![0.0; k]);
        let (sums, mass) = points
            .par_iter()
            .zip(weights)
            .fold(zero, |(mut sums, mut mass), (&p, &w)| {
                let (j, _) = nearest(p, &centres);
                for c in 0..3 {
                    sums[j][c] += w * p[c];
                }
                mass[j] += w;
                (sums, mass)
            })
            .reduce(zero, |(mut s1, mut m1), (s2, m2)| {
                for j in 0..k {
                    for c in 0..3 {
                        s1[j][c] += s2[j][c];
                    }
                    m1[j] += m2[j];
                }
                (s1, m1)
            });
        let mut shift: f64 = 0.0;
        let mut next = centres.clone();
        for j in 0..k {
            if mass[j] > 0.0 {
                next[j] = sums[j].map(|s| s / mass[j]);
            } else {
                let worst = points
                    .iter()
                    .zip(weights)
                    .map(|(&p, &w)| w * nearest(p, &centres).1)
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(i, _)| i);
                next[j] = points[worst];
            }
            shift = shift.max(dist2(next[j], centres[j]).sqrt());
        }
        centres = next;
        if shift <= cfg.tolerance {
            return (centres, iteration);
        }
    }
    (centres, cfg.max_iterations)
}

/// The palette entry nearest to a colour by the space's matching distance: Euclidean for
/// RGB; for Lab, ΔE00 — evaluated for the entries that are candidates by the fitting space's
/// Euclidean distance (within twice the nearest one's, plus 2), where ΔE00's nearest lies (the
/// two distances differ by well under that factor), so that a 64-colour palette costs a
/// handful of ΔE00 evaluations per colour instead of 64.
fn best_entry(space: PaletteSpace, p: [f64; 3], fit: &[[f64; 3]], lab: &[[f64; 3]]) -> usize {
    let (near, d2) = nearest(p, fit);
    if space == PaletteSpace::Rgb {
        return near;
    }
    let reach = (2.0 * d2.sqrt() + 2.0).powi(2);
    let p_lab = fit_to_lab(p);
    let mut best = (near, delta_e00(p_lab, lab[near]));
    for (k, &c) in fit.iter().enumerate() {
        if k != near && dist2(p, c) <= reach {
            let d = delta_e00(p_lab, lab[k]);
            if d < best.1 {
                best = (k, d);
            }
        }
    }
    best.0
}

/// The distinct colours merged for fitting: colours that agree in the top 6 bits of each
/// channel become one point, their count-weighted mean, carrying their total count. A
/// photograph's hundreds of thousands of colours become tens of thousands of points, each
/// within 4 levels per channel of the colours it stands for, and k-means' sums are unchanged
/// up to that spread; pixels are still mapped one distinct colour at a time.
fn merge_close(colors: &[u32], points: &[[f64; 3]], counts: &[f64]) -> (Vec<[f64; 3]>, Vec<f64>) {
    let bin = |key: u32| (key >> 2) & 0x003F_3F3F;
    let mut order: Vec<usize> = (0..colors.len()).collect();
    order.sort_unstable_by_key(|&i| bin(colors[i]));
    let (mut fit, mut weights) = (Vec::new(), Vec::new());
    let mut last = None;
    for i in order {
        let w = counts[i];
        if last == Some(bin(colors[i])) {
            let (p, total): (&mut [f64; 3], &mut f64) =
                (fit.last_mut().expect("a point per bin"), weights.last_mut().expect("a weight"));
            for d in 0..3 {
                p[d] = (p[d] * *total + points[i][d] * w) / (*total + w);
            }
            *total += w;
        } else {
            fit.push(points[i]);
            weights.push(w);
            last = Some(bin(colors[i]));
        }
    }
    (fit, weights)
}

/// Quantizes an image to a palette of at most `cfg.colors` colours.
///
/// `pixels` are 8-bit sRGB, row-major, `width × height` of them. The palette is k-means in
/// `cfg.space` from a seeded k-means++ start over the image's distinct colours (close ones
/// merged) weighted by their pixel counts; its centres are rounded to 8-bit sRGB (clipped to the gamut) and
/// pixels are mapped to those rounded entries, so the result is exactly what an indexed PNG
/// stores.
///
/// # Errors
/// `colors` outside 1–256, `diffusion` outside [0, 1], `tolerance` negative or not finite, or `pixels.len()` not
/// `width × height` (or zero).
pub fn quantize(
    pixels: &[[u8; 3]],
    width: usize,
    height: usize,
    cfg: &QuantizeConfig,
) -> Result<Quantized> {
    if !(1..=MAX_COLORS).contains(&cfg.colors) {
        return Err(Error::Config {
            what: "quantize: colors",
            reason: format!("{} colours; a palette holds 1 to {MAX_COLORS}", cfg.colors),
        });
    }
    if !(0.0..=1.0).contains(&cfg.diffusion) {
        return Err(Error::Config {
            what: "quantize: diffusion",
            reason: format!("{}; expected a share from 0 to 1", cfg.diffusion),
        });
    }
    if !(cfg.tolerance >= 0.0 && cfg.tolerance.is_finite()) {
        return Err(Error::Config {
            what: "quantize: tolerance",
            reason: format!("{}; expected a finite value ≥ 0", cfg.tolerance),
        });
    }
    if pixels.is_empty() || width.checked_mul(height) != Some(pixels.len()) {
        return Err(Error::Config {
            what: "quantize: pixels",
            reason: format!("{} pixels for a {width}×{height} image", pixels.len()),
        });
    }
    let (colors, counts) = histogram(pixels);
    let points: Vec<[f64; 3]> = colors.par_iter().map(|&c| coords(cfg.space, unpack(c))).collect();
    let (centres, iterations) = if colors.len() <= cfg.colors {
        (points.clone(), 0)
    } else {
        let (fit, weights) = merge_close(&colors, &points, &counts);
        let mut rng = Rng::derive(cfg.seed, &[u64::from(b'q'), cfg.colors as u64]);
        let start = kmeans_pp(&fit, &weights, cfg.colors, &mut rng);
        lloyd(&fit, &weights, start, cfg)
    };
    let mut palette: Vec<[u8; 3]> = centres.iter().map(|&c| to_rgb(cfg.space, c)).collect();
    palette.sort_unstable();
    palette.dedup();
    let entries: Vec<[f64; 3]> = palette.iter().map(|&c| coords(cfg.space, c)).collect();
    // Each pixel's colour is looked up among the distinct ones, whose coordinates are known.
    let colour_index =
        |p: [u8; 3]| colors.binary_search(&pack(p)).expect("every pixel's colour is listed");
    let indices = if cfg.dither {
        dither(pixels, width, |p| points[colour_index(p)], &entries, cfg.diffusion)
    } else {
        let lab: Vec<[f64; 3]> = entries.iter().map(|&e| fit_to_lab(e)).collect();
        let per_colour: Vec<u8> =
            points.par_iter().map(|&p| best_entry(cfg.space, p, &entries, &lab) as u8).collect();
        pixels.par_iter().map(|&p| per_colour[colour_index(p)]).collect()
    };
    Ok(Quantized { width, height, palette, indices, iterations })
}

/// Floyd–Steinberg error diffusion along serpentine rows, `diffusion` of the error passed on;
/// the diffused colour is kept within the palette's bounding box so that error cannot build
/// up without limit. `coords_of` gives a pixel's colour in the palette's space.
fn dither(
    pixels: &[[u8; 3]],
    width: usize,
    coords_of: impl Fn([u8; 3]) -> [f64; 3],
    palette: &[[f64; 3]],
    diffusion: f64,
) -> Vec<u8> {
    let mut low = [f64::INFINITY; 3];
    let mut high = [f64::NEG_INFINITY; 3];
    for c in palette {
        for d in 0..3 {
            low[d] = low[d].min(c[d]);
            high[d] = high[d].max(c[d]);
        }
    }
    let mut out = vec![0u8; pixels.len()];
    let mut here = vec![[0.0f64; 3]; width + 2];
    let mut below = vec![[0.0f64; 3]; width + 2];
    for (y, row) in pixels.chunks(width).enumerate() {
        let forward = y % 2 == 0;
        for step in 0..width {
            let x = if forward { step } else { width - 1 - step };
            let e = here[x + 1];
            let original = coords_of(row[x]);
            let want: [f64; 3] =
                std::array::from_fn(|d| (original[d] + e[d]).clamp(low[d], high[d]));
            let (k, _) = nearest(want, palette);
            out[y * width + x] = k as u8;
            let err: [f64; 3] = std::array::from_fn(|d| diffusion * (want[d] - palette[k][d]));
            // Neighbours ahead on this row and on the next, mirrored on reversed rows.
            let (ahead, behind) = if forward { (x + 2, x) } else { (x, x + 2) };
            for d in 0..3 {
                here[ahead][d] += err[d] * 7.0 / 16.0;
                below[behind][d] += err[d] * 3.0 / 16.0;
                below[x + 1][d] += err[d] * 5.0 / 16.0;
                below[ahead][d] += err[d] / 16.0;
            }
        }
        std::mem::swap(&mut here, &mut below);
        below.iter_mut().for_each(|e| *e = [0.0; 3]);
    }
    out
}

/// The mean ΔE00 between two images' pixels (8-bit sRGB, same length).
///
/// # Errors
/// Lengths that differ, or no pixels.
pub fn mean_delta_e00(a: &[[u8; 3]], b: &[[u8; 3]]) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::Config {
            what: "mean_delta_e00",
            reason: format!("{} and {} pixels; expected the same, non-zero", a.len(), b.len()),
        });
    }
    let lab = |p: [u8; 3]| lab_from_srgb(p.map(|v| f64::from(v) / 255.0));
    let sum: f64 = a.par_iter().zip(b).map(|(&p, &q)| delta_e00(lab(p), lab(q))).sum();
    Ok(sum / a.len() as f64)
}
