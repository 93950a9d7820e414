//! Winograd convolution on the CPU: F(4×4, 3×3) for 3×3, stride-1, undilated kernels (the
//! forward pass, the input gradient and the kernel gradient of a frozen or trainable
//! convolution; a trainable one transforms its kernels on every call), with 4× fewer
//! multiplies than im2col + GEMM at best (36 products per 4×4 output tile instead of 144);
//! F(6×6, 3×3) for a frozen layer's 3×3 kernels on large maps (64 products per 6×6 tile
//! instead of 324: 1.78 per output against F(4×4, 3×3)'s 2.25); and F(4×4, 5×5) for a frozen
//! layer's 5×5 kernels (64 products per tile instead of 400). Other undilated kernels reach
//! the 3×3 schemes through `stacking.rs`.
//!
//! The algorithm is Lavin & Gray, *Fast Algorithms for Convolutional Neural Networks* (CVPR
//! 2016). F(4×4, 3×3) interpolates at the points 0, ±1, ±2 and ∞, F(6×6, 3×3) and F(4×4, 5×5)
//! at 0, ±1, ±2, ±½ and ∞ (the input transform `Bᵀ` depends on the points alone, so the two
//! share it). Each α×α input tile `d` and each kernel `g` are transformed, `V = Bᵀ d B` and
//! `U = G g Gᵀ`; the α² transformed points are independent channel reductions,
//! `M[ξ] = U[ξ] · V[ξ]` (α² GEMMs over channels × tiles); the m×m output tile is `Aᵀ M A`.
//! The kernel gradient is F(4×4, 3×3) with the roles turned, F(3×3, 4×4): the 4×4
//! output-gradient tiles `e` are transformed by `A e Aᵀ`, the products summed over the tiles
//! (36 GEMMs over output channels × tiles × input channels), and the 3×3 gradient is `Gᵀ M G`.
//! Tiles are transformed 16 at a time, one per SIMD lane.
//!
//! The transforms multiply by up to 8 and divide by up to 90, so rounding
//! grows: in f32, at a 64 → 48 channel layer on 13×13, the largest error is about 5e-6 of the
//! largest output, and at AlexNet's conv2 (F(4×4, 5×5), 64 → 192 on 27×27) about 5e-6 too;
//! F(6×6, 3×3), whose output transform multiplies by up to 32, about 1.2e-5 at 128 → 128 on
//! 30×30 (im2col's is 5e-7; `tests/winograd.rs`); in f64 the two agree to about 1e-14.

use crate::check::{with_scratch, Real};
use rayon::prelude::*;

use crate::fresh::Scattered;
use crate::gemm::{matmul_into, parallelism, Mat, SharedSlice};
use crate::packed;
use crate::simd::{f32s, f32s_mut};
use gemm::Parallelism;

/// Rows and columns of an output tile of F(4×4, 3×3) and F(4×4, 5×5).
const TILE: usize = 4;
/// Rows and columns of an F(4×4, 3×3) input tile: `TILE + 3 − 1`.
const ALPHA: usize = 6;
/// Transformed points per tile: `ALPHA²`.
const POINTS: usize = ALPHA * ALPHA;
/// A weight `[out, in_g, r, r]` (`groups` groups, `taps = r·r`) turned for the input
/// gradient: `[in, out / groups, r, r]`, each group's kernels transposed (`in ↔ out`) and
/// rotated by 180°, in one pass over the weight.
pub(crate) fn turned_kernels<T: Real>(
    weight: &[T],
    out: usize,
    in_g: usize,
    groups: usize,
    taps: usize,
) -> Vec<T> {
    let out_g = out / groups;
    let mut turned = vec![T::zero(); weight.len()];
    for (o, kernels) in weight.chunks_exact(in_g * taps).enumerate() {
        let (group, k) = (o / out_g, o % out_g);
        for (ci, g) in kernels.chunks_exact(taps).enumerate() {
            let c = group * in_g + ci;
            let dst = &mut turned[(c * out_g + k) * taps..][..taps];
            for (d, &v) in dst.iter_mut().zip(g.iter().rev()) {
                *d = v;
            }
        }
    }
    turned
}

/// Tiles transformed together, one per SIMD lane.
const LANES: usize = 16;
/// Elements of transformed inputs and products that one block of tiles may hold (per thread).
const BLOCK_BUDGET: usize = 4 << 20;

type Lanes<T> = [T; LANES];

/// A Winograd algorithm F(m×m, r×r): `m × m` output tiles of an `r × r` kernel from
/// `α × α` input windows, `α = m + r − 1`, with `α²` products per tile and channel pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// F(4×4, 3×3), α = 6, the points 0, ±1, ±2, ∞: 36 products per 16 outputs (2.25 each,
    /// against 9 for a direct sum). The kernel gradient exists for it alone.
    F4x3,
    /// F(4×4, 5×5), α = 8, the points 0, ±1, ±2, ±½, ∞: 64 products per 16 outputs (4 each,
    /// against 25 for a direct sum, and 9 for the stacked F(4×4, 3×3)).
    F4x5,
    /// F(6×6, 3×3), α = 8, the points of F(4×4, 5×5): 64 products per 36 outputs (1.78 each,
    /// against F(4×4, 3×3)'s 2.25), with larger transforms and more rounding (the transforms
    /// multiply by up to 32).
    F6x3,
}

impl Scheme {
    /// Rows and columns of an input window.
    pub fn alpha(self) -> usize {
        match self {
            Self::F4x3 => ALPHA,
            Self::F4x5 | Self::F6x3 => 8,
        }
    }

    /// Rows and columns of the kernel.
    pub fn kernel(self) -> usize {
        match self {
            Self::F4x3 | Self::F6x3 => 3,
            Self::F4x5 => 5,
        }
    }

    /// Rows and columns of an output tile.
    pub fn tile(self) -> usize {
        match self {
            Self::F4x3 | Self::F4x5 => TILE,
            Self::F6x3 => 6,
        }
    }

    /// Products (GEMM multiplies per channel pair) for a `rows × cols` output.
    pub fn products(self, (rows, cols): (usize, usize)) -> usize {
        let m = self.tile();
        self.points() * rows.div_ceil(m) * cols.div_ceil(m)
    }

    /// A slot per scheme, for caches of transformed kernels.
    pub const COUNT: usize = 3;

    /// This scheme's slot, `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Transformed points per tile.
    fn points(self) -> usize {
        self.alpha() * self.alpha()
    }
}

/// The kernels of a convolution, transformed for a [`Scheme`].
///
/// Layout `[ξ][out][in / groups]`: for each of the α² points ξ, the `out × in_g` matrix of
/// one group starts at `ξ·out·in_g + group·out_g·in_g`, row-major; or, where `packed`
/// ([`packed::packs`]), the same matrices each packed in panels for [`packed::multiply`],
/// one group's `ξ·groups + group`-th of [`packed::packed_len`]`(out_g, in_g)` elements.
pub(crate) struct TransformedKernels<T> {
    data: Vec<T>,
    out: usize,
    in_g: usize,
    groups: usize,
    scheme: Scheme,
    packed: bool,
}

impl<T: Real> TransformedKernels<T> {
    /// Transforms the kernels `weight` `[out, in / groups, r, r]` (row-major, `r` the
    /// scheme's kernel size) of a conv2d.
    pub fn forward(scheme: Scheme, weight: &[T], out: usize, in_g: usize, groups: usize) -> Self {
        match scheme {
            Scheme::F4x3 => Self::build3(
                out,
                in_g,
                groups,
                #[inline(always)]
                |o, c| {
                    let g = &weight[(o * in_g + c) * 9..][..9];
                    filled(|j| g[j].to_f64())
                },
            ),
            Scheme::F4x5 | Scheme::F6x3 => Self::build8(scheme, weight, out, in_g, groups).packed(),
        }
    }

    /// The kernels of the same conv2d's input gradient: the conv from the `out` channels of the
    /// output gradient back to the `in` channels, with kernels transposed per group (`in ↔ out`)
    /// and rotated by 180°.
    pub fn input_grad(
        scheme: Scheme,
        weight: &[T],
        out: usize,
        in_g: usize,
        groups: usize,
    ) -> Self {
        let out_g = out / groups;
        if scheme == Scheme::F4x3 {
            // Output channel `c` of the input gradient is input channel `c % in_g` of group
            // `c / in_g`; its kernel from that group's output channel `k` is rotated.
            return Self::build3(
                in_g * groups,
                out_g,
                groups,
                #[inline(always)]
                |c, k| {
                    let (group, ci) = (c / in_g, c % in_g);
                    let g = &weight[((group * out_g + k) * in_g + ci) * 9..][..9];
                    filled(|j| g[8 - j].to_f64())
                },
            );
        }
        // The rotated kernels in the input gradient's own layout, so that the transform below
        // reads them in order.
        let taps = scheme.kernel() * scheme.kernel();
        let turned = turned_kernels(weight, out, in_g, groups, taps);
        Self::build8(scheme, &turned, in_g * groups, out_g, groups).packed()
    }

    /// [`TransformedKernels::build8`]'s kernels packed for [`packed::multiply`] where it runs
    /// (f32 with AVX-512), each point's and group's matrix on rayon's threads; unchanged
    /// elsewhere.
    fn packed(mut self) -> Self {
        if !packed::packs::<T>() {
            return self;
        }
        let (out_g, in_g, groups) = (self.out / self.groups, self.in_g, self.groups);
        let per = packed::packed_len(out_g, in_g);
        let mut data = vec![T::zero(); self.scheme.points() * groups * per];
        let rows = &self.data;
        data.par_chunks_mut(per).enumerate().for_each(|(i, dst)| {
            let (xi, group) = (i / groups, i % groups);
            let first = (xi * self.out + group * out_g) * in_g;
            packed::pack(&rows[first..first + out_g * in_g], out_g, in_g, dst);
        });
        self.data = data;
        self.packed = true;
        self
    }

