//! Winograd F(4×4, 3×3) frozen convolutions, 3×3 stride-1 kernels as they are and other
//! kernels stacked into 3×3 stride-1 ones: against im2col in f64 and in f32 (forward and
//! input gradient, with and without the fused ReLU), against central finite differences, and
//! the automatic choice between the two algorithms.

mod common;

use candle::{DType, Tensor, Var};
use common::{
    assert_close, check_grads, frozen_layer, output_and_grad, rand, relative_max_error, values,
};
use deepsim_kernels::{Activation, Conv2dConfig, ConvAlgorithm, FrozenConv2d};

const F64: DType = DType::F64;
const ACTS: [Activation; 2] = [Activation::Identity, Activation::Relu];

/// (name, input, weight, config): every offset the input gradient meets (padding 0…3 gives
/// offsets 2…−1), odd and tiny sizes, groups, batches.
fn cases() -> Vec<(&'static str, [usize; 4], [usize; 4], Conv2dConfig)> {
    let c = Conv2dConfig::default;
    vec![
        ("pad 1, odd sizes", [2, 3, 7, 6], [4, 3, 3, 3], Conv2dConfig::new(1, 1)),
        ("pad 0", [1, 2, 9, 5], [3, 2, 3, 3], Conv2dConfig::new(1, 0)),
        ("pad 2", [2, 2, 4, 5], [3, 2, 3, 3], Conv2dConfig::new(1, 2)),
        ("pad 3", [1, 2, 5, 4], [2, 2, 3, 3], Conv2dConfig::new(1, 3)),
        ("pad (1, 0)", [1, 2, 6, 7], [2, 2, 3, 3], Conv2dConfig { padding: (1, 0), ..c() }),
        ("groups 2", [2, 4, 6, 5], [6, 2, 3, 3], Conv2dConfig::new(1, 1).with_groups(2)),
        ("1x1 image", [2, 3, 1, 1], [2, 3, 3, 3], Conv2dConfig::new(1, 1)),
        ("13x13, batch 5", [5, 4, 13, 13], [5, 4, 3, 3], Conv2dConfig::new(1, 1)),
        // Stacked: larger and strided kernels as 3×3 stride-1 ones over sub-planes.
        ("5x5, pad 2", [2, 3, 9, 7], [4, 3, 5, 5], Conv2dConfig::new(1, 2)),
        ("11x11, stride 4, pad 2", [1, 3, 27, 23], [4, 3, 11, 11], Conv2dConfig::new(4, 2)),
        ("11x11, stride 1, pad 5", [1, 2, 13, 12], [3, 2, 11, 11], Conv2dConfig::new(1, 5)),
        ("7x7, stride 2, groups 2", [2, 4, 11, 9], [4, 2, 7, 7], cfg_groups(2, 3, 2)),
        ("4x4, stride 2, pad 1", [1, 2, 8, 9], [3, 2, 4, 4], Conv2dConfig::new(2, 1)),
        ("3x3, stride 2", [1, 2, 9, 8], [3, 2, 3, 3], Conv2dConfig::new(2, 1)),
        ("1x1, stride 2", [1, 2, 7, 6], [3, 2, 1, 1], Conv2dConfig::new(2, 0)),
        (
            "5x3, strides (2, 1), pads (0, 1)",
            [1, 2, 11, 6],
            [3, 2, 5, 3],
            Conv2dConfig { stride: (2, 1), padding: (0, 1), ..c() },
        ),
    ]
}

fn cfg_groups(stride: usize, pad: usize, groups: usize) -> Conv2dConfig {
    Conv2dConfig::new(stride, pad).with_groups(groups)
}

#[test]
fn winograd_equals_im2col_in_f64() {
    for act in ACTS {
        for (name, xs, ws, cfg) in cases() {
            let (x, w, b) = (rand(&xs, 1, F64), rand(&ws, 2, F64), rand(&ws[..1], 3, F64));
            let wino = frozen_layer(&w, &b, cfg, act, ConvAlgorithm::Winograd);
            let direct = frozen_layer(&w, &b, cfg, act, ConvAlgorithm::Im2col);
            let r = rand(wino.forward(&x).unwrap().dims(), 4, F64);
            let (y1, g1) = output_and_grad(&wino, &x, &r);
            let (y2, g2) = output_and_grad(&direct, &x, &r);
            let what = format!("{name}, {act:?}");
            assert_close(&y1, &y2, 1e-11, 1e-12, &format!("{what}: output"));
            assert_close(&g1, &g2, 1e-11, 1e-12, &format!("{what}: input gradient"));
        }
    }
}

