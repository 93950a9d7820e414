//! LPIPS (Zhang et al., *The Unreasonable Effectiveness of Deep Features as a Perceptual
//! Metric*, CVPR 2018) over AlexNet, VGG16 or SqueezeNet 1.1, as the `lpips` package computes it
//! (v0.1): unit-normalized activations at the trunk's taps, squared differences weighted per
//! channel by the linear heads, averaged over space, summed over layers — and ST-LPIPS
//! (Ghildyal & Liu, ECCV 2022), the same head over a shift-tolerant trunk trained with it, as
//! the `stlpips_pytorch` package computes it.

use std::path::Path;

use candle::{Device, Tensor};
use candle_nn::VarBuilder;
use deepsim_kernels::ChannelAffine;

use crate::alexnet::{AlexNet, AlexNetLayout};
use crate::chain::{self, TapHead};
use crate::comparator::{check_input, Comparator};
use crate::error::{Error, Result};
use crate::squeezenet::SqueezeNet;
use crate::stlpips::{ShiftTolerantNet, ShiftTolerantTrunk};
use crate::tap::Tap;
use crate::vgg::{Vgg, VggDepth};
use crate::weights::{self, Arch};

/// Channels of the tapped layers, one LPIPS head each.
pub(crate) const ALEX_WIDTHS: [usize; 5] = [64, 192, 384, 256, 256];
/// See [`ALEX_WIDTHS`].
pub(crate) const VGG_WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];
/// See [`ALEX_WIDTHS`].
pub(crate) const SQUEEZE_WIDTHS: [usize; 7] = [64, 128, 256, 384, 384, 512, 512];

/// The network under the heads.
enum Trunk {
    Alex(AlexNet),
    Vgg(Vgg),
    Squeeze(SqueezeNet),
    ShiftTolerant(ShiftTolerantNet),
}

impl Trunk {
    fn taps(&self) -> Vec<Tap> {
        match self {
            Trunk::Alex(_) => vec![Tap::Relu1, Tap::Relu2, Tap::Relu3, Tap::Relu4, Tap::Relu5],
            Trunk::Vgg(_) => {
                vec![Tap::Vgg(1, 2), Tap::Vgg(2, 2), Tap::Vgg(3, 3), Tap::Vgg(4, 3), Tap::Vgg(5, 3)]
            }
            Trunk::Squeeze(_) => {
                [Tap::Relu1].into_iter().chain([3, 5, 6, 7, 8, 9].map(Tap::Fire)).collect()
            }
            Trunk::ShiftTolerant(n) => n.trunk().taps().to_vec(),
        }
    }

    fn widths(&self) -> &'static [usize] {
        match self {
            Trunk::Alex(_) => &ALEX_WIDTHS,
            Trunk::Vgg(_) => &VGG_WIDTHS,
            Trunk::Squeeze(_) => &SQUEEZE_WIDTHS,
            Trunk::ShiftTolerant(n) => n.trunk().widths(),
        }
    }

    fn min_size(&self) -> usize {
        match self {
            Trunk::Alex(_) => 63,
            Trunk::Vgg(_) => 16,
            Trunk::Squeeze(_) => 32,
            Trunk::ShiftTolerant(n) => n.min_size().0,
        }
    }

    fn run(&self, x: Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        match self {
            Trunk::Alex(n) => n.run(x, taps),
            Trunk::Vgg(n) => n.run(x, taps),
            Trunk::Squeeze(n) => n.run(x, taps),
            Trunk::ShiftTolerant(n) => n.run(x, taps),
        }
    }
}

/// LPIPS distances of a batch of pairs.
#[derive(Clone, Debug)]
pub struct LpipsOutput {
    /// The distance of each pair, `[N]`.
    pub distance: Tensor,
    /// Each layer's share of it, `[N]` per layer (relu1 … relu5); they sum to `distance`.
    pub per_layer: Vec<Tensor>,
}

/// LPIPS: a frozen trunk (torchvision AlexNet, VGG16 or SqueezeNet 1.1) and one non-negative
/// linear head per tap.
///
/// Inputs follow the comparator contract (NCHW f32 RGB in [0, 1], at least 63×63 for alex,
/// 16×16 for vgg, 32×32 for squeeze); they are
/// mapped to [−1, 1] and scaled by LPIPS' own constants (shift −0.030, −0.088, −0.188; scale
/// 0.458, 0.448, 0.450) rather than ImageNet's mean and std.
///
/// One deliberate difference from the reference: the channel norm is `√(Σ f² + 1e-20)`
/// instead of `√(Σ f²)`, so that a pixel whose activations are all zero gets a finite gradient
/// (the reference's is NaN there); values differ by less than 1e-9 relative.
pub struct Lpips {
    name: &'static str,
    trunk: Trunk,
    lins: Vec<Tensor>,
}