    /// Transformed kernel values (points × out × in / groups), whatever the layout.
    fn elements(&self) -> usize {
        self.scheme.points() * self.out * self.in_g
    }

    /// The scheme the kernels were transformed for.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `U[ξ][o][i] = (G g Gᵀ)[ξ]` over the eight points for the row-major `r × r` kernels
    /// `weight` `[out, in_g, r, r]`, in f64 (a frozen layer transforms its kernels once).
    fn build8(scheme: Scheme, weight: &[T], out: usize, in_g: usize, groups: usize) -> Self {
        let (r, points) = (scheme.kernel(), scheme.points());
        let mut data = vec![T::zero(); points * out * in_g];
        for (pair, g) in weight.chunks_exact(r * r).enumerate() {
            let g: Vec<f64> = g.iter().map(|x| x.to_f64()).collect();
            let rows: Vec<[f64; 8]> = g.chunks_exact(r).map(kernel_1d8).collect();
            for s in 0..8 {
                let column: Vec<f64> = rows.iter().map(|row| row[s]).collect();
                let column = kernel_1d8(&column);
                for (t, v) in column.iter().enumerate() {
                    data[(t * 8 + s) * out * in_g + pair] = T::from_f64(*v);
                }
            }
        }
        Self { data, out, in_g, groups, scheme, packed: false }
    }

    /// `U[ξ][o][i] = (G g Gᵀ)[ξ]` for F(4×4, 3×3), `kernel(o, i)` the row-major 3×3 kernel
    /// from input channel `i` (of its group) to output channel `o`. A trainable layer
    /// transforms its kernels on every call, so this runs in one pass: [`ROWS`] output
    /// channels a vector (the arithmetic in f64), each point's values written straight into
    /// the layout the products read — [`packed::pack`]'s panels where [`packed::packs`] holds
    /// (the eight values of a panel's input channel side by side), the row-major
    /// `[point][out][in_g]` matrices elsewhere — and the panels spread over rayon's threads.
    fn build3<F>(out: usize, in_g: usize, groups: usize, kernel: F) -> Self
    where
        F: Fn(usize, usize) -> [f64; 9] + Sync,
    {
        let out_g = out / groups;
        let packs = packed::packs::<T>();
        let panels = out_g.div_ceil(ROWS);
        // Elements of one point's matrix for one group.
        let per = if packs { packed::packed_len(out_g, in_g) } else { out_g * in_g };
        let data = Scattered::new(POINTS * groups * per);
        let transform = |item: usize| {
            let (group, panel) = (item / panels, item % panels);
            let (first, held) = (panel * ROWS, ROWS.min(out_g - panel * ROWS));
            // Compiled for the CPU's vector instructions, the kernels' gathers and stores
            // inlined.
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    let mut g = [[0.0; ROWS]; 9];
                    for c in 0..in_g {
                        for (r, o) in (first..first + held).enumerate() {
                            for (lane, v) in g.iter_mut().zip(kernel(group * out_g + o, c)) {
                                lane[r] = v;
                            }
                        }
                        for (xi, values) in kernel_tile(&g).iter().flatten().enumerate() {
                            let point = (xi * groups + group) * per;
                            let values: [T; ROWS] = filled(|r| T::from_f64(values[r]));
                            // SAFETY: item (group, panel) alone writes its rows of each
                            // point's matrix: in the packed layout the `ROWS` values of input
                            // channel `c` of the panel, in the row-major one column `c` of its
                            // `held` rows.
                            unsafe {
                                if packs {
                                    data.write(point + (panel * in_g + c) * ROWS, &values);
                                } else {
                                    for (r, v) in values[..held].iter().enumerate() {
                                        let at = point + (first + r) * in_g + c;
                                        data.write(at, std::slice::from_ref(v));
                                    }
                                }
                            }
                        }
                    }
                },
            );
            data.count(POINTS * in_g * if packs { ROWS } else { held });
        };
        if out * in_g >= 4096 {
            (0..groups * panels).into_par_iter().for_each(transform);
        } else {
            (0..groups * panels).for_each(transform);
        }
        let data = data.finish();
        Self { data, out, in_g, groups, scheme: Scheme::F4x3, packed: packs }
    }

    /// Output channels of the transformed convolution.
    pub fn out_channels(&self) -> usize {
        self.out
    }

    /// Input channels of the transformed convolution.
    pub fn in_channels(&self) -> usize {
        self.in_g * self.groups
    }
}

/// Kernels (output channels) that [`TransformedKernels::build3`] transforms together: a
/// panel of the packed products.
const ROWS: usize = packed::ROWS;

/// `G g Gᵀ` for [`ROWS`] 3×3 kernels `g[ky · 3 + kx]` at once, lane by lane: the 6×6 points.
#[inline(always)]
fn kernel_tile(g: &[[f64; ROWS]; 9]) -> [[[f64; ROWS]; ALPHA]; ALPHA] {
    // G g: each column of the kernels to six values, then each of the six rows of the result
    // (plain loops: `std::array::from_fn`'s closures may stay out of line, see `separable`).
    let mut cols = [[[0.0; ROWS]; ALPHA]; 3];
    for (kx, col) in cols.iter_mut().enumerate() {
        *col = kernel_1d_lanes([g[kx], g[3 + kx], g[6 + kx]]);
    }
    let mut u = [[[0.0; ROWS]; ALPHA]; ALPHA];
    for (r, row) in u.iter_mut().enumerate() {
        *row = kernel_1d_lanes([cols[0][r], cols[1][r], cols[2][r]]);
    }
    u
}

/// [`kernel_1d`] for [`ROWS`] kernels at once, lane by lane.
#[inline(always)]
fn kernel_1d_lanes([g0, g1, g2]: [[f64; ROWS]; 3]) -> [[f64; ROWS]; ALPHA] {
    let mut out = [[0.0; ROWS]; ALPHA];
    for l in 0..ROWS {
        for (o, x) in out.iter_mut().zip(kernel_1d([g0[l], g1[l], g2[l]])) {
            o[l] = x;
        }
    }
    out
}

/// `G g` for one 3-tap kernel: the kernel's values at the points 0, 1, −1, 2, −2, ∞ scaled by
/// the interpolation denominators.
#[inline(always)]
fn kernel_1d([g0, g1, g2]: [f64; 3]) -> [f64; ALPHA] {
    [
        g0 / 4.0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// `Bᵀ d` for one 6-point input column, lane by lane.
#[inline(always)]
fn input_1d<T: Real>(d: [Lanes<T>; ALPHA]) -> [Lanes<T>; ALPHA] {
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    let mut out = [[T::zero(); LANES]; ALPHA];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        out[0][l] = four * d0 - five * d2 + d4;
        out[1][l] = d3 + d4 - four * (d1 + d2);
        out[2][l] = d4 - d3 + four * (d1 - d2);
        out[3][l] = d4 - d2 + two * (d3 - d1);
        out[4][l] = d4 - d2 - two * (d3 - d1);
        out[5][l] = four * d1 - five * d3 + d5;
    }
    out
}

/// `Aᵀ m` for one 6-point column of products, lane by lane.
#[inline(always)]
fn output_1d<T: Real>(m: [Lanes<T>; ALPHA]) -> [Lanes<T>; TILE] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut out = [[T::zero(); LANES]; TILE];
    for l in 0..LANES {
        let (sum12, diff12) = (m[1][l] + m[2][l], m[1][l] - m[2][l]);
        let (sum34, diff34) = (m[3][l] + m[4][l], m[3][l] - m[4][l]);
        out[0][l] = m[0][l] + sum12 + sum34;
        out[1][l] = diff12 + two * diff34;
        out[2][l] = sum12 + four * sum34;
        out[3][l] = diff12 + eight * diff34 + m[5][l];
    }
    out
}

/// The finite points of F(4×4, 5×5) and their interpolation denominators
/// `Π_{l≠j} (p_j − p_l)` (the first one's sign turned, as in `Bᵀ`'s first row); the eighth
/// point is ∞.
const POINTS8: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];
const DENOMINATORS8: [f64; 7] = [1.0, -4.5, -4.5, 90.0, 90.0, 45.0 / 32.0, 45.0 / 32.0];

/// `G g` for one kernel row or column `g` of any length over the eight points: the kernel as
/// a polynomial, evaluated at each finite point and divided by its denominator, and its last
/// tap (the value at ∞).
fn kernel_1d8(g: &[f64]) -> [f64; 8] {
    std::array::from_fn(|j| match j {
        7 => g.last().copied().unwrap_or(0.0),
        _ => {
            let p = POINTS8[j];
            let value = g.iter().rev().fold(0.0, |acc, tap| acc * p + tap);
            value / DENOMINATORS8[j]
        }
    })
}

/// `Bᵀ d` over the eight points for one 8-point input column, lane by lane. Rows come in
/// pairs for `±p`: an even part (the even-indexed inputs) plus or minus an odd part.
#[inline(always)]
fn input_1d8<T: Real>(d: [Lanes<T>; 8]) -> [Lanes<T>; 8] {
    let c = |x: f64| T::from_f64(x);
    let (quarter, half, two, four, five) = (c(0.25), c(0.5), c(2.0), c(4.0), c(5.0));
    let (c21, c17, c5_2, c5_4) = (c(5.25), c(4.25), c(2.5), c(1.25));
    let mut out = [[T::zero(); LANES]; 8];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5, d6, d7] =
            [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l], d[6][l], d[7][l]];
        out[0][l] = d0 - d6 + c21 * (d4 - d2);
        out[7][l] = d7 - d1 + c21 * (d3 - d5);
        let (even, odd) = (d2 + d6 - c17 * d4, d1 + d5 - c17 * d3);
        out[1][l] = even + odd;
        out[2][l] = even - odd;
        let (even, odd) = (quarter * d2 - c5_4 * d4 + d6, half * d1 - c5_2 * d3 + two * d5);
        out[3][l] = even + odd;
        out[4][l] = even - odd;
        let (even, odd) = (four * d2 - five * d4 + d6, two * d1 - c5_2 * d3 + half * d5);
        out[5][l] = even + odd;
        out[6][l] = even - odd;
    }
    out
}

