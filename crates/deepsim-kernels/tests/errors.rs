//! Bad input is an error naming the op, the argument and the shape — never a panic.

mod common;

use candle::{DType, Device, Tensor};
use common::rand;
use deepsim_kernels::{
    conv2d, conv_transpose2d, local_response_norm, max_pool2d, Conv2dConfig, ConvTranspose2dConfig,
    Error, FrozenConv2d, LrnConfig, MaxPool2dConfig,
};

const F32: DType = DType::F32;

/// Asserts an `InvalidArgument` from `op` about `arg`, whose message contains every `needle`.
fn assert_invalid(r: deepsim_kernels::Result<Tensor>, op: &str, arg: &str, needles: &[&str]) {
    match r {
        Err(e @ Error::InvalidArgument { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with(op), "{msg:?} should name op {op}");
            assert!(msg.contains(&format!("`{arg}`")), "{msg:?} should name argument {arg}");
            for n in needles {
                assert!(msg.contains(n), "{msg:?} should contain {n:?}");
            }
        }
        Err(other) => panic!("expected InvalidArgument from {op}, got {other}"),
        Ok(t) => panic!("expected an error from {op}, got a tensor of shape {:?}", t.dims()),
    }
}

#[test]
fn conv2d_rejects_bad_input() {
    let w = rand(&[4, 3, 3, 3], 1, F32);
    let cfg = Conv2dConfig::new(1, 1);
    let x3 = rand(&[3, 8, 8], 2, F32);
    assert_invalid(conv2d(&x3, &w, None, &cfg), "conv2d", "input", &["[3, 8, 8]", "rank 3"]);
    let empty = Tensor::zeros((2, 3, 0, 8), F32, &Device::Cpu).unwrap();
    assert_invalid(conv2d(&empty, &w, None, &cfg), "conv2d", "input", &["zero-sized"]);
    let small = rand(&[1, 3, 2, 2], 3, F32);
    let big_w = rand(&[4, 3, 7, 7], 4, F32);
    assert_invalid(conv2d(&small, &big_w, None, &cfg), "conv2d", "input", &["larger"]);
    let x = rand(&[1, 3, 8, 8], 5, F32);
    for dtype in [DType::U32, DType::F16, DType::BF16] {
        let xd = x.to_dtype(dtype).unwrap();
        assert_invalid(conv2d(&xd, &w, None, &cfg), "conv2d", "input", &["dtype"]);
    }
    let x64 = x.to_dtype(DType::F64).unwrap();
    assert_invalid(conv2d(&x64, &w, None, &cfg), "conv2d", "weight", &["dtype"]);
    let x5 = rand(&[1, 5, 8, 8], 6, F32);
    assert_invalid(conv2d(&x5, &w, None, &cfg), "conv2d", "weight", &["5"]);
    let groups = cfg.with_groups(2);
    assert_invalid(conv2d(&x, &w, None, &groups), "conv2d", "config.groups", &["2 groups"]);
    let bias = rand(&[5], 7, F32);
    assert_invalid(conv2d(&x, &w, Some(&bias), &cfg), "conv2d", "bias", &["[5]"]);
    let zero_stride = Conv2dConfig { stride: (0, 1), ..cfg };
    assert_invalid(conv2d(&x, &w, None, &zero_stride), "conv2d", "config.stride", &["(0, 1)"]);
    let layer = FrozenConv2d::new(w.clone(), None, cfg).unwrap();
    assert_invalid(layer.forward(&x3), "FrozenConv2d", "input", &["rank 3"]);
    let bad = FrozenConv2d::new(w, Some(bias), cfg).map(|l| l.weight().clone());
    assert_invalid(bad, "FrozenConv2d::new", "bias", &["[5]"]);
}

#[test]
fn conv_transpose2d_rejects_bad_input() {
    let x = rand(&[1, 3, 4, 4], 1, F32);
    let w = rand(&[3, 2, 3, 3], 2, F32);
    let cfg = ConvTranspose2dConfig::new(2, 1).with_output_padding((2, 0));
    assert_invalid(
        conv_transpose2d(&x, &w, None, &cfg),
        "conv_transpose2d",
        "config.output_padding",
        &["(2, 0)"],
    );
    let w4 = rand(&[4, 2, 3, 3], 3, F32);
    let ok = ConvTranspose2dConfig::new(2, 1);
    assert_invalid(
        conv_transpose2d(&x, &w4, None, &ok),
        "conv_transpose2d",
        "weight",
        &["[4, 2, 3, 3]"],
    );
}

#[test]
fn max_pool2d_rejects_bad_input() {
    let x = rand(&[1, 2, 5, 5], 1, F32);
    let pad = MaxPool2dConfig::square(3, 2).with_padding(2);
    assert_invalid(max_pool2d(&x, &pad), "max_pool2d", "config.padding", &["half"]);
    let big = MaxPool2dConfig::square(7, 1);
    assert_invalid(max_pool2d(&x, &big), "max_pool2d", "input", &["[1, 2, 5, 5]", "larger"]);
    let zero = MaxPool2dConfig::square(3, 0);
    assert_invalid(max_pool2d(&x, &zero), "max_pool2d", "config.stride", &[]);
    let xi = x.to_dtype(DType::U8).unwrap();
    assert_invalid(max_pool2d(&xi, &MaxPool2dConfig::square(3, 2)), "max_pool2d", "input", &["U8"]);
}

#[test]
fn lrn_rejects_bad_input() {
    let x = rand(&[1, 4, 3, 3], 1, F32);
    let size0 = LrnConfig { size: 0, ..LrnConfig::caffenet() };
    assert_invalid(local_response_norm(&x, &size0), "local_response_norm", "config.size", &[]);
    let k0 = LrnConfig { k: 0.0, ..LrnConfig::caffenet() };
    assert_invalid(local_response_norm(&x, &k0), "local_response_norm", "config", &["k = 0"]);
    let nan = LrnConfig { beta: f64::NAN, ..LrnConfig::caffenet() };
    assert_invalid(local_response_norm(&x, &nan), "local_response_norm", "config", &["NaN"]);
    let x2 = rand(&[4, 9], 2, F32);
    assert_invalid(
        local_response_norm(&x2, &LrnConfig::caffenet()),
        "local_response_norm",
        "input",
        &["[4, 9]"],
    );
}
