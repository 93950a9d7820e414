//! Convolutions on the CPU through im2col/col2im + GEMM: conv2d and conv_transpose2d, forward
//! and backward, with groups, stride, padding and dilation, and a frozen-weights conv2d.
//!
//! Both convolutions share one geometry: a *big* image (the input of a conv2d, the output of a
//! transposed conv) and a *small* one, related by a kernel `[small_c, big_c / groups, kh, kw]`.
//! conv2d's forward and conv_transpose2d's input gradient are the same kernel (im2col, GEMM),
//! as are conv2d's input gradient and conv_transpose2d's forward (GEMM, col2im).

use candle::backend::BackendStorage;
use std::any::Any;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{
    at_least, by_float_dtype, contiguous, dims4, nchw, same_dtype_device, with_scratch, Real,
};
use crate::error::{invalid, Result};
use crate::fft::{self, FftKernels, FftReal};
use crate::gemm::{
    matmul, matmul_col_major, parallelism, transpose_into, transpose_into_par, Mat, SharedSlice,
};
use crate::grads::deliver_grad;
use crate::stacking::{Axis, Stacking};
use crate::winograd::{self, Scheme, TransformedKernels};

/// Hyper-parameters of [`conv2d`], as in PyTorch's `nn.Conv2d` (height first in every pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step of the kernel over the input, (rows, columns); at least 1.
    pub stride: (usize, usize),
    /// Zeros added on each side of the input, (rows, columns).
    pub padding: (usize, usize),
    /// Spacing between kernel taps, (rows, columns); at least 1.
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels are split into this many independent convs.
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self { stride: (1, 1), padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

impl Conv2dConfig {
    /// Square stride and padding, no dilation, one group: `Conv2dConfig::new(4, 2)` is AlexNet's
    /// conv1.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self { stride: (stride, stride), padding: (padding, padding), ..Self::default() }
    }

    /// The same configuration with `groups` channel groups (CaffeNet's conv2, conv4, conv5: 2).
    pub fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// The same configuration with square dilation.
    pub fn with_dilation(self, dilation: usize) -> Self {
        Self { dilation: (dilation, dilation), ..self }
    }
}

/// Hyper-parameters of [`conv_transpose2d`], as in PyTorch's `nn.ConvTranspose2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dConfig {
    /// Up-sampling factor, (rows, columns); at least 1.
    pub stride: (usize, usize),
    /// Rows and columns removed from each side of the full output.
    pub padding: (usize, usize),
    /// Extra rows and columns added at the bottom and right of the output; each smaller than
    /// the stride or the dilation.
    pub output_padding: (usize, usize),
    /// Spacing between kernel taps, (rows, columns); at least 1.
    pub dilation: (usize, usize),
    /// Channel groups.
    pub groups: usize,
}

impl Default for ConvTranspose2dConfig {
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            output_padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl ConvTranspose2dConfig {
    /// Square stride and padding: `ConvTranspose2dConfig::new(2, 1)` with a 4×4 kernel is the
    /// DeePSiM generator's up-convolution, doubling height and width.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self { stride: (stride, stride), padding: (padding, padding), ..Self::default() }
    }

    /// The same configuration with `groups` channel groups.
    pub fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// The same configuration with the given output padding.
    pub fn with_output_padding(self, output_padding: (usize, usize)) -> Self {
        Self { output_padding, ..self }
    }

    fn conv(&self) -> Conv2dConfig {
        Conv2dConfig {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}

/// The shared geometry: batch, big image, small image, kernel and hyper-parameters.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    big: [usize; 3],
    small: [usize; 3],
    kernel: (usize, usize),
    cfg: Conv2dConfig,
}

impl Geom {
    fn groups(&self) -> usize {
        self.cfg.groups
    }
    fn big_cg(&self) -> usize {
        self.big[0] / self.cfg.groups
    }
    fn small_cg(&self) -> usize {
        self.small[0] / self.cfg.groups
    }
    fn big_hw(&self) -> usize {
        self.big[1] * self.big[2]
    }
    fn small_hw(&self) -> usize {
        self.small[1] * self.small[2]
    }
    /// Rows of the im2col matrix: one per (input channel of a group, ky, kx).
    fn k_len(&self) -> usize {
        self.big_cg() * self.kernel.0 * self.kernel.1
    }
    fn weight_len(&self) -> usize {
        self.small[0] * self.k_len()
    }
    /// A 1×1, stride-1, unpadded kernel: the big image already is the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == (1, 1) && self.cfg.stride == (1, 1) && self.cfg.padding == (0, 0)
    }
    /// One input and one output channel per group: a depthwise convolution.
    fn depthwise(&self) -> Option<crate::depthwise::Depthwise> {
        (self.big_cg() == 1 && self.small_cg() == 1).then_some(crate::depthwise::Depthwise {
            planes: self.n * self.big[0],
            channels: self.big[0],
            big: (self.big[1], self.big[2]),
            small: (self.small[1], self.small[2]),
            kernel: self.kernel,
            stride: self.cfg.stride,
            padding: self.cfg.padding,
            dilation: self.cfg.dilation,
        })
    }
    fn weight_dims(&self) -> [usize; 4] {
        [self.small[0], self.big_cg(), self.kernel.0, self.kernel.1]
    }
}

/// Output length of a convolution along one axis, `None` when the kernel does not fit.
fn conv_out(len: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let span = dil * (k - 1) + 1;
    (len + 2 * pad).checked_sub(span).map(|free| free / stride + 1)
}