/// `Aᵀ m` over the eight points for one column of products, lane by lane: `M` outputs (4 for
/// F(4×4, 5×5), 6 for F(6×6, 3×3)), the `i`-th the sum of `p^i m_p` over the finite points,
/// plus `m_∞` in the last.
#[inline(always)]
fn output_1d8<T: Real, const M: usize>(m: [Lanes<T>; 8]) -> [Lanes<T>; M] {
    let c = |x: f64| T::from_f64(x);
    let mut out = [[T::zero(); LANES]; M];
    for l in 0..LANES {
        let (sum12, diff12) = (m[1][l] + m[2][l], m[1][l] - m[2][l]);
        let (sum34, diff34) = (m[3][l] + m[4][l], m[3][l] - m[4][l]);
        let (sum56, diff56) = (m[5][l] + m[6][l], m[5][l] - m[6][l]);
        for (i, o) in out.iter_mut().enumerate() {
            let scale = (1u32 << i) as f64;
            o[l] = if i % 2 == 0 {
                sum12 + c(scale) * sum34 + c(1.0 / scale) * sum56
            } else {
                diff12 + c(scale) * diff34 + c(1.0 / scale) * diff56
            };
        }
        out[0][l] += m[0][l];
        out[M - 1][l] += m[7][l];
    }
    out
}

/// `Bᵀ d B` over the eight points for 16 tiles `d[row][col]`.
#[inline(always)]
fn input_tile8<T: Real>(d: &[[Lanes<T>; 8]; 8]) -> [[Lanes<T>; 8]; 8] {
    separable(
        d,
        #[inline(always)]
        |x| input_1d8(x),
    )
}

/// `Aᵀ m A` over the eight points for 16 tiles of products `m[row][col]`, `M × M` outputs.
#[inline(always)]
fn output_tile8<T: Real, const M: usize>(m: &[[Lanes<T>; 8]; 8]) -> [[Lanes<T>; M]; M] {
    separable(
        m,
        #[inline(always)]
        |x| output_1d8(x),
    )
}

/// A 1-D transform `f` applied to every column of the 16 square tiles `x[row][col]`, then to
/// every row of the result: `F x Fᵀ` for the matrix `F` of `f`.
#[inline(always)]
fn separable<T: Real, const I: usize, const O: usize>(
    x: &[[Lanes<T>; I]; I],
    f: impl Fn([Lanes<T>; I]) -> [Lanes<T>; O],
) -> [[Lanes<T>; O]; O] {
    // `filled` rather than `std::array::from_fn`, whose closures may stay separate functions
    // compiled for the baseline instruction set (see `crate::simd`), and rather than arrays
    // zeroed first (a memset per tile).
    let cols: [[Lanes<T>; O]; I] = filled(|c| f(filled(|r| x[r][c])));
    filled(|r| f(filled(|c| cols[c][r])))
}

/// `[f(0), f(1), …]`, each element written once, in a loop that inlines into its caller.
#[inline(always)]
fn filled<E: Copy, const N: usize>(mut f: impl FnMut(usize) -> E) -> [E; N] {
    let mut out = [std::mem::MaybeUninit::<E>::uninit(); N];
    for (i, slot) in out.iter_mut().enumerate() {
        slot.write(f(i));
    }
    // SAFETY: every element was written above; `[MaybeUninit<E>; N]` and `[E; N]` have the
    // same layout.
    unsafe { std::mem::transmute_copy(&out) }
}

/// `Bᵀ d B` for 16 tiles `d[row][col]`.
#[inline(always)]
fn input_tile<T: Real>(d: &[[Lanes<T>; ALPHA]; ALPHA]) -> [[Lanes<T>; ALPHA]; ALPHA] {
    separable(
        d,
        #[inline(always)]
        |x| input_1d(x),
    )
}

/// `Aᵀ m A` for 16 tiles of products `m[row][col]`.
#[inline(always)]
fn output_tile<T: Real>(m: &[[Lanes<T>; ALPHA]; ALPHA]) -> [[Lanes<T>; TILE]; TILE] {
    separable(
        m,
        #[inline(always)]
        |x| output_1d(x),
    )
}

/// The geometry of one Winograd convolution: `out[b][o][y][x] = Σ_{c,ky,kx}
/// in[b][c][y + ky − pad.0][x + kx − pad.1] · g[o][c][ky][kx]`, inputs outside the image zero.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Images.
    pub n: usize,
    /// Input height and width.
    pub input: (usize, usize),
    /// Output height and width.
    pub output: (usize, usize),
    /// Offset of the kernel's top-left tap (negative: the output starts inside the input).
    pub pad: (isize, isize),
}

impl Plan {
    /// Rows and columns of `tile × tile` output tiles.
    fn tiles(&self, tile: usize) -> (usize, usize) {
        (self.output.0.div_ceil(tile), self.output.1.div_ceil(tile))
    }

    /// Multiplies of F(4×4, 3×3)'s GEMMs over those of im2col (per channel pair).
    pub fn cost_ratio(&self) -> f64 {
        Scheme::F4x3.products(self.output) as f64 / (9 * self.output.0 * self.output.1) as f64
    }
}

/// The output (or input gradient) of a convolution by the Winograd scheme of `kernels`, with
/// `bias` added and `relu` applied; `mask` (shaped like `input`) zeroes the inputs where it is
/// not positive (a ReLU's backward fused into the input gradient).
///
/// Runs on rayon's threads: the tiles of all images are cut into blocks, as many per thread,
/// and the blocks are spread over the threads (one large image keeps them all busy); with
/// fewer blocks than threads the GEMMs are threaded instead.
pub(crate) fn convolve<T: Real>(
    plan: &Plan,
    kernels: &TransformedKernels<T>,
    input: &[T],
    mask: Option<&[T]>,
    bias: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    // Small kernel matrices are cheap to read again for every block, so their blocks are
    // small and their products are made and transformed a few output channels at a time,
    // staying in the core's cache; large ones are read once per large block.
    let small = kernels.elements() <= SMALL_KERNELS;
    let (budget, chunk) =
        if small { (SMALL_BUDGET, OUT_CHUNK) } else { (BLOCK_BUDGET, usize::MAX) };
    let job = Convolution { plan, kernels, input, mask, bias, relu, budget, chunk, by: None };
    convolve_in_blocks(job)
}

/// Transformed kernels (elements) up to which [`convolve`] cuts small blocks and makes the
/// products [`OUT_CHUNK`] output channels at a time. Measured on AlexNet's layers at
/// 1080×800 (2 cores): conv1 (48 stacked → 64, 0.1 M) and conv2 (F(4×4, 5×5), 64 → 192,
/// 0.8 M) ran 1.3–1.5× faster this way, conv3–conv5 (4–6 M) 1.1–1.5× slower.
const SMALL_KERNELS: usize = 1 << 20;
/// Elements of transformed inputs and products a block may hold with small kernels.
const SMALL_BUDGET: usize = 1 << 20;
/// Output channels whose products are made and transformed together with small kernels.
const OUT_CHUNK: usize = 16;

/// One call of [`convolve`]: the convolution (its arguments) and how its work is cut.
struct Convolution<'a, T> {
    plan: &'a Plan,
    kernels: &'a TransformedKernels<T>,
    input: &'a [T],
    mask: Option<&'a [T]>,
    bias: Option<&'a [T]>,
    relu: bool,
    /// Elements of transformed inputs and products a block holds at most (about; at least 16
    /// tiles a block).
    budget: usize,
    /// Output channels whose products are made together (all of them with groups or by
    /// points).
    chunk: usize,
    /// Spread over the threads by blocks or by points (chosen when `None`).
    by: Option<Spread>,
}

/// [`convolve`] with the cut of the work given (`job.budget`, `job.chunk`, `job.by`).
fn convolve_in_blocks<T: Real>(job: Convolution<'_, T>) -> Vec<T> {
    match job.kernels.scheme {
        Scheme::F4x3 => convolve_with::<T, ALPHA, TILE, _>(job, FourByThree),
        Scheme::F4x5 => convolve_with::<T, 8, TILE, _>(job, FourByFive),
        Scheme::F6x3 => convolve_with::<T, 8, 6, _>(job, SixByThree),
    }
}

/// The tile transforms of a scheme with `A × A` input windows and `M × M` output tiles, as
/// functions that always inline (so that they compile into the vectorized loops).
trait Transforms<T: Real, const A: usize, const M: usize>: Sync {
    /// `Bᵀ d B` for 16 input windows.
    fn input(d: &[[Lanes<T>; A]; A]) -> [[Lanes<T>; A]; A];
    /// `Aᵀ m A` for 16 tiles of products.
    fn output(m: &[[Lanes<T>; A]; A]) -> [[Lanes<T>; M]; M];
}

/// The transforms of F(4×4, 3×3).
struct FourByThree;

impl<T: Real> Transforms<T, ALPHA, TILE> for FourByThree {
    #[inline(always)]
    fn input(d: &[[Lanes<T>; ALPHA]; ALPHA]) -> [[Lanes<T>; ALPHA]; ALPHA] {
        input_tile(d)
    }

    #[inline(always)]
    fn output(m: &[[Lanes<T>; ALPHA]; ALPHA]) -> [[Lanes<T>; TILE]; TILE] {
        output_tile(m)
    }
}

/// The transforms of F(4×4, 5×5).
struct FourByFive;

impl<T: Real> Transforms<T, 8, TILE> for FourByFive {
    #[inline(always)]
    fn input(d: &[[Lanes<T>; 8]; 8]) -> [[Lanes<T>; 8]; 8] {
        input_tile8(d)
    }

    #[inline(always)]
    fn output(m: &[[Lanes<T>; 8]; 8]) -> [[Lanes<T>; TILE]; TILE] {
        output_tile8(m)
    }
}

