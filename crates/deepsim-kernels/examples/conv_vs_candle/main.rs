//! deepsim-kernels' `conv2d` (im2col + GEMM) against candle's `Tensor::conv2d` on one layer,
//! forward and backward: the largest difference of the outputs and gradients, and the time of
//! each.
//!
//!     cargo run --release -p deepsim-kernels --example conv_vs_candle -- [BATCH]

// ANCHOR: readme
use candle::{Device, Tensor, Var};
use deepsim_kernels::{conv2d, Conv2dConfig};

/// AlexNet's conv2 shape (64 → 192 channels, 5×5, padding 2) on `[batch, 64, 27, 27]`: the
/// output and the gradients of its sum for the input and the weight, by deepsim-kernels and
/// by candle.
fn both(batch: usize) -> deepsim_kernels::Result<[[Tensor; 3]; 2]> {
    let x = Var::randn(0f32, 1., (batch, 64, 27, 27), &Device::Cpu)?;
    let w = Var::randn(0f32, 0.02, (192, 64, 5, 5), &Device::Cpu)?;
    let run = |y: Tensor| -> deepsim_kernels::Result<[Tensor; 3]> {
        let grads = y.sum_all()?.backward()?;
        let grad = |v: &Var| {
            grads.get(v.as_tensor()).cloned().ok_or(candle::Error::Msg("no gradient".into()))
        };
        Ok([y, grad(&x)?, grad(&w)?])
    };
    let ours = run(conv2d(x.as_tensor(), w.as_tensor(), None, &Conv2dConfig::new(1, 2))?)?;
    let candles = run(x.as_tensor().conv2d(w.as_tensor(), 2, 1, 1, 1)?)?;
    Ok([ours, candles])
}
// ANCHOR_END: readme

use std::time::Instant;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let batch = match std::env::args().nth(1) {
        Some(a) => {
            a.parse::<usize>().with_context(|| format!("BATCH must be a number, got {a:?}"))?
        }
        None => 8,
    };
    let [ours, candles] = both(batch)?;
    for (name, (a, b)) in
        ["output", "input gradient", "weight gradient"].iter().zip(ours.iter().zip(&candles))
    {
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
        println!(
            "{name:>16} {:?}: largest difference {diff:.2e} (largest value {scale:.2e})",
            a.dims()
        );
    }
    // Timings: forward and backward of each, best of three (the first run above warmed up).
    let x = Var::randn(0f32, 1., (batch, 64, 27, 27), &Device::Cpu)?;
    let w = Var::randn(0f32, 0.02, (192, 64, 5, 5), &Device::Cpu)?;
    let time = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            f()?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best * 1e3)
    };
    let ours = time(&|| {
        conv2d(x.as_tensor(), w.as_tensor(), None, &Conv2dConfig::new(1, 2))?
            .sum_all()?
            .backward()?;
        Ok(())
    })?;
    let candles = time(&|| {
        x.as_tensor().conv2d(w.as_tensor(), 2, 1, 1, 1)?.sum_all()?.backward()?;
        Ok(())
    })?;
    println!(
        "forward + backward, batch {batch}: deepsim-kernels {ours:.1} ms, candle {candles:.1} ms"
    );
    Ok(())
}
