//! `cargo xtask experiment table2`: the paper's Table 2 on a trained network at CPU scale,
//! trained and evaluated from scratch, written up in `docs/RESULTS.md` with its figures in
//! `docs/results/`.
//!
//! It builds the `deepsim` binary, trains the inverters of `configs/table2/` (EfficientNet-Lite0
//! at a shallow and a deep block, image loss and DeePSiM, each depth from one image-loss
//! warm-up; the comparator study at the deep block) on the tiles `cargo xtask fetch-data`
//! cuts, and the CPU VAE; runs `deepsim eval --optim` on the tiles of the held-out photos
//! (which adds Mahendran & Vedaldi's inversion by optimization); draws the figures with the
//! `deepsim` figure commands; and writes the results with the machine, the commands and the
//! time each step took. `experiment latent-probe` (module `latent_probe`) owns a section of
//! the same file, which a table2 rerun keeps.

use std::collections::BTreeSet;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub(crate) type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The experiments.
#[derive(clap::Subcommand, Debug)]
pub enum Experiment {
    /// Trains the runs of configs/table2/ and configs/cpu-vae.toml on the tiles that `cargo
    /// xtask fetch-data` writes to target/data/tiles, evaluates them on the tiles of the
    /// held-out photos with the optimization baseline, draws the figures into docs/results/
    /// and writes docs/RESULTS.md. About an hour on 2 CPU cores.
    Table2(Options),
    /// The latent code ("beyond mimicry"): Fashion-MNIST VAEs trained with the image loss and
    /// with the DeePSiM loss (configs/latent-probe/), several seeds each, then a linear
    /// classifier on each frozen encoder's codes, beside raw pixels and untrained encoders;
    /// writes its section of docs/RESULTS.md. About 25 minutes on 2 CPU cores.
    LatentProbe(crate::latent_probe::Options),
    /// ×4 super-resolution (configs/superres/): the image loss, DeePSiM, and DeePSiM with the
    /// perceptual cycle term, trained on data/photos/train and judged on the held-out tiles
    /// (PSNR, SSIM, ST-LPIPS-alex against bicubic, a grid) into docs/results/superres/.
    Superres(crate::superres::Options),
}

/// Options of `experiment table2`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Override every run's steps (a quick check; RESULTS.md records it).
    #[arg(long)]
    steps: Option<u64>,
    /// Override the VAE's steps only (configs/cpu-vae.toml: 3000).
    #[arg(long)]
    vae_steps: Option<u64>,
    /// Keep a run whose metrics.jsonl already reaches its steps instead of training it again
    /// (its time is still the sum of its logged step times); a run is retrained whenever the
    /// warm-up it starts from was.
    #[arg(long)]
    reuse: bool,
    /// Use this deepsim binary instead of building target/release/deepsim.
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// The shallow and the deep layer inverted (EfficientNet-Lite0 blocks: 24 channels at a
/// quarter of the side, 112 channels at a sixteenth).
const LAYERS: [&str; 2] = ["block2", "block10"];

/// The runs of `configs/table2/`, in training order; `<layer>-warmup` comes first at each
/// depth, the others start from it.
const RUNS: [&str; 8] = [
    "block2-warmup",
    "block2-image-loss",
    "block2-deepsim",
    "block10-warmup",
    "block10-image-loss",
    "block10-deepsim",
    "block10-random-alexnet",
    "block10-no-feat",
];

/// The methods as `deepsim eval` names them.
const IMAGE_LOSS: &str = "image loss";
const DEEPSIM: &str = "DeePSiM efficientnet-lite0 block0+block2";
const RANDOM: &str = "DeePSiM alexnet-random conv1+conv2";
const NO_FEAT: &str = "DeePSiM, no feat";
const OPTIM: &str = "Mahendran & Vedaldi (optimization)";

const VAL: &str = "target/data/tiles/val";
const TRAIN: &str = "target/data/tiles/train";
const OUT: &str = "runs/table2";
const FIGURES: &str = "docs/results";

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

