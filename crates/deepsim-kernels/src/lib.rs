//! Tensor kernels for deepsim that candle 0.11 lacks or runs slowly on the CPU.
//!
//! | op | why it is here |
//! |---|---|
//! | [`max_pool2d`] | candle's max-pool backward fails when kernel ≠ stride (AlexNet's 3×3/2); no padding, no ceil mode |
//! | [`local_response_norm`] | candle has no LRN (CaffeNet, the paper's comparator, uses it) |
//! | [`conv2d`], [`conv_transpose2d`] | im2col/col2im + GEMM on the CPU, and Winograd where it saves work (F(4×4, 3×3) for 3×3 stride-1 kernels and for larger or strided ones over stacked sub-planes, F(4×4, 5×5) for a frozen layer's 5×5 ones, F(6×6, 3×3) for its 3×3 ones with 32 or more input channels, stacked ones counted, on large maps), for forward and backward; candle's CPU conv_transpose2d (also conv2d's input gradient) is a direct loop |
//! | [`bias_leaky_relu`] | a layer's bias and leaky ReLU in one pass each way (candle: a broadcast add, four ops, and a bias gradient by a slow strided reduction) |
//! | [`linear`] | a fully connected layer whose weight gradient comes out in the weight's layout (candle's `x·Wᵀ` backward adds a transposed view element by element) |
//! | [`FrozenConv2d`] | a convolution whose backward computes only the input gradient: the cost of a perceptual loss; Winograd as above, its kernels transformed once, or an FFT for stride-1 kernels of 7×7 and up over few channels (ST-LPIPS' 11×11 conv1) |
//! | [`FrozenLinear`] | a frozen fully connected layer holding its weight in both layouts, so that the forward product and the input gradient each get GEMM's fast (row-major) right operand |
//! | [`ChannelAffine`], [`value_range`] | input preprocessing and the [0, 1] check in one pass each (candle: 3–4 ops, and a backward that also differentiates the constants) |
//! | [`blur_pool2d`] | anti-aliased downsampling (reflection pad, binomial low-pass, subsample: ST-LPIPS' layer) in one separable pass; candle has no reflection padding and no grouped-conv backward |
//! | [`straight_through_clamp`] | a clamp with the identity's gradient that is exactly the clamp (`x + (clamp(x) − x).detach()` is not, in floating point, once `x` is large) |
//! | [`unit_weighted_sq_distance`] | LPIPS' per-layer distance map in one pass, instead of a dozen elementwise ops |
//! | [`layer_norm`], [`softmax_last_dim`] | a vision transformer's normalization and attention weights with a backward: candle-nn's fused versions have none and cut the gradient silently |
//!
//! Two helpers serve training loops: [`backward`] is candle's `loss.backward()` with the
//! weight gradients of these ops delivered into the gradient store directly (candle would
//! allocate a zero tensor per weight and add into it), and [`vectorized`] runs a loop compiled
//! for AVX-512 or AVX2 when the CPU has them, detected at run time.
//!
//! Every op is a candle custom op on the CPU (the CPU kernel is the reference) with a backward
//! pass, so it composes with candle's autograd. On CUDA and Metal the same functions run a
//! composite of candle built-ins with the same semantics, until device kernels arrive.
//!
//! All ops but the last two take NCHW tensors of dtype f32 or f64 and check their arguments up front: a bad rank,
//! a zero-sized dimension, a kernel larger than the padded input or another dtype is an
//! [`Error::InvalidArgument`] naming the op, the argument and the shape, never a panic.
//!
//! ```
//! use candle::{Device, Tensor};
//! use deepsim_kernels::{max_pool2d, MaxPool2dConfig};
//!
//! # fn main() -> deepsim_kernels::Result<()> {
//! let x = Tensor::randn(0f32, 1., (2, 64, 55, 55), &Device::Cpu)?;
//! // AlexNet's overlapping pool: 3×3 windows, stride 2.
//! let y = max_pool2d(&x, &MaxPool2dConfig::square(3, 2))?;
//! assert_eq!(y.dims(), &[2, 64, 27, 27]);
//! # Ok(())
//! # }
//! ```

mod affine;
mod bias;
mod blur;
mod check;
mod clamp;
mod conv;
mod depthwise;
mod error;
mod fft;
mod fresh;
mod gemm;
mod grads;
mod linear;
mod lrn;
mod norm;
mod packed;
mod pool;
mod simd;
mod stacking;
mod strided;
#[cfg(test)]
mod testing;
mod unit_distance;
mod winograd;

pub use affine::{value_range, ChannelAffine};
pub use bias::bias_leaky_relu;
pub use blur::{blur_pool2d, blur_pool2d_backward, BlurPool2dConfig};
pub use clamp::straight_through_clamp;
pub use conv::{
    conv2d, conv_transpose2d, Activation, Conv2dConfig, ConvAlgorithm, ConvTranspose2dConfig,
    FrozenConv2d,
};
pub use error::{Error, Result};
pub use grads::{backward, deliver_grad};
pub use linear::{linear, FrozenLinear};
pub use lrn::{local_response_norm, LrnConfig, LrnConvention};
pub use norm::{gelu_erf, layer_norm, quick_gelu, softmax_last_dim};
pub use pool::{max_pool2d, max_pool2d_backward, MaxPool2dConfig, PoolRounding};
pub use simd::{vector_isa, vectorized, VectorIsa};
pub use unit_distance::{unit_weighted_sq_distance, unit_weighted_sq_distance_backward};

/// Implementations built only from candle's built-in tensor ops, with the same semantics as the
/// CPU kernels. They are what non-CPU devices run today, and they are public so that tests can
/// hold them against the kernels on any device.
pub mod composite {
    pub use crate::blur::composite::blur_pool2d;
    pub use crate::clamp::composite::straight_through_clamp;
    pub use crate::conv::composite::{conv2d, conv_transpose2d};
    pub use crate::lrn::composite::local_response_norm;
    pub use crate::norm::composite::{layer_norm, quick_gelu, softmax_last_dim};
    pub use crate::pool::composite::max_pool2d;
}
