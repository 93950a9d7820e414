//! Comparator weights: readers for the files their authors publish (PyTorch checkpoints in
//! both formats, Caffe `.caffemodel`, safetensors), conversion to our key names
//! ([`Arch`]), verification, atomic safetensors output, and the weights cache from which
//! comparators resolve weights by name.

pub mod arch;
pub mod caffe;
pub mod hub;
pub mod pickle;
pub mod pytorch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use arch::Arch;
use safetensors::Dtype;

use crate::error::{Error, Result};

/// Version of the converter, written into every converted file's metadata.
pub const CONVERTER_VERSION: &str = concat!("deepsim-comparators ", env!("CARGO_PKG_VERSION"));

/// One tensor as read from a file: element type, shape and contiguous little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// Element type.
    pub dtype: pickle::StorageDtype,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// `shape.product() × dtype.size()` bytes, little-endian.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// An f32 tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self { dtype: pickle::StorageDtype::F32, shape, data }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (floating dtypes only; f64 is rounded).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        use pickle::StorageDtype as D;
        let d = &self.data;
        Some(match self.dtype {
            D::F32 => {
                d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect()
            }
            D::F64 => d
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8")) as f32)
                .collect(),
            D::F16 => {
                d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            D::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => return None,
        })
    }

    fn safetensors_dtype(&self) -> Dtype {
        use pickle::StorageDtype as D;
        match self.dtype {
            D::F32 => Dtype::F32,
            D::F64 => Dtype::F64,
            D::F16 => Dtype::F16,
            D::BF16 => Dtype::BF16,
            D::I64 => Dtype::I64,
            D::I32 => Dtype::I32,
            D::I16 => Dtype::I16,
            D::I8 => Dtype::I8,
            D::U8 => Dtype::U8,
            D::Bool => Dtype::BOOL,
        }
    }
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.safetensors_dtype()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Named tensors in file order, names unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorSet {
    entries: Vec<(String, RawTensor)>,
}

impl TensorSet {
    /// Adds a tensor; a name already present is an error naming it.
    pub fn insert(&mut self, name: String, t: RawTensor) -> std::result::Result<(), String> {
        if self.get(&name).is_some() {
            return Err(format!("tensor `{name}` appears twice"));
        }
        self.entries.push((name, t));
        Ok(())
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Removes and returns the tensor named `name`.
    pub fn remove(&mut self, name: &str) -> Option<RawTensor> {
        let i = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(i).1)
    }

    /// Names and tensors in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawTensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }
}

pub(crate) fn bad_file(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadFile { path: path.to_owned(), reason: reason.into() }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })
}

/// Reads every tensor of a safetensors file.
///
/// # Errors
/// The file cannot be read, or its header or offsets are malformed.
pub fn read_safetensors(path: &Path) -> Result<TensorSet> {
    let bytes = read_file(path)?;
    parse_safetensors(&bytes).map_err(|r| bad_file(path, r))
}

fn parse_safetensors(bytes: &[u8]) -> std::result::Result<TensorSet, String> {
    use pickle::StorageDtype as D;
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("safetensors: {e}"))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let mut out = TensorSet::default();
    for name in names {
        let view = st.tensor(&name).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let dtype = match view.dtype() {
            Dtype::F32 => D::F32,
            Dtype::F64 => D::F64,
            Dtype::F16 => D::F16,
            Dtype::BF16 => D::BF16,
            Dtype::I64 => D::I64,
            Dtype::I32 => D::I32,
            Dtype::I16 => D::I16,
            Dtype::I8 => D::I8,
            Dtype::U8 => D::U8,
            Dtype::BOOL => D::Bool,
            other => return Err(format!("tensor `{name}`: dtype {other:?} is not supported")),
        };
        let t = RawTensor { dtype, shape: view.shape().to_vec(), data: view.data().to_vec() };
        out.insert(name, t)?;
    }
    Ok(out)
}

/// Reads a weights file by its extension: `.caffemodel`, `.safetensors`, else a PyTorch
/// checkpoint (`.pth`, `.pt`, `.bin`, `.ckpt`).
///
/// # Errors
/// As the reader for the format.
pub fn read_any(path: &Path) -> Result<TensorSet> {
    parse_bytes(path, &read_file(path)?)
}

/// [`read_any`] on the bytes of `path`, already in memory (errors still name `path`).
///
/// # Errors
/// As the parser for the format.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<TensorSet> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("caffemodel") => caffe::parse_caffemodel(bytes),
        Some("safetensors") => parse_safetensors(bytes),
        _ => pytorch::parse_checkpoint(bytes),
    }
    .map_err(|reason| bad_file(path, reason))
}

/// Lowercase hex SHA-256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex SHA-256 of a file, for the provenance metadata.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file =
        std::fs::File::open(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|source| Error::Io { path: path.into(), source })?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What a file that is not safetensors is, from its first bytes, when it is one of the formats
