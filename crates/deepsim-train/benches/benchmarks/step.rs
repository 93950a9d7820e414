//! The twins of `bench_torch.py`'s DeePSiM step benchmarks: the generator step
//! ([`StepWorkload`]: generator forward from a 4096-vector, AlexNet conv5 feature MSE, image
//! MSE, backward, Adam over the generator), the full trainer step ([`TrainerStepWorkload`]:
//! `Trainer::step` with the encoder, the discriminator, every term of the paper's objective,
//! both Adams and the pause rule), Adam alone and the generator's forward pass. The
//! networks' weights are seeded (speed does not depend on their values); the torch side's
//! networks use torch's default initialization.

use std::hint::black_box;

use candle::backprop::GradStore;
use candle::{Device, Tensor};
use candle_nn::VarMap;
use criterion::{criterion_group, Criterion};
use deepsim_models::Generator;
use deepsim_train::{normal, seeded, Adam, OptimConfig, StepWorkload, TrainerStepWorkload};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    normal(shape, seed, &Device::Cpu).expect("tensor")
}

/// The step benchmark's generator (`bench_torch.py`'s) with its variables, seed 0.
fn generator(side: usize) -> (Generator, VarMap) {
    let config = StepWorkload::generator_config(side).expect("side");
    seeded(0, &Device::Cpu, |vb| Ok(Generator::new(config, vb)?)).expect("generator")
}

fn bench_step(c: &mut Criterion, side: usize) {
    let mut step: Option<StepWorkload> = None;
    c.bench_function(&format!("cpu_deepsim_step_b8_{side}"), |b| {
        let step =
            step.get_or_insert_with(|| StepWorkload::new(side, 8, &Device::Cpu).expect("step"));
        b.iter(|| black_box(step.step().expect("step")))
    });
}

/// The twin of `deepsim_train_step_b8_{side}`: one `Trainer::step` of the paper's settings.
fn bench_train_step(c: &mut Criterion, side: usize) {
    let mut step: Option<TrainerStepWorkload> = None;
    c.bench_function(&format!("cpu_deepsim_train_step_b8_{side}"), |b| {
        let step =
            step.get_or_insert_with(|| TrainerStepWorkload::new(side, 8, "cpu").expect("trainer"));
        b.iter(|| black_box(step.step().expect("step")))
    });
}

/// The twins of `deepsim_adam_only_b8_{side}` (PyTorch's default single-tensor Adam) and
/// `deepsim_adam_fused_only_b8_{side}`: one Adam update of every generator variable from fixed
/// random gradients. `_unfused` is the same update as candle tensor operations.
fn bench_adam(c: &mut Criterion, side: usize) {
    for (suffix, fused) in [("", true), ("_unfused", false)] {
        let mut state: Option<(Adam, GradStore)> = None;
        c.bench_function(&format!("cpu_deepsim_adam_only_b8_{side}{suffix}"), |b| {
            let (adam, grads) = state.get_or_insert_with(|| adam_with_gradients(side, fused));
            b.iter(|| adam.step(grads).expect("adam"))
        });
    }
}

/// Adam over a generator's variables, with fixed random gradients for all of them.
fn adam_with_gradients(side: usize, fused: bool) -> (Adam, GradStore) {
    let (_, vars) = generator(side);
    let mut grads = GradStore::default();
    let data = vars.data().lock().expect("vars").clone();
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let var = &data[name];
        grads.insert(var.as_tensor(), randn(var.dims(), 100 + i as u64));
    }
    let o = OptimConfig::default();
    let adam = if fused {
        Adam::new(&vars, o.lr, o.beta1, o.beta2, o.eps)
    } else {
        Adam::unfused(&vars, o.lr, o.beta1, o.beta2, o.eps)
    };
    (adam.expect("adam"), grads)
}

/// The twin of `deepsim_gen_b8_{side}_fwd`: the generator's forward pass alone.
fn bench_generator(c: &mut Criterion, side: usize) {
    let mut state: Option<(Generator, Tensor)> = None;
    c.bench_function(&format!("cpu_deepsim_gen_b8_{side}_fwd"), |b| {
        let (g, z) = state.get_or_insert_with(|| (generator(side).0, randn(&[8, 4096], 1)));
        b.iter(|| black_box(g.forward(z).expect("forward")))
    });
}

fn steps(c: &mut Criterion) {
    // As the `deepsim` binary runs (`retain_freed_memory`, `one_compute_pool`: this group is
    // the bench binary's only one, so no candle op has run yet); PyTorch's side is timed both
    // with glibc's defaults and with the same settings (docs/PERFORMANCE.md).
    deepsim_train::retain_freed_memory();
    deepsim_train::one_compute_pool();
    for side in [64, 256] {
        bench_step(c, side);
        bench_train_step(c, side);
        bench_adam(c, side);
        bench_generator(c, side);
    }
}

criterion_group! {
    name = benches;
    // A step takes a large fraction of a second on a CPU.
    config = Criterion::default().sample_size(10);
    targets = steps
}
