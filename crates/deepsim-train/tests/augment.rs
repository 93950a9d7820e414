//! Perceptually calibrated augmentation on the repository's photos: every operation lands
//! within its budget's tolerance, measured again on the PNG it writes with deepsim-metrics'
//! ΔE2000 (and ST-LPIPS by `PerceptualDistance`); strengths grow with the budget; the
//! transforms match hand-computed ones on constructed images; budgets out of reach are
//! reported; a training run with `[augment]` resumes exactly.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle::{DType, Device, Tensor};
use deepsim_data::ColorMode;
use deepsim_metrics::{delta_e2000, srgb_to_lab, Ciede2000Weights};
use deepsim_train::{
    resume_differences, write_image, AugmentConfig, Augmentation, Augmenter, Budget, BudgetMetric,
    Calibrator, PerceptualDistance, Reach, TrainConfig, Trainer,
};

use common::{metrics, temp_dir, tiny_config, Tiny};

fn photo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/photos").join(name)
}

/// A photo as `[1, 3, H, W]`, read as every command reads it.
fn load(path: &Path) -> Tensor {
    deepsim_data::load_image(path, ColorMode::Rgb).unwrap()
}

/// Mean CIEDE2000 / 2.3 of `b` against `a`, in f64: the measure the budgets are stated in,
/// computed here from deepsim-metrics' published-table-checked ΔE00, not by the calibrator.
fn jnd(a: &Tensor, b: &Tensor) -> f64 {
    let lab = |t: &Tensor| {
        let t = if t.rank() == 3 { t.unsqueeze(0).unwrap() } else { t.clone() };
        srgb_to_lab(&t.to_dtype(DType::F64).unwrap()).unwrap()
    };
    let d = delta_e2000(&lab(a), &lab(b), Ciede2000Weights::default()).unwrap();
    d.mean_all().unwrap().to_scalar::<f64>().unwrap() / 2.3
}

fn budget(value: f64) -> Budget {
    Budget { metric: BudgetMetric::DeltaE2000, value, tolerance: 0.05 }
}

/// Colour photos of different content: a cat, a coffee cup, an astronaut, a rocket, a
/// microscope slide.
const PHOTOS: [&str; 5] = [
    "val/chelsea_s300_y0_x144.jpg",
    "val/coffee_s400_y144_x288.jpg",
    "train/astronaut_s288_y0_x0.jpg",
    "train/rocket_s288_y0_x0.jpg",
    "train/ihc_s288_y0_x0.jpg",
];

#[test]
fn every_operation_hits_its_budget_on_real_photos() {
    let out = temp_dir("budgets");
    for name in PHOTOS {
        let path = photo(name);
        assert!(path.is_file(), "{} is missing", path.display());
    }
    let (mut met, mut short) = (0, 0);
    for value in [0.5, 1.0, 2.0] {
        let cal = Calibrator::new(budget(value), None).unwrap();
        for (p, name) in PHOTOS.iter().enumerate() {
            let original = load(&photo(name));
            for op in Augmentation::ALL {
                let c = cal.calibrate(op, &original, 7 + p as u64).unwrap();
                // The PNG holds exactly the image measured: read back, measured again.
                let file = out.join(format!("{p}_{op}_{value}.png"));
                write_image(&file, &c.image).unwrap();
                let again = jnd(&original, &load(&file));
                assert!(
                    (again - c.distance).abs() < 1e-6,
                    "{name} {op} {value}: the file measures {again}, the search said {}",
                    c.distance
                );
                let within = (again - value).abs() <= 0.05;
                assert_eq!(within, c.reach == Reach::Met, "{name} {op} {value}: {c:?}");
                if op == Augmentation::Jpeg {
                    // Integer qualities: met, or no neighbouring quality lies nearer.
                    if c.reach != Reach::Met {
                        for q in [c.strength - 1.0, c.strength + 1.0] {
                            if (1.0..=100.0).contains(&q) {
                                let d =
                                    jnd(&original, &op.apply(&original, q, 7 + p as u64).unwrap());
                                assert!(
                                    (d - value).abs() >= (again - value).abs(),
                                    "{name} jpeg {value}: quality {q} gives {d}, nearer than {} \
                                     at {}",
                                    again,
                                    c.strength
                                );
                            }
                        }
                    }
                } else if c.reach == Reach::Short {
                    // Out of reach only where the strongest setting truly falls short (a
                    // smooth photo that no blur changes by 2 JND).
                    let (_, strongest) = op.range();
                    let d = jnd(&original, &op.apply(&original, strongest, 7 + p as u64).unwrap());
                    assert!(d < value - 0.05, "{name} {op} {value}: {d} at {strongest}");
                    short += 1;
                } else {
                    // Continuous strengths land within the tolerance.
                    assert_eq!(c.reach, Reach::Met, "{name} {op} {value}: {c:?}");
                    met += 1;
                }
            }
        }
    }
    // 3 budgets × 5 photos × 6 continuous operations.
    assert_eq!(met + short, 90);
    assert!(short <= 3, "{short} of 90 out of reach");
}

