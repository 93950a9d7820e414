//! `straight_through_clamp`: exactly the clamp where the usual detach composition is not, the
//! identity's gradient, NaN passed through, the composite against the kernel, bad bounds.

mod common;

use candle::{DType, Device, Tensor, Var};
use common::values;
use deepsim_kernels::{composite, straight_through_clamp};

/// Values where `x + (clamp(x, 0, 1) − x).detach()` misses the clamp in f32 (numpy, float32):
/// at 1e8 the difference `1 − 1e8` rounds to −1e8 (f32's spacing there is 8) and the sum is 0,
/// not 1; at 16777218 (2²⁴ + 2, spacing 2) `1 − x` = −16777217 rounds to even, −16777216, and
/// the sum is 2 — a value a comparator refuses; below 0, in range and at the bounds the
/// composition is exact.
const XS: [f32; 7] = [1e8, 16_777_218.0, -5e7, 0.25, 0.0, 1.0, 1.5];

#[test]
fn equals_the_clamp_where_the_detach_composition_does_not() {
    let x = Tensor::new(&XS, &Device::Cpu).unwrap();
    let want: Vec<f32> = x.clamp(0f32, 1f32).unwrap().to_vec1().unwrap();
    assert_eq!(want, [1.0, 1.0, 0.0, 0.25, 0.0, 1.0, 1.0]);
    let old: Vec<f32> =
        (&x + (x.clamp(0f32, 1f32).unwrap() - &x).unwrap().detach()).unwrap().to_vec1().unwrap();
    assert_eq!(old[..2], [0.0, 2.0], "the composition this op replaces");
    for got in [
        straight_through_clamp(&x, 0.0, 1.0).unwrap(),
        composite::straight_through_clamp(&x, 0.0, 1.0).unwrap(),
    ] {
        assert_eq!(got.to_vec1::<f32>().unwrap(), want);
    }
    // f64 and a wider interval; NaN stays NaN.
    let y = Tensor::new(&[-3.0f64, 0.5, 9.0, f64::NAN], &Device::Cpu).unwrap();
    let got = values(&straight_through_clamp(&y, -1.0, 2.0).unwrap());
    assert_eq!(got[..3], [-1.0, 0.5, 2.0]);
    assert!(got[3].is_nan());
}

#[test]
fn the_gradient_is_the_identity() {
    let x = Var::from_tensor(&Tensor::new(&XS, &Device::Cpu).unwrap()).unwrap();
    let r = Tensor::new(&[1f32, -2., 3., -4., 5., -6., 7.], &Device::Cpu).unwrap();
    for f in [straight_through_clamp, composite::straight_through_clamp] {
        let y = f(x.as_tensor(), 0.0, 1.0).unwrap();
        let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), r.to_vec1::<f32>().unwrap());
    }
    // Shapes other than 1-D and non-contiguous views.
    let m = Tensor::arange(0f32, 12., &Device::Cpu).unwrap().reshape((3, 4)).unwrap();
    let t = m.t().unwrap();
    let got = straight_through_clamp(&t, 2.0, 9.0).unwrap();
    assert_eq!(got.dims(), [4, 3]);
    assert_eq!(values(&got), values(&t.clamp(2f32, 9f32).unwrap()));
}

#[test]
fn bad_bounds_and_dtypes_are_named() {
    let x = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    for (lo, hi) in [(1.0, 0.0), (f64::NAN, 1.0), (0.0, f64::INFINITY)] {
        let err = straight_through_clamp(&x, lo, hi).unwrap_err().to_string();
        assert!(err.contains("straight_through_clamp") && err.contains("finite interval"), "{err}");
    }
    let ints = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
    let err = straight_through_clamp(&ints, 0.0, 1.0).unwrap_err().to_string();
    assert!(err.contains("straight_through_clamp") && err.contains("U32"), "{err}");
}
