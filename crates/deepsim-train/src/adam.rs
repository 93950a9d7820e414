//! Adam (Kingma & Ba 2015) without weight decay — the paper's optimizer — with moments a
//! checkpoint can save and restore exactly.
//!
//! On the CPU each variable's update is one fused pass over its parameter, gradient and
//! moments (the moments live in host buffers and the parameter is rewritten in place), which
//! also notes whether any new value is NaN or infinite ([`Adam::non_finite`]), so that a
//! trainer need not read every weight again to find out; other devices run the same formula
//! as candle tensor operations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use candle::backprop::GradStore;
use candle::{CpuStorage, DType, Layout, Tensor, Var, WithDType};
use candle_nn::VarMap;
use rayon::prelude::*;

use crate::error::Result;

/// Adam over the variables of a [`VarMap`], in name order.
pub struct Adam {
    vars: Vec<(String, Var)>,
    moments: Vec<Moments>,
    fused: bool,
    /// The first variable, in name order, that the last update left NaN or infinite.
    non_finite: Option<String>,
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

/// One variable's first and second moments.
enum Moments {
    /// A CPU `f32` variable's moments, for the fused pass.
    F32 { m: Vec<f32>, v: Vec<f32> },
    /// A CPU `f64` variable's moments, for the fused pass.
    F64 { m: Vec<f64>, v: Vec<f64> },
    /// Any other variable's moments, updated by tensor operations.
    Tensors { m: Tensor, v: Tensor },
}

impl Moments {
    /// Zero moments for `var`: host buffers when `fused` and the fused pass can update it.
    fn zeros(var: &Var, fused: bool) -> candle::Result<Self> {
        let n = var.elem_count();
        Ok(match (fused && var.device().is_cpu(), var.dtype()) {
            (true, DType::F32) => Moments::F32 { m: written_zeros(n), v: written_zeros(n) },
            (true, DType::F64) => Moments::F64 { m: written_zeros(n), v: written_zeros(n) },
            _ => Moments::Tensors { m: var.zeros_like()?, v: var.zeros_like()? },
        })
    }

    /// The moments as tensors of `var`'s shape, device and dtype.
    fn tensors(&self, var: &Var) -> candle::Result<(Tensor, Tensor)> {
        let (dims, dev) = (var.dims(), var.device());
        Ok(match self {
            Moments::F32 { m, v } => {
                (Tensor::from_slice(m, dims, dev)?, Tensor::from_slice(v, dims, dev)?)
            }
            Moments::F64 { m, v } => {
                (Tensor::from_slice(m, dims, dev)?, Tensor::from_slice(v, dims, dev)?)
            }
            Moments::Tensors { m, v } => (m.clone(), v.clone()),
        })
    }

    /// Replaces the moments by `m` and `v` (already of the variable's shape).
    fn set(&mut self, m: &Tensor, v: &Tensor, var: &Var) -> candle::Result<()> {
        let (m, v) = (m.to_device(var.device())?, v.to_device(var.device())?);
        let (m, v) = (m.to_dtype(var.dtype())?, v.to_dtype(var.dtype())?);
        match self {
            Moments::F32 { m: hm, v: hv } => {
                *hm = m.flatten_all()?.to_vec1()?;
                *hv = v.flatten_all()?.to_vec1()?;
            }
            Moments::F64 { m: hm, v: hv } => {
                *hm = m.flatten_all()?.to_vec1()?;
                *hv = v.flatten_all()?.to_vec1()?;
            }
            Moments::Tensors { m: tm, v: tv } => {
                *tm = m;
                *tv = v;
            }
        }
        Ok(())
    }
}

/// `n` zeros written to memory now. `vec![0.0; n]` would map untouched pages to the kernel's
/// shared zero page, and the first update would then fault and copy every page of the moments
/// (with a TLB flush on every core each time).
fn written_zeros<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, T::default());
    v
}

/// The step's constants shared by every element.
#[derive(Clone, Copy)]
struct Hyper {
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// lr / (1 − β₁ᵗ).
    step: f64,
    /// 1 / (1 − β₂ᵗ).
    inv_c2: f64,
}