impl Lpips {
    /// LPIPS over `trunk` (torchvision layout) with heads `lin0.weight` … `lin4.weight`
    /// (`[1, C, 1, 1]`) from `heads`.
    ///
    /// # Errors
    /// The trunk is not torchvision-layout AlexNet, or a head is missing or misshapen.
    pub fn alex(trunk: AlexNet, heads: VarBuilder) -> Result<Self> {
        if trunk.layout() != AlexNetLayout::Torchvision {
            return Err(Error::UnknownArch {
                name: "LPIPS trunk in the Caffe layout".into(),
                known: "torchvision AlexNet".into(),
            });
        }
        Self::with_trunk("lpips-alex", Trunk::Alex(trunk), heads)
    }

    /// LPIPS-vgg over a VGG16 trunk, heads `lin0` … `lin4`.
    ///
    /// # Errors
    /// A head is missing or misshapen.
    pub fn vgg(trunk: Vgg, heads: VarBuilder) -> Result<Self> {
        Self::with_trunk("lpips-vgg", Trunk::Vgg(trunk), heads)
    }

    /// LPIPS-squeeze over a SqueezeNet 1.1 trunk, heads `lin0` … `lin6`.
    ///
    /// # Errors
    /// A head is missing or misshapen.
    pub fn squeeze(trunk: SqueezeNet, heads: VarBuilder) -> Result<Self> {
        Self::with_trunk("lpips-squeeze", Trunk::Squeeze(trunk), heads)
    }

    /// ST-LPIPS over a shift-tolerant trunk, heads `lin0` … `lin4`.
    ///
    /// # Errors
    /// A head is missing or misshapen.
    pub fn shift_tolerant(trunk: ShiftTolerantNet, heads: VarBuilder) -> Result<Self> {
        let name = trunk.trunk().name();
        Self::with_trunk(name, Trunk::ShiftTolerant(trunk), heads)
    }

    /// ST-LPIPS from converted weights (`stlpips-alex` / `stlpips-vgg`: trunk and heads in one
    /// file): the explicit path, the weights cache, or the copy that ships with the repository.
    ///
    /// # Errors
    /// [`Error::MissingWeights`] with the convert command; a file of another architecture or a
    /// malformed one, named.
    pub fn pretrained_shift_tolerant(
        trunk: ShiftTolerantTrunk,
        path: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        weights::build(trunk.arch(), path, device, |vb| {
            Self::shift_tolerant(ShiftTolerantNet::new(trunk, vb.clone())?, vb)
        })
    }

    fn with_trunk(name: &'static str, trunk: Trunk, heads: VarBuilder) -> Result<Self> {
        let lins = trunk
            .widths()
            .iter()
            .enumerate()
            .map(|(i, &c)| Ok(heads.pp(format!("lin{i}")).get((1, c, 1, 1), "weight")?.detach()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { name, trunk, lins })
    }

    /// LPIPS-vgg from converted weights (`vgg16` and `lpips-vgg`), each from the given path or
    /// the weights cache.
    ///
    /// # Errors
    /// Either file is missing (with the convert command) or malformed.
    pub fn pretrained_vgg(
        trunk: Option<&Path>,
        heads: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        // The heads first: a small file, and a wrong one is named even when the trunk is missing.
        let heads = load_heads(Arch::LpipsVgg, heads, device)?;
        let trunk = Vgg::pretrained(VggDepth::Vgg16, trunk, device)?;
        Self::vgg(trunk, heads)
    }

    /// LPIPS-alex from converted weights: the trunk (`alexnet`) and the heads (`lpips-alex`),
    /// each from the given path or the weights cache.
    ///
    /// # Errors
    /// Either file is missing (with the convert command) or malformed.
    pub fn pretrained_alex(
        trunk: Option<&Path>,
        heads: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        // The heads first: a small file, and a wrong one is named even when the trunk is missing.
        let heads = load_heads(Arch::LpipsAlex, heads, device)?;
        let trunk = AlexNet::pretrained(Arch::Alexnet, trunk, device)?;
        Self::alex(trunk, heads)
    }

    /// LPIPS-squeeze from converted weights (`squeezenet1_1` and `lpips-squeeze`), each from
    /// the given path or the weights cache.
    ///
    /// # Errors
    /// Either file is missing (with the convert command) or malformed.
    pub fn pretrained_squeeze(
        trunk: Option<&Path>,
        heads: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        // The heads first: a small file, and a wrong one is named even when the trunk is missing.
        let heads = load_heads(Arch::LpipsSqueeze, heads, device)?;
        let trunk = SqueezeNet::pretrained(trunk, device)?;
        Self::squeeze(trunk, heads)
    }

    /// The trunk's taps whose distances LPIPS sums, shallow to deep (the order of
    /// [`LpipsOutput::per_layer`]).
    pub fn taps(&self) -> Vec<Tap> {
        self.trunk.taps()
    }

    /// The metric's name: `lpips-alex`, `lpips-vgg`, `lpips-squeeze`, `stlpips-alex` or
    /// `stlpips-vgg`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn scale(x: &Tensor) -> Result<Tensor> {
        Ok(scaling()?.forward(x)?)
    }

