//! Comparators for deepsim: the networks whose features a perceptual loss compares, and the
//! weights they load.
//!
//! Networks ([`Comparator`]s with named [`Tap`]s): torchvision AlexNet, CaffeNet, the video
//! net of Wang & Gupta and AlexNet with seeded random weights ([`AlexNet`]), [`Vgg`] 16/19,
//! [`SqueezeNet`] 1.1, [`EfficientNetLite`] 0/1/2 (also ImageNet classifiers), the
//! shift-tolerant trunks of ST-LPIPS ([`ShiftTolerantNet`]), the vision transformers of CLIP
//! ViT-B/32 and DINOv2 ViT-S/14 ([`Vit`], with [`embedding_cosine_distance`]), and [`Lpips`]
//! over alex, vgg and squeeze and, as ST-LPIPS, over the shift-tolerant alex and vgg. All are frozen (backward
//! computes only the input gradient, through deepsim-kernels) and take NCHW f32 RGB in [0, 1]
//! of any batch and size above a minimum.
//!
//! The weights side ([`weights`]): readers for the files the networks' authors publish — PyTorch checkpoints in the zip and the legacy format (through a pickle
//! reader that executes nothing and honours only an allow-list of globals), Caffe
//! `.caffemodel` files (through prost), safetensors and Hub downloads — the conversion of each
//! into our key names with verification, and the cache from which comparators resolve weights
//! by name. `cargo xtask convert-weights` is its command-line front.
//!
//! ST-LPIPS as the loss of an image being optimized, with the trained weights that ship with
//! the repository (a clone needs no conversion):
//!
//! ```
//! use candle::{Device, Tensor, Var};
//! use deepsim_comparators::{Lpips, ShiftTolerantTrunk};
//!
//! # fn main() -> deepsim_comparators::Result<()> {
//! let metric = Lpips::pretrained_shift_tolerant(ShiftTolerantTrunk::Alex, None, &Device::Cpu)?;
//! let x = Var::rand(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu)?;
//! let target = Tensor::rand(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu)?;
//! let out = metric.forward(x.as_tensor(), &target)?;
//! assert_eq!(out.per_layer.len(), 5); // relu1 … relu5
//! let grads = out.distance.mean_all()?.backward()?;
//! assert_eq!(grads.get(x.as_tensor()).unwrap().dims(), &[2, 3, 64, 64]);
//! # Ok(())
//! # }
//! ```
//!
//! ```no_run
//! use deepsim_comparators::weights::{self, Arch};
//!
//! # fn main() -> deepsim_comparators::Result<()> {
//! // Resolve converted LPIPS-alex heads from the cache, or learn the command that makes them.
//! match weights::resolve(Arch::LpipsAlex, None) {
//!     Ok(path) => println!("weights at {}", path.display()),
//!     Err(e) => eprintln!("{e}"),
//! }
//! # Ok(())
//! # }
//! ```

mod alexnet;
mod chain;
mod comparator;
mod efficientnet;
mod error;
mod lpips;
mod registry;
pub mod seeded;
mod squeezenet;
mod stlpips;
mod tap;
mod vgg;
mod vit;
pub mod weights;

pub use alexnet::{AlexNet, AlexNetLayout};
pub use comparator::{check_input, Comparator};
pub use efficientnet::{imagenet_classes, EfficientNetLite, EfficientNetVariant};
pub use error::{Error, Result};
pub use lpips::{Lpips, LpipsOutput};
pub use registry::{by_name, COMPARATORS, LPIPS_METRICS};
pub use squeezenet::SqueezeNet;
pub use stlpips::{ShiftTolerantNet, ShiftTolerantTrunk};
pub use tap::Tap;
pub use vgg::{Vgg, VggDepth};
pub use vit::{
    embedding_cosine_distance, Gelu, PositionEmbedding, Preprocess, Vit, VitConfig, VitLayout,
    VitPreset,
};
