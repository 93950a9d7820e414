//! Palette quantization in CIELAB against constructed images whose answer is known, and the
//! mean ΔE00 it reports against the tensor ΔE00 (itself checked on Sharma et al.'s pairs).

use candle::{Device, Tensor};
use deepsim_metrics::{
    delta_e00, delta_e2000, lab_from_srgb, mean_delta_e00, quantize, srgb_to_lab, Ciede2000Weights,
    PaletteSpace, QuantizeConfig,
};

/// A deterministic hash in [0, 1) for pixel `i` and salt `s` (no RNG shared with the code).
fn hash01(i: u64, s: u64) -> f64 {
    let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ s.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((z ^ (z >> 32)) >> 11) as f64 / (1u64 << 53) as f64
}

fn lab_u8(p: [u8; 3]) -> [f64; 3] {
    lab_from_srgb(p.map(|v| f64::from(v) / 255.0))
}

/// Four well-separated colours, each pixel one of them plus up to ±3 levels of noise per
/// channel; returns the pixels and each pixel's cluster.
fn four_clusters(w: usize, h: usize) -> (Vec<[u8; 3]>, Vec<usize>, [[u8; 3]; 4]) {
    let base = [[200u8, 40, 40], [30, 160, 60], [40, 60, 190], [230, 220, 90]];
    let mut pixels = Vec::new();
    let mut label = Vec::new();
    for i in 0..(w * h) as u64 {
        let k = (hash01(i, 1) * 4.0) as usize;
        let p: [u8; 3] = std::array::from_fn(|c| {
            let noise = (hash01(i, 2 + c as u64) * 7.0).floor() - 3.0;
            (f64::from(base[k][c]) + noise) as u8
        });
        pixels.push(p);
        label.push(k);
    }
    (pixels, label, base)
}

#[test]
fn four_clusters_are_found_and_every_pixel_goes_to_its_own() {
    let (pixels, label, base) = four_clusters(64, 48);
    let q = quantize(&pixels, 64, 48, &QuantizeConfig::lab(4)).unwrap();
    assert_eq!(q.palette.len(), 4);
    // Each palette entry is within 1.5 ΔE00 of one base colour (the cluster's mean in Lab,
    // rounded to 8 bits), and the entries match distinct bases.
    let mut matched = [usize::MAX; 4];
    for (e, &entry) in q.palette.iter().enumerate() {
        let (k, d) = base
            .iter()
            .enumerate()
            .map(|(k, &b)| (k, delta_e00(lab_u8(entry), lab_u8(b))))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(d < 1.5, "entry {entry:?} is {d} ΔE00 from the nearest base {:?}", base[k]);
        matched[e] = k;
    }
    let mut sorted = matched;
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2, 3], "entries {:?} match bases {matched:?}", q.palette);
    for (i, &idx) in q.indices.iter().enumerate() {
        assert_eq!(matched[usize::from(idx)], label[i], "pixel {i}");
    }
    // The error left is the noise's: a few ΔE00 at most.
    let err = mean_delta_e00(&pixels, &q.pixels()).unwrap();
    assert!(err > 0.1 && err < 2.0, "mean ΔE00 {err}");
    // Seeded: the same call gives the same result.
    assert_eq!(q, quantize(&pixels, 64, 48, &QuantizeConfig::lab(4)).unwrap());
}

#[test]
fn an_image_with_few_colours_is_kept_exactly() {
    let colours = [[0u8, 0, 0], [255, 255, 255], [10, 200, 30], [128, 0, 255], [9, 9, 9]];
    let pixels: Vec<[u8; 3]> = (0..300).map(|i| colours[(i * 7 + i / 13) % 5]).collect();
    for space in [PaletteSpace::Lab, PaletteSpace::Rgb] {
        for colors in [5, 16, 256] {
            let cfg = QuantizeConfig { space, ..QuantizeConfig::lab(colors) };
            let q = quantize(&pixels, 20, 15, &cfg).unwrap();
            assert_eq!(q.pixels(), pixels, "{space:?}, K = {colors}");
            assert_eq!(q.palette.len(), 5);
            assert_eq!(q.iterations, 0);
        }
    }
    // One colour fewer than the image has: exactly one colour is merged away.
    let q = quantize(&pixels, 20, 15, &QuantizeConfig::lab(4)).unwrap();
    assert_eq!(q.palette.len(), 4);
    // Black and near-black (ΔE00 2.7) are the closest pair, so they share an entry.
    let out = q.pixels();
    for (p, o) in pixels.iter().zip(&out) {
        if *p != [0, 0, 0] && *p != [9, 9, 9] {
            assert_eq!(p, o);
        }
    }
}

