//! FFT frozen convolutions (stride 1, large kernels over few channels): against candle's own
//! convolution and its autograd in f64 (forward and input gradient, with and without the
//! fused ReLU, tiles cut at every edge), against central finite differences, in f32 at
//! ST-LPIPS' conv1 scale, and the automatic choice of the algorithm.

mod common;

use candle::{DType, Tensor, Var};
use common::{
    assert_close, check_grads, frozen_layer, output_and_grad, rand, relative_max_error, values,
};
use deepsim_kernels::{Activation, Conv2dConfig, ConvAlgorithm, FrozenConv2d};

const F64: DType = DType::F64;

/// Output and input gradient of the same loss through candle's conv2d (square padding), its
/// bias and ReLU, and candle's autograd: the independent reference.
fn candle_output_and_grad(
    w: &Tensor,
    b: &Tensor,
    pad: usize,
    act: Activation,
    x: &Tensor,
    r: &Tensor,
) -> (Tensor, Tensor) {
    let x = Var::from_tensor(x).unwrap();
    let y = x.as_tensor().conv2d(w, pad, 1, 1, 1).unwrap();
    let y = y.broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap()).unwrap();
    let y = if act == Activation::Relu { y.relu().unwrap() } else { y };
    let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(x.as_tensor()).expect("input gradient").clone())
}

/// (name, input, weight, square padding): maps cut into several tiles with partial ones at
/// the right and bottom, maps smaller than one tile or than the kernel, padding past the
/// kernel (outputs whose window lies wholly in the padding), one output channel.
const CASES: [(&str, [usize; 4], [usize; 4], usize); 6] = [
    ("11x11 pad 2, two images, partial tiles", [2, 3, 70, 90], [8, 3, 11, 11], 2),
    ("7x7 pad 3, many channels in", [1, 12, 41, 37], [5, 12, 7, 7], 3),
    ("11x11 pad 5 on a map smaller than the kernel", [1, 2, 6, 5], [3, 2, 11, 11], 5),
    ("7x7 pad 8", [1, 2, 9, 9], [2, 2, 7, 7], 8),
    ("9x9 pad 0, one output channel", [2, 5, 30, 33], [1, 5, 9, 9], 0),
    ("13x13 pad 6, a large map", [1, 3, 160, 150], [4, 3, 13, 13], 6),
];

#[test]
fn fft_equals_candle_in_f64() {
    for act in [Activation::Identity, Activation::Relu] {
        for (name, xs, ws, pad) in CASES {
            let (x, w, b) = (rand(&xs, 1, F64), rand(&ws, 2, F64), rand(&ws[..1], 3, F64));
            let fft = frozen_layer(&w, &b, Conv2dConfig::new(1, pad), act, ConvAlgorithm::Fft);
            let r = rand(fft.forward(&x).unwrap().dims(), 4, F64);
            let (y1, g1) = output_and_grad(&fft, &x, &r);
            let (y2, g2) = candle_output_and_grad(&w, &b, pad, act, &x, &r);
            let what = format!("{name}, {act:?}");
            assert_close(&y1, &y2, 1e-10, 1e-11, &format!("{what}: output"));
            assert_close(&g1, &g2, 1e-10, 1e-11, &format!("{what}: input gradient"));
        }
    }
}

#[test]
fn fft_takes_unequal_kernel_sides_and_paddings() {
    // A 7×9 kernel with padding (3, 1): im2col (held against candle elsewhere) is the
    // reference, in f64.
    let cfg = Conv2dConfig { padding: (3, 1), ..Conv2dConfig::default() };
    let (x, w, b) =
        (rand(&[2, 4, 40, 47], 5, F64), rand(&[5, 4, 7, 9], 6, F64), rand(&[5], 7, F64));
    for act in [Activation::Identity, Activation::Relu] {
        let fft = frozen_layer(&w, &b, cfg, act, ConvAlgorithm::Fft);
        let im2col = frozen_layer(&w, &b, cfg, act, ConvAlgorithm::Im2col);
        let r = rand(im2col.forward(&x).unwrap().dims(), 8, F64);
        let (y1, g1) = output_and_grad(&fft, &x, &r);
        let (y2, g2) = output_and_grad(&im2col, &x, &r);
        assert_close(&y1, &y2, 1e-10, 1e-11, &format!("7x9, {act:?}: output"));
        assert_close(&g1, &g2, 1e-10, 1e-11, &format!("7x9, {act:?}: input gradient"));
    }
}

#[test]
fn fft_gradients_match_finite_differences() {
    for (name, xs, ws, pad) in [
        ("7x7 pad 2", [1, 2, 12, 10], [3, 2, 7, 7], 2),
        ("11x11 pad 5", [1, 2, 9, 11], [2, 2, 11, 11], 5),
    ] {
        for act in [Activation::Identity, Activation::Relu] {
            let l = frozen_layer(
                &rand(&ws, 9, F64),
                &rand(&ws[..1], 10, F64),
                Conv2dConfig::new(1, pad),
                act,
                ConvAlgorithm::Fft,
            );
            check_grads(&[rand(&xs, 11, F64)], |a| l.forward(&a[0]).unwrap(), name);
        }
    }
}

