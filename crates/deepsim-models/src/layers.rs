//! The trainable layers the networks are built from: convolution, the paper's up-convolution
//! and the leaky ReLU, on deepsim-kernels' CPU convolutions (weight and input gradients).

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, Layout, Module, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use deepsim_kernels::{
    bias_leaky_relu, conv2d, conv_transpose2d, Conv2dConfig, ConvTranspose2dConfig,
};

use crate::error::Result;

/// The leaky ReLU `max(x, αx)` (α = 0.3 in the paper's generator), with gradient 1 or α on
/// either side of 0. The layers' `forward_leaky_relu` fuse it with their bias instead.
pub fn leaky_relu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    Ok((x.relu()? - (x.neg()?.relu()? * alpha)?)?)
}

/// A layer's bias, then a leaky ReLU of slope `alpha` (1: the bias alone), in one op.
fn epilogue(y: Tensor, bias: &Tensor, alpha: f64) -> candle::Result<Tensor> {
    bias_leaky_relu(&y, bias, alpha).map_err(candle::Error::wrap)
}

/// A channel count `n` scaled by a width multiplier (rounded, at least 1).
pub(crate) fn scaled(n: usize, width: f64) -> usize {
    ((n as f64 * width).round() as usize).max(1)
}

/// A fully connected layer `in_dim → out_dim`: He-initialized weights for a leaky ReLU of
/// slope `alpha`, zero bias; variables `weight` and `bias`.
pub(crate) fn linear(in_dim: usize, out_dim: usize, alpha: f64, vb: VarBuilder) -> Result<Dense> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", he_init(in_dim, alpha, 1.0))?;
    let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Dense { weight, bias })
}

/// A trainable fully connected layer `x·Wᵀ + b` on `[N, in]` inputs (`weight` `[out, in]`,
/// `bias` `[out]`, PyTorch's layout), on deepsim-kernels' [`deepsim_kernels::linear`], whose
/// weight gradient is computed in the weight's own layout.
#[derive(Clone, Debug)]
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// The same layer with its weights cut from the graph: gradients still flow to the input,
    /// none is computed for the weights.
    pub fn detached(&self) -> Self {
        Self { weight: self.weight.detach(), bias: self.bias.detach() }
    }

    /// `leaky_relu(x·Wᵀ + b, alpha)`, the bias and activation fused into one op.
    ///
    /// # Errors
    /// An input that is not `[N, in]`, or a negative or non-finite `alpha`.
    pub fn forward_leaky_relu(&self, x: &Tensor, alpha: f64) -> candle::Result<Tensor> {
        let y = deepsim_kernels::linear(x, &self.weight, None).map_err(candle::Error::wrap)?;
        epilogue(y, &self.bias, alpha)
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        deepsim_kernels::linear(x, &self.weight, Some(&self.bias)).map_err(candle::Error::wrap)
    }
}

/// He initialization for a layer followed by a leaky ReLU of slope `alpha` (normal, std
/// `√(2 / ((1 + α²)·fan_in))`), as the networks here use everywhere, times `gain` (1 but for a
/// generator's quiet last layer); biases start at 0 unless said otherwise.
pub(crate) fn he_init(fan_in: usize, alpha: f64, gain: f64) -> Init {
    let stdev = (2.0 / ((1.0 + alpha * alpha) * fan_in as f64)).sqrt();
    Init::Randn { mean: 0.0, stdev: stdev * gain }
}

/// A trainable 2-D convolution with bias (`weight` `[out, in, k, k]`, `bias` `[out]`).
#[derive(Clone, Debug)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    cfg: Conv2dConfig,
}

impl Conv {
    /// A `k×k` convolution from `in_c` to `out_c` channels with `stride` and `padding`, weights
    /// `weight`/`bias` under `vb`, He-initialized for a following leaky ReLU of slope `alpha`.
    ///
    /// # Errors
    /// From the variable builder (a loaded tensor of another shape).
    pub fn new(
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        padding: usize,
        alpha: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::new_scaled(in_c, out_c, k, stride, padding, alpha, 1.0, 0.0, vb)
    }

