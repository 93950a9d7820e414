//! Per-layer forward timings of LPIPS-alex's trunk on one 1080×800 pair (the two images as a
//! batch of two), each frozen convolution with its fused ReLU under im2col, under Winograd
//! (stacked for the 11×11 stride-4 conv1, F(4×4, 5×5) for the 5×5 conv2) and, for stride-1
//! layers, by FFT; median of 7 calls after 2 warm-ups, and the work of a direct sum:
//!
//!     cargo run --release -p deepsim-kernels --example lpips_layers
//!
//! `NET=stlpips` times ST-LPIPS-alex's trunk instead (stride 1 throughout, its 11×11 conv1 on
//! the full image). `LAYER=N` (0–4) times one layer only, 40 calls (for a profiler);
//! `ALGO=im2col|winograd|fft` one algorithm only.

use std::time::Instant;

use candle::{DType, Device, Tensor};
use deepsim_kernels::{Activation, Conv2dConfig, ConvAlgorithm, FrozenConv2d};

/// One convolution of the trunk and its input's size.
struct Layer {
    name: &'static str,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    rows: usize,
    cols: usize,
}

const fn layer(name: &'static str, c: [usize; 7]) -> Layer {
    let [cin, cout, kernel, stride, pad, rows, cols] = c;
    Layer { name, cin, cout, kernel, stride, pad, rows, cols }
}

/// (input channels, output channels, kernel, stride, padding, input rows, input columns).
const LPIPS: [Layer; 5] = [
    layer("conv1 11x11/4", [3, 64, 11, 4, 2, 800, 1080]),
    layer("conv2 5x5", [64, 192, 5, 1, 2, 99, 134]),
    layer("conv3 3x3", [192, 384, 3, 1, 1, 49, 66]),
    layer("conv4 3x3", [384, 256, 3, 1, 1, 49, 66]),
    layer("conv5 3x3", [256, 256, 3, 1, 1, 49, 66]),
];

/// ST-LPIPS-alex's convolutions on the same pair: each stride-2 step of AlexNet a blur pool.
const STLPIPS: [Layer; 5] = [
    layer("conv1 11x11", [3, 64, 11, 1, 2, 800, 1080]),
    layer("conv2 5x5", [64, 192, 5, 1, 2, 198, 268]),
    layer("conv3 3x3", [192, 384, 3, 1, 1, 98, 133]),
    layer("conv4 3x3", [384, 256, 3, 1, 1, 98, 133]),
    layer("conv5 3x3", [256, 256, 3, 1, 1, 98, 133]),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> deepsim_kernels::Result<()> {
    let dev = Device::Cpu;
    let layers = match std::env::var("NET").as_deref() {
        Ok("stlpips") => &STLPIPS,
        _ => &LPIPS,
    };
    println!("layer         im2col (ms)  Winograd (ms)  FFT (ms)  direct GFLOP  im2col GFLOP/s");
    let mut total = [0.0; 3];
    let only: Option<usize> = std::env::var("LAYER").ok().and_then(|v| v.parse().ok());
    let all = [ConvAlgorithm::Im2col, ConvAlgorithm::Winograd, ConvAlgorithm::Fft];
    let algos: Vec<ConvAlgorithm> = match std::env::var("ALGO").as_deref() {
        Ok("im2col") => vec![ConvAlgorithm::Im2col],
        Ok("winograd") => vec![ConvAlgorithm::Winograd],
        Ok("fft") => vec![ConvAlgorithm::Fft],
        _ => all.to_vec(),
    };
    for (index, l) in layers.iter().enumerate() {
        let (name, ci, co, k, s, p, h, w) =
            (l.name, l.cin, l.cout, l.kernel, l.stride, l.pad, l.rows, l.cols);
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let x = Tensor::randn(0f32, 1., (2, ci, h, w), &dev)?;
        let weight =
            (Tensor::randn(0f32, 1., (co, ci, k, k), &dev)? / ((ci * k * k) as f64).sqrt())?;
        let bias = Tensor::zeros(co, DType::F32, &dev)?;
        let mut times = [0.0; 3];
        let mut flop = 0.0;
        // The FFT takes stride-1 layers only.
        for &algo in algos.iter().filter(|&&a| a != ConvAlgorithm::Fft || s == 1) {
            let layer =
                FrozenConv2d::new(weight.clone(), Some(bias.clone()), Conv2dConfig::new(s, p))?
                    .with_activation(Activation::Relu)
                    .with_algorithm(algo)?;
            let mut v = Vec::new();
            for call in 0..if only.is_some() { 40 } else { 9 } {
                let t = Instant::now();
                let y = layer.forward(&x)?;
                if call >= 2 {
                    v.push(t.elapsed().as_secs_f64() * 1e3);
                }
                flop = 2.0 * (y.elem_count() * ci * k * k) as f64 / 1e9;
            }
            // Columns in the order of `all`, whichever of them run (`ALGO`).
            let column = all.iter().position(|&a| a == algo).unwrap_or(0);
            times[column] = median(v);
            total[column] += times[column];
        }
        let rate =
            if times[0] > 0.0 { format!("{:.0}", flop / times[0] * 1e3) } else { "–".into() };
        let [a, b, c] = times;
        println!("{name:<13} {a:>11.1}  {b:>13.1}  {c:>8.1}  {flop:>12.2}  {rate:>14}");
    }
    let [a, b, c] = total;
    println!("{:<13} {a:>11.1}  {b:>13.1}  {c:>8.1}", "total");
    Ok(())
}
