//! The DeePSiM training step as fixed benchmark workloads, at any batch and on any device:
//! the generator step alone ([`StepWorkload`], the twin of `deepsim_step_b{batch}_{side}` in
//! `bench_torch.py`) and the whole step of `deepsim train` with its discriminator
//! ([`TrainerStepWorkload`], the twin of `deepsim_train_step_b{batch}_{side}`). The criterion
//! benchmarks, `deepsim bench` and `cargo xtask bench-gpu` time them.

use std::sync::Arc;

use candle::{DType, Device, Tensor};
use deepsim_comparators::{AlexNet, AlexNetLayout, Comparator, Tap};
use deepsim_data::{Dataset, Rng, Sample};
use deepsim_losses::{image_loss, FeatureLoss, FeatureNorm, ImageDistance, Reduction};
use deepsim_models::{Generator, GeneratorConfig};

use crate::config::{OptimConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::model::standard_normal;
use crate::{seeded, Adam, StepLog, Trainer};

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
        match side {
            64 => Ok(GeneratorConfig::paper_vector_64(4096)),
            // The paper's, without its crop to 227: the comparator crops instead.
            256 => Ok(GeneratorConfig { output: 256, ..GeneratorConfig::paper_fc6() }),
            _ => Err(Error::Config(format!("step workload: side {side}, not 64 or 256"))),
        }
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
        self.adam.step(&deepsim_kernels::backward(&loss)?)?;
        Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    }
}

/// One step of `deepsim train` as [`Trainer::step`] runs it, on the paper's settings
/// (`configs/paper-fc6.toml`: the inversion of a 4096-vector, §3–4.1): the batch's code from
/// a frozen encoder (AlexNet fc6 after its ReLU), the generator, the discriminator (the paper's,
/// conditioned on the code, its dropout masks drawn from the seed) on the real and the
/// generated images, the feature term at a second AlexNet's conv5 (relu5) summed per image,
/// the image term on 0–255 pixels, the adversarial term, λ_feat 0.01, λ_adv 100, λ_img 2·10⁻⁶,
/// backward and Adam (2·10⁻⁴, β 0.9/0.999) over the generator, then the discriminator's
/// backward and Adam unless the pause rule (ratio 0.1) holds it, and the trainer's checks
/// that no term and no weight became NaN. The networks' weights are seeded (torchvision's
/// AlexNet layout with random weights stands in for the paper's pretrained CaffeNet: the
/// speed does not depend on the values); the images are seeded random values held in memory,
/// served by the trainer's own loader (one worker thread), so no file is read.
pub struct TrainerStepWorkload {
    trainer: Trainer,
    batch: usize,
}

impl TrainerStepWorkload {
    /// The configuration the workload trains: the paper's settings for the generator of side
    /// `side` — 64 (`generator.preset = "paper_64"`, 64×64 images) or 256 (`"paper"`, the
    /// paper's tower to 256 cropped to 227×227 images) — with `batch` images per step on
    /// `device` (`cpu`, `cuda`, …). Its `data.train` and `data.val` are never read.
    ///
    /// # Errors
    /// A side other than 64 or 256, a batch of 0.
    pub fn config(side: usize, batch: usize, device: &str) -> Result<TrainConfig> {
        let (preset, crop) = match side {
            64 => ("paper_64", 64),
            256 => ("paper", 227),
            _ => {
                return Err(Error::Config(format!(
                    "trainer step workload: side {side}, not 64 or 256"
                )))
            }
        };
        if batch == 0 {
            return Err(Error::Config("trainer step workload: batch 0".into()));
        }
        TrainConfig::from_toml(&format!(
            r#"
            [run]
            out = "target/trainer-step-workload"
            steps = 1000000000
            seed = 1
            device = "{device}"
            samples = 1

            [data]
            train = "in memory"
            val = "in memory"
            resize = {crop}
            crop = {crop}
            batch_size = {batch}
            workers = 1

            [encoder]
            network = "alexnet-random"
            tap = "relu6"

            [generator]
            preset = "{preset}"

            [discriminator]
            preset = "paper"
            conditioned = true

            [loss]
            comparator = "alexnet-random"
            comparator_tap = "relu5"
            feature_norm = "sum"
            pixel_scale = 255.0
            lambda_feat = 0.01
            lambda_adv = 100.0
            lambda_img = 0.000002
            pause_threshold = 0.1

            [optim]
            lr = 0.0002
            beta1 = 0.9
            beta2 = 0.999
            "#
        ))
    }

