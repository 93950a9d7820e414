//! 2-D max-pooling with any kernel and stride (overlapping windows such as AlexNet's 3×3/2),
//! padding and Caffe's ceil-mode output size; backward routes each gradient to its window's
//! first maximal element.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{at_least, by_float_dtype, contiguous, dims4, nchw, Real};
use crate::error::{invalid, Result};

/// How the output size is rounded when the windows do not tile the padded input exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolRounding {
    /// `⌊(L + 2p − k) / s⌋ + 1`: PyTorch's default, torchvision's AlexNet.
    #[default]
    Floor,
    /// `⌈(L + 2p − k) / s⌉ + 1`, less one when the last window would start past the input and
    /// its left padding: Caffe's pooling (CaffeNet's 227 → 55 → 27 → 13 → 6) and PyTorch's
    /// `ceil_mode=True`, which agree whenever padding < kernel.
    Ceil,
}

/// Hyper-parameters of [`max_pool2d`], height first in every pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2dConfig {
    /// Window size (rows, columns); at least 1.
    pub kernel: (usize, usize),
    /// Window step (rows, columns); at least 1, may differ from the kernel.
    pub stride: (usize, usize),
    /// Implicit −∞ padding on each side (rows, columns); at most half the kernel.
    pub padding: (usize, usize),
    /// Output size rounding.
    pub rounding: PoolRounding,
}

impl MaxPool2dConfig {
    /// Square window and stride, no padding, floor rounding: `square(3, 2)` is torchvision
    /// AlexNet's pool.
    pub fn square(kernel: usize, stride: usize) -> Self {
        Self {
            kernel: (kernel, kernel),
            stride: (stride, stride),
            padding: (0, 0),
            rounding: PoolRounding::Floor,
        }
    }

    /// Square window and stride with Caffe's ceil rounding: `caffe(3, 2)` is CaffeNet's pool.
    pub fn caffe(kernel: usize, stride: usize) -> Self {
        Self { rounding: PoolRounding::Ceil, ..Self::square(kernel, stride) }
    }

    /// The same configuration with square padding.
    pub fn with_padding(self, padding: usize) -> Self {
        Self { padding: (padding, padding), ..self }
    }

    /// Output size along `axis` (0 rows, 1 columns) of an input of length `len`, `None` when
    /// the window does not fit.
    pub fn out_len(&self, axis: usize, len: usize) -> Option<usize> {
        let pick = |p: (usize, usize)| if axis == 0 { p.0 } else { p.1 };
        let (k, s, p) = (pick(self.kernel), pick(self.stride), pick(self.padding));
        let free = (len + 2 * p).checked_sub(k)?;
        Some(match self.rounding {
            PoolRounding::Floor => free / s + 1,
            PoolRounding::Ceil => {
                let out = free.div_ceil(s) + 1;
                if (out - 1) * s >= len + p {
                    out - 1
                } else {
                    out
                }
            }
        })
    }
}

/// Validated sizes of one pooling call.
#[derive(Clone, Copy, Debug)]
struct PoolGeom {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    cfg: MaxPool2dConfig,
}

fn pool_geom(op: &'static str, x: &Tensor, cfg: &MaxPool2dConfig) -> Result<PoolGeom> {
    let [n, c, h, w] = nchw(op, "input", x)?;
    at_least(op, "config.kernel", cfg.kernel, 1)?;
    at_least(op, "config.stride", cfg.stride, 1)?;
    if cfg.padding.0 * 2 > cfg.kernel.0 || cfg.padding.1 * 2 > cfg.kernel.1 {
        return Err(invalid(
            op,
            "config.padding",
            &[],
            format!("{:?} exceeds half the kernel {:?}", cfg.padding, cfg.kernel),
        ));
    }
    match (cfg.out_len(0, h), cfg.out_len(1, w)) {
        (Some(oh), Some(ow)) => Ok(PoolGeom { planes: n * c, h, w, oh, ow, cfg: *cfg }),
        _ => Err(invalid(
            op,
            "input",
            x.dims(),
            format!(
                "kernel {:?} is larger than the padded input {}×{}",
                cfg.kernel,
                h + 2 * cfg.padding.0,
                w + 2 * cfg.padding.1
            ),
        )),
    }
}

