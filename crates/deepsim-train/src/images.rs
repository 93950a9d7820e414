//! PNG output of a run: sample grids (rows of images) and loss curves with labels drawn in a
//! built-in 3×5 pixel font.

use std::path::Path;

use candle::{DType, Tensor};
use deepsim_data::write_atomic;
use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::log::StepLog;

fn save_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) })?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// The values of `t` (in [0, 1], clamped) as 8-bit levels, in its element order.
fn levels(t: &Tensor) -> Result<Vec<u8>> {
    let v = t.to_dtype(DType::F32)?.clamp(0f32, 1f32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.into_iter().map(|x| (x * 255.0).round() as u8).collect())
}

/// Writes one image (`[3, H, W]` or `[1, 3, H, W]` in [0, 1], clamped) as a PNG, atomically.
///
/// # Errors
/// Another shape; tensor and I/O errors.
pub fn write_image(path: &Path, image: &Tensor) -> Result<()> {
    let image = if image.dims().len() == 4 && image.dim(0)? == 1 {
        image.squeeze(0)?
    } else {
        image.clone()
    };
    let [3, h, w] = image.dims()[..] else {
        return Err(Error::Config(format!(
            "write_image {}: expected [3, H, W], got {:?}",
            path.display(),
            image.dims()
        )));
    };
    let v = levels(&image)?;
    let at = |c: usize, x: u32, y: u32| v[(c * h + y as usize) * w + x as usize];
    let img =
        RgbImage::from_fn(w as u32, h as u32, |x, y| Rgb([at(0, x, y), at(1, x, y), at(2, x, y)]));
    save_png(path, &img)
}

/// Writes rows of images as one PNG: row `r` holds the images of `rows[r]` (`[N, 3, H, W]`
/// in [0, 1], clamped), side by side, with 2-pixel white gaps.
///
/// # Errors
/// Rows of different shapes; tensor and I/O errors.
pub fn write_grid(path: &Path, rows: &[&Tensor]) -> Result<()> {
    let rows: Vec<(&str, &Tensor)> = rows.iter().map(|r| ("", *r)).collect();
    write_labelled_grid(path, &rows)
}

/// [`write_grid`] with each row's name written to its left (letters, drawn in lower case,
/// digits and `. - + : / ( ) &`; other characters are left blank).
///
/// # Errors
/// Rows of different shapes; tensor and I/O errors.
pub fn write_labelled_grid(path: &Path, rows: &[(&str, &Tensor)]) -> Result<()> {
    let dims = rows.first().map(|(_, r)| r.dims().to_vec()).unwrap_or_default();
    let [n, 3, h, w] = dims[..] else {
        return Err(Error::Config(format!("write_grid: rows must be [N, 3, H, W], got {dims:?}")));
    };
    let gap = 2;
    // Glyphs are 3×5 cells on a 4-cell pitch at scale 2: 8 pixels a character.
    let longest = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
    let margin = if longest == 0 { 0 } else { longest * 8 + 8 };
    let mut grid = RgbImage::from_pixel(
        (margin + n * (w + gap) + gap) as u32,
        (rows.len() * (h + gap) + gap) as u32,
        Rgb([255, 255, 255]),
    );
    for (r, (label, row)) in rows.iter().enumerate() {
        if row.dims() != dims {
            return Err(Error::Config(format!(
                "write_grid: row {r} is {:?}, row 0 {dims:?}",
                row.dims()
            )));
        }
        let top = gap + r * (h + gap);
        text(&mut grid, 4, (top + h / 2) as i64 - 5, label, Rgb([0, 0, 0]));
        let v = levels(row)?;
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    let at = |c: usize| v[((i * 3 + c) * h + y) * w + x];
                    let px = (margin + gap + i * (w + gap) + x) as u32;
                    let py = (top + y) as u32;
                    grid.put_pixel(px, py, Rgb([at(0), at(1), at(2)]));
                }
            }
        }
    }
    save_png(path, &grid)
}

