//! `bias_leaky_relu` against the formula written element by element, its gradients (first
//! and second order) against finite differences (this file's only backward-running test sets
//! `CANDLE_GRAD_DO_NOT_DETACH`, which candle reads once per thread), and its argument errors.

mod common;

use candle::{DType, Device, Tensor, Var};
use common::{assert_close, check_grads, rand, values};
use deepsim_kernels::{bias_leaky_relu, Error};

/// `v = x + b[c]`, `v` if `v > 0` else `α·v`, element by element in f64.
fn by_hand(x: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    let dims = x.dims();
    let inner: usize = dims[2..].iter().product();
    let (xs, bs) = (values(x), values(b));
    let ys: Vec<f64> = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let v = x + bs[i / inner % dims[1]];
            if v > 0.0 {
                v
            } else {
                alpha * v
            }
        })
        .collect();
    Tensor::from_vec(ys, dims, &Device::Cpu).unwrap()
}

#[test]
fn equals_the_formula_for_every_rank_and_slope() {
    for dims in [vec![4, 6], vec![2, 3, 5], vec![2, 5, 33, 70], vec![1, 1, 1, 1]] {
        for alpha in [0.0, 0.3, 1.0, 2.5] {
            for dtype in [DType::F32, DType::F64] {
                let x = rand(&dims, 1, dtype);
                let b = rand(&dims[1..2], 2, dtype);
                let got = bias_leaky_relu(&x, &b, alpha).unwrap();
                let what = format!("{dims:?} α {alpha} {dtype:?}");
                assert_close(&got, &by_hand(&x, &b, alpha), 1e-6, 1e-7, &what);
            }
        }
    }
    // A strided (transposed) input reads the same values.
    let x = rand(&[2, 3, 4, 5], 3, DType::F32);
    let b = rand(&[3], 4, DType::F32);
    let xt = x.transpose(2, 3).unwrap();
    assert_close(&bias_leaky_relu(&xt, &b, 0.3).unwrap(), &by_hand(&xt, &b, 0.3), 1e-6, 1e-7, "t");
}

#[test]
fn gradients_match_finite_differences() {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    for alpha in [0.0, 0.3, 1.0] {
        let (x, b) = (rand(&[2, 3, 4, 5], 5, DType::F64), rand(&[3], 6, DType::F64));
        let what = format!("α {alpha}");
        check_grads(
            &[x.clone(), b.clone()],
            |a| bias_leaky_relu(&a[0], &a[1], alpha).unwrap(),
            &what,
        );
        // The backward passes are differentiable in turn: f(v) = (∂⟨y, v⟩/∂x, ∂⟨y, v⟩/∂b),
        // checked against finite differences in v.
        let both_grads = |v: &[Tensor]| {
            let (xv, bv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&b).unwrap());
            let y = bias_leaky_relu(xv.as_tensor(), bv.as_tensor(), alpha).unwrap();
            let grads = (y * &v[0]).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = grads.get(xv.as_tensor()).unwrap().flatten_all().unwrap();
            Tensor::cat(&[dx, grads.get(bv.as_tensor()).unwrap().clone()], 0).unwrap()
        };
        let v = rand(&[2, 3, 4, 5], 7, DType::F64);
        check_grads(&[v], both_grads, &format!("{what}, second order"));
    }
    // At v = x + b = 0 exactly the slope is α (PyTorch's convention: 0 for a ReLU).
    let xv = Var::from_tensor(&Tensor::new(&[[0f64, 2.0, -2.0]], &Device::Cpu).unwrap()).unwrap();
    let zero = Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap();
    for alpha in [0.0, 0.3] {
        let y =
            bias_leaky_relu(&xv.as_tensor().t().unwrap(), &zero.narrow(0, 0, 1).unwrap(), alpha);
        let grads = y.unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(values(grads.get(xv.as_tensor()).unwrap()), [alpha, 1.0, alpha], "α {alpha}");
    }
    // A frozen bias gets no gradient; the input still does.
    let b = rand(&[3], 8, DType::F64);
    let xv = Var::from_tensor(&rand(&[2, 3, 4], 9, DType::F64)).unwrap();
    let grads = bias_leaky_relu(xv.as_tensor(), &b, 0.3).unwrap().sum_all().unwrap().backward();
    let grads = grads.unwrap();
    assert!(grads.get(&b).is_none());
    assert!(grads.get(xv.as_tensor()).is_some());
}

#[test]
fn rejects_bad_arguments() {
    let msg = |r: deepsim_kernels::Result<Tensor>| match r {
        Err(e @ Error::InvalidArgument { .. }) => e.to_string(),
        Err(other) => panic!("expected InvalidArgument, got {other}"),
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.dims()),
    };
    let x = rand(&[2, 3, 4, 4], 1, DType::F32);
    let b = rand(&[3], 2, DType::F32);
    let cases = [
        (bias_leaky_relu(&x, &rand(&[4], 3, DType::F32), 0.3), "`bias` (shape [4]): expected [3]"),
        (bias_leaky_relu(&x, &b.to_dtype(DType::F64).unwrap(), 0.3), "dtype F64 differs"),
        (bias_leaky_relu(&rand(&[3], 4, DType::F32), &b, 0.3), "`x` (shape [3])"),
        (bias_leaky_relu(&x.to_dtype(DType::U8).unwrap(), &b, 0.3), "dtype U8"),
        (bias_leaky_relu(&x, &b, -0.1), "`alpha`"),
        (bias_leaky_relu(&x, &b, f64::NAN), "NaN"),
    ];
    for (r, needle) in cases {
        let m = msg(r);
        assert!(m.starts_with("bias_leaky_relu") && m.contains(needle), "{m:?} lacks {needle:?}");
    }
    let empty = Tensor::zeros((2, 3, 0), DType::F32, &Device::Cpu).unwrap();
    assert!(msg(bias_leaky_relu(&empty, &b, 0.3)).contains("zero-sized"));
}