impl PoolGeom {
    /// The window of output `(oy, ox)`: rows `ya..yb`, columns `xa..xb`, clipped to the input.
    fn window(&self, oy: usize, ox: usize) -> (usize, usize, usize, usize) {
        let (kh, kw) = self.cfg.kernel;
        let y0 = (oy * self.cfg.stride.0) as isize - self.cfg.padding.0 as isize;
        let x0 = (ox * self.cfg.stride.1) as isize - self.cfg.padding.1 as isize;
        let (ya, yb) = (y0.max(0) as usize, ((y0 + kh as isize) as usize).min(self.h));
        let (xa, xb) = (x0.max(0) as usize, ((x0 + kw as isize) as usize).min(self.w));
        (ya, yb, xa, xb)
    }

    /// Adds each output's gradient to the first element of its window (row-major order) that
    /// equals the output — its first maximum; for a NaN output, the window's first NaN.
    fn backward_plane<T: Real>(&self, plane: &[T], out: &[T], grad: &[T], dx: &mut [T]) {
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let o = oy * self.ow + ox;
                let (ya, yb, xa, xb) = self.window(oy, ox);
                let target = out[o];
                let hit = |v: T| v == target || (v.is_nan() && target.is_nan());
                let arg = (ya..yb)
                    .flat_map(|y| (xa..xb).map(move |x| y * self.w + x))
                    .find(|&i| hit(plane[i]))
                    .unwrap_or(ya * self.w + xa);
                dx[arg] += grad[o];
            }
        }
    }

    /// Window maxima of one plane: the max over the window's rows first (a vectorizable pass
    /// over whole rows), then over its columns (vectorizable for the outputs whose window lies
    /// inside the row, with strides 1 and 2 written out).
    #[inline(always)]
    fn forward_plane<T: Real>(&self, plane: &[T], out: &mut [T], rows: &mut [T]) {
        let w = self.w;
        let (kw, sw, pw) = (self.cfg.kernel.1, self.cfg.stride.1, self.cfg.padding.1);
        // Outputs `first..last` have whole windows (`ox·s − p ≥ 0` and `ox·s − p + k ≤ w`) and
        // take the vectorized pass; with other strides every output takes the window scan.
        let first = if sw <= 2 { pw.div_ceil(sw).min(self.ow) } else { self.ow };
        let last =
            if w + pw >= kw { ((w + pw - kw) / sw + 1).clamp(first, self.ow) } else { first };
        for (oy, out) in out.chunks_exact_mut(self.ow).enumerate() {
            let (ya, yb, _, _) = self.window(oy, 0);
            rows.copy_from_slice(&plane[ya * w..(ya + 1) * w]);
            for y in ya + 1..yb {
                for (m, &v) in rows.iter_mut().zip(&plane[y * w..(y + 1) * w]) {
                    *m = nan_max(*m, v);
                }
            }
            for ox in (0..first).chain(last..self.ow) {
                let (_, _, xa, xb) = self.window(oy, ox);
                out[ox] = rows[xa + 1..xb].iter().fold(rows[xa], |m, &v| nan_max(m, v));
            }
            if first < last {
                let (inner, start) = (&mut out[first..last], first * sw - pw);
                match sw {
                    1 => window_max::<T, 1>(rows, start, kw, inner),
                    _ => window_max::<T, 2>(rows, start, kw, inner),
                }
            }
        }
    }

    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); self.planes * self.oh * self.ow];
        out.par_chunks_mut(self.oh * self.ow).zip(x.par_chunks(self.h * self.w)).for_each_init(
            || vec![T::zero(); self.w],
            |rows, (out, plane)| {
                crate::simd::vectorized(
                    #[inline(always)]
                    || self.forward_plane(plane, out, rows),
                )
            },
        );
        out
    }

    fn backward<T: Real>(&self, x: &[T], out: &[T], grad: &[T]) -> Vec<T> {
        let (in_len, out_len) = (self.h * self.w, self.oh * self.ow);
        let mut dx = vec![T::zero(); self.planes * in_len];
        dx.par_chunks_mut(in_len)
            .zip(x.par_chunks(in_len))
            .zip(out.par_chunks(out_len).zip(grad.par_chunks(out_len)))
            .for_each(|((dx, plane), (out, grad))| self.backward_plane(plane, out, grad, dx));
        dx
    }

    /// Re-derives the batch from a custom op's argument layout.
    fn at(&self, op: &'static str, layout: &Layout, h: usize, w: usize) -> Result<Self> {
        let [n, c, lh, lw] = dims4(op, "input", layout)?;
        if (lh, lw) != (h, w) {
            return Err(invalid(op, "input", layout.dims(), format!("expected [N, C, {h}, {w}]")));
        }
        Ok(Self { planes: n * c, ..*self })
    }
}

