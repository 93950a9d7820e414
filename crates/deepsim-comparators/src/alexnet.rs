//! The AlexNet family of comparators: torchvision's AlexNet, CaffeNet (the DeePSiM paper's
//! comparator), the video-trained network of Wang & Gupta (CaffeNet's convolutions) and AlexNet
//! with seeded random weights (the paper's third comparator, §4).

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use deepsim_kernels::{
    linear, local_response_norm, max_pool2d, Activation, ChannelAffine, Conv2dConfig, FrozenConv2d,
    LrnConfig, MaxPool2dConfig, PoolRounding,
};

use crate::chain::Stage;
use crate::comparator::{check_input, check_taps, imagenet_normalize, Comparator};
use crate::error::{Error, Result};
use crate::seeded;
use crate::tap::Tap;
use crate::weights::{self, Arch};

/// The two published layouts of AlexNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlexNetLayout {
    /// torchvision's `alexnet()`: 64/192/384/256/256 channels, padded conv1, floor pooling,
    /// adaptive 6×6 average pooling before fc6. Input: RGB normalized by ImageNet's mean and
    /// standard deviation.
    Torchvision,
    /// Caffe's `bvlc_reference_caffenet`: 96/256/384/384/256 channels, conv2/4/5 in two groups,
    /// LRN after pool1 and pool2, ceil pooling. Input: BGR in 0–255 minus the mean pixel
    /// (B 104.007, G 116.669, R 122.679); fc taps need a 6×6 pool5 (inputs 224 to 227).
    Caffe,
}

/// (out, in per group, kernel, stride, padding, groups) of conv1…conv5.
type ConvSpec = (usize, usize, usize, usize, usize, usize);

impl AlexNetLayout {
    fn convs(self) -> [ConvSpec; 5] {
        match self {
            Self::Torchvision => [
                (64, 3, 11, 4, 2, 1),
                (192, 64, 5, 1, 2, 1),
                (384, 192, 3, 1, 1, 1),
                (256, 384, 3, 1, 1, 1),
                (256, 256, 3, 1, 1, 1),
            ],
            Self::Caffe => [
                (96, 3, 11, 4, 0, 1),
                (256, 48, 5, 1, 2, 2),
                (384, 256, 3, 1, 1, 1),
                (384, 192, 3, 1, 1, 2),
                (256, 192, 3, 1, 1, 2),
            ],
        }
    }

    fn conv_names(self) -> [&'static str; 5] {
        match self {
            Self::Torchvision => {
                ["features.0", "features.3", "features.6", "features.8", "features.10"]
            }
            Self::Caffe => ["conv1", "conv2", "conv3", "conv4", "conv5"],
        }
    }

    fn fc_names(self) -> [&'static str; 3] {
        match self {
            Self::Torchvision => ["classifier.1", "classifier.4", "classifier.6"],
            Self::Caffe => ["fc6", "fc7", "fc8"],
        }
    }

    fn min_size(self) -> usize {
        match self {
            Self::Torchvision => 63,
            Self::Caffe => 55,
        }
    }

    /// `(key, weight shape)` of conv1…conv5 and, `with_fc`, fc6…fc8, in order.
    pub(crate) fn weight_shapes(self, with_fc: bool) -> Vec<(String, Vec<usize>)> {
        let convs = self.convs().into_iter().zip(self.conv_names());
        let convs = convs.map(|((o, i, k, ..), key)| (key.to_owned(), vec![o, i, k, k]));
        let fcs = FC_SHAPES.into_iter().zip(self.fc_names());
        let fcs =
            fcs.map(|((o, i), key)| (key.to_owned(), vec![o, i])).take(if with_fc { 3 } else { 0 });
        convs.chain(fcs).collect()
    }
}

/// (out, in) of fc6, fc7, fc8.
const FC_SHAPES: [(usize, usize); 3] = [(4096, 9216), (4096, 4096), (1000, 4096)];

const CONV_TAPS: [(Tap, Tap); 5] = [
    (Tap::Conv1, Tap::Relu1),
    (Tap::Conv2, Tap::Relu2),
    (Tap::Conv3, Tap::Relu3),
    (Tap::Conv4, Tap::Relu4),
    (Tap::Conv5, Tap::Relu5),
];
const FC_TAPS: [(Tap, Option<Tap>); 3] =
    [(Tap::Fc6, Some(Tap::Relu6)), (Tap::Fc7, Some(Tap::Relu7)), (Tap::Fc8, None)];

/// One frozen convolution, as a plain conv (for pre-ReLU taps) and fused with its ReLU.
struct ConvLayer {
    plain: FrozenConv2d,
    fused: FrozenConv2d,
}

