//! The linear probe of a learned code (the article's "beyond mimicry"): a labelled image set
//! encoded by a model's frozen encoder, and a multinomial logistic regression fitted on the
//! standardized codes, whose held-out accuracy says how linearly the code separates classes.

use candle::{DType, Device, Tensor, D};
use deepsim_data::{stack, Dataset, Rng};

use crate::error::{Error, Result};
use crate::model::Model;

/// The settings of [`LinearProbe::fit`]: full-batch Adam on the mean softmax cross-entropy plus
/// `l2 / 2 · ‖W‖²` (the bias is not penalized), a fixed number of steps from zero weights, so a
/// fit is a function of the data alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeConfig {
    /// Full-batch Adam steps.
    pub steps: usize,
    /// Adam's learning rate (β₁ 0.9, β₂ 0.999, ε 1e-8).
    pub lr: f64,
    /// The L2 weight on the weights W.
    pub l2: f64,
}

impl Default for ProbeConfig {
    /// 500 steps at learning rate 0.01 with L2 1e-4: on standardized Fashion-MNIST codes the
    /// training loss has flattened by then.
    fn default() -> Self {
        ProbeConfig { steps: 500, lr: 0.01, l2: 1e-4 }
    }
}

impl ProbeConfig {
    fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::Probe("steps: must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Probe(format!("lr: must be finite and positive, got {}", self.lr)));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::Probe(format!("l2: must be finite and ≥ 0, got {}", self.l2)));
        }
        Ok(())
    }
}

/// A fitted linear classifier on standardized features: `argmax((x − mean) / std · Wᵀ + b)`.
#[derive(Clone, Debug)]
pub struct LinearProbe {
    /// Per-feature mean of the training features, `[1, D]`.
    mean: Tensor,
    /// Per-feature standard deviation of the training features (1 where it is 0), `[1, D]`.
    std: Tensor,
    /// `[K, D]`.
    weight: Tensor,
    /// `[1, K]`.
    bias: Tensor,
    /// The mean cross-entropy on the training features after the last step (no L2 term).
    train_loss: f64,
}

/// Checks `x` (`[N, D]`, finite, `N` ≥ 1) against `labels` (`N` of them, each below `classes`).
fn check(what: &str, x: &Tensor, labels: &[u32], classes: usize) -> Result<(usize, usize)> {
    let (n, d) = match *x.dims() {
        [n, d] if n > 0 && d > 0 => (n, d),
        _ => {
            return Err(Error::Probe(format!(
                "{what}: features must be [N, D] with N, D ≥ 1, got {:?}",
                x.dims()
            )))
        }
    };
    if labels.len() != n {
        return Err(Error::Probe(format!(
            "{what}: {} labels for {n} feature rows {:?}",
            labels.len(),
            x.dims()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Probe(format!("{what}: label {bad} but {classes} classes")));
    }
    // A sum, not a maximum: NaN propagates through it.
    let finite = x.to_dtype(DType::F64)?.abs()?.sum_all()?.to_scalar::<f64>()?.is_finite();
    if !finite {
        return Err(Error::Probe(format!("{what}: features {:?} hold NaN or ∞", x.dims())));
    }
    Ok((n, d))
}

/// The one-hot `[N, K]` matrix of `labels` in `dtype`.
fn one_hot(labels: &[u32], classes: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f64; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l as usize] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), device)?.to_dtype(dtype)?)
}

/// The mean softmax cross-entropy of `logits` (`[N, K]`) against `labels`, and its gradient
/// with respect to the logits, `(softmax(logits) − onehot(labels)) / N` — the quantity every
/// step of [`LinearProbe::fit`] back-propagates. Computed in the logits' dtype with the
/// row maximum subtracted first.
///
/// # Shapes
/// `logits`: `[N, K]`; `labels`: `N` values below `K` → (scalar, `[N, K]`).
///
/// # Errors
/// [`Error::Probe`] for logits that are not `[N, K]`, a label count other than `N`, a label
/// ≥ `K` or non-finite logits.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<(f64, Tensor)> {
    let classes = match *logits.dims() {
        [_, k] => k,
        _ => {
            return Err(Error::Probe(format!(
                "softmax_cross_entropy: logits must be [N, K], got {:?}",
                logits.dims()
            )))
        }
    };
    let (n, _) = check("softmax_cross_entropy", logits, labels, classes)?;
    let y = one_hot(labels, classes, logits.dtype(), logits.device())?;
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    let loss = mean_nll(&log_p, &y, n)?;
    let grad = ((log_p.exp()? - y)? / n as f64)?;
    Ok((loss, grad))
}

