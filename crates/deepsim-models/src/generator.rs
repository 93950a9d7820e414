//! The up-convolutional generator of DeePSiM (Dosovitskiy & Brox 2016, Table 1): from a feature
//! vector (fc6, fc7, fc8) through fully connected layers, or from a convolutional feature map
//! (conv5, pool5) through convolutions, to a 4×4 (or 6×6) map, then up-convolution /
//! convolution pairs doubling the size up to the image.

use candle::Tensor;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::layers::{linear, scaled, Conv, Dense, UpConv};

/// What the generator takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratorInput {
    /// A feature vector of this length (fc6, fc7: 4096; fc8: 1000).
    Vector(usize),
    /// A feature map `[channels, size, size]` (conv5 / pool5 of AlexNet: 256×6×6).
    Map {
        /// Channels of the map.
        channels: usize,
        /// Its height and width.
        size: usize,
    },
}

/// One layer of the upsampling tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TowerLayer {
    /// An up-convolution (×2) to this many channels.
    Up(usize),
    /// A 3×3 convolution (stride 1, padding 1) to this many channels.
    Conv(usize),
}

/// A generator's shape. Every field is a size in the paper's Table 1 terms.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// The input: a feature vector or map.
    pub input: GeneratorInput,
    /// Width of each fully connected layer (vector input; the paper: 4096 = 256·4·4), or
    /// channels of each of the input convolutions (map input; the paper: 256).
    pub head_width: usize,
    /// Number of fully connected layers (vector) or 3×3 convolutions (map) before the tower.
    pub head_layers: usize,
    /// Channels and side of the map that enters the tower (vector input: the last fully
    /// connected layer is reshaped to it, so `head_width = channels · side²`; map input: the
    /// head's channels, and the input's side, or half of it rounded up, in which case the
    /// last head convolution has stride 2).
    pub seed_map: (usize, usize),
    /// The tower; its last layer outputs the 3 image channels without an activation.
    pub tower: Vec<TowerLayer>,
    /// Slope of the leaky ReLU after every layer but the last (the paper: 0.3).
    pub alpha: f64,
    /// The image side to return: the tower's output is centre-cropped to it (the paper trains
    /// at 227 from a 256 output).
    pub output: usize,
    /// How the last layer starts.
    pub output_init: OutputInit,
}

/// The initialization of the generator's last layer (the one that outputs pixels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputInit {
    /// He-initialized weights and zero bias, as every other layer (the paper's presets).
    #[default]
    He,
    /// He's weights scaled by 0.1 and the bias at 0.5: the first images are a mid-grey with
    /// faint structure. Without it the first images are saturated noise wherever the encoder's
    /// features are large (EfficientNet's linear bottlenecks reach ±10), and the first hundreds
    /// of steps go to undoing that noise.
    Quiet,
}

/// The paper's tower (Table 1): uconv 256, conv 512, uconv 256, conv 256, uconv 128, conv 128,
/// uconv 64, uconv 32, uconv 3 — six up-convolutions, 4 → 256.
fn paper_tower() -> Vec<TowerLayer> {
    use TowerLayer::{Conv as C, Up as U};
    vec![U(256), C(512), U(256), C(256), U(128), C(128), U(64), U(32), U(3)]
}

impl GeneratorConfig {
    /// Inverting fc6 or fc7 (4096-vectors) at the paper's size: three fully connected layers
    /// of 4096, 256×4×4, the paper's tower, 256 → 227.
    pub fn paper_fc6() -> Self {
        Self::paper_vector(4096)
    }

    /// Inverting fc8 (1000-vectors) at the paper's size.
    pub fn paper_fc8() -> Self {
        Self::paper_vector(1000)
    }

    /// The paper's generator for a feature vector of `dim` elements.
    pub fn paper_vector(dim: usize) -> Self {
        Self {
            input: GeneratorInput::Vector(dim),
            head_width: 4096,
            head_layers: 3,
            seed_map: (256, 4),
            tower: paper_tower(),
            alpha: 0.3,
            output: 227,
            output_init: OutputInit::He,
        }
    }

    /// The paper's generator for a `dim`-vector with its tower stopped at 64×64: three fully
    /// connected layers of 4096, 256×4×4, then uconv 256, conv 512, uconv 256, conv 256,
    /// uconv 128, conv 128 and the output uconv 3 (Table 1 without its 64- and 32-channel
    /// up-convolutions), no crop. The training-step benchmarks' generator at 64 pixels
    /// (`bench_torch.py`'s `DEEPSIM_64`).
    pub fn paper_vector_64(dim: usize) -> Self {
        use TowerLayer::{Conv as C, Up as U};
        Self {
            tower: vec![U(256), C(512), U(256), C(256), U(128), C(128), U(3)],
            output: 64,
            ..Self::paper_vector(dim)
        }
    }