/// Checks a convolution's input, weight and bias; returns the geometry with `big = input`.
fn conv2d_geom(
    op: &'static str,
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Geom> {
    let [n, c, h, w] = nchw(op, "input", input)?;
    let [oc, icg, kh, kw] = nchw(op, "weight", weight)?;
    same_dtype_device(op, "weight", weight, input)?;
    at_least(op, "config.stride", cfg.stride, 1)?;
    at_least(op, "config.dilation", cfg.dilation, 1)?;
    let g = cfg.groups;
    if g == 0 || c % g != 0 || oc % g != 0 {
        return Err(invalid(
            op,
            "config.groups",
            &[],
            format!("{g} groups must divide input channels {c} and output channels {oc}"),
        ));
    }
    if icg * g != c {
        return Err(invalid(
            op,
            "weight",
            weight.dims(),
            format!(
                "expects {} input channels ({icg} per group × {g} groups), input has {c}",
                icg * g
            ),
        ));
    }
    if let Some(b) = bias {
        same_dtype_device(op, "bias", b, input)?;
        if b.dims() != [oc] {
            return Err(invalid(op, "bias", b.dims(), format!("expected shape [{oc}]")));
        }
    }
    let (oh, ow) = match (
        conv_out(h, kh, cfg.stride.0, cfg.padding.0, cfg.dilation.0),
        conv_out(w, kw, cfg.stride.1, cfg.padding.1, cfg.dilation.1),
    ) {
        (Some(oh), Some(ow)) => (oh, ow),
        _ => {
            return Err(invalid(
                op,
                "input",
                input.dims(),
                format!(
                    "kernel {kh}×{kw} (dilation {:?}) is larger than the padded input {}×{}",
                    cfg.dilation,
                    h + 2 * cfg.padding.0,
                    w + 2 * cfg.padding.1
                ),
            ))
        }
    };
    Ok(Geom { n, big: [c, h, w], small: [oc, oh, ow], kernel: (kh, kw), cfg: *cfg })
}

/// Checks a transposed convolution's arguments; returns the geometry with `small = input`.
fn conv_transpose2d_geom(
    op: &'static str,
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose2dConfig,
) -> Result<Geom> {
    let [n, c, h, w] = nchw(op, "input", input)?;
    let [ic, ocg, kh, kw] = nchw(op, "weight", weight)?;
    same_dtype_device(op, "weight", weight, input)?;
    at_least(op, "config.stride", cfg.stride, 1)?;
    at_least(op, "config.dilation", cfg.dilation, 1)?;
    let g = cfg.groups;
    if g == 0 || c % g != 0 {
        return Err(invalid(
            op,
            "config.groups",
            &[],
            format!("{g} groups must divide {c} channels"),
        ));
    }
    if ic != c {
        return Err(invalid(
            op,
            "weight",
            weight.dims(),
            format!("expects {ic} input channels (dim 0), input has {c}"),
        ));
    }
    let (oph, opw) = cfg.output_padding;
    if (oph >= cfg.stride.0 && oph >= cfg.dilation.0)
        || (opw >= cfg.stride.1 && opw >= cfg.dilation.1)
    {
        return Err(invalid(
            op,
            "config.output_padding",
            &[],
            format!("{:?} must be smaller than the stride or the dilation", cfg.output_padding),
        ));
    }
    let oc = ocg * g;
    if let Some(b) = bias {
        same_dtype_device(op, "bias", b, input)?;
        if b.dims() != [oc] {
            return Err(invalid(op, "bias", b.dims(), format!("expected shape [{oc}]")));
        }
    }
    let full = |len: usize, k: usize, s: usize, d: usize, op_: usize| {
        (len - 1) * s + d * (k - 1) + 1 + op_
    };
    let (fh, fw) = (
        full(h, kh, cfg.stride.0, cfg.dilation.0, oph),
        full(w, kw, cfg.stride.1, cfg.dilation.1, opw),
    );
    if fh <= 2 * cfg.padding.0 || fw <= 2 * cfg.padding.1 {
        return Err(invalid(
            op,
            "config.padding",
            &[],
            format!("{:?} removes the whole {fh}×{fw} output", cfg.padding),
        ));
    }
    let big = [oc, fh - 2 * cfg.padding.0, fw - 2 * cfg.padding.1];
    Ok(Geom { n, big, small: [c, h, w], kernel: (kh, kw), cfg: cfg.conv() })
}

// ----------------------------------------------------------------------------- CPU kernels

/// Fills columns `off..off + pixels.len()` of `cols` (`k_len` rows, row stride `ld`) with the
/// patches of output pixels `pixels` (row-major over the output map) of one group of one image.
fn im2col<T: Real>(
    g: &Geom,
    src: &[T],
    cols: &mut [T],
    ld: usize,
    off: usize,
    pixels: Range<usize>,
) {
    let (kh, kw) = g.kernel;
    let [_, h, w] = g.big;
    let [_, _, ow] = g.small;
    let (sh, sw) = g.cfg.stride;
    let (ph, pw) = g.cfg.padding;
    let (dh, dw) = g.cfg.dilation;
    if pixels.is_empty() {
        return;
    }
    let (p0, len) = (pixels.start, pixels.len());
    // Compiled for the CPU's vector instructions (the copies and the stride-2 gather).
    crate::simd::vectorized(
        #[inline(always)]
        || {
            let mut r = 0;
            for c in 0..g.big_cg() {
                let plane = &src[c * h * w..(c + 1) * h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = &mut cols[r * ld + off..r * ld + off + len];
                        r += 1;
                        let off_x = (kx * dw) as isize - pw as isize;
                        let (x0, x1) = valid_range(off_x, sw, w, ow);
                        for oy in p0 / ow..=(pixels.end - 1) / ow {
                            // This output row's part of the range: columns a..b.
                            let first = oy * ow;
                            let (a, b) =
                                (p0.max(first) - first, pixels.end.min(first + ow) - first);
                            let out = &mut row[first + a - p0..first + b - p0];
                            let iy = (oy * sh + ky * dh) as isize - ph as isize;
                            let (v0, v1) = (x0.clamp(a, b), x1.clamp(a, b));
                            if iy < 0 || iy >= h as isize || v0 >= v1 {
                                out.fill(T::zero());
                                continue;
                            }
                            let line = &plane[iy as usize * w..(iy as usize + 1) * w];
                            out[..v0 - a].fill(T::zero());
                            out[v1 - a..].fill(T::zero());
                            let start = ((v0 * sw) as isize + off_x) as usize;
                            let dst = &mut out[v0 - a..v1 - a];
                            let src = &line[start..start + sw * (v1 - v0 - 1) + 1];
                            match sw {
                                1 => dst.copy_from_slice(src),
                                // Every other input (the up-convolutions' gradients) and every
                                // fourth (AlexNet's and the discriminator's first layers): a
                                // fixed stride, which compiles to vector shuffles.
                                2 => every_nth::<T, 2>(src, dst),
                                4 => every_nth::<T, 4>(src, dst),
                                _ => {
                                    for (o, &v) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                                        *o = v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Adds the patches in columns `off..off + small_hw` of `cols` (row stride `ld`) back onto one
/// group of one image (the adjoint of [`im2col`]).
///
/// Row by row of the image: with a stride along the row (the up-convolutions' forward pass),
/// the samples a row receives from every (ky, kx) are first summed into one run per phase
/// of the stride (contiguous adds), and the runs interleaved into the row once, where each
/// tap's samples were added one by one, `stride` apart.
fn col2im<T: Real>(g: &Geom, cols: &[T], dst: &mut [T], ld: usize, off: usize) {
    let (kh, kw) = g.kernel;
    let [_, h, w] = g.big;
    let [_, oh, ow] = g.small;
    let (sh, sw) = g.cfg.stride;
    let (ph, pw) = g.cfg.padding;
    let (dh, dw) = g.cfg.dilation;
    // Per kx: the valid output columns and the first image column they reach.
    let spans: Vec<(usize, usize, usize)> = (0..kw)
        .map(|kx| {
            let off_x = (kx * dw) as isize - pw as isize;
            let (x0, x1) = valid_range(off_x, sw, w, ow);
            (x0, x1, ((x0 * sw) as isize + off_x).max(0) as usize)
        })
        .collect();
    // One run of the row per phase of the column stride.
    let run = w.div_ceil(sw);
    let mut phases = vec![T::zero(); if sw == 1 { 0 } else { sw * run }];
    crate::simd::vectorized(
        #[inline(always)]
        || {
            for c in 0..g.big_cg() {
                let plane = &mut dst[c * h * w..(c + 1) * h * w];
                for (iy, line) in plane.chunks_exact_mut(w).enumerate() {
                    let mut touched = false;
                    for ky in 0..kh {
                        // The output row whose tap ky lands on image row iy, if any.
                        let Some(t) = (iy + ph).checked_sub(ky * dh) else { continue };
                        if !t.is_multiple_of(sh) || t / sh >= oh {
                            continue;
                        }
                        let oy = t / sh;
                        for (kx, &(x0, x1, start)) in spans.iter().enumerate() {
                            if x0 >= x1 {
                                continue;
                            }
                            let r = (c * kh + ky) * kw + kx;
                            let src = &cols[r * ld + off + oy * ow + x0..][..x1 - x0];
                            let sink = if sw == 1 {
                                &mut line[start..start + src.len()]
                            } else {
                                if !touched {
                                    phases.fill(T::zero());
                                    touched = true;
                                }
                                let at = start % sw * run + start / sw;
                                &mut phases[at..at + src.len()]
                            };
                            for (d, &v) in sink.iter_mut().zip(src) {
                                *d += v;
                            }
                        }
                    }
                    if !touched {
                        continue;
                    }
                    if sw == 2 {
                        // Pairs of columns from the two runs (vector shuffles).
                        let (even, odd) = phases.split_at(run);
                        let (pairs, last) = line.split_at_mut(w / 2 * 2);
                        for ((pair, &e), &o) in pairs.chunks_exact_mut(2).zip(even).zip(odd) {
                            pair[0] += e;
                            pair[1] += o;
                        }
                        if let Some(d) = last.first_mut() {
                            *d += even[run - 1];
                        }
                    } else {
                        for (x, d) in line.iter_mut().enumerate() {
                            *d += phases[x % sw * run + x / sw];
                        }
                    }
                }
            }
        },
    )
}

/// `dst[i] = src[i · N]` for every `i < dst.len()`; `src` holds `N · (dst.len() − 1) + 1`
/// values (the last step's tail not needed). A constant stride lets the compiler load whole
/// vectors and shuffle where a variable one reads element by element.
#[inline(always)]
fn every_nth<T: Copy, const N: usize>(src: &[T], dst: &mut [T]) {
    let Some((last, body)) = dst.split_last_mut() else {
        return;
    };
    for (o, group) in body.iter_mut().zip(src.chunks_exact(N)) {
        *o = group[0];
    }
    *last = src[N * body.len()];
}

/// The output columns `ox` in `[x0, x1)` whose input column `ox * stride + off` lies in `[0, w)`.
fn valid_range(off: isize, stride: usize, w: usize, ow: usize) -> (usize, usize) {
    let s = stride as isize;
    let x0 = if off >= 0 { 0 } else { ((-off + s - 1) / s) as usize };
    let last = w as isize - 1 - off;
    let x1 = if last < 0 { 0 } else { (last / s + 1) as usize };
    (x0.min(ow), x1.min(ow))
}

/// Images per GEMM: enough that the GEMM's `n` (images × output pixels) is at least ~2048,
/// so small feature maps (AlexNet's 13×13) still fill the micro-kernel's tiles.
fn images_per_gemm(pixels: usize, images: usize) -> usize {
    2048usize.div_ceil(pixels).clamp(1, images.max(1))
}

/// Runs `f(first_image, out_chunk, scratch, parallelism)` over the batch in sub-batches of
/// `per_call` images: in parallel over contiguous runs of images when there are enough of them
/// (each GEMM then runs on one thread), else one sub-batch at a time with threaded GEMMs.
fn for_each_sub_batch<T: Real>(
    n: usize,
    per_call: usize,
    out: &mut [T],
    scratch_len: usize,
    f: impl Fn(usize, &mut [T], &mut [T], gemm::Parallelism) + Sync,
) {
    let per_image = out.len() / n;
    let threads = rayon::current_num_threads();
    let run = |first: usize, out: &mut [T], par: gemm::Parallelism| {
        with_scratch(scratch_len, |scratch| {
            for (i, chunk) in out.chunks_mut(per_call * per_image).enumerate() {
                f(first + i * per_call, chunk, scratch, par);
            }
        })
    };
    if n >= threads && threads > 1 {
        let per_thread = n.div_ceil(threads);
        out.par_chunks_mut(per_thread * per_image)
            .enumerate()
            .for_each(|(t, chunk)| run(t * per_thread, chunk, parallelism(true)));
    } else {
        run(0, out, parallelism(false));
    }
}

/// Big → small: conv2d's forward, conv_transpose2d's input gradient. `bias` is per small channel.
fn big_to_small<T: Real>(
    g: &Geom,
    big: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    act: Activation,
) -> Vec<T> {
    if let Some(d) = g.depthwise() {
        return crate::depthwise::forward(&d, big, weight, bias, act == Activation::Relu);
    }
    if g.small_hw() >= CHUNKED_MIN_PIXELS && !g.is_pointwise() {
        return big_to_small_chunked(g, big, weight, bias, act);
    }
    let (k_len, p_len, big_len) = (g.k_len(), g.small_hw(), g.big_hw());
    let (small_cg, big_cg) = (g.small_cg(), g.big_cg());
    let per_thread = g.n.div_ceil(rayon::current_num_threads().min(g.n));
    let nb = images_per_gemm(p_len, per_thread);
    let ld = nb * p_len;
    let direct = nb == 1 && g.is_pointwise();
    // im2col columns for `nb` images side by side, then the GEMM result before scattering.
    let scratch = if direct { 0 } else { k_len * ld + small_cg * ld };
    let mut out = vec![T::zero(); g.n * g.small[0] * p_len];
    for_each_sub_batch(g.n, nb, &mut out, scratch, |first, out, scratch, par| {
        let images = out.len() / (g.small[0] * p_len);
        let ld = images * p_len;
        // Without scratch (a pointwise conv writing straight into the output) both are empty.
        let (cols, result) = scratch.split_at_mut((k_len * ld).min(scratch.len()));
        for gi in 0..g.groups() {
            let w = Mat::row_major(&weight[gi * small_cg * k_len..], small_cg, k_len);
            let src_of = |b: usize| {
                let start = ((first + b) * g.big[0] + gi * big_cg) * big_len;
                &big[start..start + big_cg * big_len]
            };
            if direct {
                let dst = &mut out[gi * small_cg * p_len..(gi + 1) * small_cg * p_len];
                matmul(dst, w, Mat::row_major(src_of(0), k_len, p_len), false, par);
            } else {
                for b in 0..images {
                    if g.is_pointwise() {
                        for (r, row) in src_of(b).chunks_exact(p_len).enumerate() {
                            cols[r * ld + b * p_len..r * ld + (b + 1) * p_len].copy_from_slice(row);
                        }
                    } else {
                        im2col(g, src_of(b), cols, ld, b * p_len, 0..p_len);
                    }
                }
                let result = &mut result[..small_cg * ld];
                matmul(result, w, Mat::row_major(cols, k_len, ld), false, par);
                for b in 0..images {
                    let image = &mut out[b * g.small[0] * p_len..(b + 1) * g.small[0] * p_len];
                    for o in 0..small_cg {
                        let dst = &mut image[(gi * small_cg + o) * p_len..][..p_len];
                        dst.copy_from_slice(&result[o * ld + b * p_len..][..p_len]);
                    }
                }
            }
            for b in 0..images {
                let image = &mut out[b * g.small[0] * p_len..(b + 1) * g.small[0] * p_len];
                for o in 0..small_cg {
                    let c = gi * small_cg + o;
                    let dst = &mut image[c * p_len..(c + 1) * p_len];
                    finish_output(dst, bias.map(|b| b[c]), act);
                }
            }
        }
    });
    out
}

/// Output maps of at least this many pixels are split into pixel ranges (see
/// [`big_to_small_chunked`]).
const CHUNKED_MIN_PIXELS: usize = 4096;
/// Elements of im2col columns per pixel range: 4 MB in f32, within a core's share of cache.
const CHUNK_BUDGET: usize = 1 << 20;

/// [`big_to_small`] for large output maps: the work is split into (image, group, pixel range)
/// items whose im2col columns stay small, spread over rayon's threads, and each item's GEMM
/// writes straight into its columns of the output. One large image thus keeps every thread
/// busy (im2col included) without a scratch buffer the size of the whole im2col matrix.
fn big_to_small_chunked<T: Real>(
    g: &Geom,
    big: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    act: Activation,
) -> Vec<T> {
    let (k_len, p_len, big_len) = (g.k_len(), g.small_hw(), g.big_hw());
    let (small_cg, big_cg, groups) = (g.small_cg(), g.big_cg(), g.groups());
    let threads = rayon::current_num_threads().max(1);
    // As many ranges as the budget asks, and enough items for every thread.
    let ranges = p_len
        .div_ceil((CHUNK_BUDGET / k_len).max(256))
        .max(threads.div_ceil(g.n * groups))
        .min(p_len.div_ceil(256));
    let chunk = p_len.div_ceil(ranges).next_multiple_of(16).min(p_len);
    let ranges = p_len.div_ceil(chunk);
    let items = g.n * groups * ranges;
    let mut out = vec![T::zero(); g.n * g.small[0] * p_len];
    let shared = SharedSlice::new(&mut out);
    let serial_gemm = items >= threads;
    let run = |cols: &mut [T], item: usize| {
        let (image, gi, range) = (item / (groups * ranges), item / ranges % groups, item % ranges);
        let pixels = range * chunk..((range + 1) * chunk).min(p_len);
        let len = pixels.len();
        let src_start = (image * g.big[0] + gi * big_cg) * big_len;
        im2col(g, &big[src_start..src_start + big_cg * big_len], cols, len, 0, pixels.clone());
        let w = Mat::row_major(&weight[gi * small_cg * k_len..], small_cg, k_len);
        let first_channel = image * g.small[0] + gi * small_cg;
        let start = first_channel * p_len + pixels.start;
        let cols = Mat::row_major(&cols[..k_len * len], k_len, len);
        // SAFETY: item (image, group, range) alone writes pixels `pixels` of its group's
        // channels of its image; items partition the output.
        unsafe { shared.matmul_into(start, p_len, w, cols, false, parallelism(serial_gemm)) };
        for o in 0..small_cg {
            let c = gi * small_cg + o;
            // SAFETY: as above, and the GEMM into these elements has returned.
            let row = unsafe { shared.range((first_channel + o) * p_len + pixels.start, len) };
            finish_output(row, bias.map(|b| b[c]), act);
        }
    };
    let run = |item: usize| with_scratch(k_len * chunk, |cols| run(cols, item));
    if serial_gemm && threads > 1 {
        (0..items).into_par_iter().for_each(run);
    } else {
        (0..items).for_each(run);
    }
    out
}

/// Adds the bias and applies the activation to one output plane.
fn finish_output<T: Real>(dst: &mut [T], bias: Option<T>, act: Activation) {
    match (bias, act) {
        (None, Activation::Identity) => {}
        (Some(b), Activation::Identity) => dst.iter_mut().for_each(|v| *v += b),
        (b, Activation::Relu) => {
            let b = b.unwrap_or_else(T::zero);
            for v in dst.iter_mut() {
                let s = *v + b;
                *v = if s > T::zero() { s } else { T::zero() };
            }
        }
    }
}

/// Small → big: conv2d's input gradient, conv_transpose2d's forward. `bias` is per big channel.
///
/// With `relu_out` (the forward output of a fused conv + ReLU), `small` is first masked where
/// that output is not positive: the ReLU's backward, fused.
fn small_to_big<T: Real>(
    g: &Geom,
    small: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    relu_out: Option<&[T]>,
) -> Vec<T> {
    if let (Some(d), None) = (g.depthwise(), bias) {
        return crate::depthwise::input_grad(&d, small, weight, relu_out);
    }
    let (k_len, p_len, big_len) = (g.k_len(), g.small_hw(), g.big_hw());
    let (small_cg, big_cg) = (g.small_cg(), g.big_cg());
    let per_thread = g.n.div_ceil(rayon::current_num_threads().min(g.n));
    let nb = images_per_gemm(p_len, per_thread);
    let ld = nb * p_len;
    // The gathered (and masked) gradient of `nb` images side by side, then the GEMM's columns.
    let scratch = small_cg * ld + k_len * ld;
    let mut out = vec![T::zero(); g.n * g.big[0] * big_len];
    for_each_sub_batch(g.n, nb, &mut out, scratch, |first, out, scratch, par| {
        let images = out.len() / (g.big[0] * big_len);
        let ld = images * p_len;
        let (gathered, cols) = scratch.split_at_mut(small_cg * ld);
        for gi in 0..g.groups() {
            for b in 0..images {
                let start = ((first + b) * g.small[0] + gi * small_cg) * p_len;
                let src = &small[start..start + small_cg * p_len];
                for (o, row) in src.chunks_exact(p_len).enumerate() {
                    let dst = &mut gathered[o * ld + b * p_len..][..p_len];
                    match relu_out {
                        Some(y) => {
                            let y = &y[start + o * p_len..][..p_len];
                            for ((d, &gv), &yv) in dst.iter_mut().zip(row).zip(y) {
                                *d = if yv > T::zero() { gv } else { T::zero() };
                            }
                        }
                        None => dst.copy_from_slice(row),
                    }
                }
            }
            let src = Mat::row_major(&gathered[..small_cg * ld], small_cg, ld);
            let w = Mat::row_major(&weight[gi * small_cg * k_len..], small_cg, k_len).t();
            // The columns of a block of big channels at a time, each block added into the
            // image while its columns are still in cache (one pass over all of them read
            // them back from memory: 17 MB a call for the 256 → 128 up-convolution).
            let taps = k_len / big_cg;
            let block = (COL2IM_BLOCK / (taps * ld)).clamp(1, big_cg);
            for c0 in (0..big_cg).step_by(block) {
                let channels = block.min(big_cg - c0);
                let rows = channels * taps;
                let cols = &mut cols[..rows * ld];
                let w_rows = Mat { rows, data: &w.data[c0 * taps * w.rs..], ..w };
                matmul(cols, w_rows, src, false, par);
                let part = Geom {
                    big: [channels, g.big[1], g.big[2]],
                    cfg: Conv2dConfig { groups: 1, ..g.cfg },
                    ..*g
                };
                for b in 0..images {
                    let image = &mut out[b * g.big[0] * big_len..(b + 1) * g.big[0] * big_len];
                    let first = gi * big_cg + c0;
                    let dst = &mut image[first * big_len..(first + channels) * big_len];
                    if let Some(bias) = bias {
                        for (plane, &bv) in dst.chunks_exact_mut(big_len).zip(&bias[first..]) {
                            plane.fill(bv);
                        }
                    }
                    if g.is_pointwise() {
                        for (r, plane) in dst.chunks_exact_mut(big_len).enumerate() {
                            for (d, &v) in plane.iter_mut().zip(&cols[r * ld + b * p_len..]) {
                                *d += v;
                            }
                        }
                    } else {
                        col2im(&part, cols, dst, ld, b * p_len);
                    }
                }
            }
        }
    });
    out
}

/// Elements of im2col columns [`small_to_big`] computes and adds back at a time: 512 KB in
/// f32, within a core's L2 cache beside the GEMM's packed operands.
const COL2IM_BLOCK: usize = 1 << 17;

/// Small maps (at most this many output pixels per image) with large weights (at least
/// [`BATCHED_WGRAD_WEIGHTS`] elements a group, more than a core's L2 cache holds) take
/// [`weight_grad_batched`]. Measured in the 64-pixel trainer step (batch 8): the 512 → 256
/// up-convolution at 8×8 (2 M weights) 20.5 → 14.6 ms, 256 → 256 at 4×4 7.0 → 3.4 ms; layers
/// with smaller weights (the discriminator's, 51 K–295 K) or 256-pixel maps ran as fast or
/// up to 30 % slower batched, and keep one GEMM per image.
const BATCHED_WGRAD_PIXELS: usize = 128;
const BATCHED_WGRAD_WEIGHTS: usize = 1 << 19;

/// Inner dimension a batched weight-gradient GEMM aims for (images × pixels).
const BATCHED_WGRAD_DEPTH: usize = 1024;

/// The weight gradient `[small_c, big_c / groups, kh, kw]` from the big and small images: by
/// Winograd wherever its forward pass would pay ([`winograd_pays`]; measured on the generator
/// tower's 3×3 layers, batch 8: 256 → 512 at 8×8 (32 tiles), 256 → 256 at 16×16 and 128 → 128
/// at 32×32 all 1.3–1.6× faster than im2col), otherwise by GEMM over im2col columns.
fn weight_grad<T: Real>(g: &Geom, big: &[T], small: &[T]) -> Vec<T> {
    if winograd_pays(g) {
        return winograd_weight_grad(g, big, small);
    }
    if batched_wgrad(g) {
        return weight_grad_batched(g, big, small);
    }
    weight_grad_per_image(g, big, small)
}

/// Whether a weight gradient outside Winograd takes [`weight_grad_batched`]: small maps, large
/// weights ([`BATCHED_WGRAD_PIXELS`], [`BATCHED_WGRAD_WEIGHTS`]), not pointwise.
fn batched_wgrad(g: &Geom) -> bool {
    let weights = g.weight_len() / g.groups();
    g.small_hw() <= BATCHED_WGRAD_PIXELS && weights >= BATCHED_WGRAD_WEIGHTS && !g.is_pointwise()
}

/// [`weight_grad`] with one GEMM per image, the images split over the threads (each thread's
/// partial gradient added at the end).
fn weight_grad_per_image<T: Real>(g: &Geom, big: &[T], small: &[T]) -> Vec<T> {
    let (k_len, p_len, big_len) = (g.k_len(), g.small_hw(), g.big_hw());
    let (small_cg, big_cg) = (g.small_cg(), g.big_cg());
    let parts = rayon::current_num_threads().min(g.n).max(1);
    let per_part = g.n.div_ceil(parts);
    let serial = parts > 1;
    let partial: Vec<Vec<T>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut acc = vec![T::zero(); g.weight_len()];
            let mut cols = vec![T::zero(); if g.is_pointwise() { 0 } else { k_len * p_len }];
            for img in part * per_part..((part + 1) * per_part).min(g.n) {
                for gi in 0..g.groups() {
                    let src_start = (img * g.big[0] + gi * big_cg) * big_len;
                    let src = &big[src_start..src_start + big_cg * big_len];
                    let cols: &[T] = if g.is_pointwise() {
                        src
                    } else {
                        im2col(g, src, &mut cols, p_len, 0, 0..p_len);
                        &cols
                    };
                    let gs = (img * g.small[0] + gi * small_cg) * p_len;
                    let grad = Mat::row_major(&small[gs..gs + small_cg * p_len], small_cg, p_len);
                    let dst = &mut acc[gi * small_cg * k_len..(gi + 1) * small_cg * k_len];
                    let cols = Mat::row_major(cols, k_len, p_len).t();
                    // Column-major: gemm then packs the short `grad`, not the k_len-row
                    // columns (8–16 times larger for the up-convolutions), as its left operand.
                    matmul_col_major(dst, grad, cols, true, parallelism(serial));
                }
            }
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![T::zero(); g.weight_len()]);
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    col_major_to_weight(&total, small_cg, k_len)
}

/// [`weight_grad`] for small maps (an up-convolution's 8×8 input, 64 pixels an image): one
/// product per image would have an inner dimension of a few dozen pixels and rewrite the whole
/// gradient (8 MB for a 512 → 256 up-convolution) for each image on each thread, then add the
/// threads' copies. Here the images of a chunk stand side by side: their im2col columns form
/// one `[k_len, images × pixels]` matrix and their small images one `[small_c, images ×
/// pixels]`, and one threaded GEMM of inner dimension about [`BATCHED_WGRAD_DEPTH`] adds the
/// chunk into a single gradient.
fn weight_grad_batched<T: Real>(g: &Geom, big: &[T], small: &[T]) -> Vec<T> {
    batched_grads(g, big, small, None).0
}

/// [`weight_grad_batched`], and with `weight` also the small image's gradient `weight ⋆ big`
/// (conv2d of `big`: a transposed convolution's input gradient, whose `big` is the output
/// gradient), from the same im2col columns: `[small_cg, k_len] · [k_len, images × pixels]`
/// for each chunk of images, then scattered to the images. The columns are built once for
/// both products, where the two gradients computed apart built them twice.
fn batched_grads<T: Real>(
    g: &Geom,
    big: &[T],
    small: &[T],
    weight: Option<&[T]>,
) -> (Vec<T>, Option<Vec<T>>) {
    let (k_len, p_len, big_len) = (g.k_len(), g.small_hw(), g.big_hw());
    let (small_cg, big_cg) = (g.small_cg(), g.big_cg());
    let taps = g.kernel.0 * g.kernel.1;
    let per_chunk = BATCHED_WGRAD_DEPTH.div_ceil(p_len).clamp(1, g.n.max(1));
    let width = per_chunk * p_len;
    // Channels per im2col task: a few tasks per thread.
    let per_task = big_cg.div_ceil(4 * rayon::current_num_threads().max(1)).max(1);
    let mut acc = vec![T::zero(); g.weight_len()];
    let mut dx = weight.map(|_| vec![T::zero(); g.n * g.small[0] * p_len]);
    let result_len = if weight.is_some() { small_cg * width } else { 0 };
    with_scratch(k_len * width + small_cg * width + result_len, |scratch| {
        let (cols, rest) = scratch.split_at_mut(k_len * width);
        let (gathered, result) = rest.split_at_mut(small_cg * width);
        for gi in 0..g.groups() {
            let dst = &mut acc[gi * small_cg * k_len..(gi + 1) * small_cg * k_len];
            for (c, first) in (0..g.n).step_by(per_chunk).enumerate() {
                let images = per_chunk.min(g.n - first);
                let ld = images * p_len;
                // Column b·p + q holds pixel q of image `first + b`, in both operands. Tasks
                // own whole channels, i.e. runs of `taps` rows.
                cols[..k_len * ld].par_chunks_mut(per_task * taps * ld).enumerate().for_each(
                    |(t, rows)| {
                        let (c0, channels) = (t * per_task, rows.len() / (taps * ld));
                        let part = Geom {
                            big: [channels, g.big[1], g.big[2]],
                            cfg: Conv2dConfig { groups: 1, ..g.cfg },
                            ..*g
                        };
                        for b in 0..images {
                            let start = ((first + b) * g.big[0] + gi * big_cg + c0) * big_len;
                            let src = &big[start..start + channels * big_len];
                            im2col(&part, src, rows, ld, b * p_len, 0..p_len);
                        }
                    },
                );
                // The small images transposed, `[images × pixels, small_cg]`: both operands of
                // the product are then row-major, the layout the gemm crate runs fastest.
                gathered[..ld * small_cg].par_chunks_mut(p_len * small_cg).enumerate().for_each(
                    |(b, rows)| {
                        let start = ((first + b) * g.small[0] + gi * small_cg) * p_len;
                        transpose_into(
                            &small[start..start + small_cg * p_len],
                            small_cg,
                            p_len,
                            rows,
                        );
                    },
                );
                // dstᵀ [k_len × small_cg] (the column-major gradient) += cols · gatheredᵀ.
                let lhs = Mat::row_major(&cols[..k_len * ld], k_len, ld);
                let rhs = Mat::row_major(&gathered[..ld * small_cg], ld, small_cg);
                matmul(dst, lhs, rhs, c > 0, parallelism(false));
                if let (Some(w), Some(dx)) = (weight, dx.as_mut()) {
                    let w = Mat::row_major(&w[gi * small_cg * k_len..], small_cg, k_len);
                    let result = &mut result[..small_cg * ld];
                    matmul(result, w, lhs, false, parallelism(false));
                    for b in 0..images {
                        let image = (first + b) * g.small[0] + gi * small_cg;
                        let planes = &mut dx[image * p_len..(image + small_cg) * p_len];
                        for (o, plane) in planes.chunks_exact_mut(p_len).enumerate() {
                            plane.copy_from_slice(&result[o * ld + b * p_len..][..p_len]);
                        }
                    }
                }
            }
        }
    });
    (col_major_to_weight(&acc, small_cg, k_len), dx)
}

/// Whether a transposed convolution of geometry `g` takes [`batched_grads`] for its input and
/// weight gradients together: where its weight gradient runs [`weight_grad_batched`] anyway
/// (and neither gradient runs Winograd or depthwise loops). Measured on the generator tower
/// (batch 8, `generator_layers`, alternated): the 256 → 256 up-convolution at 4×4 and 512 →
/// 256 at 8×8 faster; at 16×16 and 32×32 (256 and 1024 pixels, whose weight gradients run one
/// GEMM per image, the images split over the threads) the fused gradients ran 6–30 % slower.
fn fused_transpose_grads(g: &Geom) -> bool {
    !winograd_pays(g) && g.depthwise().is_none() && batched_wgrad(g)
}

/// Each group's block of a weight gradient from column-major `[small_cg × k_len]` (the layout
/// the GEMMs above write) to the weight's row-major layout, on rayon's threads.
fn col_major_to_weight<T: Real>(acc: &[T], small_cg: usize, k_len: usize) -> Vec<T> {
    let mut weight = vec![T::zero(); acc.len()];
    for (src, dst) in acc.chunks(small_cg * k_len).zip(weight.chunks_mut(small_cg * k_len)) {
        transpose_into_par(src, k_len, small_cg, dst);
    }
    weight
}

// ----------------------------------------------------------------------------- custom ops

type Arg<'a> = (&'a CpuStorage, &'a Layout);

/// An optional op argument's data, row-major (borrowed where it already is).
fn contiguous_arg<T: Real>(arg: Option<Arg<'_>>) -> candle::Result<Option<Cow<'_, [T]>>> {
    arg.map(|(s, l)| Ok(contiguous(s.as_slice::<T>()?, l))).transpose()
}

fn run_big_to_small<T: Real>(
    g: &Geom,
    x: Arg<'_>,
    w: Arg<'_>,
    b: Option<Arg<'_>>,
    act: Activation,
) -> candle::Result<CpuStorage> {
    let b = contiguous_arg::<T>(b)?;
    let (x, w) = (contiguous(x.0.as_slice::<T>()?, x.1), contiguous(w.0.as_slice::<T>()?, w.1));
    Ok(T::to_cpu_storage_owned(big_to_small(g, &x, &w, b.as_deref(), act)))
}

fn run_small_to_big<T: Real>(
    g: &Geom,
    x: Arg<'_>,
    w: Arg<'_>,
    relu_out: Option<Arg<'_>>,
) -> candle::Result<CpuStorage> {
    let y = contiguous_arg::<T>(relu_out)?;
    let (x, w) = (contiguous(x.0.as_slice::<T>()?, x.1), contiguous(w.0.as_slice::<T>()?, w.1));
    Ok(T::to_cpu_storage_owned(small_to_big(g, &x, &w, None, y.as_deref())))
}

fn run_weight_grad<T: Real>(g: &Geom, big: Arg<'_>, small: Arg<'_>) -> candle::Result<CpuStorage> {
    let big = contiguous(big.0.as_slice::<T>()?, big.1);
    let small = contiguous(small.0.as_slice::<T>()?, small.1);
    Ok(T::to_cpu_storage_owned(weight_grad(g, &big, &small)))
}

/// Whether Winograd F(4×4, 3×3) pays for a convolution of geometry `g`: undilated, at least
/// 16 output channels a group, at least [`MIN_WINOGRAD_TILES`] output tiles, and then either
/// a 3×3 stride-1 kernel with at least 16 input channels a group and whole 4×4 tiles that
/// waste little of the output, or another kernel whose [`Stacking`] has at least 16 stacked
/// channels a group (and at most [`STACKED_MAX_GROWTH`] times the layer's channels) and costs
/// at most [`STACKED_MAX_COST`] of a direct sum's multiplies.
/// A frozen layer's `ConvAlgorithm::Auto` decides by this alone.
fn winograd_pays(g: &Geom) -> bool {
    if g.cfg.dilation != (1, 1) || g.small_cg() < 16 || output_tiles(g) < MIN_WINOGRAD_TILES {
        return false;
    }
    match stacking(g) {
        None => g.big_cg() >= 16 && forward_plan(g).cost_ratio() < 0.75,
        Some(s) => {
            let stacked = g.big_cg() * s.subs();
            stacked >= 16
                && stacked <= STACKED_MAX_GROWTH * g.big_cg().max(g.small_cg())
                && s.cost_ratio() <= STACKED_MAX_COST
        }
    }
}

/// The most stacked channels a stacked convolution may hold, as a multiple of the larger of
/// its input and output channels: the stacked copy of the input is materialized, and this
/// keeps it within a few times the layer's own input or output (AlexNet's conv1: 48 stacked
/// channels for 64 outputs; conv2: 256 for 192) where a large kernel on many channels with few
/// outputs would otherwise copy its input hundreds of times.
const STACKED_MAX_GROWTH: usize = 4;

/// The largest share of a direct sum's multiplies at which a stacked convolution runs
/// Winograd: its transforms and the stacking itself cost more per multiply than im2col's
/// copies. AlexNet's 11×11 stride-4 conv1 (0.30) and 5×5 conv2 (0.36) qualify, a 4×4
/// stride-2 kernel (0.56) does not.
const STACKED_MAX_COST: f64 = 0.5;

/// How Winograd F(4×4, 3×3) runs an undilated convolution of geometry `g`: as it is (`None`,
/// a 3×3 kernel with stride 1), or as the 3×3 stride-1 convolution of its stacked sub-planes.
fn stacking(g: &Geom) -> Option<Stacking> {
    if g.kernel == (3, 3) && g.cfg.stride == (1, 1) {
        return None;
    }
    let axis = |i: usize, kernel: usize| Axis {
        kernel,
        stride: [g.cfg.stride.0, g.cfg.stride.1][i],
        pad: [g.cfg.padding.0, g.cfg.padding.1][i],
        input: g.big[1 + i],
        output: g.small[1 + i],
    };
    Some(Stacking { axes: [axis(0, g.kernel.0), axis(1, g.kernel.1)] })
}

/// How a convolution of geometry `g` runs a `scheme` whose kernels were built for it:
/// F(4×4, 5×5) as it is (`None`; [`frozen_scheme`] picks it for 5×5 stride-1 layers alone),
/// the 3×3 schemes as [`stacking`] says.
fn stacking_for(g: &Geom, scheme: Scheme) -> Option<Stacking> {
    match scheme {
        Scheme::F4x3 | Scheme::F6x3 => stacking(g),
        Scheme::F4x5 => None,
    }
}

/// The Winograd scheme of a frozen convolution of geometry `g` that runs Winograd
/// ([`winograd_pays`]): F(4×4, 5×5) for a 5×5 stride-1 kernel (64 products per 16 outputs
/// against the stacked F(4×4, 3×3)'s 144, and no stacked copy; its kernels are transformed
/// once, in f64); for the rest (3×3 kernels, stacked or not) F(6×6, 3×3) where it has at
/// least [`F6X3_MIN_CHANNELS`] input channels a group (stacked ones counted) and its products
/// over the output are at most [`F6X3_MAX_SHARE`] of F(4×4, 3×3)'s, F(4×4, 3×3) otherwise. A
/// trainable layer keeps F(4×4, 3×3), whose kernel gradient exists.
fn frozen_scheme(g: &Geom) -> Scheme {
    if g.kernel == (5, 5) && g.cfg.stride == (1, 1) && g.cfg.dilation == (1, 1) {
        return Scheme::F4x5;
    }
    let channels = g.big_cg() * stacking(g).map_or(1, |s| s.subs());
    let output = (g.small[1], g.small[2]);
    let (six, four) = (Scheme::F6x3.products(output), Scheme::F4x3.products(output));
    if channels >= F6X3_MIN_CHANNELS && six as f64 <= F6X3_MAX_SHARE * four as f64 {
        Scheme::F6x3
    } else {
        Scheme::F4x3
    }
}

/// The fewest input channels a group (stacked ones counted) with which a frozen layer runs
/// F(6×6, 3×3): its transforms cost more per tile, and with few channels they, not the
/// products, take the time. Measured at 1080×800 on 2 cores (AMD EPYC): AlexNet's stacked
/// conv1 (48 stacked channels) 21.5 ms under F(4×4, 3×3) against 18.9 under F(6×6, 3×3)
/// (medians of seven alternations, with the vectorized gathers and the packed products;
/// before them, 26.5 against 30); conv3–conv5 (192–384 channels) faster under F(6×6, 3×3).
const F6X3_MIN_CHANNELS: usize = 32;

/// The largest share of F(4×4, 3×3)'s products at which a frozen layer runs F(6×6, 3×3),
/// whose eight-point transforms cost more per product. On large maps the share is about 0.8
/// (AlexNet's conv3–conv5 at 66×49: 0.80); on a 13×13 map the two schemes make as many
/// products and F(4×4, 3×3) stays.
const F6X3_MAX_SHARE: f64 = 0.9;

/// The 4×4 output tiles of a batch.
fn output_tiles(g: &Geom) -> usize {
    g.n * g.small[1].div_ceil(4) * g.small[2].div_ceil(4)
}

/// Output tiles below which Winograd loses even with its kernels transformed once (a frozen
/// layer): each call reads the 36 transformed kernel matrices (four times the weight) for
/// too few columns. Measured on 2 cores with AlexNet's conv3–conv5 shapes: at 8 tiles (a
/// batch of 8 at 3×3, the trunk on 64-pixel images) im2col took 0.9–1.1 ms against 1.9;
/// at 16 tiles the two were level (192 → 384) or Winograd won (384 → 256: 1.4 against 2.2 ms).
const MIN_WINOGRAD_TILES: usize = 16;

/// Whether a trainable convolution of geometry `g` (or the transposed convolution that is its
/// input gradient) runs Winograd: where it pays ([`winograd_pays`]) and with enough tiles (at
/// least [`TRAINABLE_WINOGRAD_TILES`]) to repay transforming the kernels on every call.
fn trainable_winograd(g: &Geom) -> bool {
    output_tiles(g) >= TRAINABLE_WINOGRAD_TILES && winograd_pays(g)
}

/// Output tiles below which a trainable 3×3 convolution keeps im2col: with fewer, the
/// transformed kernels (36 matrices of the weight's size, rebuilt every call) are read for too
/// few columns. Measured on a batch of 8: a 256 → 512 layer at 8×8 (32 tiles) ran 1.5× slower
/// with Winograd, 256 → 256 at 16×16 (128 tiles) 1.3× faster, 128 → 128 at 32×32 1.8× faster.
const TRAINABLE_WINOGRAD_TILES: usize = 128;

/// Winograd for a trainable weight, its kernels transformed on every call: with `forward`,
/// conv2d of the big image `x`; otherwise the transposed convolution of the small image `x`
/// (conv2d's input gradient).
fn run_winograd_fresh<T: Real>(
    g: &Geom,
    x: Arg<'_>,
    w: Arg<'_>,
    forward: bool,
) -> candle::Result<CpuStorage> {
    let w = contiguous(w.0.as_slice::<T>()?, w.1);
    let x = contiguous(x.0.as_slice::<T>()?, x.1);
    let kernels = winograd_kernels(g, &w, forward, Scheme::F4x3);
    Ok(T::to_cpu_storage_owned(if forward {
        winograd_forward(g, &kernels, &x, None, false)
    } else {
        winograd_input_grad(g, &kernels, &x, None)
    }))
}

/// The transformed kernels `weight` (row-major, the layer's shape) of conv2d `g` for
/// `scheme`, for its forward pass or its input gradient; stacked first where the scheme's
/// kernel is not the layer's ([`stacking_for`]).
fn winograd_kernels<T: Real>(
    g: &Geom,
    weight: &[T],
    forward: bool,
    scheme: Scheme,
) -> TransformedKernels<T> {
    let (out, in_g, groups) = (g.small[0], g.big_cg(), g.groups());
    let build = |w: &[T], in_g| match forward {
        true => TransformedKernels::forward(scheme, w, out, in_g, groups),
        false => TransformedKernels::input_grad(scheme, w, out, in_g, groups),
    };
    match stacking_for(g, scheme) {
        None => build(weight, in_g),
        Some(s) => build(&s.kernels(weight, out, in_g), in_g * s.subs()),
    }
}

/// Conv2d `g` of the images `x` by Winograd with `kernels` from [`winograd_kernels`], `bias`
/// added and `relu` applied.
fn winograd_forward<T: Real>(
    g: &Geom,
    kernels: &TransformedKernels<T>,
    x: &[T],
    bias: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    match stacking_for(g, kernels.scheme()) {
        None => winograd::convolve(&forward_plan(g), kernels, x, None, bias, relu),
        Some(s) => {
            let stacked = s.stack(x, g.n, g.big[0]);
            winograd::convolve(&s.forward_plan(g.n), kernels, &stacked, None, bias, relu)
        }
    }
}

/// The input gradient of conv2d `g` from the output gradient `grad` by Winograd with `kernels`
/// from [`winograd_kernels`]; `mask` (shaped like `grad`) zeroes it where not positive.
fn winograd_input_grad<T: Real>(
    g: &Geom,
    kernels: &TransformedKernels<T>,
    grad: &[T],
    mask: Option<&[T]>,
) -> Vec<T> {
    match stacking_for(g, kernels.scheme()) {
        None => winograd::convolve(&input_grad_plan(g), kernels, grad, mask, None, false),
        Some(s) => {
            let plan = s.input_grad_plan(g.n);
            let stacked = winograd::convolve(&plan, kernels, grad, mask, None, false);
            s.unstack(&stacked, g.n, g.big[0])
        }
    }
}

/// The weight gradient of conv2d `g` from its input `big` and output gradient `small` by
/// Winograd F(3×3, 4×4), over the stacked sub-planes where the kernel is not 3×3 stride 1.
fn winograd_weight_grad<T: Real>(g: &Geom, big: &[T], small: &[T]) -> Vec<T> {
    let (n, groups) = (g.n, g.groups());
    match stacking(g) {
        None => {
            winograd::kernel_grad3x3(&forward_plan(g), big, small, g.big[0], g.small[0], groups)
        }
        Some(s) => {
            let stacked = s.stack(big, n, g.big[0]);
            let plan = s.forward_plan(n);
            let in_c = g.big[0] * s.subs();
            let grad = winograd::kernel_grad3x3(&plan, &stacked, small, in_c, g.small[0], groups);
            s.kernel_grad(&grad, g.small[0], g.big_cg())
        }
    }
}

/// Geometry of a custom op's call from the argument layouts: `big` or `small` comes from the
/// layout, the other side from `other` dims.
fn geom_from(op: &'static str, base: &Geom, arg: &Layout, arg_is_big: bool) -> Result<Geom> {
    let [n, c, h, w] = dims4(op, "input", arg)?;
    let side = if arg_is_big { base.big } else { base.small };
    if [c, h, w] != side {
        return Err(invalid(op, "input", arg.dims(), format!("expected [N, {c}, {h}, {w}]")));
    }
    Ok(Geom { n, ..*base })
}

/// conv2d (input, weight) → output, with a backward that skips the weight gradient when the
/// weight is not tracked.
struct Conv2dOp(Geom);

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "deepsim-conv2d"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let g = geom_from("conv2d", &self.0, xl, true)?;
        let out = if trainable_winograd(&g) {
            by_float_dtype!("conv2d", x.dtype(), run_winograd_fresh(&g, (x, xl), (w, wl), true))?
        } else {
            by_float_dtype!(
                "conv2d",
                x.dtype(),
                run_big_to_small(&g, (x, xl), (w, wl), None, Activation::Identity)
            )?
        };
        Ok((out, Shape::from((g.n, g.small[0], g.small[1], g.small[2]))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geom { n: x.dim(0)?, ..self.0 };
        let dx = if x.track_op() { Some(conv2d_input_grad(grad, w, &g)?) } else { None };
        let dw = match w.track_op() {
            true => deliver_grad(w, x.apply_op2_no_bwd(grad, &WeightGradOp(g))?)?,
            false => None,
        };
        Ok((dx, dw))
    }
}

/// conv_transpose2d (input, weight) → output.
struct ConvTranspose2dOp(Geom);

impl CustomOp2 for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "deepsim-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let g = geom_from("conv_transpose2d", &self.0, xl, false)?;
        let out = if trainable_winograd(&g) {
            by_float_dtype!(
                "conv_transpose2d",
                x.dtype(),
                run_winograd_fresh(&g, (x, xl), (w, wl), false)
            )?
        } else {
            by_float_dtype!(
                "conv_transpose2d",
                x.dtype(),
                run_small_to_big(&g, (x, xl), (w, wl), None)
            )?
        };
        Ok((out, Shape::from((g.n, g.big[0], g.big[1], g.big[2]))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geom { n: x.dim(0)?, ..self.0 };
        if x.track_op() && w.track_op() && x.device().is_cpu() && fused_transpose_grads(&g) {
            let op = TransposeGradsOp { g, weight_grad: Arc::default() };
            let slot = op.weight_grad.clone();
            let dx = grad.apply_op3(w, x, op)?;
            let taken = slot.lock().map_err(|_| candle::Error::Msg("poisoned".into()))?.take();
            let Some(dw) = taken else {
                return Err(candle::Error::Msg("conv_transpose2d: no weight gradient".into()));
            };
            return Ok((Some(dx), deliver_grad(w, dw)?));
        }
        let dx = if x.track_op() { Some(grad.apply_op2(w, Conv2dOp(g))?) } else { None };
        let dw = match w.track_op() {
            true => deliver_grad(w, grad.apply_op2_no_bwd(x, &WeightGradOp(g))?)?,
            false => None,
        };
        Ok((dx, dw))
    }
}

/// (output gradient, weight, input) of a transposed convolution → its input gradient, the
/// conv2d of the output gradient that [`Conv2dOp`] computes (and differentiates the same way:
/// the input does not enter it), with the weight gradient from the same im2col columns
/// ([`batched_grads`]) left in `weight_grad` for the caller.
struct TransposeGradsOp {
    g: Geom,
    weight_grad: Arc<std::sync::Mutex<Option<Tensor>>>,
}

impl candle::CustomOp3 for TransposeGradsOp {
    fn name(&self) -> &'static str {
        "deepsim-conv-transpose2d-grads"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        gl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn run<T: Real>(
            g: &Geom,
            grad: Arg<'_>,
            w: Arg<'_>,
            x: Arg<'_>,
        ) -> candle::Result<(CpuStorage, Tensor)> {
            let big = contiguous(grad.0.as_slice::<T>()?, grad.1);
            let small = contiguous(x.0.as_slice::<T>()?, x.1);
            let weight = contiguous(w.0.as_slice::<T>()?, w.1);
            let (dw, dx) = batched_grads(g, &big, &small, Some(&weight));
            let dx = dx.ok_or_else(|| candle::Error::Msg("no input gradient".into()))?;
            let dw = Tensor::from_vec(dw, w.1.shape(), &candle::Device::Cpu)?;
            Ok((T::to_cpu_storage_owned(dx), dw))
        }
        let g = geom_from("conv_transpose2d backward", &self.g, gl, true)?;
        let (dx, dw) = by_float_dtype!(
            "conv_transpose2d",
            grad.dtype(),
            run(&g, (grad, gl), (w, wl), (x, xl))
        )?;
        *self.weight_grad.lock().map_err(|_| candle::Error::Msg("poisoned".into()))? = Some(dw);
        Ok((dx, Shape::from((g.n, g.small[0], g.small[1], g.small[2]))))
    }

    fn bwd(
        &self,
        grad: &Tensor,
        w: &Tensor,
        _x: &Tensor,
        res: &Tensor,
        dgrad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b) = Conv2dOp(self.g).bwd(grad, w, res, dgrad)?;
        Ok((a, b, None))
    }
}

/// (big, small) → weight gradient. Used only inside backward passes.
struct WeightGradOp(Geom);

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "deepsim-conv-weight-grad"
    }

    fn cpu_fwd(
        &self,
        big: &CpuStorage,
        bl: &Layout,
        small: &CpuStorage,
        sl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let g = geom_from("conv weight gradient", &self.0, bl, true)?;
        geom_from("conv weight gradient", &g, sl, false)?;
        let out = by_float_dtype!(
            "conv weight gradient",
            big.dtype(),
            run_weight_grad(&g, (big, bl), (small, sl))
        )?;
        Ok((out, Shape::from(&g.weight_dims()[..])))
    }
}

/// conv2d's input gradient: the transposed convolution of `grad` (small) back to the big size.
fn conv2d_input_grad(grad: &Tensor, w: &Tensor, g: &Geom) -> candle::Result<Tensor> {
    if grad.device().is_cpu() {
        return grad.apply_op2(w, ConvTranspose2dOp(*g));
    }
    let cfg = ConvTranspose2dConfig {
        stride: g.cfg.stride,
        padding: g.cfg.padding,
        output_padding: output_padding(g),
        dilation: g.cfg.dilation,
        groups: g.cfg.groups,
    };
    Ok(composite::conv_transpose2d(grad, w, None, &cfg)?)
}

/// Rows and columns of the big image that a conv with this geometry never reads (bottom, right).
fn output_padding(g: &Geom) -> (usize, usize) {
    let used = |small: usize, k: usize, s: usize, p: usize, d: usize| {
        (small - 1) * s + d * (k - 1) + 1 - 2 * p
    };
    (
        g.big[1] - used(g.small[1], g.kernel.0, g.cfg.stride.0, g.cfg.padding.0, g.cfg.dilation.0),
        g.big[2] - used(g.small[2], g.kernel.1, g.cfg.stride.1, g.cfg.padding.1, g.cfg.dilation.1),
    )
}

/// `t + bias` from candle's built-ins (the composites).
fn broadcast_bias(t: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => t.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
        None => t,
    })
}

/// 2-D convolution (cross-correlation, as in PyTorch and Caffe), differentiable w.r.t. input,
/// weight and bias.
///
/// On the CPU: im2col + GEMM forward; the input gradient by GEMM + col2im; the weight gradient
/// by im2col + GEMM, computed only when the weight is a variable or depends on one.
///
/// # Shapes
/// `input` `[N, C, H, W]`, `weight` `[O, C / groups, kh, kw]`, `bias` `[O]` → `[N, O, H', W']`
/// with `H' = (H + 2·pad − dil·(kh − 1) − 1) / stride + 1` (floor), likewise `W'`.
///
/// # Errors
/// Rank other than 4, a zero-sized dimension, dtype other than f32/f64 or differing between the
/// arguments, channels not matching the weight or not divisible by `groups`, a bias of the wrong
/// length, stride or dilation 0, a kernel larger than the padded input.
pub fn conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Tensor> {
    let g = conv2d_geom("conv2d", input, weight, bias, cfg)?;
    if !input.device().is_cpu() {
        return composite::conv2d(input, weight, bias, cfg);
    }
    crate::bias::add_bias(input.apply_op2(weight, Conv2dOp(g))?, bias)
}

/// 2-D transposed convolution (PyTorch's `conv_transpose2d`), differentiable w.r.t. input,
/// weight and bias; the adjoint of [`conv2d`] with the same hyper-parameters.
///
/// # Shapes
/// `input` `[N, C, H, W]`, `weight` `[C, O / groups, kh, kw]`, `bias` `[O]` → `[N, O, H', W']`
/// with `H' = (H − 1)·stride − 2·pad + dil·(kh − 1) + output_pad + 1`, likewise `W'`.
///
/// # Errors
/// As [`conv2d`], and an output padding not smaller than both stride and dilation, or a padding
/// that removes the whole output.
pub fn conv_transpose2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose2dConfig,
) -> Result<Tensor> {
    let g = conv_transpose2d_geom("conv_transpose2d", input, weight, bias, cfg)?;
    if !input.device().is_cpu() {
        return composite::conv_transpose2d(input, weight, bias, cfg);
    }
    crate::bias::add_bias(input.apply_op2(weight, ConvTranspose2dOp(g))?, bias)
}

/// The activation fused into a [`FrozenConv2d`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// The convolution's output as it is.
    #[default]
    Identity,
    /// `max(0, ·)` applied to the output, and its mask applied to the gradient, in the same
    /// passes over memory as the convolution.
    Relu,
}

/// How a [`FrozenConv2d`] computes its convolution on the CPU (other devices run candle's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// FFT for stride-1, undilated, ungrouped kernels of at least 7×7 where its transforms and
    /// products cost at most a quarter of a direct sum's flops; else Winograd where it applies
    /// and saves work — no dilation, at least 16 channels per group on each side (counting a
    /// stacked kernel's sub-planes, which may be at most four times the layer's channels), at
    /// least 16 output tiles, and whole 4×4 tiles that cost under 3/4 (3×3 stride-1 kernels)
    /// or at most 1/2 (other kernels, stacked) of a direct sum's multiplies — and im2col +
    /// GEMM elsewhere. Decided per call, from the input's size.
    #[default]
    Auto,
    /// im2col + GEMM (col2im for the input gradient): the direct sum, in GEMM order.
    Im2col,
    /// Winograd F(4×4, 3×3) (Lavin & Gray, 2016) for the forward pass and the input gradient
    /// of any undilated kernel: a 3×3 stride-1 kernel as it is, a 5×5 stride-1 kernel by
    /// F(4×4, 5×5), any other as a 3×3 stride-1 kernel over stacked sub-planes of the input
    /// (its phases for a stride, shifted copies for a kernel larger than 3); a frozen layer
    /// with many channels on a large map by F(6×6, 3×3). In f32 it differs from the exact
    /// result by about 5e-6 of the layer's largest output (1.2e-5 under F(6×6, 3×3)), ten
    /// times im2col's rounding error or more.
    Winograd,
    /// FFT convolution (overlap-save over tiles of 32 to 256 pixels a side, the side that
    /// costs least) for the forward pass and the input gradient of a stride-1, undilated,
    /// ungrouped kernel: few multiplies per output for a large kernel over few channels (ST-LPIPS'
    /// 11×11 conv1 on 3 channels: about 3.9 kflop per output against a direct sum's 46.5). In
    /// f32 it differs from the exact result by a few 1e-7 of the layer's largest output.
    Fft,
}