/// `out[i] = max(rows[start + S·i + j] for j in 0..k)`, folded in `j`'s order as the window
/// scan does, with the stride `S` a constant so that the loads vectorize.
#[inline(always)]
fn window_max<T: Real, const S: usize>(rows: &[T], start: usize, k: usize, out: &mut [T]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let span = &rows[start..start + S * (n - 1) + k];
    for (i, o) in out.iter_mut().enumerate() {
        *o = span[S * i];
    }
    for j in 1..k {
        for (i, o) in out.iter_mut().enumerate() {
            *o = nan_max(*o, span[S * i + j]);
        }
    }
}

/// The larger of two values, NaN if either is NaN (as the kernel's argmax rule yields).
#[inline(always)]
fn nan_max<T: Real>(m: T, v: T) -> T {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

fn run_forward<T: Real>(g: &PoolGeom, x: &CpuStorage, l: &Layout) -> candle::Result<CpuStorage> {
    Ok(T::to_cpu_storage_owned(g.forward(&contiguous(x.as_slice::<T>()?, l))))
}

fn run_backward<T: Real>(
    g: &PoolGeom,
    x: (&CpuStorage, &Layout),
    out: (&CpuStorage, &Layout),
    grad: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let xs = contiguous(x.0.as_slice::<T>()?, x.1);
    let out = contiguous(out.0.as_slice::<T>()?, out.1);
    Ok(T::to_cpu_storage_owned(g.backward(&xs, &out, &contiguous(grad.0.as_slice::<T>()?, grad.1))))
}

struct MaxPoolOp(PoolGeom);

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "deepsim-max-pool2d"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let g = self.0.at("max_pool2d", l, self.0.h, self.0.w)?;
        let out = by_float_dtype!("max_pool2d", x.dtype(), run_forward(&g, x, l))?;
        let [n, c, _, _] = dims4("max_pool2d", "input", l)?;
        Ok((out, Shape::from((n, c, g.oh, g.ow))))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some(x.apply_op3_no_bwd(res, grad, &MaxPoolBackwardOp(self.0))?))
    }
}

/// (input, output, output gradient) → input gradient.
struct MaxPoolBackwardOp(PoolGeom);

impl CustomOp3 for MaxPoolBackwardOp {
    fn name(&self) -> &'static str {
        "deepsim-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        out: &CpuStorage,
        ol: &Layout,
        grad: &CpuStorage,
        gl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        const OP: &str = "max_pool2d backward";
        let g = self.0.at(OP, xl, self.0.h, self.0.w)?;
        g.at(OP, ol, g.oh, g.ow)?;
        g.at(OP, gl, g.oh, g.ow)?;
        let out = by_float_dtype!(OP, x.dtype(), run_backward(&g, (x, xl), (out, ol), (grad, gl)))?;
        Ok((out, xl.shape().clone()))
    }
}

