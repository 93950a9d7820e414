//! Timings of one of the DeePSiM generator's 4096 × 4096 fully connected layers at batch 8
//! (the streaming kernels `linear` runs for batches of at most 16 rows): the forward pass
//! alone, and the backward pass (input and weight gradients) of `Σ y ⊙ r`, median of 22 calls
//! after 3 warm-ups, with the rate at which each streams the weight (64 MiB in f32):
//!
//!     GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647 \
//!         cargo run --release -p deepsim-kernels --example linear_layers
//!
//! `OUT=N` sets the layer's output width (default 4096).

use std::time::Instant;

use candle::{Device, Tensor, Var};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> candle::Result<()> {
    let dev = Device::Cpu;
    let out: usize = match std::env::var("OUT") {
        Ok(v) => v.parse().map_err(|e| candle::Error::Msg(format!("OUT={v}: {e}")))?,
        Err(_) => 4096,
    };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (8, 4096), &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.01, (out, 4096), &dev)?)?;
    let r = Tensor::randn(0f32, 1., (8, out), &dev)?;
    let mb = (out * 4096 * 4) as f64 / 1e6;
    let (mut forward, mut backward) = (Vec::new(), Vec::new());
    for i in 0..25 {
        let t = Instant::now();
        let y = deepsim_kernels::linear(x.as_tensor(), w.as_tensor(), None)
            .map_err(candle::Error::wrap)?;
        let f = t.elapsed().as_secs_f64() * 1e3;
        let loss = (y * &r)?.sum_all()?;
        let t = Instant::now();
        let grads = deepsim_kernels::backward(&loss).map_err(candle::Error::wrap)?;
        let b = t.elapsed().as_secs_f64() * 1e3;
        if grads.get(w.as_tensor()).is_none() || grads.get(x.as_tensor()).is_none() {
            return Err(candle::Error::Msg("a gradient is missing".into()));
        }
        if i >= 3 {
            forward.push(f);
            backward.push(b);
        }
    }
    let (f, b) = (median(forward), median(backward));
    println!(
        "linear 4096→{out}, batch 8: forward {f:.2} ms ({:.1} GB/s of the weight), backward {b:.2} ms ({:.1} GB/s over its two passes)",
        mb / f,
        2.0 * mb / b
    );
    Ok(())
}