/// A convolution with frozen weights (a comparator's layer): its backward computes only the
/// input gradient, never weight or bias gradients — the cost of a perceptual loss per step.
///
/// The weight and bias are detached when the layer is built, so they never receive gradients
/// even if they came from a `Var`. With [`Activation::Identity`] the backward pass is itself
/// differentiable (double backward); with [`Activation::Relu`] it is first-order only.
///
/// On the CPU, layers run Winograd by default where it saves work ([`ConvAlgorithm`]:
/// F(4×4, 3×3) for 3×3 stride-1 kernels and for larger or strided ones such as AlexNet's
/// 11×11 stride-4 conv1 rewritten as 3×3 stride-1 ones, F(4×4, 5×5) for 5×5 stride-1 kernels
/// such as its conv2, F(6×6, 3×3) for 3×3 layers with at least 32 input channels (stacked
/// ones counted) on maps where it makes at most 0.9 of F(4×4, 3×3)'s products, such as its
/// conv1 and conv3–conv5 at 1080×800). The transformed kernels (four times a 3×3 weight's size for the forward pass,
/// seven times under F(6×6, 3×3), 2.6 times a 5×5 weight's, as much again for the input
/// gradient) are computed on first use, per scheme, and shared by clones of the layer.
#[derive(Clone, Debug)]
pub struct FrozenConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
    act: Activation,
    algorithm: ConvAlgorithm,
    winograd: Arc<WinogradCache>,
    fft: Arc<FftCache>,
}