/// 2-D max-pooling over NCHW windows, differentiable.
///
/// Padding is −∞ (it never wins); with [`PoolRounding::Ceil`] the last window may hang over the
/// bottom and right edge, and only its part inside the input counts, as in Caffe. The backward
/// pass sends each output's gradient to the first maximal element of its window in row-major
/// order, as PyTorch's CPU kernel does; NaN inputs propagate to the output.
///
/// # Shapes
/// `input` `[N, C, H, W]` → `[N, C, H', W']`, `H'` by [`PoolRounding`] from `H + 2·pad − kernel`.
///
/// # Errors
/// Rank other than 4, a zero-sized dimension, dtype other than f32/f64, kernel or stride 0,
/// padding above half the kernel, a kernel larger than the padded input.
pub fn max_pool2d(input: &Tensor, cfg: &MaxPool2dConfig) -> Result<Tensor> {
    let g = pool_geom("max_pool2d", input, cfg)?;
    if !input.device().is_cpu() {
        return composite::max_pool2d(input, cfg);
    }
    Ok(input.apply_op1(MaxPoolOp(g))?)
}

/// The input gradient of [`max_pool2d`] from its `input`, `output` and the gradient `grad`
/// w.r.t. the output, outside candle's autograd (what `max_pool2d`'s backward pass computes,
/// for callers that run a chain of layers' backward themselves). Not differentiable.
///
/// # Shapes
/// `input` `[N, C, H, W]`; `output`, `grad` `[N, C, H', W']` → `[N, C, H, W]`.
///
/// # Errors
/// As [`max_pool2d`]; `output` or `grad` not of the pooled shape; tensors not on the CPU.
pub fn max_pool2d_backward(
    input: &Tensor,
    output: &Tensor,
    grad: &Tensor,
    cfg: &MaxPool2dConfig,
) -> Result<Tensor> {
    const OP: &str = "max_pool2d_backward";
    let g = pool_geom(OP, input, cfg)?;
    let (n, c) = (input.dim(0)?, input.dim(1)?);
    let want = [n, c, g.oh, g.ow];
    for (arg, t) in [("output", output), ("grad", grad)] {
        crate::check::same_dtype_device(OP, arg, t, input)?;
        if t.dims() != want {
            return Err(invalid(OP, arg, t.dims(), format!("expected {want:?}")));
        }
    }
    if !input.device().is_cpu() {
        return Err(invalid(OP, "input", input.dims(), "not on the CPU"));
    }
    Ok(input.apply_op3_no_bwd(output, grad, &MaxPoolBackwardOp(g))?)
}

/// Max-pooling from candle's built-ins, for devices without a kernel here.
pub(crate) mod composite {
    use candle::Tensor;

    use super::{pool_geom, DType, MaxPool2dConfig};
    use crate::error::Result;
    use crate::strided::strided_slice;