/// The mean negative log-likelihood of the one-hot labels `y` under the log-probabilities
/// `log_p` (both `[N, K]`), in f64.
fn mean_nll(log_p: &Tensor, y: &Tensor, n: usize) -> Result<f64> {
    Ok(-(log_p.mul(y)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? / n as f64))
}

impl LinearProbe {
    /// Fits the probe to `x` (`[N, D]`, any float dtype; the fit runs in it) with labels in
    /// `0..classes`: features standardized by their training mean and standard deviation,
    /// then [`ProbeConfig::steps`] full-batch Adam steps on the mean cross-entropy plus
    /// `l2 / 2 · ‖W‖²`, from W = 0, b = 0.
    ///
    /// # Shapes
    /// `x`: `[N, D]`; `labels`: `N` values.
    ///
    /// # Errors
    /// [`Error::Probe`] naming the argument: `x` not `[N, D]` or not finite, labels of
    /// another count or ≥ `classes`, fewer than 2 classes, or settings out of range.
    pub fn fit(x: &Tensor, labels: &[u32], classes: usize, cfg: &ProbeConfig) -> Result<Self> {
        cfg.validate()?;
        if classes < 2 {
            return Err(Error::Probe(format!("classes: need at least 2, got {classes}")));
        }
        let (n, d) = check("fit x", x, labels, classes)?;
        let (dtype, dev) = (x.dtype(), x.device());
        let mean = x.mean_keepdim(0)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(0)? / n as f64)?;
        // Constant features (a dead latent, a border pixel) keep std 1: they stay 0.
        let std = var.sqrt()?;
        let std = std.eq(0.0)?.where_cond(&Tensor::ones_like(&std)?, &std)?;
        let xs = centred.broadcast_div(&std)?;
        let y = one_hot(labels, classes, dtype, dev)?;
        let mut w = Tensor::zeros((classes, d), dtype, dev)?;
        let mut b = Tensor::zeros((1, classes), dtype, dev)?;
        let (mut mw, mut vw) = (w.zeros_like()?, w.zeros_like()?);
        let (mut mb, mut vb) = (b.zeros_like()?, b.zeros_like()?);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut train_loss = f64::NAN;
        for t in 1..=cfg.steps {
            let logits = xs.matmul(&w.t()?)?.broadcast_add(&b)?;
            let shifted = logits.broadcast_sub(&logits.max_keepdim(1)?)?;
            let e = shifted.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(1)?)?;
            if t == cfg.steps {
                let log_p = shifted.broadcast_sub(&e.sum_keepdim(1)?.log()?)?;
                train_loss = mean_nll(&log_p, &y, n)?;
            }
            let g = ((p - &y)? / n as f64)?;
            let gw = (g.t()?.matmul(&xs)? + (&w * cfg.l2)?)?;
            let gb = g.sum_keepdim(0)?;
            let c1 = 1.0 - b1.powi(t as i32);
            let c2 = 1.0 - b2.powi(t as i32);
            let adam = |param: &Tensor, grad: &Tensor, m: &mut Tensor, v: &mut Tensor| {
                *m = ((&*m * b1)? + (grad * (1.0 - b1))?)?;
                *v = ((&*v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
                let step = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + eps)?)?;
                param - (step * cfg.lr)?
            };
            w = adam(&w, &gw, &mut mw, &mut vw)?;
            b = adam(&b, &gb, &mut mb, &mut vb)?;
        }
        if !train_loss.is_finite() {
            return Err(Error::Probe(format!("fit: the training loss ended at {train_loss}")));
        }
        Ok(LinearProbe { mean, std, weight: w, bias: b, train_loss })
    }

    /// The logits of `x` (`[N, D]`, the training features' `D`), `[N, K]`.
    ///
    /// # Errors
    /// [`Error::Probe`] for features of another width or rank.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.weight.dim(1)?;
        if x.rank() != 2 || x.dim(1)? != d {
            return Err(Error::Probe(format!(
                "features must be [N, {d}] as in training, got {:?}",
                x.dims()
            )));
        }
        let x = x.to_dtype(self.weight.dtype())?.to_device(self.weight.device())?;
        let xs = x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?;
        Ok(xs.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    /// The predicted class of each row of `x`.
    ///
    /// # Errors
    /// As [`LinearProbe::logits`].
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        Ok(self.logits(x)?.argmax(1)?.to_vec1::<u32>()?)
    }

    /// The share of rows of `x` predicted as their label.
    ///
    /// # Errors
    /// As [`LinearProbe::logits`]; [`Error::Probe`] for a label count other than the rows'.
    pub fn accuracy(&self, x: &Tensor, labels: &[u32]) -> Result<f64> {
        let predicted = self.predict(x)?;
        if predicted.len() != labels.len() || labels.is_empty() {
            return Err(Error::Probe(format!(
                "accuracy: {} labels for {} feature rows",
                labels.len(),
                predicted.len()
            )));
        }
        let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
        Ok(right as f64 / labels.len() as f64)
    }

    /// The mean training cross-entropy after the last step (without the L2 term).
    pub fn train_loss(&self) -> f64 {
        self.train_loss
    }
}

