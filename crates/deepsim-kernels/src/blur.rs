//! Anti-aliased downsampling ("blur pool", Zhang, *Making Convolutional Networks Shift-Invariant
//! Again*, ICML 2019): each channel reflection-padded, low-pass filtered by a normalized
//! binomial kernel and subsampled — the layer that makes ST-LPIPS (Ghildyal & Liu, ECCV 2022)
//! tolerant of small shifts. One pass each way: the filter is separable, so a plane costs
//! `2k` multiply-adds per output instead of `k²`, with no padded copy of the input.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{by_float_dtype, contiguous, dims4, nchw, Real};
use crate::error::{invalid, Result};

/// Hyper-parameters of [`blur_pool2d`], the same on both axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlurPool2dConfig {
    /// Filter taps, 1 to 7: row `filter − 1` of Pascal's triangle (`3` is `[1, 2, 1] / 4`),
    /// applied along rows and columns.
    pub filter: usize,
    /// Subsampling step; at least 1.
    pub stride: usize,
    /// Reflection padding (before, after) on each axis; each below the padded axis' length.
    pub padding: (usize, usize),
}

impl BlurPool2dConfig {
    /// The downsampling of the antialiased-cnns reference (`Downsample(filt_size, stride=2)`):
    /// padding `⌊(k − 1)/2⌋` before and `⌈(k − 1)/2⌉` after.
    pub fn antialiased(filter: usize) -> Self {
        let before = filter.saturating_sub(1) / 2;
        Self { filter, stride: 2, padding: (before, filter.saturating_sub(1) - before) }
    }

    /// ST-LPIPS' downsampling (`Downsample(..., pad_more=True)`): `k − 1` on each side, so the
    /// border pixels enter as many windows as the interior ones.
    pub fn shift_tolerant(filter: usize) -> Self {
        let pad = filter.saturating_sub(1);
        Self { filter, stride: 2, padding: (pad, pad) }
    }

    /// The normalized 1-D filter: binomial coefficients over their sum.
    pub fn taps(&self) -> Vec<f64> {
        let mut row = vec![1.0f64];
        for _ in 1..self.filter {
            let mut next = vec![1.0; row.len() + 1];
            for i in 1..row.len() {
                next[i] = row[i - 1] + row[i];
            }
            row = next;
        }
        let sum: f64 = row.iter().sum();
        row.into_iter().map(|v| v / sum).collect()
    }

    /// Output length along an axis of `len`, `None` when the padding or filter does not fit.
    pub fn out_len(&self, len: usize) -> Option<usize> {
        let (p0, p1) = self.padding;
        if len == 0 || p0 >= len || p1 >= len || self.stride == 0 {
            return None;
        }
        Some((len + p0 + p1).checked_sub(self.filter)? / self.stride + 1)
    }

    /// For each output position and tap, the input index it reads (reflection folded in),
    /// `out × filter` row-major.
    fn sources(&self, len: usize, out: usize) -> Vec<usize> {
        let last = (len - 1) as isize;
        let mut idx = Vec::with_capacity(out * self.filter);
        for o in 0..out {
            for t in 0..self.filter {
                let mut q = (o * self.stride + t) as isize - self.padding.0 as isize;
                if q < 0 {
                    q = -q;
                }
                if q > last {
                    q = 2 * last - q;
                }
                idx.push(q as usize);
            }
        }
        idx
    }
}

/// Validated sizes and the gather tables of one call.
#[derive(Clone, Debug)]
struct BlurGeom {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// `[oh × k]` source rows, `[ow × k]` source columns.
    rows: Vec<usize>,
    cols: Vec<usize>,
    taps: Vec<f64>,
}

fn geom(op: &'static str, dims: &[usize], cfg: &BlurPool2dConfig) -> Result<BlurGeom> {
    if !(1..=7).contains(&cfg.filter) {
        return Err(invalid(op, "config.filter", &[], format!("{}, expected 1 to 7", cfg.filter)));
    }
    if cfg.stride == 0 {
        return Err(invalid(op, "config.stride", &[], "0, expected at least 1"));
    }
    let &[n, c, h, w] = dims else {
        return Err(invalid(op, "input", dims, "expected rank 4 (NCHW)"));
    };
    let (Some(oh), Some(ow)) = (cfg.out_len(h), cfg.out_len(w)) else {
        return Err(invalid(
            op,
            "input",
            dims,
            format!(
                "reflection padding {:?} needs more than {} pixels per axis, and the padded \
                 input at least the filter's {} taps",
                cfg.padding,
                cfg.padding.0.max(cfg.padding.1),
                cfg.filter
            ),
        ));
    };
    Ok(BlurGeom {
        planes: n * c,
        h,
        w,
        oh,
        ow,
        rows: cfg.sources(h, oh),
        cols: cfg.sources(w, ow),
        taps: cfg.taps(),
    })
}

