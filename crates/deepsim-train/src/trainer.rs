//! The training loop (§3 and §4.2 of the paper): x̂ = G(code) for the code of x (a frozen
//! encoder's features at a tap, or the VAE's latent), G trained with the DeePSiM loss (or any
//! λ = 0 ablation of it), the discriminator trained alongside with the pause rule
//! ([`adversary`]); metrics, samples and checkpoints.
//!
//! Construction (this file) reads the configuration into data, networks and the loss; the
//! step runs the model's training pass ([`Model::forward_train`]), the discriminator and the
//! loss; the checkpoint's format and the resume rules are [`crate::checkpoint`]'s.

mod adversary;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use deepsim_comparators::{by_name, Comparator, Lpips, Tap};
use deepsim_data::{
    stack, write_atomic, CacheKey, CacheOptions, CacheStatus, Cifar10, ColorMode, Dataset,
    FeatureCache, FolderConfig, IdxDataset, ImageFolder, Loader, LoaderConfig, Position, Rng,
    Split, Stream, Transform, Validation,
};
use deepsim_losses::{
    diversity_penalty, DeepSimLoss, DeepSimWeights, FeatureLoss, FeatureTerm, LpipsLoss, Reduction,
    StepInputs,
};

use self::adversary::Adversary;
use crate::adam::Adam;
use crate::augment::Augmenter;
use crate::checkpoint::{
    read_checkpoint, resume_differences, seal_checksum, set_vars, Checkpoint, CHECKSUM_PENDING,
    DAMAGED, DATA_SHA256, FORMAT,
};
use crate::config::{parse_device, CycleSpace, DataFormat, TrainConfig};
use crate::error::{Error, Result};
use crate::images::{write_curves, write_grid};
use crate::log::StepLog;
use crate::model::{tap_named, Model};

const CHECKPOINT: &str = "checkpoint.safetensors";
const PREVIOUS: &str = "checkpoint.prev.safetensors";
/// Domains of the step's random streams (with the run's seed and the step).
const NOISE: u64 = 0x5A;
const JITTER: u64 = 0x1F;
const DIVERSITY: u64 = 0xD1;

/// A training run.
pub struct Trainer {
    /// The networks, the run's configuration and device.
    model: Model,
    g_adam: Adam,
    /// The discriminator, when λ_adv > 0.
    adversary: Option<Adversary>,
    loss: DeepSimLoss,
    /// The generator's last layer, for the adaptive adversarial weight.
    last_layer: Option<Var>,
    /// The loss's comparator and tap are the encoder's: the target's features are y.
    comparator_is_encoder: bool,
    /// `[diversity]`'s comparator and tap.
    diversity: Option<(Arc<dyn Comparator + Send + Sync>, Tap)>,
    loader: Loader,
    /// `[augment]`: the training images' calibrated augmentation.
    augmenter: Option<Augmenter>,
    stream: Option<Stream>,
    position: Position,
    step: u64,
    val: Tensor,
    history: Vec<StepLog>,
}

/// Removes what a process killed while writing into `out` left behind (temporary files of
/// atomic writes), saying so.
fn clean_after_kill(out: &Path) {
    for path in deepsim_data::remove_stale_temporaries(out) {
        eprintln!("removed {}, left by a run killed while writing it", path.display());
    }
}

