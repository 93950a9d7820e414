//! Benchmark modules, one per subject, and the helpers they share.

pub mod alexnet;
pub mod conv;
pub mod lrn;
pub mod pool;

use candle::{Device, Tensor};

/// Deterministic pseudo-random tensor in [-1, 1) (no dependency on candle's RNG state).
pub fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("shape matches data")
}

/// Criterion settings for slow, whole-network benchmarks.
pub fn slow() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(2))
        .measurement_time(std::time::Duration::from_secs(8))
}
