//! A DeePSiM inversion run at toy size, a few steps long, with nothing to download: random
//! AlexNet's conv5 inverted on the repository's demo tiles (`data/demo`) by the CPU generator
//! preset, with the feature, adversarial and image terms; prints every step's terms.
//!
//!     cargo run --release -p deepsim-train --example tiny_run -- [STEPS]
//!
//! STEPS is 10 by default. The run directory is a fresh temporary one, removed at the end.

// ANCHOR: readme
use deepsim_train::{TrainConfig, Trainer};

/// The configuration of `configs/*.toml`, shrunk: 64×64 crops of `data`'s `train` and `val`
/// folders, batches of 8, the generator and discriminator at an eighth of their width.
fn config(data: &str, out: &str, steps: u64) -> deepsim_train::Result<TrainConfig> {
    TrainConfig::from_toml(&format!(
        r#"
        [run]
        out = {out:?}
        steps = {steps}
        seed = 1
        [data]
        train = "{data}/train"
        val = "{data}/val"
        resize = 80
        crop = 64
        batch_size = 8
        workers = 2
        [encoder]
        network = "alexnet-random"
        tap = "conv5"
        [generator]
        preset = "cpu_64"
        width = 0.125
        [discriminator]
        width = 0.125
        [loss]
        comparator = "alexnet-random"
        comparator_tap = "conv5"
        feature_norm = "mean"
        lambda_feat = 2000.0
        lambda_adv = 0.01
        lambda_img = 0.00008
        "#
    ))
}
// ANCHOR_END: readme

/// The example's errors: deepsim-train's, or a message for the user.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let steps = match std::env::args().nth(1) {
        Some(a) => {
            a.parse::<u64>().map_err(|e| format!("STEPS must be a number, got {a:?}: {e}"))?
        }
        None => 10,
    };
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/demo");
    let out = std::env::temp_dir().join(format!("deepsim-tiny-run-{}", std::process::id()));
    let out_str = out.to_str().ok_or("the temporary directory's path is not UTF-8")?;
    let mut trainer = Trainer::new(config(data, out_str, steps)?)?;
    println!("{}", trainer.config().method());
    let result = (0..steps).try_for_each(|_| -> Result<()> {
        let log = trainer.step()?;
        let terms: Vec<String> = log.terms.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("step {:>3} ({:.2} s): {}", log.step, log.seconds, terms.join(", "));
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&out);
    result
}
