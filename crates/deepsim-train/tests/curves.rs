//! The PNG figures read back pixel by pixel: loss curves (one titled panel per term, a
//! falling term drawn falling, bad values tolerated) and the row labels of sample grids.

mod common;

use std::collections::BTreeMap;

use candle::{Device, Tensor};
use deepsim_train::{write_curves, write_grid, write_labelled_grid, StepLog};
use image::RgbImage;

use common::temp_dir;

/// A history of `steps` steps whose terms are `f(name, step)` for each of `names`.
fn history(steps: u64, names: &[&str], f: impl Fn(&str, u64) -> f64) -> Vec<StepLog> {
    (1..=steps)
        .map(|step| {
            // A metrics.jsonl line with no terms, as the trainer writes one; terms set after,
            // so that NaN needs no JSON spelling.
            let line = format!(r#"{{"step":{step},"epoch":0,"batch":0,"seconds":0.0}}"#);
            let mut log = StepLog::from_json(&line).expect("a metrics line");
            log.step = step;
            log.terms =
                names.iter().map(|n| (n.to_string(), f(n, step))).collect::<BTreeMap<_, _>>();
            log
        })
        .collect()
}

fn curves(name: &str, history: &[StepLog]) -> RgbImage {
    let path = temp_dir(name).join("curves.png");
    write_curves(&path, history).unwrap();
    image::open(&path).unwrap().to_rgb8()
}

/// The dark moving-average line (20, 60, 160), and what anti-aliasing leaves of it.
fn is_average(p: &image::Rgb<u8>) -> bool {
    let [r, g, b] = p.0;
    b >= 120 && r <= 90 && g <= 120 && b as i32 - r as i32 >= 60
}

/// Text, black on white.
fn is_text(p: &image::Rgb<u8>) -> bool {
    p.0.iter().all(|&c| c < 100)
}

/// The plot frame of the panel in rows `top..top + height`: its first row, and its first and
/// last columns, found as the first row more than half of which is the frame's grey.
fn frame(img: &RgbImage, top: u32, height: u32) -> (u32, u32, u32) {
    for y in top..top + height {
        let grey: Vec<u32> =
            (0..img.width()).filter(|&x| img.get_pixel(x, y).0 == [140, 140, 140]).collect();
        if grey.len() as u32 > img.width() / 2 {
            return (y, grey[0], *grey.last().unwrap());
        }
    }
    panic!("no frame in rows {top}..{}", top + height);
}

/// The mean row of the dark line's pixels in column `x`, rows `top..bottom`.
fn line_row(img: &RgbImage, x: u32, top: u32, bottom: u32) -> Option<f64> {
    let rows: Vec<u32> = (top..bottom).filter(|&y| is_average(img.get_pixel(x, y))).collect();
    (!rows.is_empty()).then(|| rows.iter().sum::<u32>() as f64 / rows.len() as f64)
}

/// The dark line's rows at its first and last columns inside the frame of a panel.
fn line_ends(img: &RgbImage, top: u32, height: u32) -> ((u32, f64), (u32, f64)) {
    let (frame_top, left, right) = frame(img, top, height);
    let bottom = top + height;
    let columns: Vec<(u32, f64)> = (left + 1..right)
        .filter_map(|x| line_row(img, x, frame_top, bottom).map(|y| (x, y)))
        .collect();
    assert!(columns.len() > 100, "the average line spans {} columns", columns.len());
    (columns[0], *columns.last().unwrap())
}

#[test]
fn one_panel_per_term_in_the_documented_order_each_titled() {
    let one = curves("one", &history(60, &["total"], |_, _| 1.0));
    let panel = one.height();
    let names = ["discr", "kl", "adv", "zeta", "img", "feat", "total"];
    let img = curves("seven", &history(60, &names, |_, s| 1.0 + s as f64));
    assert_eq!(img.width(), one.width());
    assert_eq!(img.height(), 7 * panel, "seven terms, seven panels of {panel} rows");
    for p in 0..7 {
        let top = p * panel;
        let (frame_top, left, right) = frame(&img, top, panel);
        assert!(
            frame_top > top + 16 && frame_top < top + panel / 3,
            "panel {p}: frame at {frame_top}"
        );
        assert!(right - left > img.width() / 2);
        // The title strip, above the frame and clear of the top tick label.
        let title = (top..frame_top - 10)
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| is_text(img.get_pixel(x, y)))
            .count();
        assert!(title > 100, "panel {p} has {title} dark pixels in its title strip");
        // Tick labels left of the frame and under it.
        let y_labels = (frame_top..top + panel - 40)
            .flat_map(|y| (0..left - 4).map(move |x| (x, y)))
            .filter(|&(x, y)| is_text(img.get_pixel(x, y)))
            .count();
        assert!(y_labels > 30, "panel {p}: {y_labels} dark pixels left of the y axis");
        let (_, (_, line_bottom)) = line_ends(&img, top, panel);
        let x_labels = (line_bottom as u32 + 2..top + panel)
            .flat_map(|y| (left..right).map(move |x| (x, y)))
            .filter(|&(x, y)| is_text(img.get_pixel(x, y)))
            .count();
        assert!(x_labels > 30, "panel {p}: {x_labels} dark pixels under the x axis");
    }
}

