//! One colour at a time: sRGB ↔ CIELAB and ΔE00 on plain `[f64; 3]` values, the scalar twins
//! of the tensor functions in `color.rs` (same constants, same conventions), for the
//! applications that visit millions of colours one by one (palettes, colormaps).

use crate::color::{invert, Ciede2000Weights, DELTA, WHITE, XYZ_FROM_RGB};

fn srgb_channel_to_linear(v: f64) -> f64 {
    if v > 0.04045 {
        ((v + 0.055) / 1.055).powf(2.4)
    } else {
        v / 12.92
    }
}

fn linear_channel_to_srgb(v: f64) -> f64 {
    if v > 0.0031308 {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    } else {
        12.92 * v
    }
}

fn apply(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

/// One sRGB colour in [0, 1] → CIELAB (L*, a*, b*), D65; agrees with
/// [`srgb_to_lab`](crate::srgb_to_lab) (and so with scikit-image's `rgb2lab`).
pub fn lab_from_srgb(rgb: [f64; 3]) -> [f64; 3] {
    let xyz = apply(&XYZ_FROM_RGB, rgb.map(srgb_channel_to_linear));
    let f = |c: usize| {
        let t = xyz[c] / WHITE[c];
        if t > DELTA.powi(3) {
            t.cbrt()
        } else {
            t / (3.0 * DELTA * DELTA) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(0), f(1), f(2));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// One CIELAB colour → sRGB values, not clipped: a colour outside the sRGB gamut has a
/// channel outside [0, 1] (see [`in_srgb_gamut`]).
pub fn srgb_from_lab(lab: [f64; 3]) -> [f64; 3] {
    let fy = (lab[0] + 16.0) / 116.0;
    let f = [fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0];
    let xyz: [f64; 3] = std::array::from_fn(|c| {
        let v = f[c];
        let t = if v > DELTA { v * v * v } else { (v - 4.0 / 29.0) * 3.0 * DELTA * DELTA };
        t * WHITE[c]
    });
    apply(&invert(&XYZ_FROM_RGB), xyz).map(linear_channel_to_srgb)
}

/// Whether a CIELAB colour has an sRGB representation: every channel of
/// [`srgb_from_lab`] within [0, 1] up to `tolerance`.
pub fn in_srgb_gamut(lab: [f64; 3], tolerance: f64) -> bool {
    srgb_from_lab(lab).iter().all(|&v| (-tolerance..=1.0 + tolerance).contains(&v))
}

/// ΔE00 (CIEDE2000) between two CIELAB colours with weights kL, kC, kH, as
/// [`delta_e2000`](crate::delta_e2000) computes it per pixel (Sharma, Wu & Dalal 2005, eqs.
/// 1–22, achromatic conventions included).
pub fn ciede2000(lab1: [f64; 3], lab2: [f64; 3], k: Ciede2000Weights) -> f64 {
    const P25_7: f64 = 6_103_515_625.0; // 25⁷
    let [l1, a1, b1] = lab1;
    let [l2, a2, b2] = lab2;
    let c_bar = 0.5 * (a1.hypot(b1) + a2.hypot(b2));
    let c_bar7 = c_bar.powi(7);
    let g = 0.5 * (1.0 - (c_bar7 / (c_bar7 + P25_7)).sqrt());
    let (a1p, a2p) = (a1 * (1.0 + g), a2 * (1.0 + g));
    let (c1p, c2p) = (a1p.hypot(b1), a2p.hypot(b2));
    let hue = |b: f64, a: f64| {
        if a == 0.0 && b == 0.0 {
            0.0
        } else {
            b.atan2(a).to_degrees().rem_euclid(360.0)
        }
    };
    let (h1p, h2p) = (hue(b1, a1p), hue(b2, a2p));
    let chromatic = c1p * c2p != 0.0;
    let dh = if !chromatic {
        0.0
    } else if h2p - h1p > 180.0 {
        h2p - h1p - 360.0
    } else if h2p - h1p < -180.0 {
        h2p - h1p + 360.0
    } else {
        h2p - h1p
    };
    let dl = l2 - l1;
    let dc = c2p - c1p;
    let dh_big = 2.0 * (c1p * c2p).sqrt() * (dh.to_radians() / 2.0).sin();
    let l_bar = 0.5 * (l1 + l2);
    let c_bar_p = 0.5 * (c1p + c2p);
    let h_sum = h1p + h2p;
    let h_bar = if !chromatic {
        h_sum
    } else if (h1p - h2p).abs() <= 180.0 {
        h_sum / 2.0
    } else if h_sum < 360.0 {
        (h_sum + 360.0) / 2.0
    } else {
        (h_sum - 360.0) / 2.0
    };
    let cos = |deg: f64| deg.to_radians().cos();
    let t =
        1.0 - 0.17 * cos(h_bar - 30.0) + 0.24 * cos(2.0 * h_bar) + 0.32 * cos(3.0 * h_bar + 6.0)
            - 0.20 * cos(4.0 * h_bar - 63.0);
    let d_theta = 30.0 * (-((h_bar - 275.0) / 25.0).powi(2)).exp();
    let c_bar_p7 = c_bar_p.powi(7);
    let r_c = 2.0 * (c_bar_p7 / (c_bar_p7 + P25_7)).sqrt();
    let l50 = (l_bar - 50.0).powi(2);
    let s_l = 1.0 + 0.015 * l50 / (20.0 + l50).sqrt();
    let s_c = 1.0 + 0.045 * c_bar_p;
    let s_h = 1.0 + 0.015 * c_bar_p * t;
    let r_t = -(2.0 * d_theta).to_radians().sin() * r_c;
    let (tl, tc, th) = (dl / (k.l * s_l), dc / (k.c * s_c), dh_big / (k.h * s_h));
    (tl * tl + tc * tc + th * th + r_t * tc * th).max(0.0).sqrt()
}

/// ΔE00 with the reference weights (kL = kC = kH = 1).
pub fn delta_e00(lab1: [f64; 3], lab2: [f64; 3]) -> f64 {
    ciede2000(lab1, lab2, Ciede2000Weights::default())
}

/// An sRGB colour from `#rrggbb` (or `rrggbb`), channels in [0, 1]; `None` if it is not six
/// hexadecimal digits.
pub fn parse_hex_color(text: &str) -> Option<[f64; 3]> {
    let hex = text.trim().trim_start_matches('#');
    if hex.len() != 6 || !hex.is_ascii() {
        return None;
    }
    let mut rgb = [0.0; 3];
    for (c, v) in rgb.iter_mut().enumerate() {
        *v = f64::from(u8::from_str_radix(&hex[2 * c..2 * c + 2], 16).ok()?) / 255.0;
    }
    Some(rgb)
}

/// `#rrggbb` of an sRGB colour in [0, 1] (channels clipped and rounded to 8 bits).
pub fn hex_color(rgb: [f64; 3]) -> String {
    let b = rgb.map(to_u8);
    format!("#{:02x}{:02x}{:02x}", b[0], b[1], b[2])
}

/// An sRGB channel in [0, 1] as the nearest 8-bit value (clipped).
pub fn to_u8(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}
