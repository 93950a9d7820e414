//! Sequential colormaps by perceptual distance: [`check_colormap`] measures how evenly a map's
//! neighbouring levels differ (ΔE00) and whether its lightness is monotone, and
//! [`design_colormap`] builds one as the article frames the problem — the longest ΔE00 path in
//! the sRGB gamut through (or near) given anchor colours, with monotone lightness, cut into
//! steps of equal ΔE00.

use deepsim_data::Rng;

use crate::error::{Error, Result};
use crate::lab::{delta_e00, in_srgb_gamut, lab_from_srgb, srgb_from_lab};

/// How uniform a colormap is, by the ΔE00 between neighbouring levels.
#[derive(Clone, Debug, PartialEq)]
pub struct ColormapCheck {
    /// Levels in the map.
    pub levels: usize,
    /// Mean ΔE00 between neighbouring levels.
    pub mean_step: f64,
    /// Smallest neighbouring ΔE00.
    pub min_step: f64,
    /// Largest neighbouring ΔE00.
    pub max_step: f64,
    /// Coefficient of variation of the neighbouring ΔE00 (population standard deviation over
    /// the mean): 0 for perfectly equal steps.
    pub step_cv: f64,
    /// The sum of the neighbouring ΔE00 (the map's perceptual length).
    pub total: f64,
    /// Whether L* rises (or falls) at every step.
    pub lightness_monotone: bool,
    /// Steps where L* turns against the map's overall direction.
    pub lightness_reversals: usize,
    /// L* of the first and the last level.
    pub lightness_range: (f64, f64),
}

/// Measures a colormap given as sRGB colours in [0, 1], first level first.
///
/// # Errors
/// Fewer than two levels, or a channel outside [0, 1] or not finite (named by level).
pub fn check_colormap(colors: &[[f64; 3]]) -> Result<ColormapCheck> {
    if colors.len() < 2 {
        return Err(Error::Config {
            what: "colormap",
            reason: format!("{} levels; a map needs at least 2", colors.len()),
        });
    }
    for (i, c) in colors.iter().enumerate() {
        if c.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::Config {
                what: "colormap",
                reason: format!("level {i} is {c:?}; channels must be in [0, 1]"),
            });
        }
    }
    let lab: Vec<[f64; 3]> = colors.iter().map(|&c| lab_from_srgb(c)).collect();
    let steps: Vec<f64> = lab.windows(2).map(|w| delta_e00(w[0], w[1])).collect();
    let n = steps.len() as f64;
    let total: f64 = steps.iter().sum();
    let mean = total / n;
    let var = steps.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
    let rising = lab[lab.len() - 1][0] >= lab[0][0];
    let reversals = lab
        .windows(2)
        .filter(|w| if rising { w[1][0] <= w[0][0] } else { w[1][0] >= w[0][0] })
        .count();
    Ok(ColormapCheck {
        levels: colors.len(),
        mean_step: mean,
        min_step: steps.iter().copied().fold(f64::INFINITY, f64::min),
        max_step: steps.iter().copied().fold(0.0, f64::max),
        step_cv: if mean > 0.0 { var.sqrt() / mean } else { f64::INFINITY },
        total,
        lightness_monotone: reversals == 0,
        lightness_reversals: reversals,
        lightness_range: (lab[0][0], lab[lab.len() - 1][0]),
    })
}

/// Settings of [`design_colormap`].
#[derive(Clone, Debug, PartialEq)]
pub struct ColormapConfig {
    /// The anchor colours, sRGB in [0, 1], in map order (at least two), with strictly monotone
    /// L*: the path passes within [`ColormapConfig::radius`] of each.
    pub anchors: Vec<[f64; 3]>,
    /// Levels of the map (at least two).
    pub levels: usize,
    /// Free bends of the path between neighbouring anchors (0: straight in LCh).
    pub bends: usize,
    /// How far (ΔE76) the path may pass from each anchor.
    pub radius: f64,
    /// How far (ΔE76) each bend may move from its place on the straight (LCh) path between
    /// its anchors: the longest path otherwise swings out to the gamut's most vivid corners.
    pub bend_radius: f64,
    /// The least share of every step that must be lightness: ΔL* ≥ share × ΔE00 along the
    /// whole path (0 to 1). Without it the longest path trades lightness for chroma and
    /// crawls in L*, which 8-bit output cannot keep monotone; viridis' share is about 0.6 on
    /// average.
    pub lightness_share: f64,
    /// Proposals of the search.
    pub iterations: usize,
    /// Seed of the search.
    pub seed: u64,
}

impl ColormapConfig {
    /// viridis' end and middle colours (#440154, #21918c, #fde725) as anchors: a map of
    /// viridis' character with equal perceptual steps; no bends (the LCh path between the
    /// anchors, which move), radius 6, bend radius 20, lightness share 0.3, 4000 proposals, seed 0.
    pub fn viridis_like(levels: usize) -> Self {
        Self {
            anchors: vec![
                [68.0 / 255.0, 1.0 / 255.0, 84.0 / 255.0],
                [33.0 / 255.0, 145.0 / 255.0, 140.0 / 255.0],
                [253.0 / 255.0, 231.0 / 255.0, 37.0 / 255.0],
            ],
            levels,
            bends: 0,
            radius: 6.0,
            bend_radius: 20.0,
            lightness_share: 0.3,
            iterations: 4000,
            seed: 0,
        }
    }
}

