//! Colour spaces and colour differences, differentiable: sRGB ↔ linear RGB ↔ XYZ (D65) ↔
//! CIELAB, ΔE*ab (CIE 1976) and ΔE00 (CIEDE2000, as Sharma, Wu & Dalal 2005 spell it out), and
//! an opponent colour space (luminance, red–green, blue–yellow) with a loss that can weigh
//! colour above luminance.
//!
//! Images are NCHW with 3 channels; sRGB values in [0, 1]; Lab as (L*, a*, b*) in the usual
//! units (L* in 0–100). The constants are scikit-image's (`rgb2lab`: its sRGB→XYZ matrix, the
//! D65 2° white point 0.95047, 1, 1.08883), so conversions agree with it to rounding.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::error::{image_pair, Error, Result};

/// sRGB → XYZ (D65), scikit-image's `xyz_from_rgb`.
pub(crate) const XYZ_FROM_RGB: [[f64; 3]; 3] = [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
];
/// The D65 white point (2° observer).
pub(crate) const WHITE: [f64; 3] = [0.95047, 1.0, 1.08883];
/// CIELAB's δ = 6/29: below δ³ the cube root is replaced by a line.
pub(crate) const DELTA: f64 = 6.0 / 29.0;

/// `t` where `cond` holds, else `f`; gradients flow only to the chosen side. Both sides must
/// be finite everywhere (clamp their inputs), or a NaN gradient leaks through candle's
/// `where_cond` backward.
fn select(cond: &Tensor, t: &Tensor, f: &Tensor) -> Result<Tensor> {
    Ok(cond.where_cond(t, f)?)
}

/// `max(x, v)` whose gradient is 0 where `x ≤ v` (unlike candle's `maximum` at ties).
pub(crate) fn floor_at(x: &Tensor, v: f64) -> Result<Tensor> {
    let keep = x.gt(v)?;
    select(&keep, x, &x.ones_like()?.affine(0.0, v)?)
}

/// `x^p` for x ≥ 0 and p > 0 with gradient 0 at x = 0 (instead of ∞ · 0 = NaN): colour
/// differences of identical colours, and flat patches under a TV prior, stay differentiable.
pub(crate) fn positive_pow(x: &Tensor, p: f64) -> Result<Tensor> {
    let positive = x.gt(0.0)?;
    let safe = select(&positive, x, &x.ones_like()?)?;
    select(&positive, &safe.powf(p)?, &x.zeros_like()?)
}

/// `√x` for x ≥ 0, see [`positive_pow`].
fn safe_sqrt(x: &Tensor) -> Result<Tensor> {
    positive_pow(x, 0.5)
}

/// sRGB's transfer function undone: sRGB values in [0, 1] → linear RGB.
///
/// # Errors
/// From candle.
pub fn srgb_to_linear(x: &Tensor) -> Result<Tensor> {
    let low = (x / 12.92)?;
    let high = ((floor_at(x, 0.04045)? + 0.055)? / 1.055)?.powf(2.4)?;
    select(&x.gt(0.04045)?, &high, &low)
}

/// Linear RGB → sRGB values (the inverse of [`srgb_to_linear`]).
///
/// # Errors
/// From candle.
pub fn linear_to_srgb(x: &Tensor) -> Result<Tensor> {
    let low = (x * 12.92)?;
    let high = ((floor_at(x, 0.0031308)?.powf(1.0 / 2.4)? * 1.055)? - 0.055)?;
    select(&x.gt(0.0031308)?, &high, &low)
}

/// A 3×3 matrix applied to the channels of `[N, 3, H, W]`.
fn mix(x: &Tensor, m: &[[f64; 3]; 3]) -> Result<Tensor> {
    let ch: Vec<Tensor> = (0..3).map(|c| x.narrow(1, c, 1)).collect::<candle::Result<_>>()?;
    let rows = m
        .iter()
        .map(|row| {
            let mut acc = (&ch[0] * row[0])?;
            for k in 1..3 {
                acc = (acc + (&ch[k] * row[k])?)?;
            }
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 1)?)
}

