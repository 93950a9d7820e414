//! One module per benchmarked subject.

pub mod step;
