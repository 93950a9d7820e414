//! Depthwise convolutions (one input and one output channel per group, EfficientNet's and
//! MobileNet's k×k layers) as direct loops over each plane: im2col + GEMM would run one
//! single-row GEMM per channel.

use rayon::prelude::*;

use crate::check::Real;

/// The geometry of a depthwise convolution: planes, big (input) and small (output) sizes,
/// kernel, stride, padding, dilation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Depthwise {
    pub planes: usize,
    pub channels: usize,
    pub big: (usize, usize),
    pub small: (usize, usize),
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
}

impl Depthwise {
    /// The output columns `ox` whose input column `ox·stride + kx·dil − pad` lies in the image,
    /// as a half-open range.
    fn cols(&self, kx: usize) -> (usize, usize) {
        let (sw, w, ow) = (self.stride.1 as isize, self.big.1 as isize, self.small.1 as isize);
        let off = (kx * self.dilation.1) as isize - self.padding.1 as isize;
        let lo = if off >= 0 { 0 } else { (-off + sw - 1) / sw };
        let hi = if w - off <= 0 { 0 } else { (w - 1 - off) / sw + 1 };
        (lo.clamp(0, ow) as usize, hi.clamp(0, ow) as usize)
    }

    fn row(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.stride.0 + ky * self.dilation.0) as isize - self.padding.0 as isize;
        (iy >= 0 && iy < self.big.0 as isize).then_some(iy as usize)
    }

    /// Calls `f(tap weight, output row, input row, output columns, input column of output
    /// column 0)` for every kernel tap of channel `c` and every output row it reaches: the
    /// loop nest shared by the forward pass and the input gradient.
    fn for_each_row<T: Real>(
        &self,
        weight: &[T],
        c: usize,
        mut f: impl FnMut(T, usize, usize, std::ops::Range<usize>, isize),
    ) {
        let (kh, kw) = self.kernel;
        for ky in 0..kh {
            for kx in 0..kw {
                let wv = weight[(c * kh + ky) * kw + kx];
                let (x0, x1) = self.cols(kx);
                let off = (kx * self.dilation.1) as isize - self.padding.1 as isize;
                for oy in 0..self.small.0 {
                    if let Some(iy) = self.row(oy, ky) {
                        f(wv, oy, iy, x0..x1, off);
                    }
                }
            }
        }
    }
}

/// Output `[planes = N·C, oh, ow]` from input `[N·C, h, w]`, weight `[C, kh, kw]`, bias `[C]`.
pub(crate) fn forward<T: Real>(
    d: &Depthwise,
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    let (h, w) = d.big;
    let (oh, ow) = d.small;
    let mut out = vec![T::zero(); d.planes * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, dst)| {
        let c = p % d.channels;
        let src = &input[p * h * w..(p + 1) * h * w];
        let b = bias.map_or(T::zero(), |b| b[c]);
        dst.fill(b);
        d.for_each_row(weight, c, |wv, oy, iy, cols, off| {
            let line = &src[iy * w..(iy + 1) * w];
            let out_row = &mut dst[oy * ow..(oy + 1) * ow];
            for ox in cols {
                out_row[ox] += wv * line[((ox * d.stride.1) as isize + off) as usize];
            }
        });
        if relu {
            for v in dst.iter_mut() {
                *v = if *v > T::zero() { *v } else { T::zero() };
            }
        }
    });
    out
}

/// Input gradient `[N·C, h, w]` from the output gradient `[N·C, oh, ow]`, masked where
/// `relu_out` (the forward output of a fused ReLU) is not positive.
pub(crate) fn input_grad<T: Real>(
    d: &Depthwise,
    grad: &[T],
    weight: &[T],
    relu_out: Option<&[T]>,
) -> Vec<T> {
    let (h, w) = d.big;
    let (oh, ow) = d.small;
    let mut out = vec![T::zero(); d.planes * h * w];
    out.par_chunks_mut(h * w).enumerate().for_each(|(p, dst)| {
        let c = p % d.channels;
        let g = &grad[p * oh * ow..(p + 1) * oh * ow];
        let masked: Vec<T>;
        let g = match relu_out {
            Some(y) => {
                let y = &y[p * oh * ow..(p + 1) * oh * ow];
                masked = g
                    .iter()
                    .zip(y)
                    .map(|(&gv, &yv)| if yv > T::zero() { gv } else { T::zero() })
                    .collect();
                &masked[..]
            }
            None => g,
        };
        d.for_each_row(weight, c, |wv, oy, iy, cols, off| {
            let line = &mut dst[iy * w..(iy + 1) * w];
            let g_row = &g[oy * ow..(oy + 1) * ow];
            for ox in cols {
                line[((ox * d.stride.1) as isize + off) as usize] += wv * g_row[ox];
            }
        });
    });
    out
}