/// Codes (or pixels) of a labelled set, with the labels, ready for [`LinearProbe`].
#[derive(Clone, Debug)]
pub struct Labelled {
    /// `[N, D]` f32 on the CPU.
    pub x: Tensor,
    /// The class of each row.
    pub labels: Vec<u32>,
}

/// The first `n` samples of `data` (deterministic transforms only), in batches of `batch`,
/// each batch mapped by `f` (images `[B, C, H, W]` → `[B, …]`), flattened per sample.
fn map_labelled(
    data: &dyn Dataset,
    n: usize,
    batch: usize,
    mut f: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Labelled> {
    // An error naming the set at sample `at`.
    let bad = |at: usize, why: String| Error::Probe(format!("{}: {why}", data.describe(at)));
    if n == 0 || n > data.len() || batch == 0 {
        return Err(bad(
            0,
            format!("asked for {n} samples in batches of {batch}, the set has {}", data.len()),
        ));
    }
    if !data.is_deterministic() {
        return Err(bad(
            0,
            "a probe needs a deterministic transform (no random crop or flip)".into(),
        ));
    }
    let mut rows = Vec::new();
    let mut labels = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let indices: Vec<usize> = (start..n.min(start + batch)).collect();
        let s = stack(data, &indices, |_| Rng::new(0))?;
        let got = s.labels.ok_or_else(|| bad(start, "the set has no labels".into()))?;
        if got.len() != indices.len() {
            let unusable = indices.len() - got.len();
            return Err(bad(
                start,
                format!("{unusable} of {} samples were unusable", indices.len()),
            ));
        }
        rows.push(f(&s.images)?.flatten_from(1)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
        labels.extend(got);
    }
    Ok(Labelled { x: Tensor::cat(&rows, 0)?, labels })
}

/// The codes [`Model::encode`] gives (a VAE's posterior mean μ; an inverter's encoder
/// features, flattened) for the first `n` samples of `data`, with their labels. `data` must
/// serve the model's input: `[3, side, side]` in [0, 1], a deterministic transform, labels.
///
/// # Shapes
/// → `x`: `[n, code]`.
///
/// # Errors
/// [`Error::Probe`] for `n` of 0 or beyond the set, a random transform, missing labels or
/// samples of another shape than the model takes; the data's and the model's errors.
pub fn encode_labelled(
    model: &Model,
    data: &dyn Dataset,
    n: usize,
    batch: usize,
) -> Result<Labelled> {
    let side = model.side();
    let shape = data.sample_shape();
    if shape != [3, side, side] {
        return Err(Error::Probe(format!(
            "{}: samples are {shape:?}, the model takes [3, {side}, {side}]",
            data.describe(0)
        )));
    }
    map_labelled(data, n, batch, |images| model.encode(images))
}

/// The pixels of the first `n` samples of `data` as rows, with their labels: the baseline a
/// code is judged against.
///
/// # Shapes
/// → `x`: `[n, C·H·W]`.
///
/// # Errors
/// As [`encode_labelled`], without the model's shape.
pub fn pixels_labelled(data: &dyn Dataset, n: usize) -> Result<Labelled> {
    map_labelled(data, n, 1000, |images| Ok(images.clone()))
}
