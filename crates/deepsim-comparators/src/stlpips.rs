//! The shift-tolerant trunks of ST-LPIPS (Ghildyal & Liu, *Shift-tolerant Perceptual
//! Similarity Metric*, ECCV 2022): AlexNet and VGG16 trained from scratch on BAPPS human
//! judgments with the package's `variant="shift_tolerant"` — every stride-2 step replaced by a
//! stride-1 operation and a blur pool (reflection padding `k − 1 = 2`, binomial 3×3 filter),
//! AlexNet's conv1 at stride 1 with its ReLU after the blur. Layer keys are those of the
//! published `stlpips_pytorch/weights/vST0.0/{alex,vgg}_shift_tolerant.pth`
//! (`net.slice{1..5}.{index}`), whose heads [`Lpips`](crate::Lpips) reads from the same file.

use std::path::Path;

use candle::{Device, Tensor};
use candle_nn::VarBuilder;
use deepsim_kernels::{Activation, BlurPool2dConfig, Conv2dConfig, FrozenConv2d, MaxPool2dConfig};

use crate::chain::Stage;
use crate::comparator::{check_input, check_taps, in_order, Comparator};
use crate::error::Result;
use crate::lpips::{self, ALEX_WIDTHS, VGG_WIDTHS};
use crate::tap::Tap;
use crate::weights::{self, Arch};

/// The blur filter size the published weights were trained with (`blur_filter_size=3`).
pub(crate) const BLUR_FILTER: usize = 3;

/// Which ST-LPIPS trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShiftTolerantTrunk {
    /// Shift-tolerant AlexNet: taps `relu1` … `relu5` (64, 192, 384, 256, 256 channels).
    Alex,
    /// Shift-tolerant VGG16: taps `relu1_2`, `relu2_2`, `relu3_3`, `relu4_3`, `relu5_3`.
    Vgg,
}

