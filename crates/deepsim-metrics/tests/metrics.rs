//! deepsim-metrics against published and reference values, with finite-difference gradients.
//!
//! Reference values: `fixtures/export_metric_values.py` (pytorch-msssim 1.0, scikit-image 0.26,
//! torch 2.15) printed the constants below for the closed-form inputs of [`pattern`]. ΔE00:
//! the 34 pairs of Sharma, Wu & Dalal (2005), Table 1.

use candle::{DType, Device, Tensor, Var};
use deepsim_metrics::{
    ciede2000, delta_e00, delta_e2000, delta_e76, jnd_insensitive_loss, lab_from_srgb, lab_to_srgb,
    ms_ssim, multi_resolution_stft_loss, opponent_loss, psnr, spectral_convergence,
    spectrogram_distance, srgb_from_lab, srgb_to_lab, ssim, stft, total_variation,
    Ciede2000Weights, Error, SpectrogramScale, SsimConfig, StftConfig, JND_DELTA_E,
};

#[rustfmt::skip]
const SSIM_RGB: [f64; 2] = [0.5340211287658801, 0.5265074013184964];
#[rustfmt::skip]
const SSIM_SKIMAGE_RGB0: [f64; 1] = [0.5340206946680252];
#[rustfmt::skip]
const PSNR: [f64; 2] = [16.685444473470653, 16.682951274461246];
#[rustfmt::skip]
const MS_SSIM_GRAY: [f64; 1] = [0.9364870125487874];
#[rustfmt::skip]
const LAB: [f64; 18] = [75.14801518486591, 86.63157442015272, 62.0066983143241, 85.10276755416814, 60.89020557626509, 74.27000495328525, -41.558483884598154, -35.156437084090605, -24.72013758662156, -38.07480912962413, -30.69646927893771, -27.39153601293598, 40.15543061285018, 48.172963963902625, 55.069425568654154, 43.669347733068605, 51.81766818010235, 46.77007835077025];
#[rustfmt::skip]
const DE76: [f64; 6] = [19.78517384298034, 26.453859664260726, 15.212725301818454, 24.9667458056418, 16.11700533607851, 24.297959601447236];
#[rustfmt::skip]
const STFT_RE: [f64; 117] = [1.3683145473014984, 2.2127637891517207, 2.458928684014615, 1.416832246923864, 1.2809581634259923, 2.8284780796624673, 4.2724244464304775, 3.6688084892818944, 1.5833498071550849, 0.34614301220892196, 0.8840653988070617, 1.4904923736383042, 0.7921378278902185, -0.7782052360467333, -1.5939263052542834, -1.7532707470748792, -0.9074479637546998, -0.7845676466862741, -1.970285557172248, -3.0697654366979688, -2.5896886187898085, -0.9987026413349338, -0.11655151766983071, -0.6334365790420042, -1.177138261544406, -0.3670485093522523, -0.11465390653307186, 0.46301797124655913, 0.4596772088011135, 0.13107755634717225, 0.13216832213150614, 0.6078190955673368, 0.9599007024343174, 0.6635267840722034, 0.04007366736207155, -0.1344915050181828, 0.2945484091209397, 0.5970154640348504, -0.22736370842575473, 0.34850115706713236, 0.16904684455081398, 0.22306475977582124, 0.060401964961095844, -0.13329091247199182, -0.15384662747110678, 0.04761714434725969, 0.28323290514502897, 0.29217620256827015, 0.025631986635633687, -0.25851719720218236, -0.24988800502314945, 0.24271120037029628, -0.2767071456441635, -0.23987320516013322, -0.22055762310390836, 0.035147852356174236, 0.24885363535271277, 0.19075582541632252, -0.07279012369858173, -0.2562379025593704, -0.16591363072677634, 0.09596997797098511, 0.24893253703122428, 0.13607471589673548, -0.017640018671519875, 0.27875797351021436, 0.10419410465195478, 0.06898369325194838, -0.018124338931672646, -0.09536594220787871, -0.08270396343872177, 0.005905051968853742, 0.0766887938707527, 0.055028761418133315, -0.03499386815719124, -0.09542460125845445, -0.05848347259043084, -0.02511138054427528, -0.21901017176344093, 0.02121916649421146, -0.002571902955479932, -0.007103220561626905, -0.009766318212193995, -0.008704462071165209, -0.006191906198703967, -0.005547611665160046, -0.006791779690976357, -0.006796199359352717, -0.003632895619536669, 0.0007934126573398426, 0.0013472348557786173, 0.15094610546938664, -0.013970957134535777, -0.0035058567709258526, -0.0022435055957449324, 9.196518445792057e-05, 0.0009358780308512671, -0.0013082356719811283, -0.004868344505184918, -0.005658524458132419, -0.0018210423872900214, 0.00329517797430795, 0.004235490634558303, -0.009094091501624019, -0.14757209942014593, -0.03217902794089422, -0.0025677478619943184, -0.0002489365652597053, 0.0027956303933315274, 0.0035815426149943264, 0.0008411606031324403, -0.0030205004188166296, -0.0037739174303970113, -3.8676238464624424e-05, 0.00440489918434972, 0.004288938230699868, 0.012260718648484215];
#[rustfmt::skip]
const STFT_IM: [f64; 117] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.608224830031759e-16, 0.4663535973455451, -0.28527305219055377, -0.37149980988305514, 0.28833851800533616, 0.7142771836027336, 0.22865513674918458, -0.6072364646670105, -0.747421999552903, -0.08989423595400384, 0.38482066708910323, -0.028028625116229097, -0.2852682770707098, -1.3183898417423734e-16, -0.46309377290713827, 0.32567254156342096, 0.45173257589038707, -0.17106331764600402, -0.6615364835448252, -0.32250773940459376, 0.44374284104505957, 0.6898697306432091, 0.18642716485775848, -0.30872253211239137, -0.11021756638749249, 0.2914256880003939, -4.163336342344337e-17, 0.1937573560571736, -0.22307312872905724, -0.35604029862536424, -0.07585689308930926, 0.28526267267554245, 0.3169524033300197, -0.0015824900066497838, -0.3020612214696381, -0.26539198778298706, 0.033333662432877914, 0.2500539617916391, -0.05126215223989089, -5.551115123125783e-17, -0.06307391787597116, 0.13121619076374924, 0.2361324607312188, 0.10791188457038858, -0.1304748564407946, -0.23651917570800363, -0.09624729773233498, 0.14746174035990206, 0.23259183866426877, 0.05536509066841963, -0.20514172717347767, -0.12912270919254645, 4.163336342344337e-17, 0.06353839969098075, -0.05201188488473199, -0.09352832228550825, -0.029432383638471782, 0.06821120334518876, 0.09224972419564284, 0.01672125731297258, -0.07732071464207121, -0.09135149711095843, -0.014242939691595985, 0.06946464212704331, 0.09649835337337681, 9.020562075079397e-17, -0.020006556726431507, 0.0011578307973870716, 0.0006529982993307426, -0.00010428132112628996, -0.0002447957042434612, 0.0003495142478038282, 0.0005945571681854611, -0.0004123068817047937, -0.0019101831922042345, -0.0021647621121907434, -0.0007620083144078277, -0.009506518169585726, -5.551115123125783e-17, -0.03004739672515705, 0.0025988091200283836, 0.003911070115887594, 0.00014142077362191974, -0.003879020695658708, -0.003231290942189824, 0.0011661012144048577, 0.004043712949797051, 0.0024145052876068385, -0.0011408867715585747, -0.0022328401557055594, -0.007446375363535845, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
#[rustfmt::skip]
const MR_STFT: [f64; 1] = [0.40644769680388304];
#[rustfmt::skip]
const SPEC_MAG_L1: [f64; 1] = [0.03339170304005207];

