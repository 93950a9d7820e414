//! `deepsim demo`: an image-loss inverter and a DeePSiM inverter of a trained network, trained
//! from one shared image-loss warm-up on the shipped photographs and compared on photographs
//! no run saw.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use deepsim_data::{stack, Dataset, FolderConfig, ImageFolder, Rng, Transform, Validation};
use deepsim_train::{
    edge_ratio, normalized_error, write_labelled_grid, PerceptualDistance, TrainConfig, Trainer,
};

use crate::progress::run_with_bar;

/// Trains an image-loss inverter and a DeePSiM inverter of a trained network
/// (EfficientNet-Lite0, shipped) on the shipped photographs, both from one image-loss
/// warm-up (about 6 minutes on 2 CPU cores), and writes a labelled comparison grid and a
/// report measured on two photographs no run saw.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Override the number of steps of each compared run.
    #[arg(long)]
    steps: Option<u64>,
    /// Steps of the image-loss warm-up that both compared runs start from (0: both start
    /// from the seed's initialization).
    #[arg(long, default_value_t = 400)]
    warmup: u64,
    /// Use this configuration for the image-loss run instead of configs/demo-image-loss.toml
    /// (its data, encoder and out are the demo's).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Use this configuration for the DeePSiM run instead of configs/demo-deepsim.toml.
    #[arg(long)]
    deepsim: Option<PathBuf>,
}

impl DemoArgs {
    pub fn run(self) -> Result<()> {
        demo(&self.out, self.steps, self.warmup, self.baseline.as_deref(), self.deepsim.as_deref())
    }
}

/// The demo's photographs (`data/photos`): from the working directory, else beside the
/// sources this binary was built from.
fn demo_data() -> PathBuf {
    let here = PathBuf::from("data/photos");
    if here.join("train").is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/photos")
}

/// All validation images at a run's crop, as one batch.
fn validation(cfg: &TrainConfig) -> Result<Tensor> {
    let mut fc = FolderConfig::new(Transform::eval(cfg.data.resize, cfg.data.crop));
    fc.validation = Validation::Full;
    let set = ImageFolder::open(&cfg.data.val, fc)?;
    let all: Vec<usize> = (0..set.len()).collect();
    Ok(stack(&set, &all, |_| Rng::new(0))?.images)
}

/// One run's line of the demo's report.
struct DemoRow {
    method: String,
    image_error: f64,
    feature_error: f64,
    perceptual: f64,
    edge_ratio: f64,
    steps: u64,
    seconds: f64,
}

/// Trains `cfg` from scratch in its `run.out` (cleared first) with a progress bar; returns
/// the trainer and the seconds it took.
fn train_fresh(cfg: TrainConfig) -> Result<(Trainer, f64)> {
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
        bail!("stopped before the end; the demo's report needs every run");
    }
    Ok((trainer, start.elapsed().as_secs_f64()))
}

