//! A trainable fully connected layer `y = x·Wᵀ + b` whose weight gradient is produced in the
//! weight's own `[out, in]` layout.
//!
//! candle's `x.matmul(&w.t())` differentiates through the transpose: the weight's gradient
//! arrives as the transposed view of an `[in, out]` product, and autograd adds it into the
//! weight's `[out, in]` gradient element by element across rows. For the 4096×4096 layers of
//! the paper's generator that strided add cost more than the products themselves.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use crate::check::{by_float_dtype, contiguous, same_dtype_device, Real};
use crate::error::{invalid, Result};
use crate::fresh::fill_rows;
use crate::gemm::{matmul, parallelism, transpose_into, Mat};
use crate::grads::deliver_grad;
use crate::simd::vectorized;
use rayon::prelude::*;

/// `x·Wᵀ + b` for `x` `[N, in]`, `weight` `[out, in]` (PyTorch's and candle-nn's layout) and
/// `bias` `[out]`: candle-nn's `Linear` for rank-2 inputs, with a backward that writes the
/// weight gradient directly as `gradᵀ·x` `[out, in]` and skips it when the weight is not
/// tracked.
///
/// # Shapes
/// `x` `[N, in]`, `weight` `[out, in]`, `bias` `[out]` → `[N, out]`.
///
/// # Errors
/// A rank other than 2, an `in` that differs between `x` and `weight`, a bias of another
/// length, or a dtype other than the input's: [`crate::Error::InvalidArgument`].
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear";
    let (n, k) = match x.dims() {
        &[n, k] => (n, k),
        d => return Err(invalid(OP, "input", d, "expected [N, in]")),
    };
    let out = match weight.dims() {
        &[o, i] if i == k => o,
        d => return Err(invalid(OP, "weight", d, format!("expected [out, {k}]"))),
    };
    same_dtype_device(OP, "weight", weight, x)?;
    if let Some(b) = bias {
        if b.dims() != [out] {
            return Err(invalid(OP, "bias", b.dims(), format!("expected [{out}]")));
        }
        same_dtype_device(OP, "bias", b, x)?;
    }
    // The kernels below need every dimension non-zero; candle's matmul handles empty ones.
    let y = if x.device().is_cpu() && n > 0 && k > 0 && out > 0 {
        x.apply_op2(weight, LinearOp)?
    } else {
        composite::linear_no_bias(x, weight)?
    };
    crate::bias::add_bias(y, bias)
}

/// `x·Wᵀ` from candle's built-ins (what non-CPU devices run).
pub(crate) mod composite {
    use candle::Tensor;

    pub(crate) fn linear_no_bias(x: &Tensor, w: &Tensor) -> candle::Result<Tensor> {
        x.matmul(&w.t()?)
    }
}