/// The transforms of F(6×6, 3×3): F(4×4, 5×5)'s input transform, six outputs a row.
struct SixByThree;

impl<T: Real> Transforms<T, 8, 6> for SixByThree {
    #[inline(always)]
    fn input(d: &[[Lanes<T>; 8]; 8]) -> [[Lanes<T>; 8]; 8] {
        input_tile8(d)
    }

    #[inline(always)]
    fn output(m: &[[Lanes<T>; 8]; 8]) -> [[Lanes<T>; 6]; 6] {
        output_tile8(m)
    }
}

/// [`convolve_in_blocks`] with `A × A` input windows and `M × M` output tiles, transformed by
/// `X`.
fn convolve_with<T: Real, const A: usize, const M: usize, X: Transforms<T, A, M>>(
    job: Convolution<'_, T>,
    transforms: X,
) -> Vec<T> {
    let Convolution { plan, kernels, input, mask, bias, relu, budget, chunk, by } = job;
    let points = A * A;
    let (in_c, out_c) = (kernels.in_channels(), kernels.out_channels());
    let tiles = Tiles::new(plan, M);
    let total = tiles.total();
    let out = Scattered::new(plan.n * out_c * plan.output.0 * plan.output.1);
    if total == 0 {
        return out.finish();
    }
    let (groups, in_g, out_g) = (kernels.groups, kernels.in_g, out_c / kernels.groups);
    // Packed kernels are read in whole panels, so their chunks are too.
    let chunk = match (groups, kernels.packed) {
        (1, false) => out_c.min(chunk),
        (1, true) => out_c.min(chunk).next_multiple_of(packed::ROWS),
        _ => out_c,
    };
    let threads = rayon::current_num_threads().max(1);
    // By points for large kernels (read whole by every block) where all tiles' transforms,
    // held at once, stay within a few blocks' budget.
    let by = by.unwrap_or(
        if threads > 1
            && chunk == out_c
            && kernels.elements() > SMALL_KERNELS
            && total * points * (in_c + out_c) <= POINTS_BUDGET_BLOCKS * budget
        {
            Spread::Points
        } else {
            Spread::Blocks
        },
    );
    // By points, all output channels at once.
    let chunk = if by == Spread::Points { out_c } else { chunk };
    let cut = Blocks::new(total, points * (in_c + chunk), budget);
    // The products at point `xi` of output channels `first..first + rows` for the `count`
    // tiles of a block (row stride `block`) from its transformed inputs `v`, into that point's
    // matrix `m_xi` (`chunk` rows).
    let multiply = |v: &[T],
                    m_xi: &mut [T],
                    (block, count): (usize, usize),
                    first: usize,
                    rows: usize,
                    xi: usize,
                    par| {
        for group in 0..groups {
            let (o0, o_rows) = (first + group * out_g, rows.min(out_g));
            let rhs_start = xi * plane(in_c, block) + group * in_g * block;
            let dst = &mut m_xi[(o0 - first) * block..][..o_rows * block];
            if kernels.packed {
                // Packed panels start every `ROWS` rows: `first` is a whole number of them
                // (the chunks are; asserted), and each group's panels stand apart.
                assert!(first.is_multiple_of(packed::ROWS), "packed products from row {first}");
                let per = packed::packed_len(out_g, in_g);
                let u = &kernels.data[(xi * groups + group) * per + (o0 - group * out_g) * in_g..];
                let v = &v[rhs_start..];
                let mul = |u: &[T], rows, dst: &mut [T]| {
                    packed::multiply(
                        f32s(u),
                        rows,
                        in_g,
                        f32s(v),
                        block,
                        count,
                        f32s_mut(dst),
                        block,
                    )
                };
                match par {
                    Parallelism::None => mul(u, o_rows, dst),
                    _ => {
                        // Whole panels to each of rayon's threads.
                        let threads = rayon::current_num_threads();
                        let share = o_rows.div_ceil(threads).next_multiple_of(packed::ROWS);
                        dst.par_chunks_mut(share * block).enumerate().for_each(|(i, d)| {
                            let rows = share.min(o_rows - i * share);
                            mul(&u[i * share * in_g..], rows, d)
                        });
                    }
                }
                continue;
            }
            let u = &kernels.data[(xi * out_c + o0) * in_g..];
            let lhs = Mat::row_major(u, o_rows, in_g);
            let rhs = Mat {
                data: &v[rhs_start..rhs_start + in_g * block],
                rows: in_g,
                cols: count,
                rs: block,
                cs: 1,
            };
            matmul_into(dst, block, lhs, rhs, false, par);
        }
    };
    // Output tiles of a block's channels `first..` from its products `m`, counted when `last`.
    let finish = |m: &[T], spots: &[(usize, usize, usize, usize)], block, first, last: bool| {
        let placed = Placed { out: &out, out_c, first, chunk, bias, relu };
        transform_outputs(&tiles, spots, m, block, &placed, &transforms);
        if last {
            out.count(out_c * spots.iter().map(|&(_, _, rows, cols)| rows * cols).sum::<usize>());
        }
    };
    match by {
        Spread::Blocks => {
            let Blocks { block, blocks, spread, .. } = cut;
            let par = parallelism(spread);
            let run = |scratch: &mut [T], index: usize| {
                let (start, count) = cut.range(index);
                let (v, m) = scratch.split_at_mut(points * plane(in_c, block));
                let dst = Columns { v: &SharedSlice::new(v), stride: block, first: 0 };
                transform_inputs(&tiles, start, count, input, mask, in_c, dst, &transforms);
                let spots = tiles.spots(start, count);
                // Output channels `first..first + rows` at a time (one pass with groups, where
                // the chunk is all of them): their products for all points, then their tiles.
                for first in (0..out_c).step_by(chunk) {
                    let rows = chunk.min(out_c - first);
                    for (xi, m_xi) in m.chunks_mut(plane(chunk, block)).take(points).enumerate() {
                        multiply(v, m_xi, (block, count), first, rows, xi, par);
                    }
                    finish(m, &spots, block, first, first + chunk >= out_c);
                }
            };
            let scratch_len = points * (plane(in_c, block) + plane(chunk, block));
            let run = |index: usize| with_scratch(scratch_len, |s| run(s, index));
            if spread {
                (0..blocks).into_par_iter().for_each(run);
            } else {
                (0..blocks).for_each(run);
            }
        }
        Spread::Points => {
            // One matrix per point over all tiles, held at once: inputs transformed in blocks
            // (their columns of each matrix), one GEMM per point (the points spread over the
            // threads, each reading its transformed kernels once), outputs transformed in
            // blocks. Several blocks per thread even out the transforms' load.
            let even = Blocks::even(total, 4 * threads);
            let stride = total.next_multiple_of(LANES);
            let in_len = points * plane(in_c, stride);
            with_scratch(in_len + points * plane(out_c, stride), |scratch| {
                let (v, m) = scratch.split_at_mut(in_len);
                let columns = SharedSlice::new(v);
                (0..even.blocks).into_par_iter().for_each(|index| {
                    let (start, count) = even.range(index);
                    let dst = Columns { v: &columns, stride, first: start };
                    transform_inputs(&tiles, start, count, input, mask, in_c, dst, &transforms);
                });
                let v = &*v;
                m.par_chunks_mut(plane(out_c, stride)).enumerate().for_each(|(xi, m_xi)| {
                    multiply(v, m_xi, (stride, total), 0, out_c, xi, parallelism(false));
                });
                (0..even.blocks).into_par_iter().for_each(|index| {
                    let (start, count) = even.range(index);
                    finish(&m[start..], &tiles.spots(start, count), stride, 0, true);
                });
            });
        }
    }
    out.finish()
}

/// The gradient of a 3×3 convolution's kernels `[out, in / groups, 3, 3]` from its `input`
/// and the gradient `grad` w.r.t. its output, by Winograd F(3×3, 4×4) with the same points:
/// each 4×4 output-gradient tile `e` and the 6×6 input window `d` under it are transformed,
/// `A e Aᵀ` and `Bᵀ d B`; for each of the 36 points the products are summed over the tiles of
/// every image (36 GEMMs, out × tiles × in); the kernel gradient is `Gᵀ M G`. That is 36
/// products per tile and channel pair where a direct sum takes 144.
///
/// Runs on rayon's threads: with many tiles like [`convolve`], blocks of tiles spread over the
/// threads, each summing into its own 36 matrices (added together at the end; with fewer
/// blocks than threads the GEMMs are threaded instead); with few tiles and many channels the
/// tiles are transformed first and the 36 points' sums spread over the threads ([`Spread`]).
pub(crate) fn kernel_grad3x3<T: Real>(
    plan: &Plan,
    input: &[T],
    grad: &[T],
    in_c: usize,
    out_c: usize,
    groups: usize,
) -> Vec<T> {
    kernel_grad3x3_in_blocks(plan, input, grad, in_c, out_c, groups, BLOCK_BUDGET, None)
}

/// How a Winograd pass spreads its work over the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spread {
    /// By blocks of tiles, each thread running whole blocks: for many tiles and few channels.
    /// [`kernel_grad3x3`]: each thread sums its blocks into its own copy of all 36 matrices,
    /// added together at the end. [`convolve`]: each block transforms its inputs, makes its
    /// products and transforms them back, reading all the transformed kernels.
    Blocks,
    /// By points: the tiles of all blocks are transformed first (in parallel), then each
    /// thread makes the products of some of the α² points for every block, then (forward)
    /// the blocks' outputs are transformed in parallel. For few tiles and many channels.
    /// [`kernel_grad3x3`]: a copy of the sums per thread (zero-filled, added into block by
    /// block, then added together) is more memory than the transformed tiles themselves (a
    /// 256 → 512 layer on 8 images of 8×8 has 32 tiles, 0.9 M transformed elements, and 4.7 M
    /// sums). [`convolve`]: the transformed kernels are read once rather than once per block
    /// (AlexNet's conv4 under F(6×6, 3×3) at 1080×800: 6.3 M elements of kernels against
    /// 4 M of a block's transforms), and with one block's worth of tiles the transforms still
    /// run on every thread.
    Points,
}

