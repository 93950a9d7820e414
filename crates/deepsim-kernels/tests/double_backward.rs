//! Second derivatives through a frozen convolution without a fused activation (its input
//! gradient is itself differentiable, by either CPU algorithm), through a blur pool (its
//! backward is its adjoint, whose backward is the blur pool again) and through a transposed
//! convolution whose two gradients share their im2col columns.
//!
//! candle detaches gradients unless `CANDLE_GRAD_DO_NOT_DETACH` is set when a thread first runs
//! a backward pass, so this file holds a single test that sets it before anything else runs.

mod common;

use candle::{DType, Var};
use common::assert_close;
use common::{check_grads, rand};
use deepsim_kernels::{
    blur_pool2d, conv_transpose2d, BlurPool2dConfig, Conv2dConfig, ConvAlgorithm,
    ConvTranspose2dConfig, FrozenConv2d,
};

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

    // A 192 × 192 × 4 × 4 up-convolution on 4×4 maps, input and weight both variables: its
    // input and weight gradients come from one set of columns, and the input gradient's own
    // gradients (w.r.t. the output gradient and the weight) equal candle's.
    let f32 = DType::F32;
    let (x, w) = (rand(&[2, 192, 4, 4], 6, f32), (rand(&[192, 192, 4, 4], 7, f32) * 0.05).unwrap());
    let (v, r) = (rand(&[2, 192, 8, 8], 8, f32), rand(&[2, 192, 4, 4], 9, f32));
    let second = |ours: bool| {
        let (xv, wv, vv) = [&x, &w, &v].map(|t| Var::from_tensor(t).unwrap()).into();
        let y = if ours {
            conv_transpose2d(
                xv.as_tensor(),
                wv.as_tensor(),
                None,
                &ConvTranspose2dConfig::new(2, 1),
            )
            .unwrap()
        } else {
            xv.as_tensor().conv_transpose2d(wv.as_tensor(), 1, 0, 2, 1).unwrap()
        };
        let grads = (y * vv.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = grads.get(xv.as_tensor()).unwrap();
        let second = (dx * &r).unwrap().sum_all().unwrap().backward().unwrap();
        [vv, wv].map(|t| second.get(t.as_tensor()).unwrap().clone())
    };
    let (ours, candles) = (second(true), second(false));
    for ((a, b), name) in ours.iter().zip(&candles).zip(["output gradient", "weight"]) {
        assert_close(
            a,
            b,
            1e-3,
            1e-3,
            &format!("up-convolution's input gradient w.r.t. the {name}"),
        );
    }
}
