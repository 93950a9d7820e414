//! The variational autoencoder of DeePSiM (Dosovitskiy & Brox 2016, §4.2): an encoder shaped
//! like AlexNet up to fc6 predicting μ and log σ², the reparameterization z = μ + σ ⊙ ε, and
//! the Table 1 generator as decoder; samples come from z ~ N(0, I).

use candle::{Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use deepsim_kernels::{max_pool2d, MaxPool2dConfig};

use crate::error::{Error, Result};
use crate::generator::{Generator, GeneratorConfig, GeneratorInput};
use crate::layers::{linear, scaled, Conv, Dense};

/// One encoder convolution (ReLU after it), optionally followed by AlexNet's 3×3/2 max-pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConv {
    /// Output channels.
    pub out: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub padding: usize,
    /// A 3×3, stride-2 max-pool follows.
    pub pool: bool,
}

/// The VAE's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    /// Side of the (square) input images.
    pub input: usize,
    /// The encoder's convolutions.
    pub convs: Vec<EncoderConv>,
    /// Latent dimension: μ and log σ² each come from the flattened last map through one fully
    /// connected layer of this width (the paper: AlexNet's fc6, 4096).
    pub latent: usize,
    /// The decoder; its input must be `GeneratorInput::Vector(latent)`.
    pub decoder: GeneratorConfig,
}

const fn conv(out: usize, kernel: usize, stride: usize, padding: usize, pool: bool) -> EncoderConv {
    EncoderConv { out, kernel, stride, padding, pool }
}

impl VaeConfig {
    /// The paper's VAE: torchvision AlexNet's conv1–conv5 and pools on 227×227 crops, μ and
    /// log σ² each through an fc6-shaped layer (9216 → 4096), the Table 1 decoder from 4096.
    /// Variable names follow torchvision (`encoder.features.0`, …, `encoder.mu` takes
    /// `classifier.1`), so the encoder can start from AlexNet's weights
    /// ([`Vae::init_encoder_from`]).
    pub fn paper() -> Self {
        Self {
            input: 227,
            convs: vec![
                conv(64, 11, 4, 2, true),
                conv(192, 5, 1, 2, true),
                conv(384, 3, 1, 1, false),
                conv(256, 3, 1, 1, false),
                conv(256, 3, 1, 1, true),
            ],
            latent: 4096,
            decoder: GeneratorConfig::paper_vector(4096),
        }
    }

    /// A CPU preset on 64×64 images at width multiplier `width`, latent `latent`.
    pub fn cpu_64(latent: usize, width: f64) -> Self {
        let c = |n: usize| scaled(n, width);
        Self {
            input: 64,
            convs: vec![
                conv(c(64), 5, 2, 2, false),
                conv(c(128), 5, 2, 2, false),
                conv(c(256), 3, 2, 1, false),
                conv(c(256), 3, 2, 1, false),
            ],
            latent,
            decoder: GeneratorConfig::cpu_64(latent, width),
        }
    }

    /// (channels, side) of the encoder's last map.
    fn encoded(&self) -> (usize, usize) {
        let mut side = self.input;
        let mut c = 3;
        for l in &self.convs {
            side = (side + 2 * l.padding).saturating_sub(l.kernel) / l.stride + 1;
            if l.pool {
                side = side.saturating_sub(3) / 2 + 1;
            }
            c = l.out;
        }
        (c, side)
    }

    /// The number of trainable parameters, from the layer lists.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        let mut c = 3;
        for l in &self.convs {
            n += c * l.out * l.kernel * l.kernel + l.out;
            c = l.out;
        }
        let (c, side) = self.encoded();
        let flat = c * side * side;
        n + 2 * (flat * self.latent + self.latent) + self.decoder.param_count()
    }
}

/// The VAE: encoder, reparameterization, decoder.
pub struct Vae {
    cfg: VaeConfig,
    convs: Vec<Conv>,
    mu: Dense,
    log_var: Dense,
    decoder: Generator,
}

/// What one pass of the VAE produces.
#[derive(Clone, Debug)]
pub struct VaeOutput {
    /// The reconstruction `[N, 3, S, S]`.
    pub reconstruction: Tensor,
    /// μ `[N, latent]`.
    pub mu: Tensor,
    /// log σ² `[N, latent]`.
    pub log_var: Tensor,
}

