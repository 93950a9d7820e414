//! Helpers of deepsim-cli's tests: the `deepsim` binary run, its output read, the repository's
//! data and scratch folders.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file or folder under the repository's `data/`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data").join(name)
}

/// A fresh folder `deepsim-cli-TEST-name` under cargo's `target/tmp` (TEST: the test file's
/// name), emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = format!("deepsim-cli-{}-{name}", env!("CARGO_CRATE_NAME"));
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `deepsim` binary this package builds, to be given arguments.
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deepsim"))
}

/// Runs `deepsim` with `args`.
pub fn deepsim(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

/// The stdout of a command that must succeed.
pub fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The stderr of a command that must fail.
pub fn stderr(o: &Output) -> String {
    assert!(!o.status.success(), "should have failed: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stderr.clone()).unwrap()
}