impl FrozenConv2d {
    /// Builds the layer from a weight `[O, C / groups, kh, kw]` and an optional bias `[O]`.
    ///
    /// # Errors
    /// The weight is not rank 4 f32/f64 with non-zero dims, the bias differs in dtype, device or
    /// length, the stride or dilation is 0, or `groups` does not divide the output channels.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Result<Self> {
        const OP: &str = "FrozenConv2d::new";
        let [oc, _, _, _] = nchw(OP, "weight", &weight)?;
        at_least(OP, "config.stride", cfg.stride, 1)?;
        at_least(OP, "config.dilation", cfg.dilation, 1)?;
        if cfg.groups == 0 || oc % cfg.groups != 0 {
            return Err(invalid(
                OP,
                "config.groups",
                &[],
                format!("{} groups must divide the {oc} output channels", cfg.groups),
            ));
        }
        if let Some(b) = &bias {
            same_dtype_device(OP, "bias", b, &weight)?;
            if b.dims() != [oc] {
                return Err(invalid(OP, "bias", b.dims(), format!("expected shape [{oc}]")));
            }
        }
        let (weight, bias) = (weight.detach(), bias.map(|b| b.detach()));
        Ok(Self {
            weight,
            bias,
            cfg,
            act: Activation::Identity,
            algorithm: ConvAlgorithm::Auto,
            winograd: Arc::default(),
            fft: Arc::default(),
        })
    }

    /// The same layer with `act` fused into it.
    pub fn with_activation(self, act: Activation) -> Self {
        Self { act, ..self }
    }

    /// The same layer computed by `algorithm` on the CPU.
    ///
    /// # Errors
    /// [`ConvAlgorithm::Winograd`] for a dilated layer; [`ConvAlgorithm::Fft`] for a strided,
    /// dilated or grouped one, or a kernel wider than 128.
    pub fn with_algorithm(self, algorithm: ConvAlgorithm) -> Result<Self> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        let cfg = &self.cfg;
        if algorithm == ConvAlgorithm::Fft && !fft_applies(cfg, (kh, kw)) {
            return Err(invalid(
                "FrozenConv2d::with_algorithm",
                "weight",
                self.weight.dims(),
                format!(
                    "FFT convolution needs stride 1, no dilation, one group and a kernel of at \
                     most {0} × {0}; the layer has stride {1:?}, dilation {2:?}, {3} groups",
                    fft::LARGEST_KERNEL,
                    cfg.stride,
                    cfg.dilation,
                    cfg.groups
                ),
            ));
        }
        if algorithm == ConvAlgorithm::Winograd && self.cfg.dilation != (1, 1) {
            return Err(invalid(
                "FrozenConv2d::with_algorithm",
                "weight",
                self.weight.dims(),
                format!(
                    "Winograd F(4×4, 3×3) needs an undilated kernel, the layer has dilation {:?}",
                    self.cfg.dilation
                ),
            ));
        }
        Ok(Self { algorithm, ..self })
    }

    /// The fused activation.
    pub fn activation(&self) -> Activation {
        self.act
    }

    /// The algorithm requested on the CPU.
    pub fn algorithm(&self) -> ConvAlgorithm {
        self.algorithm
    }

    /// The weight, `[O, C / groups, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[O]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Conv2dConfig {
        &self.cfg
    }

    /// How a CPU call of geometry `g` runs.
    fn engine(&self, g: &Geom) -> Engine {
        let fft = || Engine::Fft(self.fft.clone());
        let winograd = || Engine::Winograd(self.winograd.clone());
        match self.algorithm {
            ConvAlgorithm::Im2col => Engine::Im2col,
            ConvAlgorithm::Winograd => winograd(),
            ConvAlgorithm::Fft => fft(),
            ConvAlgorithm::Auto if fft_pays(g) => fft(),
            ConvAlgorithm::Auto if winograd_pays(g) => winograd(),
            ConvAlgorithm::Auto => Engine::Im2col,
        }
    }

    /// Applies the convolution; see [`conv2d`] for shapes and errors.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let g = conv2d_geom("FrozenConv2d", input, &self.weight, self.bias.as_ref(), &self.cfg)?;
        if !input.device().is_cpu() {
            let y = composite::conv2d(input, &self.weight, self.bias.as_ref(), &self.cfg)?;
            return Ok(match self.act {
                Activation::Identity => y,
                Activation::Relu => y.relu()?,
            });
        }
        let op = FrozenConvOp {
            g,
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            act: self.act,
            engine: self.engine(&g),
        };
        Ok(input.apply_op1(op)?)
    }

    /// The input gradient of [`FrozenConv2d::forward`] at `input`, from its `output` (which
    /// holds the ReLU's mask when the activation is fused) and the gradient `grad` w.r.t. that
    /// output, outside candle's autograd: what `forward`'s backward pass computes, for callers
    /// that run a chain of layers' backward themselves (a fused loss node). Only the shape of
    /// `input` is read. Not differentiable.
    ///
    /// # Shapes
    /// `input` `[N, in, H, W]`; `output`, `grad` `[N, out, H', W']` → `[N, in, H, W]`.
    ///
    /// # Errors
    /// Shapes that do not fit the layer or each other, dtypes or devices that differ, tensors
    /// not on the CPU.
    pub fn backward(&self, input: &Tensor, output: &Tensor, grad: &Tensor) -> Result<Tensor> {
        const OP: &str = "FrozenConv2d::backward";
        let g = conv2d_geom(OP, input, &self.weight, self.bias.as_ref(), &self.cfg)?;
        same_dtype_device(OP, "grad", grad, input)?;
        same_dtype_device(OP, "output", output, input)?;
        let want = [g.n, g.small[0], g.small[1], g.small[2]];
        for (arg, t) in [("grad", grad), ("output", output)] {
            if t.dims() != want {
                return Err(invalid(OP, arg, t.dims(), format!("expected {want:?}")));
            }
        }
        if !input.device().is_cpu() {
            return Err(invalid(OP, "input", input.dims(), "not on the CPU"));
        }
        let op = InputGradOp::new(g, &self.weight, self.act, output, self.engine(&g));
        Ok(grad.apply_op1_no_bwd(&op)?)
    }
}