/// 3×5 glyphs, rows top to bottom, three bits each (high bit left).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' | 'o' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' | 's' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        ':' => [0, 2, 0, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '&' => [2, 5, 2, 5, 3],
        'a' => [2, 5, 7, 5, 5],
        'b' => [4, 4, 7, 5, 7],
        'c' => [7, 4, 4, 4, 7],
        'd' => [6, 5, 5, 5, 6],
        'e' => [7, 4, 7, 4, 7],
        'f' => [7, 4, 7, 4, 4],
        'g' => [7, 4, 5, 5, 7],
        'h' => [4, 4, 6, 5, 5],
        'i' => [7, 2, 2, 2, 7],
        'j' => [1, 1, 1, 5, 7],
        'k' => [5, 5, 6, 5, 5],
        'l' => [4, 4, 4, 4, 7],
        'm' => [5, 7, 7, 5, 5],
        'n' => [6, 5, 5, 5, 5],
        'p' => [6, 5, 6, 4, 4],
        'q' => [7, 5, 5, 7, 1],
        'r' => [6, 5, 6, 5, 5],
        't' => [7, 2, 2, 2, 2],
        'u' => [5, 5, 5, 5, 7],
        'v' => [5, 5, 5, 5, 2],
        'w' => [5, 5, 7, 7, 5],
        'x' => [5, 5, 2, 5, 5],
        'y' => [5, 5, 7, 1, 7],
        'z' => [7, 1, 2, 4, 7],
        _ => [0; 5],
    }
}

fn text(img: &mut RgbImage, x0: i64, y0: i64, s: &str, color: Rgb<u8>) {
    const SCALE: i64 = 2;
    for (k, c) in s.chars().enumerate() {
        let g = glyph(c.to_ascii_lowercase());
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let x = x0 + (k as i64 * 4 + col) * SCALE + dx;
                            let y = y0 + row as i64 * SCALE + dy;
                            if x >= 0
                                && y >= 0
                                && (x as u32) < img.width()
                                && (y as u32) < img.height()
                            {
                                img.put_pixel(x as u32, y as u32, color);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, color);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Writes one panel per loss term (log₁₀ scale; raw values light, a 25-step moving average
/// dark), labelled with the term's name, its last average and the axis range.
///
/// # Errors
/// I/O errors.
pub fn write_curves(path: &Path, history: &[StepLog]) -> Result<()> {
    let mut names: Vec<&str> = Vec::new();
    for preferred in ["total", "feat", "img", "adv", "kl", "discr"] {
        if history.iter().any(|l| l.terms.contains_key(preferred)) {
            names.push(preferred);
        }
    }
    let (pw, ph, left, top) = (640i64, 130i64, 70i64, 16i64);
    let mut img = RgbImage::from_pixel(
        (pw + left + 10) as u32,
        ((ph + top + 8) * names.len().max(1) as i64) as u32,
        Rgb([255, 255, 255]),
    );
    for (p, name) in names.iter().enumerate() {
        let y_off = p as i64 * (ph + top + 8) + top;
        let pts: Vec<(f64, f64)> = history
            .iter()
            .filter_map(|l| l.terms.get(*name).map(|v| (l.step as f64, v.abs().max(1e-30).log10())))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let window = 25usize;
        let smooth: Vec<(f64, f64)> = (0..pts.len())
            .map(|i| {
                let lo = i.saturating_sub(window - 1);
                let s: f64 = pts[lo..=i].iter().map(|p| p.1).sum();
                (pts[i].0, s / (i - lo + 1) as f64)
            })
            .collect();
        let (x_min, x_max) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1.0));
        let y_min = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let y_max = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max).max(y_min + 1e-6);
        let map = |(x, y): (f64, f64)| -> (i64, i64) {
            let px = left + ((x - x_min) / (x_max - x_min) * (pw - 1) as f64).round() as i64;
            let py =
                y_off + ph - 1 - ((y - y_min) / (y_max - y_min) * (ph - 1) as f64).round() as i64;
            (px, py)
        };
        let frame = Rgb([160, 160, 160]);
        line(&mut img, (left, y_off), (left + pw - 1, y_off), frame);
        line(&mut img, (left, y_off + ph - 1), (left + pw - 1, y_off + ph - 1), frame);
        line(&mut img, (left, y_off), (left, y_off + ph - 1), frame);
        line(&mut img, (left + pw - 1, y_off), (left + pw - 1, y_off + ph - 1), frame);
        for w in pts.windows(2) {
            line(&mut img, map(w[0]), map(w[1]), Rgb([170, 200, 235]));
        }
        for w in smooth.windows(2) {
            line(&mut img, map(w[0]), map(w[1]), Rgb([20, 60, 160]));
        }
        let last = 10f64.powf(smooth[smooth.len() - 1].1);
        text(
            &mut img,
            left,
            y_off - 13,
            &format!("{name}  {last:.3e}  steps {x_min}-{x_max}"),
            Rgb([0, 0, 0]),
        );
        text(&mut img, 2, y_off, &format!("{:.1e}", 10f64.powf(y_max)), Rgb([80, 80, 80]));
        text(
            &mut img,
            2,
            y_off + ph - 10,
            &format!("{:.1e}", 10f64.powf(y_min)),
            Rgb([80, 80, 80]),
        );
    }
    save_png(path, &img)
}
