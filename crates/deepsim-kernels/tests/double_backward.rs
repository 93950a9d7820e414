//! Second derivatives through a frozen convolution without a fused activation (its input
//! gradient is itself differentiable, by either CPU algorithm) and through a blur pool (its
//! backward is its adjoint, whose backward is the blur pool again).
//!
//! candle detaches gradients unless `CANDLE_GRAD_DO_NOT_DETACH` is set when a thread first runs
//! a backward pass, so this file holds a single test that sets it before anything else runs.

mod common;

use candle::{DType, Var};
use common::{check_grads, rand};
use deepsim_kernels::{blur_pool2d, BlurPool2dConfig, Conv2dConfig, ConvAlgorithm, FrozenConv2d};

#[test]
fn input_gradient_is_differentiable() {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    let cfg = Conv2dConfig::new(1, 1);
    let x = rand(&[2, 3, 6, 5], 1, DType::F64);
    for algo in [ConvAlgorithm::Im2col, ConvAlgorithm::Winograd] {
        let w = rand(&[4, 3, 3, 3], 2, DType::F64);
        let layer = FrozenConv2d::new(w, None, cfg).unwrap().with_algorithm(algo).unwrap();
        // f(v) = ∂⟨layer(x), v⟩/∂x = Jᵀv; its gradient w.r.t. v goes through the backward's
        // own backward (the forward conv), checked against finite differences.
        let input_grad = |v: &[candle::Tensor]| {
            let xv = Var::from_tensor(&x).unwrap();
            let y = layer.forward(xv.as_tensor()).unwrap();
            let grads = (y * &v[0]).unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(xv.as_tensor()).unwrap().clone()
        };
        check_grads(&[rand(&[2, 4, 6, 5], 3, DType::F64)], input_grad, &format!("{algo:?}"));
    }
    let cfg = BlurPool2dConfig::shift_tolerant(3);
    let x = rand(&[2, 3, 7, 6], 4, DType::F64);
    let blur_grad = |v: &[candle::Tensor]| {
        let xv = Var::from_tensor(&x).unwrap();
        let y = blur_pool2d(xv.as_tensor(), &cfg).unwrap();
        let grads = (y * &v[0]).unwrap().sum_all().unwrap().backward().unwrap();
        grads.get(xv.as_tensor()).unwrap().sqr().unwrap()
    };
    let v = rand(blur_pool2d(&x, &cfg).unwrap().dims(), 5, DType::F64);
    check_grads(&[v], blur_grad, "blur pool");
}