/// L1 a1 b1, L2 a2 b2, ΔE00 of the CIEDE2000 test data (Sharma, Wu & Dalal, *The CIEDE2000
/// Color-Difference Formula: Implementation Notes, Supplementary Test Data, and Mathematical
/// Observations*, Color Research & Application 30(1), 2005, Table 1).
#[rustfmt::skip]
const SHARMA: [[f64; 7]; 34] = [
    [50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425], // 1
    [50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615], // 2
    [50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412], // 3
    [50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000], // 4
    [50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000], // 5
    [50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000], // 6
    [50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669],    // 7
    [50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669],    // 8
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792],   // 9
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792],   // 10
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195],   // 11
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195],   // 12
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045],   // 13
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045],   // 14
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461],   // 15
    [50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065],    // 16
    [50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492], // 17
    [50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977],  // 18
    [50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030], // 19
    [50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535],  // 20
    [50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000],     // 21
    [50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000],     // 22
    [50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000],     // 23
    [50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000],     // 24
    [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644], // 25
    [63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630], // 26
    [61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731],   // 27
    [35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645], // 28
    [22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373], // 29
    [36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146], // 30
    [90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441],   // 31
    [90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381], // 32
    [6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377],   // 33
    [2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082],    // 34
];

/// The export script's `pattern`: a smooth image plus a fine texture, clipped to [0, 1].
fn pattern(n: usize, c: usize, h: usize, w: usize, phase: f64) -> Tensor {
    let mut v = Vec::with_capacity(n * c * h * w);
    for ni in 0..n {
        for ci in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (ni, ci, y, x) = (ni as f64, ci as f64, y as f64, x as f64);
                    let p = 0.5
                        + 0.3 * (0.21 * x + 0.13 * y + 1.7 * ci + phase + 0.9 * ni).sin()
                        + 0.15 * (1.9 * x * (1.0 + 0.1 * ci) + 2.3 * y + phase * 3.0).sin();
                    v.push(p.clamp(0.0, 1.0));
                }
            }
        }
    }
    Tensor::from_vec(v, (n, c, h, w), &Device::Cpu).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(got: &Tensor, want: &[f64], tol: f64, what: &str) {
    let got = vals(got);
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
    }
}

