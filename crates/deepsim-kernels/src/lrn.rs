//! Local response normalization across channels (Krizhevsky et al. 2012, as in CaffeNet), with
//! Caffe's and PyTorch's window conventions, forward and backward.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{by_float_dtype, contiguous, dims4, nchw, Real};
use crate::error::{invalid, Result};

/// Where the channel window of an LRN sits around channel `c`.
///
/// Both Caffe's `LRN` layer (`ACROSS_CHANNELS`) and PyTorch's `nn.LocalResponseNorm` divide
/// `alpha` by `size`: `y_c = x_c · (k + alpha/size · Σ_{j ∈ W(c)} x_j²)^(−beta)`, with channels
/// outside `[0, C)` counting as zero. They differ only in where an even-sized window sits. (The
/// AlexNet paper and TensorFlow's `local_response_normalization` do not divide alpha by size:
/// to reproduce them pass `alpha · size`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LrnConvention {
    /// Caffe: `W(c) = [c − ⌊(size − 1)/2⌋, c + ⌊size/2⌋]`.
    #[default]
    Caffe,
    /// PyTorch: `W(c) = [c − ⌊size/2⌋, c + ⌊(size − 1)/2⌋]`.
    Torch,
}

/// Hyper-parameters of [`local_response_norm`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnConfig {
    /// Channels in the window; at least 1.
    pub size: usize,
    /// Scale of the sum of squares (divided by `size`, see [`LrnConvention`]).
    pub alpha: f64,
    /// Exponent; finite.
    pub beta: f64,
    /// Additive constant; with `alpha` and the squares it keeps the base positive, so `k > 0`.
    pub k: f64,
    /// Window placement.
    pub convention: LrnConvention,
}

impl LrnConfig {
    /// CaffeNet's (and the DeePSiM comparator's) LRN: size 5, alpha 1e-4, beta 0.75, k 1.
    pub fn caffenet() -> Self {
        Self { size: 5, alpha: 1e-4, beta: 0.75, k: 1.0, convention: LrnConvention::Caffe }
    }

    /// PyTorch's `nn.LocalResponseNorm(size, alpha, beta, k)`.
    pub fn torch(size: usize, alpha: f64, beta: f64, k: f64) -> Self {
        Self { size, alpha, beta, k, convention: LrnConvention::Torch }
    }

    /// Channels of the window before channel `c`.
    fn before(&self) -> usize {
        match self.convention {
            LrnConvention::Caffe => (self.size - 1) / 2,
            LrnConvention::Torch => self.size / 2,
        }
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.size == 0 {
            return Err(invalid(op, "config.size", &[], "must be at least 1"));
        }
        if !(self.k > 0.0 && self.alpha >= 0.0 && self.alpha.is_finite() && self.beta.is_finite()) {
            return Err(invalid(
                op,
                "config",
                &[],
                format!(
                    "k = {}, alpha = {}, beta = {}: need k > 0, finite alpha ≥ 0, finite beta",
                    self.k, self.alpha, self.beta
                ),
            ));
        }
        Ok(())
    }
}

/// Sizes of one LRN call.
#[derive(Clone, Copy, Debug)]
struct LrnGeom {
    c: usize,
    hw: usize,
    cfg: LrnConfig,
}

impl LrnGeom {
    fn at(&self, op: &'static str, layout: &Layout) -> Result<Self> {
        let [_, c, h, w] = dims4(op, "input", layout)?;
        if c != self.c {
            return Err(invalid(
                op,
                "input",
                layout.dims(),
                format!("expected {} channels", self.c),
            ));
        }
        Ok(Self { hw: h * w, ..*self })
    }

    /// `scale_c = k + alpha/size · Σ_{j ∈ W(c)} x_j²` for one image, by a running window sum.
    fn scale<T: Real>(&self, x: &[T], scale: &mut [T]) {
        let (c, hw, before) = (self.c, self.hw, self.cfg.before());
        let after = self.cfg.size - 1 - before;
        let coef = T::from_f64(self.cfg.alpha / self.cfg.size as f64);
        let mut sum = vec![T::zero(); hw];
        // The window of channel 0 is [−before, after]: start with channels 0..=after.
        for j in 0..=after.min(c - 1) {
            add_sq(&mut sum, &x[j * hw..(j + 1) * hw], T::one());
        }
        for ch in 0..c {
            for (s, &v) in scale[ch * hw..(ch + 1) * hw].iter_mut().zip(&sum) {
                *s = T::from_f64(self.cfg.k) + coef * v;
            }
            if ch + after + 1 < c {
                let j = ch + after + 1;
                add_sq(&mut sum, &x[j * hw..(j + 1) * hw], T::one());
            }
            if ch >= before {
                let j = ch - before;
                add_sq(&mut sum, &x[j * hw..(j + 1) * hw], T::zero() - T::one());
            }
        }
    }

    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let len = self.c * self.hw;
        let neg_beta = T::from_f64(-self.cfg.beta);
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(len).zip(x.par_chunks(len)).for_each(|(out, x)| {
            self.scale(x, out);
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * o.powf(neg_beta);
            }
        });
        out
    }

    /// `dx_m = g_m s_m^−β − (2αβ/size) · x_m · Σ_{i : m ∈ W(i)} g_i x_i s_i^(−β−1)`.
    fn backward<T: Real>(&self, x: &[T], grad: &[T]) -> Vec<T> {
        let (c, hw, len) = (self.c, self.hw, self.c * self.hw);
        let before = self.cfg.before();
        let after = self.cfg.size - 1 - before;
        let neg_beta = T::from_f64(-self.cfg.beta);
        let coef = T::from_f64(2.0 * self.cfg.alpha * self.cfg.beta / self.cfg.size as f64);
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(len).zip(x.par_chunks(len)).zip(grad.par_chunks(len)).for_each(
            |((dx, x), g)| {
                let mut scale = vec![T::zero(); len];
                self.scale(x, &mut scale);
                // t_i = g_i · x_i · s_i^(−β−1); dx starts as g · s^−β.
                let mut t = vec![T::zero(); len];
                for i in 0..len {
                    let p = scale[i].powf(neg_beta);
                    dx[i] = g[i] * p;
                    t[i] = g[i] * x[i] * p / scale[i];
                }
                // Channel m collects t over i ∈ [m − after, m + before]: a running window sum.
                let mut sum = vec![T::zero(); hw];
                for i in 0..=before.min(c - 1) {
                    add(&mut sum, &t[i * hw..(i + 1) * hw], T::one());
                }
                for m in 0..c {
                    let plane = m * hw..(m + 1) * hw;
                    for ((d, &xv), &s) in dx[plane.clone()].iter_mut().zip(&x[plane]).zip(&sum) {
                        *d -= coef * xv * s;
                    }
                    if m + before + 1 < c {
                        let i = m + before + 1;
                        add(&mut sum, &t[i * hw..(i + 1) * hw], T::one());
                    }
                    if m >= after {
                        let i = m - after;
                        add(&mut sum, &t[i * hw..(i + 1) * hw], T::zero() - T::one());
                    }
                }
            },
        );
        dx
    }
}