/// Runs `bin args`, echoing the command; its stdout.
pub(crate) fn deepsim(bin: &Path, args: &[&str]) -> Result<String> {
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
pub(crate) fn config_steps(config: &str) -> Result<u64> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{config}: {e}"))?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| format!("{config}: {e}"))?;
    value
        .get("run")
        .and_then(|r| r.get("steps"))
        .and_then(toml::Value::as_integer)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("{config}: no run.steps").into())
}

/// The last step a run logged and the sum of its logged step times (0, 0 without a log).
pub(crate) fn logged_steps(out: &str) -> (u64, f64) {
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
pub(crate) fn machine() -> String {
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
    /// ST-LPIPS-alex to the originals (absent when its weights were missing).
    perceptual: Option<f64>,
    edge: f64,
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
                perceptual: r["perceptual"].as_f64(),
                edge: r["edge_ratio"].as_f64().ok_or("table.json: no edge_ratio")?,
            })
        })
        .collect()
}

fn find<'a>(rows: &'a [Row], layer: &str, method: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.layer == layer && r.method == method)
}

/// "**holds** (ours a against b)" for a claim that `a` is below `b`, in `unit`.
fn claim(text: &str, a: f64, b: f64, percent: bool) -> String {
    let show = |v: f64| if percent { format!("{:.1} %", v * 100.0) } else { format!("{v:.3}") };
    format!(
        "- {text}: **{}** (ours {} against {}).\n",
        if a < b { "holds" } else { "does not hold" },
        show(a),
        show(b)
    )
}

/// The paper's four orderings (Table 2 and §4.1's text) checked on our numbers at `layer`,
/// and the one it shows in pictures (DeePSiM's reconstructions closer to the images than the
/// image loss's), measured by ST-LPIPS.
fn orderings(rows: &[Row], layer: &str) -> String {
    let (Some(mv), Some(db), Some(ds)) =
        (find(rows, layer, OPTIM), find(rows, layer, IMAGE_LOSS), find(rows, layer, DEEPSIM))
    else {
        return format!("- {layer}: not every method was evaluated at this layer.\n");
    };
    let mut s = [
        claim(
            &format!("{layer}, image space, the image loss beats DeePSiM"),
            db.image,
            ds.image,
            true,
        ),
        claim(
            &format!("{layer}, image space, DeePSiM beats optimization"),
            ds.image,
            mv.image,
            true,
        ),
        claim(
            &format!("{layer}, feature space, optimization beats DeePSiM"),
            mv.feature,
            ds.feature,
            true,
        ),
        claim(
            &format!("{layer}, feature space, DeePSiM beats the image loss"),
            ds.feature,
            db.feature,
            true,
        ),
    ]
    .concat();
    if let (Some(a), Some(b)) = (ds.perceptual, db.perceptual) {
        s.push_str(&claim(
            &format!(
                "{layer}, ST-LPIPS-alex, DeePSiM's reconstructions closer than the image loss's"
            ),
            a,
            b,
            false,
        ));
    }
    s
}