/// Blocks' budgets the transformed tiles of all blocks may take when [`Spread::Points`] holds
/// them at once (16 M elements at the default budget).
const POINTS_BUDGET_BLOCKS: usize = 4;

/// [`kernel_grad3x3`] with blocks of tiles whose transforms hold at most about `budget`
/// elements (at least 16 tiles), the sums spread over the threads `by` (or as chosen for the
/// sizes).
#[allow(clippy::too_many_arguments)]
fn kernel_grad3x3_in_blocks<T: Real>(
    plan: &Plan,
    input: &[T],
    grad: &[T],
    in_c: usize,
    out_c: usize,
    groups: usize,
    budget: usize,
    by: Option<Spread>,
) -> Vec<T> {
    let (in_g, out_g) = (in_c / groups, out_c / groups);
    let tiles = Tiles::new(plan, TILE);
    let total = tiles.total();
    let sums_len = POINTS * out_c * in_g;
    if total == 0 {
        return vec![T::zero(); out_c * in_g * 9];
    }
    let cut = Blocks::new(total, POINTS * (in_c + out_c), budget);
    let Blocks { block, blocks, spread, .. } = cut;
    let in_len = POINTS * plane(in_c, block);
    let per_block = in_len + POINTS * plane(out_c, block);
    let threads = rayon::current_num_threads().max(1);
    // By point where all blocks' transformed tiles, held at once, are fewer elements than the
    // threads' copies of the sums would be, and at most a few blocks' budget.
    let by = by.unwrap_or(
        if threads > 1
            && blocks * per_block < threads * sums_len
            && blocks * per_block <= POINTS_BUDGET_BLOCKS * budget
        {
            Spread::Points
        } else {
            Spread::Blocks
        },
    );
    // Transforms block `index`'s tiles into `scratch` (inputs, then output gradients).
    let transform = |scratch: &mut [T], index: usize| {
        let (start, count) = cut.range(index);
        let (v, u) = scratch.split_at_mut(in_len);
        let dst = Columns { v: &SharedSlice::new(v), stride: block, first: 0 };
        transform_inputs(&tiles, start, count, input, None, in_c, dst, &FourByThree);
        transform_grads(&tiles, start, count, grad, out_c, u, block);
    };
    // Sums point `xi`'s products of the block transformed in `scratch` into `dst` (that
    // point's `[o][i]` matrix), or writes them there.
    let multiply = |dst: &mut [T], scratch: &[T], index: usize, xi: usize, add: bool, par| {
        let count = cut.range(index).1;
        let (v, u) = scratch.split_at(in_len);
        for group in 0..groups {
            let u_start = xi * plane(out_c, block) + group * out_g * block;
            let lhs = Mat { data: &u[u_start..], rows: out_g, cols: count, rs: block, cs: 1 };
            let v_start = xi * plane(in_c, block) + group * in_g * block;
            let rhs = Mat { data: &v[v_start..], rows: count, cols: in_g, rs: 1, cs: block };
            let dst = &mut dst[group * out_g * in_g..][..out_g * in_g];
            matmul_into(dst, in_g, lhs, rhs, add, par);
        }
    };
    let sums = match by {
        Spread::Points => {
            let mut transformed = vec![T::zero(); blocks * per_block];
            transformed
                .par_chunks_mut(per_block)
                .enumerate()
                .for_each(|(index, scratch)| transform(scratch, index));
            let mut sums = vec![T::zero(); sums_len];
            sums.par_chunks_mut(out_c * in_g).enumerate().for_each(|(xi, dst)| {
                for (index, scratch) in transformed.chunks(per_block).enumerate() {
                    multiply(dst, scratch, index, xi, index > 0, parallelism(true));
                }
            });
            sums
        }
        Spread::Blocks => {
            let par = parallelism(spread);
            // Adds block `index`'s products into `sums[ξ][o][i]`.
            let run = |sums: &mut [T], scratch: &mut [T], index: usize| {
                transform(scratch, index);
                for (xi, dst) in sums.chunks_mut(out_c * in_g).enumerate() {
                    multiply(dst, scratch, index, xi, true, par);
                }
            };
            if spread {
                (0..blocks)
                    .into_par_iter()
                    .fold(
                        || vec![T::zero(); sums_len],
                        |mut sums, index| {
                            with_scratch(per_block, |s| run(&mut sums, s, index));
                            sums
                        },
                    )
                    .reduce_with(|mut a, b| {
                        a.iter_mut().zip(&b).for_each(|(x, y)| *x += *y);
                        a
                    })
                    .unwrap_or_else(|| vec![T::zero(); sums_len])
            } else {
                let mut sums = vec![T::zero(); sums_len];
                for index in 0..blocks {
                    with_scratch(per_block, |s| run(&mut sums, s, index));
                }
                sums
            }
        }
    };
    // Gᵀ M G for every (output, input) pair, LANES pairs at a time.
    let pairs = out_c * in_g;
    let mut out = vec![T::zero(); pairs * 9];
    out.par_chunks_mut(9 * LANES).enumerate().for_each(|(chunk, dst)| {
        crate::simd::vectorized(
            #[inline(always)]
            || {
                let first = chunk * LANES;
                let lanes = LANES.min(pairs - first);
                let mut m = [[[T::zero(); LANES]; ALPHA]; ALPHA];
                for (xi, cell) in m.iter_mut().flatten().enumerate() {
                    cell[..lanes].copy_from_slice(&sums[xi * pairs + first..][..lanes]);
                }
                for (ky, row) in separable(
                    &m,
                    #[inline(always)]
                    |x| kernel_grad_1d(x),
                )
                .iter()
                .enumerate()
                {
                    for (kx, values) in row.iter().enumerate() {
                        for (l, &v) in values.iter().enumerate().take(lanes) {
                            dst[l * 9 + ky * 3 + kx] = v;
                        }
                    }
                }
            },
        )
    });
    out
}

/// `Gᵀ m` for one 6-point column of summed products, lane by lane: the transpose of
/// [`kernel_1d`].
#[inline(always)]
fn kernel_grad_1d<T: Real>(m: [Lanes<T>; ALPHA]) -> [Lanes<T>; 3] {
    let (four, six, twelve) = (T::from_f64(4.0), T::from_f64(6.0), T::from_f64(12.0));
    let twenty_four = T::from_f64(24.0);
    let mut out = [[T::zero(); LANES]; 3];
    for l in 0..LANES {
        let (sum12, diff12) = (m[1][l] + m[2][l], m[2][l] - m[1][l]);
        let (sum34, diff34) = (m[3][l] + m[4][l], m[3][l] - m[4][l]);
        out[0][l] = m[0][l] / four - sum12 / six + sum34 / twenty_four;
        out[1][l] = diff12 / six + diff34 / twelve;
        out[2][l] = (sum34 - sum12) / six + m[5][l];
    }
    out
}

/// `A e` for one 4-point column of an output-gradient tile, lane by lane: the transpose of
/// [`output_1d`].
#[inline(always)]
fn grad_1d<T: Real>(e: [Lanes<T>; TILE]) -> [Lanes<T>; ALPHA] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut out = [[T::zero(); LANES]; ALPHA];
    for l in 0..LANES {
        let [e0, e1, e2, e3] = [e[0][l], e[1][l], e[2][l], e[3][l]];
        let (even, odd) = (e0 + e2, e1 + e3);
        let (even2, odd2) = (e0 + four * e2, two * e1 + eight * e3);
        out[0][l] = e0;
        out[1][l] = even + odd;
        out[2][l] = even - odd;
        out[3][l] = even2 + odd2;
        out[4][l] = even2 - odd2;
        out[5][l] = e3;
    }
    out
}

/// `A e Aᵀ` for 16 output-gradient tiles `e[row][col]`.
#[inline(always)]
fn grad_tile<T: Real>(e: &[[Lanes<T>; TILE]; TILE]) -> [[Lanes<T>; ALPHA]; ALPHA] {
    separable(
        e,
        #[inline(always)]
        |x| grad_1d(x),
    )
}

/// Transforms the output-gradient tiles `start..start + count` of every channel into
/// `u[ξ][o][tile]` (row stride `block`), zero outside the output; lanes past `count` are zero.
fn transform_grads<T: Real>(
    tiles: &Tiles,
    start: usize,
    count: usize,
    grad: &[T],
    out_c: usize,
    u: &mut [T],
    block: usize,
) {
    let (oh, ow) = tiles.plan.output;
    let spots = tiles.spots(start, count);
    crate::simd::vectorized(
        #[inline(always)]
        || {
            // As in `transform_inputs`: zeroed again only for groups with tiles cut by the
            // output's edge or lanes unused.
            let mut e = [[[T::zero(); LANES]; TILE]; TILE];
            for o in 0..out_c {
                for (group, lane0) in spots.chunks(LANES).zip((0..count).step_by(LANES)) {
                    if group.len() < LANES || group.iter().any(|s| s.2 < TILE || s.3 < TILE) {
                        e = [[[T::zero(); LANES]; TILE]; TILE];
                    }
                    for (l, &(image, corner, rows, cols)) in group.iter().enumerate() {
                        let plane = &grad[(image * out_c + o) * oh * ow + corner..];
                        for (r, row) in e.iter_mut().enumerate().take(rows) {
                            for (cell, &x) in row.iter_mut().zip(&plane[r * ow..r * ow + cols]) {
                                cell[l] = x;
                            }
                        }
                    }
                    let t = grad_tile(&e);
                    for (xi, lanes) in t.iter().flatten().enumerate() {
                        let at = xi * plane(out_c, block) + o * block + lane0;
                        u[at..at + LANES].copy_from_slice(lanes);
                    }
                }
            }
        },
    )
}

