//! A trainable layer's epilogue in one pass each way: a per-channel bias, then a leaky ReLU.
//!
//! Written with candle's built-ins, `leaky_relu(conv(x) + b)` is a broadcast add and four
//! elementwise ops forward; backward adds a comparison mask, several products, a zeroed
//! gradient per node and — for the bias — a sum over the batch and spatial dimensions that
//! candle runs as a generic strided reduction (a tenth of the paper's 256-pixel generator step
//! on the CPU). Here the forward pass is one pass over the map, the input gradient one pass
//! over the output gradient, and the bias gradient one pass over the input gradient.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{by_float_dtype, contiguous, same_dtype_device, Real};
use crate::error::{invalid, Result};
use crate::grads::deliver_grad;
use crate::simd::vectorized;

/// `y = φ(x + b[c])` over the channel dimension (dim 1) of `x`, where `φ(v) = v` for `v > 0`
/// and `α·v` otherwise: a leaky ReLU of slope `alpha` (the paper's generator uses 0.3).
/// `alpha = 1` adds the bias alone; `alpha = 0` is a ReLU (gradient 0 at 0, as PyTorch's).
///
/// Differentiable w.r.t. `x` and `bias`, to any order where candle keeps gradient graphs
/// (`CANDLE_GRAD_DO_NOT_DETACH`): the backward passes are themselves custom ops with
/// backward passes. On devices other than the CPU it runs the same formula, with the same
/// gradient at 0, as candle ops.
///
/// ```
/// use candle::{Device, Tensor};
///
/// # fn main() -> deepsim_kernels::Result<()> {
/// let x = Tensor::new(&[[-2f32, 1.0], [0.5, -1.0]], &Device::Cpu)?; // [N = 2, C = 2]
/// let b = Tensor::new(&[1f32, -2.0], &Device::Cpu)?;
/// let y = deepsim_kernels::bias_leaky_relu(&x, &b, 0.5)?;
/// assert_eq!(y.to_vec2::<f32>()?, [[-0.5, -0.5], [1.5, -1.5]]);
/// # Ok(())
/// # }
/// ```
///
/// # Shapes
/// `x` `[N, C, …]` (rank 2 or more), `bias` `[C]` → the shape of `x`.
///
/// # Errors
/// `x` of rank below 2 or with a zero-sized dimension, a bias of another length, dtype or
/// device, a dtype other than f32/f64, or an `alpha` that is negative or not finite.
pub fn bias_leaky_relu(x: &Tensor, bias: &Tensor, alpha: f64) -> Result<Tensor> {
    const OP: &str = "bias_leaky_relu";
    if !matches!(x.dtype(), candle::DType::F32 | candle::DType::F64) {
        return Err(invalid(
            OP,
            "x",
            x.dims(),
            format!("dtype {:?}, expected f32 or f64", x.dtype()),
        ));
    }
    if x.rank() < 2 || x.dims().contains(&0) {
        return Err(invalid(OP, "x", x.dims(), "expected [N, C, …] with no zero-sized dimension"));
    }
    let c = x.dim(1)?;
    if bias.dims() != [c] {
        return Err(invalid(OP, "bias", bias.dims(), format!("expected [{c}], one per channel")));
    }
    same_dtype_device(OP, "bias", bias, x)?;
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(invalid(OP, "alpha", &[], format!("{alpha}: expected a finite slope ≥ 0")));
    }
    if !x.device().is_cpu() {
        return composite(x, bias, alpha);
    }
    Ok(x.apply_op2(bias, BiasLeakyRelu { alpha })?)
}

/// `y + b` over dim 1, for the ops that take a bias argument ([`crate::conv2d`],
/// [`crate::conv_transpose2d`], [`crate::linear`]) on the CPU: [`bias_leaky_relu`] with slope 1,
/// whose bias gradient is one pass (candle's broadcast add differentiates through a strided
/// reduction), or a broadcast add for an empty `y`, which that op refuses.
pub(crate) fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(b) = bias else { return Ok(y) };
    if y.elem_count() == 0 {
        let mut column = vec![1; y.rank()];
        column[1] = b.dim(0)?;
        return Ok(y.broadcast_add(&b.reshape(column)?)?);
    }
    bias_leaky_relu(&y, b, 1.0)
}

/// The same from candle's built-ins: `v · s` with `v = x + b` and the slope `s` (1 where
/// `v > 0`, α elsewhere) a constant, so the gradient at `v = 0` is α as on the CPU (candle's
/// `relu` would give 1 there).
fn composite(x: &Tensor, bias: &Tensor, alpha: f64) -> Result<Tensor> {
    let mut column = vec![1; x.rank()];
    column[1] = bias.dim(0)?;
    let v = x.broadcast_add(&bias.reshape(column)?)?;
    if alpha == 1.0 {
        return Ok(v);
    }
    let slope = v.gt(0.0)?.to_dtype(v.dtype())?.affine(1.0 - alpha, alpha)?.detach();
    Ok((v * slope)?)
}

/// `(channels, elements per channel and image)` of a contiguous `[N, C, …]` layout.
fn planes(layout: &Layout) -> (usize, usize) {
    let dims = layout.dims();
    (dims[1], dims[2..].iter().product())
}

