//! FFT convolution on the CPU for large stride-1 kernels over few channels, such as
//! ST-LPIPS' 11×11 conv1 (3 → 64 channels at full resolution), where a direct sum makes 121
//! multiply-adds per output and channel pair and even Winograd's stacked 3×3 form makes 36.
//!
//! Overlap-save: the output is cut into `v × v` tiles (`v = S − k + 1` for an `S × S` FFT and a
//! `k × k` kernel); each tile's `S × S` input window is transformed (a real FFT along its rows,
//! then a complex FFT along its columns), multiplied point by point with each kernel's
//! transform and summed over the input channels, and transformed back; of the `S × S`
//! circular correlation, the first `v × v` values are the tile's outputs (no wrap-around
//! reaches them). Per output and channel pair that costs `(S/2 + 1)·S / v²` complex
//! multiply-adds (0.72 at S = 64, k = 11), and per output and channel about `2.5 log₂ S² ·
//! S² / v²` flops of transforms — 3.9 kflop per output of ST-LPIPS' conv1, against a direct
//! sum's 46.5.
//!
//! The kernels' transforms are conjugated (a correlation, not a convolution) and scaled by
//! `1/S²` (the unnormalized inverse) once, when they are built. The FFTs are
//! `rustfft`'s and `realfft`'s (AVX on x86-64, chosen at run time). Rounding stays at a few
//! 1e-7 of the largest output in f32 (`tests/fft.rs`): each output sums `S²` terms of the
//! inverse transform, but with the error of an FFT, which grows as `log S`.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::num_complex::Complex;
use rustfft::num_traits::Float;
use rustfft::{Fft, FftNum, FftPlanner};

use crate::check::{with_scratch, Real};
use crate::fresh::Scattered;
use crate::winograd::{inside, Plan};

/// The element types of an FFT convolution (f32 and f64).
pub(crate) trait FftReal: FftNum + Float {}

impl<T: FftNum + Float> FftReal for T {}

/// FFT sides tried for a convolution, smallest first (multiples of [`LANES`]).
const SIDES: [usize; 4] = [32, 64, 128, 256];

/// A slot per side in [`SIDES`], for caches of transformed kernels.
pub(crate) const SIDE_COUNT: usize = SIDES.len();

/// The largest kernel side an FFT side fits ([`best_side`] needs a side of at least twice it).
pub(crate) const LARGEST_KERNEL: usize = SIDES[SIDE_COUNT - 1] / 2;

/// Bins multiplied together, one per SIMD lane.
const LANES: usize = 16;

/// Bytes of input-window transforms one job holds: the tiles of a job are a run of a tile row
/// whose transforms fit this (one core's L2 cache), so that each output channel's rows of the
/// run are written together.
const JOB_SPECTRA: usize = 1 << 20;

fn zero<T: FftReal>() -> Complex<T> {
    Complex::new(T::zero(), T::zero())
}

/// The FFTs of one side `S`: real ones along rows, complex ones along columns.
struct Transforms<T> {
    side: usize,
    r2c: Arc<dyn RealToComplex<T>>,
    c2r: Arc<dyn ComplexToReal<T>>,
    forward: Arc<dyn Fft<T>>,
    inverse: Arc<dyn Fft<T>>,
}

impl<T: FftReal> Transforms<T> {
    fn new(side: usize) -> Self {
        let mut real = RealFftPlanner::<T>::new();
        let mut complex = FftPlanner::<T>::new();
        Self {
            side,
            r2c: real.plan_fft_forward(side),
            c2r: real.plan_fft_inverse(side),
            forward: complex.plan_fft_forward(side),
            inverse: complex.plan_fft_inverse(side),
        }
    }

    /// Columns of a row's real transform: `S/2 + 1`.
    fn half(&self) -> usize {
        self.side / 2 + 1
    }

    /// Complex values of one 2-D transform: `(S/2 + 1) · S`, a multiple of [`LANES`].
    fn bins(&self) -> usize {
        self.half() * self.side
    }

