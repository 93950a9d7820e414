//! Comparators by name, as the command line and configuration files spell them.

use std::path::Path;

use candle::Device;

use crate::alexnet::{AlexNet, AlexNetLayout};
use crate::comparator::Comparator;
use crate::efficientnet::{EfficientNetLite, EfficientNetVariant as V};
use crate::error::{Error, Result};
use crate::squeezenet::SqueezeNet;
use crate::stlpips::{ShiftTolerantNet, ShiftTolerantTrunk as St};
use crate::vgg::{Vgg, VggDepth};
use crate::vit::{Vit, VitPreset};
use crate::weights::Arch;

/// The names [`by_name`] knows.
pub const COMPARATORS: [&str; 15] = [
    "alexnet",
    "caffenet",
    "videonet",
    "vgg16",
    "vgg19",
    "squeezenet1_1",
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
    "stlpips-alex",
    "stlpips-vgg",
    "clip-vit-b32",
    "dinov2-vits14",
    "alexnet-random",
    "caffenet-random",
];

/// The comparator called `name`, with weights from `weights`, the cache or the copy that ships
/// with the repository (`*-random` take none: seeded with 0, the same everywhere).
/// `stlpips-alex` / `stlpips-vgg` are ST-LPIPS' shift-tolerant trunks, trained on human
/// judgments; `clip-vit-b32` and `dinov2-vits14` the vision transformers ([`Vit`]).
///
/// # Errors
/// An unknown name (listing the known ones); missing weights (with the convert command); a
/// malformed weights file.
pub fn by_name(
    name: &str,
    weights: Option<&Path>,
    device: &Device,
) -> Result<Box<dyn Comparator + Send + Sync>> {
    Ok(match name {
        "alexnet" => Box::new(AlexNet::pretrained(Arch::Alexnet, weights, device)?),
        "caffenet" => Box::new(AlexNet::pretrained(Arch::Caffenet, weights, device)?),
        "videonet" => Box::new(AlexNet::pretrained(Arch::Videonet, weights, device)?),
        "vgg16" => Box::new(Vgg::pretrained(VggDepth::Vgg16, weights, device)?),
        "vgg19" => Box::new(Vgg::pretrained(VggDepth::Vgg19, weights, device)?),
        "squeezenet1_1" => Box::new(SqueezeNet::pretrained(weights, device)?),
        "efficientnet-lite0" => Box::new(EfficientNetLite::pretrained(V::Lite0, weights, device)?),
        "efficientnet-lite1" => Box::new(EfficientNetLite::pretrained(V::Lite1, weights, device)?),
        "efficientnet-lite2" => Box::new(EfficientNetLite::pretrained(V::Lite2, weights, device)?),
        "stlpips-alex" => Box::new(ShiftTolerantNet::pretrained(St::Alex, weights, device)?),
        "stlpips-vgg" => Box::new(ShiftTolerantNet::pretrained(St::Vgg, weights, device)?),
        "clip-vit-b32" => Box::new(Vit::pretrained(VitPreset::ClipVitB32, weights, device)?),
        "dinov2-vits14" => Box::new(Vit::pretrained(VitPreset::Dinov2VitS14, weights, device)?),
        "alexnet-random" => Box::new(AlexNet::random(AlexNetLayout::Torchvision, 0, device)?),
        "caffenet-random" => Box::new(AlexNet::random(AlexNetLayout::Caffe, 0, device)?),
        other => {
            return Err(Error::UnknownArch { name: other.into(), known: COMPARATORS.join(", ") })
        }
    })
}

/// The learned metrics [`crate::Lpips::pretrained_by_name`] builds.
pub const LPIPS_METRICS: [&str; 5] =
    ["stlpips-alex", "stlpips-vgg", "lpips-alex", "lpips-vgg", "lpips-squeeze"];

impl crate::Lpips {
    /// The learned metric called `name` (one of [`LPIPS_METRICS`]) from converted weights:
    /// `weights` is the trunk for LPIPS and the whole model for ST-LPIPS, `heads` LPIPS's
    /// heads (ST-LPIPS keeps them in its one file); each defaults to the weights cache, then
    /// the shipped copy.
    ///
    /// # Errors
    /// [`Error::UnknownArch`] for another name; missing or malformed weights, named.
    pub fn pretrained_by_name(
        name: &str,
        weights: Option<&Path>,
        heads: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        use crate::Lpips;
        match name {
            "stlpips-alex" => Lpips::pretrained_shift_tolerant(St::Alex, weights, device),
            "stlpips-vgg" => Lpips::pretrained_shift_tolerant(St::Vgg, weights, device),
            "lpips-alex" => Lpips::pretrained_alex(weights, heads, device),
            "lpips-vgg" => Lpips::pretrained_vgg(weights, heads, device),
            "lpips-squeeze" => Lpips::pretrained_squeeze(weights, heads, device),
            other => {
                Err(Error::UnknownArch { name: other.into(), known: LPIPS_METRICS.join(", ") })
            }
        }
    }
}