#[test]
fn winograd_equals_im2col_in_f32() {
    // The same cases in f32, where the transformed kernels are packed for the AVX-512
    // products on CPUs that have them (groups, channels short of a panel, few tiles), against
    // f64 im2col within f32's rounding.
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    for act in ACTS {
        for (name, xs, ws, cfg) in cases() {
            let (x, w, b) = (rand(&xs, 1, F64), rand(&ws, 2, F64), rand(&ws[..1], 3, F64));
            let wino = frozen_layer(&f32(&w), &f32(&b), cfg, act, ConvAlgorithm::Winograd);
            let direct = frozen_layer(&w, &b, cfg, act, ConvAlgorithm::Im2col);
            let r = rand(direct.forward(&x).unwrap().dims(), 4, F64);
            let (y1, g1) = output_and_grad(&wino, &f32(&x), &f32(&r));
            let (y2, g2) = output_and_grad(&direct, &x, &r);
            // Winograd's f32 error scales with the largest values, not with each element.
            let (ey, eg) = (relative_max_error(&y1, &y2), relative_max_error(&g1, &g2));
            assert!(ey < 1e-5 && eg < 1e-5, "{name}, {act:?}: output {ey:e}, gradient {eg:e}");
        }
    }
}

#[test]
fn winograd_gradients_match_finite_differences() {
    for act in ACTS {
        for (name, xs, ws, cfg) in cases() {
            let l = frozen_layer(
                &rand(&ws, 5, F64),
                &rand(&ws[..1], 6, F64),
                cfg,
                act,
                ConvAlgorithm::Winograd,
            );
            check_grads(&[rand(&xs, 7, F64)], |a| l.forward(&a[0]).unwrap(), name);
        }
    }
}

#[test]
fn winograd_reads_non_contiguous_input() {
    let (w, b) = (rand(&[3, 2, 3, 3], 8, F64), rand(&[3], 9, F64));
    let cfg = Conv2dConfig::new(1, 1);
    let x = rand(&[2, 2, 6, 9], 10, F64).transpose(2, 3).unwrap();
    assert!(!x.is_contiguous());
    let r = rand(&[2, 3, 9, 6], 11, F64);
    let wino = frozen_layer(&w, &b, cfg, Activation::Relu, ConvAlgorithm::Winograd);
    let direct = frozen_layer(&w, &b, cfg, Activation::Relu, ConvAlgorithm::Im2col);
    let (y1, g1) = output_and_grad(&wino, &x, &r);
    let (y2, g2) = output_and_grad(&direct, &x.contiguous().unwrap(), &r);
    assert_close(&y1, &y2, 1e-11, 1e-12, "transposed input: output");
    assert_close(&g1, &g2, 1e-11, 1e-12, "transposed input: input gradient");
}

