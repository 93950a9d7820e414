//! Colormap uniformity against scikit-image's CIEDE2000 on matplotlib's viridis and jet
//! (`data/colormaps/export_colormaps.py` wrote the maps and `fixtures/colormap_checks.json`),
//! against a grey ramp computed by hand, and the designed maps against their own promises.

use deepsim_metrics::{
    check_colormap, design_colormap, lab_from_srgb, srgb_from_lab, ColormapConfig, Error,
};

fn read_map(name: &str) -> Vec<[f64; 3]> {
    let path = format!("{}/../../data/colormaps/{name}.csv", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2]]
        })
        .collect()
}

/// A statistic scikit-image gave for a map (`fixtures/colormap_checks.json`).
fn fixture(map: &str, field: &str) -> f64 {
    let all: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/colormap_checks.json")).unwrap();
    all[map][field].as_f64().unwrap()
}

#[test]
fn viridis_and_jet_match_scikit_image() {
    for name in ["viridis", "jet"] {
        let c = check_colormap(&read_map(name)).unwrap();
        assert_eq!(c.levels, 256);
        for (field, got) in [
            ("mean_step", c.mean_step),
            ("min_step", c.min_step),
            ("max_step", c.max_step),
            ("step_cv", c.step_cv),
            ("total", c.total),
        ] {
            let want = fixture(name, field);
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{name} {field}: {got} vs {want}"
            );
        }
        assert_eq!(c.lightness_reversals as f64, fixture(name, "lightness_reversals"), "{name}");
    }
    let viridis = check_colormap(&read_map("viridis")).unwrap();
    assert!(viridis.lightness_monotone);
    assert!(!check_colormap(&read_map("jet")).unwrap().lightness_monotone);
}

#[test]
fn a_grey_ramp_steps_by_the_lightness_weighting() {
    // Greys at L* = 10, 20, …, 90: ΔE00 of a pure lightness step is ΔL / S_L with
    // S_L = 1 + 0.015 (L̄ − 50)² / √(20 + (L̄ − 50)²) (Sharma et al., eq. 17).
    let greys: Vec<[f64; 3]> =
        (1..10).map(|i| srgb_from_lab([10.0 * i as f64, 0.0, 0.0])).collect();
    let want: Vec<f64> = (1..9)
        .map(|i| {
            let l_bar = 10.0 * i as f64 + 5.0;
            let d = (l_bar - 50.0).powi(2);
            10.0 / (1.0 + 0.015 * d / (20.0 + d).sqrt())
        })
        .collect();
    let c = check_colormap(&greys).unwrap();
    let mean = want.iter().sum::<f64>() / 8.0;
    let cv = (want.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / 8.0).sqrt() / mean;
    // The greys' a*, b* are not exactly 0 after sRGB (the white point's rounding): 1e-2.
    assert!((c.mean_step - mean).abs() < 1e-2, "{} vs {mean}", c.mean_step);
    assert!((c.step_cv - cv).abs() < 1e-2, "{} vs {cv}", c.step_cv);
    let (lo, hi) = want.iter().fold((f64::INFINITY, 0.0f64), |(l, h), &s| (l.min(s), h.max(s)));
    assert!((c.max_step - hi).abs() < 1e-2 && (c.min_step - lo).abs() < 1e-2);
    assert!(c.lightness_monotone);
    // Reversed, it is as uniform and still monotone (falling).
    let mut rev = greys.clone();
    rev.reverse();
    let r = check_colormap(&rev).unwrap();
    assert!(r.lightness_monotone && (r.step_cv - c.step_cv).abs() < 1e-9);
}

#[test]
fn a_designed_map_has_equal_steps_and_is_longer_than_the_straight_path() {
    let cfg = ColormapConfig::viridis_like(256);
    let map = design_colormap(&cfg).unwrap();
    assert_eq!(map.colors.len(), 256);
    let c = check_colormap(&map.colors).unwrap();
    let viridis = check_colormap(&read_map("viridis")).unwrap();
    assert!(c.step_cv < 1e-3, "step CV {}", c.step_cv);
    assert!(c.step_cv < viridis.step_cv);
    assert!(c.lightness_monotone, "{} reversals", c.lightness_reversals);
    assert!(map.length > map.straight_length, "{} vs {}", map.length, map.straight_length);
    // The ends stay within the radius of the first and last anchors (ΔE76).
    for (end, anchor) in [(map.lab[0], cfg.anchors[0]), (map.lab[255], cfg.anchors[2])] {
        let a = lab_from_srgb(anchor);
        let d =
            ((end[0] - a[0]).powi(2) + (end[1] - a[1]).powi(2) + (end[2] - a[2]).powi(2)).sqrt();
        assert!(d <= cfg.radius + 1e-6, "end {end:?} is {d} from its anchor");
    }
    // Every level is a real sRGB colour (the path never left the gamut).
    for (i, &lab) in map.lab.iter().enumerate() {
        let rgb = srgb_from_lab(lab);
        assert!(rgb.iter().all(|v| (-1e-9..=1.0 + 1e-9).contains(v)), "level {i}: {rgb:?}");
    }
    // Seeded: the same settings give the same map.
    assert_eq!(map, design_colormap(&cfg).unwrap());
}

#[test]
fn bad_maps_and_settings_are_named() {
    let err = |e: Error| e.to_string();
    assert!(err(check_colormap(&[[0.5; 3]]).unwrap_err()).contains("1 levels"));
    assert!(err(check_colormap(&[[0.0; 3], [1.2, 0.0, 0.0]]).unwrap_err()).contains("level 1"));
    let mut cfg = ColormapConfig::viridis_like(16);
    cfg.anchors.swap(1, 2);
    let e = err(design_colormap(&cfg).unwrap_err());
    assert!(e.contains("anchors 1 and 2") && e.contains("lightness"), "{e}");
    let e = err(design_colormap(&ColormapConfig { levels: 1, ..ColormapConfig::viridis_like(1) })
        .unwrap_err());
    assert!(e.contains("1 levels"), "{e}");
    let e =
        err(design_colormap(&ColormapConfig { radius: -1.0, ..ColormapConfig::viridis_like(8) })
            .unwrap_err());
    assert!(e.contains("radius"), "{e}");
}
