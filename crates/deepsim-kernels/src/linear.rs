//! A trainable fully connected layer `y = x·Wᵀ + b` whose weight gradient is produced in the
//! weight's own `[out, in]` layout.
//!
//! candle's `x.matmul(&w.t())` differentiates through the transpose: the weight's gradient
//! arrives as the transposed view of an `[in, out]` product, and autograd adds it into the
//! weight's `[out, in]` gradient element by element across rows. For the 4096×4096 layers of
//! the paper's generator that strided add cost more than the products themselves.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::check::{by_float_dtype, contiguous, same_dtype_device, Real};
use crate::error::{invalid, Result};
use crate::gemm::{matmul, parallelism, Mat};

/// `x·Wᵀ + b` for `x` `[N, in]`, `weight` `[out, in]` (PyTorch's and candle-nn's layout) and
/// `bias` `[out]`: candle-nn's `Linear` for rank-2 inputs, with a backward that writes the
/// weight gradient directly as `gradᵀ·x` `[out, in]` and skips it when the weight is not
/// tracked.
///
/// # Shapes
/// `x` `[N, in]`, `weight` `[out, in]`, `bias` `[out]` → `[N, out]`.
///
/// # Errors
/// A rank other than 2, an `in` that differs between `x` and `weight`, a bias of another
/// length, or a dtype other than the input's: [`crate::Error::InvalidArgument`].
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear";
    let (n, k) = match x.dims() {
        &[n, k] => (n, k),
        d => return Err(invalid(OP, "input", d, "expected [N, in]")),
    };
    let out = match weight.dims() {
        &[o, i] if i == k => o,
        d => return Err(invalid(OP, "weight", d, format!("expected [out, {k}]"))),
    };
    same_dtype_device(OP, "weight", weight, x)?;
    if let Some(b) = bias {
        if b.dims() != [out] {
            return Err(invalid(OP, "bias", b.dims(), format!("expected [{out}]")));
        }
        same_dtype_device(OP, "bias", b, x)?;
    }
    let y = if x.device().is_cpu() && n > 0 {
        x.apply_op2(weight, LinearOp)?
    } else {
        composite::linear_no_bias(x, weight)?
    };
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// `x·Wᵀ` from candle's built-ins (what non-CPU devices run).
pub(crate) mod composite {
    use candle::Tensor;

    pub(crate) fn linear_no_bias(x: &Tensor, w: &Tensor) -> candle::Result<Tensor> {
        x.matmul(&w.t()?)
    }
}

/// `(x [N, in], W [out, in]) → x·Wᵀ [N, out]`.
struct LinearOp;

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "deepsim-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (n, k) = xl.shape().dims2()?;
        let (out, _) = wl.shape().dims2()?;
        let y = by_float_dtype!("linear", x.dtype(), forward(n, k, out, (x, xl), (w, wl)))?;
        Ok((y, Shape::from((n, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        // dx = grad·W [N, in]; dW = gradᵀ·x [out, in], already in the weight's layout.
        let dx = if x.track_op() { Some(grad.matmul(w)?) } else { None };
        let dw = if w.track_op() { Some(grad.t()?.matmul(x)?) } else { None };
        Ok((dx, dw))
    }
}

fn forward<T: Real>(
    n: usize,
    k: usize,
    out: usize,
    x: (&CpuStorage, &Layout),
    w: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let xs = contiguous(x.0.as_slice::<T>()?, x.1);
    let ws = contiguous(w.0.as_slice::<T>()?, w.1);
    let mut y = vec![T::zero(); n * out];
    matmul(
        &mut y,
        Mat::row_major(&xs, n, k),
        Mat::row_major(&ws, out, k).t(),
        false,
        parallelism(false),
    );
    Ok(T::to_cpu_storage_owned(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device, Var};

    fn seq(shape: (usize, usize), scale: f64) -> Tensor {
        let n = shape.0 * shape.1;
        let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 23) as f64 - 11.0) * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_candle_and_finite_differences() {
        let x = Var::from_tensor(&seq((3, 5), 0.1)).unwrap();
        let w = Var::from_tensor(&seq((4, 5), 0.07)).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f64, -1.0, 0.25, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        let y = linear(&x, &w, Some(&b)).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        let diff = (&y - &want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);

        // L = Σ y ⊙ c, differentiated against central finite differences in f64.
        let c = seq((3, 4), 0.3);
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
            let y = linear(x, w, Some(b)).unwrap();
            (y * &c).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let grads = (linear(&x, &w, Some(&b)).unwrap() * &c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let h = 1e-6;
        for (var, name) in [(&x, "x"), (&w, "w"), (&b, "b")] {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let g = g.to_vec1::<f64>().unwrap();
            let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in 0..base.len() {
                let shifted = |d: f64| {
                    let mut v = base.clone();
                    v[i] += d;
                    Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()
                };
                let (plus, minus) = match name {
                    "x" => (loss(&shifted(h), &w, &b), loss(&shifted(-h), &w, &b)),
                    "w" => (loss(&x, &shifted(h), &b), loss(&x, &shifted(-h), &b)),
                    _ => (loss(&x, &w, &shifted(h)), loss(&x, &w, &shifted(-h))),
                };
                let fd = (plus - minus) / (2.0 * h);
                assert!((g[i] - fd).abs() < 1e-6, "d{name}[{i}]: {} vs {fd}", g[i]);
            }
        }
        // The weight gradient is contiguous in the weight's layout.
        assert!(grads.get(w.as_tensor()).unwrap().is_contiguous());
    }

    #[test]
    fn frozen_weight_gets_no_gradient() {
        let x = Var::from_tensor(&seq((2, 3), 0.1)).unwrap();
        let w = seq((2, 3), 0.2);
        let grads = linear(&x, &w, None).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&w).is_none());
        // dL/dx for L = Σ x·Wᵀ is the column sums of W, for every row of x.
        let gx = grads.get(x.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let wv = w.to_vec2::<f64>().unwrap();
        for row in gx {
            for j in 0..3 {
                assert!((row[j] - (wv[0][j] + wv[1][j])).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 5), DType::F32, &Device::Cpu).unwrap();
        let err = linear(&x, &w, None).unwrap_err().to_string();
        assert!(err.contains("weight") && err.contains("[out, 3]"), "{err}");
        let w = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
        let err = linear(&x, &w, Some(&b)).unwrap_err().to_string();
        assert!(err.contains("bias") && err.contains("[4]"), "{err}");
        let x3 = Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(linear(&x3, &w, None).unwrap_err().to_string().contains("[N, in]"));
        let w64 = Tensor::zeros((4, 3), DType::F64, &Device::Cpu).unwrap();
        assert!(linear(&x, &w64, None).unwrap_err().to_string().contains("dtype"));
    }
}
