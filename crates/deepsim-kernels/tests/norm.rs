//! Layer norm and softmax over the last dimension: gradients against central finite
//! differences (f64), values against candle-nn's fused forward (whose missing backward is why
//! these ops exist: the test shows it cuts the gradient) and against the composites of candle
//! built-ins, and the argument errors.

mod common;

use candle::{DType, Tensor, Var, D};
use common::{assert_close, check_grads, rand, values};
use deepsim_kernels::{composite, gelu_erf, layer_norm, quick_gelu, softmax_last_dim};

const F64: DType = DType::F64;

#[test]
fn layer_norm_gradients_match_finite_differences() {
    // Rows of a ViT-like token matrix, a single row, and a row of one element (x̂ = 0).
    for (what, shape) in [("tokens", vec![2, 5, 7]), ("one row", vec![9]), ("D = 1", vec![4, 1])] {
        let d = *shape.last().unwrap();
        let (x, w, b) = (rand(&shape, 1, F64), rand(&[d], 2, F64), rand(&[d], 3, F64));
        let x = (x * 3.0).unwrap().broadcast_add(&rand(&[d], 4, F64)).unwrap();
        check_grads(&[x, w, b], |a| layer_norm(&a[0], &a[1], &a[2], 1e-5).unwrap(), what);
    }
}

#[test]
fn softmax_gradients_match_finite_differences() {
    for (what, shape) in [("attention", vec![2, 3, 6, 6]), ("one row", vec![11])] {
        let x = (rand(&shape, 5, F64) * 4.0).unwrap();
        check_grads(&[x], |a| softmax_last_dim(&a[0]).unwrap(), what);
    }
}

#[test]
fn quick_gelu_gradient_matches_finite_differences_and_values_the_composite() {
    // Both signs and the saturated tails (|1.702·x| up to ~20).
    let x = (rand(&[3, 4, 5], 13, F64) * 12.0).unwrap();
    check_grads(std::slice::from_ref(&x), |a| quick_gelu(&a[0]).unwrap(), "quick_gelu");
    // transformers' quick_gelu is x * sigmoid(1.702 * x); candle-nn's sigmoid is independent of
    // both the kernel and the composite.
    let x = x.to_dtype(DType::F32).unwrap();
    let reference = (&x * candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap()).unwrap();
    assert_close(&quick_gelu(&x).unwrap(), &reference, 1e-6, 1e-6, "quick_gelu vs sigmoid");
    assert_close(&composite::quick_gelu(&x).unwrap(), &reference, 1e-6, 1e-6, "composite");
    let err = quick_gelu(&x.to_dtype(DType::U8).unwrap()).unwrap_err().to_string();
    assert!(err.contains("quick_gelu") && err.contains("U8"), "{err}");
}

#[test]
fn gelu_erf_gradient_matches_finite_differences_and_values_candle() {
    let x = (rand(&[3, 4, 5], 14, F64) * 8.0).unwrap();
    check_grads(std::slice::from_ref(&x), |a| gelu_erf(&a[0]).unwrap(), "gelu_erf");
    // candle's own gelu_erf (one thread, the same libm erf) for the values, in both dtypes.
    assert_close(&gelu_erf(&x).unwrap(), &x.gelu_erf().unwrap(), 1e-14, 1e-14, "f64 vs candle");
    let x = x.to_dtype(DType::F32).unwrap();
    assert_close(&gelu_erf(&x).unwrap(), &x.gelu_erf().unwrap(), 1e-6, 1e-6, "f32 vs candle");
    let err = gelu_erf(&x.to_dtype(DType::U8).unwrap()).unwrap_err().to_string();
    assert!(err.contains("gelu_erf") && err.contains("U8"), "{err}");
}