#[test]
fn fft_f32_error_is_small_at_st_lpips_scale() {
    // ST-LPIPS-alex's conv1 (11×11, stride 1, padding 2, 3 → 64 channels) with Kaiming-scaled
    // weights on a 200×230 image (several tiles) and a 400×380 one (FFTs of another side);
    // f64 im2col is the reference for the f32 FFT and the f32 im2col results. No ReLU: f32
    // and f64 outputs near zero fall on either side of it, and their gradients' masks differ.
    let cfg = Conv2dConfig::new(1, 2);
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    for xs in [[1, 3, 200, 230], [1, 3, 400, 380]] {
        let ws = [64, 3, 11, 11];
        let x = rand(&xs, 12, F64);
        let w = (rand(&ws, 13, F64) * (6.0 / 363.0f64).sqrt()).unwrap();
        let b = (rand(&ws[..1], 14, F64) * 0.1).unwrap();
        let reference = frozen_layer(&w, &b, cfg, Activation::Identity, ConvAlgorithm::Im2col);
        let r = rand(reference.forward(&x).unwrap().dims(), 15, F64);
        let (y_ref, g_ref) = output_and_grad(&reference, &x, &r);
        for algo in [ConvAlgorithm::Fft, ConvAlgorithm::Im2col] {
            let l = frozen_layer(&f32(&w), &f32(&b), cfg, Activation::Identity, algo);
            let (y, g) = output_and_grad(&l, &f32(&x), &f32(&r));
            let (ey, eg) = (relative_max_error(&y, &y_ref), relative_max_error(&g, &g_ref));
            println!("{xs:?} {algo:?}: output {ey:.1e}, gradient {eg:.1e}");
            // Measured (output, gradient): FFT 2.7e-7 and 3.1e-7, on the larger image 2.8e-7
            // and 2.9e-7; im2col 8.4e-7 and 2.5e-6, 1.0e-6 and 2.6e-6.
            assert!(ey < 1e-5 && eg < 1e-5, "{xs:?}, {algo:?}: output {ey:e}, gradient {eg:e}");
        }
    }
}

#[test]
fn auto_picks_fft_for_large_kernels_over_few_channels() {
    let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let run = |xs: [usize; 4], ws: [usize; 4], stride: usize, pad: usize, algo| {
        let (w, b) = (f32(rand(&ws, 16, F64)), f32(rand(&ws[..1], 17, F64)));
        let l = FrozenConv2d::new(w, Some(b), Conv2dConfig::new(stride, pad)).unwrap();
        let l = l.with_algorithm(algo).unwrap();
        values(&l.forward(&f32(rand(&xs, 18, F64))).unwrap())
    };
    // f32 results of the algorithms differ in the last bits, so equality names the one run.
    for (why, xs, ws, stride, pad, expected) in [
        ("ST-LPIPS' 11x11 conv1", [1, 3, 90, 100], [64, 3, 11, 11], 1, 2, ConvAlgorithm::Fft),
        ("7x7 on 16 channels", [1, 16, 40, 40], [16, 16, 7, 7], 1, 3, ConvAlgorithm::Fft),
        (
            "11x11 stride 4 (AlexNet)",
            [1, 3, 67, 67],
            [16, 3, 11, 11],
            4,
            2,
            ConvAlgorithm::Winograd,
        ),
        ("5x5 (Winograd's)", [1, 16, 16, 16], [16, 16, 5, 5], 1, 2, ConvAlgorithm::Winograd),
    ] {
        let auto = run(xs, ws, stride, pad, ConvAlgorithm::Auto);
        assert_eq!(auto, run(xs, ws, stride, pad, expected), "{why}: {expected:?}");
        assert_ne!(
            auto,
            run(xs, ws, stride, pad, ConvAlgorithm::Im2col),
            "{why}: results should differ"
        );
    }
}

#[test]
fn fft_refuses_strided_dilated_and_grouped_layers() {
    for (what, cfg) in [
        ("stride", Conv2dConfig::new(2, 1)),
        ("dilation", Conv2dConfig::new(1, 1).with_dilation(2)),
        ("groups", Conv2dConfig::new(1, 1).with_groups(2)),
    ] {
        let w = rand(&[2, 2 / cfg.groups, 7, 7], 19, F64);
        let err = FrozenConv2d::new(w, None, cfg)
            .unwrap()
            .with_algorithm(ConvAlgorithm::Fft)
            .unwrap_err()
            .to_string();
        assert!(err.contains("FFT") && err.contains("stride 1"), "{what}: {err}");
    }
}
