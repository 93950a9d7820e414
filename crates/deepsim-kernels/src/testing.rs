//! Helpers shared by the unit tests of this crate's modules.

use candle::{Device, Tensor};

/// A deterministic f64 tensor of shape `dims` with values spread over `[-11, 11]·scale`
/// (`(i·37 mod 23) − 11` at flat index `i`): no zero runs, no symmetry a bug could hide behind.
pub(crate) fn seq(dims: &[usize], scale: f64) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 23) as f64 - 11.0) * scale).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("the data has the shape's length")
}

/// `n` pseudo-random f64 values in `[-1, 1)` from `seed` (a 64-bit linear congruential
/// generator): no period a bug could hide behind.
pub(crate) fn seeded(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}
