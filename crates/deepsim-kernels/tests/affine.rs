//! `ChannelAffine` against the same map written with candle's built-ins, its gradients (first
//! and second order) against finite differences (this file's only backward-running test sets
//! `CANDLE_GRAD_DO_NOT_DETACH`, which candle reads once per thread), and `value_range` against candle's min/max.

mod common;

use candle::{DType, Device, Tensor, Var};
use common::{assert_close, check_grads, rand};
use deepsim_kernels::{value_range, ChannelAffine, Error};

/// `scale[c] · x[:, source[c]] + shift[c]` from candle's ops, channel by channel.
fn by_hand(x: &Tensor, source: &[usize], scale: &[f64], shift: &[f64]) -> Tensor {
    let planes: Vec<Tensor> = (0..source.len())
        .map(|c| x.narrow(1, source[c], 1).unwrap().affine(scale[c], shift[c]).unwrap())
        .collect();
    Tensor::cat(&planes, 1).unwrap()
}

#[test]
fn equals_the_map_written_with_candle_ops() {
    let (scale, shift) = ([255.0, 2.0 / 0.448, -0.5, 3.0], [-104.0, 0.2, 7.0, 0.0]);
    for source in [[0, 1, 2, 3], [2, 1, 0, 3], [3, 0, 1, 2]] {
        let op = ChannelAffine::new(&scale, &shift).unwrap().with_source(&source).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let x = rand(&[3, 4, 5, 7], 1, dtype);
            let want = by_hand(&x, &source, &scale, &shift);
            assert_close(&op.forward(&x).unwrap(), &want, 1e-6, 1e-5, &format!("{source:?}"));
            // A strided (transposed) input reads the same values.
            let xt = x.transpose(2, 3).unwrap();
            let want = by_hand(&xt, &source, &scale, &shift);
            assert_close(&op.forward(&xt).unwrap(), &want, 1e-6, 1e-5, "strided input");
        }
    }
}

#[test]
fn forward_cat_equals_the_concatenated_maps() {
    let (scale, shift) = ([255.0, 2.0 / 0.448, -0.5], [-104.0, 0.2, 7.0]);
    let op = ChannelAffine::new(&scale, &shift).unwrap().with_source(&[2, 0, 1]).unwrap();
    for dtype in [DType::F32, DType::F64] {
        // Different batch sizes, and a strided second input.
        let a = rand(&[2, 3, 5, 7], 11, dtype);
        let b = rand(&[1, 3, 7, 5], 12, dtype).transpose(2, 3).unwrap();
        let both = op.forward_cat(&a, &b).unwrap();
        let by_hand = |x: &Tensor| by_hand(x, &[2, 0, 1], &scale, &shift);
        let want = Tensor::cat(&[by_hand(&a), by_hand(&b)], 0).unwrap();
        assert_close(&both, &want, 1e-6, 1e-5, &format!("{dtype:?}"));
    }
    // Mismatched images and channels are refused, naming the argument.
    let three = rand(&[1, 3, 5, 7], 13, DType::F32);
    let e = op.forward_cat(&three, &rand(&[1, 3, 5, 6], 14, DType::F32)).unwrap_err().to_string();
    assert!(e.contains("b") && e.contains("[1, 3, 5, 6]") && e.contains("5×7"), "{e}");
    let e = op.forward_cat(&rand(&[1, 4, 5, 7], 15, DType::F32), &three).unwrap_err().to_string();
    assert!(e.contains("[1, 4, 5, 7]") && e.contains("expected 3 channels"), "{e}");
}

#[test]
fn gradients_match_finite_differences() {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    let op = ChannelAffine::new(&[1.5, -2.0, 0.25], &[0.1, 0.2, -0.3])
        .unwrap()
        .with_source(&[1, 2, 0])
        .unwrap();
    check_grads(&[rand(&[2, 3, 4, 5], 3, DType::F64)], |a| op.forward(&a[0]).unwrap(), "affine");
    let pair = [rand(&[2, 3, 4, 5], 8, DType::F64), rand(&[1, 3, 4, 5], 9, DType::F64)];
    check_grads(&pair, |x| op.forward_cat(&x[0], &x[1]).unwrap(), "affine of a pair");
    // The backward is itself the adjoint map, differentiable in turn: f(v) = Jᵀv, the input
    // gradient of ⟨op(x), v⟩, checked against finite differences in v.
    let x = rand(&[2, 3, 4, 5], 5, DType::F64);
    let input_grad = |v: &[Tensor]| {
        let xv = Var::from_tensor(&x).unwrap();
        let y = op.forward(xv.as_tensor()).unwrap();
        let grads = (y * &v[0]).unwrap().sum_all().unwrap().backward().unwrap();
        grads.get(xv.as_tensor()).unwrap().clone()
    };
    check_grads(&[rand(&[2, 3, 4, 5], 6, DType::F64)], input_grad, "affine's backward");
}

#[test]
fn rejects_bad_maps_and_inputs() {
    let msg = |r: deepsim_kernels::Result<ChannelAffine>| match r {
        Err(e @ Error::InvalidArgument { .. }) => e.to_string(),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(msg(ChannelAffine::new(&[1.0, 2.0], &[0.0])).contains("one value per channel"));
    assert!(msg(ChannelAffine::new(&[f64::NAN], &[0.0])).contains("NaN is not finite"));
    let three = || ChannelAffine::new(&[1.0; 3], &[0.0; 3]).unwrap();
    assert!(msg(three().with_source(&[0, 0, 1])).contains("not a permutation"));
    assert!(msg(three().with_source(&[0, 1, 3])).contains("not a permutation"));
    assert!(msg(three().with_source(&[0, 1])).contains("expected 3 channels"));
    let four = rand(&[1, 4, 2, 2], 1, DType::F32);
    let e = three().forward(&four).unwrap_err().to_string();
    assert!(e.contains("[1, 4, 2, 2]") && e.contains("expected 3 channels"), "{e}");
}

#[test]
fn value_range_finds_extremes_and_nan() {
    let x = rand(&[3, 3, 50, 70], 7, DType::F32);
    let lo = x.flatten_all().unwrap().min(0).unwrap().to_scalar::<f32>().unwrap() as f64;
    let hi = x.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap() as f64;
    assert_eq!(value_range(&x).unwrap(), Some((lo, hi)));
    // One NaN in the last chunk makes the range unknown.
    let mut v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let last = v.len() - 3;
    v[last] = f32::NAN;
    let with_nan = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
    assert_eq!(value_range(&with_nan).unwrap(), None);
    // A NaN among the sixteen-wide lanes, and extremes in the tail past the last full lanes.
    let mut v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let n = v.len();
    (v[n - 1], v[n - 2]) = (5.0, -5.0);
    let tail = Tensor::from_vec(v.clone(), x.dims(), &Device::Cpu).unwrap();
    assert_eq!(value_range(&tail).unwrap(), Some((-5.0, 5.0)));
    v[17] = f32::NAN;
    let with_nan = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
    assert_eq!(value_range(&with_nan).unwrap(), None);
    let empty = Tensor::zeros((0, 3), DType::F64, &Device::Cpu).unwrap();
    assert_eq!(value_range(&empty).unwrap(), None);
    assert!(value_range(&x.to_dtype(DType::U8).unwrap()).is_err());
}
