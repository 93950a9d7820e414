//! Shapes of every preset, parameter counts against the layer lists (and one by hand), the
//! bed-of-nails equivalence, dropout, conditioning, finite gradients, save and load.

use candle::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use deepsim_models::{
    leaky_relu, Discriminator, DiscriminatorConfig, DropoutMasks, Error, Generator,
    GeneratorConfig, GeneratorInput, UpConv, Vae, VaeConfig,
};

const CPU: Device = Device::Cpu;

fn vars(dtype: DType) -> (VarMap, VarBuilder<'static>) {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, dtype, &CPU);
    (map, vb)
}

fn count(map: &VarMap) -> usize {
    map.all_vars().iter().map(|v| v.elem_count()).sum()
}

fn randn(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &CPU).unwrap().to_dtype(dtype).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn up_convolution_equals_bed_of_nails_then_convolution() {
    let (map, vb) = vars(DType::F64);
    let up = UpConv::new(3, 5, 0.3, vb).unwrap();
    // A bias that is not zero, so that its gradient and the leaky ReLU's kink both matter.
    let bias = map.data().lock().unwrap()["bias"].clone();
    bias.set(&randn(&[5], DType::F64)).unwrap();
    let x = Var::from_tensor(&randn(&[2, 3, 5, 4], DType::F64)).unwrap();
    let r = randn(&[2, 5, 10, 8], DType::F64);
    // Output, and the gradients of ⟨y, r⟩ w.r.t. the input, the weight and the bias.
    let with_grads = |y: Tensor| {
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let mut out = vec![y, grads.get(x.as_tensor()).unwrap().clone()];
        for v in map.all_vars() {
            out.push(grads.get(v.as_tensor()).unwrap().clone());
        }
        out
    };
    for alpha in [1.0, 0.3] {
        let fast = with_grads(up.forward_leaky_relu(x.as_tensor(), alpha).unwrap());
        let slow = up.forward_bed_of_nails(x.as_tensor()).unwrap();
        let slow = with_grads(leaky_relu(&slow, alpha).unwrap());
        assert_eq!(fast[0].dims(), [2, 5, 10, 8]);
        for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
            assert!(max_abs_diff(f, s) < 1e-12, "α {alpha}: tensor {i} differs");
        }
    }
}

