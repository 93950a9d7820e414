//! The discriminator of DeePSiM (Dosovitskiy & Brox 2016, §3.1 and supplementary material):
//! five convolutions with occasional stride, global average pooling, two fully connected
//! layers and a 2-way output (generated, real); 50 % dropout after the pooling and after the
//! first fully connected layer; optionally conditioned on the feature vector y, which passes
//! through fully connected layers and is concatenated after the pooling.

use candle::{Module, ModuleT, Tensor};
use candle_nn::{Dropout, VarBuilder};

use crate::error::{Error, Result};
use crate::layers::{linear, scaled, Conv, Dense};

/// A discriminator's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscriminatorConfig {
    /// The convolutions: (output channels, kernel, stride); padding is `kernel / 2`.
    pub convs: Vec<(usize, usize, usize)>,
    /// Width of the first fully connected layer.
    pub fc: usize,
    /// Conditioning on a feature vector: (its length, width of each of its two fully connected
    /// layers); `None` for an unconditional discriminator.
    pub condition: Option<(usize, usize)>,
    /// Dropout probability after the pooling and after the first fully connected layer.
    pub dropout: f32,
    /// Slope of the leaky ReLU after every layer but the output.
    pub alpha: f64,
}

impl DiscriminatorConfig {
    /// The paper's size (our reading of its supplementary table): convolutions 7×7/4 to 32,
    /// 5×5/1 to 64, 3×3/2 to 128, 3×3/1 to 256, 3×3/2 to 256; fully connected 512; dropout 0.5;
    /// conditioned on a `condition`-vector through two layers of 1024 and 512 when given.
    pub fn paper(condition: Option<usize>) -> Self {
        Self {
            convs: vec![(32, 7, 4), (64, 5, 1), (128, 3, 2), (256, 3, 1), (256, 3, 2)],
            fc: 512,
            condition: condition.map(|d| (d, 512)),
            dropout: 0.5,
            alpha: 0.3,
        }
    }

    /// A CPU preset for 64×64 images at width multiplier `width`.
    pub fn cpu_64(condition: Option<usize>, width: f64) -> Self {
        let c = |n: usize| scaled(n, width);
        Self {
            convs: vec![
                (c(32), 5, 2),
                (c(64), 3, 1),
                (c(128), 3, 2),
                (c(128), 3, 1),
                (c(128), 3, 2),
            ],
            fc: c(256),
            condition: condition.map(|d| (d, c(256))),
            dropout: 0.5,
            alpha: 0.3,
        }
    }

    /// The number of trainable parameters, from the layer list.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        let mut c = 3;
        for &(out, k, _) in &self.convs {
            n += c * out * k * k + out;
            c = out;
        }
        let mut pooled = c;
        if let Some((dim, width)) = self.condition {
            n += dim * width + width + width * width + width;
            pooled += width;
        }
        n + pooled * self.fc + self.fc + self.fc * 2 + 2
    }
}

/// The discriminator D(x[, y]); its output is two logits per image (generated, real), so that
/// `softmax[:, 1]` is the probability of "real" and `deepsim_losses::two_way_logit` gives the
/// single logit.
pub struct Discriminator {
    cfg: DiscriminatorConfig,
    convs: Vec<Conv>,
    condition: Vec<Dense>,
    fc: Dense,
    out: Dense,
    dropout: Dropout,
}

impl Discriminator {
    /// Builds the discriminator; variables `conv.N`, `condition.N`, `fc`, `out`.
    ///
    /// # Errors
    /// No convolutions, a dropout outside [0, 1), or loaded variables of other shapes.
    pub fn new(cfg: DiscriminatorConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.convs.is_empty() || !(0.0..1.0).contains(&cfg.dropout) {
            return Err(Error::Config {
                what: "DiscriminatorConfig",
                reason: format!("{} convolutions, dropout {}", cfg.convs.len(), cfg.dropout),
            });
        }
        let a = cfg.alpha;
        let mut c = 3;
        let mut convs = Vec::new();
        for (i, &(out, k, s)) in cfg.convs.iter().enumerate() {
            convs.push(Conv::new(c, out, k, s, k / 2, a, vb.pp(format!("conv.{i}")))?);
            c = out;
        }
        let mut condition = Vec::new();
        let mut pooled = c;
        if let Some((dim, width)) = cfg.condition {
            condition.push(linear(dim, width, a, vb.pp("condition.0"))?);
            condition.push(linear(width, width, a, vb.pp("condition.1"))?);
            pooled += width;
        }
        let fc = linear(pooled, cfg.fc, a, vb.pp("fc"))?;
        let out = linear(cfg.fc, 2, 1.0, vb.pp("out"))?;
        let dropout = Dropout::new(cfg.dropout);
        Ok(Self { cfg, convs, condition, fc, out, dropout })
    }

