//! deepsim's developer tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! Tasks:
//! - `bench-gpu`: the kernel, comparator and training-step benchmarks on the GPU (the CPU set
//!   where there is none), with memory, as JSON and markdown.
//! - `bench-vs-torch`: runs one deepsim criterion benchmark and its PyTorch twin from
//!   `bench/torch/bench_torch.py` alternately, several rounds, and prints both medians.
//! - `convert-weights`: converts a published weights file into deepsim's safetensors layout.
//! - `gpu-pack`: the `deepsim` binary and the device tests built with `--features cuda`,
//!   stripped and packed under 64 MiB for the GPU machine (`scripts/gpu-run.sh` runs it there).
//! - `fetch-data`: builds a larger local image set and Fashion-MNIST from Debian packages.
//! - `experiment table2`: trains and evaluates the paper's Table 2 at CPU scale and writes
//!   `docs/RESULTS.md`.
//! - `experiment latent-probe`: image-loss and DeePSiM VAEs on Fashion-MNIST, a linear probe on
//!   their codes, written as a section of `docs/RESULTS.md`.
//! - `experiment superres`: ×4 super-resolution with the image loss, DeePSiM and DeePSiM with
//!   the cycle term, judged on held-out photos (`docs/results/superres/`).
//! - `tidy`: the repository's rules that no compiler checks (also run by its test).

mod bench_gpu;
mod bench_vs_torch;
mod convert_weights;
mod experiment;
mod fetch_data;
mod gpu_pack;
mod latent_probe;
mod superres;
mod tidy;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

/// deepsim's developer tasks.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Kernel, comparator and train-step benchmarks on the GPU (CPU without one) with ms,
    /// images/s and peak memory.
    BenchGpu(bench_gpu::Args),
    /// Alternate a deepsim benchmark and its PyTorch twin; print medians.
    BenchVsTorch(bench_vs_torch::Args),
    /// Convert published weights (PyTorch, Caffe, safetensors, Hub) into deepsim's layout and
    /// cache.
    ConvertWeights(convert_weights::Args),
    /// Build target/data (photos, tiles, Fashion-MNIST) from Debian packages.
    FetchData(fetch_data::Args),
    /// Build deepsim and the device tests with --features cuda (no GPU needed) and pack them
    /// under 64 MiB for the GPU machine.
    GpuPack(gpu_pack::Args),
    /// The paper's Table 2 at CPU scale, and the latent-code probe; write docs/RESULTS.md.
    #[command(subcommand)]
    Experiment(experiment::Experiment),
    /// Check the rules no compiler checks: crate edges against docs/ARCHITECTURE.md, a `//!`
    /// line on every Rust file, no should_panic or ignore, anyhow only in binaries.
    Tidy,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::BenchGpu(a) => bench_gpu::run(a),
        Task::BenchVsTorch(a) => bench_vs_torch::run(a),
        Task::ConvertWeights(a) => convert_weights::run(a),
        Task::FetchData(a) => fetch_data::run(a),
        Task::GpuPack(a) => gpu_pack::run(a),
        Task::Experiment(e) => experiment::run(e),
        Task::Tidy => tidy::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the `deepsim` binary in release mode, with the cargo `feature` if any (into its
/// own target folder `target/<feature>`, so the CPU build is not rebuilt), and returns its
/// path.
fn build_deepsim(feature: Option<&str>) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "-p", "deepsim-cli"]);
    let target = match feature {
        Some(f) => {
            cmd.args(["--features", f, "--target-dir", &format!("target/{f}")]);
            PathBuf::from(format!("target/{f}"))
        }
        None => PathBuf::from("target"),
    };
    eprintln!("$ {cmd:?}");
    if !cmd.status()?.success() {
        return Err(format!("building deepsim ({}) failed", feature.unwrap_or("cpu")).into());
    }
    Ok(target.join("release").join("deepsim"))
}