/// published weights come in: the start of an error message (`None` otherwise).
pub fn foreign_format(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [b'P', b'K', 3, 4, ..] => Some("a zip archive (a PyTorch checkpoint, .pt/.pth)"),
        // Pickle protocol 2 to 5 starts with PROTO n; legacy torch.save files with a magic
        // number pickled at protocol 2.
        [0x80, 2..=5, ..] => Some("a pickle (a legacy PyTorch checkpoint, .pth)"),
        [0x89, b'H', b'D', b'F', ..] => Some("an HDF5 file (Keras weights)"),
        _ => None,
    }
}

/// Writes `tensors` as safetensors with `metadata`, atomically: into a temporary file beside
/// `path`, flushed to disk, then renamed over it, so that a crash or a full disk leaves either
/// the old file or the new one, never a torn one.
///
/// # Errors
/// The directory cannot be created or written (the temporary file is removed).
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &TensorSet,
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, &safetensors_bytes(path, tensors, &metadata)?)
}

/// The safetensors file of `tensors` with `metadata`, the same bytes for the same input: the
/// `safetensors` crate writes metadata in a `HashMap`'s order, which changes from run to run,
/// so the tensors are serialized without it and the metadata is put in the header here, its
/// keys sorted (padding the header with spaces to a multiple of 8 bytes, as the format asks).
fn safetensors_bytes(
    path: &Path,
    tensors: &TensorSet,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let serialize = |e: &dyn std::fmt::Display| bad_file(path, format!("cannot serialize: {e}"));
    let body = safetensors::tensor::serialize(tensors.iter(), None).map_err(|e| serialize(&e))?;
    let n = u64::from_le_bytes(body[..8].try_into().expect("8 bytes")) as usize;
    let header = std::str::from_utf8(&body[8..8 + n]).map_err(|e| serialize(&e))?.trim_end();
    let sorted: std::collections::BTreeMap<&String, &String> = metadata.iter().collect();
    let meta = serde_json::to_string(&sorted).map_err(|e| serialize(&e))?;
    let rest = header.strip_prefix('{').ok_or_else(|| serialize(&"header is not an object"))?;
    let comma = if rest == "}" { "" } else { "," };
    let mut header = format!("{{\"__metadata__\":{meta}{comma}{rest}");
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&body[8 + n..]);
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically (deepsim-data's [`deepsim_data::write_atomic_io`]:
/// temporary file, fsync, rename, fsync of the directory).
///
/// # Errors
/// Any I/O failure, naming the path; the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    deepsim_data::write_atomic_io(path, bytes)
        .map_err(|source| Error::Io { path: path.to_owned(), source })
}

/// The deepsim home: `$DEEPSIM_HOME`, else `deepsim` in the platform's cache directory
/// (`~/.cache/deepsim` on Linux), else `.deepsim` in the working directory.
pub fn deepsim_home() -> PathBuf {
    match std::env::var_os("DEEPSIM_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => dirs::cache_dir()
            .map(|d| d.join("deepsim"))
            .unwrap_or_else(|| PathBuf::from(".deepsim")),
    }
}

/// Where converted weights live: `<deepsim home>/weights`.
pub fn weights_dir() -> PathBuf {
    deepsim_home().join("weights")
}

/// The cached file of converted weights for `arch`.
pub fn cached_path(arch: Arch) -> PathBuf {
    weights_dir().join(file_name(arch))
}

/// Where [`locate`] found a weights file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The path the caller gave (`--weights`).
    Explicit,
    /// The weights cache, `<deepsim home>/weights`.
    Cache,
    /// The copies that ship with the repository (`data/weights`).
    Shipped,
}

impl Origin {
    /// `explicit`, `cache` or `shipped`, as `deepsim weights` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Explicit => "explicit",
            Origin::Cache => "cache",
            Origin::Shipped => "shipped",
        }
    }
}

/// The directory of converted weights that ship with the repository: `$DEEPSIM_SHIPPED_WEIGHTS`
/// when set (empty: none), else the repository's `data/weights` as this crate's sources saw it
/// when built (present in a clone of the repository, absent for a crate from crates.io).
pub fn shipped_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DEEPSIM_SHIPPED_WEIGHTS") {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/weights");
    d.is_dir().then(|| d.canonicalize().unwrap_or(d))
}

/// The shipped copy of `arch`'s weights, where the repository ships one ([`Arch::ships`]).
pub fn shipped_path(arch: Arch) -> Option<PathBuf> {
    arch.ships().then(|| shipped_dir().map(|d| d.join(file_name(arch)))).flatten()
}

fn file_name(arch: Arch) -> String {
    format!("{}.safetensors", arch.name())
}

/// Every place [`locate`] looks for `arch`, in its order: only `explicit` when given, else the
/// cache and then the shipped copy.
pub fn candidates(arch: Arch, explicit: Option<&Path>) -> Vec<(Origin, PathBuf)> {
    match explicit {
        Some(p) => vec![(Origin::Explicit, p.to_owned())],
        None => {
            let mut out = vec![(Origin::Cache, cached_path(arch))];
            out.extend(shipped_path(arch).map(|p| (Origin::Shipped, p)));
            out
        }
    }
}