/// An AlexNet-family comparator with frozen weights. See [`AlexNetLayout`] for each layout's
/// preprocessing; taps are [`Tap::Conv1`] … [`Tap::Fc8`] (`Norm1`/`Norm2` in the Caffe layout;
/// no fc taps for the video net).
pub struct AlexNet {
    name: String,
    layout: AlexNetLayout,
    convs: Vec<ConvLayer>,
    /// (weight `[out, in]`, bias `[out]`) of fc6, fc7, fc8; empty for the video net.
    fcs: Vec<(Tensor, Tensor)>,
    taps: Vec<Tap>,
}

impl AlexNet {
    /// Builds the network from weights named as the published checkpoint names them
    /// (torchvision: `features.N`, `classifier.N`; Caffe: `conv1`…`fc8`), with or without the
    /// fully connected layers.
    ///
    /// # Errors
    /// A tensor is missing or has the wrong shape (the error names the key).
    pub fn new(name: &str, layout: AlexNetLayout, with_fc: bool, vb: VarBuilder) -> Result<Self> {
        let mut convs = Vec::with_capacity(5);
        for ((o, i, k, s, p, g), key) in layout.convs().into_iter().zip(layout.conv_names()) {
            let w = vb.pp(key).get((o, i, k, k), "weight")?;
            let b = vb.pp(key).get(o, "bias")?;
            let cfg = Conv2dConfig::new(s, p).with_groups(g);
            let plain = FrozenConv2d::new(w, Some(b), cfg)?;
            let fused = plain.clone().with_activation(Activation::Relu);
            convs.push(ConvLayer { plain, fused });
        }
        let mut fcs = Vec::new();
        if with_fc {
            for ((o, i), key) in FC_SHAPES.into_iter().zip(layout.fc_names()) {
                let w = vb.pp(key).get((o, i), "weight")?.detach();
                let b = vb.pp(key).get(o, "bias")?.detach();
                fcs.push((w, b));
            }
        }
        let taps = Tap::ALEXNET
            .into_iter()
            .filter(|t| layout == AlexNetLayout::Caffe || !matches!(t, Tap::Norm1 | Tap::Norm2))
            .filter(|t| with_fc || *t <= Tap::Pool5)
            .collect();
        Ok(Self { name: name.to_owned(), layout, convs, fcs, taps })
    }

    /// Loads converted weights of `arch` (`alexnet`, `caffenet` or `videonet`) from `path`, or
    /// from the weights cache when `path` is `None`.
    ///
    /// # Errors
    /// [`Error::MissingWeights`] with the convert command when the file is absent; a malformed
    /// file or a missing tensor, naming the file.
    pub fn pretrained(arch: Arch, path: Option<&Path>, device: &Device) -> Result<Self> {
        let (layout, with_fc) = match arch {
            Arch::Alexnet => (AlexNetLayout::Torchvision, true),
            Arch::Caffenet => (AlexNetLayout::Caffe, true),
            Arch::Videonet => (AlexNetLayout::Caffe, false),
            other => {
                return Err(Error::UnknownArch {
                    name: other.name().into(),
                    known: "alexnet, caffenet, videonet".into(),
                })
            }
        };
        weights::build(arch, path, device, |vb| Self::new(arch.name(), layout, with_fc, vb))
    }

    /// The network with seeded random weights, as PyTorch initializes layers (uniform in
    /// ±1/√fan_in for weights and biases): the same on every machine for the same seed. Layer
    /// `i` (conv1…conv5, then fc6…fc8) draws its weight with seed `seed + 2i` and its bias with
    /// `seed + 2i + 1` from [`seeded::scaled`](crate::seeded::scaled).
    ///
    /// # Errors
    /// Only candle's, when allocating on `device`.
    pub fn random(layout: AlexNetLayout, seed: u64, device: &Device) -> Result<Self> {
        let tensors = seeded::layers(seed, &layout.weight_shapes(true), device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let name = match layout {
            AlexNetLayout::Torchvision => "alexnet-random",
            AlexNetLayout::Caffe => "caffenet-random",
        };
        Self::new(name, layout, true, vb)
    }

    /// The layout.
    pub fn layout(&self) -> AlexNetLayout {
        self.layout
    }

    /// The layout's preprocessing of an RGB [0, 1] input.
    pub(crate) fn preprocess(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.layout {
            AlexNetLayout::Torchvision => imagenet_normalize(x)?,
            // BGR, 0–255, minus the mean pixel (in BGR order), as one map.
            AlexNetLayout::Caffe => {
                ChannelAffine::new(&[255.0; 3], &[-104.006_99, -116.668_77, -122.678_91])?
                    .with_source(&[2, 1, 0])?
                    .forward(x)?
            }
        })
    }

