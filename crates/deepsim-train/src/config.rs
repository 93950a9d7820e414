//! Training configurations: TOML files under `configs/`, every field documented here, unknown
//! or invalid fields reported by name.

use std::path::{Path, PathBuf};

use deepsim_losses::{AdaptiveAdversarialWeight, AdversarialKind, FeatureNorm, ImageDistance};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::error::{Error, Result};

/// A whole training run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The run's output, length, seed and device.
    pub run: RunConfig,
    /// The images.
    pub data: DataConfig,
    /// The network whose features are inverted: y = E(x) (task `invert`).
    #[serde(default)]
    pub encoder: Option<EncoderConfig>,
    /// The variational autoencoder's latent (task `vae`).
    #[serde(default)]
    pub vae: Option<VaeSection>,
    /// How the training images are degraded (tasks `superres` and `restore`).
    #[serde(default)]
    pub restore: Option<RestoreSection>,
    /// The generator G(y).
    pub generator: GeneratorSection,
    /// The discriminator (used when `loss.lambda_adv` > 0).
    #[serde(default)]
    pub discriminator: DiscriminatorSection,
    /// The loss and its weights.
    pub loss: LossConfig,
    /// Adam's settings.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Perceptually calibrated augmentation of the training images (the targets x, before
    /// the encoder): none when absent.
    #[serde(default)]
    pub augment: Option<AugmentConfig>,
    /// The diversity penalty on samples of a VAE's prior (task `vae`): none when absent.
    #[serde(default)]
    pub diversity: Option<DiversitySection>,
}

/// `[diversity]`: each step, `samples` images decoded from the VAE's prior (z ~ N(0, I), drawn
/// from the seed and the step) are pushed apart in a comparator's feature space by
/// `lambda · mean_{i<j} exp(−‖C(G(z_i)) − C(G(z_j))‖² / (D·σ²))` (deepsim-losses'
/// `diversity_penalty`, D the features per image): a bounded, perceptual repulsion against
/// samples that all look alike.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiversitySection {
    /// λ_div.
    pub lambda: f64,
    /// The comparator the samples are spread in (a comparator name).
    pub comparator: String,
    /// Its weights (default: the cache, then the shipped copy).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Its tap.
    pub tap: String,
    /// The feature distance (root mean square per element) at which a pair counts as apart
    /// (its penalty e⁻¹).
    #[serde(default = "one")]
    pub sigma: f64,
    /// Prior samples per step (at least 2).
    #[serde(default = "default_diversity_samples")]
    pub samples: usize,
}

fn default_diversity_samples() -> usize {
    8
}

/// What is trained.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Feature inversion (§3): G(E(x)) ≈ x for a frozen encoder E (needs `[encoder]`).
    #[default]
    Invert,
    /// The variational autoencoder (§4.2): encoder and decoder trained together, with the KL
    /// term `loss.lambda_kl` (needs `[vae]`).
    Vae,
    /// Super-resolution: G takes the image shrunk by `restore.scale` (Pillow's anti-aliased
    /// bicubic, rounded to 8 bits, then any noise and JPEG of `[restore]`) and returns it at
    /// full size (needs `[restore]` with `scale` 2, 4 or 8).
    Superres,
    /// Restoration at the same size: G takes the image with the noise and/or JPEG artifacts
    /// of `[restore]` and returns it clean.
    Restore,
}

impl Task {
    /// Whether G takes a degraded image (`superres`, `restore`).
    pub fn restores(self) -> bool {
        matches!(self, Task::Superres | Task::Restore)
    }
}

/// `[restore]`: the degradation G learns to undo (tasks `superres` and `restore`). Noise is
/// drawn afresh every step from the run's seed; validation images get the same degradation
/// with noise from a fixed seed, so that sample grids and evaluations compare like with like.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestoreSection {
    /// Super-resolution factor (task `superres`: 2, 4 or 8; `data.crop` must be a multiple).
    #[serde(default)]
    pub scale: Option<usize>,
    /// Standard deviation of the Gaussian noise added to the degraded image, in 8-bit levels
    /// (0–255; 0: none).
    #[serde(default)]
    pub noise: f64,
    /// Encode the degraded image as a JPEG of this quality (1–100) and decode it (absent:
    /// no JPEG).
    #[serde(default)]
    pub jpeg_quality: Option<u8>,
    /// λ_cycle, the perceptual cycle-consistency term of task `superres`: the output shrunk
    /// again, D(G(y)), against the input y (0: off).
    #[serde(default)]
    pub lambda_cycle: f64,
    /// Where the cycle term compares D(G(y)) with y: `pixels` (mean squared difference),
    /// `lab` (mean squared ΔE76 in CIELAB) or `comparator` (the feature term's distance).
    #[serde(default)]
    pub cycle_space: CycleSpace,
}

