//! `deepsim bench`: the kernel, comparator and training-step workloads timed on one device,
//! with images per second, milliseconds per call and memory, as JSON. `cargo xtask bench-gpu`
//! runs one benchmark per process through it (so each process's peak memory is that
//! benchmark's) and writes the summary.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use clap::ValueEnum;
use deepsim_comparators::{AlexNet, AlexNetLayout, Comparator, Lpips, Tap};
use deepsim_kernels::{local_response_norm, max_pool2d, LrnConfig, MaxPool2dConfig};
use deepsim_losses::{FeatureLoss, FeatureNorm, Reduction};
use deepsim_train::{
    normal, peak_resident_bytes, resident_bytes, StepWorkload, TrainerStepWorkload,
};
use serde::Serialize;

use crate::args::DeviceArg;

/// Times the kernel, comparator and training-step benchmarks on one device: median ms per
/// call, images per second and resident memory (`cargo xtask bench-gpu` runs it on a GPU).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Benchmarks to run (default: all).
    #[arg(value_enum)]
    names: Vec<Bench>,
    #[command(flatten)]
    device: DeviceArg,
    /// Timed calls per benchmark, after two warm-up calls.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Also write the measurements as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the benchmark names, one per line, and run nothing.
    #[arg(long)]
    list: bool,
}

/// The benchmarks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// AlexNet's overlapping max-pool 3×3/2, forward and backward.
    #[value(name = "max_pool_3x3s2_fwdbwd")]
    MaxPool3x3s2,
    /// CaffeNet's LRN (5 channels), forward and backward.
    #[value(name = "lrn_fwdbwd")]
    Lrn,
    /// The MSE of AlexNet's conv5 features (random weights), forward and backward to the
    /// input.
    #[value(name = "alexnet_conv5_loss_fwdbwd")]
    AlexnetConv5Loss,
    /// LPIPS-alex (random trunk and heads) of one 1080×800 pair, no gradient.
    #[value(name = "lpips_alex_fwd_pair_1080x800")]
    LpipsAlexPair,
    /// A DeePSiM generator step with a 64×64 output.
    #[value(name = "deepsim_step_64")]
    DeepsimStep64,
    /// A DeePSiM generator step with a 256×256 output.
    #[value(name = "deepsim_step_256")]
    DeepsimStep256,
    /// One step of `deepsim train` on the paper's settings (encoder, generator,
    /// discriminator, every term, both Adams, the pause rule), 64×64 images.
    #[value(name = "deepsim_train_step_64")]
    DeepsimTrainStep64,
    /// The same with the paper's generator (tower to 256, cropped to 227×227 images).
    #[value(name = "deepsim_train_step_256")]
    DeepsimTrainStep256,
}

impl Bench {
    /// The benchmark's name, as `--list` prints it and the JSON records it.
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }
}

