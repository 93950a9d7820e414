//! Helpers shared by the unit tests of this crate's modules.

use candle::{Device, Tensor};

/// A deterministic f64 tensor of shape `dims` with values spread over `[-11, 11]·scale`
/// (`(i·37 mod 23) − 11` at flat index `i`): no zero runs, no symmetry a bug could hide behind.
pub(crate) fn seq(dims: &[usize], scale: f64) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 23) as f64 - 11.0) * scale).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("the data has the shape's length")
}
