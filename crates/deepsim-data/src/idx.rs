//! The IDX format of MNIST and Fashion-MNIST (LeCun et al.), raw or gzip-compressed, and a
//! [`Dataset`] over an images file and a labels file.
//!
//! An IDX file is two zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
//! 0x0D f32, 0x0E f64), the number of dimensions, each dimension as a big-endian u32, then the
//! values, big-endian, in row-major order.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};
use sha2::{Digest, Sha256};

use crate::dataset::{check_index, Dataset, Sample};
use crate::decode::ColorMode;
use crate::error::{Error, Result};
use crate::folder::hex;
use crate::rng::Rng;
use crate::transform::{to_chw, Transform};

/// The values of an IDX file, in the stored type.
#[derive(Clone, Debug, PartialEq)]
pub enum IdxData {
    /// Type 0x08.
    U8(Vec<u8>),
    /// Type 0x09.
    I8(Vec<i8>),
    /// Type 0x0B.
    I16(Vec<i16>),
    /// Type 0x0C.
    I32(Vec<i32>),
    /// Type 0x0D.
    F32(Vec<f32>),
    /// Type 0x0E.
    F64(Vec<f64>),
}

impl IdxData {
    fn type_name(&self) -> &'static str {
        match self {
            IdxData::U8(_) => "u8",
            IdxData::I8(_) => "i8",
            IdxData::I16(_) => "i16",
            IdxData::I32(_) => "i32",
            IdxData::F32(_) => "f32",
            IdxData::F64(_) => "f64",
        }
    }
}

/// A decoded IDX file: its dimensions and values.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    /// The dimensions, outermost first (`[60000, 28, 28]` for MNIST's training images).
    pub dims: Vec<usize>,
    /// The values.
    pub data: IdxData,
}

/// The bytes of `path`, decompressed when they start with gzip's magic bytes.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    gunzip(std::fs::read(path).map_err(|e| Error::io(path, e))?, path)
}