/// One layer of a trunk, as the reference's `nn.Sequential` lists it.
enum Layer {
    /// `net.{key}`: out, in, kernel, padding; its ReLU fused when `relu`, tapped when `tap`.
    Conv { key: &'static str, out: usize, cin: usize, k: usize, pad: usize, relu: bool },
    /// Max-pool of `k`, stride 1.
    Pool(usize),
    /// The blur pool (stride 2).
    Blur,
    /// A separate ReLU.
    Relu,
}

impl ShiftTolerantTrunk {
    /// The name of the metric and of its weights file: `stlpips-alex`, `stlpips-vgg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alex => "stlpips-alex",
            Self::Vgg => "stlpips-vgg",
        }
    }

    /// The weights layout that holds this trunk and its heads.
    pub fn arch(self) -> Arch {
        match self {
            Self::Alex => Arch::StlpipsAlex,
            Self::Vgg => Arch::StlpipsVgg,
        }
    }

    /// The five taps LPIPS compares, shallow to deep.
    pub fn taps(self) -> [Tap; 5] {
        match self {
            Self::Alex => [Tap::Relu1, Tap::Relu2, Tap::Relu3, Tap::Relu4, Tap::Relu5],
            Self::Vgg => {
                [Tap::Vgg(1, 2), Tap::Vgg(2, 2), Tap::Vgg(3, 3), Tap::Vgg(4, 3), Tap::Vgg(5, 3)]
            }
        }
    }

    /// Channels at each tap.
    pub(crate) fn widths(self) -> &'static [usize; 5] {
        match self {
            Self::Alex => &ALEX_WIDTHS,
            Self::Vgg => &VGG_WIDTHS,
        }
    }

    /// The layers up to the last tap, each tap after the layer whose output it is.
    fn layers(self) -> Vec<(Layer, Option<Tap>)> {
        use Layer::{Blur, Pool, Relu};
        let conv = |key, out, cin, k, pad| Layer::Conv { key, out, cin, k, pad, relu: true };
        match self {
            Self::Alex => vec![
                (
                    Layer::Conv { key: "slice1.0", out: 64, cin: 3, k: 11, pad: 2, relu: false },
                    None,
                ),
                (Blur, None),
                (Relu, Some(Tap::Relu1)),
                (Pool(3), None),
                (Blur, None),
                (conv("slice2.5", 192, 64, 5, 2), Some(Tap::Relu2)),
                (Pool(3), None),
                (Blur, None),
                (conv("slice3.9", 384, 192, 3, 1), Some(Tap::Relu3)),
                (conv("slice4.11", 256, 384, 3, 1), Some(Tap::Relu4)),
                (conv("slice5.13", 256, 256, 3, 1), Some(Tap::Relu5)),
            ],
            Self::Vgg => {
                // VGG16's configuration "D": every 2×2/2 pool becomes a 2×2/1 pool and a blur.
                let stages: [&[(&'static str, usize)]; 5] = [
                    &[("slice1.0", 64), ("slice1.2", 64)],
                    &[("slice2.6", 128), ("slice2.8", 128)],
                    &[("slice3.12", 256), ("slice3.14", 256), ("slice3.16", 256)],
                    &[("slice4.20", 512), ("slice4.22", 512), ("slice4.24", 512)],
                    &[("slice5.28", 512), ("slice5.30", 512), ("slice5.32", 512)],
                ];
                let (mut out, mut cin) = (Vec::new(), 3);
                for (s, convs) in stages.iter().enumerate() {
                    if s > 0 {
                        out.push((Pool(2), None));
                        out.push((Blur, None));
                    }
                    for (i, &(key, width)) in convs.iter().enumerate() {
                        let tap =
                            (i + 1 == convs.len()).then_some(Tap::Vgg(s as u8 + 1, i as u8 + 1));
                        out.push((conv(key, width, cin, 3, 1), tap));
                        cin = width;
                    }
                }
                out
            }
        }
    }

    /// `(key, weight shape)` of every convolution, in order (keys as in the published file).
    pub(crate) fn weight_shapes(self) -> Vec<(String, Vec<usize>)> {
        self.layers()
            .into_iter()
            .filter_map(|(l, _)| match l {
                Layer::Conv { key, out, cin, k, .. } => {
                    Some((format!("net.{key}"), vec![out, cin, k, k]))
                }
                _ => None,
            })
            .collect()
    }

    /// `(key, channels)` of every blur filter the published file stores as a buffer
    /// (`net.slice{s}.{index}.filt`, `[C, 1, 3, 3]`), which the conversion checks and drops.
    pub(crate) fn blur_buffers(self) -> Vec<(String, usize)> {
        let keys: &[(&str, usize)] = match self {
            Self::Alex => &[("slice1.1", 64), ("slice2.4", 64), ("slice3.8", 192)],
            Self::Vgg => {
                &[("slice2.5", 64), ("slice3.11", 128), ("slice4.19", 256), ("slice5.27", 512)]
            }
        };
        keys.iter().map(|&(k, c)| (format!("net.{k}.filt"), c)).collect()
    }
}

/// A shift-tolerant trunk with frozen weights, as a comparator (its own taps, LPIPS' input
/// scaling) and as the trunk of [`Lpips::pretrained_shift_tolerant`](crate::Lpips).
///
/// Input: the comparator contract (NCHW f32 RGB in [0, 1]), mapped to [−1, 1] and scaled by
/// LPIPS' constants; at least [`Comparator::min_size`] (alex 21×21, vgg 18×18), where every
/// reflection padding fits (PyTorch's reflection pad needs more pixels than it pads).
pub struct ShiftTolerantNet {
    trunk: ShiftTolerantTrunk,
    /// Every layer up to the last tap, with the tap it produces.
    stages: Vec<(Stage, Option<Tap>)>,
    taps: Vec<Tap>,
    min: usize,
}

impl ShiftTolerantNet {
    /// Builds the trunk from weights named as in the published file (`net.slice1.0.weight`, …).
    ///
    /// # Errors
    /// A tensor is missing or misshapen (the error names its key).
    pub fn new(trunk: ShiftTolerantTrunk, vb: VarBuilder) -> Result<Self> {
        let blur = BlurPool2dConfig::shift_tolerant(BLUR_FILTER);
        let vb = vb.pp("net");
        let mut stages = Vec::new();
        for (layer, tap) in trunk.layers() {
            let stage = match layer {
                Layer::Conv { key, out, cin, k, pad, relu } => {
                    let w = vb.pp(key).get((out, cin, k, k), "weight")?;
                    let b = vb.pp(key).get(out, "bias")?;
                    let conv = FrozenConv2d::new(w, Some(b), Conv2dConfig::new(1, pad))?;
                    let conv = if relu { conv.with_activation(Activation::Relu) } else { conv };
                    Stage::Conv { layer: conv, tapped: tap.is_some() }
                }
                Layer::Pool(k) => Stage::Pool(MaxPool2dConfig::square(k, 1)),
                Layer::Blur => Stage::Blur(blur),
                Layer::Relu => Stage::Relu { tapped: tap.is_some() },
            };
            stages.push((stage, tap));
        }
        let min = (1..4096)
            .find(|&len| stages.iter().try_fold(len, |l, (s, _)| s.out_len(l)).is_some())
            .expect("a trunk fits some input below 4096 pixels");
        Ok(Self { trunk, stages, taps: trunk.taps().to_vec(), min })
    }

    /// Loads the trunk from converted weights (`stlpips-alex` / `stlpips-vgg`): the explicit
    /// path, the weights cache, or the copy that ships with the repository.
    ///
    /// # Errors
    /// [`Error::MissingWeights`](crate::Error::MissingWeights) with the convert command; a
    /// file of another architecture or a malformed one, named.
    pub fn pretrained(
        trunk: ShiftTolerantTrunk,
        path: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        weights::build(trunk.arch(), path, device, |vb| Self::new(trunk, vb))
    }

    /// Which trunk this is.
    pub fn trunk(&self) -> ShiftTolerantTrunk {
        self.trunk
    }

    /// The stages up to the deepest of `taps` (offered ones), tapped where asked.
    pub(crate) fn stages(&self, taps: &[Tap]) -> Vec<Stage> {
        let deepest = self.stages.iter().rposition(|(_, t)| t.is_some_and(|t| taps.contains(&t)));
        let Some(deepest) = deepest else { return Vec::new() };
        self.stages[..=deepest]
            .iter()
            .map(|(stage, tap)| {
                let asked = tap.is_some_and(|t| taps.contains(&t));
                match stage {
                    Stage::Conv { layer, .. } => {
                        Stage::Conv { layer: layer.clone(), tapped: asked }
                    }
                    Stage::Relu { .. } => Stage::Relu { tapped: asked },
                    other => other.clone(),
                }
            })
            .collect()
    }

    /// The taps of an already scaled input, through candle's autograd.
    pub(crate) fn run(&self, x: Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_taps(self.trunk.name(), &self.taps, taps)?;
        let mut got: Vec<(Tap, Tensor)> = Vec::new();
        let mut h = x;
        for (stage, tap) in &self.stages {
            if taps.iter().all(|t| got.iter().any(|(g, _)| g == t)) {
                break;
            }
            h = stage.forward(&h)?;
            if let Some(t) = tap.filter(|t| taps.contains(t)) {
                got.push((t, h.clone()));
            }
        }
        Ok(in_order(taps, &got))
    }
}

impl Comparator for ShiftTolerantNet {
    fn name(&self) -> &str {
        self.trunk.name()
    }

    fn taps(&self) -> &[Tap] {
        &self.taps
    }

    fn min_size(&self) -> (usize, usize) {
        (self.min, self.min)
    }

    fn features(&self, x: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_input(self.trunk.name(), x, self.min_size())?;
        self.run(lpips::scaling()?.forward(x)?, taps)
    }
}
