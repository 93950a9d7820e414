//! Per-layer timings of the DeePSiM step's 64-pixel generator tower (batch 8): for each
//! up-convolution and 3×3 convolution, the forward pass, forward + backward (input and weight
//! gradients) and forward + weight gradient alone, median of 10 calls after 2 warm-ups.
//! `bench/torch/generator_layers.py` times the same layers in PyTorch; run both in one sitting:
//!
//!     cargo run --release -p deepsim-kernels --example generator_layers
//!     ~/.torch-venv/bin/python bench/torch/generator_layers.py
//!
//! `LAYER=N` (0–6) times one layer only (for a profiler).

use std::time::Instant;

use candle::{Device, Tensor, Var};
use deepsim_kernels::{conv2d, conv_transpose2d, Conv2dConfig, ConvTranspose2dConfig};

/// (up-convolution?, input channels, output channels, input side): the tower after the seed map.
const LAYERS: [(bool, usize, usize, usize); 7] = [
    (true, 256, 256, 4),
    (false, 256, 512, 8),
    (true, 512, 256, 8),
    (false, 256, 256, 16),
    (true, 256, 128, 16),
    (false, 128, 128, 32),
    (true, 128, 3, 32),
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
    let mut total = [0.0; 3];
    println!("layer                     fwd (ms)  fwd+bwd (ms)  fwd+wgrad (ms)  fwd+bwd GFLOP/s");
    let only: Option<usize> = std::env::var("LAYER").ok().and_then(|v| v.parse().ok());
    for (index, (up, ci, co, h)) in LAYERS.into_iter().enumerate() {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (BATCH, ci, h, h), &dev)?)?;
        let w_shape = if up { (ci, co, 4, 4) } else { (co, ci, 3, 3) };
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.05, w_shape, &dev)?)?;
        let run = |x: &Tensor, w: &Tensor| -> candle::Result<Tensor> {
            if up {
                conv_transpose2d(x, w, None, &ConvTranspose2dConfig::new(2, 1))
            } else {
                conv2d(x, w, None, &Conv2dConfig::new(1, 1))
            }
            .map_err(candle::Error::wrap)
        };
        let r = Tensor::randn(0f32, 1., run(x.as_tensor(), w.as_tensor())?.shape(), &dev)?;
        let backward = |x: &Tensor| -> candle::Result<()> {
            let grads = (run(x, w.as_tensor())? * &r)?.sum_all()?.backward()?;
            grads.get(w.as_tensor()).map(|_| ()).ok_or(candle::Error::Msg("no gradient".into()))
        };
        let frozen_x = x.as_tensor().detach();
        let t = [
            time(|| run(x.as_tensor(), w.as_tensor()).map(|_| ()))?,
            time(|| backward(x.as_tensor()))?,
            time(|| backward(&frozen_x))?,
        ];
        let side = if up { 2 * h } else { h };
        let macs = (BATCH * ci * co * h * h * if up { 16 } else { 9 }) as f64;
        let kind = if up { "up" } else { "conv" };
        println!(
            "{kind:4} {ci:3}→{co:3} @{h:2}→{side:2}      {:8.2}  {:12.2}  {:14.2}  {:15.0}",
            t[0],
            t[1],
            t[2],
            6.0 * macs / t[1] / 1e6
        );
        for (s, v) in total.iter_mut().zip(t) {
            *s += v;
        }
    }
    println!("total                     {:8.1}  {:12.1}  {:14.1}", total[0], total[1], total[2]);
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
