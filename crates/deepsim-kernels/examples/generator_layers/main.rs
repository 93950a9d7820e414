//! Per-layer timings of the DeePSiM trainer step's convolutions (batch 8): for each layer, the
//! forward pass, forward + backward (input and weight gradients) and forward + weight gradient
//! alone, median of 10 calls after 2 warm-ups. `bench/torch/generator_layers.py` times the
//! same layers in PyTorch; run both in one sitting:
//!
//!     cargo run --release -p deepsim-kernels --example generator_layers
//!     ~/.torch-venv/bin/python bench/torch/generator_layers.py
//!
//! `NET` picks the layers: `generator64` (the default: the 64-pixel generator's tower after
//! its seed map), `generator256` (the paper's tower to 256 pixels) or `discriminator227` (the
//! paper's discriminator on the 256-pixel step's 227 × 227 crops). `LAYER=N` times one layer
//! only and `MODE=fwd|bwd|wgrad` one column only (for a profiler; the others print as 0).

use std::time::Instant;

use candle::{Device, Tensor, Var};
use deepsim_kernels::{conv2d, conv_transpose2d, Conv2dConfig, ConvTranspose2dConfig};

/// One layer: an up-convolution (4 × 4, stride 2, padding 1) or a convolution.
#[derive(Clone, Copy)]
struct Layer {
    up: bool,
    ci: usize,
    co: usize,
    /// Kernel side, stride and padding of a convolution (an up-convolution's are fixed).
    k: usize,
    stride: usize,
    pad: usize,
    /// Input side.
    h: usize,
}

const fn up(ci: usize, co: usize, h: usize) -> Layer {
    Layer { up: true, ci, co, k: 4, stride: 2, pad: 1, h }
}

const fn conv(ci: usize, co: usize, k: usize, stride: usize, h: usize) -> Layer {
    Layer { up: false, ci, co, k, stride, pad: k / 2, h }
}

/// The generator's tower after the seed map up to its 128 channels at 32 × 32, which both
/// sizes share; the 64-pixel one then ends in `up(128, 3, 32)`, the paper's (256 pixels) in
/// three more up-convolutions.
const TOWER: [Layer; 6] = [
    up(256, 256, 4),
    conv(256, 512, 3, 1, 8),
    up(512, 256, 8),
    conv(256, 256, 3, 1, 16),
    up(256, 128, 16),
    conv(128, 128, 3, 1, 32),
];

/// The paper's discriminator's convolutions on 227 × 227 images.
const DISCRIMINATOR227: [Layer; 5] = [
    conv(3, 32, 7, 4, 227),
    conv(32, 64, 5, 1, 57),
    conv(64, 128, 3, 2, 57),
    conv(128, 256, 3, 1, 29),
    conv(256, 256, 3, 2, 29),
];

const BATCH: usize = 8;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds of `f`, median of 10 calls after 2.
fn time(mut f: impl FnMut() -> candle::Result<()>) -> candle::Result<f64> {
    let mut v = Vec::new();
    for i in 0..12 {
        let t = Instant::now();
        f()?;
        if i >= 2 {
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(v))
}

fn main() -> candle::Result<()> {
    warn_without_malloc_settings();
    let dev = Device::Cpu;
    let net = std::env::var("NET").unwrap_or_else(|_| "generator64".into());
    let layers: Vec<Layer> = match net.as_str() {
        "generator64" => [&TOWER[..], &[up(128, 3, 32)]].concat(),
        "generator256" => [&TOWER[..], &[up(128, 64, 32), up(64, 32, 64), up(32, 3, 128)]].concat(),
        "discriminator227" => DISCRIMINATOR227.to_vec(),
        other => {
            return Err(candle::Error::Msg(format!(
                "NET={other}: expected generator64, generator256 or discriminator227"
            )))
        }
    };
    let mut total = [0.0; 3];
    println!("layer ({net})    fwd (ms)  fwd+bwd (ms)  fwd+wgrad (ms)  fwd+bwd GFLOP/s");
    let only: Option<usize> = std::env::var("LAYER").ok().and_then(|v| v.parse().ok());
    for (index, &layer) in layers.iter().enumerate() {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let Layer { up, ci, co, k, stride, pad, h } = layer;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (BATCH, ci, h, h), &dev)?)?;
        let w_shape = if up { (ci, co, k, k) } else { (co, ci, k, k) };
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.05, w_shape, &dev)?)?;
        let run = |x: &Tensor, w: &Tensor| -> candle::Result<Tensor> {
            if up {
                conv_transpose2d(x, w, None, &ConvTranspose2dConfig::new(stride, pad))
            } else {
                conv2d(x, w, None, &Conv2dConfig::new(stride, pad))
            }
            .map_err(candle::Error::wrap)
        };
        let r = Tensor::randn(0f32, 1., run(x.as_tensor(), w.as_tensor())?.shape(), &dev)?;
        let backward = |x: &Tensor| -> candle::Result<()> {
            let grads = (run(x, w.as_tensor())? * &r)?.sum_all()?.backward()?;
            grads.get(w.as_tensor()).map(|_| ()).ok_or(candle::Error::Msg("no gradient".into()))
        };
        let frozen_x = x.as_tensor().detach();
        let mode = std::env::var("MODE").ok();
        let wanted = |name: &str| mode.as_deref().is_none_or(|m| m == name);
        let mut t = [0.0; 3];
        if wanted("fwd") {
            t[0] = time(|| run(x.as_tensor(), w.as_tensor()).map(|_| ()))?;
        }
        if wanted("bwd") {
            t[1] = time(|| backward(x.as_tensor()))?;
        }
        if wanted("wgrad") {
            t[2] = time(|| backward(&frozen_x))?;
        }
        let side = if up { 2 * h } else { (h + 2 * pad - k) / stride + 1 };
        // Multiply-adds: an up-convolution's per input pixel, a convolution's per output one.
        let per_pixel = if up { h * h } else { side * side };
        let macs = (BATCH * ci * co * per_pixel * k * k) as f64;
        let kind = if up { "up".to_string() } else { format!("c{k}s{stride}") };
        // Forward and both gradients: three products of the layer's multiply-adds.
        let rate = if t[1] > 0.0 { format!("{:.0}", 6.0 * macs / t[1] / 1e6) } else { "-".into() };
        println!(
            "{kind:4} {ci:3}→{co:3} @{h:3}→{side:3}    {:8.2}  {:12.2}  {:14.2}  {rate:>15}",
            t[0], t[1], t[2]
        );
        for (s, v) in total.iter_mut().zip(t) {
            *s += v;
        }
    }
    println!("total                      {:8.1}  {:12.1}  {:14.1}", total[0], total[1], total[2]);
    Ok(())
}

/// Freed memory kept by glibc (as the `deepsim` binary and PyTorch's best configuration run):
/// without it, each call's large buffers are mapped and unmapped again and the timings measure
/// page faults. The variable must be set before the process starts, so this only warns.
fn warn_without_malloc_settings() {
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        eprintln!(
            "note: GLIBC_TUNABLES is not set; for timings comparable with deepsim's binaries run \
             with GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"
        );
    }
}