    /// [`Conv::new`] with He's weights multiplied by `gain` and the bias starting at `bias`
    /// (a generator's quiet last layer).
    ///
    /// # Errors
    /// From the variable builder.
    pub fn new_scaled(
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        padding: usize,
        alpha: f64,
        gain: f64,
        bias: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = he_init(in_c * k * k, alpha, gain);
        let weight = vb.get_with_hints((out_c, in_c, k, k), "weight", init)?;
        let bias = vb.get_with_hints(out_c, "bias", Init::Const(bias))?;
        Ok(Self { weight, bias, cfg: Conv2dConfig::new(stride, padding) })
    }

    /// The same layer with its weights cut from the graph: gradients still flow to the input,
    /// none is computed for the weights.
    pub fn detached(&self) -> Self {
        Self { weight: self.weight.detach(), bias: self.bias.detach(), cfg: self.cfg }
    }

    /// The convolution, then its bias and a leaky ReLU of slope `alpha` in one op (`alpha`
    /// 1: the bias alone; 0: a ReLU).
    ///
    /// # Errors
    /// An input that is not NCHW with the layer's input channels, or a negative or
    /// non-finite `alpha`.
    pub fn forward_leaky_relu(&self, x: &Tensor, alpha: f64) -> candle::Result<Tensor> {
        let y = conv2d(x, &self.weight, None, &self.cfg).map_err(candle::Error::wrap)?;
        epilogue(y, &self.bias, alpha)
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.forward_leaky_relu(x, 1.0)
    }
}

/// The paper's up-convolution (Dosovitskiy & Brox 2016, §3.1, after Dosovitskiy et al. 2015):
/// ×2 "bed of nails" upsampling — each pixel becomes the top-left corner of a 2×2 block of
/// zeros — followed by a 4×4 convolution; the output has twice the input's height and width.
///
/// It runs as the equivalent stride-2 transposed convolution (padding 1) of the flipped
/// kernel, which skips the three quarters of the products that meet the inserted zeros;
/// [`UpConv::forward_bed_of_nails`] computes the definition, and the tests hold the two equal.
#[derive(Clone, Debug)]
pub struct UpConv {
    /// The convolution's weight `[out, in, 4, 4]` as the definition applies it.
    weight: Tensor,
    bias: Tensor,
}

impl UpConv {
    /// An up-convolution from `in_c` to `out_c` channels, weights `weight` `[out, in, 4, 4]`
    /// and `bias` under `vb`.
    ///
    /// # Errors
    /// From the variable builder.
    pub fn new(in_c: usize, out_c: usize, alpha: f64, vb: VarBuilder) -> Result<Self> {
        Self::new_scaled(in_c, out_c, alpha, 1.0, 0.0, vb)
    }

    /// [`UpConv::new`] with He's weights multiplied by `gain` and the bias starting at
    /// `bias` (a generator's quiet last layer).
    ///
    /// # Errors
    /// From the variable builder.
    pub fn new_scaled(
        in_c: usize,
        out_c: usize,
        alpha: f64,
        gain: f64,
        bias: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        // A bed-of-nails input has one non-zero in four: the effective fan-in is a quarter.
        let init = he_init(in_c * 4, alpha, gain);
        let weight = vb.get_with_hints((out_c, in_c, 4, 4), "weight", init)?;
        let bias = vb.get_with_hints(out_c, "bias", Init::Const(bias))?;
        Ok(Self { weight, bias })
    }

    /// The definition: insert zeros, pad (2 before, 1 after), 4×4 convolution.
    ///
    /// # Errors
    /// From candle (an input that is not NCHW with the layer's input channels).
    pub fn forward_bed_of_nails(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        // [N, C, H, 1, W, 1] padded with zeros to [N, C, H, 2, W, 2] → [N, C, 2H, 2W].
        let x6 = x.reshape((n, c, h, 1, w, 1))?;
        let x6 = x6.pad_with_zeros(3, 0, 1)?.pad_with_zeros(5, 0, 1)?;
        let up = x6.reshape((n, c, 2 * h, 2 * w))?;
        let up = up.pad_with_zeros(2, 2, 1)?.pad_with_zeros(3, 2, 1)?;
        Ok(conv2d(&up, &self.weight, Some(&self.bias), &Conv2dConfig::new(1, 0))?)
    }

