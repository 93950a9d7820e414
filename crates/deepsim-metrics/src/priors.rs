//! Image priors and tolerance-aware losses: the total variation prior of Mahendran & Vedaldi's
//! inversion by optimization (*Understanding Deep Image Representations by Inverting Them*,
//! CVPR 2015, eq. 5), and an ε-insensitive colour loss whose ε is a just-noticeable
//! difference, for regressors aligned with human tolerance.

use candle::Tensor;

use crate::color::{delta_e2000, positive_pow, srgb_to_lab, Ciede2000Weights};
use crate::error::{image_pair, Error, Result};

/// ΔE00 of about 2.3 is a commonly quoted just-noticeable colour difference (Sharma 2003;
/// Mahy et al. 1994 give 2.3 for ΔE*ab).
pub const JND_DELTA_E: f64 = 2.3;

/// The TV^β prior per image: `Σ_{c,i,j} ((x_{i,j+1} − x_{i,j})² + (x_{i+1,j} − x_{i,j})²)^{β/2}`
/// over the `(H − 1) × (W − 1)` positions that have both neighbours (Mahendran & Vedaldi's
/// eq. 5; β = 2 is smooth, β = 1 the isotropic total variation). Differentiable; at a flat
/// patch (both differences 0) with β < 2 the gradient is taken as 0.
///
/// # Shapes
/// `x`: `[N, C, H, W]`, H and W at least 2 → `[N]`.
///
/// # Errors
/// Another rank, a side under 2, β not in (0, ∞).
pub fn total_variation(x: &Tensor, beta: f64) -> Result<Tensor> {
    let &[_, _, h, w] = x.dims() else {
        return Err(Error::Input {
            measure: "total_variation",
            arg: "x",
            shape: x.dims().to_vec(),
            reason: "expected [N, C, H, W]".into(),
        });
    };
    if h < 2 || w < 2 {
        return Err(Error::Input {
            measure: "total_variation",
            arg: "x",
            shape: x.dims().to_vec(),
            reason: "needs at least 2×2 pixels".into(),
        });
    }
    if !(beta.is_finite() && beta > 0.0) {
        return Err(Error::Config { what: "total_variation", reason: format!("β = {beta}") });
    }
    let base = x.narrow(2, 0, h - 1)?.narrow(3, 0, w - 1)?;
    let right = x.narrow(2, 0, h - 1)?.narrow(3, 1, w - 1)?;
    let down = x.narrow(2, 1, h - 1)?.narrow(3, 0, w - 1)?;
    let s = ((right - &base)?.sqr()? + (down - &base)?.sqr()?)?;
    let powered = if beta == 2.0 { s } else { positive_pow(&s, beta / 2.0)? };
    Ok(powered.flatten_from(1)?.sum(1)?)
}

/// The ε-insensitive colour loss per image: the mean over pixels of `max(0, ΔE00 − ε)` between
/// sRGB images in [0, 1] — differences below ε (default [`JND_DELTA_E`]) cost nothing, as a
/// viewer would not see them; above it the loss grows like ΔE00.
///
/// # Shapes
/// `a`, `b`: `[N, 3, H, W]` → `[N]`.
///
/// # Errors
/// Shapes that differ or are not `[N, 3, H, W]`; ε negative or not finite; devices other than
/// the CPU (ΔE00's hue angle).
pub fn jnd_insensitive_loss(a: &Tensor, b: &Tensor, epsilon: Option<f64>) -> Result<Tensor> {
    image_pair("jnd_insensitive_loss", a, Some(b), &[3])?;
    let eps = epsilon.unwrap_or(JND_DELTA_E);
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Config { what: "jnd_insensitive_loss", reason: format!("ε = {eps}") });
    }
    let d = delta_e2000(&srgb_to_lab(a)?, &srgb_to_lab(b)?, Ciede2000Weights::default())?;
    Ok((d - eps)?.relu()?.flatten_from(1)?.mean(1)?)
}

/// The α-norm prior of each image of `x` `[N, …]` in [0, 1]: the mean of |2x − 1|^α. `[N]`.
///
/// # Errors
/// Tensor errors.
pub fn alpha_norm(x: &Tensor, alpha: i32) -> Result<Tensor> {
    let centred = ((x * 2.0)? - 1.0)?.abs()?.flatten_from(1)?;
    Ok(centred.powf(alpha as f64)?.mean(1)?)
}

#[cfg(test)]
mod alpha_tests {
    use super::*;

    #[test]
    fn alpha_norm_by_hand() {
        // |2x − 1|^6: 0 at grey, 1 at the bounds, 0.5^6 at 0.75.
        let x = Tensor::from_vec(vec![0.5f32, 1.0, 0.0, 0.75], (4, 1, 1, 1), &candle::Device::Cpu)
            .unwrap();
        let a = alpha_norm(&x, 6).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, [0.0, 1.0, 1.0, 0.015625]);
    }
}
