//! Every op on the device named by `DEEPSIM_TEST_DEVICE` (the CPU when unset) against the CPU
//! kernel, the reference: forward values and the gradients of `Σ f(x) ⊙ r` for a fixed random
//! `r`, in f32 at the shapes of AlexNet's and the generator's layers. On CUDA or Metal this
//! checks the composites those devices run; on the CPU it checks that the harness agrees with
//! itself.

mod common;

use candle::{DType, Device, Tensor, Var};
use common::{assert_close, rand, test_device};
use deepsim_kernels::{
    bias_leaky_relu, blur_pool2d, conv2d, conv_transpose2d, linear, local_response_norm,
    max_pool2d, straight_through_clamp, unit_weighted_sq_distance, BlurPool2dConfig, ChannelAffine,
    Conv2dConfig, ConvTranspose2dConfig, FrozenConv2d, LrnConfig, MaxPool2dConfig,
};

/// Runs `f` on `args` moved to `device`, every argument a variable; returns the output and
/// the gradient of each argument, on the CPU.
fn run_on(
    device: &Device,
    args: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> =
        args.iter().map(|a| Var::from_tensor(&a.to_device(device).unwrap()).unwrap()).collect();
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&inputs);
    let r = rand(y.dims(), 4242, DType::F32).to_device(device).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = vars
        .iter()
        .map(|v| grads.get(v.as_tensor()).expect("every argument has a gradient").clone())
        .map(|g| g.to_device(&Device::Cpu).unwrap())
        .collect();
    (y.to_device(&Device::Cpu).unwrap(), grads)
}

/// Asserts that `f` gives the same output and gradients on the test device as on the CPU.
fn same_as_cpu(args: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor, what: &str) {
    let device = test_device();
    let (want, want_grads) = run_on(&Device::Cpu, args, &f);
    let (got, got_grads) = run_on(&device, args, &f);
    // f32 sums of up to a few thousand products, in another order on the device.
    let (rtol, atol) = (1e-4, 1e-4);
    assert_close(&got, &want, rtol, atol, &format!("{what} on {device:?}: output"));
    for (k, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
        assert_close(g, w, rtol, atol, &format!("{what} on {device:?}: gradient of argument {k}"));
    }
}

fn f32s(shape: &[usize], seed: u64) -> Tensor {
    rand(shape, seed, DType::F32)
}

#[test]
fn convolutions_match_the_cpu() {
    // AlexNet's conv1 (11×11, stride 4) at a small size, a grouped 3×3 (conv2's groups),
    // and the generator's 4×4 stride-2 up-convolution.
    let x = f32s(&[2, 3, 35, 35], 1);
    let (w, b) = (f32s(&[8, 3, 11, 11], 2), f32s(&[8], 3));
    same_as_cpu(
        &[x, w, b],
        |a| conv2d(&a[0], &a[1], Some(&a[2]), &Conv2dConfig::new(4, 2)).unwrap(),
        "conv2d 11×11/4",
    );
    let x = f32s(&[2, 8, 13, 13], 4);
    let w = f32s(&[6, 4, 3, 3], 5);
    same_as_cpu(
        &[x, w],
        |a| conv2d(&a[0], &a[1], None, &Conv2dConfig::new(1, 1).with_groups(2)).unwrap(),
        "conv2d 3×3 groups 2",
    );
    let x = f32s(&[2, 8, 8, 8], 6);
    let (w, b) = (f32s(&[8, 4, 4, 4], 7), f32s(&[4], 8));
    same_as_cpu(
        &[x, w, b],
        |a| conv_transpose2d(&a[0], &a[1], Some(&a[2]), &ConvTranspose2dConfig::new(2, 1)).unwrap(),
        "conv_transpose2d 4×4/2",
    );
}

#[test]
fn the_frozen_convolution_matches_the_cpu() {
    let (w, b) = (f32s(&[8, 3, 3, 3], 10), f32s(&[8], 11));
    let x = f32s(&[2, 3, 16, 16], 12);
    same_as_cpu(
        &[x],
        |a| {
            let w = w.to_device(a[0].device()).unwrap();
            let b = b.to_device(a[0].device()).unwrap();
            FrozenConv2d::new(w, Some(b), Conv2dConfig::new(1, 1)).unwrap().forward(&a[0]).unwrap()
        },
        "FrozenConv2d",
    );
}

#[test]
fn pooling_and_normalization_match_the_cpu() {
    let x = f32s(&[2, 16, 27, 27], 20);
    same_as_cpu(
        std::slice::from_ref(&x),
        |a| max_pool2d(&a[0], &MaxPool2dConfig::square(3, 2)).unwrap(),
        "max_pool2d 3×3/2",
    );
    same_as_cpu(
        std::slice::from_ref(&x),
        |a| max_pool2d(&a[0], &MaxPool2dConfig::caffe(3, 2)).unwrap(),
        "max_pool2d 3×3/2 ceil",
    );
    same_as_cpu(
        std::slice::from_ref(&x),
        |a| local_response_norm(&a[0], &LrnConfig::caffenet()).unwrap(),
        "LRN CaffeNet",
    );
    same_as_cpu(
        &[x],
        |a| blur_pool2d(&a[0], &BlurPool2dConfig::shift_tolerant(3)).unwrap(),
        "blur_pool2d ST-LPIPS",
    );
}

#[test]
fn pointwise_ops_match_the_cpu() {
    let x = f32s(&[2, 8, 9, 9], 30);
    let b = f32s(&[8], 31);
    same_as_cpu(
        &[x.clone(), b],
        |a| bias_leaky_relu(&a[0], &a[1], 0.3).unwrap(),
        "bias_leaky_relu",
    );
    same_as_cpu(
        std::slice::from_ref(&x),
        |a| straight_through_clamp(&a[0], -0.5, 0.5).unwrap(),
        "straight_through_clamp",
    );
    let img = f32s(&[2, 3, 9, 9], 32);
    let affine = ChannelAffine::new(&[0.5, 2.0, -1.0], &[0.1, 0.0, -0.3])
        .unwrap()
        .with_source(&[2, 1, 0])
        .unwrap();
    same_as_cpu(&[img], |a| affine.forward(&a[0]).unwrap(), "ChannelAffine BGR");
    let (p, q) = (f32s(&[2, 8, 9, 9], 33), f32s(&[2, 8, 9, 9], 34));
    let w = f32s(&[8], 35).abs().unwrap();
    same_as_cpu(
        &[p, q],
        |a| {
            let w = w.to_device(a[0].device()).unwrap();
            unit_weighted_sq_distance(&a[0], &a[1], &w).unwrap()
        },
        "unit_weighted_sq_distance",
    );
}

#[test]
fn the_fully_connected_layer_matches_the_cpu() {
    let (x, w, b) = (f32s(&[4, 300], 40), f32s(&[50, 300], 41), f32s(&[50], 42));
    same_as_cpu(&[x, w, b], |a| linear(&a[0], &a[1], Some(&a[2])).unwrap(), "linear");
}

#[test]
fn layer_norm_and_softmax_match_the_cpu() {
    // A ViT-S token matrix: 2 images, 1 + 16 tokens of 384.
    let (x, w, b) = (f32s(&[2, 17, 384], 40), f32s(&[384], 41), f32s(&[384], 42));
    same_as_cpu(
        &[x.clone(), w, b],
        |a| deepsim_kernels::layer_norm(&a[0], &a[1], &a[2], 1e-6).unwrap(),
        "layer_norm",
    );
    same_as_cpu(&[x], |a| deepsim_kernels::softmax_last_dim(&a[0]).unwrap(), "softmax_last_dim");
}