/// Elements handed to one parallel task: whole planes, at least this many elements.
const TASK: usize = 1 << 14;

/// Splits `out` (row-major `[N, C, inner]`) into tasks of whole planes and calls
/// `f(channel, plane offset, plane of out)` on each plane.
fn for_each_plane<T: Real>(
    out: &mut [T],
    c: usize,
    inner: usize,
    f: impl Fn(usize, usize, &mut [T]) + Sync,
) {
    let per_task = TASK.div_ceil(inner).max(1);
    out.par_chunks_mut(per_task * inner).enumerate().for_each(|(task, chunk)| {
        vectorized(
            #[inline(always)]
            || {
                for (k, plane) in chunk.chunks_mut(inner).enumerate() {
                    let p = task * per_task + k;
                    f(p % c, p * inner, plane);
                }
            },
        )
    });
}

/// The forward op: `(x, bias) → φ(x + bias)`.
struct BiasLeakyRelu {
    alpha: f64,
}

impl CustomOp2 for BiasLeakyRelu {
    fn name(&self) -> &'static str {
        "deepsim-bias-leaky-relu"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            alpha: f64,
            x: &CpuStorage,
            xl: &Layout,
            b: &CpuStorage,
            bl: &Layout,
        ) -> candle::Result<CpuStorage> {
            let x = contiguous(x.as_slice::<T>()?, xl);
            let b = contiguous(b.as_slice::<T>()?, bl);
            let (c, inner) = planes(xl);
            let a = T::from_f64(alpha);
            let mut out = vec![T::zero(); x.len()];
            if inner == 1 {
                // [N, C] (a fully connected layer's output): rows against the bias vector, not
                // N·C planes of one element.
                let task = TASK.div_ceil(c).max(1) * c;
                out.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(dst, src)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for (d_row, s_row) in dst.chunks_mut(c).zip(src.chunks(c)) {
                                let row = d_row.iter_mut().zip(s_row).zip(b.iter());
                                if alpha == 1.0 {
                                    row.for_each(|((d, &v), &bias)| *d = v + bias);
                                } else {
                                    row.for_each(|((d, &v), &bias)| {
                                        let v = v + bias;
                                        *d = if v > T::zero() { v } else { a * v };
                                    });
                                }
                            }
                        },
                    )
                });
                return Ok(T::to_cpu_storage_owned(out));
            }
            for_each_plane(&mut out, c, inner, |ch, at, dst| {
                let bias = b[ch];
                for (d, &v) in dst.iter_mut().zip(&x[at..at + inner]) {
                    let v = v + bias;
                    *d = if v > T::zero() { v } else { a * v };
                }
            });
            Ok(T::to_cpu_storage_owned(out))
        }
        let out = by_float_dtype!("bias_leaky_relu", x.dtype(), go(self.alpha, x, xl, b, bl))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        // φ keeps the sign of v for α > 0, and maps v ≤ 0 to 0 for α = 0, so y > 0 exactly
        // where v > 0: the output alone gives the slope.
        let dv = if self.alpha == 1.0 {
            grad.clone()
        } else {
            grad.apply_op2(y, SlopeMask { alpha: self.alpha })?
        };
        let db = if b.track_op() { deliver_grad(b, dv.apply_op1(ChannelSum)?)? } else { None };
        let dx = if x.track_op() { Some(dv) } else { None };
        Ok((dx, db))
    }
}

/// `(g, y) → g · φ'(y)`: 1 where `y > 0`, α elsewhere. Linear in `g`, so its own backward
/// is the same mask; `y` is treated as a constant (φ' is piecewise constant).
struct SlopeMask {
    alpha: f64,
}

impl CustomOp2 for SlopeMask {
    fn name(&self) -> &'static str {
        "deepsim-leaky-relu-slope"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        gl: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            alpha: f64,
            g: &CpuStorage,
            gl: &Layout,
            y: &CpuStorage,
            yl: &Layout,
        ) -> candle::Result<CpuStorage> {
            let g = contiguous(g.as_slice::<T>()?, gl);
            let y = contiguous(y.as_slice::<T>()?, yl);
            let a = T::from_f64(alpha);
            let mut out = vec![T::zero(); g.len()];
            out.par_chunks_mut(TASK).zip(g.par_chunks(TASK).zip(y.par_chunks(TASK))).for_each(
                |(dst, (g, y))| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for ((d, &g), &y) in dst.iter_mut().zip(g).zip(y) {
                                *d = if y > T::zero() { g } else { a * g };
                            }
                        },
                    )
                },
            );
            Ok(T::to_cpu_storage_owned(out))
        }
        if gl.shape() != yl.shape() {
            return Err(candle::Error::Msg(format!(
                "bias_leaky_relu backward: gradient {:?} and output {:?} differ",
                gl.dims(),
                yl.dims()
            )));
        }
        let out = by_float_dtype!("bias_leaky_relu", g.dtype(), go(self.alpha, g, gl, y, yl))?;
        Ok((out, gl.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let dg =
            if g.track_op() { Some(grad.apply_op2(y, Self { alpha: self.alpha })?) } else { None };
        // candle expects a gradient for every tracked argument; φ' is flat almost everywhere.
        let dy = if y.track_op() { Some(y.zeros_like()?) } else { None };
        Ok((dg, dy))
    }
}