    /// Scratch elements the four FFTs need at most.
    fn scratch_len(&self) -> usize {
        [
            self.r2c.get_scratch_len(),
            self.c2r.get_scratch_len(),
            self.forward.get_inplace_scratch_len(),
            self.inverse.get_inplace_scratch_len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// The 2-D transform of the `S × S` real image `real` (row-major; overwritten) into
    /// `re` and `im` (`bins` each): `S/2 + 1` rows of `S` bins, row `u` the column transform
    /// of column `u` of the rows' transforms. Rows that are all zero are not transformed.
    fn spectrum(&self, real: &mut [T], b: &mut Scratch<'_, T>, (re, im): (&mut [T], &mut [T])) {
        let (side, half) = (self.side, self.half());
        for (line, spec) in real.chunks_exact_mut(side).zip(b.rows.chunks_exact_mut(half)) {
            if line.iter().all(|&x| x == T::zero()) {
                spec.fill(zero());
                continue;
            }
            self.r2c
                .process_with_scratch(line, spec, b.fft)
                .expect("realfft: lengths fixed by the plan");
        }
        transpose::transpose(b.rows, b.columns, half, side);
        self.forward.process_with_scratch(b.columns, b.fft);
        for ((z, r), i) in b.columns.iter().zip(re).zip(im) {
            (*r, *i) = (z.re, z.im);
        }
    }

    /// The first `keep` rows of the inverse 2-D transform of `spec` (laid out as
    /// [`Transforms::spectrum`] writes, interleaved; overwritten), row `j` into
    /// `dst[j · stride..][..S]`.
    fn image(
        &self,
        spec: &mut [Complex<T>],
        b: &mut Scratch<'_, T>,
        dst: &mut [T],
        stride: usize,
        keep: usize,
    ) {
        let (side, half) = (self.side, self.half());
        self.inverse.process_with_scratch(spec, b.fft);
        transpose::transpose(spec, b.rows, side, half);
        for (j, row) in b.rows.chunks_exact_mut(half).take(keep).enumerate() {
            // A real image's transform has real first and last columns; rounding leaves a
            // trace of imaginary part there, which the inverse real FFT would reject.
            row[0].im = T::zero();
            row[half - 1].im = T::zero();
            self.c2r
                .process_with_scratch(row, &mut dst[j * stride..][..side], b.fft)
                .expect("realfft: lengths fixed by the plan, real end columns");
        }
    }
}

/// The FFTs' scratch and one 2-D transform's intermediate layouts, borrowed from a [`Buf`].
struct Scratch<'a, T> {
    fft: &'a mut [Complex<T>],
    /// Row transforms, `S × (S/2 + 1)`.
    rows: &'a mut [Complex<T>],
    /// Their columns, `(S/2 + 1) × S`.
    columns: &'a mut [Complex<T>],
}

/// One job's buffers, carved from one slice of reals (a thread's scratch memory).
struct Buf<'a, T> {
    scratch: Scratch<'a, T>,
    /// An `S × S` real image.
    real: &'a mut [T],
    /// Transforms of the input windows: per tile and input channel, the real parts of the
    /// bins, then the imaginary parts.
    inputs: &'a mut [T],
    /// One output channel's products, interleaved.
    products: &'a mut [Complex<T>],
    /// The rest of the slice.
    rest: &'a mut [T],
}

impl<'a, T: FftReal> Buf<'a, T> {
    /// Reals that [`Buf::carve`] takes for the windows of `spectra` channels of tiles, before
    /// the rest.
    fn len(t: &Transforms<T>, spectra: usize) -> usize {
        2 * t.scratch_len() + (6 + 2 * spectra) * t.bins() + t.side * t.side
    }

    /// The buffers in `memory` (at least [`Buf::len`] reals; its contents do not matter).
    fn carve(t: &Transforms<T>, spectra: usize, memory: &'a mut [T]) -> Self {
        let (fft, memory) = memory.split_at_mut(2 * t.scratch_len());
        let (rows, memory) = memory.split_at_mut(2 * t.bins());
        let (columns, memory) = memory.split_at_mut(2 * t.bins());
        let (products, memory) = memory.split_at_mut(2 * t.bins());
        let (inputs, memory) = memory.split_at_mut(2 * spectra * t.bins());
        let (real, rest) = memory.split_at_mut(t.side * t.side);
        let scratch = Scratch { fft: complex(fft), rows: complex(rows), columns: complex(columns) };
        Self { scratch, real, inputs, products: complex(products), rest }
    }
}

/// Pairs of reals as complex numbers.
fn complex<T: FftReal>(reals: &mut [T]) -> &mut [Complex<T>] {
    assert!(reals.len().is_multiple_of(2), "fft: an odd number of reals as complex numbers");
    // SAFETY: `Complex<T>` is `repr(C)` with fields `re: T, im: T`, so its size is twice a
    // `T`'s and its alignment a `T`'s; the slice's `len / 2` pairs lie inside it, and the
    // result borrows it mutably for as long.
    unsafe { std::slice::from_raw_parts_mut(reals.as_mut_ptr().cast(), reals.len() / 2) }
}

