//! PNG output of a run: sample grids (rows of images, optionally labelled) and loss curves,
//! drawn with `plotters`; all text is set in the embedded DejaVu Sans.

use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, Glyph, InvalidFont, PxScale, ScaleFont};
use candle::{DType, Tensor};
use deepsim_data::write_atomic;
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use crate::error::{Error, Result};
use crate::log::StepLog;

/// DejaVu Sans 2.37, as Debian's `fonts-dejavu-core` 2.37-6 ships it (Bitstream Vera and Arev
/// licences, DejaVu changes in the public domain: `assets/LICENSE-DejaVu.txt`), so that
/// drawing text needs no system font.
const FONT_FILE: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The embedded font, parsed once.
///
/// # Errors
/// The font cannot be parsed (it is embedded, so a built crate does not see this).
fn font() -> Result<&'static FontRef<'static>> {
    static FONT: OnceLock<std::result::Result<FontRef<'static>, InvalidFont>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_FILE))
        .as_ref()
        .map_err(|e| Error::Config(format!("the embedded font DejaVuSans.ttf: {e}")))
}

/// A text style of `size` pixels (ascent to descent) in `color`; [`Canvas`] sets it in the
/// embedded font, whatever family the style names.
fn text_style(size: f64, color: RGBColor) -> TextStyle<'static> {
    let style = TextStyle::from((FontFamily::SansSerif, size).into_font());
    TextStyle { color: color.to_backend_color(), ..style }
}

/// `text` set on one line at `size` pixels, kerned: its glyphs placed from a top-left origin,
/// and the box it fills (advance width, ascent − descent).
fn layout(font: &FontRef<'static>, size: f64, text: &str) -> (Vec<Glyph>, (u32, u32)) {
    let font = font.as_scaled(PxScale::from(size as f32));
    let (mut caret, mut previous, mut glyphs) = (0f32, None, Vec::new());
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(previous) = previous {
            caret += font.kern(previous, id);
        }
        glyphs.push(id.with_scale_and_position(font.scale(), point(caret, font.ascent())));
        caret += font.h_advance(id);
        previous = Some(id);
    }
    (glyphs, (caret.ceil() as u32, (font.ascent() - font.descent()).ceil() as u32))
}

/// The `plotters` bitmap backend over an RGB image, with its text set by `ab_glyph` in the
/// embedded font: every figure's text (titles, tick labels, grid row labels) goes through
/// here. (`plotters`' own `ab_glyph` text, in 0.3.7, drops the glyphs' side bearings and
/// spaces letters unevenly.)
struct Canvas<'a> {
    bitmap: BitMapBackend<'a>,
    font: &'static FontRef<'static>,
}

impl<'a> Canvas<'a> {
    fn new(image: &'a mut RgbImage) -> Result<Self> {
        let size = image.dimensions();
        Ok(Self { bitmap: BitMapBackend::with_buffer(image, size), font: font()? })
    }
}