    /// Inverting conv5 / pool5 (256×6×6) at the paper's size: the fully connected layers
    /// replaced by three 3×3 convolutions of 256 channels on the 6×6 map (§3.1), then the
    /// paper's tower, 6 → 384, centre-cropped to 227.
    pub fn paper_conv5() -> Self {
        Self {
            input: GeneratorInput::Map { channels: 256, size: 6 },
            head_width: 256,
            head_layers: 3,
            seed_map: (256, 6),
            tower: paper_tower(),
            alpha: 0.3,
            output: 227,
            output_init: OutputInit::He,
        }
    }

    /// A CPU preset with a 64×64 output for a `dim`-vector: the paper's design at width
    /// `width` (a multiplier on every channel count, 1.0 = the paper's) with four
    /// up-convolutions (4 → 64).
    pub fn cpu_64(dim: usize, width: f64) -> Self {
        use TowerLayer::{Conv as C, Up as U};
        Self::cpu(dim, width, &[U(256), C(256), U(128), C(128), U(64), U(3)], 64)
    }

    /// A CPU preset with a 128×128 output (five up-convolutions, 4 → 128).
    pub fn cpu_128(dim: usize, width: f64) -> Self {
        use TowerLayer::{Conv as C, Up as U};
        Self::cpu(dim, width, &[U(256), C(256), U(128), C(128), U(64), U(32), U(3)], 128)
    }

