//! deepsim's developer tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! Tasks:
//! - `bench-gpu`: the kernel, comparator and training-step benchmarks on the GPU (the CPU set
//!   where there is none), with memory, as JSON and markdown.
//! - `bench-vs-torch`: runs one deepsim criterion benchmark and its PyTorch twin from
//!   `../shared/bench/bench_torch.py` alternately, several rounds, and prints both medians.
//! - `convert-weights`: converts a published weights file into deepsim's safetensors layout.
//! - `fetch-data`: builds a larger local image set and Fashion-MNIST from Debian packages.
//! - `experiment table2`: trains and evaluates the paper's Table 2 at CPU scale and writes
//!   `docs/RESULTS.md`.

mod bench_gpu;
mod bench_vs_torch;
mod convert_weights;
mod experiment;
mod fetch_data;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task> [options]

tasks:
  bench-gpu        kernel, comparator and train-step benchmarks on the GPU (CPU without one)
                   with ms, images/s and peak memory (cargo xtask bench-gpu --help)
  bench-vs-torch   alternate a deepsim benchmark and its PyTorch twin; print medians
                   (cargo xtask bench-vs-torch --help for options)
  convert-weights  convert published weights (PyTorch, Caffe, safetensors, Hub) into
                   deepsim's layout and cache (cargo xtask convert-weights --help)
  fetch-data       build target/data (photos, Fashion-MNIST) from Debian packages
                   (cargo xtask fetch-data --help)
  experiment       train and evaluate the paper's Table 2 at CPU scale, write
                   docs/RESULTS.md (cargo xtask experiment table2 --help)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench-gpu") => bench_gpu::run(&args[1..]),
        Some("bench-vs-torch") => bench_vs_torch::run(&args[1..]),
        Some("convert-weights") => convert_weights::run(&args[1..]),
        Some("fetch-data") => fetch_data::run(&args[1..]),
        Some("experiment") => experiment::run(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}").into()),
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