/// The comparator study (the paper's Fig. 6) at `layer`: a table of the DeePSiM variants and
/// the image loss, and the paper's ordering (the trained comparator best) checked by
/// ST-LPIPS.
fn comparator_study(rows: &[Row], layer: &str) -> String {
    let variants = [
        (DEEPSIM, "trained EfficientNet-Lite0 block0 + block2"),
        (RANDOM, "AlexNet with random weights, conv1 + conv2"),
        (NO_FEAT, "none (adversarial + image loss)"),
        (IMAGE_LOSS, "none, no discriminator (image loss)"),
    ];
    let mut s = String::from(
        "| comparator | image error | feature error | ST-LPIPS-alex | edge ratio |\n|---|---|---|---|---|\n",
    );
    for (method, words) in variants {
        if let Some(r) = find(rows, layer, method) {
            s.push_str(&format!(
                "| {words} | {:.1} % | {:.1} % | {} | {:.2} |\n",
                r.image * 100.0,
                r.feature * 100.0,
                r.perceptual.map_or("−".into(), |p| format!("{p:.3}")),
                r.edge
            ));
        }
    }
    s.push('\n');
    let trained = find(rows, layer, DEEPSIM).and_then(|r| r.perceptual);
    for (method, words) in [(RANDOM, "random AlexNet"), (NO_FEAT, "no feature term")] {
        if let (Some(a), Some(b)) = (trained, find(rows, layer, method).and_then(|r| r.perceptual))
        {
            s.push_str(&claim(
                &format!("{layer}, ST-LPIPS-alex, the trained comparator beats {words}"),
                a,
                b,
                false,
            ));
        }
    }
    s
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

/// The image files of `dir`, sorted by name.
fn images_in(dir: &str) -> Vec<String> {
    crate::fetch_data::files_under(Path::new(dir))
        .into_iter()
        .filter(|p| crate::fetch_data::is_photo_name(p))
        .map(|p| p.display().to_string())
        .collect()
}

/// `n` of `files`, evenly spaced, the first included.
fn spread(files: &[String], n: usize) -> Vec<&str> {
    let step = (files.len() / n).max(1);
    files.iter().step_by(step).take(n).map(String::as_str).collect()
}

/// Runs the experiment.
pub fn run(experiment: Experiment) -> Result<()> {
    match experiment {
        Experiment::Table2(o) => table2(o),
        Experiment::LatentProbe(o) => crate::latent_probe::run(o),
        Experiment::Superres(o) => crate::superres::run(o),
    }
}

/// Runs `experiment table2`.
fn table2(o: Options) -> Result<()> {
    let started = Instant::now();
    let (train_tiles, val_tiles) = (images_in(TRAIN), images_in(VAL));
    if train_tiles.is_empty() || val_tiles.len() < 8 {
        return Err(format!(
            "{TRAIN} has {} tiles and {VAL} {}: run `cargo xtask fetch-data` first",
            train_tiles.len(),
            val_tiles.len()
        )
        .into());
    }
    let bin = match o.bin {
        Some(b) => b,
        None => crate::build_deepsim(None)?,
    };
    let mut timings = Vec::new();
    // Runs trained in this invocation: a run whose warm-up is among them is trained again.
    let mut trained: BTreeSet<String> = BTreeSet::new();
    let mut reused = 0;
    let mut train =
        |config: &str, out: &str, init: Option<&str>, steps: Option<u64>| -> Result<()> {
            let steps = match steps {
                Some(n) => n,
                None => config_steps(config)?,
            };
            let logged = logged_steps(out);
            let stale = init.is_some_and(|i| trained.contains(i));
            if !(o.reuse && logged.0 == steps && !stale) {
                let _ = std::fs::remove_dir_all(out);
                let n = steps.to_string();
                deepsim(&bin, &["train", config, "--steps", &n])?;
                trained.insert(out.to_owned());
            } else {
                reused += 1;
            }
            let (last, seconds) = logged_steps(out);
            if last != steps {
                return Err(format!("{out}: logged {last} steps, expected {steps}").into());
            }
            timings.push((config.to_owned(), steps, seconds));
            Ok(())
        };
    for name in RUNS {
        let warmup = name.split_once('-').map(|(layer, _)| format!("{OUT}/{layer}-warmup"));
        let init = warmup.as_deref().filter(|w| !w.ends_with(name));
        train(&format!("configs/table2/{name}.toml"), &format!("{OUT}/{name}"), init, o.steps)?;
    }
    train("configs/cpu-vae.toml", "runs/cpu-vae", None, o.vae_steps.or(o.steps))?;
    let ckpt = |name: &str| format!("{OUT}/{name}/checkpoint.safetensors");

    let t = Instant::now();
    let mut eval_args: Vec<String> = vec!["eval".into()];
    for name in RUNS.iter().filter(|n| !n.ends_with("-warmup")) {
        eval_args.extend(["--checkpoint".into(), ckpt(name)]);
    }
    eval_args.extend(["--data", VAL, "--optim", "--out"].map(String::from));
    eval_args.push(format!("{OUT}/eval"));
    let table = deepsim(&bin, &eval_args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let eval_seconds = t.elapsed().as_secs_f64();
    let json = std::fs::read_to_string(format!("{OUT}/eval/table.json"))?;
    let evaluated = rows(&json)?;

    std::fs::create_dir_all(FIGURES)?;
    let shown = spread(&val_tiles, 8);
    let fig = |name: &str| format!("{FIGURES}/{name}");
    let with = |a: &[&str], images: &[&str]| -> Vec<String> {
        a.iter().chain(images).map(|s| s.to_string()).collect()
    };
    let (deep, shallow) = (LAYERS[1], LAYERS[0]);
    let run_of = |method: &str, layer: &str| ckpt(&format!("{layer}-{method}"));
    let figure_commands: Vec<Vec<String>> = vec![
        with(
            &[
                "ablation",
                "--checkpoint",
                &run_of("image-loss", shallow),
                "--checkpoint",
                &run_of("deepsim", shallow),
                "--out",
                &fig(&format!("methods-{shallow}.png")),
            ],
            &shown,
        ),
        with(
            &[
                "ablation",
                "--checkpoint",
                &run_of("image-loss", deep),
                "--checkpoint",
                &run_of("no-feat", deep),
                "--checkpoint",
                &run_of("random-alexnet", deep),
                "--checkpoint",
                &run_of("deepsim", deep),
                "--out",
                &fig(&format!("comparators-{deep}.png")),
            ],
            &shown,
        ),
        with(
            &[
                "invert-optim",
                "--network",
                "efficientnet-lite0",
                "--tap",
                deep,
                "--size",
                "96",
                "--resize",
                "108",
                "--out",
                &format!("{OUT}/optim-{deep}"),
            ],
            &shown,
        ),
        with(
            &[
                "reencode",
                "--checkpoint",
                &run_of("deepsim", deep),
                "--out",
                &fig(&format!("reencode-{deep}.png")),
            ],
            &shown[..6],
        ),
        with(
            &[
                "interpolate",
                "--checkpoint",
                &run_of("deepsim", deep),
                "--steps",
                "8",
                "--out",
                &fig(&format!("interpolation-{deep}.png")),
            ],
            &[shown[1], shown[5]],
        ),
        with(
            &[
                "neighbours",
                "--checkpoint",
                &run_of("deepsim", deep),
                "--train",
                TRAIN,
                "--k",
                "4",
                "--out",
                &fig(&format!("neighbours-{deep}.png")),
            ],
            &shown[..4],
        ),
        with(
            &[
                "sample",
                "--checkpoint",
                "runs/cpu-vae/checkpoint.safetensors",
                "--n",
                "16",
                "--out",
                &format!("{OUT}/vae-samples"),
            ],
            &[],
        ),
    ];
    let mut neighbours_log = String::new();
    for args in &figure_commands {
        let out = deepsim(&bin, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        if args[0] == "neighbours" {
            neighbours_log = out;
        }
    }
    std::fs::copy(format!("{OUT}/optim-{deep}/grid.png"), fig(&format!("optim-{deep}.png")))?;
    std::fs::copy(format!("{OUT}/vae-samples/grid.png"), fig("vae-samples.png"))?;
    let shown_names: Vec<&str> = shown.iter().map(|s| s.rsplit('/').next().unwrap_or(s)).collect();

    let total = started.elapsed().as_secs_f64();
    let mut doc =
        String::from("# Results: the paper's Table 2 on a trained network, at CPU scale\n\n");
    doc.push_str(&format!(
        "Written by `cargo xtask experiment table2{}{}{}` on {} in {:.1} minutes{}, after \
         `cargo xtask fetch-data`. Every number below is from that run; rerunning the commands \
         reproduces it (every random choice is drawn from the configs' seeds).\n\n",
        o.steps.map_or(String::new(), |s| format!(" --steps {s}")),
        o.vae_steps.map_or(String::new(), |s| format!(" --vae-steps {s}")),
        if o.reuse { " --reuse" } else { "" },
        machine(),
        total / 60.0,
        if reused > 0 {
            format!(
                " ({reused} runs already trained to their steps were kept (--reuse), and their \
                 training is not in this time; the training table gives their logged times)"
            )
        } else {
            String::new()
        }
    ));
    doc.push_str(&format!(
        "**Setup.** EfficientNet-Lite0 with its ImageNet weights (the file that ships in \
         `data/weights`) is inverted from 96×96 crops at two depths: `{shallow}` (24 channels at \
         24×24, a quarter of the side) and `{deep}` (112 channels at 6×6, a sixteenth: AlexNet's \
         conv5 has the same stride). Training data: {} tiles of the photos `cargo xtask \
         fetch-data` gathers from Debian packages (scikit-image, OpenCV, MATE backgrounds); \
         evaluation: {} tiles of the photos it holds out (one in eight by name, plus chelsea and \
         coffee), which no run saw. The methods of the paper's Table 2 are the image-loss \
         inverter (Dosovitskiy & Brox), DeePSiM (feature + adversarial + image loss, the same \
         network's block0 + block2 as comparator, the demo's recipe: docs/DEMO.md) and \
         inversion by optimization (Mahendran & Vedaldi: Adam on the pixels with a \
         total-variation prior, 200 steps). At each depth the runs start from one image-loss \
         warm-up and differ in the loss alone. The paper's comparator study (its Fig. 6, at \
         fc6) is done at `{deep}`. The runs are the configurations under `configs/table2/`; the \
         paper trained on ILSVRC-2012 at 227×227 for 500,000 GPU steps, these runs take \
         hundreds of CPU steps.\n\n",
        train_tiles.len(),
        val_tiles.len()
    ));
    doc.push_str(
        "## Training\n\nTime: the sum of the logged step times (`seconds` in each run's \
         `metrics.jsonl`).\n\n| run | steps | time |\n|---|---|---|\n",
    );
    for (config, steps, seconds) in &timings {
        doc.push_str(&format!("| `{config}` | {steps} | {seconds:.0} s |\n"));
    }
    doc.push_str(&format!(
        "\nEvaluation of the six inverters and the optimization baseline at both layers: \
         {eval_seconds:.0} s.\n\n"
    ));
    doc.push_str("## Table 2, ours\n\n");
    doc.push_str(table.trim_end());
    doc.push_str("\n\n## Table 2, the paper's (ILSVRC-2012, trained AlexNet, 227×227)\n\n");
    doc.push_str(&paper_table());
    doc.push_str(
        "\n## Which of the paper's orderings hold here\n\nThe paper: \"The method of \
         Mahendran&Vedaldi performs well in feature space, but not in image space, the method of \
         Dosovitskiy&Brox — vice versa. The presented approach is fairly good on both \
         metrics.\" As four comparisons between the full DeePSiM run and the two baselines at \
         each depth, and the claim its figures make (DeePSiM's reconstructions look more like \
         the images), measured by ST-LPIPS-alex, a network no run trains against:\n\n",
    );
    for layer in LAYERS {
        doc.push_str(&orderings(&evaluated, layer));
    }
    doc.push_str(&format!(
        "\n## Different comparators (the paper's Fig. 6), at {deep}\n\nThe paper: \"While the \
         AlexNet CONV5 comparator provides best reconstructions, other networks preserve key \
         image features as well.\" The DeePSiM run with the comparator swapped or removed, \
         everything else equal:\n\n"
    ));
    doc.push_str(&comparator_study(&evaluated, deep));
    doc.push_str(&format!(
        "\n## Figures\n\nThe validation tiles shown: {}.\n\n\
         **Methods at {shallow}.** Rows: validation tiles; image loss; DeePSiM.\n\n\
         ![{shallow}](results/methods-{shallow}.png)\n\n\
         **Comparators at {deep} (Fig. 6).** Rows: validation tiles; image loss; no feature \
         term; random AlexNet as comparator; trained EfficientNet-Lite0 as comparator.\n\n\
         ![{deep}](results/comparators-{deep}.png)\n\n\
         **Inversion by optimization, {deep}** (Mahendran & Vedaldi). Rows: validation tiles; \
         reconstructions.\n\n![optimization](results/optim-{deep}.png)\n\n\
         **Iterative re-encoding (Fig. 5), {deep} DeePSiM.** Rows: the tiles, then after 1, 2, \
         4 and 8 rounds of encoding and reconstructing.\n\n\
         ![re-encoding](results/reencode-{deep}.png)\n\n\
         **Interpolation in {deep} space (Fig. 7).** The two tiles at the ends, eight codes \
         evenly spaced between their features decoded in between.\n\n\
         ![interpolation](results/interpolation-{deep}.png)\n\n\
         **Nearest neighbours (supplementary), {deep}.** Each row: a validation tile, its \
         reconstruction, its four nearest training tiles in image space, then its four \
         nearest in {deep} space.\n\n![neighbours](results/neighbours-{deep}.png)\n\n",
        shown_names.join(", ")
    ));
    doc.push_str(&format!("Neighbours, by name:\n\n```\n{}```\n\n", neighbours_log));
    doc.push_str(
        "**VAE samples (Fig. 8)** from `configs/cpu-vae.toml` (latent 128, the DeePSiM loss \
         with λ_KL 1e-4; steps in the training table), drawn from its prior with seed 0.\n\n\
         ![VAE samples](results/vae-samples.png)\n",
    );
    let previous = std::fs::read_to_string("docs/RESULTS.md").unwrap_or_default();
    let doc = crate::latent_probe::with_latent_section(with_discussion(doc, &previous), &previous);
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

    /// `deepsim eval`'s table.json, cut down to what the report reads.
    fn table(rows: &[(&str, &str, f64, f64, Option<f64>)]) -> Vec<Row> {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|&(method, layer, image, feature, perceptual)| {
                serde_json::json!({
                    "method": method, "layer": layer, "image_error": image,
                    "feature_error": feature, "perceptual": perceptual, "edge_ratio": 1.0,
                    "source": "x", "seconds": 0.5,
                })
            })
            .collect();
        super::rows(&serde_json::json!({ "rows": rows }).to_string()).unwrap()
    }

    #[test]
    fn orderings_read_the_right_rows() {
        // The paper's pattern at block2; the reverse of each at block10. The random-comparator
        // row must not be taken for the DeePSiM row although its name starts alike.
        let rows = table(&[
            (IMAGE_LOSS, "block2", 0.30, 0.60, Some(0.20)),
            (RANDOM, "block2", 0.90, 0.01, Some(0.01)),
            (DEEPSIM, "block2", 0.35, 0.50, Some(0.15)),
            (OPTIM, "block2", 0.70, 0.20, None),
            (IMAGE_LOSS, "block10", 0.50, 0.40, Some(0.10)),
            (DEEPSIM, "block10", 0.40, 0.50, Some(0.20)),
            (OPTIM, "block10", 0.30, 0.60, Some(0.30)),
        ]);
        let shallow = orderings(&rows, "block2");
        assert_eq!(shallow.matches("**holds**").count(), 5, "{shallow}");
        assert!(
            shallow.contains("image loss beats DeePSiM: **holds** (ours 30.0 % against 35.0 %)")
        );
        assert!(
            shallow.contains("closer than the image loss's: **holds** (ours 0.150 against 0.200)")
        );
        let deep = orderings(&rows, "block10");
        assert_eq!(deep.matches("**does not hold**").count(), 5, "{deep}");
        assert!(orderings(&rows, "block4").contains("not every method"));
    }

    #[test]
    fn the_comparator_study_ranks_by_the_independent_metric() {
        let rows = table(&[
            (DEEPSIM, "block10", 0.40, 0.50, Some(0.12)),
            (RANDOM, "block10", 0.41, 0.52, Some(0.10)),
            (NO_FEAT, "block10", 0.42, 0.55, Some(0.16)),
            (IMAGE_LOSS, "block10", 0.39, 0.56, Some(0.17)),
        ]);
        let s = comparator_study(&rows, "block10");
        assert!(
            s.contains(
                "| AlexNet with random weights, conv1 + conv2 | 41.0 % | 52.0 % | 0.100 | 1.00 |"
            ),
            "{s}"
        );
        assert!(
            s.contains("beats random AlexNet: **does not hold** (ours 0.120 against 0.100)"),
            "{s}"
        );
        assert!(s.contains("beats no feature term: **holds** (ours 0.120 against 0.160)"), "{s}");
        assert_eq!(s.matches("\n| ").count(), 4, "{s}");
    }

    #[test]
    fn figures_show_tiles_spread_over_the_set() {
        let files: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
        assert_eq!(spread(&files, 4), ["t00", "t05", "t10", "t15"]);
        assert_eq!(spread(&files[..3], 8), ["t00", "t01", "t02"]);
    }
}