/// Where the `tile × tile` output tiles lie: tile `t` is tile `t % per_image` (row-major, `tw`
/// per row) of image `t / per_image`.
struct Tiles {
    plan: Plan,
    tile: usize,
    tw: usize,
    per_image: usize,
}

/// How the tiles of a call are cut into blocks: `blocks` blocks of at most `block` tiles (a
/// whole number of lanes, the row stride of a block's matrices; [`Blocks::range`] says which
/// tiles each holds); `spread` when the blocks go to rayon's threads rather than each GEMM.
struct Blocks {
    block: usize,
    blocks: usize,
    spread: bool,
    total: usize,
}

impl Blocks {
    /// Blocks of `total` (> 0) tiles whose transforms (`per_tile` elements a tile, input and
    /// output together) hold at most about `budget` elements, their number a multiple of the
    /// threads when there are enough tiles, and the groups of [`LANES`] tiles dealt out
    /// evenly (block sizes differ by one group at most, so that no thread waits long for
    /// another: blocks of a fixed size left AlexNet's conv4 under F(6×6, 3×3), 198 tiles,
    /// with three blocks of 64 and one of 6).
    fn new(total: usize, per_tile: usize, budget: usize) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let groups = total.div_ceil(LANES);
        let most = (budget / per_tile / LANES).max(1);
        let mut blocks = groups.div_ceil(most);
        if total >= threads * LANES {
            blocks = blocks.next_multiple_of(threads).min(groups);
        }
        let block = groups.div_ceil(blocks) * LANES;
        Self { block, blocks, spread: blocks >= threads && threads > 1, total }
    }

    /// `total` (> 0) tiles cut into `parts` blocks (fewer where there are fewer groups of
    /// [`LANES`] tiles), the groups dealt out evenly.
    fn even(total: usize, parts: usize) -> Self {
        let groups = total.div_ceil(LANES);
        let blocks = parts.clamp(1, groups);
        let block = groups.div_ceil(blocks) * LANES;
        Self { block, blocks, spread: blocks > 1, total }
    }

    /// The first tile of block `index` and its number of tiles.
    fn range(&self, index: usize) -> (usize, usize) {
        let groups = self.total.div_ceil(LANES);
        let first = |b: usize| (b * groups / self.blocks * LANES).min(self.total);
        (first(index), first(index + 1) - first(index))
    }
}

impl Tiles {
    fn new(plan: &Plan, tile: usize) -> Self {
        let (th, tw) = plan.tiles(tile);
        Self { plan: *plan, tile, tw, per_image: th * tw }
    }

    /// Tiles in all images.
    fn total(&self) -> usize {
        self.plan.n * self.per_image
    }

    /// For tiles `start..start + count`: (image, plane offset of the tile's top-left output,
    /// rows and columns of the tile inside the output).
    fn spots(&self, start: usize, count: usize) -> Vec<(usize, usize, usize, usize)> {
        let (oh, ow) = self.plan.output;
        (start..start + count)
            .map(|t| {
                let (image, y0, x0) = self.locate(t);
                (image, y0 * ow + x0, self.tile.min(oh - y0), self.tile.min(ow - x0))
            })
            .collect()
    }

    /// (image, top row, left column) of tile `t`'s output.
    fn locate(&self, t: usize) -> (usize, usize, usize) {
        let (image, q) = (t / self.per_image, t % self.per_image);
        (image, (q / self.tw) * self.tile, (q % self.tw) * self.tile)
    }
}

/// Elements from one point's matrix to the next in a block's transformed inputs, gradients
/// or products (`channels` rows of `block` tiles): one row of lanes more than the matrix, so
/// that the α² matrices a tile transform reads or writes do not start at the same offset
/// modulo 4 KiB. Without the skew they do whenever `channels · block` is a multiple of 64
/// (every AlexNet layer), and the α² streams fight over the same few sets of the L1 cache.
fn plane(channels: usize, block: usize) -> usize {
    channels * block + LANES
}

/// Where one tile's input window lies in its image's plane: the plane offset of its
/// top-left corner (negative or past the edge in the padding) and the rows and columns of the
/// window inside the plane.
#[derive(Clone, Copy)]
struct Window {
    image: usize,
    origin: isize,
    rows: (usize, usize),
    cols: (usize, usize),
}

impl Window {
    /// The whole `alpha × alpha` window lies inside the plane.
    fn whole(&self, alpha: usize) -> bool {
        self.rows == (0, alpha) && self.cols == (0, alpha)
    }
}

/// Where [`transform_inputs`] writes: the matrices `v[ξ][c][column]`, rows `stride` apart
/// (each point's matrix [`plane`]`(channels, stride)` from the next), from column `first` on.
/// Calls on other threads may write other columns of the same matrices.
#[derive(Clone, Copy)]
struct Columns<'a, 'b, T> {
    v: &'a SharedSlice<'b, T>,
    stride: usize,
    first: usize,
}

/// Transforms the `A × A` input windows of tiles `start..start + count` of every channel by
/// `X` into columns `dst.first..` of `dst.v[ξ][c]`; lanes past `count` are zero. No other
/// call may write those columns meanwhile.
#[allow(clippy::too_many_arguments)]
// The gathered path exists on x86-64 only; elsewhere its per-group lanes are never read.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn transform_inputs<T: Real, const A: usize, const M: usize, X: Transforms<T, A, M>>(
    tiles: &Tiles,
    start: usize,
    count: usize,
    input: &[T],
    mask: Option<&[T]>,
    in_c: usize,
    dst: Columns<'_, '_, T>,
    _: &X,
) {
    let Columns { v, stride: block, first } = dst;
    let (h, w) = tiles.plan.input;
    let (pad_y, pad_x) = tiles.plan.pad;
    // Each tile's window, found once for all channels.
    let windows: Vec<Window> = (start..start + count)
        .map(|t| {
            let (image, y0, x0) = tiles.locate(t);
            let (top, left) = (y0 as isize - pad_y, x0 as isize - pad_x);
            Window {
                image,
                origin: top * w as isize + left,
                rows: inside(top, h, A),
                cols: inside(left, w, A),
            }
        })
        .collect();
    // The gathers and the transform compiled for the CPU's widest vectors.
    crate::simd::vectorized(
        #[inline(always)]
        || {
            // One window array for all groups (a fresh zeroed one each time cost a `memset`
            // call per group): every lane of a whole window is overwritten, so it is zeroed
            // again only for groups with windows reaching past the image or lanes unused.
            let mut d = [[[T::zero(); LANES]; A]; A];
            // Where the CPU permutes (f32 on AVX-512), groups of windows (no mask) are read
            // by masked loads of each window's rows, transposed.
            let fast = packed::packs::<T>() && mask.is_none();
            let src = if fast { f32s(input) } else { &[] };
            let plane_len = h * w;
            assert!(!fast || src.len() >= tiles.plan.n * in_c * plane_len, "winograd: input short");
            // Per group: each lane's window (none past the tiles).
            let lanes: Vec<WindowLanes> = if fast {
                windows
                    .chunks(LANES)
                    .map(|group| WindowLanes::new(group, in_c * plane_len))
                    .collect()
            } else {
                Vec::new()
            };
            for c in 0..in_c {
                for (g, (group, lane0)) in
                    windows.chunks(LANES).zip((0..count).step_by(LANES)).enumerate()
                {
                    if fast {
                        // SAFETY: AVX-512 is here (`packs`); each lane loads only its window's
                        // rows and columns inside its plane (`WindowLanes`), which lies in
                        // `src`; `d` holds A² rows of 16 f32s.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            gather_windows::<A>(
                                src,
                                &lanes[g],
                                c * plane_len,
                                w,
                                d.as_mut_ptr().cast(),
                            )
                        };
                    } else {
                        if group.len() < LANES || group.iter().any(|win| !win.whole(A)) {
                            d = [[[T::zero(); LANES]; A]; A];
                        }
                        for (l, win) in group.iter().enumerate() {
                            let plane_start = (win.image * in_c + c) * h * w;
                            let plane = &input[plane_start..plane_start + h * w];
                            let mask = mask.map(|m| &m[plane_start..plane_start + h * w]);
                            if win.whole(A) && mask.is_none() {
                                // Most tiles: A² reads with fixed bounds.
                                let origin = win.origin as usize;
                                for (r, row) in d.iter_mut().enumerate() {
                                    let line = &plane[origin + r * w..][..A];
                                    for (cell, &x) in row.iter_mut().zip(line) {
                                        cell[l] = x;
                                    }
                                }
                                continue;
                            }
                            let ((r0, r1), (c0, c1)) = (win.rows, win.cols);
                            for r in r0..r1 {
                                let at = (win.origin + (r * w + c0) as isize) as usize;
                                let line = &plane[at..at + c1 - c0];
                                match mask {
                                    None => {
                                        for (cc, &x) in (c0..c1).zip(line) {
                                            d[r][cc][l] = x;
                                        }
                                    }
                                    Some(mask) => {
                                        let keep = &mask[at..at + c1 - c0];
                                        for ((cc, &x), &y) in (c0..c1).zip(line).zip(keep) {
                                            d[r][cc][l] = if y > T::zero() { x } else { T::zero() };
                                        }
                                    }
                                }
                            }
                        }
                    }
                    let t = X::input(&d);
                    for (xi, lanes) in t.iter().flatten().enumerate() {
                        let at = xi * plane(in_c, block) + c * block + first + lane0;
                        // SAFETY: this call alone writes these columns (the caller's contract).
                        unsafe { v.range(at, LANES) }.copy_from_slice(lanes);
                    }
                }
            }
        },
    )
}

/// The windows of one group of up to 16 tiles, lane by lane, for [`gather_windows`]: where
/// each window's top-left element lies in the input (offset from the first channel's plane
/// of its image), and for each row of the windows which of its columns lie inside the plane
/// (none for rows outside it and for lanes past the group), found once for all channels.
struct WindowLanes {
    origin: [isize; LANES],
    keep: [[u8; LANES]; 8],
}