/// The training set (random crops and flips as configured) and the validation set (centre
/// crops), in `data.format`.
fn open_data(config: &TrainConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let d = &config.data;
    for (field, path) in [("data.train", &d.train), ("data.val", &d.val)] {
        let wants = match d.format {
            DataFormat::Idx if path.is_dir() => "an IDX images file (*-images-idx3-ubyte[.gz])",
            DataFormat::Folder | DataFormat::Cifar10 if path.is_file() => {
                "a folder (of images, or CIFAR-10's cifar-10-batches-bin)"
            }
            _ => continue,
        };
        return Err(Error::Config(format!(
            "{field}: {} is a {}; data.format = \"{}\" reads {wants}",
            path.display(),
            if path.is_dir() { "folder" } else { "file" },
            match d.format {
                DataFormat::Folder => "folder",
                DataFormat::Idx => "idx",
                DataFormat::Cifar10 => "cifar10",
            }
        )));
    }
    let val_t = Transform::eval(d.resize, d.crop);
    let train_t = if d.feature_cache.is_some() {
        // The cache holds one view of each image (validated: no flips, resize = crop): the
        // same pixels as the random crop of a crop-sized image, marked deterministic.
        val_t
    } else {
        let mut t = Transform::train(d.resize, d.crop);
        t.hflip = d.flip;
        t
    };
    Ok(match d.format {
        DataFormat::Folder => {
            let folder = |t: Transform, dir: &Path| -> Result<Arc<dyn Dataset>> {
                let mut c = FolderConfig::new(t);
                c.validation = Validation::Full;
                Ok(Arc::new(ImageFolder::open(dir, c)?))
            };
            (folder(train_t, &d.train)?, folder(val_t, &d.val)?)
        }
        DataFormat::Idx => (
            Arc::new(IdxDataset::open(&d.train, None, train_t, ColorMode::Rgb)?),
            Arc::new(IdxDataset::open(&d.val, None, val_t, ColorMode::Rgb)?),
        ),
        DataFormat::Cifar10 => (
            Arc::new(Cifar10::open(&d.train, Split::Train, train_t, ColorMode::Rgb)?),
            Arc::new(Cifar10::open(&d.val, Split::Test, val_t, ColorMode::Rgb)?),
        ),
    })
}

/// The loss of `config` for `model`, and whether its feature term is the encoder at the
/// encoder's tap (then the step hands the encoder's features to the loss as C(x)).
fn build_loss(config: &TrainConfig, model: &Model) -> Result<(DeepSimLoss, bool)> {
    let l = &config.loss;
    let device = model.device();
    let mut comparator_is_encoder = false;
    let feature: Option<FeatureTerm> = match (&l.metric, &l.comparator, &l.comparator_tap) {
        _ if l.lambda_feat == 0.0 => None,
        (Some(m), _, _) => {
            let (weights, heads) = (l.comparator_weights.as_deref(), l.metric_heads.as_deref());
            let metric = Lpips::pretrained_by_name(&m.to_string(), weights, heads, device)?;
            Some(LpipsLoss::new(metric, Reduction::Mean).into())
        }
        (None, Some(name), Some(ctaps)) => {
            let shared = match (model.encoder(), &config.encoder) {
                (Some((encoder, tap)), Some(enc))
                    if *name == enc.network && l.comparator_weights == enc.weights =>
                {
                    comparator_is_encoder = ctaps.names() == [tap.name()];
                    Some(encoder.clone())
                }
                _ => None,
            };
            let c: Arc<dyn Comparator + Send + Sync> = match shared {
                Some(c) => c,
                None => Arc::from(by_name(name, l.comparator_weights.as_deref(), device)?),
            };
            let taps = ctaps
                .names()
                .into_iter()
                .map(|t| Ok((tap_named(t, "loss.comparator_tap")?, 1.0)))
                .collect::<Result<Vec<_>>>()?;
            Some(FeatureLoss::new(c, &taps, l.feature_norm, Reduction::Mean)?.into())
        }
        // Refused by `TrainConfig::validate`.
        (None, _, _) => {
            return Err(Error::Config(
                "loss.comparator: lambda_feat > 0 needs a comparator and its taps, or a metric"
                    .into(),
            ))
        }
    };
    let weights = DeepSimWeights {
        feat: l.lambda_feat,
        adv: l.lambda_adv,
        img: l.lambda_img,
        kl: l.lambda_kl,
        pixel_scale: l.pixel_scale,
    };
    let mut loss = DeepSimLoss::new(weights, feature, l.adversarial, Reduction::Mean)?
        .with_image_distance(l.image_loss);
    if let Some(rule) = l.adaptive_adversarial {
        loss = loss.with_adaptive_weight(rule);
    }
    Ok((loss, comparator_is_encoder))
}

