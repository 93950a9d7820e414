//! SqueezeNet 1.1 (Iandola et al., 2016; torchvision's `squeezenet1_1`), the trunk of
//! LPIPS-squeeze: taps `relu1` (after conv1) and `fire2` … `fire9`.

use std::path::Path;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use deepsim_kernels::{
    max_pool2d, Activation, Conv2dConfig, FrozenConv2d, MaxPool2dConfig, PoolRounding,
};

use crate::comparator::{check_input, check_taps, imagenet_normalize, in_order, Comparator};
use crate::error::Result;
use crate::seeded;
use crate::tap::Tap;
use crate::weights::{self, Arch};

/// (torchvision index, input, squeeze, expand) of the fire modules, fire2 … fire9; a ceil-mode
/// 3×3/2 max-pool precedes fire2 (index 3), fire4 (6) and fire6 (9).
const FIRES: [(usize, usize, usize, usize); 8] = [
    (3, 64, 16, 64),
    (4, 128, 16, 64),
    (6, 128, 32, 128),
    (7, 256, 32, 128),
    (9, 256, 48, 192),
    (10, 384, 48, 192),
    (11, 384, 64, 256),
    (12, 512, 64, 256),
];

struct Fire {
    squeeze: FrozenConv2d,
    expand1: FrozenConv2d,
    expand3: FrozenConv2d,
    pool_before: bool,
}

/// SqueezeNet 1.1's trunk with frozen weights. Input: RGB [0, 1] normalized by ImageNet's mean
/// and standard deviation; at least 32×32.
pub struct SqueezeNet {
    conv1: FrozenConv2d,
    fires: Vec<Fire>,
    taps: Vec<Tap>,
}

/// `(key, weight shape)` of every convolution of the trunk, in order (torchvision's names).
pub(crate) fn weight_shapes() -> Vec<(String, Vec<usize>)> {
    let mut out = vec![("features.0".to_owned(), vec![64, 3, 3, 3])];
    for (idx, c, s, e) in FIRES {
        out.push((format!("features.{idx}.squeeze"), vec![s, c, 1, 1]));
        out.push((format!("features.{idx}.expand1x1"), vec![e, s, 1, 1]));
        out.push((format!("features.{idx}.expand3x3"), vec![e, s, 3, 3]));
    }
    out
}

impl SqueezeNet {
    /// Builds the trunk from torchvision's keys (`features.0`, `features.N.squeeze`,
    /// `.expand1x1`, `.expand3x3`).
    ///
    /// # Errors
    /// A tensor is missing or misshapen.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let conv = |key: &str,
                    o: usize,
                    i: usize,
                    k: usize,
                    p: usize,
                    stride: usize|
         -> Result<FrozenConv2d> {
            let w = vb.pp(key).get((o, i, k, k), "weight")?;
            let b = vb.pp(key).get(o, "bias")?;
            Ok(FrozenConv2d::new(w, Some(b), Conv2dConfig::new(stride, p))?
                .with_activation(Activation::Relu))
        };
        let conv1 = conv("features.0", 64, 3, 3, 0, 2)?;
        let fires = FIRES
            .iter()
            .map(|&(idx, c, s, e)| {
                Ok(Fire {
                    squeeze: conv(&format!("features.{idx}.squeeze"), s, c, 1, 0, 1)?,
                    expand1: conv(&format!("features.{idx}.expand1x1"), e, s, 1, 0, 1)?,
                    expand3: conv(&format!("features.{idx}.expand3x3"), e, s, 3, 1, 1)?,
                    pool_before: matches!(idx, 3 | 6 | 9),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let taps = [Tap::Relu1].into_iter().chain((2..=9).map(Tap::Fire)).collect();
        Ok(Self { conv1, fires, taps })
    }

    /// Loads converted weights (`squeezenet1_1`) from `path` or the cache; the classifier in
    /// the file is not used.
    ///
    /// # Errors
    /// Missing weights (with the convert command); a malformed file.
    pub fn pretrained(path: Option<&Path>, device: &Device) -> Result<Self> {
        weights::build(Arch::Squeezenet, path, device, Self::new)
    }

    /// Seeded random weights (PyTorch's default bounds), conv `i` in `conv_specs` order
    /// taking seeds `seed + 2i` and `seed + 2i + 1`.
    ///
    /// # Errors
    /// Only candle's.
    pub fn random(seed: u64, device: &Device) -> Result<Self> {
        let tensors = seeded::layers(seed, &weight_shapes(), device)?;
        Self::new(VarBuilder::from_tensors(tensors, DType::F32, device))
    }

    /// The taps of an already normalized input.
    pub(crate) fn run(&self, x: Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_taps("squeezenet1_1", &self.taps, taps)?;
        let pool =
            MaxPool2dConfig { rounding: PoolRounding::Ceil, ..MaxPool2dConfig::square(3, 2) };
        let mut got: Vec<(Tap, Tensor)> = Vec::new();
        let mut keep = |tap: Tap, t: &Tensor| {
            if taps.contains(&tap) {
                got.push((tap, t.clone()));
            }
            taps.iter().all(|t| got.iter().any(|(g, _)| g == t))
        };
        let mut h = self.conv1.forward(&x)?;
        let mut done = keep(Tap::Relu1, &h);
        for (n, fire) in self.fires.iter().enumerate() {
            if done {
                break;
            }
            if fire.pool_before {
                h = max_pool2d(&h, &pool)?;
            }
            let s = fire.squeeze.forward(&h)?;
            h = Tensor::cat(&[fire.expand1.forward(&s)?, fire.expand3.forward(&s)?], 1)?;
            done = keep(Tap::Fire(n as u8 + 2), &h);
        }
        Ok(in_order(taps, &got))
    }
}

impl Comparator for SqueezeNet {
    fn name(&self) -> &str {
        "squeezenet1_1"
    }

    fn taps(&self) -> &[Tap] {
        &self.taps
    }

    fn min_size(&self) -> (usize, usize) {
        (32, 32)
    }

    fn features(&self, x: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_input(self.name(), x, self.min_size())?;
        self.run(imagenet_normalize(x)?, taps)
    }
}
