//! Values against numbers computed independently (PyTorch 2.15 in f64; each snippet beside its
//! numbers), gradients against central finite differences in f64, properties and errors.

use std::sync::Arc;

use candle::{DType, Device, Tensor, Var};
use deepsim_comparators::{Comparator, Tap};
use deepsim_losses::{
    discriminator_loss, diversity_penalty, generator_loss, image_loss, kl_divergence,
    perceptual_gradient_norm, softplus, two_way_logit, AdaptiveAdversarialWeight, AdversarialKind,
    DeepSimLoss, DeepSimWeights, DiscriminatorPause, Error, FeatureLoss, FeatureNorm,
    ImageDistance, LpipsLoss, Reduction, StepInputs,
};

const CPU: Device = Device::Cpu;

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &CPU).unwrap()
}

fn vals(x: &Tensor) -> Vec<f64> {
    x.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_vals(got: &Tensor, want: &[f64], what: &str) {
    let got = vals(got);
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 + 1e-9 * w.abs(), "{what}[{i}]: {g} vs {w}");
    }
}

/// The gradient of the scalar `f(x)` w.r.t. `x` from candle against central differences.
fn check_grad(x: &[f64], shape: &[usize], f: impl Fn(&Tensor) -> Tensor, what: &str) {
    let v = Var::from_tensor(&t(x, shape)).unwrap();
    let grads = f(v.as_tensor()).backward().unwrap();
    let analytic = vals(grads.get(v.as_tensor()).expect("a gradient"));
    let eps = 1e-6;
    for i in 0..x.len() {
        let at = |d: f64| {
            let mut y = x.to_vec();
            y[i] += d;
            vals(&f(&t(&y, shape)))[0]
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() <= 1e-6 + 1e-6 * numeric.abs(),
            "{what}: d/dx[{i}] analytic {} vs numeric {numeric}",
            analytic[i]
        );
    }
}

// a = [[0.1, -0.2, 0.3], [0.5, 0.25, -1.0]], b = [[0.0, 0.2, 0.1], [-0.5, 0.5, 0.0]]
// ((a - b)**2).sum(1) → [0.21, 2.0625]; (a - b).abs().sum(1) → [0.7, 2.25]
const A: [f64; 6] = [0.1, -0.2, 0.3, 0.5, 0.25, -1.0];
const B: [f64; 6] = [0.0, 0.2, 0.1, -0.5, 0.5, 0.0];

#[test]
fn image_loss_values_and_gradients() {
    let (a, b) = (t(&A, &[2, 3]), t(&B, &[2, 3]));
    let sq = image_loss(&a, &b, ImageDistance::SquaredL2, Reduction::None).unwrap();
    assert_vals(&sq, &[0.21000000000000002, 2.0625], "squared L2");
    let l1 = image_loss(&a, &b, ImageDistance::L1, Reduction::None).unwrap();
    assert_vals(&l1, &[0.7, 2.25], "L1");
    let mean = image_loss(&a, &b, ImageDistance::SquaredL2, Reduction::Mean).unwrap();
    assert_vals(&mean, &[(0.21 + 2.0625) / 2.0], "mean");
    for d in [ImageDistance::SquaredL2, ImageDistance::L1] {
        check_grad(&A, &[2, 3], |x| image_loss(x, &b, d, Reduction::Sum).unwrap(), "image");
        let zero = image_loss(&a, &a, d, Reduction::Sum).unwrap();
        assert_vals(&zero, &[0.0], "d(a, a) = 0");
    }
}

// real = [3, -1.5, 0, 100, -100], fake = [-2, 0.5, 0, -100, 100]
// F.binary_cross_entropy_with_logits(real, ones, reduction='none')
//   + F.binary_cross_entropy_with_logits(fake, zeros, reduction='none')
// F.binary_cross_entropy_with_logits(fake, ones, reduction='none')
// F.relu(1 - real) + F.relu(1 + fake); (real - 1)**2 + fake**2; (fake - 1)**2
const REAL: [f64; 5] = [3.0, -1.5, 0.0, 100.0, -100.0];
const FAKE: [f64; 5] = [-2.0, 0.5, 0.0, -100.0, 100.0];