/// Blur pool: every channel reflection-padded by `cfg.padding`, filtered by the binomial
/// kernel of `cfg.filter` taps (outer product of the 1-D filter, sum 1) and sampled every
/// `cfg.stride` pixels — `Downsample` of antialiased-cnns and ST-LPIPS. Differentiable to any
/// order (the op is linear; its backward is its adjoint, whose backward is the op again).
///
/// # Shapes
/// `input` `[N, C, H, W]` → `[N, C, H', W']`, `H' = ⌊(H + p₀ + p₁ − k) / s⌋ + 1`.
///
/// # Errors
/// Rank other than 4, a zero-sized dimension, dtype other than f32/f64, filter outside 1–7,
/// stride 0, a padding not below the input's height or width.
pub fn blur_pool2d(input: &Tensor, cfg: &BlurPool2dConfig) -> Result<Tensor> {
    nchw("blur_pool2d", "input", input)?;
    let g = geom("blur_pool2d", input.dims(), cfg)?;
    if !input.device().is_cpu() {
        return composite::blur_pool2d(input, cfg);
    }
    Ok(input.apply_op1(BlurOp { g, adjoint: false })?)
}

/// The input gradient of [`blur_pool2d`] from the gradient `grad` w.r.t. its output, outside
/// candle's autograd (for callers that run a chain of layers' backward themselves).
///
/// # Shapes
/// `grad` `[N, C, H', W']`, `input_dims` `[N, C, H, W]` → `[N, C, H, W]`.
///
/// # Errors
/// As [`blur_pool2d`] for `input_dims`; `grad` not of the pooled shape or not on the CPU.
pub fn blur_pool2d_backward(
    grad: &Tensor,
    input_dims: &[usize],
    cfg: &BlurPool2dConfig,
) -> Result<Tensor> {
    const OP: &str = "blur_pool2d_backward";
    nchw(OP, "grad", grad)?;
    let g = geom(OP, input_dims, cfg)?;
    let want = [input_dims[0], input_dims[1], g.oh, g.ow];
    if grad.dims() != want {
        return Err(invalid(OP, "grad", grad.dims(), format!("expected {want:?}")));
    }
    if !grad.device().is_cpu() {
        return Err(invalid(OP, "grad", grad.dims(), "not on the CPU"));
    }
    Ok(grad.apply_op1(BlurOp { g, adjoint: true })?)
}

/// `out[i, j] = Σ_a Σ_b f_a f_b x[rows[i, a], cols[j, b]]`, separably: columns first into a
/// per-plane buffer of `H × W'`, then rows.
fn forward<T: Real>(x: &[T], g: &BlurGeom) -> Vec<T> {
    let k = g.taps.len();
    let f: Vec<T> = g.taps.iter().map(|&v| T::from_f64(v)).collect();
    let mut out = vec![T::zero(); g.planes * g.oh * g.ow];
    out.par_chunks_mut(g.oh * g.ow).enumerate().for_each(|(p, o)| {
        let plane = &x[p * g.h * g.w..(p + 1) * g.h * g.w];
        let mut tmp = vec![T::zero(); g.h * g.ow];
        for (row, t) in plane.chunks_exact(g.w).zip(tmp.chunks_exact_mut(g.ow)) {
            for (j, tj) in t.iter_mut().enumerate() {
                let src = &g.cols[j * k..(j + 1) * k];
                *tj = src.iter().zip(&f).fold(T::zero(), |s, (&q, &fb)| s + fb * row[q]);
            }
        }
        for (i, orow) in o.chunks_exact_mut(g.ow).enumerate() {
            for (&q, &fa) in g.rows[i * k..(i + 1) * k].iter().zip(&f) {
                let t = &tmp[q * g.ow..(q + 1) * g.ow];
                for (ov, &tv) in orow.iter_mut().zip(t) {
                    *ov += fa * tv;
                }
            }
        }
    });
    out
}

