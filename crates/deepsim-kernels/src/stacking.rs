//! Convolutions with larger or strided kernels rewritten as 3×3, stride-1 ones, so that
//! Winograd F(4×4, 3×3) runs them: AlexNet's 11×11 stride-4 conv1 and 5×5 conv2, ST-LPIPS'
//! stride-1 11×11 conv1.
//!
//! Along one axis, a kernel of `k` taps with stride `s` and padding `p` computes
//! `y[o] = Σ_t w[t] x[s·o + t − p]`. Writing each tap as `t = s·(3a + i) + q` (phase
//! `q < s`, block `a`, tap `i < 3` within the block) gives
//! `y[o] = Σ_{a,q} Σ_{i<3} w[s·(3a + i) + q] · X_{a,q}[o + i]` with the sub-plane
//! `X_{a,q}[u] = x[s·(u + 3a) + q − p]`: a valid, stride-1, 3-tap correlation over
//! `s · ⌈⌈k/s⌉/3⌉` sub-planes, each `o_len + 2` long. In 2-D every input channel becomes the
//! product of both axes' sub-planes (the stacked channels, channel-major so that groups stay
//! contiguous), and the kernel `[out, in_g, kh, kw]` becomes `[out, in_g · subs, 3, 3]` with
//! zeros where `s·(3a + i) + q ≥ k`.
//!
//! A stride-4 11×11 kernel on 3 channels becomes a 3×3 one on 48 (the 16 phases; 144 taps
//! where there were 121); a stride-1 5×5 kernel becomes a 3×3 one on four shifted copies of
//! the input (36 taps for 25). With F(4×4, 3×3)'s 36 products per 16 outputs, that is
//! 0.30 (11×11/4) and 0.36 (5×5) of the multiplies of a direct sum.
//!
//! The input gradient is the stacked convolution's input gradient summed back onto the
//! pixels each sub-plane sample came from ([`Stacking::unstack`]).

use rayon::prelude::*;

use crate::check::Real;
use crate::winograd::Plan;

/// One axis of a stacked convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Axis {
    /// Kernel taps.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding before the first input sample.
    pub pad: usize,
    /// Input length.
    pub input: usize,
    /// Output length.
    pub output: usize,
}

impl Axis {
    /// Sub-planes per input channel along this axis: phases × blocks of 3 taps.
    fn subs(&self) -> usize {
        self.stride * self.kernel.div_ceil(self.stride).div_ceil(3)
    }

    /// Length of a sub-plane: the output plus the 3-tap kernel's two extra samples.
    fn sub_len(&self) -> usize {
        self.output + 2
    }

    /// The input sample at position `u` of sub-plane `j`, `None` in the padding.
    fn source(&self, j: usize, u: usize) -> Option<usize> {
        let (a, q) = (j / self.stride, j % self.stride);
        (self.stride * (u + 3 * a) + q).checked_sub(self.pad).filter(|&x| x < self.input)
    }

    /// The original tap that tap `i` of sub-plane `j`'s 3-tap kernel stands for, `None` past
    /// the kernel's end.
    fn tap(&self, j: usize, i: usize) -> Option<usize> {
        let (a, q) = (j / self.stride, j % self.stride);
        Some(self.stride * (3 * a + i) + q).filter(|&t| t < self.kernel)
    }

    /// `source` for every (sub-plane, position), `usize::MAX` in the padding.
    fn sources(&self) -> Vec<usize> {
        (0..self.subs())
            .flat_map(|j| (0..self.sub_len()).map(move |u| self.source(j, u).unwrap_or(usize::MAX)))
            .collect()
    }
}

/// A convolution rewritten as a 3×3, stride-1 convolution over stacked sub-planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stacking {
    /// Rows, columns.
    pub axes: [Axis; 2],
}

impl Stacking {
    /// Stacked channels per input channel.
    pub fn subs(&self) -> usize {
        self.axes[0].subs() * self.axes[1].subs()
    }

    /// Rows and columns of a sub-plane.
    fn sub_shape(&self) -> (usize, usize) {
        (self.axes[0].sub_len(), self.axes[1].sub_len())
    }

