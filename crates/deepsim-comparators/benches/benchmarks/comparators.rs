//! Each comparator forward + backward w.r.t. the input (the cost of a perceptual loss per
//! step, as `bench_torch.py` measures it: MSE to a fixed target, or the mean LPIPS distance),
//! LPIPS-alex and ST-LPIPS-alex (its shipped weights) on one 1080×800 pair, and the CLIP and
//! DINOv2 vision transformers (forward, and forward + backward to the pixels).

use std::cell::OnceCell;

use candle::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use criterion::{black_box, Criterion};
use deepsim_comparators::{
    AlexNet, AlexNetLayout, Comparator, EfficientNetLite, EfficientNetVariant, Lpips,
    ShiftTolerantTrunk, Tap, Vgg, VggDepth, Vit, VitPreset,
};

use super::{image, slow};

/// MSE between the tap of `x` and a fixed target, backward to `x`.
fn feature_step(net: &dyn Comparator, tap: Tap, x: &Var, target: &Tensor) -> Tensor {
    let f = net.features(x.as_tensor(), &[tap]).unwrap().remove(0);
    let loss = (f - target).unwrap().sqr().unwrap().mean_all().unwrap();
    loss.backward().unwrap().get(x.as_tensor()).unwrap().clone()
}

fn heads(widths: &[usize]) -> VarBuilder<'static> {
    let t = widths
        .iter()
        .enumerate()
        .map(|(i, &c)| (format!("lin{i}.weight"), (image(&[1, c, 1, 1], 50 + i as u64))))
        .collect();
    VarBuilder::from_tensors(t, DType::F32, &Device::Cpu)
}

/// The mean distance of a batch of pairs of `shape` and its gradient w.r.t. the first images.
fn distance_fwdbwd<'a>(
    c: &mut Criterion,
    name: &str,
    metric: &'a dyn Fn() -> &'a Lpips,
    shape: [usize; 4],
) {
    let step = |m: &Lpips, x: &Var, y: &Tensor| {
        let d = m.forward(x.as_tensor(), y).unwrap().distance.mean_all().unwrap();
        d.backward().unwrap()
    };
    let state = OnceCell::new();
    c.bench_function(name, |b| {
        let (x, y) = state.get_or_init(|| {
            let x = Var::from_tensor(&image(&shape, 6)).unwrap();
            let y = image(&shape, 7);
            step(metric(), &x, &y);
            (x, y)
        });
        b.iter(|| black_box(step(metric(), x, y)))
    });
}

/// The distances of a batch of pairs of `shape`, no gradient.
fn distance_fwd<'a>(
    c: &mut Criterion,
    name: &str,
    metric: &'a dyn Fn() -> &'a Lpips,
    shape: [usize; 4],
) {
    let pair = OnceCell::new();
    c.bench_function(name, |bch| {
        let (a, b) = pair.get_or_init(|| {
            let (a, b) = (image(&shape, 8), image(&shape, 9));
            metric().forward(&a, &b).unwrap();
            (a, b)
        });
        bch.iter(|| black_box(metric().forward(a, b).unwrap()))
    });
}