/// `(x [N, in], W [out, in]) → x·Wᵀ [N, out]`.
struct LinearOp;

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "deepsim-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (n, k) = xl.shape().dims2()?;
        let (out, _) = wl.shape().dims2()?;
        let y = by_float_dtype!("linear", x.dtype(), forward(n, k, out, (x, xl), (w, wl)))?;
        Ok((y, Shape::from((n, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        // dx = grad·W [N, in]; dW = gradᵀ·x [out, in], already in the weight's layout.
        let skinny = x.dim(0)? <= SKINNY;
        let dx = match (x.track_op(), skinny) {
            (false, _) => None,
            (true, true) => Some(grad.apply_op2_no_bwd(w, &Skinny::InputGrad)?),
            (true, false) => Some(grad.matmul(w)?),
        };
        let dw = match (w.track_op(), skinny) {
            (false, _) => None,
            (true, true) => deliver_grad(w, grad.apply_op2_no_bwd(x, &Skinny::WeightGrad)?)?,
            (true, false) => deliver_grad(w, grad.t()?.matmul(x)?)?,
        };
        Ok((dx, dw))
    }
}

/// A fully connected layer with frozen weights (a comparator's), `y = x·Wᵀ + b` over the last
/// dimension, that keeps the weight in both layouts: `W` `[out, in]` and a copy of `Wᵀ`
/// `[in, out]` made once at construction. Each of the two products a perceptual loss needs
/// then has a row-major right operand, the layout the `gemm` crate runs fastest: the forward
/// `x·Wᵀ` reads the copy, the input gradient `grad·W` the original. With `W` alone, the
/// forward's right operand is a transposed view, and CLIP's MLP product (400×3072 by
/// 3072×768) ran at 81–117 GFLOP/s on 2 cores against 126–192 for the same product on a
/// row-major operand. The cost is the weight's memory twice. Batches of at most 16 rows take
/// [`linear`]'s streaming kernels (bound by reading the weight once either way); other devices
/// run [`linear`].
#[derive(Clone, Debug)]
pub struct FrozenLinear {
    weight: Tensor,
    /// `Wᵀ` `[in, out]`, on the CPU only (other devices run [`linear`] on `weight`).
    weight_t: Option<Tensor>,
    bias: Option<Tensor>,
}

impl FrozenLinear {
    /// The layer with `weight` `[out, in]` and `bias` `[out]`, both detached from any graph.
    ///
    /// # Errors
    /// A weight of rank other than 2, a bias of another length or dtype or device:
    /// [`crate::Error::InvalidArgument`].
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        const OP: &str = "FrozenLinear";
        let (out, _) = match weight.dims() {
            &[o, i] => (o, i),
            d => return Err(invalid(OP, "weight", d, "expected [out, in]")),
        };
        if let Some(b) = &bias {
            if b.dims() != [out] {
                return Err(invalid(OP, "bias", b.dims(), format!("expected [{out}]")));
            }
            same_dtype_device(OP, "bias", b, &weight)?;
        }
        let weight = weight.detach();
        let weight_t = if weight.device().is_cpu() { Some(transpose_cpu(&weight)?) } else { None };
        Ok(Self { weight, weight_t, bias: bias.map(|b| b.detach()) })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `x·Wᵀ + b` for `x` `[…, in]`; differentiable w.r.t. `x` only.
    ///
    /// # Shapes
    /// `[…, in]` → `[…, out]`.
    ///
    /// # Errors
    /// A last dimension other than `in`, a rank below 1, another dtype or device:
    /// [`crate::Error::InvalidArgument`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "FrozenLinear";
        let (out, k) = self.weight.dims2()?;
        let dims = x.dims().to_vec();
        match dims.last() {
            Some(&last) if last == k => {}
            _ => return Err(invalid(OP, "input", &dims, format!("expected [..., {k}]"))),
        }
        same_dtype_device(OP, "weight", &self.weight, x)?;
        let rows = x.elem_count() / k.max(1);
        let x2 = x.reshape((rows, k))?;
        let y = match &self.weight_t {
            Some(weight_t) if rows > SKINNY && k > 0 && out > 0 => {
                let op = FrozenLinearOp { weight: self.weight.clone(), weight_t: weight_t.clone() };
                crate::bias::add_bias(x2.apply_op1(op)?, self.bias.as_ref())?
            }
            _ => linear(&x2, &self.weight, self.bias.as_ref())?,
        };
        let mut shape = dims;
        *shape.last_mut().expect("rank ≥ 1, checked") = out;
        Ok(y.reshape(shape)?)
    }
}

/// `W` `[r, c]` → `Wᵀ` `[c, r]` contiguous, in cache-sized tiles (candle's strided copy goes
/// element by element).
fn transpose_cpu(w: &Tensor) -> candle::Result<Tensor> {
    fn go<T: Real>(s: &CpuStorage, l: &Layout, r: usize, c: usize) -> candle::Result<Tensor> {
        let src = contiguous(s.as_slice::<T>()?, l);
        let mut dst = vec![T::zero(); r * c];
        transpose_into(&src, r, c, &mut dst);
        Tensor::from_vec(dst, (c, r), &candle::Device::Cpu)
    }
    let (r, c) = w.dims2()?;
    crate::conv::with_cpu(w, "weight", |s, l| {
        by_float_dtype!("FrozenLinear", s.dtype(), go(s, l, r, c))
    })
}

/// `x [N, in] → x·Wᵀ [N, out]` with the frozen weight held in both layouts ([`FrozenLinear`]).
struct FrozenLinearOp {
    weight: Tensor,
    weight_t: Tensor,
}

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "deepsim-frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let (n, k) = xl.shape().dims2()?;
        let out = self.weight_t.dim(1)?;
        let y = crate::conv::with_cpu(&self.weight_t, "weight", |w, wl| {
            by_float_dtype!("FrozenLinear", x.dtype(), frozen_forward(n, k, out, (x, xl), (w, wl)))
        })?;
        Ok((y, Shape::from((n, out))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        // grad·W: W [out, in] row-major is the right operand as it lies.
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

fn frozen_forward<T: Real>(
    n: usize,
    k: usize,
    out: usize,
    x: (&CpuStorage, &Layout),
    wt: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let xs = contiguous(x.0.as_slice::<T>()?, x.1);
    let wts = contiguous(wt.0.as_slice::<T>()?, wt.1);
    Ok(gemm_forward(&xs, n, k, Mat::row_major(&wts, k, out)))
}

fn forward<T: Real>(
    n: usize,
    k: usize,
    out: usize,
    x: (&CpuStorage, &Layout),
    w: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let xs = contiguous(x.0.as_slice::<T>()?, x.1);
    let ws = contiguous(w.0.as_slice::<T>()?, w.1);
    if n <= SKINNY {
        return Ok(T::to_cpu_storage_owned(skinny_forward(&xs, &ws, n, k, out)));
    }
    Ok(gemm_forward(&xs, n, k, Mat::row_major(&ws, out, k).t()))
}

/// `x·rhs` by GEMM for `x` row-major `[n, k]` and `rhs` `[k, out]` (`Wᵀ`, as a copy or a view).
fn gemm_forward<T: Real>(x: &[T], n: usize, k: usize, rhs: Mat<'_, T>) -> CpuStorage {
    let mut y = vec![T::zero(); n * rhs.cols];
    matmul(&mut y, Mat::row_major(x, n, k), rhs, false, parallelism(false));
    T::to_cpu_storage_owned(y)
}

/// Batches of at most this many rows take the streaming kernels below instead of GEMM: with
/// few rows every product is bound by reading (or writing) the weight matrix once, and GEMM's
/// packing of a 4096×4096 weight costs more than the product.
const SKINNY: usize = 16;

/// Weight rows per parallel task of the forward and weight-gradient streaming kernels.
const BLOCK: usize = 64;

/// Input columns per parallel task of the input-gradient kernel: its eight accumulator rows
/// (32 KB in f32) stay in a core's L1 cache (48 KB on the machines measured) while the weight
/// rows' segments stream through; 4 KB segments read the weight faster than 2 KB ones (4096 ×
/// 4096 at batch 8: 4.4–4.7 against 4.9–5.9 ms).
const STRIP: usize = 1024;

/// Vector lanes of the streaming kernels' accumulators: one AVX-512 register of f32.
const LANES: usize = 16;

/// Rows of `x` (or of the output gradient) the forward and input-gradient kernels take at a
/// time: batches of fewer rows are padded with zero rows to this many, so that one
/// instantiation, whose accumulators are all registers, serves every batch (a zero row costs
/// no memory traffic, and the kernels are bound by streaming the weight).
const GROUP: usize = 8;

/// Weight rows per step of the input-gradient kernel.
const G_ROWS: usize = 4;

/// `rows` rows of `len` (row-major `[rows, len]`) padded with zero rows to a multiple of
/// [`GROUP`]; borrowed when no padding is needed.
fn padded<T: Real>(data: &[T], rows: usize, len: usize) -> std::borrow::Cow<'_, [T]> {
    let want = rows.next_multiple_of(GROUP);
    if want == rows {
        return std::borrow::Cow::Borrowed(&data[..rows * len]);
    }
    let mut v = vec![T::zero(); want * len];
    v[..rows * len].copy_from_slice(&data[..rows * len]);
    std::borrow::Cow::Owned(v)
}

/// Weight rows per step of the forward kernel: with [`GROUP`] rows of `x`, 16 accumulator
/// registers.
const W_ROWS: usize = 2;

/// `Σⱼ x[g, j]·w[r, j]` for the [`GROUP`] rows of `x` (row-major, `k` long) and the
/// [`W_ROWS`] weight rows `w`: each of [`LANES`] lanes accumulates every 16th product in order,
/// the row's tail is summed first and the lanes are then added to it in order — a fixed order,
/// the same whatever the threads or the instruction set.
#[inline(always)]
fn dot_block<T: Real>(x: &[T], k: usize, w: [&[T]; W_ROWS]) -> [[T; GROUP]; W_ROWS] {
    let body = k / LANES * LANES;
    // Slices cut to the body up front, so that the loop below has no bounds checks left and
    // its accumulators stay in registers.
    let xs: [&[T]; GROUP] = std::array::from_fn(|g| &x[g * k..g * k + body]);
    let ws: [&[T]; W_ROWS] = std::array::from_fn(|r| &w[r][..body]);
    let mut acc = [[[T::zero(); LANES]; GROUP]; W_ROWS];
    for j in (0..body).step_by(LANES) {
        let wv: [[T; LANES]; W_ROWS] = std::array::from_fn(|r| {
            let mut v = [T::zero(); LANES];
            v.copy_from_slice(&ws[r][j..j + LANES]);
            v
        });
        for g in 0..GROUP {
            let mut xv = [T::zero(); LANES];
            xv.copy_from_slice(&xs[g][j..j + LANES]);
            for r in 0..W_ROWS {
                for l in 0..LANES {
                    acc[r][g][l] += wv[r][l] * xv[l];
                }
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|g| finish_sum(&x[g * k..(g + 1) * k], w[r], body, acc[r][g]))
    })
}

/// The dot product of `x` and `w` from the lane sums of their first `body` columns: the
/// columns past `body` one by one, then the lanes in order — [`dot_block`]'s summation order,
/// which [`block_sums`]' AVX-512 path keeps to give the same bits.
fn finish_sum<T: Real>(x: &[T], w: &[T], body: usize, lanes: [T; LANES]) -> T {
    let tail = (body..x.len()).fold(T::zero(), |s, j| s + x[j] * w[j]);
    lanes.iter().fold(tail, |s, &v| s + v)
}

/// [`dot_block`]'s sums for the `rows` weight rows `w` (row-major, `k` long) against the
/// [`GROUP`] rows of `x`, one `[T; GROUP]` per weight row. f32 on AVX-512 takes
/// [`x86::dot_rows`]: the same sums in the same order, so the same bits (a multiply and an add
/// per product, no fused multiply-add). The portable loop stored its sixteen accumulators to
/// the stack on every step: the 4096 × 4096 forward at batch 8 took 6.2–6.5 ms against
/// 3.5–3.6 (three weight rows a step, alternated on 2 cores).
fn block_sums<T: Real>(x: &[T], k: usize, w: &[T], rows: usize) -> Vec<[T; GROUP]> {
    let row = |r: usize| &w[r * k..(r + 1) * k];
    #[cfg(target_arch = "x86_64")]
    if crate::simd::f32_on_avx512::<T>() {
        let body = k / LANES * LANES;
        assert!(x.len() >= GROUP * k && w.len() >= rows * k, "linear: block out of bounds");
        let mut lanes = vec![[[0f32; LANES]; GROUP]; rows];
        let (xs, ws) = (crate::simd::f32s(x), crate::simd::f32s(w));
        // SAFETY: AVX-512 is here (`f32_on_avx512`); `x` holds GROUP rows of `k ≥ body` values and `w`
        // `rows` rows (asserted).
        unsafe { x86::dot_rows(xs.as_ptr(), k, body, ws.as_ptr(), &mut lanes) };
        return lanes
            .iter()
            .enumerate()
            .map(|(r, sums)| {
                std::array::from_fn(|g| {
                    let lanes = sums[g].map(|v| T::from_f64(f64::from(v)));
                    finish_sum(&x[g * k..(g + 1) * k], row(r), body, lanes)
                })
            })
            .collect();
    }
    let mut out = Vec::with_capacity(rows);
    for r0 in (0..rows).step_by(W_ROWS) {
        // An odd last row is paired with itself; the copy's sums are dropped.
        let wr: [&[T]; W_ROWS] = std::array::from_fn(|r| row((r0 + r).min(rows - 1)));
        let sums = dot_block(x, k, wr);
        out.extend(sums.into_iter().take(rows - r0));
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, G_ROWS, LANES, SKINNY, WG_ROWS, WG_TILE, WG_VECTORS};

    /// Weight rows the forward takes at a time: `FWD_ROWS × GROUP` accumulators in registers.
    const FWD_ROWS: usize = 3;

    /// The lane sums of [`super::dot_block`] over the first `body` (a multiple of 16)
    /// columns, for each of the `lanes.len()` weight rows `w`: lane `l` of `lanes[r][g]` is
    /// `Σ x[g, j]·w[r, j]` over `j ≡ l (mod 16)`, in the order of `j`, the rows taken
    /// [`FWD_ROWS`] at a time with their accumulators in registers.
    ///
    /// # Safety
    /// AVX-512F must be present; `x` must hold [`GROUP`] rows of `k ≥ body` values and `w`
    /// `lanes.len()` rows of `k`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_rows(
        x: *const f32,
        k: usize,
        body: usize,
        w: *const f32,
        lanes: &mut [[[f32; LANES]; GROUP]],
    ) {
        let rows = lanes.len();
        for r0 in (0..rows).step_by(FWD_ROWS) {
            // Rows past the last are the last again; their copies' sums are not stored.
            let held = FWD_ROWS.min(rows - r0);
            let picked: [usize; FWD_ROWS] = std::array::from_fn(|i| (r0 + i).min(rows - 1));
            let mut acc = [[_mm512_setzero_ps(); GROUP]; FWD_ROWS];
            // SAFETY: the rows and columns below lie in bounds (the caller's).
            unsafe {
                let wr = picked.map(|r| w.add(r * k));
                for j in (0..body).step_by(LANES) {
                    let wv = wr.map(|p| _mm512_loadu_ps(p.add(j)));
                    for g in 0..GROUP {
                        let xv = _mm512_loadu_ps(x.add(g * k + j));
                        for (sums, &v) in acc.iter_mut().zip(&wv) {
                            sums[g] = _mm512_add_ps(sums[g], _mm512_mul_ps(v, xv));
                        }
                    }
                }
            }
            for (&r, sums) in picked.iter().zip(&acc).take(held) {
                for (dst, &v) in lanes[r].iter_mut().zip(sums) {
                    // SAFETY: 16 floats into an array of 16.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) };
                }
            }
        }
    }

    /// The weight-gradient tiles of [`WG_ROWS`] rows over the first `body` (a multiple of
    /// [`WG_TILE`]) columns: `emit(r, tile)` for each tile left to right, row by row, where
    /// element `j` of row `r` is `Σᵢ cf[r][i]·x[i, j]` over the `n` rows of `x` in order.
    ///
    /// # Safety
    /// AVX-512F must be present; `x` must hold `n ≤ SKINNY` rows of `k ≥ body` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad_tiles(
        x: *const f32,
        k: usize,
        n: usize,
        body: usize,
        cf: &[[f32; SKINNY]; WG_ROWS],
        mut emit: impl FnMut(usize, &[f32; WG_TILE]),
    ) {
        for j in (0..body).step_by(WG_TILE) {
            let mut acc = [[_mm512_setzero_ps(); WG_VECTORS]; WG_ROWS];
            for i in 0..n {
                // SAFETY: columns `j..j + WG_TILE ≤ body` of row `i < n` (the caller's).
                let xv: [__m512; WG_VECTORS] = std::array::from_fn(|v| unsafe {
                    _mm512_loadu_ps(x.add(i * k + j + v * LANES))
                });
                for (sums, c) in acc.iter_mut().zip(cf) {
                    let b = _mm512_set1_ps(c[i]);
                    for (a, &v) in sums.iter_mut().zip(&xv) {
                        *a = _mm512_add_ps(*a, _mm512_mul_ps(b, v));
                    }
                }
            }
            for (r, sums) in acc.iter().enumerate() {
                let mut tile = [0f32; WG_TILE];
                for (v, &a) in sums.iter().enumerate() {
                    // SAFETY: 16 floats into the tile's vector `v`.
                    unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(v * LANES), a) };
                }
                emit(r, &tile);
            }
        }
    }

    /// Weight rows the input gradient takes at a time (a multiple of [`G_ROWS`]).
    const IG_ROWS: usize = 2 * G_ROWS;

    /// [`super::skinny_input_grad`]'s accumulators for one strip: `acc[i][j] += Σ_o
    /// coef[i, o]·w[o, j]` for the [`GROUP`] rows `i` and the strip's `width` columns (a
    /// multiple of 16; `w` points at the strip's first column of row 0, rows `k` apart), the
    /// products added one by one in the order of `o` (the portable loop's order).
    ///
    /// # Safety
    /// AVX-512F must be present; `coef` must hold `GROUP × out` values, `w` `out` rows of the
    /// strip, `acc` `GROUP × width`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_grad_strip(
        coef: *const f32,
        w: *const f32,
        k: usize,
        out: usize,
        width: usize,
        acc: &mut [f32],
    ) {
        let a = acc.as_mut_ptr();
        for o0 in (0..out).step_by(IG_ROWS) {
            let rows = IG_ROWS.min(out - o0);
            // The portable loop's last block of G_ROWS repeats the last row with a zero
            // coefficient; so does this one, for the same bits (a zero's sign, a NaN from ∞).
            let padded = rows.next_multiple_of(G_ROWS);
            for j in (0..width).step_by(LANES) {
                // SAFETY: rows `o0..o0 + rows` (the last repeated), columns `j..j + 16` of
                // the strip; the accumulators' rows `i < GROUP` (the caller's).
                unsafe {
                    let seg: [__m512; IG_ROWS] = std::array::from_fn(|r| {
                        _mm512_loadu_ps(w.add((o0 + r.min(rows - 1)) * k + j))
                    });
                    for i in 0..GROUP {
                        let p = a.add(i * width + j);
                        let mut v = _mm512_loadu_ps(p);
                        for (r, &s) in seg.iter().enumerate().take(padded) {
                            let c = if r < rows { *coef.add(i * out + o0 + r) } else { 0.0 };
                            v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(c), s));
                        }
                        _mm512_storeu_ps(p, v);
                    }
                }
            }
        }
    }
}