/// A float the fused pass runs in (`f32` or `f64`): candle's element type, with the square
/// root and the mutable access to a CPU storage that `WithDType` lacks.
trait HostFloat: WithDType {
    fn sqrt(self) -> Self;
    fn is_finite(self) -> bool;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! host_float {
    ($t:ty, $variant:ident) => {
        impl HostFloat for $t {
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
host_float!(f32, F32);
host_float!(f64, F64);

/// Elements per parallel chunk of the fused pass (small variables run on one thread).
const CHUNK: usize = 1 << 15;

/// The fused update of one CPU variable, applied in place to the parameter with the gradient
/// as the second operand; the moments are the host buffers it holds.
struct FusedAdam<'a, T> {
    moments: Mutex<(&'a mut [T], &'a mut [T])>,
    hyper: Hyper,
    /// Raised when a new parameter value is NaN or infinite.
    non_finite: AtomicBool,
}

impl<T: HostFloat> FusedAdam<'_, T> {
    /// m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², p ← p − lr·m̂ / (√v̂ + ε) over one chunk;
    /// raises `non_finite` if a new p is NaN or infinite (an OR over the chunk in registers,
    /// no second pass over memory).
    fn update(&self, p: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
        let h = self.hyper;
        let (b1, b2) = (T::from_f64(h.beta1), T::from_f64(h.beta2));
        let (a1, a2) = (T::from_f64(1.0 - h.beta1), T::from_f64(1.0 - h.beta2));
        let (step, inv_c2, eps) = (T::from_f64(h.step), T::from_f64(h.inv_c2), T::from_f64(h.eps));
        let finite = deepsim_kernels::vectorized(
            #[inline(always)]
            || {
                let mut finite = true;
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = b1 * *m + a1 * g;
                    *v = b2 * *v + a2 * (g * g);
                    *p -= step * *m / ((*v * inv_c2).sqrt() + eps);
                    finite &= p.is_finite();
                }
                finite
            },
        );
        if !finite {
            self.non_finite.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: HostFloat> candle::InplaceOp2 for FusedAdam<'_, T> {
    fn name(&self) -> &'static str {
        "fused-adam"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_l: &Layout,
        grad: &CpuStorage,
        grad_l: &Layout,
    ) -> candle::Result<()> {
        let (Some((p0, p1)), Some((g0, g1))) =
            (param_l.contiguous_offsets(), grad_l.contiguous_offsets())
        else {
            candle::bail!("fused-adam: the parameter and its gradient must be contiguous");
        };
        let (Some(p), Ok(g)) = (T::slice_mut(param), T::cpu_storage_as_slice(grad)) else {
            candle::bail!("fused-adam: the gradient's dtype differs from the parameter's");
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        let mut guard = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        let (m, v) = &mut *guard;
        if g.len() != p.len() || m.len() != p.len() {
            candle::bail!(
                "fused-adam: {} parameters, {} gradients, {} moments",
                p.len(),
                g.len(),
                m.len()
            );
        }
        if p.len() <= CHUNK {
            self.update(p, g, m, v);
        } else {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| self.update(p, g, m, v));
        }
        Ok(())
    }
}

/// Runs the fused pass of one host-moment variable; returns whether every new value is finite.
fn fused_step<T: HostFloat>(
    var: &Var,
    grad: &Tensor,
    m: &mut [T],
    v: &mut [T],
    hyper: Hyper,
) -> candle::Result<bool> {
    let grad = if grad.is_contiguous() { grad.clone() } else { grad.contiguous()? };
    let op = FusedAdam { moments: Mutex::new((m, v)), hyper, non_finite: AtomicBool::new(false) };
    var.as_tensor().inplace_op2(&grad, &op)?;
    Ok(!op.non_finite.load(Ordering::Relaxed))
}

impl Adam {
    /// Adam over every variable of `map`, moments at zero.
    ///
    /// # Errors
    /// Allocation failures.
    pub fn new(map: &VarMap, lr: f64, beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        Self::build(map, lr, beta1, beta2, eps, true)
    }

    /// The same optimizer computing every update with candle tensor operations, as it does on
    /// devices without the fused pass: the reference the fused pass is tested and benchmarked
    /// against.
    ///
    /// # Errors
    /// Allocation failures.
    pub fn unfused(map: &VarMap, lr: f64, beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        Self::build(map, lr, beta1, beta2, eps, false)
    }

    fn build(map: &VarMap, lr: f64, beta1: f64, beta2: f64, eps: f64, fused: bool) -> Result<Self> {
        let data = map.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let moments = vars
            .iter()
            .map(|(_, v)| Moments::zeros(v, fused))
            .collect::<candle::Result<Vec<_>>>()?;
        Ok(Adam { vars, moments, fused, non_finite: None, t: 0, lr, beta1, beta2, eps })
    }

    /// Whether CPU variables take the fused pass ([`Adam::new`]) or tensor operations
    /// ([`Adam::unfused`]).
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    /// The first variable (in name order) that the last [`Adam::step`] left with a NaN or
    /// infinite value, if any: the fused pass notes it as it writes; other variables are summed
    /// after their update. Variables the step did not update are not looked at.
    pub fn non_finite(&self) -> Option<&str> {
        self.non_finite.as_deref()
    }

    /// One update from the gradients in `grads` (variables without a gradient are left alone).
    /// Every variable is updated even when one turns NaN; [`Adam::non_finite`] then names it.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.non_finite = None;
        self.t += 1;
        let t = self.t as i32;
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        let hyper = Hyper {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            step: self.lr / c1,
            inv_c2: 1.0 / c2,
        };
        for ((name, var), moments) in self.vars.iter().zip(&mut self.moments) {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let finite = match moments {
                Moments::F32 { m, v } => fused_step(var, g, m, v, hyper)?,
                Moments::F64 { m, v } => fused_step(var, g, m, v, hyper)?,
                Moments::Tensors { m, v } => {
                    let m_new = ((&*m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
                    let v_new = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                    let denom = ((&v_new / c2)?.sqrt()? + self.eps)?;
                    let update = ((&m_new / c1)? / denom)?;
                    var.set(&var.as_tensor().sub(&(update * self.lr)?)?)?;
                    *m = m_new;
                    *v = v_new;
                    let sum = var.as_tensor().sum_all()?.to_dtype(DType::F64)?;
                    sum.to_scalar::<f64>()?.is_finite()
                }
            };
            if !finite && self.non_finite.is_none() {
                self.non_finite = Some(name.clone());
            }
        }
        Ok(())
    }

    /// The moments as named tensors (`PREFIX.m.NAME`, `PREFIX.v.NAME`).
    ///
    /// # Errors
    /// Allocation failures (host moments are copied into new tensors).
    pub fn state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.vars.len());
        for ((name, var), moments) in self.vars.iter().zip(&self.moments) {
            let (m, v) = moments.tensors(var)?;
            out.push((format!("{prefix}.m.{name}"), m));
            out.push((format!("{prefix}.v.{name}"), v));
        }
        Ok(out)
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
        for ((name, var), moments) in self.vars.iter().zip(&mut self.moments) {
            let mut pair = Vec::with_capacity(2);
            for kind in ["m", "v"] {
                let key = format!("{prefix}.{kind}.{name}");
                let saved = tensors.get(&key).ok_or_else(|| format!("no tensor {key}"))?;
                if saved.dims() != var.dims() {
                    return Err(format!(
                        "{key} has shape {:?}, the model's is {:?}",
                        saved.dims(),
                        var.dims()
                    ));
                }
                pair.push(saved);
            }
            moments.set(pair[0], pair[1], var).map_err(|e| format!("{prefix}.*.{name}: {e}"))?;
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    /// A variable `w` holding `values` in a fresh map.
    fn map_with<T: WithDType>(values: &[T], dtype: DType) -> (VarMap, Var) {
        let map = VarMap::new();
        map.get(values.len(), "w", candle_nn::Init::Const(0.0), dtype, &Device::Cpu).unwrap();
        let var = map.data().lock().unwrap()["w"].clone();
        var.set(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap();
        (map, var)
    }

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
        for fused in [true, false] {
            let (map, var) = map_with(&[1.0f64, -2.0], DType::F64);
            let mut adam = Adam::build(&map, 0.1, 0.9, 0.999, 1e-8, fused).unwrap();
            assert_eq!(adam.is_fused(), fused);
            for row in want {
                let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
                adam.step(&loss.backward().unwrap()).unwrap();
                let got = var.as_tensor().to_vec1::<f64>().unwrap();
                for i in 0..2 {
                    assert!((got[i] - row[i]).abs() < 1e-12, "fused {fused}: {got:?} vs {row:?}");
                }
            }
            // The state round-trips.
            let saved: HashMap<String, Tensor> = adam.state("g").unwrap().into_iter().collect();
            let mut other = Adam::build(&map, 0.1, 0.9, 0.999, 1e-8, !fused).unwrap();
            other.load_state("g", &saved, adam.t).unwrap();
            assert_eq!(other.t, 3);
            let again: HashMap<String, Tensor> = other.state("g").unwrap().into_iter().collect();
            for key in ["g.m.w", "g.v.w"] {
                let (a, b) =
                    (saved[key].to_vec1::<f64>().unwrap(), again[key].to_vec1::<f64>().unwrap());
                assert_eq!(a, b, "{key}");
            }
            assert!(other.load_state("d", &saved, 3).unwrap_err().contains("no tensor d.m.w"));
        }
    }

    #[test]
    fn fused_pass_equals_tensor_operations() {
        // f32 over a variable spanning several parallel chunks, on a loss whose gradient
        // differs per element and from step to step: Σ (w − c)⁴ with c fixed.
        let n = 3 * CHUNK + 123;
        let init: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let c: Vec<f32> = (0..n).map(|i| ((i * 104729) % 997) as f32 / 997.0).collect();
        let c = Tensor::from_vec(c, n, &Device::Cpu).unwrap();
        let mut runs = Vec::new();
        for fused in [true, false] {
            let (map, var) = map_with(&init, DType::F32);
            let mut adam = Adam::build(&map, 1e-2, 0.9, 0.999, 1e-8, fused).unwrap();
            for _ in 0..5 {
                let d = var.as_tensor().sub(&c).unwrap();
                let loss = d.sqr().unwrap().sqr().unwrap().sum_all().unwrap();
                adam.step(&loss.backward().unwrap()).unwrap();
            }
            let state: HashMap<String, Tensor> = adam.state("a").unwrap().into_iter().collect();
            runs.push((var.as_tensor().to_vec1::<f32>().unwrap(), state));
        }
        let (fused, reference) = (&runs[0], &runs[1]);
        let moved = fused.0.iter().zip(&init).filter(|(a, b)| a != b).count();
        assert!(moved > n / 2, "only {moved} of {n} parameters moved");
        for (i, (a, b)) in fused.0.iter().zip(&reference.0).enumerate() {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "w[{i}]: {a} vs {b}");
        }
        for key in ["a.m.w", "a.v.w"] {
            let a = fused.1[key].to_vec1::<f32>().unwrap();
            let b = reference.1[key].to_vec1::<f32>().unwrap();
            // Relative to the largest moment: a moment near zero is a difference of rounded
            // terms on either path.
            let scale = b.iter().fold(0f32, |s, x| s.max(x.abs()));
            for i in 0..n {
                assert!((a[i] - b[i]).abs() <= 1e-6 * scale, "{key}[{i}]: {} vs {}", a[i], b[i]);
            }
        }
    }

    #[test]
    fn a_step_that_leaves_a_weight_non_finite_names_it() {
        for fused in [true, false] {
            let map = VarMap::new();
            let n = 2 * CHUNK + 5; // several parallel chunks on the fused path
            for name in ["a", "b", "c"] {
                map.get(n, name, candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
            }
            let vars = map.data().lock().unwrap().clone();
            let loss = |scale_b: f64| {
                let (a, b, c) =
                    (vars["a"].as_tensor(), vars["b"].as_tensor(), vars["c"].as_tensor());
                let s = (a.sum_all().unwrap() + (b.sum_all().unwrap() * scale_b).unwrap()).unwrap();
                (s + c.sum_all().unwrap()).unwrap()
            };
            let mut adam = Adam::build(&map, 1e-3, 0.9, 0.999, 1e-8, fused).unwrap();
            adam.step(&loss(1.0).backward().unwrap()).unwrap();
            assert_eq!(adam.non_finite(), None, "fused {fused}");
            // A NaN gradient on `b` alone: only `b` turns NaN, and it is named.
            adam.step(&loss(f64::NAN).backward().unwrap()).unwrap();
            assert_eq!(adam.non_finite(), Some("b"), "fused {fused}");
            let b = vars["b"].as_tensor().to_vec1::<f32>().unwrap();
            assert!(b.iter().all(|v| v.is_nan()));
            let a = vars["a"].as_tensor().to_vec1::<f32>().unwrap();
            assert!(a.iter().all(|v| v.is_finite()));
            // The next step's report is its own: `b` stays NaN and is named again, once.
            adam.step(&loss(1.0).backward().unwrap()).unwrap();
            assert_eq!(adam.non_finite(), Some("b"), "fused {fused}");
        }
    }

    #[test]
    fn mismatched_gradient_is_refused() {
        let (map, var) = map_with(&[1.0f32, 2.0], DType::F32);
        let _map = map;
        let mut m = vec![0.0f32; 3];
        let mut v = vec![0.0f32; 3];
        let hyper = Hyper { beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0.1, inv_c2: 1.0 };
        let g = Tensor::new(&[1.0f32, 1.0], &Device::Cpu).unwrap();
        let err = fused_step(&var, &g, &mut m, &mut v, hyper).unwrap_err().to_string();
        assert!(err.contains("2 parameters, 2 gradients, 3 moments"), "{err}");
        let g64 = Tensor::new(&[1.0f64, 1.0], &Device::Cpu).unwrap();
        let err = fused_step(&var, &g64, &mut m[..2], &mut v[..2], hyper).unwrap_err();
        assert!(err.to_string().contains("dtype"), "{err}");
        // A refused update leaves the parameter as it was.
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    }
}