/// A designed colormap.
#[derive(Clone, Debug, PartialEq)]
pub struct Colormap {
    /// The levels, sRGB in [0, 1].
    pub colors: Vec<[f64; 3]>,
    /// The levels in CIELAB.
    pub lab: Vec<[f64; 3]>,
    /// The perceptual length (ΔE00 along the path) before the search, with segments
    /// straight in LCh between the anchors.
    pub straight_length: f64,
    /// The perceptual length of the path found.
    pub length: f64,
}

/// Samples per segment of the path between control points.
const SAMPLES: usize = 48;

/// The path through control points, densely sampled: between neighbouring points L* and
/// chroma change linearly and the hue turns the shorter way round (straight in cylindrical
/// LCh), so the path between two vivid colours stays vivid instead of cutting through grey;
/// where that leaves the sRGB gamut, chroma is cut to the gamut's edge.
fn dense(points: &[[f64; 3]]) -> Vec<[f64; 3]> {
    let lch = |p: [f64; 3]| [p[0], p[1].hypot(p[2]), p[2].atan2(p[1])];
    let mut out = Vec::with_capacity(points.len() * SAMPLES);
    for w in points.windows(2) {
        let (a, b) = (lch(w[0]), lch(w[1]));
        // A grey end takes the other end's hue.
        let (ha, hb) = match (a[1] > 1e-9, b[1] > 1e-9) {
            (true, false) => (a[2], a[2]),
            (false, true) => (b[2], b[2]),
            _ => (a[2], b[2]),
        };
        let turn = (hb - ha + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU)
            - std::f64::consts::PI;
        for s in 0..SAMPLES {
            let t = s as f64 / SAMPLES as f64;
            let (l, c, h) = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]), ha + t * turn);
            out.push(within_gamut(l, c, h));
        }
    }
    out.push(points[points.len() - 1]);
    out
}