    /// [`super::max_pool2d`] as a sum over window offsets of one-hot "first maximum" masks times
    /// shifted strided views of the input: the forward value is the window maximum, and candle's
    /// own autograd routes the gradient to the first maximum. Unlike the CPU kernel, a NaN in a
    /// window yields 0 rather than NaN.
    pub fn max_pool2d(input: &Tensor, cfg: &MaxPool2dConfig) -> Result<Tensor> {
        let g = pool_geom("max_pool2d", input, cfg)?;
        let (kh, kw) = cfg.kernel;
        let (sh, sw) = cfg.stride;
        let (ph, pw) = cfg.padding;
        let below = ((g.oh - 1) * sh + kh).saturating_sub(g.h + ph);
        let right = ((g.ow - 1) * sw + kw).saturating_sub(g.w + pw);
        let pad = |t: &Tensor| -> Result<Tensor> {
            Ok(t.pad_with_zeros(2, ph, below)?.pad_with_zeros(3, pw, right)?)
        };
        let window = |t: &Tensor, ky: usize, kx: usize| -> Result<Tensor> {
            strided_slice(&strided_slice(t, 2, ky, g.oh, sh)?, 3, kx, g.ow, sw)
        };
        let valid = pad(&input.ones_like()?)?;
        let neg_inf = Tensor::full(f32::NEG_INFINITY, valid.shape(), input.device())?
            .to_dtype(input.dtype())?;
        let scan = valid.to_dtype(DType::U8)?.where_cond(&pad(&input.detach())?, &neg_inf)?;
        let zero_padded = pad(input)?;

        let offsets: Vec<(usize, usize)> =
            (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx))).collect();
        let mut best = window(&scan, 0, 0)?;
        for &(ky, kx) in &offsets[1..] {
            best = best.maximum(&window(&scan, ky, kx)?)?;
        }
        let mut taken = best.zeros_like()?;
        let mut out = best.zeros_like()?;
        for &(ky, kx) in &offsets {
            let is_max = window(&scan, ky, kx)?.eq(&best)?.to_dtype(input.dtype())?;
            let first = (is_max * window(&valid, ky, kx)?)?.mul(&(1.0 - &taken)?)?;
            taken = (&taken + &first)?;
            out = (out + first.mul(&window(&zero_padded, ky, kx)?)?)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::seeded;

    /// Each output as the max over its window by definition: every tap with its padded
    /// coordinates, those outside the input skipped, NaN winning.
    fn direct(x: &[f64], h: usize, w: usize, cfg: &MaxPool2dConfig) -> Vec<f64> {
        let (oh, ow) = (cfg.out_len(0, h).unwrap(), cfg.out_len(1, w).unwrap());
        let mut out = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<f64> = None;
                for ky in 0..cfg.kernel.0 {
                    for kx in 0..cfg.kernel.1 {
                        let y = (oy * cfg.stride.0 + ky) as isize - cfg.padding.0 as isize;
                        let xx = (ox * cfg.stride.1 + kx) as isize - cfg.padding.1 as isize;
                        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                            continue;
                        }
                        let v = x[y as usize * w + xx as usize];
                        best = Some(match best {
                            Some(b) if b.is_nan() || b >= v => b,
                            _ => v,
                        });
                    }
                }
                out.push(best.unwrap());
            }
        }
        out
    }

    #[test]
    fn forward_matches_the_window_definition() {
        // Strides 1 and 2 (the vectorized column pass) and 3 (the general one), kernels 1–5,
        // paddings up to half the kernel, floor and ceil; widths around the window so that
        // every output may be an edge one, and a NaN in one plane.
        let mut checked = 0;
        for (k, s, p, ceil) in [
            (3, 2, 0, true),
            (3, 2, 1, true),
            (3, 2, 0, false),
            (2, 2, 0, false),
            (2, 1, 1, false),
            (3, 1, 1, false),
            (1, 1, 0, false),
            (5, 2, 2, true),
            (4, 3, 1, true),
            (3, 3, 0, false),
        ] {
            let rounding = if ceil { PoolRounding::Ceil } else { PoolRounding::Floor };
            let cfg = MaxPool2dConfig { kernel: (k, k), stride: (s, s), padding: (p, p), rounding };
            for (h, w) in [(k, k), (7, 9), (10, 33), (5, 40)] {
                let (Some(oh), Some(ow)) = (cfg.out_len(0, h), cfg.out_len(1, w)) else {
                    continue;
                };
                let mut x = seeded(2 * h * w, (k * 10 + s + h * w) as u64);
                x[h * w + (h / 2) * w + w / 2] = f64::NAN;
                let geom = PoolGeom { planes: 2, h, w, oh, ow, cfg };
                let got = geom.forward(&x);
                for plane in 0..2 {
                    let want = direct(&x[plane * h * w..][..h * w], h, w, &cfg);
                    for (i, (a, b)) in
                        got[plane * oh * ow..][..oh * ow].iter().zip(&want).enumerate()
                    {
                        let same = a == b || (a.is_nan() && b.is_nan());
                        assert!(
                            same,
                            "k{k} s{s} p{p} {h}×{w} plane {plane} output {i}: {a} vs {b}"
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 35, "{checked} configurations checked");
    }
}