/// `restore.cycle_space`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CycleSpace {
    /// Mean squared difference of pixels in [0, 1].
    #[default]
    Pixels,
    /// Mean squared ΔE76 (Euclidean distance in CIELAB).
    Lab,
    /// The feature term's comparator or metric (needs `loss.lambda_feat` > 0).
    Comparator,
}

/// `[vae]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VaeSection {
    /// Latent dimension (the paper: 4096, fc6's width; the `paper` preset requires it).
    pub latent: usize,
}

/// `[run]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `invert` (the default), `vae`, `superres` or `restore`.
    #[serde(default)]
    pub task: Task,
    /// Directory for checkpoints, `metrics.jsonl`, samples and curves (relative paths are
    /// relative to the working directory).
    pub out: PathBuf,
    /// Generator steps to train.
    pub steps: u64,
    /// Seeds the initialization, the data order, crops, flips and dropout.
    #[serde(default)]
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` or `metal`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Write a checkpoint every this many steps (and at the end and on Ctrl-C).
    #[serde(default = "default_every")]
    pub checkpoint_every: u64,
    /// Write a sample grid (validation target | reconstruction) every this many steps.
    #[serde(default = "default_every")]
    pub sample_every: u64,
    /// Validation images in the sample grid.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Start the generator (and a VAE's encoder) from the weights of this checkpoint of
    /// another run instead of the seed's initialization: a warm start, e.g. a DeePSiM run
    /// that begins where an image-loss run of the same networks ended. Adam's moments, the
    /// discriminator, the data order and the step count start afresh. The checkpoint must
    /// come from a run of the same task, encoder and tap and hold tensors of the same shapes.
    #[serde(default)]
    pub init: Option<PathBuf>,
}

/// `[data]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training images (a folder, searched recursively).
    pub train: PathBuf,
    /// Validation images, for sample grids.
    pub val: PathBuf,
    /// Resize the shorter side to this before cropping.
    pub resize: u32,
    /// Side of the square crops (random in training, centred for validation).
    pub crop: u32,
    /// Images per step (the paper: 64).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Loader threads (0: one per core; at most 64).
    #[serde(default)]
    pub workers: usize,
    /// Random horizontal flips in training.
    #[serde(default = "yes")]
    pub flip: bool,
    /// What `train` and `val` are: `folder` (image files, searched recursively; the default),
    /// `idx` (IDX image files such as MNIST's and Fashion-MNIST's `*-images-idx3-ubyte[.gz]`,
    /// grey made RGB) or `cifar10` (the `cifar-10-batches-bin` directory; `train` and `val`
    /// may name the same one: the training batches and the test batch are taken).
    #[serde(default)]
    pub format: DataFormat,
    /// Cache the encoder's features of the training images in this directory (task `invert`):
    /// built on the first run (resumably), reused when the data, encoder, weights and tap are
    /// the same, rebuilt otherwise. The encoder then runs only for the sample grids. Needs a
    /// deterministic view of the data: `flip = false` and `resize = crop`.
    #[serde(default)]
    pub feature_cache: Option<PathBuf>,
}

/// `data.format`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// A folder of image files.
    #[default]
    Folder,
    /// An IDX images file.
    Idx,
    /// CIFAR-10's binary batches.
    Cifar10,
}

/// `[encoder]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// A comparator name (`alexnet`, `caffenet`, `alexnet-random`, …).
    pub network: String,
    /// Converted weights (default: the weights cache; unused for `*-random`).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// The tap whose features are inverted (`conv5`, `pool5`, `fc6`, …).
    pub tap: String,
}