#[test]
fn adversarial_values_match_pytorch_including_logits_of_100() {
    let (r, f) = (t(&REAL, &[5]), t(&FAKE, &[5, 1]));
    let none = Reduction::None;
    let cases = [
        (
            AdversarialKind::Logistic,
            vec![
                0.17551536261671474,
                2.6754902621628593,
                1.3862943611198906,
                3.720075976020836e-44,
                200.0,
            ],
            vec![
                2.1269280110429727,
                0.4740769841801067,
                std::f64::consts::LN_2, // PyTorch: 0.6931471805599453
                100.0,
                3.720075976020836e-44,
            ],
        ),
        (AdversarialKind::Hinge, vec![0.0, 4.0, 2.0, 0.0, 202.0], FAKE.map(|v| -v).to_vec()),
        (
            AdversarialKind::LeastSquares,
            vec![8.0, 6.5, 1.0, 19801.0, 20201.0],
            vec![9.0, 0.25, 1.0, 10201.0, 9801.0],
        ),
    ];
    for (kind, d, g) in cases {
        assert_vals(&discriminator_loss(&r, &f, kind, none).unwrap(), &d, &format!("{kind:?} D"));
        assert_vals(&generator_loss(&f, kind, none).unwrap(), &g, &format!("{kind:?} G"));
    }
    // f32 at ±100: finite values and gradients.
    let r32 = Var::from_tensor(&t(&REAL, &[5]).to_dtype(DType::F32).unwrap()).unwrap();
    let f32_ = t(&FAKE, &[5]).to_dtype(DType::F32).unwrap();
    let l = discriminator_loss(r32.as_tensor(), &f32_, AdversarialKind::Logistic, Reduction::Sum)
        .unwrap();
    assert!((l.to_scalar::<f32>().unwrap() - 204.23734).abs() < 1e-3);
    let g: Vec<f32> = l.backward().unwrap().get(r32.as_tensor()).unwrap().to_vec1().unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    // d/dl softplus(−l) = −σ(−l): −1 at l = −100, 0 at l = 100, −½ at 0.
    assert!((g[4] + 1.0).abs() < 1e-6 && g[3].abs() < 1e-6 && (g[2] + 0.5).abs() < 1e-6, "{g:?}");
}

#[test]
fn adversarial_gradients_match_finite_differences() {
    let fake = t(&FAKE[..3], &[3]);
    for kind in [AdversarialKind::Logistic, AdversarialKind::Hinge, AdversarialKind::LeastSquares] {
        let real = [3.0, -1.5, 0.25];
        let d = |x: &Tensor| discriminator_loss(x, &fake, kind, Reduction::Sum).unwrap();
        check_grad(&real, &[3], d, &format!("{kind:?} D, real"));
        let g = |x: &Tensor| generator_loss(x, kind, Reduction::Mean).unwrap();
        check_grad(&[-2.0, 0.5, 0.3], &[3], g, &format!("{kind:?} G"));
    }
    // softplus at the kink of its formula (0) and far out: the gradient is σ(x).
    check_grad(
        &[0.0, -30.0, 30.0, 1e-3],
        &[4],
        |x| softplus(x).unwrap().sum_all().unwrap(),
        "softplus",
    );
}

// two = [[0.3, 1.2], [2.0, -1.0]]: -F.log_softmax(two, 1)[:, 1] → [0.34115…, 3.04858…]
#[test]
fn two_way_softmax_form_equals_the_paper_s_log_loss() {
    let two = t(&[0.3, 1.2, 2.0, -1.0], &[2, 2]);
    let l = two_way_logit(&two).unwrap();
    let g = generator_loss(&l, AdversarialKind::Logistic, Reduction::None).unwrap();
    assert_vals(&g, &[0.3411538747320879, 3.048587351573742], "−log softmax₁");
    let bad = two_way_logit(&t(&[1.0, 2.0, 3.0], &[1, 3])).unwrap_err().to_string();
    assert!(bad.contains("[1, 3]") && bad.contains("[N, 2]"), "{bad}");
}

// mu = [[0.5, -1, 0], [2, 0.1, -0.3]], lv = [[0, -0.5, 1], [0.3, -2, 0.2]]
// 0.5 * (mu**2 + lv.exp() - lv - 1).sum(1) → [1.0374062440858391, 2.6532984244863935]
#[test]
fn kl_values_gradients_and_zero_at_the_prior() {
    let mu = [0.5, -1.0, 0.0, 2.0, 0.1, -0.3];
    let lv = [0.0, -0.5, 1.0, 0.3, -2.0, 0.2];
    let kl = kl_divergence(&t(&mu, &[2, 3]), &t(&lv, &[2, 3]), Reduction::None).unwrap();
    assert_vals(&kl, &[1.0374062440858391, 2.6532984244863935], "KL");
    check_grad(
        &mu,
        &[2, 3],
        |m| kl_divergence(m, &t(&lv, &[2, 3]), Reduction::Sum).unwrap(),
        "KL μ",
    );
    check_grad(
        &lv,
        &[2, 3],
        |l| kl_divergence(&t(&mu, &[2, 3]), l, Reduction::Sum).unwrap(),
        "KL log σ²",
    );
    let zero =
        kl_divergence(&t(&[0.0; 4], &[2, 2]), &t(&[0.0; 4], &[2, 2]), Reduction::Sum).unwrap();
    assert_vals(&zero, &[0.0], "KL of the prior itself");
}

