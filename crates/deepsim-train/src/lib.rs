//! Training DeePSiM generators with candle (Dosovitskiy & Brox 2016, §3–4).
//!
//! A run is described by a [`TrainConfig`] (TOML, see `configs/`): the images, the encoder
//! whose features are inverted (y = E(x) at a tap), the generator G, the discriminator, and
//! the loss `λ_feat‖C(G(y)) − C(x)‖² + λ_adv·(−log D(G(y))) + λ_img‖G(y) − x‖²`, where any
//! λ = 0 is an ablation and `λ_feat = λ_adv = 0` the image-loss baseline of Dosovitskiy &
//! Brox. [`Trainer`] runs it: Adam (β₁ 0.9, β₂ 0.999, no weight decay), the discriminator
//! trained alongside and paused while it wins too clearly, every random choice drawn from the
//! run's seed, so that an interrupted and resumed run logs the same losses as an
//! uninterrupted one. The same trainer runs the paper's VAE (`run.task = "vae"`) and
//! restorers (`"superres"`, `"restore"`): G takes a degraded image (Pillow's bicubic shrink,
//! noise, JPEG; [`Degradation`]) and the loss, with an optional cycle term, judges its output
//! against the clean image. Checkpoints are written atomically; `metrics.jsonl` holds every term of
//! every step; sample grids and loss curves are written as PNG.

mod adam;
mod augment;
mod checkpoint;
mod config;
mod degrade;
mod error;
mod eval;
mod images;
mod init;
mod log;
mod memory;
mod model;
mod optim;
mod probe;
mod trainer;
mod workload;

pub use adam::Adam;
pub use augment::{
    Applied, AugmentConfig, Augmentation, Augmenter, Budget, BudgetMetric, Calibrated, Calibrator,
    Reach,
};
pub use checkpoint::{resume_differences, RESUME_MAY_CHANGE};
pub use config::{
    parse_device, CycleSpace, DataConfig, DataFormat, DiscriminatorPreset, DiscriminatorSection,
    DiversitySection, EncoderConfig, GeneratorPreset, GeneratorSection, LossConfig, MetricName,
    OptimConfig, RestoreSection, RunConfig, TapList, Task, TrainConfig, VaeSection,
};
/// The loss settings a configuration embeds (`loss.feature_norm`, `loss.adversarial`,
/// `loss.adaptive_adversarial`, `loss.image_loss`), deepsim-losses' own types.
pub use deepsim_losses::{AdaptiveAdversarialWeight, AdversarialKind, FeatureNorm, ImageDistance};
pub use deepsim_metrics::alpha_norm;
pub use deepsim_metrics::{edge_ratio, normalized_error};
pub use degrade::Degradation;
pub use error::{Error, Result};
pub use eval::PerceptualDistance;
pub use images::{write_curves, write_grid, write_image, write_labelled_grid};
pub use init::seeded;
pub use log::StepLog;
pub use memory::{one_compute_pool, peak_resident_bytes, resident_bytes, retain_freed_memory};
pub use model::Model;
pub use optim::{
    inversion_objective, invert_by_optimization, OptimInversion, OptimInversionConfig,
};
pub use probe::{
    encode_labelled, pixels_labelled, softmax_cross_entropy, Labelled, LinearProbe, ProbeConfig,
};
pub use trainer::Trainer;
pub use workload::{normal, StepWorkload, TrainerStepWorkload};
