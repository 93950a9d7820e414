//! `blur_pool2d`: values worked by hand, gradients against finite differences (the second
//! order is in `double_backward.rs`), the composite against the kernel, the public backward
//! against autograd, and bad arguments.

mod common;

use candle::{DType, Device, Tensor, Var};
use common::{assert_close, check_grads, rand, values};
use deepsim_kernels::{blur_pool2d, blur_pool2d_backward, composite, BlurPool2dConfig};

#[test]
fn one_row_by_hand() {
    // x = [0, 1, 2, 3, 4], filter [1, 2, 1]/4, reflection pad 2 each side:
    // padded [2, 1, 0, 1, 2, 3, 4, 3, 2], windows start at 0, 2, 4 (stride 2):
    // (2 + 2 + 0)/4 = 1, (0 + 2 + 2)/4 = 1, (2 + 6 + 4)/4 = 3, and (4 + 6 + 2)/4 = 3 at 6.
    // Along the height (one row) the padding reflects the row onto itself: the same values.
    let row = Tensor::new(&[0f64, 1., 2., 3., 4.], &Device::Cpu).unwrap();
    let x = row.reshape((1, 1, 1, 5)).unwrap();
    let cfg = BlurPool2dConfig::shift_tolerant(3);
    // A single row cannot reflect 2 pixels: refused by name.
    let err = blur_pool2d(&x, &cfg).unwrap_err().to_string();
    assert!(err.contains("blur_pool2d") && err.contains("reflection padding"), "{err}");
    // Three equal rows: (3 + 4 − 3)/2 + 1 = 3 output rows, each the row's result.
    let x = x.repeat((1, 1, 3, 1)).unwrap();
    let y = blur_pool2d(&x, &cfg).unwrap();
    assert_eq!(y.dims(), [1, 1, 3, 4]);
    assert_eq!(values(&y), [1., 1., 3., 3., 1., 1., 3., 3., 1., 1., 3., 3.]);
}

#[test]
fn taps_are_binomial_and_sum_to_one() {
    let five = BlurPool2dConfig::antialiased(5);
    assert_eq!(five.taps(), [1. / 16., 4. / 16., 6. / 16., 4. / 16., 1. / 16.]);
    assert_eq!(five.padding, (2, 2));
    assert_eq!(BlurPool2dConfig::antialiased(4).padding, (1, 2));
    assert_eq!(BlurPool2dConfig::shift_tolerant(3).padding, (2, 2));
    // A constant image stays constant (reflection keeps it, the filter sums to one).
    let x = (Tensor::ones((2, 3, 9, 8), DType::F64, &Device::Cpu).unwrap() * 0.7).unwrap();
    for cfg in [five, BlurPool2dConfig::shift_tolerant(3), BlurPool2dConfig::antialiased(2)] {
        let y = blur_pool2d(&x, &cfg).unwrap();
        assert!(values(&y).iter().all(|v| (v - 0.7).abs() < 1e-15), "{cfg:?}");
    }
}

fn cases() -> Vec<([usize; 4], BlurPool2dConfig)> {
    vec![
        ([2, 3, 7, 6], BlurPool2dConfig::shift_tolerant(3)),
        ([1, 2, 9, 10], BlurPool2dConfig::antialiased(3)),
        ([1, 2, 8, 5], BlurPool2dConfig::antialiased(4)),
        ([2, 1, 11, 9], BlurPool2dConfig { stride: 3, ..BlurPool2dConfig::shift_tolerant(5) }),
        ([1, 2, 4, 4], BlurPool2dConfig { stride: 1, ..BlurPool2dConfig::antialiased(1) }),
    ]
}

#[test]
fn gradients_match_finite_differences() {
    for (shape, cfg) in cases() {
        let x = rand(&shape, 11, DType::F64);
        check_grads(&[x], |a| blur_pool2d(&a[0], &cfg).unwrap(), &format!("{shape:?} {cfg:?}"));
    }
}

#[test]
fn composite_and_public_backward_match_the_kernel() {
    for (shape, cfg) in cases() {
        let x = Var::from_tensor(&rand(&shape, 13, DType::F64)).unwrap();
        let y = blur_pool2d(x.as_tensor(), &cfg).unwrap();
        let z = composite::blur_pool2d(x.as_tensor(), &cfg).unwrap();
        assert_close(&y, &z, 1e-13, 1e-14, &format!("{shape:?}: composite forward"));
        let r = rand(y.dims(), 14, DType::F64);
        let g_kernel = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_comp = (&z * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gk, gc) = (g_kernel.get(x.as_tensor()).unwrap(), g_comp.get(x.as_tensor()).unwrap());
        assert_close(gk, gc, 1e-13, 1e-14, &format!("{shape:?}: composite gradient"));
        let manual = blur_pool2d_backward(&r, &shape, &cfg).unwrap();
        assert_close(&manual, gk, 1e-13, 1e-14, &format!("{shape:?}: public backward"));
    }
    // f32 runs the same kernel.
    let x = rand(&[1, 2, 7, 7], 15, DType::F64);
    let cfg = BlurPool2dConfig::shift_tolerant(3);
    let y32 = blur_pool2d(&x.to_dtype(DType::F32).unwrap(), &cfg).unwrap();
    assert_close(&y32, &blur_pool2d(&x, &cfg).unwrap(), 1e-6, 1e-7, "f32");
}

#[test]
fn bad_arguments_are_named() {
    let x = rand(&[1, 2, 5, 5], 16, DType::F64);
    let base = BlurPool2dConfig::shift_tolerant(3);
    let bad = [
        (BlurPool2dConfig { filter: 0, ..base }, "config.filter"),
        (BlurPool2dConfig { filter: 8, ..base }, "config.filter"),
        (BlurPool2dConfig { stride: 0, ..base }, "config.stride"),
        (BlurPool2dConfig { padding: (5, 0), ..base }, "reflection padding"),
    ];
    for (cfg, want) in bad {
        let err = blur_pool2d(&x, &cfg).unwrap_err().to_string();
        assert!(err.contains(want), "{cfg:?}: {err}");
    }
    let err = blur_pool2d(&x.flatten_all().unwrap(), &base).unwrap_err().to_string();
    assert!(err.contains("rank 1"), "{err}");
    let g = rand(&[1, 2, 3, 3], 17, DType::F64);
    let err = blur_pool2d_backward(&g, &[1, 2, 9, 9], &base).unwrap_err().to_string();
    assert!(err.contains("blur_pool2d_backward") && err.contains("expected [1, 2, 6, 6]"), "{err}");
}