#[test]
fn mismatched_shapes_are_errors() {
    let (a, b) = (t(&A, &[2, 3]), t(&A[..4], &[2, 2]));
    for e in [
        image_loss(&a, &b, ImageDistance::L1, Reduction::Mean).unwrap_err(),
        kl_divergence(&a, &b, Reduction::Mean).unwrap_err(),
        discriminator_loss(
            &t(&REAL, &[5]),
            &t(&FAKE[..4], &[4]),
            AdversarialKind::Hinge,
            Reduction::Sum,
        )
        .unwrap_err(),
        generator_loss(&a, AdversarialKind::Logistic, Reduction::Sum).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Shape { .. }), "{e}");
    }
}

/// A comparator computable by hand: tap conv1 = 2x, tap conv2 = x² (any dtype).
struct Toy;

impl Comparator for Toy {
    fn name(&self) -> &str {
        "toy"
    }
    fn taps(&self) -> &[Tap] {
        &[Tap::Conv1, Tap::Conv2]
    }
    fn min_size(&self) -> (usize, usize) {
        (1, 1)
    }
    fn features(&self, x: &Tensor, taps: &[Tap]) -> deepsim_comparators::Result<Vec<Tensor>> {
        Ok(taps
            .iter()
            .map(|t| if *t == Tap::Conv1 { (x * 2.0).unwrap() } else { x.sqr().unwrap() })
            .collect())
    }
}

#[test]
fn feature_loss_is_the_weighted_sum_of_tap_distances() {
    let toy: Arc<dyn Comparator + Send + Sync> = Arc::new(Toy);
    let (a, b) = (t(&A, &[2, 3]), t(&B, &[2, 3]));
    let loss = FeatureLoss::new(
        toy.clone(),
        &[(Tap::Conv1, 0.5), (Tap::Conv2, 3.0)],
        FeatureNorm::Sum,
        Reduction::Sum,
    )
    .unwrap();
    let out = loss.forward(&a, &b).unwrap();
    // ‖2a − 2b‖² = 4 · (0.21 + 2.0625); ‖a² − b²‖² by hand.
    let conv1 = 4.0 * (0.21 + 2.0625);
    let conv2: f64 = A.iter().zip(&B).map(|(x, y)| (x * x - y * y).powi(2)).sum();
    assert_vals(&out.per_tap[0], &[conv1], "conv1");
    assert_vals(&out.per_tap[1], &[conv2], "conv2");
    assert_vals(&out.total, &[0.5 * conv1 + 3.0 * conv2], "total");
    check_grad(&A, &[2, 3], |x| loss.forward(x, &b).unwrap().total, "feature loss");
    assert_vals(&loss.forward(&a, &a).unwrap().total, &[0.0], "d(a, a) = 0");
    let mean =
        FeatureLoss::new(toy.clone(), &[(Tap::Conv1, 1.0)], FeatureNorm::Mean, Reduction::Mean)
            .unwrap();
    assert_vals(
        &mean.forward(&a, &b).unwrap().total,
        &[conv1 / 6.0],
        "mean over elements and batch",
    );
    // The target carries no gradient even when it is a variable.
    let bv = Var::from_tensor(&b).unwrap();
    let g = loss.forward(&a, bv.as_tensor()).unwrap().total.backward().unwrap();
    assert!(g.get(bv.as_tensor()).is_none());
    let e = FeatureLoss::new(toy.clone(), &[(Tap::Fc6, 1.0)], FeatureNorm::Sum, Reduction::Sum)
        .err()
        .unwrap();
    assert!(e.to_string().contains("no tap `fc6`"), "{e}");
    let e = FeatureLoss::new(toy, &[(Tap::Conv1, -1.0)], FeatureNorm::Sum, Reduction::Sum)
        .err()
        .unwrap();
    assert!(e.to_string().contains("-1"), "{e}");
}