impl Module for FrozenConv2d {
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        Ok(FrozenConv2d::forward(self, xs)?)
    }
}

/// A frozen layer's transformed kernels, built on first use for the forward pass and for the
/// input gradient separately, one slot per variant (Winograd's [`Scheme`], the FFT's side:
/// either follows the map's size, which may change from call to call), and shared between
/// clones of the layer.
struct KernelCache<const N: usize> {
    forward: [OnceLock<Box<dyn Any + Send + Sync>>; N],
    input_grad: [OnceLock<Box<dyn Any + Send + Sync>>; N],
}

impl<const N: usize> Default for KernelCache<N> {
    fn default() -> Self {
        let empty = || std::array::from_fn(|_| OnceLock::new());
        Self { forward: empty(), input_grad: empty() }
    }
}

impl<const N: usize> std::fmt::Debug for KernelCache<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let built = |cells: &[OnceLock<_>]| cells.iter().filter(|c| c.get().is_some()).count();
        f.debug_struct("KernelCache")
            .field("forward_built", &built(&self.forward))
            .field("input_grad_built", &built(&self.input_grad))
            .finish()
    }
}

/// Winograd's transformed kernels, one slot per [`Scheme`].
type WinogradCache = KernelCache<{ Scheme::COUNT }>;

/// The FFT's transformed kernels, one slot per side.
type FftCache = KernelCache<{ fft::SIDE_COUNT }>;

