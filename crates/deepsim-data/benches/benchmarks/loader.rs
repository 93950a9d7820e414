//! Loader throughput: one epoch of JPEG files through the background workers, per crop size.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, Criterion, Throughput};
use deepsim_data::{Dataset, FolderConfig, ImageFolder, Loader, LoaderConfig, Transform};
use image::{GenericImage, RgbImage};

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/train")
}

/// 64 mosaics of 6×5 demo tiles each, saved as JPEG (quality 90) in a temporary directory.
fn mosaics() -> PathBuf {
    let out = std::env::temp_dir().join(format!("deepsim-bench-mosaics-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temporary directory");
    let mut tiles: Vec<PathBuf> = std::fs::read_dir(demo_dir())
        .expect("data/demo/train")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    tiles.sort();
    for m in 0..64 {
        let mut canvas = RgbImage::new(480, 400);
        for t in 0..30 {
            let path = &tiles[(m * 30 + t * 7) % tiles.len()];
            let tile = image::open(path).expect("demo tile").to_rgb8();
            canvas.copy_from(&tile, (t % 6) as u32 * 80, (t / 6) as u32 * 80).expect("tile fits");
        }
        let path = out.join(format!("mosaic{m:02}.jpg"));
        let file = std::fs::File::create(&path).expect("mosaic file");
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(file, 90);
        enc.encode_image(&canvas).expect("JPEG encoding");
    }
    out
}

fn folder(dir: &Path, transform: Transform) -> Arc<ImageFolder> {
    let mut cfg = FolderConfig::new(transform);
    cfg.warn = false;
    Arc::new(ImageFolder::open(dir, cfg).expect("bench images"))
}

/// One epoch through the loader with every core as a worker.
fn bench_loader(c: &mut Criterion, name: &str, set: Arc<ImageFolder>, batch: usize) {
    let n = (set.len() / batch) * batch;
    let config = LoaderConfig::new(batch);
    let loader = Loader::new(set, config).expect("loader");
    let mut group = c.benchmark_group("loader");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    let mut epoch = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            epoch += 1;
            for batch in loader.epoch(epoch).expect("stream") {
                black_box(batch.expect("batch"));
            }
        })
    });
    group.finish();
}

fn loaders(c: &mut Criterion) {
    let demo = demo_dir();
    bench_loader(
        c,
        "cpu_loader_demo80_jpeg_crop64_b64",
        folder(&demo, Transform::train(80, 64)),
        64,
    );
    let photos =
        std::env::var_os("DEEPSIM_BENCH_IMAGES").map(PathBuf::from).unwrap_or_else(mosaics);
    bench_loader(c, "cpu_loader_jpeg_crop64_b64", folder(&photos, Transform::train(72, 64)), 64);
    bench_loader(c, "cpu_loader_jpeg_crop227_b64", folder(&photos, Transform::train(256, 227)), 64);
    let eval = folder(&photos, Transform::eval(256, 227));
    assert!(eval.is_deterministic());
    bench_loader(c, "cpu_loader_jpeg_center227_b64", eval, 64);
}

criterion_group!(benches, loaders);
