//! Layer normalization and softmax over the last dimension — the two ops of a vision
//! transformer that candle 0.11 fuses without a backward: candle-nn's `layer_norm` and
//! `softmax_last_dim` give no gradient to their input (and no error), so a loss through a ViT
//! built on them trains nothing. Here each is one pass forward and one pass backward on the
//! CPU, with the gradients of the input and (for the layer norm) of its scale and shift.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{by_float_dtype, contiguous, same_dtype_device, Real};
use crate::error::{invalid, Result};

/// Rows per parallel task: enough work per task to repay rayon's hand-off.
fn rows_per_task(rows: usize, d: usize) -> usize {
    (16_384 / d.max(1)).clamp(1, rows.max(1))
}

/// Layer normalization over the last dimension: `y = (x − μ) / √(σ² + eps) · weight + bias`,
/// with μ and σ² the mean and (biased) variance of each row, as PyTorch's `layer_norm` and
/// candle-nn's `LayerNorm`, differentiable w.r.t. `x`, `weight` and `bias` (first order).
///
/// # Shapes
/// `x` `[…, D]`, `weight` and `bias` `[D]` → the shape of `x`.
///
/// # Errors
/// `x` of rank 0 or with a zero-sized last dimension, `weight` or `bias` not `[D]`, dtypes
/// other than f32/f64 or differing, tensors on different devices, `eps` not positive and
/// finite.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let d = match x.dims().last() {
        Some(&d) if d > 0 => d,
        _ => return Err(invalid(OP, "x", x.dims(), "expected [..., D] with D > 0")),
    };
    for (arg, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [d] {
            return Err(invalid(OP, arg, t.dims(), format!("expected [{d}]")));
        }
        same_dtype_device(OP, arg, t, x)?;
    }
    float(OP, x)?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(invalid(OP, "eps", &[], format!("{eps} is not positive and finite")));
    }
    if !x.device().is_cpu() {
        return composite::layer_norm(x, weight, bias, eps);
    }
    Ok(x.apply_op3(weight, bias, LayerNorm { eps })?)
}

/// Softmax over the last dimension, differentiable (first order): `y_i = e^{x_i} / Σ_j e^{x_j}`
/// per row, computed after subtracting the row's maximum.
///
/// # Shapes
/// `x` `[…, D]` → the same shape.
///
/// # Errors
/// `x` of rank 0 or with a zero-sized last dimension, a dtype other than f32/f64.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_last_dim";
    if x.dims().last().is_none_or(|&d| d == 0) {
        return Err(invalid(OP, "x", x.dims(), "expected [..., D] with D > 0"));
    }
    float(OP, x)?;
    if !x.device().is_cpu() {
        return composite::softmax_last_dim(x);
    }
    Ok(x.apply_op1(Softmax)?)
}

/// CLIP's quick GELU, `y = x·σ(1.702·x)` (OpenAI CLIP's `QuickGELU`, transformers'
/// `quick_gelu`), differentiable (first order): one pass each way on the CPU, where candle's
/// built-ins take three forward (a scale, a sigmoid, a product) and more backward.
///
/// # Shapes
/// Any; the output has the input's shape.
///
/// # Errors
/// A dtype other than f32/f64.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    float("quick_gelu", x)?;
    if !x.device().is_cpu() || x.elem_count() == 0 {
        return composite::quick_gelu(x);
    }
    Ok(x.apply_op1(GeluOp(GeluKind::Quick))?)
}

/// The exact GELU, `y = x·Φ(x) = ½·x·(1 + erf(x/√2))` (PyTorch's `gelu`, DINOv2's MLP),
/// differentiable (first order): one pass each way over rayon's threads, with candle's own
/// `erf` (libm's). candle's `gelu_erf` runs on one thread and differentiates through half a
/// dozen ops.
///
/// # Shapes
/// Any; the output has the input's shape.
///
/// # Errors
/// A dtype other than f32/f64.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    float("gelu_erf", x)?;
    if !x.device().is_cpu() || x.elem_count() == 0 {
        return Ok(x.gelu_erf()?);
    }
    Ok(x.apply_op1(GeluOp(GeluKind::Erf))?)
}

