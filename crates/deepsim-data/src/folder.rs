//! Image folders: every image file under a directory, recursively, optionally labelled by the
//! sub-folder it lies in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::dataset::{check_index, Dataset, Sample};
use crate::decode::{self, ColorMode, IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_EXTENSIONS};
use crate::error::{Error, Result};
use crate::report::{SkipLog, SkipReason, Summary};
use crate::rng::Rng;
use crate::transform::{to_chw, Crop, Transform};

/// Where labels come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// No labels.
    None,
    /// The first-level sub-folder under the root names the class (torchvision's
    /// `ImageFolder`); classes are numbered in sorted name order.
    Subfolders,
}

/// How thoroughly files are checked when the folder is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Read each file's header (format, size): cheap. A file damaged past its header is found
    /// when first loaded; it is then skipped and its batch is one sample short.
    Header,
    /// Decode every file once: slower to open, but every batch is then full.
    Full,
}

/// Options of [`ImageFolder::open`].
#[derive(Clone, Debug)]
pub struct FolderConfig {
    /// How images become samples.
    pub transform: Transform,
    /// Channels served.
    pub color: ColorMode,
    /// Where labels come from.
    pub labels: Labels,
    /// How files are checked at open.
    pub validation: Validation,
    /// Fail on the first unusable file (an error naming it) instead of skipping it.
    pub strict: bool,
    /// Print one warning line per skipped file on stderr.
    pub warn: bool,
}

impl FolderConfig {
    /// RGB, no labels, header validation, skipping with warnings.
    pub fn new(transform: Transform) -> Self {
        FolderConfig {
            transform,
            color: ColorMode::Rgb,
            labels: Labels::None,
            validation: Validation::Header,
            strict: false,
            warn: true,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    label: Option<u32>,
}

/// The image files under a directory as a [`Dataset`].
#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    config: FolderConfig,
    entries: Vec<Entry>,
    classes: Option<Vec<String>>,
    shape: [usize; 3],
    fingerprint: String,
    log: Arc<SkipLog>,
}

/// Every file under `dir`, recursively, sorted; hidden entries (names starting with `.`) are
/// left out.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        children.push(entry.path());
    }
    children.sort();
    for path in children {
        // `metadata` follows symbolic links; a dangling link is reported as unreadable later.
        if std::fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false) {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default()
}

impl ImageFolder {
    /// Scans `root` recursively. Files with image extensions are checked (header or full
    /// decode, see [`Validation`]); files of known but unreadable image formats (HEIC, PSD, …)
    /// are reported; other files (text, JSON) are ignored.
    ///
    /// # Errors
    /// - [`Error::Io`] when `root` cannot be listed;
    /// - [`Error::BadImage`] in strict mode, for the first unusable file in path order;
    /// - [`Error::Empty`] when no usable image remains, with the counts of what was found;
    /// - [`Error::InvalidArgument`] for an invalid transform.
    pub fn open(root: impl AsRef<Path>, config: FolderConfig) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        config.transform.validate()?;
        if !root.is_dir() {
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory");
            return Err(Error::io(&root, e));
        }
        let mut files = Vec::new();
        walk(&root, &mut files)?;
        let log = Arc::new(SkipLog::new(config.warn && !config.strict));
        let mut candidates = Vec::new();
        for path in files {
            let ext = extension(&path);
            // Files of unreadable image formats go through the checks too, which name the
            // format from the content (HEIC, PSD, …).
            if IMAGE_EXTENSIONS.contains(&ext.as_str())
                || UNSUPPORTED_IMAGE_EXTENSIONS.contains(&ext.as_str())
            {
                candidates.push(path);
            }
        }
        let found = candidates.len();

        // Labels from the first path component under the root.
        let mut classes = None;
        let mut labelled: Vec<(PathBuf, Option<String>)> = Vec::with_capacity(candidates.len());
        for path in candidates {
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            let class = match config.labels {
                Labels::None => None,
                Labels::Subfolders => {
                    let mut parts = rel.components();
                    let first = parts.next().map(|c| c.as_os_str().to_string_lossy().into_owned());
                    if parts.next().is_none() {
                        Self::reject(&config, &log, &path, SkipReason::NoClassFolder)?;
                        continue;
                    }
                    first
                }
            };
            labelled.push((path, class));
        }

        // Check every file in parallel: header or full decode.
        let min_side = config.transform.min_side();
        let checks: Vec<std::result::Result<(u32, u32), SkipReason>> = labelled
            .par_iter()
            .map(|(path, _)| {
                let (w, h) = match config.validation {
                    Validation::Header => decode::probe(path)?,
                    Validation::Full => {
                        let (image, conversions) = decode::decode(path, config.color)?;
                        log.converted(path, &conversions);
                        (image.width(), image.height())
                    }
                };
                if w.min(h) < min_side {
                    return Err(SkipReason::TooSmall { width: w, height: h, min_side });
                }
                Ok((w, h))
            })
            .collect();

