//! Forward results (and conv2d's input gradient) equal candle's built-in ops where one exists.

mod common;

use candle::{DType, Var};
use common::{assert_close, rand};
use deepsim_kernels::{
    conv2d, conv_transpose2d, max_pool2d, Conv2dConfig, ConvTranspose2dConfig, FrozenConv2d,
    MaxPool2dConfig,
};

const F32: DType = DType::F32;

#[test]
fn conv2d_matches_candle() {
    // (input, weight, stride, padding, dilation, groups): AlexNet conv1 geometry among them.
    let cases = [
        ([2, 3, 67, 67], [8, 3, 11, 11], 4, 2, 1, 1),
        ([2, 16, 13, 13], [24, 16, 3, 3], 1, 1, 1, 1),
        ([7, 16, 13, 13], [24, 8, 3, 3], 1, 1, 1, 2),
        ([1, 8, 12, 10], [6, 4, 5, 5], 1, 2, 1, 2),
        ([1, 4, 15, 15], [4, 4, 3, 3], 2, 2, 2, 1),
        // Stride 3: im2col's gather with a stride it has no fixed-stride copy for.
        ([2, 3, 31, 29], [4, 3, 5, 5], 3, 1, 1, 1),
        ([3, 6, 9, 9], [5, 6, 1, 1], 1, 0, 1, 1),
        // Pointwise on a map of over 2048 pixels, one image: the GEMM writes the output
        // directly, with no scratch (this once panicked).
        ([1, 6, 48, 50], [5, 6, 1, 1], 1, 0, 1, 1),
        // Depthwise (EfficientNet's blocks).
        ([2, 6, 11, 9], [6, 1, 5, 5], 2, 2, 1, 6),
        // Output maps of 4096 pixels and more run in pixel ranges spread over the threads:
        // ranges that end mid-row, strides, padding, groups, one image and several.
        ([1, 3, 131, 127], [5, 3, 5, 5], 1, 2, 1, 1),
        ([2, 4, 290, 263], [6, 2, 11, 11], 4, 2, 1, 2),
        ([1, 2, 70, 70], [3, 2, 3, 3], 1, 3, 2, 1),
    ];
    for (xs, ws, s, p, d, g) in cases {
        let (x, w) = (rand(&xs, 1, F32), rand(&ws, 2, F32));
        let cfg = Conv2dConfig { stride: (s, s), padding: (p, p), dilation: (d, d), groups: g };
        let ours = conv2d(&x, &w, None, &cfg).unwrap();
        let theirs = x.conv2d(&w, p, s, d, g).unwrap();
        assert_close(&ours, &theirs, 1e-4, 1e-4, &format!("conv2d {xs:?} {ws:?}"));
    }
}

#[test]
fn conv2d_input_gradient_matches_candle() {
    let x = Var::from_tensor(&rand(&[2, 3, 35, 35], 3, F32)).unwrap();
    let w = rand(&[8, 3, 11, 11], 4, F32);
    let cfg = Conv2dConfig::new(4, 2);
    let ours = FrozenConv2d::new(w.clone(), None, cfg).unwrap().forward(x.as_tensor()).unwrap();
    let theirs = x.as_tensor().conv2d(&w, 2, 4, 1, 1).unwrap();
    let g_ours = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g_theirs = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let (a, b) = (g_ours.get(x.as_tensor()).unwrap(), g_theirs.get(x.as_tensor()).unwrap());
    assert_close(a, b, 1e-4, 1e-4, "conv2d input gradient");
}

#[test]
fn conv2d_input_gradient_in_channel_blocks_matches_candle() {
    // 40 input channels of 4×4 taps on a 32×32 output: the im2col columns (640 rows of 1024
    // pixels) are computed and added back in blocks of 8 channels, the input gradient here
    // through im2col (not Winograd).
    let x = Var::from_tensor(&rand(&[1, 40, 64, 64], 11, F32)).unwrap();
    let w = rand(&[6, 40, 4, 4], 12, F32);
    let cfg = Conv2dConfig::new(2, 1);
    let layer = FrozenConv2d::new(w.clone(), None, cfg).unwrap();
    let layer = layer.with_algorithm(deepsim_kernels::ConvAlgorithm::Im2col).unwrap();
    let ours = layer.forward(x.as_tensor()).unwrap();
    let theirs = x.as_tensor().conv2d(&w, 1, 2, 1, 1).unwrap();
    let r = rand(ours.dims(), 13, F32);
    let g_ours = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_theirs = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (a, b) = (g_ours.get(x.as_tensor()).unwrap(), g_theirs.get(x.as_tensor()).unwrap());
    assert_close(a, b, 1e-4, 1e-4, "conv2d input gradient in channel blocks");
}

