//! Gradients of every op against central finite differences in f64, and the composite
//! (any-device) implementations against the CPU kernels.

mod common;

use candle::{DType, Tensor, Var};
use common::{assert_close, check_grads, rand};
use deepsim_kernels::{
    composite, conv2d, conv_transpose2d, local_response_norm, max_pool2d, Activation, Conv2dConfig,
    ConvTranspose2dConfig, FrozenConv2d, LrnConfig, MaxPool2dConfig, PoolRounding,
};

const F64: DType = DType::F64;

fn conv_cases() -> Vec<(&'static str, [usize; 4], [usize; 4], Conv2dConfig)> {
    let c = Conv2dConfig::default;
    vec![
        ("basic 3x3 pad 1", [2, 3, 7, 6], [4, 3, 3, 3], Conv2dConfig::new(1, 1)),
        (
            "stride (2,3) pad (2,1)",
            [2, 3, 9, 11],
            [2, 3, 5, 4],
            Conv2dConfig { stride: (2, 3), padding: (2, 1), ..c() },
        ),
        ("groups 2", [2, 4, 6, 5], [6, 2, 3, 3], Conv2dConfig::new(1, 1).with_groups(2)),
        ("dilation 2", [1, 2, 8, 7], [3, 2, 3, 3], Conv2dConfig::new(1, 2).with_dilation(2)),
        (
            "dilation (2,1)",
            [1, 2, 8, 7],
            [2, 2, 3, 2],
            Conv2dConfig { dilation: (2, 1), padding: (1, 0), ..c() },
        ),
        ("pointwise 1x1", [3, 4, 5, 5], [3, 4, 1, 1], c()),
        // Batch 5: several images share one GEMM (the kernels batch small feature maps).
        ("batch 5, groups 2", [5, 4, 5, 4], [4, 2, 3, 3], Conv2dConfig::new(1, 1).with_groups(2)),
        ("alexnet conv1-like k11 s4", [1, 3, 19, 18], [2, 3, 11, 11], Conv2dConfig::new(4, 2)),
        // 40 images of 64 pixels: many images per thread in every pass.
        ("batch 40 at 8x8", [40, 3, 8, 8], [4, 3, 3, 3], Conv2dConfig::new(1, 1)),
        // Depthwise (one channel per group): direct loops instead of im2col.
        ("depthwise 5x5 s2", [2, 3, 7, 6], [3, 1, 5, 5], Conv2dConfig::new(2, 2).with_groups(3)),
        (
            "depthwise 3x3 dilation 2",
            [1, 4, 8, 7],
            [4, 1, 3, 3],
            Conv2dConfig::new(1, 2).with_dilation(2).with_groups(4),
        ),
    ]
}

#[test]
fn conv2d_gradients() {
    for (name, xs, ws, cfg) in conv_cases() {
        let args = [rand(&xs, 1, F64), rand(&ws, 2, F64), rand(&ws[..1], 3, F64)];
        check_grads(&args, |a| conv2d(&a[0], &a[1], Some(&a[2]), &cfg).unwrap(), name);
    }
}

#[test]
fn conv2d_gradients_non_contiguous_input() {
    // A transposed view: the kernel must read it through its strides.
    let x = rand(&[2, 3, 6, 7], 5, F64);
    let w = rand(&[4, 3, 3, 3], 6, F64);
    let cfg = Conv2dConfig { stride: (2, 1), padding: (1, 1), ..Default::default() };
    check_grads(
        &[x, w],
        |a| {
            let xt = a[0].transpose(2, 3).unwrap();
            assert!(!xt.is_contiguous());
            conv2d(&xt, &a[1], None, &cfg).unwrap()
        },
        "transposed input",
    );
}

