//! The trained networks of a run, usable without its data: a feature inverter (frozen encoder
//! E and generator G) or a VAE, built from a configuration or loaded from a checkpoint.

use std::path::Path;
use std::sync::Arc;

use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use deepsim_comparators::{by_name, Comparator, Tap};
use deepsim_data::Rng;
use deepsim_models::{Generator, GeneratorConfig, GeneratorInput, Vae, VaeConfig};

use crate::config::{parse_device, GeneratorPreset, Task, TrainConfig};
use crate::error::{Error, Result};
use crate::init::seeded;

/// The checkpoint format this crate writes and reads.
pub(crate) const FORMAT: &str = "deepsim-train checkpoint v1";

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

pub(crate) enum Kind {
    Invert(Inversion),
    Vae(Vae),
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
                    GeneratorPreset::Cpu128 | GeneratorPreset::CpuMap => {
                        return Err(Error::Config(
                            "generator.preset: task vae has the presets cpu_64 and paper".into(),
                        ))
                    }
                };
                let (vae, vars) = seeded(seed, device, |vb| Ok(Vae::new(vcfg, vb.pp("vae"))?))?;
                (Kind::Vae(vae), vars)
            }
        };
        Ok(Model { config: config.clone(), device: device.clone(), kind, vars })
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
        let (bytes, mut config) = read_checkpoint(checkpoint, bad)?;
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
        let (bytes, source) = read_checkpoint(checkpoint, bad)?;
        let inverted = |c: &TrainConfig| match (c.run.task, &c.encoder) {
            (Task::Vae, _) => "a VAE".to_owned(),
            (Task::Invert, Some(e)) => format!("an inverter of {} {}", e.network, e.tap),
            (Task::Invert, None) => "an inverter".to_owned(),
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

    /// The encoder whose features an inverter inverts, and its tap (`None` for a VAE).
    pub fn encoder(&self) -> Option<(&Arc<dyn Comparator + Send + Sync>, Tap)> {
        match &self.kind {
            Kind::Invert(inv) => Some((&inv.encoder, inv.tap)),
            Kind::Vae(_) => None,
        }
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
        }
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

/// A checkpoint's bytes and the configuration stored in it, after checking its format; a
/// file that cannot be read is [`Error::Io`], a bad one `bad(reason)`.
fn read_checkpoint(path: &Path, bad: impl Fn(String) -> Error) -> Result<(Vec<u8>, TrainConfig)> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let meta = checkpoint_metadata(&bytes).map_err(&bad)?;
    let text = meta.get("config").ok_or_else(|| bad("no configuration stored".into()))?;
    let config = toml::from_str(text)
        .map_err(|e| bad(format!("its stored configuration does not parse: {e}")))?;
    Ok((bytes, config))
}

/// The metadata key of the SHA-256 of a checkpoint's tensor data (the bytes after the header).
pub(crate) const DATA_SHA256: &str = "data_sha256";
/// What the checksum is written as before it is known: as long as the hex digest, and no
/// other metadata value holds it.
pub(crate) const CHECKSUM_PENDING: &str =
    "????????????????????????????????????????????????????????????????";
/// The start of the reason given for a checkpoint whose data does not match its checksum.
pub(crate) const DAMAGED: &str = "damaged";

/// The lowercase hex SHA-256 of the tensor data of a safetensors file (after its header).
fn data_sha256(bytes: &[u8]) -> std::result::Result<String, String> {
    use sha2::Digest;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("corrupt or truncated (no header)")?;
    let data = bytes.get(8 + n..).ok_or("corrupt or truncated (header beyond the end)")?;
    Ok(sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect())
}

/// Replaces the [`CHECKSUM_PENDING`] value in a serialized checkpoint's header by the
/// SHA-256 of its tensor data (same length: the header keeps its size).
pub(crate) fn seal_checksum(bytes: &mut [u8]) -> std::result::Result<(), String> {
    let digest = data_sha256(bytes)?;
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = &mut bytes[8..8 + n];
    let at = header
        .windows(CHECKSUM_PENDING.len())
        .position(|w| w == CHECKSUM_PENDING.as_bytes())
        .ok_or("the checksum's place is missing from the header")?;
    header[at..at + digest.len()].copy_from_slice(digest.as_bytes());
    Ok(())
}

/// The metadata of a checkpoint, after checking its format and, where it carries one (every
/// checkpoint written since checksums were added), the checksum of its tensor data: a flipped
/// bit or a zeroed tail is refused instead of resuming with other weights.
pub(crate) fn checkpoint_metadata(
    bytes: &[u8],
) -> std::result::Result<std::collections::HashMap<String, String>, String> {
    if let Some(kind) = deepsim_comparators::weights::foreign_format(bytes) {
        return Err(format!("{kind}, not a checkpoint written by `deepsim train`"));
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("corrupt or truncated ({e})"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(format!("not a deepsim-train checkpoint (format {:?})", meta.get("format")));
    }
    if let Some(expected) = meta.get(DATA_SHA256) {
        let found = data_sha256(bytes)?;
        if &found != expected {
            return Err(format!(
                "{DAMAGED}: its tensor data does not match the checksum written with it \
                 (SHA-256 {found}, written {expected})"
            ));
        }
    }
    Ok(meta)
}

/// Sets every variable of `map` from the tensor of its name, checking shapes.
pub(crate) fn set_vars(
    map: &VarMap,
    tensors: &std::collections::HashMap<String, Tensor>,
) -> std::result::Result<(), String> {
    for (name, var) in map.data().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let t = tensors.get(name).ok_or_else(|| format!("no tensor {name}"))?;
        if t.dims() != var.dims() {
            return Err(format!(
                "{name} has shape {:?}, the model's is {:?}",
                t.dims(),
                var.dims()
            ));
        }
        let t = t.to_dtype(var.dtype()).map_err(|e| format!("{name}: {e}"))?;
        var.set(&t).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