fn bench(c: &mut Criterion) {
    // Criterion calls each closure once per sample (and during warm-up), and only for the
    // benchmarks the filter selects: setup runs on the first call and is kept (a `OnceCell`),
    // so a filtered run builds only what it times, and no sample pays for fresh weights or
    // for the first use of a layer (e.g. its Winograd kernel transforms).
    let cpu = Device::Cpu;
    for (name, tap, n, hw) in [
        ("caffenet_pool5_b16_227_fwdbwd_in", Tap::Pool5, 16, 227),
        ("vgg16_relu5_3_b4_224_fwdbwd_in", Tap::Vgg(5, 3), 4, 224),
    ] {
        let state = OnceCell::new();
        c.bench_function(&format!("cpu_{name}"), |b| {
            let (net, x, target) = state.get_or_init(|| {
                let net: Box<dyn Comparator> = match tap {
                    Tap::Pool5 => Box::new(AlexNet::random(AlexNetLayout::Caffe, 1, &cpu).unwrap()),
                    _ => Box::new(Vgg::random(VggDepth::Vgg16, 2, &cpu).unwrap()),
                };
                let x = Var::from_tensor(&image(&[n, 3, hw, hw], 3)).unwrap();
                let target = net.features(&image(&[n, 3, hw, hw], 4), &[tap]).unwrap().remove(0);
                feature_step(net.as_ref(), tap, &x, &target);
                (net, x, target)
            });
            b.iter(|| black_box(feature_step(net.as_ref(), tap, x, target)))
        });
    }

    let lpips = OnceCell::new();
    let lpips = || {
        lpips.get_or_init(|| {
            let trunk = AlexNet::random(AlexNetLayout::Torchvision, 5, &Device::Cpu).unwrap();
            Lpips::alex(trunk, heads(&[64, 192, 384, 256, 256])).unwrap()
        })
    };
    distance_fwdbwd(c, "cpu_lpips_alex_b16_227_fwdbwd_in", &lpips, [16, 3, 227, 227]);
    // pyiqa publishes 0.205 s per 1080×800 pair for LPIPS-alex on a CPU.
    distance_fwd(c, "cpu_lpips_alex_fwd_pair_1080x800", &lpips, [1, 3, 800, 1080]);

    // ST-LPIPS-alex, with the weights that ship with the repository (the same work as random
    // ones, but the real thing): `stlpips_pytorch`'s LPIPS(net="alex", variant="shift_tolerant")
    // is the PyTorch twin.
    let st = OnceCell::new();
    let st = || {
        st.get_or_init(|| {
            Lpips::pretrained_shift_tolerant(ShiftTolerantTrunk::Alex, None, &Device::Cpu).unwrap()
        })
    };
    distance_fwdbwd(c, "cpu_stlpips_alex_fwdbwd_in_b16_227", &st, [16, 3, 227, 227]);
    distance_fwd(c, "cpu_stlpips_alex_fwd_pair_1080x800", &st, [1, 3, 800, 1080]);
    distance_fwdbwd(c, "cpu_stlpips_alex_fwdbwd_in_pair_1080x800", &st, [1, 3, 800, 1080]);

    // The vision transformers on 8 normalized 224×224 images (the processor's output, what
    // transformers' `pixel_values` are), to the image embedding (CLIP's projected class token,
    // DINOv2's normed class token, as `image_embeds` and `pooler_output`): the forward alone,
    // and with the gradient of an MSE to a fixed target w.r.t. the pixels.
    for preset in VitPreset::ALL {
        let state = OnceCell::new();
        let build = || {
            let cfg = preset.config();
            let t = cfg
                .tensor_shapes()
                .into_iter()
                .enumerate()
                // Small weights around zero, as a trained transformer has: no saturated softmax.
                .map(|(i, (name, shape))| {
                    let w = ((image(&shape, 200 + i as u64) - 0.5).unwrap() * 0.04).unwrap();
                    (name, w)
                })
                .collect();
            let vb = VarBuilder::from_tensors(t, DType::F32, &cpu);
            let vit = Vit::new(preset.name(), cfg, vb).unwrap();
            let x = Var::from_tensor(&image(&[8, 3, 224, 224], 11)).unwrap();
            let target = vit.encode(&image(&[8, 3, 224, 224], 12), &[Tap::Embedding]).unwrap();
            (vit, x, target.into_iter().next().unwrap())
        };
        let name = preset.name().replace('-', "_");
        c.bench_function(&format!("cpu_{name}_b8_224_fwd"), |b| {
            let (vit, x, _) = state.get_or_init(build);
            b.iter(|| black_box(vit.encode(x.as_tensor(), &[Tap::Embedding]).unwrap()))
        });
        c.bench_function(&format!("cpu_{name}_b8_224_fwdbwd_in"), |b| {
            let (vit, x, target) = state.get_or_init(build);
            let step = || {
                let e = vit.encode(x.as_tensor(), &[Tap::Embedding]).unwrap().remove(0);
                let loss = (e - target).unwrap().sqr().unwrap().mean_all().unwrap();
                loss.backward().unwrap().get(x.as_tensor()).unwrap().clone()
            };
            step();
            b.iter(|| black_box(step()))
        });
    }

    let state = OnceCell::new();
    c.bench_function("cpu_efficientnet_lite0_b16_224_fwd", |b| {
        let (eff, x) = state.get_or_init(|| {
            let t = deepsim_comparators::weights::Arch::EfficientnetLite0
                .expected()
                .into_iter()
                .enumerate()
                // Values in [0, 1): positive variances keep the folded batch norms finite.
                .map(|(i, (name, shape))| (name, image(&shape, 100 + i as u64)))
                .collect();
            let vb = VarBuilder::from_tensors(t, DType::F32, &cpu);
            let eff = EfficientNetLite::new(EfficientNetVariant::Lite0, vb).unwrap();
            (eff, image(&[16, 3, 224, 224], 10))
        });
        b.iter(|| black_box(eff.logits(x).unwrap()))
    });
}

criterion::criterion_group! {
    name = benches;
    config = slow();
    targets = bench
}
