//! VGG16 and VGG19 (Simonyan & Zisserman, 2015) as comparators, torchvision layout: the
//! convolutional trunk with taps at every ReLU (`relu1_1` … `relu5_3` / `relu5_4`).

use std::path::Path;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use deepsim_kernels::{max_pool2d, Activation, Conv2dConfig, FrozenConv2d, MaxPool2dConfig};

use crate::chain::Stage;
use crate::comparator::{check_input, check_taps, imagenet_normalize, in_order, Comparator};
use crate::error::Result;
use crate::seeded;
use crate::tap::Tap;
use crate::weights::{self, Arch};

/// Which VGG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VggDepth {
    /// VGG16: 2, 2, 3, 3, 3 convolutions per stage.
    Vgg16,
    /// VGG19: 2, 2, 4, 4, 4 convolutions per stage.
    Vgg19,
}

impl VggDepth {
    fn per_stage(self) -> [usize; 5] {
        match self {
            Self::Vgg16 => [2, 2, 3, 3, 3],
            Self::Vgg19 => [2, 2, 4, 4, 4],
        }
    }
}

const WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// (key, out, in) of every 3×3 convolution, in order: `features.N` as torchvision numbers them
/// (ReLUs and pools take indices too).
fn conv_specs(depth: VggDepth) -> Vec<(String, usize, usize, Tap)> {
    let (mut idx, mut cin, mut out) = (0, 3, Vec::new());
    for (s, (&n, &w)) in depth.per_stage().iter().zip(&WIDTHS).enumerate() {
        for i in 0..n {
            out.push((format!("features.{idx}"), w, cin, Tap::Vgg(s as u8 + 1, i as u8 + 1)));
            cin = w;
            idx += 2;
        }
        idx += 1;
    }
    out
}

/// `(key, weight shape)` of every convolution, in order.
pub(crate) fn weight_shapes(depth: VggDepth) -> Vec<(String, Vec<usize>)> {
    conv_specs(depth).into_iter().map(|(key, o, c, _)| (key, vec![o, c, 3, 3])).collect()
}

/// A VGG trunk with frozen weights. Input: RGB [0, 1] normalized by ImageNet's mean and
/// standard deviation (torchvision's convention); at least 16×16 (relu5_x at 1×1).
pub struct Vgg {
    name: &'static str,
    /// Convolutions (ReLU fused) with their taps, and whether a 2×2 pool follows.
    convs: Vec<(FrozenConv2d, Tap, bool)>,
    taps: Vec<Tap>,
}

impl Vgg {
    /// Builds the trunk from weights named `features.N.weight`/`.bias`.
    ///
    /// # Errors
    /// A tensor is missing or misshapen.
    pub fn new(depth: VggDepth, vb: VarBuilder) -> Result<Self> {
        let specs = conv_specs(depth);
        let mut convs = Vec::with_capacity(specs.len());
        for (i, (key, o, c, tap)) in specs.iter().enumerate() {
            let w = vb.pp(key).get((*o, *c, 3, 3), "weight")?;
            let b = vb.pp(key).get(*o, "bias")?;
            let conv = FrozenConv2d::new(w, Some(b), Conv2dConfig::new(1, 1))?
                .with_activation(Activation::Relu);
            let last_of_stage = specs.get(i + 1).is_none_or(|next| {
                let (Tap::Vgg(a, _), Tap::Vgg(b, _)) = (tap, &next.3) else { return true };
                a != b
            });
            convs.push((conv, *tap, last_of_stage));
        }
        let taps = convs.iter().map(|c| c.1).collect();
        let name = match depth {
            VggDepth::Vgg16 => "vgg16",
            VggDepth::Vgg19 => "vgg19",
        };
        Ok(Self { name, convs, taps })
    }

    /// Loads converted weights (`vgg16` / `vgg19`) from `path` or the cache; the classifier
    /// in the file is not used.
    ///
    /// # Errors
    /// [`Error::MissingWeights`](crate::Error::MissingWeights) with the convert command; a
    /// malformed file.
    pub fn pretrained(depth: VggDepth, path: Option<&Path>, device: &Device) -> Result<Self> {
        let arch = match depth {
            VggDepth::Vgg16 => Arch::Vgg16,
            VggDepth::Vgg19 => Arch::Vgg19,
        };
        weights::build(arch, path, device, |vb| Self::new(depth, vb))
    }

    /// Seeded random weights (PyTorch's default bounds), conv `i` taking seeds `seed + 2i`
    /// (weight) and `seed + 2i + 1` (bias), as [`AlexNet::random`](crate::AlexNet::random).
    ///
    /// # Errors
    /// Only candle's.
    pub fn random(depth: VggDepth, seed: u64, device: &Device) -> Result<Self> {
        let tensors = seeded::layers(seed, &weight_shapes(depth), device)?;
        Self::new(depth, VarBuilder::from_tensors(tensors, DType::F32, device))
    }

    /// The trunk up to the deepest of `taps` as a chain (`taps` offered, in depth order).
    pub(crate) fn stages(&self, taps: &[Tap]) -> Vec<Stage> {
        let mut stages = Vec::new();
        let mut left = taps.len();
        for (conv, tap, pooled) in &self.convs {
            let tapped = taps.contains(tap);
            stages.push(Stage::Conv { layer: conv.clone(), tapped });
            left -= usize::from(tapped);
            if left == 0 {
                break;
            }
            if *pooled {
                stages.push(Stage::Pool(MaxPool2dConfig::square(2, 2)));
            }
        }
        stages
    }

    /// The taps of an already normalized input.
    pub(crate) fn run(&self, x: Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_taps(self.name, &self.taps, taps)?;
        let pool = MaxPool2dConfig::square(2, 2);
        let mut got: Vec<(Tap, Tensor)> = Vec::new();
        let mut h = x;
        for (conv, tap, pooled) in &self.convs {
            h = conv.forward(&h)?;
            if taps.contains(tap) {
                got.push((*tap, h.clone()));
            }
            if taps.iter().all(|t| got.iter().any(|(g, _)| g == t)) {
                break;
            }
            if *pooled {
                h = max_pool2d(&h, &pool)?;
            }
        }
        Ok(in_order(taps, &got))
    }
}

impl Comparator for Vgg {
    fn name(&self) -> &str {
        self.name
    }

    fn taps(&self) -> &[Tap] {
        &self.taps
    }

    fn min_size(&self) -> (usize, usize) {
        (16, 16)
    }

    fn features(&self, x: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_input(self.name, x, self.min_size())?;
        self.run(imagenet_normalize(x)?, taps)
    }
}