/// The colour of lightness `l`, hue `h` (radians) and chroma `c`, or, where that is outside
/// the sRGB gamut, the most chromatic colour of that lightness and hue inside it (bisection).
fn within_gamut(l: f64, c: f64, h: f64) -> [f64; 3] {
    let at = |c: f64| [l, c * h.cos(), c * h.sin()];
    if in_srgb_gamut(at(c), 0.0) {
        return at(c);
    }
    let (mut lo, mut hi) = (0.0, c);
    for _ in 0..24 {
        let mid = 0.5 * (lo + hi);
        if in_srgb_gamut(at(mid), 0.0) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(lo)
}

/// ΔE00 length of a densely sampled path, or `None` where it leaves the gamut or a step's
/// lightness change (in `sign`'s direction) is below `share` of its ΔE00.
fn length(points: &[[f64; 3]], sign: f64, share: f64) -> Option<f64> {
    if points.windows(2).any(|w| (w[1][0] - w[0][0]) * sign <= 0.0) {
        return None;
    }
    let path = dense(points);
    if !path.iter().all(|&p| in_srgb_gamut(p, 0.0)) {
        return None;
    }
    let mut total = 0.0;
    for w in path.windows(2) {
        let d = delta_e00(w[0], w[1]);
        if (w[1][0] - w[0][0]) * sign < share * d {
            return None;
        }
        total += d;
    }
    Some(total)
}

/// The point at arc length `target` along a path with cumulative lengths `cum`.
fn at_length(path: &[[f64; 3]], cum: &[f64], target: f64) -> [f64; 3] {
    let i = cum.partition_point(|&c| c < target).clamp(1, path.len() - 1);
    let span = cum[i] - cum[i - 1];
    let t = if span > 0.0 { ((target - cum[i - 1]) / span).clamp(0.0, 1.0) } else { 0.0 };
    std::array::from_fn(|d| path[i - 1][d] + t * (path[i][d] - path[i - 1][d]))
}

/// Designs a sequential colormap: control points (the anchors, free to move within
/// `radius`, and `bends` points between each pair, free within `bend_radius` of their place on
/// the straight path) are searched — seeded random
/// proposals, kept when the path stays in the sRGB gamut with strictly monotone L* and its
/// ΔE00 length grows — then the path is cut into `levels` colours whose neighbouring ΔE00 are
/// equal (arc-length cuts refined until the chords agree).
///
/// # Errors
/// Fewer than two anchors or levels, an anchor outside [0, 1], anchors whose L* is not
/// strictly monotone, or a negative radius. An anchor outside the gamut cannot be given (it
/// is sRGB); where the path between anchors leaves the gamut, its chroma is cut to it.
pub fn design_colormap(cfg: &ColormapConfig) -> Result<Colormap> {
    let bad = |reason: String| Error::Config { what: "colormap", reason };
    if cfg.anchors.len() < 2 || cfg.levels < 2 {
        return Err(bad(format!(
            "{} anchors and {} levels; both must be at least 2",
            cfg.anchors.len(),
            cfg.levels
        )));
    }
    if !(0.0..=1.0).contains(&cfg.lightness_share) {
        return Err(bad(format!("lightness share {}; expected 0 to 1", cfg.lightness_share)));
    }
    for (name, r) in [("radius", cfg.radius), ("bend radius", cfg.bend_radius)] {
        if !(r >= 0.0 && r.is_finite()) {
            return Err(bad(format!("{name} {r}; expected a finite value ≥ 0")));
        }
    }
    if let Some((i, c)) =
        cfg.anchors.iter().enumerate().find(|(_, c)| c.iter().any(|v| !(0.0..=1.0).contains(v)))
    {
        return Err(bad(format!("anchor {i} is {c:?}; channels must be in [0, 1]")));
    }
    let anchors: Vec<[f64; 3]> = cfg.anchors.iter().map(|&c| lab_from_srgb(c)).collect();
    let sign = (anchors[anchors.len() - 1][0] - anchors[0][0]).signum();
    if let Some(i) = (1..anchors.len()).find(|&i| (anchors[i][0] - anchors[i - 1][0]) * sign <= 0.0)
    {
        return Err(bad(format!(
            "anchors {} and {i} have L* {:.1} and {:.1}: a sequential map needs lightness that \
             rises (or falls) from anchor to anchor",
            i - 1,
            anchors[i - 1][0],
            anchors[i][0]
        )));
    }
    // Control points: each anchor, then `bends` points along the LCh-straight segment after
    // it.
    // Each point keeps its home and how far it may leave it.
    let mut points = Vec::new();
    let mut home = Vec::new();
    for w in anchors.windows(2) {
        points.push(w[0]);
        home.push((w[0], cfg.radius));
        let segment = dense(w);
        for b in 1..=cfg.bends {
            let p = segment[b * SAMPLES / (cfg.bends + 1)];
            points.push(p);
            home.push((p, cfg.bend_radius));
        }
    }
    points.push(anchors[anchors.len() - 1]);
    home.push((anchors[anchors.len() - 1], cfg.radius));
    let straight = length(&points, sign, 0.0)
        .ok_or_else(|| bad("the path through the anchors leaves the sRGB gamut".into()))?;
    let mut best = straight;
    let mut rng = Rng::derive(cfg.seed, &[u64::from(b'c')]);
    for it in 0..cfg.iterations {
        let scale = 6.0 * (1.0 - it as f64 / cfg.iterations as f64) + 0.25;
        let j = rng.below(points.len() as u64) as usize;
        let old = points[j];
        let mut moved: [f64; 3] = std::array::from_fn(|d| old[d] + scale * rng.normal());
        let (centre, reach) = home[j];
        let off: [f64; 3] = std::array::from_fn(|d| moved[d] - centre[d]);
        let norm = (off[0] * off[0] + off[1] * off[1] + off[2] * off[2]).sqrt();
        if norm > reach {
            moved = std::array::from_fn(|d| centre[d] + off[d] * reach / norm);
        }
        // Control points themselves stay in the gamut (the path between them is cut to it).
        if !in_srgb_gamut(moved, 0.0) {
            continue;
        }
        points[j] = moved;
        match length(&points, sign, cfg.lightness_share) {
            Some(len) if len > best => best = len,
            _ => points[j] = old,
        }
    }
    let path = dense(&points);
    let mut cum = vec![0.0];
    for w in path.windows(2) {
        cum.push(cum[cum.len() - 1] + delta_e00(w[0], w[1]));
    }
    let total = cum[cum.len() - 1];
    // Cut at equal arc length, then move the cuts until the chords between levels are equal:
    // each gap's arc is rescaled by (mean chord / its chord).
    let n = cfg.levels - 1;
    let mut gaps = vec![total / n as f64; n];
    let mut lab = Vec::new();
    for _ in 0..50 {
        let mut s = 0.0;
        lab = vec![at_length(&path, &cum, 0.0)];
        for g in &gaps {
            s += g;
            lab.push(at_length(&path, &cum, s.min(total)));
        }
        let chords: Vec<f64> = lab.windows(2).map(|w| delta_e00(w[0], w[1])).collect();
        let mean = chords.iter().sum::<f64>() / n as f64;
        if chords.iter().all(|c| (c - mean).abs() <= 1e-6 * mean) {
            break;
        }
        for (g, c) in gaps.iter_mut().zip(&chords) {
            if *c > 0.0 {
                *g *= mean / c;
            }
        }
        let sum: f64 = gaps.iter().sum();
        gaps.iter_mut().for_each(|g| *g *= total / sum);
    }
    let colors = lab.iter().map(|&l| srgb_from_lab(l).map(|v| v.clamp(0.0, 1.0))).collect();
    Ok(Colormap { colors, lab, straight_length: straight, length: total })
}