/// `x·Wᵀ` `[n, out]` for few rows: each task reads a block of W's rows once, two rows at a
/// time against eight rows of `x` held in registers.
fn skinny_forward<T: Real>(x: &[T], w: &[T], n: usize, k: usize, out: usize) -> Vec<T> {
    let xp = padded(x, n, k);
    let groups = xp.len() / (GROUP * k);
    // Computed transposed ([out, n]: each task writes whole rows), then transposed back.
    let mut yt = vec![T::zero(); out * n];
    yt.par_chunks_mut(BLOCK * n).enumerate().for_each(|(c, block)| {
        vectorized(
            #[inline(always)]
            || {
                let rows = block.len() / n;
                let w = &w[c * BLOCK * k..(c * BLOCK + rows) * k];
                for grp in 0..groups {
                    let sums = block_sums(&xp[grp * GROUP * k..(grp + 1) * GROUP * k], k, w, rows);
                    let (first, len) = (grp * GROUP, GROUP.min(n - grp * GROUP));
                    for (dst, row_sums) in block.chunks_exact_mut(n).zip(&sums) {
                        dst[first..first + len].copy_from_slice(&row_sums[..len]);
                    }
                }
            },
        )
    });
    let mut y = vec![T::zero(); n * out];
    transpose_into(&yt, out, n, &mut y);
    y
}