    /// Multiplies of Winograd F(4×4, 3×3) on the stacked convolution over those of a direct
    /// sum (per pair of original channels).
    pub fn cost_ratio(&self) -> f64 {
        let [r, c] = self.axes;
        let tiles = r.output.div_ceil(4) * c.output.div_ceil(4);
        (36 * tiles * self.subs()) as f64 / (r.kernel * c.kernel * r.output * c.output) as f64
    }

    /// The Winograd plan of the stacked forward pass over `n` images.
    pub fn forward_plan(&self, n: usize) -> Plan {
        let [r, c] = self.axes;
        Plan { n, input: self.sub_shape(), output: (r.output, c.output), pad: (0, 0) }
    }

    /// The Winograd plan of the stacked input gradient (the stacked output gradient is the
    /// original one).
    pub fn input_grad_plan(&self, n: usize) -> Plan {
        let [r, c] = self.axes;
        Plan { n, input: (r.output, c.output), output: self.sub_shape(), pad: (2, 2) }
    }

    /// The stacked kernels `[out, in_g · subs, 3, 3]` of the kernels `weight`
    /// `[out, in_g, kh, kw]` (row-major).
    pub fn kernels<T: Real>(&self, weight: &[T], out: usize, in_g: usize) -> Vec<T> {
        let [r, c] = self.axes;
        let (sr, sc) = (r.subs(), c.subs());
        let mut stacked = vec![T::zero(); out * in_g * self.subs() * 9];
        for (dst, src) in
            stacked.chunks_exact_mut(self.subs() * 9).zip(weight.chunks_exact(r.kernel * c.kernel))
        {
            for (jr, jc, i, k) in stacked_taps(sr, sc) {
                let (Some(tr), Some(tc)) = (r.tap(jr, i), c.tap(jc, k)) else { continue };
                dst[((jr * sc + jc) * 3 + i) * 3 + k] = src[tr * c.kernel + tc];
            }
        }
        stacked
    }

    /// The gradient w.r.t. the kernels `[out, in_g, kh, kw]` from the gradient `stacked` w.r.t.
    /// their stacked form `[out, in_g · subs, 3, 3]` (the adjoint of [`Stacking::kernels`]:
    /// each original tap has exactly one place among the stacked ones).
    pub fn kernel_grad<T: Real>(&self, stacked: &[T], out: usize, in_g: usize) -> Vec<T> {
        let [r, c] = self.axes;
        let (sr, sc) = (r.subs(), c.subs());
        let mut grad = vec![T::zero(); out * in_g * r.kernel * c.kernel];
        for (dst, src) in
            grad.chunks_exact_mut(r.kernel * c.kernel).zip(stacked.chunks_exact(self.subs() * 9))
        {
            for (jr, jc, i, k) in stacked_taps(sr, sc) {
                let (Some(tr), Some(tc)) = (r.tap(jr, i), c.tap(jc, k)) else { continue };
                dst[tr * c.kernel + tc] = src[((jr * sc + jc) * 3 + i) * 3 + k];
            }
        }
        grad
    }