/// One benchmark's measurement.
#[derive(Serialize)]
struct Measurement {
    /// Benchmark name.
    name: String,
    /// What one call does, with its sizes.
    what: String,
    /// The device.
    device: String,
    /// Images per call.
    batch: usize,
    /// Timed calls (after two untimed warm-up calls).
    iterations: usize,
    /// Median milliseconds per call.
    median_ms: f64,
    /// Fastest call.
    min_ms: f64,
    /// Images per second at the median.
    images_per_s: f64,
    /// Resident memory after the warm-up calls (bytes; Linux).
    resident_after_warmup: Option<u64>,
    /// Resident memory after the last call (bytes; Linux): with `resident_after_warmup`, the
    /// growth over the timed calls.
    resident_at_end: Option<u64>,
    /// The process's peak resident memory (bytes; Linux).
    peak_resident: Option<u64>,
    /// What else the calls did, when it varies (the trainer steps: how often the pause rule
    /// let the discriminator update).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// A benchmark ready to run: a description, its batch, one call and, for some, a note on
/// what the calls did.
struct Workload {
    what: String,
    batch: usize,
    call: Box<dyn FnMut() -> Result<()>>,
    note: Option<Box<dyn Fn() -> String>>,
}

/// Batch sizes: the GPU sizes on a GPU, smaller ones a CPU finishes in seconds.
fn batch(device: &Device, gpu: usize, cpu: usize) -> usize {
    if device.is_cpu() {
        cpu
    } else {
        gpu
    }
}

fn workload(bench: Bench, device: &Device, device_name: &str) -> Result<Workload> {
    Ok(match bench {
        Bench::MaxPool3x3s2 => {
            let cfg = MaxPool2dConfig::square(3, 2);
            kernel(device, 64, 1, "AlexNet's overlapping max-pool 3×3/2", move |x| {
                max_pool2d(x, &cfg)
            })?
        }
        Bench::Lrn => {
            let cfg = LrnConfig::caffenet();
            kernel(device, 96, 2, "CaffeNet's LRN (5 channels)", move |x| {
                local_response_norm(x, &cfg)
            })?
        }
        Bench::AlexnetConv5Loss => {
            let n = batch(device, 64, 16);
            let net: Arc<dyn Comparator + Send + Sync> =
                Arc::new(AlexNet::random(AlexNetLayout::Torchvision, 0, device)?);
            let loss =
                FeatureLoss::new(net, &[(Tap::Relu5, 1.0)], FeatureNorm::Mean, Reduction::Mean)?;
            let x = Var::from_tensor(
                &normal(&[n, 3, 227, 227], 3, device)?.affine(0.2, 0.5)?.clamp(0f32, 1f32)?,
            )?;
            let target =
                normal(&[n, 3, 227, 227], 4, device)?.affine(0.2, 0.5)?.clamp(0f32, 1f32)?;
            let want = loss.target_features(&target)?;
            Workload {
                what: format!(
                    "perceptual loss: MSE of AlexNet (random weights) conv5 features, [{n}, 3, 227, 227], forward + backward to the input"
                ),
                batch: n,
                call: Box::new(move || {
                    let g = loss.forward_to(x.as_tensor(), &want)?.total.backward()?;
                    sync(g.get(x.as_tensor()).context("no gradient")?)
                }),
                note: None,
            }
        }
        Bench::LpipsAlexPair => {
            // The work of the criterion benchmark cpu_lpips_alex_fwd_pair_1080x800 (the same
            // trunk, seed 5; non-negative heads and two images in [0, 1], drawn differently:
            // the values do not change the time).
            let trunk = AlexNet::random(AlexNetLayout::Torchvision, 5, device)?;
            let heads = [64, 192, 384, 256, 256]
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    Ok((
                        format!("lin{i}.weight"),
                        normal(&[1, c, 1, 1], 50 + i as u64, device)?.abs()?,
                    ))
                })
                .collect::<Result<HashMap<_, _>>>()?;
            let lpips = Lpips::alex(trunk, VarBuilder::from_tensors(heads, DType::F32, device))?;
            let image = |seed| -> Result<Tensor> {
                Ok(normal(&[1, 3, 800, 1080], seed, device)?.affine(0.2, 0.5)?.clamp(0f32, 1f32)?)
            };
            let (a, b) = (image(8)?, image(9)?);
            Workload {
                what: "LPIPS-alex (random trunk and heads) of one 1080×800 pair, forward only"
                    .into(),
                batch: 1,
                call: Box::new(move || sync(&lpips.forward(&a, &b)?.distance)),
                note: None,
            }
        }
        Bench::DeepsimStep64 | Bench::DeepsimStep256 => {
            let side = if bench == Bench::DeepsimStep64 { 64 } else { 256 };
            let n = batch(device, 64, 8);
            let mut w = StepWorkload::new(side, n, device)?;
            Workload {
                what: format!(
                    "DeePSiM generator step, {side}×{side} output, batch {n}: generator (56 M parameters), AlexNet conv5 feature MSE, image MSE, backward, Adam"
                ),
                batch: n,
                call: Box::new(move || {
                    let loss = w.step()?;
                    if !loss.is_finite() {
                        bail!("the loss became {loss}");
                    }
                    Ok(())
                }),
                note: None,
            }
        }
        Bench::DeepsimTrainStep64 | Bench::DeepsimTrainStep256 => {
            let side = if bench == Bench::DeepsimTrainStep64 { 64 } else { 256 };
            let n = batch(device, 64, 8);
            let w = TrainerStepWorkload::new(side, n, device_name)?;
            let crop = w.trainer().config().data.crop;
            let w = Rc::new(RefCell::new(w));
            let seen = w.clone();
            Workload {
                what: format!(
                    "deepsim train step, the paper's settings, {crop}×{crop} images, batch {n}: AlexNet fc6 encoder, generator (tower to {side}), conditioned discriminator, AlexNet conv5 feature term, image and adversarial terms, both backward passes and Adams, pause rule"
                ),
                batch: n,
                call: Box::new(move || {
                    w.borrow_mut().step()?;
                    Ok(())
                }),
                note: Some(Box::new(move || {
                    let w = seen.borrow();
                    match w.trainer().pause() {
                        Some(p) => format!(
                            "the discriminator updated on {} of {} steps (pause rule)",
                            p.updated_steps,
                            p.updated_steps + p.paused_steps
                        ),
                        None => "no discriminator".into(),
                    }
                })),
            }
        }
    })
}