    /// The workload for `batch` images per step with the generator of side `side` (64 or
    /// 256, [`TrainerStepWorkload::config`]) on `device`; the training set holds `2 · batch`
    /// seeded random images, so that consecutive batches differ.
    ///
    /// # Errors
    /// As [`TrainerStepWorkload::config`]; [`Trainer::with_data`]'s errors.
    pub fn new(side: usize, batch: usize, device: &str) -> Result<Self> {
        let config = Self::config(side, batch, device)?;
        let crop = config.data.crop as usize;
        let train = Arc::new(MemoryImages::new(2 * batch, crop, 2));
        let val = Arc::new(MemoryImages::new(1, crop, 3));
        let trainer = Trainer::with_data(config, train, val)?;
        Ok(Self { trainer, batch })
    }

    /// Images per step.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The trainer being stepped.
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// One step, [`Trainer::step`]; its log holds every term and whether the discriminator
    /// was updated.
    ///
    /// # Errors
    /// As [`Trainer::step`].
    pub fn step(&mut self) -> Result<StepLog> {
        self.trainer.step()
    }
}

/// Seeded random images held in memory: `[3, side, side]` values of N(0.5, 0.2²) clamped to
/// [0, 1].
struct MemoryImages {
    images: Vec<Vec<f32>>,
    side: usize,
    seed: u64,
}

impl MemoryImages {
    fn new(n: usize, side: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let images = (0..n)
            .map(|_| {
                (0..3 * side * side)
                    .map(|_| (0.5 + 0.2 * rng.normal()).clamp(0.0, 1.0) as f32)
                    .collect()
            })
            .collect();
        Self { images, side, seed }
    }
}

impl Dataset for MemoryImages {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        [3, self.side, self.side]
    }

    fn classes(&self) -> Option<&[String]> {
        None
    }

    fn get(&self, index: usize, _rng: &mut Rng) -> deepsim_data::Result<Option<Sample>> {
        let image = self.images.get(index).ok_or_else(|| {
            deepsim_data::Error::InvalidArgument(format!(
                "in-memory images: index {index}, there are {}",
                self.images.len()
            ))
        })?;
        Ok(Some(Sample { image: image.clone(), label: None }))
    }

    fn is_deterministic(&self) -> bool {
        true
    }

    fn fingerprint(&self) -> String {
        format!("memory-{}x{}-seed{}", self.images.len(), self.side, self.seed)
    }

    fn describe(&self, index: usize) -> String {
        format!("in-memory image {index}")
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

    #[test]
    fn the_trainer_step_lowers_its_reconstruction_terms_and_refuses_bad_sizes() {
        let mut w = TrainerStepWorkload::new(64, 2, "cpu").unwrap();
        assert_eq!(w.batch(), 2);
        assert_eq!(w.trainer().config().generator.preset, crate::GeneratorPreset::Paper64);
        let first = w.step().unwrap();
        let mut last = first.clone();
        for _ in 0..4 {
            last = w.step().unwrap();
        }
        assert_eq!(last.step, 5);
        // Every term of the paper's objective and the discriminator's loss are there.
        for term in ["feat", "img", "adv", "discr", "total"] {
            assert!(last.terms[term].is_finite(), "{term}: {:?}", last.terms);
        }
        assert!(last.discriminator_updated.is_some());
        for term in ["feat", "img"] {
            let (a, b) = (first.terms[term], last.terms[term]);
            assert!(b < a, "{term}: {a} → {b}");
        }
        let err = TrainerStepWorkload::new(128, 2, "cpu").err().unwrap().to_string();
        assert!(err.contains("side 128"), "{err}");
        let err = TrainerStepWorkload::new(64, 0, "cpu").err().unwrap().to_string();
        assert!(err.contains("batch 0"), "{err}");
    }
}
