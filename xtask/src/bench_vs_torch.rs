//! `cargo xtask bench-vs-torch`: deepsim and PyTorch timed in one sitting, alternating.
//!
//! Each round runs the criterion benchmark `cpu_<NAME>` of a deepsim crate, then
//! `bench_torch.py --only <NAME>`, then (if given) the FMA probe; the medians of the rounds'
//! medians are printed as a markdown table and written to `target/bench-vs-torch/<NAME>.md`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Runs one deepsim criterion benchmark and its PyTorch twin alternately, several rounds, and
/// prints both medians.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Benchmark name shared by both sides.
    #[arg(long, default_value = "alexnet_tv_pool5_b16_227_fwdbwd_in")]
    name: String,
    /// Crate holding the criterion benchmark.
    #[arg(long, default_value = "deepsim-kernels")]
    package: String,
    /// Alternations.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Python with torch and torchvision.
    #[arg(long, default_value_os_t = default_python())]
    python: PathBuf,
    /// bench_torch.py.
    #[arg(long, default_value = "../shared/bench/bench_torch.py")]
    script: PathBuf,
    /// FMA probe binary built from ../shared/bench/fmapeak/fma.c (optional).
    #[arg(long)]
    fma: Option<PathBuf>,
}

/// `~/.torch-venv/bin/python`, where ../shared/bench/README.md installs PyTorch.
fn default_python() -> PathBuf {
    Path::new(&std::env::var("HOME").unwrap_or_default()).join(".torch-venv/bin/python")
}

/// Runs the task.
pub fn run(o: Args) -> Result<()> {
    for (what, path) in [("--python", &o.python), ("--script", &o.script)] {
        if !path.exists() {
            return Err(format!(
                "{what} {} not found (setup: ../shared/bench/README.md)",
                path.display()
            )
            .into());
        }
    }
    let out_dir = Path::new("target/bench-vs-torch");
    std::fs::create_dir_all(out_dir)?;
    let (mut ours, mut theirs, mut probes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        let a = deepsim_ms(&o)?;
        let b = torch_ms(&o, out_dir)?;
        let p = o.fma.as_deref().map(fma_probe).transpose()?;
        println!("round {round}: deepsim {a:.1} ms, torch {b:.1} ms, fma probe {p:?} GFLOP/s");
        ours.push(a);
        theirs.push(b);
        probes.extend(p);
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    let table = format!(
        "| benchmark | deepsim median (ms) | PyTorch median (ms) | deepsim / PyTorch |\n\
         |---|---|---|---|\n| {} | {a:.1} | {b:.1} | {:.2} |\n\n\
         rounds: {}; deepsim per round: {ours:.1?}; PyTorch per round: {theirs:.1?}; \
         FMA probe (GFLOP/s): {probes:.0?}\n",
        o.name,
        a / b,
        o.rounds
    );
    print!("\n{table}");
    let path = out_dir.join(format!("{}.md", o.name));
    std::fs::write(&path, table)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Median of the criterion benchmark `cpu_<name>`, in ms.
fn deepsim_ms(o: &Args) -> Result<f64> {
    let id = format!("cpu_{}", o.name);
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["bench", "-p", &o.package, "--bench", "bench_main", "--"])
        .arg(format!("^{id}$"))
        .arg("--noplot")
        .status()?;
    if !status.success() {
        return Err(format!("cargo bench for {id} failed: {status}").into());
    }
    let estimates = Path::new("target/criterion").join(&id).join("new/estimates.json");
    let text = std::fs::read_to_string(&estimates)
        .map_err(|e| format!("{}: {e} (no benchmark named {id}?)", estimates.display()))?;
    Ok(criterion_median(&text)
        .ok_or_else(|| format!("{}: no median point estimate", estimates.display()))?
        / 1e6)
}

/// Median of the PyTorch benchmark `name`, in ms, from the script's progress line.
fn torch_ms(o: &Args, out_dir: &Path) -> Result<f64> {
    let output = Command::new(&o.python)
        .arg(&o.script)
        .args(["--only", &o.name, "--no-matmul", "--out"])
        .arg(out_dir.join("torch.json"))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{} failed: {stdout}{stderr}", o.script.display()).into());
    }
    stdout
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(o.name.as_str())).then(|| words.next()?.parse().ok()).flatten()
        })
        .ok_or_else(|| format!("no timing line for {} in:\n{stdout}", o.name).into())
}

/// All-CPU AVX-512 FMA throughput right now, in GFLOP/s.
fn fma_probe(exe: &Path) -> Result<f64> {
    let out = Command::new(exe).args(["50000000", "probe"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .zip(text.split_whitespace().skip(1))
        .find_map(|(v, unit)| (unit == "GFLOP/s").then(|| v.parse().ok()).flatten())
        .ok_or_else(|| format!("{}: unexpected output {text}", exe.display()).into())
}

/// The number after `key` that follows the first `section` in a JSON text.
/// The median's point estimate of criterion's `estimates.json`.
fn criterion_median(text: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(text).ok()?["median"]["point_estimate"].as_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_median() {
        let text = r#"{"mean":{"point_estimate":5.0},"median":{"confidence_interval":
            {"lower_bound":1.0},"point_estimate":1.25e8,"standard_error":3.0}}"#;
        assert_eq!(criterion_median(text), Some(1.25e8));
        assert_eq!(criterion_median(r#"{"mean":{"point_estimate":5.0}}"#), None);
        assert_eq!(criterion_median("not json"), None);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
