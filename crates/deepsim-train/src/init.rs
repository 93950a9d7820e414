//! Seeded initialization: every variable a model creates, drawn from the run's seed.
//!
//! candle's CPU random numbers cannot be seeded, so a model is first built against a backend
//! that records each variable's name, shape and initializer, and the values are then drawn
//! from [`deepsim_data::Rng`], variable by variable in name order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use deepsim_data::Rng;

use crate::error::Result;

/// Records the initializer hint of each variable requested and hands out a fresh `Var`.
#[derive(Clone, Default)]
struct Recorder {
    vars: Arc<Mutex<HashMap<String, (Var, Init)>>>,
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle::Result<Tensor> {
        let mut vars = self.vars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, _)) = vars.get(name) {
            if v.shape() != &s {
                candle::bail!("variable {name} requested as {s:?}, created as {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let var = Var::zeros(s, dtype, dev)?;
        let t = var.as_tensor().clone();
        vars.insert(name.to_string(), (var, h));
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle::Result<Tensor> {
        candle::bail!("variable {name} requested without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.lock().unwrap_or_else(|e| e.into_inner()).contains_key(name)
    }
}

/// Builds a model with `build` and initializes its variables from `seed`; returns the model
/// and a [`VarMap`] holding its variables (for the optimizer and checkpoints).
///
/// # Errors
/// Errors of `build`.
pub fn seeded<T>(
    seed: u64,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> std::result::Result<T, crate::Error>,
) -> Result<(T, VarMap)> {
    let recorder = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, device.clone());
    let model = build(vb)?;
    let vars = std::mem::take(&mut *recorder.vars.lock().unwrap_or_else(|e| e.into_inner()));
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let map = VarMap::new();
    for (k, name) in names.into_iter().enumerate() {
        let (var, init) = &vars[name];
        let mut rng = Rng::derive(seed, &[0x1417, k as u64]);
        let n = var.elem_count();
        let values: Vec<f32> = match *init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => {
                (0..n).map(|_| (mean + stdev * rng.normal()) as f32).collect()
            }
            Init::Uniform { lo, up } => {
                (0..n).map(|_| (lo + (up - lo) * rng.uniform()) as f32).collect()
            }
            Init::Kaiming { .. } => {
                // fan_in = elements per output unit; He normal for ReLU.
                let dims = var.dims();
                let fan_in = if dims.len() > 1 { n / dims[0] } else { n.max(1) };
                let std = (2.0 / fan_in as f64).sqrt();
                (0..n).map(|_| (std * rng.normal()) as f32).collect()
            }
        };
        var.set(&Tensor::from_vec(values, var.shape(), device)?.to_dtype(var.dtype())?)?;
        map.data().lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), var.clone());
    }
    Ok((model, map))
}
