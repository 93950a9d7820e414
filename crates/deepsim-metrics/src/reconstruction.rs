//! Measures of reconstructions against their targets that need no network: the paper's
//! normalized error (Table 2) and the edge ratio (sharpness relative to the targets).

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
        return Err(Error::Input {
            measure: "normalized_error",
            arg: "a",
            shape: a.dims().to_vec(),
            reason: format!("needs two [N ≥ 2, …] tensors of one shape; `b` is {:?}", b.dims()),
        });
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
        return Err(Error::Input {
            measure: "normalized_error",
            arg: "b",
            shape: b.dims().to_vec(),
            reason: "every target is the same".into(),
        });
    }
    Ok(err / mean_pair)
}

/// Sharpness of reconstructions relative to their targets: the mean absolute difference
/// between neighbouring pixels (horizontal and vertical) of `a` over that of `b`. Blurred
/// reconstructions score below 1 (a 3×3 box blur of four demo tiles: 0.69); noise and
/// up-convolution grids score above the target's detail.
///
/// # Shapes
/// `a`, `b`: `[N, C, H, W]`, the same, H and W ≥ 2.
///
/// # Errors
/// Different or too small shapes, or flat targets.
pub fn edge_ratio(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = b.dims();
    if a.dims() != d || d.len() != 4 || d[2] < 2 || d[3] < 2 {
        return Err(Error::Input {
            measure: "edge_ratio",
            arg: "a",
            shape: a.dims().to_vec(),
            reason: format!("needs two [N, C, H ≥ 2, W ≥ 2] tensors of one shape; `b` is {d:?}"),
        });
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
        return Err(Error::Input {
            measure: "edge_ratio",
            arg: "b",
            shape: d.to_vec(),
            reason: "the targets are flat".into(),
        });
    }
    Ok(energy(a)? / target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    /// Demo tiles as `[N, 3, 80, 80]`.
    fn tiles(names: &[&str]) -> Tensor {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/val");
        let mut v = Vec::new();
        for name in names {
            let img = image::open(dir.join(name)).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (80, 80));
            for c in 0..3 {
                v.extend(img.pixels().map(|p| f32::from(p[c]) / 255.0));
            }
        }
        Tensor::from_vec(v, (names.len(), 3, 80, 80), &Device::Cpu).unwrap()
    }

    /// A 3×3 box blur with edge replication, by hand.
    fn box_blur(x: &Tensor) -> Tensor {
        let (n, c, h, w) = x.dims4().unwrap();
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![0f32; v.len()];
        for plane in 0..n * c {
            for y in 0..h {
                for xx in 0..w {
                    let mut s = 0.0;
                    for dy in -1i64..=1 {
                        for dx in -1i64..=1 {
                            let yy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                            let xs = (xx as i64 + dx).clamp(0, w as i64 - 1) as usize;
                            s += v[(plane * h + yy) * w + xs];
                        }
                    }
                    out[(plane * h + y) * w + xx] = s / 9.0;
                }
            }
        }
        Tensor::from_vec(out, (n, c, h, w), &Device::Cpu).unwrap()
    }

    const TILES: [&str; 4] = [
        "astronaut_s400_r1_c0.jpg",
        "brick_s400_r1_c3.jpg",
        "chelsea_s240_r0_c2.jpg",
        "gravel_s400_r0_c3.jpg",
    ];

    #[test]
    fn normalized_error_is_zero_for_identity_and_one_for_a_derangement() {
        let x = tiles(&TILES);
        assert_eq!(normalized_error(&x, &x).unwrap(), 0.0);
        // Each reconstruction is another target: the error is the mean distance to that
        // other image, which over all rotations of the order averages to exactly 100 %.
        let n = TILES.len();
        let mut mean = 0.0;
        for shift in 1..n {
            let idx: Vec<u32> = (0..n).map(|i| ((i + shift) % n) as u32).collect();
            let idx = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
            mean += normalized_error(&x.index_select(&idx, 0).unwrap(), &x).unwrap();
        }
        mean /= (n - 1) as f64;
        assert!((mean - 1.0).abs() < 1e-9, "{mean}");
        assert!(normalized_error(&x.narrow(0, 0, 1).unwrap(), &x.narrow(0, 0, 1).unwrap()).is_err());
    }

    #[test]
    fn edge_ratio_is_one_for_identity_and_low_for_blur() {
        let x = tiles(&TILES);
        assert!((edge_ratio(&x, &x).unwrap() - 1.0).abs() < 1e-12);
        let blurred = edge_ratio(&box_blur(&x), &x).unwrap();
        assert!((0.6..0.8).contains(&blurred), "3×3 box blur: {blurred}");
        let flat = x.zeros_like().unwrap();
        assert!(edge_ratio(&x, &flat).is_err());
        assert!(edge_ratio(&x, &x.narrow(0, 0, 2).unwrap()).is_err());
    }
}
