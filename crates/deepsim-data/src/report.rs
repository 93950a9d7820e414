//! Why a file was skipped, what was converted, and the summary a run prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why an image file cannot be used. Its `Display` is the warning's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The file has no bytes.
    ZeroBytes,
    /// The content is not an image format this build reads (the name says which, if known).
    Unsupported(String),
    /// The decoder rejected the file: damaged or cut short.
    Corrupt(String),
    /// The image is smaller than the transform needs.
    TooSmall {
        /// Width found.
        width: u32,
        /// Height found.
        height: u32,
        /// The smallest side the transform accepts.
        min_side: u32,
    },
    /// Without a crop or resize every image must have the first image's size; this one differs.
    SizeMismatch {
        /// Width found.
        width: u32,
        /// Height found.
        height: u32,
        /// The width every image must have.
        expected_width: u32,
        /// The height every image must have.
        expected_height: u32,
    },
    /// The header declares more pixels than [`crate::MAX_PIXELS`] (a decompression bomb, or a
    /// scan too large to decode into memory); refused before any pixel is allocated.
    TooLarge {
        /// Width declared.
        width: u32,
        /// Height declared.
        height: u32,
    },
    /// Labels come from sub-folders, and this file lies directly in the root.
    NoClassFolder,
    /// The file could not be read (permissions, I/O error).
    Unreadable(String),
}

impl SkipReason {
    /// A short name of the kind of failure, used to group the summary.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::ZeroBytes => "zero-byte",
            SkipReason::Unsupported(_) => "unsupported format",
            SkipReason::Corrupt(_) => "corrupt or truncated",
            SkipReason::TooSmall { .. } => "too small",
            SkipReason::SizeMismatch { .. } => "size differs",
            SkipReason::TooLarge { .. } => "too large to decode",
            SkipReason::NoClassFolder => "outside class folders",
            SkipReason::Unreadable(_) => "unreadable",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ZeroBytes => write!(f, "empty file (0 bytes)"),
            SkipReason::Unsupported(what) => write!(f, "unsupported format: {what}"),
            SkipReason::Corrupt(msg) => write!(f, "corrupt or truncated image: {msg}"),
            SkipReason::TooSmall { width, height, min_side } => write!(
                f,
                "image is {width}×{height}, smaller than the {min_side}-pixel side the transform needs"
            ),
            SkipReason::SizeMismatch { width, height, expected_width, expected_height } => write!(
                f,
                "image is {width}×{height} but the dataset's images are \
                 {expected_width}×{expected_height} (set a crop or resize)"
            ),
            SkipReason::TooLarge { width, height } => write!(
                f,
                "the header declares {width}×{height} pixels, more than the {} million this \
                 loader decodes (a decompression bomb, or an image to downscale first)",
                crate::MAX_PIXELS / 1_000_000
            ),
            SkipReason::NoClassFolder => {
                write!(f, "lies in the root, not in a class sub-folder (labels come from folders)")
            }
            SkipReason::Unreadable(msg) => write!(f, "cannot read: {msg}"),
        }
    }
}

/// A colour conversion applied to make an image 8-bit-equivalent RGB (or gray) in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Conversion {
    /// One-channel image replicated to RGB.
    GrayToRgb,
    /// RGB image reduced to one channel (ITU-R BT.709 luma, as the `image` crate computes it).
    RgbToGray,
    /// Alpha channel dropped, colour kept as stored (PIL's `convert("RGB")`).
    AlphaDropped,
    /// 16-bit samples scaled by 1/65535 (no rounding to 8 bits).
    SixteenBit,
    /// Floating-point samples clamped to [0, 1].
    FloatClamped,
    /// CMYK (or YCCK) JPEG converted to RGB by the decoder.
    CmykToRgb,
}

impl Conversion {
    fn describe(self) -> &'static str {
        match self {
            Conversion::GrayToRgb => "grayscale → RGB",
            Conversion::RgbToGray => "RGB → gray",
            Conversion::AlphaDropped => "alpha dropped",
            Conversion::SixteenBit => "16-bit",
            Conversion::FloatClamped => "float clamped",
            Conversion::CmykToRgb => "CMYK → RGB",
        }
    }
}

/// Collects skipped files and conversions for one data source, across threads. Each skipped
/// file is warned about once (on stderr, unless warnings are off), however often it is met.
#[derive(Debug)]
pub struct SkipLog {
    warn: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    skipped: BTreeMap<PathBuf, SkipReason>,
    converted: BTreeMap<Conversion, BTreeSet<PathBuf>>,
}

impl SkipLog {
    /// An empty log; `warn` prints one line per skipped file on stderr.
    pub fn new(warn: bool) -> Self {
        SkipLog { warn, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `path` is skipped; warns the first time.
    pub fn skip(&self, path: &Path, reason: SkipReason) {
        let mut inner = self.lock();
        if !inner.skipped.contains_key(path) {
            if self.warn {
                eprintln!("warning: skipping {}: {reason}", path.display());
            }
            inner.skipped.insert(path.to_path_buf(), reason);
        }
    }

    /// Whether `path` was already found unusable.
    pub fn is_skipped(&self, path: &Path) -> bool {
        self.lock().skipped.contains_key(path)
    }

    /// Records the conversions applied to `path` (each file counts once per kind).
    pub fn converted(&self, path: &Path, conversions: &[Conversion]) {
        if conversions.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for &c in conversions {
            // Called for every sample served: allocate only for a file not yet recorded.
            let files = inner.converted.entry(c).or_default();
            if !files.contains(path) {
                files.insert(path.to_path_buf());
            }
        }
    }

    /// The skipped files with their reasons, sorted by path.
    pub fn skipped(&self) -> Vec<(PathBuf, SkipReason)> {
        self.lock().skipped.iter().map(|(p, r)| (p.clone(), r.clone())).collect()
    }

    /// Counts for a summary line; `usable` is the number of samples the source serves.
    pub fn summary(&self, usable: usize) -> Summary {
        let inner = self.lock();
        let mut skipped = BTreeMap::new();
        for reason in inner.skipped.values() {
            *skipped.entry(reason.kind()).or_insert(0) += 1;
        }
        let converted = inner.converted.iter().map(|(c, set)| (*c, set.len())).collect();
        Summary { usable, skipped, converted }
    }
}

/// What a data source held: usable samples, skipped files by kind, conversions by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Samples served.
    pub usable: usize,
    /// Skipped files per [`SkipReason::kind`].
    pub skipped: BTreeMap<&'static str, usize>,
    /// Converted files per kind (only files decoded so far are counted).
    pub converted: BTreeMap<Conversion, usize>,
}

impl Summary {
    /// The number of skipped files.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} usable", self.usable)?;
        if self.skipped.is_empty() {
            write!(f, ", none skipped")?;
        } else {
            let parts: Vec<String> = self.skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
            write!(f, ", {} skipped ({})", self.skipped_total(), parts.join(", "))?;
        }
        if !self.converted.is_empty() {
            let parts: Vec<String> =
                self.converted.iter().map(|(c, n)| format!("{n} {}", c.describe())).collect();
            write!(f, "; converted: {}", parts.join(", "))?;
        }
        Ok(())
    }
}
