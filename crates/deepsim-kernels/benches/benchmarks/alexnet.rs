//! torchvision AlexNet conv1–pool5, frozen, forward + backward w.r.t. the input: the work of a
//! perceptual loss per generator step (`alexnet_tv_pool5_b16_227_fwdbwd_in` of
//! `bench/torch/bench_torch.py`), with deepsim's kernels and with candle's built-ins.

use candle::{Tensor, Var};
use criterion::{black_box, Criterion};
use deepsim_kernels::{
    max_pool2d, Activation, Conv2dConfig, ConvAlgorithm, FrozenConv2d, MaxPool2dConfig,
};

use super::{rand, slow};

/// (out, in, kernel, stride, padding, pool after) of torchvision's `alexnet().features`.
const LAYERS: [(usize, usize, usize, usize, usize, bool); 5] = [
    (64, 3, 11, 4, 2, true),
    (192, 64, 5, 1, 2, true),
    (384, 192, 3, 1, 1, false),
    (256, 384, 3, 1, 1, false),
    (256, 256, 3, 1, 1, true),
];

/// The frozen trunk, built from deepsim-kernels.
pub struct Trunk {
    convs: Vec<(FrozenConv2d, bool)>,
}

impl Trunk {
    /// Random weights scaled like Kaiming initialization (timing does not depend on values).
    pub fn new() -> Self {
        Self::with_algorithm(ConvAlgorithm::Auto)
    }

    /// The same trunk with every convolution computed by `algorithm` where it applies.
    pub fn with_algorithm(algorithm: ConvAlgorithm) -> Self {
        let convs = LAYERS
            .iter()
            .enumerate()
            .map(|(i, &(o, c, k, s, p, pool))| {
                let fan_in = (c * k * k) as f64;
                let w = (rand(&[o, c, k, k], i as u64) * (3.0 / fan_in).sqrt()).unwrap();
                let b = (rand(&[o], 100 + i as u64) * 0.01).unwrap();
                let conv = FrozenConv2d::new(w, Some(b), Conv2dConfig::new(s, p)).unwrap();
                let conv = conv.with_activation(Activation::Relu);
                let conv = match (algorithm, k) {
                    (ConvAlgorithm::Winograd, k) if k != 3 => conv,
                    _ => conv.with_algorithm(algorithm).unwrap(),
                };
                (conv, pool)
            })
            .collect();
        Self { convs }
    }

    /// conv + ReLU (fused) (→ pool 3/2) ×5, with deepsim's kernels.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let pool = MaxPool2dConfig::square(3, 2);
        let mut h = x.clone();
        for (conv, pooled) in &self.convs {
            h = conv.forward(&h).unwrap();
            if *pooled {
                h = max_pool2d(&h, &pool).unwrap();
            }
        }
        h
    }

    /// The same network from candle's built-ins (conv2d, max_pool2d_with_stride). candle's
    /// max-pool backward fails for kernel ≠ stride, so the built-in variant can only run forward.
    pub fn forward_candle(&self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        for (conv, pooled) in &self.convs {
            let cfg = conv.config();
            let b = conv.bias().unwrap().reshape((1, (), 1, 1)).unwrap();
            h = h.conv2d(conv.weight(), cfg.padding.0, cfg.stride.0, 1, 1).unwrap();
            h = h.broadcast_add(&b).unwrap().relu().unwrap();
            if *pooled {
                h = h.max_pool2d_with_stride(3, 2).unwrap();
            }
        }
        h
    }
}

impl Default for Trunk {
    fn default() -> Self {
        Self::new()
    }
}

/// One perceptual-loss step: MSE to a fixed target, backward to the input.
fn fwd_bwd(trunk: &Trunk, x: &Var, target: &Tensor) -> Tensor {
    let loss = (trunk.forward(x.as_tensor()) - target).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    grads.get(x.as_tensor()).unwrap().clone()
}

fn bench(c: &mut Criterion) {
    let trunk = Trunk::new();
    for (n, hw) in [(16, 227), (64, 64)] {
        let x = Var::from_tensor(&rand(&[n, 3, hw, hw], 7)).unwrap();
        let target = trunk.forward(&rand(&[n, 3, hw, hw], 8));
        c.bench_function(&format!("cpu_alexnet_tv_pool5_b{n}_{hw}_fwdbwd_in"), |b| {
            b.iter(|| black_box(fwd_bwd(&trunk, &x, &target)))
        });
        if n == 16 {
            // The 3×3 layers by im2col instead of Winograd: what Winograd saves.
            let im2col = Trunk::with_algorithm(ConvAlgorithm::Im2col);
            c.bench_function(&format!("cpu_alexnet_tv_pool5_b{n}_{hw}_fwdbwd_in_im2col"), |b| {
                b.iter(|| black_box(fwd_bwd(&im2col, &x, &target)))
            });
        }
        c.bench_function(&format!("cpu_alexnet_tv_pool5_b{n}_{hw}_fwd"), |b| {
            b.iter(|| black_box(trunk.forward(x.as_tensor())))
        });
        c.bench_function(&format!("cpu_alexnet_tv_pool5_b{n}_{hw}_fwd_candle"), |b| {
            b.iter(|| black_box(trunk.forward_candle(x.as_tensor())))
        });
    }
}

criterion::criterion_group! {
    name = benches;
    config = slow();
    targets = bench
}
