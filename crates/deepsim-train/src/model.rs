//! The trained networks of a run, usable without its data: a feature inverter (frozen encoder
//! E and generator G) or a VAE, built from a configuration or loaded from a checkpoint.

use std::path::Path;
use std::sync::Arc;

use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use deepsim_comparators::{by_name, Comparator, Tap};
use deepsim_data::Rng;
use deepsim_models::{
    Generator, GeneratorConfig, GeneratorInput, Restorer, RestorerConfig, Vae, VaeConfig,
};

use crate::checkpoint::{read_checkpoint, set_vars, Checkpoint};
use crate::config::{parse_device, GeneratorPreset, Task, TrainConfig};
use crate::degrade::Degradation;
use crate::error::{Error, Result};
use crate::init::seeded;

/// A frozen encoder and the generator that inverts it.
pub(crate) struct Inversion {
    pub encoder: Arc<dyn Comparator + Send + Sync>,
    pub tap: Tap,
    /// Elements of one image's features at the tap (the discriminator's condition width).
    pub dim: usize,
    /// The generator takes the tap's map as it is (the paper's conv5 generator), not flattened.
    pub map_input: bool,
    pub generator: Generator,
}

/// What [`Model::forward_train`] gives.
pub(crate) struct TrainingForward {
    /// G's output before the clamp, with its graph.
    pub raw: Tensor,
    /// The encoder's features of the batch at the tap (an inverter): C(x) when the comparator
    /// is the encoder at that tap.
    pub target_features: Option<Tensor>,
    /// The generator's input flattened, `[N, dim]` (an inverter): the discriminator's
    /// condition.
    pub code: Option<Tensor>,
    /// The VAE's (μ, log σ²).
    pub posterior: Option<(Tensor, Tensor)>,
    /// A restorer's input, the degraded batch y (the cycle term compares with it).
    pub degraded: Option<Tensor>,
}

/// A restorer and the degradation it undoes.
pub(crate) struct Restoration {
    pub restorer: Restorer,
    pub degradation: Degradation,
}

/// Noise of the degradation applied to images outside training (sample grids, `encode`,
/// evaluations): drawn from this stream of the run's seed, the same for every call.
const EVAL_NOISE: u64 = 0x4556_414c_4e4f_4953;

pub(crate) enum Kind {
    Invert(Inversion),
    Vae(Vae),
    Restore(Restoration),
}

/// A run's generator and what feeds it: `encode` gives the code the generator takes (the
/// encoder's features, or the VAE's μ) and `decode` turns codes into images.
pub struct Model {
    config: TrainConfig,
    device: Device,
    pub(crate) kind: Kind,
    /// The trained variables (generator; the VAE's encoder and decoder).
    pub(crate) vars: VarMap,
}

pub(crate) fn tap_named(name: &str, what: &str) -> Result<Tap> {
    Tap::from_name(name).ok_or_else(|| Error::Config(format!("{what}: unknown tap {name:?}")))
}

