//! `cargo xtask experiment table2`: the paper's Table 2 at CPU scale, trained and evaluated
//! from scratch, written up in `docs/RESULTS.md` with its figures in `docs/results/`.
//!
//! It builds the `deepsim` binary, trains the inverters of `configs/table2/` (conv5 and fc6 of
//! AlexNet with random weights, image loss and DeePSiM, and the conv5 ablations) and the CPU
//! VAE, runs `deepsim eval --optim` on the demo set's validation tiles (which adds Mahendran &
//! Vedaldi's inversion by optimization), draws the figures with the `deepsim` figure commands,
//! and writes the results with the machine, the commands and the time each step took.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const HELP: &str = "usage: cargo xtask experiment table2 [options]

Trains the runs of configs/table2/ and configs/cpu-vae.toml, evaluates them on data/demo/val
with the optimization baseline, draws the figures into docs/results/ and writes
docs/RESULTS.md. About 21 minutes on 2 CPU cores.

options:
  --steps N       override every run's steps (a quick check; RESULTS.md records it)
  --vae-steps N   override the VAE's steps only (configs/cpu-vae.toml: 3000)
  --reuse         keep a run whose metrics.jsonl already reaches its steps instead of
                  training it again (its time is still the sum of its logged step times)
  --bin PATH      use this deepsim binary instead of building target/release/deepsim";

/// The inverters, in the order of the table's rows.
const RUNS: [&str; 6] = [
    "conv5-image-loss",
    "conv5-deepsim",
    "conv5-no-adv",
    "conv5-no-feat",
    "fc6-image-loss",
    "fc6-deepsim",
];

const VAL: &str = "data/demo/val";
const TRAIN: &str = "data/demo/train";
const OUT: &str = "runs/table2";
const FIGURES: &str = "docs/results";

/// Validation tiles shown in the figures.
const SHOWN: [&str; 8] = [
    "astronaut_s240_r2_c1.jpg",
    "chelsea_s240_r0_c2.jpg",
    "coffee_s400_r0_c0.jpg",
    "brick_s240_r0_c2.jpg",
    "camera_s240_r0_c0.jpg",
    "rocket_s240_r0_c0.jpg",
    "retina_s400_r1_c4.jpg",
    "grass_s400_r0_c2.jpg",
];

/// A cell of the paper's table: image error, and feature error where reported.
type Cell = Option<(u32, Option<u32>)>;

/// The paper's Table 2 (image / feature error in %, `None` where it reports none).
const PAPER: [(&str, [Cell; 4]); 5] = [
    (
        "Mahendran & Vedaldi",
        [Some((71, Some(19))), Some((80, Some(19))), Some((82, Some(16))), Some((84, Some(9)))],
    ),
    (
        "Dosovitskiy & Brox",
        [Some((35, None)), Some((51, None)), Some((56, None)), Some((58, None))],
    ),
    ("Our image loss", [None, Some((46, Some(79))), None, None]),
    (
        "AlexNet CONV5",
        [Some((43, Some(37))), Some((55, Some(48))), Some((61, Some(45))), Some((63, Some(29)))],
    ),
    ("VideoNet CONV5", [None, Some((51, Some(57))), None, None]),
];

struct Options {
    steps: Option<u64>,
    vae_steps: Option<u64>,
    reuse: bool,
    bin: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    match args.first().map(String::as_str) {
        Some("table2") => {}
        Some("-h" | "--help") | None => {
            println!("{HELP}");
            return Ok(None);
        }
        Some(other) => return Err(format!("unknown experiment `{other}`\n\n{HELP}").into()),
    }
    let mut o = Options { steps: None, vae_steps: None, reuse: false, bin: None };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{HELP}");
            return Ok(None);
        }
        if flag == "--reuse" {
            o.reuse = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n\n{HELP}"))?;
        match flag.as_str() {
            "--steps" => {
                o.steps = Some(value.parse().map_err(|_| format!("--steps {value}: not a count"))?)
            }
            "--vae-steps" => {
                o.vae_steps =
                    Some(value.parse().map_err(|_| format!("--vae-steps {value}: not a count"))?)
            }
            "--bin" => o.bin = Some(value.into()),
            _ => return Err(format!("unknown option {flag}\n\n{HELP}").into()),
        }
    }
    Ok(Some(o))
}

