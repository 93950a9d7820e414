//! The per-pixel distance of LPIPS (Zhang et al., 2018, eq. 1) in one pass over memory:
//! activations unit-normalized across channels, squared differences weighted per channel and
//! summed over channels — with its backward, instead of a dozen elementwise ops and their
//! intermediate tensors.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{by_float_dtype, contiguous, dims4, nchw, same_dtype_device, Real};
use crate::error::{invalid, Result};

/// Added under the square root of the channel norm, so that an all-zero pixel has a finite
/// gradient (the `lpips` package's norm has none there).
const NORM_FLOOR: f64 = 1e-20;
/// Added to the channel norm before dividing, as the `lpips` package does.
const NORM_EPS: f64 = 1e-10;

/// `d[n, 0, y, x] = Σ_c w_c (a_c / ‖a‖ − b_c / ‖b‖)²` with `‖a‖ = √(Σ_c a_c² + 1e-20) + 1e-10`
/// at each pixel: LPIPS' distance map for one layer before the spatial average.
/// Differentiable w.r.t. `a` and `b` (first order); `weights` are constants.
///
/// # Shapes
/// `a`, `b` `[N, C, H, W]`, `weights` `[C]` (or `[1, C, 1, 1]`) → `[N, 1, H, W]`.
///
/// # Errors
/// Rank, dtype (f32/f64) or device mismatches, `a` and `b` of different shapes, weights not
/// of length C.
pub fn unit_weighted_sq_distance(a: &Tensor, b: &Tensor, weights: &Tensor) -> Result<Tensor> {
    check_args("unit_weighted_sq_distance", a, b, weights)?;
    if !a.device().is_cpu() {
        return composite(a, b, weights);
    }
    let w: Vec<f64> = weights.flatten_all()?.to_dtype(candle::DType::F64)?.to_vec1()?;
    Ok(a.apply_op2(b, UnitDistanceOp { w })?)
}

/// Checks `a` and `b` (rank 4, same shape, dtype and device) and `weights` (one per channel);
/// returns the dims.
fn check_args(op: &'static str, a: &Tensor, b: &Tensor, weights: &Tensor) -> Result<[usize; 4]> {
    let dims = nchw(op, "a", a)?;
    nchw(op, "b", b)?;
    same_dtype_device(op, "b", b, a)?;
    same_dtype_device(op, "weights", weights, a)?;
    if b.dims() != a.dims() {
        return Err(invalid(op, "b", b.dims(), format!("expected the shape of a, {:?}", a.dims())));
    }
    if weights.elem_count() != dims[1] {
        return Err(invalid(op, "weights", weights.dims(), format!("expected {} values", dims[1])));
    }
    Ok(dims)
}

/// The gradient w.r.t. `a` of [`unit_weighted_sq_distance`] given the gradient `grad` of its
/// map, outside candle's autograd (for callers that run a chain's backward themselves). Not
/// differentiable.
///
/// # Shapes
/// `a`, `b` `[N, C, H, W]`, `weights` `[C]`, `grad` `[N, 1, H, W]` → `[N, C, H, W]`.
///
/// # Errors
/// As [`unit_weighted_sq_distance`]; `grad` not `[N, 1, H, W]`; tensors not on the CPU.
pub fn unit_weighted_sq_distance_backward(
    a: &Tensor,
    b: &Tensor,
    weights: &Tensor,
    grad: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "unit_weighted_sq_distance_backward";
    let [n, _, h, w] = check_args(OP, a, b, weights)?;
    same_dtype_device(OP, "grad", grad, a)?;
    if grad.dims() != [n, 1, h, w] {
        return Err(invalid(OP, "grad", grad.dims(), format!("expected [{n}, 1, {h}, {w}]")));
    }
    if !a.device().is_cpu() {
        return Err(invalid(OP, "a", a.dims(), "not on the CPU"));
    }
    let w: Vec<f64> = weights.flatten_all()?.to_dtype(candle::DType::F64)?.to_vec1()?;
    Ok(a.apply_op3_no_bwd(b, grad, &UnitDistanceGradOp { w, want: 0 })?)
}