/// Generator presets.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorPreset {
    /// Two fully connected layers and four up-convolutions to 64×64 (`GeneratorConfig::cpu_64`).
    #[serde(rename = "cpu_64")]
    Cpu64,
    /// Five up-convolutions to 128×128.
    #[serde(rename = "cpu_128")]
    Cpu128,
    /// The paper's Table 1 from a vector: three fully connected layers, 256 → 227.
    Paper,
    /// The paper's Table 1 from a vector with its tower stopped at 64×64 (without the 64- and
    /// 32-channel up-convolutions; `GeneratorConfig::paper_vector_64`): the paper's widths on a
    /// CPU-sized image, the generator of the training-step benchmarks.
    #[serde(rename = "paper_64")]
    Paper64,
    /// From a feature map whose side divides `data.crop` by 2, 4, 8, …: convolutions at the
    /// map's side, then an up-convolution and a convolution per doubling
    /// (`GeneratorConfig::cpu_map`; EfficientNet-Lite0's `block4` at 96 or 128 px).
    #[serde(rename = "cpu_map")]
    CpuMap,
    /// The restorer of tasks `superres` and `restore` (deepsim-models' `RestorerConfig::cpu`:
    /// 64 channels times `width`, convolutions at the degraded image's size, an
    /// up-convolution per doubling, a correction added to the bicubic enlargement).
    Restorer,
}

/// `[generator]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSection {
    /// The architecture.
    pub preset: GeneratorPreset,
    /// Channel multiplier of the CPU presets (1.0 = the paper's widths).
    #[serde(default = "one")]
    pub width: f64,
}

/// `[discriminator]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscriminatorSection {
    /// `cpu_64` (any size) or `paper`.
    #[serde(default = "default_disc_preset")]
    pub preset: DiscriminatorPreset,
    /// Channel multiplier of the CPU preset.
    #[serde(default = "one")]
    pub width: f64,
    /// Condition on the encoder's features y, as the paper does.
    #[serde(default)]
    pub conditioned: bool,
}

impl Default for DiscriminatorSection {
    fn default() -> Self {
        DiscriminatorSection { preset: DiscriminatorPreset::Cpu64, width: 1.0, conditioned: false }
    }
}

/// Discriminator presets.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiscriminatorPreset {
    /// The paper's five convolutions at a width multiplier.
    #[serde(rename = "cpu_64")]
    Cpu64,
    /// The paper's discriminator.
    Paper,
}

/// A learned perceptual metric as the feature term (`loss.metric`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum MetricName {
    /// ST-LPIPS over the shift-tolerant AlexNet (weights ship with deepsim).
    #[serde(rename = "stlpips-alex")]
    StlpipsAlex,
    /// ST-LPIPS over the shift-tolerant VGG16.
    #[serde(rename = "stlpips-vgg")]
    StlpipsVgg,
    /// LPIPS over AlexNet (trunk `alexnet`, heads `lpips-alex`).
    #[serde(rename = "lpips-alex")]
    LpipsAlex,
    /// LPIPS over VGG16 (trunk `vgg16`, heads `lpips-vgg`).
    #[serde(rename = "lpips-vgg")]
    LpipsVgg,
    /// LPIPS over SqueezeNet 1.1 (trunk `squeezenet1_1`, heads `lpips-squeeze`).
    #[serde(rename = "lpips-squeeze")]
    LpipsSqueeze,
}

impl std::fmt::Display for MetricName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetricName::StlpipsAlex => "stlpips-alex",
            MetricName::StlpipsVgg => "stlpips-vgg",
            MetricName::LpipsAlex => "lpips-alex",
            MetricName::LpipsVgg => "lpips-vgg",
            MetricName::LpipsSqueeze => "lpips-squeeze",
        })
    }
}

