//! Local response normalization at CaffeNet's norm1 shape (batch 16, 96×27×27), forward and
//! forward + backward, against the same computed from candle's built-ins.

use candle::Var;
use criterion::{black_box, Criterion};
use deepsim_kernels::{composite, local_response_norm, LrnConfig};

use super::rand;

fn bench(c: &mut Criterion) {
    let x = Var::from_tensor(&(rand(&[16, 96, 27, 27], 6) * 30.0).unwrap()).unwrap();
    let xt = x.as_tensor();
    let cfg = LrnConfig::caffenet();
    c.bench_function("cpu_lrn_caffenet_b16_96x27_fwd_deepsim", |b| {
        b.iter(|| black_box(local_response_norm(xt, &cfg).unwrap()))
    });
    c.bench_function("cpu_lrn_caffenet_b16_96x27_fwd_candle_builtins", |b| {
        b.iter(|| black_box(composite::local_response_norm(xt, &cfg).unwrap()))
    });
    c.bench_function("cpu_lrn_caffenet_b16_96x27_fwdbwd_deepsim", |b| {
        b.iter(|| {
            let y = local_response_norm(xt, &cfg).unwrap();
            black_box(y.sum_all().unwrap().backward().unwrap())
        })
    });
    c.bench_function("cpu_lrn_caffenet_b16_96x27_fwdbwd_candle_builtins", |b| {
        b.iter(|| {
            let y = composite::local_response_norm(xt, &cfg).unwrap();
            black_box(y.sum_all().unwrap().backward().unwrap())
        })
    });
}

criterion::criterion_group!(benches, bench);
