//! The comparators against PyTorch: seeded random weights and inputs drawn on both sides from
//! the same counter-based generator, reference activations from
//! `fixtures/export_comparator_fixtures.py` (torch 2.15, torchvision 0.29, lpips 0.1.4), and the
//! properties and errors of the comparator contract.

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use deepsim_comparators::{
    seeded, AlexNet, AlexNetLayout, Comparator, Error, Lpips, SqueezeNet, Tap, Vgg, VggDepth,
};

fn reference() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/comparators.safetensors");
    candle::safetensors::load(path, &Device::Cpu).unwrap()
}

/// `(u + 1) / 2` of the seeded generator: the script's `image(seed, shape)`.
fn image(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = seeded::uniform(seed, n).into_iter().map(|u| (u + 1.0) / 2.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Asserts `|a − b| ≤ 1e-4 · max|b|` elementwise (the "1e-4 relative").
fn assert_matches(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: reference is all zeros");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
    }
}

#[test]
fn torchvision_alexnet_matches_pytorch() {
    let refs = reference();
    let net = AlexNet::random(AlexNetLayout::Torchvision, 10, &Device::Cpu).unwrap();
    let x = Var::from_tensor(&image(1000, &[2, 3, 67, 67])).unwrap();
    let taps = [Tap::Conv1, Tap::Relu3, Tap::Pool5, Tap::Fc6, Tap::Fc8];
    let got = net.features(x.as_tensor(), &taps).unwrap();
    for (t, g) in taps.iter().zip(&got) {
        assert_matches(g, &refs[&format!("tv67.{}", t.name())], t.name());
    }
    // Input gradient of Σ pool5 ⊙ r, through every layer's backward.
    let r = ((image(1006, got[2].dims()) * 2.0).unwrap() - 1.0).unwrap();
    let grads = (&got[2] * &r).unwrap().sum_all().unwrap().backward().unwrap();
    assert_matches(grads.get(x.as_tensor()).unwrap(), &refs["tv67.grad_pool5"], "d pool5 / d x");
    // A non-square input whose pool5 (2×1) is stretched to 6×6 by adaptive average pooling.
    let got = net.features(&image(1001, &[1, 3, 99, 83]), &[Tap::Fc6, Tap::Pool5]).unwrap();
    assert_matches(&got[1], &refs["tv99.pool5"], "99×83 pool5");
    assert_matches(&got[0], &refs["tv99.fc6"], "99×83 fc6");
}

#[test]
fn caffenet_matches_pytorch() {
    let refs = reference();
    let net = AlexNet::random(AlexNetLayout::Caffe, 20, &Device::Cpu).unwrap();
    let taps = [Tap::Norm1, Tap::Conv5, Tap::Pool5];
    let got = net.features(&image(1002, &[2, 3, 67, 67]), &taps).unwrap();
    for (t, g) in taps.iter().zip(&got) {
        assert_matches(g, &refs[&format!("caffe67.{}", t.name())], t.name());
    }
    let got = net.features(&image(1003, &[1, 3, 227, 227]), &[Tap::Fc6, Tap::Fc8]).unwrap();
    assert_matches(&got[0], &refs["caffe227.fc6"], "fc6");
    assert_matches(&got[1], &refs["caffe227.fc8"], "fc8");
}

/// Heads `|u|` of seeds `seed + i`, as the script draws them.
fn seeded_heads(seed: u64, widths: &[usize]) -> VarBuilder<'static> {
    let heads: HashMap<String, Tensor> = widths
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let v: Vec<f32> =
                seeded::uniform(seed + i as u64, c).into_iter().map(f32::abs).collect();
            (format!("lin{i}.weight"), Tensor::from_vec(v, (1, c, 1, 1), &Device::Cpu).unwrap())
        })
        .collect();
    VarBuilder::from_tensors(heads, DType::F32, &Device::Cpu)
}

fn seeded_lpips() -> Lpips {
    let trunk = AlexNet::random(AlexNetLayout::Torchvision, 10, &Device::Cpu).unwrap();
    Lpips::alex(trunk, seeded_heads(300, &[64, 192, 384, 256, 256])).unwrap()
}