/// The same from candle's built-ins (other devices).
fn composite(a: &Tensor, b: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let unit = |f: &Tensor| -> Result<Tensor> {
        let norm = (f.sqr()?.sum_keepdim(1)? + NORM_FLOOR)?.sqrt()?;
        Ok(f.broadcast_div(&(norm + NORM_EPS)?)?)
    };
    let w = weights.reshape((1, a.dim(1)?, 1, 1))?;
    Ok((unit(a)? - unit(b)?)?.sqr()?.broadcast_mul(&w)?.sum_keepdim(1)?)
}

struct UnitDistanceOp {
    w: Vec<f64>,
}

/// Per image: `1 / ‖a‖`, `√(Σ a² + floor)` at each pixel.
fn norms<T: Real>(f: &[T], c: usize, hw: usize) -> (Vec<T>, Vec<T>) {
    norms_of(f, c, hw, 0..hw)
}

/// [`norms`] at the pixels `span` of an image's `c` planes of `hw` pixels.
#[inline(always)]
fn norms_of<T: Real>(
    f: &[T],
    c: usize,
    hw: usize,
    span: std::ops::Range<usize>,
) -> (Vec<T>, Vec<T>) {
    let mut sum = vec![T::zero(); span.len()];
    for plane in f.chunks_exact(hw).take(c) {
        for (s, &v) in sum.iter_mut().zip(&plane[span.clone()]) {
            *s += v * v;
        }
    }
    let root: Vec<T> = sum.iter().map(|&s| T::from_f64((s.to_f64() + NORM_FLOOR).sqrt())).collect();
    let inv = root.iter().map(|&r| T::from_f64(1.0 / (r.to_f64() + NORM_EPS))).collect();
    (inv, root)
}

/// Values of both maps (all channels) the forward pass handles together (one task on rayon's
/// threads): 1 MiB of f32, so that they stay in the core's L2 cache from the pass that sums
/// their squares to the pass that weighs their differences. A fixed 2048 pixels (4–6 MiB at
/// 192–384 channels) took 6.3 ms for the five maps of a 1080×800 pair; this, 5.1 ms.
const SPAN_VALUES: usize = 1 << 18;

/// Pixels a task of the forward pass handles with `c` channels: [`SPAN_VALUES`] over both
/// maps' channels, in whole vectors of 16.
fn span(c: usize) -> usize {
    (SPAN_VALUES / (2 * c.max(1))).next_multiple_of(16)
}

fn forward<T: Real>(a: &[T], b: &[T], w: &[f64], dims: [usize; 4]) -> Vec<T> {
    let [n, c, h, wd] = dims;
    let hw = h * wd;
    let mut out = vec![T::zero(); n * hw];
    out.par_chunks_mut(hw).enumerate().for_each(|(i, d)| {
        let (fa, fb) = (&a[i * c * hw..(i + 1) * c * hw], &b[i * c * hw..(i + 1) * c * hw]);
        let per = span(c);
        d.par_chunks_mut(per).enumerate().for_each(|(k, d)| {
            let span = k * per..k * per + d.len();
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    let (ia, _) = norms_of(fa, c, hw, span.clone());
                    let (ib, _) = norms_of(fb, c, hw, span.clone());
                    for ch in 0..c {
                        let wc = T::from_f64(w[ch]);
                        let pa = &fa[ch * hw..][span.clone()];
                        let pb = &fb[ch * hw..][span.clone()];
                        for ((((o, &x), &y), &sa), &sb) in
                            d.iter_mut().zip(pa).zip(pb).zip(&ia).zip(&ib)
                        {
                            let r = x * sa - y * sb;
                            *o += wc * r * r;
                        }
                    }
                },
            )
        });
    });
    out
}