/// Runs `bin args`, echoing the command; its stdout.
fn deepsim(bin: &Path, args: &[&str]) -> Result<String> {
    eprintln!("$ deepsim {}", args.join(" "));
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "deepsim {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `run.steps` of a configuration file.
fn config_steps(config: &str) -> Result<u64> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{config}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("steps = "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("{config}: no `steps = N` line").into())
}

/// The last step a run logged and the sum of its logged step times (0, 0 without a log).
fn logged_steps(out: &str) -> (u64, f64) {
    let Ok(text) = std::fs::read_to_string(format!("{out}/metrics.jsonl")) else {
        return (0, 0.0);
    };
    let mut last = 0;
    let mut seconds = 0.0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        last = v["step"].as_u64().unwrap_or(last);
        seconds += v["seconds"].as_f64().unwrap_or(0.0);
    }
    (last, seconds)
}

/// The machine, in words: CPU model and core count.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores available, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

/// One evaluated row of `table.json`.
struct Row {
    method: String,
    layer: String,
    image: f64,
    feature: f64,
}

fn rows(json: &str) -> Result<Vec<Row>> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let list = v["rows"].as_array().ok_or("table.json: no rows")?;
    list.iter()
        .map(|r| {
            Ok(Row {
                method: r["method"].as_str().ok_or("table.json: a row without method")?.into(),
                layer: r["layer"].as_str().ok_or("table.json: a row without layer")?.into(),
                image: r["image_error"].as_f64().ok_or("table.json: no image_error")?,
                feature: r["feature_error"].as_f64().ok_or("table.json: no feature_error")?,
            })
        })
        .collect()
}

/// The paper's four orderings (Table 2 and §4.1's text) checked on our numbers at `layer`.
fn orderings(rows: &[Row], layer: &str) -> String {
    let find = |prefix: &str| {
        rows.iter().find(|r| {
            r.layer == layer && r.method.starts_with(prefix) && !r.method.contains(", no")
        })
    };
    let (Some(mv), Some(db), Some(ds)) = (find("Mahendran"), find("image loss"), find("DeePSiM"))
    else {
        return format!("- {layer}: not every method was evaluated at this layer.\n");
    };
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let claim = |text: &str, holds: bool, a: f64, b: f64| {
        format!(
            "- {layer}, {text}: **{}** (ours {} against {}).\n",
            if holds { "holds" } else { "does not hold" },
            pct(a),
            pct(b)
        )
    };
    [
        claim("image space, the image loss beats DeePSiM", db.image < ds.image, db.image, ds.image),
        claim("image space, DeePSiM beats optimization", ds.image < mv.image, ds.image, mv.image),
        claim(
            "feature space, optimization beats DeePSiM",
            mv.feature < ds.feature,
            mv.feature,
            ds.feature,
        ),
        claim(
            "feature space, DeePSiM beats the image loss",
            ds.feature < db.feature,
            ds.feature,
            db.feature,
        ),
    ]
    .concat()
}