fn add_sq<T: Real>(acc: &mut [T], x: &[T], sign: T) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += sign * v * v;
    }
}

fn add<T: Real>(acc: &mut [T], x: &[T], sign: T) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += sign * v;
    }
}

fn run_forward<T: Real>(g: &LrnGeom, x: &CpuStorage, l: &Layout) -> candle::Result<CpuStorage> {
    Ok(T::to_cpu_storage_owned(g.forward(&contiguous(x.as_slice::<T>()?, l))))
}

fn run_backward<T: Real>(
    g: &LrnGeom,
    x: (&CpuStorage, &Layout),
    grad: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let xs = contiguous(x.0.as_slice::<T>()?, x.1);
    Ok(T::to_cpu_storage_owned(g.backward(&xs, &contiguous(grad.0.as_slice::<T>()?, grad.1))))
}

struct LrnOp(LrnGeom);

impl CustomOp1 for LrnOp {
    fn name(&self) -> &'static str {
        "deepsim-lrn"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let g = self.0.at("local_response_norm", l)?;
        let out = by_float_dtype!("local_response_norm", x.dtype(), run_forward(&g, x, l))?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(grad, &LrnBackwardOp(self.0))?))
    }
}

/// (input, output gradient) → input gradient.
struct LrnBackwardOp(LrnGeom);

impl CustomOp2 for LrnBackwardOp {
    fn name(&self) -> &'static str {
        "deepsim-lrn-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        grad: &CpuStorage,
        gl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        const OP: &str = "local_response_norm backward";
        let g = self.0.at(OP, xl)?;
        if gl.dims() != xl.dims() {
            return Err(invalid(OP, "grad", gl.dims(), format!("expected {:?}", xl.dims())).into());
        }
        let out = by_float_dtype!(OP, x.dtype(), run_backward(&g, (x, xl), (grad, gl)))?;
        Ok((out, xl.shape().clone()))
    }
}

/// Local response normalization across channels, differentiable:
/// `y_c = x_c · (k + alpha/size · Σ_{j ∈ W(c)} x_j²)^(−beta)`, the window `W(c)` placed by
/// [`LrnConvention`].
///
/// # Shapes
/// `input` `[N, C, H, W]` → the same shape.
///
/// # Errors
/// Rank other than 4, a zero-sized dimension, dtype other than f32/f64, size 0, `k ≤ 0`,
/// negative or non-finite alpha, non-finite beta.
pub fn local_response_norm(input: &Tensor, cfg: &LrnConfig) -> Result<Tensor> {
    const OP: &str = "local_response_norm";
    let [_, c, h, w] = nchw(OP, "input", input)?;
    cfg.check(OP)?;
    if !input.device().is_cpu() {
        return composite::local_response_norm(input, cfg);
    }
    Ok(input.apply_op1(LrnOp(LrnGeom { c, hw: h * w, cfg: *cfg }))?)
}

/// LRN from candle's built-ins, for devices without a kernel here.
pub(crate) mod composite {
    use candle::Tensor;

    use super::LrnConfig;
    use crate::check::nchw;
    use crate::error::Result;

    /// [`super::local_response_norm`] as a sum of channel-shifted squares.
    pub fn local_response_norm(input: &Tensor, cfg: &LrnConfig) -> Result<Tensor> {
        let [_, c, _, _] = nchw("local_response_norm", "input", input)?;
        cfg.check("local_response_norm")?;
        let before = cfg.before();
        let sq = input.sqr()?.pad_with_zeros(1, before, cfg.size - 1 - before)?;
        let mut sum = sq.narrow(1, 0, c)?;
        for j in 1..cfg.size {
            sum = (sum + sq.narrow(1, j, c)?)?;
        }
        let scale = sum.affine(cfg.alpha / cfg.size as f64, cfg.k)?;
        Ok(input.mul(&scale.powf(-cfg.beta)?)?)
    }
}