/// `[N, C, …] → [C]`: the sum of each channel over the batch and the other dimensions (the
/// bias gradient).
struct ChannelSum;

/// Partial sums per plane run in this many independent lanes, so the loop vectorizes and the
/// rounding error grows with the plane's length over the lane count.
const LANES: usize = 16;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "deepsim-channel-sum"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(g: &CpuStorage, gl: &Layout) -> candle::Result<CpuStorage> {
            let g = contiguous(g.as_slice::<T>()?, gl);
            let (c, inner) = planes(gl);
            if inner == 1 {
                // [N, C]: each task sums its rows per column in f64; the tasks' sums are then
                // added in order (a fixed split, so the result does not depend on the threads).
                let task = TASK.div_ceil(c).max(1) * c;
                let partial: Vec<Vec<f64>> = g
                    .par_chunks(task)
                    .map(|rows| {
                        let mut acc = vec![0f64; c];
                        for row in rows.chunks(c) {
                            for (a, &v) in acc.iter_mut().zip(row) {
                                *a += v.to_f64();
                            }
                        }
                        acc
                    })
                    .collect();
                let mut sums = vec![0f64; c];
                for p in partial {
                    for (s, v) in sums.iter_mut().zip(p) {
                        *s += v;
                    }
                }
                return Ok(T::to_cpu_storage_owned(sums.into_iter().map(T::from_f64).collect()));
            }
            let plane_sum = |plane: &[T]| -> f64 {
                let mut lanes = [T::zero(); LANES];
                let mut blocks = plane.chunks_exact(LANES);
                for block in &mut blocks {
                    for (l, &v) in lanes.iter_mut().zip(block) {
                        *l += v;
                    }
                }
                let tail: f64 = blocks.remainder().iter().map(|v| v.to_f64()).sum();
                lanes.iter().map(|v| v.to_f64()).sum::<f64>() + tail
            };
            // One f64 partial per plane (in parallel), then each channel's planes added in order.
            let per_plane: Vec<f64> = g.par_chunks(inner).map(plane_sum).collect();
            let mut sums = vec![0f64; c];
            for (p, s) in per_plane.iter().enumerate() {
                sums[p % c] += s;
            }
            Ok(T::to_cpu_storage_owned(sums.into_iter().map(T::from_f64).collect()))
        }
        let out = by_float_dtype!("bias_leaky_relu", g.dtype(), go(g, gl))?;
        Ok((out, Shape::from(gl.dims()[1])))
    }

    fn bwd(&self, g: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let mut column = vec![1; g.rank()];
        column[1] = grad.dim(0)?;
        Ok(Some(grad.reshape(column)?.broadcast_as(g.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Var};

    use crate::testing::seq;

    #[test]
    fn kernel_equals_the_composite_with_its_gradients() {
        // Plane sizes below and above one task, rank 2, 3 and 4, α at 0, 0.3 and 1.
        // Rank 2 takes its own row-wise path: [300, 70] spans several tasks.
        for dims in [vec![3, 5], vec![300, 70], vec![2, 3, 7], vec![2, 3, 80, 90], vec![5, 2, 4, 4]]
        {
            for alpha in [0.0, 0.3, 1.0] {
                let x = Var::from_tensor(&seq(&dims, 0.1)).unwrap();
                let b = Var::from_tensor(&seq(&dims[1..2], 0.0713)).unwrap();
                let r = seq(&dims, 0.01).sin().unwrap();
                let run = |y: Tensor| {
                    let g = (y.clone() * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let grad = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
                    (y, grad(&x), grad(&b))
                };
                let got = run(bias_leaky_relu(&x, &b, alpha).unwrap());
                let want = run(composite(&x, &b, alpha).unwrap());
                // Exact zeros of x + b (x holds zeros; a zero bias keeps them): slope α there.
                let zero_b = Var::from_tensor(&b.zeros_like().unwrap()).unwrap();
                let at_zero = |y: Tensor| {
                    let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    g.get(x.as_tensor()).unwrap().clone()
                };
                let zero_got = at_zero(bias_leaky_relu(&x, &zero_b, alpha).unwrap());
                let zero_want = at_zero(composite(&x, &zero_b, alpha).unwrap());
                let diff = (zero_got - zero_want).unwrap().abs().unwrap().max_all().unwrap();
                let diff = diff.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                assert!(diff < 1e-12, "{dims:?} α {alpha}: dx at v = 0 differs by {diff}");
                for (g, w, what) in
                    [(got.0, want.0, "y"), (got.1, want.1, "dx"), (got.2, want.2, "db")]
                {
                    let diff = (g - w).unwrap().abs().unwrap().max_all().unwrap();
                    let diff = diff.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                    // The bias gradient sums up to 14,400 terms in another order.
                    assert!(diff < 1e-10, "{dims:?} α {alpha}: {what} differs by {diff}");
                }
            }
        }
    }
}
