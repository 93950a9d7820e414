//! Benchmark modules and the helpers they share.

pub mod comparators;

use candle::{Device, Tensor};

/// Deterministic pseudo-random tensor in [0, 1) (values do not affect timing).
pub fn image(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = deepsim_comparators::seeded::uniform(seed, n)
        .into_iter()
        .map(|u| (u + 1.0) / 2.0)
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