/// `grad·W` `[n, k]` for few rows: each task owns a strip of input columns and streams the
/// matching segment of every weight row once, four rows at a time (eight on AVX-512), into
/// eight accumulator rows that stay in L1. Each element sums its products in the order of the
/// weight's rows. Each strip runs [`x86::input_grad_strip`] when `avx512` (which requires f32
/// on a CPU with AVX-512; eight weight rows a step, the same bits), else the portable loop.
fn skinny_input_grad<T: Real>(
    g: &[T],
    w: &[T],
    n: usize,
    k: usize,
    out: usize,
    avx512: bool,
) -> Vec<T> {
    assert!(!avx512 || crate::simd::f32_on_avx512::<T>(), "linear: no AVX-512 f32 kernel here");
    let gp = padded(g, n, out);
    let groups = gp.len() / (GROUP * out);
    let strips = k.div_ceil(STRIP);
    let parts: Vec<Vec<T>> = (0..strips * groups)
        .into_par_iter()
        .map(|task| {
            let (grp, b) = (task / strips, task % strips);
            let (j0, j1) = (b * STRIP, ((b + 1) * STRIP).min(k));
            let width = j1 - j0;
            let coef = &gp[grp * GROUP * out..(grp + 1) * GROUP * out];
            let mut acc = vec![T::zero(); GROUP * width];
            #[cfg(target_arch = "x86_64")]
            if avx512 && width % LANES == 0 {
                // SAFETY: AVX-512 is here (`f32_on_avx512`); the strip's columns of every weight row,
                // the group's coefficients and the accumulators are in bounds.
                unsafe {
                    x86::input_grad_strip(
                        crate::simd::f32s(coef).as_ptr(),
                        crate::simd::f32s(w).as_ptr().add(j0),
                        k,
                        out,
                        width,
                        crate::simd::f32s_mut(&mut acc),
                    )
                };
                return acc;
            }
            vectorized(
                #[inline(always)]
                || {
                    for o0 in (0..out).step_by(G_ROWS) {
                        // Rows past the end repeat the last one with a zero coefficient (adding an
                        // exact zero changes nothing).
                        let o: [usize; G_ROWS] = std::array::from_fn(|r| (o0 + r).min(out - 1));
                        let seg: [&[T]; G_ROWS] =
                            std::array::from_fn(|r| &w[o[r] * k + j0..o[r] * k + j1]);
                        let c: [[T; GROUP]; G_ROWS] = std::array::from_fn(|r| {
                            std::array::from_fn(|i| {
                                if o0 + r < out {
                                    coef[i * out + o[r]]
                                } else {
                                    T::zero()
                                }
                            })
                        });
                        for (i, row) in acc.chunks_exact_mut(width).enumerate() {
                            for (j, a) in row.iter_mut().enumerate() {
                                let mut v = *a;
                                for r in 0..G_ROWS {
                                    v += c[r][i] * seg[r][j];
                                }
                                *a = v;
                            }
                        }
                    }
                },
            );
            acc
        })
        .collect();
    let mut dx = vec![T::zero(); n * k];
    for (task, part) in parts.iter().enumerate() {
        let (grp, b) = (task / strips, task % strips);
        let j0 = b * STRIP;
        let width = part.len() / GROUP;
        for (g, row) in part.chunks_exact(width).enumerate() {
            let i = grp * GROUP + g;
            if i < n {
                dx[i * k + j0..i * k + j0 + width].copy_from_slice(row);
            }
        }
    }
    dx
}