/// `raw` decompressed when it is a gzip stream, else as it is.
fn gunzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1F, 0x8B]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file, raw or gzip-compressed (detected from the content, not the name).
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::Format`] for a bad gzip stream, a bad magic
/// number or type code, or a length that disagrees with the header (saying both).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    parse_idx(&read_maybe_gzip(path)?, path)
}

/// Parses IDX bytes; `path` only names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(Error::format(
            path,
            format!("not an IDX file: magic bytes {} (expected 00 00 TT DD)", head.join(" ")),
        ));
    }
    let (code, ndims) = (bytes[2], bytes[3] as usize);
    let width = match code {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        _ => return Err(Error::format(path, format!("unknown IDX type code 0x{code:02x}"))),
    };
    if ndims == 0 {
        return Err(Error::format(path, "IDX header declares 0 dimensions"));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::format(
            path,
            format!("file ends inside the header ({} bytes, header needs {header})", bytes.len()),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let expected = count.and_then(|c| c.checked_mul(width)).and_then(|n| n.checked_add(header));
    if expected != Some(bytes.len()) {
        let want = expected.map(|e| e.to_string()).unwrap_or_else(|| "more than usize".into());
        return Err(Error::format(
            path,
            format!(
                "dimensions {dims:?} of {width}-byte values need {want} bytes, the file has {} \
                 (truncated or not IDX)",
                bytes.len()
            ),
        ));
    }
    let body = &bytes[header..];
    let data = match code {
        0x08 => IdxData::U8(body.to_vec()),
        0x09 => IdxData::I8(body.iter().map(|&b| b as i8).collect()),
        0x0B => {
            IdxData::I16(body.chunks_exact(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect())
        }
        0x0C => IdxData::I32(
            body.chunks_exact(4).map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ),
        0x0D => IdxData::F32(
            body.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ),
        _ => IdxData::F64(
            body.chunks_exact(8)
                .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
    };
    Ok(IdxArray { dims, data })
}

/// Fashion-MNIST's ten class names, in label order (Xiao, Rasul & Vollgraf 2017).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which half of a dataset with a fixed train/test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The test set.
    Test,
}

/// An IDX images file (u8, `[N, H, W]`), with an optional labels file (u8, `[N]`), as a
/// [`Dataset`]: one gray channel, or three identical ones with [`ColorMode::Rgb`].
#[derive(Debug)]
pub struct IdxDataset {
    images: Vec<u8>,
    labels: Option<Vec<u8>>,
    height: usize,
    width: usize,
    transform: Transform,
    color: ColorMode,
    classes: Option<Vec<String>>,
    source: PathBuf,
    fingerprint: String,
}

/// [`read_idx`], adding the file's name, length and raw bytes to `h` from the same read.
fn read_idx_hashed(path: &Path, h: &mut Sha256) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    h.update(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    h.update((raw.len() as u64).to_le_bytes());
    h.update(&raw);
    parse_idx(&gunzip(raw, path)?, path)
}

impl IdxDataset {
    /// Opens an images file and, optionally, its labels file.
    ///
    /// # Errors
    /// [`Error::Format`] when the images are not u8 `[N, H, W]`, the labels not u8 `[N]` of
    /// the same `N`, or either file is malformed; [`Error::Empty`] when `N` is 0;
    /// [`Error::InvalidArgument`] for a transform whose crop exceeds the images.
    pub fn open(
        images: impl AsRef<Path>,
        labels: Option<&Path>,
        transform: Transform,
        color: ColorMode,
    ) -> Result<Self> {
        let images_path = images.as_ref();
        transform.validate()?;
        let mut digest = Sha256::new();
        digest.update(format!("idx v1 {transform:?} {color:?}\n"));
        let array = read_idx_hashed(images_path, &mut digest)?;
        let (n, height, width) = match (&array.dims[..], &array.data) {
            ([n, h, w], IdxData::U8(_)) => (*n, *h, *w),
            (dims, data) => {
                return Err(Error::format(
                    images_path,
                    format!("images must be u8 [N, H, W], found {} {dims:?}", data.type_name()),
                ))
            }
        };
        let IdxData::U8(pixels) = array.data else { unreachable!("matched above") };
        if n == 0 || height == 0 || width == 0 {
            return Err(Error::Empty {
                location: images_path.display().to_string(),
                detail: format!("dimensions {:?}", array.dims),
            });
        }
        if (height.min(width) as u32) < transform.min_side() {
            return Err(Error::InvalidArgument(format!(
                "{}: {height}×{width} images are smaller than the transform's {}-pixel crop",
                images_path.display(),
                transform.min_side()
            )));
        }
        let labels = match labels {
            None => None,
            Some(path) => {
                let array = read_idx_hashed(path, &mut digest)?;
                match (&array.dims[..], array.data) {
                    ([m], IdxData::U8(values)) if *m == n => Some(values),
                    (dims, data) => {
                        return Err(Error::format(
                            path,
                            format!(
                                "labels must be u8 [{n}] to match {}, found {} {dims:?}",
                                images_path.display(),
                                data.type_name()
                            ),
                        ))
                    }
                }
            }
        };
        Ok(IdxDataset {
            images: pixels,
            labels,
            height,
            width,
            transform,
            color,
            classes: None,
            source: images_path.to_path_buf(),
            fingerprint: hex(&digest.finalize()),
        })
    }

    /// Fashion-MNIST's `split` from a directory holding its four files (`train-images-idx3-ubyte`
    /// and so on, each raw or `.gz`), with the class names set.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory and the file name looked for when one is missing;
    /// otherwise as [`IdxDataset::open`].
    pub fn fashion_mnist(
        dir: impl AsRef<Path>,
        split: Split,
        transform: Transform,
        color: ColorMode,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let find = |stem: &str| -> Result<PathBuf> {
            for name in [format!("{stem}.gz"), stem.to_string()] {
                let p = dir.join(&name);
                if p.is_file() {
                    return Ok(p);
                }
            }
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {stem}[.gz]"));
            Err(Error::io(dir, e))
        };
        let images = find(&format!("{prefix}-images-idx3-ubyte"))?;
        let labels = find(&format!("{prefix}-labels-idx1-ubyte"))?;
        let mut set = Self::open(&images, Some(&labels), transform, color)?;
        set.classes = Some(FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect());
        Ok(set)
    }

    /// Sets the class names (their number must exceed every label).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a label has no name.
    pub fn with_classes(mut self, names: Vec<String>) -> Result<Self> {
        if let Some(max) = self.labels.as_ref().and_then(|l| l.iter().max()) {
            if *max as usize >= names.len() {
                return Err(Error::InvalidArgument(format!(
                    "{}: label {max} but only {} class names",
                    self.source.display(),
                    names.len()
                )));
            }
        }
        self.classes = Some(names);
        Ok(self)
    }

    /// The labels, when a labels file was given.
    pub fn labels(&self) -> Option<&[u8]> {
        self.labels.as_deref()
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.images.len() / (self.height * self.width)
    }

    fn sample_shape(&self) -> [usize; 3] {
        let (w, h) = self.transform.output_size(self.width as u32, self.height as u32);
        [self.color.channels(), h as usize, w as usize]
    }

    fn classes(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    fn get(&self, index: usize, rng: &mut Rng) -> Result<Option<Sample>> {
        check_index(self.len(), index, "IDX dataset")?;
        let hw = self.height * self.width;
        let pixels = &self.images[index * hw..(index + 1) * hw];
        let label = self.labels.as_ref().map(|l| l[index] as u32);
        let plain = self.transform.is_identity();
        let gray: Vec<f32> = if plain {
            pixels.iter().map(|&v| v as f32 / 255.0).collect()
        } else {
            let image = GrayImage::from_raw(self.width as u32, self.height as u32, pixels.to_vec())
                .expect("buffer holds H×W bytes");
            to_chw(&self.transform.apply(DynamicImage::ImageLuma8(image), rng), ColorMode::Gray)
        };
        let image = match self.color {
            ColorMode::Gray => gray,
            ColorMode::Rgb => gray.repeat(3),
        };
        Ok(Some(Sample { image, label }))
    }

    fn is_deterministic(&self) -> bool {
        !self.transform.is_random()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn describe(&self, index: usize) -> String {
        format!("{}#{index}", self.source.display())
    }
}