/// What the bitmap backend's drawing calls return.
type Drawn = std::result::Result<(), DrawingErrorKind<BitmapError>>;
type BitmapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for Canvas<'_> {
    type ErrorType = BitmapError;

    fn get_size(&self) -> (u32, u32) {
        self.bitmap.get_size()
    }

    fn ensure_prepared(&mut self) -> Drawn {
        self.bitmap.ensure_prepared()
    }

    fn present(&mut self) -> Drawn {
        self.bitmap.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Drawn {
        self.bitmap.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, s: &S) -> Drawn {
        self.bitmap.draw_line(from, to, s)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Drawn {
        self.bitmap.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Drawn {
        self.bitmap.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Drawn {
        self.bitmap.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Drawn {
        self.bitmap.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> Drawn {
        self.bitmap.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> std::result::Result<(u32, u32), DrawingErrorKind<BitmapError>> {
        Ok(layout(self.font, style.size(), text).1)
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Drawn {
        let color = style.color();
        let (glyphs, (w, h)) = layout(self.font, style.size(), text);
        let (w, h) = (w as i32, h as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let turn = style.transform();
        let mut covered = Vec::new();
        for glyph in glyphs {
            let Some(outline) = self.font.outline_glyph(glyph) else { continue };
            let corner = outline.px_bounds().min;
            outline.draw(|x, y, coverage| {
                let (x, y) = (corner.x as i32 + x as i32, corner.y as i32 + y as i32);
                covered.push((x, y, coverage));
            });
        }
        for (x, y, coverage) in covered {
            if coverage > 0.0 {
                let (x, y) = turn.transform(x + dx, y + dy);
                let alpha = color.alpha * f64::from(coverage.min(1.0));
                self.bitmap.draw_pixel((pos.0 + x, pos.1 + y), BackendColor { alpha, ..color })?;
            }
        }
        Ok(())
    }
}

/// A `plotters` error while drawing `path`, as an I/O error of that file.
fn draw_error<E>(path: &Path) -> impl Fn(E) -> Error + '_
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) }
}

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

/// [`write_grid`] with each row's name written to its left, in the embedded font.
///
/// # Errors
/// Rows of different shapes; tensor and I/O errors.
pub fn write_labelled_grid(path: &Path, rows: &[(&str, &Tensor)]) -> Result<()> {
    let dims = rows.first().map(|(_, r)| r.dims().to_vec()).unwrap_or_default();
    let [n, 3, h, w] = dims[..] else {
        return Err(Error::Config(format!("write_grid: rows must be [N, 3, H, W], got {dims:?}")));
    };
    const LABEL_SIZE: f64 = 14.0;
    let gap = 2;
    let font = font()?;
    let width = |label: &str| {
        let (_, (width, _)) = layout(font, LABEL_SIZE, label);
        width as usize
    };
    let longest = rows.iter().map(|(label, _)| width(label)).max().unwrap_or(0);
    let margin = if longest == 0 { 0 } else { longest + 12 };
    let mut grid = RgbImage::from_pixel(
        (margin + n * (w + gap) + gap) as u32,
        (rows.len() * (h + gap) + gap) as u32,
        Rgb([255, 255, 255]),
    );
    for (r, (_, row)) in rows.iter().enumerate() {
        if row.dims() != dims {
            return Err(Error::Config(format!(
                "write_grid: row {r} is {:?}, row 0 {dims:?}",
                row.dims()
            )));
        }
        let top = gap + r * (h + gap);
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
    if margin > 0 {
        let area = Canvas::new(&mut grid)?.into_drawing_area();
        let style = text_style(LABEL_SIZE, BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        for (r, (label, _)) in rows.iter().enumerate() {
            let middle = gap + r * (h + gap) + h / 2;
            area.draw_text(label, &style, (6, middle as i32)).map_err(draw_error(path))?;
        }
        area.present().map_err(draw_error(path))?;
    }
    save_png(path, &grid)
}

/// Width of the curves figure, in pixels.
const CURVES_WIDTH: u32 = 800;
/// Height of one panel of the curves figure (title, plot and axis labels), in pixels.
const PANEL_HEIGHT: u32 = 220;
/// Steps in the moving average drawn dark.
const WINDOW: usize = 25;
/// The raw values' line.
const LIGHT: RGBColor = RGBColor(170, 200, 235);
/// The moving average's line.
const DARK: RGBColor = RGBColor(20, 60, 160);
/// The plot's frame and axes.
const FRAME: RGBColor = RGBColor(140, 140, 140);

/// One term's points as drawn: (step, |value|), zeros and non-finite values left out (a log
/// axis has no place for them; an adaptive weight is 0 until its first step, and drawing it
/// at some floor would draw a value it never had), with their 25-step moving average
/// (geometric mean).
struct Curve {
    raw: Vec<(u64, f64)>,
    smooth: Vec<(u64, f64)>,
    /// The first and last steps that logged the term, drawn or not.
    steps: (u64, u64),
    /// How many steps logged it.
    logged: usize,
    /// How many of those values were 0.
    zeros: usize,
    /// How many were NaN or infinite.
    skipped: usize,
}

impl Curve {
    fn new(history: &[StepLog], name: &str) -> Self {
        let values: Vec<(u64, f64)> =
            history.iter().filter_map(|l| l.terms.get(name).map(|v| (l.step, *v))).collect();
        let raw: Vec<(u64, f64)> = values
            .iter()
            .filter(|(_, v)| v.is_finite() && *v != 0.0)
            .map(|&(s, v)| (s, v.abs()))
            .collect();
        let zeros = values.iter().filter(|(_, v)| *v == 0.0).count();
        let logs: Vec<f64> = raw.iter().map(|p| p.1.ln()).collect();
        let smooth = (0..raw.len())
            .map(|i| {
                let lo = i.saturating_sub(WINDOW - 1);
                let mean = logs[lo..=i].iter().sum::<f64>() / (i - lo + 1) as f64;
                (raw[i].0, mean.exp())
            })
            .collect();
        let steps = values.iter().fold((u64::MAX, 0), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
        let skipped = values.len() - raw.len() - zeros;
        Self { raw, smooth, steps, logged: values.len(), zeros, skipped }
    }
}

/// `v` to three significant digits: plain from 0.001 to 9999 (`0.0033`, `0.5`, `200`), else
/// in `2.5e-5` form; trailing zeros dropped.
fn number(v: f64) -> String {
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    if v == 0.0 || (1e-3..1e4).contains(&v.abs()) {
        let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
        trim(&format!("{v:.decimals$}")).to_string()
    } else {
        let s = format!("{v:.2e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{exponent}", trim(mantissa))
    }
}

/// Ticks of a log axis over `lo..=hi`: the labelled ones (decades, thinned to at most 8; or
/// 1-2-5 steps, or every m·10ᵏ, whichever is the sparsest with 3 labels) and the light grid
/// lines (every m·10ᵏ, or the decades when there are more than 8).
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |mantissas: &[f64], every: i32| -> Vec<f64> {
        (first..=last)
            .filter(|k| k.rem_euclid(every) == 0)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let all: Vec<f64> = (1..10).map(f64::from).collect();
    let decades = within(&[1.0], 1);
    if decades.len() > 8 {
        let every = (decades.len() as i32 + 7) / 8;
        return (within(&[1.0], every), decades);
    }
    let light = within(&all, 1);
    for mantissas in [&[1.0][..], &[1.0, 2.0, 5.0]] {
        let labelled = within(mantissas, 1);
        if labelled.len() >= 3 {
            return (labelled, light);
        }
    }
    (light.clone(), light)
}

/// Writes one panel per loss term, in the order `total`, `feat`, `img`, `adv`, `kl`,
/// `discr`, then any other term alphabetically: the raw values light and their 25-step moving
/// average (geometric mean) dark against the step, on a log₁₀ axis, titled with the term's
/// name and its last averaged value.
///
/// A log axis shows magnitudes: a negative value is drawn as |value|; zeros and NaN or
/// infinite values are left out (the title counts them). A history with no terms gives one empty panel saying so, so that a run's
/// `curves.png` always exists. The PNG is written atomically.
///
/// # Errors
/// Drawing and I/O errors.
pub fn write_curves(path: &Path, history: &[StepLog]) -> Result<()> {
    const PREFERRED: [&str; 6] = ["total", "feat", "img", "adv", "kl", "discr"];
    let mut names: Vec<&str> = Vec::new();
    for preferred in PREFERRED {
        if history.iter().any(|l| l.terms.contains_key(preferred)) {
            names.push(preferred);
        }
    }
    let mut others: Vec<&str> = history
        .iter()
        .flat_map(|l| l.terms.keys().map(String::as_str))
        .filter(|n| !PREFERRED.contains(n))
        .collect();
    others.sort_unstable();
    others.dedup();
    names.extend(others);

    let size = (CURVES_WIDTH, PANEL_HEIGHT * names.len().max(1) as u32);
    let mut pixels = RgbImage::from_pixel(size.0, size.1, Rgb([255, 255, 255]));
    {
        let root = Canvas::new(&mut pixels)?.into_drawing_area();
        let panels = root.split_evenly((names.len().max(1), 1));
        if names.is_empty() {
            let (middle_x, middle_y) = (size.0 as i32 / 2, size.1 as i32 / 2);
            let style = text_style(16.0, BLACK).pos(Pos::new(HPos::Center, VPos::Center));
            root.draw_text("no loss terms logged yet", &style, (middle_x, middle_y))
                .map_err(draw_error(path))?;
        }
        for (name, panel) in names.iter().zip(&panels) {
            draw_panel(path, panel, name, &Curve::new(history, name))?;
        }
        root.present().map_err(draw_error(path))?;
    }
    save_png(path, &pixels)
}

/// One panel of [`write_curves`].
fn draw_panel(
    path: &Path,
    panel: &DrawingArea<Canvas<'_>, plotters::coord::Shift>,
    name: &str,
    curve: &Curve,
) -> Result<()> {
    let mut title = match curve.smooth.last() {
        Some((step, v)) => format!("{name}: {} at step {step} ({WINDOW}-step average)", number(*v)),
        None => format!("{name}: no positive finite value in {} steps", curve.logged),
    };
    if !curve.raw.is_empty() {
        let left_out: Vec<String> = [(curve.zeros, "zero"), (curve.skipped, "NaN/inf")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if !left_out.is_empty() {
            title.push_str(&format!("; {} not drawn", left_out.join(", ")));
        }
    }
    let (x_lo, x_hi) = (curve.steps.0, curve.steps.1.max(curve.steps.0 + 1));
    let (mut y_lo, mut y_hi) = curve
        .raw
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    if !(y_lo.is_finite() && y_hi.is_finite()) {
        (y_lo, y_hi) = (0.1, 10.0);
    }
    // At least a factor of 10 in view, centred on the data (an empty panel shows 0.1 to 10).
    let spread = (y_hi / y_lo).max(10.0).sqrt() / (y_hi / y_lo).sqrt();
    let (y_lo, y_hi) = (y_lo / spread / 1.05, y_hi * spread * 1.05);

    let (labelled, light) = log_ticks(y_lo, y_hi);
    let y_range = (y_lo..y_hi).log_scale().with_key_points(labelled).with_light_points(light);
    let mut chart = ChartBuilder::on(panel)
        .caption(title, text_style(16.0, BLACK))
        .margin(6)
        .margin_right(24)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x_lo..x_hi, y_range)
        .map_err(draw_error(path))?;
    let label = text_style(12.0, RGBColor(60, 60, 60));
    chart
        .configure_mesh()
        .label_style(label.clone())
        .axis_desc_style(label)
        .x_desc("step")
        .y_label_formatter(&|v| number(*v))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_style(FRAME)
        .draw()
        .map_err(draw_error(path))?;
    chart
        .draw_series(LineSeries::new(curve.raw.iter().copied(), LIGHT))
        .map_err(draw_error(path))?;
    chart
        .draw_series(LineSeries::new(curve.smooth.iter().copied(), Color::stroke_width(&DARK, 2)))
        .map_err(draw_error(path))?;
    if let [only] = curve.smooth[..] {
        // One step makes no line: a dot.
        chart.draw_series([Circle::new(only, 3, DARK.filled())]).map_err(draw_error(path))?;
    }
    let (x, y) = (chart.x_range(), chart.y_range());
    chart
        .draw_series([Rectangle::new([(x.start, y.end), (x.end, y.start)], FRAME)])
        .map_err(draw_error(path))?;
    Ok(())
}