    /// Checks both inputs against the contract and each other.
    fn check_pair(&self, a: &Tensor, b: &Tensor) -> Result<()> {
        let min = (self.trunk.min_size(), self.trunk.min_size());
        check_input(self.name, a, min)?;
        check_input(self.name, b, min)?;
        if a.dims() != b.dims() {
            return Err(Error::Input {
                comparator: self.name.into(),
                shape: b.dims().to_vec(),
                reason: format!("the second image's shape differs from the first's {:?}", a.dims()),
            });
        }
        Ok(())
    }

    /// The per-layer distances `[N, L]` as one autograd node (`chain`), when only `a` wants a
    /// gradient and the trunk is a plain chain of convolutions and pools (alex, vgg) on the CPU.
    fn fused(&self, a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
        if !a.track_op() || b.track_op() || !a.device().is_cpu() {
            return Ok(None);
        }
        let taps = self.trunk.taps();
        let stages = match &self.trunk {
            Trunk::Alex(n) => n.relu_stages(),
            Trunk::Vgg(n) => Some(n.stages(&taps)),
            Trunk::Squeeze(_) => None,
            Trunk::ShiftTolerant(n) => Some(n.stages(&taps)),
        };
        let Some(stages) = stages else { return Ok(None) };
        let scaling = scaling()?;
        let fb = self.trunk.run(scaling.forward(b)?, &taps)?;
        let head = LpipsHead { fb, lins: self.lins.clone() };
        Ok(Some(chain::apply(a, scaling, stages, head)?))
    }

    /// The per-pixel map of each layer, `[N, 1, h, w]` at the layer's resolution, before the
    /// spatial average.
    ///
    /// # Errors
    /// Inputs that break the contract or differ in shape.
    pub fn layer_maps(&self, a: &Tensor, b: &Tensor) -> Result<Vec<Tensor>> {
        self.check_pair(a, b)?;
        self.maps(a, b)
    }

    /// [`Lpips::layer_maps`] of inputs already checked.
    fn maps(&self, a: &Tensor, b: &Tensor) -> Result<Vec<Tensor>> {
        let taps = self.trunk.taps();
        let (fa, fb) = if a.track_op() || b.track_op() {
            // Each side through the trunk on its own, so that a backward pass for `a` does not
            // also run through `b`'s activations (as batching both would).
            (self.trunk.run(Self::scale(a)?, &taps)?, self.trunk.run(Self::scale(b)?, &taps)?)
        } else {
            // No gradient wanted: one pass over both, twice the batch for the threads to share
            // (a single pair then keeps two threads busy from the first layer on).
            let n = a.dim(0)?;
            let both = self.trunk.run(scaling()?.forward_cat(a, b)?, &taps)?;
            let half = |from| {
                both.iter().map(|f| f.narrow(0, from, n)).collect::<candle::Result<Vec<_>>>()
            };
            (half(0)?, half(n)?)
        };
        // Per layer: unit-normalize across channels, weight the squared difference, sum over
        // channels — one fused kernel (deepsim-kernels) with its backward.
        fa.iter()
            .zip(&fb)
            .zip(&self.lins)
            .map(|((fa, fb), lin)| Ok(deepsim_kernels::unit_weighted_sq_distance(fa, fb, lin)?))
            .collect()
    }