    /// A CPU preset with a 64×64 output for a feature map `[channels, size, size]` whose side
    /// is 4, 7 or 8 (AlexNet's conv2 at 64×64 input is 192×7×7): two 3×3 convolutions of
    /// `256·width` channels on the map, the second of stride 2 unless the side is already 4,
    /// then the tower of [`Self::cpu_64`]. Its parameter count does not grow with the map's
    /// area, unlike a fully connected head.
    ///
    /// # Errors
    /// A side that does not reach 4 in at most one halving.
    pub fn cpu_64_map(channels: usize, size: usize, width: f64) -> Result<Self> {
        if !Self::cpu_64_takes_map(size) {
            return Err(Error::Config {
                what: "GeneratorConfig::cpu_64_map",
                reason: format!("map side {size}: must be 4, 7 or 8"),
            });
        }
        let vector = Self::cpu_64(channels * size * size, width);
        let c = vector.seed_map.0;
        let cfg = Self {
            input: GeneratorInput::Map { channels, size },
            head_width: c,
            head_layers: 2,
            seed_map: (c, 4),
            ..vector
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// A CPU preset for a feature map `[channels, size, size]` from a shallower layer than
    /// [`Self::cpu_64_map`] takes (EfficientNet-Lite's 40×16×16 `block4` at 128×128 input):
    /// two 3×3 convolutions of `256·width` channels at the map's side, then one
    /// up-convolution and one 3×3 convolution per doubling up to `output`, with
    /// `min(256, 4096 / side)·width` channels at each side (128 at 32, 64 at 64, 32 at 128),
    /// and a last 3×3 convolution to the 3 image channels. The last layer is a convolution
    /// rather than Table 1's up-convolution: a stride-2 up-convolution straight to pixels
    /// gives every 2×2 block of the image the same four kernel phases, a checkerboard that a
    /// perceptual loss's gradient amplifies.
    ///
    /// # Errors
    /// A `size` below 4, or an `output` that is not `size` times a power of two (at least 2).
    pub fn cpu_map(channels: usize, size: usize, output: usize, width: f64) -> Result<Self> {
        if !Self::cpu_map_takes(size, output) {
            return Err(Error::Config {
                what: "GeneratorConfig::cpu_map",
                reason: format!(
                    "map side {size} for an output of {output}: the output must be the side \
                     times 2, 4, 8, …, and the side at least 4"
                ),
            });
        }
        use TowerLayer::{Conv as C, Up as U};
        let c = |n: usize| scaled(n, width);
        let mut tower = Vec::new();
        let mut side = size;
        while side < output {
            side *= 2;
            let n = c((4096 / side).min(256));
            tower.extend([U(n), C(n)]);
        }
        tower.push(C(3));
        let cfg = Self {
            input: GeneratorInput::Map { channels, size },
            head_width: c(256),
            head_layers: 2,
            seed_map: (c(256), size),
            tower,
            alpha: 0.3,
            output,
            output_init: OutputInit::Quiet,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Whether [`Self::cpu_map`] takes a map of side `size` for an `output`-pixel image.
    pub fn cpu_map_takes(size: usize, output: usize) -> bool {
        size >= 4
            && output > size
            && output.is_multiple_of(size)
            && (output / size).is_power_of_two()
    }

    /// Whether [`Self::cpu_64_map`] takes a map of side `size` (4, 7 or 8).
    pub fn cpu_64_takes_map(size: usize) -> bool {
        size == 4 || size.div_ceil(2) == 4
    }

    /// Whether the last head convolution halves the map (map input whose side is not the
    /// seed map's).
    fn head_halves(&self) -> bool {
        matches!(self.input, GeneratorInput::Map { size, .. } if size != self.seed_map.1)
    }

    /// Two fully connected layers to a 256×4×4 map, then `tower`, every channel count but the
    /// image's 3 scaled by `width`.
    fn cpu(dim: usize, width: f64, tower: &[TowerLayer], output: usize) -> Self {
        let c = |n: usize| scaled(n, width);
        let last = tower.len() - 1;
        let tower = tower
            .iter()
            .enumerate()
            .map(|(i, &l)| match l {
                _ if i == last => l,
                TowerLayer::Up(n) => TowerLayer::Up(c(n)),
                TowerLayer::Conv(n) => TowerLayer::Conv(c(n)),
            })
            .collect();
        Self {
            input: GeneratorInput::Vector(dim),
            head_width: c(256) * 16,
            head_layers: 2,
            seed_map: (c(256), 4),
            tower,
            alpha: 0.3,
            output,
            output_init: OutputInit::He,
        }
    }

    /// The side of the tower's output.
    pub fn tower_side(&self) -> usize {
        let ups = self.tower.iter().filter(|l| matches!(l, TowerLayer::Up(_))).count();
        self.seed_map.1 << ups
    }

    /// The number of trainable parameters, from the layer list.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        match self.input {
            GeneratorInput::Vector(dim) => {
                let mut fan_in = dim;
                for _ in 0..self.head_layers {
                    n += fan_in * self.head_width + self.head_width;
                    fan_in = self.head_width;
                }
            }
            GeneratorInput::Map { channels, .. } => {
                let mut c = channels;
                for _ in 0..self.head_layers {
                    n += c * self.head_width * 9 + self.head_width;
                    c = self.head_width;
                }
            }
        }
        let mut c = self.seed_map.0;
        for layer in &self.tower {
            let (out, k) = match *layer {
                TowerLayer::Up(o) => (o, 4),
                TowerLayer::Conv(o) => (o, 3),
            };
            n += c * out * k * k + out;
            c = out;
        }
        n
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config { what: "GeneratorConfig", reason });
        if self.head_layers == 0 {
            return bad("needs at least one head layer".into());
        }
        if let GeneratorInput::Vector(_) = self.input {
            if self.head_width != self.seed_map.0 * self.seed_map.1 * self.seed_map.1 {
                return bad(format!(
                    "head width {} must equal the seed map's {}×{}×{} elements",
                    self.head_width, self.seed_map.0, self.seed_map.1, self.seed_map.1
                ));
            }
        }
        if let GeneratorInput::Map { size, .. } = self.input {
            let (c, side) = self.seed_map;
            if c != self.head_width || (side != size && side != size.div_ceil(2)) {
                return bad(format!(
                    "seed map {:?} must be the head's channels and the input side or its half \
                     ({}, {size} or {})",
                    self.seed_map,
                    self.head_width,
                    size.div_ceil(2)
                ));
            }
        }
        if self.tower.last().map(|l| matches!(l, TowerLayer::Up(3) | TowerLayer::Conv(3)))
            != Some(true)
        {
            return bad("the tower's last layer must output 3 channels".into());
        }
        if self.output == 0 || self.output > self.tower_side() {
            return bad(format!(
                "output {} exceeds the tower's {}",
                self.output,
                self.tower_side()
            ));
        }
        if !(self.alpha.is_finite() && (0.0..1.0).contains(&self.alpha)) {
            return bad(format!("leaky ReLU slope {}", self.alpha));
        }
        Ok(())
    }
}

enum Head {
    Dense(Vec<Dense>),
    Convs(Vec<Conv>),
}

enum Stage {
    Up(UpConv),
    Conv(Conv),
}

/// The generator G(y) of DeePSiM.
pub struct Generator {
    cfg: GeneratorConfig,
    head: Head,
    tower: Vec<Stage>,
}

impl Generator {
    /// Builds the generator; variables are named `head.N.{weight,bias}` and
    /// `tower.N.{weight,bias}`. Weights are He-initialized for the leaky ReLU, biases 0.
    ///
    /// # Errors
    /// An inconsistent config, or loaded variables of other shapes.
    pub fn new(cfg: GeneratorConfig, vb: VarBuilder) -> Result<Self> {
        cfg.check()?;
        let a = cfg.alpha;
        let head = match cfg.input {
            GeneratorInput::Vector(dim) => {
                let mut fan_in = dim;
                let mut layers = Vec::new();
                for i in 0..cfg.head_layers {
                    layers.push(linear(fan_in, cfg.head_width, a, vb.pp(format!("head.{i}")))?);
                    fan_in = cfg.head_width;
                }
                Head::Dense(layers)
            }
            GeneratorInput::Map { channels, .. } => {
                let mut c = channels;
                let mut layers = Vec::new();
                for i in 0..cfg.head_layers {
                    let stride = if cfg.head_halves() && i + 1 == cfg.head_layers { 2 } else { 1 };
                    layers.push(Conv::new(
                        c,
                        cfg.head_width,
                        3,
                        stride,
                        1,
                        a,
                        vb.pp(format!("head.{i}")),
                    )?);
                    c = cfg.head_width;
                }
                Head::Convs(layers)
            }
        };
        let mut c = cfg.seed_map.0;
        let mut tower = Vec::new();
        let last = cfg.tower.len() - 1;
        for (i, layer) in cfg.tower.iter().enumerate() {
            let vb = vb.pp(format!("tower.{i}"));
            // The last layer's initial (weight gain, bias): quiet, or He's as everywhere.
            let (gain, bias) = match cfg.output_init {
                OutputInit::Quiet if i == last => (0.1, 0.5),
                _ => (1.0, 0.0),
            };
            let (stage, out) = match *layer {
                TowerLayer::Up(o) => (Stage::Up(UpConv::new_scaled(c, o, a, gain, bias, vb)?), o),
                TowerLayer::Conv(o) => {
                    (Stage::Conv(Conv::new_scaled(c, o, 3, 1, 1, a, gain, bias, vb)?), o)
                }
            };
            tower.push(stage);
            c = out;
        }
        Ok(Self { cfg, head, tower })
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// Generates images from features.
    ///
    /// # Shapes
    /// `y`: `[N, dim]` (vector input) or `[N, C, S, S]` (map input) → `[N, 3, output, output]`.
    ///
    /// # Errors
    /// `y` of another shape.
    pub fn forward(&self, y: &Tensor) -> Result<Tensor> {
        let a = self.cfg.alpha;
        let bad = |reason: String| Error::Input {
            model: "Generator",
            arg: "y",
            shape: y.dims().to_vec(),
            reason,
        };
        let mut h = match (&self.head, self.cfg.input) {
            (Head::Dense(layers), GeneratorInput::Vector(dim)) => {
                if y.dims().len() != 2 || y.dim(1)? != dim {
                    return Err(bad(format!("expected [N, {dim}]")));
                }
                let mut h = y.clone();
                for l in layers {
                    h = l.forward_leaky_relu(&h, a)?;
                }
                let (c, s) = self.cfg.seed_map;
                h.reshape((y.dim(0)?, c, s, s))?
            }
            (Head::Convs(layers), GeneratorInput::Map { channels, size }) => {
                if y.dims().len() != 4 || y.dims()[1..] != [channels, size, size] {
                    return Err(bad(format!("expected [N, {channels}, {size}, {size}]")));
                }
                let mut h = y.clone();
                for l in layers {
                    h = l.forward_leaky_relu(&h, a)?;
                }
                h
            }
            _ => {
                return Err(Error::Config {
                    what: "Generator",
                    reason: "the head does not match the input kind".into(),
                })
            }
        };
        let last = self.tower.len() - 1;
        for (i, stage) in self.tower.iter().enumerate() {
            // The last layer's output is the image: bias only.
            let slope = if i < last { a } else { 1.0 };
            h = match stage {
                Stage::Up(u) => u.forward_leaky_relu(&h, slope)?,
                Stage::Conv(c) => c.forward_leaky_relu(&h, slope)?,
            };
        }
        let side = self.cfg.tower_side();
        let off = (side - self.cfg.output) / 2;
        Ok(h.narrow(2, off, self.cfg.output)?.narrow(3, off, self.cfg.output)?)
    }
}
