//! `cargo xtask bench-vs-torch`: deepsim and PyTorch timed in one sitting, alternating.
//!
//! Each round runs the criterion benchmark `cpu_<NAME>` of a deepsim crate (or, with
//! `--deepsim-bench`, a benchmark of `deepsim bench` in its own process), then each PyTorch
//! benchmark (`bench_torch.py --only <NAME> --exact --rss`, one process each), then (if given)
//! the FMA probe; the medians of the rounds' medians, with the peak resident sets where
//! measured, are printed as a markdown table and written to `target/bench-vs-torch/<NAME>.md`.

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
    #[arg(long, default_value = "bench/torch/bench_torch.py")]
    script: PathBuf,
    /// FMA probe binary built from bench/torch/fmapeak/fma.c (optional).
    #[arg(long)]
    fma: Option<PathBuf>,
    /// Time deepsim with this benchmark of `deepsim bench` (built with `cargo build --release
    /// -p deepsim-cli`, run as `target/release/deepsim bench NAME --json`), which also reports
    /// its peak resident set, instead of the criterion benchmark `cpu_<NAME>`.
    #[arg(long)]
    deepsim_bench: Option<String>,
    /// Timed calls of `--deepsim-bench`.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// The PyTorch benchmarks to alternate with, comma-separated (default: `--name`); each runs
    /// alone in its own process, so its peak resident set is its own.
    #[arg(long, value_delimiter = ',')]
    torch: Vec<String>,
    /// `KEY=VALUE` set for the PyTorch runs only, e.g.
    /// `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647`.
    #[arg(long, value_parser = parse_env)]
    torch_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// One run's time and, where measured, the process's peak resident set.
struct Sample {
    ms: f64,
    peak_mib: Option<f64>,
}

/// `~/.torch-venv/bin/python`, where bench/torch/README.md installs PyTorch.
fn default_python() -> PathBuf {
    Path::new(&std::env::var("HOME").unwrap_or_default()).join(".torch-venv/bin/python")
}