/// Caches the encoder's features of `train` in `data.feature_cache` (building what is
/// missing) and attaches them to the loader.
fn attach_feature_cache(
    config: &TrainConfig,
    model: &Model,
    train: &dyn Dataset,
    loader: Loader,
) -> Result<Loader> {
    let (Some(dir), Some((encoder, tap)), Some(enc)) =
        (&config.data.feature_cache, model.encoder(), &config.encoder)
    else {
        return Ok(loader);
    };
    let key = CacheKey {
        comparator: format!(
            "{} ({})",
            enc.network,
            enc.weights.as_ref().map_or("default weights".into(), |w| w.display().to_string())
        ),
        tap: tap.name().to_string(),
    };
    let device = model.device().clone();
    let encode = |x: &Tensor| -> candle::Result<Tensor> {
        let x = x.to_device(&device)?;
        let f = encoder.features(&x, &[tap]).map_err(|e| candle::Error::Msg(e.to_string()))?;
        f[0].to_device(&Device::Cpu)
    };
    let options = CacheOptions { batch_size: config.data.batch_size, ..CacheOptions::default() };
    let (cache, status) = FeatureCache::open_or_build(dir, train, &key, &options, encode)?;
    if let CacheStatus::Built { .. } = status {
        eprintln!("feature cache {}: built ({} images)", dir.display(), train.len());
    }
    Ok(loader.with_features(Arc::new(cache))?)
}

impl Trainer {
    /// A fresh run: networks initialized from `run.seed`, nothing written yet.
    ///
    /// # Errors
    /// [`Error::Config`] when `run.out` already holds a run (a checkpoint, the previous
    /// checkpoint a failed save leaves alone, or a `metrics.jsonl` a killed run left): a fresh
    /// run would overwrite it or append to its log, so it must be resumed, moved or removed;
    /// data, comparator and model errors.
    pub fn new(config: TrainConfig) -> Result<Self> {
        Self::fresh(config, None)
    }

    /// A fresh run on datasets given in place of `config.data.train` and `config.data.val`
    /// (images in memory, a source of another format); every other setting is `config`'s, the
    /// step the one [`Trainer::new`]'s runs. The training step benchmarks build their trainer
    /// so, to time what `deepsim train` runs without reading files.
    ///
    /// # Errors
    /// As [`Trainer::new`]; [`Error::Config`] when a dataset's images are not
    /// `[3, data.crop, data.crop]`.
    pub fn with_data(
        config: TrainConfig,
        train: Arc<dyn Dataset>,
        val: Arc<dyn Dataset>,
    ) -> Result<Self> {
        let side = config.data.crop as usize;
        for (field, set) in [("train", &train), ("val", &val)] {
            if set.sample_shape() != [3, side, side] {
                return Err(Error::Config(format!(
                    "Trainer::with_data: the {field} images are {:?}, data.crop = {side} needs \
                     [3, {side}, {side}]",
                    set.sample_shape()
                )));
            }
        }
        Self::fresh(config, Some((train, val)))
    }

    /// [`Trainer::new`] on `data`, or on the datasets `config.data` names.
    fn fresh(
        config: TrainConfig,
        data: Option<(Arc<dyn Dataset>, Arc<dyn Dataset>)>,
    ) -> Result<Self> {
        let out = &config.run.out;
        clean_after_kill(out);
        let left: Vec<&str> = [CHECKPOINT, PREVIOUS, "metrics.jsonl"]
            .into_iter()
            .filter(|f| out.join(f).exists())
            .collect();
        if !left.is_empty() {
            let resume = if left.contains(&CHECKPOINT) {
                "resume it (--resume), move it away"
            } else if left.contains(&PREVIOUS) {
                "a save was interrupted; rename checkpoint.prev.safetensors to \
                 checkpoint.safetensors and resume (--resume), move it away"
            } else {
                "a run stopped before its first checkpoint; move it away"
            };
            return Err(Error::Config(format!(
                "run.out {} already holds a run ({}): {resume}, or choose another run.out",
                out.display(),
                left.join(", ")
            )));
        }
        let trainer = Self::build(config, data)?;
        if let Some(init) = &trainer.config().run.init {
            trainer.model.warm_start(init)?;
        }
        Ok(trainer)
    }

    /// Continues the run in `run.out` from its checkpoint, exactly where it stopped.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a missing, corrupt or mismatched checkpoint (naming what
    /// differs); the checkpoint files are left as they are.
    pub fn resume(config: TrainConfig) -> Result<Self> {
        clean_after_kill(&config.run.out);
        let path = config.run.out.join(CHECKPOINT);
        if !path.is_file() {
            let prev = config.run.out.join(PREVIOUS);
            let hint = if prev.is_file() {
                format!(" ({} exists: a save was interrupted; rename it to {CHECKPOINT} to resume from it)", prev.display())
            } else {
                String::new()
            };
            return Err(Error::Checkpoint { path, reason: format!("not found{hint}") });
        }
        let mut trainer = Self::build(config, None)?;
        trainer.load_checkpoint(&path)?;
        trainer.truncate_metrics()?;
        Ok(trainer)
    }

