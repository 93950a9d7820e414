//! The trainer end to end on tiny runs: losses fall, a resumed run repeats an uninterrupted
//! one exactly, bad checkpoints and configurations are refused by name, NaN stops the run,
//! and the pause rule acts in the loop.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use deepsim_train::{
    resume_differences, AdaptiveAdversarialWeight, AdversarialKind, DataFormat, Error, FeatureNorm,
    ImageDistance, MetricName, Model, PerceptualDistance, TapList, Task, TrainConfig, Trainer,
    VaeSection,
};

use common::{metrics, temp_dir, tiny_config, Tiny};

/// Four 64×64 crops of demo tiles: every batch of 4 is this set (no flips, crop = size).
fn tiny_data(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/train");
    for (i, f) in [
        "astronaut_s240_r0_c0.jpg",
        "coffee_s400_r1_c1.jpg",
        "chelsea_s240_r1_c1.jpg",
        "rocket_s240_r1_c3.jpg",
    ]
    .iter()
    .enumerate()
    {
        let img = image::open(demo.join(f)).unwrap().crop_imm(8, 8, 64, 64);
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
    dir
}

/// The tiny run of these tests: six steps, checkpoints and samples every three, a
/// discriminator at λ_adv 0.01.
fn config(data: &Path, out: &Path, extra: &str) -> TrainConfig {
    // `extra` may override [optim] keys: later duplicates are not TOML, so replace instead.
    let tiny = Tiny { steps: 6, checkpoint_every: 3, sample_every: 3, lambda_adv: 0.01 };
    tiny_config(data, out, tiny, extra)
}

fn run(cfg: TrainConfig) -> Result<Trainer, Error> {
    let mut t = Trainer::new(cfg)?;
    t.run(&AtomicBool::new(false), &mut |_| {})?;
    Ok(t)
}

fn term(line: &str, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    let rest = &line[line.find(&key).unwrap() + key.len()..];
    rest.split([',', '}']).next().unwrap().parse().unwrap()
}

#[test]
fn losses_fall_on_a_fixed_batch() {
    let data = tiny_data("fall");
    let out = temp_dir("fall-out");
    let mut cfg = config(&data, &out, "");
    cfg.run.steps = 40;
    cfg.run.checkpoint_every = 40;
    cfg.run.sample_every = 40;
    run(cfg).unwrap();
    let lines = metrics(&out);
    assert_eq!(lines.len(), 40);
    let mean = |name: &str, r: std::ops::Range<usize>| -> f64 {
        lines[r.clone()].iter().map(|l| term(l, name)).sum::<f64>() / r.len() as f64
    };
    for name in ["feat", "img", "total", "discr"] {
        let (first, last) = (mean(name, 0..5), mean(name, 35..40));
        assert!(last < 0.8 * first, "{name}: {first} → {last}");
    }
    // Outputs: samples at step 40 (2 validation images above their reconstructions), curves.
    let grid = image::open(out.join("samples/step_000040.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (2 * 66 + 2, 2 * 66 + 2));
    assert!(out.join("curves.png").is_file() && out.join("checkpoint.safetensors").is_file());
}

#[test]
fn a_resumed_run_logs_what_an_uninterrupted_one_logs() {
    let data = tiny_data("resume");
    let whole = temp_dir("resume-whole");
    run(config(&data, &whole, "")).unwrap();
    let parts = temp_dir("resume-parts");
    let mut first = config(&data, &parts, "");
    first.run.steps = 4; // stops between checkpoints: the checkpoint at the end is step 4
    run(first).unwrap();
    // The process ends, killed while writing a checkpoint: its temporary file stays behind
    // (PID 4000000000 is beyond Linux's largest, so that process is gone). A fresh process
    // resumes with the full length and removes it; this process's own temporary stays.
    let stale = parts.join(".checkpoint.safetensors.tmp-4000000000");
    let own = parts.join(format!(".notes.txt.tmp-{}", std::process::id()));
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    std::fs::write(&own, b"being written").unwrap();
    let mut t = Trainer::resume(config(&data, &parts, "")).unwrap();
    assert!(!stale.exists() && own.exists());
    std::fs::remove_file(&own).unwrap();
    assert_eq!(t.step_count(), 4);
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let (a, b) = (metrics(&whole), metrics(&parts));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "losses differ after resuming");
    // A fresh run into a directory with a checkpoint is refused.
    let err = Trainer::new(config(&data, &parts, "")).err().unwrap().to_string();
    assert!(err.contains("already holds a run (checkpoint.safetensors"), "{err}");
    // What a failed save leaves (only the previous checkpoint) and what a run killed before
    // its first checkpoint leaves (only its log) are refused too, with what to do; the files
    // are untouched.
    let ckpt = parts.join("checkpoint.safetensors");
    let prev = parts.join("checkpoint.prev.safetensors");
    std::fs::rename(&ckpt, &prev).unwrap();
    let log = std::fs::read(parts.join("metrics.jsonl")).unwrap();
    let prev_bytes = std::fs::read(&prev).unwrap();
    let err = Trainer::new(config(&data, &parts, "")).err().unwrap().to_string();
    assert!(err.contains("checkpoint.prev.safetensors, metrics.jsonl") && err.contains("rename"));
    std::fs::remove_file(&prev).unwrap();
    let err = Trainer::new(config(&data, &parts, "")).err().unwrap().to_string();
    assert!(err.contains("(metrics.jsonl)") && err.contains("before its first checkpoint"));
    assert_eq!(std::fs::read(parts.join("metrics.jsonl")).unwrap(), log);
    assert!(!prev_bytes.is_empty() && !ckpt.exists());
    // An empty run.out would write the run into the working directory.
    let mut here = config(&data, &parts, "");
    here.run.out = PathBuf::new();
    let err = Trainer::new(here).err().unwrap().to_string();
    assert!(err.contains("run.out") && err.contains("empty"), "{err}");
}

#[test]
fn bad_checkpoints_are_refused_and_kept() {
    let data = tiny_data("corrupt");
    let out = temp_dir("corrupt-out");
    run(config(&data, &out, "")).unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let prev = out.join("checkpoint.prev.safetensors");
    let prev_bytes = std::fs::read(&prev).unwrap();
    // Another configuration (a wider generator).
    let mut other = config(&data, &out, "");
    other.generator.width = 0.25;
    let err = Trainer::resume(other).err().unwrap().to_string();
    assert!(err.contains("another configuration") && err.contains("width"), "{err}");
    // The feature term's reduction or its jitter changed: another loss.
    let mut other = config(&data, &out, "");
    other.loss.feature_jitter = !other.loss.feature_jitter;
    let err = Trainer::resume(other).err().unwrap().to_string();
    assert!(err.contains("another configuration") && err.contains("jitter"), "{err}");
    let mut other = config(&data, &out, "");
    other.loss.feature_norm = match other.loss.feature_norm {
        FeatureNorm::Sum => FeatureNorm::Mean,
        FeatureNorm::Mean => FeatureNorm::Sum,
    };
    let err = Trainer::resume(other).err().unwrap().to_string();
    assert!(err.contains("another configuration") && err.contains("norm"), "{err}");
    // One bit flipped in the tensor data, or its last kilobyte zeroed (as a torn write
    // leaves it): the file still parses, the checksum refuses it, the previous one is offered.
    let bytes = std::fs::read(&ckpt).unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x10;
    let mut zeroed = bytes.clone();
    let tail = zeroed.len() - 1024;
    zeroed[tail..].fill(0);
    for damaged in [flipped, zeroed] {
        std::fs::write(&ckpt, &damaged).unwrap();
        let err = Trainer::resume(config(&data, &out, "")).err().unwrap().to_string();
        assert!(err.contains("does not match the checksum"), "{err}");
        assert!(err.contains("checkpoint.prev.safetensors") && err.contains("rename"), "{err}");
        let err = Model::load(&ckpt, None).err().unwrap().to_string();
        assert!(err.contains("does not match the checksum"), "{err}");
    }
    // The intact file still loads.
    std::fs::write(&ckpt, &bytes).unwrap();
    assert!(Model::load(&ckpt, None).is_ok());
    // Truncated.
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let err = Trainer::resume(config(&data, &out, "")).err().unwrap().to_string();
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("corrupt or truncated"),
        "{err}"
    );
    // Garbage.
    std::fs::write(&ckpt, b"not a checkpoint").unwrap();
    assert!(matches!(Trainer::resume(config(&data, &out, "")), Err(Error::Checkpoint { .. })));
    // Missing, with the previous one pointed out; the previous checkpoint was never touched.
    std::fs::remove_file(&ckpt).unwrap();
    let err = Trainer::resume(config(&data, &out, "")).err().unwrap().to_string();
    assert!(err.contains("not found") && err.contains("checkpoint.prev.safetensors"), "{err}");
    assert_eq!(std::fs::read(&prev).unwrap(), prev_bytes);
}

#[test]
fn a_non_finite_loss_stops_the_run_naming_term_and_step() {
    let data = tiny_data("nan");
    let out = temp_dir("nan-out");
    let mut cfg = config(&data, &out, "");
    cfg.optim.lr = 1e30;
    cfg.run.steps = 50;
    cfg.run.checkpoint_every = 1;
    let mut t = Trainer::new(cfg.clone()).unwrap();
    let err = t.run(&AtomicBool::new(false), &mut |_| {}).unwrap_err();
    let Error::NonFinite { step, ref term, .. } = err else { panic!("{err}") };
    assert!(step >= 2, "{err}");
    let known = [
        "feat",
        "img",
        "adv",
        "discr",
        "total",
        "generator output",
        "generator weights",
        "discriminator weights",
    ];
    assert!(known.iter().any(|k| term.starts_with(k)), "{term}");
    assert!(err.to_string().contains(&format!("step {step}: {term} is")), "{err}");
    // The last good checkpoint is the step before, and it loads.
    let resumed = Trainer::resume(cfg).unwrap();
    assert_eq!(resumed.step_count(), step - 1);
}

/// A DeePSiM run inverting random AlexNet's conv5 at 64×64: the configuration the error
/// messages below are cut from.
const CONV5_DEEPSIM: &str = r#"[run]
out = "runs/table2/conv5-deepsim"
steps = 1000
seed = 1
device = "cpu"
checkpoint_every = 500
sample_every = 500
samples = 8

[data]
train = "data/demo/train"
val = "data/demo/val"
resize = 80
crop = 64
batch_size = 16
workers = 2

[encoder]
network = "alexnet-random"
tap = "conv5"

[generator]
preset = "cpu_64"
width = 0.25

[discriminator]
preset = "cpu_64"
width = 0.25

[loss]
comparator = "alexnet-random"
comparator_tap = ["conv1", "conv2"]
feature_norm = "mean"
lambda_feat = 1.0
lambda_adv = 0.002
lambda_img = 0.00008
pause_threshold = 0.1

[optim]
lr = 0.001
"#;

#[test]
fn configuration_errors_name_the_field() {
    let data = tiny_data("cfg");
    let out = temp_dir("cfg-out");
    let good = CONV5_DEEPSIM;
    let cfg = TrainConfig::from_toml(good).unwrap();
    assert_eq!(cfg.method(), "DeePSiM alexnet-random conv1+conv2");
    let image_only = good.replace("lambda_feat = 1.0", "lambda_feat = 0.0");
    let image_only = image_only.replace("lambda_adv = 0.002", "lambda_adv = 0.0");
    assert_eq!(TrainConfig::from_toml(&image_only).unwrap().method(), "image loss");
    let no_adv = good.replace("lambda_adv = 0.002", "lambda_adv = 0.0");
    assert_eq!(
        TrainConfig::from_toml(&no_adv).unwrap().method(),
        "DeePSiM alexnet-random conv1+conv2, no adv"
    );
    let err = TrainConfig::from_toml(&good.replace("[optim]", "[optim]\nmomentum = 0.5"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `momentum`"), "{err}");
    let err =
        TrainConfig::from_toml(&good.replace("lr = 0.001", "lr = -1.0")).unwrap_err().to_string();
    assert!(err.contains("optim.lr"), "{err}");
    let err =
        TrainConfig::from_toml(&good.replace("crop = 64", "crop = 60")).unwrap_err().to_string();
    assert!(err.contains("data.crop"), "{err}");
    let err = TrainConfig::from_toml(&good.replace("steps = 1000", "steps = \"many\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("steps"), "{err}");
    let err = TrainConfig::from_toml(&good.replace("device = \"cpu\"", "device = \"tpu\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("run.device"), "{err}");
    let err = TrainConfig::from_toml(&good.replace("workers = 2", "workers = 100000"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.workers") && err.contains("100000"), "{err}");
    let err = TrainConfig::from_file(out.join("missing.toml")).unwrap_err().to_string();
    assert!(err.contains("missing.toml"), "{err}");
    let mut cfg = config(&data, &out, "");
    cfg.data.batch_size = 1000;
    let err = Trainer::new(cfg).err().unwrap().to_string();
    assert!(err.contains("data.batch_size = 1000") && !err.contains("drop_last"), "{err}");
    let mut cfg = config(&data, &out, "");
    cfg.encoder.as_mut().unwrap().tap = "conv9".into();
    assert!(Trainer::new(cfg).err().unwrap().to_string().contains("encoder.tap"));
    // The task's sections.
    let vae = good.replace("[run]", "[run]\ntask = \"vae\"");
    let err = TrainConfig::from_toml(&vae).unwrap_err().to_string();
    assert!(err.contains("vae") && err.contains("[vae]"), "{err}");
    let err =
        TrainConfig::from_toml(&format!("{vae}\n[vae]\nlatent = 64\n")).unwrap_err().to_string();
    assert!(err.contains("encoder") && err.contains("remove [encoder]"), "{err}");
    let err = TrainConfig::from_toml(&good.replace("lambda_img", "lambda_kl = 1.0\nlambda_img"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("loss.lambda_kl"), "{err}");
    let err = TrainConfig::from_toml(
        &good.replace("comparator_tap = [\"conv1\", \"conv2\"]", "comparator_tap = []"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("loss.comparator_tap"), "{err}");
}

/// Every shipped configuration parses and passes its checks (on the CPU: the paper's ask for
/// CUDA), and the paper's name the paper's coefficients.
#[test]
fn every_shipped_configuration_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = Vec::new();
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("table2")).unwrap())
        .chain(std::fs::read_dir(dir.join("demo-comparators")).unwrap())
        .chain(std::fs::read_dir(dir.join("superres")).unwrap())
        .chain(std::fs::read_dir(dir.join("restore")).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cfg: TrainConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cfg.run.device = "cpu".into();
        cfg.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name.starts_with("paper-") {
            let l = &cfg.loss;
            assert_eq!((l.lambda_feat, l.lambda_adv, l.lambda_img), (0.01, 100.0, 2e-6), "{name}");
            assert_eq!(
                (cfg.data.crop, cfg.data.batch_size, cfg.optim.lr),
                (227, 64, 2e-4),
                "{name}"
            );
        }
        if path.parent().is_some_and(|p| p.ends_with("table2")) {
            // The experiment's runs differ in the layer and the loss its name says.
            let (layer, method) = name.split_once('-').unwrap();
            assert_eq!(cfg.encoder.as_ref().unwrap().tap, layer, "{name}");
            let expected = match method {
                "warmup" | "image-loss" => "image loss",
                "deepsim" => "DeePSiM efficientnet-lite0 block0+block2",
                "random-alexnet" => "DeePSiM alexnet-random conv1+conv2",
                "no-feat" => "DeePSiM, no feat",
                other => panic!("configs/table2/{name}.toml: unknown method {other}"),
            };
            assert_eq!(cfg.method(), expected, "{name}");
        }
        seen.push(name);
    }
    seen.sort();
    for expected in [
        "demo-deepsim",
        "demo-image-loss",
        "paper-conv5",
        "paper-fc6",
        "paper-fc7",
        "paper-fc8",
        "paper-vae",
        "cpu-vae",
        "block2-deepsim",
        "block10-deepsim",
        "x4-image-loss",
        "x4-deepsim",
        "x4-deepsim-cycle",
        "jpeg10-image-loss",
        "jpeg10-deepsim",
    ] {
        assert!(seen.iter().any(|s| s == expected), "configs/{expected}.toml missing: {seen:?}");
    }
    // The demo's two runs differ in the loss alone.
    let load = |name: &str| -> TrainConfig {
        toml::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    // The restorers' twins differ in the loss (and the cycle term) alone.
    for (a, b) in [
        ("superres/x4-image-loss.toml", "superres/x4-deepsim.toml"),
        ("superres/x4-deepsim.toml", "superres/x4-deepsim-cycle.toml"),
        ("restore/jpeg10-image-loss.toml", "restore/jpeg10-deepsim.toml"),
    ] {
        let (a, b) = (load(a), load(b));
        assert_eq!((&a.data, &a.generator, &a.optim), (&b.data, &b.generator, &b.optim));
        let (ra, rb) = (a.restore.as_ref().unwrap(), b.restore.as_ref().unwrap());
        assert_eq!((ra.scale, ra.noise, ra.jpeg_quality), (rb.scale, rb.noise, rb.jpeg_quality));
        assert_eq!((a.run.steps, a.run.seed), (b.run.steps, b.run.seed));
    }
    assert_eq!(load("superres/x4-image-loss.toml").method(), "image loss");
    assert_eq!(
        load("superres/x4-deepsim-cycle.toml").method(),
        "DeePSiM efficientnet-lite0 block0+block2 + cycle (lab)"
    );
    let (base, deep) = (load("demo-image-loss.toml"), load("demo-deepsim.toml"));
    assert_eq!(base.method(), "image loss");
    assert_eq!(deep.method(), "DeePSiM efficientnet-lite0 block0+block2");
    assert_eq!(
        (&base.data, &base.encoder, &base.generator),
        (&deep.data, &deep.encoder, &deep.generator)
    );
    assert_eq!(
        (&base.optim, base.run.steps, base.run.seed),
        (&deep.optim, deep.run.steps, deep.run.seed)
    );
    assert_eq!(base.loss.lambda_img, deep.loss.lambda_img);
    // The comparator study changes the DeePSiM run's feature term alone, from the warm-up.
    for (name, method) in [
        ("demo-comparators/random-alexnet.toml", "DeePSiM alexnet-random conv1+conv2"),
        ("demo-comparators/no-feat.toml", "DeePSiM, no feat"),
    ] {
        let c = load(name);
        assert_eq!(c.method(), method, "{name}");
        assert_eq!(
            (&c.data, &c.encoder, &c.generator),
            (&deep.data, &deep.encoder, &deep.generator)
        );
        assert_eq!(
            (&c.optim, c.run.steps, c.run.seed),
            (&deep.optim, deep.run.steps, deep.run.seed)
        );
        let (l, d) = (&c.loss, &deep.loss);
        assert_eq!(
            (l.lambda_adv, l.lambda_img, l.feature_jitter),
            (d.lambda_adv, d.lambda_img, d.feature_jitter)
        );
        assert_eq!(
            c.run.init.as_deref(),
            Some(Path::new("runs/demo/warmup/checkpoint.safetensors"))
        );
    }
    // Table 2's runs are the demo's recipe on the fetched tiles at two depths: at each depth
    // every run but the warm-up starts from that depth's warm-up, and each differs from the
    // demo's run of its method in the data, the layer, the steps and where it writes alone.
    let demo = |method: &str| match method {
        "warmup" | "image-loss" => load("demo-image-loss.toml"),
        "deepsim" => load("demo-deepsim.toml"),
        other => load(&format!("demo-comparators/{other}.toml")),
    };
    let mut table2 = 0;
    for entry in std::fs::read_dir(dir.join("table2")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (layer, method) = name.split_once('-').unwrap();
        let mut c = load(&format!("table2/{name}.toml"));
        let warmup = format!("runs/table2/{layer}-warmup/checkpoint.safetensors");
        let expected_init = (method != "warmup").then(|| PathBuf::from(&warmup));
        assert_eq!(c.run.init, expected_init, "{name}");
        assert_eq!(c.run.out, PathBuf::from(format!("runs/table2/{name}")), "{name}");
        assert_eq!(c.data.train, PathBuf::from("target/data/tiles/train"), "{name}");
        assert_eq!(c.data.val, PathBuf::from("target/data/tiles/val"), "{name}");
        let d = demo(method);
        c.encoder.as_mut().unwrap().tap = "block2".into();
        assert_eq!(
            (&c.loss, &c.optim, &c.generator, &c.discriminator, &c.encoder),
            (&d.loss, &d.optim, &d.generator, &d.discriminator, &d.encoder),
            "{name}"
        );
        assert_eq!(
            (c.data.resize, c.data.crop, c.data.batch_size, c.run.seed),
            (d.data.resize, d.data.crop, d.data.batch_size, d.run.seed),
            "{name}"
        );
        table2 += 1;
    }
    assert_eq!(table2, 8);
}

/// A checkpoint loads as a [`Model`] without the trainer: the same reconstructions, bit for
/// bit; an inverter refuses to sample; a damaged file is refused by name.
#[test]
fn a_checkpoint_loads_as_a_model() {
    let data = tiny_data("model");
    let out = temp_dir("model-out");
    let mut cfg = config(&data, &out, "");
    cfg.loss.comparator_tap = Some(TapList::Many(vec!["conv1".into(), "conv2".into()]));
    cfg.run.steps = 3;
    let t = run(cfg).unwrap();
    let val = t.validation_images().clone();
    let want = t.reconstruct(&val).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let model = Model::load(&ckpt, Some("cpu")).unwrap();
    assert!(!model.is_vae());
    let got = model.reconstruct(&val).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(want, got);
    let err = model.sample(2, 0).err().unwrap().to_string();
    assert!(err.contains("VAE"), "{err}");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() - 100]).unwrap();
    let err = Model::load(&ckpt, None).err().unwrap().to_string();
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("corrupt or truncated"),
        "{err}"
    );
}

/// The VAE task: its losses fall on a fixed batch (the KL term included in the total), a
/// resumed run repeats an uninterrupted one, and samples from the prior depend on the seed
/// only.
#[test]
fn the_vae_trains_resumes_and_samples() {
    let data = tiny_data("vae");
    let vae_config = |out: &Path, steps: u64| -> TrainConfig {
        let mut cfg = config(&data, out, "");
        cfg.run.task = Task::Vae;
        cfg.encoder = None;
        cfg.vae = Some(VaeSection { latent: 16 });
        cfg.loss.lambda_kl = 1e-4;
        // The image term as large as the feature term, so that both must fall.
        cfg.loss.lambda_img = 1e-3;
        cfg.run.steps = steps;
        cfg.validate().unwrap();
        cfg
    };
    let out = temp_dir("vae-fall");
    let mut cfg = vae_config(&out, 40);
    cfg.run.checkpoint_every = 40;
    cfg.run.sample_every = 40;
    run(cfg).unwrap();
    let lines = metrics(&out);
    let mean = |name: &str, r: std::ops::Range<usize>| -> f64 {
        lines[r.clone()].iter().map(|l| term(l, name)).sum::<f64>() / r.len() as f64
    };
    for name in ["feat", "img", "total"] {
        let (first, last) = (mean(name, 0..5), mean(name, 35..40));
        assert!(last < 0.8 * first, "{name}: {first} → {last}");
    }
    assert!(lines.iter().all(|l| term(l, "kl") >= 0.0));

    let whole = temp_dir("vae-whole");
    run(vae_config(&whole, 6)).unwrap();
    let parts = temp_dir("vae-parts");
    run(vae_config(&parts, 4)).unwrap();
    let mut t = Trainer::resume(vae_config(&parts, 6)).unwrap();
    t.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(metrics(&whole), metrics(&parts), "losses differ after resuming");

    let model = Model::load(&parts.join("checkpoint.safetensors"), None).unwrap();
    assert!(model.is_vae());
    let a = model.sample(3, 7).unwrap();
    assert_eq!(a.dims(), [3, 3, 64, 64]);
    let values = |t: &candle::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(values(&a), values(&model.sample(3, 7).unwrap()));
    assert_ne!(values(&a), values(&model.sample(3, 8).unwrap()));
    assert!(values(&a).iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn the_pause_rule_acts_in_the_loop() {
    let data = tiny_data("pause");
    let snapshot = |t: &Trainer| -> Vec<f32> {
        let map = t.discriminator_vars().unwrap().data().lock().unwrap();
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| map[*n].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    for (threshold, paused) in [(1e9, true), (0.0, false)] {
        let out = temp_dir(&format!("pause-{paused}"));
        let mut cfg = config(&data, &out, "");
        cfg.loss.pause_threshold = threshold;
        let mut t = Trainer::new(cfg).unwrap();
        let before = snapshot(&t);
        let mut flags = Vec::new();
        t.run(&AtomicBool::new(false), &mut |log| flags.push(log.discriminator_updated.unwrap()))
            .unwrap();
        let after = snapshot(&t);
        assert_eq!(flags, vec![!paused; 6]);
        assert_eq!(t.pause().unwrap().paused_steps, if paused { 6 } else { 0 });
        assert_eq!(before == after, paused, "threshold {threshold}");
    }
}

/// The generator's variables of a trainer, by name, as flat f32 vectors.
fn generator_values(t: &Trainer) -> std::collections::BTreeMap<String, Vec<f32>> {
    let vars = t.generator_vars().data().lock().unwrap().clone();
    vars.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn a_warm_start_begins_where_another_run_ended() {
    let data = tiny_data("warm");
    let source_out = temp_dir("warm-source");
    let mut source = config(&data, &source_out, "");
    source.loss.lambda_feat = 0.0;
    source.loss.lambda_adv = 0.0;
    let source = run(source).unwrap();
    let ckpt = source_out.join("checkpoint.safetensors");

    let mut warm = config(&data, &temp_dir("warm-run"), "");
    warm.run.init = Some(ckpt.clone());
    let warm = Trainer::new(warm).unwrap();
    let cold = Trainer::new(config(&data, &temp_dir("warm-cold"), "")).unwrap();
    let (trained, warm_values) = (generator_values(&source), generator_values(&warm));
    assert_eq!(warm.step_count(), 0, "the step count starts afresh");
    assert_eq!(trained, warm_values, "every generator tensor is the source run's last");
    assert_ne!(generator_values(&cold), warm_values, "and not the seed's initialization");

    // Another layer, or no file, is refused naming the file and the setting.
    let mut other = config(&data, &temp_dir("warm-other"), "");
    other.encoder.as_mut().unwrap().tap = "conv4".into();
    other.run.init = Some(ckpt.clone());
    let err = Trainer::new(other).err().unwrap().to_string();
    assert!(err.contains("run.init") && err.contains("conv4") && err.contains("conv5"), "{err}");
    assert!(err.contains("checkpoint.safetensors"), "{err}");
    let mut missing = config(&data, &temp_dir("warm-missing"), "");
    missing.run.init = Some(source_out.join("nothing.safetensors"));
    let err = Trainer::new(missing).err().unwrap().to_string();
    assert!(err.contains("nothing.safetensors"), "{err}");
}

/// The first `n` steps' terms of a run of `cfg` (a fresh `run.out`).
fn first_terms(cfg: TrainConfig, n: u64) -> Vec<std::collections::BTreeMap<String, f64>> {
    let mut t = Trainer::new(cfg).unwrap();
    (0..n).map(|_| t.step().unwrap().terms).collect()
}

#[test]
fn every_adversarial_kind_trains_and_reaches_the_loss() {
    let data = tiny_data("kinds");
    let mut discr = Vec::new();
    for kind in ["logistic", "hinge", "least_squares"] {
        let out = temp_dir(&format!("kinds-{kind}"));
        let mut cfg = config(&data, &out, "");
        cfg.loss.adversarial =
            toml::from_str::<std::collections::BTreeMap<String, AdversarialKind>>(&format!(
                "k = \"{kind}\""
            ))
            .unwrap()["k"];
        let terms = first_terms(cfg, 3);
        assert!(terms.iter().all(|t| t.values().all(|v| v.is_finite())), "{kind}: {terms:?}");
        discr.push(terms[0]["discr"]);
    }
    // One discriminator (same seed, same first batch, same logits), three objectives (each
    // objective's formula is deepsim-losses' test): the run reaches the configured one.
    assert!(discr[0] != discr[1] && discr[1] != discr[2] && discr[0] != discr[2], "{discr:?}");
    assert!(discr.iter().all(|d| *d > 0.0), "{discr:?}");
    let text = toml::to_string(&config(&data, &temp_dir("kinds-bad"), "")).unwrap();
    assert!(text.contains("adversarial = \"logistic\""), "{text}");
    let err = TrainConfig::from_toml(
        &text.replace("adversarial = \"logistic\"", "adversarial = \"wasserstein\""),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("wasserstein") && err.contains("hinge"), "{err}");
}

#[test]
fn the_adaptive_adversarial_weight_starts_at_its_step() {
    let data = tiny_data("adaptive");
    let out = temp_dir("adaptive-out");
    let mut cfg = config(&data, &out, "");
    cfg.loss.adaptive_adversarial =
        Some(AdaptiveAdversarialWeight { start_step: 2, ..Default::default() });
    let terms = first_terms(cfg, 3);
    // Steps count from 1: step 1 is before `start_step` 2, where the weight is 0.
    let w: Vec<f64> = terms.iter().map(|t| t["adv_weight"]).collect();
    assert_eq!(w[0], 0.0, "{w:?}");
    assert!(w[1] > 0.0 && w[2] > 0.0 && w.iter().all(|x| x.is_finite()), "{w:?}");
    // The total is the weighted sum with the adaptive factor on λ_adv.
    let t = &terms[2];
    let total = 2000.0 * t["feat"] + 0.00008 * t["img"] + 0.01 * w[2] * t["adv"];
    assert!((t["total"] - total).abs() < 1e-4 * total.abs(), "{} vs {total}", t["total"]);
    // Without an adversarial term there is nothing to scale.
    let mut cfg = config(&data, &temp_dir("adaptive-bad"), "");
    cfg.loss.adaptive_adversarial = Some(AdaptiveAdversarialWeight::default());
    cfg.loss.lambda_adv = 0.0;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("loss.adaptive_adversarial"), "{err}");
}

#[test]
fn st_lpips_as_the_feature_term_is_the_metric_of_the_reconstructions() {
    let data = tiny_data("metric");
    let out = temp_dir("metric-out");
    let mut cfg = config(&data, &out, "");
    cfg.loss.comparator = None;
    cfg.loss.comparator_tap = None;
    cfg.loss.metric = Some(MetricName::StlpipsAlex);
    cfg.loss.lambda_feat = 1.0;
    assert_eq!(cfg.method(), "DeePSiM stlpips-alex");
    let mut t = Trainer::new(cfg.clone()).unwrap();
    // Every batch is the four tiles: the first step's term is ST-LPIPS between the
    // initial reconstructions and the tiles, measured here through the metric alone.
    let x = stack_folder(&data);
    let expected = PerceptualDistance::new(None, &candle::Device::Cpu)
        .unwrap()
        .mean(&t.reconstruct(&x).unwrap(), &x)
        .unwrap();
    let log = t.step().unwrap();
    assert!(
        (log.terms["feat"] - expected).abs() < 1e-4 * expected,
        "{} vs {expected}",
        log.terms["feat"]
    );
    for _ in 0..2 {
        assert!(t.step().unwrap().terms["total"].is_finite());
    }
    // A metric beside a comparator is ambiguous.
    let mut both = cfg;
    both.loss.comparator = Some("alexnet-random".into());
    let err = both.validate().unwrap_err().to_string();
    assert!(err.contains("loss.metric"), "{err}");
}

/// The images of a folder written by `tiny_data`, `[4, 3, 64, 64]` in [0, 1].
fn stack_folder(dir: &Path) -> candle::Tensor {
    let mut v = Vec::new();
    for i in 0..4 {
        let img = image::open(dir.join(format!("{i}.png"))).unwrap().to_rgb8();
        for c in 0..3 {
            v.extend(img.pixels().map(|p| f32::from(p[c]) / 255.0));
        }
    }
    candle::Tensor::from_vec(v, (4, 3, 64, 64), &candle::Device::Cpu).unwrap()
}

/// An IDX file of u8 images `[n, side, side]`, image `i` holding `(i * 40 + x) % 256` at
/// column x.
fn write_idx(path: &Path, n: usize, side: usize) {
    let mut bytes = vec![0, 0, 0x08, 3];
    for d in [n, side, side] {
        bytes.extend((d as u32).to_be_bytes());
    }
    for i in 0..n {
        for _ in 0..side {
            bytes.extend((0..side).map(|x| ((i * 40 + x) % 256) as u8));
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn idx_and_cifar_files_train() {
    // IDX: 64×64 grey images, made RGB; the sample grid's images are the file's pixels.
    let dir = temp_dir("idx");
    write_idx(&dir.join("train-images-idx3-ubyte"), 6, 64);
    write_idx(&dir.join("t10k-images-idx3-ubyte"), 2, 64);
    let out = temp_dir("idx-out");
    let mut cfg = config(&dir, &out, "");
    cfg.data.format = DataFormat::Idx;
    cfg.data.train = dir.join("train-images-idx3-ubyte");
    cfg.data.val = dir.join("t10k-images-idx3-ubyte");
    // A folder where the IDX file belongs, and a file where a folder belongs, are named.
    let mut wrong = cfg.clone();
    wrong.data.val = dir.clone();
    let err = Trainer::new(wrong).err().unwrap().to_string();
    assert!(
        err.contains("data.val") && err.contains("is a folder") && err.contains("idx3"),
        "{err}"
    );
    let mut wrong = cfg.clone();
    wrong.data.format = DataFormat::Folder;
    let err = Trainer::new(wrong).err().unwrap().to_string();
    assert!(err.contains("data.train") && err.contains("is a file"), "{err}");
    let mut t = Trainer::new(cfg).unwrap();
    let v = t.validation_images().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(t.validation_images().dims(), [2, 3, 64, 64]);
    // Image 1, channel 2, row 5, column 7: (40 + 7) / 255.
    let at = ((3 + 2) * 64 + 5) * 64 + 7;
    assert!((v[at] - 47.0 / 255.0).abs() < 1e-6, "{}", v[at]);
    for _ in 0..2 {
        assert!(t.step().unwrap().terms["total"].is_finite());
    }

    // CIFAR-10: 32×32 records resized to 64; image i of the test batch is the colour
    // (10 i, 100, 200 − 10 i), which a resize keeps.
    let cifar = temp_dir("cifar").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&cifar).unwrap();
    let record = |i: usize| -> Vec<u8> {
        let mut r = vec![(i % 10) as u8];
        for value in [10 * i, 100, 200 - 10 * i] {
            r.extend(std::iter::repeat_n(value as u8, 1024));
        }
        r
    };
    for b in 1..=5 {
        std::fs::write(
            cifar.join(format!("data_batch_{b}.bin")),
            [record(b), record(b + 5)].concat(),
        )
        .unwrap();
    }
    std::fs::write(cifar.join("test_batch.bin"), [record(0), record(1)].concat()).unwrap();
    let out = temp_dir("cifar-out");
    let mut cfg = config(&cifar, &out, "");
    cfg.data.format = DataFormat::Cifar10;
    cfg.data.resize = 64;
    let mut t = Trainer::new(cfg).unwrap();
    let v = t.validation_images().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (c, want) in [(0usize, 10.0f32), (1, 100.0), (2, 190.0)] {
        let at = ((3 + c) * 64 + 30) * 64 + 30;
        assert!((v[at] - want / 255.0).abs() < 1e-5, "channel {c}: {}", v[at] * 255.0);
    }
    for _ in 0..2 {
        assert!(t.step().unwrap().terms["total"].is_finite());
    }
}

#[test]
fn cached_features_train_as_computed_ones() {
    let data = tiny_data("cache");
    let plain = first_terms(config(&data, &temp_dir("cache-plain"), ""), 3);
    let cache = temp_dir("cache-dir");
    let mut cfg = config(&data, &temp_dir("cache-out"), "");
    cfg.data.feature_cache = Some(cache.clone());
    let cached = first_terms(cfg.clone(), 3);
    assert!(cache.join("index.safetensors").is_file());
    for (a, b) in plain.iter().zip(&cached) {
        for (k, v) in a {
            assert!((v - b[k]).abs() <= 1e-5 * v.abs().max(1e-12), "{k}: {v} vs {}", b[k]);
        }
    }
    // The cache holds one view of each image: random flips are refused.
    cfg.data.flip = true;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("data.feature_cache") && err.contains("flip"), "{err}");
}

#[test]
fn a_resume_may_change_only_the_listed_fields() {
    let data = tiny_data("fields");
    let then = config(&data, &temp_dir("fields-out"), "");
    let mut now = then.clone();
    now.run.steps = 100;
    now.run.device = "cpu".into();
    now.optim.lr = 1e-4;
    now.data.workers = 1;
    assert!(resume_differences(&then, &now).is_empty());
    now.loss.lambda_adv = 0.02;
    now.data.flip = true;
    now.loss.adversarial = AdversarialKind::Hinge;
    assert_eq!(
        resume_differences(&then, &now),
        [
            "data.flip: false in the checkpoint, true now",
            "loss.adversarial: \"logistic\" in the checkpoint, \"hinge\" now",
            "loss.lambda_adv: 0.01 in the checkpoint, 0.02 now",
        ]
    );
    // In a real resume, the refusal names the field.
    let out = temp_dir("fields-out");
    let mut cfg = then.clone();
    cfg.run.steps = 3;
    run(cfg).unwrap();
    let mut other = then;
    other.loss.pixel_scale = 255.0;
    let err = Trainer::resume(other).err().unwrap().to_string();
    assert!(err.contains("loss.pixel_scale: 1.0 in the checkpoint, 255.0 now"), "{err}");
    assert!(out.join("checkpoint.safetensors").is_file());
}

#[test]
fn the_jnd_image_loss_trains_and_is_refused_where_it_cannot_run() {
    let data = tiny_data("jnd");
    let mut cfg = config(&data, &temp_dir("jnd-out"), "");
    cfg.loss.image_loss = ImageDistance::Jnd;
    cfg.loss.lambda_feat = 0.0;
    cfg.loss.lambda_adv = 0.0;
    cfg.loss.lambda_img = 1.0;
    assert_eq!(cfg.method(), "image loss (ε = JND)");
    let mut t = Trainer::new(cfg.clone()).unwrap();
    // The first step's term is the ε-insensitive ΔE00 of the initial reconstructions.
    let x = stack_folder(&data);
    let per_image = deepsim_metrics::jnd_insensitive_loss(&t.reconstruct(&x).unwrap(), &x, None)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let expected = per_image.iter().map(|v| f64::from(*v)).sum::<f64>() / 4.0;
    let first = t.step().unwrap().terms["img"];
    assert!((first - expected).abs() < 1e-4 * expected, "{first} vs {expected}");
    let mut last = first;
    for _ in 0..5 {
        last = t.step().unwrap().terms["img"];
    }
    assert!(last < first, "{first} → {last}");
    let mut scaled = cfg.clone();
    scaled.loss.pixel_scale = 255.0;
    let err = scaled.validate().unwrap_err().to_string();
    assert!(err.contains("loss.pixel_scale") && err.contains("ΔE"), "{err}");
    let mut gpu = cfg;
    gpu.run.device = "cuda".into();
    let err = gpu.validate().unwrap_err().to_string();
    assert!(err.contains("loss.image_loss") && err.contains("CPU"), "{err}");
}