/// `[loss]`. A weight of 0 switches its term off (the baselines and ablations).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// The comparator C of the feature loss (a comparator name).
    #[serde(default)]
    pub comparator: Option<String>,
    /// Its weights (default: the cache).
    #[serde(default)]
    pub comparator_weights: Option<PathBuf>,
    /// The comparator's tap (`"conv5"`), or several (`["conv1", "conv2"]`), each reduced by
    /// `feature_norm` and weighted equally.
    #[serde(default)]
    pub comparator_tap: Option<TapList>,
    /// λ_feat.
    pub lambda_feat: f64,
    /// λ_adv.
    pub lambda_adv: f64,
    /// λ_img.
    pub lambda_img: f64,
    /// λ_KL, the VAE's KL term (task `vae` only).
    #[serde(default)]
    pub lambda_kl: f64,
    /// The image term's distance: `squared_l2` (the paper's ‖G(y) − x‖²), `l1`, or `jnd`
    /// (the article's ε-insensitive colour loss: `max(0, ΔE00 − 2.3)` averaged over pixels, in
    /// just-noticeable differences; CPU only, and `pixel_scale` must stay 1).
    #[serde(default)]
    pub image_loss: ImageDistance,
    /// Pixels are multiplied by this in the image term (255: the paper's λ_img on 0–255).
    #[serde(default = "one")]
    pub pixel_scale: f64,
    /// The feature term as a learned perceptual metric instead of a comparator's taps:
    /// `stlpips-alex`, `stlpips-vgg`, `lpips-alex`, `lpips-vgg` or `lpips-squeeze` (then leave
    /// `comparator` and `comparator_tap` out). Its weights: `comparator_weights` (the trunk for
    /// LPIPS, the whole model for ST-LPIPS) and `metric_heads` (LPIPS's heads), each
    /// defaulting to the weights cache (ST-LPIPS-alex: the shipped copy).
    #[serde(default)]
    pub metric: Option<MetricName>,
    /// LPIPS's heads (default: the weights cache).
    #[serde(default)]
    pub metric_heads: Option<PathBuf>,
    /// `sum` (the paper's) or `mean`.
    #[serde(default)]
    pub feature_norm: FeatureNorm,
    /// The adversarial objective of both networks: `logistic` (the paper's `−log D`), `hinge`
    /// or `least_squares`.
    #[serde(default)]
    pub adversarial: AdversarialKind,
    /// Scale λ_adv each step by the adaptive weight of Esser et al. (2021),
    /// `‖∇L_rec‖ / (‖∇L_adv‖ + eps)` at the generator's last layer, clamped to `[0, max]`
    /// and 0 before `start_step` (`adaptive_adversarial = { start_step = 200 }`; every field
    /// has a default). The factor is logged as `adv_weight`.
    #[serde(default)]
    pub adaptive_adversarial: Option<AdaptiveAdversarialWeight>,
    /// The discriminator pauses while L_discr / L_adv is below this (the paper: 0.1).
    #[serde(default = "default_pause")]
    pub pause_threshold: f64,
    /// Each step, crop both images by one pixel at a seeded random corner before the
    /// comparator (`StepInputs::feature_phase` of deepsim-losses), so that its stride-2
    /// layers meet the image at a random phase and the up-convolutions' checkerboard, which
    /// a strided network cannot see at a fixed phase, is penalized.
    #[serde(default)]
    pub feature_jitter: bool,
}

/// One tap name or a list of them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TapList {
    /// `comparator_tap = "conv5"`.
    One(String),
    /// `comparator_tap = ["conv1", "conv2"]`.
    Many(Vec<String>),
}

impl TapList {
    /// The names, in order.
    pub fn names(&self) -> Vec<&str> {
        match self {
            TapList::One(name) => vec![name.as_str()],
            TapList::Many(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

impl std::fmt::Display for TapList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join("+"))
    }
}

/// `[optim]`: Adam without weight decay, as in the paper.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate (the paper: 0.0002), for both networks.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// β₁ (the paper: 0.9).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// β₂ (the paper: 0.999).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: default_lr(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
        }
    }
}