/// Central finite differences of the scalar `f` at 12 spread elements of `x`.
fn check_grad(x: &Tensor, f: impl Fn(&Tensor) -> Tensor, what: &str) {
    let v = Var::from_tensor(x).unwrap();
    let analytic = vals(f(v.as_tensor()).backward().unwrap().get(v.as_tensor()).unwrap());
    let base = vals(x);
    let eps = 1e-6;
    for k in 0..12 {
        let i = (k * 7919 + 13) % base.len();
        let at = |d: f64| {
            let mut y = base.clone();
            y[i] += d;
            vals(&f(&Tensor::from_vec(y, x.dims(), &Device::Cpu).unwrap()))[0]
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() <= 1e-6 + 1e-5 * numeric.abs(),
            "{what}: d/dx[{i}] analytic {} vs numeric {numeric}",
            analytic[i]
        );
    }
}

#[test]
fn ciede2000_matches_all_34_published_pairs() {
    let lab = |cols: [usize; 3]| {
        let v: Vec<f64> = SHARMA.iter().flat_map(|r| cols.map(|c| r[c])).collect();
        // [34, 3] → [1, 3, 34, 1]
        Tensor::from_vec(v, (34, 3), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap()
            .reshape((1, 3, 34, 1))
            .unwrap()
    };
    let (lab1, lab2) = (lab([0, 1, 2]), lab([3, 4, 5]));
    let want: Vec<f64> = SHARMA.iter().map(|r| r[6]).collect();
    let d = delta_e2000(&lab1, &lab2, Ciede2000Weights::default()).unwrap();
    assert_close(&d, &want, 1e-4, "ΔE00");
    // Symmetric, and zero for identical colours.
    let back = delta_e2000(&lab2, &lab1, Ciede2000Weights::default()).unwrap();
    assert_close(&back, &want, 1e-4, "ΔE00 reversed");
    assert_close(
        &delta_e2000(&lab1, &lab1, Ciede2000Weights::default()).unwrap(),
        &[0.0; 34],
        1e-12,
        "ΔE00(x, x)",
    );
    // The same pairs as a batch of two images of 17 pixels each (channel slices of a batch
    // are strided views).
    let batch = |t: &Tensor| {
        t.reshape((3, 2, 17)).unwrap().transpose(0, 1).unwrap().reshape((2, 3, 17, 1)).unwrap()
    };
    let d = delta_e2000(&batch(&lab1), &batch(&lab2), Ciede2000Weights::default()).unwrap();
    assert_eq!(d.dims(), [2, 1, 17, 1]);
    assert_close(&d, &want, 1e-4, "ΔE00, batch of 2");
}

#[test]
fn scalar_ciede2000_matches_all_34_published_pairs() {
    for (i, r) in SHARMA.iter().enumerate() {
        let (a, b) = ([r[0], r[1], r[2]], [r[3], r[4], r[5]]);
        let d = delta_e00(a, b);
        assert!((d - r[6]).abs() < 1e-4, "pair {}: {d} against the published {}", i + 1, r[6]);
        assert!((delta_e00(b, a) - r[6]).abs() < 1e-4, "pair {} reversed", i + 1);
        assert_eq!(delta_e00(a, a), 0.0, "pair {}: ΔE00(x, x)", i + 1);
    }
    // The weights divide their terms: kL = 2 on a pure lightness difference halves it.
    let w = Ciede2000Weights { l: 2.0, c: 1.0, h: 1.0 };
    let (a, b) = ([40.0, 0.0, 0.0], [60.0, 0.0, 0.0]);
    assert!((ciede2000(a, b, w) - delta_e00(a, b) / 2.0).abs() < 1e-12);
}

#[test]
fn scalar_lab_agrees_with_scikit_image_and_round_trips() {
    // The 2×3 pixels whose Lab scikit-image printed (LAB), one colour at a time.
    let a = pattern(1, 3, 24, 21, 0.0).narrow(2, 0, 2).unwrap().narrow(3, 0, 3).unwrap();
    let rgb = vals(&a);
    for p in 0..6 {
        let lab = lab_from_srgb([rgb[p], rgb[6 + p], rgb[12 + p]]);
        for c in 0..3 {
            assert!((lab[c] - LAB[6 * c + p]).abs() < 1e-9, "pixel {p} channel {c}");
        }
        let back = srgb_from_lab(lab);
        for c in 0..3 {
            assert!((back[c] - rgb[6 * c + p]).abs() < 1e-9, "round trip, pixel {p}");
        }
    }
}

#[test]
fn ciede2000_gradient_matches_finite_differences() {
    // Chromatic pairs away from the formula's kinks (rows 1–3, 17–20 of the test data).
    let rows = [0usize, 1, 2, 16, 17, 18, 19];
    let pick = |off: usize| {
        let v: Vec<f64> = rows
            .iter()
            .flat_map(|&r| [SHARMA[r][off], SHARMA[r][off + 1], SHARMA[r][off + 2]])
            .collect();
        Tensor::from_vec(v, (rows.len(), 3), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap()
            .reshape((1, 3, rows.len(), 1))
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (lab1, lab2) = (pick(0), pick(3));
    check_grad(
        &lab1,
        |x| delta_e2000(x, &lab2, Ciede2000Weights::default()).unwrap().sum_all().unwrap(),
        "ΔE00",
    );
}

#[test]
fn lab_matches_scikit_image_and_round_trips() {
    let a = pattern(1, 3, 24, 21, 0.0).narrow(2, 0, 2).unwrap().narrow(3, 0, 3).unwrap();
    let b = pattern(1, 3, 24, 21, 0.4).narrow(2, 0, 2).unwrap().narrow(3, 0, 3).unwrap();
    let lab = srgb_to_lab(&a).unwrap();
    assert_close(&lab, &LAB, 1e-9, "rgb2lab");
    assert_close(&delta_e76(&lab, &srgb_to_lab(&b).unwrap()).unwrap(), &DE76, 1e-9, "ΔE76");
    assert_close(&lab_to_srgb(&lab).unwrap(), &vals(&a), 1e-9, "Lab → sRGB → Lab");
    check_grad(&a, |x| srgb_to_lab(x).unwrap().sqr().unwrap().sum_all().unwrap(), "rgb2lab");
    check_grad(
        &a,
        |x| {
            delta_e76(&srgb_to_lab(x).unwrap(), &srgb_to_lab(&b).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
        },
        "ΔE76",
    );
}

#[test]
fn ssim_psnr_and_ms_ssim_match_the_references() {
    let (a, b) = (pattern(2, 3, 24, 21, 0.0), pattern(2, 3, 24, 21, 0.4));
    let cfg = SsimConfig::default();
    let s = ssim(&a, &b, &cfg).unwrap();
    assert_close(&s, &SSIM_RGB, 1e-6, "SSIM vs pytorch-msssim");
    assert_close(&s.narrow(0, 0, 1).unwrap(), &SSIM_SKIMAGE_RGB0, 1e-4, "SSIM vs scikit-image");
    assert_close(&ssim(&a, &a, &cfg).unwrap(), &[1.0, 1.0], 1e-12, "SSIM(x, x)");
    assert_close(&psnr(&a, &b, 1.0).unwrap(), &PSNR, 1e-9, "PSNR");
    let (g1, g2) = (pattern(1, 1, 171, 165, 0.0), pattern(1, 1, 171, 165, 0.3));
    assert_close(
        &ms_ssim(&g1, &g2, &cfg).unwrap(),
        &MS_SSIM_GRAY,
        1e-6,
        "MS-SSIM vs pytorch-msssim",
    );
    let small = pattern(1, 1, 40, 40, 0.0);
    match ms_ssim(&small, &small, &cfg) {
        Err(Error::Input { reason, .. }) => {
            assert!(reason.contains("smaller than the minimum 161"), "{reason}")
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    check_grad(
        &a.narrow(0, 0, 1).unwrap(),
        |x| ssim(x, &b.narrow(0, 0, 1).unwrap(), &cfg).unwrap().sum_all().unwrap(),
        "SSIM",
    );
    check_grad(&g1, |x| ms_ssim(x, &g2, &cfg).unwrap().sum_all().unwrap(), "MS-SSIM");
    check_grad(&a, |x| psnr(x, &b, 1.0).unwrap().sum_all().unwrap(), "PSNR");
}

#[test]
fn opponent_loss_weighs_colour_and_luminance() {
    let a = pattern(1, 3, 6, 5, 0.0);
    let (lum_only, colour_only) = ([1.0, 0.0, 0.0], [0.0, 1.0, 1.0]);
    // Gray against brighter gray: only luminance differs.
    let gray = pattern(1, 1, 6, 5, 0.0).repeat((1, 3, 1, 1)).unwrap();
    let brighter = (&gray * 0.8).unwrap();
    let at = |x: &Tensor, y: &Tensor, w| vals(&opponent_loss(x, y, w).unwrap())[0];
    assert!(at(&gray, &brighter, lum_only) > 1e-3);
    assert!(at(&gray, &brighter, colour_only) < 1e-15);
    // Red and green swapped: luminance and blue–yellow are unchanged, red–green flips.
    let swapped = Tensor::cat(
        &[a.narrow(1, 1, 1).unwrap(), a.narrow(1, 0, 1).unwrap(), a.narrow(1, 2, 1).unwrap()],
        1,
    )
    .unwrap();
    assert!(at(&a, &swapped, lum_only) < 1e-15);
    assert!(at(&a, &swapped, colour_only) > 1e-3);
    assert_close(&opponent_loss(&a, &a, [1.0, 4.0, 4.0]).unwrap(), &[0.0], 1e-15, "d(x, x)");
    let b = pattern(1, 3, 6, 5, 0.4);
    check_grad(
        &a,
        |x| opponent_loss(x, &b, [1.0, 4.0, 4.0]).unwrap().sum_all().unwrap(),
        "opponent",
    );
    assert!(opponent_loss(&a, &b, [1.0, -1.0, 0.0]).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let a = pattern(1, 3, 24, 21, 0.0);
    let e = ssim(&a, &pattern(1, 3, 24, 20, 0.0), &SsimConfig::default()).unwrap_err();
    assert!(e.to_string().contains("[1, 3, 24, 20]"), "{e}");
    let e = ssim(&pattern(1, 3, 8, 8, 0.0), &pattern(1, 3, 8, 8, 0.0), &SsimConfig::default())
        .unwrap_err();
    assert!(e.to_string().contains("smaller than the minimum 11"), "{e}");
    let e = srgb_to_lab(&pattern(1, 2, 4, 4, 0.0)).unwrap_err();
    assert!(e.to_string().contains("2 channels"), "{e}");
    let even = SsimConfig { window: 10, ..Default::default() };
    assert!(ssim(&a, &a, &even).is_err());
}

#[test]
fn total_variation_by_hand_and_gradients() {
    // x = [[0, 1, 3], [2, 2, 0], [1, 0, 0]]: at (0,0): (1−0)² + (2−0)² = 5; (0,1): (3−1)² +
    // (2−1)² = 5; (1,0): (2−2)² + (1−2)² = 1; (1,1): (0−2)² + (0−2)² = 8.
    let x = Tensor::from_vec(
        vec![0.0, 1.0, 3.0, 2.0, 2.0, 0.0, 1.0, 0.0, 0.0],
        (1, 1, 3, 3),
        &Device::Cpu,
    )
    .unwrap();
    assert_close(&total_variation(&x, 2.0).unwrap(), &[19.0], 1e-12, "TV²");
    let iso = 5f64.sqrt() * 2.0 + 1.0 + 8f64.sqrt();
    assert_close(&total_variation(&x, 1.0).unwrap(), &[iso], 1e-12, "TV¹");
    let flat = Tensor::ones((2, 3, 4, 4), DType::F64, &Device::Cpu).unwrap();
    assert_close(&total_variation(&flat, 1.0).unwrap(), &[0.0, 0.0], 0.0, "flat");
    let a = pattern(1, 3, 6, 5, 0.2);
    for beta in [1.0, 2.0, 1.5] {
        check_grad(&a, |x| total_variation(x, beta).unwrap().sum_all().unwrap(), "TV");
    }
    // A flat image's β = 1 gradient is 0, not NaN.
    let v = Var::from_tensor(&flat).unwrap();
    let g = total_variation(v.as_tensor(), 1.0).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(vals(g.get(v.as_tensor()).unwrap()).iter().all(|x| *x == 0.0));
    assert!(total_variation(&x, 0.0).is_err());
}

#[test]
fn jnd_loss_ignores_what_cannot_be_seen() {
    let a = pattern(1, 3, 5, 4, 0.0);
    assert_close(&jnd_insensitive_loss(&a, &a, None).unwrap(), &[0.0], 0.0, "same");
    // A change of 0.002 in sRGB is far below ΔE00 2.3 everywhere.
    let tiny = (&a + 0.002).unwrap();
    let below = delta_e2000(
        &srgb_to_lab(&a).unwrap(),
        &srgb_to_lab(&tiny).unwrap(),
        Ciede2000Weights::default(),
    )
    .unwrap();
    assert!(vals(&below).iter().all(|d| *d < JND_DELTA_E));
    assert_close(&jnd_insensitive_loss(&a, &tiny, None).unwrap(), &[0.0], 0.0, "below the JND");
    // A visible change costs ΔE00 − 2.3 on average; with ε = 0 it is the mean ΔE00.
    let b = pattern(1, 3, 5, 4, 0.5);
    let d = vals(
        &delta_e2000(
            &srgb_to_lab(&a).unwrap(),
            &srgb_to_lab(&b).unwrap(),
            Ciede2000Weights::default(),
        )
        .unwrap(),
    );
    let want: f64 = d.iter().map(|v| (v - JND_DELTA_E).max(0.0)).sum::<f64>() / d.len() as f64;
    assert_close(&jnd_insensitive_loss(&a, &b, None).unwrap(), &[want], 1e-12, "above the JND");
    let mean: f64 = d.iter().sum::<f64>() / d.len() as f64;
    assert_close(&jnd_insensitive_loss(&a, &b, Some(0.0)).unwrap(), &[mean], 1e-12, "ε = 0");
    check_grad(&b, |x| jnd_insensitive_loss(&a, x, None).unwrap().sum_all().unwrap(), "JND loss");
}

/// The export script's `signal`: two sines and a chirp.
fn signal(len: usize, phase: f64) -> Tensor {
    let v: Vec<f64> = (0..len)
        .map(|t| {
            let t = t as f64;
            0.5 * (0.07 * t + phase).sin()
                + 0.3 * (0.31 * t * (1.0 + t / 5000.0)).sin()
                + 0.1 * (1.3 * t + 2.0 * phase).sin()
        })
        .collect();
    Tensor::from_vec(v, len, &Device::Cpu).unwrap()
}

#[test]
fn stft_and_spectrogram_losses_match_torch() {
    let cfg = StftConfig { n_fft: 16, hop: 4, win_length: 12 };
    let (re, im) = stft(&signal(50, 0.0), &cfg).unwrap();
    assert_eq!(re.dims(), [1, 9, 13]);
    assert_close(&re, &STFT_RE, 1e-10, "STFT real part vs torch.stft");
    assert_close(&im, &STFT_IM, 1e-10, "STFT imaginary part vs torch.stft");
    let (x, y) = (signal(2400, 0.0), signal(2400, 0.6));
    let mr = multi_resolution_stft_loss(&x, &y, &StftConfig::parallel_wavegan()).unwrap();
    assert_close(&mr, &MR_STFT, 1e-9, "multi-resolution STFT loss");
    let small = StftConfig::parallel_wavegan()[2];
    let mag = spectrogram_distance(&x, &y, &small, SpectrogramScale::Magnitude).unwrap();
    assert_close(&mag, &SPEC_MAG_L1, 1e-9, "magnitude L1");
    assert_close(&spectral_convergence(&x, &x, &small).unwrap(), &[0.0], 0.0, "SC(x, x)");
    // Differentiable w.r.t. the waveform.
    let short = StftConfig { n_fft: 32, hop: 8, win_length: 24 };
    let (a, b) = (signal(120, 0.0).unsqueeze(0).unwrap(), signal(120, 0.6).unsqueeze(0).unwrap());
    check_grad(
        &a,
        |w| multi_resolution_stft_loss(w, &b, &[short, cfg]).unwrap().sum_all().unwrap(),
        "MR-STFT",
    );
    // Too short for the padding, a bad config, different lengths.
    assert!(stft(&signal(8, 0.0), &cfg).is_err());
    assert!(stft(&x, &StftConfig { n_fft: 16, hop: 4, win_length: 20 }).is_err());
    let e = spectral_convergence(&x, &signal(2000, 0.0), &small).unwrap_err();
    assert!(e.to_string().contains("[2000]"), "{e}");
}
