//! Argument checks shared by the ops, and the float element trait the CPU kernels are generic over.

use std::borrow::Cow;

use candle::{DType, Layout, Tensor, WithDType};

use crate::error::{invalid, Result};

/// The element types the CPU kernels run on: f32 for work, f64 for gradient checks.
pub(crate) trait Real: WithDType + PartialOrd {
    fn powf(self, e: Self) -> Self;
    fn is_nan(self) -> bool;
}

impl Real for f32 {
    fn powf(self, e: Self) -> Self {
        f32::powf(self, e)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Real for f64 {
    fn powf(self, e: Self) -> Self {
        f64::powf(self, e)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// Checks that `t` is a rank-4 f32/f64 tensor with no zero-sized dimension; returns its dims.
pub(crate) fn nchw(op: &'static str, arg: &'static str, t: &Tensor) -> Result<[usize; 4]> {
    let dims = t.dims();
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(invalid(op, arg, dims, format!("dtype {:?}, expected f32 or f64", t.dtype())));
    }
    let &[n, c, h, w] = dims else {
        return Err(invalid(op, arg, dims, format!("rank {}, expected 4 (NCHW)", dims.len())));
    };
    if dims.contains(&0) {
        return Err(invalid(op, arg, dims, "zero-sized dimension"));
    }
    Ok([n, c, h, w])
}

/// Checks that `other` has the same dtype and device as `reference`.
pub(crate) fn same_dtype_device(
    op: &'static str,
    arg: &'static str,
    other: &Tensor,
    reference: &Tensor,
) -> Result<()> {
    if other.dtype() != reference.dtype() {
        return Err(invalid(
            op,
            arg,
            other.dims(),
            format!("dtype {:?} differs from the input's {:?}", other.dtype(), reference.dtype()),
        ));
    }
    if !other.device().same_device(reference.device()) {
        return Err(invalid(op, arg, other.dims(), "on a different device than the input"));
    }
    Ok(())
}

/// Checks that a per-dimension hyper-parameter pair is at least `min`.
pub(crate) fn at_least(
    op: &'static str,
    arg: &'static str,
    value: (usize, usize),
    min: usize,
) -> Result<()> {
    if value.0 < min || value.1 < min {
        return Err(invalid(op, arg, &[], format!("{value:?}, each must be at least {min}")));
    }
    Ok(())
}

/// The elements of a CPU storage slice in row-major order of `layout`, borrowed when contiguous.
pub(crate) fn contiguous<'a, T: WithDType>(data: &'a [T], layout: &Layout) -> Cow<'a, [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Cow::Borrowed(&data[start..end]),
        None => Cow::Owned(gather(data, layout)),
    }
}

/// Copies a strided view into a new row-major vector.
fn gather<T: Copy>(data: &[T], layout: &Layout) -> Vec<T> {
    let dims = layout.dims();
    let strides = layout.stride();
    let mut out = Vec::with_capacity(layout.shape().elem_count());
    let mut idx = vec![0usize; dims.len()];
    let mut offset = layout.start_offset();
    if dims.contains(&0) {
        return out;
    }
    loop {
        out.push(data[offset]);
        // Advance the multi-index like an odometer, innermost dimension first.
        let mut d = dims.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            offset += strides[d];
            if idx[d] < dims[d] {
                break;
            }
            offset -= strides[d] * dims[d];
            idx[d] = 0;
        }
    }
}

/// Rank-4 dims of a custom op's argument (the public functions validate before this runs).
pub(crate) fn dims4(op: &'static str, arg: &'static str, layout: &Layout) -> Result<[usize; 4]> {
    match *layout.dims() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref other => Err(invalid(op, arg, other, "expected rank 4 (NCHW)")),
    }
}

/// Calls `f::<f32>(args)` or `f::<f64>(args)` by `dtype`; other dtypes are an error naming `op`.
macro_rules! by_float_dtype {
    ($op:expr, $dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle::DType::F32 => $f::<f32>($($arg),*),
            candle::DType::F64 => $f::<f64>($($arg),*),
            other => Err(candle::Error::Msg(format!("{}: dtype {other:?}, expected f32 or f64", $op))),
        }
    };
}
pub(crate) use by_float_dtype;
