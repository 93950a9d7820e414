//! A feature cache: a comparator's features of every sample of a dataset, computed once and
//! stored as safetensors shards, so that training a feature inverter need not re-encode its
//! targets every step.
//!
//! A cache directory holds `shard-NNNNN.safetensors` files (tensor `features`, `[n, …]` f32,
//! rows in dataset order) and `index.safetensors` (tensor `valid`, u8 per sample, and the
//! metadata that identifies the cache), written last: a cache without its index is
//! incomplete, and a rebuild reuses every shard that was finished for the same key. Every file
//! is written to a temporary name and renamed into place.
//!
//! A cache is stale, and is rebuilt, when the comparator's name, the tap, the data's
//! fingerprint (file names, sizes, times and the transform) or the number of samples differ,
//! or when the comparator no longer reproduces the stored features of the first samples (new
//! weights under an old name).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

use crate::atomic::write_atomic;
use crate::dataset::{stack, Dataset};
use crate::error::{Error, Result};
use crate::rng::Rng;

const FORMAT: &str = "deepsim-feature-cache v1";
/// Samples re-encoded on open to check that the comparator still gives the stored features.
const PROBE: usize = 2;

/// What the cached features are features of: the comparator (name and weights, in words) and
/// the tap. Change either and the cache is rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    /// The comparator and its weights, e.g. `alexnet-caffe (bvlc_reference_caffenet)`.
    pub comparator: String,
    /// The tap, e.g. `conv5`.
    pub tap: String,
}

/// Options of [`FeatureCache::open_or_build`].
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Samples per call of the encoder while building.
    pub batch_size: usize,
    /// Samples per shard file.
    pub shard_size: usize,
    /// Largest relative difference (to the largest stored value) accepted when the first
    /// samples are re-encoded on open.
    pub probe_tolerance: f32,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions { batch_size: 32, shard_size: 4096, probe_tolerance: 1e-3 }
    }
}

struct Shard {
    map: memmap2::Mmap,
    offset: usize,
}

/// Cached features of a dataset, memory-mapped.
pub struct FeatureCache {
    dir: PathBuf,
    key: CacheKey,
    data_fingerprint: String,
    shape: Vec<usize>,
    row: usize,
    shard_size: usize,
    shards: Vec<Shard>,
    valid: Vec<bool>,
}

impl std::fmt::Debug for FeatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureCache")
            .field("dir", &self.dir)
            .field("key", &self.key)
            .field("len", &self.valid.len())
            .field("shape", &self.shape)
            .finish()
    }
}

/// What [`FeatureCache::open_or_build`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// A valid cache was found.
    Reused,
    /// The cache was built (fresh, or replacing a stale one); `reused_shards` were kept from
    /// an interrupted build with the same key.
    Built {
        /// Shards kept from an earlier, interrupted build.
        reused_shards: usize,
    },
}

fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.safetensors")
}

fn metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

impl FeatureCache {
    /// Opens the cache in `dir` for `dataset` and `key`, or builds it, calling `encode` on
    /// `[B, C, H, W]` batches of samples (f32, CPU) for `[B, …]` features (any float dtype or
    /// device: they are copied to f32 on the CPU).
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when the dataset draws random augmentations (cached
    ///   features would not match the images served), or for zero batch or shard sizes;
    /// - [`Error::Io`] naming the file that could not be read or written (a full disk included;
    ///   finished shards are kept and reused on the next attempt);
    /// - [`Error::Format`] for an unreadable shard or index;
    /// - errors of `encode` and of the dataset.
    pub fn open_or_build(
        dir: impl AsRef<Path>,
        dataset: &dyn Dataset,
        key: &CacheKey,
        options: &CacheOptions,
        mut encode: impl FnMut(&Tensor) -> candle::Result<Tensor>,
    ) -> Result<(Self, CacheStatus)> {
        let dir = dir.as_ref();
        if !dataset.is_deterministic() {
            return Err(Error::InvalidArgument(
                "feature cache: the dataset's transform is random (crop or flip); cache the \
                 features of a deterministic view (centre crop, no flip)"
                    .into(),
            ));
        }
        if options.batch_size == 0 || options.shard_size == 0 {
            return Err(Error::InvalidArgument(format!("feature cache: zero size in {options:?}")));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if let Some(cache) = Self::open_valid(dir, dataset, key, options, &mut encode)? {
            return Ok((cache, CacheStatus::Reused));
        }
        let reused = Self::build(dir, dataset, key, options, &mut encode)?;
        let cache = Self::open_index(dir, dataset, key)?.ok_or_else(|| {
            Error::format(
                dir.join("index.safetensors"),
                "the cache just built does not match its key",
            )
        })?;
        Ok((cache, CacheStatus::Built { reused_shards: reused }))
    }

    fn identity(
        dataset: &dyn Dataset,
        key: &CacheKey,
        shard_size: usize,
    ) -> HashMap<String, String> {
        HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("comparator".to_string(), key.comparator.clone()),
            ("tap".to_string(), key.tap.clone()),
            ("data".to_string(), dataset.fingerprint()),
            ("len".to_string(), dataset.len().to_string()),
            ("shard_size".to_string(), shard_size.to_string()),
        ])
    }