impl WindowLanes {
    /// The lanes of `group`'s windows (at most 8 × 8), images `image_len` elements apart.
    fn new(group: &[Window], image_len: usize) -> Self {
        let mut lanes = Self { origin: [0; LANES], keep: [[0; LANES]; 8] };
        for (l, win) in group.iter().enumerate() {
            lanes.origin[l] = (win.image * image_len) as isize + win.origin;
            let ((r0, r1), (c0, c1)) = (win.rows, win.cols);
            for row in &mut lanes.keep[r0..r1] {
                row[l] = ((1u32 << c1) - (1u32 << c0)) as u8;
            }
        }
        lanes
    }
}

/// The `A × A` windows (A ≤ 8) of a group of tiles into `d` (`A²` rows of 16 lanes, row
/// `r · A + j` the element `(r, j)` of each window), zero outside the planes: for each row
/// `r`, each lane's row of its window by one masked load (only the columns inside its plane;
/// rows outside it load nothing), two lanes a vector, then the 16 × 8 block transposed.
///
/// # Safety
/// AVX-512F must be present, every lane's rows and columns inside the plane at `plane`
/// (`lanes.origin` from there, rows `w` apart) inside `src`, and `d` valid for `A² · 16`
/// writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_windows<const A: usize>(
    src: &[f32],
    lanes: &WindowLanes,
    plane: usize,
    w: usize,
    d: *mut f32,
) {
    use std::arch::x86_64::*;
    const HALF: usize = LANES / 2;
    assert!(A <= HALF, "a window row is one half vector");
    // The last step of the transpose: 128-bit blocks (0, 2) or (1, 3) of two vectors,
    // interleaved.
    let mut picks = [[0i32; LANES]; 2];
    for (second, pick) in picks.iter_mut().enumerate() {
        for (i, p) in pick.iter_mut().enumerate() {
            let (block, k) = (i / 4, i % 4);
            let from = ((block / 2) * 8 + second * 4 + k) as i32;
            *p = if block % 2 == 0 { from } else { 16 + from };
        }
    }
    // SAFETY: masked loads read only elements inside the lanes' planes (their pointers are
    // formed with wrapping arithmetic, never dereferenced outside); writes inside `d`.
    unsafe {
        let low = _mm512_loadu_si512(picks[0].as_ptr().cast());
        let high = _mm512_loadu_si512(picks[1].as_ptr().cast());
        let base = src.as_ptr().wrapping_add(plane);
        let mut z = [_mm512_setzero_ps(); HALF];
        let mut t = [_mm512_setzero_ps(); HALF];
        let mut u = [_mm512_setzero_ps(); HALF];
        for (r, keep) in lanes.keep.iter().enumerate().take(A) {
            let row = base.wrapping_add(r * w);
            // Vector k: lane k's row in its low half, lane k + 8's in its high half.
            for (k, zk) in z.iter_mut().enumerate() {
                let v = _mm512_maskz_loadu_ps(keep[k] as u16, row.wrapping_offset(lanes.origin[k]));
                let at = row.wrapping_offset(lanes.origin[k + HALF]).wrapping_sub(HALF);
                *zk = _mm512_mask_loadu_ps(v, (keep[k + HALF] as u16) << HALF, at);
            }
            // 8 × 8 transposes in both halves at once.
            for k in (0..HALF).step_by(2) {
                t[k] = _mm512_unpacklo_ps(z[k], z[k + 1]);
                t[k + 1] = _mm512_unpackhi_ps(z[k], z[k + 1]);
            }
            for quad in [0, 4] {
                u[quad] = _mm512_shuffle_ps::<0x44>(t[quad], t[quad + 2]);
                u[quad + 1] = _mm512_shuffle_ps::<0xEE>(t[quad], t[quad + 2]);
                u[quad + 2] = _mm512_shuffle_ps::<0x44>(t[quad + 1], t[quad + 3]);
                u[quad + 3] = _mm512_shuffle_ps::<0xEE>(t[quad + 1], t[quad + 3]);
            }
            for j in 0..A {
                let (a, b) = (u[j % 4], u[j % 4 + 4]);
                let v = _mm512_permutex2var_ps(a, if j < 4 { low } else { high }, b);
                _mm512_storeu_ps(d.add((r * A + j) * LANES), v);
            }
        }
    }
}

/// The rows `r` in `0..alpha` with `start + r` inside `0..len`.
pub(crate) fn inside(start: isize, len: usize, alpha: usize) -> (usize, usize) {
    let lo = (-start).clamp(0, alpha as isize) as usize;
    let hi = (len as isize - start).clamp(0, alpha as isize) as usize;
    (lo, hi.max(lo))
}

/// Where [`transform_outputs`] writes: channels `first..first + chunk` (or to the last) of the
/// output `out` of `out_c` channels, `bias` added and `relu` applied, from products of
/// `chunk` channels.
struct Placed<'a, T> {
    out: &'a Scattered<T>,
    out_c: usize,
    first: usize,
    chunk: usize,
    bias: Option<&'a [T]>,
    relu: bool,
}

