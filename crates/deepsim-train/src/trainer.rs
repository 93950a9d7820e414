//! The training loop for feature inversion (§3 of the paper): y = E(x) at a tap of a frozen
//! encoder, x̂ = G(y), G trained with the DeePSiM loss (or any λ = 0 ablation of it), the
//! discriminator trained alongside with the pause rule; checkpoints, metrics and samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle::{DType, Tensor};
use candle_nn::VarMap;
use deepsim_comparators::{by_name, Comparator};
use deepsim_data::{
    stack, write_atomic, Dataset, FolderConfig, ImageFolder, Loader, LoaderConfig, Position, Rng,
    Stream, Transform, Validation,
};
use deepsim_losses::{
    discriminator_loss, two_way_logit, AdversarialKind, DeepSimLoss, DeepSimWeights,
    DiscriminatorPause, FeatureLoss, FeatureNorm, Reduction, StepInputs,
};
use deepsim_models::{Discriminator, DiscriminatorConfig, DropoutMasks};

use crate::adam::Adam;
use crate::config::{parse_device, DiscriminatorPreset, FeatureNormName, TrainConfig};
use crate::error::{Error, Result};
use crate::images::{write_curves, write_grid};
use crate::init::seeded;
use crate::model::{
    checkpoint_metadata, seal_checksum, set_vars, standard_normal, tap_named, Kind, Model,
    CHECKSUM_PENDING, DAMAGED, DATA_SHA256, FORMAT,
};

const CHECKPOINT: &str = "checkpoint.safetensors";
const PREVIOUS: &str = "checkpoint.prev.safetensors";
const DROPOUT: u64 = 0xD0;
const NOISE: u64 = 0x5A;
const JITTER: u64 = 0x1F;

/// What one step did: its position in the data, every loss term (unweighted), whether the
/// discriminator was updated, and the wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLog {
    /// The step just completed (from 1).
    pub step: u64,
    /// The batch it used.
    pub position: Position,
    /// `feat`, `img`, `adv`, `discr` (those switched on) and `total` (the weighted sum the
    /// generator minimizes).
    pub terms: BTreeMap<String, f64>,
    /// Whether the discriminator was updated (the pause rule), when there is one.
    pub discriminator_updated: Option<bool>,
    /// Seconds the step took.
    pub seconds: f64,
}

impl StepLog {
    /// The step as one JSON line of `metrics.jsonl`.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"step\":{},\"epoch\":{},\"batch\":{}",
            self.step, self.position.epoch, self.position.batch
        );
        for (k, v) in &self.terms {
            s.push_str(&format!(",\"{k}\":{v:e}"));
        }
        if let Some(u) = self.discriminator_updated {
            s.push_str(&format!(",\"d_updated\":{u}"));
        }
        s.push_str(&format!(",\"seconds\":{:.4}}}", self.seconds));
        s
    }
}

/// The networks of an inversion run and their optimizers.
struct Discrim {
    net: Discriminator,
    vars: VarMap,
    adam: Adam,
}

/// A feature-inversion training run.
pub struct Trainer {
    /// The networks, the run's configuration and device.
    model: Model,
    g_adam: Adam,
    discriminator: Option<Discrim>,
    loss: DeepSimLoss,
    /// The loss's comparator and tap are the encoder's: the target's features are y.
    comparator_is_encoder: bool,
    pause: DiscriminatorPause,
    loader: Loader,
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

impl Trainer {
    /// A fresh run: networks initialized from `run.seed`, nothing written yet.
    ///
    /// # Errors
    /// [`Error::Config`] when `run.out` already holds a run (a checkpoint, the previous
    /// checkpoint a failed save leaves alone, or a `metrics.jsonl` a killed run left): a fresh
    /// run would overwrite it or append to its log, so it must be resumed, moved or removed;
    /// data, comparator and model errors.
    pub fn new(config: TrainConfig) -> Result<Self> {
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
        let trainer = Self::build(config)?;
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
        let mut trainer = Self::build(config)?;
        trainer.load_checkpoint(&path)?;
        trainer.truncate_metrics()?;
        Ok(trainer)
    }

