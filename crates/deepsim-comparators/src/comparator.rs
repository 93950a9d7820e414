//! The `Comparator` trait: a frozen network whose named feature taps a perceptual loss compares,
//! and the input contract every comparator enforces.

use candle::{DType, Tensor};
use deepsim_kernels::ChannelAffine;

use crate::error::{Error, Result};
use crate::tap::Tap;

/// A frozen feature extractor ("comparator" C in DeePSiM, Dosovitskiy & Brox 2016, §3).
///
/// # Input contract
/// NCHW f32 RGB in [0, 1], any batch, any height and width at or above
/// [`Comparator::min_size`]. Each comparator applies its own preprocessing (mean/std, BGR,
/// 0–255, [−1, 1]) and documents it. Weights are frozen (backward computes only the input
/// gradient); features are differentiable with respect to the input.
pub trait Comparator {
    /// The comparator's name, e.g. `alexnet` or `caffenet`.
    fn name(&self) -> &str;

    /// The taps this comparator offers, shallow to deep.
    fn taps(&self) -> &[Tap];

    /// The smallest input (height, width) for which every tap exists.
    fn min_size(&self) -> (usize, usize);

    /// The activations at `taps`, in the order asked, computing no deeper than the deepest.
    ///
    /// # Errors
    /// The input breaks the contract (rank, channels, dtype, size, range), or a tap is not
    /// offered by this comparator.
    fn features(&self, x: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>>;

    /// Whether the comparator resizes every input to its own size first (the vision
    /// transformers' processors), so that images of different sizes give features of one
    /// shape. The convolutional trunks do not: their maps follow the input's size.
    fn resizes_input(&self) -> bool {
        false
    }
}

/// Checks the input contract: rank 4, 3 channels, f32, at least `min` in height and width,
/// values in [0, 1] (NaN is out of range). Returns (N, H, W).
pub fn check_input(who: &str, x: &Tensor, min: (usize, usize)) -> Result<(usize, usize, usize)> {
    let bad = |reason: String| Error::Input {
        comparator: who.to_owned(),
        shape: x.dims().to_vec(),
        reason,
    };
    let &[n, c, h, w] = x.dims() else {
        return Err(bad(format!("rank {}, expected 4 (NCHW)", x.rank())));
    };
    if x.dtype() != DType::F32 {
        return Err(bad(format!("dtype {:?}, expected f32", x.dtype())));
    }
    if c != 3 {
        return Err(bad(format!("{c} channels, expected 3 (RGB)")));
    }
    if n == 0 {
        return Err(bad("empty batch".into()));
    }
    if h < min.0 || w < min.1 {
        return Err(bad(format!("{h}×{w} is smaller than the minimum {}×{}", min.0, min.1)));
    }
    match deepsim_kernels::value_range(x)? {
        Some((lo, hi)) if lo >= 0.0 && hi <= 1.0 => {}
        Some((lo, hi)) => {
            return Err(bad(format!(
                "values span [{lo}, {hi}], expected [0, 1] (RGB scaled to 0–1)"
            )))
        }
        None => return Err(bad("values include NaN, expected [0, 1]".into())),
    }
    Ok((n, h, w))
}

/// Checks that every tap in `asked` is offered.
pub(crate) fn check_taps(who: &str, offered: &[Tap], asked: &[Tap]) -> Result<()> {
    match asked.iter().find(|t| !offered.contains(t)) {
        Some(t) => Err(Error::UnknownTap {
            comparator: who.to_owned(),
            tap: t.name().to_owned(),
            offered: offered.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "),
        }),
        None => Ok(()),
    }
}

/// torchvision's input normalization: ImageNet's channel mean and standard deviation,
/// `(x − mean) / std`, as one per-channel affine map.
pub(crate) fn imagenet_normalize(x: &Tensor) -> Result<Tensor> {
    const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
    const STD: [f64; 3] = [0.229, 0.224, 0.225];
    let scale = STD.map(|s| 1.0 / s);
    let shift = [0, 1, 2].map(|c| -MEAN[c] / STD[c]);
    Ok(ChannelAffine::new(&scale, &shift)?.forward(x)?)
}

/// The activations of `taps`, in order, from the (tap, activation) pairs a pass collected.
pub(crate) fn in_order(taps: &[Tap], got: &[(Tap, Tensor)]) -> Vec<Tensor> {
    taps.iter()
        .map(|t| {
            got.iter().find(|(g, _)| g == t).map(|(_, v)| v.clone()).expect("every tap computed")
        })
        .collect()
}