/// Runs `f` on a job's [`Buf`] for `spectra` window transforms and `extra` more reals, in
/// the thread's scratch memory (mapped once, reused by every call: fresh buffers of this
/// size would each be mapped and faulted in again under glibc's default settings).
fn with_buf<T: Real + FftReal, R>(
    t: &Transforms<T>,
    spectra: usize,
    extra: usize,
    f: impl FnOnce(Buf<'_, T>) -> R,
) -> R {
    with_scratch(Buf::len(t, spectra) + extra, |memory: &mut [T]| f(Buf::carve(t, spectra, memory)))
}

/// The kernels of a stride-1, undilated, ungrouped correlation, transformed for one FFT side:
/// `conj(DFT(w[o][c])) / S²`, per output and input channel the real parts of the bins, then
/// the imaginary parts.
pub(crate) struct FftKernels<T> {
    transforms: Transforms<T>,
    kernel: (usize, usize),
    out: usize,
    in_c: usize,
    spectra: Vec<T>,
}

impl<T: FftReal> FftKernels<T> {
    /// Transforms `weight` `[out, in, kh, kw]` (row-major) for FFTs of side `side` (one of
    /// [`SIDES`], at least twice the kernel's larger side).
    pub fn new(side: usize, weight: &[T], out: usize, in_c: usize, kernel: (usize, usize)) -> Self {
        let (kh, kw) = kernel;
        assert!(2 * kh.max(kw) <= side, "fft: a {kh}×{kw} kernel on side {side}");
        assert_eq!(weight.len(), out * in_c * kh * kw, "fft: weight length");
        let transforms = Transforms::new(side);
        let bins = transforms.bins();
        let scale = T::from_f64(1.0 / (side * side) as f64).expect("a float from f64");
        let mut spectra = vec![T::zero(); 2 * out * in_c * bins];
        spectra.par_chunks_mut(2 * bins).enumerate().for_each_init(
            || vec![T::zero(); Buf::len(&transforms, 0)],
            |memory, (pair, spec)| {
                let Buf { scratch: mut s, real, .. } = Buf::carve(&transforms, 0, memory);
                real.fill(T::zero());
                let taps = &weight[pair * kh * kw..][..kh * kw];
                for (row, line) in real.chunks_exact_mut(side).zip(taps.chunks_exact(kw)) {
                    row[..kw].copy_from_slice(line);
                }
                let (re, im) = spec.split_at_mut(bins);
                transforms.spectrum(real, &mut s, (&mut *re, &mut *im));
                re.iter_mut().for_each(|r| *r = *r * scale);
                im.iter_mut().for_each(|i| *i = -*i * scale);
            },
        );
        Self { transforms, kernel, out, in_c, spectra }
    }
}

/// Flops of an FFT correlation of `in_c → out_c` channels over `plan`'s output with a
/// `kernel`, on FFTs of side `side` (each transform `2.5 · S² log₂ S²` flops, a complex
/// multiply-add 8), `None` where the side is under twice the kernel.
fn cost(
    plan: &Plan,
    kernel: (usize, usize),
    in_c: usize,
    out_c: usize,
    side: usize,
) -> Option<f64> {
    let (kh, kw) = kernel;
    if side < 2 * kh.max(kw) {
        return None;
    }
    let tiles = plan.output.0.div_ceil(side - kh + 1) * plan.output.1.div_ceil(side - kw + 1);
    let s2 = (side * side) as f64;
    let bins = ((side / 2 + 1) * side) as f64;
    let per_tile =
        (in_c + out_c) as f64 * 2.5 * s2 * s2.log2() + 8.0 * bins * (in_c * out_c) as f64;
    Some((plan.n * tiles) as f64 * per_tile)
}

/// The cheapest FFT side for a correlation ([`cost`]) and its flops; `None` where no side
/// fits the kernel.
pub(crate) fn best_side(
    plan: &Plan,
    kernel: (usize, usize),
    in_c: usize,
    out_c: usize,
) -> Option<(usize, f64)> {
    SIDES
        .iter()
        .filter_map(|&s| cost(plan, kernel, in_c, out_c, s).map(|c| (s, c)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// A side's slot in caches, `0..SIDE_COUNT`.
pub(crate) fn side_index(side: usize) -> usize {
    SIDES.iter().position(|&s| s == side).expect("fft: a side from SIDES")
}

/// The correlation of `input` (`[n, in, h, w]`) with `kernels` over `plan` (its `pad` the
/// offset of the kernel's top-left tap), `bias` added and `relu` applied; `mask` (shaped like
/// `input`) zeroes the inputs where it is not positive (a ReLU's backward fused into an input
/// gradient).
///
/// Each job (spread over rayon's threads) takes a run of tiles along one tile row: it
/// transforms their input windows, then for each output channel multiplies, transforms back
/// into the run's rows and writes them at once (whole rows of the output where the run spans
/// the row; tile by tile, each of the output's rows would be a page of its own).
pub(crate) fn correlate<T: Real + FftReal>(
    plan: &Plan,
    kernels: &FftKernels<T>,
    input: &[T],
    mask: Option<&[T]>,
    bias: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    let (t, (kh, kw)) = (&kernels.transforms, kernels.kernel);
    let (out_c, in_c) = (kernels.out, kernels.in_c);
    let (side, bins) = (t.side, t.bins());
    let (h, w) = plan.input;
    let (oh, ow) = plan.output;
    let (vh, vw) = (side - kh + 1, side - kw + 1);
    let (th, tw) = (oh.div_ceil(vh), ow.div_ceil(vw));
    assert_eq!(input.len(), plan.n * in_c * h * w, "fft: input length");
    assert!(mask.is_none_or(|m| m.len() == input.len()), "fft: mask length");
    // Tiles a job: as many of a row as their transforms' budget holds, the row's tiles dealt
    // out evenly.
    let most = (JOB_SPECTRA / (in_c * bins * size_of::<Complex<T>>())).clamp(1, tw);
    let runs = tw.div_ceil(most);
    let per_run = tw.div_ceil(runs);
    // A run's rows: each tile's `vw` outputs, and room for the last tile's whole inverse row.
    let stride = per_run * vw + (side - vw);
    let out = Scattered::new(plan.n * out_c * oh * ow);
    (0..plan.n * th * runs).into_par_iter().for_each(|job| {
        with_buf(t, in_c * per_run, vh * stride, |buf| {
            let Buf { scratch: mut s, real, inputs, products, rest: staged } = buf;
            let (image, q) = (job / (th * runs), job % (th * runs));
            let (ty, run) = (q / runs, q % runs);
            let tiles = run * per_run..((run + 1) * per_run).min(tw);
            let (y0, x0) = (ty * vh, tiles.start * vw);
            let rows = vh.min(oh - y0);
            let cols = (tiles.end * vw).min(ow) - x0;
            let inputs = &mut inputs[..2 * tiles.len() * in_c * bins];
            for (tile, specs) in tiles.clone().zip(inputs.chunks_exact_mut(2 * in_c * bins)) {
                let window = Window::new(plan, side, (y0, tile * vw));
                for (c, spec) in specs.chunks_exact_mut(2 * bins).enumerate() {
                    let at = (image * in_c + c) * h * w..(image * in_c + c + 1) * h * w;
                    window.gather(&input[at.clone()], mask.map(|m| &m[at]), real);
                    let (re, im) = spec.split_at_mut(bins);
                    t.spectrum(real, &mut s, (re, im));
                }
            }
            for o in 0..out_c {
                let weights = &kernels.spectra[2 * o * in_c * bins..][..2 * in_c * bins];
                // Left to right: each tile's inverse rows overwrite the previous tile's tail.
                for (k, specs) in inputs.chunks_exact(2 * in_c * bins).enumerate() {
                    multiply_sum(weights, specs, products, bins);
                    t.image(products, &mut s, &mut staged[k * vw..], stride, rows);
                }
                let b = bias.map_or(T::zero(), |b| b[o]);
                let plane = (image * out_c + o) * oh * ow;
                for (r, line) in staged.chunks_exact_mut(stride).take(rows).enumerate() {
                    let line = &mut line[..cols];
                    finish(line, b, relu);
                    // SAFETY: jobs cover disjoint parts of each output plane.
                    unsafe { out.write(plane + (y0 + r) * ow + x0, line) };
                }
            }
            out.count(out_c * rows * cols);
        })
    });
    out.finish()
}

/// `bias` added to `line` and the ReLU applied where `relu`.
fn finish<T: FftReal>(line: &mut [T], bias: T, relu: bool) {
    crate::simd::vectorized(
        #[inline(always)]
        || {
            for v in line.iter_mut() {
                let x = *v + bias;
                *v = if relu && x < T::zero() { T::zero() } else { x };
            }
        },
    )
}

/// Where a tile's `S × S` input window lies: its top-left input sample (negative in the
/// padding) and its rows and columns inside the image.
struct Window {
    side: usize,
    width: usize,
    top: isize,
    left: isize,
    rows: (usize, usize),
    cols: (usize, usize),
}

impl Window {
    /// The window of the tile whose top-left output is `(y0, x0)`.
    fn new(plan: &Plan, side: usize, (y0, x0): (usize, usize)) -> Self {
        let (top, left) = (y0 as isize - plan.pad.0, x0 as isize - plan.pad.1);
        let (rows, cols) = (inside(top, plan.input.0, side), inside(left, plan.input.1, side));
        Self { side, width: plan.input.1, top, left, rows, cols }
    }

    /// The window of `plane` (one channel's image) into `real` (`S × S`), zero outside the
    /// image and where `mask` is not positive.
    fn gather<T: FftReal>(&self, plane: &[T], mask: Option<&[T]>, real: &mut [T]) {
        let ((r0, r1), (c0, c1)) = (self.rows, self.cols);
        real.fill(T::zero());
        for r in r0..r1 {
            let row = (self.top + r as isize) as usize * self.width;
            let at = row + (self.left + c0 as isize) as usize;
            let src = &plane[at..at + (c1 - c0)];
            let dst = &mut real[r * self.side + c0..r * self.side + c1];
            match mask {
                None => dst.copy_from_slice(src),
                Some(m) => {
                    for ((d, &x), &k) in dst.iter_mut().zip(src).zip(&m[at..]) {
                        *d = if k > T::zero() { x } else { T::zero() };
                    }
                }
            }
        }
    }
}

/// `products[f] = Σ_c weights[c][f] · inputs[c][f]` (complex; `weights` and `inputs` hold
/// per channel `bins` real parts, then `bins` imaginary ones): [`LANES`] bins at a time,
/// summed over the channels in registers.
fn multiply_sum<T: FftReal>(weights: &[T], inputs: &[T], products: &mut [Complex<T>], bins: usize) {
    debug_assert!(bins.is_multiple_of(LANES));
    let channels = inputs.len() / (2 * bins);
    crate::simd::vectorized(
        #[inline(always)]
        || {
            for (f0, dst) in (0..bins).step_by(LANES).zip(products.chunks_exact_mut(LANES)) {
                let (mut pr, mut pi) = ([T::zero(); LANES], [T::zero(); LANES]);
                for c in 0..channels {
                    let at = 2 * c * bins + f0;
                    let (wr, wi) =
                        (&weights[at..at + LANES], &weights[at + bins..at + bins + LANES]);
                    let (xr, xi) = (&inputs[at..at + LANES], &inputs[at + bins..at + bins + LANES]);
                    for l in 0..LANES {
                        pr[l] = pr[l] + (wr[l] * xr[l] - wi[l] * xi[l]);
                        pi[l] = pi[l] + (wr[l] * xi[l] + wi[l] * xr[l]);
                    }
                }
                for ((d, &r), &i) in dst.iter_mut().zip(&pr).zip(&pi) {
                    *d = Complex::new(r, i);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_model_picks_the_measured_side() {
        // ST-LPIPS' conv1 on a 1080×800 pair: 64 ran fastest (166–167 ms against 192–196 at
        // 128, 212 at 32 and 260 at 256, `lpips_layers`, 2026-12-07).
        let plan = Plan { n: 2, input: (800, 1080), output: (794, 1074), pad: (2, 2) };
        assert_eq!(best_side(&plan, (11, 11), 3, 64).map(|(s, _)| s), Some(64));
        // Every side is under twice a 129-tap kernel.
        assert_eq!(best_side(&plan, (129, 3), 3, 64), None);
    }

    #[test]
    fn a_spectrum_and_its_image_are_inverses() {
        // The 2-D transform and its inverse (the kernels' 1/S² scale left out) give back the
        // image times S², row by row into a strided destination.
        let t = Transforms::<f64>::new(32);
        let mut memory = vec![0.0; Buf::len(&t, 1)];
        let Buf { scratch: mut s, real, inputs, .. } = Buf::carve(&t, 1, &mut memory);
        let image: Vec<f64> = (0..32 * 32).map(|i| ((i * 7919) % 101) as f64 - 50.0).collect();
        real.copy_from_slice(&image);
        let (re, im) = inputs.split_at_mut(t.bins());
        t.spectrum(real, &mut s, (re, im));
        let mut spec: Vec<Complex<f64>> =
            re.iter().zip(&*im).map(|(&r, &i)| Complex::new(r, i)).collect();
        let mut dst = vec![0.0; 20 * 40];
        t.image(&mut spec, &mut s, &mut dst, 40, 20);
        for r in 0..20 {
            for c in 0..32 {
                let (got, want) = (dst[r * 40 + c] / 1024.0, image[r * 32 + c]);
                assert!((got - want).abs() < 1e-9, "({r}, {c}): {got} against {want}");
            }
        }
    }
}
