//! `cargo xtask fetch-data`: builds a larger local image set and Fashion-MNIST from Debian
//! packages (`apt-get download` + `dpkg-deb -x`), without committing any of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Downloads four Debian packages (about 175 MB) and builds, in --out:
///
/// - photos/train, photos/val: natural photos: scikit-image's sample photos (python3-skimage),
///   OpenCV's example photos (opencv-doc), MATE's nature backgrounds (mate-backgrounds,
///   GPL-2+: for local use, never commit them); one in eight files, chosen by name, goes to
///   val, and so do scikit-image's chelsea and coffee (the demo's held-out photos);
/// - tiles/train, tiles/val: 144×144 JPEG tiles of those photos, cut as data/photos' are (the
///   shorter side resized to 288 and 432, tiles every 96 px, for train; to 300 and 400, tiles
///   side by side, for val; nearly flat tiles and tiles of drawings, masks or text dropped):
///   the data of `experiment table2`; a photo's tiles stay on its side of the split;
/// - fashion-mnist/: the four IDX files of Fashion-MNIST (dataset-fashion-mnist, MIT);
/// - SOURCES.md, licenses/: package versions and their copyright files.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Output folder.
    #[arg(long, default_value = "target/data")]
    out: PathBuf,
    /// Where the .deb files are kept (default OUT/debs); existing ones are reused, so a
    /// machine without apt-get can use debs downloaded elsewhere.
    #[arg(long)]
    debs: Option<PathBuf>,
}

/// The photos of scikit-image's sample data that are photographs (not test patterns).
const SKIMAGE_PHOTOS: &[&str] = &[
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
];

/// Photos always held out: the demo's validation photos (`data/photos/val`), so that no
/// training set of this project contains them.
const HELD_OUT: &[&str] = &["skimage_chelsea.png", "skimage_coffee.png"];

const PACKAGES: &[&str] =
    &["python3-skimage", "opencv-doc", "mate-backgrounds", "dataset-fashion-mnist"];

/// Runs the task.
pub fn run(Args { out, debs }: Args) -> Result<()> {
    let debs = debs.unwrap_or_else(|| out.join("debs"));
    std::fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    let mut roots = BTreeMap::new();
    for package in PACKAGES {
        let deb = find_or_download(&debs, package)?;
        let root = debs.join(format!("root-{package}"));
        if !root.is_dir() {
            let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status();
            if !status.is_ok_and(|s| s.success()) {
                let _ = std::fs::remove_dir_all(&root);
                return Err(
                    format!("dpkg-deb -x {} failed (is dpkg installed?)", deb.display()).into()
                );
            }
        }
        roots.insert(*package, (deb, root));
    }

    // Photos: (source prefix, file) pairs.
    let mut photos: Vec<(&str, PathBuf)> = Vec::new();
    let sk = &roots["python3-skimage"].1;
    let sk_data = find_dir(sk, "skimage/data").ok_or("python3-skimage has no skimage/data")?;
    for name in SKIMAGE_PHOTOS {
        let p = sk_data.join(name);
        if p.is_file() {
            photos.push(("skimage", p));
        }
    }
    let examples = roots["opencv-doc"].1.join("usr/share/doc/opencv-doc/examples");
    for p in files_under(&examples) {
        if is_photo_name(&p) {
            photos.push(("opencv", p));
        }
    }
    let nature = roots["mate-backgrounds"].1.join("usr/share/backgrounds/mate/nature");
    for p in files_under(&nature) {
        if is_photo_name(&p) {
            photos.push(("mate", p));
        }
    }

    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut small = 0;
    for split in ["train", "val"] {
        let dir = out.join("photos").join(split);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for (source, path) in &photos {
        // OpenCV's examples include icons and test patterns: keep photos of at least 128 px.
        match deepsim_data::probe(path) {
            Ok((w, h)) if w.min(h) >= 128 => {}
            _ => {
                small += 1;
                continue;
            }
        }
        let stem = path.file_name().unwrap().to_string_lossy().replace(' ', "_");
        let name = format!("{source}_{stem}");
        let split = if HELD_OUT.contains(&name.as_str()) || fnv1a(name.as_bytes()).is_multiple_of(8)
        {
            "val"
        } else {
            "train"
        };
        let dest = out.join("photos").join(split).join(&name);
        std::fs::copy(path, &dest)
            .map_err(|e| format!("{} → {}: {e}", path.display(), dest.display()))?;
        *counts.entry((source, split)).or_default() += 1;
    }

    let mut tiles: BTreeMap<&str, usize> = BTreeMap::new();
    for split in ["train", "val"] {
        let dir = out.join("tiles").join(split);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for photo in files_under(&out.join("photos").join(split)) {
            *tiles.entry(split).or_default() += write_tiles(&photo, &dir, split == "val")?;
        }
    }

    let fm_src = roots["dataset-fashion-mnist"].1.join("usr/share/datasets/fashion-mnist");
    let fm = out.join("fashion-mnist");
    std::fs::create_dir_all(&fm)?;
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(fm_src.join(f), fm.join(f))
            .map_err(|e| format!("{}: {e}", fm_src.join(f).display()))?;
    }

    let licenses = out.join("licenses");
    std::fs::create_dir_all(&licenses)?;
    let mut sources = String::from(
        "# Where target/data came from\n\nBuilt by `cargo xtask fetch-data` from these Debian \
         packages; each package's copyright file is in `licenses/`. MATE's backgrounds are \
         GPL-2+: keep them out of the repository.\n\n| package (.deb) | used for |\n|---|---|\n",
    );
    for (package, (deb, root)) in &roots {
        let copyright = root.join(format!("usr/share/doc/{package}/copyright"));
        if copyright.is_file() {
            std::fs::copy(&copyright, licenses.join(format!("{package}.copyright")))?;
        }
        let used = match *package {
            "python3-skimage" => "photos (prefix `skimage_`)",
            "opencv-doc" => "photos (prefix `opencv_`)",
            "mate-backgrounds" => "photos (prefix `mate_`)",
            _ => "fashion-mnist/",
        };
        sources
            .push_str(&format!("| `{}` | {used} |\n", deb.file_name().unwrap().to_string_lossy()));
    }
    std::fs::write(out.join("SOURCES.md"), sources)?;

    for ((source, split), n) in &counts {
        println!("{source:>8} {split:<5} {n}");
    }
    println!("left out {small} files under 128 px or unreadable");
    for (split, n) in &tiles {
        println!("   tiles {split:<5} {n}");
    }
    println!(
        "→ {0}/photos/{{train,val}}, {0}/tiles/{{train,val}}, {0}/fashion-mnist",
        out.display()
    );
    Ok(())
}

