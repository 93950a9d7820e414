//! Argument checks shared by the ops, and the float element trait the CPU kernels are generic over.

use std::borrow::Cow;
use std::cell::RefCell;
use std::thread::LocalKey;

use candle::{DType, Layout, Tensor, WithDType};

use crate::error::{invalid, Result};

/// The element types the CPU kernels run on: f32 for work, f64 for gradient checks.
pub(crate) trait Real: WithDType + PartialOrd {
    fn powf(self, e: Self) -> Self;
    fn exp(self) -> Self;
    fn erf(self) -> Self;
    fn is_nan(self) -> bool;
    /// This thread's scratch buffer of this type (see [`with_scratch`]).
    fn scratch() -> &'static LocalKey<RefCell<Vec<Self>>>;
}

thread_local! {
    static SCRATCH_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl Real for f32 {
    fn powf(self, e: Self) -> Self {
        f32::powf(self, e)
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn erf(self) -> Self {
        candle::cpu::erf::erf_f32(self)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn scratch() -> &'static LocalKey<RefCell<Vec<Self>>> {
        &SCRATCH_F32
    }
}

impl Real for f64 {
    fn powf(self, e: Self) -> Self {
        f64::powf(self, e)
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn erf(self) -> Self {
        candle::cpu::erf::erf_f64(self)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn scratch() -> &'static LocalKey<RefCell<Vec<Self>>> {
        &SCRATCH_F64
    }
}

/// Scratch buffers larger than this (elements) are not kept between calls.
const SCRATCH_KEEP: usize = 64 << 20;

/// Runs `f` on `len` elements of scratch memory with unspecified contents (callers overwrite
/// what they read), starting on a 64-byte boundary (a cache line: the Winograd tiles and the
/// GEMM operands move in 64-byte vectors, each of which would otherwise straddle two lines).
/// Each thread keeps its buffer between calls, so the im2col columns and Winograd tiles of
/// every layer reuse memory that is already mapped, instead of faulting in fresh pages each
/// call (which cost a sixth of a perceptual loss step on two threads). A thread that is
/// already inside `with_scratch` (a rayon job run while it waits) gets a fresh buffer.
pub(crate) fn with_scratch<T: Real, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut f = Some(f);
    // Elements of slack that let the slice start on a line boundary.
    let slack = LINE / size_of::<T>();
    let kept = T::scratch().with(|cell| {
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return None;
        };
        if buf.len() < len + slack {
            buf.resize(len + slack, T::zero());
        }
        let skip = aligned_start(&buf);
        let out = (f.take().expect("called once"))(&mut buf[skip..skip + len]);
        if buf.len() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        Some(out)
    });
    match kept {
        Some(out) => out,
        None => {
            let mut buf = vec![T::zero(); len + slack];
            let skip = aligned_start(&buf);
            (f.take().expect("not called yet"))(&mut buf[skip..skip + len])
        }
    }
}

/// A cache line, in bytes.
const LINE: usize = 64;

/// The first index of `buf` whose element starts on a cache line.
fn aligned_start<T>(buf: &[T]) -> usize {
    buf.as_ptr().align_offset(LINE).min(buf.len())
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