/// Runs the task.
pub fn run(o: Args) -> Result<()> {
    for (what, path) in [("--python", &o.python), ("--script", &o.script)] {
        if !path.exists() {
            return Err(format!(
                "{what} {} not found (setup: bench/torch/README.md)",
                path.display()
            )
            .into());
        }
    }
    let out_dir = Path::new("target/bench-vs-torch");
    std::fs::create_dir_all(out_dir)?;
    let torch_names = if o.torch.is_empty() { vec![o.name.clone()] } else { o.torch.clone() };
    let mut ours = Vec::new();
    let mut theirs: Vec<Vec<Sample>> = torch_names.iter().map(|_| Vec::new()).collect();
    let mut probes = Vec::new();
    for round in 1..=o.rounds {
        let a = match &o.deepsim_bench {
            Some(bench) => deepsim_bench_ms(bench, o.iterations, out_dir)?,
            None => Sample { ms: deepsim_ms(&o)?, peak_mib: None },
        };
        let mut line = format!("round {round}: deepsim {}", show(&a));
        for (name, runs) in torch_names.iter().zip(&mut theirs) {
            let b = torch_ms(&o, name, out_dir)?;
            line += &format!(", {name} {}", show(&b));
            runs.push(b);
        }
        let p = o.fma.as_deref().map(fma_probe).transpose()?;
        println!("{line}, fma probe {p:?} GFLOP/s");
        ours.push(a);
        probes.extend(p);
    }
    let deepsim_name = o.deepsim_bench.as_deref().unwrap_or(&o.name);
    let (a, a_peak) = summary(&ours);
    let mut table = format!(
        "| benchmark | median (ms) | per round (ms) | peak resident (MiB) | deepsim / it |\n\
         |---|---|---|---|---|\n| deepsim `{deepsim_name}` | {a:.1} | {:.1?} | {} | |\n",
        ours.iter().map(|s| s.ms).collect::<Vec<_>>(),
        mib(a_peak),
    );
    for (name, runs) in torch_names.iter().zip(&theirs) {
        let (b, b_peak) = summary(runs);
        table += &format!(
            "| PyTorch `{name}` | {b:.1} | {:.1?} | {} | {:.2} |\n",
            runs.iter().map(|s| s.ms).collect::<Vec<_>>(),
            mib(b_peak),
            a / b
        );
    }
    table += &format!(
        "\nrounds: {}; medians of the rounds' medians; peak resident: median over rounds; \
         FMA probe (GFLOP/s): {probes:.0?}; PyTorch environment: {:?}\n",
        o.rounds, o.torch_env
    );
    print!("\n{table}");
    let path = out_dir.join(format!("{}.md", o.name));
    std::fs::write(&path, table)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn show(s: &Sample) -> String {
    match s.peak_mib {
        Some(p) => format!("{:.1} ms (peak {p:.0} MiB)", s.ms),
        None => format!("{:.1} ms", s.ms),
    }
}

fn mib(v: Option<f64>) -> String {
    v.map_or("–".into(), |p| format!("{p:.0}"))
}

/// The median time and the median peak (when every run measured one).
fn summary(runs: &[Sample]) -> (f64, Option<f64>) {
    let mut ms: Vec<f64> = runs.iter().map(|s| s.ms).collect();
    let peaks: Option<Vec<f64>> = runs.iter().map(|s| s.peak_mib).collect();
    (median(&mut ms), peaks.map(|mut p| median(&mut p)))
}

/// Median ms and peak resident set of `deepsim bench <bench>`, one process.
fn deepsim_bench_ms(bench: &str, iterations: usize, out_dir: &Path) -> Result<Sample> {
    let exe = Path::new("target/release/deepsim");
    if !exe.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p deepsim-cli`",
            exe.display()
        )
        .into());
    }
    let json = out_dir.join("deepsim.json");
    let status = Command::new(exe)
        .args(["bench", bench, "--iterations", &iterations.to_string(), "--json"])
        .arg(&json)
        .status()?;
    if !status.success() {
        return Err(format!("deepsim bench {bench} failed: {status}").into());
    }
    let text = std::fs::read_to_string(&json)?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let m = &v[0];
    let ms = m["median_ms"]
        .as_f64()
        .ok_or_else(|| format!("{}: no median_ms in {text}", json.display()))?;
    let peak_mib = m["peak_resident"].as_f64().map(|b| b / f64::from(1 << 20));
    Ok(Sample { ms, peak_mib })
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

/// Median of the PyTorch benchmark `name`, in ms, and its process's peak resident set, from
/// the script's progress lines (`--only name --exact --rss`: the benchmark alone).
fn torch_ms(o: &Args, name: &str, out_dir: &Path) -> Result<Sample> {
    let output = Command::new(&o.python)
        .arg(&o.script)
        .args(["--only", name, "--exact", "--rss", "--no-matmul", "--out"])
        .arg(out_dir.join("torch.json"))
        .envs(o.torch_env.iter().map(|(k, v)| (k, v)))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{} failed: {stdout}{stderr}", o.script.display()).into());
    }
    let ms = stdout
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(name)).then(|| words.next()?.parse().ok()).flatten()
        })
        .ok_or_else(|| format!("no timing line for {name} in:\n{stdout}"))?;
    Ok(Sample { ms, peak_mib: peak_rss(&stdout, name) })
}

/// The MiB of the line `peak RSS <name> <MiB> MiB`.
fn peak_rss(stdout: &str, name: &str) -> Option<f64> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("peak RSS ")?.strip_prefix(name)?;
        rest.split_whitespace().next()?.parse().ok()
    })
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
    fn reads_the_peak_rss_line_of_its_benchmark_only() {
        let out = "  a_b 12.0 ms\n  peak RSS a_b_compiled 900 MiB\n  peak RSS a_b 1843 MiB\n";
        assert_eq!(peak_rss(out, "a_b"), Some(1843.0));
        assert_eq!(peak_rss(out, "a"), None);
        assert_eq!(parse_env("K=v=w"), Ok(("K".into(), "v=w".into())));
        assert!(parse_env("=v").is_err());
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