/// The kernels in `cell`, built by `build` if it is empty.
fn cached_kernels<K: Any + Send + Sync>(
    cell: &OnceLock<Box<dyn Any + Send + Sync>>,
    build: impl FnOnce() -> candle::Result<K>,
) -> candle::Result<&K> {
    if cell.get().is_none() {
        // Two threads may both build; the first to store wins and the other's copy is dropped.
        let _ = cell.set(Box::new(build()?));
    }
    cell.get().and_then(|k| k.downcast_ref()).ok_or_else(|| {
        candle::Error::Msg("FrozenConv2d: transformed kernels were built for another dtype".into())
    })
}

/// The Winograd plan of a conv2d's forward pass.
fn forward_plan(g: &Geom) -> winograd::Plan {
    winograd::Plan {
        n: g.n,
        input: (g.big[1], g.big[2]),
        output: (g.small[1], g.small[2]),
        pad: (g.cfg.padding.0 as isize, g.cfg.padding.1 as isize),
    }
}

/// The Winograd plan of a stride-1 conv2d's input gradient: a conv of the output gradient
/// with the rotated kernels, offset by `kernel − 1 − padding`.
fn input_grad_plan(g: &Geom) -> winograd::Plan {
    let offset = |k: usize, pad: usize| k as isize - 1 - pad as isize;
    winograd::Plan {
        n: g.n,
        input: (g.small[1], g.small[2]),
        output: (g.big[1], g.big[2]),
        pad: (offset(g.kernel.0, g.cfg.padding.0), offset(g.kernel.1, g.cfg.padding.1)),
    }
}