fn paper_table() -> String {
    let mut s = String::from("| method | conv5 | fc6 | fc7 | fc8 |\n|---|---|---|---|---|\n");
    for (method, cells) in PAPER {
        s.push_str(&format!("| {method} |"));
        for c in cells {
            let cell = match c {
                None => "−/−".to_owned(),
                Some((i, None)) => format!("{i}/−"),
                Some((i, Some(f))) => format!("{i}/{f}"),
            };
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s
}

pub fn run(args: &[String]) -> Result<()> {
    let Some(o) = parse(args)? else { return Ok(()) };
    let started = Instant::now();
    let bin = match o.bin {
        Some(b) => b,
        None => crate::build_deepsim(None)?,
    };
    let mut timings = Vec::new();
    let mut train = |config: &str, out: &str, steps: Option<u64>| -> Result<()> {
        let steps = match steps {
            Some(n) => n,
            None => config_steps(config)?,
        };
        let logged = logged_steps(out);
        if !(o.reuse && logged.0 == steps) {
            let _ = std::fs::remove_dir_all(out);
            let n = steps.to_string();
            deepsim(&bin, &["train", config, "--steps", &n])?;
        }
        let (last, seconds) = logged_steps(out);
        if last != steps {
            return Err(format!("{out}: logged {last} steps, expected {steps}").into());
        }
        timings.push((config.to_owned(), steps, seconds));
        Ok(())
    };
    for name in RUNS {
        train(&format!("configs/table2/{name}.toml"), &format!("{OUT}/{name}"), o.steps)?;
    }
    train("configs/cpu-vae.toml", "runs/cpu-vae", o.vae_steps.or(o.steps))?;
    let ckpt = |name: &str| format!("{OUT}/{name}/checkpoint.safetensors");

    let t = Instant::now();
    let mut eval_args: Vec<String> = vec!["eval".into()];
    for name in RUNS {
        eval_args.extend(["--checkpoint".into(), ckpt(name)]);
    }
    eval_args.extend(["--data", VAL, "--optim", "--out"].map(String::from));
    eval_args.push(format!("{OUT}/eval"));
    let table = deepsim(&bin, &eval_args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let eval_seconds = t.elapsed().as_secs_f64();
    let json = std::fs::read_to_string(format!("{OUT}/eval/table.json"))?;
    let evaluated = rows(&json)?;

    std::fs::create_dir_all(FIGURES)?;
    let shown: Vec<String> = SHOWN.iter().map(|f| format!("{VAL}/{f}")).collect();
    let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
    let fig = |name: &str| format!("{FIGURES}/{name}");
    let with = |mut a: Vec<String>, images: &[&str]| {
        a.extend(images.iter().map(|s| s.to_string()));
        a
    };
    let figure_commands: Vec<Vec<String>> = vec![
        with(
            [
                "ablation",
                "--checkpoint",
                &ckpt("conv5-image-loss"),
                "--checkpoint",
                &ckpt("conv5-no-feat"),
                "--checkpoint",
                &ckpt("conv5-no-adv"),
                "--checkpoint",
                &ckpt("conv5-deepsim"),
                "--out",
                &fig("ablation-conv5.png"),
            ]
            .map(String::from)
            .to_vec(),
            &shown,
        ),
        with(
            [
                "ablation",
                "--checkpoint",
                &ckpt("fc6-image-loss"),
                "--checkpoint",
                &ckpt("fc6-deepsim"),
                "--out",
                &fig("methods-fc6.png"),
            ]
            .map(String::from)
            .to_vec(),
            &shown,
        ),
        with(
            ["invert-optim", "--network", "alexnet-random", "--tap", "conv5", "--resize", "80"]
                .map(String::from)
                .into_iter()
                .chain(["--out".into(), format!("{OUT}/optim-conv5")])
                .collect(),
            &shown,
        ),
        with(
            ["reencode", "--checkpoint", &ckpt("fc6-deepsim"), "--out", &fig("reencode-fc6.png")]
                .map(String::from)
                .to_vec(),
            &shown[..6],
        ),
        with(
            [
                "interpolate",
                "--checkpoint",
                &ckpt("fc6-deepsim"),
                "--steps",
                "8",
                "--out",
                &fig("interpolation-fc6.png"),
            ]
            .map(String::from)
            .to_vec(),
            &[shown[4], shown[5]],
        ),
        with(
            [
                "neighbours",
                "--checkpoint",
                &ckpt("fc6-deepsim"),
                "--train",
                TRAIN,
                "--k",
                "4",
                "--out",
                &fig("neighbours-fc6.png"),
            ]
            .map(String::from)
            .to_vec(),
            &shown[..4],
        ),
        vec![
            "sample".into(),
            "--checkpoint".into(),
            "runs/cpu-vae/checkpoint.safetensors".into(),
            "--n".into(),
            "16".into(),
            "--out".into(),
            format!("{OUT}/vae-samples"),
        ],
    ];
    let mut neighbours_log = String::new();
    for args in &figure_commands {
        let out = deepsim(&bin, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        if args[0] == "neighbours" {
            neighbours_log = out;
        }
    }
    std::fs::copy(format!("{OUT}/optim-conv5/grid.png"), fig("optim-conv5.png"))?;
    std::fs::copy(format!("{OUT}/vae-samples/grid.png"), fig("vae-samples.png"))?;

    let total = started.elapsed().as_secs_f64();
    let mut doc = String::from("# Results: the paper's Table 2 at CPU scale\n\n");
    doc.push_str(&format!(
        "Written by `cargo xtask experiment table2{}{}{}` on {} in {:.1} minutes{}. Every \
         number below is from that run; rerunning the command reproduces it (every random \
         choice is drawn from the configs' seeds).\n\n",
        o.steps.map_or(String::new(), |s| format!(" --steps {s}")),
        o.vae_steps.map_or(String::new(), |s| format!(" --vae-steps {s}")),
        if o.reuse { " --reuse" } else { "" },
        machine(),
        total / 60.0,
        if o.reuse {
            " (with --reuse: runs already trained to their steps were kept, and their \
             training is not in this time; the training table gives their logged times)"
        } else {
            ""
        }
    ));
    doc.push_str(
        "**Setup.** AlexNet with random weights (torchvision layout, seeded) is inverted at \
         conv5 and fc6 from 64×64 crops of the demo set (`data/demo`: 362 training and 46 \
         validation tiles of public-domain photos): the paper's experiment, scaled from \
         ILSVRC-2012 at 227×227 with a trained AlexNet and 500,000 GPU steps to what a laptop \
         CPU trains in minutes. The three methods of the paper's Table 2 are the image-loss \
         inverter (Dosovitskiy & Brox), DeePSiM (feature + adversarial + image loss, with random \
         AlexNet's conv1 + conv2 as comparator) and inversion by optimization (Mahendran & \
         Vedaldi: Adam on the pixels with a total-variation prior, 200 steps). The runs are \
         the configurations under `configs/table2/`.\n\n",
    );
    doc.push_str(
        "## Training\n\nTime: the sum of the logged step times (`seconds` in each run's \
         `metrics.jsonl`).\n\n| run | steps | time |\n|---|---|---|\n",
    );
    for (config, steps, seconds) in &timings {
        doc.push_str(&format!("| `{config}` | {steps} | {seconds:.0} s |\n"));
    }
    doc.push_str(&format!(
        "\nEvaluation of the six inverters and the optimization baseline: {eval_seconds:.0} s.\n\n"
    ));
    doc.push_str("## Table 2, ours\n\n");
    doc.push_str(table.trim_end());
    doc.push_str("\n\n## Table 2, the paper's (ILSVRC-2012, trained AlexNet, 227×227)\n\n");
    doc.push_str(&paper_table());
    doc.push_str(
        "\n## Which of the paper's orderings hold here\n\nThe paper: \"The method of \
         Mahendran&Vedaldi performs well in feature space, but not in image space, the method of \
         Dosovitskiy&Brox — vice versa. The presented approach is fairly good on both \
         metrics.\" As four comparisons between the full DeePSiM run and the two baselines:\n\n",
    );
    for layer in ["conv5", "fc6"] {
        doc.push_str(&orderings(&evaluated, layer));
    }
    doc.push_str(
        "\nThe scale differs from the paper's in ways that bear on these comparisons: the \
         encoder's weights are random, not trained; at 64×64 its conv5 keeps 3×3 positions \
         (the paper's 227×227 keeps 13×13 before pooling); and a thousand CPU steps train the \
         discriminator far less than the paper's 500,000.\n\n",
    );
    doc.push_str(
        "## Figures\n\n\
         **Loss terms side by side (Fig. 1), conv5.** Rows: validation tiles; image loss; \
         adversarial + image (no feature term); feature + image (no adversarial term); all \
         three.\n\n![ablation](results/ablation-conv5.png)\n\n\
         **Methods at fc6.** Rows: validation tiles; image loss; DeePSiM.\n\n\
         ![fc6](results/methods-fc6.png)\n\n\
         **Inversion by optimization, conv5** (Mahendran & Vedaldi). Rows: validation tiles; \
         reconstructions.\n\n![optimization](results/optim-conv5.png)\n\n\
         **Iterative re-encoding (Fig. 5), fc6 DeePSiM.** Rows: the tiles, then after 1, 2, 4 \
         and 8 rounds of encoding and reconstructing.\n\n\
         ![re-encoding](results/reencode-fc6.png)\n\n\
         **Interpolation in fc6 space (Fig. 7).** The two tiles at the ends, eight codes \
         evenly spaced between their features decoded in between.\n\n\
         ![interpolation](results/interpolation-fc6.png)\n\n\
         **Nearest neighbours (supplementary), fc6.** Each row: a validation tile, its \
         reconstruction, its four nearest training tiles in image space, then its four \
         nearest in fc6 space.\n\n![neighbours](results/neighbours-fc6.png)\n\n",
    );
    doc.push_str(&format!("Neighbours, by name:\n\n```\n{}```\n\n", neighbours_log));
    doc.push_str(
        "**VAE samples (Fig. 8)** from `configs/cpu-vae.toml` (latent 128, the DeePSiM loss \
         with λ_KL 1e-4; steps in the training table), drawn from its prior with seed 0.\n\n\
         ![VAE samples](results/vae-samples.png)\n",
    );
    let doc = with_discussion(doc, &std::fs::read_to_string("docs/RESULTS.md").unwrap_or_default());
    deepsim_data::write_atomic(Path::new("docs/RESULTS.md"), doc.as_bytes())?;
    println!("{table}");
    println!("→ docs/RESULTS.md and {FIGURES}/ ({:.1} minutes)", total / 60.0);
    Ok(())
}

/// The heading of the hand-written discussion in `docs/RESULTS.md`.
const DISCUSSION: &str = "## In words";

/// `doc` with the hand-written discussion of `previous` (from its [`DISCUSSION`] heading to
/// the next heading) inserted before the figures: a rerun keeps the words, which the reader is
/// told to check against the new numbers.
fn with_discussion(doc: String, previous: &str) -> String {
    let Some(start) = previous.find(DISCUSSION) else { return doc };
    let rest = &previous[start + DISCUSSION.len()..];
    let end = rest.find("\n## ").map_or(previous.len(), |i| start + DISCUSSION.len() + i + 1);
    let section = previous[start..end].trim_end();
    match doc.find("## Figures") {
        Some(at) => format!("{}{section}\n\n{}", &doc[..at], &doc[at..]),
        None => format!("{doc}\n{section}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discussion_survives_a_rerun() {
        let doc = "# R\n\n## Table\n\nnew numbers\n\n## Figures\n\nfig\n".to_string();
        let old =
            "# R\n\n## Table\n\nold\n\n## In words\n\nDeePSiM wins.\n\n## Figures\n\nold fig\n";
        assert_eq!(
            with_discussion(doc.clone(), old),
            "# R\n\n## Table\n\nnew numbers\n\n## In words\n\nDeePSiM wins.\n\n## Figures\n\nfig\n"
        );
        assert_eq!(with_discussion(doc.clone(), "no discussion"), doc);
        // A discussion at the end of the old file.
        let old = "## In words\n\nlast.\n";
        assert!(with_discussion(doc, old).contains("## In words\n\nlast.\n\n## Figures"));
    }
}
