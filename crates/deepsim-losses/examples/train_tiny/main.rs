//! The DeePSiM loss (feature and image terms; the comparator AlexNet with seeded random
//! weights, which needs no file) as the loss of a tiny user-defined candle model, trained by
//! Adam to draw two photographs from two codes; prints the terms going down.
//!
//!     cargo run --release -p deepsim-losses --example train_tiny -- [STEPS]

// ANCHOR: readme
use std::sync::Arc;

use candle::{Device, Module, Tensor};
use candle_nn::Linear;
use deepsim_comparators::{AlexNet, AlexNetLayout, Tap};
use deepsim_losses::{
    AdversarialKind, DeepSimLoss, DeepSimWeights, FeatureLoss, FeatureNorm, Reduction,
};

/// A tiny generator: a 16-vector → a 3×64×64 image in (0, 1) through one linear layer.
struct Tiny(Linear);

impl Module for Tiny {
    fn forward(&self, code: &Tensor) -> candle::Result<Tensor> {
        candle_nn::ops::sigmoid(&self.0.forward(code)?)?.reshape(((), 3, 64, 64))
    }
}

/// 10⁴ · ‖C(G(y)) − C(x)‖² at AlexNet's conv2 and conv5 (means over elements) + ‖G(y) − x‖².
fn deepsim_loss() -> deepsim_losses::Result<DeepSimLoss> {
    let alexnet = AlexNet::random(AlexNetLayout::Torchvision, 0, &Device::Cpu)?;
    let taps = [(Tap::Conv2, 1.0), (Tap::Conv5, 1.0)];
    let feat = FeatureLoss::new(Arc::new(alexnet), &taps, FeatureNorm::Mean, Reduction::Mean)?;
    let weights = DeepSimWeights { feat: 1e4, adv: 0.0, img: 1.0, kl: 0.0, pixel_scale: 1.0 };
    DeepSimLoss::new(weights, Some(feat.into()), AdversarialKind::Logistic, Reduction::Mean)
}
// ANCHOR_END: readme

use std::path::Path;

use anyhow::Context;
use candle::DType;
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use deepsim_losses::StepInputs;

/// An image file resized to 64×64, as a `[3, 64, 64]` f32 tensor in [0, 1].
fn load(path: &Path) -> anyhow::Result<Tensor> {
    let img = image::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rgb = img.resize_exact(64, 64, image::imageops::FilterType::Triangle).to_rgb8();
    let t = Tensor::from_vec(rgb.into_raw(), (64, 64, 3), &Device::Cpu)?;
    Ok((t.permute((2, 0, 1))?.to_dtype(DType::F32)? / 255.0)?)
}

fn main() -> anyhow::Result<()> {
    let steps = match std::env::args().nth(1) {
        Some(a) => {
            a.parse::<usize>().with_context(|| format!("STEPS must be a number, got {a:?}"))?
        }
        None => 40,
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let target = Tensor::stack(
        &[load(&data.join("coffee_224.png"))?, load(&data.join("chelsea_224.png"))?],
        0,
    )?;
    let codes = Tensor::randn(0f32, 1., (2, 16), &Device::Cpu)?;

    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let model = Tiny(candle_nn::linear(16, 3 * 64 * 64, vb.pp("fc"))?);
    let mut adam = AdamW::new(
        vars.all_vars(),
        ParamsAdamW { lr: 0.01, weight_decay: 0.0, ..Default::default() },
    )?;
    let loss = deepsim_loss()?;
    for step in 1..=steps {
        let terms =
            loss.generator_terms(&model.forward(&codes)?, &target, StepInputs::default())?;
        adam.backward_step(&terms.total)?;
        if step == 1 || step % 5 == 0 {
            let value = |t: &Option<Tensor>| -> anyhow::Result<f32> {
                Ok(t.as_ref().context("term switched off")?.to_scalar::<f32>()?)
            };
            println!(
                "step {step:>3}: total {:.4}  feat {:.4}  img {:.5}",
                terms.total.to_scalar::<f32>()?,
                value(&terms.feat)?,
                value(&terms.img)?
            );
        }
    }
    Ok(())
}