    /// The torchvision layout's trunk up to conv5 as a chain whose taps are relu1 … relu5
    /// (LPIPS-alex's); `None` for the Caffe layout (its LRN layers are not chain stages).
    pub(crate) fn relu_stages(&self) -> Option<Vec<Stage>> {
        if self.layout != AlexNetLayout::Torchvision || self.convs.len() < 5 {
            return None;
        }
        let pool = MaxPool2dConfig::square(3, 2);
        let mut stages = Vec::new();
        for (i, conv) in self.convs.iter().enumerate() {
            stages.push(Stage::Conv { layer: conv.fused.clone(), tapped: true });
            if i < 2 {
                stages.push(Stage::Pool(pool));
            }
        }
        Some(stages)
    }

    /// The taps of an already preprocessed input (LPIPS feeds its own scaling).
    pub(crate) fn run(&self, x: Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_taps(&self.name, &self.taps, taps)?;
        // Only the requested activations are kept; the pass stops at the deepest one.
        let mut got: HashMap<Tap, Tensor> = HashMap::new();
        let mut keep = |tap: Tap, t: &Tensor| {
            if taps.contains(&tap) {
                got.insert(tap, t.clone());
            }
            taps.iter().all(|t| got.contains_key(t))
        };
        let caffe = self.layout == AlexNetLayout::Caffe;
        let rounding = if caffe { PoolRounding::Ceil } else { PoolRounding::Floor };
        let pool = MaxPool2dConfig { rounding, ..MaxPool2dConfig::square(3, 2) };
        let mut h = x;
        let mut done = false;
        for (i, (conv, (pre, post))) in self.convs.iter().zip(CONV_TAPS).enumerate() {
            if taps.contains(&pre) {
                let y = conv.plain.forward(&h)?;
                keep(pre, &y);
                h = y.relu()?;
            } else {
                h = conv.fused.forward(&h)?;
            }
            done = keep(post, &h);
            let pool_tap = match i {
                0 => Some(Tap::Pool1),
                1 => Some(Tap::Pool2),
                4 => Some(Tap::Pool5),
                _ => None,
            };
            if let (Some(tap), false) = (pool_tap, done) {
                h = max_pool2d(&h, &pool)?;
                done = keep(tap, &h);
                if caffe && i < 2 && !done {
                    h = local_response_norm(&h, &LrnConfig::caffenet())?;
                    done = keep(if i == 0 { Tap::Norm1 } else { Tap::Norm2 }, &h);
                }
            }
            if done {
                break;
            }
        }
        if !done {
            let (_, _, ph, pw) = h.dims4()?;
            h = match self.layout {
                AlexNetLayout::Torchvision => adaptive_avg_pool(&h, 6, 6)?,
                AlexNetLayout::Caffe if (ph, pw) != (6, 6) => {
                    return Err(Error::Input {
                        comparator: self.name.clone(),
                        shape: h.dims().to_vec(),
                        reason: format!(
                            "fc taps need a 6×6 pool5 (inputs of 224 to 227 pixels), \
                             this input gives {ph}×{pw}"
                        ),
                    })
                }
                AlexNetLayout::Caffe => h,
            };
            h = h.flatten_from(1)?;
            for ((w, b), (pre, post)) in self.fcs.iter().zip(FC_TAPS) {
                h = linear(&h, w, Some(b))?;
                done = keep(pre, &h);
                if let (Some(post), false) = (post, done) {
                    h = h.relu()?;
                    done = keep(post, &h);
                }
                if done {
                    break;
                }
            }
        }
        Ok(taps.iter().map(|t| got[t].clone()).collect())
    }
}

impl Comparator for AlexNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn taps(&self) -> &[Tap] {
        &self.taps
    }

    fn min_size(&self) -> (usize, usize) {
        let m = self.layout.min_size();
        (m, m)
    }

    fn features(&self, x: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_input(&self.name, x, self.min_size())?;
        check_taps(&self.name, &self.taps, taps)?;
        self.run(self.preprocess(x)?, taps)
    }
}

/// PyTorch's `adaptive_avg_pool2d`: output cell (i, j) averages rows
/// `⌊i·H/oh⌋ .. ⌈(i+1)·H/oh⌉` and the same for columns.
pub(crate) fn adaptive_avg_pool(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    let bins = |len: usize, out: usize| -> Vec<(usize, usize)> {
        (0..out).map(|i| (i * len / out, ((i + 1) * len).div_ceil(out))).collect()
    };
    let mut rows = Vec::with_capacity(oh);
    for (r0, r1) in bins(h, oh) {
        let band = x.narrow(2, r0, r1 - r0)?.mean_keepdim(2)?;
        let mut cells = Vec::with_capacity(ow);
        for (c0, c1) in bins(w, ow) {
            cells.push(band.narrow(3, c0, c1 - c0)?.mean_keepdim(3)?);
        }
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Ok(Tensor::cat(&rows, 2)?)
}