#[test]
fn every_preset_has_its_output_shape_and_parameter_count() {
    let cases: Vec<(GeneratorConfig, Vec<usize>, usize)> = vec![
        (GeneratorConfig::paper_fc6(), vec![1, 4096], 227),
        (GeneratorConfig::paper_fc8(), vec![1, 1000], 227),
        (GeneratorConfig::paper_conv5(), vec![1, 256, 6, 6], 227),
        (GeneratorConfig::cpu_64(256, 0.25), vec![2, 256], 64),
        (GeneratorConfig::cpu_128(1000, 0.125), vec![2, 1000], 128),
        (GeneratorConfig::cpu_64_map(192, 7, 0.25).unwrap(), vec![2, 192, 7, 7], 64),
        (GeneratorConfig::cpu_64_map(32, 8, 0.25).unwrap(), vec![1, 32, 8, 8], 64),
        (GeneratorConfig::cpu_64_map(16, 4, 0.5).unwrap(), vec![2, 16, 4, 4], 64),
        (GeneratorConfig::cpu_map(24, 24, 96, 0.5).unwrap(), vec![2, 24, 24, 24], 96),
        (GeneratorConfig::cpu_map(40, 12, 96, 0.25).unwrap(), vec![1, 40, 12, 12], 96),
        (GeneratorConfig::cpu_map(40, 16, 128, 0.25).unwrap(), vec![2, 40, 16, 16], 128),
    ];
    for (cfg, input, side) in cases {
        let (map, vb) = vars(DType::F32);
        let g = Generator::new(cfg.clone(), vb).unwrap();
        assert_eq!(count(&map), cfg.param_count(), "{:?}", cfg.input);
        let out = g.forward(&randn(&input, DType::F32)).unwrap();
        assert_eq!(out.dims(), [input[0], 3, side, side], "{:?}", cfg.input);
        assert!(out.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }
    // Table 1 by hand: fully connected 4096·4096 + 4096 three times; up-convolutions
    // c_in·c_out·16 + c_out, convolutions c_in·c_out·9 + c_out:
    // U256 1,048,832; C512 1,180,160; U256 2,097,408; C256 590,080; U128 524,416;
    // C128 147,584; U64 131,136; U32 32,800; U3 1,539 → 5,753,955; with 50,343,936 → 56,097,891.
    assert_eq!(GeneratorConfig::paper_fc6().param_count(), 56_097_891);
    // AlexNet conv2 at 64×64 (192×7×7), width 0.25, by hand: head C64 110,656 and C64 (stride
    // 2, 7 → 4) 36,928; tower U64 65,600, C64 36,928, U32 32,800, C32 9,248, U16 8,208,
    // U3 771 → 301,139.
    assert_eq!(GeneratorConfig::cpu_64_map(192, 7, 0.25).unwrap().param_count(), 301_139);
    // EfficientNet-Lite0 block2 at 96×96 (24×24×24), width 0.5, by hand: head C128 27,776 and
    // C128 147,584 at 24×24; at 48, 4096/48 = 85 channels · 0.5 → 43: U43 88,107, C43 16,684;
    // at 96, 4096/96 = 42 · 0.5 → 21: U21 14,469, C21 3,990; the last C3 570 → 299,180.
    assert_eq!(GeneratorConfig::cpu_map(24, 24, 96, 0.5).unwrap().param_count(), 299_180);
    // Sides that no number of doublings joins, and maps too small, are refused.
    for (size, output) in [(24, 64), (3, 96), (96, 96), (40, 64)] {
        let err = GeneratorConfig::cpu_map(8, size, output, 0.5).unwrap_err();
        assert!(err.to_string().contains(&format!("map side {size}")), "{err}");
    }
    for (cfg, hw) in [
        (DiscriminatorConfig::paper(Some(4096)), 227),
        (DiscriminatorConfig::cpu_64(None, 0.5), 64),
    ] {
        let (map, vb) = vars(DType::F32);
        let d = Discriminator::new(cfg.clone(), vb).unwrap();
        assert_eq!(count(&map), cfg.param_count());
        let y = cfg.condition.map(|(dim, _)| randn(&[2, dim], DType::F32));
        let logits = d.forward_t(&randn(&[2, 3, hw, hw], DType::F32), y.as_ref(), false).unwrap();
        assert_eq!(logits.dims(), [2, 2]);
    }
}

#[test]
fn dropout_in_training_only_and_conditioning_matters() {
    let (_map, vb) = vars(DType::F32);
    let d = Discriminator::new(DiscriminatorConfig::cpu_64(Some(16), 0.25), vb).unwrap();
    let x = randn(&[4, 3, 64, 64], DType::F32);
    let y = randn(&[4, 16], DType::F32);
    let eval = |y: &Tensor| d.forward_t(&x, Some(y), false).unwrap();
    assert_eq!(max_abs_diff(&eval(&y), &eval(&y)), 0.0, "eval is deterministic");
    let train1 = d.forward_t(&x, Some(&y), true).unwrap();
    let train2 = d.forward_t(&x, Some(&y), true).unwrap();
    assert!(max_abs_diff(&train1, &train2) > 0.0, "dropout draws new masks in training");
    assert!(max_abs_diff(&eval(&y), &eval(&(&y * -1.0).unwrap())) > 1e-6, "y changes the output");
    // A conditioned discriminator refuses to run without y; shapes are checked.
    assert!(matches!(d.forward_t(&x, None, false), Err(Error::Input { .. })));
    assert!(d.forward_t(&x, Some(&randn(&[4, 15], DType::F32)), false).is_err());
}

#[test]
fn caller_dropout_masks() {
    let (_map, vb) = vars(DType::F32);
    let d = Discriminator::new(DiscriminatorConfig::cpu_64(None, 0.25), vb).unwrap();
    let (p, h) = d.dropout_widths();
    let x = randn(&[3, 3, 64, 64], DType::F32);
    let ones = |w: usize| Tensor::ones((3, w), DType::F32, &Device::Cpu).unwrap();
    // Masks of ones are no dropout: the evaluation output.
    let keep = DropoutMasks { pooled: ones(p), hidden: ones(h) };
    let eval = d.forward_t(&x, None, false).unwrap();
    assert_eq!(max_abs_diff(&d.forward_masked(&x, None, &keep).unwrap(), &eval), 0.0);
    // Scaling the hidden mask by 2 doubles the last layer's input: out(2h) − b = 2(out(h) − b).
    let twice = DropoutMasks { pooled: ones(p), hidden: (ones(h) * 2.0).unwrap() };
    let zero_h = DropoutMasks { pooled: ones(p), hidden: (ones(h) * 0.0).unwrap() };
    let bias = d.forward_masked(&x, None, &zero_h).unwrap();
    let lhs = (d.forward_masked(&x, None, &twice).unwrap() - &bias).unwrap();
    let rhs = ((eval - &bias).unwrap() * 2.0).unwrap();
    assert!(max_abs_diff(&lhs, &rhs) < 1e-5);
    // Dropping every pooled unit makes the output independent of the image.
    let none = DropoutMasks { pooled: (ones(p) * 0.0).unwrap(), hidden: ones(h) };
    let other = randn(&[3, 3, 64, 64], DType::F32);
    let a = d.forward_masked(&x, None, &none).unwrap();
    assert_eq!(max_abs_diff(&a, &d.forward_masked(&other, None, &none).unwrap()), 0.0);
    let bad = DropoutMasks { pooled: ones(p + 1), hidden: ones(h) };
    assert!(matches!(
        d.forward_masked(&x, None, &bad),
        Err(Error::Input { arg: "masks.pooled", .. })
    ));
}

#[test]
fn a_training_step_has_finite_gradients_and_survives_save_and_load() {
    let (gmap, gvb) = vars(DType::F32);
    let g = Generator::new(GeneratorConfig::cpu_64(64, 0.125), gvb).unwrap();
    let (_dmap, dvb) = vars(DType::F32);
    let d = Discriminator::new(DiscriminatorConfig::cpu_64(Some(64), 0.125), dvb).unwrap();
    let y = randn(&[3, 64], DType::F32);
    let img = g.forward(&y).unwrap();
    let logits = d.forward_t(&img, Some(&y), true).unwrap();
    let loss = (logits.sqr().unwrap().mean_all().unwrap() + img.sqr().unwrap().mean_all().unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    for v in gmap.all_vars() {
        let gv = grads.get(v.as_tensor()).expect("every generator variable gets a gradient");
        assert!(gv.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite()));
    }
    let path =
        std::env::temp_dir().join(format!("deepsim-models-{}.safetensors", std::process::id()));
    gmap.save(&path).unwrap();
    let (mut other, ovb) = vars(DType::F32);
    let g2 = Generator::new(GeneratorConfig::cpu_64(64, 0.125), ovb).unwrap();
    other.load(&path).unwrap();
    assert_eq!(max_abs_diff(&g.forward(&y).unwrap(), &g2.forward(&y).unwrap()), 0.0);
    std::fs::remove_file(&path).ok();
}

#[test]
fn bad_configs_and_inputs_are_errors() {
    let (_m, vb) = vars(DType::F32);
    let mut cfg = GeneratorConfig::cpu_64(32, 0.25);
    cfg.output = 65;
    assert!(matches!(Generator::new(cfg, vb.clone()), Err(Error::Config { .. })));
    let mut cfg = GeneratorConfig::cpu_64(32, 0.25);
    cfg.head_width += 1;
    assert!(Generator::new(cfg, vb.clone()).is_err());
    let g = Generator::new(GeneratorConfig::cpu_64(32, 0.25), vb).unwrap();
    let e = g.forward(&randn(&[2, 31], DType::F32)).err().unwrap();
    assert!(e.to_string().contains("[N, 32]"), "{e}");
    assert_eq!(g.config().input, GeneratorInput::Vector(32));
    let e = GeneratorConfig::cpu_64_map(192, 5, 0.25).unwrap_err();
    assert!(e.to_string().contains("map side 5"), "{e}");
}

#[test]
fn vae_shapes_counts_sampling_and_encoder_initialization() {
    for (cfg, n) in [(VaeConfig::paper(), 1), (VaeConfig::cpu_64(32, 0.25), 3)] {
        let (map, vb) = vars(DType::F32);
        let vae = Vae::new(cfg.clone(), vb).unwrap();
        assert_eq!(count(&map), cfg.param_count());
        let x = randn(&[n, 3, cfg.input, cfg.input], DType::F32);
        let out = vae.forward(&x).unwrap();
        let side = cfg.decoder.output;
        assert_eq!(out.reconstruction.dims(), [n, 3, side, side]);
        assert_eq!(out.mu.dims(), [n, cfg.latent]);
        assert_eq!(out.log_var.dims(), [n, cfg.latent]);
        assert_eq!(vae.sample(2, &x).unwrap().dims(), [2, 3, side, side]);
    }
    // The paper's encoder is AlexNet up to fc6: 9216 inputs to μ, the AlexNet conv shapes.
    let (mut map, vb) = vars(DType::F32);
    let _vae = Vae::new(VaeConfig::paper(), vb).unwrap();
    let alexnet: std::collections::HashMap<String, Tensor> = [
        ("features.0.weight", vec![64, 3, 11, 11]),
        ("features.10.bias", vec![256]),
        ("classifier.1.weight", vec![4096, 9216]),
        ("classifier.4.weight", vec![4096, 4096]),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_owned(), Tensor::full(0.5f32, s, &CPU).unwrap()))
    .collect();
    // classifier.4 (fc7) has no place in the encoder and is skipped.
    assert_eq!(Vae::init_encoder_from(&mut map, &alexnet).unwrap(), 3);
    let data = map.data().lock().unwrap();
    let w = data["encoder.mu.weight"].as_tensor().max_keepdim(0).unwrap().max_keepdim(1).unwrap();
    assert_eq!(w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.5]);
    drop(data);
    let bad =
        [("features.0.weight".to_owned(), Tensor::zeros((64, 3, 5, 5), DType::F32, &CPU).unwrap())]
            .into();
    assert!(Vae::init_encoder_from(&mut map, &bad).is_err());
}

#[test]
fn vae_gradients_reach_the_encoder() {
    let (map, vb) = vars(DType::F32);
    let vae = Vae::new(VaeConfig::cpu_64(16, 0.125), vb).unwrap();
    let x = randn(&[2, 3, 64, 64], DType::F32);
    let out = vae.forward(&x).unwrap();
    let kl =
        ((out.mu.sqr().unwrap() + out.log_var.exp().unwrap()).unwrap() - &out.log_var).unwrap();
    let loss = ((out.reconstruction - &x).unwrap().sqr().unwrap().mean_all().unwrap()
        + kl.mean_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let data = map.data().lock().unwrap();
    for name in ["encoder.features.0.weight", "encoder.log_var.weight", "decoder.head.0.weight"] {
        let g =
            grads.get(data[name].as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0), "{name}");
    }
}
