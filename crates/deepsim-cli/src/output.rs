//! Files out: the names of per-image outputs, their folders, and PNG grids of image rows; and
//! errors as the user reads them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle::Tensor;
use deepsim_train::write_grid;

/// The file stem of `path` (`image` when it has none).
pub fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

/// The names (without `.png`) of the per-image files a command writes beside `grid.png`: each
/// input's stem, with `_` appended until it differs from `grid` and from every earlier name
/// (`a/x.png` and `b/x.jpg` become `x` and `x_`; an input named `grid.png` becomes `grid_`).
pub fn output_names(images: &[PathBuf]) -> Vec<String> {
    let mut taken = std::collections::HashSet::from(["grid".to_owned()]);
    images
        .iter()
        .map(|path| {
            let mut name = stem(path);
            while !taken.insert(name.clone()) {
                name.push('_');
            }
            name
        })
        .collect()
}

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Creates the folder `out` goes in, if it names one.
pub fn create_parent(out: &Path) -> Result<()> {
    match out.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => create_dir(dir),
        None => Ok(()),
    }
}

/// Writes `rows` (each `[n, 3, s, s]`) as one PNG, creating its folder.
pub fn write_png_rows(out: &Path, rows: &[Tensor]) -> Result<()> {
    create_parent(out)?;
    write_grid(out, &rows.iter().collect::<Vec<_>>())?;
    Ok(())
}

/// An error and its causes on one line, `outer: cause: …`, each message once: our crates'
/// errors name the file and repeat the operating system's message in their own text, which is
/// also their source, so a plain `{:#}` would print `x: Is a directory (os error 21): Is a
/// directory (os error 21)`.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_image_files_never_overwrite_the_grid_or_each_other() {
        let paths: Vec<PathBuf> =
            ["a/grid.png", "a/x.png", "b/x.jpg", "c/x_.png", "y.png"].map(PathBuf::from).into();
        assert_eq!(output_names(&paths), ["grid_", "x", "x_", "x__", "y"]);
    }

    #[test]
    fn each_cause_is_said_once() {
        let os = std::io::Error::from_raw_os_error(21);
        let said = os.to_string();
        let e = anyhow::Error::from(deepsim_data::Error::Io { path: "runs/x".into(), source: os })
            .context("opening data");
        assert_eq!(error_chain(&e), format!("opening data: runs/x: {said}"));
        // A cause that adds something new is kept.
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
