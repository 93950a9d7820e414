//! `cargo xtask experiment latent-probe`: the article's "beyond mimicry" claim measured — VAEs
//! trained on Fashion-MNIST with the image loss and with the DeePSiM loss, several seeds each,
//! then a linear classifier on each frozen encoder's codes (`deepsim probe`), beside the same
//! probe on raw pixels and on untrained encoders; written up as a section of `docs/RESULTS.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::experiment::{config_steps, deepsim, logged_steps, machine, Result};

/// Options of `experiment latent-probe`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Override every run's steps (configs/latent-probe/: 400).
    #[arg(long)]
    steps: Option<u64>,
    /// Seeds per loss (run.seed 1, 2, …).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    seeds: u64,
    /// Training images the classifier is fitted on (the first N of the training split).
    #[arg(long, default_value_t = 10_000)]
    probe_train: u32,
    /// Fashion-MNIST's directory (default: $DEEPSIM_FASHION_MNIST, else target/data/fashion-mnist,
    /// which `cargo xtask fetch-data` fills).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Keep a run whose metrics.jsonl already reaches its steps instead of training it again.
    #[arg(long)]
    reuse: bool,
    /// Use this deepsim binary instead of building target/release/deepsim.
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// The losses compared: configuration stem and the name the report gives it.
const LOSSES: [(&str, &str); 2] = [
    ("image-loss", "image loss (squared L2)"),
    ("deepsim", "DeePSiM (ST-LPIPS-alex feature term + image term)"),
];

const OUT: &str = "runs/latent-probe";

/// The heading of the section this experiment owns in `docs/RESULTS.md`.
pub const HEADING: &str = "## The latent code (\"beyond mimicry\")";

/// The hand-written part of the section, kept across reruns.
const WORDS: &str = "### What it says";

/// The text of `doc`'s section under `heading`, up to the next `## ` heading or the end.
fn section<'a>(doc: &'a str, heading: &str) -> Option<(usize, usize, &'a str)> {
    let start = doc.find(heading)?;
    let after = start + heading.len();
    let end = doc[after..].find("\n## ").map_or(doc.len(), |i| after + i + 1);
    Some((start, end, &doc[start..end]))
}

/// `doc` (a freshly written RESULTS.md without this section) with the latent-code section of
/// `previous` appended: `experiment table2` keeps this experiment's words and numbers.
pub fn with_latent_section(doc: String, previous: &str) -> String {
    match section(previous, HEADING) {
        Some((_, _, s)) => format!("{}\n\n{}\n", doc.trim_end(), s.trim_end()),
        None => doc,
    }
}

/// `previous` with its latent-code section replaced by `new` (appended when it had none);
/// the old section's hand-written [`WORDS`] subsection is kept at the new one's end.
fn replace_section(previous: &str, new: &str) -> String {
    let new = new.trim_end();
    match section(previous, HEADING) {
        Some((start, end, old)) => {
            let words = old.find(WORDS).map(|i| old[i..].trim_end());
            let body = match words {
                Some(w) => format!("{new}\n\n{w}\n"),
                None => format!("{new}\n"),
            };
            let rest = &previous[end..];
            let sep = if rest.is_empty() { "" } else { "\n" };
            format!("{}{body}{sep}{rest}", &previous[..start])
        }
        None if previous.trim().is_empty() => format!("{new}\n"),
        None => format!("{}\n\n{new}\n", previous.trim_end()),
    }
}

/// Mean and sample standard deviation (0 for one value).
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The Fashion-MNIST file `stem` in `dir`, gzip-compressed or raw.
fn idx_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    [format!("{stem}.gz"), stem.to_owned()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{}: no {stem}[.gz]; run `cargo xtask fetch-data` or pass --data",
                dir.display()
            )
            .into()
        })
}

