//! `deepsim train` and `deepsim demo`: training runs with a progress bar, Ctrl-C handling,
//! and the demo's side-by-side comparison of the image loss and the DeePSiM loss.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle::Tensor;
use deepsim_comparators::weights::{cached_path, Arch};
use deepsim_data::{stack, Dataset, FolderConfig, ImageFolder, Rng, Transform, Validation};
use deepsim_train::{edge_ratio, normalized_error, write_grid, StepLog, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

/// Raised by Ctrl-C: the trainer checkpoints and stops after the current step.
fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // A second Ctrl-C while stopping ends the process at once.
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step (Ctrl-C again to quit at once)…");
        });
        flag
    })
    .clone()
}

fn terms_message(log: &StepLog) -> String {
    log.terms.iter().map(|(k, v)| format!("{k} {v:.3e}")).collect::<Vec<_>>().join("  ")
}

/// Runs `trainer` to its configured steps with a progress bar; returns whether it finished.
fn run_with_bar(trainer: &mut Trainer, label: &str) -> Result<bool> {
    let total = trainer.config().run.steps;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {bar:24} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar.set_position(trainer.step_count());
    let stop = stop_flag();
    let result = trainer.run(&stop, &mut |log| {
        bar.set_position(log.step);
        bar.set_message(terms_message(log));
    });
    bar.finish();
    result?;
    let finished = trainer.step_count() >= total;
    if !finished {
        eprintln!(
            "stopped at step {}; checkpoint in {} (continue with --resume)",
            trainer.step_count(),
            trainer.config().run.out.display()
        );
    }
    Ok(finished)
}

/// `deepsim train CONFIG`.
pub fn train(
    config: &Path,
    resume: bool,
    steps: Option<u64>,
    device: Option<String>,
) -> Result<()> {
    let mut cfg = TrainConfig::from_file(config)?;
    if let Some(s) = steps {
        cfg.run.steps = s;
    }
    if let Some(d) = device {
        cfg.run.device = d;
    }
    cfg.validate()?;
    let mut trainer = if resume { Trainer::resume(cfg)? } else { Trainer::new(cfg)? };
    let out = trainer.config().run.out.clone();
    run_with_bar(&mut trainer, "train")?;
    println!(
        "{}: {} steps; metrics.jsonl, samples/, curves.png, checkpoint.safetensors",
        out.display(),
        trainer.step_count()
    );
    Ok(())
}

fn demo_data() -> PathBuf {
    let here = PathBuf::from("data/demo");
    if here.join("train").is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo")
}

/// All validation images at the demo's crop, as one batch.
fn validation(cfg: &TrainConfig) -> Result<Tensor> {
    let mut fc = FolderConfig::new(Transform::eval(cfg.data.resize, cfg.data.crop));
    fc.validation = Validation::Full;
    let set = ImageFolder::open(&cfg.data.val, fc)?;
    let all: Vec<usize> = (0..set.len()).collect();
    Ok(stack(&set, &all, |_| Rng::new(0))?.images)
}

