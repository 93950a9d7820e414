//! Criterion benchmarks of the data loader on the CPU: images per second from JPEG files at
//! the demo's 64×64 crops and AlexNet's 227×227 crops.
//!
//! Sources: the shipped demo tiles (`data/demo/train`, 80×80 JPEG), and 480×400 JPEG mosaics
//! of those tiles written to a temporary directory (photo content at an ImageNet-like size).
//! `DEEPSIM_BENCH_IMAGES=DIR` replaces the mosaics by a folder of real photos, e.g. the
//! `target/data/photos/train` that `cargo xtask fetch-data` builds.

mod benchmarks;

criterion::criterion_main!(benchmarks::loader::benches);