#[test]
fn strength_grows_with_the_budget_and_distance_with_the_strength() {
    let original = load(&photo(PHOTOS[0]));
    for op in Augmentation::ALL {
        let strengths: Vec<f64> = [0.5, 1.0, 2.0]
            .into_iter()
            .map(|v| {
                Calibrator::new(budget(v), None)
                    .unwrap()
                    .calibrate(op, &original, 3)
                    .unwrap()
                    .strength
            })
            .collect();
        let (weak, strong) = op.range();
        let order = if strong > weak { 1.0 } else { -1.0 };
        assert!(
            strengths.windows(2).all(|w| order * (w[1] - w[0]) > 0.0),
            "{op}: strengths {strengths:?} for budgets 0.5, 1, 2"
        );
        // Along the strength, with the seed's direction and noise fixed, the distance grows.
        let distances: Vec<f64> = (1..=8)
            .map(|i| {
                let s = weak + (strong - weak) * f64::from(i) / 8.0;
                let s = if op == Augmentation::Jpeg { s.round() } else { s };
                jnd(&original, &op.apply(&original, s, 3).unwrap())
            })
            .collect();
        assert!(
            distances.windows(2).all(|w| w[1] >= w[0] - 0.02),
            "{op}: distances {distances:?} along its range"
        );
        assert!(distances[7] > distances[0] + 0.5, "{op}: {distances:?}");
    }
}

