//! `cargo xtask bench-gpu`: the kernel, comparator and training-step benchmarks on the GPU
//! (`deepsim bench`, built with `--features cuda`, or `metal` on macOS), one process per
//! benchmark, with the peak GPU memory of each process sampled from `nvidia-smi`. Without a GPU
//! it says so and runs the same benchmarks on the CPU, with peak resident memory instead.
//! Writes `results.json` and `results.md` under the output folder.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Builds the deepsim binary with the GPU feature of this machine (cuda where nvidia-smi lists
/// a GPU, metal on macOS), runs each benchmark of `deepsim bench` in its own process on the
/// GPU and writes results.json and results.md (ms per call, images/s, peak memory). Without a
/// GPU it says so and runs the CPU set.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed calls per benchmark, after two warm-up calls (e.g. `--only deepsim_step_64
    /// --iterations 1000` checks that memory does not grow).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Run only this benchmark (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Run the CPU set even where a GPU is present.
    #[arg(long)]
    cpu: bool,
    /// Output folder.
    #[arg(long, default_value = "target/bench-gpu")]
    out: PathBuf,
}

/// Where the benchmarks run.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Backend {
    Cuda,
    Metal,
    Cpu,
}

impl Backend {
    fn feature(self) -> Option<&'static str> {
        match self {
            Backend::Cuda => Some("cuda"),
            Backend::Metal => Some("metal"),
            Backend::Cpu => None,
        }
    }

    fn device(self) -> &'static str {
        match self {
            Backend::Cuda => "cuda:0",
            Backend::Metal => "metal",
            Backend::Cpu => "cpu",
        }
    }
}

