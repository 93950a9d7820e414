//! The discriminator trained alongside the generator: its network and Adam, its dropout masks
//! (drawn from the run's seed and the step, so a resumed run draws the same), its loss (of the
//! configured adversarial kind) and the paper's pause rule.

use std::collections::HashMap;

use candle::{Device, Tensor};
use candle_nn::VarMap;
use deepsim_data::Rng;
use deepsim_losses::{
    discriminator_loss, two_way_logit, AdversarialKind, DiscriminatorPause, Reduction,
};
use deepsim_models::{Discriminator, DiscriminatorConfig, DropoutMasks};

use crate::adam::Adam;
use crate::config::{DiscriminatorPreset, TrainConfig};
use crate::error::Result;
use crate::init::seeded;

/// Domain of the dropout masks' random streams.
const DROPOUT: u64 = 0xD0;

/// The discriminator of a run with λ_adv > 0.
pub(crate) struct Adversary {
    net: Discriminator,
    pub(crate) vars: VarMap,
    pub(crate) adam: Adam,
    pub(crate) pause: DiscriminatorPause,
    kind: AdversarialKind,
    conditioned: bool,
    seed: u64,
    device: Device,
}

/// What one step's discriminator pass gives: the generated images' logits with the graph back
/// to the generator (for L_adv), and L_discr with its graph to the discriminator only.
pub(crate) struct Judgement {
    pub fake_logits: Tensor,
    pub loss: Tensor,
}

impl Adversary {
    /// The discriminator of `config` (conditioned on codes of `cond_dim` elements when
    /// `discriminator.conditioned` and the task has codes), or `None` when λ_adv = 0.
    ///
    /// # Errors
    /// A pause threshold out of range; model errors.
    pub fn build(
        config: &TrainConfig,
        cond_dim: Option<usize>,
        device: &Device,
    ) -> Result<Option<Self>> {
        let l = &config.loss;
        if l.lambda_adv == 0.0 {
            return Ok(None);
        }
        let d = &config.discriminator;
        let cond = cond_dim.filter(|_| d.conditioned);
        let dcfg = match d.preset {
            DiscriminatorPreset::Cpu64 => DiscriminatorConfig::cpu_64(cond, d.width),
            DiscriminatorPreset::Paper => DiscriminatorConfig::paper(cond),
        };
        let seed = config.run.seed;
        let (net, vars) = seeded(seed ^ 0xD15C, device, |vb| {
            Ok(Discriminator::new(dcfg, vb.pp("discriminator"))?)
        })?;
        let o = &config.optim;
        let adam = Adam::new(&vars, o.lr, o.beta1, o.beta2, o.eps)?;
        Ok(Some(Adversary {
            net,
            vars,
            adam,
            pause: DiscriminatorPause::with_threshold(l.pause_threshold)?,
            kind: l.adversarial,
            conditioned: cond.is_some(),
            seed,
            device: device.clone(),
        }))
    }

    /// The dropout masks of `n` images, drawn from the seed and `completed` (the steps done
    /// before this one); `which` 0 for the real images, 1 for the generated ones (the
    /// generator's pass sees the masks the discriminator's did).
    fn masks(&self, n: usize, completed: u64, which: u64) -> Result<DropoutMasks> {
        let p = self.net.dropout_rate();
        let (wp, wh) = self.net.dropout_widths();
        let mut rng = Rng::derive(self.seed, &[DROPOUT, completed, which]);
        let keep = (1.0 / (1.0 - p)) as f32;
        let mut draw = |w: usize| -> Result<Tensor> {
            let v: Vec<f32> =
                (0..n * w).map(|_| if rng.uniform() >= p { keep } else { 0.0 }).collect();
            Ok(Tensor::from_vec(v, (n, w), &self.device)?)
        };
        Ok(DropoutMasks { pooled: draw(wp)?, hidden: draw(wh)? })
    }

    /// Judges the real images `x` and the generated ones, after `completed` steps; `code` is
    /// the generator's input, used when the discriminator is conditioned.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn judge(
        &self,
        x: &Tensor,
        generated: &Tensor,
        code: Option<&Tensor>,
        completed: u64,
    ) -> Result<Judgement> {
        let n = x.dim(0)?;
        let cond = code.filter(|_| self.conditioned);
        let (real_masks, fake_masks) = (self.masks(n, completed, 0)?, self.masks(n, completed, 1)?);
        let real = two_way_logit(&self.net.forward_masked(x, cond, &real_masks)?)?;
        let fake =
            two_way_logit(&self.net.forward_masked(&generated.detach(), cond, &fake_masks)?)?;
        let loss = discriminator_loss(&real, &fake, self.kind, Reduction::Mean)?;
        // The generator's term: through the same network with its weights detached, so that
        // its backward computes no discriminator gradients (the discriminator's own update
        // comes from `loss`).
        let frozen = self.net.detached();
        let fake_logits = two_way_logit(&frozen.forward_masked(generated, cond, &fake_masks)?)?;
        Ok(Judgement { fake_logits, loss })
    }

    /// Updates the discriminator from `loss` unless the pause rule (on the values `l_discr`
    /// and the generator's `l_adv`) holds it; returns whether it was updated.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn update(&mut self, loss: &Tensor, l_discr: f64, l_adv: f64) -> Result<bool> {
        let update = self.pause.step(l_discr, l_adv);
        if update {
            let grads = deepsim_kernels::backward(loss)?;
            self.adam.step(&grads)?;
        }
        Ok(update)
    }

    /// Its tensors (weights, Adam's moments) and metadata for a checkpoint.
    pub fn save(
        &self,
        tensors: &mut Vec<(String, Tensor)>,
        meta: &mut HashMap<String, String>,
    ) -> Result<()> {
        for (name, var) in self.vars.data().lock().unwrap_or_else(|e| e.into_inner()).iter() {
            tensors.push((name.clone(), var.as_tensor().clone()));
        }
        tensors.extend(self.adam.state("adam_d")?);
        meta.insert("adam_d.t".into(), self.adam.t.to_string());
        meta.insert("pause.paused".into(), self.pause.paused_steps.to_string());
        meta.insert("pause.updated".into(), self.pause.updated_steps.to_string());
        Ok(())
    }

    /// Restores what [`Adversary::save`] wrote.
    pub fn load(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        num: &dyn Fn(&str) -> std::result::Result<u64, String>,
    ) -> std::result::Result<(), String> {
        crate::checkpoint::set_vars(&self.vars, tensors)?;
        self.adam.load_state("adam_d", tensors, num("adam_d.t")?)?;
        self.pause.paused_steps = num("pause.paused")?;
        self.pause.updated_steps = num("pause.updated")?;
        Ok(())
    }
}
