//! `deepsim train`: a training run from a TOML configuration, with a progress bar and Ctrl-C
//! handling.

use std::path::PathBuf;

use anyhow::{bail, Result};
use deepsim_train::{TrainConfig, Trainer};

use crate::args::RunDeviceArg;
use crate::progress::run_with_bar;

/// Trains a generator from a TOML configuration (see configs/): checkpoints, metrics.jsonl,
/// sample grids and loss curves in the run's `out` directory. Ctrl-C checkpoints and stops.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The configuration file.
    config: PathBuf,
    /// Continue the run in the configuration's `out` directory from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Override `run.steps`.
    #[arg(long)]
    steps: Option<u64>,
    /// Override `run.seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Override `run.out`.
    #[arg(long)]
    out: Option<PathBuf>,
    // Overrides `run.device`.
    #[command(flatten)]
    device: RunDeviceArg,
}

impl TrainArgs {
    /// The command that continues this run: the configuration with the overrides it was
    /// started with (the output directory above all, where the checkpoint is).
    fn resume_command(&self) -> String {
        let mut cmd = format!("deepsim train {} --resume", self.config.display());
        if let Some(s) = self.steps {
            cmd += &format!(" --steps {s}");
        }
        if let Some(s) = self.seed {
            cmd += &format!(" --seed {s}");
        }
        if let Some(o) = &self.out {
            cmd += &format!(" --out {}", o.display());
        }
        if let Some(d) = self.device.name() {
            cmd += &format!(" --device {d}");
        }
        cmd
    }

    pub fn run(self) -> Result<()> {
        let mut cfg = TrainConfig::from_file(&self.config)?;
        if let Some(s) = self.steps {
            cfg.run.steps = s;
        }
        if let Some(s) = self.seed {
            cfg.run.seed = s;
        }
        if let Some(o) = &self.out {
            cfg.run.out = o.clone();
        }
        if let Some(d) = self.device.name() {
            cfg.run.device = d.to_owned();
        }
        cfg.validate()?;
        let mut trainer = if self.resume { Trainer::resume(cfg)? } else { Trainer::new(cfg)? };
        let out = trainer.config().run.out.clone();
        if !run_with_bar(&mut trainer, "train")? {
            bail!(
                "interrupted at step {} of {}; the checkpoint is in {} (continue with `{}`)",
                trainer.step_count(),
                trainer.config().run.steps,
                out.display(),
                self.resume_command()
            );
        }
        println!(
            "{}: {} steps; metrics.jsonl, samples/, curves.png, checkpoint.safetensors",
            out.display(),
            trainer.step_count()
        );
        Ok(())
    }
}
