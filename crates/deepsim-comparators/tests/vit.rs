//! The CLIP and DINOv2 vision transformers against Hugging Face transformers' own models: tiny
//! seeded models exported by `fixtures/vit/export_vit_fixtures.py` (weights under the published
//! names, the processors' output, block tokens, embeddings and input gradients, computed in
//! float64), held to 1e-4 of each reference's largest magnitude; the input gradient against
//! central finite differences in f64 (an op that drops its gradient fails it); DINOv2 at a grid
//! it was not trained at; the cosine distance's properties; the errors.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use deepsim_comparators::weights::{self, Arch, RawTensor, TensorSet};
use deepsim_comparators::{
    embedding_cosine_distance, seeded, Comparator, Error, Preprocess, Tap, Vit, VitConfig,
    VitPreset,
};

type Tensors = HashMap<String, Tensor>;

fn fixture(name: &str) -> Tensors {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit").join(name);
    candle::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The script's `CLIPVisionConfig(hidden_size=16, intermediate_size=64, num_hidden_layers=2,
/// num_attention_heads=2, image_size=32, patch_size=8, projection_dim=8)` and its processor
/// (shortest edge 32, crop 32).
fn tiny_clip() -> VitConfig {
    let full = VitConfig::clip_vit_b32();
    VitConfig {
        hidden_size: 16,
        layers: 2,
        heads: 2,
        patch_size: 8,
        image_size: 32,
        projection_dim: Some(8),
        preprocess: Preprocess { shortest_edge: 32, crop: 32, ..full.preprocess },
        ..full
    }
}

/// The script's `Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
/// mlp_ratio=4, image_size=42, patch_size=14)` and its processor (shortest edge 48, crop 42).
fn tiny_dinov2() -> VitConfig {
    let full = VitConfig::dinov2_vits14();
    VitConfig {
        hidden_size: 16,
        layers: 2,
        heads: 2,
        patch_size: 14,
        image_size: 42,
        preprocess: Preprocess { shortest_edge: 48, crop: 42, ..full.preprocess },
        ..full
    }
}

fn build(name: &str, cfg: VitConfig, tensors: &Tensors, dtype: DType) -> Vit {
    let vb = VarBuilder::from_tensors(tensors.clone(), dtype, &Device::Cpu);
    Vit::new(name, cfg, vb).unwrap()
}

/// The script's `image(seed, shape)`: (u + 1) / 2 in [0, 1).
fn image(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = seeded::uniform(seed, n).iter().map(|u| (u + 1.0) / 2.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `got` and `want` of one shape, within `tol` of `want`'s largest magnitude.
fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let f = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let (got, want) = (f(got), f(want));
    let scale = want.abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    let diff = (&got - &want).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    assert!(scale > 0.0, "{what}: the reference is all zeros");
    assert!(diff <= tol * scale, "{what}: differs by {diff} (scale {scale})");
}

/// The script's S = Σ_i mean(block_i²) + Σ embedding², from the taps `[block0, block1,
/// embedding]`.
fn scalar(f: &[Tensor]) -> Tensor {
    let blocks = (f[0].sqr().unwrap().mean_all().unwrap()
        + f[1].sqr().unwrap().mean_all().unwrap())
    .unwrap();
    (blocks + f[2].sqr().unwrap().sum_all().unwrap()).unwrap()
}

const TAPS: [Tap; 3] = [Tap::Block(0), Tap::Block(1), Tap::Embedding];

/// The comparator's whole path (input check, processor, network) against transformers' on the
/// fixture's seeded images: the processor's output, blocks, embedding and d S / d image.
fn matches_transformers(vit: &Vit, reference: &Tensors, x: &Tensor) {
    let pixels = vit.preprocess(x).unwrap();
    assert_close(&pixels, &reference["ref.pixel_values"], 1e-5, "processor");
    let x = Var::from_tensor(x).unwrap();
    let f = vit.features(x.as_tensor(), &TAPS).unwrap();
    for (i, t) in f.iter().enumerate() {
        let key = if i < 2 { format!("ref.block{i}") } else { "ref.embedding".into() };
        assert_close(t, &reference[&key], 1e-4, &key);
    }
    let grads = scalar(&f).backward().unwrap();
    let g = grads.get(x.as_tensor()).expect("the image has a gradient");
    assert_close(g, &reference["ref.grad_image"], 1e-4, "d S / d image");
}

#[test]
fn clip_matches_transformers() {
    let reference = fixture("clip.safetensors");
    let vit = build("clip-tiny", tiny_clip(), &reference, DType::F32);
    matches_transformers(&vit, &reference, &image(2601, &[2, 3, 40, 46]));
    // d S / d pixel_values, the network alone.
    let pixels = Var::from_tensor(&reference["ref.pixel_values"]).unwrap();
    let f = vit.encode(pixels.as_tensor(), &TAPS).unwrap();
    let grads = scalar(&f).backward().unwrap();
    let g = grads.get(pixels.as_tensor()).unwrap();
    assert_close(g, &reference["ref.grad_pixels"], 1e-4, "d S / d pixel_values");
}

#[test]
fn dinov2_matches_transformers() {
    let reference = fixture("dinov2.safetensors");
    let vit = build("dinov2-tiny", tiny_dinov2(), &reference, DType::F32);
    matches_transformers(&vit, &reference, &image(2602, &[1, 3, 50, 56]));
}

#[test]
fn dinov2_interpolates_position_embeddings_as_transformers() {
    // 33×75 pixels: a 2×5 grid (trained at 3×3), shrunk in height and stretched in width, with
    // 5 rows and 5 columns beyond the last whole patch.
    let reference = fixture("dinov2.safetensors");
    let vit = build("dinov2-tiny", tiny_dinov2(), &reference, DType::F32);
    assert_close(
        &vit.position_embeddings(2, 5).unwrap(),
        &reference["ref.wide.pos"],
        1e-5,
        "interpolated position embeddings",
    );
    let u = seeded::uniform(2603, 3 * 33 * 75).iter().map(|u| 2.0 * u).collect::<Vec<f32>>();
    let pixels = Var::from_vec(u, (1, 3, 33, 75), &Device::Cpu).unwrap();
    let f = vit.encode(pixels.as_tensor(), &TAPS).unwrap();
    assert_close(&f[0], &reference["ref.wide.block0"], 1e-4, "block0");
    assert_close(&f[1], &reference["ref.wide.block1"], 1e-4, "block1");
    assert_close(&f[2], &reference["ref.wide.embedding"], 1e-4, "embedding");
    let grads = scalar(&f).backward().unwrap();
    let g = grads.get(pixels.as_tensor()).unwrap();
    assert_close(g, &reference["ref.wide.grad_pixels"], 1e-4, "d S / d pixel_values");
    // The pixels beyond the last whole patch take no part.
    let tail = g.narrow(2, 28, 5).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(tail.to_scalar::<f32>().unwrap(), 0.0);
}

/// d S / d image from the backward pass against central differences, in f64, through the
/// processor and the network: an op on the path that dropped its gradient (as candle-nn's
/// fused layer norm and softmax do) would leave the analytic gradient short.
fn gradient_matches_finite_differences(cfg: VitConfig, fixture_name: &str, shape: &[usize]) {
    let reference = fixture(fixture_name);
    let vit = build("f64", cfg, &reference, DType::F64);
    let s = |x: &Tensor| -> f64 {
        let f = vit.encode(&vit.preprocess(x).unwrap(), &TAPS).unwrap();
        scalar(&f).to_scalar::<f64>().unwrap()
    };
    let x0 = image(2604, shape).to_dtype(DType::F64).unwrap();
    let x = Var::from_tensor(&x0).unwrap();
    let f = vit.encode(&vit.preprocess(x.as_tensor()).unwrap(), &TAPS).unwrap();
    let grads = scalar(&f).backward().unwrap();
    let g: Vec<f64> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
    let flat: Vec<f64> = x0.flatten_all().unwrap().to_vec1().unwrap();
    let n = flat.len();
    let h = 1e-5;
    for k in [0, 7, n / 3 + 5, n / 2 + 1, 2 * n / 3 + 11, n - 1] {
        let at = |d: f64| {
            let mut v = flat.clone();
            v[k] += d;
            s(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        };
        let fd = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (fd - g[k]).abs() <= 1e-6 * scale + 1e-6 * fd.abs(),
            "{fixture_name}: pixel {k}: backward {} vs finite differences {fd} (scale {scale})",
            g[k]
        );
    }
}

#[test]
fn clip_gradient_matches_finite_differences() {
    gradient_matches_finite_differences(tiny_clip(), "clip.safetensors", &[1, 3, 36, 41]);
}

#[test]
fn dinov2_gradient_matches_finite_differences() {
    gradient_matches_finite_differences(tiny_dinov2(), "dinov2.safetensors", &[1, 3, 45, 50]);
}

#[test]
fn batches_are_independent_and_taps_have_their_shapes() {
    let vit = build("dinov2-tiny", tiny_dinov2(), &fixture("dinov2.safetensors"), DType::F32);
    let (a, b) = (image(1, &[1, 3, 60, 50]), image(2, &[1, 3, 60, 50]));
    let both = Tensor::cat(&[&a, &b], 0).unwrap();
    let taps = [Tap::Embedding, Tap::BlockCls(1), Tap::Block(0)];
    let f = vit.features(&both, &taps).unwrap();
    let dims: Vec<&[usize]> = f.iter().map(|t| t.dims()).collect();
    assert_eq!(dims, [&[2, 16][..], &[2, 16], &[2, 10, 16]]);
    for (i, x) in [a, b].iter().enumerate() {
        for (one, many) in vit.features(x, &taps).unwrap().iter().zip(&f) {
            assert_close(one, &many.narrow(0, i, 1).unwrap(), 1e-5, "batch of one vs two");
        }
    }
    // The class token tap is the first token of its block.
    let f = vit.features(&both, &[Tap::Block(1), Tap::BlockCls(1)]).unwrap();
    assert_close(&f[1], &f[0].narrow(1, 0, 1).unwrap().squeeze(1).unwrap(), 0.0, "cls");
    assert_eq!(vit.taps().len(), 2 * 2 + 1);
    assert_eq!(vit.taps().last(), Some(&Tap::Embedding));
    for tap in vit.taps() {
        assert_eq!(Tap::from_name(tap.name()), Some(*tap), "{}", tap.name());
    }
    assert_eq!(Tap::BlockCls(11).name(), "block11.cls");
}

#[test]
fn cosine_distance_is_a_differentiable_dissimilarity() {
    let vit = build("clip-tiny", tiny_clip(), &fixture("clip.safetensors"), DType::F32);
    let x = Var::from_tensor(&image(3, &[2, 3, 40, 40])).unwrap();
    let y = image(4, &[2, 3, 40, 40]);
    let d = vit.cosine_distance(x.as_tensor(), &y).unwrap();
    let d_yx = vit.cosine_distance(&y, x.as_tensor()).unwrap();
    assert_close(&d, &d_yx, 1e-6, "symmetry");
    let v: Vec<f32> = d.to_vec1().unwrap();
    assert!(v.iter().all(|&d| d > 0.0 && d <= 2.0), "{v:?}");
    let same: Vec<f32> = vit.cosine_distance(&y, &y).unwrap().to_vec1().unwrap();
    assert!(same.iter().all(|d| d.abs() < 1e-6), "{same:?}");
    // 1 − a·b / (|a||b|), by hand from the embeddings; other sizes run as two batches.
    let (a, b) = (vit.embed_images(x.as_tensor()).unwrap(), vit.embed_images(&y).unwrap());
    let (a2, b2): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (a.to_vec2().unwrap(), b.to_vec2().unwrap());
    for (i, (p, q)) in a2.iter().zip(&b2).enumerate() {
        let dot: f32 = p.iter().zip(q).map(|(p, q)| p * q).sum();
        let norm = |v: &[f32]| v.iter().map(|v| v * v).sum::<f32>().sqrt();
        let want = 1.0 - dot / (norm(p) * norm(q));
        assert!((v[i] - want).abs() < 1e-5, "{} vs {want}", v[i]);
    }
    let small = image(4, &[2, 3, 33, 35]);
    assert_eq!(vit.cosine_distance(x.as_tensor(), &small).unwrap().dims(), [2]);
    let grads = d.sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
    let err = embedding_cosine_distance(&a, &b.narrow(0, 0, 1).unwrap()).unwrap_err();
    assert!(err.to_string().contains("equal shapes"), "{err}");
    let err = vit.cosine_distance(x.as_tensor(), &y.narrow(0, 0, 1).unwrap()).unwrap_err();
    assert!(err.to_string().contains("batch of 1, expected 2"), "{err}");
}

#[test]
fn inputs_and_taps_outside_the_contract_are_errors() {
    let reference = fixture("clip.safetensors");
    let vit = build("clip-tiny", tiny_clip(), &reference, DType::F32);
    let bad = |x: &Tensor| vit.features(x, &[Tap::Embedding]).unwrap_err().to_string();
    assert!(bad(&image(1, &[1, 3, 7, 40])).contains("smaller than the minimum 8×8"));
    assert!(bad(&image(1, &[1, 1, 40, 40])).contains("1 channels"));
    assert!(bad(&(image(1, &[1, 3, 40, 40]) * 2.0).unwrap()).contains("expected [0, 1]"));
    let err = vit.features(&image(1, &[1, 3, 40, 40]), &[Tap::Block(2)]).unwrap_err();
    assert!(matches!(err, Error::UnknownTap { .. }), "{err}");
    assert!(err.to_string().contains("block1.cls, embedding"), "{err}");
    // CLIP's position embeddings are for its own size only.
    let err = vit.encode(&image(1, &[1, 3, 40, 32]), &[Tap::Embedding]).unwrap_err();
    assert!(err.to_string().contains("32×32 pixels only"), "{err}");
    // A configuration that cannot be built, and weights of another size, named.
    let cfg = VitConfig { heads: 3, ..tiny_clip() };
    let vb = VarBuilder::from_tensors(reference.clone(), DType::F32, &Device::Cpu);
    let err = Vit::new("x", cfg, vb).err().unwrap().to_string();
    assert!(err.contains("multiple of heads 3"), "{err}");
    let vb = VarBuilder::from_tensors(reference.clone(), DType::F32, &Device::Cpu);
    let err = Vit::new("x", VitConfig { hidden_size: 32, ..tiny_clip() }, vb).err().unwrap();
    assert!(err.to_string().contains("vision_model.embeddings.patch_embedding.weight"), "{err}");
}

/// The fixture's tensors as a [`TensorSet`], the reference values left out.
fn weights_of(tensors: &Tensors) -> TensorSet {
    let mut names: Vec<&String> = tensors.keys().filter(|k| !k.starts_with("ref.")).collect();
    names.sort();
    let mut set = TensorSet::default();
    for name in names {
        let t = &tensors[name];
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        set.insert(name.clone(), RawTensor::from_f32(t.dims().to_vec(), &v)).unwrap();
    }
    set
}

#[test]
fn the_name_tables_are_transformers_published_names() {
    // Every tensor transformers saves for the tiny models (DINOv2's attention renamed back to
    // the published `attention.attention.query` …, which the script checks transformers loads),
    // and nothing else, but DINOv2's mask token, which the network does not use.
    for (cfg, file) in [(tiny_clip(), "clip.safetensors"), (tiny_dinov2(), "dinov2.safetensors")] {
        let set = weights_of(&fixture(file));
        let mut want = cfg.tensor_shapes();
        want.sort();
        let mut got: Vec<(String, Vec<usize>)> = set
            .iter()
            .filter(|(n, _)| *n != "embeddings.mask_token")
            .map(|(n, t)| (n.to_owned(), t.shape.clone()))
            .collect();
        got.sort();
        assert_eq!(got, want, "{file}");
    }
    // The full presets' lists are the Arch's.
    assert_eq!(Arch::ClipVitB32.expected(), VitConfig::clip_vit_b32().tensor_shapes());
    assert_eq!(VitPreset::Dinov2VitS14.arch(), Arch::Dinov2VitS14);
    assert_eq!(VitPreset::ClipVitB32.name(), "clip-vit-b32");
}

#[test]
fn conversion_keeps_the_vision_tower_and_names_what_is_wrong() {
    let zeros =
        |shape: &[usize]| RawTensor::from_f32(shape.to_vec(), &vec![0.0; shape.iter().product()]);
    // A CLIPModel file: the text tower, logit scale and position ids are dropped silently; a
    // misshapen and a missing tensor are named.
    let mut set = TensorSet::default();
    for (name, shape) in [
        ("text_model.embeddings.token_embedding.weight", vec![4, 2]),
        ("text_projection.weight", vec![2, 2]),
        ("logit_scale", vec![]),
        ("vision_model.embeddings.position_ids", vec![1, 50]),
        ("vision_model.embeddings.class_embedding", vec![769]),
        ("vision_model.post_layernorm.weight", vec![768]),
    ] {
        set.insert(name.into(), zeros(&shape)).unwrap();
    }
    let err = Arch::ClipVitB32.convert(set).unwrap_err();
    assert!(
        err.contains("`vision_model.embeddings.class_embedding` has shape [769], expected [768]"),
        "{err}"
    );
    assert!(err.contains("`visual_projection.weight` [512, 768] is missing"), "{err}");
    assert!(!err.contains("unexpected") && !err.contains("text_model"), "{err}");
    assert!(!err.contains("`vision_model.post_layernorm.weight`"), "{err}");
    // DINOv2 under transformers 5's attention names is renamed to the published ones.
    let mut set = TensorSet::default();
    set.insert("embeddings.mask_token".into(), zeros(&[1, 384])).unwrap();
    set.insert("encoder.layer.3.attention.q_proj.weight".into(), zeros(&[384, 384])).unwrap();
    set.insert("encoder.layer.3.attention.o_proj.bias".into(), zeros(&[384])).unwrap();
    let err = Arch::Dinov2VitS14.convert(set).unwrap_err();
    assert!(!err.contains("`encoder.layer.3.attention.attention.query.weight`"), "{err}");
    assert!(!err.contains("`encoder.layer.3.attention.output.dense.bias`"), "{err}");
    assert!(err.contains("`encoder.layer.3.attention.attention.key.weight` [384, 384]"), "{err}");
    assert!(!err.contains("unexpected") && !err.contains("mask_token"), "{err}");
}

#[test]
fn pretrained_weights_load_by_name_or_say_how_to_get_them() {
    let dir = common::temp_dir("vit-pretrained");
    // No file: the command that downloads and converts the published one.
    let missing = dir.join("none.safetensors");
    let err = Vit::pretrained(VitPreset::ClipVitB32, Some(&missing), &Device::Cpu).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingWeights { .. }), "{msg}");
    assert!(
        msg.contains(
            "cargo xtask convert-weights --arch clip-vit-b32 --hub \
             openai/clip-vit-base-patch32:model.safetensors"
        ),
        "{msg}"
    );
    // A file of the right architecture but the tiny model's sizes: the tensor is named.
    let tiny = dir.join("tiny-dinov2.safetensors");
    let meta = HashMap::from([("arch".to_owned(), "dinov2-vits14".to_owned())]);
    weights::write_safetensors_atomic(&tiny, &weights_of(&fixture("dinov2.safetensors")), meta)
        .unwrap();
    let err = deepsim_comparators::by_name("dinov2-vits14", Some(&tiny), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tiny-dinov2.safetensors") && err.contains("embeddings."), "{err}");
    let err = deepsim_comparators::by_name("clip-vit-b32", Some(&tiny), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("holds dinov2-vits14 weights, not clip-vit-b32"), "{err}");
}

#[test]
fn full_size_presets_run_at_their_sizes() {
    // Random weights of the published shapes: the presets' own sizes, DINOv2's 37×37 position
    // grid resampled to the 16×16 of its 224 crop, a 240×320 photo-like input through each
    // processor, and an input gradient through all twelve blocks.
    for (preset, tokens, width) in
        [(VitPreset::ClipVitB32, 50, 768), (VitPreset::Dinov2VitS14, 257, 384)]
    {
        let cfg = preset.config();
        let tensors: Tensors = cfg
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let t = Tensor::randn(0f32, 0.05, shape, &Device::Cpu).unwrap();
                (name, t)
            })
            .collect();
        let vit = build(preset.name(), cfg, &tensors, DType::F32);
        let x = Var::from_tensor(&image(5, &[1, 3, 240, 320])).unwrap();
        let taps = [Tap::Block(11), Tap::BlockCls(0), Tap::Embedding];
        let f = vit.features(x.as_tensor(), &taps).unwrap();
        let dims: Vec<&[usize]> = f.iter().map(|t| t.dims()).collect();
        let e = cfg.embedding_dim();
        assert_eq!(dims, [&[1, tokens, width][..], &[1, width], &[1, e]], "{}", preset.name());
        let grads = f[2].sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
        if preset != VitPreset::Dinov2VitS14 {
            continue;
        }
        // The published layout as a local model.safetensors (mask token included), through
        // the conversion and the loader by name: the same network.
        let dir = common::temp_dir("vit-full");
        let mut published = tensors.clone();
        let mask = Tensor::zeros((1, 384), DType::F32, &Device::Cpu).unwrap();
        published.insert("embeddings.mask_token".into(), mask);
        let input = dir.join("model.safetensors");
        weights::write_safetensors_atomic(&input, &weights_of(&published), HashMap::new()).unwrap();
        let output = dir.join("dinov2-vits14.safetensors");
        weights::arch::convert_file(Arch::Dinov2VitS14, &input, &output).unwrap();
        let loaded =
            deepsim_comparators::by_name("dinov2-vits14", Some(&output), &Device::Cpu).unwrap();
        let again = loaded.features(x.as_tensor(), &[Tap::Embedding]).unwrap();
        assert_close(&again[0], &f[2], 0.0, "converted and loaded");
    }
}