#[test]
fn deepsim_loss_weights_terms_and_switches_them_off() {
    let toy: Arc<dyn Comparator + Send + Sync> = Arc::new(Toy);
    let feature =
        FeatureLoss::new(toy, &[(Tap::Conv1, 1.0)], FeatureNorm::Sum, Reduction::Sum).unwrap();
    let (a, b) = (t(&A, &[2, 3]), t(&B, &[2, 3]));
    let fake = t(&[-2.0, 0.5], &[2]);
    let (mu, lv) = (t(&[0.5, -1.0, 2.0, 0.1], &[2, 2]), t(&[0.0, -0.5, 0.3, -2.0], &[2, 2]));
    let paper = DeepSimWeights::paper_alexnet_conv5();
    assert_eq!((paper.feat, paper.adv, paper.img, paper.kl), (0.01, 100.0, 2e-6, 20.0));
    let loss = DeepSimLoss::new(
        paper,
        Some(feature.clone().into()),
        AdversarialKind::Logistic,
        Reduction::Sum,
    )
    .unwrap();
    let inputs =
        StepInputs { fake_logits: Some(&fake), posterior: Some((&mu, &lv)), ..Default::default() };
    let terms = loss.generator_terms(&a, &b, inputs).unwrap();
    let v = |x: &Option<Tensor>| vals(x.as_ref().unwrap())[0];
    let feat = 4.0 * (0.21 + 2.0625);
    assert!((v(&terms.feat) - feat).abs() < 1e-12);
    // Image term on 0–255 pixels.
    assert!((v(&terms.img) - 255.0f64.powi(2) * (0.21 + 2.0625)).abs() < 1e-6);
    let want = 0.01 * feat + 100.0 * v(&terms.adv) + 2e-6 * v(&terms.img) + 20.0 * v(&terms.kl);
    assert!((vals(&terms.total)[0] - want).abs() < 1e-9);
    // Ablation: λ_adv = 0 removes the term and its input requirement.
    let no_adv = DeepSimWeights { adv: 0.0, ..paper };
    let loss =
        DeepSimLoss::new(no_adv, Some(feature.into()), AdversarialKind::Logistic, Reduction::Sum)
            .unwrap();
    let inputs = StepInputs { posterior: Some((&mu, &lv)), ..Default::default() };
    let terms = loss.generator_terms(&a, &b, inputs).unwrap();
    assert!(terms.adv.is_none() && terms.feat.is_some());
    // A term switched on without its input, a feature term without a comparator, bad weights.
    let e = loss.generator_terms(&a, &b, StepInputs::default()).unwrap_err();
    assert!(e.to_string().contains("`posterior`"), "{e}");
    assert!(DeepSimLoss::new(paper, None, AdversarialKind::Logistic, Reduction::Sum).is_err());
    let nan = DeepSimWeights { img: f64::NAN, ..DeepSimWeights::image_only() };
    assert!(DeepSimLoss::new(nan, None, AdversarialKind::Logistic, Reduction::Sum).is_err());
}

#[test]
fn pause_rule_and_adaptive_weight() {
    let mut pause = DiscriminatorPause::default();
    assert!(!pause.step(0.05, 1.0)); // ratio 0.05 < 0.1: paused
    assert!(pause.step(0.1, 1.0));
    assert!(pause.step(2.0, 0.5));
    assert!(pause.step(f64::NAN, 1.0));
    assert_eq!((pause.paused_steps, pause.updated_steps), (1, 3));
    assert!(!DiscriminatorPause::with_threshold(0.5).unwrap().discriminator_updates(0.4, 1.0));
    assert!(DiscriminatorPause::with_threshold(-1.0).is_err());
    // rec = Σ w ⊙ c₁, adv = Σ w ⊙ c₂: the gradients are c₁ and c₂, so λ = ‖c₁‖ / (‖c₂‖ + 1e-4).
    let w = Var::from_tensor(&t(&[0.3, -0.7, 1.1], &[3])).unwrap();
    let (c1, c2) = (t(&[3.0, 0.0, 4.0], &[3]), t(&[0.0, 0.5, 0.0], &[3]));
    let rec = (w.as_tensor() * &c1).unwrap().sum_all().unwrap();
    let adv = (w.as_tensor() * &c2).unwrap().sum_all().unwrap();
    let rule = AdaptiveAdversarialWeight { start_step: 10, ..Default::default() };
    assert_eq!(rule.weight(5, &rec, &adv, &w).unwrap(), 0.0);
    let lambda = rule.weight(10, &rec, &adv, &w).unwrap();
    assert!((lambda - 5.0 / (0.5 + 1e-4)).abs() < 1e-9, "{lambda}");
    let capped = AdaptiveAdversarialWeight { max: 2.0, ..rule }.weight(10, &rec, &adv, &w).unwrap();
    assert_eq!(capped, 2.0);
    let other = Var::from_tensor(&t(&[1.0], &[1])).unwrap();
    assert!(rule.weight(10, &rec, &adv, &other).is_err());
}