/// sRGB `[N, 3, H, W]` in [0, 1] → CIELAB `[N, 3, H, W]` (L*, a*, b*), D65.
///
/// # Errors
/// Not `[N, 3, H, W]`.
pub fn srgb_to_lab(rgb: &Tensor) -> Result<Tensor> {
    image_pair("srgb_to_lab", rgb, None, &[3])?;
    let xyz = mix(&srgb_to_linear(rgb)?, &XYZ_FROM_RGB)?;
    let f = |c: usize| -> Result<Tensor> {
        let t = (xyz.narrow(1, c, 1)? / WHITE[c])?;
        let cube = floor_at(&t, DELTA.powi(3))?.powf(1.0 / 3.0)?;
        let line = ((&t / (3.0 * DELTA * DELTA))? + 4.0 / 29.0)?;
        select(&t.gt(DELTA.powi(3))?, &cube, &line)
    };
    let (fx, fy, fz) = (f(0)?, f(1)?, f(2)?);
    let l = ((&fy * 116.0)? - 16.0)?;
    let a = ((fx - &fy)? * 500.0)?;
    let b = ((fy - fz)? * 200.0)?;
    Ok(Tensor::cat(&[l, a, b], 1)?)
}

/// CIELAB → sRGB values (not clipped to [0, 1]: out-of-gamut colours stay visible).
///
/// # Errors
/// Not `[N, 3, H, W]`.
pub fn lab_to_srgb(lab: &Tensor) -> Result<Tensor> {
    image_pair("lab_to_srgb", lab, None, &[3])?;
    let fy = ((lab.narrow(1, 0, 1)? + 16.0)? / 116.0)?;
    let fx = ((lab.narrow(1, 1, 1)? / 500.0)? + &fy)?;
    let fz = (&fy - (lab.narrow(1, 2, 1)? / 200.0)?)?;
    let inv = |f: &Tensor, c: usize| -> Result<Tensor> {
        let cube = f.powf(3.0)?;
        let line = ((f - 4.0 / 29.0)? * (3.0 * DELTA * DELTA))?;
        Ok((select(&f.gt(DELTA)?, &cube, &line)? * WHITE[c])?)
    };
    let xyz = Tensor::cat(&[inv(&fx, 0)?, inv(&fy, 1)?, inv(&fz, 2)?], 1)?;
    linear_to_srgb(&mix(&xyz, &invert(&XYZ_FROM_RGB))?)
}

pub(crate) fn invert(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c = |r: usize, k: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (k1, k2) = ((k + 1) % 3, (k + 2) % 3);
        m[r1][k1] * m[r2][k2] - m[r1][k2] * m[r2][k1]
    };
    std::array::from_fn(|i| std::array::from_fn(|j| c(j, i) / det))
}

/// ΔE*ab (CIE 1976): the Euclidean distance in CIELAB, per pixel.
///
/// # Shapes
/// `lab1`, `lab2`: `[N, 3, H, W]` → `[N, 1, H, W]`.
///
/// # Errors
/// Shapes that differ or are not `[N, 3, H, W]`.
pub fn delta_e76(lab1: &Tensor, lab2: &Tensor) -> Result<Tensor> {
    image_pair("delta_e76", lab1, Some(lab2), &[3])?;
    safe_sqrt(&(lab1 - lab2)?.sqr()?.sum_keepdim(1)?)
}

/// The weights kL, kC, kH of ΔE00 (1, 1, 1 for the reference conditions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ciede2000Weights {
    /// kL, on lightness.
    pub l: f64,
    /// kC, on chroma.
    pub c: f64,
    /// kH, on hue.
    pub h: f64,
}

impl Default for Ciede2000Weights {
    fn default() -> Self {
        Self { l: 1.0, c: 1.0, h: 1.0 }
    }
}