#[test]
fn winograd_f32_error_is_small_at_alexnet_scale() {
    // AlexNet-like layers with Kaiming-scaled weights, ReLU fused: conv3 (3×3, 64 → 48 at
    // 13×13), conv1 (11×11 stride 4, stacked over 48 sub-planes; on a 63×63 output by
    // F(6×6, 3×3)), conv2 (5×5 by F(4×4, 5×5)
    // over eight points, also at AlexNet's full width, 64 → 192 at 27×27) and a wide 3×3
    // layer on a larger map (128 → 128 at 30×30, by F(6×6, 3×3) over the same eight points).
    // The f64 im2col result is the reference for both the f32 Winograd and the f32 im2col
    // results.
    for (name, xs, ws, cfg) in [
        ("conv3", [2, 64, 13, 13], [48, 64, 3, 3], Conv2dConfig::new(1, 1)),
        ("conv1", [2, 3, 63, 63], [16, 3, 11, 11], Conv2dConfig::new(4, 2)),
        ("conv1 large", [1, 3, 255, 255], [16, 3, 11, 11], Conv2dConfig::new(4, 2)),
        ("conv2", [2, 32, 15, 15], [24, 32, 5, 5], Conv2dConfig::new(1, 2)),
        ("conv2 full", [1, 64, 27, 27], [192, 64, 5, 5], Conv2dConfig::new(1, 2)),
        ("3x3 wide", [1, 128, 30, 30], [128, 128, 3, 3], Conv2dConfig::new(1, 1)),
    ] {
        let fan_in = (ws[1] * ws[2] * ws[3]) as f64;
        let x = rand(&xs, 12, F64).relu().unwrap();
        let w = (rand(&ws, 13, F64) * (6.0 / fan_in).sqrt()).unwrap();
        let b = (rand(&ws[..1], 14, F64) * 0.1).unwrap();
        let im2col = frozen_layer(&w, &b, cfg, Activation::Relu, ConvAlgorithm::Im2col);
        let r = rand(im2col.forward(&x).unwrap().dims(), 15, F64);
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let (y_ref, g_ref) = output_and_grad(&im2col, &x, &r);
        for algo in [ConvAlgorithm::Winograd, ConvAlgorithm::Im2col] {
            let l = frozen_layer(&f32(&w), &f32(&b), cfg, Activation::Relu, algo);
            let (y, g) = output_and_grad(&l, &f32(&x), &f32(&r));
            let (ey, eg) = (relative_max_error(&y, &y_ref), relative_max_error(&g, &g_ref));
            println!("{name} {algo:?}: output {ey:.1e}, gradient {eg:.1e}");
            // Measured (output, gradient): Winograd conv3 5.4e-6 and 7.3e-6, conv1 2.3e-6 and
            // 3.3e-6, on the larger map (F(6×6, 3×3) over the 48 stacked channels) 7.3e-6 and
            // 5.9e-6, conv2 3.2e-6 and 4.3e-6, at full width 4.7e-6 and 8.6e-6, the wide 3×3
            // (F(6×6, 3×3)) 1.2e-5 and 1.5e-5; im2col 1e-7 to 5e-7.
            assert!(ey < 2e-5 && eg < 2e-5, "{name}, {algo:?}: output {ey:e}, gradient {eg:e}");
        }
    }
}

#[test]
fn auto_picks_winograd_only_where_it_pays() {
    let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let run = |xs: [usize; 4], ws: [usize; 4], stride: usize, pad: usize, algo| {
        let (w, b) = (f32(rand(&ws, 16, F64)), f32(rand(&ws[..1], 17, F64)));
        let l = FrozenConv2d::new(w, Some(b), Conv2dConfig::new(stride, pad)).unwrap();
        let l = l.with_algorithm(algo).unwrap();
        values(&l.forward(&f32(rand(&xs, 18, F64))).unwrap())
    };
    // f32 results of the two algorithms differ in the last bits, so equality names the one run.
    let wide = ([2, 32, 13, 13], [32, 32, 3, 3]);
    let auto = run(wide.0, wide.1, 1, 1, ConvAlgorithm::Auto);
    assert_ne!(auto, run(wide.0, wide.1, 1, 1, ConvAlgorithm::Im2col), "results should differ");
    assert_eq!(auto, run(wide.0, wide.1, 1, 1, ConvAlgorithm::Winograd), "32 channels: Winograd");
    for (why, xs, ws) in [
        ("8 input channels", [2, 8, 13, 13], [32, 8, 3, 3]),
        ("2x2 output", [2, 32, 2, 2], [32, 32, 3, 3]),
    ] {
        let auto = run(xs, ws, 1, 1, ConvAlgorithm::Auto);
        assert_eq!(auto, run(xs, ws, 1, 1, ConvAlgorithm::Im2col), "{why}: im2col");
    }
    // AlexNet's conv1 (11×11, stride 4: 0.30 of the multiplies) and a 5×5 kernel (0.36)
    // stacked; a 4×4 stride-2 kernel (0.56) not, nor a stacking 16 times the channels (which
    // at stride 1 the FFT takes).
    for (why, xs, ws, stride, pad, algo) in [
        ("11x11 stride 4", [1, 3, 67, 67], [16, 3, 11, 11], 4, 2, ConvAlgorithm::Winograd),
        ("5x5", [1, 16, 16, 16], [16, 16, 5, 5], 1, 2, ConvAlgorithm::Winograd),
        ("4x4 stride 2", [1, 16, 32, 32], [16, 16, 4, 4], 2, 1, ConvAlgorithm::Im2col),
        // 0.30 of the multiplies, but 1024 stacked channels for 64 in and 16 out.
        ("11x11 on 64 channels", [1, 64, 16, 16], [16, 64, 11, 11], 1, 5, ConvAlgorithm::Fft),
    ] {
        let auto = run(xs, ws, stride, pad, ConvAlgorithm::Auto);
        assert_eq!(auto, run(xs, ws, stride, pad, algo), "{why}: {algo:?}");
        for other in
            [ConvAlgorithm::Im2col, ConvAlgorithm::Winograd].into_iter().filter(|&a| a != algo)
        {
            assert_ne!(auto, run(xs, ws, stride, pad, other), "{why}: {other:?} should differ");
        }
    }
}

