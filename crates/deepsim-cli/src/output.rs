//! Files out: the names of per-image outputs, their folders, and PNG grids of image rows.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_image_files_never_overwrite_the_grid_or_each_other() {
        let paths: Vec<PathBuf> =
            ["a/grid.png", "a/x.png", "b/x.jpg", "c/x_.png", "y.png"].map(PathBuf::from).into();
        assert_eq!(output_names(&paths), ["grid_", "x", "x_", "x__", "y"]);
    }
}
