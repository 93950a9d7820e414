//! The [`Dataset`] trait every source implements, and the [`Sample`] it returns.

use candle::{Device, Tensor};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// One sample: an image as `[C, H, W]` values in [0, 1] and its class, if the source has
/// classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Row-major `[C, H, W]` values in [0, 1].
    pub image: Vec<f32>,
    /// The class index.
    pub label: Option<u32>,
}

/// A finite, indexable source of samples of one shape. Implementations are shared between the
/// loader's threads.
pub trait Dataset: Send + Sync {
    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of every sample.
    fn sample_shape(&self) -> [usize; 3];

    /// Class names by index, when the source has classes.
    fn classes(&self) -> Option<&[String]>;

    /// Sample `index`, its random augmentation drawn from `rng`. `Ok(None)` means the sample
    /// turned out unusable (a file found corrupt on decoding) and was recorded as skipped;
    /// `Err` is for failures that must stop the caller (strict mode, I/O on a whole archive).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for an index out of range; others as above.
    fn get(&self, index: usize, rng: &mut Rng) -> Result<Option<Sample>>;

    /// Whether [`Dataset::get`] ignores `rng` (no random crop or flip): required of a dataset
    /// whose features are cached.
    fn is_deterministic(&self) -> bool;

    /// A hex digest that changes when the samples would change: the files (names, sizes,
    /// modification times, or contents for archives) and the transform.
    fn fingerprint(&self) -> String;

    /// A name for sample `index` in messages (a path, or `file#index`).
    fn describe(&self, index: usize) -> String;
}

/// Samples stacked into one batch by [`stack`].
#[derive(Clone, Debug)]
pub struct Stacked {
    /// `[N, C, H, W]`, f32 on the CPU.
    pub images: Tensor,
    /// The labels, when every kept sample has one.
    pub labels: Option<Vec<u32>>,
    /// The dataset indices kept (unusable samples are left out).
    pub indices: Vec<usize>,
}

/// The samples `indices` of `dataset`, sample `i` drawn with `rng_of(i)`, stacked into one
/// `[N, C, H, W]` batch; samples found unusable are left out.
///
/// # Errors
/// As [`Dataset::get`]; [`Error::Loader`] when a sample's size differs from
/// [`Dataset::sample_shape`].
pub fn stack(
    dataset: &dyn Dataset,
    indices: &[usize],
    mut rng_of: impl FnMut(usize) -> Rng,
) -> Result<Stacked> {
    let [c, h, w] = dataset.sample_shape();
    let size = c * h * w;
    let mut pixels = Vec::with_capacity(indices.len() * size);
    let mut labels = Vec::new();
    let mut kept = Vec::new();
    for &index in indices {
        let Some(sample) = dataset.get(index, &mut rng_of(index))? else { continue };
        if sample.image.len() != size {
            return Err(Error::Loader(format!(
                "{} gave {} values, the dataset's samples are {c}×{h}×{w}",
                dataset.describe(index),
                sample.image.len()
            )));
        }
        pixels.extend_from_slice(&sample.image);
        labels.extend(sample.label);
        kept.push(index);
    }
    let n = kept.len();
    let images = Tensor::from_vec(pixels, (n, c, h, w), &Device::Cpu)?;
    let labels = (labels.len() == n).then_some(labels);
    Ok(Stacked { images, labels, indices: kept })
}

pub(crate) fn check_index(len: usize, index: usize, what: &str) -> Result<()> {
    if index >= len {
        return Err(Error::InvalidArgument(format!(
            "{what}: sample index {index} out of range (len {len})"
        )));
    }
    Ok(())
}
