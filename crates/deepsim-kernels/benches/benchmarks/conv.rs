//! Convolutions at AlexNet's and the DeePSiM generator's shapes: deepsim's im2col/GEMM kernels
//! against candle's built-ins, forward and forward + backward.

use candle::{Tensor, Var};
use criterion::{black_box, Criterion};
use deepsim_kernels::{
    conv2d, conv_transpose2d, Activation, Conv2dConfig, ConvAlgorithm, ConvTranspose2dConfig,
    FrozenConv2d,
};

use super::rand;

/// (name, batch, in channels, size, out channels, kernel, stride, padding).
type ConvCase = (&'static str, usize, usize, usize, usize, usize, usize, usize);

const CONVS: [ConvCase; 4] = [
    ("alex_conv1_3x227_64k11s4", 16, 3, 227, 64, 11, 4, 2),
    ("alex_conv2_64x27_192k5", 16, 64, 27, 192, 5, 1, 2),
    ("alex_conv3_192x13_384k3", 16, 192, 13, 384, 3, 1, 1),
    ("alex_conv4_384x13_256k3", 16, 384, 13, 256, 3, 1, 1),
];

fn sum_grad(loss: &Tensor, x: &Var) -> Tensor {
    loss.backward().unwrap().get(x.as_tensor()).unwrap().clone()
}

fn bench(c: &mut Criterion) {
    for (name, n, ci, hw, co, k, s, p) in CONVS {
        let x = Var::from_tensor(&rand(&[n, ci, hw, hw], 1)).unwrap();
        let w = (rand(&[co, ci, k, k], 2) * 0.05).unwrap();
        let cfg = Conv2dConfig::new(s, p);
        let frozen = FrozenConv2d::new(w.clone(), None, cfg).unwrap();
        let xt = x.as_tensor();
        c.bench_function(&format!("cpu_conv2d_{name}_fwd_deepsim"), |b| {
            b.iter(|| black_box(conv2d(xt, &w, None, &cfg).unwrap()))
        });
        c.bench_function(&format!("cpu_conv2d_{name}_fwd_candle"), |b| {
            b.iter(|| black_box(xt.conv2d(&w, p, s, 1, 1).unwrap()))
        });
        c.bench_function(&format!("cpu_conv2d_{name}_fwdbwd_in_deepsim_frozen"), |b| {
            b.iter(|| black_box(sum_grad(&frozen.forward(xt).unwrap().sum_all().unwrap(), &x)))
        });
        if k == 3 {
            // A comparator's layer (ReLU fused) by each CPU algorithm.
            for algo in [ConvAlgorithm::Im2col, ConvAlgorithm::Winograd] {
                let layer = FrozenConv2d::new(w.clone(), None, cfg)
                    .unwrap()
                    .with_activation(Activation::Relu)
                    .with_algorithm(algo)
                    .unwrap();
                let algo = format!("{algo:?}").to_lowercase();
                c.bench_function(&format!("cpu_conv2d_{name}_relu_fwd_frozen_{algo}"), |b| {
                    b.iter(|| black_box(layer.forward(xt).unwrap()))
                });
                c.bench_function(&format!("cpu_conv2d_{name}_relu_fwdbwd_in_frozen_{algo}"), |b| {
                    b.iter(|| {
                        black_box(sum_grad(&layer.forward(xt).unwrap().sum_all().unwrap(), &x))
                    })
                });
            }
        }
        c.bench_function(&format!("cpu_conv2d_{name}_fwdbwd_in_candle"), |b| {
            b.iter(|| {
                black_box(sum_grad(&xt.conv2d(&w, p, s, 1, 1).unwrap().sum_all().unwrap(), &x))
            })
        });
    }

    // The generator's 3×3 convolutions (batch 8, the step benchmark's): forward and the
    // weight gradient alone, whose GEMM reduces over images × pixels.
    for (name, ci, hw, co) in [
        ("gen_conv_256x8_512k3", 256, 8, 512),
        ("gen_conv_256x16_256k3", 256, 16, 256),
        ("gen_conv_128x32_128k3", 128, 32, 128),
    ] {
        let x = rand(&[8, ci, hw, hw], 5);
        let w = Var::from_tensor(&(rand(&[co, ci, 3, 3], 6) * 0.05).unwrap()).unwrap();
        let cfg = Conv2dConfig::new(1, 1);
        c.bench_function(&format!("cpu_conv2d_{name}_fwdbwd_weight_deepsim"), |b| {
            b.iter(|| {
                black_box(sum_grad(
                    &conv2d(&x, w.as_tensor(), None, &cfg).unwrap().sum_all().unwrap(),
                    &w,
                ))
            })
        });
    }

    // The generator's up-convolution: 256 → 128 channels, kernel 4, stride 2, 16 → 32 pixels.
    let x = Var::from_tensor(&rand(&[16, 256, 16, 16], 3)).unwrap();
    let w = Var::from_tensor(&(rand(&[256, 128, 4, 4], 4) * 0.05).unwrap()).unwrap();
    let cfg = ConvTranspose2dConfig::new(2, 1);
    let (xt, wt) = (x.as_tensor(), w.as_tensor());
    let name = "gen_uconv_256x16_128k4s2";
    c.bench_function(&format!("cpu_conv_transpose2d_{name}_fwd_deepsim"), |b| {
        b.iter(|| black_box(conv_transpose2d(xt, wt, None, &cfg).unwrap()))
    });
    c.bench_function(&format!("cpu_conv_transpose2d_{name}_fwd_candle"), |b| {
        b.iter(|| black_box(xt.conv_transpose2d(wt, 1, 0, 2, 1).unwrap()))
    });
    // Forward + backward w.r.t. input and weight: a generator training step's work.
    c.bench_function(&format!("cpu_conv_transpose2d_{name}_fwdbwd_deepsim"), |b| {
        b.iter(|| {
            let y = conv_transpose2d(xt, wt, None, &cfg).unwrap();
            black_box(y.sum_all().unwrap().backward().unwrap())
        })
    });
    c.bench_function(&format!("cpu_conv_transpose2d_{name}_fwdbwd_candle"), |b| {
        b.iter(|| {
            let y = xt.conv_transpose2d(wt, 1, 0, 2, 1).unwrap();
            black_box(y.sum_all().unwrap().backward().unwrap())
        })
    });
}

criterion::criterion_group! {
    name = benches;
    config = super::slow();
    targets = bench
}