/// Side of a tile.
const TILE: u32 = 144;

/// Cuts `photo` into [`TILE`]-pixel tiles in `dir` as `data/make_photo_set.py` does: for
/// training, the shorter side resized (bilinear) to 288 and to 432 and a tile every 96 pixels;
/// for validation, 300 and 400 and tiles side by side. Tiles whose pixel values have a standard
/// deviation under 12 (out of 255), and tiles that do not [look natural](looks_natural), are
/// dropped. Written as JPEG, quality 92; the number written.
fn write_tiles(photo: &Path, dir: &Path, val: bool) -> Result<usize> {
    let (image, _) = deepsim_data::decode(photo, deepsim_data::ColorMode::Rgb)
        .map_err(|e| format!("{}: {e}", photo.display()))?;
    let image = image.to_rgb8();
    // The whole name (`a.png` and `a.jpg` both exist in OpenCV's examples).
    let stem = photo.file_name().unwrap().to_string_lossy().replace('.', "_");
    let (sides, step) = if val { ([300, 400], TILE) } else { ([288, 432], 96) };
    let mut n = 0;
    for short in sides {
        let scale = short as f64 / image.width().min(image.height()) as f64;
        let (w, h) = (
            (image.width() as f64 * scale).round() as u32,
            (image.height() as f64 * scale).round() as u32,
        );
        if w < TILE || h < TILE {
            continue;
        }
        let resized = image::imageops::resize(&image, w, h, image::imageops::FilterType::Triangle);
        for y in (0..=h.saturating_sub(TILE)).step_by(step as usize) {
            for x in (0..=w.saturating_sub(TILE)).step_by(step as usize) {
                let tile = image::imageops::crop_imm(&resized, x, y, TILE, TILE).to_image();
                if std_dev(tile.as_raw()) < 12.0 || !looks_natural(&tile) {
                    continue;
                }
                let dest = dir.join(format!("{stem}_s{short}_y{y}_x{x}.jpg"));
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92)
                    .encode_image(&tile)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                deepsim_data::write_atomic(&dest, &bytes)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Whether a tile has the grey levels of a photograph rather than of a drawing, a mask, a
/// logo or a page of text (OpenCV's examples have all of these): at least 48 distinct luma
/// levels, none covering a fifth of the tile.
fn looks_natural(tile: &image::RgbImage) -> bool {
    let mut histogram = [0usize; 256];
    for p in tile.pixels() {
        let [r, g, b] = p.0.map(u32::from);
        histogram[((r * 299 + g * 587 + b * 114) / 1000) as usize] += 1;
    }
    let pixels = (tile.width() * tile.height()) as usize;
    let levels = histogram.iter().filter(|&&n| n > 0).count();
    levels >= 48 && histogram.iter().all(|&n| n * 5 < pixels)
}

/// Standard deviation of a slice of 8-bit values.
fn std_dev(values: &[u8]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    (values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

fn find_or_download(debs: &Path, package: &str) -> Result<PathBuf> {
    let find = || {
        std::fs::read_dir(debs).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
        })
    };
    if let Some(deb) = find() {
        return Ok(deb);
    }
    println!("apt-get download {package}");
    let status = Command::new("apt-get").args(["download", package]).current_dir(debs).status();
    match status {
        Ok(s) if s.success() => find()
            .ok_or_else(|| format!("apt-get left no {package}_*.deb in {}", debs.display()).into()),
        Ok(s) => Err(format!("apt-get download {package} failed ({s})").into()),
        Err(e) => Err(format!(
            "cannot run apt-get ({e}); on a system without apt, put {package}'s .deb from \
             https://packages.debian.org into {}",
            debs.display()
        )
        .into()),
    }
}

fn find_dir(root: &Path, suffix: &str) -> Option<PathBuf> {
    if root.ends_with(suffix) {
        return Some(root.to_path_buf());
    }
    let mut children: Vec<PathBuf> =
        std::fs::read_dir(root).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    children.sort();
    children.into_iter().filter(|p| p.is_dir()).find_map(|p| find_dir(&p, suffix))
}

/// Every file under `dir`, recursively, sorted (none if it cannot be read).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Whether a file name ends in .jpg, .jpeg or .png (any case).
pub(crate) fn is_photo_name(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "jpg" | "jpeg" | "png")
}

/// FNV-1a, 64 bits: a stable hash of a file name for the train/val split.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawings_and_text_are_not_photos() {
        // A chessboard (two levels), a page of text (white with a few dark strokes) and a
        // photograph-like tile (smoothly varying with noise, from a seeded LCG).
        let chess = image::RgbImage::from_fn(144, 144, |x, y| {
            image::Rgb([if (x / 18 + y / 18) % 2 == 0 { 0 } else { 255 }; 3])
        });
        let text = image::RgbImage::from_fn(144, 144, |x, y| {
            image::Rgb([if y % 12 < 2 && x % 7 < 3 { (x * 13 % 200) as u8 } else { 255 }; 3])
        });
        let mut state = 12345u32;
        let photo = image::RgbImage::from_fn(144, 144, |x, y| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = (x + y) / 2 + (state >> 27);
            image::Rgb([v as u8, (v / 2) as u8, 200 - (v / 3) as u8])
        });
        assert!(!looks_natural(&chess));
        assert!(!looks_natural(&text));
        assert!(looks_natural(&photo));
        assert!(std_dev(chess.as_raw()) > 100.0);
    }

    #[test]
    fn tiles_follow_the_scheme_and_skip_flat_ones() {
        let dir = std::env::temp_dir().join(format!("deepsim-tiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // 300×200 noise photo, its left third flat: at short side 288 (432×288) the training
        // grid is 4 × 2 tiles, at 432 (648×432) 6 × 4. The flat third is x < 144 at 288 and
        // x < 216 at 432: a tile inside it is flat (dropped for its deviation), a tile a third
        // or more inside it has one grey level over a fifth of its pixels (dropped as not a
        // photo), the tile at x 192 of the larger size is 17 % flat and stays.
        let mut state = 7u32;
        let photo = image::RgbImage::from_fn(300, 200, |x, _| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            image::Rgb([if x < 100 { 128 } else { (state >> 24) as u8 }; 3])
        });
        let path = dir.join("p.png");
        photo.save(&path).unwrap();
        let out = dir.join("train");
        std::fs::create_dir_all(&out).unwrap();
        let n = write_tiles(&path, &out, false).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), n);
        assert!(!names.contains(&"p_png_s288_y0_x0.jpg".to_string()), "{names:?}");
        assert!(names.contains(&"p_png_s288_y96_x288.jpg".to_string()), "{names:?}");
        assert!(names.contains(&"p_png_s432_y288_x480.jpg".to_string()), "{names:?}");
        assert!(names.contains(&"p_png_s432_y0_x192.jpg".to_string()), "{names:?}");
        assert!(!names.contains(&"p_png_s288_y0_x96.jpg".to_string()), "{names:?}");
        assert_eq!(n, 2 * 2 + 4 * 4, "{names:?}");
        let tile = image::open(out.join("p_png_s288_y0_x192.jpg")).unwrap();
        assert_eq!((tile.width(), tile.height()), (144, 144));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