/// Transforms the products `m[ξ][o][tile]` of the tiles at `spots` (from [`Tiles::spots`])
/// back into output tiles by `X`, adds the bias, applies the ReLU and writes the parts inside
/// the output.
fn transform_outputs<T: Real, const A: usize, const M: usize, X: Transforms<T, A, M>>(
    tiles: &Tiles,
    spots: &[(usize, usize, usize, usize)],
    m: &[T],
    block: usize,
    placed: &Placed<'_, T>,
    _: &X,
) {
    let (oh, ow) = tiles.plan.output;
    let Placed { out, out_c, first, chunk, bias, relu } = *placed;
    let (channels, count) = (chunk.min(out_c - first), spots.len());
    crate::simd::vectorized(
        #[inline(always)]
        || {
            // Overwritten whole for every group (zeroed once, not per group).
            let mut p = [[[T::zero(); LANES]; A]; A];
            let mut rows_out = [[[T::zero(); M]; LANES]; M];
            for k in 0..channels {
                let o = first + k;
                let b = bias.map_or(T::zero(), |b| b[o]);
                for (group, lane0) in spots.chunks(LANES).zip((0..count).step_by(LANES)) {
                    for (xi, lanes) in p.iter_mut().flatten().enumerate() {
                        let at = xi * plane(chunk, block) + k * block + lane0;
                        lanes.copy_from_slice(&m[at..at + LANES]);
                    }
                    let y = X::output(&p);
                    // Row by row, each lane's 4 outputs side by side (bias and ReLU applied
                    // 64 at a time), then copied 4 at a time.
                    for (staged, row) in rows_out.iter_mut().zip(&y) {
                        for (l, values) in staged.iter_mut().enumerate() {
                            for (dst, src) in values.iter_mut().zip(row) {
                                let s = src[l] + b;
                                *dst = if !relu || s > T::zero() { s } else { T::zero() };
                            }
                        }
                    }
                    for (l, &(image, corner, rows, cols)) in group.iter().enumerate() {
                        let plane = (image * out_c + o) * oh * ow + corner;
                        for (r, staged) in rows_out.iter().enumerate().take(rows) {
                            let values = &staged[l];
                            // SAFETY: tiles cover disjoint parts of the output, each tile
                            // belongs to one block, and one thread runs a block.
                            if cols == M {
                                // A whole row: a copy of fixed length, not a call to memmove.
                                unsafe { out.write(plane + r * ow, values) };
                            } else {
                                unsafe { out.write(plane + r * ow, &values[..cols]) };
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::seeded;

    /// Direct `r × r` correlation with the plan's offsets, in f64.
    fn direct(plan: &Plan, r: usize, c: usize, o: usize, x: &[f64], g: &[f64]) -> Vec<f64> {
        let (h, w) = plan.input;
        let (oh, ow) = plan.output;
        let mut out = vec![0.0; plan.n * o * oh * ow];
        for b in 0..plan.n {
            for oc in 0..o {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = 0.0;
                        for ic in 0..c {
                            for ky in 0..r {
                                for kx in 0..r {
                                    let iy = y as isize + ky as isize - plan.pad.0;
                                    let ix = xx as isize + kx as isize - plan.pad.1;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xi = ((b * c + ic) * h + iy as usize) * w + ix as usize;
                                    s += x[xi] * g[((oc * c + ic) * r + ky) * r + kx];
                                }
                            }
                        }
                        out[((b * o + oc) * oh + y) * ow + xx] = s;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn one_dimensional_transforms_compute_a_correlation() {
        // y[i] = Σ_k d[i + k] g[k] for i < 4 must equal Aᵀ[(G g) ⊙ (Bᵀ d)].
        let d = seeded(6, 1);
        let g = seeded(3, 2);
        let u = kernel_1d([g[0], g[1], g[2]]);
        let v = input_1d::<f64>(std::array::from_fn(|i| [d[i]; LANES]));
        let prod: [Lanes<f64>; ALPHA] = std::array::from_fn(|i| [u[i] * v[i][0]; LANES]);
        let y = output_1d(prod);
        for i in 0..TILE {
            let expected: f64 = (0..3).map(|k| d[i + k] * g[k]).sum();
            assert!((y[i][0] - expected).abs() < 1e-14, "tap {i}: {} vs {expected}", y[i][0]);
        }
    }

    #[test]
    fn eight_point_transforms_compute_a_correlation() {
        // y[i] = Σ_k d[i + k] g[k] for i < 4 must equal Aᵀ[(G g) ⊙ (Bᵀ d)] for F(4, 5).
        let d = seeded(8, 11);
        let g = seeded(5, 12);
        let u = kernel_1d8(&g);
        let v = input_1d8::<f64>(std::array::from_fn(|i| [d[i]; LANES]));
        let y = output_1d8::<f64, TILE>(std::array::from_fn(|i| [u[i] * v[i][0]; LANES]));
        for i in 0..TILE {
            let expected: f64 = (0..5).map(|k| d[i + k] * g[k]).sum();
            assert!((y[i][0] - expected).abs() < 1e-13, "tap {i}: {} vs {expected}", y[i][0]);
        }
    }

    #[test]
    fn eight_point_transforms_compute_six_outputs_of_a_3_tap_correlation() {
        // y[i] = Σ_k d[i + k] g[k] for i < 6 must equal Aᵀ[(G g) ⊙ (Bᵀ d)] for F(6, 3), with
        // F(4, 5)'s input transform.
        let d = seeded(8, 13);
        let g = seeded(3, 14);
        let u = kernel_1d8(&g);
        let v = input_1d8::<f64>(std::array::from_fn(|i| [d[i]; LANES]));
        let y = output_1d8::<f64, 6>(std::array::from_fn(|i| [u[i] * v[i][0]; LANES]));
        for i in 0..6 {
            let expected: f64 = (0..3).map(|k| d[i + k] * g[k]).sum();
            assert!((y[i][0] - expected).abs() < 1e-13, "tap {i}: {} vs {expected}", y[i][0]);
        }
    }

    #[test]
    fn one_dimensional_transforms_compute_a_kernel_gradient() {
        // y[k] = Σ_{i<4} e[i] d[i + k] for k < 3 must equal Gᵀ[(A e) ⊙ (Bᵀ d)].
        let d = seeded(6, 5);
        let e = seeded(4, 6);
        let u = grad_1d::<f64>(std::array::from_fn(|i| [e[i]; LANES]));
        let v = input_1d::<f64>(std::array::from_fn(|i| [d[i]; LANES]));
        let y = kernel_grad_1d(std::array::from_fn(|i| [u[i][0] * v[i][0]; LANES]));
        for k in 0..3 {
            let expected: f64 = (0..TILE).map(|i| e[i] * d[i + k]).sum();
            assert!((y[k][0] - expected).abs() < 1e-14, "tap {k}: {} vs {expected}", y[k][0]);
        }
    }

    /// Direct kernel gradient of a 3×3 correlation with the plan's offsets, in f64.
    fn direct_kernel_grad(plan: &Plan, c: usize, o: usize, x: &[f64], e: &[f64]) -> Vec<f64> {
        let (h, w) = plan.input;
        let (oh, ow) = plan.output;
        let mut out = vec![0.0; o * c * 9];
        for b in 0..plan.n {
            for (oc, ic, ky, kx) in (0..o).flat_map(|oc| {
                (0..c).flat_map(move |ic| (0..9).map(move |k| (oc, ic, k / 3, k % 3)))
            }) {
                let mut s = 0.0;
                for y in 0..oh {
                    for xx in 0..ow {
                        let iy = y as isize + ky as isize - plan.pad.0;
                        let ix = xx as isize + kx as isize - plan.pad.1;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let xi = ((b * c + ic) * h + iy as usize) * w + ix as usize;
                        s += x[xi] * e[((b * o + oc) * oh + y) * ow + xx];
                    }
                }
                out[((oc * c + ic) * 3 + ky) * 3 + kx] += s;
            }
        }
        out
    }

    #[test]
    fn kernel_gradient_matches_a_direct_sum() {
        let (c, o) = (3, 5);
        for (input, output, pad) in [
            ((7, 6), (7, 6), (1, 1)),
            ((13, 13), (13, 13), (1, 1)),
            ((5, 9), (3, 7), (0, 0)),
            ((9, 8), (11, 10), (2, 2)),
            ((30, 19), (30, 19), (1, 1)),
        ] {
            let plan = Plan { n: 3, input, output, pad };
            let x = seeded(plan.n * c * input.0 * input.1, 7);
            let e = seeded(plan.n * o * output.0 * output.1, 8);
            let want = direct_kernel_grad(&plan, c, o, &x, &e);
            // The default blocks, and blocks of 16 tiles (several per image, split images),
            // the sums by blocks and by points.
            for budget in [BLOCK_BUDGET, 1] {
                for by in [Spread::Blocks, Spread::Points] {
                    let got = kernel_grad3x3_in_blocks(&plan, &x, &e, c, o, 1, budget, Some(by));
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() < 1e-11, "{plan:?} {by:?}: element {i}: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// The convolution of `input` by `kernels` (no mask, bias or ReLU), its work cut into
    /// blocks of `budget` elements and chunks of `chunk` output channels, spread `by`.
    fn cut_up<T: Real>(
        plan: &Plan,
        kernels: &TransformedKernels<T>,
        input: &[T],
        (budget, chunk): (usize, usize),
        by: Spread,
    ) -> Vec<T> {
        let (mask, bias, relu) = (None, None, false);
        let by = Some(by);
        convolve_in_blocks(Convolution {
            plan,
            kernels,
            input,
            mask,
            bias,
            relu,
            budget,
            chunk,
            by,
        })
    }

    #[test]
    fn matches_direct_correlation_with_any_offset() {
        let (c, o) = (3, 5);
        for scheme in [Scheme::F4x3, Scheme::F4x5, Scheme::F6x3] {
            let r = scheme.kernel();
            for (input, output, pad) in [
                ((7, 6), (7, 6), (1, 1)),
                ((13, 13), (13, 13), (1, 1)),
                ((5, 9), (3, 7), (0, 0)),
                ((4, 4), (8, 6), (3, 2)),
                ((9, 8), (5, 4), (-1, -2)),
                ((1, 1), (1, 1), (1, 1)),
                ((30, 19), (30, 19), (1, 1)),
                ((30, 19), (26, 15), (0, 0)),
                ((17, 23), (17, 23), (2, 2)),
                // Rows of 16 tiles and more: whole windows side by side, and groups across
                // rows and images.
                ((20, 140), (20, 140), (1, 1)),
                ((21, 211), (17, 205), (0, 2)),
            ] {
                let plan = Plan { n: 3, input, output, pad };
                let x = seeded(plan.n * c * input.0 * input.1, 3);
                let g = seeded(o * c * r * r, 4);
                let kernels = TransformedKernels::forward(scheme, &g, o, c, 1);
                let want = direct(&plan, r, c, o, &x, &g);
                // In f32 too (where the CPU has AVX-512, with the kernels packed), within
                // f32's rounding of sums of up to 75 products of values under 1.
                let narrow = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
                let kernels32 = TransformedKernels::forward(scheme, &narrow(&g), o, c, 1);
                // The default blocks, blocks of 16 tiles (several per image, split images), and
                // products made two channels or one at a time.
                // Each spread by blocks and by points.
                let x32 = narrow(&x);
                for cut in [(BLOCK_BUDGET, usize::MAX), (1, 2), (1, 1)] {
                    for by in [Spread::Blocks, Spread::Points] {
                        let got = cut_up(&plan, &kernels, &x, cut, by);
                        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                            let what =
                                format!("{scheme:?} {plan:?} {by:?}: element {i}: {a} vs {b}");
                            assert!((a - b).abs() < 1e-11, "{what}");
                        }
                        let got = cut_up(&plan, &kernels32, &x32, cut, by);
                        for (i, (&a, b)) in got.iter().zip(&want).enumerate() {
                            let what = format!("f32 {scheme:?} {plan:?} {by:?}: {i}: {a} vs {b}");
                            assert!((a as f64 - b).abs() < 1e-4, "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn blocks_cover_the_tiles_once_in_even_groups_of_lanes() {
        // Every tile in exactly one block, blocks in order, each within the stride `block`,
        // starting on a lane group, and no block more than one group larger than another.
        for (total, per_tile, budget) in
            [(198, 64 * 640, BLOCK_BUDGET), (442, 36 * 640, BLOCK_BUDGET), (3060, 64 * 64, 1 << 20)]
                .into_iter()
                .chain((1..200).map(|t| (t, 100, 1600 + 37 * t)))
        {
            let cut = Blocks::new(total, per_tile, budget);
            let mut next = 0;
            let (mut least, mut most) = (usize::MAX, 0);
            for index in 0..cut.blocks {
                let (start, count) = cut.range(index);
                assert_eq!(start, next, "{total} tiles: block {index} starts at {start}");
                assert_eq!(start % LANES, 0, "{total} tiles: block {index} starts mid-group");
                assert!(count > 0 && count <= cut.block, "{total} tiles: block {index}: {count}");
                next += count;
                least = least.min(count.div_ceil(LANES));
                most = most.max(count.div_ceil(LANES));
            }
            assert_eq!(next, total, "{total} tiles covered");
            assert!(most - least <= 1, "{total} tiles: groups per block {least}..={most}");
        }
    }

    #[test]
    fn input_gradient_kernels_are_turned_and_rotated() {
        // The input gradient of y = x ⋆ g (stride 1, pad p) is e ⋆ rot180(gᵀ) with pad r − 1 − p;
        // checked through ⟨y, e⟩ = ⟨x, ∂⟩ for every scheme, with two groups.
        let (c, o, groups) = (4, 6, 2);
        for scheme in [Scheme::F4x3, Scheme::F4x5, Scheme::F6x3] {
            let r = scheme.kernel();
            let pad = (r / 2) as isize;
            let (h, w) = (11, 14);
            let fwd = Plan { n: 2, input: (h, w), output: (h, w), pad: (pad, pad) };
            let back = Plan { pad: (r as isize - 1 - pad, r as isize - 1 - pad), ..fwd };
            let x = seeded(2 * c * h * w, 21);
            let e = seeded(2 * o * h * w, 22);
            let g = seeded(o * (c / groups) * r * r, 23);
            let y = convolve(
                &fwd,
                &TransformedKernels::forward(scheme, &g, o, c / groups, groups),
                &x,
                None,
                None,
                false,
            );
            let kernels = TransformedKernels::input_grad(scheme, &g, o, c / groups, groups);
            let dx = convolve(&back, &kernels, &e, None, None, false);
            let lhs: f64 = y.iter().zip(&e).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0), "{scheme:?}: {lhs} vs {rhs}");
        }
    }
}