    /// The spatial map of LPIPS (the `lpips` package's `spatial=True`): each layer's map
    /// upsampled bilinearly to the input's size (PyTorch's `align_corners=False`) and summed.
    /// Not differentiable (candle has no backward for bilinear upsampling); use
    /// [`Lpips::forward`] as a loss.
    ///
    /// # Shapes
    /// `a`, `b`: `[N, 3, H, W]` → `[N, 1, H, W]`.
    ///
    /// # Errors
    /// Inputs that break the contract or differ in shape.
    pub fn spatial_map(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.check_pair(a, b)?;
        let (_, _, h, w) = a.dims4()?;
        let mut total: Option<Tensor> = None;
        for m in self.maps(a, b)? {
            let up = m.detach().upsample_bilinear2d(h, w, false)?;
            total = Some(match total {
                Some(t) => (t + up)?,
                None => up,
            });
        }
        Ok(total.expect("every trunk has taps"))
    }

    /// The LPIPS distance of each pair (`a[i]`, `b[i]`), with each layer's share.
    ///
    /// # Shapes
    /// `a`, `b`: `[N, 3, H, W]`, H and W at least the trunk's minimum → `[N]`.
    ///
    /// # Errors
    /// Inputs that break the contract or differ in shape.
    pub fn forward(&self, a: &Tensor, b: &Tensor) -> Result<LpipsOutput> {
        self.check_pair(a, b)?;
        if let Some(table) = self.fused(a, b)? {
            let per_layer = (0..self.lins.len())
                .map(|l| Ok(table.narrow(1, l, 1)?.squeeze(1)?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(LpipsOutput { distance: table.sum(1)?, per_layer });
        }
        let per_layer = self
            .maps(a, b)?
            .into_iter()
            .map(|m| Ok(m.mean((1, 2, 3))?))
            .collect::<Result<Vec<_>>>()?;
        let mut distance = per_layer[0].clone();
        for l in &per_layer[1..] {
            distance = (distance + l)?;
        }
        Ok(LpipsOutput { distance, per_layer })
    }
}

/// LPIPS' scaling layer (the `lpips` and `stlpips_pytorch` packages' `ScalingLayer`, shift
/// −0.030, −0.088, −0.188 and scale 0.458, 0.448, 0.450) applied to [0, 1] images mapped to
/// [−1, 1]: `(2x − 1 − shift) / scale`, as one map.
pub(crate) fn scaling() -> Result<ChannelAffine> {
    let (mul, add) = (SCALE.map(|s| 2.0 / s), [0, 1, 2].map(|c| (-1.0 - SHIFT[c]) / SCALE[c]));
    Ok(ChannelAffine::new(&mul, &add)?)
}

/// The scaling layer's shift (see [`scaling`]).
pub(crate) const SHIFT: [f64; 3] = [-0.030, -0.088, -0.188];
/// The scaling layer's scale (see [`scaling`]).
pub(crate) const SCALE: [f64; 3] = [0.458, 0.448, 0.450];

/// LPIPS' head on the trunk's taps of `a`: each layer's spatially averaged distance to `b`'s
/// taps, `[N, L]`.
struct LpipsHead {
    fb: Vec<Tensor>,
    lins: Vec<Tensor>,
}

impl TapHead for LpipsHead {
    fn forward(&self, taps: &[Tensor]) -> Result<Tensor> {
        let layers = taps
            .iter()
            .zip(&self.fb)
            .zip(&self.lins)
            .map(|((fa, fb), lin)| {
                Ok(deepsim_kernels::unit_weighted_sq_distance(fa, fb, lin)?.mean((1, 2, 3))?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&layers, 1)?)
    }

    fn backward(&self, taps: &[Tensor], grad: &Tensor) -> Result<Vec<Tensor>> {
        taps.iter()
            .zip(&self.fb)
            .zip(&self.lins)
            .enumerate()
            .map(|(l, ((fa, fb), lin))| {
                let (n, _, h, w) = fa.dims4()?;
                // The mean over the map spreads each image's gradient evenly over its pixels.
                let per_pixel = (grad.narrow(1, l, 1)? / (h * w) as f64)?.reshape((n, 1, 1, 1))?;
                let map_grad = per_pixel.broadcast_as((n, 1, h, w))?.contiguous()?;
                Ok(deepsim_kernels::unit_weighted_sq_distance_backward(fa, fb, lin, &map_grad)?)
            })
            .collect()
    }
}

/// The heads of `arch` from `path` or the cache.
fn load_heads(arch: Arch, path: Option<&Path>, device: &Device) -> Result<VarBuilder<'static>> {
    Ok(weights::load(arch, path, device)?.1)
}