/// Vectors of [`LANES`] columns in a weight-gradient tile (its accumulators).
const WG_VECTORS: usize = 4;

/// Columns of a weight-gradient tile.
const WG_TILE: usize = WG_VECTORS * LANES;

/// `gradᵀ·x` `[out, k]` for few rows: each weight-gradient row is computed left to right in
/// tiles of [`WG_TILE`] columns, summed in registers over every row of `x` and written once,
/// into memory that is never zero-filled ([`fill_rows`]). Each element sums its products in
/// the order of the rows of `x`; unlike the other two kernels this one takes the rows as they
/// come, unpadded. The rows run [`weight_grad_block_avx512`] when `avx512` (which requires f32
/// on a CPU with AVX-512; the same bits), else the portable loop.
fn skinny_weight_grad<T: Real>(
    g: &[T],
    x: &[T],
    n: usize,
    k: usize,
    out: usize,
    avx512: bool,
) -> Vec<T> {
    assert!(n <= SKINNY, "linear: {n} rows take GEMM, not the streaming kernels");
    assert!(!avx512 || crate::simd::f32_on_avx512::<T>(), "linear: no AVX-512 f32 kernel here");
    let body = k / WG_TILE * WG_TILE;
    fill_rows(out, k, BLOCK, |first, rows| {
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            return weight_grad_block_avx512(g, x, n, k, out, first, rows);
        }
        vectorized(
            #[inline(always)]
            || {
                for (r, row) in rows.iter_mut().enumerate() {
                    let o = first + r;
                    // grad[i, o] for every row i of x, splat across the lanes.
                    let mut cf = [[T::zero(); LANES]; SKINNY];
                    for (i, c) in cf.iter_mut().enumerate().take(n) {
                        *c = [g[i * out + o]; LANES];
                    }
                    for j in (0..body).step_by(WG_TILE) {
                        let mut acc = [[T::zero(); LANES]; WG_VECTORS];
                        for (i, c) in cf.iter().enumerate().take(n) {
                            let xs = &x[i * k + j..i * k + j + WG_TILE];
                            for (v, a) in acc.iter_mut().enumerate() {
                                for l in 0..LANES {
                                    a[l] += c[l] * xs[v * LANES + l];
                                }
                            }
                        }
                        for a in &acc {
                            row.append(a);
                        }
                    }
                    for j in body..k {
                        let v = (0..n).fold(T::zero(), |s, i| s + cf[i][0] * x[i * k + j]);
                        row.append(&[v]);
                    }
                }
            },
        )
    })
}

