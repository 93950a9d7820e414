//! The networks DeePSiM trains (Dosovitskiy & Brox, *Generating Images with Perceptual
//! Similarity Metrics based on Deep Networks*, NIPS 2016), for candle: the up-convolutional
//! [`Generator`] of the paper's Table 1 (from feature vectors or maps), the [`Discriminator`],
//! the variational autoencoder [`Vae`], the [`Restorer`] of super-resolution and restoration (it takes
//! the degraded image), and their layers ([`UpConv`], the paper's bed-of-nails up-convolution, run as the
//! equivalent transposed convolution). Presets give the paper's sizes (for a GPU) and 64×64 /
//! 128×128 sizes with a width multiplier that train in minutes on a CPU; every config reports
//! its parameter count from its layer list.
//!
//! Variables live in a `candle_nn::VarMap` (save and load with `VarMap::save` / `load`,
//! safetensors); weights are He-initialized for the leaky ReLU (normal, std
//! `√(2 / ((1 + α²)·fan_in))`), biases start at 0.
//!
//! ```
//! use candle::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use deepsim_models::{Generator, GeneratorConfig};
//!
//! # fn main() -> deepsim_models::Result<()> {
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! let g = Generator::new(GeneratorConfig::cpu_64(256, 0.25), vb)?;
//! let y = Tensor::zeros((2, 256), DType::F32, &Device::Cpu)?;
//! assert_eq!(g.forward(&y)?.dims(), &[2, 3, 64, 64]);
//! # Ok(())
//! # }
//! ```

mod discriminator;
mod error;
mod generator;
mod layers;
mod restorer;
mod vae;

pub use discriminator::{Discriminator, DiscriminatorConfig, DropoutMasks};
pub use error::{Error, Result};
pub use generator::{Generator, GeneratorConfig, GeneratorInput, OutputInit, TowerLayer};
pub use layers::{leaky_relu, Conv, Dense, UpConv};
pub use restorer::{Restorer, RestorerConfig};
pub use vae::{EncoderConv, Vae, VaeConfig, VaeOutput};
