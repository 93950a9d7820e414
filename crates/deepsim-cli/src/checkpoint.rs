//! A checkpoint written by `deepsim train`, loaded as a `Model`, and images as its run's
//! validation saw them, encoded and decoded in batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle::{Device, Tensor};
use deepsim_train::Model;

use crate::args::RunDeviceArg;
use crate::images::load_square;

/// Images per forward pass when encoding and decoding many.
const BATCH: usize = 32;

/// The model of a checkpoint, on `device` (default: the run's), saying what it is on stderr.
pub fn load_model(checkpoint: &Path, device: &RunDeviceArg) -> Result<Model> {
    let model = Model::load(checkpoint, device.name())?;
    let side = model.side();
    eprintln!("{}: {}, {side}×{side} images", checkpoint.display(), model.describe());
    Ok(model)
}

/// An image as the run's validation saw it: the shorter side resized to `data.resize`, the
/// centre `data.crop` square; `[1, 3, crop, crop]` in [0, 1].
pub fn load_image(model: &Model, path: &Path) -> Result<Tensor> {
    let d = &model.config().data;
    load_square(path, d.resize, d.crop)
}

/// The images of `files` as `model`'s validation saw them, `[N, 3, side, side]` on the CPU.
pub fn load_all(model: &Model, files: &[PathBuf]) -> Result<Tensor> {
    Ok(Tensor::cat(&files.iter().map(|p| load_image(model, p)).collect::<Result<Vec<_>>>()?, 0)?)
}

/// Decoded image sets by the (resize, crop) of a model's validation, so that checkpoints
/// sharing them decode the files once.
#[derive(Default)]
pub struct ImageSets(BTreeMap<(u32, u32), Tensor>);

impl ImageSets {
    /// `files` as `model`'s validation sees them, `[N, 3, side, side]` on the CPU.
    pub fn get(&mut self, model: &Model, files: &[PathBuf]) -> Result<Tensor> {
        let d = &model.config().data;
        let key = (d.resize, d.crop);
        if let Some(x) = self.0.get(&key) {
            return Ok(x.clone());
        }
        let x = load_all(model, files)?;
        self.0.insert(key, x.clone());
        Ok(x)
    }
}

/// `f` over `x` in batches of [`BATCH`], concatenated on the CPU.
pub fn batched(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let n = x.dim(0)?;
    let parts = (0..n)
        .step_by(BATCH)
        .map(|s| Ok(f(&x.narrow(0, s, BATCH.min(n - s))?)?.to_device(&Device::Cpu)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// `x` in slices of [`BATCH`] images along its first dimension.
pub fn batches(x: &Tensor) -> Result<Vec<Tensor>> {
    let n = x.dim(0)?;
    Ok((0..n).step_by(BATCH).map(|s| x.narrow(0, s, BATCH.min(n - s))).collect::<Result<_, _>>()?)
}
