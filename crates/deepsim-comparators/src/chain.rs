//! A frozen sequential trunk and a per-image head on its taps as one autograd node: the
//! forward pass runs preprocessing, convolutions (ReLU fused), max-pools, blur pools and ReLUs,
//! and the head; the backward pass runs the head's and the layers' backward itself,
//! accumulating each tap's gradient into the running one.
//!
//! Why: in candle's autograd every node's gradient starts as a zero tensor that the incoming
//! gradient is added to (an allocation, a fill and an add over the full activation), and a tap
//! read by both the head and the next layer takes one more add. For LPIPS-alex on 16 images at
//! 227×227 that bookkeeping and the page faults of its fresh buffers took 12–17 % of a
//! forward + backward step on two threads (`perf`); one node for the whole chain leaves one such
//! accumulation, at the input.

use std::sync::Mutex;

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use deepsim_kernels::{
    blur_pool2d, blur_pool2d_backward, max_pool2d, max_pool2d_backward, BlurPool2dConfig,
    ChannelAffine, FrozenConv2d, MaxPool2dConfig,
};

use crate::error::Result;

/// One layer of a sequential trunk.
#[derive(Clone, Debug)]
pub(crate) enum Stage {
    /// A frozen convolution (usually with its ReLU fused); `tapped`: its output is a tap.
    Conv { layer: FrozenConv2d, tapped: bool },
    /// A max-pool (never tapped here).
    Pool(MaxPool2dConfig),
    /// An anti-aliased downsampling (never tapped here).
    Blur(BlurPool2dConfig),
    /// A ReLU of its own (after a blur, where it cannot be fused into the convolution).
    Relu { tapped: bool },
}

impl Stage {
    pub(crate) fn tapped(&self) -> bool {
        matches!(self, Stage::Conv { tapped: true, .. } | Stage::Relu { tapped: true })
    }

    /// The output length along an axis of `len` pixels (square kernels, equal strides), `None`
    /// when the stage does not fit.
    pub(crate) fn out_len(&self, len: usize) -> Option<usize> {
        match self {
            Stage::Conv { layer, .. } => {
                let cfg = layer.config();
                let k = layer.weight().dims().get(2).copied()?;
                let span = cfg.dilation.0 * (k - 1) + 1;
                Some((len + 2 * cfg.padding.0).checked_sub(span)? / cfg.stride.0 + 1)
            }
            Stage::Pool(cfg) => cfg.out_len(0, len),
            Stage::Blur(cfg) => cfg.out_len(len),
            Stage::Relu { .. } => Some(len),
        }
    }

    /// The stage's output, through ops that candle's autograd differentiates.
    pub(crate) fn forward(&self, h: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Stage::Conv { layer, .. } => layer.forward(h)?,
            Stage::Pool(cfg) => max_pool2d(h, cfg)?,
            Stage::Blur(cfg) => blur_pool2d(h, cfg)?,
            Stage::Relu { .. } => h.relu()?,
        })
    }

    /// The gradient w.r.t. the stage's `input`, given its `output` and the output's gradient.
    fn backward(&self, input: &Tensor, output: &Tensor, grad: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Stage::Conv { layer, .. } => layer.backward(input, output, grad)?,
            Stage::Pool(cfg) => max_pool2d_backward(input, output, grad, cfg)?,
            Stage::Blur(cfg) => blur_pool2d_backward(grad, input.dims(), cfg)?,
            Stage::Relu { .. } => (grad * output.gt(0.0)?.to_dtype(grad.dtype())?)?,
        })
    }
}

/// A per-image function of the taps, `[N, L]`, with its gradient w.r.t. each tap.
pub(crate) trait TapHead: Send + Sync + 'static {
    /// The head's value `[N, L]` from the taps (in stage order).
    fn forward(&self, taps: &[Tensor]) -> Result<Tensor>;

    /// The gradient w.r.t. each tap, given the gradient `grad` `[N, L]` of the value.
    fn backward(&self, taps: &[Tensor], grad: &Tensor) -> Result<Vec<Tensor>>;
}