/// The adjoint of [`forward`]: each output gradient spread back over the inputs it read.
fn adjoint<T: Real>(grad: &[T], g: &BlurGeom) -> Vec<T> {
    let k = g.taps.len();
    let f: Vec<T> = g.taps.iter().map(|&v| T::from_f64(v)).collect();
    let mut out = vec![T::zero(); g.planes * g.h * g.w];
    out.par_chunks_mut(g.h * g.w).enumerate().for_each(|(p, gx)| {
        let gp = &grad[p * g.oh * g.ow..(p + 1) * g.oh * g.ow];
        let mut tmp = vec![T::zero(); g.h * g.ow];
        for (i, grow) in gp.chunks_exact(g.ow).enumerate() {
            for (&q, &fa) in g.rows[i * k..(i + 1) * k].iter().zip(&f) {
                for (tv, &gv) in tmp[q * g.ow..(q + 1) * g.ow].iter_mut().zip(grow) {
                    *tv += fa * gv;
                }
            }
        }
        for (t, row) in tmp.chunks_exact(g.ow).zip(gx.chunks_exact_mut(g.w)) {
            for (j, &tv) in t.iter().enumerate() {
                for (&q, &fb) in g.cols[j * k..(j + 1) * k].iter().zip(&f) {
                    row[q] += fb * tv;
                }
            }
        }
    });
    out
}

/// The forward op (`adjoint` false) or its adjoint, the input gradient (`adjoint` true:
/// `[N, C, H', W']` → `[N, C, H, W]`). Each one's backward is the other.
#[derive(Clone)]
struct BlurOp {
    g: BlurGeom,
    adjoint: bool,
}

fn run<T: Real>(s: &CpuStorage, l: &Layout, op: &BlurOp) -> candle::Result<CpuStorage> {
    let x = contiguous(s.as_slice::<T>()?, l);
    Ok(T::to_cpu_storage_owned(if op.adjoint { adjoint(&x, &op.g) } else { forward(&x, &op.g) }))
}

impl CustomOp1 for BlurOp {
    fn name(&self) -> &'static str {
        if self.adjoint {
            "deepsim-blur-pool2d-backward"
        } else {
            "deepsim-blur-pool2d"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let op = self.name();
        let [n, c, _, _] = dims4("blur_pool2d", "input", l)?;
        let out = by_float_dtype!(op, s.dtype(), run(s, l, self))?;
        let (h, w) = if self.adjoint { (self.g.h, self.g.w) } else { (self.g.oh, self.g.ow) };
        Ok((out, Shape::from((n, c, h, w))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some(grad.apply_op1(BlurOp { g: self.g.clone(), adjoint: !self.adjoint })?))
    }
}

/// Blur pooling from candle's built-ins, for devices without a kernel here.
pub(crate) mod composite {
    use candle::Tensor;

    use super::{geom, BlurPool2dConfig};
    use crate::error::Result;

    /// [`super::blur_pool2d`] as `k` gathers per axis (`index_select` of the reflected source
    /// rows and columns of each tap), weighted and summed; candle's autograd differentiates it.
    pub fn blur_pool2d(input: &Tensor, cfg: &BlurPool2dConfig) -> Result<Tensor> {
        let g = geom("blur_pool2d", input.dims(), cfg)?;
        let k = g.taps.len();
        let pass = |x: &Tensor, axis: usize, table: &[usize], out: usize| -> Result<Tensor> {
            let mut acc: Option<Tensor> = None;
            for (t, &f) in g.taps.iter().enumerate() {
                let idx: Vec<u32> = (0..out).map(|o| table[o * k + t] as u32).collect();
                let idx = Tensor::new(idx.as_slice(), x.device())?;
                let term = (x.index_select(&idx, axis)? * f)?;
                acc = Some(match acc {
                    Some(a) => (a + term)?,
                    None => term,
                });
            }
            Ok(acc.expect("at least one tap"))
        };
        let cols = pass(input, 3, &g.cols, g.ow)?;
        pass(&cols, 2, &g.rows, g.oh)
    }
}