/// Writes `configs/latent-probe/<stem>.toml` with its data paths in `dir` and `run.seed`
/// `seed` to `<OUT>/<file>`; its path.
fn derived_config(stem: &str, dir: &Path, seed: u64, file: &str) -> Result<String> {
    let src = format!("configs/latent-probe/{stem}.toml");
    let text = std::fs::read_to_string(&src).map_err(|e| format!("{src}: {e}"))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| format!("{src}: {e}"))?;
    let data = table.get_mut("data").and_then(|d| d.as_table_mut()).ok_or("no [data]")?;
    for (key, stem) in [("train", "train-images-idx3-ubyte"), ("val", "t10k-images-idx3-ubyte")] {
        let path = idx_file(dir, stem)?.display().to_string();
        data.insert(key.into(), toml::Value::String(path));
    }
    let run = table.get_mut("run").and_then(|d| d.as_table_mut()).ok_or("no [run]")?;
    run.insert("seed".into(), toml::Value::Integer(seed as i64));
    let out = format!("{OUT}/{file}");
    std::fs::create_dir_all(OUT)?;
    deepsim_data::write_atomic(Path::new(&out), toml::to_string(&table)?.as_bytes())?;
    Ok(out)
}

/// One trained run.
struct Run {
    loss: usize,
    seed: u64,
    checkpoint: String,
    steps: u64,
    seconds: f64,
    /// Why training stopped early (a non-finite loss), from deepsim's error; not probed.
    failed: Option<String>,
}

/// The options as typed, for the report.
fn command_flags(o: &Options) -> String {
    let mut s = String::new();
    if let Some(n) = o.steps {
        s.push_str(&format!(" --steps {n}"));
    }
    if o.seeds != 3 {
        s.push_str(&format!(" --seeds {}", o.seeds));
    }
    if o.probe_train != 10_000 {
        s.push_str(&format!(" --probe-train {}", o.probe_train));
    }
    if let Some(d) = &o.data {
        s.push_str(&format!(" --data {}", d.display()));
    }
    if o.reuse {
        s.push_str(" --reuse");
    }
    s
}

/// `optim.lr` of a configuration file.
fn config_lr(config: &str) -> Result<f64> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{config}: {e}"))?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| format!("{config}: {e}"))?;
    value
        .get("optim")
        .and_then(|o| o.get("lr"))
        .and_then(toml::Value::as_float)
        .ok_or_else(|| format!("{config}: no optim.lr").into())
}