    /// The stacked sub-planes `[n, channels · subs, sub rows, sub columns]` of the images `x`
    /// `[n, channels, rows, columns]` (row-major), zero where they fall in the padding. Each
    /// element is written once (no zero-fill first); along a row a sub-plane reads every
    /// `stride`-th pixel of a run, on AVX-512 (f32) sixteen at a time by permutes.
    pub fn stack<T: Real>(&self, x: &[T], n: usize, channels: usize) -> Vec<T> {
        let [r, c] = self.axes;
        let rows = r.sources();
        let (sh, sw) = self.sub_shape();
        let sc = c.subs();
        let plane = r.input * c.input;
        // Per column sub-plane: the run of positions inside the image and its first pixel.
        let runs: Vec<(usize, usize, usize)> = (0..sc)
            .map(|jc| {
                let inside: Vec<(usize, usize)> =
                    (0..sw).filter_map(|u| c.source(jc, u).map(|x| (u, x))).collect();
                match (inside.first(), inside.last()) {
                    (Some(&(lo, x0)), Some(&(hi, _))) => (lo, hi + 1, x0),
                    _ => (0, 0, 0),
                }
            })
            .collect();
        let fast = crate::simd::f32_on_avx512::<T>() && c.stride == 4;
        crate::fresh::fill_rows(n * channels * self.subs() * sh, sw, sh, |first, lines| {
            let index = first / sh;
            let (source, j) = (index / self.subs(), index % self.subs());
            let (jr, jc) = (j / sc, j % sc);
            let src = &x[source * plane..][..plane];
            let (lo, hi, x0) = runs[jc];
            let mut line = vec![T::zero(); sw];
            for (cursor, &y) in lines.iter_mut().zip(&rows[jr * sh..][..sh]) {
                if y == usize::MAX {
                    line.fill(T::zero());
                } else {
                    let row = &src[y * c.input..][..c.input];
                    let (head, rest) = line.split_at_mut(lo);
                    let (run, tail) = rest.split_at_mut(hi - lo);
                    head.fill(T::zero());
                    tail.fill(T::zero());
                    let picked = &row[x0..x0 + c.stride * (run.len().max(1) - 1) + 1];
                    if fast {
                        #[cfg(target_arch = "x86_64")]
                        strided4(crate::simd::f32s(picked), crate::simd::f32s_mut(run));
                    } else {
                        for (d, &v) in run.iter_mut().zip(picked.iter().step_by(c.stride)) {
                            *d = v;
                        }
                    }
                }
                cursor.append(&line);
            }
        })
    }

    /// The gradient w.r.t. the images `[n, channels, rows, columns]` from the gradient
    /// `grad` w.r.t. their stacked sub-planes: each sub-plane sample's gradient added to the
    /// pixel it was read from.
    pub fn unstack<T: Real>(&self, grad: &[T], n: usize, channels: usize) -> Vec<T> {
        let [r, c] = self.axes;
        let (rows, cols) = (r.sources(), c.sources());
        let (sh, sw) = self.sub_shape();
        let sc = c.subs();
        let plane = r.input * c.input;
        let mut out = vec![T::zero(); n * channels * plane];
        if out.is_empty() {
            return out;
        }
        let per_channel = self.subs() * sh * sw;
        out.par_chunks_mut(plane).enumerate().for_each(|(index, dst)| {
            let subs = &grad[index * per_channel..][..per_channel];
            for (j, sub) in subs.chunks_exact(sh * sw).enumerate() {
                let (jr, jc) = (j / sc, j % sc);
                let cols = &cols[jc * sw..][..sw];
                for (line, &y) in sub.chunks_exact(sw).zip(&rows[jr * sh..][..sh]) {
                    if y == usize::MAX {
                        continue;
                    }
                    let row = &mut dst[y * c.input..][..c.input];
                    for (&g, &x) in line.iter().zip(cols) {
                        if x != usize::MAX {
                            row[x] += g;
                        }
                    }
                }
            }
        });
        out
    }
}

/// `dst[u] = src[4u]`: sixteen at a time from four vectors by two permutes and a blend on
/// AVX-512 (which [`crate::simd::f32_on_avx512`] has checked), the rest one by one.
#[cfg(target_arch = "x86_64")]
fn strided4(src: &[f32], dst: &mut [f32]) {
    assert!(dst.is_empty() || src.len() > 4 * (dst.len() - 1), "strided copy: source short");
    // Whole groups of 16 whose 64 source elements lie inside `src`.
    let whole = (src.len() / 64).min(dst.len() / 16);
    #[target_feature(enable = "avx512f")]
    unsafe fn groups(src: &[f32], dst: &mut [f32], whole: usize) {
        use std::arch::x86_64::*;
        // SAFETY: group `g` reads src[64g..64g + 64] and writes dst[16g..16g + 16], inside
        // both for g < whole.
        unsafe {
            let picks: [i32; 16] = [0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28];
            let picks = _mm512_loadu_si512(picks.as_ptr().cast());
            for g in 0..whole {
                let at = src.as_ptr().add(64 * g);
                let low =
                    _mm512_permutex2var_ps(_mm512_loadu_ps(at), picks, _mm512_loadu_ps(at.add(16)));
                let high = _mm512_permutex2var_ps(
                    _mm512_loadu_ps(at.add(32)),
                    picks,
                    _mm512_loadu_ps(at.add(48)),
                );
                _mm512_storeu_ps(
                    dst.as_mut_ptr().add(16 * g),
                    _mm512_mask_blend_ps(0xFF00, low, high),
                );
            }
        }
    }
    // SAFETY: the caller has checked AVX-512 (`f32_on_avx512`); bounds as above.
    unsafe { groups(src, dst, whole) };
    for (u, d) in dst.iter_mut().enumerate().skip(16 * whole) {
        *d = src[4 * u];
    }
}

