//! Helpers shared by the integration tests: seeded tensors, closeness, finite differences.

#![allow(dead_code)]

use candle::{DType, Device, Tensor, Var};
use deepsim_kernels::{Activation, Conv2dConfig, ConvAlgorithm, FrozenConv2d};

/// A seeded tensor with entries uniform in [-1, 1) (a 64-bit LCG: same values on every machine).
pub fn rand(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Flattened f64 values of a tensor.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` elementwise, with the first offending index in the message.
pub fn assert_close(a: &Tensor, b: &Tensor, rtol: f64, atol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (a, b) = (values(a), values(b));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}: element {i}: {x} vs {y} (|diff| {})",
            (x - y).abs()
        );
    }
}

/// Checks the gradient of `L(x) = Σ f(x) ⊙ r` (fixed random `r`) w.r.t. each tensor in `args`
/// against central finite differences in f64. `f` receives the arguments as tensors; the
/// analytic gradient comes from candle's backward with every argument a `Var`.
pub fn check_grads(args: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor, what: &str) {
    let args: Vec<Tensor> = args.iter().map(|a| a.to_dtype(DType::F64).unwrap()).collect();
    let vars: Vec<Var> = args.iter().map(|a| Var::from_tensor(a).unwrap()).collect();
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&inputs);
    let r = rand(y.dims(), 4242, DType::F64);
    let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap();
    let grads = loss(&y).backward().unwrap();
    let eps = 1e-6;
    for (k, arg) in args.iter().enumerate() {
        let analytic = grads
            .get(vars[k].as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for argument {k}"));
        let analytic = values(analytic);
        let base = values(arg);
        // Every element of small arguments, a spread of 97 of large ones.
        let idx: Vec<usize> = if base.len() <= 400 {
            (0..base.len()).collect()
        } else {
            (0..97).map(|i| i * 7919 % base.len()).collect()
        };
        for i in idx {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let moved = Tensor::from_vec(v, arg.dims(), &Device::Cpu).unwrap();
                let mut a: Vec<Tensor> = args.clone();
                a[k] = moved;
                loss(&f(&a)).to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let diff = (numeric - analytic[i]).abs();
            assert!(
                diff <= 1e-6 + 1e-5 * numeric.abs(),
                "{what}: d/d arg{k}[{i}]: analytic {} vs finite difference {numeric}",
                analytic[i]
            );
        }
    }
}

/// The device a device test runs on: `DEEPSIM_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`,
/// `metal`; the CPU when unset). A device this build or machine lacks fails the test with
/// candle's reason, never falls back to the CPU.
pub fn test_device() -> Device {
    let name = std::env::var("DEEPSIM_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let opened = match name.as_str() {
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0),
        "cuda" => Device::new_cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::new_cuda(n),
            None => panic!("DEEPSIM_TEST_DEVICE={other:?}: expected cpu, cuda, cuda:N or metal"),
        },
    };
    opened.unwrap_or_else(|e| panic!("DEEPSIM_TEST_DEVICE={name:?} cannot be opened: {e}"))
}

/// A frozen convolution with weight `w`, bias `b`, `act` fused, run by `algo`.
pub fn frozen_layer(
    w: &Tensor,
    b: &Tensor,
    cfg: Conv2dConfig,
    act: Activation,
    algo: ConvAlgorithm,
) -> FrozenConv2d {
    FrozenConv2d::new(w.clone(), Some(b.clone()), cfg)
        .unwrap()
        .with_activation(act)
        .with_algorithm(algo)
        .unwrap()
}

/// Output and input gradient of `L = Σ layer(x) ⊙ r`.
pub fn output_and_grad(layer: &FrozenConv2d, x: &Tensor, r: &Tensor) -> (Tensor, Tensor) {
    let x = Var::from_tensor(x).unwrap();
    let y = layer.forward(x.as_tensor()).unwrap();
    let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(x.as_tensor()).expect("input gradient").clone())
}

/// Largest |a − b| over the largest |b|.
pub fn relative_max_error(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}
