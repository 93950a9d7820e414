//! Strided slicing and zero-dilation from candle's built-ins (differentiable on every device),
//! for the composite implementations.

use candle::Tensor;

use crate::error::Result;

/// Elements `start, start + step, …` (`len` of them) along `dim`; positions past the end read 0.
pub(crate) fn strided_slice(
    t: &Tensor,
    dim: usize,
    start: usize,
    len: usize,
    step: usize,
) -> Result<Tensor> {
    let avail = t.dim(dim)?.saturating_sub(start).min(len * step);
    let x = t.narrow(dim, start, avail)?.pad_with_zeros(dim, 0, len * step - avail)?;
    let mut dims = t.dims().to_vec();
    dims.splice(dim..=dim, [len, step]);
    Ok(x.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?)
}

/// Inserts `factor − 1` zeros between neighbouring elements along `dim`: length L becomes
/// `(L − 1)·factor + 1` ("bed of nails" up-sampling, or a dilated kernel).
pub(crate) fn dilate(t: &Tensor, dim: usize, factor: usize) -> Result<Tensor> {
    if factor == 1 {
        return Ok(t.clone());
    }
    let len = t.dim(dim)?;
    let x = t.unsqueeze(dim + 1)?.pad_with_zeros(dim + 1, 0, factor - 1)?;
    let mut dims = t.dims().to_vec();
    dims[dim] = len * factor;
    Ok(x.reshape(dims)?.narrow(dim, 0, (len - 1) * factor + 1)?)
}