/// The GPU of this machine, or why there is none.
fn detect() -> std::result::Result<Backend, String> {
    if cfg!(target_os = "macos") {
        return Ok(Backend::Metal);
    }
    match Command::new("nvidia-smi").arg("-L").output() {
        Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("GPU") => {
            Ok(Backend::Cuda)
        }
        Ok(out) => Err(format!(
            "nvidia-smi -L lists no GPU ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("nvidia-smi cannot run ({e})")),
    }
}

/// Runs the task.
pub fn run(o: Args) -> Result<()> {
    let backend = if o.cpu {
        Backend::Cpu
    } else {
        detect().unwrap_or_else(|why| {
            println!("no GPU found: {why}. Running the CPU set instead.");
            Backend::Cpu
        })
    };
    let bin = crate::build_deepsim(backend.feature())?;
    std::fs::create_dir_all(&o.out)?;
    let names: Vec<String> = if o.only.is_empty() { bench_names(&bin)? } else { o.only.clone() };
    let mut rows = Vec::new();
    for name in &names {
        let json = o.out.join(format!("{name}.json"));
        let peak_gpu = run_one(&bin, name, backend, o.iterations, &json)?;
        let text = std::fs::read_to_string(&json)?;
        let mut list: serde_json::Value = serde_json::from_str(&text)?;
        let mut m = list
            .as_array_mut()
            .and_then(|a| a.pop())
            .ok_or_else(|| format!("{}: no measurement", json.display()))?;
        m["peak_gpu_mib"] = peak_gpu.map_or(serde_json::Value::Null, |v| v.into());
        rows.push(m);
    }
    let summary = markdown(&rows, backend);
    let json = serde_json::to_string_pretty(&rows)?;
    deepsim_data::write_atomic(&o.out.join("results.json"), json.as_bytes())?;
    deepsim_data::write_atomic(&o.out.join("results.md"), summary.as_bytes())?;
    println!("\n{summary}\n→ {}/results.md and results.json", o.out.display());
    Ok(())
}

/// The benchmark names, from `deepsim bench --list`.
fn bench_names(bin: &Path) -> Result<Vec<String>> {
    let out = Command::new(bin).args(["bench", "--list"]).output()?;
    if !out.status.success() {
        return Err(format!("{} bench --list failed ({})", bin.display(), out.status).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

/// Runs one benchmark in its own process; on CUDA, samples the process's GPU memory every
/// 100 ms and returns the peak in MiB.
fn run_one(
    bin: &Path,
    name: &str,
    backend: Backend,
    iterations: u32,
    json: &Path,
) -> Result<Option<u64>> {
    let mut child = Command::new(bin)
        .args(["bench", name, "--device", backend.device()])
        .args(["--iterations", &iterations.to_string(), "--json"])
        .arg(json)
        .stdout(Stdio::inherit())
        .spawn()?;
    let mut peak: Option<u64> = None;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if backend == Backend::Cuda {
            if let Some(mib) = gpu_memory_of(child.id()) {
                peak = Some(peak.map_or(mib, |p| p.max(mib)));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(format!(
            "deepsim bench {name} failed ({status}) after {:.0} s",
            started.elapsed().as_secs_f64()
        )
        .into());
    }
    Ok(peak)
}

/// The GPU memory `pid` holds now (MiB), from `nvidia-smi --query-compute-apps`.
fn gpu_memory_of(pid: u32) -> Option<u64> {
    let out = Command::new("nvidia-smi")
        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    parse_gpu_memory(&String::from_utf8_lossy(&out.stdout), pid)
}

/// `pid`'s memory in `nvidia-smi`'s `pid, used_memory` CSV lines, summed over its GPUs.
fn parse_gpu_memory(csv: &str, pid: u32) -> Option<u64> {
    let used: Vec<u64> = csv
        .lines()
        .filter_map(|l| {
            let (p, m) = l.split_once(',')?;
            (p.trim().parse::<u32>().ok()? == pid).then(|| m.trim().parse::<u64>().ok())?
        })
        .collect();
    (!used.is_empty()).then(|| used.iter().sum())
}

/// The summary table.
fn markdown(rows: &[serde_json::Value], backend: Backend) -> String {
    let mib = |v: &serde_json::Value| v.as_u64().map(|b| format!("{:.0}", b as f64 / 1048576.0));
    let mut s = format!(
        "Benchmarks on {} ({}), median of the timed calls:\n\n\
         | benchmark | batch | calls | ms / call | images / s | peak memory (MiB) | resident growth over the calls (MiB) |\n\
         |---|---|---|---|---|---|---|\n",
        backend.device(),
        match backend {
            Backend::Cpu => "peak memory: the process's peak resident set",
            Backend::Cuda => "peak memory: the process's GPU memory, sampled every 100 ms",
            Backend::Metal => "peak memory: not measured on Metal",
        }
    );
    for r in rows {
        let peak = match backend {
            Backend::Cpu => mib(&r["peak_resident"]),
            _ => r["peak_gpu_mib"].as_u64().map(|v| v.to_string()),
        };
        let growth = match (r["resident_after_warmup"].as_u64(), r["resident_at_end"].as_u64()) {
            (Some(a), Some(b)) => format!("{:+.0}", (b as f64 - a as f64) / 1048576.0),
            _ => "−".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {} | {} |\n",
            r["name"].as_str().unwrap_or("?"),
            r["batch"],
            r["iterations"],
            r["median_ms"].as_f64().unwrap_or(f64::NAN),
            r["images_per_s"].as_f64().unwrap_or(f64::NAN),
            peak.unwrap_or_else(|| "−".into()),
            growth
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines_are_read_per_process() {
        let csv = "4242, 1536\n77, 900\n4242, 512\n";
        assert_eq!(parse_gpu_memory(csv, 4242), Some(2048));
        assert_eq!(parse_gpu_memory(csv, 77), Some(900));
        assert_eq!(parse_gpu_memory(csv, 5), None);
        assert_eq!(parse_gpu_memory("[N/A]\n", 5), None);
    }

    #[test]
    fn options_are_checked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse =
            |v: &[&str]| Cli::try_parse_from(std::iter::once("bench-gpu").chain(v.iter().copied()));
        let o = parse(&["--only", "lrn_fwdbwd", "--cpu", "--iterations", "3"]).unwrap().args;
        assert_eq!(
            (o.only.as_slice(), o.cpu, o.iterations),
            (&["lrn_fwdbwd".to_string()][..], true, 3)
        );
        assert!(parse(&["--iterations", "0"]).is_err());
        assert!(parse(&["--only"]).err().unwrap().to_string().contains("a value is required"));
        assert!(parse(&["--bogus"])
            .err()
            .unwrap()
            .to_string()
            .contains("unexpected argument '--bogus'"));
    }

    #[test]
    fn the_table_reports_growth_and_peak() {
        let rows = vec![serde_json::json!({
            "name": "deepsim_step_64", "batch": 8, "iterations": 1000, "median_ms": 350.0,
            "images_per_s": 22.9, "peak_resident": 1610612736u64,
            "resident_after_warmup": 1073741824u64, "resident_at_end": 1074790400u64,
        })];
        let md = markdown(&rows, Backend::Cpu);
        assert!(md.contains("| deepsim_step_64 | 8 | 1000 | 350.0 | 22.9 | 1536 | +1 |"), "{md}");
    }
}