/// Weight-gradient rows taken together on AVX-512: each tile of `x`'s rows is loaded once
/// for this many rows (it came from L2 again for every row, 128 KB a row at 4096 columns).
#[cfg(target_arch = "x86_64")]
const WG_ROWS: usize = 4;

/// [`skinny_weight_grad`]'s rows `first..first + rows.len()` for f32 on AVX-512: the same
/// sums in the same order as the portable loop, so the same bits (a multiply and an add per
/// product), [`WG_ROWS`] rows a tile with their accumulators in registers.
#[cfg(target_arch = "x86_64")]
fn weight_grad_block_avx512<T: Real>(
    g: &[T],
    x: &[T],
    n: usize,
    k: usize,
    out: usize,
    first: usize,
    rows: &mut [crate::fresh::RowCursor<'_, T>],
) {
    let body = k / WG_TILE * WG_TILE;
    let (gs, xs) = (crate::simd::f32s(g), crate::simd::f32s(x));
    assert!(n <= SKINNY && xs.len() >= n * k && gs.len() >= n * out, "linear: out of bounds");
    for r0 in (0..rows.len()).step_by(WG_ROWS) {
        let held = WG_ROWS.min(rows.len() - r0);
        // grad[i, o] for each row i of x and each of the rows (the last repeated past `held`).
        let mut cf = [[0f32; SKINNY]; WG_ROWS];
        for (r, c) in cf.iter_mut().enumerate() {
            let o = first + (r0 + r).min(rows.len() - 1);
            for (i, v) in c.iter_mut().enumerate().take(n) {
                *v = gs[i * out + o];
            }
        }
        let emit =
            |r: usize, values: &[f32; WG_TILE], rows: &mut [crate::fresh::RowCursor<'_, T>]| {
                if r < held {
                    // SAFETY: `T` is f32 (`f32_on_avx512`), so the values are `T`s.
                    let values: &[T] =
                        unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), WG_TILE) };
                    rows[r0 + r].append(values);
                }
            };
        // SAFETY: AVX-512 is here (`f32_on_avx512`); `x` holds `n` rows of `k ≥ body` values (asserted).
        unsafe { x86::weight_grad_tiles(xs.as_ptr(), k, n, body, &cf, |r, v| emit(r, v, rows)) };
        for (r, c) in cf.iter().enumerate().take(held) {
            for j in body..k {
                let v = (0..n).fold(0f32, |s, i| s + c[i] * xs[i * k + j]);
                rows[r0 + r].append(&[T::from_f64(f64::from(v))]);
            }
        }
    }
}

/// The two products of the backward pass for few rows; the first operand is always the
/// output gradient `[n, out]`.
enum Skinny {
    /// `(grad, W [out, in]) → grad·W [n, in]`.
    InputGrad,
    /// `(grad, x [n, in]) → gradᵀ·x [out, in]`.
    WeightGrad,
}

impl CustomOp2 for Skinny {
    fn name(&self) -> &'static str {
        "deepsim-linear-backward"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        gl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (n, out) = gl.shape().dims2()?;
        let (rows, k) = ml.shape().dims2()?;
        let shape = match self {
            Skinny::InputGrad => Shape::from((n, k)),
            Skinny::WeightGrad => Shape::from((out, k)),
        };
        debug_assert_eq!(rows, if matches!(self, Skinny::InputGrad) { out } else { n });
        let r = by_float_dtype!("linear backward", g.dtype(), skinny_bwd(self, (g, gl), (m, ml)))?;
        Ok((r, shape))
    }
}

