//! Helpers of deepsim-train's tests: scratch folders, the tiny training runs' configuration
//! and what their metrics.jsonl logs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use deepsim_train::TrainConfig;

/// A fresh folder `deepsim-TEST-name` under cargo's `target/tmp` (TEST: the test file's name),
/// emptied first.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = format!("deepsim-{}-{name}", env!("CARGO_CRATE_NAME"));
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What the tiny runs of these tests differ in.
#[derive(Clone, Copy, Debug)]
pub struct Tiny {
    /// `run.steps`.
    pub steps: u64,
    /// `run.checkpoint_every`.
    pub checkpoint_every: u64,
    /// `run.sample_every`.
    pub sample_every: u64,
    /// `loss.lambda_adv`; where it is not 0, a `[discriminator]` of width 0.125 is trained.
    pub lambda_adv: f64,
}

/// A tiny run on the 64×64 images of `data` (batches of 4, no flips) writing to `out`: seed 3,
/// a random AlexNet's conv5 as encoder and comparator, the cpu_64 generator at width 0.125,
/// λ_feat 2000, λ_img 0.00008, lr 0.001. `extra` ends the text, inside `[optim]` (more keys)
/// or as sections of its own (`[augment]`).
pub fn tiny_config(data: &Path, out: &Path, tiny: Tiny, extra: &str) -> TrainConfig {
    let Tiny { steps, checkpoint_every, sample_every, lambda_adv } = tiny;
    let discriminator = if lambda_adv != 0.0 { "\n[discriminator]\nwidth = 0.125\n" } else { "" };
    let text = format!(
        r#"
[run]
out = "{out}"
steps = {steps}
seed = 3
checkpoint_every = {checkpoint_every}
sample_every = {sample_every}
samples = 2

[data]
train = "{data}"
val = "{data}"
resize = 64
crop = 64
batch_size = 4
workers = 2
flip = false

[encoder]
network = "alexnet-random"
tap = "conv5"

[generator]
preset = "cpu_64"
width = 0.125
{discriminator}
[loss]
comparator = "alexnet-random"
comparator_tap = "conv5"
feature_norm = "mean"
lambda_feat = 2000.0
lambda_adv = {lambda_adv:?}
lambda_img = 0.00008

[optim]
lr = 0.001
{extra}
"#,
        out = out.display(),
        data = data.display()
    );
    TrainConfig::from_toml(&text).unwrap()
}

/// The lines of `out/metrics.jsonl` up to their wall-clock time: what repeats exactly when a
/// run does.
pub fn metrics(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| l.split(",\"seconds\"").next().unwrap().to_string())
        .collect()
}

/// Four `side`×`side` crops (from (40, 40)) of every seventh held-out photo tile
/// (`data/photos/val`), as PNGs in the fresh folder `temp_dir(name)`.
pub fn val_crops(name: &str, side: u32) -> PathBuf {
    let dir = temp_dir(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/photos/val");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for (i, f) in files.iter().step_by(7).take(4).enumerate() {
        let img = image::open(f).unwrap().crop_imm(40, 40, side, side);
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
    dir
}