/// Runs the experiment.
pub fn run(o: Options) -> Result<()> {
    let started = Instant::now();
    let dir = o
        .data
        .clone()
        .or_else(|| std::env::var_os("DEEPSIM_FASHION_MNIST").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/data/fashion-mnist"));
    let bin = match &o.bin {
        Some(b) => b.clone(),
        None => crate::build_deepsim(None)?,
    };
    let seeds: Vec<u64> = (1..=o.seeds).collect();
    let mut runs = Vec::new();
    for (loss, (stem, _)) in LOSSES.iter().enumerate() {
        let config = derived_config(stem, &dir, 1, &format!("{stem}.toml"))?;
        let steps = match o.steps {
            Some(n) => n,
            None => config_steps(&config)?,
        };
        for &seed in &seeds {
            let out = format!("{OUT}/{stem}-s{seed}");
            let checkpoint = format!("{out}/checkpoint.safetensors");
            let done = logged_steps(&out).0 >= steps && Path::new(&checkpoint).is_file();
            let mut failed = None;
            if !(o.reuse && done) {
                if Path::new(&out).exists() {
                    std::fs::remove_dir_all(&out)?;
                }
                let (n, s) = (steps.to_string(), seed.to_string());
                let args = ["train", &config, "--steps", &n, "--seed", &s, "--out", &out];
                // A run that diverges is reported, not fatal: the other seeds still count.
                if let Err(e) = deepsim(&bin, &args) {
                    failed = Some(e.to_string());
                }
            }
            let (logged, seconds) = logged_steps(&out);
            if failed.is_none() && logged < steps {
                failed = Some(format!("{out}: stopped at step {logged} of {steps}"));
            }
            runs.push(Run { loss, seed, checkpoint, steps: logged, seconds, failed });
        }
    }
    // The untrained encoders: the image-loss configuration at each seed (both losses share
    // the networks and their initialization).
    let untrained: Vec<String> = seeds
        .iter()
        .map(|&s| derived_config(LOSSES[0].0, &dir, s, &format!("untrained-s{s}.toml")))
        .collect::<Result<_>>()?;
    let json = format!("{OUT}/probe.json");
    let mut args: Vec<String> = vec!["probe".into(), "--pixels".into()];
    for u in &untrained {
        args.extend(["--untrained".into(), u.clone()]);
    }
    for r in runs.iter().filter(|r| r.failed.is_none()) {
        args.extend(["--checkpoint".into(), r.checkpoint.clone()]);
    }
    args.extend(["--data".into(), dir.display().to_string()]);
    args.extend(["--train".into(), o.probe_train.to_string(), "--json".into(), json.clone()]);
    let t = Instant::now();
    let table = deepsim(&bin, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let probe_seconds = t.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let rows = report["rows"].as_array().ok_or("probe.json: no rows")?;
    let accuracy = |source: &str| -> Result<f64> {
        rows.iter()
            .find(|r| r["source"].as_str() == Some(source))
            .and_then(|r| r["test_accuracy"].as_f64())
            .ok_or_else(|| format!("probe.json: no row for {source}").into())
    };
    let pct = |v: f64| format!("{:.2} %", v * 100.0);
    let pm = |v: &[f64]| {
        let (m, s) = mean_sd(v);
        format!("{:.2} ± {:.2} %", m * 100.0, s * 100.0)
    };

    let total = started.elapsed().as_secs_f64();
    let steps = o.steps.map_or_else(|| config_steps(&format!("{OUT}/{}.toml", LOSSES[0].0)), Ok)?;
    let lr = config_lr(&format!("{OUT}/{}.toml", LOSSES[0].0))?;
    let mut s = format!("{HEADING}\n\n");
    s.push_str(&format!(
        "The article: an autoencoder trained with a perceptual loss learns a more useful latent \
         code than one trained with the image loss. Measured here: the Fashion-MNIST VAE \
         (`configs/latent-probe/`: 28×28 grey images served as 64×64 RGB, latent 64, the \
         `cpu_64` networks at width 0.25, batch 16, Adam at learning rate {lr}, {steps} steps) trained with \
         the image loss alone and with the DeePSiM loss, identical otherwise (the same seed \
         gives both the same initialization and data order); then a linear classifier on each \
         frozen encoder's posterior mean μ. Written by `cargo xtask experiment latent-probe{}` \
         on {} in {:.1} minutes{} (Fashion-MNIST from Debian's `dataset-fashion-mnist`).\n\n",
        command_flags(&o),
        machine(),
        total / 60.0,
        if o.reuse {
            " (--reuse: runs already trained to their steps were kept, and their training is \
             not in this time; the table gives their logged times)"
        } else {
            ""
        }
    ));
    s.push_str(&format!(
        "**Probe.** Multinomial logistic regression (`deepsim probe`, deepsim-train's \
         `LinearProbe`) on features standardized by their training mean and deviation: {} \
         full-batch Adam steps at learning rate {}, L2 {} on the weights, from zero; fitted on \
         the first {} training images, scored on all {} test images. The same probe on the raw \
         28×28 pixels and on the untrained encoders (each seed's initialization) are the \
         baselines.\n\n",
        report["steps"], report["lr"], report["l2"], report["train_images"], report["test_images"]
    ));
    s.push_str("| code | ");
    s.push_str(&seeds.iter().map(|s| format!("seed {s}")).collect::<Vec<_>>().join(" | "));
    s.push_str(" | mean ± sd | training time per run |\n|---|");
    s.push_str(&"---|".repeat(seeds.len() + 2));
    s.push('\n');
    // Per loss, per seed: the test accuracy, `None` where training diverged.
    let mut per_loss: Vec<Vec<Option<f64>>> = Vec::new();
    let mut failures = String::new();
    for (loss, (_, name)) in LOSSES.iter().enumerate() {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.loss == loss).collect();
        let acc: Vec<Option<f64>> = mine
            .iter()
            .map(|r| if r.failed.is_some() { Ok(None) } else { accuracy(&r.checkpoint).map(Some) })
            .collect::<Result<_>>()?;
        let finished: Vec<f64> = acc.iter().flatten().copied().collect();
        let time: Vec<f64> =
            mine.iter().filter(|r| r.failed.is_none()).map(|r| r.seconds).collect();
        let cells: Vec<String> = mine
            .iter()
            .zip(&acc)
            .map(|(r, a)| a.map_or_else(|| format!("diverged (step {})", r.steps), pct))
            .collect();
        s.push_str(&format!(
            "| {name} | {} | **{}**{} | {} |\n",
            cells.join(" | "),
            if finished.is_empty() { "−".into() } else { pm(&finished) },
            if finished.len() < mine.len() {
                format!(" ({} of {} seeds)", finished.len(), mine.len())
            } else {
                String::new()
            },
            if time.is_empty() { "−".into() } else { format!("{:.0} s", mean_sd(&time).0) }
        ));
        for r in mine.iter().filter(|r| r.failed.is_some()) {
            let why = r.failed.as_deref().unwrap_or_default();
            let last = why.lines().rev().find(|l| l.contains("error")).unwrap_or(why).trim();
            failures.push_str(&format!("- {name}, seed {}: {last}\n", r.seed));
        }
        per_loss.push(acc);
    }
    let random: Vec<f64> = untrained.iter().map(|u| accuracy(u)).collect::<Result<_>>()?;
    s.push_str(&format!(
        "| untrained encoder | {} | {} | − |\n",
        random.iter().map(|&a| pct(a)).collect::<Vec<_>>().join(" | "),
        pm(&random)
    ));
    let pixels = accuracy("pixels")?;
    s.push_str(&format!(
        "| raw pixels (784) | {} | {} | − |\n\n",
        vec![pct(pixels); seeds.len()].join(" | "),
        pct(pixels)
    ));
    if !failures.is_empty() {
        s.push_str(&format!("Runs that stopped (not probed):\n\n{failures}\n"));
    }
    let diff: Vec<f64> =
        per_loss[1].iter().zip(&per_loss[0]).filter_map(|(d, i)| Some((*d)? - (*i)?)).collect();
    let (dm, ds) = if diff.is_empty() { (f64::NAN, f64::NAN) } else { mean_sd(&diff) };
    s.push_str(&format!(
        "DeePSiM minus image loss, paired by seed (seeds where both finished): {} (mean \
         {:+.2} ± {:.2} points; DeePSiM ahead in {} of {}). Probing took {probe_seconds:.0} s \
         for all {} codes.\n\n",
        diff.iter().map(|d| format!("{:+.2}", d * 100.0)).collect::<Vec<_>>().join(", "),
        dm * 100.0,
        ds * 100.0,
        diff.iter().filter(|&&d| d > 0.0).count(),
        diff.len(),
        rows.len()
    ));
    s.push_str(&format!("The probe's own table:\n\n```\n{}```\n", table));
    let previous = std::fs::read_to_string("docs/RESULTS.md").unwrap_or_default();
    let doc = replace_section(&previous, &s);
    deepsim_data::write_atomic(Path::new("docs/RESULTS.md"), doc.as_bytes())?;
    println!("{s}");
    println!("→ docs/RESULTS.md ({:.1} minutes)", total / 60.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_and_its_words_kept() {
        let old = format!(
            "# R\n\n## Table\n\nt\n\n{HEADING}\n\nold numbers\n\n{WORDS}\n\nIt holds.\n\n## Later\n\nx\n"
        );
        let new = replace_section(&old, &format!("{HEADING}\n\nnew numbers\n"));
        assert_eq!(
            new,
            format!(
                "# R\n\n## Table\n\nt\n\n{HEADING}\n\nnew numbers\n\n{WORDS}\n\nIt holds.\n\n## Later\n\nx\n"
            )
        );
        // Appended where there was none; alone in an empty file.
        let appended = replace_section("# R\n\n## Table\n", &format!("{HEADING}\n\nn\n"));
        assert_eq!(appended, format!("# R\n\n## Table\n\n{HEADING}\n\nn\n"));
        assert_eq!(replace_section("", &format!("{HEADING}\n\nn")), format!("{HEADING}\n\nn\n"));
    }

    #[test]
    fn table2_keeps_the_section() {
        let previous = format!("# R\n\n## Figures\n\nf\n\n{HEADING}\n\nnumbers\n\n{WORDS}\n\nw\n");
        let doc = with_latent_section("# R2\n\n## Figures\n\ng\n".into(), &previous);
        assert_eq!(
            doc,
            format!("# R2\n\n## Figures\n\ng\n\n{HEADING}\n\nnumbers\n\n{WORDS}\n\nw\n")
        );
        assert_eq!(with_latent_section("# R2\n".into(), "# R\n"), "# R2\n");
    }

    #[test]
    fn spread_is_the_sample_deviation() {
        let (m, s) = mean_sd(&[0.80, 0.82, 0.84]);
        assert!((m - 0.82).abs() < 1e-12);
        assert!((s - 0.02).abs() < 1e-12, "{s}");
        assert_eq!(mean_sd(&[0.5]), (0.5, 0.0));
    }
}
