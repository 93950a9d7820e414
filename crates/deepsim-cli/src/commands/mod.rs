//! One module per `deepsim` command: its `clap::Args` struct and its `run`.

pub mod ablation;
pub mod augment;
pub mod bench;
pub mod classify;
pub mod colormap;
pub mod compare;
pub mod compare_audio;
pub mod data_check;
pub mod demo;
pub mod eval;
pub mod features;
pub mod interpolate;
pub mod invert;
pub mod invert_optim;
pub mod neighbours;
pub mod probe;
pub mod quantize;
pub mod reencode;
pub mod restore;
pub mod sample;
pub mod train;
pub mod weights;
