//! `cargo xtask gpu-pack`: the `deepsim` binary and the device test binaries built with
//! `--features cuda` (toolkit from `scripts/cuda-toolchain.sh`, compute capability 9.0),
//! stripped and packed as one `tar.xz` under 64 MiB for a GPU machine with no Rust toolchain;
//! `scripts/gpu-run.sh` unpacks and runs it there.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Where the cuda build goes (`bench-gpu` builds there too).
const TARGET_DIR: &str = "target/cuda";

/// The test binaries that run on a device (`DEEPSIM_TEST_DEVICE`) and compare it with the
/// CPU: (package, integration test).
const DEVICE_TESTS: &[(&str, &str)] = &[("deepsim-kernels", "device"), ("deepsim-train", "device")];

/// What may travel to the GPU machine besides the working tree.
const LIMIT_BYTES: u64 = 64 << 20;

/// The pack's file name inside `--out`, which `scripts/gpu-run.sh` looks for.
const PACK: &str = "deepsim-gpu.tar.xz";

/// Builds `deepsim` and the device tests in release mode with `--features cuda` into
/// target/cuda (nvcc and the CUDA libraries from `scripts/cuda-toolchain.sh`, which it runs
/// when needed), strips them, and writes `deepsim-gpu.tar.xz` and `manifest.json` under the
/// output folder; fails if the pack is not under 64 MiB. `scripts/gpu-run.sh` runs it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output folder.
    #[arg(long, default_value = "target/gpu-pack")]
    out: PathBuf,
    /// Pack the binaries already in target/cuda instead of building (fails where one is
    /// missing).
    #[arg(long)]
    no_build: bool,
}

/// One file of the pack: where it comes from and its path inside the pack.
#[derive(Debug, PartialEq)]
struct Entry {
    source: PathBuf,
    name: String,
}

/// Runs the task.
pub fn run(o: Args) -> Result<()> {
    let env = toolchain_env()?;
    for (k, v) in &env {
        eprintln!("{k}={v}");
        // Single-threaded here: nothing else reads the environment while it is set.
        std::env::set_var(k, v);
    }
    let mut entries = Vec::new();
    let deepsim = Path::new(TARGET_DIR).join("release").join("deepsim");
    if o.no_build {
        if !deepsim.is_file() {
            return Err(format!("{}: not built (run without --no-build)", deepsim.display()).into());
        }
    } else {
        crate::build_deepsim(Some("cuda"))?;
    }
    entries.push(Entry { source: deepsim, name: "bin/deepsim".into() });
    for (source, name) in device_tests()? {
        entries.push(Entry { source, name: format!("tests/{name}") });
    }
    let root = env.iter().find(|(k, _)| k == "CUDA_ROOT").map(|(_, v)| PathBuf::from(v));
    let stub = root.ok_or("cuda-toolchain.sh printed no CUDA_ROOT")?.join("lib/stubs/libcuda.so");
    entries.push(Entry { source: stub, name: "stub/libcuda.so.1".into() });

    let stage = o.out.join("stage");
    let dir = stage.join("deepsim-gpu");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let mut files = Vec::new();
    for e in &entries {
        let dest = dir.join(&e.name);
        std::fs::create_dir_all(dest.parent().expect("entries are inside the pack"))?;
        std::fs::copy(&e.source, &dest)?;
        let before = std::fs::metadata(&dest)?.len();
        if !e.name.starts_with("stub/") {
            run_cmd(Command::new("strip").arg("--strip-all").arg(&dest))?;
        }
        let after = std::fs::metadata(&dest)?.len();
        println!("{:<36} {:>7.1} MiB (unstripped {:.1} MiB)", e.name, mib(after), mib(before));
        files.push(serde_json::json!({ "name": e.name, "bytes": after }));
    }
    let manifest = serde_json::json!({
        "commit": git_head(),
        "features": ["cuda"],
        "cuda_toolkit": "13.0 (PyPI wheels of cuda-toolkit 13.0.2, as PyTorch 2.11 uses)",
        "compute_cap": env.iter().find(|(k, _)| k == "CUDA_COMPUTE_CAP").map(|(_, v)| v),
        "files": files,
    });
    let text = serde_json::to_string_pretty(&manifest)?;
    deepsim_data::write_atomic(&dir.join("manifest.json"), text.as_bytes())?;

    let pack = o.out.join(PACK);
    // One xz block with a dictionary larger than the binaries together: the three share
    // candle and its PTX, which the second and third copy then cost almost nothing.
    let mut tar = Command::new("tar");
    tar.env("XZ_OPT", "--lzma2=preset=9,dict=256MiB -T1")
        .arg("-C")
        .arg(&stage)
        .arg("-cJf")
        .arg(&pack)
        .arg("deepsim-gpu");
    run_cmd(&mut tar)?;
    std::fs::remove_dir_all(&stage)?;
    let bytes = std::fs::metadata(&pack)?.len();
    let mut manifest = manifest;
    manifest["pack_bytes"] = bytes.into();
    let text = serde_json::to_string_pretty(&manifest)?;
    deepsim_data::write_atomic(&o.out.join("manifest.json"), text.as_bytes())?;
    check_size(bytes, LIMIT_BYTES)?;
    println!(
        "→ {} ({:.1} MiB of the {} MiB limit); on the GPU machine: bash scripts/gpu-run.sh",
        pack.display(),
        mib(bytes),
        LIMIT_BYTES >> 20
    );
    Ok(())
}