impl Model {
    /// The networks of `config`, initialized from `run.seed` on `device`.
    ///
    /// # Errors
    /// Unknown networks or taps, missing weights, sizes no preset fits.
    pub(crate) fn build(config: &TrainConfig, device: &Device) -> Result<Self> {
        let seed = config.run.seed;
        let side = config.data.crop as usize;
        let width = config.generator.width;
        let (kind, vars) = match config.run.task {
            Task::Invert => {
                let enc = config.encoder.as_ref().ok_or_else(|| {
                    Error::Config("encoder: task invert needs an [encoder] section".into())
                })?;
                let encoder: Arc<dyn Comparator + Send + Sync> =
                    Arc::from(by_name(&enc.network, enc.weights.as_deref(), device)?);
                let tap = tap_named(&enc.tap, "encoder.tap")?;
                let probe = Tensor::zeros((1, 3, side, side), DType::F32, device)?;
                let shape = encoder.features(&probe, &[tap])?[0].dims().to_vec();
                let dim: usize = shape[1..].iter().product();
                let gcfg = generator_config(config.generator.preset, &shape, side, width)?;
                let map_input = matches!(gcfg.input, GeneratorInput::Map { .. });
                let (generator, vars) =
                    seeded(seed, device, |vb| Ok(Generator::new(gcfg, vb.pp("generator"))?))?;
                (Kind::Invert(Inversion { encoder, tap, dim, map_input, generator }), vars)
            }
            Task::Vae => {
                let latent = config
                    .vae
                    .as_ref()
                    .ok_or_else(|| Error::Config("vae: task vae needs a [vae] section".into()))?
                    .latent;
                let vcfg = match config.generator.preset {
                    GeneratorPreset::Cpu64 => VaeConfig::cpu_64(latent, width),
                    GeneratorPreset::Paper => VaeConfig::paper(),
                    GeneratorPreset::Cpu128
                    | GeneratorPreset::Paper64
                    | GeneratorPreset::CpuMap
                    | GeneratorPreset::Restorer => {
                        return Err(Error::Config(
                            "generator.preset: task vae has the presets cpu_64 and paper".into(),
                        ))
                    }
                };
                let (vae, vars) = seeded(seed, device, |vb| Ok(Vae::new(vcfg, vb.pp("vae"))?))?;
                (Kind::Vae(vae), vars)
            }
            Task::Superres | Task::Restore => {
                let r = config.restore.as_ref().ok_or_else(|| {
                    Error::Config("restore: this task needs a [restore] section".into())
                })?;
                let degradation = Degradation::from_section(r);
                let rcfg = RestorerConfig::cpu(degradation.scale, width)?;
                let (restorer, vars) =
                    seeded(seed, device, |vb| Ok(Restorer::new(rcfg, vb.pp("restorer"))?))?;
                (Kind::Restore(Restoration { restorer, degradation }), vars)
            }
        };
        Ok(Model { config: config.clone(), device: device.clone(), kind, vars })
    }

    /// The networks of `config` as `run.seed` initializes them, untrained, on `run.device`:
    /// the baseline a trained code is judged against (the linear probe's random encoder).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration; as [`Model::load`] otherwise.
    pub fn untrained(config: &TrainConfig) -> Result<Self> {
        config.validate()?;
        Model::build(config, &parse_device(&config.run.device)?)
    }

