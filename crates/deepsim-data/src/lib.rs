//! Datasets for training image generators with candle: real images in, batches out.
//!
//! - **Sources** implement [`Dataset`]: [`ImageFolder`] (every image under a directory,
//!   recursively, labels from sub-folders if wanted), [`IdxDataset`] (MNIST, Fashion-MNIST;
//!   raw or gzip) and [`Cifar10`] (binary batches).
//! - **Transforms** ([`Transform`]): resize the shorter side, random or centre crop,
//!   horizontal flip; samples are `[C, H, W]` f32 in [0, 1].
//! - **Batches** come from a [`Loader`]: shuffled per epoch, built by background threads a
//!   bounded number of batches ahead, the same for a seed whatever the thread count, and
//!   resumable from a saved [`Position`].
//! - **Bad files** — empty, corrupt, truncated, of unsupported formats, too small — are skipped
//!   with one warning line each and counted in a [`Summary`]; grayscale, alpha, 16-bit and CMYK
//!   images are converted and counted. Strict mode turns the first skip into an error naming
//!   the file.
//! - **Feature cache** ([`FeatureCache`]): a comparator's features of a dataset, computed once
//!   into safetensors shards and served with each batch; rebuilt when the comparator, the tap
//!   or the data change.
//!
//! ```no_run
//! use std::sync::Arc;
//! use deepsim_data::{FolderConfig, ImageFolder, Loader, LoaderConfig, Position, Transform};
//!
//! let train = ImageFolder::open("data/demo/train", FolderConfig::new(Transform::train(80, 64)))?;
//! println!("{}", train.summary());
//! let loader = Loader::new(Arc::new(train), LoaderConfig::new(16))?;
//! let mut stream = loader.stream(Position::default())?;
//! let batch = stream.next().expect("endless stream")?;
//! assert_eq!(batch.images.dims(), &[16, 3, 64, 64]);
//! let resume_here = stream.next_position();
//! # let _ = resume_here;
//! # Ok::<(), deepsim_data::Error>(())
//! ```

mod atomic;
mod cache;
mod cifar;
mod dataset;
mod decode;
mod error;
mod folder;
mod idx;
mod loader;
mod report;
mod resample;
mod rng;
mod transform;

pub use atomic::{remove_stale_temporaries, write_atomic, write_atomic_io};
pub use cache::{CacheKey, CacheOptions, CacheStatus, FeatureCache};
pub use cifar::{Cifar10, CIFAR10_CLASSES, CIFAR10_RECORD};
pub use dataset::{stack, Dataset, Sample, Stacked};
pub use decode::{
    decode, decode_bytes, load_image, probe, ColorMode, IMAGE_EXTENSIONS, MAX_PIXELS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
};
pub use error::{Error, Result};
pub use folder::{FolderConfig, ImageFolder, Labels, Validation};
pub use idx::{parse_idx, read_idx, IdxArray, IdxData, IdxDataset, Split, FASHION_MNIST_CLASSES};
pub use loader::{Batch, Loader, LoaderConfig, Position, Stream};
pub use report::{Conversion, SkipLog, SkipReason, Summary};
pub use resample::{bicubic_weights, quantize_8bit, resize_bicubic};
pub use rng::{permutation, splitmix64, Rng};
pub use transform::{to_chw, Crop, Filter, Transform};