    /// The same network with its weights cut from the graph: what the generator's adversarial
    /// term runs through, so that its backward pass computes the gradient for the generated
    /// images and none for the discriminator's weights (which that step never updates).
    pub fn detached(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            convs: self.convs.iter().map(Conv::detached).collect(),
            condition: self.condition.iter().map(Dense::detached).collect(),
            fc: self.fc.detached(),
            out: self.out.detached(),
            dropout: self.dropout.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DiscriminatorConfig {
        &self.cfg
    }

    /// Two logits per image `[N, 2]`. `train` switches dropout on (candle's random masks).
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]`; `y`: `[N, dim]` when conditioned, else `None`.
    ///
    /// # Errors
    /// A missing or extra condition, or inputs of the wrong shape.
    pub fn forward_t(&self, x: &Tensor, y: Option<&Tensor>, train: bool) -> Result<Tensor> {
        self.forward_impl(x, y, if train { Drop::Random } else { Drop::Off })
    }

    /// As [`Discriminator::forward_t`] in training, with the caller's dropout masks (for
    /// runs that must repeat exactly: candle's CPU random numbers cannot be seeded).
    ///
    /// # Shapes
    /// `masks.pooled`: `[N, pooled]`, `masks.hidden`: `[N, fc]` ([`Discriminator::dropout_widths`]).
    ///
    /// # Errors
    /// As [`Discriminator::forward_t`], and masks of other shapes.
    pub fn forward_masked(
        &self,
        x: &Tensor,
        y: Option<&Tensor>,
        masks: &DropoutMasks,
    ) -> Result<Tensor> {
        let n = x.dims().first().copied().unwrap_or(0);
        let (p, h) = self.dropout_widths();
        for (name, m, w) in [("masks.pooled", &masks.pooled, p), ("masks.hidden", &masks.hidden, h)]
        {
            if m.dims() != [n, w] {
                return Err(Error::Input {
                    model: "Discriminator",
                    arg: name,
                    shape: m.dims().to_vec(),
                    reason: format!("expected [{n}, {w}]"),
                });
            }
        }
        self.forward_impl(x, y, Drop::Masks(masks))
    }

    /// The widths of the two dropout layers: the pooled convolution features and the hidden
    /// fully connected layer.
    pub fn dropout_widths(&self) -> (usize, usize) {
        let pooled = self.cfg.convs.last().map(|c| c.0).unwrap_or(0);
        (pooled, self.cfg.fc)
    }

    /// The dropout probability.
    pub fn dropout_rate(&self) -> f64 {
        self.cfg.dropout as f64
    }

    fn forward_impl(&self, x: &Tensor, y: Option<&Tensor>, drop: Drop<'_>) -> Result<Tensor> {
        let apply = |h: &Tensor, mask: Option<&Tensor>| -> Result<Tensor> {
            Ok(match (drop, mask) {
                (Drop::Off, _) => h.clone(),
                (Drop::Random, _) => self.dropout.forward_t(h, true)?,
                (Drop::Masks(_), Some(m)) => h.broadcast_mul(&m.to_dtype(h.dtype())?)?,
                (Drop::Masks(_), None) => h.clone(),
            })
        };
        let (pooled_mask, hidden_mask) = match drop {
            Drop::Masks(m) => (Some(&m.pooled), Some(&m.hidden)),
            _ => (None, None),
        };
        let a = self.cfg.alpha;
        if x.dims().len() != 4 || x.dim(1)? != 3 {
            return Err(Error::Input {
                model: "Discriminator",
                arg: "x",
                shape: x.dims().to_vec(),
                reason: "expected [N, 3, H, W]".into(),
            });
        }
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward_leaky_relu(&h, a)?;
        }
        let mut h = h.mean((2, 3))?;
        h = apply(&h, pooled_mask)?;
        match (self.cfg.condition, y) {
            (Some((dim, _)), Some(y)) => {
                if y.dims() != [x.dim(0)?, dim] {
                    return Err(Error::Input {
                        model: "Discriminator",
                        arg: "y",
                        shape: y.dims().to_vec(),
                        reason: format!("expected [{}, {dim}]", x.dim(0)?),
                    });
                }
                let mut c = y.clone();
                for l in &self.condition {
                    c = l.forward_leaky_relu(&c, a)?;
                }
                h = Tensor::cat(&[h, c], 1)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Input {
                    model: "Discriminator",
                    arg: "y",
                    shape: vec![],
                    reason: "this discriminator is conditioned: give the feature vector".into(),
                })
            }
            (None, Some(y)) => {
                return Err(Error::Input {
                    model: "Discriminator",
                    arg: "y",
                    shape: y.dims().to_vec(),
                    reason: "this discriminator is not conditioned".into(),
                })
            }
        }
        let h = self.fc.forward_leaky_relu(&h, a)?;
        let h = apply(&h, hidden_mask)?;
        Ok(self.out.forward(&h)?)
    }
}

/// Dropout masks for one training pass of a [`Discriminator`]: each entry 0 (dropped) or
/// 1/(1 − p) (kept and rescaled), as inverted dropout does.
#[derive(Clone, Debug)]
pub struct DropoutMasks {
    /// `[N, pooled]`, after global average pooling.
    pub pooled: Tensor,
    /// `[N, fc]`, after the hidden fully connected layer.
    pub hidden: Tensor,
}

#[derive(Clone, Copy)]
enum Drop<'a> {
    Off,
    Random,
    Masks(&'a DropoutMasks),
}