/// ΔE00 (CIEDE2000) per pixel, following Sharma, Wu & Dalal, *The CIEDE2000 Color-Difference
/// Formula: Implementation Notes, Supplementary Test Data, and Mathematical Observations*
/// (2005), eqs. 1–22, including their conventions for achromatic colours (hue 0, mean hue the
/// sum). Differentiable (first order) wherever the formula is; where it has kinks (hue
/// wrap-around, zero chroma) the gradient is one side's.
///
/// # Shapes
/// `lab1`, `lab2`: `[N, 3, H, W]` → `[N, 1, H, W]`.
///
/// # Errors
/// Shapes that differ or are not `[N, 3, H, W]`; on devices other than the CPU (its hue angle
/// needs an `atan2` kernel that candle lacks there).
pub fn delta_e2000(lab1: &Tensor, lab2: &Tensor, k: Ciede2000Weights) -> Result<Tensor> {
    image_pair("delta_e2000", lab1, Some(lab2), &[3])?;
    let part = |t: &Tensor, c: usize| t.narrow(1, c, 1);
    let (l1, a1, b1) = (part(lab1, 0)?, part(lab1, 1)?, part(lab1, 2)?);
    let (l2, a2, b2) = (part(lab2, 0)?, part(lab2, 1)?, part(lab2, 2)?);
    let pow7 = |t: &Tensor| t.powf(7.0);
    let twenty_five_7 = 25f64.powi(7);
    // Eqs. 2–5: a′ stretched by G, C′, h′ in degrees [0, 360).
    let c1 = safe_sqrt(&(a1.sqr()? + b1.sqr()?)?)?;
    let c2 = safe_sqrt(&(a2.sqr()? + b2.sqr()?)?)?;
    let c_bar7 = pow7(&((&c1 + &c2)? / 2.0)?)?;
    let g = ((1.0 - safe_sqrt(&(&c_bar7 / (&c_bar7 + twenty_five_7)?)?)?)? * 0.5)?;
    let a1p = (&a1 * (&g + 1.0)?)?;
    let a2p = (&a2 * (&g + 1.0)?)?;
    let c1p = safe_sqrt(&(a1p.sqr()? + b1.sqr()?)?)?;
    let c2p = safe_sqrt(&(a2p.sqr()? + b2.sqr()?)?)?;
    let h1p = hue_degrees(&b1, &a1p)?;
    let h2p = hue_degrees(&b2, &a2p)?;
    // Eqs. 8–11: differences.
    let dl = (&l2 - &l1)?;
    let dc = (&c2p - &c1p)?;
    let cc = (&c1p * &c2p)?;
    let chromatic = cc.gt(0.0)?;
    let dh_raw = (&h2p - &h1p)?;
    let dh_wrapped = select(
        &dh_raw.gt(180.0)?,
        &(&dh_raw - 360.0)?,
        &select(&dh_raw.lt(-180.0)?, &(&dh_raw + 360.0)?, &dh_raw)?,
    )?;
    let dh = select(&chromatic, &dh_wrapped, &dh_raw.zeros_like()?)?;
    let dh_big =
        ((safe_sqrt(&cc)? * 2.0)? * (dh.affine(std::f64::consts::PI / 360.0, 0.0)?.sin()?))?;
    // Eqs. 12–14: means.
    let l_bar = ((&l1 + &l2)? / 2.0)?;
    let c_bar_p = ((&c1p + &c2p)? / 2.0)?;
    let h_sum = (&h1p + &h2p)?;
    let far = (&h1p - &h2p)?.abs()?.gt(180.0)?;
    let h_mean = select(
        &far,
        &select(&h_sum.lt(360.0)?, &((&h_sum + 360.0)? / 2.0)?, &((&h_sum - 360.0)? / 2.0)?)?,
        &(&h_sum / 2.0)?,
    )?;
    let h_bar = select(&chromatic, &h_mean, &h_sum)?;
    // Eqs. 15–22: weighting functions and rotation.
    let rad =
        |deg: &Tensor, scale: f64, offset: f64| deg.affine(scale.to_radians(), offset.to_radians());
    let t = (((((rad(&h_bar, 1.0, -30.0)?.cos()? * -0.17)? + 1.0)?
        + (rad(&h_bar, 2.0, 0.0)?.cos()? * 0.24)?)?
        + (rad(&h_bar, 3.0, 6.0)?.cos()? * 0.32)?)?
        - (rad(&h_bar, 4.0, -63.0)?.cos()? * 0.20)?)?;
    let d_theta = ((((&h_bar - 275.0)? / 25.0)?.sqr()?.neg()?.exp()?) * 30.0)?;
    let c_bar_p7 = pow7(&c_bar_p)?;
    let r_c = (safe_sqrt(&(&c_bar_p7 / (&c_bar_p7 + twenty_five_7)?)?)? * 2.0)?;
    let l50 = (&l_bar - 50.0)?.sqr()?;
    let s_l = (((&l50 * 0.015)? / (&l50 + 20.0)?.sqrt()?)? + 1.0)?;
    let s_c = ((&c_bar_p * 0.045)? + 1.0)?;
    let s_h = (((&c_bar_p * &t)? * 0.015)? + 1.0)?;
    let r_t = ((d_theta.affine(2f64.to_radians(), 0.0)?.sin()? * &r_c)?.neg())?;
    let tl = (dl / (s_l * k.l)?)?;
    let tc = (dc / (s_c * k.c)?)?;
    let th = (dh_big / (s_h * k.h)?)?;
    let sum = (((tl.sqr()? + tc.sqr()?)? + th.sqr()?)? + ((r_t * &tc)? * &th)?)?;
    safe_sqrt(&sum)
}

/// The hue angle `atan2(b, a)` in degrees in [0, 360), 0 where a = b = 0.
fn hue_degrees(b: &Tensor, a: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() {
        return Err(Error::Config {
            what: "delta_e2000",
            reason: "runs on the CPU only for now (no atan2 kernel on other devices)".into(),
        });
    }
    // The op reads contiguous storage; channel slices of a batch are strided views.
    let h = b
        .contiguous()?
        .apply_op2(&a.contiguous()?, Atan2)?
        .affine(180.0 / std::f64::consts::PI, 0.0)?;
    select(&h.lt(0.0)?, &(&h + 360.0)?, &h)
}