/// Real comparators serve as the feature loss's comparator (they are `Send + Sync`), and LPIPS
/// as a loss reduces the metric's per-pair distances.
#[test]
fn real_comparators_as_losses() {
    use deepsim_comparators::{AlexNet, AlexNetLayout, Lpips};
    let (a, b) = (
        (t(&vec![0.25; 3 * 67 * 67], &[1, 3, 67, 67]) + 0.5).unwrap().to_dtype(DType::F32).unwrap(),
        t(&vec![0.25; 3 * 67 * 67], &[1, 3, 67, 67]).to_dtype(DType::F32).unwrap(),
    );
    let caffenet: Arc<dyn Comparator + Send + Sync> =
        Arc::new(AlexNet::random(AlexNetLayout::Caffe, 3, &CPU).unwrap());
    let loss =
        FeatureLoss::new(caffenet.clone(), &[(Tap::Conv5, 1.0)], FeatureNorm::Sum, Reduction::Sum)
            .unwrap();
    let direct = {
        let f = |x: &Tensor| caffenet.features(x, &[Tap::Conv5]).unwrap().remove(0);
        (f(&a) - f(&b)).unwrap().sqr().unwrap().sum_all().unwrap()
    };
    let got = loss.forward(&a, &b).unwrap().total;
    assert!((vals(&got)[0] - vals(&direct)[0]).abs() <= 1e-6 * vals(&direct)[0]);

    let trunk = AlexNet::random(AlexNetLayout::Torchvision, 4, &CPU).unwrap();
    let heads = ["lin0", "lin1", "lin2", "lin3", "lin4"]
        .iter()
        .zip([64, 192, 384, 256, 256])
        .map(|(n, c)| {
            (format!("{n}.weight"), Tensor::ones((1, c, 1, 1), DType::F32, &CPU).unwrap())
        })
        .collect();
    let lpips =
        Lpips::alex(trunk, candle_nn::VarBuilder::from_tensors(heads, DType::F32, &CPU)).unwrap();
    let metric: Vec<f64> = vals(&lpips.forward(&a, &b).unwrap().distance);
    let lpips_loss = LpipsLoss::new(lpips, Reduction::Mean);
    let av = Var::from_tensor(&a).unwrap();
    let (value, per_layer) = lpips_loss.forward(av.as_tensor(), &b).unwrap();
    assert!((vals(&value)[0] - metric[0]).abs() <= 1e-6 * metric[0]);
    assert_eq!(per_layer.len(), 5);
    let g = value.backward().unwrap();
    assert!(vals(g.get(av.as_tensor()).unwrap()).iter().all(|v| v.is_finite()));
}

/// Every loss that is a distance or a log-loss is ≥ 0 on arbitrary inputs (the hinge and
/// least-squares generator losses are not log-losses; hinge's can be negative).
#[test]
fn losses_are_non_negative() {
    let mut s = 7u64;
    let mut next = || {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 40.0
    };
    for _ in 0..20 {
        let v: Vec<f64> = (0..12).map(|_| next()).collect();
        let (a, b) = (t(&v[..6], &[2, 3]), t(&v[6..], &[2, 3]));
        let none = Reduction::None;
        let mut all = vec![
            image_loss(&a, &b, ImageDistance::SquaredL2, none).unwrap(),
            image_loss(&a, &b, ImageDistance::L1, none).unwrap(),
            kl_divergence(&a, &b, none).unwrap(),
            softplus(&a).unwrap(),
        ];
        let (r, f) = (t(&v[..4], &[4]), t(&v[4..8], &[4]));
        for kind in
            [AdversarialKind::Logistic, AdversarialKind::Hinge, AdversarialKind::LeastSquares]
        {
            all.push(discriminator_loss(&r, &f, kind, none).unwrap());
        }
        all.push(generator_loss(&f, AdversarialKind::Logistic, none).unwrap());
        all.push(generator_loss(&f, AdversarialKind::LeastSquares, none).unwrap());
        for x in all {
            assert!(vals(&x).iter().all(|&v| v >= 0.0 && v.is_finite()), "{x}");
        }
    }
}