/// Every (row sub-plane, column sub-plane, row tap, column tap) of a stacked 3×3 kernel.
fn stacked_taps(sr: usize, sc: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..sr).flat_map(move |jr| {
        (0..sc).flat_map(move |jc| (0..3).flat_map(move |i| (0..3).map(move |k| (jr, jc, i, k))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::seeded;

    /// Direct correlation `y[o] = Σ_t w[t] x[s·o + t − p]` along one axis.
    fn direct_1d(axis: &Axis, x: &[f64], w: &[f64]) -> Vec<f64> {
        (0..axis.output)
            .map(|o| {
                (0..axis.kernel)
                    .filter_map(|t| {
                        let at = (axis.stride * o + t).checked_sub(axis.pad)?;
                        x.get(at).map(|v| v * w[t])
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn sub_planes_compute_the_strided_correlation() {
        for (kernel, stride, pad, input) in [
            (11, 4, 2, 47),
            (5, 1, 2, 9),
            (11, 1, 5, 20),
            (7, 2, 3, 15),
            (4, 2, 1, 8),
            (3, 3, 0, 9),
        ] {
            let output = (input + 2 * pad - kernel) / stride + 1;
            let axis = Axis { kernel, stride, pad, input, output };
            let (x, w) = (seeded(input, 1), seeded(kernel, 2));
            let want = direct_1d(&axis, &x, &w);
            for (o, want) in want.iter().enumerate() {
                let got: f64 = (0..axis.subs())
                    .flat_map(|j| (0..3).map(move |i| (j, i)))
                    .filter_map(|(j, i)| Some(w[axis.tap(j, i)?] * x[axis.source(j, o + i)?]))
                    .sum();
                assert!((got - want).abs() < 1e-12, "{axis:?}, output {o}: {got} vs {want}");
            }
            // Every tap is used exactly once.
            let mut used = vec![0; kernel];
            for j in 0..axis.subs() {
                for i in 0..3 {
                    if let Some(t) = axis.tap(j, i) {
                        used[t] += 1;
                    }
                }
            }
            assert!(used.iter().all(|&u| u == 1), "{axis:?}: taps used {used:?}");
        }
    }

    #[test]
    fn kernel_grad_is_the_adjoint_of_kernels() {
        let axes = [
            Axis { kernel: 5, stride: 1, pad: 2, input: 9, output: 9 },
            Axis { kernel: 11, stride: 4, pad: 2, input: 27, output: 6 },
        ];
        let s = Stacking { axes };
        let (out, in_g) = (2, 3);
        let w = seeded(out * in_g * 5 * 11, 5);
        let stacked = s.kernels(&w, out, in_g);
        let g = seeded(stacked.len(), 6);
        let back = s.kernel_grad(&g, out, in_g);
        let lhs: f64 = stacked.iter().zip(&g).map(|(a, b)| a * b).sum();
        let rhs: f64 = w.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }

    #[test]
    fn unstack_is_the_adjoint_of_stack() {
        // ⟨stack(x), g⟩ = ⟨x, unstack(g)⟩ for any x and g.
        let axes = [
            Axis { kernel: 5, stride: 1, pad: 2, input: 7, output: 7 },
            Axis { kernel: 11, stride: 4, pad: 2, input: 23, output: 5 },
        ];
        let s = Stacking { axes };
        let (n, ch) = (2, 3);
        let x = seeded(n * ch * 7 * 23, 3);
        let stacked = s.stack(&x, n, ch);
        let g = seeded(stacked.len(), 4);
        let back = s.unstack(&g, n, ch);
        let lhs: f64 = stacked.iter().zip(&g).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }
}