/// A kernel `op` on a `[N, channels, 55, 55]` input drawn from `seed` (the size of AlexNet's
/// conv1 output, which its first pool and, in the original AlexNet, its first LRN take),
/// forward and backward of the sum of its output.
fn kernel(
    device: &Device,
    channels: usize,
    seed: u64,
    what: &str,
    op: impl Fn(&Tensor) -> deepsim_kernels::Result<Tensor> + 'static,
) -> Result<Workload> {
    let n = batch(device, 64, 16);
    let x = Var::from_tensor(&normal(&[n, channels, 55, 55], seed, device)?)?;
    Ok(Workload {
        what: format!("{what}, [{n}, {channels}, 55, 55], forward + backward"),
        batch: n,
        call: Box::new(move || {
            let g = op(x.as_tensor())?.sum_all()?.backward()?;
            sync(g.get(x.as_tensor()).context("no gradient")?)
        }),
        note: None,
    })
}

/// Waits for the device by reading one value of `t`.
fn sync(t: &Tensor) -> Result<()> {
    t.flatten_all()?.get(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    Ok(())
}

impl BenchArgs {
    /// With `--list`, the names; else the benchmarks named (all when none is), each timed
    /// over `iterations` calls after two warm-up calls: one line each, and the JSON list.
    pub fn run(self) -> Result<()> {
        if self.list {
            for bench in Bench::value_variants() {
                println!("{}", bench.name());
            }
            return Ok(());
        }
        let iterations = self.iterations;
        if iterations == 0 {
            bail!("--iterations 0: at least one timed call is needed");
        }
        let dev = self.device.device();
        let benches =
            if self.names.is_empty() { Bench::value_variants().to_vec() } else { self.names };
        let mut out = Vec::new();
        for bench in benches {
            let name = bench.name();
            let mut w = workload(bench, dev, self.device.name())
                .with_context(|| format!("benchmark {name}"))?;
            for _ in 0..2 {
                (w.call)().with_context(|| format!("benchmark {name}, warm-up"))?;
            }
            let resident_after_warmup = resident_bytes();
            let mut ms = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let t = Instant::now();
                (w.call)().with_context(|| format!("benchmark {name}"))?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            let median = ms[ms.len() / 2];
            let m = Measurement {
                name,
                what: w.what,
                device: self.device.name().to_owned(),
                batch: w.batch,
                iterations,
                median_ms: median,
                min_ms: ms[0],
                images_per_s: w.batch as f64 / (median / 1e3),
                resident_after_warmup,
                resident_at_end: resident_bytes(),
                peak_resident: peak_resident_bytes(),
                note: w.note.as_ref().map(|f| f()),
            };
            println!(
                "{:<28} {:>10.2} ms  {:>9.1} images/s  (batch {}, {} calls, min {:.2} ms)",
                m.name, m.median_ms, m.images_per_s, m.batch, m.iterations, m.min_ms
            );
            if let Some(note) = &m.note {
                println!("{:<28} {note}", "");
            }
            out.push(m);
        }
        if let Some(path) = &self.json {
            let text = serde_json::to_string_pretty(&out)?;
            deepsim_data::write_atomic(path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