#[test]
fn a_falling_term_falls_and_a_constant_one_stays_level() {
    let steps = 200;
    let img = curves(
        "geometric",
        &history(
            steps,
            &["kl", "total"],
            |n, s| if n == "total" { 0.5 } else { 0.97f64.powi(s as i32) },
        ),
    );
    let panel = img.height() / 2;
    // total first, then kl.
    let ((x0, y0), (x1, y1)) = line_ends(&img, 0, panel);
    assert!((y0 - y1).abs() <= 1.0, "constant total: rows {y0} at column {x0}, {y1} at {x1}");
    let ((x0, y0), (x1, y1)) = line_ends(&img, panel, panel);
    let (frame_top, left, right) = frame(&img, panel, panel);
    assert!(x0 < left + 10 && x1 > right - 10, "the line spans columns {x0}..{x1}");
    assert!(y0 < frame_top as f64 + 20.0, "kl starts at row {y0}, the frame's top is {frame_top}");
    assert!(y1 > y0 + panel as f64 / 2.0, "kl falls from row {y0} to row {y1}");
}

#[test]
fn zeros_negatives_nan_and_infinity_still_draw() {
    let bad = |n: &str, s: u64| match (n, s % 5) {
        ("adv", 0) => 0.0,
        ("adv", 1) => f64::NAN,
        ("adv", 2) => -0.3,
        ("adv", 3) => f64::INFINITY,
        ("adv", _) => 0.2,
        _ => f64::NAN,
    };
    let img = curves("bad", &history(50, &["adv", "discr"], bad));
    let panel = img.height() / 2;
    let ((_, y0), (_, y1)) = line_ends(&img, 0, panel);
    assert!(y0.is_finite() && y1.is_finite());
    // discr has no value to draw: the panel is there, titled, with an empty frame.
    let (frame_top, _, _) = frame(&img, panel, panel);
    let title = (panel..frame_top - 10)
        .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| is_text(img.get_pixel(x, y)))
        .count();
    assert!(title > 100);
}

#[test]
fn a_single_step_is_drawn_as_a_dot() {
    let img = curves("single", &history(1, &["total"], |_, _| 0.7));
    let dark = img.pixels().filter(|p| is_average(p)).count();
    assert!(dark >= 9, "{dark} pixels of the average's colour");
}

#[test]
fn an_empty_history_writes_one_panel_saying_so() {
    let one = curves("one-panel", &history(3, &["total"], |_, _| 1.0));
    let img = curves("empty", &[]);
    assert_eq!(img.dimensions(), one.dimensions());
    assert!(img.pixels().any(is_text), "the figure says that nothing was logged");
}

#[test]
fn grid_labels_are_drawn_in_the_label_column() {
    let dev = Device::Cpu;
    let (n, h, w) = (3, 24, 20);
    let white = Tensor::ones((n, 3, h, w), candle::DType::F32, &dev).unwrap();
    let dir = temp_dir("grid");
    write_grid(&dir.join("plain.png"), &[&white, &white]).unwrap();
    let plain = image::open(dir.join("plain.png")).unwrap().to_rgb8();
    assert_eq!(plain.width() as usize, n * (w + 2) + 2);
    assert!(!plain.pixels().any(is_text));

    write_labelled_grid(&dir.join("labelled.png"), &[("target", &white), ("kl 0.5", &white)])
        .unwrap();
    let img = image::open(dir.join("labelled.png")).unwrap().to_rgb8();
    assert_eq!(img.height(), plain.height());
    let margin = img.width() - plain.width();
    assert!(margin > 30, "label column {margin} pixels wide");
    for r in 0..2u32 {
        let top = 2 + r * (h as u32 + 2);
        let dark = (top..top + h as u32)
            .flat_map(|y| (0..margin).map(move |x| (x, y)))
            .filter(|&(x, y)| is_text(img.get_pixel(x, y)))
            .count();
        assert!(dark > 20, "row {r}'s label has {dark} dark pixels");
    }
    // The images themselves stay white.
    assert!((margin..img.width()).all(|x| !is_text(img.get_pixel(x, 2 + h as u32 / 2))));
}

#[test]
fn zeros_are_left_out_not_drawn_at_a_floor() {
    // An adaptive weight: 0 for the first 50 of 200 steps, then 0.5. The line starts where
    // the weight does, a quarter of the way along the step axis.
    let img =
        curves("zeros", &history(200, &["adv_weight"], |_, s| if s <= 50 { 0.0 } else { 0.5 }));
    let (_, left, right) = frame(&img, 0, img.height());
    let ((x0, _), (x1, _)) = line_ends(&img, 0, img.height());
    let at = (x0 - left) as f64 / (right - left) as f64;
    assert!((0.2..0.3).contains(&at), "the line starts at {at} of the axis");
    assert!(x1 + 5 >= right);
}
