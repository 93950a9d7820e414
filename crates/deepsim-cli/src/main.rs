//! `deepsim`: features, perceptual distances and ImageNet classes of images, from the
//! comparators of `deepsim-comparators` with weights converted by `cargo xtask convert-weights`;
//! training and evaluating DeePSiM inverters. Each command is a module of `commands`.

mod args;
mod checkpoint;
mod commands;
mod images;
mod output;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    ablation, augment, bench, classify, colormap, compare, compare_audio, data_check, demo, eval,
    features, interpolate, invert, invert_optim, neighbours, probe, quantize, reencode, restore,
    sample, train, weights,
};

/// Deep perceptual similarity: features, distances and classes of images.
#[derive(Parser)]
#[command(name = "deepsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Features(features::FeaturesArgs),
    Compare(compare::CompareArgs),
    CompareAudio(compare_audio::CompareAudioArgs),
    Classify(classify::ClassifyArgs),
    Weights(weights::WeightsArgs),
    Train(train::TrainArgs),
    Invert(invert::InvertArgs),
    Interpolate(interpolate::InterpolateArgs),
    Sample(sample::SampleArgs),
    Demo(demo::DemoArgs),
    Eval(eval::EvalArgs),
    InvertOptim(invert_optim::InvertOptimArgs),
    Reencode(reencode::ReencodeArgs),
    Neighbours(neighbours::NeighboursArgs),
    Ablation(ablation::AblationArgs),
    Bench(bench::BenchArgs),
    DataCheck(data_check::DataCheckArgs),
    Quantize(quantize::QuantizeArgs),
    Colormap(colormap::ColormapArgs),
    Augment(augment::AugmentArgs),
    Probe(probe::ProbeArgs),
    Restore(restore::RestoreArgs),
    RestoreEval(restore::RestoreEvalArgs),
}

/// Restores SIGPIPE's default action, which Rust's runtime sets to "ignore": a reader that
/// stops early (`deepsim colormap --check map.csv | head -1`) then ends the process quietly,
/// as it ends any Unix filter, instead of the next `println!` panicking on a broken pipe.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid
    // action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    // Training steps reallocate the same large buffers: keep freed memory for reuse.
    deepsim_train::retain_freed_memory();
    // candle's elementwise ops on the calling thread: rayon's pool has the cores.
    deepsim_train::one_compute_pool();
    // clap exits with 2 on bad arguments; a command that fails prints its error and exits 1.
    let result = match Cli::parse().command {
        Command::Features(args) => args.run(),
        Command::Compare(args) => args.run(),
        Command::CompareAudio(args) => args.run(),
        Command::Classify(args) => args.run(),
        Command::Weights(args) => args.run(),
        Command::Train(args) => args.run(),
        Command::Invert(args) => args.run(),
        Command::Interpolate(args) => args.run(),
        Command::Sample(args) => args.run(),
        Command::Demo(args) => args.run(),
        Command::Eval(args) => args.run(),
        Command::InvertOptim(args) => args.run(),
        Command::Reencode(args) => args.run(),
        Command::Neighbours(args) => args.run(),
        Command::Ablation(args) => args.run(),
        Command::Bench(args) => args.run(),
        Command::DataCheck(args) => args.run(),
        Command::Quantize(args) => args.run(),
        Command::Colormap(args) => args.run(),
        Command::Augment(args) => args.run(),
        Command::Probe(args) => args.run(),
        Command::Restore(args) => args.run(),
        Command::RestoreEval(args) => args.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
