//! LPIPS' per-layer distance kernel against its composition from candle's built-ins (the
//! formula of the `lpips` package) and central finite differences.

mod common;

use candle::{DType, Tensor};
use common::{assert_close, check_grads, rand};
use deepsim_kernels::unit_weighted_sq_distance;

/// The formula written with candle's ops: normalize across channels, weight, sum.
fn reference(a: &Tensor, b: &Tensor, w: &Tensor) -> Tensor {
    let unit = |f: &Tensor| {
        let norm = (f.sqr().unwrap().sum_keepdim(1).unwrap() + 1e-20).unwrap().sqrt().unwrap();
        f.broadcast_div(&(norm + 1e-10).unwrap()).unwrap()
    };
    let w = w.reshape((1, (), 1, 1)).unwrap();
    (unit(a) - unit(b)).unwrap().sqr().unwrap().broadcast_mul(&w).unwrap().sum_keepdim(1).unwrap()
}

#[test]
fn matches_the_formula_and_finite_differences() {
    for dims in [[2, 5, 4, 3], [1, 1, 1, 1], [3, 16, 2, 7]] {
        let (a, b) = (rand(&dims, 1, DType::F64), rand(&dims, 2, DType::F64));
        let w = rand(&dims[1..2], 3, DType::F64).abs().unwrap();
        let got = unit_weighted_sq_distance(&a, &b, &w).unwrap();
        assert_close(&got, &reference(&a, &b, &w), 1e-12, 1e-14, &format!("{dims:?}"));
        check_grads(
            &[a.clone(), b.clone()],
            |x| unit_weighted_sq_distance(&x[0], &x[1], &w).unwrap(),
            &format!("{dims:?}"),
        );
        // f32 against the f64 formula.
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let got = unit_weighted_sq_distance(&f(&a), &f(&b), &f(&w)).unwrap();
        assert_close(&got, &reference(&a, &b, &w), 1e-5, 1e-6, &format!("{dims:?} f32"));
    }
}

#[test]
fn large_maps_match_the_formula() {
    // More pixels than one task of the forward pass takes (2¹⁸ values of both maps: 43 690
    // pixels at 3 channels, 32 at 4096), not a multiple of it.
    for dims in [[2, 3, 250, 181], [1, 4096, 5, 13]] {
        let (a, b) = (rand(&dims, 11, DType::F64), rand(&dims, 12, DType::F64));
        let w = rand(&dims[1..2], 13, DType::F64).abs().unwrap();
        let got = unit_weighted_sq_distance(&a, &b, &w).unwrap();
        assert_close(&got, &reference(&a, &b, &w), 1e-12, 1e-14, &format!("{dims:?}"));
    }
}

#[test]
fn all_zero_pixels_have_finite_gradients() {
    let a = Tensor::zeros((1, 4, 2, 2), DType::F64, &candle::Device::Cpu).unwrap();
    let b = rand(&[1, 4, 2, 2], 5, DType::F64);
    let w = rand(&[4], 6, DType::F64).abs().unwrap();
    let av = candle::Var::from_tensor(&a).unwrap();
    let d = unit_weighted_sq_distance(av.as_tensor(), &b, &w).unwrap();
    let g = d.sum_all().unwrap().backward().unwrap();
    let g: Vec<f64> = g.get(av.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
}

#[test]
fn bad_arguments_are_errors() {
    let a = rand(&[1, 3, 2, 2], 7, DType::F32);
    let w = rand(&[3], 8, DType::F32);
    let cases = [
        (
            unit_weighted_sq_distance(&a, &rand(&[1, 3, 2, 3], 9, DType::F32), &w),
            "expected the shape of a",
        ),
        (unit_weighted_sq_distance(&a, &a, &rand(&[4], 9, DType::F32)), "expected 3 values"),
        (unit_weighted_sq_distance(&a, &a.to_dtype(DType::F64).unwrap(), &w), "dtype"),
        (unit_weighted_sq_distance(&a.flatten_all().unwrap(), &a, &w), "rank 1"),
    ];
    for (r, want) in cases {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("unit_weighted_sq_distance") && e.contains(want), "{e}");
    }
}