/// `atan2(y, x)` elementwise (0 at the origin), with gradients `x / r²` and `−y / r²` (0 at the
/// origin).
struct Atan2;

impl CustomOp2 for Atan2 {
    fn name(&self) -> &'static str {
        "deepsim-atan2"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        yl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let range = |l: &Layout| {
            l.contiguous_offsets()
                .ok_or_else(|| candle::Error::Msg("atan2: inputs must be contiguous".into()))
        };
        let ((ys, ye), (xs, xe)) = (range(yl)?, range(xl)?);
        let angle = |y: f64, x: f64| if x == 0.0 && y == 0.0 { 0.0 } else { y.atan2(x) };
        let out = match (y, x) {
            (CpuStorage::F32(y), CpuStorage::F32(x)) => CpuStorage::F32(
                y[ys..ye]
                    .iter()
                    .zip(&x[xs..xe])
                    .map(|(&y, &x)| angle(y.into(), x.into()) as f32)
                    .collect(),
            ),
            (CpuStorage::F64(y), CpuStorage::F64(x)) => CpuStorage::F64(
                y[ys..ye].iter().zip(&x[xs..xe]).map(|(&y, &x)| angle(y, x)).collect(),
            ),
            _ => {
                return Err(candle::Error::Msg(format!(
                    "atan2: dtypes {:?} and {:?}, expected both f32 or both f64",
                    y.dtype(),
                    x.dtype()
                )))
            }
        };
        Ok((out, yl.shape().clone()))
    }

    fn bwd(
        &self,
        y: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let r2 = (x.sqr()? + y.sqr()?)?;
        let nonzero = r2.gt(0.0)?;
        let safe = nonzero.where_cond(&r2, &r2.ones_like()?)?;
        let zero = r2.zeros_like()?;
        let gy = nonzero.where_cond(&(grad * (x / &safe)?)?, &zero)?;
        let gx = nonzero.where_cond(&(grad * (y.neg()? / &safe)?)?, &zero)?;
        Ok((Some(gy), Some(gx)))
    }
}

/// The opponent colour space of linear RGB: O₁ = (R + G + B)/3 (luminance),
/// O₂ = (R − G)/2 (red–green), O₃ = (R + G − 2B)/4 (blue–yellow) — an orthogonal-axis
/// version of the opponent channels of colour vision (Hering; as in the article's custom
/// opponent-colour loss).
///
/// # Shapes
/// `rgb`: `[N, 3, H, W]` sRGB in [0, 1] → `[N, 3, H, W]`.
///
/// # Errors
/// Not `[N, 3, H, W]`.
pub fn srgb_to_opponent(rgb: &Tensor) -> Result<Tensor> {
    image_pair("srgb_to_opponent", rgb, None, &[3])?;
    const M: [[f64; 3]; 3] =
        [[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], [0.5, -0.5, 0.0], [0.25, 0.25, -0.5]];
    mix(&srgb_to_linear(rgb)?, &M)
}

/// The opponent-colour loss: per image, the mean over pixels of
/// `w_lum·ΔO₁² + w_rg·ΔO₂² + w_by·ΔO₃²` — with colour weights above the luminance weight, a
/// regressor is pushed harder on hue than on brightness.
///
/// # Shapes
/// `a`, `b`: `[N, 3, H, W]` sRGB in [0, 1] → `[N]`.
///
/// # Errors
/// Shapes that differ or are not `[N, 3, H, W]`; a negative or non-finite weight.
pub fn opponent_loss(a: &Tensor, b: &Tensor, weights: [f64; 3]) -> Result<Tensor> {
    image_pair("opponent_loss", a, Some(b), &[3])?;
    if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
        return Err(Error::Config {
            what: "opponent_loss",
            reason: format!("weights {weights:?}, expected finite numbers ≥ 0"),
        });
    }
    let d = (srgb_to_opponent(a)? - srgb_to_opponent(b)?)?.sqr()?;
    let mut total = (d.narrow(1, 0, 1)? * weights[0])?;
    for c in 1..3 {
        total = (total + (d.narrow(1, c, 1)? * weights[c])?)?;
    }
    Ok(total.flatten_from(1)?.mean(1)?)
}

/// Per-image mean of a `[N, 1, H, W]` map → `[N]`.
pub fn spatial_mean(map: &Tensor) -> Result<Tensor> {
    Ok(map.flatten_from(1)?.mean(1)?)
}