    fn build(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let device = parse_device(&config.run.device)?;
        let seed = config.run.seed;

        // Data: training crops (random unless flips and crops are off) and validation centre
        // crops for the sample grids.
        let mut train_t = Transform::train(config.data.resize, config.data.crop);
        train_t.hflip = config.data.flip;
        let mut folder = FolderConfig::new(train_t);
        folder.validation = Validation::Full;
        let train = ImageFolder::open(&config.data.train, folder)?;
        let mut val_cfg = FolderConfig::new(Transform::eval(config.data.resize, config.data.crop));
        val_cfg.validation = Validation::Full;
        let val_set = ImageFolder::open(&config.data.val, val_cfg)?;
        let n_val = config.run.samples.min(val_set.len()).max(1);
        let shown: Vec<usize> = (0..n_val).collect();
        let val = stack(&val_set, &shown, |_| Rng::new(0))?.images.to_device(&device)?;
        let workers = if config.data.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            config.data.workers
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
        let loader = Loader::new(
            Arc::new(train),
            LoaderConfig {
                batch_size: config.data.batch_size,
                shuffle: true,
                drop_last: true,
                seed,
                workers,
                prefetch: 2 * workers,
            },
        )?;

        // The generator and what feeds it: the encoder E, or the VAE's own encoder.
        let model = Model::build(&config, &device)?;
        let o = &config.optim;
        let g_adam = Adam::new(&model.vars, o.lr, o.beta1, o.beta2, o.eps)?;
        let cond_dim = match &model.kind {
            Kind::Invert(inv) => Some(inv.dim),
            Kind::Vae(_) => None,
        };

        let l = &config.loss;
        let discriminator = if l.lambda_adv > 0.0 {
            let cond = cond_dim.filter(|_| config.discriminator.conditioned);
            let dcfg = match config.discriminator.preset {
                DiscriminatorPreset::Cpu64 => {
                    DiscriminatorConfig::cpu_64(cond, config.discriminator.width)
                }
                DiscriminatorPreset::Paper => DiscriminatorConfig::paper(cond),
            };
            let (net, vars) = seeded(seed ^ 0xD15C, &device, |vb| {
                Ok(Discriminator::new(dcfg, vb.pp("discriminator"))?)
            })?;
            let adam = Adam::new(&vars, o.lr, o.beta1, o.beta2, o.eps)?;
            Some(Discrim { net, vars, adam })
        } else {
            None
        };

        // When the comparator is the encoder at the same tap (the paper's setup), C(x) = y: the
        // step hands the encoder's features to the loss instead of computing them twice.
        let mut comparator_is_encoder = false;
        let feature = match (&l.comparator, &l.comparator_tap) {
            (Some(name), Some(ctaps)) if l.lambda_feat > 0.0 => {
                let shared = match (&model.kind, &config.encoder) {
                    (Kind::Invert(inv), Some(enc))
                        if *name == enc.network && l.comparator_weights == enc.weights =>
                    {
                        comparator_is_encoder = ctaps.names() == [enc.tap.as_str()];
                        Some(inv.encoder.clone())
                    }
                    _ => None,
                };
                let c: Arc<dyn Comparator + Send + Sync> = match shared {
                    Some(c) => c,
                    None => Arc::from(by_name(name, l.comparator_weights.as_deref(), &device)?),
                };
                let norm = match l.feature_norm {
                    FeatureNormName::Sum => FeatureNorm::Sum,
                    FeatureNormName::Mean => FeatureNorm::Mean,
                };
                let taps = ctaps
                    .names()
                    .into_iter()
                    .map(|t| Ok((tap_named(t, "loss.comparator_tap")?, 1.0)))
                    .collect::<Result<Vec<_>>>()?;
                Some(FeatureLoss::new(c, &taps, norm, Reduction::Mean)?)
            }
            _ => None,
        };
        let weights = DeepSimWeights {
            feat: l.lambda_feat,
            adv: l.lambda_adv,
            img: l.lambda_img,
            kl: l.lambda_kl,
            pixel_scale: l.pixel_scale,
        };
        let loss = DeepSimLoss::new(weights, feature, AdversarialKind::Logistic, Reduction::Mean)?;
        let pause = DiscriminatorPause::with_threshold(l.pause_threshold)?;
        Ok(Trainer {
            model,
            g_adam,
            discriminator,
            loss,
            comparator_is_encoder,
            pause,
            loader,
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

    /// The discriminator's pause counters.
    pub fn pause(&self) -> &DiscriminatorPause {
        &self.pause
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
        self.discriminator.as_ref().map(|d| &d.vars)
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

    fn masks(&self, d: &Discriminator, n: usize, which: u64) -> Result<DropoutMasks> {
        let p = d.dropout_rate();
        let (wp, wh) = d.dropout_widths();
        let mut rng = Rng::derive(self.config().run.seed, &[DROPOUT, self.step, which]);
        let keep = 1.0 / (1.0 - p);
        let mut draw = |w: usize| -> Result<Tensor> {
            let v: Vec<f32> =
                (0..n * w).map(|_| if rng.uniform() >= p { keep as f32 } else { 0.0 }).collect();
            Ok(Tensor::from_vec(v, (n, w), self.model.device())?)
        };
        Ok(DropoutMasks { pooled: draw(wp)?, hidden: draw(wh)? })
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
        let x = batch.images.to_device(self.model.device())?;
        let n = x.dim(0)?;
        // The generator's output, what conditions the discriminator, C(x) when the
        // comparator is the encoder, and the VAE's posterior.
        let mut target_map = None;
        let mut cond_y = None;
        let mut posterior = None;
        let raw = match &self.model.kind {
            Kind::Invert(inv) => {
                let map = inv.encoder.features(&x, &[inv.tap])?.remove(0).detach();
                let y = map.flatten_from(1)?;
                let raw = inv.generator.forward(if inv.map_input { &map } else { &y })?;
                target_map = Some(map);
                cond_y = Some(y);
                raw
            }
            Kind::Vae(vae) => {
                let latent = vae.config().latent;
                let mut rng = Rng::derive(self.config().run.seed, &[NOISE, step]);
                let eps = standard_normal(&mut rng, (n, latent), self.model.device())?;
                let out = vae.forward_with_noise(&x, &eps)?;
                posterior = Some((out.mu, out.log_var));
                out.reconstruction
            }
        };
        let raw_sum = raw.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !raw_sum.is_finite() {
            return Err(Error::NonFinite { step, term: "generator output".into(), value: raw_sum });
        }
        let generated = straight_through_clamp(&raw)?;
        let cond = cond_y.as_ref().filter(|_| self.config().discriminator.conditioned);

        let mut terms = BTreeMap::new();
        let (fake_logit, discr_loss) = match &self.discriminator {
            Some(d) => {
                let real_masks = self.masks(&d.net, n, 0)?;
                let fake_masks = self.masks(&d.net, n, 1)?;
                let real = two_way_logit(&d.net.forward_masked(&x, cond, &real_masks)?)?;
                let fake_d = two_way_logit(&d.net.forward_masked(
                    &generated.detach(),
                    cond,
                    &fake_masks,
                )?)?;
                let l_discr =
                    discriminator_loss(&real, &fake_d, AdversarialKind::Logistic, Reduction::Mean)?;
                let fake_g =
                    two_way_logit(&d.net.forward_masked(&generated, cond, &fake_masks)?)?;
                (Some(fake_g), Some(l_discr))
            }
            None => (None, None),
        };
        let feature_phase = self.config().loss.feature_jitter.then(|| {
            let mut rng = Rng::derive(self.config().run.seed, &[JITTER, step]);
            (rng.below(2) as usize, rng.below(2) as usize)
        });
        let out = self.loss.generator_terms(
            &generated,
            &x,
            StepInputs {
                fake_logits: fake_logit.as_ref(),
                posterior: posterior.as_ref().map(|(m, v)| (m, v)),
                target_features: target_map
                    .as_ref()
                    .filter(|_| self.comparator_is_encoder && feature_phase.is_none())
                    .map(std::slice::from_ref),
                feature_phase,
                ..Default::default()
            },
        )?;
        for (name, t) in
            [("feat", &out.feat), ("img", &out.img), ("adv", &out.adv), ("kl", &out.kl)]
        {
            if let Some(t) = t {
                terms.insert(name.to_string(), t.to_dtype(DType::F64)?.to_scalar::<f64>()?);
            }
        }
        if let Some(l) = &discr_loss {
            terms.insert("discr".to_string(), l.to_dtype(DType::F64)?.to_scalar::<f64>()?);
        }
        terms.insert("total".to_string(), out.total.to_dtype(DType::F64)?.to_scalar::<f64>()?);
        for (term, &value) in &terms {
            if !value.is_finite() {
                return Err(Error::NonFinite { step, term: term.clone(), value });
            }
        }

        let grads = out.total.backward()?;
        self.g_adam.step(&grads)?;
        check_finite(&self.model.vars, step, "generator weights")?;
        let mut updated = None;
        if let (Some(d), Some(l_discr)) = (self.discriminator.as_mut(), discr_loss) {
            let update = self.pause.step(terms["discr"], terms["adv"]);
            if update {
                let grads = l_discr.backward()?;
                d.adam.step(&grads)?;
                check_finite(&d.vars, step, "discriminator weights")?;
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

    /// Writes `samples/step_NNNNNN.png` (validation targets above their reconstructions) and
    /// `curves.png`; returns the grid's path.
    ///
    /// # Errors
    /// Tensor and I/O errors.
    pub fn write_samples(&self) -> Result<PathBuf> {
        let dir = self.config().run.out.join("samples");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
        let recon = self.reconstruct(&self.val)?;
        let path = dir.join(format!("step_{:06}.png", self.step));
        write_grid(&path, &[&self.val, &recon])?;
        write_curves(&self.config().run.out.join("curves.png"), &self.history)?;
        Ok(path)
    }

    /// What a checkpoint must share with the configuration resuming it: everything that
    /// shapes the networks, the optimizers, the data order or the loss.
    fn compat(&self) -> String {
        let c = self.config();
        format!(
            "task {:?} encoder {:?} vae {:?} comparator {:?}:{} norm {:?} jitter {} generator {:?} width {} discriminator {:?} lambdas {} {} {} {} crop {} resize {} seed {}",
            c.run.task,
            c.encoder.as_ref().map(|e| format!("{}:{}", e.network, e.tap)),
            c.vae.as_ref().map(|v| v.latent),
            c.loss.comparator,
            c.loss.comparator_tap.as_ref().map(ToString::to_string).unwrap_or_default(),
            c.loss.feature_norm,
            c.loss.feature_jitter,
            c.generator.preset,
            c.generator.width,
            self.discriminator.as_ref().map(|_| (&c.discriminator.preset, c.discriminator.width, c.discriminator.conditioned)),
            c.loss.lambda_feat,
            c.loss.lambda_adv,
            c.loss.lambda_img,
            c.loss.lambda_kl,
            c.data.crop,
            c.data.resize,
            c.run.seed
        )
    }

    /// Writes the checkpoint (generator, discriminator, Adam moments, step, data position,
    /// pause counters) atomically; the one it replaces becomes `checkpoint.prev.safetensors`.
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
        let mut meta = self.loader.resume_state(self.position);
        meta.insert("format".into(), FORMAT.into());
        meta.insert("compat".into(), self.compat());
        let config = toml::to_string(self.config())
            .map_err(|e| Error::Config(format!("the configuration does not serialize: {e}")))?;
        meta.insert("config".into(), config);
        meta.insert("step".into(), self.step.to_string());
        meta.insert(DATA_SHA256.into(), CHECKSUM_PENDING.into());
        meta.insert("adam_g.t".into(), self.g_adam.t.to_string());
        meta.insert("pause.paused".into(), self.pause.paused_steps.to_string());
        meta.insert("pause.updated".into(), self.pause.updated_steps.to_string());
        if let Some(d) = &self.discriminator {
            for (name, var) in d.vars.data().lock().unwrap_or_else(|e| e.into_inner()).iter() {
                tensors.push((name.clone(), var.as_tensor().clone()));
            }
            tensors.extend(d.adam.state("adam_d")?);
            meta.insert("adam_d.t".into(), d.adam.t.to_string());
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
        let bytes =
            std::fs::read(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        let meta = checkpoint_metadata(&bytes).map_err(bad)?;
        let compat = self.compat();
        if meta.get("compat") != Some(&compat) {
            return Err(bad(format!(
                "written for another configuration:\n  checkpoint: {}\n  config:     {compat}",
                meta.get("compat").map(String::as_str).unwrap_or("?")
            )));
        }
        let tensors = candle::safetensors::load_buffer(&bytes, self.model.device())
            .map_err(|e| bad(format!("corrupt or truncated ({e})")))?;
        let num = |key: &str| -> Result<u64> {
            meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| bad(format!("no {key}")))
        };
        set_vars(&self.model.vars, &tensors).map_err(bad)?;
        self.g_adam.load_state("adam_g", &tensors, num("adam_g.t")?).map_err(bad)?;
        if let Some(d) = self.discriminator.as_mut() {
            set_vars(&d.vars, &tensors).map_err(bad)?;
            let t = num("adam_d.t")?;
            d.adam.load_state("adam_d", &tensors, t).map_err(bad)?;
        }
        self.position = self.loader.resume_position(&meta).map_err(|e| bad(e.to_string()))?;
        self.step = num("step")?;
        self.pause.paused_steps = num("pause.paused")?;
        self.pause.updated_steps = num("pause.updated")?;
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
            let Some(log) = parse_log(line) else { continue };
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

/// Stops the run when an update left a variable NaN or infinite, before it is checkpointed.
fn check_finite(vars: &VarMap, step: u64, what: &str) -> Result<()> {
    for (name, var) in vars.data().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let s = var.as_tensor().sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !s.is_finite() {
            return Err(Error::NonFinite { step, term: format!("{what} ({name})"), value: s });
        }
    }
    Ok(())
}

/// `clamp(x, 0, 1)` forward with the identity's gradient: G's linear output enters the
/// losses (and the comparators, whose inputs must lie in [0, 1]) clamped, while pixels
/// outside the range still receive the gradient that pulls them back. Exactly the clamp
/// (`deepsim_kernels::straight_through_clamp`): `x + (clamp(x) − x).detach()` let values such
/// as 2 through once G's outputs grew large, and the comparator refused them.
fn straight_through_clamp(x: &Tensor) -> Result<Tensor> {
    Ok(deepsim_kernels::straight_through_clamp(x, 0.0, 1.0)?)
}

/// Reads a line written by [`StepLog::to_json`].
pub fn parse_log(line: &str) -> Option<StepLog> {
    let body = line.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut log = StepLog {
        step: 0,
        position: Position::default(),
        terms: BTreeMap::new(),
        discriminator_updated: None,
        seconds: 0.0,
    };
    for pair in body.split(',') {
        let (k, v) = pair.split_once(':')?;
        let k = k.trim().trim_matches('"');
        match k {
            "step" => log.step = v.parse().ok()?,
            "epoch" => log.position.epoch = v.parse().ok()?,
            "batch" => log.position.batch = v.parse().ok()?,
            "seconds" => log.seconds = v.parse().ok()?,
            "d_updated" => log.discriminator_updated = Some(v == "true"),
            _ => {
                log.terms.insert(k.to_string(), v.parse().ok()?);
            }
        }
    }
    Some(log)
}