        let mut entries = Vec::new();
        let mut first_size: Option<(u32, u32)> = None;
        let mut kept_classes = Vec::new();
        for ((path, class), check) in labelled.into_iter().zip(checks) {
            let (w, h) = match check {
                Ok(size) => size,
                Err(reason) => {
                    Self::reject(&config, &log, &path, reason)?;
                    continue;
                }
            };
            if config.transform.crop == Crop::Full {
                let size = config.transform.output_size(w, h);
                let expected = *first_size.get_or_insert(size);
                if size != expected {
                    let (ew, eh) = expected;
                    let reason = SkipReason::SizeMismatch {
                        width: size.0,
                        height: size.1,
                        expected_width: ew,
                        expected_height: eh,
                    };
                    Self::reject(&config, &log, &path, reason)?;
                    continue;
                }
            } else {
                first_size.get_or_insert(config.transform.output_size(w, h));
            }
            kept_classes.push(class);
            entries.push(Entry { path, label: None });
        }
        if config.labels == Labels::Subfolders {
            let mut names: Vec<String> = kept_classes.iter().flatten().cloned().collect();
            names.sort();
            names.dedup();
            for (entry, class) in entries.iter_mut().zip(&kept_classes) {
                let class = class.as_ref().expect("labelled entries have a class");
                entry.label = Some(names.binary_search(class).expect("class listed") as u32);
            }
            classes = Some(names);
        }
        let Some((w, h)) = first_size.filter(|_| !entries.is_empty()) else {
            let summary = log.summary(0);
            return Err(Error::Empty {
                location: root.display().to_string(),
                detail: format!("{found} image file(s) found; {summary}"),
            });
        };
        let shape = [config.color.channels(), h as usize, w as usize];
        let fingerprint = fingerprint(&root, &entries, &config)?;
        Ok(ImageFolder { root, config, entries, classes, shape, fingerprint, log })
    }

    fn reject(config: &FolderConfig, log: &SkipLog, path: &Path, reason: SkipReason) -> Result<()> {
        if config.strict {
            return Err(Error::BadImage { path: path.to_path_buf(), reason });
        }
        log.skip(path, reason);
        Ok(())
    }

    /// The directory scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The usable files, in sample-index order (sorted paths).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().map(|e| e.path.as_path())
    }

    /// The log of skipped and converted files.
    pub fn skip_log(&self) -> &SkipLog {
        &self.log
    }

    /// The summary line: usable images, skipped files by reason, conversions so far.
    pub fn summary(&self) -> Summary {
        self.log.summary(self.entries.len())
    }

    /// The configuration the folder was opened with.
    pub fn config(&self) -> &FolderConfig {
        &self.config
    }
}

fn fingerprint(root: &Path, entries: &[Entry], config: &FolderConfig) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("folder v1 {:?} {:?} {:?}\n", config.transform, config.color, config.labels));
    for e in entries {
        let meta = std::fs::metadata(&e.path).map_err(|err| Error::io(&e.path, err))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let rel = e.path.strip_prefix(root).unwrap_or(&e.path);
        h.update(format!("{}\t{}\t{mtime}\t{:?}\n", rel.display(), meta.len(), e.label));
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn classes(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    fn get(&self, index: usize, rng: &mut Rng) -> Result<Option<Sample>> {
        check_index(self.entries.len(), index, "image folder")?;
        let entry = &self.entries[index];
        if self.log.is_skipped(&entry.path) {
            return Ok(None);
        }
        let (image, conversions) = match decode::decode(&entry.path, self.config.color) {
            Ok(decoded) => decoded,
            Err(reason) => {
                Self::reject(&self.config, &self.log, &entry.path, reason)?;
                return Ok(None);
            }
        };
        self.log.converted(&entry.path, &conversions);
        let (w, h) = (image.width(), image.height());
        let (ow, oh) = self.config.transform.output_size(w, h);
        let min_side = self.config.transform.min_side();
        // The file may have changed since it was opened.
        if w.min(h) < min_side || [self.shape[1], self.shape[2]] != [oh as usize, ow as usize] {
            let reason = if w.min(h) < min_side {
                SkipReason::TooSmall { width: w, height: h, min_side }
            } else {
                SkipReason::SizeMismatch {
                    width: ow,
                    height: oh,
                    expected_width: self.shape[2] as u32,
                    expected_height: self.shape[1] as u32,
                }
            };
            Self::reject(&self.config, &self.log, &entry.path, reason)?;
            return Ok(None);
        }
        let image = self.config.transform.apply(image, rng);
        Ok(Some(Sample { image: to_chw(&image, self.config.color), label: entry.label }))
    }

    fn is_deterministic(&self) -> bool {
        !self.config.transform.is_random()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn describe(&self, index: usize) -> String {
        self.entries.get(index).map(|e| e.path.display().to_string()).unwrap_or_default()
    }
}