fn skinny_bwd<T: Real>(
    op: &Skinny,
    g: (&CpuStorage, &Layout),
    m: (&CpuStorage, &Layout),
) -> candle::Result<CpuStorage> {
    let (n, out) = g.1.shape().dims2()?;
    let k = m.1.shape().dims2()?.1;
    let gs = contiguous(g.0.as_slice::<T>()?, g.1);
    let ms = contiguous(m.0.as_slice::<T>()?, m.1);
    let avx512 = crate::simd::f32_on_avx512::<T>();
    Ok(T::to_cpu_storage_owned(match op {
        Skinny::InputGrad => skinny_input_grad(&gs, &ms, n, k, out, avx512),
        Skinny::WeightGrad => skinny_weight_grad(&gs, &ms, n, k, out, avx512),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device, Var};

    fn seq(shape: (usize, usize), scale: f64) -> Tensor {
        let n = shape.0 * shape.1;
        let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 23) as f64 - 11.0) * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_candle_and_finite_differences() {
        let x = Var::from_tensor(&seq((3, 5), 0.1)).unwrap();
        let w = Var::from_tensor(&seq((4, 5), 0.07)).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f64, -1.0, 0.25, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        let y = linear(&x, &w, Some(&b)).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        let diff = (&y - &want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);

        // L = Σ y ⊙ c, differentiated against central finite differences in f64.
        let c = seq((3, 4), 0.3);
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
            let y = linear(x, w, Some(b)).unwrap();
            (y * &c).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let grads = (linear(&x, &w, Some(&b)).unwrap() * &c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let h = 1e-6;
        for (var, name) in [(&x, "x"), (&w, "w"), (&b, "b")] {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let g = g.to_vec1::<f64>().unwrap();
            let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in 0..base.len() {
                let shifted = |d: f64| {
                    let mut v = base.clone();
                    v[i] += d;
                    Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()
                };
                let (plus, minus) = match name {
                    "x" => (loss(&shifted(h), &w, &b), loss(&shifted(-h), &w, &b)),
                    "w" => (loss(&x, &shifted(h), &b), loss(&x, &shifted(-h), &b)),
                    _ => (loss(&x, &w, &shifted(h)), loss(&x, &w, &shifted(-h))),
                };
                let fd = (plus - minus) / (2.0 * h);
                assert!((g[i] - fd).abs() < 1e-6, "d{name}[{i}]: {} vs {fd}", g[i]);
            }
        }
        // The weight gradient is contiguous in the weight's layout.
        assert!(grads.get(w.as_tensor()).unwrap().is_contiguous());
    }

    #[test]
    fn frozen_weight_gets_no_gradient() {
        let x = Var::from_tensor(&seq((2, 3), 0.1)).unwrap();
        let w = seq((2, 3), 0.2);
        let grads = linear(&x, &w, None).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&w).is_none());
        // dL/dx for L = Σ x·Wᵀ is the column sums of W, for every row of x.
        let gx = grads.get(x.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let wv = w.to_vec2::<f64>().unwrap();
        for row in gx {
            for j in 0..3 {
                assert!((row[j] - (wv[0][j] + wv[1][j])).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 5), DType::F32, &Device::Cpu).unwrap();
        let err = linear(&x, &w, None).unwrap_err().to_string();
        assert!(err.contains("weight") && err.contains("[out, 3]"), "{err}");
        let w = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
        let err = linear(&x, &w, Some(&b)).unwrap_err().to_string();
        assert!(err.contains("bias") && err.contains("[4]"), "{err}");
        let x3 = Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(linear(&x3, &w, None).unwrap_err().to_string().contains("[N, in]"));
        let w64 = Tensor::zeros((4, 3), DType::F64, &Device::Cpu).unwrap();
        assert!(linear(&x, &w64, None).unwrap_err().to_string().contains("dtype"));
    }

    #[test]
    fn streaming_kernels_equal_gemm() {
        // Batches below, at and past a group of rows, at and just past the streaming limit,
        // and sizes that are not multiples of the lanes, strips, blocks or row pairs; f32
        // against candle's matmul.
        for n in [1, 3, GROUP, GROUP + 1, SKINNY, SKINNY + 1] {
            let (k, out) = (1000 + 3, 131);
            let x = Var::from_tensor(&seq((n, k), 0.01).to_dtype(DType::F32).unwrap()).unwrap();
            let w = Var::from_tensor(&seq((out, k), 0.02).to_dtype(DType::F32).unwrap()).unwrap();
            let c = seq((n, out), 0.1).to_dtype(DType::F32).unwrap();
            let y = linear(&x, &w, None).unwrap();
            let grads = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let want_y = x.matmul(&w.t().unwrap()).unwrap();
            let want_dx = c.matmul(w.as_tensor()).unwrap();
            let want_dw = c.t().unwrap().matmul(x.as_tensor()).unwrap();
            for (got, want, what) in [
                (&y, &want_y, "y"),
                (grads.get(x.as_tensor()).unwrap(), &want_dx, "dx"),
                (grads.get(w.as_tensor()).unwrap(), &want_dw, "dw"),
            ] {
                assert_eq!(got.dims(), want.dims(), "{what}, n = {n}");
                let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let err = (got - want).unwrap().abs().unwrap().max_all().unwrap();
                let err = err.to_scalar::<f32>().unwrap();
                assert!(err <= 1e-5 * scale, "{what}, n = {n}: error {err}, scale {scale}");
            }
        }
    }

    #[test]
    fn frozen_linear_equals_candle_products() {
        // Against candle's own matmul (x·Wᵀ + b, and its input gradient grad·W), in f64 and
        // f32, on batches that take the GEMM path (40 rows, and 2×20 tokens) and the streaming
        // one (3 rows); the weight's shape is not square, so a transpose mixed up would fail.
        for dtype in [DType::F64, DType::F32] {
            let w = seq((7, 33), 0.01).to_dtype(dtype).unwrap();
            let b = seq((1, 7), 0.3).reshape(7).unwrap().to_dtype(dtype).unwrap();
            let layer = FrozenLinear::new(w.clone(), Some(b.clone())).unwrap();
            for shape in [vec![40, 33], vec![2, 20, 33], vec![3, 33]] {
                let rows: usize = shape[..shape.len() - 1].iter().product();
                let x = seq((rows, 33), 0.05).to_dtype(dtype).unwrap();
                let x = Var::from_tensor(&x.reshape(shape.as_slice()).unwrap()).unwrap();
                let y = layer.forward(x.as_tensor()).unwrap();
                let x2 = x.as_tensor().reshape((rows, 33)).unwrap();
                let want = x2.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
                let mut out_shape = shape.clone();
                *out_shape.last_mut().unwrap() = 7;
                assert_eq!(y.dims(), out_shape.as_slice());
                let y2 = y.reshape((rows, 7)).unwrap().to_dtype(DType::F64).unwrap();
                let want = want.to_dtype(DType::F64).unwrap();
                let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let diff = (y2 - &want).unwrap().abs().unwrap().max_all().unwrap();
                assert!(diff.to_scalar::<f64>().unwrap() < tol, "{dtype:?} {shape:?} forward");
                // Input gradient of Σ c ⊙ y for a fixed c: c·W.
                let c = seq((rows, 7), 0.2).to_dtype(dtype).unwrap();
                let loss = (y.reshape((rows, 7)).unwrap() * &c).unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                let gx = grads.get(x.as_tensor()).unwrap().reshape((rows, 33)).unwrap();
                let want = c.matmul(&w).unwrap().to_dtype(DType::F64).unwrap();
                let diff = (gx.to_dtype(DType::F64).unwrap() - want).unwrap().abs().unwrap();
                let diff = diff.max_all().unwrap().to_scalar::<f64>().unwrap();
                assert!(diff < tol, "{dtype:?} {shape:?} input gradient: {diff}");
            }
        }
        // Bad arguments are named.
        let w = seq((7, 33), 0.01);
        let err = FrozenLinear::new(w.reshape(231).unwrap(), None).unwrap_err().to_string();
        assert!(err.contains("weight") && err.contains("[out, in]"), "{err}");
        let err = FrozenLinear::new(w.clone(), Some(seq((1, 6), 1.0).reshape(6).unwrap()));
        assert!(err.unwrap_err().to_string().contains("bias"));
        let layer = FrozenLinear::new(w, None).unwrap();
        let err = layer.forward(&seq((4, 32), 1.0)).unwrap_err().to_string();
        assert!(err.contains("input") && err.contains("33"), "{err}");
    }

    #[test]
    fn forward_block_sums_are_the_portable_bits() {
        // The AVX-512 forward (where the CPU has it) against the portable `dot_block`, bit for
        // bit: an odd number of rows (the last paired with itself), columns past the last whole
        // vector, values of mixed signs and magnitudes.
        let (rows, k) = (7usize, 16 * 5 + 11);
        let x: Vec<f32> = crate::testing::seeded(GROUP * k, 3).iter().map(|&v| v as f32).collect();
        let w: Vec<f32> =
            crate::testing::seeded(rows * k, 4).iter().map(|&v| (v * 1e3) as f32).collect();
        let got = block_sums(&x, k, &w, rows);
        assert_eq!(got.len(), rows);
        for (r, sums) in got.iter().enumerate() {
            let row = &w[r * k..(r + 1) * k];
            let want = dot_block(&x, k, [row, row])[0];
            for (g, (a, b)) in sums.iter().zip(want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "row {r}, x row {g}: {a} against {b}");
            }
        }
    }

    /// A streaming backward kernel `(grad, other, n, k, out, avx512)` of this module.
    type Backward = fn(&[f32], &[f32], usize, usize, usize, bool) -> Vec<f32>;

    /// `kernel(a, b, n, k, out, avx512)` with and without its AVX-512 path agree bit for bit
    /// on each case `(n, k, out)`: `a` holds `a_len(n, k, out)` values in [-1, 1), `b`
    /// `b_len(…)` values in [-300, 300) (seeded).
    fn same_bits_with_and_without_avx512(
        what: &str,
        kernel: Backward,
        lens: fn(usize, usize, usize) -> (usize, usize),
        cases: &[(usize, usize, usize)],
    ) {
        if !crate::simd::f32_on_avx512::<f32>() {
            eprintln!("no AVX-512 on this CPU: the portable {what} is the only one");
            return;
        }
        for &(n, k, out) in cases {
            let (a_len, b_len) = lens(n, k, out);
            let a: Vec<f32> = crate::testing::seeded(a_len, 5).iter().map(|&v| v as f32).collect();
            let b: Vec<f32> =
                crate::testing::seeded(b_len, 6).iter().map(|&v| (v * 300.0) as f32).collect();
            let (fast, slow) = (kernel(&a, &b, n, k, out, true), kernel(&a, &b, n, k, out, false));
            assert_eq!(fast.len(), slow.len(), "{what}: n {n} k {k} out {out}");
            for (i, (x, y)) in fast.iter().zip(&slow).enumerate() {
                assert_eq!(x.to_bits(), y.to_bits(), "{what}: n {n} k {k} out {out}: element {i}");
            }
        }
    }

    #[test]
    fn weight_grad_on_avx512_is_the_portable_bits() {
        // Rows not a whole group of four, columns past the last whole tile, batches of 1, 5
        // and 16.
        same_bits_with_and_without_avx512(
            "weight gradient",
            skinny_weight_grad::<f32>,
            |n, k, out| (n * out, n * k),
            &[(5, 64 * 3 + 13, 11), (1, 64, 4), (16, 150, 70)],
        );
    }

    #[test]
    fn input_grad_on_avx512_is_the_portable_bits() {
        // Weight rows not a whole block of eight nor of four (the portable loop's padded last
        // block), strips of whole vectors and one with a tail (which stays portable), batches
        // of 1, 5 and 16.
        same_bits_with_and_without_avx512(
            "input gradient",
            skinny_input_grad::<f32>,
            |n, k, out| (n * out, out * k),
            &[(5, 64, 13), (1, 1024 + 48, 6), (16, 2048 + 7, 21)],
        );
    }
}