impl Vae {
    /// Builds the VAE; variables `encoder.features.N`, `encoder.mu`, `encoder.log_var`,
    /// `decoder.…`.
    ///
    /// # Errors
    /// A decoder whose input is not the latent vector, an input too small for the encoder, or
    /// loaded variables of other shapes.
    pub fn new(cfg: VaeConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.decoder.input != GeneratorInput::Vector(cfg.latent) {
            return Err(Error::Config {
                what: "VaeConfig",
                reason: format!(
                    "the decoder takes {:?}, the latent is {}",
                    cfg.decoder.input, cfg.latent
                ),
            });
        }
        let (c_last, side) = cfg.encoded();
        if side == 0 {
            return Err(Error::Config {
                what: "VaeConfig",
                reason: format!("input {} is too small", cfg.input),
            });
        }
        let enc = vb.pp("encoder");
        let mut convs = Vec::new();
        let mut c = 3;
        let mut index = 0;
        for l in &cfg.convs {
            // torchvision numbering: conv, ReLU, (pool) → indices advance by 2 or 3.
            let vb = enc.pp(format!("features.{index}"));
            convs.push(Conv::new(c, l.out, l.kernel, l.stride, l.padding, 0.0, vb)?);
            index += if l.pool { 3 } else { 2 };
            c = l.out;
        }
        let flat = c_last * side * side;
        let mu = linear(flat, cfg.latent, 1.0, enc.pp("mu"))?;
        let log_var = linear(flat, cfg.latent, 1.0, enc.pp("log_var"))?;
        let decoder = Generator::new(cfg.decoder.clone(), vb.pp("decoder"))?;
        Ok(Self { cfg, convs, mu, log_var, decoder })
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Copies AlexNet weights into the encoder's variables in `vars`: torchvision keys
    /// `features.N.{weight,bias}` for the convolutions and `classifier.1.{weight,bias}` (fc6)
    /// for μ, as the paper initializes its encoder when AlexNet is the comparator. Returns how
    /// many tensors were copied.
    ///
    /// # Errors
    /// A tensor whose shape differs from the variable it would set.
    pub fn init_encoder_from(
        vars: &mut VarMap,
        weights: &std::collections::HashMap<String, Tensor>,
    ) -> Result<usize> {
        let mut copied = 0;
        for (key, t) in weights {
            let target = match key.strip_prefix("classifier.1.") {
                Some(rest) => format!("encoder.mu.{rest}"),
                None if key.starts_with("features.") => format!("encoder.{key}"),
                None => continue,
            };
            if vars.data().lock().map_err(|_| poisoned())?.contains_key(&target) {
                vars.set_one(&target, t).map_err(|e| Error::Config {
                    what: "Vae::init_encoder_from",
                    reason: format!("`{key}` → `{target}`: {e}"),
                })?;
                copied += 1;
            }
        }
        Ok(copied)
    }

    /// μ and log σ² of each image.
    ///
    /// # Shapes
    /// `x`: `[N, 3, input, input]` → two `[N, latent]`.
    ///
    /// # Errors
    /// `x` of another shape.
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let s = self.cfg.input;
        if x.dims().len() != 4 || x.dims()[1..] != [3, s, s] {
            return Err(Error::Input {
                model: "Vae",
                arg: "x",
                shape: x.dims().to_vec(),
                reason: format!("expected [N, 3, {s}, {s}]"),
            });
        }
        let pool = MaxPool2dConfig::square(3, 2);
        let mut h = x.clone();
        for (conv, l) in self.convs.iter().zip(&self.cfg.convs) {
            h = conv.forward_leaky_relu(&h, 0.0)?;
            if l.pool {
                h = max_pool2d(&h, &pool)?;
            }
        }
        let h = h.flatten_from(1)?;
        Ok((self.mu.forward(&h)?, self.log_var.forward(&h)?))
    }

    /// Encodes, samples z = μ + σ ⊙ ε with ε ~ N(0, I), decodes.
    ///
    /// # Errors
    /// As [`Vae::encode`].
    pub fn forward(&self, x: &Tensor) -> Result<VaeOutput> {
        let (mu, log_var) = self.encode(x)?;
        let eps = mu.randn_like(0.0, 1.0)?;
        self.forward_encoded(mu, log_var, &eps)
    }

    /// [`Vae::forward`] with the noise ε given (`[N, latent]`), for runs that must repeat
    /// exactly: z = μ + σ ⊙ ε.
    ///
    /// # Errors
    /// As [`Vae::encode`]; ε of another shape than μ.
    pub fn forward_with_noise(&self, x: &Tensor, eps: &Tensor) -> Result<VaeOutput> {
        let (mu, log_var) = self.encode(x)?;
        if eps.dims() != mu.dims() {
            return Err(Error::Input {
                model: "Vae",
                arg: "eps",
                shape: eps.dims().to_vec(),
                reason: format!("expected μ's shape {:?}", mu.dims()),
            });
        }
        self.forward_encoded(mu, log_var, eps)
    }

    fn forward_encoded(&self, mu: Tensor, log_var: Tensor, eps: &Tensor) -> Result<VaeOutput> {
        let z = (&mu + ((&log_var * 0.5)?.exp()? * eps)?)?;
        Ok(VaeOutput { reconstruction: self.decoder.forward(&z)?, mu, log_var })
    }

    /// The decoder alone: images from latent codes `[N, latent]`.
    ///
    /// # Errors
    /// `z` of another width.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decoder.forward(z)
    }

    /// `n` samples from the prior: z ~ N(0, I) through the decoder.
    ///
    /// # Errors
    /// From candle.
    pub fn sample(&self, n: usize, like: &Tensor) -> Result<Tensor> {
        let z = Tensor::randn(0f32, 1.0, (n, self.cfg.latent), like.device())?
            .to_dtype(like.dtype())?;
        self.decoder.forward(&z)
    }
}

fn poisoned() -> Error {
    Error::Config { what: "VarMap", reason: "poisoned by a panic in another thread".into() }
}
