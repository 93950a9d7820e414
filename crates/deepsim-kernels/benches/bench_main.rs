//! Criterion benchmarks of deepsim-kernels against candle's built-ins, on the CPU.
//!
//! `cargo bench -p deepsim-kernels --bench bench_main -- FILTER`; names start with the device.

mod benchmarks;

criterion::criterion_main!(
    benchmarks::alexnet::benches,
    benchmarks::conv::benches,
    benchmarks::pool::benches,
    benchmarks::lrn::benches,
);
