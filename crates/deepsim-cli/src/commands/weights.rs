//! `deepsim weights`: where each architecture's converted weights resolve.

use std::path::PathBuf;

use anyhow::Result;
use deepsim_comparators::weights::{self, Arch};
use serde::Serialize;

/// The converted weights each architecture would load, and from where: `explicit` never
/// (that is `--weights`), else the cache (`$DEEPSIM_HOME/weights`), else the copy that
/// ships with the repository; for the missing ones, the command that converts them.
#[derive(clap::Args)]
pub struct WeightsArgs {
    /// Print JSON (one object per architecture).
    #[arg(long)]
    json: bool,
}

/// One row of `deepsim weights --json`.
#[derive(Serialize)]
struct WeightsRow {
    arch: &'static str,
    /// `cache` or `shipped` where found, else `missing`.
    origin: &'static str,
    /// The file found, or where the cache would hold it.
    path: PathBuf,
    /// The command that makes the file, when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    convert: Option<String>,
}

impl WeightsArgs {
    pub fn run(self) -> Result<()> {
        let rows: Vec<WeightsRow> = Arch::ALL
            .into_iter()
            .filter(|a| *a != Arch::Raw)
            .map(|arch| match weights::locate(arch, None) {
                Ok((origin, path)) => {
                    WeightsRow { arch: arch.name(), origin: origin.name(), path, convert: None }
                }
                Err(_) => WeightsRow {
                    arch: arch.name(),
                    origin: "missing",
                    path: weights::cached_path(arch),
                    convert: Some(arch.convert_command()),
                },
            })
            .collect();
        if self.json {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            std::io::Write::write_all(&mut out, b"\n")?;
            return Ok(());
        }
        for r in &rows {
            match &r.convert {
                None => println!("{:<20} {:<8} {}", r.arch, r.origin, r.path.display()),
                Some(cmd) => println!("{:<20} {:<8} {cmd}", r.arch, r.origin),
            }
        }
        Ok(())
    }
}
