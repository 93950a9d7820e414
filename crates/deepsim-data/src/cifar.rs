//! CIFAR-10's binary version (Krizhevsky 2009): files of 3073-byte records, one label byte
//! (0–9) then 1024 red, 1024 green and 1024 blue bytes of a 32×32 image, row-major.

use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use sha2::{Digest, Sha256};

use crate::dataset::{check_index, Dataset, Sample};
use crate::decode::ColorMode;
use crate::error::{Error, Result};
use crate::folder::hex;
use crate::idx::Split;
use crate::rng::Rng;
use crate::transform::{to_chw, Transform};

/// Bytes per record: a label and a 3×32×32 image.
pub const CIFAR10_RECORD: usize = 1 + 3 * 32 * 32;

/// CIFAR-10's class names in label order, as its `batches.meta.txt` lists them.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-10 binary batches as a [`Dataset`].
#[derive(Debug)]
pub struct Cifar10 {
    records: Vec<u8>,
    files: Vec<(PathBuf, usize)>,
    transform: Transform,
    color: ColorMode,
    classes: Vec<String>,
    fingerprint: String,
}

impl Cifar10 {
    /// The split from the directory `cifar-10-batches-bin` (or its parent): `data_batch_1.bin`
    /// … `data_batch_5.bin` for training, `test_batch.bin` for testing. Class names come from
    /// `batches.meta.txt` when present.
    ///
    /// # Errors
    /// [`Error::Io`] naming a missing file; otherwise as [`Cifar10::from_files`].
    pub fn open(
        dir: impl AsRef<Path>,
        split: Split,
        transform: Transform,
        color: ColorMode,
    ) -> Result<Self> {
        let mut dir = dir.as_ref().to_path_buf();
        if dir.join("cifar-10-batches-bin").is_dir() {
            dir = dir.join("cifar-10-batches-bin");
        }
        let files: Vec<PathBuf> = match split {
            Split::Train => (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
            Split::Test => vec![dir.join("test_batch.bin")],
        };
        let mut set = Self::from_files(&files, transform, color)?;
        let meta = dir.join("batches.meta.txt");
        if meta.is_file() {
            let text = std::fs::read_to_string(&meta).map_err(|e| Error::io(&meta, e))?;
            let names: Vec<String> =
                text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if names.len() < 10 {
                return Err(Error::format(
                    &meta,
                    format!("{} class names, expected 10", names.len()),
                ));
            }
            set.classes = names;
        }
        Ok(set)
    }

    /// The records of `files`, in order.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file; [`Error::Format`] for a length that is not a
    /// multiple of 3073 bytes or a label above 9 (naming the record and byte offset);
    /// [`Error::Empty`] when there are no records; [`Error::InvalidArgument`] for a crop
    /// larger than 32.
    pub fn from_files(files: &[PathBuf], transform: Transform, color: ColorMode) -> Result<Self> {
        transform.validate()?;
        if transform.min_side() > 32 {
            return Err(Error::InvalidArgument(format!(
                "CIFAR-10 images are 32×32, smaller than the transform's {}-pixel crop",
                transform.min_side()
            )));
        }
        let mut records = Vec::new();
        let mut counted = Vec::new();
        let mut digest = Sha256::new();
        digest.update(format!("cifar10 v1 {transform:?} {color:?}\n"));
        for path in files {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            if bytes.len() % CIFAR10_RECORD != 0 {
                return Err(Error::format(
                    path,
                    format!(
                        "{} bytes is not a whole number of {CIFAR10_RECORD}-byte records \
                         ({} records and {} bytes over: truncated or not CIFAR-10 binary)",
                        bytes.len(),
                        bytes.len() / CIFAR10_RECORD,
                        bytes.len() % CIFAR10_RECORD
                    ),
                ));
            }
            for (i, record) in bytes.chunks_exact(CIFAR10_RECORD).enumerate() {
                if record[0] > 9 {
                    return Err(Error::format(
                        path,
                        format!(
                            "record {i} (byte offset {}) has label {}, CIFAR-10 labels are 0–9",
                            i * CIFAR10_RECORD,
                            record[0]
                        ),
                    ));
                }
            }
            digest.update(
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            );
            digest.update(&bytes);
            counted.push((path.clone(), bytes.len() / CIFAR10_RECORD));
            records.extend_from_slice(&bytes);
        }
        if records.is_empty() {
            let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::Empty { location: names.join(", "), detail: "no records".into() });
        }
        Ok(Cifar10 {
            records,
            files: counted,
            transform,
            color,
            classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            fingerprint: hex(&digest.finalize()),
        })
    }

    /// The label of every record, in order.
    pub fn labels(&self) -> Vec<u8> {
        self.records.chunks_exact(CIFAR10_RECORD).map(|r| r[0]).collect()
    }
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.records.len() / CIFAR10_RECORD
    }

    fn sample_shape(&self) -> [usize; 3] {
        let (w, h) = self.transform.output_size(32, 32);
        [self.color.channels(), h as usize, w as usize]
    }

    fn classes(&self) -> Option<&[String]> {
        Some(&self.classes)
    }

    fn get(&self, index: usize, rng: &mut Rng) -> Result<Option<Sample>> {
        check_index(self.len(), index, "CIFAR-10")?;
        let record = &self.records[index * CIFAR10_RECORD..(index + 1) * CIFAR10_RECORD];
        let planes = &record[1..];
        let plain = self.transform.is_identity();
        let image = if plain && self.color == ColorMode::Rgb {
            planes.iter().map(|&v| v as f32 / 255.0).collect()
        } else {
            let mut hwc = vec![0u8; 3 * 1024];
            for p in 0..1024 {
                for c in 0..3 {
                    hwc[3 * p + c] = planes[c * 1024 + p];
                }
            }
            let image = RgbImage::from_raw(32, 32, hwc).expect("buffer holds 32×32×3 bytes");
            to_chw(&self.transform.apply(DynamicImage::ImageRgb8(image), rng), self.color)
        };
        Ok(Some(Sample { image, label: Some(record[0] as u32) }))
    }

    fn is_deterministic(&self) -> bool {
        !self.transform.is_random()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn describe(&self, index: usize) -> String {
        let mut i = index;
        for (file, n) in &self.files {
            if i < *n {
                return format!("{}#{i}", file.display());
            }
            i -= n;
        }
        format!("CIFAR-10#{index}")
    }
}