/// A 6×5 image of ramps in each channel, on even 8-bit levels (halving them ties no
/// rounding), `[1, 3, 5, 6]`.
fn ramps() -> (Vec<f32>, Tensor) {
    let v: Vec<f32> = (0..3 * 5 * 6)
        .map(|i| {
            let (c, y, x) = (i / 30, (i / 6) % 5, i % 6);
            (10 + 24 * x + 20 * y + 22 * c) as f32 / 255.0
        })
        .collect();
    let t = Tensor::from_vec(v.clone(), (1, 3, 5, 6), &Device::Cpu).unwrap();
    (v, t)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn level(x: f64) -> f32 {
    ((x.clamp(0.0, 1.0) * 255.0).round() / 255.0) as f32
}

#[test]
fn transforms_match_hand_computed_ones() {
    let (v, x) = ramps();
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-6);
    // Brightness 1: every value times 2 or 1/2, clamped, rounded; the seed picks which, and
    // both occur.
    let mut signs = [false; 2];
    for seed in 0..16 {
        let got = values(&Augmentation::Brightness.apply(&x, 1.0, seed).unwrap());
        let up: Vec<f32> = v.iter().map(|&p| level(f64::from(p) * 2.0)).collect();
        let down: Vec<f32> = v.iter().map(|&p| level(f64::from(p) * 0.5)).collect();
        assert!(close(&got, &up) || close(&got, &down), "seed {seed}: {got:?}");
        signs[usize::from(close(&got, &up))] = true;
        assert_eq!(Augmentation::Brightness.direction(seed) > 0.0, close(&got, &up));
    }
    assert_eq!(signs, [true, true]);
    // Contrast 1 (factor 2 or 1/2) about the mean Rec. 601 luma.
    let n = 30;
    let luma: f64 = (0..n)
        .map(|i| {
            0.299 * f64::from(v[i]) + 0.587 * f64::from(v[n + i]) + 0.114 * f64::from(v[2 * n + i])
        })
        .sum::<f64>()
        / n as f64;
    for seed in 0..4 {
        let f = 2f64.powf(Augmentation::Contrast.direction(seed));
        let want: Vec<f32> = v.iter().map(|&p| level(luma + f * (f64::from(p) - luma))).collect();
        let got = values(&Augmentation::Contrast.apply(&x, 1.0, seed).unwrap());
        assert!(close(&got, &want), "seed {seed}, factor {f}: {got:?} vs {want:?}");
    }
    // Blur σ = 1 of a single white pixel in black, far from the edges: the centre keeps
    // k₀², k₀ = 1 / Σ_{d=-3..3} exp(−d²/2) = 1 / 2.505949 (radius ⌈3σ⌉ = 3).
    let mut impulse = vec![0f32; 3 * 11 * 11];
    for c in 0..3 {
        impulse[c * 121 + 5 * 11 + 5] = 1.0;
    }
    let imp = Tensor::from_vec(impulse, (3, 11, 11), &Device::Cpu).unwrap();
    let got = values(&Augmentation::Blur.apply(&imp, 1.0, 0).unwrap());
    let k0 = 1.0 / 2.505_949;
    let k1 = (-0.5f64).exp() / 2.505_949;
    for (at, want) in [(5 * 11 + 5, k0 * k0), (4 * 11 + 5, k0 * k1), (4 * 11 + 4, k1 * k1)] {
        assert!((got[at] - level(want)).abs() < 1e-6, "pixel {at}: {} vs {want}", got[at]);
    }
    assert_eq!(got[0], 0.0);
    // Noise σ = 0.05 on mid grey (no clipping): zero mean, standard deviation σ.
    let grey = Tensor::full(0.5f32, (3, 64, 64), &Device::Cpu).unwrap();
    let d: Vec<f64> = values(&Augmentation::Noise.apply(&grey, 0.05, 9).unwrap())
        .iter()
        .map(|&p| f64::from(p) - 0.5)
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let sd = (d.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
    // 12288 samples: the mean's standard error is 0.00045; 8-bit rounding adds 1/(255·√12).
    assert!(mean.abs() < 0.002 && (sd - 0.0502).abs() < 0.002, "mean {mean}, sd {sd}");
    // Hue and saturation leave a grey image grey, and strength 0 changes nothing.
    for op in [Augmentation::Hue, Augmentation::Saturation] {
        let got = values(&op.apply(&grey, op.range().1, 2).unwrap());
        assert!(got.iter().all(|&p| (p - 0.5).abs() < 1.5 / 255.0), "{op}");
        assert!(close(&values(&op.apply(&x, 0.0, 2).unwrap()), &v), "{op} at 0");
    }
    // A hue turn keeps lightness and chroma (within the 8-bit rounding) and moves a*b*.
    let photo = load(&photo(PHOTOS[1]));
    let turned = Augmentation::Hue.apply(&photo, 30.0, 1).unwrap().unsqueeze(0).unwrap();
    let (lab0, lab1) = (srgb_to_lab(&photo).unwrap(), srgb_to_lab(&turned).unwrap());
    let chroma = |lab: &Tensor| {
        let ab = lab.narrow(1, 1, 2).unwrap();
        ab.sqr()
            .unwrap()
            .sum_keepdim(1)
            .unwrap()
            .sqrt()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let lightness =
        |lab: &Tensor| lab.narrow(1, 0, 1).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    // Colours turned out of the sRGB gamut are clipped, which lowers chroma somewhat (coffee's
    // saturated reds: 42.6 → 37.1).
    let (l0, l1, c0, c1) = (lightness(&lab0), lightness(&lab1), chroma(&lab0), chroma(&lab1));
    assert!((l0 - l1).abs() < 0.5 && (c0 - c1).abs() < 0.2 * c0, "L* {l0} → {l1}, C* {c0} → {c1}");
    assert!(jnd(&photo, &turned) > 0.5);
    // JPEG: quality 100 is nearly the image, quality 5 far from it; both on 8-bit levels.
    let fine = Augmentation::Jpeg.apply(&photo, 100.0, 0).unwrap();
    let coarse = Augmentation::Jpeg.apply(&photo, 5.0, 0).unwrap();
    assert!(jnd(&photo, &fine) < 0.5 && jnd(&photo, &coarse) > 1.0);
    for t in [&fine, &coarse] {
        assert!(values(t).iter().all(|p| ((p * 255.0) - (p * 255.0).round()).abs() < 1e-3));
    }
}

#[test]
fn a_seed_repeats_its_augmentation_and_another_differs() {
    let original = load(&photo(PHOTOS[2]));
    let cal = Calibrator::new(budget(1.0), None).unwrap();
    for op in [Augmentation::Noise, Augmentation::Brightness] {
        let a = cal.calibrate(op, &original, 11).unwrap();
        let b = cal.calibrate(op, &original, 11).unwrap();
        assert_eq!(values(&a.image), values(&b.image), "{op}");
        assert_eq!(a.strength, b.strength);
    }
    // Different seeds draw different noise (and the same budget still holds).
    let a = cal.calibrate(Augmentation::Noise, &original, 11).unwrap();
    let b = cal.calibrate(Augmentation::Noise, &original, 12).unwrap();
    assert_ne!(values(&a.image), values(&b.image));
    assert_eq!((a.reach, b.reach), (Reach::Met, Reach::Met));
}

#[test]
fn budgets_out_of_reach_are_reported_not_met() {
    // A grey image has no hue to turn nor chroma to scale: the strongest setting falls short.
    let grey = Tensor::full(0.45f32, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let cal = Calibrator::new(budget(1.0), None).unwrap();
    for op in [Augmentation::Hue, Augmentation::Saturation] {
        let c = cal.calibrate(op, &grey, 0).unwrap();
        assert_eq!(c.reach, Reach::Short, "{op}: {c:?}");
        assert_eq!(c.strength, op.range().1);
        assert!(c.distance < 0.1, "{op}: {}", c.distance);
    }
    // Nor has a grey photo (gravel): hue and saturation fall short on it, while brightness
    // meets the budget.
    let gravel = load(&photo("train/gravel_s288_y0_x0.jpg"));
    for op in [Augmentation::Hue, Augmentation::Saturation, Augmentation::Brightness] {
        let c = cal.calibrate(op, &gravel, 0).unwrap();
        let want = if op == Augmentation::Brightness { Reach::Met } else { Reach::Short };
        assert_eq!(c.reach, want, "{op}: {c:?}");
    }
    // No blur moves a photo by 40 JND (ΔE00 92).
    let original = load(&photo(PHOTOS[0]));
    let far = Calibrator::new(budget(40.0), None).unwrap();
    let c = far.calibrate(Augmentation::Blur, &original, 0).unwrap();
    assert_eq!((c.reach, c.strength), (Reach::Short, 16.0));
    assert!(c.distance < 39.0 && (jnd(&original, &c.image) - c.distance).abs() < 1e-6);
    // JPEG's weakest setting already changes a photo by more than 0.02 JND.
    let fine = Calibrator::new(Budget { tolerance: 0.005, ..budget(0.02) }, None).unwrap();
    let c = fine.calibrate(Augmentation::Jpeg, &original, 0).unwrap();
    assert_eq!((c.reach, c.strength), (Reach::Coarse, 100.0), "{c:?}");
    assert!(c.distance > 0.025);
}

#[test]
fn bad_input_is_refused_by_name() {
    let err = |r: deepsim_train::Result<Calibrator>| r.err().unwrap().to_string();
    for (v, t, field) in
        [(0.0, 0.05, "budget 0"), (f64::NAN, 0.05, "budget NaN"), (1.0, -1.0, "tolerance -1")]
    {
        let e = err(Calibrator::new(
            Budget { metric: BudgetMetric::DeltaE2000, value: v, tolerance: t },
            None,
        ));
        assert!(e.contains(field) && e.contains("positive"), "{e}");
    }
    let cal = Calibrator::new(budget(1.0), None).unwrap();
    let batch = Tensor::zeros((2, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let e = cal.calibrate(Augmentation::Blur, &batch, 0).unwrap_err().to_string();
    assert!(e.contains("[3, H, W]") && e.contains("[2, 3, 8, 8]"), "{e}");
    let bright = Tensor::full(1.5f32, (3, 8, 8), &Device::Cpu).unwrap();
    let e = cal.calibrate(Augmentation::Blur, &bright, 0).unwrap_err().to_string();
    assert!(e.contains("[0, 1]") && e.contains("1.5"), "{e}");
    let ok = Tensor::full(0.5f32, (3, 8, 8), &Device::Cpu).unwrap();
    let e = Augmentation::Brightness.apply(&ok, 5.0, 0).unwrap_err().to_string();
    assert!(e.contains("brightness: strength 5") && e.contains("[0, 4]"), "{e}");
    let e = Augmentation::Jpeg.apply(&ok, 0.0, 0).unwrap_err().to_string();
    assert!(e.contains("jpeg: strength 0") && e.contains("[1, 100]"), "{e}");
    let e = "sharpen".parse::<Augmentation>().unwrap_err().to_string();
    assert!(
        e.contains("\"sharpen\"")
            && e.contains("brightness, contrast, saturation, hue, blur, noise, jpeg"),
        "{e}"
    );
    let e = cal
        .distance(&ok, &batch.narrow(0, 0, 1).unwrap().narrow(2, 0, 4).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("differ in shape"), "{e}");
    // ST-LPIPS needs 21 × 21 pixels: its own error says so.
    let st = Calibrator::new(
        Budget { metric: BudgetMetric::StlpipsAlex, value: 0.05, tolerance: 0.005 },
        None,
    )
    .unwrap();
    assert!(st.calibrate(Augmentation::Blur, &ok, 0).is_err());
}

#[test]
fn an_st_lpips_budget_is_met_as_perceptual_distance_measures_it() {
    let out = temp_dir("stlpips");
    let value = 0.05;
    let cal = Calibrator::new(
        Budget { metric: BudgetMetric::StlpipsAlex, value, tolerance: 0.005 },
        None,
    )
    .unwrap();
    let judge = PerceptualDistance::new(None, &Device::Cpu).unwrap();
    for name in &PHOTOS[..2] {
        let original = load(&photo(name));
        for op in [Augmentation::Brightness, Augmentation::Blur, Augmentation::Noise] {
            let c = cal.calibrate(op, &original, 5).unwrap();
            let file = out.join(format!("{op}.png"));
            write_image(&file, &c.image).unwrap();
            let again = judge.mean(&original, &load(&file)).unwrap();
            assert_eq!(c.reach, Reach::Met, "{name} {op}: {c:?}");
            assert!((again - value).abs() <= 0.005 + 1e-6, "{name} {op}: {again}");
        }
    }
}

/// Four 64×64 crops of photos: every batch of 4 is this set.
fn tiny_data(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    for (i, f) in PHOTOS[..4].iter().enumerate() {
        let img = image::open(photo(f)).unwrap().crop_imm(16, 16, 64, 64);
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
    dir
}

/// The tiny run of these tests: four steps, checkpoints every two, no discriminator.
fn config(data: &Path, out: &Path, augment: &str) -> TrainConfig {
    let tiny = Tiny { steps: 4, checkpoint_every: 2, sample_every: 4, lambda_adv: 0.0 };
    tiny_config(data, out, tiny, augment)
}

const AUGMENT: &str = "[augment]\nops = [\"brightness\", \"hue\", \"noise\", \"jpeg\"]\nbudget = 1.0\nprobability = 0.75";

#[test]
fn a_batch_is_augmented_from_seed_step_and_index() {
    let data = tiny_data("batch");
    let images: Vec<Tensor> = (0..4).map(|i| load(&data.join(format!("{i}.png")))).collect();
    let batch = Tensor::cat(&images, 0).unwrap();
    let section: AugmentConfig = config(&data, &data, AUGMENT).augment.unwrap();
    let aug = Augmenter::new(section).unwrap();
    let (a, applied) = aug.augment(&batch, 3, 1).unwrap();
    let (b, again) = aug.augment(&batch, 3, 1).unwrap();
    assert_eq!(values(&a), values(&b));
    assert_eq!(applied, again);
    let mut changed = 0;
    for step in 1..=6 {
        let (x, applied) = aug.augment(&batch, 3, step).unwrap();
        for i in 0..4 {
            let (orig, got) = (batch.get(i).unwrap(), x.get(i).unwrap());
            match applied.iter().find(|a| a.index == i) {
                Some(a) => {
                    changed += 1;
                    let d = jnd(&orig, &got);
                    assert!((d - a.distance).abs() < 1e-6);
                    assert_eq!(a.reach == Reach::Met, (d - 1.0).abs() <= 0.05, "{a:?}");
                }
                None => assert_eq!(values(&orig), values(&got)),
            }
        }
    }
    // 24 images at probability 0.75: 18 expected, sd ≈ 2.1.
    assert!((10..=24).contains(&changed), "{changed}");
}

#[test]
fn a_run_with_augment_resumes_exactly_and_names_a_changed_section() {
    let data = tiny_data("train");
    let whole = temp_dir("train-whole");
    Trainer::new(config(&data, &whole, AUGMENT))
        .unwrap()
        .run(&AtomicBool::new(false), &mut |_| {})
        .unwrap();
    let plain = temp_dir("train-plain");
    Trainer::new(config(&data, &plain, ""))
        .unwrap()
        .run(&AtomicBool::new(false), &mut |_| {})
        .unwrap();
    assert_ne!(metrics(&whole), metrics(&plain), "the augmentation changed nothing");
    let parts = temp_dir("train-parts");
    let mut first = config(&data, &parts, AUGMENT);
    first.run.steps = 2;
    Trainer::new(first).unwrap().run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let mut t = Trainer::resume(config(&data, &parts, AUGMENT)).unwrap();
    assert_eq!(t.step_count(), 2);
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(metrics(&whole), metrics(&parts), "losses differ after resuming");
    // The section is part of the run: changing or dropping it is named.
    let then = config(&data, &parts, AUGMENT);
    let other = config(&data, &parts, &AUGMENT.replace("budget = 1.0", "budget = 2.0"));
    assert_eq!(
        resume_differences(&then, &other),
        ["augment.budget: 1.0 in the checkpoint, 2.0 now"]
    );
    let e = Trainer::resume(other).err().unwrap().to_string();
    assert!(e.contains("augment.budget: 1.0 in the checkpoint, 2.0 now"), "{e}");
    let e = Trainer::resume(config(&data, &parts, "")).err().unwrap().to_string();
    assert!(
        e.contains(
            "augment.ops: [\"brightness\",\"hue\",\"noise\",\"jpeg\"] in the checkpoint, null now"
        ),
        "{e}"
    );
}

#[test]
fn augment_sections_are_checked_by_field() {
    // The smallest valid configuration, `data` and `augment` given.
    let toml = |data: &str, section: &str| {
        let text = format!(
            "[run]\nout = \"o\"\nsteps = 1\n[data]\ntrain = \"t\"\nval = \"v\"\nresize = 64\n\
             crop = 64\n{data}\n[encoder]\nnetwork = \"alexnet-random\"\ntap = \"conv5\"\n\
             [generator]\npreset = \"cpu_64\"\n[loss]\nlambda_feat = 0.0\nlambda_adv = 0.0\n\
             lambda_img = 1.0\n[augment]\n{section}"
        );
        TrainConfig::from_toml(&text).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert_eq!(toml("", "ops = [\"blur\"]\nbudget = 1.0"), "");
    for (section, want) in [
        ("ops = []\nbudget = 1.0", "augment.ops: the list is empty"),
        ("ops = [\"blur\", \"blur\"]\nbudget = 1.0", "augment.ops: blur is listed twice"),
        ("ops = [\"sharpen\"]\nbudget = 1.0", "unknown variant `sharpen`"),
        ("ops = [\"blur\"]\nbudget = 0.0", "augment.budget: 0 must be a positive number"),
        ("ops = [\"blur\"]\nbudget = nan", "augment.budget: NaN"),
        ("ops = [\"blur\"]\nbudget = 1.0\ntolerance = -0.1", "augment.tolerance: -0.1"),
        (
            "ops = [\"blur\"]\nbudget = 1.0\nprobability = 0.0",
            "augment.probability: 0 must lie in (0, 1]",
        ),
        ("ops = [\"blur\"]\nbudget = 1.0\nstrength = 2", "unknown field `strength`"),
    ] {
        let e = toml("", section);
        assert!(e.contains(want), "{section}: {e}");
    }
    // The feature cache holds the features of the unchanged images.
    let e = toml("flip = false\nfeature_cache = \"c\"", "ops = [\"blur\"]\nbudget = 1.0");
    assert!(
        e.contains("augment: changes the training images") && e.contains("feature_cache (c)"),
        "{e}"
    );
}