#[test]
fn conv_transpose2d_gradients() {
    let c = ConvTranspose2dConfig::default;
    let cases = [
        (
            "generator up-conv k4 s2 p1",
            [2, 4, 4, 3],
            [4, 3, 4, 4],
            ConvTranspose2dConfig::new(2, 1),
        ),
        // The generator's up-convolution on 20 images of 8×8.
        ("up-conv batch 20", [20, 4, 8, 8], [4, 3, 4, 4], ConvTranspose2dConfig::new(2, 1)),
        (
            "output padding",
            [1, 3, 4, 5],
            [3, 2, 3, 3],
            ConvTranspose2dConfig::new(2, 1).with_output_padding((1, 1)),
        ),
        ("groups 2", [2, 4, 3, 3], [4, 3, 3, 3], ConvTranspose2dConfig::new(2, 0).with_groups(2)),
        ("depthwise", [2, 3, 4, 3], [3, 1, 4, 4], ConvTranspose2dConfig::new(2, 1).with_groups(3)),
        (
            "dilation (2,1)",
            [1, 2, 4, 5],
            [2, 2, 3, 2],
            ConvTranspose2dConfig { dilation: (2, 1), padding: (1, 0), ..c() },
        ),
    ];
    for (name, xs, ws, cfg) in cases {
        let oc = ws[1] * cfg.groups;
        let args = [rand(&xs, 7, F64), rand(&ws, 8, F64), rand(&[oc], 9, F64)];
        check_grads(&args, |a| conv_transpose2d(&a[0], &a[1], Some(&a[2]), &cfg).unwrap(), name);
    }
}

#[test]
fn frozen_conv_gradients_and_no_weight_gradient() {
    for act in [Activation::Identity, Activation::Relu] {
        for (name, xs, ws, cfg) in conv_cases() {
            let w = Var::from_tensor(&rand(&ws, 11, F64)).unwrap();
            let b = rand(&ws[..1], 12, F64);
            let layer = FrozenConv2d::new(w.as_tensor().clone(), Some(b), cfg)
                .unwrap()
                .with_activation(act);
            check_grads(&[rand(&xs, 10, F64)], |a| layer.forward(&a[0]).unwrap(), name);

            // The weight came from a Var, yet receives no gradient.
            let x = Var::from_tensor(&rand(&xs, 13, F64)).unwrap();
            let grads =
                layer.forward(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(grads.get(x.as_tensor()).is_some(), "{name}: input gradient missing");
            assert!(grads.get(w.as_tensor()).is_none(), "{name}: frozen weight got a gradient");
        }
    }
}

#[test]
fn frozen_relu_equals_conv_then_relu() {
    for (name, xs, ws, cfg) in conv_cases() {
        let (x, w, b) = (rand(&xs, 14, F64), rand(&ws, 15, F64), rand(&ws[..1], 16, F64));
        let fused = FrozenConv2d::new(w.clone(), Some(b.clone()), cfg)
            .unwrap()
            .with_activation(Activation::Relu)
            .forward(&x)
            .unwrap();
        let plain = conv2d(&x, &w, Some(&b), &cfg).unwrap().relu().unwrap();
        assert_close(&fused, &plain, 1e-12, 1e-12, name);
    }
}

#[test]
fn constant_weight_gets_no_gradient() {
    let x = Var::from_tensor(&rand(&[1, 2, 5, 5], 17, F64)).unwrap();
    let w = rand(&[3, 2, 3, 3], 18, F64);
    let y = conv2d(x.as_tensor(), &w, None, &Conv2dConfig::new(1, 1)).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(x.as_tensor()).is_some());
    assert!(grads.get(&w).is_none());
}

fn pool_cases() -> Vec<(&'static str, [usize; 4], MaxPool2dConfig)> {
    vec![
        ("k3 s2 floor", [2, 3, 9, 8], MaxPool2dConfig::square(3, 2)),
        ("k3 s2 ceil", [1, 2, 10, 10], MaxPool2dConfig::caffe(3, 2)),
        ("k3 s2 pad 1 ceil", [2, 2, 9, 10], MaxPool2dConfig::caffe(3, 2).with_padding(1)),
        (
            "rect k(3,2) s(2,1) p(1,0)",
            [1, 3, 7, 6],
            MaxPool2dConfig {
                kernel: (3, 2),
                stride: (2, 1),
                padding: (1, 0),
                rounding: PoolRounding::Floor,
            },
        ),
        ("k2 s1 pad 1", [2, 1, 5, 6], MaxPool2dConfig::square(2, 1).with_padding(1)),
    ]
}

#[test]
fn max_pool_gradients() {
    for (name, xs, cfg) in pool_cases() {
        check_grads(&[rand(&xs, 20, F64)], |a| max_pool2d(&a[0], &cfg).unwrap(), name);
    }
    let cfg = MaxPool2dConfig::caffe(3, 2);
    check_grads(
        &[rand(&[2, 3, 9, 11], 21, F64)],
        |a| max_pool2d(&a[0].transpose(2, 3).unwrap(), &cfg).unwrap(),
        "non-contiguous",
    );
}