/// With an adaptive weight, λ_adv is scaled by ‖∇_w rec‖ / (‖∇_w adv‖ + 1e-4) at the last layer,
/// where rec is the weighted reconstruction terms: here the image term of `w ⊙ c` against a
/// target, whose gradients are known in closed form.
#[test]
fn deepsim_loss_with_adaptive_weight() {
    let w = Var::from_tensor(&t(&[0.3, -0.7, 1.1, 0.2], &[1, 4])).unwrap();
    let c = t(&[2.0, 1.0, -1.0, 0.5], &[1, 4]);
    let target = t(&[0.1, 0.2, 0.3, 0.4], &[1, 4]);
    let generated = (w.as_tensor() * &c).unwrap();
    let fake = (generated.sum(1).unwrap() * 0.1).unwrap(); // the "discriminator": 0.1 Σ g
    let weights = DeepSimWeights { adv: 2.0, ..DeepSimWeights::image_only() };
    let rule = AdaptiveAdversarialWeight::default();
    let loss = DeepSimLoss::new(weights, None, AdversarialKind::LeastSquares, Reduction::Sum)
        .unwrap()
        .with_adaptive_weight(rule);
    let inputs =
        StepInputs { fake_logits: Some(&fake), adaptive: Some((0, &w)), ..Default::default() };
    let terms = loss.generator_terms(&generated, &target, inputs).unwrap();
    // ∇_w img = 2 (w⊙c − x) ⊙ c; ∇_w adv = 2 (l − 1) · 0.1 c with l = 0.1 Σ w⊙c.
    let (wv, cv, xv) = (vals(w.as_tensor()), vals(&c), vals(&target));
    let g_rec: f64 =
        (0..4).map(|i| (2.0 * (wv[i] * cv[i] - xv[i]) * cv[i]).powi(2)).sum::<f64>().sqrt();
    let l: f64 = 0.1 * (0..4).map(|i| wv[i] * cv[i]).sum::<f64>();
    let g_adv: f64 = (0..4).map(|i| (2.0 * (l - 1.0) * 0.1 * cv[i]).powi(2)).sum::<f64>().sqrt();
    let want = g_rec / (g_adv + 1e-4);
    assert!((terms.adv_factor - want).abs() < 1e-9 * want, "{} vs {want}", terms.adv_factor);
    let expected =
        vals(terms.img.as_ref().unwrap())[0] + 2.0 * want * vals(terms.adv.as_ref().unwrap())[0];
    assert!((vals(&terms.total)[0] - expected).abs() < 1e-9 * expected);
    // Without the last layer the adaptive loss refuses to guess.
    let inputs = StepInputs { fake_logits: Some(&fake), ..Default::default() };
    assert!(loss.generator_terms(&generated, &target, inputs).is_err());
}

const X_: [f64; 6] = [0.2, 0.5, 0.9, 0.1, 0.4, 0.6];
const V_: [f64; 6] = [0.1, -0.3, 0.2, 0.05, 0.0, -0.1];

/// For the linear tap (2x) ‖J·v‖ = 2‖v‖ exactly; for the quadratic tap (x²) J·v = 2x ⊙ v, which
/// the central difference also gives exactly.
#[test]
fn perceptual_gradient_norm_matches_the_closed_form() {
    let (x, v) = (t(&X_, &[2, 3]), t(&V_, &[2, 3]));
    let (seen, plain) = perceptual_gradient_norm(&Toy, Tap::Conv1, &x, &v, 1e-3).unwrap();
    let v_norm = [0.14f64.sqrt(), 0.0125f64.sqrt()];
    assert_vals(&plain, &v_norm, "‖v‖");
    assert_vals(&seen, &[2.0 * v_norm[0], 2.0 * v_norm[1]], "‖J v‖, linear");
    let (seen, _) = perceptual_gradient_norm(&Toy, Tap::Conv2, &x, &v, 1e-3).unwrap();
    let by_hand = |i: usize| -> f64 {
        (0..3).map(|k| (2.0 * X_[i * 3 + k] * V_[i * 3 + k]).powi(2)).sum::<f64>().sqrt()
    };
    assert_vals(&seen, &[by_hand(0), by_hand(1)], "‖J v‖, quadratic");
    assert!(perceptual_gradient_norm(&Toy, Tap::Conv1, &x, &x.zeros_like().unwrap(), 1e-3).is_err());
    assert!(perceptual_gradient_norm(&Toy, Tap::Conv1, &x, &v, 0.0).is_err());
}

