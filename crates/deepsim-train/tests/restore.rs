//! Super-resolution and restoration (`run.task = "superres"` / `"restore"`): the degradation
//! and the bicubic baseline against Pillow's (the fixture of deepsim-data's resampling
//! tests), configurations refused with the field named, a run with noise and the cycle term
//! resumed exactly, and a restorer that learns to beat bicubic enlargement.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{metrics, temp_dir, val_crops};

use candle::{DType, Device, Tensor};
use deepsim_data::{ColorMode, Rng};
use deepsim_metrics::psnr;
use deepsim_train::{Degradation, Model, TrainConfig, Trainer};

fn load(path: &Path) -> Tensor {
    deepsim_data::load_image(path, ColorMode::Rgb).unwrap()
}

fn pillow(name: &str) -> Tensor {
    load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deepsim-data/tests/fixtures/resample")
            .join(name),
    )
}

/// The largest and the mean difference in 8-bit levels.
fn levels_apart(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let d = ((a - b).unwrap().abs().unwrap() * 255.0).unwrap().round().unwrap();
    let d = d.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (d.iter().cloned().fold(0.0, f32::max), d.iter().sum::<f32>() / d.len() as f32)
}

#[test]
fn the_superres_input_and_its_bicubic_baseline_are_pillows() {
    let x = pillow("input.png");
    let d = Degradation { scale: 4, noise: 0.0, jpeg_quality: None };
    let y = d.apply(&x, &mut Rng::new(0)).unwrap();
    let (max, mean) = levels_apart(&y, &pillow("pil_12x10.png"));
    assert!(max <= 1.0 && mean < 0.3, "input: {max} levels at most, {mean} on average");
    // Pillow enlarges its own 8-bit input; ours may differ from it by a level, which the
    // enlargement carries.
    let up = d.estimate(&y).unwrap();
    let (max, mean) = levels_apart(&up, &pillow("pil_12x10_up4.png"));
    assert!(max <= 2.0 && mean < 0.3, "baseline: {max} levels at most, {mean} on average");
}

fn config(data: &Path, out: &Path, extra_restore: &str, loss: &str) -> TrainConfig {
    TrainConfig::from_toml(&format!(
        r#"
[run]
task = "superres"
out = "{out}"
steps = 4
seed = 5
checkpoint_every = 2
sample_every = 4
samples = 2

[data]
train = "{data}"
val = "{data}"
resize = 32
crop = 32
batch_size = 4
workers = 1
flip = false

[restore]
scale = 2
{extra_restore}

[generator]
preset = "restorer"
width = 0.25

[loss]
{loss}

[optim]
lr = 0.002
"#,
        out = out.display(),
        data = data.display()
    ))
    .unwrap()
}

const IMAGE_LOSS: &str = "lambda_feat = 0.0\nlambda_adv = 0.0\nlambda_img = 1.0";

