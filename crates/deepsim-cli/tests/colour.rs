//! `deepsim quantize` and `deepsim colormap` end to end: the files they write hold what they
//! report (an indexed PNG whose pixels give the printed ΔE2000, a CSV whose steps are equal),
//! checked through independent code paths, and bad input is refused by name.

mod common;

use std::path::Path;

use deepsim_metrics::{check_colormap, mean_delta_e00};

use common::{command, data, deepsim, scratch, stderr, stdout};

fn rgb_pixels(path: &Path) -> Vec<[u8; 3]> {
    image::open(path).unwrap().to_rgb8().pixels().map(|p| p.0).collect()
}

#[test]
fn quantize_writes_an_indexed_png_whose_error_it_reports() {
    let dir = scratch("quantize");
    let photo = data("photos/val/coffee_s300_y0_x0.jpg");
    let out = dir.join("coffee16.png");
    let text = stdout(&deepsim(&[
        "quantize",
        photo.to_str().unwrap(),
        "--colors",
        "16",
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--no-stlpips",
    ]));
    let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    // An indexed PNG with at most 16 entries, at 4 bits per pixel.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!(info.color_type, png::ColorType::Indexed);
    assert_eq!(info.bit_depth, png::BitDepth::Four);
    let entries = info.palette.as_ref().unwrap().len() / 3;
    assert!(entries <= 16 && entries as u64 == summary["palette"].as_u64().unwrap());
    // The decoded file has that many colours, and its ΔE2000 to the photo is the one printed.
    let (orig, quant) = (rgb_pixels(&photo), rgb_pixels(&out));
    let mut distinct = quant.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), entries);
    let de = mean_delta_e00(&orig, &quant).unwrap();
    assert!((de - summary["mean_delta_e2000"].as_f64().unwrap()).abs() < 1e-9);
    assert!((summary["mean_delta_e2000_jnd"].as_f64().unwrap() - de / 2.3).abs() < 1e-9);
    // The same photo through `compare` (the tensor ΔE2000) agrees to f32 rounding.
    let compared = stdout(&deepsim(&[
        "compare",
        "--metric",
        "delta-e2000",
        photo.to_str().unwrap(),
        out.to_str().unwrap(),
    ]));
    let compared: f64 = compared.trim().parse().unwrap();
    assert!((compared - de).abs() < 1e-3, "compare {compared} vs quantize {de}");
    // RGB palettes and dithering also write valid files.
    for extra in [&["--space", "rgb"][..], &["--dither"][..]] {
        let mut args = vec!["quantize", photo.to_str().unwrap(), "--colors", "8", "--no-stlpips"];
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        let text = stdout(&deepsim(&args));
        assert!(text.contains("mean ΔE2000"), "{extra:?}: {text}");
    }
}

#[test]
fn quantize_refuses_bad_input_by_name() {
    let dir = scratch("quantize-bad");
    let out = dir.join("o.png");
    let photo = data("photos/val/coffee_s300_y0_x0.jpg");
    for k in ["0", "257"] {
        let o = deepsim(&["quantize", photo.to_str().unwrap(), "--colors", k, "--out", "x.png"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("--colors"));
    }
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = stderr(&deepsim(&[
        "quantize",
        broken.to_str().unwrap(),
        "--colors",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("broken.png"), "{err}");
    let err = stderr(&deepsim(&[
        "quantize",
        photo.to_str().unwrap(),
        "--colors",
        "8",
        "--out",
        dir.to_str().unwrap(),
    ]));
    assert!(err.contains("is a folder"), "{err}");
    assert!(!out.exists());
}

#[test]
fn colormap_designs_equal_steps_and_checks_maps() {
    let dir = scratch("colormap");
    let out = dir.join("ours");
    let text = stdout(&deepsim(&["colormap", "--steps", "32", "--out", out.to_str().unwrap()]));
    assert!(text.contains("monotone"), "{text}");
    // The CSV read back independently: equal ΔE2000 steps, monotone lightness.
    let csv = std::fs::read_to_string(dir.join("ours.csv")).unwrap();
    let colors: Vec<[f64; 3]> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').take(3).map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2]]
        })
        .collect();
    assert_eq!(colors.len(), 32);
    let c = check_colormap(&colors).unwrap();
    assert!(c.step_cv < 1e-3 && c.lightness_monotone, "{c:?}");
    // The swatch: 32 runs of one colour, read back by --check as 32 levels.
    let checked =
        stdout(&deepsim(&["colormap", "--check", dir.join("ours.png").to_str().unwrap()]));
    assert!(checked.contains("32 levels"), "{checked}");
    // viridis through --check --json: the figures scikit-image gives (fixture of
    // deepsim-metrics' tests).
    let viridis = data("colormaps/viridis.csv");
    let json = stdout(&deepsim(&["colormap", "--check", viridis.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["levels"], 256);
    assert!((v["step_cv"].as_f64().unwrap() - 0.14887046000056275).abs() < 1e-6);
    assert_eq!(v["lightness_monotone"], true);
}

#[test]
fn colormap_refuses_bad_input_by_name() {
    let dir = scratch("colormap-bad");
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "r,g,b\n0.1,0.2,0.3\n0.4,zero,0.6\n").unwrap();
    let err = stderr(&deepsim(&["colormap", "--check", bad.to_str().unwrap()]));
    assert!(err.contains("bad.csv") && err.contains("line 3"), "{err}");
    let o = deepsim(&["colormap", "--anchors", "#12345", "--out", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("#12345"));
    let err = stderr(&deepsim(&[
        "colormap",
        "--anchors",
        "#fde725,#440154,#ffffff",
        "--out",
        dir.join("m").to_str().unwrap(),
    ]));
    assert!(err.contains("anchors 0 and 1") && err.contains("lightness"), "{err}");
    let o = deepsim(&["colormap", "--check", "a.csv", "--out", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let o = deepsim(&["colormap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out"));
}

#[cfg(unix)]
#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // `deepsim colormap --check viridis.csv | true`: the reader closes the pipe before the
    // command writes (it is closed right after the start); the command must end by SIGPIPE,
    // as a Unix filter does, not panic on the broken pipe.
    let viridis = data("colormaps/viridis.csv");
    let mut child = command()
        .args(["colormap", "--check", viridis.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}