#[test]
fn values_match_candle_nn_and_the_composites() {
    let x = (rand(&[3, 50, 384], 6, DType::F32) * 5.0).unwrap();
    let (w, b) = (rand(&[384], 7, DType::F32), rand(&[384], 8, DType::F32));
    let ln = layer_norm(&x, &w, &b, 1e-6).unwrap();
    let reference = candle_nn::ops::layer_norm(&x, &w, &b, 1e-6).unwrap();
    assert_close(&ln, &reference, 1e-5, 1e-5, "layer_norm vs candle-nn");
    assert_close(&ln, &composite::layer_norm(&x, &w, &b, 1e-6).unwrap(), 1e-5, 1e-5, "composite");

    let sm = softmax_last_dim(&x).unwrap();
    let reference = candle_nn::ops::softmax_last_dim(&x).unwrap();
    assert_close(&sm, &reference, 1e-5, 1e-7, "softmax vs candle-nn");
    assert_close(&sm, &composite::softmax_last_dim(&x).unwrap(), 1e-5, 1e-7, "composite");
    let sums = values(&sm.sum(D::Minus1).unwrap());
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "rows sum to 1");
}

/// candle-nn's fused ops give their input no gradient; these do, and it equals the
/// gradient of the composites of differentiable built-ins.
#[test]
fn gradients_flow_where_candle_nn_cuts_them() {
    let x = Var::from_tensor(&rand(&[4, 16], 9, F64)).unwrap();
    let (w, b) = (rand(&[16], 10, F64), rand(&[16], 11, F64));
    let r = rand(&[4, 16], 12, F64);
    let grad_of = |y: Tensor| {
        let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        grads.get(x.as_tensor()).cloned()
    };
    let x_t = x.as_tensor();
    // candle-nn's fused kernels take f32 only.
    let x32 = Var::from_tensor(&x_t.to_dtype(DType::F32).unwrap()).unwrap();
    let (w32, b32, r32) = [&w, &b, &r].map(|t| t.to_dtype(DType::F32).unwrap()).into();
    let cut = |y: Tensor| {
        let grads = (y * &r32).unwrap().sum_all().unwrap().backward().unwrap();
        grads.get(x32.as_tensor()).is_none()
    };
    assert!(cut(candle_nn::ops::softmax_last_dim(x32.as_tensor()).unwrap()), "candle-nn softmax");
    let ln = candle_nn::ops::layer_norm(x32.as_tensor(), &w32, &b32, 1e-5).unwrap();
    assert!(cut(ln), "candle-nn layer_norm");
    let ours = grad_of(softmax_last_dim(x_t).unwrap()).expect("softmax gradient");
    let theirs = grad_of(composite::softmax_last_dim(x_t).unwrap()).unwrap();
    assert_close(&ours, &theirs, 1e-10, 1e-12, "softmax gradient vs composite");
    let ours = grad_of(layer_norm(x_t, &w, &b, 1e-5).unwrap()).expect("layer_norm gradient");
    let theirs = grad_of(composite::layer_norm(x_t, &w, &b, 1e-5).unwrap()).unwrap();
    assert_close(&ours, &theirs, 1e-10, 1e-12, "layer_norm gradient vs composite");
}

#[test]
fn bad_arguments_are_named() {
    let x = rand(&[2, 8], 13, DType::F32);
    let w = rand(&[8], 14, DType::F32);
    let cases = [
        (layer_norm(&x, &rand(&[7], 1, DType::F32), &w, 1e-5), "weight"),
        (layer_norm(&x, &w, &rand(&[8], 1, F64), 1e-5), "bias"),
        (layer_norm(&x, &w, &w, 0.0), "eps"),
        (layer_norm(&rand(&[2, 0], 1, DType::F32), &w, &w, 1e-5), "x"),
        (softmax_last_dim(&Tensor::new(1f32, x.device()).unwrap()), "x"),
        (softmax_last_dim(&x.to_dtype(DType::U32).unwrap()), "dtype"),
    ];
    for (result, arg) in cases {
        let err = result.expect_err("an error").to_string();
        assert!(err.contains(arg), "{arg}: {err}");
    }
}