/// The gradient w.r.t. `f` given the output gradient `g` `[N, 1, H, W]`, where the distance is
/// symmetric in its two arguments (`other` is the one not differentiated):
/// `∂/∂f_k = g (2 w_k r_k / ‖f‖ − f_k T / (‖f‖² √(Σf²+floor)))`, `T = Σ_c 2 w_c r_c f_c`,
/// `r = f/‖f‖ − other/‖other‖`.
fn backward<T: Real>(f: &[T], other: &[T], g: &[T], w: &[f64], dims: [usize; 4]) -> Vec<T> {
    let [_, c, h, wd] = dims;
    let hw = h * wd;
    let mut grad = vec![T::zero(); f.len()];
    grad.par_chunks_mut(c * hw).enumerate().for_each(|(i, q)| {
        let (ff, fo) = (&f[i * c * hw..(i + 1) * c * hw], &other[i * c * hw..(i + 1) * c * hw]);
        let g = &g[i * hw..(i + 1) * hw];
        let ((inv, root), (inv_o, _)) = (norms(ff, c, hw), norms(fo, c, hw));
        let two = T::from_f64(2.0);
        let mut t = vec![T::zero(); hw];
        for ch in 0..c {
            let wc = T::from_f64(w[ch]);
            let (pf, po) = (&ff[ch * hw..(ch + 1) * hw], &fo[ch * hw..(ch + 1) * hw]);
            let qc = &mut q[ch * hw..(ch + 1) * hw];
            for p in 0..hw {
                let wr = two * wc * (pf[p] * inv[p] - po[p] * inv_o[p]);
                t[p] += wr * pf[p];
                qc[p] = wr * inv[p];
            }
        }
        let k: Vec<T> = (0..hw).map(|p| t[p] * inv[p] * inv[p] / root[p]).collect();
        for ch in 0..c {
            let pf = &ff[ch * hw..(ch + 1) * hw];
            let qc = &mut q[ch * hw..(ch + 1) * hw];
            for p in 0..hw {
                qc[p] = g[p] * (qc[p] - pf[p] * k[p]);
            }
        }
    });
    grad
}

fn run_forward<T: Real>(
    op: &UnitDistanceOp,
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let dims = dims4("unit_weighted_sq_distance", "a", a.1)?;
    let (fa, fb) = (contiguous(a.0.as_slice::<T>()?, a.1), contiguous(b.0.as_slice::<T>()?, b.1));
    Ok(T::to_cpu_storage_owned(forward(&fa, &fb, &op.w, dims)))
}

impl CustomOp2 for UnitDistanceOp {
    fn name(&self) -> &'static str {
        "deepsim-unit-weighted-sq-distance"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let out = by_float_dtype!(
            "unit_weighted_sq_distance",
            a.dtype(),
            run_forward(self, (a, al), (b, bl))
        )?;
        let d = al.dims();
        Ok((out, Shape::from((d[0], 1, d[2], d[3]))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_of = |want: usize| {
            a.apply_op3_no_bwd(b, grad, &UnitDistanceGradOp { w: self.w.clone(), want })
        };
        let ga = if a.track_op() { Some(grad_of(0)?) } else { None };
        let gb = if b.track_op() { Some(grad_of(1)?) } else { None };
        Ok((ga, gb))
    }
}

/// (a, b, output gradient) → the gradient w.r.t. `a` (`want` 0) or `b` (1).
struct UnitDistanceGradOp {
    w: Vec<f64>,
    want: usize,
}

fn run_backward<T: Real>(
    op: &UnitDistanceGradOp,
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
    g: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let dims = dims4("unit_weighted_sq_distance backward", "a", a.1)?;
    let (fa, fb) = (contiguous(a.0.as_slice::<T>()?, a.1), contiguous(b.0.as_slice::<T>()?, b.1));
    let g = contiguous(g.0.as_slice::<T>()?, g.1);
    // The distance is symmetric: the gradient w.r.t. `b` is the one w.r.t. `a` with roles swapped.
    let (f, other) = if op.want == 0 { (&fa, &fb) } else { (&fb, &fa) };
    Ok(T::to_cpu_storage_owned(backward(f, other, &g, &op.w, dims)))
}

impl candle::CustomOp3 for UnitDistanceGradOp {
    fn name(&self) -> &'static str {
        "deepsim-unit-weighted-sq-distance-backward"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let out = by_float_dtype!(
            "unit_weighted_sq_distance backward",
            a.dtype(),
            run_backward(self, (a, al), (b, bl), (g, gl))
        )?;
        Ok((out, al.shape().clone()))
    }
}