fn default_device() -> String {
    "cpu".into()
}
fn default_every() -> u64 {
    500
}
fn default_samples() -> usize {
    8
}
fn default_batch() -> usize {
    64
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}
fn default_disc_preset() -> DiscriminatorPreset {
    DiscriminatorPreset::Cpu64
}
fn default_pause() -> f64 {
    0.1
}
fn default_lr() -> f64 {
    2e-4
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl TrainConfig {
    /// A short name for the loss this run trains with, for tables and figures:
    /// `image loss` when λ_feat = λ_adv = 0 (Dosovitskiy & Brox's baseline), otherwise
    /// `DeePSiM` with its comparator and taps, and the terms an ablation dropped
    /// (`DeePSiM alexnet-random conv1+conv2, no adv`). A VAE's name starts with `VAE`.
    pub fn method(&self) -> String {
        let l = &self.loss;
        let base = if l.lambda_feat == 0.0 && l.lambda_adv == 0.0 {
            match l.image_loss {
                ImageDistance::Jnd => "image loss (ε = JND)".to_owned(),
                _ => "image loss".to_owned(),
            }
        } else {
            let mut name = "DeePSiM".to_owned();
            if let (true, Some(c), Some(t)) =
                (l.lambda_feat > 0.0, &l.comparator, &l.comparator_tap)
            {
                name.push_str(&format!(" {c} {t}"));
            }
            if let (true, Some(m)) = (l.lambda_feat > 0.0, l.metric) {
                name.push_str(&format!(" {m}"));
            }
            let dropped: Vec<&str> =
                [("feat", l.lambda_feat), ("adv", l.lambda_adv), ("img", l.lambda_img)]
                    .iter()
                    .filter(|(_, w)| *w == 0.0)
                    .map(|(n, _)| *n)
                    .collect();
            if !dropped.is_empty() {
                name.push_str(&format!(", no {}", dropped.join(", no ")));
            }
            name
        };
        match self.run.task {
            Task::Vae => match &self.diversity {
                Some(d) if d.lambda > 0.0 => format!("VAE, {base} + diversity"),
                _ => format!("VAE, {base}"),
            },
            Task::Invert => base,
            Task::Superres | Task::Restore => {
                let cycle = self.restore.as_ref().filter(|r| r.lambda_cycle > 0.0);
                match cycle {
                    Some(r) => format!("{base} + cycle ({})", r.cycle_space.name()),
                    None => base,
                }
            }
        }
    }

    /// Reads and checks a TOML file.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file; [`Error::Config`] naming the file and the field for
    /// syntax errors, unknown or missing fields, wrong types and invalid values.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses and checks TOML text.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: TrainConfig = toml::from_str(text)
            .map_err(|e| Error::Config(e.to_string().trim_end().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value, naming the first field that is out of range.
    ///
    /// # Errors
    /// [`Error::Config`] with the field's dotted name.
    pub fn validate(&self) -> Result<()> {
        /// Decoding threads beyond which a configuration is refused: each holds its images.
        const MAX_WORKERS: usize = 64;
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        let positive = |field: &str, v: f64| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bad(field, format!("{v} must be a positive number"))
            }
        };
        let weight = |field: &str, v: f64| -> Result<()> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                bad(field, format!("{v} must be a finite number ≥ 0"))
            }
        };
        if self.run.steps == 0 {
            return bad("run.steps", "must be at least 1".into());
        }
        if self.data.workers > MAX_WORKERS {
            return bad(
                "data.workers",
                format!(
                    "{} is more than {MAX_WORKERS} decoding threads (0 = one per core)",
                    self.data.workers
                ),
            );
        }
        if self.run.out.as_os_str().is_empty() {
            return bad("run.out", "is empty: name the directory the run writes to".into());
        }
        if self.run.checkpoint_every == 0 || self.run.sample_every == 0 {
            return bad("run.checkpoint_every / run.sample_every", "must be at least 1".into());
        }
        // Before the device is opened: on any build, this combination is the error to report.
        if self.loss.image_loss == ImageDistance::Jnd {
            if self.loss.pixel_scale != 1.0 {
                return bad(
                    "loss.pixel_scale",
                    format!(
                        "{} scales pixel distances; image_loss = \"jnd\" is in ΔE units: leave \
                         it at 1",
                        self.loss.pixel_scale
                    ),
                );
            }
            if self.run.device != "cpu" && self.loss.lambda_img > 0.0 {
                return bad(
                    "loss.image_loss",
                    format!(
                        "\"jnd\" runs on the CPU only (its hue angle has no kernel elsewhere); \
                         run.device is {:?}",
                        self.run.device
                    ),
                );
            }
        }
        parse_device(&self.run.device)?;
        if self.data.crop == 0 || self.data.resize < self.data.crop {
            return bad(
                "data.resize",
                format!("{} must be at least data.crop ({})", self.data.resize, self.data.crop),
            );
        }
        if self.data.batch_size == 0 {
            return bad("data.batch_size", "must be at least 1".into());
        }
        positive("generator.width", self.generator.width)?;
        positive("discriminator.width", self.discriminator.width)?;
        weight("loss.lambda_feat", self.loss.lambda_feat)?;
        weight("loss.lambda_adv", self.loss.lambda_adv)?;
        weight("loss.lambda_img", self.loss.lambda_img)?;
        positive("loss.pixel_scale", self.loss.pixel_scale)?;
        weight("loss.pause_threshold", self.loss.pause_threshold)?;
        weight("loss.lambda_kl", self.loss.lambda_kl)?;
        match self.run.task {
            Task::Invert => {
                if self.encoder.is_none() {
                    return bad("encoder", "task invert needs an [encoder] section".into());
                }
                if self.vae.is_some() {
                    return bad("vae", "the [vae] section belongs to task vae".into());
                }
                if self.loss.lambda_kl > 0.0 {
                    return bad("loss.lambda_kl", "the KL term belongs to task vae".into());
                }
                if self.restore.is_some() {
                    return bad("restore", "belongs to the tasks superres and restore".into());
                }
                if self.generator.preset == GeneratorPreset::Restorer {
                    return bad(
                        "generator.preset",
                        "restorer belongs to the tasks superres and restore".into(),
                    );
                }
            }
            Task::Superres | Task::Restore => self.validate_restoration()?,
            Task::Vae => {
                let Some(vae) = &self.vae else {
                    return bad("vae", "task vae needs a [vae] section (latent)".into());
                };
                if self.encoder.is_some() {
                    return bad(
                        "encoder",
                        "task vae trains its own encoder; remove [encoder]".into(),
                    );
                }
                if self.discriminator.conditioned {
                    return bad(
                        "discriminator.conditioned",
                        "task vae has no features to condition on".into(),
                    );
                }
                if vae.latent == 0 {
                    return bad("vae.latent", "must be at least 1".into());
                }
                if self.restore.is_some() {
                    return bad("restore", "belongs to the tasks superres and restore".into());
                }
                match self.generator.preset {
                    GeneratorPreset::Cpu64 => {}
                    GeneratorPreset::Paper if vae.latent == 4096 => {}
                    GeneratorPreset::Paper => {
                        return bad(
                            "vae.latent",
                            format!("{} must be 4096 with generator.preset paper", vae.latent),
                        );
                    }
                    GeneratorPreset::Cpu128
                    | GeneratorPreset::Paper64
                    | GeneratorPreset::CpuMap
                    | GeneratorPreset::Restorer => {
                        return bad(
                            "generator.preset",
                            "task vae has the presets cpu_64 and paper".into(),
                        );
                    }
                }
            }
        }
        if self.loss.lambda_feat + self.loss.lambda_adv + self.loss.lambda_img == 0.0 {
            return bad("loss", "every λ is 0: nothing to minimize".into());
        }
        let l = &self.loss;
        if let Some(metric) = l.metric {
            if l.comparator.is_some() || l.comparator_tap.is_some() {
                return bad(
                    "loss.metric",
                    format!(
                        "{metric} is the feature term; leave loss.comparator and \
                         loss.comparator_tap out (or drop loss.metric to use taps)"
                    ),
                );
            }
            if l.metric_heads.is_some()
                && matches!(metric, MetricName::StlpipsAlex | MetricName::StlpipsVgg)
            {
                return bad(
                    "loss.metric_heads",
                    format!("{metric} keeps its heads in its own weights file (loss.comparator_weights)"),
                );
            }
        } else if l.metric_heads.is_some() {
            return bad("loss.metric_heads", "belongs to loss.metric = \"lpips-…\"".into());
        }
        if l.lambda_feat > 0.0
            && l.metric.is_none()
            && (l.comparator.is_none() || l.comparator_tap.is_none())
        {
            return bad(
                "loss.comparator",
                "lambda_feat > 0 needs loss.comparator and loss.comparator_tap (or loss.metric)"
                    .into(),
            );
        }
        if let Some(rule) = &l.adaptive_adversarial {
            if l.lambda_adv == 0.0 {
                return bad(
                    "loss.adaptive_adversarial",
                    "scales λ_adv, which is 0: there is no adversarial term".into(),
                );
            }
            if l.lambda_feat + l.lambda_img + l.lambda_kl == 0.0 {
                return bad(
                    "loss.adaptive_adversarial",
                    "balances the adversarial term against a reconstruction term (λ_feat, λ_img \
                     or λ_kl > 0); every one is 0"
                        .into(),
                );
            }
            weight("loss.adaptive_adversarial.max", rule.max)?;
            positive("loss.adaptive_adversarial.eps", rule.eps)?;
        }
        if let Some(dir) = &self.data.feature_cache {
            if self.run.task != Task::Invert {
                return bad(
                    "data.feature_cache",
                    "caches an encoder's features: task invert only".into(),
                );
            }
            if self.data.flip || self.data.resize != self.data.crop {
                return bad(
                    "data.feature_cache",
                    format!(
                        "{} caches one view of each image: set data.flip = false and data.resize = \
                         data.crop ({}), or drop the cache",
                        dir.display(),
                        self.data.crop
                    ),
                );
            }
        }
        if let Some(augment) = &self.augment {
            augment.validate()?;
            if let Some(dir) = &self.data.feature_cache {
                return bad(
                    "augment",
                    format!(
                        "changes the training images, whose features data.feature_cache ({}) \
                         holds unchanged: drop one of them",
                        dir.display()
                    ),
                );
            }
        }
        if let Some(d) = &self.diversity {
            if self.run.task != Task::Vae {
                return bad(
                    "diversity",
                    "spreads samples of a VAE's prior: task vae only (an inverter or a restorer \
                     has no prior to sample)"
                        .into(),
                );
            }
            weight("diversity.lambda", d.lambda)?;
            positive("diversity.sigma", d.sigma)?;
            if d.samples < 2 {
                return bad("diversity.samples", format!("{} must be at least 2", d.samples));
            }
        }
        if self.loss.comparator_tap.as_ref().is_some_and(|t| t.names().is_empty()) {
            return bad("loss.comparator_tap", "the list is empty".into());
        }
        positive("optim.lr", self.optim.lr)?;
        if !(0.0..1.0).contains(&self.optim.beta1) {
            return bad("optim.beta1", format!("{} must lie in [0, 1)", self.optim.beta1));
        }
        if !(0.0..1.0).contains(&self.optim.beta2) {
            return bad("optim.beta2", format!("{} must lie in [0, 1)", self.optim.beta2));
        }
        positive("optim.eps", self.optim.eps)?;
        let side = match self.generator.preset {
            GeneratorPreset::Cpu64 => 64,
            GeneratorPreset::Cpu128 => 128,
            GeneratorPreset::Paper => 227,
            GeneratorPreset::Paper64 => 64,
            // Any side: the map's side is checked against it when the encoder is built.
            GeneratorPreset::CpuMap => self.data.crop,
            // Fully convolutional.
            GeneratorPreset::Restorer => self.data.crop,
        };
        if self.data.crop != side {
            return bad(
                "data.crop",
                format!("{} differs from the generator's output side {side}", self.data.crop),
            );
        }
        Ok(())
    }
}

