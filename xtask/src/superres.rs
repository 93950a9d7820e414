//! `cargo xtask experiment superres`: ×4 super-resolution on a CPU with the image loss, the
//! DeePSiM loss, and the DeePSiM loss with the perceptual cycle term (`configs/superres/`),
//! each from the same restorer, data, steps and seed; then `deepsim restore-eval` on the
//! held-out photo tiles (`data/photos/val`, 144×144): PSNR, SSIM and ST-LPIPS-alex against
//! bicubic enlargement, with a grid; and, where `cargo xtask fetch-data` has run, on its
//! held-out tiles of photos no run trained on (`docs/results/superres/fetched/`). Writes
//! `docs/results/superres/` (table.md, table.json, grid.png, runs.md with the machine, the
//! commands and the training times).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::experiment::{config_steps, deepsim, logged_steps, machine, Result};

/// Options of `experiment superres`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Override every run's steps (a quick check; runs.md records it).
    #[arg(long)]
    steps: Option<u64>,
    /// Keep a run whose metrics.jsonl already reaches its steps instead of training it again.
    #[arg(long)]
    reuse: bool,
    /// Held-out photos to judge on.
    #[arg(long, default_value = "data/photos/val")]
    data: PathBuf,
    /// Use this deepsim binary instead of building target/release/deepsim.
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// The runs, in the table's order: configuration stems under `configs/superres/`.
const RUNS: [&str; 3] = ["x4-image-loss", "x4-deepsim", "x4-deepsim-cycle"];

const OUT: &str = "runs/superres";
const REPORT: &str = "docs/results/superres";

/// Runs the experiment.
pub fn run(o: Options) -> Result<()> {
    let started = Instant::now();
    let bin = match &o.bin {
        Some(b) => b.clone(),
        None => crate::build_deepsim(None)?,
    };
    let mut log = format!(
        "# ×4 super-resolution runs\n\nWritten by `cargo xtask experiment superres{}` on {}.\n\n\
         | run | steps | training time |\n|---|---|---|\n",
        flags(&o),
        machine()
    );
    let mut checkpoints = Vec::new();
    for stem in RUNS {
        let config = format!("configs/superres/{stem}.toml");
        let steps = match o.steps {
            Some(n) => n,
            None => config_steps(&config)?,
        };
        let out = format!("{OUT}/{stem}");
        let checkpoint = format!("{out}/checkpoint.safetensors");
        let done = logged_steps(&out).0 >= steps && Path::new(&checkpoint).is_file();
        if !(o.reuse && done) {
            if Path::new(&out).exists() {
                std::fs::remove_dir_all(&out)?;
            }
            let n = steps.to_string();
            deepsim(&bin, &["train", &config, "--steps", &n, "--out", &out])?;
        }
        let (logged, seconds) = logged_steps(&out);
        log.push_str(&format!("| `{config}` | {logged} | {:.1} min |\n", seconds / 60.0));
        checkpoints.push(checkpoint);
    }
    let mut sets = vec![(o.data.display().to_string(), REPORT.to_owned())];
    // The tiles `cargo xtask fetch-data` holds out, less those of photos the runs trained on.
    if Path::new(FETCHED).is_dir() {
        sets.push((held_out_tiles()?, format!("{REPORT}/fetched")));
    }
    for (data, report) in &sets {
        let mut args = vec!["restore-eval"];
        for c in &checkpoints {
            args.extend(["--checkpoint", c.as_str()]);
        }
        args.extend(["--data", data, "--out", report]);
        let table = deepsim(&bin, &args)?;
        print!("{table}");
        log.push_str(&format!("\nThen `deepsim {}`.\n", args.join(" ")));
    }
    log.push_str(&format!("\nTotal: {:.1} minutes.\n", started.elapsed().as_secs_f64() / 60.0));
    deepsim_data::write_atomic(&Path::new(REPORT).join("runs.md"), log.as_bytes())?;
    println!("→ {REPORT}/ (table.md, table.json, grid.png, runs.md)");
    Ok(())
}

/// `fetch-data`'s held-out tiles (named `<source>_<photo>_<ext>_s…`).
const FETCHED: &str = "target/data/tiles/val";

/// A folder of links to the tiles of [`FETCHED`] whose photo none of the training tiles
/// (`data/photos/train`, named `<photo>_s…`) comes from; its path.
fn held_out_tiles() -> Result<String> {
    let stem = |name: &str| name.split("_s").next().unwrap_or(name).to_owned();
    let trained: Vec<String> = std::fs::read_dir("data/photos/train")?
        .filter_map(|e| e.ok())
        .map(|e| stem(&e.file_name().to_string_lossy()))
        .collect();
    let dir = format!("{OUT}/held-out-tiles");
    if Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut kept = 0;
    for entry in std::fs::read_dir(FETCHED)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `skimage_coins_png_s…` comes from the photo `coins` (the training photos' names
        // have no underscore).
        let photo = name.split('_').nth(1).unwrap_or(&name);
        if trained.iter().any(|t| t == photo) {
            continue;
        }
        std::fs::copy(entry.path(), Path::new(&dir).join(&name))?;
        kept += 1;
    }
    eprintln!("{kept} tiles of {FETCHED} from photos no run trained on → {dir}");
    Ok(dir)
}

/// The options as typed, for the report.
fn flags(o: &Options) -> String {
    let mut s = String::new();
    if let Some(n) = o.steps {
        s.push_str(&format!(" --steps {n}"));
    }
    if o.data != Path::new("data/photos/val") {
        s.push_str(&format!(" --data {}", o.data.display()));
    }
    if o.reuse {
        s.push_str(" --reuse");
    }
    s
}