/// The CPU storage of a tensor held by an op (a frozen weight, a bias, a ReLU output).
pub(crate) fn with_cpu<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CpuStorage, &Layout) -> candle::Result<R>,
) -> candle::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle::Storage::Cpu(s) => f(s, layout),
        _ => Err(candle::Error::Msg(format!("FrozenConv2d: the {what} is not on the CPU"))),
    }
}

/// How a frozen layer's forward pass and input gradient run on the CPU, with the layer's
/// cache of transformed kernels where they need one.
#[derive(Clone)]
enum Engine {
    Im2col,
    /// Winograd ([`frozen_scheme`]).
    Winograd(Arc<WinogradCache>),
    /// FFT convolution ([`fft::correlate`]).
    Fft(Arc<FftCache>),
}

/// The largest share of a direct sum's flops at which [`ConvAlgorithm::Auto`] runs a frozen
/// layer by FFT ([`fft_pays`]). ST-LPIPS' conv1 at 1080 × 800 costs 0.08.
const FFT_MAX_COST: f64 = 0.25;

/// Whether an FFT convolution can run a frozen layer with `cfg` and a `kernel`: stride 1,
/// undilated, ungrouped, the kernel at most [`fft::LARGEST_KERNEL`] a side (an FFT side fits
/// it).
fn fft_applies(cfg: &Conv2dConfig, (kh, kw): (usize, usize)) -> bool {
    cfg.stride == (1, 1)
        && cfg.dilation == (1, 1)
        && cfg.groups == 1
        && kh.max(kw) <= fft::LARGEST_KERNEL
}

/// Whether [`ConvAlgorithm::Auto`] runs a frozen layer of geometry `g` by FFT: it applies
/// ([`fft_applies`]), its kernel is at least 7 × 7 (Winograd's schemes cover up to 5 × 5 at a
/// quarter of a direct sum's products or less, with faster products), and the FFT's cost
/// model puts it at most [`FFT_MAX_COST`] of a direct sum.
fn fft_pays(g: &Geom) -> bool {
    if !fft_applies(&g.cfg, g.kernel) || g.kernel.0 < 7 || g.kernel.1 < 7 {
        return false;
    }
    let direct =
        2.0 * (g.n * g.small_hw() * g.big[0] * g.small[0] * g.kernel.0 * g.kernel.1) as f64;
    fft::best_side(&forward_plan(g), g.kernel, g.big[0], g.small[0])
        .is_some_and(|(_, flops)| flops <= FFT_MAX_COST * direct)
}

/// The FFT side of a frozen layer's correlation over `plan` from `in_c` to `out_c` channels.
fn fft_side(plan: &winograd::Plan, g: &Geom, in_c: usize, out_c: usize) -> candle::Result<usize> {
    fft::best_side(plan, g.kernel, in_c, out_c).map(|(side, _)| side).ok_or_else(|| {
        candle::Error::Msg(format!("FrozenConv2d: no FFT side fits a {:?} kernel", g.kernel))
    })
}

fn run_fft_forward<T: Real + FftReal>(
    g: &Geom,
    cache: &FftCache,
    x: Arg<'_>,
    w: Arg<'_>,
    bias: Option<Arg<'_>>,
    act: Activation,
) -> candle::Result<CpuStorage> {
    let plan = forward_plan(g);
    let (in_c, out_c) = (g.big[0], g.small[0]);
    let side = fft_side(&plan, g, in_c, out_c)?;
    let kernels = cached_kernels(&cache.forward[fft::side_index(side)], || {
        let weight = contiguous(w.0.as_slice::<T>()?, w.1);
        Ok(FftKernels::new(side, &weight, out_c, in_c, g.kernel))
    })?;
    let bias = contiguous_arg::<T>(bias)?;
    let x = contiguous(x.0.as_slice::<T>()?, x.1);
    let relu = act == Activation::Relu;
    Ok(T::to_cpu_storage_owned(fft::correlate(&plan, kernels, &x, None, bias.as_deref(), relu)))
}

fn run_fft_input_grad<T: Real + FftReal>(
    g: &Geom,
    cache: &FftCache,
    grad: Arg<'_>,
    w: Arg<'_>,
    relu_out: Option<Arg<'_>>,
) -> candle::Result<CpuStorage> {
    let plan = input_grad_plan(g);
    let (in_c, out_c) = (g.small[0], g.big[0]);
    let side = fft_side(&plan, g, in_c, out_c)?;
    let kernels = cached_kernels(&cache.input_grad[fft::side_index(side)], || {
        let weight = contiguous(w.0.as_slice::<T>()?, w.1);
        // The FFT runs ungrouped kernels only (`fft_applies`).
        let taps = g.kernel.0 * g.kernel.1;
        let turned = winograd::turned_kernels(&weight, g.small[0], g.big[0], 1, taps);
        Ok(FftKernels::new(side, &turned, out_c, in_c, g.kernel))
    })?;
    let mask = contiguous_arg::<T>(relu_out)?;
    let grad = contiguous(grad.0.as_slice::<T>()?, grad.1);
    Ok(T::to_cpu_storage_owned(fft::correlate(&plan, kernels, &grad, mask.as_deref(), None, false)))
}

/// The frozen conv as a one-argument op: weight and bias live in the op, outside the graph.
struct FrozenConvOp {
    g: Geom,
    weight: Tensor,
    bias: Option<Tensor>,
    act: Activation,
    engine: Engine,
}

fn run_winograd_forward<T: Real>(
    g: &Geom,
    cache: &WinogradCache,
    x: Arg<'_>,
    w: Arg<'_>,
    bias: Option<Arg<'_>>,
    act: Activation,
) -> candle::Result<CpuStorage> {
    let scheme = frozen_scheme(g);
    let kernels = cached_kernels(&cache.forward[scheme.index()], || {
        let weight = contiguous(w.0.as_slice::<T>()?, w.1);
        Ok(winograd_kernels(g, &weight, true, scheme))
    })?;
    let bias = contiguous_arg::<T>(bias)?;
    let x = contiguous(x.0.as_slice::<T>()?, x.1);
    let relu = act == Activation::Relu;
    Ok(T::to_cpu_storage_owned(winograd_forward(g, kernels, &x, bias.as_deref(), relu)))
}