    fn open_valid(
        dir: &Path,
        dataset: &dyn Dataset,
        key: &CacheKey,
        options: &CacheOptions,
        encode: &mut impl FnMut(&Tensor) -> candle::Result<Tensor>,
    ) -> Result<Option<Self>> {
        let Some(cache) = Self::open_index(dir, dataset, key)? else { return Ok(None) };
        // Re-encode the first valid samples and compare with the stored rows.
        let probe: Vec<usize> = (0..cache.len()).filter(|&i| cache.valid[i]).take(PROBE).collect();
        if probe.is_empty() {
            return Ok(Some(cache));
        }
        let (images, kept) = load_samples(dataset, &probe)?;
        if kept != probe {
            return Ok(None);
        }
        let fresh = to_cpu_f32(&encode(&images)?)?.flatten_all()?.to_vec1::<f32>()?;
        let stored = cache.gather(&probe)?.flatten_all()?.to_vec1::<f32>()?;
        if fresh.len() != stored.len() {
            return Ok(None);
        }
        let scale = stored.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
        let worst = fresh.iter().zip(&stored).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        if worst.is_nan() || worst > options.probe_tolerance * scale {
            return Ok(None);
        }
        Ok(Some(cache))
    }

    /// Opens the index and shards; `None` when there is no index or it belongs to another key.
    fn open_index(dir: &Path, dataset: &dyn Dataset, key: &CacheKey) -> Result<Option<Self>> {
        let index_path = dir.join("index.safetensors");
        if !index_path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let meta = match metadata(&index_path, &bytes) {
            Ok(m) => m,
            Err(_) => return Ok(None), // unreadable index: rebuild
        };
        let shard_size: usize = match meta.get("shard_size").and_then(|s| s.parse().ok()) {
            Some(s) if s > 0 => s,
            _ => return Ok(None),
        };
        let want = Self::identity(dataset, key, shard_size);
        if want.iter().any(|(k, v)| meta.get(k) != Some(v)) {
            return Ok(None);
        }
        let shape: Vec<usize> = match meta.get("shape") {
            Some(s) if !s.is_empty() => {
                match s.split(',').map(|d| d.parse()).collect::<std::result::Result<_, _>>() {
                    Ok(v) => v,
                    Err(_) => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::format(&index_path, format!("cannot read: {e}")))?;
        let valid: Vec<bool> = match st.tensor("valid") {
            Ok(v) if v.data().len() == dataset.len() => v.data().iter().map(|&b| b != 0).collect(),
            _ => return Ok(None),
        };
        let row: usize = shape.iter().product();
        let mut shards = Vec::new();
        for s in 0..dataset.len().div_ceil(shard_size) {
            let rows = shard_size.min(dataset.len() - s * shard_size);
            let path = dir.join(shard_name(s));
            match open_shard(&path, rows, row)? {
                Some(shard) => shards.push(shard),
                None => return Ok(None),
            }
        }
        Ok(Some(FeatureCache {
            dir: dir.to_path_buf(),
            key: key.clone(),
            data_fingerprint: dataset.fingerprint(),
            shape,
            row,
            shard_size,
            shards,
            valid,
        }))
    }

    /// Builds every missing shard and then the index; returns the number of shards reused.
    fn build(
        dir: &Path,
        dataset: &dyn Dataset,
        key: &CacheKey,
        options: &CacheOptions,
        encode: &mut impl FnMut(&Tensor) -> candle::Result<Tensor>,
    ) -> Result<usize> {
        let index_path = dir.join("index.safetensors");
        if index_path.exists() {
            std::fs::remove_file(&index_path).map_err(|e| Error::io(&index_path, e))?;
        }
        let n = dataset.len();
        let mut identity = Self::identity(dataset, key, options.shard_size);
        // The feature shape, from the first usable sample.
        let mut first = None;
        for i in 0..n {
            let s = load_samples(dataset, &[i])?;
            if !s.1.is_empty() {
                first = Some(s.0);
                break;
            }
        }
        let images = first.ok_or_else(|| Error::Empty {
            location: "feature cache".into(),
            detail: format!("none of the {n} samples is usable"),
        })?;
        let shape = encoded_shape(&to_cpu_f32(&encode(&images)?)?, 1)?;
        let row: usize = shape.iter().product();
        let mut valid = vec![0u8; n];
        let mut reused = 0;
        for s in 0..n.div_ceil(options.shard_size) {
            let start = s * options.shard_size;
            let end = (start + options.shard_size).min(n);
            let path = dir.join(shard_name(s));
            if let Some((rows_valid, rows_shape)) =
                reusable_shard(&path, &identity, s, end - start)?
            {
                if rows_shape == shape {
                    valid[start..end].copy_from_slice(&rows_valid);
                    reused += 1;
                    continue;
                }
            }
            let mut rows: Vec<f32> = Vec::with_capacity((end - start) * row);
            for chunk_start in (start..end).step_by(options.batch_size) {
                let chunk: Vec<usize> =
                    (chunk_start..(chunk_start + options.batch_size).min(end)).collect();
                let (images, kept) = load_samples(dataset, &chunk)?;
                let values = if kept.is_empty() {
                    Vec::new()
                } else {
                    let feats = to_cpu_f32(&encode(&images)?)?;
                    let got = encoded_shape(&feats, kept.len())?;
                    if got != shape {
                        return Err(Error::InvalidArgument(format!(
                            "feature cache: the encoder's feature shape changed from {shape:?} to {got:?}"
                        )));
                    }
                    feats.flatten_all()?.to_vec1::<f32>()?
                };
                let mut next = 0;
                for &i in &chunk {
                    if kept.get(next) == Some(&i) {
                        rows.extend_from_slice(&values[next * row..(next + 1) * row]);
                        valid[i] = 1;
                        next += 1;
                    } else {
                        rows.extend(std::iter::repeat_n(0f32, row));
                    }
                }
            }
            write_shard(&path, &identity, s, &shape, &rows, &valid[start..end])?;
        }
        identity.insert(
            "shape".into(),
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
        );
        let view = TensorView::new(safetensors::Dtype::U8, vec![n], &valid)
            .map_err(|e| Error::format(&index_path, e.to_string()))?;
        let bytes = safetensors::serialize([("valid", view)], Some(identity))
            .map_err(|e| Error::format(&index_path, e.to_string()))?;
        write_atomic(&index_path, &bytes)?;
        Ok(reused)
    }

    /// The features of `indices`, as `[indices.len(), …]` f32 on the CPU. A sample that was
    /// unusable when the cache was built has zeros.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index out of range.
    pub fn gather(&self, indices: &[usize]) -> Result<Tensor> {
        let mut out = Vec::with_capacity(indices.len() * self.row);
        for &i in indices {
            if i >= self.valid.len() {
                return Err(Error::InvalidArgument(format!(
                    "feature cache: index {i} out of range (len {})",
                    self.valid.len()
                )));
            }
            let shard = &self.shards[i / self.shard_size];
            let r = i % self.shard_size;
            let bytes =
                &shard.map[shard.offset + r * self.row * 4..shard.offset + (r + 1) * self.row * 4];
            out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
        let mut dims = vec![indices.len()];
        dims.extend_from_slice(&self.shape);
        Ok(Tensor::from_vec(out, dims, &Device::Cpu)?)
    }

    /// Whether sample `index` was usable when the cache was built.
    pub fn is_valid(&self, index: usize) -> bool {
        self.valid.get(index).copied().unwrap_or(false)
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.valid.len()
    }

    /// Whether the cache holds no sample.
    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    /// The shape of one sample's features.
    pub fn sample_shape(&self) -> &[usize] {
        &self.shape
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key the cache was built for.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The fingerprint of the data the cache was built from.
    pub fn data_fingerprint(&self) -> &str {
        &self.data_fingerprint
    }
}

/// The per-sample shape of `n` encoded samples.
fn encoded_shape(features: &Tensor, n: usize) -> Result<Vec<usize>> {
    let dims = features.dims();
    if dims.len() < 2 || dims[0] != n {
        return Err(Error::InvalidArgument(format!(
            "feature cache: the encoder returned {dims:?} for {n} samples (expected [{n}, …])"
        )));
    }
    Ok(dims[1..].to_vec())
}

fn to_cpu_f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)
}

/// Loads `indices` (deterministic datasets ignore the generator); returns the batch and the
/// indices that were usable.
fn load_samples(dataset: &dyn Dataset, indices: &[usize]) -> Result<(Tensor, Vec<usize>)> {
    let s = stack(dataset, indices, |_| Rng::new(0))?;
    Ok((s.images, s.indices))
}

fn shard_identity(identity: &HashMap<String, String>, s: usize) -> HashMap<String, String> {
    let mut meta = identity.clone();
    meta.insert("shard".into(), s.to_string());
    meta
}

fn write_shard(
    path: &Path,
    identity: &HashMap<String, String>,
    s: usize,
    shape: &[usize],
    rows: &[f32],
    valid: &[u8],
) -> Result<()> {
    let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut dims = vec![valid.len()];
    dims.extend_from_slice(shape);
    let err = |e: safetensors::SafeTensorError| Error::format(path, e.to_string());
    let features = TensorView::new(safetensors::Dtype::F32, dims, &bytes).map_err(err)?;
    let mask = TensorView::new(safetensors::Dtype::U8, vec![valid.len()], valid).map_err(err)?;
    let out = safetensors::serialize(
        [("features", features), ("valid", mask)],
        Some(shard_identity(identity, s)),
    )
    .map_err(err)?;
    write_atomic(path, &out)
}

/// A finished shard of an interrupted build with the same identity: its valid mask and row shape.
fn reusable_shard(
    path: &Path,
    identity: &HashMap<String, String>,
    s: usize,
    rows: usize,
) -> Result<Option<(Vec<u8>, Vec<usize>)>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let Ok(meta) = metadata(path, &bytes) else { return Ok(None) };
    let want = shard_identity(identity, s);
    if want.iter().any(|(k, v)| meta.get(k) != Some(v)) {
        return Ok(None);
    }
    let Ok(st) = SafeTensors::deserialize(&bytes) else { return Ok(None) };
    let (Ok(f), Ok(v)) = (st.tensor("features"), st.tensor("valid")) else { return Ok(None) };
    if f.dtype() != safetensors::Dtype::F32
        || f.shape().first() != Some(&rows)
        || v.data().len() != rows
    {
        return Ok(None);
    }
    Ok(Some((v.data().to_vec(), f.shape()[1..].to_vec())))
}

fn open_shard(path: &Path, rows: usize, row: usize) -> Result<Option<Shard>> {
    if !path.is_file() {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and the cache's files are only ever replaced by rename,
    // never written in place, so the mapped bytes do not change while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let Ok(st) = SafeTensors::deserialize(&map) else { return Ok(None) };
    let Ok(f) = st.tensor("features") else { return Ok(None) };
    if f.dtype() != safetensors::Dtype::F32 || f.data().len() != rows * row * 4 {
        return Ok(None);
    }
    let offset = f.data().as_ptr() as usize - map.as_ptr() as usize;
    Ok(Some(Shard { map, offset }))
}
