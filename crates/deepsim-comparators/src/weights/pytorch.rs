//! PyTorch checkpoints in both formats: the zip archive of torch ≥ 1.6 (`data.pkl` and one file
//! per storage) and the legacy stream (magic number, protocol, system info, the pickled object,
//! the storage keys, then the raw storages), read through the restricted [`pickle`] reader.
//!
//! [`pickle`]: super::pickle

use std::io::{Cursor, Read};
use std::path::Path;

use super::pickle::{self, Object, Pickle, StorageDtype, TensorRef};
use super::{bad_file, read_file, RawTensor, TensorSet};
use crate::error::Result;

/// The legacy format's magic number, the first pickle of the stream.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The legacy format's protocol version, the second pickle.
const LEGACY_PROTOCOL: i128 = 1001;
/// Nesting of dicts followed when collecting tensors.
const MAX_DEPTH: usize = 32;

/// Reads every tensor of a PyTorch checkpoint (`torch.save` of a state dict or of dicts holding
/// one), keyed by their dotted path in the nested dicts, in file order.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when the file cannot be read;
/// [`Error::BadFile`](crate::Error::BadFile) naming the file and the problem when it is
/// neither format, truncated, names a global outside the allow-list, or holds a storage
/// shorter than a tensor's view of it.
pub fn read_checkpoint(path: &Path) -> Result<TensorSet> {
    let bytes = read_file(path)?;
    parse_checkpoint(&bytes).map_err(|reason| bad_file(path, reason))
}

/// [`read_checkpoint`] on bytes in memory; the error is the problem alone.
pub fn parse_checkpoint(bytes: &[u8]) -> std::result::Result<TensorSet, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        parse_zip(bytes)
    } else if bytes.starts_with(&[0x80, 0x02]) {
        parse_legacy(bytes)
    } else {
        Err("not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)".into())
    }
}

fn parse_zip(bytes: &[u8]) -> std::result::Result<TensorSet, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("zip: {e}"))?;
    let pkl_name = zip
        .file_names()
        .filter(|n| n.ends_with("data.pkl"))
        .min_by_key(|n| n.len())
        .ok_or("zip archive has no data.pkl: not a torch.save archive")?
        .to_owned();
    let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
    let pkl = read_entry(&mut zip, &pkl_name)?;
    let pickle = pickle::read(&pkl).map_err(|e| format!("{pkl_name}: {e}"))?;
    collect(&pickle, |storage| {
        let name = format!("{prefix}data/{}", storage.key);
        read_entry(&mut zip, &name)
    })
}

/// The whole of one archive entry, read to its end (never sized by the entry's header).
fn read_entry(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
) -> std::result::Result<Vec<u8>, String> {
    let mut entry = zip.by_name(name).map_err(|e| format!("zip entry {name}: {e}"))?;
    let mut out = Vec::new();
    entry.read_to_end(&mut out).map_err(|e| format!("zip entry {name}: {e}"))?;
    Ok(out)
}

fn parse_legacy(bytes: &[u8]) -> std::result::Result<TensorSet, String> {
    let mut pos = 0;
    let mut next = |what: &str| -> std::result::Result<Pickle, String> {
        let p = pickle::read(&bytes[pos..])
            .map_err(|e| format!("legacy {what} (at byte {pos}): {e}"))?;
        pos += p.len;
        Ok(p)
    };
    let magic = next("magic number")?;
    if !matches!(magic.get(magic.root), Object::Int(LEGACY_MAGIC)) {
        return Err("legacy stream does not start with torch's magic number".into());
    }
    let protocol = next("protocol version")?;
    match protocol.get(protocol.root) {
        Object::Int(LEGACY_PROTOCOL) => {}
        Object::Int(v) => {
            return Err(format!("legacy protocol version {v}, expected {LEGACY_PROTOCOL}"))
        }
        _ => return Err("legacy protocol version is not an integer".into()),
    }
    let sys_info = next("system info")?;
    if let Object::Dict(items) = sys_info.get(sys_info.root) {
        for &(k, v) in items {
            if matches!(sys_info.get(k), Object::Str(s) if s == "little_endian")
                && matches!(sys_info.get(v), Object::Bool(false))
            {
                return Err("big-endian checkpoints are not supported".into());
            }
        }
    }
    let main = next("object")?;
    let keys = next("storage keys")?;
    let Object::List(key_ids) = keys.get(keys.root) else {
        return Err("legacy storage keys are not a list".into());
    };
    // The raw storages follow in key order: an 8-byte element count, then the elements.
    let declared = storages_of(&main);
    let mut raw: Vec<(String, &[u8])> = Vec::with_capacity(key_ids.len().min(1 << 16));
    for &k in key_ids {
        let Object::Str(key) = keys.get(k) else {
            return Err("legacy storage key is not a string".into());
        };
        let (dtype, numel) = declared
            .iter()
            .find(|(name, _, _)| name == key)
            .map(|&(_, d, n)| (d, n))
            .ok_or_else(|| format!("storage {key} is listed but no tensor uses it"))?;
        let head =
            bytes.get(pos..pos + 8).ok_or_else(|| format!("truncated before storage {key}"))?;
        let count = u64::from_le_bytes(head.try_into().expect("8 bytes"));
        pos += 8;
        if count != numel {
            return Err(format!("storage {key} holds {count} elements, its tensors say {numel}"));
        }
        let len = count
            .checked_mul(dtype.size() as u64)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|&l| l <= bytes.len() - pos)
            .ok_or_else(|| {
                format!(
                    "storage {key}: {count} elements do not fit in the {} bytes left",
                    bytes.len() - pos
                )
            })?;
        raw.push((key.clone(), &bytes[pos..pos + len]));
        pos += len;
    }
    collect(&main, |storage| {
        raw.iter()
            .find(|(k, _)| *k == storage.key)
            .map(|(_, b)| b.to_vec())
            .ok_or_else(|| format!("storage {} is not in the file", storage.key))
    })
}

