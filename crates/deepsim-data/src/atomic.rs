//! Files written whole or not at all: a temporary file beside the target, flushed to disk,
//! renamed over it, the directory synced; and the clean-up of temporaries a killed process
//! left. The one implementation every deepsim crate writes its files with (checkpoints,
//! converted weights, caches, metrics).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: into `.NAME.tmp-PID` in the same directory (created
/// if missing), flushed to disk, renamed over `path`, then the directory synced, so that a
/// crash or a full disk leaves either the old file or the new one, never a torn one. The
/// temporary file is removed when a step fails.
///
/// # Errors
/// The I/O error of the step that failed (creating the directory or the file, writing,
/// syncing, renaming).
pub fn write_atomic_io(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            // Persist the rename; not every platform can sync a directory.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic_io`], its error naming `path`.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_io(path, bytes).map_err(|e| Error::io(path, e))
}

/// Removes from `dir` the temporary files [`write_atomic`] leaves when its process is killed
/// mid-write (`.NAME.tmp-PID`), where that process is gone: on Linux, no `/proc/PID`; elsewhere,
/// a file untouched for an hour. Returns the files removed; a directory that cannot be read
/// removes nothing.
pub fn remove_stale_temporaries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")).map(|(_, p)| p)
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let gone = if cfg!(target_os = "linux") {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600)
        };
        if gone && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed.sort();
    removed
}
