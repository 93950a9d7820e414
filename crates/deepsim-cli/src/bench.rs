//! `deepsim bench`: the kernel, comparator and training-step workloads timed on one device,
//! with images per second, milliseconds per call and memory, as JSON. `cargo xtask bench-gpu`
//! runs one benchmark per process through it (so each process's peak memory is that
//! benchmark's) and writes the summary.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor, Var};
use deepsim_comparators::{AlexNet, AlexNetLayout, Comparator, Tap};
use deepsim_kernels::{local_response_norm, max_pool2d, LrnConfig, MaxPool2dConfig};
use deepsim_losses::{FeatureLoss, FeatureNorm, Reduction};
use deepsim_train::{normal, parse_device, peak_resident_bytes, resident_bytes, StepWorkload};
use serde::Serialize;

/// The benchmarks, in the order they run.
pub const NAMES: [&str; 5] = [
    "max_pool_3x3s2_fwdbwd",
    "lrn_fwdbwd",
    "alexnet_conv5_loss_fwdbwd",
    "deepsim_step_64",
    "deepsim_step_256",
];

/// One benchmark's measurement.
#[derive(Serialize)]
pub struct Measurement {
    /// Benchmark name.
    pub name: String,
    /// What one call does, with its sizes.
    pub what: String,
    /// The device.
    pub device: String,
    /// Images per call.
    pub batch: usize,
    /// Timed calls (after two untimed warm-up calls).
    pub iterations: usize,
    /// Median milliseconds per call.
    pub median_ms: f64,
    /// Fastest call.
    pub min_ms: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
    /// Resident memory after the warm-up calls (bytes; Linux).
    pub resident_after_warmup: Option<u64>,
    /// Resident memory after the last call (bytes; Linux): with `resident_after_warmup`, the
    /// growth over the timed calls.
    pub resident_at_end: Option<u64>,
    /// The process's peak resident memory (bytes; Linux).
    pub peak_resident: Option<u64>,
}

/// A benchmark ready to run: a description, its batch and one call.
struct Workload {
    what: String,
    batch: usize,
    call: Box<dyn FnMut() -> Result<()>>,
}

/// Batch sizes: the GPU sizes on a GPU, smaller ones a CPU finishes in seconds.
fn batch(device: &Device, gpu: usize, cpu: usize) -> usize {
    if device.is_cpu() {
        cpu
    } else {
        gpu
    }
}

fn workload(name: &str, device: &Device) -> Result<Workload> {
    Ok(match name {
        "max_pool_3x3s2_fwdbwd" => {
            let cfg = MaxPool2dConfig::square(3, 2);
            kernel(device, 64, 1, "AlexNet's overlapping max-pool 3×3/2", move |x| {
                max_pool2d(x, &cfg)
            })?
        }
        "lrn_fwdbwd" => {
            let cfg = LrnConfig::caffenet();
            kernel(device, 96, 2, "CaffeNet's LRN (5 channels)", move |x| {
                local_response_norm(x, &cfg)
            })?
        }
        "alexnet_conv5_loss_fwdbwd" => {
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
            }
        }
        "deepsim_step_64" | "deepsim_step_256" => {
            let side = if name.ends_with("64") { 64 } else { 256 };
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
            }
        }
        other => bail!("no benchmark {other:?}; the benchmarks: {}", NAMES.join(", ")),
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
    })
}

/// Waits for the device by reading one value of `t`.
fn sync(t: &Tensor) -> Result<()> {
    t.flatten_all()?.get(0)?.to_dtype(candle::DType::F32)?.to_scalar::<f32>()?;
    Ok(())
}

/// Runs the benchmarks `names` (all when empty) on `device`, `iterations` timed calls each
/// after two warm-up calls; prints one line per benchmark and writes the JSON list to `json`.
pub fn run(names: &[String], device: &str, iterations: usize, json: Option<&Path>) -> Result<()> {
    if iterations == 0 {
        bail!("--iterations 0: at least one timed call is needed");
    }
    let dev = parse_device(device)?;
    let names: Vec<String> = if names.is_empty() {
        NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    let mut out = Vec::new();
    for name in &names {
        let mut w = workload(name, &dev).with_context(|| format!("benchmark {name}"))?;
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
            name: name.clone(),
            what: w.what,
            device: device.to_string(),
            batch: w.batch,
            iterations,
            median_ms: median,
            min_ms: ms[0],
            images_per_s: w.batch as f64 / (median / 1e3),
            resident_after_warmup,
            resident_at_end: resident_bytes(),
            peak_resident: peak_resident_bytes(),
        };
        println!(
            "{:<28} {:>10.2} ms  {:>9.1} images/s  (batch {}, {} calls, min {:.2} ms)",
            m.name, m.median_ms, m.images_per_s, m.batch, m.iterations, m.min_ms
        );
        out.push(m);
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&out)?;
        deepsim_data::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