    /// The model saved in a checkpoint written by [`crate::Trainer`], on `device` (default:
    /// the device it was trained on). Needs no training data; the encoder's weights come from
    /// where the run found them.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a missing, corrupt or foreign file, or one whose tensors do
    /// not fit the configuration stored in it.
    pub fn load(checkpoint: &Path, device: Option<&str>) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint { path: checkpoint.to_path_buf(), reason };
        let Checkpoint { bytes, mut config, .. } = read_checkpoint(checkpoint, bad)?;
        if let Some(d) = device {
            config.run.device = d.to_string();
        }
        config.validate()?;
        let device = parse_device(&config.run.device)?;
        let model = Model::build(&config, &device)?;
        model.set_from(&bytes).map_err(bad)?;
        Ok(model)
    }

    /// Sets the trained variables from a checkpoint's bytes, checking names and shapes.
    fn set_from(&self, bytes: &[u8]) -> std::result::Result<(), String> {
        let tensors = candle::safetensors::load_buffer(bytes, &self.device)
            .map_err(|e| format!("corrupt or truncated ({e})"))?;
        set_vars(&self.vars, &tensors)
    }

    /// Sets the trained variables from another run's checkpoint (`run.init`, a warm start),
    /// after checking that the run trained the same task on the same encoder and tap.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file: missing, corrupt, foreign, another task or
    /// encoder, or tensors of other shapes.
    pub(crate) fn warm_start(&self, checkpoint: &Path) -> Result<()> {
        let bad = |reason: String| Error::Checkpoint {
            path: checkpoint.to_path_buf(),
            reason: format!("run.init: {reason}"),
        };
        let Checkpoint { bytes, config: source, .. } = read_checkpoint(checkpoint, bad)?;
        let inverted = |c: &TrainConfig| match (c.run.task, &c.encoder) {
            (Task::Vae, _) => "a VAE".to_owned(),
            (Task::Invert, Some(e)) => format!("an inverter of {} {}", e.network, e.tap),
            (Task::Invert, None) => "an inverter".to_owned(),
            (Task::Superres | Task::Restore, _) => describe(c),
        };
        if inverted(&source) != inverted(&self.config) {
            return Err(bad(format!(
                "that run trained {}, this one trains {} (task, encoder and tap must match)",
                inverted(&source),
                inverted(&self.config)
            )));
        }
        self.set_from(&bytes).map_err(bad)
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Its device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The side of the square images it takes and makes.
    pub fn side(&self) -> usize {
        self.config.data.crop as usize
    }

    /// Whether it is a VAE (which can [`Model::sample`]).
    pub fn is_vae(&self) -> bool {
        matches!(self.kind, Kind::Vae(_))
    }

    /// The trained variables, by name.
    pub fn vars(&self) -> &VarMap {
        &self.vars
    }

    /// The encoder whose features an inverter inverts, and its tap (`None` for a VAE or a
    /// restorer).
    pub fn encoder(&self) -> Option<(&Arc<dyn Comparator + Send + Sync>, Tap)> {
        match &self.kind {
            Kind::Invert(inv) => Some((&inv.encoder, inv.tap)),
            Kind::Vae(_) | Kind::Restore(_) => None,
        }
    }

    /// What it is, in words: `inverter of alexnet conv5`, `VAE, latent 64`,
    /// `restorer (superres: ×4 bicubic)`.
    pub fn describe(&self) -> String {
        describe(&self.config)
    }

    /// The degradation a restorer undoes (`None` for an inverter or a VAE).
    pub fn degradation(&self) -> Option<&Degradation> {
        match &self.kind {
            Kind::Restore(r) => Some(&r.degradation),
            _ => None,
        }
    }

    /// A restorer's baseline for clean images `x`: the degraded images' bicubic enlargement
    /// (super-resolution) or the degraded images themselves (restoration), degraded as
    /// [`Model::encode`] does. `None` for an inverter or a VAE.
    ///
    /// # Errors
    /// As [`Model::encode`].
    pub fn baseline(&self, x: &Tensor) -> Result<Option<Tensor>> {
        match &self.kind {
            Kind::Restore(r) => Ok(Some(r.degradation.estimate(&self.encode(x)?)?)),
            _ => Ok(None),
        }
    }

    /// A restorer's output for degraded images `y` (`[N, 3, H, W]` in [0, 1], any size; the
    /// output is `scale` times larger), clamped to [0, 1].
    ///
    /// # Errors
    /// [`Error::Config`] for an inverter or a VAE; tensor errors.
    pub fn restore(&self, y: &Tensor) -> Result<Tensor> {
        let Kind::Restore(_) = &self.kind else {
            return Err(Error::Config(format!(
                "restoring images needs a checkpoint of task superres or restore; this one is \
                 {}",
                self.describe()
            )));
        };
        self.decode(y)
    }

    /// The code the generator takes for images `x` (`[N, 3, side, side]` in [0, 1]): the
    /// encoder's features at its tap (a map for the paper's conv5 generator, else `[N, dim]`),
    /// or the VAE's posterior mean μ. No graph.
    ///
    /// # Errors
    /// Images of another size or range.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_device(&self.device)?;
        match &self.kind {
            Kind::Invert(inv) => {
                let map = inv.encoder.features(&x, &[inv.tap])?.remove(0).detach();
                Ok(if inv.map_input { map } else { map.flatten_from(1)? })
            }
            Kind::Vae(vae) => Ok(vae.encode(&x)?.0.detach()),
            Kind::Restore(r) => {
                let mut rng = Rng::derive(self.config.run.seed, &[EVAL_NOISE]);
                r.degradation.apply(&x, &mut rng)
            }
        }
    }

    /// The training pass on a batch `x`: the generator's raw (unclamped) output with its
    /// graph, and what the losses need beside it. For an inverter, `cached` may hold the
    /// encoder's features of `x` at the tap (from a feature cache), which are used instead of
    /// running the encoder; the VAE draws its reparameterization noise from `noise`.
    ///
    /// # Errors
    /// Images or cached features of another shape; the encoder's input contract.
    pub(crate) fn forward_train(
        &self,
        x: &Tensor,
        cached: Option<&Tensor>,
        noise: &mut Rng,
    ) -> Result<TrainingForward> {
        match &self.kind {
            Kind::Invert(inv) => {
                let map = match cached {
                    Some(f) => f.to_device(&self.device)?.detach(),
                    None => inv.encoder.features(x, &[inv.tap])?.remove(0).detach(),
                };
                let code = map.flatten_from(1)?;
                if code.dim(1)? != inv.dim {
                    return Err(Error::Config(format!(
                        "cached features of {:?} per image, the encoder's {} has {} elements",
                        &map.dims()[1..],
                        inv.tap.name(),
                        inv.dim
                    )));
                }
                let raw = inv.generator.forward(if inv.map_input { &map } else { &code })?;
                Ok(TrainingForward {
                    raw,
                    target_features: Some(map),
                    code: Some(code),
                    posterior: None,
                    degraded: None,
                })
            }
            Kind::Vae(vae) => {
                let latent = vae.config().latent;
                let eps = standard_normal(noise, (x.dim(0)?, latent), &self.device)?;
                let out = vae.forward_with_noise(x, &eps)?;
                Ok(TrainingForward {
                    raw: out.reconstruction,
                    target_features: None,
                    code: None,
                    posterior: Some((out.mu, out.log_var)),
                    degraded: None,
                })
            }
            Kind::Restore(r) => {
                let y = r.degradation.apply(x, noise)?;
                let raw = r.restorer.forward(&y, &r.degradation.estimate(&y)?)?;
                Ok(TrainingForward {
                    raw,
                    target_features: None,
                    code: None,
                    posterior: None,
                    degraded: Some(y),
                })
            }
        }
    }

    /// Elements of one image's code (an inverter's features at its tap; `None` for a VAE,
    /// whose discriminator is never conditioned).
    pub(crate) fn code_dim(&self) -> Option<usize> {
        match &self.kind {
            Kind::Invert(inv) => Some(inv.dim),
            Kind::Vae(_) | Kind::Restore(_) => None,
        }
    }

    /// The weight of the generator's last layer (the decoder's, for a VAE): where the adaptive
    /// adversarial weight compares the two gradients.
    ///
    /// # Errors
    /// [`Error::Config`] when no variable has the expected name (a generator without a tower).
    pub(crate) fn last_layer(&self) -> Result<candle::Var> {
        let prefix = match self.kind {
            Kind::Invert(_) => "generator.tower.",
            Kind::Vae(_) => "vae.decoder.tower.",
            // One named last layer, not a numbered tower.
            Kind::Restore(_) => {
                let vars = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
                return vars.get("restorer.tail.weight").cloned().ok_or_else(|| {
                    Error::Config("the restorer has no variable restorer.tail.weight".into())
                });
            }
        };
        let vars = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
        vars.iter()
            .filter_map(|(name, var)| {
                let index =
                    name.strip_prefix(prefix)?.strip_suffix(".weight")?.parse::<usize>().ok()?;
                Some((index, var))
            })
            .max_by_key(|(index, _)| *index)
            .map(|(_, var)| var.clone())
            .ok_or_else(|| Error::Config(format!("the generator has no variable {prefix}N.weight")))
    }

    /// Images (clamped to [0, 1]) from codes shaped as [`Model::encode`] returns them.
    ///
    /// # Errors
    /// Codes of another shape.
    pub fn decode(&self, code: &Tensor) -> Result<Tensor> {
        let code = code.to_device(&self.device)?;
        let raw = match &self.kind {
            Kind::Invert(inv) => inv.generator.forward(&code)?,
            Kind::Vae(vae) => vae.decode(&code)?,
            Kind::Restore(r) => r.restorer.forward(&code, &r.degradation.estimate(&code)?)?,
        };
        Ok(raw.detach().clamp(0f32, 1f32)?)
    }

    /// `decode(encode(x))`.
    ///
    /// # Errors
    /// As [`Model::encode`].
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(x)?)
    }

    /// `n` images decoded from the VAE's prior, z ~ N(0, I) drawn from `rng`, unclamped and
    /// with their graph (the diversity penalty's samples).
    ///
    /// # Errors
    /// [`Error::Config`] for an inverter or a restorer.
    pub(crate) fn prior_samples_train(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let Kind::Vae(vae) = &self.kind else {
            return Err(Error::Config("diversity: needs a VAE (task vae)".into()));
        };
        let z = standard_normal(rng, (n, vae.config().latent), &self.device)?;
        Ok(vae.decode(&z)?)
    }

    /// `n` images from the VAE's prior, z ~ N(0, I) drawn from `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] for an inverter, which has no prior.
    pub fn sample(&self, n: usize, seed: u64) -> Result<Tensor> {
        let Kind::Vae(vae) = &self.kind else {
            return Err(Error::Config(
                "sampling needs a VAE checkpoint (run.task = \"vae\"); this one is an inverter"
                    .into(),
            ));
        };
        let latent = vae.config().latent;
        self.decode(&standard_normal(&mut Rng::new(seed), (n, latent), &self.device)?)
    }
}

