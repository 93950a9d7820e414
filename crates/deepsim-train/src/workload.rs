//! The DeePSiM generator step as a fixed benchmark workload: the twin of
//! `deepsim_step_b{batch}_{side}` in `bench_torch.py` (PyTorch), at any batch and on any device.
//! The criterion benchmarks, `deepsim bench` and `cargo xtask bench-gpu` time it.

use std::sync::Arc;

use candle::{DType, Device, Tensor};
use deepsim_comparators::{AlexNet, AlexNetLayout, Comparator, Tap};
use deepsim_data::Rng;
use deepsim_losses::{image_loss, FeatureLoss, FeatureNorm, ImageDistance, Reduction};
use deepsim_models::{Generator, GeneratorConfig, GeneratorInput, TowerLayer};

use crate::config::OptimConfig;
use crate::error::{Error, Result};
use crate::model::standard_normal;
use crate::{seeded, Adam};

/// One generator update: forward from a fixed 4096-vector per image, AlexNet (torchvision
/// layout, seeded random weights) conv5 feature MSE against a fixed target image's features
/// on the 227×227 centre crop (computed afresh each step, as a trainer does for each new
/// batch and as the PyTorch twin does), image MSE, backward, Adam (lr 2e-4, β 0.9/0.999)
/// over the generator.
pub struct StepWorkload {
    side: usize,
    generator: Generator,
    adam: Adam,
    feature: FeatureLoss,
    code: Tensor,
    target: Tensor,
}

impl StepWorkload {
    /// `bench_torch.py`'s generators: three fully connected layers of 4096, a 256×4×4 seed,
    /// then the 64-pixel tower (u256 c512 u256 c256 u128 c128 u3) or the paper's to 256.
    ///
    /// # Errors
    /// A side other than 64 or 256.
    pub fn generator_config(side: usize) -> Result<GeneratorConfig> {
        use TowerLayer::{Conv as C, Up as U};
        let tower = match side {
            64 => vec![U(256), C(512), U(256), C(256), U(128), C(128), U(3)],
            256 => vec![U(256), C(512), U(256), C(256), U(128), C(128), U(64), U(32), U(3)],
            _ => return Err(Error::Config(format!("step workload: side {side}, not 64 or 256"))),
        };
        Ok(GeneratorConfig {
            input: GeneratorInput::Vector(4096),
            head_width: 4096,
            head_layers: 3,
            seed_map: (256, 4),
            tower,
            alpha: 0.3,
            output: side,
            output_init: deepsim_models::OutputInit::He,
        })
    }

    /// The workload for `batch` images of `side` (64 or 256) pixels on `device`, every weight
    /// and input drawn from fixed seeds.
    ///
    /// # Errors
    /// A side other than 64 or 256, a batch of 0, or a device error.
    pub fn new(side: usize, batch: usize, device: &Device) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("step workload: batch 0".into()));
        }
        let config = Self::generator_config(side)?;
        let (generator, vars) = seeded(0, device, |vb| Ok(Generator::new(config, vb)?))?;
        // The paper's Adam, as `bench_torch.py` sets it.
        let o = OptimConfig::default();
        let adam = Adam::new(&vars, o.lr, o.beta1, o.beta2, o.eps)?;
        let alex: Arc<dyn Comparator + Send + Sync> =
            Arc::new(AlexNet::random(AlexNetLayout::Torchvision, 0, device)?);
        let feature =
            FeatureLoss::new(alex, &[(Tap::Relu5, 1.0)], FeatureNorm::Mean, Reduction::Mean)?;
        let code = normal(&[batch, 4096], 1, device)?;
        // The torch side draws its target from randn; the comparator needs [0, 1] images.
        let target =
            normal(&[batch, 3, side, side], 2, device)?.affine(0.2, 0.5)?.clamp(0f32, 1f32)?;
        Ok(StepWorkload { side, generator, adam, feature, code, target })
    }

    /// Images per step.
    pub fn batch(&self) -> usize {
        self.code.dims()[0]
    }

    /// One step; returns the loss (reading it waits for the device).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn step(&mut self) -> Result<f32> {
        let y = self.generator.forward(&self.code)?.clamp(0f32, 1f32)?;
        let want = self.feature.target_features(&crop(&self.target)?)?;
        let lf = self.feature.forward_to(&crop(&y)?, &want)?.total;
        let li = image_loss(&y, &self.target, ImageDistance::SquaredL2, Reduction::Mean)?;
        let loss = (lf + (li / (3 * self.side * self.side) as f64)?)?;
        self.adam.step(&loss.backward()?)?;
        Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    }
}

/// The comparator sees the 227×227 centre crop of a larger output.
fn crop(t: &Tensor) -> Result<Tensor> {
    let side = t.dim(3)?;
    if side <= 227 {
        return Ok(t.clone());
    }
    let o = (side - 227) / 2;
    Ok(t.narrow(2, o, 227)?.narrow(3, o, 227)?)
}

/// Standard normal values of `shape` from `seed`, as f32 on `device`.
pub fn normal(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    standard_normal(&mut Rng::new(seed), shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_lowers_its_loss_and_refuses_bad_sizes() {
        let mut w = StepWorkload::new(64, 2, &Device::Cpu).unwrap();
        assert_eq!(w.batch(), 2);
        let first = w.step().unwrap();
        let mut last = first;
        for _ in 0..4 {
            last = w.step().unwrap();
        }
        assert!(first.is_finite() && last < first, "loss {first} → {last}");
        let err = StepWorkload::new(128, 2, &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("side 128"), "{err}");
        assert!(StepWorkload::new(64, 0, &Device::Cpu)
            .err()
            .unwrap()
            .to_string()
            .contains("batch 0"));
    }
}
