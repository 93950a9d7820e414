//! Bicubic resampling as PIL's `Image.resize(…, Image.BICUBIC)` computes it: the cubic
//! convolution kernel with a = −0.5 (Keys), widened by the scale factor when shrinking (so
//! that downsampling is anti-aliased, as a camera's or a super-resolution benchmark's
//! degradation is), with each output row's weights normalized to sum to 1 and the image's
//! edge handled by dropping the taps that fall outside it.
//!
//! The weights of one axis form a dense `[out, in]` matrix ([`bicubic_weights`]), so a resize
//! is two matrix products and is linear in the image: the same matrices serve as a
//! differentiable degradation operator on tensors (a super-resolution model's cycle term).
//! PIL rounds to 8 bits between its two passes and uses fixed-point weights; here both
//! passes run in f32 (the intermediate clamped to [0, 1] as PIL's is), which stays within
//! one 8-bit level of PIL's output.

use crate::error::{Error, Result};

/// Keys' cubic convolution kernel with `a = −0.5` (PIL's and Catmull–Rom's), support 2.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The `[output, input]` row-major matrix that resamples one axis of `input` samples to
/// `output` samples bicubically, as PIL does: output sample `i` is centred at input
/// coordinate `(i + 0.5)·s` with `s = input / output`; when shrinking (`s > 1`) the kernel is
/// stretched by `s` (anti-aliasing); the taps inside the image are normalized to sum to 1.
///
/// # Errors
/// [`Error::InvalidArgument`] for a size of 0.
pub fn bicubic_weights(input: usize, output: usize) -> Result<Vec<f32>> {
    if input == 0 || output == 0 {
        return Err(Error::InvalidArgument(format!(
            "bicubic resampling from {input} to {output} samples: both sizes must be at least 1"
        )));
    }
    let scale = input as f64 / output as f64;
    let stretch = scale.max(1.0);
    let support = 2.0 * stretch;
    let mut m = vec![0f32; output * input];
    for (i, row) in m.chunks_exact_mut(input).enumerate() {
        let centre = (i as f64 + 0.5) * scale;
        // PIL's window: the taps whose centres lie within the support (truncated as C does).
        let lo = ((centre - support + 0.5).max(0.0)) as usize;
        let hi = ((centre + support + 0.5) as usize).min(input);
        let taps: Vec<f64> = (lo..hi).map(|j| cubic((j as f64 - centre + 0.5) / stretch)).collect();
        let total: f64 = taps.iter().sum();
        for (j, w) in (lo..hi).zip(taps) {
            row[j] = if total != 0.0 { (w / total) as f32 } else { w as f32 };
        }
    }
    Ok(m)
}

/// A `[channels, height, width]` image (row-major f32, values in [0, 1]) resized
/// bicubically to `out_height × out_width`, width first and then height, as PIL does; like
/// PIL's 8-bit path, the intermediate after the first pass is clamped to [0, 1] (the
/// kernel's negative lobes overshoot at sharp edges). The result is not clamped: round it to
/// 8 bits with [`quantize_8bit`] to get what an image file would hold.
///
/// # Errors
/// [`Error::InvalidArgument`] when `chw` does not hold `channels·height·width` values or a
/// size is 0.
pub fn resize_bicubic(
    chw: &[f32],
    (channels, height, width): (usize, usize, usize),
    (out_height, out_width): (usize, usize),
) -> Result<Vec<f32>> {
    if chw.len() != channels * height * width {
        return Err(Error::InvalidArgument(format!(
            "bicubic resize: {} values for a {channels}×{height}×{width} image",
            chw.len()
        )));
    }
    let wx = bicubic_weights(width, out_width)?;
    let wy = bicubic_weights(height, out_height)?;
    let mut out = vec![0f32; channels * out_height * out_width];
    let mut rows = vec![0f32; height * out_width];
    for (plane, dst) in
        chw.chunks_exact(height * width).zip(out.chunks_exact_mut(out_height * out_width))
    {
        // Along the width: rows[y][o] = Σ_x plane[y][x]·wx[o][x], clamped to [0, 1] as
        // Pillow's 8-bit intermediate image clamps it.
        for (src, row) in plane.chunks_exact(width).zip(rows.chunks_exact_mut(out_width)) {
            for (o, v) in row.iter_mut().enumerate() {
                *v = dot(src, &wx[o * width..][..width]).clamp(0.0, 1.0);
            }
        }
        // Along the height: dst[o][x] = Σ_y wy[o][y]·rows[y][x].
        for (o, drow) in dst.chunks_exact_mut(out_width).enumerate() {
            drow.fill(0.0);
            for (y, &w) in wy[o * height..][..height].iter().enumerate() {
                if w != 0.0 {
                    for (d, &r) in drow.iter_mut().zip(&rows[y * out_width..][..out_width]) {
                        *d += w * r;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `Σ a·b` over two equal-length slices.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Values in [0, 1] rounded to the nearest of 256 levels (and clamped), as an 8-bit image file
/// holds them; NaN becomes 0.
pub fn quantize_8bit(values: &mut [f32]) {
    for v in values {
        let level = (*v * 255.0).round();
        *v = if level.is_nan() { 0.0 } else { level.clamp(0.0, 255.0) / 255.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_sums_to_one_and_identity_size_is_the_identity() {
        for (i, o) in [(17, 5), (96, 24), (24, 96), (7, 7), (1, 3), (3, 1)] {
            let m = bicubic_weights(i, o).unwrap();
            for row in m.chunks_exact(i) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{i}→{o}");
            }
        }
        let m = bicubic_weights(6, 6).unwrap();
        for (r, row) in m.chunks_exact(6).enumerate() {
            for (c, &w) in row.iter().enumerate() {
                assert!((w - f32::from(r == c)).abs() < 1e-7);
            }
        }
    }

    #[test]
    fn halving_uses_the_stretched_kernel() {
        // Output 1 of 8 → 4 is centred at input 3.0 (samples at 2.5 and 3.5 are ±0.5 away):
        // taps at distance d/2 for d = ±0.5, ±1.5, ±2.5, ±3.5 before normalization.
        let m = bicubic_weights(8, 4).unwrap();
        let raw: Vec<f64> = (0..8).map(|j| cubic((j as f64 + 0.5 - 3.0) / 2.0)).collect();
        let total: f64 = raw.iter().sum();
        for j in 0..8 {
            assert!((f64::from(m[8 + j]) - raw[j] / total).abs() < 1e-6, "tap {j}");
        }
    }

    #[test]
    fn bad_sizes_are_named() {
        let e = resize_bicubic(&[0.0; 5], (1, 2, 3), (1, 1)).unwrap_err().to_string();
        assert!(e.contains("5 values for a 1×2×3"), "{e}");
        let e = bicubic_weights(0, 3).unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
    }
}