impl TrainConfig {
    /// The checks of `[restore]` and of what tasks `superres` and `restore` exclude.
    fn validate_restoration(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        let task = self.run.task;
        let Some(r) = &self.restore else {
            return bad(
                "restore",
                format!("task {} needs a [restore] section (the degradation)", task.name()),
            );
        };
        if self.encoder.is_some() {
            return bad(
                "encoder",
                format!("task {} takes the degraded image; remove [encoder]", task.name()),
            );
        }
        if self.vae.is_some() {
            return bad("vae", "the [vae] section belongs to task vae".into());
        }
        if self.loss.lambda_kl > 0.0 {
            return bad("loss.lambda_kl", "the KL term belongs to task vae".into());
        }
        if self.discriminator.conditioned {
            return bad(
                "discriminator.conditioned",
                format!("task {} has no features to condition on", task.name()),
            );
        }
        if self.data.feature_cache.is_some() {
            return bad(
                "data.feature_cache",
                "caches an encoder's features: task invert only".into(),
            );
        }
        if !(r.noise.is_finite() && (0.0..=255.0).contains(&r.noise)) {
            return bad(
                "restore.noise",
                format!("{} must lie in [0, 255] (8-bit levels)", r.noise),
            );
        }
        if let Some(q) = r.jpeg_quality {
            if !(1..=100).contains(&q) {
                return bad("restore.jpeg_quality", format!("{q} must lie in 1–100"));
            }
        }
        if self.generator.preset != GeneratorPreset::Restorer {
            return bad(
                "generator.preset",
                format!("task {} trains the preset \"restorer\"", task.name()),
            );
        }
        if !(r.lambda_cycle.is_finite() && r.lambda_cycle >= 0.0) {
            return bad(
                "restore.lambda_cycle",
                format!("{} must be a finite number ≥ 0", r.lambda_cycle),
            );
        }
        match (task, r.scale) {
            (Task::Superres, Some(s @ (2 | 4 | 8))) => {
                if !(self.data.crop as usize).is_multiple_of(s) {
                    return bad(
                        "data.crop",
                        format!("{} is not a multiple of restore.scale ({s})", self.data.crop),
                    );
                }
            }
            (Task::Superres, Some(s)) => {
                return bad("restore.scale", format!("{s} must be 2, 4 or 8"));
            }
            (Task::Superres, None) => {
                return bad("restore.scale", "task superres needs the factor (2, 4 or 8)".into());
            }
            (_, Some(s)) => {
                return bad(
                    "restore.scale",
                    format!("{s}: task restore keeps the size; use task superres to enlarge"),
                );
            }
            (_, None) => {
                if r.noise == 0.0 && r.jpeg_quality.is_none() {
                    return bad(
                        "restore",
                        "task restore needs a degradation: noise > 0 and/or jpeg_quality".into(),
                    );
                }
                if r.lambda_cycle > 0.0 {
                    return bad(
                        "restore.lambda_cycle",
                        "the cycle term shrinks the output again, which needs task superres                          (noise and JPEG cannot be undone or differentiated)"
                            .into(),
                    );
                }
            }
        }
        if r.lambda_cycle > 0.0
            && r.cycle_space == CycleSpace::Comparator
            && self.loss.lambda_feat == 0.0
        {
            return bad(
                "restore.cycle_space",
                "comparator uses the feature term's comparator, and loss.lambda_feat is 0".into(),
            );
        }
        Ok(())
    }
}

