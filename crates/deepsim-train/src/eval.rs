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

/// Sharpness of reconstructions relative to their targets: the mean absolute difference
/// between neighbouring pixels (horizontal and vertical) of `a` over that of `b`. Blurred
/// reconstructions score below 1 (a 3×3 box blur of a photo: about 0.4–0.6); noise scores
/// above the target's detail.
///
/// # Shapes
/// `a`, `b`: `[N, C, H, W]`, the same, H and W ≥ 2.
///
/// # Errors
/// Different or too small shapes, or flat targets.
pub fn edge_ratio(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = b.dims();
    if a.dims() != d || d.len() != 4 || d[2] < 2 || d[3] < 2 {
        return Err(Error::Config(format!(
            "edge_ratio: needs two [N, C, H ≥ 2, W ≥ 2] tensors of one shape, got {:?} and {:?}",
            a.dims(),
            d
        )));
    }
    let energy = |x: &Tensor| -> Result<f64> {
        let x = x.to_dtype(DType::F64)?;
        let (h, w) = (d[2], d[3]);
        let dx = (x.narrow(3, 1, w - 1)? - x.narrow(3, 0, w - 1)?)?.abs()?.mean_all()?;
        let dy = (x.narrow(2, 1, h - 1)? - x.narrow(2, 0, h - 1)?)?.abs()?.mean_all()?;
        Ok(dx.to_scalar::<f64>()? + dy.to_scalar::<f64>()?)
    };
    let target = energy(b)?;
    if target <= 0.0 {
        return Err(Error::Config("edge_ratio: the targets are flat".into()));
    }
    Ok(energy(a)? / target)
}
