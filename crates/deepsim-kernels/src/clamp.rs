//! The straight-through clamp: `clamp(x, lo, hi)` forward, the identity's gradient backward —
//! exactly. The usual composition `x + (clamp(x) − x).detach()` is not the clamp in floating
//! point once `|x|` is large (at `x = 1e8` in f32, `1 − 1e8` rounds to `−1e8` and the sum is 0,
//! not 1), which lets values outside `[lo, hi]` into a comparator that refuses them.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::check::{by_float_dtype, contiguous, Real};
use crate::error::{invalid, Result};

/// `clamp(x, lo, hi)` whose gradient is the incoming gradient unchanged (a straight-through
/// estimator): a generator's raw output enters losses that need `[lo, hi]`, while pixels
/// outside still receive the gradient that pulls them back. The value is exactly the clamp in
/// every dtype (on the CPU one pass; elsewhere `clamp(x).detach() + (x − x.detach())`, whose
/// second term is exactly zero for finite `x`). NaN stays NaN.
///
/// # Shapes
/// Any shape → the same shape.
///
/// # Errors
/// `lo > hi`, or either bound not finite; a dtype other than f32/f64 on the CPU.
pub fn straight_through_clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(invalid(
            "straight_through_clamp",
            "lo, hi",
            &[],
            format!("[{lo}, {hi}] is not a finite interval"),
        ));
    }
    if !x.device().is_cpu() {
        return composite::straight_through_clamp(x, lo, hi);
    }
    Ok(x.apply_op1(StraightThroughClamp { lo, hi })?)
}

struct StraightThroughClamp {
    lo: f64,
    hi: f64,
}

fn run<T: Real>(s: &CpuStorage, l: &Layout, lo: f64, hi: f64) -> candle::Result<CpuStorage> {
    let (lo, hi) = (T::from_f64(lo), T::from_f64(hi));
    let x = contiguous(s.as_slice::<T>()?, l);
    // `v < lo` and `v > hi` are false for NaN, which passes through.
    let out = x
        .iter()
        .map(|&v| {
            if v < lo {
                lo
            } else if v > hi {
                hi
            } else {
                v
            }
        })
        .collect();
    Ok(T::to_cpu_storage_owned(out))
}

impl CustomOp1 for StraightThroughClamp {
    fn name(&self) -> &'static str {
        "deepsim-straight-through-clamp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let out =
            by_float_dtype!("straight_through_clamp", s.dtype(), run(s, l, self.lo, self.hi))?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// The straight-through clamp from candle's built-ins, for devices without a kernel here.
pub(crate) mod composite {
    use candle::Tensor;

    use crate::error::Result;

    /// [`super::straight_through_clamp`] as `clamp(x).detach() + (x − x.detach())`: the second
    /// term is exactly zero for finite `x` (so the value is the clamp's) and carries the
    /// identity's gradient.
    pub fn straight_through_clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
        let zero = (x - x.detach())?;
        Ok((x.clamp(lo, hi)?.detach() + zero)?)
    }
}