/// `head(trunk(pre(x)))` as one node; see the module docs.
///
/// # Errors
/// `x` is not on the CPU, or a layer or the head fails on it.
pub(crate) fn apply<H: TapHead>(
    x: &Tensor,
    pre: ChannelAffine,
    stages: Vec<Stage>,
    head: H,
) -> Result<Tensor> {
    let op = ChainOp { pre, stages, head, saved: Mutex::new(Vec::new()) };
    Ok(x.contiguous()?.apply_op1(op)?)
}

struct ChainOp<H> {
    pre: ChannelAffine,
    stages: Vec<Stage>,
    head: H,
    /// The preprocessed input and every stage's output, kept by the forward pass for the
    /// backward pass (as candle's graph would keep them).
    saved: Mutex<Vec<Tensor>>,
}

fn wrap(e: crate::Error) -> candle::Error {
    candle::Error::wrap(e)
}

/// A thread panicked while holding the saved activations.
fn poisoned() -> candle::Error {
    candle::Error::Msg("fused chain: saved activations poisoned by a panic".into())
}

/// A CPU tensor holding a copy of the elements of a contiguous storage view.
fn to_tensor(s: &CpuStorage, l: &Layout) -> candle::Result<Tensor> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle::Error::Msg("fused chain: the input is not contiguous".into()))?;
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], l.dims(), &Device::Cpu),
        CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], l.dims(), &Device::Cpu),
        other => Err(candle::Error::Msg(format!(
            "fused chain: dtype {:?}, expected f32 or f64",
            other.dtype()
        ))),
    }
}

impl<H: TapHead> ChainOp<H> {
    fn run(&self, x: Tensor) -> Result<Tensor> {
        let mut acts = vec![self.pre.forward(&x)?];
        let mut taps = Vec::new();
        for stage in &self.stages {
            let y = stage.forward(acts.last().expect("starts with the input"))?;
            if stage.tapped() {
                taps.push(y.clone());
            }
            acts.push(y);
        }
        let out = self.head.forward(&taps)?;
        *self.saved.lock().map_err(|_| poisoned())? = acts;
        Ok(out)
    }

    fn backward(&self, grad: &Tensor) -> Result<Option<Tensor>> {
        let acts = self.saved.lock().map_err(|_| poisoned())?.clone();
        let taps: Vec<Tensor> = (self.stages.iter().zip(&acts[1..]))
            .filter(|(s, _)| s.tapped())
            .map(|(_, a)| a.clone())
            .collect();
        let mut tap_grads = self.head.backward(&taps, grad)?;
        if tap_grads.len() != taps.len() {
            return Err(candle::Error::Msg(format!(
                "fused chain: the head gave {} tap gradients for {} taps",
                tap_grads.len(),
                taps.len()
            ))
            .into());
        }
        let mut g: Option<Tensor> = None;
        for (i, stage) in self.stages.iter().enumerate().rev() {
            if stage.tapped() {
                let t = tap_grads.pop().expect("counted above");
                g = Some(match g {
                    Some(g) => (g + t)?,
                    None => t,
                });
            }
            let Some(gi) = g.take() else { continue };
            g = Some(stage.backward(&acts[i], &acts[i + 1], &gi)?);
        }
        Ok(match g {
            Some(g) => Some(self.pre.backward(&g)?),
            None => None,
        })
    }
}

impl<H: TapHead> CustomOp1 for ChainOp<H> {
    fn name(&self) -> &'static str {
        "deepsim-fused-chain"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let out = self.run(to_tensor(s, l)?).map_err(wrap)?;
        // The value is small ([N, L]): copied out of its tensor.
        let flat = out.flatten_all()?;
        let storage = match out.dtype() {
            candle::DType::F64 => CpuStorage::F64(flat.to_vec1()?),
            _ => CpuStorage::F32(flat.to_dtype(candle::DType::F32)?.to_vec1()?),
        };
        Ok((storage, out.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        self.backward(grad).map_err(wrap)
    }
}