#[test]
fn a_superres_run_with_noise_and_the_cycle_term_resumes_exactly() {
    let data = val_crops("resume", 32);
    let restore = "noise = 4.0\nlambda_cycle = 10.0\ncycle_space = \"lab\"";
    let whole = temp_dir("whole");
    Trainer::new(config(&data, &whole, restore, IMAGE_LOSS))
        .unwrap()
        .run(&AtomicBool::new(false), &mut |_| {})
        .unwrap();
    let logged = metrics(&whole);
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|l| l.contains("\"cycle\":")), "{logged:?}");
    let parts = temp_dir("parts");
    let mut first = config(&data, &parts, restore, IMAGE_LOSS);
    first.run.steps = 2;
    Trainer::new(first).unwrap().run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let mut t = Trainer::resume(config(&data, &parts, restore, IMAGE_LOSS)).unwrap();
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(logged, metrics(&parts), "losses differ after resuming");
    // The sample grid holds the targets, the baseline and the restorations: three rows of
    // two 32-pixel images with 2-pixel gaps.
    let grid = image::open(whole.join("samples/step_000004.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (2 + 2 * 34, 2 + 3 * 34));
    // The checkpoint loads as a restorer that enlarges any size by its scale.
    let model = Model::load(&whole.join("checkpoint.safetensors"), None).unwrap();
    assert_eq!(model.describe(), "restorer (superres: ×2 bicubic, noise σ 4)");
    let y = Tensor::rand(0f32, 1f32, (1, 3, 10, 14), &Device::Cpu).unwrap();
    assert_eq!(model.restore(&y).unwrap().dims(), &[1, 3, 20, 28]);
}

#[test]
fn a_restorer_learns_to_beat_bicubic_enlargement() {
    let data = val_crops("learn", 32);
    let out = temp_dir("learn-run");
    let mut c = config(&data, &out, "", IMAGE_LOSS);
    c.restore.as_mut().unwrap().scale = Some(4);
    c.run.steps = 200;
    c.run.checkpoint_every = 200;
    c.run.sample_every = 200;
    let mut t = Trainer::new(c).unwrap();
    let x = t.validation_images().clone();
    let db = |m: &Model, restored: bool| {
        let out = if restored { m.reconstruct(&x) } else { m.baseline(&x).map(Option::unwrap) };
        let v = psnr(&out.unwrap(), &x, 1.0).unwrap().mean_all().unwrap();
        v.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    };
    let (bicubic, untrained) = (db(t.model(), false), db(t.model(), true));
    // The last layer starts at zero: an untrained restorer returns the baseline.
    assert!(
        (untrained - bicubic).abs() < 1e-3,
        "untrained {untrained:.3} dB, bicubic {bicubic:.3}"
    );
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let trained = db(t.model(), true);
    assert!(trained > bicubic + 0.3, "trained {trained:.2} dB, bicubic {bicubic:.2} dB");
}

#[test]
fn restoration_settings_are_checked_by_name() {
    let data = Path::new("unused");
    let out = Path::new("out");
    let err = |restore: &str, loss: &str, edit: &dyn Fn(&mut String)| {
        let mut text = toml_of(data, out, restore, loss);
        edit(&mut text);
        TrainConfig::from_toml(&text).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let none = |_: &mut String| {};
    assert!(err("", IMAGE_LOSS, &none).is_empty());
    let e = err("", IMAGE_LOSS, &|t| *t = t.replace("scale = 2", "scale = 3"));
    assert!(e.contains("restore.scale: 3 must be 2, 4 or 8"), "{e}");
    let e = err("", IMAGE_LOSS, &|t| {
        *t = t.replace("crop = 32", "crop = 31").replace("resize = 32", "resize = 31")
    });
    assert!(e.contains("data.crop: 31 is not a multiple of restore.scale (2)"), "{e}");
    let e = err("", IMAGE_LOSS, &|t| *t = t.replace("task = \"superres\"", "task = \"restore\""));
    assert!(e.contains("restore.scale: 2: task restore keeps the size"), "{e}");
    let e = err("", IMAGE_LOSS, &|t| {
        *t = t.replace("task = \"superres\"", "task = \"restore\"").replace("scale = 2", "")
    });
    assert!(e.contains("task restore needs a degradation"), "{e}");
    let e = err("noise = 5.0\nlambda_cycle = 1.0", IMAGE_LOSS, &|t| {
        *t = t.replace("task = \"superres\"", "task = \"restore\"").replace("scale = 2", "")
    });
    assert!(e.contains("restore.lambda_cycle") && e.contains("needs task superres"), "{e}");
    let e = err("jpeg_quality = 0", IMAGE_LOSS, &none);
    assert!(e.contains("restore.jpeg_quality: 0 must lie in 1–100"), "{e}");
    let e = err("noise = -1.0", IMAGE_LOSS, &none);
    assert!(e.contains("restore.noise"), "{e}");
    let e = err("lambda_cycle = 1.0\ncycle_space = \"comparator\"", IMAGE_LOSS, &none);
    assert!(e.contains("restore.cycle_space") && e.contains("lambda_feat is 0"), "{e}");
    let e =
        err("", IMAGE_LOSS, &|t| *t = t.replace("preset = \"restorer\"", "preset = \"cpu_64\""));
    assert!(e.contains("generator.preset: task superres trains the preset \"restorer\""), "{e}");
    let e = err("", IMAGE_LOSS, &|t| *t = t.replace("[restore]\nscale = 2", ""));
    assert!(e.contains("restore: task superres needs a [restore] section"), "{e}");
}

/// A configuration's text, before validation (so that edits can make it invalid).
fn toml_of(data: &Path, out: &Path, restore: &str, loss: &str) -> String {
    format!(
        "[run]\ntask = \"superres\"\nout = \"{}\"\nsteps = 4\n\n[data]\ntrain = \"{d}\"\nval = \
         \"{d}\"\nresize = 32\ncrop = 32\n\n[restore]\nscale = 2\n{restore}\n\n[generator]\n\
         preset = \"restorer\"\n\n[loss]\n{loss}\n",
        out.display(),
        d = data.display()
    )
}
