//! Adam (Kingma & Ba 2015) without weight decay — the paper's optimizer — with moments a
//! checkpoint can save and restore exactly.

use std::collections::HashMap;

use candle::backprop::GradStore;
use candle::{Tensor, Var};
use candle_nn::VarMap;

use crate::error::Result;

/// Adam over the variables of a [`VarMap`], in name order.
pub struct Adam {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates made so far (the bias corrections use it).
    pub t: u64,
    /// Learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
}

impl Adam {
    /// Adam over every variable of `map`, moments at zero.
    ///
    /// # Errors
    /// Allocation failures.
    pub fn new(map: &VarMap, lr: f64, beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        let data = map.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, v)| v.zeros_like()).collect::<candle::Result<Vec<_>>>()?;
        let v = vars.iter().map(|(_, v)| v.zeros_like()).collect::<candle::Result<Vec<_>>>()?;
        Ok(Adam { vars, m, v, t: 0, lr, beta1, beta2, eps })
    }

    /// One update from the gradients in `grads` (variables without a gradient are left alone).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((&v / c2)?.sqrt()? + self.eps)?;
            let update = ((&m / c1)? / denom)?;
            var.set(&var.as_tensor().sub(&(update * self.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`PREFIX.m.NAME`, `PREFIX.v.NAME`).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.push((format!("{prefix}.m.{name}"), self.m[i].clone()));
            out.push((format!("{prefix}.v.{name}"), self.v[i].clone()));
        }
        out
    }

    /// Restores the moments saved by [`Adam::state`] and the step count.
    ///
    /// # Errors
    /// A missing moment or one of another shape, named.
    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Tensor>,
        t: u64,
    ) -> std::result::Result<(), String> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (kind, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{kind}.{name}");
                let saved = tensors.get(&key).ok_or_else(|| format!("no tensor {key}"))?;
                if saved.dims() != var.dims() {
                    return Err(format!(
                        "{key} has shape {:?}, the model's is {:?}",
                        saved.dims(),
                        var.dims()
                    ));
                }
                *slot = saved
                    .to_device(var.device())
                    .and_then(|t| t.to_dtype(var.dtype()))
                    .map_err(|e| e.to_string())?;
            }
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device};

    #[test]
    fn matches_pytorch_adam() {
        // torch.optim.Adam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8) on f(w) = Σ w²/2 from
        // w = [1, −2] (f64), three steps; PyTorch 2.15 prints:
        //   [0.900000001, -1.9000000005]
        //   [0.8004122297123382, -1.8001664866210927]
        //   [0.701586274504415, -1.7006233928121137]
        let want = [
            [0.900000001, -1.9000000005],
            [0.8004122297123382, -1.8001664866210927],
            [0.701586274504415, -1.7006233928121137],
        ];
        let map = VarMap::new();
        map.get((2,), "w", candle_nn::Init::Const(0.0), DType::F64, &Device::Cpu).unwrap();
        let var = map.data().lock().unwrap()["w"].clone();
        var.set(&Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut adam = Adam::new(&map, 0.1, 0.9, 0.999, 1e-8).unwrap();
        for row in want {
            let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            adam.step(&loss.backward().unwrap()).unwrap();
            let got = var.as_tensor().to_vec1::<f64>().unwrap();
            for i in 0..2 {
                assert!((got[i] - row[i]).abs() < 1e-12, "{got:?} vs {row:?}");
            }
        }
        // The state round-trips.
        let saved: HashMap<String, Tensor> = adam.state("g").into_iter().collect();
        let mut other = Adam::new(&map, 0.1, 0.9, 0.999, 1e-8).unwrap();
        other.load_state("g", &saved, adam.t).unwrap();
        assert_eq!(other.t, 3);
        assert!(other.load_state("d", &saved, 3).unwrap_err().contains("no tensor d.m.w"));
    }
}