/// (key, dtype, numel) of every storage a pickle names.
fn storages_of(p: &Pickle) -> Vec<(String, StorageDtype, u64)> {
    let mut out: Vec<(String, StorageDtype, u64)> = Vec::new();
    for o in &p.objects {
        if let Object::Storage(s) = o {
            if !out.iter().any(|(k, _, _)| *k == s.key) {
                out.push((s.key.clone(), s.dtype, s.numel));
            }
        }
    }
    out
}

/// Walks the pickle's dicts from the root and materializes each tensor, loading storages by
/// `load` (each at most once).
fn collect(
    p: &Pickle,
    mut load: impl FnMut(&pickle::StorageRef) -> std::result::Result<Vec<u8>, String>,
) -> std::result::Result<TensorSet, String> {
    let mut found: Vec<(String, TensorRef)> = Vec::new();
    walk(p, p.root, String::new(), 0, &mut found)?;
    let mut loaded: Vec<(String, Vec<u8>)> = Vec::new();
    let mut out = TensorSet::default();
    for (name, t) in found {
        let idx = match loaded.iter().position(|(k, _)| *k == t.storage.key) {
            Some(i) => i,
            None => {
                let bytes = load(&t.storage)?;
                loaded.push((t.storage.key.clone(), bytes));
                loaded.len() - 1
            }
        };
        let tensor =
            materialize(&t, &loaded[idx].1).map_err(|e| format!("tensor `{name}`: {e}"))?;
        out.insert(name, tensor)?;
    }
    Ok(out)
}

fn walk(
    p: &Pickle,
    id: pickle::Id,
    prefix: String,
    depth: usize,
    found: &mut Vec<(String, TensorRef)>,
) -> std::result::Result<(), String> {
    match p.get(id) {
        Object::Tensor(t) => {
            found.push((prefix, t.clone()));
            Ok(())
        }
        Object::Dict(items) => {
            if depth >= MAX_DEPTH {
                return Err(format!("dicts nested deeper than {MAX_DEPTH} at `{prefix}`"));
            }
            for &(k, v) in items {
                let key = match p.get(k) {
                    Object::Str(s) => s.clone(),
                    Object::Int(i) => i.to_string(),
                    // Other keys cannot name a weight; their values are not weights either.
                    _ => continue,
                };
                let path = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                walk(p, v, path, depth + 1, found)?;
            }
            Ok(())
        }
        // Epoch counters, hyper-parameters, optimizer lists: not weights.
        _ => Ok(()),
    }
}

/// The elements of a strided view, made contiguous, after checking that the view lies inside
/// its storage.
fn materialize(t: &TensorRef, storage: &[u8]) -> std::result::Result<RawTensor, String> {
    let size = t.storage.dtype.size();
    let available = (storage.len() / size) as u64;
    if available < t.storage.numel {
        return Err(format!(
            "storage {} holds {available} elements, its header says {}",
            t.storage.key, t.storage.numel
        ));
    }
    let numel = t.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let numel = numel.ok_or("shape overflows")?;
    if numel > 0 {
        let last = t.shape.iter().zip(&t.stride).try_fold(t.offset, |acc, (&d, &s)| {
            (d as u64 - 1).checked_mul(s as u64).and_then(|x| acc.checked_add(x))
        });
        match last {
            Some(last) if last < available => {}
            _ => {
                return Err(format!(
                    "shape {:?} with strides {:?} at offset {} reaches past the {available} elements of storage {}",
                    t.shape, t.stride, t.offset, t.storage.key
                ))
            }
        }
        // Views that repeat elements (stride 0) may be larger than their storage, within reason.
        if numel > available.saturating_mul(64).max(1 << 20) {
            return Err(format!("shape {:?} is absurdly large for its storage", t.shape));
        }
    }
    let numel = numel as usize;
    let mut data = Vec::with_capacity(numel * size);
    let contiguous = {
        let mut expect = 1usize;
        t.shape.iter().zip(&t.stride).rev().all(|(&d, &s)| {
            let ok = d == 1 || s == expect;
            expect *= d;
            ok
        })
    };
    if contiguous {
        let start = t.offset as usize * size;
        data.extend_from_slice(&storage[start..start + numel * size]);
    } else {
        let rank = t.shape.len();
        let mut idx = vec![0usize; rank];
        for _ in 0..numel {
            let at =
                t.offset as usize + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            data.extend_from_slice(&storage[at * size..(at + 1) * size]);
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Ok(RawTensor { dtype: t.storage.dtype, shape: t.shape.clone(), data })
}
