//! The diversity penalty in VAE training (`[diversity]`): logged each step within (0, 1],
//! resumed exactly, refused outside task vae; and the perceptual spread of a set of images as
//! the mean of its pairs' ST-LPIPS, recomputed pair by pair.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle::{Device, Tensor};
use common::{metrics, temp_dir, val_crops};
use deepsim_train::{PerceptualDistance, TrainConfig, Trainer};

fn config(data: &Path, out: &Path, task: &str, diversity: &str) -> Result<TrainConfig, String> {
    let section = if task == "vae" {
        "[vae]\nlatent = 8"
    } else {
        "[encoder]\nnetwork = \"alexnet-random\"\ntap = \"conv5\""
    };
    TrainConfig::from_toml(&format!(
        r#"
[run]
task = "{task}"
out = "{out}"
steps = 4
seed = 9
checkpoint_every = 2
sample_every = 4
samples = 2

[data]
train = "{data}"
val = "{data}"
resize = 64
crop = 64
batch_size = 4
workers = 1
flip = false

{section}

[generator]
preset = "cpu_64"
width = 0.125

[loss]
lambda_feat = 0.0
lambda_adv = 0.0
lambda_img = 1.0
lambda_kl = {kl}

[diversity]
{diversity}
"#,
        out = out.display(),
        data = data.display(),
        kl = if task == "vae" { "0.001" } else { "0.0" },
    ))
    .map_err(|e| e.to_string())
}

const DIVERSITY: &str =
    "lambda = 1.0\ncomparator = \"alexnet-random\"\ntap = \"conv2\"\nsigma = 0.5\nsamples = 4";

#[test]
fn a_vae_run_with_the_diversity_penalty_logs_it_and_resumes_exactly() {
    let data = val_crops("data", 64);
    let whole = temp_dir("whole");
    let c = config(&data, &whole, "vae", DIVERSITY).unwrap();
    assert_eq!(c.method(), "VAE, image loss + diversity");
    Trainer::new(c).unwrap().run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let logged = metrics(&whole);
    for line in &logged {
        let v: serde_json::Value = serde_json::from_str(&format!("{line}}}")).unwrap();
        let div = v["div"].as_f64().unwrap_or(-1.0);
        assert!(div > 0.0 && div <= 1.0, "{line}");
    }
    let parts = temp_dir("parts");
    let mut first = config(&data, &parts, "vae", DIVERSITY).unwrap();
    first.run.steps = 2;
    Trainer::new(first).unwrap().run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let mut t = Trainer::resume(config(&data, &parts, "vae", DIVERSITY).unwrap()).unwrap();
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(logged, metrics(&parts), "losses differ after resuming");
    // The penalty changes the updates: without it the run logs other losses.
    let plain = temp_dir("plain");
    let no = config(&data, &plain, "vae", &DIVERSITY.replace("lambda = 1.0", "lambda = 0.0"));
    Trainer::new(no.unwrap()).unwrap().run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let strip = |lines: &[String]| -> Vec<String> {
        lines.iter().map(|l| l.split(",\"div\"").next().unwrap().to_owned()).collect()
    };
    assert_ne!(strip(&logged)[1..], strip(&metrics(&plain))[1..]);
}

#[test]
fn diversity_settings_are_checked_by_name() {
    let (d, o) = (Path::new("d"), Path::new("o"));
    let e = config(d, o, "invert", DIVERSITY).unwrap_err();
    assert!(e.contains("diversity: spreads samples of a VAE's prior: task vae only"), "{e}");
    let e = config(d, o, "vae", &DIVERSITY.replace("samples = 4", "samples = 1")).unwrap_err();
    assert!(e.contains("diversity.samples: 1 must be at least 2"), "{e}");
    let e = config(d, o, "vae", &DIVERSITY.replace("sigma = 0.5", "sigma = 0.0")).unwrap_err();
    assert!(e.contains("diversity.sigma"), "{e}");
}

#[test]
fn spread_is_the_mean_over_pairs() {
    let judge = PerceptualDistance::new(None, &Device::Cpu).unwrap();
    let x = Tensor::rand(0f32, 1f32, (3, 3, 32, 32), &Device::Cpu).unwrap();
    let pair = |i: usize, j: usize| {
        judge.mean(&x.narrow(0, i, 1).unwrap(), &x.narrow(0, j, 1).unwrap()).unwrap()
    };
    let expected = (pair(0, 1) + pair(0, 2) + pair(1, 2)) / 3.0;
    let spread = judge.mean_pairwise(&x).unwrap();
    assert!((spread - expected).abs() < 1e-6, "{spread} vs {expected}");
    let same = Tensor::cat(&[x.narrow(0, 0, 1).unwrap(), x.narrow(0, 0, 1).unwrap()], 0).unwrap();
    assert!(judge.mean_pairwise(&same).unwrap().abs() < 1e-6);
    assert!(judge.mean_pairwise(&x.narrow(0, 0, 1).unwrap()).is_err());
}