/// Finds converted weights: `explicit` when given (and nothing else), else the cache entry for
/// `arch`, else the copy that ships with the repository.
///
/// # Errors
/// [`Error::MissingWeights`] when no file exists, naming where it looked, with the exact
/// command that converts the published file (and, for a shipped architecture, how to restore
/// the shipped copy).
pub fn locate(arch: Arch, explicit: Option<&Path>) -> Result<(Origin, PathBuf)> {
    let places = candidates(arch, explicit);
    if let Some(found) = places.iter().find(|(_, p)| p.is_file()) {
        return Ok(found.clone());
    }
    let mut command = arch.convert_command();
    if explicit.is_some() {
        command.push_str(&format!(" --output {}", places[0].1.display()));
    } else if arch.ships() {
        command.push_str(&format!(
            "\n(or restore the copy that ships with the repository: \
             git checkout -- data/weights/{}{})",
            file_name(arch),
            match shipped_dir() {
                Some(d) => format!(", looked for at {}", d.join(file_name(arch)).display()),
                None => String::new(),
            }
        ));
    }
    Err(Error::MissingWeights { arch: arch.name().into(), path: places[0].1.clone(), command })
}

/// Downloads `arch`'s published file from the Hugging Face Hub ([`Arch::hub_file`], through
/// [`hub::HubFile::fetch`]: a manual download in its place, else hf-hub unless
/// `HF_HUB_OFFLINE=1`), converts it and writes it to the weights cache; returns the cached
/// path. What `cargo xtask convert-weights --hub` does, for callers without the xtask.
///
/// # Errors
/// [`Error::Hub`] for an architecture with no Hub file, offline or a failed download (saying
/// where to put a manual download); then as [`arch::convert_file`].
pub fn download(arch: Arch) -> Result<PathBuf> {
    let file = arch.hub_file().ok_or_else(|| Error::Hub {
        spec: arch.name().into(),
        reason: format!("{} is not published on the Hub; {}", arch.name(), arch.convert_command()),
    })?;
    let source = file.fetch()?;
    let out = cached_path(arch);
    arch::convert_file(arch, &source, &out)?;
    Ok(out)
}

/// [`locate`]'s path alone.
///
/// # Errors
/// As [`locate`].
pub fn resolve(arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    Ok(locate(arch, explicit)?.1)
}

/// The weights of `arch` from [`locate`], checked to be that architecture's (the `arch` a
/// conversion records in the metadata), as a `VarBuilder` on `device`; returns the path too.
///
/// # Errors
/// As [`locate`]; a file that cannot be read, is not safetensors (truncated, corrupt) or
/// holds another architecture's weights: [`Error::BadFile`] naming it, with the fix.
pub fn load(
    arch: Arch,
    explicit: Option<&Path>,
    device: &candle::Device,
) -> Result<(PathBuf, candle_nn::VarBuilder<'static>)> {
    let (origin, path) = locate(arch, explicit)?;
    let fix = || match origin {
        Origin::Shipped => format!(
            "this copy ships with the repository: restore it with \
             `git checkout -- data/weights/{}`",
            file_name(arch)
        ),
        _ => format!("convert the published file again: {}", arch.convert_command()),
    };
    let bytes = read_file(&path)?;
    let bad = |reason: String| bad_file(&path, format!("{reason}; {}", fix()));
    if let Some(kind) = foreign_format(&bytes) {
        return Err(bad_file(
            &path,
            format!(
                "{kind}, not converted weights; convert it once: cargo xtask convert-weights \
                 --arch {} --input {}",
                arch.name(),
                path.display()
            ),
        ));
    }
    let metadata = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?
        .1;
    let recorded = metadata.metadata().as_ref().and_then(|m| m.get("arch")).cloned();
    if let Some(other) = recorded.filter(|a| a != arch.name()) {
        return Err(bad_file(
            &path,
            format!(
                "holds {other} weights, not {}; pass a {} file, or convert one with: {}",
                arch.name(),
                arch.name(),
                arch.convert_command()
            ),
        ));
    }
    let tensors = candle::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(format!("cannot load tensors ({e})")))?;
    Ok((path, candle_nn::VarBuilder::from_tensors(tensors, candle::DType::F32, device)))
}

/// `build` applied to `arch`'s weights from [`load`]: a network built from its file, where a
/// tensor that is missing or misshapen is an [`Error::BadFile`] naming the file.
///
/// # Errors
/// As [`load`]; whatever `build` returns, wrapped with the file's path.
pub fn build<T>(
    arch: Arch,
    explicit: Option<&Path>,
    device: &candle::Device,
    build: impl FnOnce(candle_nn::VarBuilder<'static>) -> Result<T>,
) -> Result<T> {
    let (path, vb) = load(arch, explicit, device)?;
    build(vb).map_err(|e| Error::BadFile { path, reason: e.to_string() })
}