#[test]
fn diversity_penalty_by_hand_and_gradient() {
    let same = t(&[0.3, 0.3, 0.3, 0.3, 0.3, 0.3], &[2, 3]);
    assert_vals(&diversity_penalty(&Toy, Tap::Conv1, &same, 0.5).unwrap(), &[1.0], "alike");
    // Three samples, tap 2x, D = 3, σ = 0.5: mean over pairs of exp(−4‖x_i − x_j‖² / 0.75).
    let x: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.1, 0.0, 0.3, 0.3, 0.3];
    let d2 =
        |i: usize, j: usize| (0..3).map(|k| (x[i * 3 + k] - x[j * 3 + k]).powi(2)).sum::<f64>();
    let want =
        [(0, 1), (0, 2), (1, 2)].iter().map(|&(i, j)| (-4.0 * d2(i, j) / 0.75).exp()).sum::<f64>()
            / 3.0;
    let got = diversity_penalty(&Toy, Tap::Conv1, &t(&x, &[3, 3]), 0.5).unwrap();
    assert!((vals(&got)[0] - want).abs() < 1e-12, "{got} vs {want}");
    check_grad(&x, &[3, 3], |s| diversity_penalty(&Toy, Tap::Conv1, s, 0.5).unwrap(), "diversity");
    assert!(diversity_penalty(&Toy, Tap::Conv1, &t(&x[..3], &[1, 3]), 0.5).is_err());
}

#[test]
fn feature_phase_crops_both_images_one_pixel_at_its_corner() {
    let toy: Arc<dyn Comparator + Send + Sync> = Arc::new(Toy);
    let feature =
        FeatureLoss::new(toy, &[(Tap::Conv1, 1.0)], FeatureNorm::Sum, Reduction::Sum).unwrap();
    let only_feat = DeepSimWeights { feat: 1.0, adv: 0.0, img: 0.0, kl: 0.0, pixel_scale: 1.0 };
    let loss = DeepSimLoss::new(
        only_feat,
        Some(feature.into()),
        AdversarialKind::Logistic,
        Reduction::Sum,
    )
    .unwrap();
    // a = [[0 1 2] [3 4 5] [6 7 8]], b = 0: the toy's conv1 is 2x, so the term is 4·Σ a² over
    // the 2×2 window that starts at (dy, dx).
    let a = t(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[1, 1, 3, 3]);
    let b = a.zeros_like().unwrap();
    for (phase, window) in [
        ((0, 0), 0.0 + 1.0 + 9.0 + 16.0),
        ((1, 0), 9.0 + 16.0 + 36.0 + 49.0),
        ((0, 1), 1.0 + 4.0 + 16.0 + 25.0),
        ((1, 1), 16.0 + 25.0 + 49.0 + 64.0),
    ] {
        let inputs = StepInputs { feature_phase: Some(phase), ..Default::default() };
        let terms = loss.generator_terms(&a, &b, inputs).unwrap();
        assert_eq!(vals(terms.feat.as_ref().unwrap())[0], 4.0 * window, "phase {phase:?}");
    }
    // Without a phase the whole image counts: 4·Σ a² = 4·204.
    let whole = loss.generator_terms(&a, &b, StepInputs::default()).unwrap();
    assert_eq!(vals(whole.feat.as_ref().unwrap())[0], 4.0 * 204.0);
    // Offsets beyond one pixel, and precomputed target features (taken at phase 0), are refused.
    let e = loss
        .generator_terms(&a, &b, StepInputs { feature_phase: Some((2, 0)), ..Default::default() })
        .unwrap_err();
    assert!(e.to_string().contains("feature_phase (2, 0)"), "{e}");
    let want = [b.clone()];
    let both = StepInputs {
        feature_phase: Some((1, 0)),
        target_features: Some(&want),
        ..Default::default()
    };
    let e = loss.generator_terms(&a, &b, both).unwrap_err();
    assert!(e.to_string().contains("feature_phase"), "{e}");
}