/// `deepsim demo`: the image-loss inverter and the DeePSiM inverter, trained on the shipped
/// demo set, compared on its validation images.
pub fn demo(
    out: &Path,
    steps: Option<u64>,
    baseline: Option<&Path>,
    deepsim: Option<&Path>,
) -> Result<()> {
    let data = demo_data();
    let pretrained = cached_path(Arch::Alexnet).is_file();
    let network = if pretrained { "alexnet" } else { "alexnet-random" };
    let load = |text: &str, name: &str| -> Result<TrainConfig> {
        let mut cfg = TrainConfig::from_toml(text).with_context(|| format!("configs/{name}"))?;
        cfg.data.train = data.join("train");
        cfg.data.val = data.join("val");
        cfg.run.out = out.join(name.trim_start_matches("demo-").trim_end_matches(".toml"));
        if let Some(enc) = cfg.encoder.as_mut() {
            enc.network = network.into();
        }
        if cfg.loss.comparator.is_some() {
            cfg.loss.comparator = Some(network.into());
        }
        if let Some(s) = steps {
            cfg.run.steps = s;
            cfg.run.checkpoint_every = cfg.run.checkpoint_every.min(s);
            cfg.run.sample_every = cfg.run.sample_every.min(s);
        }
        cfg.validate()?;
        Ok(cfg)
    };
    let text = |path: Option<&Path>, shipped: &str| -> Result<String> {
        match path {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            }
            None => Ok(shipped.to_string()),
        }
    };
    let configs = [
        load(
            &text(baseline, include_str!("../../../configs/demo-image-loss.toml"))?,
            "demo-image-loss.toml",
        )?,
        load(
            &text(deepsim, include_str!("../../../configs/demo-deepsim.toml"))?,
            "demo-deepsim.toml",
        )?,
    ];
    let taps: Vec<String> = configs
        .iter()
        .map(|c| c.encoder.as_ref().map(|e| e.tap.clone()).unwrap_or_default())
        .collect();
    if taps[0] != taps[1] || taps[0].is_empty() {
        anyhow::bail!(
            "the demo compares two inverters of one tap: encoder.tap is {:?} and {:?}",
            taps[0],
            taps[1]
        );
    }
    let tap = taps[0].clone();
    println!(
        "deepsim demo: inverting {tap} of {} on {} (train 362 / val 46 tiles, 64×64 crops)",
        if pretrained {
            "AlexNet with its ImageNet weights (found in the weights cache)"
        } else {
            "AlexNet with random weights (no converted AlexNet weights in the cache)"
        },
        data.display()
    );
    let mut trainers = Vec::new();
    let mut seconds = Vec::new();
    for cfg in configs {
        // The demo starts afresh: its own run directories only.
        if cfg.run.out.exists() {
            std::fs::remove_dir_all(&cfg.run.out)
                .with_context(|| format!("clearing {}", cfg.run.out.display()))?;
        }
        let label =
            cfg.run.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut trainer = Trainer::new(cfg)?;
        let start = Instant::now();
        if !run_with_bar(&mut trainer, &format!("{label:>10}"))? {
            anyhow::bail!("stopped before the end; the demo's report needs both runs");
        }
        seconds.push(start.elapsed().as_secs_f64());
        trainers.push(trainer);
    }
    let val = validation(trainers[0].config())?;
    let recon: Vec<Tensor> =
        trainers.iter().map(|t| t.reconstruct(&val)).collect::<Result<_, _>>()?;
    let shown = val.dim(0)?.min(12);
    let grid = out.join("grid.png");
    write_grid(
        &grid,
        &[
            &val.narrow(0, 0, shown)?,
            &recon[0].narrow(0, 0, shown)?,
            &recon[1].narrow(0, 0, shown)?,
        ],
    )?;
    let feats = trainers[1].encode(&val)?;
    let mut rows = Vec::new();
    for (trainer, (r, secs)) in trainers.iter().zip(recon.iter().zip(&seconds)) {
        let img = normalized_error(r, &val)?;
        let feat = normalized_error(&trainers[1].encode(r)?, &feats)?;
        let edges = edge_ratio(r, &val)?;
        rows.push((
            trainer.config().run.out.clone(),
            img,
            feat,
            edges,
            *secs,
            trainer.step_count(),
        ));
    }
    let mut report = format!(
        "# deepsim demo\n\nInverting {tap} of `{network}` (y = E(x), x̂ = G(y)) at 64×64 on the shipped demo set \
         (`data/demo`: {} training tiles, {} validation tiles).\n\n`grid.png`, top to bottom: validation images, \
         the image-loss inverter's reconstructions, the DeePSiM inverter's.\n\nNormalized error on all {} validation \
         images (the paper's Table 2 measure: mean ‖x̂ − x‖ over the mean distance between two different images; \
         100 % = as good as a random other image), and the edge ratio (mean absolute difference of \
         neighbouring pixels, reconstructions over originals: below 1 is blurrier than the originals):\n\n\
         | run | image space | feature space ({tap}) | edge ratio | steps | time |\n|---|---|---|---|---|---|\n",
        362,
        val.dim(0)?,
        val.dim(0)?
    );
    for (dir, img, feat, edges, secs, steps) in &rows {
        report.push_str(&format!(
            "| `{}` | {:.1} % | {:.1} % | {edges:.2} | {steps} | {:.0} s |\n",
            dir.display(),
            img * 100.0,
            feat * 100.0,
            secs
        ));
    }
    report.push_str(
        "\nEach run's loss curves: `curves.png`; every term of every step: `metrics.jsonl`.\n",
    );
    deepsim_data::write_atomic(&out.join("report.md"), report.as_bytes())?;
    println!("\n{report}\n→ {} and {}", grid.display(), out.join("report.md").display());
    Ok(())
}