#[test]
fn vgg16_and_squeezenet_match_pytorch() {
    let refs = reference();
    let vgg = Vgg::random(VggDepth::Vgg16, 30, &Device::Cpu).unwrap();
    let taps = [Tap::Vgg(1, 2), Tap::Vgg(3, 3), Tap::Vgg(5, 3)];
    let got = vgg.features(&image(1007, &[1, 3, 32, 32]), &taps).unwrap();
    for (t, g) in taps.iter().zip(&got) {
        assert_matches(g, &refs[&format!("vgg32.{}", t.name())], t.name());
    }
    let sq = SqueezeNet::random(40, &Device::Cpu).unwrap();
    let taps = [Tap::Relu1, Tap::Fire(3), Tap::Fire(9)];
    let got = sq.features(&image(1008, &[2, 3, 35, 35]), &taps).unwrap();
    for (t, g) in taps.iter().zip(&got) {
        assert_matches(g, &refs[&format!("sq35.{}", t.name())], t.name());
    }
}

#[test]
fn lpips_vgg_and_squeeze_match_the_lpips_package() {
    let refs = reference();
    let vgg = Lpips::vgg(
        Vgg::random(VggDepth::Vgg16, 30, &Device::Cpu).unwrap(),
        seeded_heads(310, &[64, 128, 256, 512, 512]),
    )
    .unwrap();
    let squeeze = Lpips::squeeze(
        SqueezeNet::random(40, &Device::Cpu).unwrap(),
        seeded_heads(320, &[64, 128, 256, 384, 384, 512, 512]),
    )
    .unwrap();
    for (lpips, key, size) in [(vgg, "lpips_vgg", 32), (squeeze, "lpips_squeeze", 40)] {
        let (a, b) = (image(1009, &[2, 3, size, size]), image(1010, &[2, 3, size, size]));
        let out = lpips.forward(&a, &b).unwrap();
        assert_matches(&out.distance, &refs[&format!("{key}.distance")], key);
        let per_layer = Tensor::stack(&out.per_layer, 0).unwrap();
        assert_matches(&per_layer, &refs[&format!("{key}.per_layer")], key);
    }
}

#[test]
fn lpips_matches_the_lpips_package() {
    let refs = reference();
    let lpips = seeded_lpips();
    let (a, b) = (image(1004, &[2, 3, 64, 64]), image(1005, &[2, 3, 64, 64]));
    let out = lpips.forward(&a, &b).unwrap();
    assert_matches(&out.distance, &refs["lpips.distance"], "distance");
    let per_layer = Tensor::stack(&out.per_layer, 0).unwrap();
    assert_matches(&per_layer, &refs["lpips.per_layer"], "per layer");
    assert_matches(&lpips.spatial_map(&a, &b).unwrap(), &refs["lpips.spatial"], "spatial map");

    // Properties: d(x, x) = 0, symmetry, finite input gradients.
    let same = lpips.forward(&a, &a).unwrap().distance.to_vec1::<f32>().unwrap();
    assert!(same.iter().all(|&d| d == 0.0), "{same:?}");
    let ab = out.distance.to_vec1::<f32>().unwrap();
    let ba = lpips.forward(&b, &a).unwrap().distance.to_vec1::<f32>().unwrap();
    for (x, y) in ab.iter().zip(&ba) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "asymmetric: {x} vs {y}");
    }
    let av = Var::from_tensor(&a).unwrap();
    let d = lpips.forward(av.as_tensor(), &a).unwrap().distance.sum_all().unwrap();
    let g: Vec<f32> = d
        .backward()
        .unwrap()
        .get(av.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "gradient at d(x, x) must be finite");
}