#[test]
fn a_learned_metric_as_the_feature_term() {
    // Two 2×3×32×32 images of smooth gradients in [0, 1], and ST-LPIPS-alex (shipped weights).
    let img = |k: f64| -> Tensor {
        let v: Vec<f64> = (0..2 * 3 * 32 * 32)
            .map(|i| {
                let (c, y, x) = ((i / 1024) % 3, (i / 32) % 32, i % 32);
                0.5 + 0.4 * ((k * x as f64 / 7.0 + y as f64 / 11.0 + c as f64).sin())
            })
            .collect();
        t(&v, &[2, 3, 32, 32]).to_dtype(DType::F32).unwrap()
    };
    let (a, b) = (img(1.0), img(1.7));
    let lpips = || {
        deepsim_comparators::Lpips::pretrained_shift_tolerant(
            deepsim_comparators::ShiftTolerantTrunk::Alex,
            None,
            &Device::Cpu,
        )
        .unwrap()
    };
    let metric = lpips();
    let by_metric = |a: &Tensor, b: &Tensor| -> f64 {
        let d = vals(&metric.forward(a, b).unwrap().distance);
        d.iter().sum::<f64>() / d.len() as f64
    };
    let weights = DeepSimWeights { feat: 3.0, adv: 0.0, img: 2.0, kl: 0.0, pixel_scale: 1.0 };
    let loss = DeepSimLoss::new(
        weights,
        Some(LpipsLoss::new(lpips(), Reduction::Mean).into()),
        AdversarialKind::Logistic,
        Reduction::Mean,
    )
    .unwrap();
    let terms = loss.generator_terms(&a, &b, StepInputs::default()).unwrap();
    let feat = vals(terms.feat.as_ref().unwrap())[0];
    let want = by_metric(&a, &b);
    assert!(want > 0.01 && (feat - want).abs() < 1e-5 * want, "{feat} vs {want}");
    // L_img: ‖a − b‖² per image, averaged over the batch.
    let sq = vals(&(&a - &b).unwrap().sqr().unwrap().sum_all().unwrap())[0] / 2.0;
    assert!((vals(terms.img.as_ref().unwrap())[0] - sq).abs() < 1e-5 * sq);
    let total = vals(&terms.total)[0];
    assert!((total - (3.0 * want + 2.0 * sq)).abs() < 1e-5 * total, "{total}");
    // With phase jitter, the metric compares the two images cropped one pixel at (dy, dx).
    let crop = |x: &Tensor| x.narrow(2, 1, 31).unwrap().narrow(3, 0, 31).unwrap();
    let inputs = StepInputs { feature_phase: Some((1, 0)), ..Default::default() };
    let terms = loss.generator_terms(&a, &b, inputs).unwrap();
    let want = by_metric(&crop(&a), &crop(&b));
    let feat = vals(terms.feat.as_ref().unwrap())[0];
    assert!((feat - want).abs() < 1e-5 * want, "{feat} vs {want}");
    // A metric takes images, not precomputed features.
    let features = [a.clone()];
    let inputs = StepInputs { target_features: Some(&features), ..Default::default() };
    let err = loss.generator_terms(&a, &b, inputs).unwrap_err().to_string();
    assert!(err.contains("learned metric"), "{err}");
}

#[test]
fn the_jnd_image_distance_is_the_article_s_epsilon_insensitive_loss() {
    // Two 2×3×8×8 colour ramps; the second shifted in red by up to 0.2.
    let ramp = |shift: f64| -> Tensor {
        let v: Vec<f64> = (0..2 * 3 * 64)
            .map(|i| {
                let (n, c, p) = (i / 192, (i / 64) % 3, i % 64);
                let base = 0.2 + 0.6 * p as f64 / 63.0 + 0.05 * n as f64;
                if c == 0 {
                    base * (1.0 - shift) + shift * (p % 8) as f64 / 7.0
                } else {
                    base * (0.5 + 0.25 * c as f64)
                }
            })
            .collect();
        t(&v, &[2, 3, 8, 8]).to_dtype(DType::F32).unwrap()
    };
    let (a, b) = (ramp(0.0), ramp(0.2));
    let per_image = deepsim_metrics::jnd_insensitive_loss(&a, &b, None).unwrap();
    let want = vals(&per_image).iter().sum::<f64>() / 2.0;
    assert!(want > 0.1, "the shift is visible: {want}");
    let got = image_loss(&a, &b, ImageDistance::Jnd, Reduction::Mean).unwrap();
    assert!((vals(&got)[0] - want).abs() < 1e-6 * want);
    // In DeePSiM's objective, the pixel scale (for 0–255 squared errors) leaves it alone.
    let weights = DeepSimWeights { feat: 0.0, adv: 0.0, img: 3.0, kl: 0.0, pixel_scale: 255.0 };
    let loss = DeepSimLoss::new(weights, None, AdversarialKind::Logistic, Reduction::Mean)
        .unwrap()
        .with_image_distance(ImageDistance::Jnd);
    let terms = loss.generator_terms(&b, &a, StepInputs::default()).unwrap();
    assert!((vals(terms.img.as_ref().unwrap())[0] - want).abs() < 1e-6 * want);
    assert!((vals(&terms.total)[0] - 3.0 * want).abs() < 1e-6 * want);
}
