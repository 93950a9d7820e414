//! `deepsim`: features, perceptual distances and ImageNet classes of images, from the
//! comparators of `deepsim-comparators` with weights converted by `cargo xtask convert-weights`.

mod bench;
mod evaluate;
mod generate;
mod images;
mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use clap::{Parser, Subcommand, ValueEnum};
use deepsim_comparators::weights::{self, write_safetensors_atomic, Arch, RawTensor, TensorSet};
use deepsim_comparators::{
    by_name, imagenet_classes, EfficientNetLite, EfficientNetVariant, Lpips, ShiftTolerantTrunk,
    Tap, COMPARATORS,
};
use deepsim_metrics::{self as metrics, SsimConfig};
use deepsim_train::OptimInversionConfig;
use serde::Serialize;

/// Deep perceptual similarity: features, distances and classes of images.
#[derive(Parser)]
#[command(name = "deepsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Activations of a comparator at one tap for each image, written as safetensors (one
    /// tensor per image, named by its file stem).
    Features {
        /// Comparator: alexnet, caffenet, videonet, vgg16, vgg19, squeezenet1_1,
        /// efficientnet-lite0, efficientnet-lite1, efficientnet-lite2, stlpips-alex,
        /// stlpips-vgg, alexnet-random, caffenet-random.
        #[arg(long)]
        comparator: String,
        /// Converted weights (default: the weights cache, then the shipped copy).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Tap, e.g. pool5, relu5_3, block15.
        #[arg(long)]
        tap: String,
        /// Output file (.safetensors), written atomically.
        #[arg(long)]
        out: PathBuf,
        /// Images (PNG, JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// The perceptual distance between two images (one number), or between the files of two
    /// folders matched by name (one CSV line each). By default ST-LPIPS-alex, from the weights
    /// that ship with the repository.
    Compare {
        /// stlpips-alex (default), stlpips-vgg (ST-LPIPS, shift-tolerant), lpips-alex,
        /// lpips-vgg, lpips-squeeze, feature:COMPARATOR:TAP (mean squared difference at the
        /// tap); or, needing no weights: ssim, ms-ssim (a similarity: 1 for identical images),
        /// psnr (dB), delta-e76, delta-e2000 (mean CIELAB colour difference per pixel), opponent
        /// (mean squared opponent-colour difference, equal weights).
        #[arg(long, default_value = "stlpips-alex")]
        metric: String,
        /// Converted weights: the trunk (LPIPS), the whole model (ST-LPIPS) or the comparator
        /// (default: the weights cache, then the shipped copy).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Converted LPIPS heads (default: the weights cache).
        #[arg(long)]
        heads: Option<PathBuf>,
        /// Print JSON with the per-layer values and their taps ((ST-)LPIPS).
        #[arg(long)]
        json: bool,
        /// Write the spatial distance map ((ST-)LPIPS, at the input's size) as a PNG heat map,
        /// scaled to its largest value (printed on stderr); one pair only.
        #[arg(long)]
        map: Option<PathBuf>,
        /// Resize B to A's size instead of refusing different sizes.
        #[arg(long)]
        resize: bool,
        /// First image or folder.
        a: PathBuf,
        /// Second image or folder.
        b: PathBuf,
    },
    /// The spectrogram distance between two WAV files (one number): `stft` (log-magnitude L1
    /// at FFT 1024, hop 256, window 1024) or `mr-stft` (Parallel WaveGAN's multi-resolution
    /// STFT loss). Multi-channel files are averaged to mono; sample rates and lengths must match.
    CompareAudio {
        /// stft or mr-stft.
        #[arg(long)]
        metric: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// First WAV file.
        a: PathBuf,
        /// Second WAV file (the reference for spectral convergence).
        b: PathBuf,
    },
    /// The five most likely ImageNet classes of each image (EfficientNet-Lite; shorter side
    /// resized to the model's size, 224, 240 or 260, centre crop).
    Classify {
        /// The classifier (lite0 ships with the repository; lite1, lite2 need converting).
        #[arg(long, value_enum, default_value_t = Classifier::Lite0)]
        model: Classifier,
        /// Converted weights (default: the weights cache, then the shipped copy).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Class names, one per line in class order (default: the ImageNet-1k names).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Images (PNG, JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// The converted weights each architecture would load, and from where: `explicit` never
    /// (that is `--weights`), else the cache (`$DEEPSIM_HOME/weights`), else the copy that
    /// ships with the repository; for the missing ones, the command that converts them.
    Weights {
        /// Print JSON (one object per architecture).
        #[arg(long)]
        json: bool,
    },
    /// Trains a generator from a TOML configuration (see configs/): checkpoints, metrics.jsonl,
    /// sample grids and loss curves in the run's `out` directory. Ctrl-C checkpoints and stops.
    Train {
        /// The configuration file.
        config: PathBuf,
        /// Continue the run in the configuration's `out` directory from its checkpoint.
        #[arg(long)]
        resume: bool,
        /// Override `run.steps`.
        #[arg(long)]
        steps: Option<u64>,
        /// Override `run.device`: cpu, cuda, cuda:N, metal.
        #[arg(long)]
        device: Option<String>,
    },
    /// Reconstructs images from their features with a trained inverter (or a VAE from its
    /// posterior mean): `<out>/<stem>.png` for each and `<out>/grid.png`.
    Invert {
        /// A checkpoint written by `deepsim train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, cuda, cuda:N, metal (default: the run's).
        #[arg(long)]
        device: Option<String>,
        /// Images (resized and centre-cropped as the run's validation images).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Decodes codes evenly spaced between two images' features (paper Fig. 7) into one row:
    /// A, the interpolation, B.
    Interpolate {
        /// A checkpoint written by `deepsim train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Images decoded between the two ends, both included (2 to 256: one row of them).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=256))]
        steps: u16,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, cuda, cuda:N, metal (default: the run's).
        #[arg(long)]
        device: Option<String>,
        /// The first image.
        a: PathBuf,
        /// The second image.
        b: PathBuf,
    },
    /// Draws images from a trained VAE's prior: `<out>/sample_NNN.png` and `<out>/grid.png`.
    Sample {
        /// A checkpoint of a VAE run (`run.task = "vae"`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// How many (1 to 4096; one PNG each, and the grid).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=4096))]
        n: u16,
        /// Seed of the latent draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, cuda, cuda:N, metal (default: the run's).
        #[arg(long)]
        device: Option<String>,
    },
    /// Trains an image-loss inverter and a DeePSiM inverter of a trained network
    /// (EfficientNet-Lite0, shipped) on the shipped photographs, both from one image-loss
    /// warm-up (about 7 minutes on 2 CPU cores), and writes a labelled comparison grid and a
    /// report measured on two photographs no run saw.
    Demo {
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
    },
    /// The paper's Table 2: the normalized error of each inverter's reconstructions of the
    /// images in a folder, in image space and in the inverted layer's feature space (‖a − b‖
    /// over the mean distance between two different images: 100 % = as good as a random other
    /// image), as a markdown table of methods × layers; with --optim, inversion by
    /// optimization (Mahendran & Vedaldi) of each layer beside them.
    Eval {
        /// Checkpoints of inverters written by `deepsim train` (one row each).
        #[arg(long = "checkpoint", required = true)]
        checkpoints: Vec<PathBuf>,
        /// Folder of test images (resized and cropped as each run's validation images).
        #[arg(long)]
        data: PathBuf,
        /// Use only the first N images (sorted by name).
        #[arg(long)]
        limit: Option<usize>,
        /// Also invert each layer by optimization.
        #[arg(long)]
        optim: bool,
        #[command(flatten)]
        optim_cfg: OptimArgs,
        /// Write table.md and table.json into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Device: cpu, cuda, cuda:N, metal (default: each run's).
        #[arg(long)]
        device: Option<String>,
    },
    /// Reconstructs images from a network's features by gradient descent on the image with a
    /// total-variation prior (Mahendran & Vedaldi 2015, the paper's optimization baseline):
    /// `<out>/<stem>.png` and `<out>/grid.png`.
    InvertOptim {
        /// The network (as for `features`), e.g. alexnet-random, caffenet.
        #[arg(long)]
        network: String,
        /// Converted weights (default: the weights cache).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The layer to invert, e.g. conv5, fc6.
        #[arg(long)]
        tap: String,
        /// Side of the square images (centre crop).
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Resize the shorter side to this before cropping (default: --size).
        #[arg(long)]
        resize: Option<u32>,
        #[command(flatten)]
        optim_cfg: OptimArgs,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, cuda, cuda:N, metal.
        #[arg(long)]
        device: Option<String>,
        /// Images (PNG, JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Iterative re-encoding (paper Fig. 5): encode, reconstruct, encode the reconstruction,
    /// and so on; one PNG with the originals and a row after each listed iteration.
    Reencode {
        /// A checkpoint written by `deepsim train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Iterations to show, e.g. 1,2,4,8.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        iterations: Vec<usize>,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, cuda, cuda:N, metal (default: the run's).
        #[arg(long)]
        device: Option<String>,
        /// Images.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Nearest neighbours (the paper's supplementary): for each query image a row with its
    /// reconstruction, its k nearest training images in image space, then in the inverted
    /// layer's feature space.
    Neighbours {
        /// A checkpoint of an inverter.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Folder of the images to search (e.g. the training set).
        #[arg(long)]
        train: PathBuf,
        /// Neighbours per space.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, cuda, cuda:N, metal (default: the run's).
        #[arg(long)]
        device: Option<String>,
        /// Query images.
        #[arg(required = true)]
        queries: Vec<PathBuf>,
    },
    /// Loss terms side by side (paper Fig. 1): the originals, then one row of reconstructions
    /// per checkpoint (e.g. runs with λ_adv or λ_feat set to 0), each labelled with its method.
    Ablation {
        /// Checkpoints, one row each, in order.
        #[arg(long = "checkpoint", required = true)]
        checkpoints: Vec<PathBuf>,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, cuda, cuda:N, metal (default: each run's).
        #[arg(long)]
        device: Option<String>,
        /// Images.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Times the kernel, comparator and training-step benchmarks on one device: median ms per
    /// call, images per second and resident memory (`cargo xtask bench-gpu` runs it on a GPU).
    Bench {
        /// Benchmarks to run (default: all): max_pool_3x3s2_fwdbwd, lrn_fwdbwd,
        /// alexnet_conv5_loss_fwdbwd, deepsim_step_64, deepsim_step_256.
        names: Vec<String>,
        /// Device: cpu, cuda, cuda:N, metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Timed calls per benchmark, after two warm-up calls.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        /// Also write the measurements as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print the benchmark names, one per line, and run nothing.
        #[arg(long)]
        list: bool,
    },
    /// Checks an image folder as training would read it: decodes every file and prints one
    /// warning per unusable file and a summary (usable, skipped by reason, converted).
    DataCheck {
        /// The folder (searched recursively).
        dir: PathBuf,
        /// The crop side training will use: smaller images are reported.
        #[arg(long, default_value_t = 64)]
        crop: u32,
        /// Resize the shorter side to this first (then no image is too small).
        #[arg(long)]
        resize: Option<u32>,
        /// Labels from first-level sub-folders (files in the root are reported).
        #[arg(long)]
        labels: bool,
        /// Stop at the first unusable file with an error naming it.
        #[arg(long)]
        strict: bool,
    },
}

/// The settings of inversion by optimization.
#[derive(clap::Args)]
struct OptimArgs {
    /// Gradient steps of inversion by optimization.
    #[arg(long, default_value_t = OptimInversionConfig::default().steps)]
    optim_steps: usize,
    /// Its learning rate (Adam, pixels in [0, 1]).
    #[arg(long, default_value_t = OptimInversionConfig::default().lr)]
    optim_lr: f64,
    /// Weight of its total-variation prior.
    #[arg(long, default_value_t = OptimInversionConfig::default().lambda_tv)]
    lambda_tv: f64,
}

impl OptimArgs {
    fn config(&self) -> OptimInversionConfig {
        OptimInversionConfig {
            steps: self.optim_steps,
            lr: self.optim_lr,
            lambda_tv: self.lambda_tv,
            ..OptimInversionConfig::default()
        }
    }
}

/// The ImageNet classifiers `classify` offers.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Classifier {
    /// EfficientNet-Lite0 at 224×224 (ships with the repository).
    Lite0,
    /// EfficientNet-Lite1 at 240×240.
    Lite1,
    /// EfficientNet-Lite2 at 260×260.
    Lite2,
}

impl Classifier {
    fn variant(self) -> EfficientNetVariant {
        match self {
            Classifier::Lite0 => EfficientNetVariant::Lite0,
            Classifier::Lite1 => EfficientNetVariant::Lite1,
            Classifier::Lite2 => EfficientNetVariant::Lite2,
        }
    }
}

fn main() -> std::process::ExitCode {
    // Training steps reallocate the same large buffers: keep freed memory for reuse.
    deepsim_train::retain_freed_memory();
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Features { comparator, weights, tap, out, images } => {
            features(&comparator, weights.as_deref(), &tap, &out, &images)
        }
        Command::Compare { metric, weights, heads, json, map, resize, a, b } => compare(
            &metric,
            weights.as_deref(),
            heads.as_deref(),
            json,
            map.as_deref(),
            resize,
            &a,
            &b,
        ),
        Command::Weights { json } => list_weights(json),
        Command::CompareAudio { metric, json, a, b } => compare_audio(&metric, json, &a, &b),
        Command::Classify { model, weights, labels, images } => {
            classify(model.variant(), weights.as_deref(), labels.as_deref(), &images)
        }
        Command::Train { config, resume, steps, device } => {
            train::train(&config, resume, steps, device)
        }
        Command::Invert { checkpoint, out, device, images } => {
            generate::invert(&checkpoint, &images, &out, device.as_deref())
        }
        Command::Interpolate { checkpoint, steps, out, device, a, b } => {
            generate::interpolate(&checkpoint, &a, &b, steps.into(), &out, device.as_deref())
        }
        Command::Sample { checkpoint, n, seed, out, device } => {
            generate::sample(&checkpoint, n.into(), seed, &out, device.as_deref())
        }
        Command::Demo { out, steps, warmup, baseline, deepsim } => {
            train::demo(train::DemoOptions {
                out: &out,
                steps,
                warmup,
                baseline: baseline.as_deref(),
                deepsim: deepsim.as_deref(),
            })
        }
        Command::Eval { checkpoints, data, limit, optim, optim_cfg, out, device } => {
            evaluate::eval(
                &checkpoints,
                &data,
                limit,
                optim.then(|| optim_cfg.config()).as_ref(),
                out.as_deref(),
                device.as_deref(),
            )
        }
        Command::InvertOptim {
            network,
            weights,
            tap,
            size,
            resize,
            optim_cfg,
            out,
            device,
            images,
        } => evaluate::invert_optim(
            &network,
            weights.as_deref(),
            &tap,
            size,
            resize,
            &images,
            &out,
            &optim_cfg.config(),
            device.as_deref(),
        ),
        Command::Reencode { checkpoint, iterations, out, device, images } => {
            evaluate::reencode(&checkpoint, &iterations, &images, &out, device.as_deref())
        }
        Command::Neighbours { checkpoint, train, k, out, device, queries } => {
            evaluate::neighbours(&checkpoint, &train, &queries, k, &out, device.as_deref())
        }
        Command::Ablation { checkpoints, out, device, images } => {
            evaluate::ablation(&checkpoints, &images, &out, device.as_deref())
        }
        Command::Bench { list: true, .. } => {
            bench::NAMES.iter().for_each(|n| println!("{n}"));
            Ok(())
        }
        Command::Bench { names, device, iterations, json, .. } => {
            bench::run(&names, &device, iterations, json.as_deref())
        }
        Command::DataCheck { dir, crop, resize, labels, strict } => {
            data_check(&dir, crop, resize, labels, strict)
        }
    }
}

fn data_check(
    dir: &Path,
    crop: u32,
    resize: Option<u32>,
    labels: bool,
    strict: bool,
) -> Result<()> {
    use deepsim_data::{
        Crop, Dataset, Filter, FolderConfig, ImageFolder, Labels, Transform, Validation,
    };
    let transform =
        Transform { resize, crop: Crop::Center(crop), hflip: false, filter: Filter::Bilinear };
    let mut config = FolderConfig::new(transform);
    config.validation = Validation::Full;
    config.strict = strict;
    if labels {
        config.labels = Labels::Subfolders;
    }
    let set = ImageFolder::open(dir, config)?;
    if let Some(classes) = set.classes() {
        println!("{} classes: {}", classes.len(), classes.join(", "));
    }
    println!("{}: {}", dir.display(), set.summary());
    Ok(())
}

fn parse_tap(name: &str) -> Result<Tap> {
    Tap::from_name(name).with_context(|| {
        format!("unknown tap `{name}` (e.g. conv5, pool5, relu5_3, fire9, block15)")
    })
}

fn features(
    comparator: &str,
    weights: Option<&Path>,
    tap: &str,
    out: &Path,
    images: &[PathBuf],
) -> Result<()> {
    let net = by_name(comparator, weights, &Device::Cpu)?;
    let tap = parse_tap(tap)?;
    let mut set = TensorSet::default();
    for path in images {
        let x = images::load(path, None)?;
        let f = net
            .features(&x, &[tap])
            .with_context(|| format!("{}", path.display()))?
            .remove(0)
            .squeeze(0)?;
        let values: Vec<f32> = f.flatten_all()?.to_vec1()?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        set.insert(name, RawTensor::from_f32(f.dims().to_vec(), &values))
            .map_err(anyhow::Error::msg)?;
    }
    let meta = HashMap::from([
        ("comparator".to_owned(), comparator.to_owned()),
        ("tap".to_owned(), tap.name().to_owned()),
        ("writer".to_owned(), weights::CONVERTER_VERSION.to_owned()),
    ]);
    write_safetensors_atomic(out, &set, meta)?;
    println!("{} images → {}", set.len(), out.display());
    Ok(())
}

/// A perceptual distance of image pairs.
enum Metric {
    Lpips(Lpips),
    Feature(Box<dyn deepsim_comparators::Comparator>, Tap),
    Pixel(PixelMetric),
}

/// The measures of deepsim-metrics, computed in f64.
#[derive(Clone, Copy)]
enum PixelMetric {
    Ssim,
    MsSsim,
    Psnr,
    DeltaE76,
    DeltaE2000,
    Opponent,
}

impl PixelMetric {
    fn value(self, a: &Tensor, b: &Tensor) -> Result<f32> {
        let (a, b) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
        let cfg = SsimConfig::default();
        let per_image = match self {
            PixelMetric::Ssim => metrics::ssim(&a, &b, &cfg)?,
            PixelMetric::MsSsim => metrics::ms_ssim(&a, &b, &cfg)?,
            PixelMetric::Psnr => metrics::psnr(&a, &b, 1.0)?,
            PixelMetric::DeltaE76 => metrics::spatial_mean(&metrics::delta_e76(
                &metrics::srgb_to_lab(&a)?,
                &metrics::srgb_to_lab(&b)?,
            )?)?,
            PixelMetric::DeltaE2000 => metrics::spatial_mean(&metrics::delta_e2000(
                &metrics::srgb_to_lab(&a)?,
                &metrics::srgb_to_lab(&b)?,
                metrics::Ciede2000Weights::default(),
            )?)?,
            PixelMetric::Opponent => metrics::opponent_loss(&a, &b, [1.0, 1.0, 1.0])?,
        };
        Ok(per_image.squeeze(0)?.to_scalar::<f64>()? as f32)
    }
}

impl Metric {
    fn new(spec: &str, weights: Option<&Path>, heads: Option<&Path>) -> Result<Self> {
        let cpu = &Device::Cpu;
        let shift_tolerant = |trunk| -> Result<Metric> {
            if heads.is_some() {
                bail!("{spec} keeps its trunk and heads in one file: give it as --weights, without --heads");
            }
            Ok(Metric::Lpips(Lpips::pretrained_shift_tolerant(trunk, weights, cpu)?))
        };
        Ok(match spec {
            "stlpips-alex" => shift_tolerant(ShiftTolerantTrunk::Alex)?,
            "stlpips-vgg" => shift_tolerant(ShiftTolerantTrunk::Vgg)?,
            "lpips-alex" => Metric::Lpips(Lpips::pretrained_alex(weights, heads, cpu)?),
            "lpips-vgg" => Metric::Lpips(Lpips::pretrained_vgg(weights, heads, cpu)?),
            "lpips-squeeze" => Metric::Lpips(Lpips::pretrained_squeeze(weights, heads, cpu)?),
            "ssim" => Metric::Pixel(PixelMetric::Ssim),
            "ms-ssim" => Metric::Pixel(PixelMetric::MsSsim),
            "psnr" => Metric::Pixel(PixelMetric::Psnr),
            "delta-e76" => Metric::Pixel(PixelMetric::DeltaE76),
            "delta-e2000" => Metric::Pixel(PixelMetric::DeltaE2000),
            "opponent" => Metric::Pixel(PixelMetric::Opponent),
            other => match other.split(':').collect::<Vec<_>>()[..] {
                ["feature", comparator, tap] => Metric::Feature(by_name(comparator, weights, cpu)?, parse_tap(tap)?),
                ["feature", comparator] => bail!("`{other}` needs a tap: feature:{comparator}:TAP, e.g. feature:alexnet:conv5 or feature:efficientnet-lite0:block2"),
                _ => bail!("unknown metric `{other}`: stlpips-alex, stlpips-vgg, lpips-alex, lpips-vgg, lpips-squeeze, ssim, ms-ssim, psnr, delta-e76, delta-e2000, opponent, or feature:COMPARATOR:TAP with COMPARATOR one of {}", COMPARATORS.join(", ")),
            },
        })
    }

    /// The distance, and per-layer values where the metric has them.
    fn distance(&self, a: &Tensor, b: &Tensor) -> Result<(f32, Vec<f32>)> {
        match self {
            Metric::Lpips(l) => {
                let out = l.forward(a, b)?;
                let layers = out
                    .per_layer
                    .iter()
                    .map(|t| t.squeeze(0)?.to_scalar::<f32>())
                    .collect::<candle::Result<Vec<_>>>()?;
                Ok((out.distance.squeeze(0)?.to_scalar::<f32>()?, layers))
            }
            Metric::Feature(c, tap) => {
                let fa = c.features(a, &[*tap])?.remove(0);
                let fb = c.features(b, &[*tap])?.remove(0);
                Ok(((fa - fb)?.sqr()?.mean_all()?.to_scalar::<f32>()?, Vec::new()))
            }
            Metric::Pixel(m) => Ok((m.value(a, b)?, Vec::new())),
        }
    }

    /// The names of the per-layer values' taps.
    fn taps(&self) -> Vec<&'static str> {
        match self {
            Metric::Lpips(l) => l.taps().into_iter().map(Tap::name).collect(),
            _ => Vec::new(),
        }
    }
}

/// One line of `compare --json`.
#[derive(Serialize)]
struct CompareRow<'a> {
    metric: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    distance: f32,
    /// Each layer's share of the distance ((ST-)LPIPS), in the order of `taps`.
    per_layer: &'a [f32],
    taps: &'a [&'static str],
}

#[allow(clippy::too_many_arguments)]
fn compare(
    spec: &str,
    weights: Option<&Path>,
    heads: Option<&Path>,
    json: bool,
    map: Option<&Path>,
    resize: bool,
    a: &Path,
    b: &Path,
) -> Result<()> {
    let metric = Metric::new(spec, weights, heads)?;
    let taps = metric.taps();
    let mut csv = csv::Writer::from_writer(std::io::stdout());
    let report = |csv: &mut csv::Writer<std::io::Stdout>,
                  file: Option<&str>,
                  distance: f32,
                  per_layer: &[f32]|
     -> Result<()> {
        match (json, file) {
            (true, file) => {
                let row = CompareRow { metric: spec, file, distance, per_layer, taps: &taps };
                println!("{}", serde_json::to_string(&row)?);
            }
            (false, Some(n)) => {
                csv.write_record([n, &distance.to_string()])?;
                csv.flush()?;
            }
            (false, None) => println!("{distance}"),
        }
        Ok(())
    };
    if a.is_dir() || b.is_dir() {
        if !(a.is_dir() && b.is_dir()) {
            bail!(
                "{} is a folder and {} is not: give two images, or two folders to compare their \
                 files of the same name",
                if a.is_dir() { a } else { b }.display(),
                if a.is_dir() { b } else { a }.display()
            );
        }
        if map.is_some() {
            bail!("--map writes the map of one pair of images, not of two folders");
        }
        let files = |dir: &Path| -> Result<Vec<String>> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("{}", dir.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Ok(names)
        };
        let (names, in_b) = (files(a)?, files(b)?);
        for name in in_b.iter().filter(|n| names.binary_search(n).is_err()) {
            eprintln!("warning: {name} is in {} only; skipped", b.display());
        }
        let pairs: Vec<&String> = names.iter().filter(|n| in_b.binary_search(n).is_ok()).collect();
        for name in names.iter().filter(|n| in_b.binary_search(n).is_err()) {
            eprintln!("warning: {name} is in {} only; skipped", a.display());
        }
        if pairs.is_empty() {
            bail!(
                "{} and {} have no file of the same name to compare ({} and {} files)",
                a.display(),
                b.display(),
                names.len(),
                in_b.len()
            );
        }
        if !json {
            csv.write_record(["file", spec])?;
        }
        let mut failed = 0;
        for name in pairs {
            let pair = images::load_pair(&a.join(name), &b.join(name), resize)
                .and_then(|(x, y)| metric.distance(&x, &y));
            match pair {
                Ok((d, layers)) => report(&mut csv, Some(name), d, &layers)?,
                Err(e) => {
                    eprintln!("warning: {name}: {e:#}; skipped");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            bail!(
                "{failed} pair(s) could not be compared (warnings above); the others are printed"
            );
        }
        return Ok(());
    }
    let (x, y) = images::load_pair(a, b, resize)?;
    let (d, layers) = metric.distance(&x, &y)?;
    report(&mut csv, None, d, &layers)?;
    if let Some(path) = map {
        let Metric::Lpips(l) = &metric else {
            bail!("--map needs a metric with a spatial map: stlpips-alex, stlpips-vgg or lpips-*");
        };
        let peak = images::write_heat_map(&l.spatial_map(&x, &y)?, path)?;
        eprintln!("map → {} (white = {peak:.4} per pixel)", path.display());
    }
    Ok(())
}

/// One row of `deepsim weights --json`.
#[derive(Serialize)]
struct WeightsRow {
    arch: &'static str,
    /// `cache` or `shipped` where found, else `missing`.
    origin: &'static str,
    /// The file found, or where the cache would hold it.
    path: PathBuf,
    /// The command that makes the file, when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    convert: Option<String>,
}

fn list_weights(json: bool) -> Result<()> {
    let rows: Vec<WeightsRow> = Arch::ALL
        .into_iter()
        .filter(|a| *a != Arch::Raw)
        .map(|arch| match weights::locate(arch, None) {
            Ok((origin, path)) => {
                WeightsRow { arch: arch.name(), origin: origin.name(), path, convert: None }
            }
            Err(_) => WeightsRow {
                arch: arch.name(),
                origin: "missing",
                path: weights::cached_path(arch),
                convert: Some(format!(
                    "cargo xtask convert-weights --arch {} --input {}",
                    arch.name(),
                    arch.source_hint()
                )),
            },
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in &rows {
        match &r.convert {
            None => println!("{:<20} {:<8} {}", r.arch, r.origin, r.path.display()),
            Some(cmd) => println!("{:<20} {:<8} {cmd}", r.arch, r.origin),
        }
    }
    Ok(())
}

fn classify(
    variant: EfficientNetVariant,
    weights: Option<&Path>,
    labels: Option<&Path>,
    images: &[PathBuf],
) -> Result<()> {
    let net = EfficientNetLite::pretrained(variant, weights, &Device::Cpu)?;
    let labels: Vec<String> = match labels {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            let names: Vec<String> = text.lines().map(str::to_owned).collect();
            if names.len() != 1000 {
                bail!("{}: {} lines, expected the 1000 ImageNet classes", p.display(), names.len());
            }
            names
        }
        None => imagenet_classes().into_iter().map(str::to_owned).collect(),
    };
    for path in images {
        let x = images::load_center_crop(path, variant.input_size() as u32)?;
        let probs = candle_nn::ops::softmax(&net.logits(&x)?.squeeze(0)?, 0)?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        println!("{}", path.display());
        for &i in &order[..5] {
            println!("  {:>6.2}%  class {i:>3}  {}", probs[i] * 100.0, labels[i]);
        }
    }
    Ok(())
}

/// Mono samples in [−1, 1] and the sample rate of a WAV file (integer or float PCM).
fn read_wav(path: &Path) -> Result<(Vec<f64>, u32)> {
    let mut reader = hound::WavReader::open(path).with_context(|| format!("{}", path.display()))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => {
            reader.samples::<f32>().map(|s| s.map(f64::from)).collect::<std::result::Result<_, _>>()
        }
        hound::SampleFormat::Int => {
            let scale = 2f64.powi(i32::from(spec.bits_per_sample) - 1);
            reader.samples::<i32>().map(|s| s.map(|v| f64::from(v) / scale)).collect()
        }
    }
    .with_context(|| format!("{}: corrupt or truncated samples", path.display()))?;
    if samples.is_empty() {
        bail!("{}: no samples", path.display());
    }
    let mono = samples.chunks(channels).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect();
    Ok((mono, spec.sample_rate))
}

fn compare_audio(metric: &str, json: bool, a: &Path, b: &Path) -> Result<()> {
    let ((x, rate_a), (y, rate_b)) = (read_wav(a)?, read_wav(b)?);
    if rate_a != rate_b {
        bail!("{} is sampled at {rate_a} Hz, {} at {rate_b} Hz", a.display(), b.display());
    }
    if x.len() != y.len() {
        bail!("{} has {} samples, {} has {}", a.display(), x.len(), b.display(), y.len());
    }
    let (x, y) = (Tensor::new(x, &Device::Cpu)?, Tensor::new(y, &Device::Cpu)?);
    let d = match metric {
        "stft" => {
            let cfg = metrics::StftConfig { n_fft: 1024, hop: 256, win_length: 1024 };
            metrics::spectrogram_distance(&x, &y, &cfg, metrics::SpectrogramScale::LogMagnitude)?
        }
        "mr-stft" => {
            metrics::multi_resolution_stft_loss(&x, &y, &metrics::StftConfig::parallel_wavegan())?
        }
        other => bail!("unknown audio metric `{other}`: stft or mr-stft"),
    }
    .squeeze(0)?
    .to_scalar::<f64>()?;
    if json {
        // serde_json writes a distance that is not finite as null.
        println!("{}", serde_json::json!({ "metric": metric, "distance": d }));
    } else {
        println!("{d}");
    }
    Ok(())
}