/// The environment `scripts/cuda-toolchain.sh --env` prints (it assembles the toolkit first
/// where it is missing).
fn toolchain_env() -> Result<Vec<(String, String)>> {
    let out = Command::new("bash").args(["scripts/cuda-toolchain.sh", "--env"]).output()?;
    if !out.status.success() {
        return Err(format!(
            "scripts/cuda-toolchain.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    Ok(parse_exports(&String::from_utf8_lossy(&out.stdout), &path))
}

/// `export NAME="value"` lines as (NAME, value), `$PATH` inside a value replaced by `path`;
/// other lines are skipped.
fn parse_exports(text: &str, path: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().strip_prefix("export ")?.split_once('=')?;
            let v = v.trim_matches('"').replace("$PATH", path);
            Some((k.to_owned(), v))
        })
        .collect()
}

/// Builds the device tests (release, `--features cuda`, target/cuda) and returns each
/// executable with its name in the pack (`package-test`).
fn device_tests() -> Result<Vec<(PathBuf, String)>> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["test", "--release", "--no-run", "--features", "cuda", "--target-dir", TARGET_DIR]);
    cmd.arg("--message-format=json-render-diagnostics");
    for (package, _) in DEVICE_TESTS {
        cmd.args(["-p", package]);
    }
    let mut tests: Vec<&str> = DEVICE_TESTS.iter().map(|(_, t)| *t).collect();
    tests.dedup();
    for t in tests {
        cmd.args(["--test", t]);
    }
    eprintln!("$ {cmd:?}");
    let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(format!("building the device tests failed ({})", out.status).into());
    }
    let found = test_executables(&String::from_utf8_lossy(&out.stdout));
    let mut chosen = Vec::new();
    for (package, test) in DEVICE_TESTS {
        let (_, _, exe) = found
            .iter()
            .find(|(p, t, _)| p == package && t == test)
            .ok_or_else(|| format!("cargo built no executable for {package} --test {test}"))?;
        chosen.push((exe.clone(), format!("{package}-{test}")));
    }
    Ok(chosen)
}

/// (package, target, executable) of every test executable in cargo's JSON messages; the
/// package is the name of the folder of its manifest.
fn test_executables(json_lines: &str) -> Vec<(String, String, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let exe = m["executable"].as_str()?;
            let manifest = Path::new(m["manifest_path"].as_str()?);
            let package = manifest.parent()?.file_name()?.to_str()?.to_owned();
            Some((package, m["target"]["name"].as_str()?.to_owned(), PathBuf::from(exe)))
        })
        .collect()
}

/// An error unless the pack is smaller than `limit`.
fn check_size(bytes: u64, limit: u64) -> std::result::Result<(), String> {
    if bytes < limit {
        Ok(())
    } else {
        Err(format!(
            "the pack is {:.1} MiB, not under the {:.0} MiB that may travel to the GPU machine",
            mib(bytes),
            mib(limit)
        ))
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn git_head() -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchain_environment_is_read() {
        let text = "export CUDA_ROOT=\"/t/root\"\nexport PATH=\"/t/root/bin:$PATH\"\n\
                    # a comment\nexport CUDA_COMPUTE_CAP=90\n";
        assert_eq!(
            parse_exports(text, "/usr/bin:/bin"),
            [
                ("CUDA_ROOT".to_string(), "/t/root".to_string()),
                ("PATH".into(), "/t/root/bin:/usr/bin:/bin".into()),
                ("CUDA_COMPUTE_CAP".into(), "90".into()),
            ]
        );
    }

    #[test]
    fn test_executables_are_found_in_cargo_messages() {
        let lines = [
            r#"{"reason":"compiler-artifact","manifest_path":"/w/crates/deepsim-kernels/Cargo.toml","target":{"name":"device"},"profile":{"test":true},"executable":"/w/target/cuda/release/deps/device-1a2b"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/crates/deepsim-kernels/Cargo.toml","target":{"name":"deepsim_kernels"},"profile":{"test":false},"executable":null}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(
            test_executables(&lines),
            [(
                "deepsim-kernels".to_string(),
                "device".to_string(),
                PathBuf::from("/w/target/cuda/release/deps/device-1a2b")
            )]
        );
    }

    #[test]
    fn the_pack_must_fit_the_limit() {
        assert!(check_size(63 << 20, LIMIT_BYTES).is_ok());
        let err = check_size(64 << 20, LIMIT_BYTES).unwrap_err();
        assert!(err.contains("64.0 MiB, not under the 64 MiB"), "{err}");
    }

    #[test]
    fn every_device_test_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (package, test) in DEVICE_TESTS {
            let file = root.join("crates").join(package).join("tests").join(format!("{test}.rs"));
            assert!(file.is_file(), "{} is missing", file.display());
        }
    }
}
