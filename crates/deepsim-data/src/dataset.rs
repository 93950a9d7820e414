//! The [`Dataset`] trait every source implements, and the [`Sample`] it returns.

use crate::error::Result;
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

pub(crate) fn check_index(len: usize, index: usize, what: &str) -> Result<()> {
    if index >= len {
        return Err(crate::Error::InvalidArgument(format!(
            "{what}: sample index {index} out of range (len {len})"
        )));
    }
    Ok(())
}