#[test]
fn winograd_refuses_dilated_kernels() {
    let w = rand(&[2, 2, 3, 3], 19, F64);
    let err = FrozenConv2d::new(w, None, Conv2dConfig::new(1, 1).with_dilation(2))
        .unwrap()
        .with_algorithm(ConvAlgorithm::Winograd)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Winograd") && err.contains("dilation (2, 2)"), "{err}");
}

#[test]
fn trainable_convolutions_run_winograd_and_agree_with_candle() {
    // 8 images of 16×16: 128 output tiles, so the trainable conv2d, its input and weight
    // gradients and the transposed convolution take Winograd (the 5×5 kernel stacked);
    // candle's own convolution and its backward are the reference.
    use deepsim_kernels::{conv2d, conv_transpose2d, ConvTranspose2dConfig};
    for (k, pad, groups, seed) in [(3, 1, 1, 20), (3, 0, 1, 30), (5, 2, 1, 40), (3, 1, 2, 50)] {
        let cfg = Conv2dConfig::new(1, pad).with_groups(groups);
        let x = rand(&[8, 32, 16, 16], seed, F64);
        let w = rand(&[32, 32 / groups, k, k], seed + 1, F64);
        let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
        let y_ref = xv.as_tensor().conv2d(wv.as_tensor(), pad, 1, 1, groups).unwrap();
        let r = rand(y_ref.dims(), seed + 2, F64);
        let grads_ref = (&y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = grads_ref.get(xv.as_tensor()).unwrap().clone();
        let gw_ref = grads_ref.get(wv.as_tensor()).unwrap().clone();

        let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
        let y = conv2d(xv.as_tensor(), wv.as_tensor(), None, &cfg).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let what = format!("{k}x{k}, padding {pad}, {groups} groups");
        assert_close(&y, &y_ref, 1e-11, 1e-12, &format!("{what}: output"));
        let gx = grads.get(xv.as_tensor()).unwrap();
        assert_close(gx, &g_ref, 1e-11, 1e-12, &format!("{what}: input gradient"));
        let gw = grads.get(wv.as_tensor()).unwrap();
        assert_close(gw, &gw_ref, 1e-11, 1e-12, &format!("{what}: weight gradient"));
        // Winograd's rounding differs from a direct sum's: the fast path did run.
        for (a, b, which) in [
            (&y, &y_ref, "output"),
            (gx, &g_ref, "input gradient"),
            (gw, &gw_ref, "weight gradient"),
        ] {
            assert!(relative_max_error(a, b) > 0.0, "{what}: {which} not by Winograd");
        }

        // The transposed convolution of the output gradient is the input gradient, and its
        // weight gradient is the conv2d's.
        let t_cfg = ConvTranspose2dConfig::new(1, pad).with_groups(groups);
        let (rv, wv) = (Var::from_tensor(&r).unwrap(), Var::from_tensor(&w).unwrap());
        let t = conv_transpose2d(rv.as_tensor(), wv.as_tensor(), None, &t_cfg).unwrap();
        assert_close(&t, &g_ref, 1e-11, 1e-12, &format!("{what}: transposed convolution"));
        let t_grads = (&t * &x).unwrap().sum_all().unwrap().backward().unwrap();
        let t_gw = t_grads.get(wv.as_tensor()).unwrap();
        assert_close(t_gw, &gw_ref, 1e-11, 1e-12, &format!("{what}: transposed weight gradient"));
    }
}
