//! Criterion benchmarks of the comparators on the CPU, named as their PyTorch twins in
//! `bench/torch/bench_torch.py` (prefixed with the device) so that
//! `cargo xtask bench-vs-torch --package deepsim-comparators --name NAME` can alternate them.

mod benchmarks;

criterion::criterion_main!(benchmarks::comparators::benches);