/// The slope of [`quick_gelu`]'s sigmoid.
const QUICK_GELU_K: f64 = 1.702;

/// Elements per parallel task of the elementwise passes.
const ELEMENTS_PER_TASK: usize = 1 << 14;

#[derive(Clone, Copy)]
enum GeluKind {
    /// `x·σ(k·x)`.
    Quick,
    /// `x·Φ(x)`.
    Erf,
}

impl GeluKind {
    fn name(self) -> &'static str {
        match self {
            GeluKind::Quick => "quick_gelu",
            GeluKind::Erf => "gelu_erf",
        }
    }

    fn value<T: Real>(self, x: T) -> T {
        let one = T::one();
        match self {
            GeluKind::Quick => x / (one + (T::from_f64(-QUICK_GELU_K) * x).exp()),
            GeluKind::Erf => {
                T::from_f64(0.5)
                    * x
                    * (one + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
            }
        }
    }

    /// dy/dx: σ + k·x·σ·(1 − σ) with σ = σ(k·x); Φ(x) + x·φ(x).
    fn slope<T: Real>(self, x: T) -> T {
        let one = T::one();
        match self {
            GeluKind::Quick => {
                let k = T::from_f64(QUICK_GELU_K);
                let s = one / (one + (T::from_f64(-QUICK_GELU_K) * x).exp());
                s + k * x * s * (one - s)
            }
            GeluKind::Erf => {
                let half = T::from_f64(0.5);
                let cdf = half * (one + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
                let pdf = T::from_f64(
                    0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2,
                ) * (T::from_f64(-0.5) * x * x).exp();
                cdf + x * pdf
            }
        }
    }
}

/// `x → gelu(x)` ([`quick_gelu`], [`gelu_erf`]).
struct GeluOp(GeluKind);

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        match self.0 {
            GeluKind::Quick => "deepsim-quick-gelu",
            GeluKind::Erf => "deepsim-gelu-erf",
        }
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(kind: GeluKind, x: &CpuStorage, l: &Layout) -> candle::Result<CpuStorage> {
            let x = contiguous(x.as_slice::<T>()?, l);
            let mut y = vec![T::zero(); x.len()];
            y.par_chunks_mut(ELEMENTS_PER_TASK)
                .zip(x.par_chunks(ELEMENTS_PER_TASK))
                .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = kind.value(x)));
            Ok(T::to_cpu_storage_owned(y))
        }
        let out = by_float_dtype!(self.0.name(), x.dtype(), go(self.0, x, l))?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(grad, &GeluBackward(self.0))?))
    }
}

/// (x, dy) → dx = dy·gelu'(x).
struct GeluBackward(GeluKind);

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        match self.0 {
            GeluKind::Quick => "deepsim-quick-gelu-backward",
            GeluKind::Erf => "deepsim-gelu-erf-backward",
        }
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            kind: GeluKind,
            x: (&CpuStorage, &Layout),
            g: (&CpuStorage, &Layout),
        ) -> candle::Result<CpuStorage> {
            let xv = contiguous(x.0.as_slice::<T>()?, x.1);
            let gv = contiguous(g.0.as_slice::<T>()?, g.1);
            let mut dx = vec![T::zero(); xv.len()];
            dx.par_chunks_mut(ELEMENTS_PER_TASK)
                .zip(xv.par_chunks(ELEMENTS_PER_TASK).zip(gv.par_chunks(ELEMENTS_PER_TASK)))
                .for_each(|(dx, (x, g))| {
                    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                        *d = g * kind.slope(x);
                    }
                });
            Ok(T::to_cpu_storage_owned(dx))
        }
        if xl.shape() != gl.shape() {
            return Err(candle::Error::Msg(format!(
                "{} backward: input {:?} and gradient {:?} differ",
                self.0.name(),
                xl.dims(),
                gl.dims()
            )));
        }
        let out = by_float_dtype!(self.0.name(), x.dtype(), go(self.0, (x, xl), (g, gl)))?;
        Ok((out, xl.shape().clone()))
    }
}

