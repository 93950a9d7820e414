//! `deepsim restore` and `deepsim restore-eval` end to end on a tiny ×4 super-resolution run:
//! the files written and their sizes, the table's PSNR recomputed here from the written
//! baseline, and checkpoints of another kind or another degradation refused by name.

mod common;

use std::path::{Path, PathBuf};

use common::{deepsim, scratch, stderr, stdout};

/// Three held-out photo tiles (144×144) cut to 64×64.
fn photos(dir: &Path) -> PathBuf {
    let data = dir.join("photos");
    std::fs::create_dir_all(&data).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/photos/val");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for (i, f) in files.iter().step_by(9).take(3).enumerate() {
        let img = image::open(f).unwrap().crop_imm(40, 40, 64, 64);
        img.save(data.join(format!("{i}.png"))).unwrap();
    }
    data
}

/// Trains a tiny restorer (`restore` is the `[restore]` section's body) for two steps and
/// returns its checkpoint.
fn train(dir: &Path, data: &Path, name: &str, task: &str, restore: &str) -> PathBuf {
    let out = dir.join(name);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[run]\ntask = \"{task}\"\nout = \"{}\"\nsteps = 2\nseed = 1\n\n[data]\ntrain = \
             \"{d}\"\nval = \"{d}\"\nresize = 64\ncrop = 64\nbatch_size = 3\nworkers = 1\n\n\
             [restore]\n{restore}\n\n[generator]\npreset = \"restorer\"\nwidth = 0.125\n\n[loss]\n\
             lambda_feat = 0.0\nlambda_adv = 0.0\nlambda_img = 1.0\n",
            out.display(),
            d = data.display()
        ),
    )
    .unwrap();
    stdout(&deepsim(&["train", config.to_str().unwrap()]));
    out.join("checkpoint.safetensors")
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

#[test]
fn restore_writes_each_stage_and_restore_eval_reports_what_it_wrote() {
    let dir = scratch("run");
    let data = photos(&dir);
    let ckpt = train(&dir, &data, "x4", "superres", "scale = 4");
    let ckpt = ckpt.to_str().unwrap();
    let out = dir.join("restored");
    let photo = data.join("0.png");
    stdout(&deepsim(&[
        "restore",
        "--checkpoint",
        ckpt,
        "--out",
        out.to_str().unwrap(),
        "--degrade",
        photo.to_str().unwrap(),
    ]));
    assert_eq!(rgb(&out.join("0_degraded.png")).dimensions(), (16, 16));
    assert_eq!(rgb(&out.join("0_baseline.png")).dimensions(), (64, 64));
    assert_eq!(rgb(&out.join("0.png")).dimensions(), (64, 64));
    // Restoring the degraded file itself gives the same image as --degrade did.
    let again = dir.join("again");
    let degraded = out.join("0_degraded.png");
    let text = stdout(&deepsim(&[
        "restore",
        "--checkpoint",
        ckpt,
        "--out",
        again.to_str().unwrap(),
        degraded.to_str().unwrap(),
    ]));
    assert!(text.contains("(64×64)"), "{text}");
    assert_eq!(rgb(&again.join("0_degraded.png")), rgb(&out.join("0.png")));

    let report = dir.join("report");
    let table = stdout(&deepsim(&[
        "restore-eval",
        "--checkpoint",
        ckpt,
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "1",
        "--grid-images",
        "1",
        "--out",
        report.to_str().unwrap(),
    ]));
    assert!(table.contains("| bicubic |") && table.contains("| image loss |"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("table.json")).unwrap()).unwrap();
    // The baseline's PSNR from the files `restore --degrade` wrote, computed here.
    let (a, b) = (rgb(&photo), rgb(&out.join("0_baseline.png")));
    let mse = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&p, &q)| ((f64::from(p) - f64::from(q)) / 255.0).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    let expected = 10.0 * (1.0 / mse).log10();
    let got = json["rows"][0]["psnr"].as_f64().unwrap();
    assert!((got - expected).abs() < 1e-3, "table {got} dB, files {expected} dB");
    assert_eq!(json["degradation"], "×4 bicubic");
    let ssim = json["rows"][1]["ssim"].as_f64().unwrap();
    assert!(ssim > 0.3 && ssim < 1.0, "SSIM {ssim}");
    // Three rows (original, bicubic, the model) of one photo, whole (64 < 72 pixels), shown at
    // twice its size.
    let grid = rgb(&report.join("grid.png"));
    assert_eq!(grid.height(), 2 + 3 * (128 + 2));

    // Another degradation, a photo too small, a missing checkpoint: named.
    let noisy = train(&dir, &data, "noisy", "restore", "noise = 8.0");
    let e = stderr(&deepsim(&[
        "restore-eval",
        "--checkpoint",
        ckpt,
        "--checkpoint",
        noisy.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]));
    assert!(e.contains("undoes ×4 bicubic") && e.contains("undoes noise σ 8"), "{e}");
    let tiny = dir.join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    image::RgbImage::new(12, 12).save(tiny.join("t.png")).unwrap();
    let e =
        stderr(&deepsim(&["restore-eval", "--checkpoint", ckpt, "--data", tiny.to_str().unwrap()]));
    assert!(e.contains("t.png: 12×12 is too small to judge"), "{e}");
    let e = stderr(&deepsim(&[
        "restore",
        "--checkpoint",
        "missing.safetensors",
        "--out",
        "o",
        "x.png",
    ]));
    assert!(e.contains("missing.safetensors"), "{e}");
}
