//! `cargo xtask fetch-data`: builds a larger local image set and Fashion-MNIST from Debian
//! packages (`apt-get download` + `dpkg-deb -x`), without committing any of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const HELP: &str = "usage: cargo xtask fetch-data [--out DIR] [--debs DIR]

Downloads four Debian packages (about 175 MB) and builds, in --out (default target/data):
  photos/train, photos/val   natural photos: scikit-image's sample photos (python3-skimage),
                             OpenCV's example photos (opencv-doc), MATE's nature backgrounds
                             (mate-backgrounds, GPL-2+: for local use, never commit them);
                             one in eight files, chosen by name, goes to val
  fashion-mnist/             the four IDX files of Fashion-MNIST (dataset-fashion-mnist, MIT)
  SOURCES.md, licenses/      package versions and their copyright files

  --debs DIR   where the .deb files are kept (default OUT/debs); existing ones are reused,
               so a machine without apt-get can use debs downloaded elsewhere";

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

const PACKAGES: &[&str] =
    &["python3-skimage", "opencv-doc", "mate-backgrounds", "dataset-fashion-mnist"];

/// Runs the task with the arguments after its name.
pub fn run(args: &[String]) -> Result<()> {
    let (mut out, mut debs) = (PathBuf::from("target/data"), None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{HELP}");
            return Ok(());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n\n{HELP}"))?;
        match flag.as_str() {
            "--out" => out = PathBuf::from(value),
            "--debs" => debs = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}\n\n{HELP}").into()),
        }
    }
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
        let split = if fnv1a(name.as_bytes()).is_multiple_of(8) { "val" } else { "train" };
        let dest = out.join("photos").join(split).join(&name);
        std::fs::copy(path, &dest)
            .map_err(|e| format!("{} → {}: {e}", path.display(), dest.display()))?;
        *counts.entry((source, split)).or_default() += 1;
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
    println!("→ {}/photos/{{train,val}}, {}/fashion-mnist", out.display(), out.display());
    Ok(())
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

fn files_under(dir: &Path) -> Vec<PathBuf> {
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

fn is_photo_name(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "jpg" | "jpeg" | "png")
}

/// FNV-1a, 64 bits: a stable hash of a file name for the train/val split.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
