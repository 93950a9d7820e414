//! The paper's normalized reconstruction error (Table 2).

use candle::{DType, Tensor};

use crate::error::{Error, Result};

/// `mean_i ‖a_i − b_i‖₂ / mean_{i≠j} ‖b_i − b_j‖₂`: the mean Euclidean distance between each
/// reconstruction and its target, divided by the mean distance between two different targets
/// (Table 2 of the paper: 100 % is as good as returning a random other test image).
///
/// # Shapes
/// `a`, `b`: `[N, …]`, the same, N ≥ 2 (rows are flattened).
///
/// # Errors
/// Different shapes, fewer than two samples, or targets that are all equal.
pub fn normalized_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() || a.dims().is_empty() || a.dim(0)? < 2 {
        return Err(Error::Config(format!(
            "normalized_error: needs two [N ≥ 2, …] tensors of one shape, got {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    let a = a.flatten_from(1)?.to_dtype(DType::F64)?;
    let b = b.flatten_from(1)?.to_dtype(DType::F64)?;
    let n = b.dim(0)?;
    let err = (&a - &b)?.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f64>()?;
    // Pairwise distances from the Gram matrix: ‖x − y‖² = ‖x‖² + ‖y‖² − 2⟨x, y⟩.
    let sq = b.sqr()?.sum_keepdim(1)?;
    let gram = b.matmul(&b.t()?)?;
    let d2 = (sq.broadcast_add(&sq.t()?)? - (gram * 2.0)?)?.relu()?;
    let d = d2.sqrt()?.to_vec2::<f64>()?;
    let mut total = 0.0;
    for (i, row) in d.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            if i != j {
                total += v;
            }
        }
    }
    let mean_pair = total / (n * (n - 1)) as f64;
    if mean_pair <= 0.0 {
        return Err(Error::Config("normalized_error: every target is the same".into()));
    }
    Ok(err / mean_pair)
}
