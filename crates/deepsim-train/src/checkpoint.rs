//! The checkpoint file: safetensors holding the trained variables, Adam's moments and the
//! discriminator, with metadata (format, step, data position, pause counters, the whole
//! configuration as TOML) and a SHA-256 of the tensor data sealed into the header; and what a
//! resume may change in the configuration it was written with.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle::Tensor;
use candle_nn::VarMap;

use crate::config::TrainConfig;
use crate::error::{Error, Result};

/// The checkpoint format this crate writes and reads.
pub(crate) const FORMAT: &str = "deepsim-train checkpoint v1";

/// The fields of a configuration that a resume may change; every other field must equal the
/// one the checkpoint was written with (compared one by one, [`resume_differences`]). Where
/// the run writes and how long it goes, on which device, how often it reports; where data and
/// weights are found (the same images and weights moved elsewhere; the loader checks the
/// data itself); the loader's threads; and Adam's learning rate (lowered by hand on resume).
pub const RESUME_MAY_CHANGE: &[&str] = &[
    "run.out",
    "run.steps",
    "run.device",
    "run.checkpoint_every",
    "run.sample_every",
    "run.samples",
    "run.init",
    "data.train",
    "data.val",
    "data.workers",
    "data.feature_cache",
    "encoder.weights",
    "loss.comparator_weights",
    "loss.metric_heads",
    "optim.lr",
];

/// Every field of `config` under its dotted name (`loss.lambda_adv`), as JSON text.
fn fields(config: &TrainConfig) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    // A configuration of plain numbers, strings, paths and enums always converts.
    if let Ok(v) = serde_json::to_value(config) {
        walk("", &v, &mut out);
    }
    out
}

/// The fields outside [`RESUME_MAY_CHANGE`] in which `now` differs from `then` (the
/// configuration a checkpoint was written with), one line each:
/// `loss.lambda_adv: 0.01 in the checkpoint, 0.02 now`. A section present in one and absent
/// in the other shows as its fields against `null`.
pub fn resume_differences(then: &TrainConfig, now: &TrainConfig) -> Vec<String> {
    let (a, b) = (fields(then), fields(now));
    let null = "null".to_string();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !RESUME_MAY_CHANGE.iter().any(|m| k == m || k.starts_with(&format!("{m}."))))
        .filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
            (x != y).then(|| format!("{k}: {x} in the checkpoint, {y} now"))
        })
        .collect()
}

/// A checkpoint's bytes and the configuration stored in it, after checking its format; a
/// file that cannot be read is [`Error::Io`], a bad one `bad(reason)`.
pub(crate) fn read_checkpoint(path: &Path, bad: impl Fn(String) -> Error) -> Result<Checkpoint> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let meta = checkpoint_metadata(&bytes).map_err(&bad)?;
    let text = meta.get("config").ok_or_else(|| bad("no configuration stored".into()))?;
    let config = toml::from_str(text)
        .map_err(|e| bad(format!("its stored configuration does not parse: {e}")))?;
    Ok(Checkpoint { bytes, meta, config })
}

/// A checkpoint file read and checked (format and checksum) once.
pub(crate) struct Checkpoint {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Its metadata.
    pub meta: HashMap<String, String>,
    /// The configuration it was written with.
    pub config: TrainConfig,
}

/// The metadata key of the SHA-256 of a checkpoint's tensor data (the bytes after the header).
pub(crate) const DATA_SHA256: &str = "data_sha256";
/// What the checksum is written as before it is known: as long as the hex digest, and no
/// other metadata value holds it.
pub(crate) const CHECKSUM_PENDING: &str =
    "????????????????????????????????????????????????????????????????";
/// The start of the reason given for a checkpoint whose data does not match its checksum.
pub(crate) const DAMAGED: &str = "damaged";

/// The lowercase hex SHA-256 of the tensor data of a safetensors file (after its header).
fn data_sha256(bytes: &[u8]) -> std::result::Result<String, String> {
    use sha2::Digest;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("corrupt or truncated (no header)")?;
    let data = bytes.get(8 + n..).ok_or("corrupt or truncated (header beyond the end)")?;
    Ok(sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect())
}

/// Replaces the [`CHECKSUM_PENDING`] value in a serialized checkpoint's header by the
/// SHA-256 of its tensor data (same length: the header keeps its size).
pub(crate) fn seal_checksum(bytes: &mut [u8]) -> std::result::Result<(), String> {
    let digest = data_sha256(bytes)?;
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = &mut bytes[8..8 + n];
    let at = header
        .windows(CHECKSUM_PENDING.len())
        .position(|w| w == CHECKSUM_PENDING.as_bytes())
        .ok_or("the checksum's place is missing from the header")?;
    header[at..at + digest.len()].copy_from_slice(digest.as_bytes());
    Ok(())
}

/// The metadata of a checkpoint, after checking its format and, where it carries one (every
/// checkpoint written since checksums were added), the checksum of its tensor data: a flipped
/// bit or a zeroed tail is refused instead of resuming with other weights.
fn checkpoint_metadata(bytes: &[u8]) -> std::result::Result<HashMap<String, String>, String> {
    if let Some(kind) = deepsim_comparators::weights::foreign_format(bytes) {
        return Err(format!("{kind}, not a checkpoint written by `deepsim train`"));
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("corrupt or truncated ({e})"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(format!("not a deepsim-train checkpoint (format {:?})", meta.get("format")));
    }
    if let Some(expected) = meta.get(DATA_SHA256) {
        let found = data_sha256(bytes)?;
        if &found != expected {
            return Err(format!(
                "{DAMAGED}: its tensor data does not match the checksum written with it \
                 (SHA-256 {found}, written {expected})"
            ));
        }
    }
    Ok(meta)
}

/// Sets every variable of `map` from the tensor of its name, checking shapes.
pub(crate) fn set_vars(
    map: &VarMap,
    tensors: &HashMap<String, Tensor>,
) -> std::result::Result<(), String> {
    for (name, var) in map.data().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let t = tensors.get(name).ok_or_else(|| format!("no tensor {name}"))?;
        if t.dims() != var.dims() {
            return Err(format!(
                "{name} has shape {:?}, the model's is {:?}",
                t.dims(),
                var.dims()
            ));
        }
        let t = t.to_dtype(var.dtype()).map_err(|e| format!("{name}: {e}"))?;
        var.set(&t).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