#[test]
fn weight_gradients_match_candle() {
    // Maps from 8×8 to 50×52, one to eight images (split over the threads, each summing its
    // own part), pointwise and grouped among them.
    let cases = [
        ([8, 16, 8, 8], [12, 16, 3, 3], 1, 1, 1),
        ([6, 4, 32, 32], [6, 4, 3, 3], 1, 1, 1),
        ([3, 4, 32, 32], [6, 2, 3, 3], 1, 1, 2),
        ([2, 3, 50, 52], [5, 3, 4, 4], 1, 2, 1),
        ([3, 6, 20, 20], [4, 6, 1, 1], 1, 0, 1),
        ([2, 6, 48, 50], [4, 6, 1, 1], 1, 0, 1),
    ];
    for (xs, ws, s, p, g) in cases {
        let x = rand(&xs, 8, F32);
        let w = Var::from_tensor(&rand(&ws, 9, F32)).unwrap();
        let cfg = Conv2dConfig::new(s, p).with_groups(g);
        let ours = conv2d(&x, w.as_tensor(), None, &cfg).unwrap();
        let theirs = x.conv2d(w.as_tensor(), p, s, 1, g).unwrap();
        let r = rand(ours.dims(), 10, F32);
        let grad = |y: candle::Tensor| {
            let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(w.as_tensor()).unwrap().clone()
        };
        assert_close(&grad(ours), &grad(theirs), 1e-3, 1e-3, &format!("weight grad {xs:?} {ws:?}"));
    }
}

#[test]
fn conv_transpose2d_matches_candle() {
    // The last: 40 output channels of 4×4 taps on a 16×16 input, whose im2col columns are
    // computed and added back in blocks of 32 channels, then 8.
    for (xs, ws, s, p, op) in [
        ([2, 8, 8, 8], [8, 4, 4, 4], 2, 1, 0),
        ([1, 3, 5, 7], [3, 2, 3, 3], 2, 1, 1),
        ([1, 8, 16, 16], [8, 40, 4, 4], 2, 1, 0),
    ] {
        let (x, w) = (rand(&xs, 5, F32), rand(&ws, 6, F32));
        let cfg = ConvTranspose2dConfig::new(s, p).with_output_padding((op, op));
        let ours = conv_transpose2d(&x, &w, None, &cfg).unwrap();
        let theirs = x.conv_transpose2d(&w, p, op, s, 1).unwrap();
        assert_close(&ours, &theirs, 1e-4, 1e-4, &format!("conv_transpose2d {xs:?}"));
    }
}

#[test]
fn conv_transpose2d_gradients_match_candle() {
    // A weight of 192 × 192 × 4 × 4 (590 K values) on 8×8 maps: the input and weight gradients
    // come from one set of im2col columns, 20 images in chunks of 16 and 4.
    let x = Var::from_tensor(&rand(&[20, 192, 8, 8], 14, F32)).unwrap();
    let w = Var::from_tensor(&(rand(&[192, 192, 4, 4], 15, F32) * 0.05).unwrap()).unwrap();
    let cfg = ConvTranspose2dConfig::new(2, 1);
    let ours = conv_transpose2d(x.as_tensor(), w.as_tensor(), None, &cfg).unwrap();
    let theirs = x.as_tensor().conv_transpose2d(w.as_tensor(), 1, 0, 2, 1).unwrap();
    let r = rand(ours.dims(), 16, F32);
    let g_ours = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_theirs = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [("input", x.as_tensor()), ("weight", w.as_tensor())] {
        let (a, b) = (g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
        assert_close(a, b, 1e-3, 1e-3, &format!("conv_transpose2d {name} gradient"));
    }
}

#[test]
fn max_pool2d_matches_candle() {
    for (xs, k, s) in [([2, 4, 55, 55], 3, 2), ([1, 3, 13, 13], 3, 2), ([2, 2, 8, 8], 2, 2)] {
        let x = rand(&xs, 7, F32);
        let ours = max_pool2d(&x, &MaxPool2dConfig::square(k, s)).unwrap();
        let theirs = x.max_pool2d_with_stride(k, s).unwrap();
        assert_close(&ours, &theirs, 0.0, 0.0, &format!("max_pool2d {xs:?} k{k} s{s}"));
    }
}
