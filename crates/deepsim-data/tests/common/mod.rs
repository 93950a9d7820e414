//! Helpers of deepsim-data's tests: temporary directories, synthetic images, and the real
//! Fashion-MNIST files from Debian's `dataset-fashion-mnist` package.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{DynamicImage, Rgb, RgbImage};

/// A fresh directory under cargo's `target/tmp` (emptied first; reused by the next run, so
/// repeated test runs leave one copy, and a clean clone's CI leaves none outside its tree).
pub fn temp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deepsim-data-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A colourful `w`×`h` image whose pixels depend on `seed`.
pub fn pattern(w: u32, h: u32, seed: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        let v = x
            .wrapping_mul(31)
            .wrapping_add(y.wrapping_mul(17))
            .wrapping_add(seed.wrapping_mul(101));
        Rgb([(v % 251) as u8, ((v / 3 + seed * 7) % 253) as u8, ((x ^ y ^ seed) % 255) as u8])
    }))
}

pub fn save(image: &DynamicImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save(path).unwrap();
}

/// Fashion-MNIST's directory: `$DEEPSIM_FASHION_MNIST`, the installed package's, or the package
/// fetched with `apt-get download` + `dpkg -x` into `target/test-debs` (as `.ci/run` does).
pub fn fashion_mnist_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEEPSIM_FASHION_MNIST") {
        return PathBuf::from(d);
    }
    let installed = Path::new("/usr/share/datasets/fashion-mnist");
    if installed.join("t10k-labels-idx1-ubyte.gz").is_file() {
        return installed.to_path_buf();
    }
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let debs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-debs");
    let dir = debs.join("root/usr/share/datasets/fashion-mnist");
    if dir.join("t10k-labels-idx1-ubyte.gz").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&debs).unwrap();
    let fetched = Command::new("apt-get")
        .args(["download", "dataset-fashion-mnist"])
        .current_dir(&debs)
        .status()
        .is_ok_and(|s| s.success());
    let deb =
        std::fs::read_dir(&debs).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("dataset-fashion-mnist_")
        });
    let deb = deb.unwrap_or_else(|| {
        panic!(
            "Fashion-MNIST not found (apt-get download ok: {fetched}); run `apt-get download \
             dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb root` in {}",
            debs.display()
        )
    });
    let ok = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(debs.join("root")).status();
    assert!(ok.is_ok_and(|s| s.success()), "dpkg-deb -x {} failed", deb.display());
    dir
}

/// CRC-32 (IEEE, reflected 0xEDB88320) of PNG chunk bytes.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG of a few dozen bytes whose header declares `w`×`h` RGB pixels.
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        c.extend(&body);
        c.extend(crc32(&body).to_be_bytes());
        c
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // zlib stream of a few zero bytes.
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}