fn float(op: &'static str, x: &Tensor) -> Result<()> {
    if !matches!(x.dtype(), candle::DType::F32 | candle::DType::F64) {
        return Err(invalid(
            op,
            "x",
            x.dims(),
            format!("dtype {:?}, expected f32 or f64", x.dtype()),
        ));
    }
    Ok(())
}

// ----------------------------------------------------------------------------- layer norm

struct LayerNorm {
    eps: f64,
}

/// Mean and reciprocal standard deviation of one row (two passes, in f64).
fn moments<T: Real>(row: &[T], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn layer_norm_forward<T: Real>(x: &[T], w: &[T], b: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::zero(); x.len()];
    let task = rows_per_task(x.len() / d, d) * d;
    y.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(y, x)| {
        for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let (mean, rstd) = moments(x, eps);
            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = T::from_f64((x.to_f64() - mean) * rstd) * w + b;
            }
        }
    });
    y
}

/// The layer norm's gradients, packed: `dx` (the shape of `x`, flattened), then `dweight`
/// and `dbias` (`D` each).
fn layer_norm_backward<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let rows = x.len() / d;
    let mut out = vec![T::zero(); x.len() + 2 * d];
    let (dx, _) = out.split_at_mut(x.len());
    let task = rows_per_task(rows, d) * d;
    // Each task's partial dweight, dbias in f64.
    let partial: Vec<Vec<f64>> = dx
        .par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .zip(dy.par_chunks(task))
        .map(|((dx, x), dy)| {
            let mut acc = vec![0f64; 2 * d];
            let mut g = vec![0f64; d];
            for ((dx, x), dy) in
                dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(dy.chunks_exact(d))
            {
                let (mean, rstd) = moments(x, eps);
                // ĝ = dy·w; dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)).
                let (mut sum_g, mut sum_gx) = (0f64, 0f64);
                for j in 0..d {
                    let xh = (x[j].to_f64() - mean) * rstd;
                    let dyj = dy[j].to_f64();
                    g[j] = dyj * w[j].to_f64();
                    sum_g += g[j];
                    sum_gx += g[j] * xh;
                    acc[j] += dyj * xh;
                    acc[d + j] += dyj;
                }
                let (mg, mgx) = (sum_g / d as f64, sum_gx / d as f64);
                for j in 0..d {
                    let xh = (x[j].to_f64() - mean) * rstd;
                    dx[j] = T::from_f64(rstd * (g[j] - mg - xh * mgx));
                }
            }
            acc
        })
        .collect();
    let tail = &mut out[x.len()..];
    for p in partial {
        for (t, v) in tail.iter_mut().zip(&p) {
            *t += T::from_f64(*v);
        }
    }
    out
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "deepsim-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            x: (&CpuStorage, &Layout),
            w: (&CpuStorage, &Layout),
            b: (&CpuStorage, &Layout),
            eps: f64,
        ) -> candle::Result<CpuStorage> {
            let x = contiguous(x.0.as_slice::<T>()?, x.1);
            let w = contiguous(w.0.as_slice::<T>()?, w.1);
            let b = contiguous(b.0.as_slice::<T>()?, b.1);
            Ok(T::to_cpu_storage_owned(layer_norm_forward(&x, &w, &b, eps)))
        }
        let out =
            by_float_dtype!("layer_norm", x.dtype(), go((x, xl), (w, wl), (b, bl), self.eps))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, d) = (x.elem_count(), w.elem_count());
        let packed = x.apply_op3_no_bwd(w, grad, &LayerNormBackward { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, d)?;
        let db = packed.narrow(0, n + d, d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (x, weight, output gradient) → the packed gradients of [`layer_norm_backward`].
struct LayerNormBackward {
    eps: f64,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "deepsim-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            x: (&CpuStorage, &Layout),
            w: (&CpuStorage, &Layout),
            g: (&CpuStorage, &Layout),
            eps: f64,
        ) -> candle::Result<CpuStorage> {
            let x = contiguous(x.0.as_slice::<T>()?, x.1);
            let w = contiguous(w.0.as_slice::<T>()?, w.1);
            let g = contiguous(g.0.as_slice::<T>()?, g.1);
            Ok(T::to_cpu_storage_owned(layer_norm_backward(&x, &w, &g, eps)))
        }
        let len = xl.shape().elem_count() + 2 * wl.shape().elem_count();
        let out = by_float_dtype!(
            "layer_norm backward",
            x.dtype(),
            go((x, xl), (w, wl), (g, gl), self.eps)
        )?;
        Ok((out, Shape::from(len)))
    }
}