#[test]
fn the_reported_error_is_the_tensor_ciede2000() {
    let (pixels, _, _) = four_clusters(16, 12);
    let q = quantize(&pixels, 16, 12, &QuantizeConfig::lab(3)).unwrap();
    let out = q.pixels();
    let to_tensor = |px: &[[u8; 3]]| {
        let v: Vec<f64> =
            (0..3).flat_map(|c| px.iter().map(move |p| f64::from(p[c]) / 255.0)).collect();
        Tensor::from_vec(v, (1, 3, 12, 16), &Device::Cpu).unwrap()
    };
    let (a, b) = (to_tensor(&pixels), to_tensor(&out));
    let want = delta_e2000(
        &srgb_to_lab(&a).unwrap(),
        &srgb_to_lab(&b).unwrap(),
        Ciede2000Weights::default(),
    )
    .unwrap()
    .mean_all()
    .unwrap()
    .to_scalar::<f64>()
    .unwrap();
    let got = mean_delta_e00(&pixels, &out).unwrap();
    assert!((got - want).abs() < 1e-9, "{got} against the tensor's {want}");
    assert!(got > 1.0, "three colours for four clusters must cost something: {got}");
}

#[test]
fn dithering_keeps_the_local_mean_of_a_gradient() {
    // A grey ramp, 2 colours: without dithering each column is one grey; with error
    // diffusion each column's mean lightness follows the ramp.
    let (w, h) = (128, 64);
    let pixels: Vec<[u8; 3]> = (0..w * h).map(|i| [((i % w) * 2) as u8; 3]).collect::<Vec<_>>();
    // Blocks of 4 columns whose lightness lies between the two palette greys' (outside, no
    // mix of the two can match it); error diffusion spreads error sideways, so a block, not a
    // single column, keeps the mean.
    let block_error = |out: &[[u8; 3]], palette: &[[u8; 3]]| {
        let (lo, hi) = (lab_u8(palette[0])[0], lab_u8(palette[1])[0]);
        let mean_l = |px: &[[u8; 3]], b: usize| {
            let xs = 4 * b..4 * b + 4;
            xs.flat_map(|x| (0..h).map(move |y| y * w + x)).map(|i| lab_u8(px[i])[0]).sum::<f64>()
                / (4 * h) as f64
        };
        let inside: Vec<usize> =
            (0..w / 4).filter(|&b| (lo + 2.0..=hi - 2.0).contains(&mean_l(&pixels, b))).collect();
        assert!(inside.len() > w / 16, "{} blocks between L* {lo} and {hi}", inside.len());
        inside.iter().map(|&b| (mean_l(out, b) - mean_l(&pixels, b)).abs()).sum::<f64>()
            / inside.len() as f64
    };
    let plain = quantize(&pixels, w, h, &QuantizeConfig::lab(2)).unwrap();
    let with = |diffusion: f64| {
        let cfg = QuantizeConfig { dither: true, diffusion, ..QuantizeConfig::lab(2) };
        quantize(&pixels, w, h, &cfg).unwrap()
    };
    let (full, partial) = (with(1.0), with(0.75));
    assert_eq!(plain.palette, full.palette, "dithering does not change the palette");
    let e_plain = block_error(&plain.pixels(), &plain.palette);
    let e_full = block_error(&full.pixels(), &full.palette);
    let e_partial = block_error(&partial.pixels(), &partial.palette);
    assert!(e_plain > 8.0, "two greys leave a large banding error: {e_plain}");
    assert!(e_full < 1.0, "full error diffusion keeps each block's mean L*: {e_full}");
    assert!(e_full < e_partial && e_partial < e_plain, "{e_full} < {e_partial} < {e_plain}");
    // No diffusion is no dithering.
    assert_eq!(with(0.0).indices, plain.indices);
}

#[test]
fn the_lab_palette_beats_the_rgb_one_by_delta_e() {
    // A photograph (the shipped validation tile of chelsea the cat).
    let img = image::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/photos/val/chelsea_s300_y0_x0.jpg"
    ))
    .unwrap()
    .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    for k in [8, 16] {
        let lab = quantize(&pixels, w, h, &QuantizeConfig::lab(k)).unwrap();
        let rgb = quantize(
            &pixels,
            w,
            h,
            &QuantizeConfig { space: PaletteSpace::Rgb, ..QuantizeConfig::lab(k) },
        )
        .unwrap();
        let (e_lab, e_rgb) = (
            mean_delta_e00(&pixels, &lab.pixels()).unwrap(),
            mean_delta_e00(&pixels, &rgb.pixels()).unwrap(),
        );
        assert!(e_lab < e_rgb, "K = {k}: Lab {e_lab} against RGB {e_rgb}");
    }
}

#[test]
fn bad_settings_are_named() {
    let px = vec![[1u8, 2, 3]; 6];
    for (cfg, w, h, needle) in [
        (QuantizeConfig::lab(0), 3, 2, "colors"),
        (QuantizeConfig::lab(257), 3, 2, "1 to 256"),
        (QuantizeConfig::lab(4), 4, 2, "6 pixels for a 4×2 image"),
        (QuantizeConfig { tolerance: f64::NAN, ..QuantizeConfig::lab(4) }, 3, 2, "tolerance"),
        (QuantizeConfig { diffusion: 1.5, ..QuantizeConfig::lab(4) }, 3, 2, "diffusion"),
    ] {
        let err = quantize(&px, w, h, &cfg).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    assert!(mean_delta_e00(&px, &px[..3]).unwrap_err().to_string().contains("6 and 3"));
}