/// `deepsim demo`: the image-loss inverter and the DeePSiM inverter of a trained encoder,
/// trained on the shipped photographs from one shared image-loss warm-up, compared on tiles
/// of two photographs no run saw.
fn demo(
    out: &Path,
    steps: Option<u64>,
    warmup: u64,
    baseline: Option<&Path>,
    deepsim: Option<&Path>,
) -> Result<()> {
    let data = demo_data();
    let load = |text: &str, name: &str| -> Result<TrainConfig> {
        let mut cfg = TrainConfig::from_toml(text).with_context(|| format!("configs/{name}"))?;
        cfg.data.train = data.join("train");
        cfg.data.val = data.join("val");
        cfg.run.out = out.join(name.trim_start_matches("demo-").trim_end_matches(".toml"));
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
    let mut configs = [
        load(
            &text(baseline, include_str!("../../../../configs/demo-image-loss.toml"))?,
            "demo-image-loss.toml",
        )?,
        load(
            &text(deepsim, include_str!("../../../../configs/demo-deepsim.toml"))?,
            "demo-deepsim.toml",
        )?,
    ];
    let inverted = |c: &TrainConfig| {
        c.encoder.as_ref().map(|e| (e.network.clone(), e.tap.clone())).unwrap_or_default()
    };
    let (base, deep) = (&configs[0], &configs[1]);
    if inverted(base) != inverted(deep)
        || inverted(base).1.is_empty()
        || base.data != deep.data
        || base.generator != deep.generator
    {
        bail!(
            "the demo compares two inverters of one layer with one generator on one data set: \
             the configurations invert {:?} and {:?} with generators {:?} and {:?}",
            inverted(base),
            inverted(deep),
            base.generator,
            deep.generator
        );
    }
    if base.loss.lambda_feat != 0.0 || base.loss.lambda_adv != 0.0 {
        bail!(
            "the demo's baseline (and its warm-up) trains with the image loss alone: its \
             lambda_feat and lambda_adv must be 0"
        );
    }
    let (network, tap) = inverted(base);
    let side = base.data.crop;
    let train_set = ImageFolder::open(
        &base.data.train,
        FolderConfig::new(Transform::train(base.data.resize, side)),
    )?;
    let val = validation(base)?;
    println!(
        "deepsim demo: inverting {tap} of {network} (trained weights) at {side}×{side}: \
         {} training tiles, {} validation tiles of photos kept out of training ({})",
        train_set.len(),
        val.dim(0)?,
        data.display()
    );
    drop(train_set);
    // The shared warm-up: the image-loss run for `warmup` steps; both compared runs start from
    // its generator.
    let mut warmup_seconds = 0.0;
    if warmup > 0 {
        let mut cfg = configs[0].clone();
        cfg.run.out = out.join("warmup");
        cfg.run.steps = warmup;
        cfg.run.checkpoint_every = warmup;
        cfg.run.sample_every = warmup;
        let (_, secs) = train_fresh(cfg.clone())?;
        warmup_seconds = secs;
        for c in &mut configs {
            c.run.init = Some(cfg.run.out.join("checkpoint.safetensors"));
        }
    }
    let mut trainers = Vec::new();
    let mut seconds = Vec::new();
    for cfg in configs {
        let (trainer, secs) = train_fresh(cfg)?;
        seconds.push(secs);
        trainers.push(trainer);
    }
    let recon: Vec<Tensor> =
        trainers.iter().map(|t| t.reconstruct(&val)).collect::<Result<_, _>>()?;
    let shown = val.dim(0)?.min(DEMO_SHOWN.len());
    let pick = Tensor::new(&DEMO_SHOWN[..shown], &Device::Cpu)?;
    let grid = out.join("grid.png");
    write_labelled_grid(
        &grid,
        &[
            ("original", &val.index_select(&pick, 0)?),
            ("image loss", &recon[0].index_select(&pick, 0)?),
            ("deepsim", &recon[1].index_select(&pick, 0)?),
        ],
    )?;
    let perceptual = PerceptualDistance::new(None, &Device::Cpu)?;
    let feats = trainers[1].encode(&val)?;
    let mut rows = Vec::new();
    for (trainer, (r, secs)) in trainers.iter().zip(recon.iter().zip(&seconds)) {
        rows.push(DemoRow {
            method: trainer.config().method(),
            image_error: normalized_error(r, &val)?,
            feature_error: normalized_error(&trainers[1].encode(r)?, &feats)?,
            perceptual: perceptual.mean(r, &val)?,
            edge_ratio: edge_ratio(r, &val)?,
            steps: trainer.step_count(),
            seconds: *secs,
        });
    }
    let report = demo_report(&rows, &network, &tap, side, val.dim(0)?, (warmup, warmup_seconds));
    deepsim_data::write_atomic(&out.join("report.md"), report.as_bytes())?;
    println!("\n{report}\n→ {} and {}", grid.display(), out.join("report.md").display());
    Ok(())
}

/// The validation tiles `grid.png` shows (indices into `data/photos/val` sorted by name):
/// the cat's face, fur and whiskers and the cup's rim, foam and saucer at both scales.
const DEMO_SHOWN: [u32; 10] = [1, 4, 7, 9, 12, 15, 16, 19, 22, 25];

/// The demo's `report.md`.
fn demo_report(
    rows: &[DemoRow],
    network: &str,
    tap: &str,
    side: u32,
    n_val: usize,
    (warmup, warmup_seconds): (u64, f64),
) -> String {
    let mut report = format!(
        "# deepsim demo\n\nInverting `{tap}` of `{network}` (y = E(x), x̂ = G(y)) at \
         {side}×{side}, trained on tiles of twelve photographs (`data/photos/train`) and \
         evaluated on {n_val} tiles of two photographs that no training tile comes from (the \
         cat and the espresso, `data/photos/val`).{}\n\n`grid.png`, top to bottom: \
         originals, the image-loss inverter's reconstructions, the DeePSiM inverter's.\n\n\
         Normalized error (the paper's Table 2 measure: mean ‖x̂ − x‖ over the mean distance \
         between two different images; 100 % = as good as a random other image) in image \
         space and in the encoder's feature space; {} to the originals (a network trained on \
         human judgments that neither run trains against; lower is closer); edge ratio (mean \
         absolute difference of neighbouring pixels, reconstructions over originals: below 1 \
         is blurrier than the originals):\n\n\
         | run | image space | feature space ({tap}) | {} | edge ratio | steps | time |\n\
         |---|---|---|---|---|---|---|\n",
        if warmup > 0 {
            format!(
                " Both runs start from one generator trained with the image loss for {warmup} \
                 steps (`warmup/`, {warmup_seconds:.0} s); the steps below come after it, so \
                 the two differ only in the loss of their last steps."
            )
        } else {
            String::new()
        },
        PerceptualDistance::NAME,
        PerceptualDistance::NAME,
    );
    for r in rows {
        report.push_str(&format!(
            "| {} | {:.1} % | {:.1} % | {:.3} | {:.2} | {} | {:.0} s |\n",
            r.method,
            r.image_error * 100.0,
            r.feature_error * 100.0,
            r.perceptual,
            r.edge_ratio,
            r.steps,
            r.seconds
        ));
    }
    if let [base, deepsim] = rows {
        report.push_str(&format!(
            "\n{} of the DeePSiM reconstructions: {:+.1} % against the image loss's.\n",
            PerceptualDistance::NAME,
            (deepsim.perceptual / base.perceptual - 1.0) * 100.0
        ));
    }
    let total = warmup_seconds + rows.iter().map(|r| r.seconds).sum::<f64>();
    report.push_str(&format!(
        "\nTraining time, warm-up and both runs: {total:.0} s. Each run's loss curves: \
         `curves.png`; every term of every step: `metrics.jsonl`.\n"
    ));
    report
}