impl Task {
    /// The name in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Task::Invert => "invert",
            Task::Vae => "vae",
            Task::Superres => "superres",
            Task::Restore => "restore",
        }
    }
}

impl CycleSpace {
    /// The name in configurations.
    pub fn name(self) -> &'static str {
        match self {
            CycleSpace::Pixels => "pixels",
            CycleSpace::Lab => "lab",
            CycleSpace::Comparator => "comparator",
        }
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `metal`.
///
/// # Errors
/// [`Error::Config`] for another name, or a device this build or machine lacks.
pub fn parse_device(name: &str) -> Result<candle::Device> {
    // The reason without the backtrace candle attaches when RUST_BACKTRACE is set: a missing
    // device is the user's situation, not a bug to locate.
    let unavailable = |what: String| {
        move |e: candle::Error| {
            let e = match e {
                candle::Error::WithBacktrace { inner, .. } => *inner,
                e => e,
            };
            Error::Config(format!("run.device {name:?}: {what} cannot be opened: {e}"))
        }
    };
    let cuda =
        |n: usize| candle::Device::new_cuda(n).map_err(unavailable(format!("CUDA device {n}")));
    match name {
        "cpu" => Ok(candle::Device::Cpu),
        "metal" => candle::Device::new_metal(0).map_err(unavailable("the Metal device".into())),
        "cuda" => cuda(0),
        _ => match name.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Config(format!(
                "run.device {name:?}: expected cpu, cuda, cuda:N or metal"
            ))),
        },
    }
}
