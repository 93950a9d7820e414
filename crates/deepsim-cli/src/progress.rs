//! Training runs with a progress bar, stopped after the current step by Ctrl-C, SIGTERM or
//! SIGHUP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use deepsim_train::{StepLog, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

/// Raised by Ctrl-C, SIGTERM or SIGHUP (a scheduler ending the job, a closed terminal): the
/// trainer checkpoints and stops after the current step.
fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // A second Ctrl-C while stopping ends the process at once.
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step (Ctrl-C again to quit at once)…");
        });
        flag
    })
    .clone()
}

fn terms_message(log: &StepLog) -> String {
    log.terms.iter().map(|(k, v)| format!("{k} {v:.3e}")).collect::<Vec<_>>().join("  ")
}

/// Runs `trainer` to its configured steps with a progress bar; returns whether it finished.
pub fn run_with_bar(trainer: &mut Trainer, label: &str) -> Result<bool> {
    let total = trainer.config().run.steps;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {bar:24} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar.set_position(trainer.step_count());
    let stop = stop_flag();
    let result = trainer.run(&stop, &mut |log| {
        bar.set_position(log.step);
        bar.set_message(terms_message(log));
    });
    bar.finish();
    result?;
    Ok(trainer.step_count() >= total)
}