// ----------------------------------------------------------------------------- softmax

struct Softmax;

fn softmax_forward<T: Real>(x: &[T], d: usize) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    let task = rows_per_task(x.len() / d, d) * d;
    y.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(y, x)| {
        for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let max = x.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
            let mut sum = 0f64;
            for (y, x) in y.iter_mut().zip(x) {
                let e = (x.to_f64() - max).exp();
                sum += e;
                *y = T::from_f64(e);
            }
            let inv = 1.0 / sum;
            for y in y.iter_mut() {
                *y = T::from_f64(y.to_f64() * inv);
            }
        }
    });
    y
}

/// `dx = y ⊙ (dy − Σ_j dy_j·y_j)` per row.
fn softmax_backward<T: Real>(y: &[T], dy: &[T], d: usize) -> Vec<T> {
    let mut dx = vec![T::zero(); y.len()];
    let task = rows_per_task(y.len() / d, d) * d;
    dx.par_chunks_mut(task).zip(y.par_chunks(task)).zip(dy.par_chunks(task)).for_each(
        |((dx, y), dy)| {
            for ((dx, y), dy) in
                dx.chunks_exact_mut(d).zip(y.chunks_exact(d)).zip(dy.chunks_exact(d))
            {
                let dot: f64 = y.iter().zip(dy).map(|(y, g)| y.to_f64() * g.to_f64()).sum();
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
                    *dx = T::from_f64(y.to_f64() * (g.to_f64() - dot));
                }
            }
        },
    );
    dx
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "deepsim-softmax-last-dim"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(x: &CpuStorage, l: &Layout) -> candle::Result<CpuStorage> {
            let d = *l.dims().last().unwrap_or(&1);
            let x = contiguous(x.as_slice::<T>()?, l);
            Ok(T::to_cpu_storage_owned(softmax_forward(&x, d)))
        }
        let out = by_float_dtype!("softmax_last_dim", x.dtype(), go(x, l))?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(grad, &SoftmaxBackward)?))
    }
}

/// (softmax output, its gradient) → the input gradient.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "deepsim-softmax-last-dim-backward"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        yl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            y: (&CpuStorage, &Layout),
            g: (&CpuStorage, &Layout),
        ) -> candle::Result<CpuStorage> {
            let d = *y.1.dims().last().unwrap_or(&1);
            let yv = contiguous(y.0.as_slice::<T>()?, y.1);
            let gv = contiguous(g.0.as_slice::<T>()?, g.1);
            Ok(T::to_cpu_storage_owned(softmax_backward(&yv, &gv, d)))
        }
        let out = by_float_dtype!("softmax_last_dim backward", y.dtype(), go((y, yl), (g, gl)))?;
        Ok((out, yl.shape().clone()))
    }
}

/// Both ops from candle's differentiable built-ins, for devices without a kernel here.
pub(crate) mod composite {
    use candle::{Tensor, D};

    use crate::error::Result;

    /// [`super::layer_norm`] as mean, variance and broadcast ops.
    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(weight)?.broadcast_add(bias)?)
    }

    /// [`super::quick_gelu`] as `x / (1 + e^{−1.702·x})`.
    pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
        Ok((x / ((x * -super::QUICK_GELU_K)?.exp()? + 1.0)?)?)
    }

    /// [`super::softmax_last_dim`] as exponentials over their row sums (after the row's
    /// maximum, which does not change the value, is subtracted without a gradient).
    pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
    }
}