#[test]
fn random_alexnet_is_reproducible() {
    let x = image(7, &[1, 3, 63, 63]);
    let f = |seed| {
        let net = AlexNet::random(AlexNetLayout::Caffe, seed, &Device::Cpu).unwrap();
        net.features(&x, &[Tap::Pool5])
            .unwrap()
            .remove(0)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(f(3), f(3));
    assert_ne!(f(3), f(4));
}

#[test]
fn bad_inputs_are_errors_naming_the_problem() {
    let net = AlexNet::random(AlexNetLayout::Torchvision, 1, &Device::Cpu).unwrap();
    let caffe = AlexNet::random(AlexNetLayout::Caffe, 1, &Device::Cpu).unwrap();
    let msg = |r: deepsim_comparators::Result<Vec<Tensor>>| match r {
        Err(e @ (Error::Input { .. } | Error::UnknownTap { .. })) => e.to_string(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted"),
    };
    let ok = image(1, &[1, 3, 63, 63]);
    let cases = [
        (net.features(&image(1, &[3, 63, 63]), &[Tap::Pool5]), "rank 3"),
        (net.features(&image(1, &[1, 1, 63, 63]), &[Tap::Pool5]), "1 channels, expected 3"),
        (net.features(&image(1, &[1, 3, 62, 80]), &[Tap::Pool5]), "smaller than the minimum 63×63"),
        (net.features(&(&ok * 2.0).unwrap(), &[Tap::Pool5]), "expected [0, 1]"),
        (net.features(&ok.to_dtype(DType::F64).unwrap(), &[Tap::Pool5]), "dtype F64"),
        (net.features(&ok, &[Tap::Norm1]), "no tap `norm1`"),
        (caffe.features(&ok, &[Tap::Fc6]), "fc taps need a 6×6 pool5"),
    ];
    for (result, want) in cases {
        let m = msg(result);
        assert!(m.contains(want), "expected `{want}` in: {m}");
    }
    let nan = ok.broadcast_mul(&Tensor::new(f32::NAN, &Device::Cpu).unwrap()).unwrap();
    assert!(msg(net.features(&nan, &[Tap::Pool5])).contains("expected [0, 1]"));
}

/// LPIPS as a loss of `a` alone runs as one fused autograd node (the trunk's and heads'
/// backward inside it); with a gradient wanted for `b` too it runs through candle's graph of
/// per-layer ops, each checked against finite differences in deepsim-kernels. Both give the
/// same values and the same gradient w.r.t. `a`.
#[test]
fn fused_lpips_equals_the_graph_of_layers() {
    let vgg = Lpips::vgg(
        Vgg::random(VggDepth::Vgg16, 30, &Device::Cpu).unwrap(),
        seeded_heads(310, &[64, 128, 256, 512, 512]),
    )
    .unwrap();
    for (lpips, size) in [(seeded_lpips(), 71), (vgg, 20)] {
        let (a, b) = (image(1011, &[3, 3, size, size + 5]), image(1012, &[3, 3, size, size + 5]));
        let grad_and_values = |b: &Tensor| {
            let av = Var::from_tensor(&a).unwrap();
            let out = lpips.forward(av.as_tensor(), b).unwrap();
            // Weights per image and per layer, so that every entry's gradient counts.
            let w = image(1013, &[3]);
            let loss = (out.distance.mul(&w).unwrap().sum_all().unwrap()
                + out.per_layer[1].sum_all().unwrap())
            .unwrap();
            let g = loss.backward().unwrap().get(av.as_tensor()).unwrap().clone();
            (g, out.distance, Tensor::stack(&out.per_layer, 0).unwrap())
        };
        let (g_fused, d_fused, l_fused) = grad_and_values(&b);
        let bv = Var::from_tensor(&b).unwrap();
        let (g_graph, d_graph, l_graph) = grad_and_values(bv.as_tensor());
        let close = |x: &Tensor, y: &Tensor, what: &str| {
            let (x, y): (Vec<f32>, Vec<f32>) = (
                x.flatten_all().unwrap().to_vec1().unwrap(),
                y.flatten_all().unwrap().to_vec1().unwrap(),
            );
            let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0, "{what}: all zero");
            for (i, (p, q)) in x.iter().zip(&y).enumerate() {
                assert!((p - q).abs() <= 1e-5 * scale, "{what}[{i}]: fused {p} vs graph {q}");
            }
        };
        close(&d_fused, &d_graph, "distance");
        close(&l_fused, &l_graph, "per layer");
        close(&g_fused, &g_graph, "gradient w.r.t. a");
    }
}
