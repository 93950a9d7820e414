//! Max-pooling 3×3/2 at AlexNet's pool1 shape (batch 16, 64×55×55): deepsim against candle's
//! built-in forward (candle has no backward for overlapping windows).

use candle::Var;
use criterion::{black_box, Criterion};
use deepsim_kernels::{max_pool2d, MaxPool2dConfig};

use super::rand;

fn bench(c: &mut Criterion) {
    let x = Var::from_tensor(&rand(&[16, 64, 55, 55], 5)).unwrap();
    let xt = x.as_tensor();
    for (tag, cfg) in
        [("floor", MaxPool2dConfig::square(3, 2)), ("ceil", MaxPool2dConfig::caffe(3, 2))]
    {
        c.bench_function(&format!("cpu_max_pool2d_k3s2_{tag}_b16_64x55_fwd_deepsim"), |b| {
            b.iter(|| black_box(max_pool2d(xt, &cfg).unwrap()))
        });
        c.bench_function(&format!("cpu_max_pool2d_k3s2_{tag}_b16_64x55_fwdbwd_deepsim"), |b| {
            b.iter(|| {
                let y = max_pool2d(xt, &cfg).unwrap();
                black_box(y.sum_all().unwrap().backward().unwrap())
            })
        });
    }
    c.bench_function("cpu_max_pool2d_k3s2_floor_b16_64x55_fwd_candle", |b| {
        b.iter(|| black_box(xt.max_pool2d_with_stride(3, 2).unwrap()))
    });
}

criterion::criterion_group!(benches, bench);