fn run_winograd_input_grad<T: Real>(
    g: &Geom,
    cache: &WinogradCache,
    grad: Arg<'_>,
    w: Arg<'_>,
    relu_out: Option<Arg<'_>>,
) -> candle::Result<CpuStorage> {
    let scheme = frozen_scheme(g);
    let kernels = cached_kernels(&cache.input_grad[scheme.index()], || {
        let weight = contiguous(w.0.as_slice::<T>()?, w.1);
        Ok(winograd_kernels(g, &weight, false, scheme))
    })?;
    let mask = contiguous_arg::<T>(relu_out)?;
    let grad = contiguous(grad.0.as_slice::<T>()?, grad.1);
    Ok(T::to_cpu_storage_owned(winograd_input_grad(g, kernels, &grad, mask.as_deref())))
}

impl CustomOp1 for FrozenConvOp {
    fn name(&self) -> &'static str {
        "deepsim-frozen-conv2d"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        const OP: &str = "FrozenConv2d";
        let g = geom_from(OP, &self.g, xl, true)?;
        let out = with_cpu(&self.weight, "weight", |w, wl| {
            let bias = self.bias.as_ref().map(|b| b.storage_and_layout());
            let b = match &bias {
                Some((b, bl)) => match &**b {
                    candle::Storage::Cpu(b) => Some((b, *bl)),
                    _ => {
                        return Err(candle::Error::Msg(format!("{OP}: the bias is not on the CPU")))
                    }
                },
                None => None,
            };
            let (x, w, act) = ((x, xl), (w, wl), self.act);
            match &self.engine {
                Engine::Winograd(cache) => {
                    by_float_dtype!(OP, x.0.dtype(), run_winograd_forward(&g, cache, x, w, b, act))
                }
                Engine::Fft(cache) => {
                    by_float_dtype!(OP, x.0.dtype(), run_fft_forward(&g, cache, x, w, b, act))
                }
                Engine::Im2col => {
                    by_float_dtype!(OP, x.0.dtype(), run_big_to_small(&g, x, w, b, act))
                }
            }
        })?;
        Ok((out, Shape::from((g.n, g.small[0], g.small[1], g.small[2]))))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let g = Geom { n: x.dim(0)?, ..self.g };
        let op = InputGradOp::new(g, &self.weight, self.act, res, self.engine.clone());
        Ok(Some(match (self.act, &self.engine) {
            (Activation::Identity, Engine::Im2col) => conv2d_input_grad(grad, &self.weight, &g)?,
            (Activation::Identity, _) => grad.apply_op1(op)?,
            (Activation::Relu, _) => grad.apply_op1_no_bwd(&op)?,
        }))
    }
}

/// Output gradient → input gradient of a frozen conv, masked by the ReLU's output when the
/// ReLU is fused (first-order only); without it, differentiable through the forward conv.
struct InputGradOp {
    g: Geom,
    weight: Tensor,
    relu_out: Option<Tensor>,
    engine: Engine,
}

impl InputGradOp {
    /// The input gradient of a frozen conv with `weight` and activation `act`, whose forward
    /// output was `output` (kept as the ReLU's mask when `act` is ReLU).
    fn new(g: Geom, weight: &Tensor, act: Activation, output: &Tensor, engine: Engine) -> Self {
        let relu_out = (act == Activation::Relu).then(|| output.clone());
        Self { g, weight: weight.clone(), relu_out, engine }
    }
}

impl CustomOp1 for InputGradOp {
    fn name(&self) -> &'static str {
        "deepsim-frozen-conv2d-backward"
    }

    fn cpu_fwd(&self, grad: &CpuStorage, gl: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        const OP: &str = "FrozenConv2d backward";
        let g = geom_from(OP, &self.g, gl, false)?;
        let out = with_cpu(&self.weight, "weight", |w, wl| {
            let y = self.relu_out.as_ref().map(|y| y.storage_and_layout());
            let y = match &y {
                Some((y, yl)) => match &**y {
                    candle::Storage::Cpu(y) => {
                        geom_from(OP, &g, yl, false)?;
                        Some((y, *yl))
                    }
                    _ => {
                        return Err(candle::Error::Msg(format!(
                            "{OP}: the output is not on the CPU"
                        )))
                    }
                },
                None => None,
            };
            let (grad, w) = ((grad, gl), (w, wl));
            match &self.engine {
                Engine::Winograd(cache) => by_float_dtype!(
                    OP,
                    grad.0.dtype(),
                    run_winograd_input_grad(&g, cache, grad, w, y)
                ),
                Engine::Fft(cache) => {
                    by_float_dtype!(OP, grad.0.dtype(), run_fft_input_grad(&g, cache, grad, w, y))
                }
                Engine::Im2col => {
                    by_float_dtype!(OP, grad.0.dtype(), run_small_to_big(&g, grad, w, y))
                }
            }
        })?;
        Ok((out, Shape::from((g.n, g.big[0], g.big[1], g.big[2]))))
    }

    /// The adjoint of the input gradient is the forward conv (no bias, no activation); only
    /// reached without a fused ReLU, whose op is applied without backward.
    fn bwd(&self, grad: &Tensor, _res: &Tensor, grad2: &Tensor) -> candle::Result<Option<Tensor>> {
        let g = Geom { n: grad.dim(0)?, ..self.g };
        let op = FrozenConvOp {
            g,
            weight: self.weight.clone(),
            bias: None,
            act: Activation::Identity,
            engine: self.engine.clone(),
        };
        Ok(Some(grad2.apply_op1(op)?))
    }
}

/// The convolutions from candle's built-ins, for devices without kernels here.
pub(crate) mod composite {
    use candle::{Tensor, D};

    use super::{
        broadcast_bias, conv2d_geom, conv_transpose2d_geom, Conv2dConfig, ConvTranspose2dConfig,
    };
    use crate::error::Result;
    use crate::strided::{dilate, strided_slice};

    /// [`super::conv2d`] from candle's `conv2d`: padding applied explicitly, unequal strides by
    /// subsampling a stride-1 result, unequal dilations by dilating the kernel.
    pub fn conv2d(
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        cfg: &Conv2dConfig,
    ) -> Result<Tensor> {
        let g = conv2d_geom("conv2d", input, weight, bias, cfg)?;
        let x = input.pad_with_zeros(2, cfg.padding.0, cfg.padding.0)?;
        let x = x.pad_with_zeros(3, cfg.padding.1, cfg.padding.1)?;
        // Drop the rows and columns no window reaches: candle's conv2d backward returns a
        // gradient without them, which would not match the input's shape.
        let used = |out: usize, k: usize, s: usize, d: usize| (out - 1) * s + d * (k - 1) + 1;
        let x = x.narrow(2, 0, used(g.small[1], g.kernel.0, cfg.stride.0, cfg.dilation.0))?;
        let x = x.narrow(3, 0, used(g.small[2], g.kernel.1, cfg.stride.1, cfg.dilation.1))?;
        let (w, dil) = if cfg.dilation.0 == cfg.dilation.1 {
            (weight.clone(), cfg.dilation.0)
        } else {
            (dilate(&dilate(weight, 2, cfg.dilation.0)?, 3, cfg.dilation.1)?, 1)
        };
        let y = if cfg.stride.0 == cfg.stride.1 {
            x.conv2d(&w, 0, cfg.stride.0, dil, cfg.groups)?
        } else {
            let y = x.conv2d(&w, 0, 1, dil, cfg.groups)?;
            let y = strided_slice(&y, 2, 0, g.small[1], cfg.stride.0)?;
            strided_slice(&y, 3, 0, g.small[2], cfg.stride.1)?
        };
        broadcast_bias(y, bias)
    }

    /// [`super::conv_transpose2d`] as a stride-1 convolution of the zero-upsampled input with
    /// the flipped kernel.
    pub fn conv_transpose2d(
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        cfg: &ConvTranspose2dConfig,
    ) -> Result<Tensor> {
        let g = conv_transpose2d_geom("conv_transpose2d", input, weight, bias, cfg)?;
        let up = dilate(&dilate(input, 2, cfg.stride.0)?, 3, cfg.stride.1)?;
        // Pad by the kernel span less the padding; a negative amount crops instead.
        let mut x = up;
        for (dim, k, d, p, op) in [
            (2, g.kernel.0, cfg.dilation.0, cfg.padding.0, cfg.output_padding.0),
            (3, g.kernel.1, cfg.dilation.1, cfg.padding.1, cfg.output_padding.1),
        ] {
            let span = (d * (k - 1)) as isize;
            let (before, after) = (span - p as isize, span - p as isize + op as isize);
            x = x.pad_with_zeros(dim, before.max(0) as usize, after.max(0) as usize)?;
            let len = x.dim(dim)? - (-before).max(0) as usize - (-after).max(0) as usize;
            x = x.narrow(dim, (-before).max(0) as usize, len)?;
        }
        // [C, O/g, kh, kw] → per group swap in/out channels → [O, C/g, kh, kw], spatially flipped.
        let (c, ocg, kh, kw) = weight.dims4()?;
        let groups = cfg.groups;
        let w = weight.reshape((groups, c / groups, ocg, kh, kw))?.transpose(1, 2)?.reshape((
            groups * ocg,
            c / groups,
            kh,
            kw,
        ))?;
        let w = flip(&flip(&w, 2)?, D::Minus1)?;
        let conv = Conv2dConfig { stride: (1, 1), padding: (0, 0), dilation: cfg.dilation, groups };
        conv2d(&x, &w, bias, &conv)
    }

    fn flip<D: candle::shape::Dim>(t: &Tensor, dim: D) -> Result<Tensor> {
        let dim = dim.to_index(t.shape(), "flip")?;
        let len = t.dim(dim)?;
        let idx: Vec<u32> = (0..len as u32).rev().collect();
        let idx = Tensor::new(idx.as_slice(), t.device())?;
        Ok(t.index_select(&idx, dim)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(len: usize, seed: usize) -> Vec<f64> {
        (0..len).map(|i| (((i + seed) * 37 % 101) as f64 - 50.0) * 0.013).collect()
    }

    #[test]
    fn batched_weight_gradient_equals_one_gemm_per_image() {
        // The batched path (taken in production only for large weights on small maps) against
        // the per-image path that the finite-difference tests check: strides, padding,
        // groups, a batch spread over several chunks (40 images of 64 pixels, chunks of 16),
        // and im2col tasks that split the channels unevenly (7 channels a group).
        let cases = [
            ([40, 3, 8, 8], [4, 3, 3, 3], Conv2dConfig::new(1, 1)),
            ([5, 14, 9, 7], [6, 7, 3, 3], Conv2dConfig::new(2, 1).with_groups(2)),
            ([3, 4, 16, 16], [5, 4, 4, 4], Conv2dConfig::new(2, 1)),
            ([33, 2, 5, 6], [3, 2, 2, 3], Conv2dConfig::new(1, 0).with_dilation(2)),
        ];
        for (xs, ws, cfg) in cases {
            let x = Tensor::from_vec(seq(xs.iter().product(), 1), &xs, &candle::Device::Cpu);
            let w = Tensor::from_vec(seq(ws.iter().product(), 2), &ws, &candle::Device::Cpu);
            let g = conv2d_geom("test", &x.unwrap(), &w.unwrap(), None, &cfg).unwrap();
            let big = seq(g.n * g.big[0] * g.big_hw(), 3);
            let small = seq(g.n * g.small[0] * g.small_hw(), 4);
            let want = weight_grad_per_image(&g, &big, &small);
            let got = weight_grad_batched(&g, &big, &small);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = want.iter().zip(&got).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(scale > 0.0 && err <= 1e-12 * scale, "{xs:?} {ws:?}: {err} of {scale}");
        }
    }
}
