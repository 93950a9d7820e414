//! `deepsim augment` end to end on the repository's photos: the PNGs it writes lie within the
//! budget by deepsim-metrics' ΔE2000, the CSV on stdout and on disk agree, and bad arguments
//! and files are refused by name.

mod common;

use std::path::{Path, PathBuf};

use candle::DType;
use deepsim_data::ColorMode;
use deepsim_metrics::{delta_e2000, srgb_to_lab, Ciede2000Weights};

use common::{deepsim, scratch};

fn photo(name: &str) -> PathBuf {
    common::data("photos").join(name)
}

/// Mean ΔE00 / 2.3 between two image files.
fn jnd(a: &Path, b: &Path) -> f64 {
    let lab = |p: &Path| {
        let t = deepsim_data::load_image(p, ColorMode::Rgb).unwrap();
        srgb_to_lab(&t.to_dtype(DType::F64).unwrap()).unwrap()
    };
    let d = delta_e2000(&lab(a), &lab(b), Ciede2000Weights::default()).unwrap();
    d.mean_all().unwrap().to_scalar::<f64>().unwrap() / 2.3
}

#[test]
fn augment_writes_pngs_within_the_budget_and_a_csv() {
    let out = scratch("files");
    let a = photo("val/coffee_s300_y0_x0.jpg");
    let b = photo("val/chelsea_s400_y144_x288.jpg");
    let (a_s, b_s, out_s) = (a.to_str().unwrap(), b.to_str().unwrap(), out.to_str().unwrap());
    let o = deepsim(&[
        "augment",
        a_s,
        b_s,
        "--out",
        out_s,
        "--ops",
        "brightness,blur,jpeg",
        "--budget",
        "1.5",
        "--seed",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8(o.stdout).unwrap();
    let saved = std::fs::read_to_string(out.join("augment.csv")).unwrap();
    assert_eq!(printed, saved);
    let lines: Vec<&str> = saved.lines().collect();
    assert_eq!(lines[0], "image,op,unit,strength,distance,budget,metric,reach");
    assert_eq!(lines.len(), 1 + 2 * 3);
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        let (image, op, distance, reach) = (cells[0], cells[1], cells[4], cells[7]);
        let stem = Path::new(image).file_stem().unwrap().to_str().unwrap();
        let png = out.join(format!("{stem}_{op}.png"));
        let d = jnd(Path::new(image), &png);
        let reported: f64 = distance.parse().unwrap();
        assert!((d - reported).abs() < 1e-4, "{line}: the file measures {d}");
        assert_eq!(reach == "met", (d - 1.5).abs() <= 0.05, "{line}: {d}");
        if op != "jpeg" {
            assert_eq!(reach, "met", "{line}");
        }
    }
    // The same command writes the same files.
    let first = std::fs::read(out.join("coffee_s300_y0_x0_brightness.png")).unwrap();
    let again = deepsim(&[
        "augment",
        a_s,
        "--out",
        out_s,
        "--ops",
        "brightness",
        "--budget",
        "1.5",
        "--seed",
        "4",
    ]);
    assert!(again.status.success());
    assert_eq!(std::fs::read(out.join("coffee_s300_y0_x0_brightness.png")).unwrap(), first);
}

#[test]
fn a_fixed_strength_reports_the_distance_it_makes() {
    let out = scratch("fixed");
    let a = photo("val/coffee_s300_y0_x0.jpg");
    let (a_s, out_s) = (a.to_str().unwrap(), out.to_str().unwrap());
    let o = deepsim(&["augment", a_s, "--out", out_s, "--ops", "contrast", "--strength", "0.5"]);
    let csv = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!((row[1], row[3], row[5], row[7]), ("contrast", "0.5000", "", "fixed"), "{csv}");
    let d = jnd(&a, &out.join("coffee_s300_y0_x0_contrast.png"));
    assert!((d - row[4].parse::<f64>().unwrap()).abs() < 1e-4 && d > 0.1, "{csv}: {d}");
    // A strength outside the operation's range is named with it.
    let o = deepsim(&["augment", a_s, "--out", out_s, "--ops", "jpeg", "--strength", "0"]);
    let e = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("coffee_s300_y0_x0.jpg: jpeg") && e.contains("strength 0 lies outside [1, 100]"),
        "{e}"
    );
}

#[test]
fn out_of_reach_budgets_are_warned_and_marked() {
    let out = scratch("reach");
    let a = photo("val/coffee_s300_y0_x0.jpg");
    let o = deepsim(&[
        "augment",
        a.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--ops",
        "blur",
        "--budget",
        "40",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = String::from_utf8(o.stdout).unwrap();
    assert!(csv.lines().nth(1).unwrap().ends_with(",40,delta-e2000,short"), "{csv}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("coffee_s300_y0_x0.jpg blur: the budget 40 ± 0.05 JND is out of reach"),
        "{err}"
    );
}

#[test]
fn bad_arguments_and_files_are_refused_by_name() {
    let out = scratch("bad");
    let a = photo("val/coffee_s300_y0_x0.jpg");
    let (a_s, out_s) = (a.to_str().unwrap(), out.to_str().unwrap());
    let refused = |args: &[&str]| {
        let o = deepsim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        String::from_utf8(o.stderr).unwrap()
    };
    let e = refused(&["augment", a_s, "--out", out_s, "--ops", "blur,sharpen", "--budget", "1"]);
    assert!(
        e.contains("sharpen")
            && e.contains("--ops")
            && e.contains("brightness, contrast, saturation, hue, blur, noise, jpeg"),
        "{e}"
    );
    for budget in ["0", "-1", "NaN", "inf"] {
        let arg = format!("--budget={budget}");
        let e = refused(&["augment", a_s, "--out", out_s, "--ops", "blur", &arg]);
        assert!(e.contains("--budget") && e.contains("not a positive number"), "{budget}: {e}");
    }
    let e = refused(&[
        "augment", a_s, "--out", out_s, "--ops", "blur", "--budget", "1", "--metric", "ssim",
    ]);
    assert!(e.contains("--metric") && e.contains("delta-e2000, stlpips-alex"), "{e}");
    let e = refused(&[
        "augment",
        a_s,
        "--out",
        out_s,
        "--ops",
        "blur",
        "--budget",
        "1",
        "--tolerance",
        "0",
    ]);
    assert!(e.contains("--tolerance"), "{e}");
    // Files: missing, not an image, two with one output name, each in an otherwise valid
    // `augment FILES --out OUT --ops blur --budget 1`.
    let blur = |images: &[&str]| {
        let tail = ["--out", out_s, "--ops", "blur", "--budget", "1"];
        deepsim(&[&["augment"][..], images, &tail].concat())
    };
    let junk = out.join("notes.png");
    std::fs::write(&junk, b"not a picture").unwrap();
    for (path, want) in [
        (out.join("missing.jpg"), "missing.jpg"),
        (junk.clone(), "notes.png: cannot use the image"),
    ] {
        let o = blur(&[path.to_str().unwrap()]);
        let e = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains(want), "{e}");
    }
    let twin = out.join("coffee_s300_y0_x0.jpg");
    std::fs::copy(&a, &twin).unwrap();
    let o = blur(&[a_s, twin.to_str().unwrap()]);
    let e = String::from_utf8(o.stderr).unwrap();
    assert!(
        o.status.code() == Some(1)
            && e.contains("would both be written as coffee_s300_y0_x0_OP.png"),
        "{e}"
    );
}