fn lrn_cases() -> Vec<(&'static str, [usize; 4], f64, LrnConfig)> {
    vec![
        ("caffenet", [2, 7, 3, 4], 40.0, LrnConfig::caffenet()),
        ("torch size 3", [2, 6, 3, 3], 1.5, LrnConfig::torch(3, 0.5, 0.6, 2.0)),
        ("torch even size 4", [1, 7, 2, 3], 1.5, LrnConfig::torch(4, 0.3, 0.75, 1.0)),
        (
            "caffe even size 4",
            [1, 7, 2, 3],
            1.5,
            LrnConfig { size: 4, ..LrnConfig::torch(4, 0.3, 0.75, 1.0) }.caffe_window(),
        ),
        ("size 1", [2, 3, 2, 2], 1.0, LrnConfig::torch(1, 0.2, 0.5, 1.5)),
        ("size above channels", [1, 3, 2, 3], 1.5, LrnConfig::torch(7, 0.4, 0.75, 1.0)),
    ]
}

/// Extension to flip a config's window convention in the table above.
trait CaffeWindow {
    fn caffe_window(self) -> Self;
}

impl CaffeWindow for LrnConfig {
    fn caffe_window(self) -> Self {
        LrnConfig { convention: deepsim_kernels::LrnConvention::Caffe, ..self }
    }
}

#[test]
fn lrn_gradients() {
    for (name, xs, scale, cfg) in lrn_cases() {
        let x = (rand(&xs, 30, F64) * scale).unwrap();
        check_grads(&[x], |a| local_response_norm(&a[0], &cfg).unwrap(), name);
    }
}

/// The composite implementations (what CUDA and Metal run) match the kernels in value and in
/// gradient, on the CPU.
#[test]
fn composites_match_kernels() {
    fn same(
        name: &str,
        x: &Tensor,
        kernel: impl Fn(&Tensor) -> Tensor,
        comp: impl Fn(&Tensor) -> Tensor,
    ) {
        let v = Var::from_tensor(x).unwrap();
        let (yk, yc) = (kernel(v.as_tensor()), comp(v.as_tensor()));
        assert_close(&yc, &yk, 1e-10, 1e-10, &format!("{name}: forward"));
        let r = rand(yk.dims(), 99, F64);
        let gk = (yk * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (yc * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gk, gc) = (gk.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap());
        assert_close(gc, gk, 1e-10, 1e-10, &format!("{name}: gradient"));
    }
    for (name, xs, ws, cfg) in conv_cases() {
        let (w, b) = (rand(&ws, 41, F64), rand(&ws[..1], 42, F64));
        same(
            name,
            &rand(&xs, 40, F64),
            |x| conv2d(x, &w, Some(&b), &cfg).unwrap(),
            |x| composite::conv2d(x, &w, Some(&b), &cfg).unwrap(),
        );
    }
    let tcfg = ConvTranspose2dConfig::new(2, 1).with_output_padding((1, 0)).with_groups(2);
    let (w, b) = (rand(&[4, 3, 4, 3], 43, F64), rand(&[6], 44, F64));
    same(
        "conv_transpose2d",
        &rand(&[2, 4, 3, 4], 45, F64),
        |x| conv_transpose2d(x, &w, Some(&b), &tcfg).unwrap(),
        |x| composite::conv_transpose2d(x, &w, Some(&b), &tcfg).unwrap(),
    );
    // Quantized inputs make ties: both must route the gradient to the first maximum.
    for (name, xs, cfg) in pool_cases() {
        let x = (rand(&xs, 46, F64) * 2.0).unwrap().round().unwrap();
        same(
            name,
            &x,
            |x| max_pool2d(x, &cfg).unwrap(),
            |x| composite::max_pool2d(x, &cfg).unwrap(),
        );
    }
    for (name, xs, scale, cfg) in lrn_cases() {
        same(
            name,
            &(rand(&xs, 47, F64) * scale).unwrap(),
            |x| local_response_norm(x, &cfg).unwrap(),
            |x| composite::local_response_norm(x, &cfg).unwrap(),
        );
    }
}