/// What a configuration trains, in words (see [`Model::describe`]).
fn describe(c: &TrainConfig) -> String {
    match (c.run.task, &c.encoder, &c.vae, &c.restore) {
        (Task::Invert, Some(e), _, _) => format!("inverter of {} {}", e.network, e.tap),
        (Task::Vae, _, Some(v), _) => format!("VAE, latent {}", v.latent),
        (task @ (Task::Superres | Task::Restore), _, _, Some(r)) => {
            format!("restorer ({}: {})", task.name(), Degradation::from_section(r).describe())
        }
        (task, ..) => task.name().to_owned(),
    }
}

/// The generator for an encoder output of `shape` (`[1, dim]` or `[1, C, S, S]`): a map
/// input where the preset has one for the map's size (the paper's 256×6×6 pool5; a CPU map of
/// side 4, 7 or 8; `cpu_map`'s map whose side divides the image side `side` by a power of two),
/// otherwise the flattened vector through fully connected layers.
fn generator_config(
    preset: GeneratorPreset,
    shape: &[usize],
    side: usize,
    width: f64,
) -> Result<GeneratorConfig> {
    let dim: usize = shape[1..].iter().product();
    let map = match *shape {
        [_, c, h, w] if h == w => Some((c, h)),
        _ => None,
    };
    Ok(match (preset, map) {
        (GeneratorPreset::Cpu64, Some((c, s))) if GeneratorConfig::cpu_64_takes_map(s) => {
            GeneratorConfig::cpu_64_map(c, s, width)?
        }
        (GeneratorPreset::Cpu64, _) => GeneratorConfig::cpu_64(dim, width),
        (GeneratorPreset::Cpu128, _) => GeneratorConfig::cpu_128(dim, width),
        (GeneratorPreset::CpuMap, Some((c, s))) if GeneratorConfig::cpu_map_takes(s, side) => {
            GeneratorConfig::cpu_map(c, s, side, width)?
        }
        (GeneratorPreset::CpuMap, _) => {
            return Err(Error::Config(format!(
                "generator.preset cpu_map: the encoder's output {:?} is not a square map whose \
                 side divides data.crop ({side}) by 2, 4, 8, …; choose a tap with such a map, \
                 or the preset cpu_64 / cpu_128",
                &shape[1..]
            )))
        }
        (GeneratorPreset::Paper, Some(m)) => {
            let paper = GeneratorConfig::paper_conv5();
            match paper.input {
                GeneratorInput::Map { channels, size } if (channels, size) == m => paper,
                _ => GeneratorConfig::paper_vector(dim),
            }
        }
        (GeneratorPreset::Paper, None) => GeneratorConfig::paper_vector(dim),
        // A map is flattened: the 64-pixel tower starts from the fully connected layers.
        (GeneratorPreset::Paper64, _) => GeneratorConfig::paper_vector_64(dim),
        (GeneratorPreset::Restorer, _) => {
            return Err(Error::Config(
                "generator.preset: restorer belongs to the tasks superres and restore".into(),
            ))
        }
    })
}

/// An f32 tensor of `shape` filled with N(0, 1) draws from `rng` in row-major order.
pub(crate) fn standard_normal(
    rng: &mut Rng,
    shape: impl Into<candle::Shape>,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let v: Vec<f32> = (0..shape.elem_count()).map(|_| rng.normal() as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}