    /// The run of `config` on `data` (training and validation images), or on the datasets
    /// `config.data` names.
    fn build(
        config: TrainConfig,
        data: Option<(Arc<dyn Dataset>, Arc<dyn Dataset>)>,
    ) -> Result<Self> {
        config.validate()?;
        let device = parse_device(&config.run.device)?;
        let (train, val_set) = match data {
            Some(d) => d,
            None => open_data(&config)?,
        };
        if train.len() < config.data.batch_size {
            return Err(Error::Config(format!(
                "data.train {} has {} usable images, fewer than one batch (data.batch_size = {}): \
                 lower data.batch_size or add images",
                config.data.train.display(),
                train.len(),
                config.data.batch_size
            )));
        }
        // The sample grids' images: the first validation images, centre-cropped.
        let shown: Vec<usize> = (0..config.run.samples.min(val_set.len()).max(1)).collect();
        let val = stack(val_set.as_ref(), &shown, |_| Rng::new(0))?.images.to_device(&device)?;

        let model = Model::build(&config, &device)?;
        let workers = match config.data.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let loader = Loader::new(
            train.clone(),
            LoaderConfig {
                batch_size: config.data.batch_size,
                shuffle: true,
                drop_last: true,
                seed: config.run.seed,
                workers,
                prefetch: 2 * workers,
            },
        )?;
        let loader = attach_feature_cache(&config, &model, train.as_ref(), loader)?;

        let o = &config.optim;
        let g_adam = Adam::new(&model.vars, o.lr, o.beta1, o.beta2, o.eps)?;
        let adversary = Adversary::build(&config, model.code_dim(), &device)?;
        let (loss, comparator_is_encoder) = build_loss(&config, &model)?;
        let last_layer = match config.loss.adaptive_adversarial {
            Some(_) => Some(model.last_layer()?),
            None => None,
        };
        let augmenter = config.augment.clone().map(Augmenter::new).transpose()?;
        let diversity = match &config.diversity {
            Some(d) if d.lambda > 0.0 => {
                let c: Arc<dyn Comparator + Send + Sync> =
                    Arc::from(by_name(&d.comparator, d.weights.as_deref(), &device)?);
                Some((c, tap_named(&d.tap, "diversity.tap")?))
            }
            _ => None,
        };
        Ok(Trainer {
            model,
            g_adam,
            adversary,
            loss,
            last_layer,
            comparator_is_encoder,
            diversity,
            loader,
            augmenter,
            stream: None,
            position: Position::default(),
            step: 0,
            val,
            history: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        self.model.config()
    }

    /// Steps completed.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The discriminator's pause counters, when the run has a discriminator.
    pub fn pause(&self) -> Option<&deepsim_losses::DiscriminatorPause> {
        self.adversary.as_ref().map(|a| &a.pause)
    }

    /// The generator's variables (name → tensor); for a VAE, its encoder's too.
    pub fn generator_vars(&self) -> &VarMap {
        &self.model.vars
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The discriminator's variables, when there is one.
    pub fn discriminator_vars(&self) -> Option<&VarMap> {
        self.adversary.as_ref().map(|a| &a.vars)
    }

    /// The code the generator takes for `x` (the encoder's features, or the VAE's μ), without
    /// a graph: [`Model::encode`].
    ///
    /// # Errors
    /// The comparator's input contract.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.model.encode(x)
    }

    /// G(E(x)), clamped to [0, 1]: the reconstruction of `x` from its code.
    ///
    /// # Errors
    /// As [`Trainer::encode`].
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        self.model.reconstruct(x)
    }

    /// The validation images of the sample grids.
    pub fn validation_images(&self) -> &Tensor {
        &self.val
    }

    /// One generator step (and a discriminator step unless paused) on the next batch.
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the term and step when a loss is NaN or infinite (nothing is
    /// updated); data, comparator and tensor errors.
    pub fn step(&mut self) -> Result<StepLog> {
        let start = Instant::now();
        if self.stream.is_none() {
            self.stream = Some(self.loader.stream(self.position)?);
        }
        let stream = self.stream.as_mut().expect("stream started");
        let batch =
            stream.next().ok_or_else(|| Error::Config("the data stream ended".into()))??;
        self.position = stream.next_position();
        let step = self.step + 1;
        let seed = self.config().run.seed;
        let x = match &self.augmenter {
            // Each image's choices come from the seed, the step and its index in the batch.
            Some(a) => a.augment(&batch.images, seed, step)?.0,
            None => batch.images.clone(),
        };
        let x = x.to_device(self.model.device())?;
        let mut noise = Rng::derive(seed, &[NOISE, step]);
        let fwd = self.model.forward_train(&x, batch.features.as_ref(), &mut noise)?;
        let raw_sum = fwd.raw.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !raw_sum.is_finite() {
            return Err(Error::NonFinite { step, term: "generator output".into(), value: raw_sum });
        }
        let generated = straight_through_clamp(&fwd.raw)?;
        let judgement = match &self.adversary {
            // The masks are drawn from the steps completed before this one, as they always
            // were: a run repeats the numbers of earlier versions.
            Some(a) => Some(a.judge(&x, &generated, fwd.code.as_ref(), self.step)?),
            None => None,
        };
        let feature_phase = self.config().loss.feature_jitter.then(|| {
            let mut rng = Rng::derive(seed, &[JITTER, step]);
            (rng.below(2) as usize, rng.below(2) as usize)
        });
        let out = self.loss.generator_terms(
            &generated,
            &x,
            StepInputs {
                fake_logits: judgement.as_ref().map(|j| &j.fake_logits),
                posterior: fwd.posterior.as_ref().map(|(m, v)| (m, v)),
                target_features: fwd
                    .target_features
                    .as_ref()
                    .filter(|_| self.comparator_is_encoder && feature_phase.is_none())
                    .map(std::slice::from_ref),
                feature_phase,
                adaptive: self.last_layer.as_ref().map(|w| (step, w)),
            },
        )?;
        let cycle = match (&fwd.degraded, &self.config().restore) {
            (Some(y), Some(r)) if r.lambda_cycle > 0.0 => {
                Some(self.cycle_term(&generated, y, r.cycle_space)?)
            }
            _ => None,
        };
        let mut total = match (&cycle, &self.config().restore) {
            (Some(c), Some(r)) => (&out.total + (c * r.lambda_cycle)?)?,
            _ => out.total.clone(),
        };
        let diversity = match (&self.diversity, &self.config().diversity) {
            (Some((comparator, tap)), Some(d)) => {
                let mut rng = Rng::derive(seed, &[DIVERSITY, step]);
                let samples = self.model.prior_samples_train(d.samples, &mut rng)?;
                let samples = straight_through_clamp(&samples)?;
                let penalty = diversity_penalty(comparator.as_ref(), *tap, &samples, d.sigma)?;
                total = (total + (&penalty * d.lambda)?)?;
                Some(penalty)
            }
            _ => None,
        };
        let scalar =
            |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let mut terms = BTreeMap::new();
        if let Some(c) = &cycle {
            terms.insert("cycle".to_string(), scalar(c)?);
        }
        if let Some(d) = &diversity {
            terms.insert("div".to_string(), scalar(d)?);
        }
        for (name, t) in
            [("feat", &out.feat), ("img", &out.img), ("adv", &out.adv), ("kl", &out.kl)]
        {
            if let Some(t) = t {
                terms.insert(name.to_string(), scalar(t)?);
            }
        }
        if let Some(j) = &judgement {
            terms.insert("discr".to_string(), scalar(&j.loss)?);
        }
        if self.last_layer.is_some() {
            terms.insert("adv_weight".to_string(), out.adv_factor);
        }
        terms.insert("total".to_string(), scalar(&total)?);
        for (term, &value) in &terms {
            if !value.is_finite() {
                return Err(Error::NonFinite { step, term: term.clone(), value });
            }
        }

        let grads = deepsim_kernels::backward(&total)?;
        self.g_adam.step(&grads)?;
        check_finite(&self.g_adam, &self.model.vars, step, "generator weights")?;
        let mut updated = None;
        if let (Some(a), Some(j)) = (self.adversary.as_mut(), &judgement) {
            let update = a.update(&j.loss, terms["discr"], terms["adv"])?;
            if update {
                check_finite(&a.adam, &a.vars, step, "discriminator weights")?;
            }
            updated = Some(update);
        }
        self.step = step;
        let log = StepLog {
            step,
            position: batch.position,
            terms,
            discriminator_updated: updated,
            seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(log.clone());
        Ok(log)
    }

    /// The cycle term of a super-resolution step: the output shrunk again, D(G(y)), against
    /// the input y, in `space`.
    fn cycle_term(&self, generated: &Tensor, y: &Tensor, space: CycleSpace) -> Result<Tensor> {
        let degradation = self.model.degradation().ok_or_else(|| {
            Error::Config("restore.lambda_cycle: the model is not a restorer".into())
        })?;
        let again = degradation.shrink(generated)?;
        Ok(match space {
            CycleSpace::Pixels => (again - y)?.sqr()?.mean_all()?,
            CycleSpace::Lab => {
                let d = (deepsim_metrics::srgb_to_lab(&again)? - deepsim_metrics::srgb_to_lab(y)?)?;
                d.sqr()?.sum(1)?.mean_all()?
            }
            CycleSpace::Comparator => self.loss.feature_distance(&again, y)?.ok_or_else(|| {
                Error::Config(
                    "restore.cycle_space = \"comparator\" needs the feature term (loss.lambda_feat > 0)"
                        .into(),
                )
            })?,
        })
    }

    /// Trains until `run.steps` (or `stop` is raised), calling `observe` after every step;
    /// appends to `metrics.jsonl`, writes sample grids and curves every `run.sample_every`
    /// steps and a checkpoint every `run.checkpoint_every` steps, at the end, and when stopped.
    ///
    /// # Errors
    /// As [`Trainer::step`] (a non-finite loss stops the run with the previous checkpoint
    /// kept), and I/O errors naming the file.
    pub fn run(&mut self, stop: &AtomicBool, observe: &mut dyn FnMut(&StepLog)) -> Result<()> {
        let out = self.config().run.out.clone();
        std::fs::create_dir_all(&out).map_err(|e| Error::Io { path: out.clone(), source: e })?;
        let metrics_path = out.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| Error::Io { path: metrics_path.clone(), source: e })?;
        while self.step < self.config().run.steps {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let log = self.step()?;
            use std::io::Write;
            writeln!(metrics, "{}", log.to_json())
                .map_err(|e| Error::Io { path: metrics_path.clone(), source: e })?;
            observe(&log);
            if self.step.is_multiple_of(self.config().run.sample_every) {
                self.write_samples()?;
            }
            if self.step.is_multiple_of(self.config().run.checkpoint_every) {
                self.save_checkpoint()?;
            }
        }
        if !self.step.is_multiple_of(self.config().run.checkpoint_every) {
            self.save_checkpoint()?;
        }
        if !self.step.is_multiple_of(self.config().run.sample_every) {
            self.write_samples()?;
        }
        Ok(())
    }

    /// Writes `samples/step_NNNNNN.png` (validation targets above their reconstructions; a
    /// restorer's baseline between them) and
    /// `curves.png`; returns the grid's path.
    ///
    /// # Errors
    /// Tensor and I/O errors.
    pub fn write_samples(&self) -> Result<PathBuf> {
        let dir = self.config().run.out.join("samples");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
        let code = self.model.encode(&self.val)?;
        let recon = self.model.decode(&code)?;
        let path = dir.join(format!("step_{:06}.png", self.step));
        // A restorer's grid has its baseline (the degraded input, enlarged) between the two,
        // from the same degraded images.
        match self.model.degradation() {
            Some(d) => write_grid(&path, &[&self.val, &d.estimate(&code)?, &recon])?,
            None => write_grid(&path, &[&self.val, &recon])?,
        }
        write_curves(&self.config().run.out.join("curves.png"), &self.history)?;
        Ok(path)
    }

    /// Writes the checkpoint (generator, discriminator, Adam moments, step, data position,
    /// pause counters, the configuration) atomically; the one it replaces becomes
    /// `checkpoint.prev.safetensors`.
    ///
    /// # Errors
    /// I/O errors naming the file (the previous checkpoint is kept).
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let out = &self.config().run.out;
        std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.clone(), source: e })?;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, var) in self.model.vars.data().lock().unwrap_or_else(|e| e.into_inner()).iter() {
            tensors.push((name.clone(), var.as_tensor().clone()));
        }
        tensors.extend(self.g_adam.state("adam_g")?);
        let mut meta: HashMap<String, String> = self.loader.resume_state(self.position);
        meta.insert("format".into(), FORMAT.into());
        let config = toml::to_string(self.config())
            .map_err(|e| Error::Config(format!("the configuration does not serialize: {e}")))?;
        meta.insert("config".into(), config);
        meta.insert("step".into(), self.step.to_string());
        meta.insert(DATA_SHA256.into(), CHECKSUM_PENDING.into());
        meta.insert("adam_g.t".into(), self.g_adam.t.to_string());
        if let Some(a) = &self.adversary {
            a.save(&mut tensors, &mut meta)?;
        }
        let path = out.join(CHECKPOINT);
        let mut bytes =
            safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
                .map_err(|e| Error::Checkpoint { path: path.clone(), reason: e.to_string() })?;
        seal_checksum(&mut bytes)
            .map_err(|reason| Error::Checkpoint { path: path.clone(), reason })?;
        if path.exists() {
            let prev = out.join(PREVIOUS);
            std::fs::rename(&path, &prev).map_err(|e| Error::Io { path: prev, source: e })?;
        }
        write_atomic(&path, &bytes)?;
        Ok(path)
    }

    fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let prev = self.config().run.out.join(PREVIOUS);
        let bad = |reason: String| {
            let reason = if reason.contains(DAMAGED) && prev.is_file() {
                format!(
                    "{reason}; {} holds the checkpoint before it: rename it to {CHECKPOINT} to \
                     resume from there",
                    prev.display()
                )
            } else {
                reason
            };
            Error::Checkpoint { path: path.to_path_buf(), reason }
        };
        let Checkpoint { bytes, meta, config: then } = read_checkpoint(path, bad)?;
        let differences = resume_differences(&then, self.config());
        if !differences.is_empty() {
            return Err(bad(format!(
                "written for another configuration; a resume may change only {}, and these \
                 differ:\n  {}",
                crate::checkpoint::RESUME_MAY_CHANGE.join(", "),
                differences.join("\n  ")
            )));
        }
        let tensors = candle::safetensors::load_buffer(&bytes, self.model.device())
            .map_err(|e| bad(format!("corrupt or truncated ({e})")))?;
        let num = |key: &str| -> std::result::Result<u64, String> {
            meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| format!("no {key}"))
        };
        set_vars(&self.model.vars, &tensors).map_err(bad)?;
        self.g_adam.load_state("adam_g", &tensors, num("adam_g.t").map_err(bad)?).map_err(bad)?;
        if let Some(a) = self.adversary.as_mut() {
            a.load(&tensors, &num).map_err(bad)?;
        }
        self.position = self.loader.resume_position(&meta).map_err(|e| bad(e.to_string()))?;
        self.step = num("step").map_err(bad)?;
        self.stream = None;
        Ok(())
    }

    /// Drops `metrics.jsonl` lines after the resumed step, and reloads the history for curves.
    fn truncate_metrics(&mut self) -> Result<()> {
        let path = self.config().run.out.join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let mut kept = String::new();
        self.history.clear();
        for line in text.lines() {
            // A line a killed run left half-written is dropped with the steps after it.
            let Ok(log) = StepLog::from_json(line) else { continue };
            if log.step <= self.step {
                kept.push_str(line);
                kept.push('\n');
                self.history.push(log);
            }
        }
        write_atomic(&path, kept.as_bytes())?;
        Ok(())
    }
}

/// Stops the run when `adam`'s last update left a variable of `vars` NaN or infinite, before
/// it is checkpointed; the error names the variable and carries its sum.
fn check_finite(adam: &Adam, vars: &VarMap, step: u64, what: &str) -> Result<()> {
    let Some(name) = adam.non_finite() else { return Ok(()) };
    let data = vars.data().lock().unwrap_or_else(|e| e.into_inner());
    let value = match data.get(name) {
        Some(var) => var.as_tensor().sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        None => f64::NAN,
    };
    Err(Error::NonFinite { step, term: format!("{what} ({name})"), value })
}

/// `clamp(x, 0, 1)` forward with the identity's gradient: G's linear output enters the
/// losses (and the comparators, whose inputs must lie in [0, 1]) clamped, while pixels
/// outside the range still receive the gradient that pulls them back. Exactly the clamp
/// (`deepsim_kernels::straight_through_clamp`): `x + (clamp(x) − x).detach()` let values such
/// as 2 through once G's outputs grew large, and the comparator refused them.
fn straight_through_clamp(x: &Tensor) -> Result<Tensor> {
    Ok(deepsim_kernels::straight_through_clamp(x, 0.0, 1.0)?)
}
