//! The twin of `deepsim_step_b8_64` / `deepsim_step_b8_256` in `bench_torch.py`: generator
//! forward from a 4096-vector, AlexNet (torchvision layout) conv5 feature MSE against a fixed
//! target's features, image MSE, backward, and Adam (lr 2e-4, β 0.9/0.999) over the generator.
//! The comparator's weights are seeded (speed does not depend on their values); the torch
//! side's generator uses torch's default initialization.

use std::hint::black_box;
use std::sync::Arc;

use candle::backprop::GradStore;
use candle::{DType, Device, Tensor};
use criterion::{criterion_group, Criterion};
use deepsim_comparators::{AlexNet, AlexNetLayout, Comparator, Tap};
use deepsim_data::Rng;
use deepsim_losses::{image_loss, FeatureLoss, FeatureNorm, ImageDistance, Reduction};
use deepsim_models::{Generator, GeneratorConfig, GeneratorInput, TowerLayer};
use deepsim_train::{seeded, Adam};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// `bench_torch.py`'s generators: three fully connected layers of 4096, 256×4×4, then its
/// 64-pixel tower (u256 c512 u256 c256 u128 c128 u3) or the paper's (to 256).
fn generator_config(side: usize) -> GeneratorConfig {
    use TowerLayer::{Conv as C, Up as U};
    let tower = if side == 64 {
        vec![U(256), C(512), U(256), C(256), U(128), C(128), U(3)]
    } else {
        vec![U(256), C(512), U(256), C(256), U(128), C(128), U(64), U(32), U(3)]
    };
    GeneratorConfig {
        input: GeneratorInput::Vector(4096),
        head_width: 4096,
        head_layers: 3,
        seed_map: (256, 4),
        tower,
        alpha: 0.3,
        output: side,
    }
}

/// One benchmark step's networks and data, built on first use so that a filtered run does not
/// pay for benchmarks it skips.
struct Step {
    side: usize,
    g: Generator,
    adam: Adam,
    feat: FeatureLoss,
    z: Tensor,
    target: Tensor,
    want: Vec<Tensor>,
}

impl Step {
    fn new(side: usize) -> Self {
        let dev = Device::Cpu;
        let (g, vars) = seeded(0, &dev, |vb| Ok(Generator::new(generator_config(side), vb)?))
            .expect("generator");
        let adam = Adam::new(&vars, 2e-4, 0.9, 0.999, 1e-8).expect("adam");
        let alex: Arc<dyn Comparator + Send + Sync> =
            Arc::new(AlexNet::random(AlexNetLayout::Torchvision, 0, &dev).expect("alexnet"));
        let feat = FeatureLoss::new(alex, &[(Tap::Relu5, 1.0)], FeatureNorm::Mean, Reduction::Mean)
            .expect("loss");
        let z = randn(&[8, 4096], 1);
        // The torch side draws its target from randn; the comparator needs [0, 1] images.
        let target = randn(&[8, 3, side, side], 2)
            .affine(0.2, 0.5)
            .and_then(|t| t.clamp(0f32, 1f32))
            .expect("target");
        let want = feat.target_features(&crop(&target, side)).expect("target features");
        Step { side, g, adam, feat, z, target, want }
    }

    fn run(&mut self) -> Tensor {
        let side = self.side;
        let y = self.g.forward(&self.z).expect("forward").clamp(0f32, 1f32).expect("clamp");
        let lf = self.feat.forward_to(&crop(&y, side), &self.want).expect("feature loss").total;
        let li = image_loss(&y, &self.target, ImageDistance::SquaredL2, Reduction::Mean)
            .expect("image loss");
        let n = (3 * side * side) as f64;
        let loss = (lf + (li / n).expect("scale")).expect("sum");
        self.adam.step(&loss.backward().expect("backward")).expect("adam");
        loss
    }
}

/// The comparator sees the 227 centre crop of a larger output.
fn crop(t: &Tensor, side: usize) -> Tensor {
    if side <= 227 {
        t.clone()
    } else {
        let o = (side - 227) / 2;
        t.narrow(2, o, 227).and_then(|t| t.narrow(3, o, 227)).expect("crop")
    }
}

fn bench_step(c: &mut Criterion, side: usize) {
    let mut step: Option<Step> = None;
    c.bench_function(&format!("cpu_deepsim_step_b8_{side}"), |b| {
        let step = step.get_or_insert_with(|| Step::new(side));
        b.iter(|| black_box(step.run().to_dtype(DType::F32).expect("loss")))
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
    let dev = Device::Cpu;
    let (_, vars) =
        seeded(0, &dev, |vb| Ok(Generator::new(generator_config(side), vb)?)).expect("generator");
    let mut grads = GradStore::default();
    let data = vars.data().lock().expect("vars").clone();
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let var = &data[name];
        grads.insert(var.as_tensor(), randn(var.dims(), 100 + i as u64));
    }
    let adam = if fused {
        Adam::new(&vars, 2e-4, 0.9, 0.999, 1e-8)
    } else {
        Adam::unfused(&vars, 2e-4, 0.9, 0.999, 1e-8)
    };
    (adam.expect("adam"), grads)
}

/// The twin of `deepsim_gen_b8_{side}_fwd`: the generator's forward pass alone.
fn bench_generator(c: &mut Criterion, side: usize) {
    let mut state: Option<(Generator, Tensor)> = None;
    c.bench_function(&format!("cpu_deepsim_gen_b8_{side}_fwd"), |b| {
        let (g, z) = state.get_or_insert_with(|| {
            let (g, _vars) =
                seeded(0, &Device::Cpu, |vb| Ok(Generator::new(generator_config(side), vb)?))
                    .expect("generator");
            (g, randn(&[8, 4096], 1))
        });
        b.iter(|| black_box(g.forward(z).expect("forward")))
    });
}

fn steps(c: &mut Criterion) {
    // As the `deepsim` binary runs (`retain_freed_memory`); PyTorch's side is timed both with
    // glibc's defaults and with the same settings (docs/PERFORMANCE.md).
    deepsim_train::retain_freed_memory();
    for side in [64, 256] {
        bench_step(c, side);
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