    /// The up-convolution, then its bias and a leaky ReLU of slope `alpha` in one op
    /// (`alpha` 1: the bias alone).
    ///
    /// # Errors
    /// An input that is not NCHW with the layer's input channels, or a negative or
    /// non-finite `alpha`.
    pub fn forward_leaky_relu(&self, x: &Tensor, alpha: f64) -> candle::Result<Tensor> {
        // conv_transpose2d's weight is [in, out, k, k], applied flipped relative to a
        // correlation: the definition's W[o, i, a, b] is W'[i, o, 3 − a, 3 − b].
        let w = if self.weight.device().is_cpu() {
            self.weight.contiguous()?.apply_op1(SwapFlip)?
        } else {
            self.weight.transpose(0, 1)?.contiguous()?.flip(&[2, 3])?
        };
        let y = conv_transpose2d(x, &w, None, &ConvTranspose2dConfig::new(2, 1))
            .map_err(candle::Error::wrap)?;
        epilogue(y, &self.bias, alpha)
    }
}

impl Module for UpConv {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.forward_leaky_relu(x, 1.0)
    }
}

/// `[A, B, k, l] → [B, A, k, l]` with both kernel axes reversed: `y[b, a, i, j] =
/// w[a, b, k − 1 − i, l − 1 − j]`, in one copy. candle's `transpose`, `contiguous` and `flip`
/// take three copies and two index ops forward, and index additions backward. The map is its
/// own inverse (applied to `[B, A, k, l]` it gives back the original order), so it is also its
/// own backward.
struct SwapFlip;

impl CustomOp1 for SwapFlip {
    fn name(&self) -> &'static str {
        "deepsim-swap-flip"
    }

    fn cpu_fwd(&self, w: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: candle::WithDType>(w: &[T], l: &Layout) -> candle::Result<Vec<T>> {
            let &[a, b, kh, kw] = l.dims() else {
                return Err(candle::Error::Msg(format!(
                    "UpConv weight: shape {:?}, expected rank 4",
                    l.dims()
                )));
            };
            let Some((start, end)) = l.contiguous_offsets() else {
                return Err(candle::Error::Msg("UpConv weight: not contiguous".into()));
            };
            let (w, k) = (&w[start..end], kh * kw);
            let mut out = vec![T::from_f64(0.0); w.len()];
            // Compiled for the CPU's vectors: a 4×4 kernel's reversal is one permute.
            deepsim_kernels::vectorized(
                #[inline(always)]
                || {
                    for (index, dst) in out.chunks_exact_mut(k).enumerate() {
                        let (j, i) = (index / a, index % a);
                        let src = &w[(i * b + j) * k..][..k];
                        for (d, &s) in dst.iter_mut().zip(src.iter().rev()) {
                            *d = s;
                        }
                    }
                },
            );
            Ok(out)
        }
        let out = match w {
            CpuStorage::F32(v) => CpuStorage::F32(go(v, l)?),
            CpuStorage::F64(v) => CpuStorage::F64(go(v, l)?),
            CpuStorage::BF16(v) => CpuStorage::BF16(go(v, l)?),
            CpuStorage::F16(v) => CpuStorage::F16(go(v, l)?),
            other => {
                return Err(candle::Error::Msg(format!(
                    "UpConv weight: dtype {:?}, expected a float",
                    other.dtype()
                )))
            }
        };
        let d = l.dims();
        Ok((out, Shape::from((d[1], d[0], d[2], d[3]))))
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        deepsim_kernels::deliver_grad(w, grad.contiguous()?.apply_op1(SwapFlip)?)
    }
}
