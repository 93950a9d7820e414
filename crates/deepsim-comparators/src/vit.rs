//! Vision transformers as comparators: the image tower of OpenAI's CLIP ViT-B/32 and DINOv2
//! ViT-S/14, in the key layouts of their Hugging Face checkpoints, differentiable with respect
//! to the input (every layer norm and softmax runs through deepsim-kernels, whose backward
//! candle-nn's fused versions lack).

use std::path::Path;

use candle::{Device, Tensor, D};
use candle_nn::VarBuilder;
use deepsim_kernels::{
    gelu_erf, layer_norm, linear, quick_gelu, softmax_last_dim, ChannelAffine, Conv2dConfig,
    FrozenConv2d, FrozenLinear,
};

use crate::comparator::{check_input, check_taps, in_order, Comparator};
use crate::error::{Error, Result};
use crate::tap::Tap;
use crate::weights::{self, Arch};

/// Which checkpoint's key names a [`Vit`] reads (the structure is the same: a patch
/// convolution, a class token, position embeddings, pre-norm blocks, a final norm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VitLayout {
    /// transformers' `CLIPVisionModelWithProjection` (the `vision_model.*` and
    /// `visual_projection.weight` tensors of a `CLIPModel` checkpoint such as
    /// `openai/clip-vit-base-patch32`).
    Clip,
    /// transformers' `Dinov2Model` as `facebook/dinov2-*` publish it
    /// (`embeddings.*`, `encoder.layer.N.attention.attention.query` …, `layernorm.*`).
    Dinov2,
}

/// The MLP's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gelu {
    /// CLIP's `quick_gelu`, `x·σ(1.702·x)`.
    Quick,
    /// The exact GELU, `x·Φ(x) = x·(1 + erf(x/√2))/2` (DINOv2's `gelu`).
    Exact,
}

/// How position embeddings meet a patch grid other than the one they were trained at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PositionEmbedding {
    /// Only the trained grid is accepted (CLIP, as transformers runs it by default).
    Fixed,
    /// The patch embeddings are resampled to the input's grid with PyTorch's bicubic
    /// interpolation (`F.interpolate(mode="bicubic", align_corners=False)`, no antialiasing),
    /// as transformers' `Dinov2Embeddings.interpolate_pos_encoding` does.
    Bicubic,
}

/// The image processor's steps in front of the network: the shorter side resized to
/// `shortest_edge` (the longer to `⌊shortest_edge · long / short⌋`) with antialiased bicubic
/// weights, the centre `crop`×`crop` cut at `⌊(size − crop) / 2⌋`, then `(x − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Length of the shorter side after resizing.
    pub shortest_edge: usize,
    /// Side of the square centre crop.
    pub crop: usize,
    /// Channel means (RGB) subtracted after the crop.
    pub mean: [f64; 3],
    /// Channel standard deviations (RGB) divided by.
    pub std: [f64; 3],
}

/// A vision transformer: every size and switch, so that tiny seeded models can be built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VitConfig {
    /// The key names of the checkpoint.
    pub layout: VitLayout,
    /// Token width D.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block (D must be a multiple).
    pub heads: usize,
    /// Side of the square patches (the patch convolution's kernel and stride).
    pub patch_size: usize,
    /// Side of the square images trained at: the position grid is `image_size / patch_size`.
    pub image_size: usize,
    /// The MLP's hidden width as a multiple of D.
    pub mlp_ratio: usize,
    /// Per-channel LayerScale on both residual branches (CaiT; DINOv2).
    pub layer_scale: bool,
    /// A linear projection (no bias) of the final class token to this width (CLIP's
    /// `visual_projection`); `None` keeps the normalized class token.
    pub projection_dim: Option<usize>,
    /// The MLP's activation.
    pub gelu: Gelu,
    /// A layer norm on the embedded tokens before the first block (CLIP's `pre_layrnorm`).
    pub pre_norm: bool,
    /// Whether the patch convolution has a bias.
    pub patch_bias: bool,
    /// Every layer norm's ε.
    pub layer_norm_eps: f64,
    /// Position embeddings at other grids.
    pub position: PositionEmbedding,
    /// The image processor's resize, crop and normalization.
    pub preprocess: Preprocess,
}

/// CLIP's channel statistics (`OPENAI_CLIP_MEAN`, `OPENAI_CLIP_STD`).
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// ImageNet's channel statistics.
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

impl VitConfig {
    /// OpenAI CLIP ViT-B/32's image tower (Radford et al. 2021, table 19): 224×224 in 32×32
    /// patches (no bias), D = 768, 12 blocks of 12 heads, quick-GELU MLP ×4, `pre_layrnorm`,
    /// `post_layernorm` on the class token, projection to 512; ε = 1e-5. Preprocessing:
    /// `CLIPImageProcessor`'s resize to 224, crop 224, CLIP's mean and std.
    pub fn clip_vit_b32() -> Self {
        Self {
            layout: VitLayout::Clip,
            hidden_size: 768,
            layers: 12,
            heads: 12,
            patch_size: 32,
            image_size: 224,
            mlp_ratio: 4,
            layer_scale: false,
            projection_dim: Some(512),
            gelu: Gelu::Quick,
            pre_norm: true,
            patch_bias: false,
            layer_norm_eps: 1e-5,
            position: PositionEmbedding::Fixed,
            preprocess: Preprocess {
                shortest_edge: 224,
                crop: 224,
                mean: CLIP_MEAN,
                std: CLIP_STD,
            },
        }
    }

    /// DINOv2 ViT-S/14 (Oquab et al. 2023, `facebook/dinov2-small`): 14×14 patches with bias,
    /// D = 384, 12 blocks of 6 heads with LayerScale, exact-GELU MLP ×4, position embeddings for
    /// a 37×37 grid (518×518) interpolated to the input's, a final layer norm; ε = 1e-6.
    /// Preprocessing: its `BitImageProcessor`'s resize to 256, crop 224, ImageNet mean and std.
    pub fn dinov2_vits14() -> Self {
        Self {
            layout: VitLayout::Dinov2,
            hidden_size: 384,
            layers: 12,
            heads: 6,
            patch_size: 14,
            image_size: 518,
            mlp_ratio: 4,
            layer_scale: true,
            projection_dim: None,
            gelu: Gelu::Exact,
            pre_norm: false,
            patch_bias: true,
            layer_norm_eps: 1e-6,
            position: PositionEmbedding::Bicubic,
            preprocess: Preprocess {
                shortest_edge: 256,
                crop: 224,
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
        }
    }

    /// Side of the trained position grid, `image_size / patch_size`.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Width of the [`Tap::Embedding`]: the projection's, else D.
    pub fn embedding_dim(&self) -> usize {
        self.projection_dim.unwrap_or(self.hidden_size)
    }

    /// Every tensor the network reads, `(name, shape)` under [`VitConfig::layout`]'s names (the
    /// checkpoint's), in a fixed order: what [`Arch::expected`] lists for the presets.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        tensor_shapes(self)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: String| Error::Config { what: "VitConfig".into(), reason };
        if self.hidden_size == 0 || self.heads == 0 || !self.hidden_size.is_multiple_of(self.heads)
        {
            return Err(bad(format!(
                "hidden_size {} must be a positive multiple of heads {}",
                self.hidden_size, self.heads
            )));
        }
        if self.patch_size == 0 || self.grid() == 0 || self.mlp_ratio == 0 {
            return Err(bad(format!(
                "patch_size {}, image_size {} and mlp_ratio {} must give a grid of at least one \
                 patch and an MLP",
                self.patch_size, self.image_size, self.mlp_ratio
            )));
        }
        if self.layers > 32 {
            return Err(bad(format!("{} layers; taps exist for at most 32", self.layers)));
        }
        let p = &self.preprocess;
        if p.crop == 0 || p.shortest_edge < p.crop {
            return Err(bad(format!(
                "preprocess crops {} from a shorter side of {}",
                p.crop, p.shortest_edge
            )));
        }
        Ok(())
    }
}

/// The key names of one layout.
struct Keys {
    layout: VitLayout,
}

impl Keys {
    fn root(&self, name: &str) -> String {
        match self.layout {
            VitLayout::Clip => format!("vision_model.{name}"),
            VitLayout::Dinov2 => name.to_owned(),
        }
    }
    fn patch(&self) -> String {
        match self.layout {
            VitLayout::Clip => self.root("embeddings.patch_embedding"),
            VitLayout::Dinov2 => "embeddings.patch_embeddings.projection".into(),
        }
    }
    /// The class token: its key and whether it is stored `[1, 1, D]` (else `[D]`).
    fn class_token(&self) -> (String, bool) {
        match self.layout {
            VitLayout::Clip => (self.root("embeddings.class_embedding"), false),
            VitLayout::Dinov2 => ("embeddings.cls_token".into(), true),
        }
    }
    /// The position embeddings: key and whether they are stored `[1, T, D]` (else `[T, D]`).
    fn position(&self) -> (String, bool) {
        match self.layout {
            VitLayout::Clip => (self.root("embeddings.position_embedding.weight"), false),
            VitLayout::Dinov2 => ("embeddings.position_embeddings".into(), true),
        }
    }
    fn pre_norm(&self) -> String {
        self.root("pre_layrnorm")
    }
    fn block(&self, i: usize) -> String {
        match self.layout {
            VitLayout::Clip => self.root(&format!("encoder.layers.{i}")),
            VitLayout::Dinov2 => format!("encoder.layer.{i}"),
        }
    }
    /// Inside a block: norm1, query, key, value, output, norm2.
    fn block_parts(&self) -> [&'static str; 6] {
        match self.layout {
            VitLayout::Clip => [
                "layer_norm1",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
                "layer_norm2",
            ],
            VitLayout::Dinov2 => [
                "norm1",
                "attention.attention.query",
                "attention.attention.key",
                "attention.attention.value",
                "attention.output.dense",
                "norm2",
            ],
        }
    }
    fn final_norm(&self) -> String {
        match self.layout {
            VitLayout::Clip => self.root("post_layernorm"),
            VitLayout::Dinov2 => "layernorm".into(),
        }
    }
    fn projection(&self) -> &'static str {
        "visual_projection"
    }
}

/// Every tensor a checkpoint of `cfg` holds for the network, `(name, shape)`, in a fixed order
/// (what [`Arch::expected`] lists for the presets).
fn tensor_shapes(cfg: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let keys = Keys { layout: cfg.layout };
    let (d, p) = (cfg.hidden_size, cfg.patch_size);
    let tokens = cfg.grid() * cfg.grid() + 1;
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>| out.push((name, shape));
    let norm = |push: &mut dyn FnMut(String, Vec<usize>), name: String| {
        push(format!("{name}.weight"), vec![d]);
        push(format!("{name}.bias"), vec![d]);
    };
    let (class, class_3d) = keys.class_token();
    push(class, if class_3d { vec![1, 1, d] } else { vec![d] });
    push(format!("{}.weight", keys.patch()), vec![d, 3, p, p]);
    if cfg.patch_bias {
        push(format!("{}.bias", keys.patch()), vec![d]);
    }
    let (position, position_3d) = keys.position();
    push(position, if position_3d { vec![1, tokens, d] } else { vec![tokens, d] });
    if cfg.pre_norm {
        norm(&mut push, keys.pre_norm());
    }
    let hidden = d * cfg.mlp_ratio;
    let [norm1, q, k, v, o, norm2] = keys.block_parts();
    for i in 0..cfg.layers {
        let b = keys.block(i);
        norm(&mut push, format!("{b}.{norm1}"));
        for proj in [q, k, v, o] {
            push(format!("{b}.{proj}.weight"), vec![d, d]);
            push(format!("{b}.{proj}.bias"), vec![d]);
        }
        if cfg.layer_scale {
            push(format!("{b}.layer_scale1.lambda1"), vec![d]);
        }
        norm(&mut push, format!("{b}.{norm2}"));
        push(format!("{b}.mlp.fc1.weight"), vec![hidden, d]);
        push(format!("{b}.mlp.fc1.bias"), vec![hidden]);
        push(format!("{b}.mlp.fc2.weight"), vec![d, hidden]);
        push(format!("{b}.mlp.fc2.bias"), vec![d]);
        if cfg.layer_scale {
            push(format!("{b}.layer_scale2.lambda1"), vec![d]);
        }
    }
    norm(&mut push, keys.final_norm());
    if let Some(e) = cfg.projection_dim {
        push(format!("{}.weight", keys.projection()), vec![e, d]);
    }
    out
}

/// A layer norm's scale and shift.
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn new(vb: &VarBuilder, name: &str, d: usize, eps: f64) -> Result<Self> {
        let vb = vb.pp(name);
        Ok(Self { weight: vb.get(d, "weight")?.detach(), bias: vb.get(d, "bias")?.detach(), eps })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(x, &self.weight, &self.bias, self.eps)?)
    }
}

/// The frozen fully connected layer `name` (`[out, in]` weight, optionally a bias) over the
/// last dimension of `[…, in]` tokens.
fn dense(vb: &VarBuilder, name: &str, out: usize, inp: usize) -> Result<FrozenLinear> {
    let vb = vb.pp(name);
    Ok(FrozenLinear::new(vb.get((out, inp), "weight")?, Some(vb.get(out, "bias")?))?)
}

/// Multi-head self-attention (Vaswani et al. 2017, §3.2.2): query, key and value in one
/// product, softmax(QKᵀ/√d_head)·V per head, the output projection.
struct Attention {
    qkv: FrozenLinear,
    out: FrozenLinear,
    heads: usize,
}

impl Attention {
    /// `names`: the query, key, value and output projections, each `[D, D]` with a bias; the
    /// first three are stacked into one `[3D, D]` layer.
    fn new(vb: &VarBuilder, names: [&str; 4], d: usize, heads: usize) -> Result<Self> {
        let [q, k, v, o] = names;
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for name in [q, k, v] {
            let vb = vb.pp(name);
            weights.push(vb.get((d, d), "weight")?.detach());
            biases.push(vb.get(d, "bias")?.detach());
        }
        let qkv = FrozenLinear::new(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?))?;
        Ok(Self { qkv, out: dense(vb, o, d, d)?, heads })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self.qkv.forward(x)?.reshape((n, t, 3, self.heads, hd))?;
        let qkv = qkv.permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * (hd as f64).powf(-0.5))?;
        let (k, v) = (qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        let weights = softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let y = weights.matmul(&v)?.transpose(1, 2)?.reshape((n, t, d))?;
        Ok(self.out.forward(&y)?)
    }
}

/// One pre-norm block: `x + γ₁·attn(norm1(x))`, then `x + γ₂·mlp(norm2(x))` (γ = 1 without
/// LayerScale).
struct Block {
    norm1: Norm,
    attention: Attention,
    scale1: Option<Tensor>,
    norm2: Norm,
    fc1: FrozenLinear,
    fc2: FrozenLinear,
    scale2: Option<Tensor>,
    gelu: Gelu,
}

impl Block {
    fn new(vb: &VarBuilder, cfg: &VitConfig, keys: &Keys) -> Result<Self> {
        let d = cfg.hidden_size;
        let [norm1, q, k, v, o, norm2] = keys.block_parts();
        let eps = cfg.layer_norm_eps;
        let scale = |name: &str| -> Result<Option<Tensor>> {
            Ok(match cfg.layer_scale {
                true => Some(vb.pp(name).get(d, "lambda1")?.detach()),
                false => None,
            })
        };
        Ok(Self {
            norm1: Norm::new(vb, norm1, d, eps)?,
            attention: Attention::new(vb, [q, k, v, o], d, cfg.heads)?,
            scale1: scale("layer_scale1")?,
            norm2: Norm::new(vb, norm2, d, eps)?,
            fc1: dense(vb, "mlp.fc1", d * cfg.mlp_ratio, d)?,
            fc2: dense(vb, "mlp.fc2", d, d * cfg.mlp_ratio)?,
            scale2: scale("layer_scale2")?,
            gelu: cfg.gelu,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scaled = |y: Tensor, s: &Option<Tensor>| -> Result<Tensor> {
            Ok(match s {
                Some(s) => y.broadcast_mul(s)?,
                None => y,
            })
        };
        let a = self.attention.forward(&self.norm1.forward(x)?)?;
        let x = (x + scaled(a, &self.scale1)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let h = match self.gelu {
            Gelu::Quick => quick_gelu(&h)?,
            Gelu::Exact => gelu_erf(&h)?,
        };
        let m = self.fc2.forward(&h)?;
        Ok((&x + scaled(m, &self.scale2)?)?)
    }
}

/// A vision transformer (Dosovitskiy et al. 2021) with frozen weights, as a comparator: the
/// CLIP ViT-B/32 image tower or DINOv2 ViT-S/14 ([`VitPreset`]), or any [`VitConfig`].
///
/// Input: RGB [0, 1], any batch, at least `patch_size` on each side; each model's image
/// processor is applied first ([`Vit::preprocess`]: resize, centre crop, normalization), so
/// the blocks see `crop`×`crop` pixels. Taps: [`Tap::Block`]`(i)`, the token sequence after
/// block `i` `[N, 1 + patches, D]` (class token first); [`Tap::BlockCls`]`(i)`, its class token
/// `[N, D]`; [`Tap::Embedding`], the image embedding `[N, E]` (CLIP: `image_embeds`, the
/// projected `post_layernorm` of the class token; DINOv2: `pooler_output`, the class token
/// after the final layer norm). Gradients reach the input through every layer.
pub struct Vit {
    name: String,
    cfg: VitConfig,
    patch: FrozenConv2d,
    class_token: Tensor,
    position: Tensor,
    pre_norm: Option<Norm>,
    blocks: Vec<Block>,
    final_norm: Norm,
    projection: Option<Tensor>,
    normalize: ChannelAffine,
    taps: Vec<Tap>,
}

/// The pretrained vision transformers [`Vit::pretrained`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VitPreset {
    /// `clip-vit-b32`: [`VitConfig::clip_vit_b32`], weights `openai/clip-vit-base-patch32`.
    ClipVitB32,
    /// `dinov2-vits14`: [`VitConfig::dinov2_vits14`], weights `facebook/dinov2-small`.
    Dinov2VitS14,
}

impl VitPreset {
    /// Both presets.
    pub const ALL: [VitPreset; 2] = [VitPreset::ClipVitB32, VitPreset::Dinov2VitS14];

    /// `clip-vit-b32` or `dinov2-vits14`: the comparator's and the weights' name.
    pub fn name(self) -> &'static str {
        self.arch().name()
    }

    /// The weights layout.
    pub fn arch(self) -> Arch {
        match self {
            VitPreset::ClipVitB32 => Arch::ClipVitB32,
            VitPreset::Dinov2VitS14 => Arch::Dinov2VitS14,
        }
    }

    /// The network's configuration.
    pub fn config(self) -> VitConfig {
        match self {
            VitPreset::ClipVitB32 => VitConfig::clip_vit_b32(),
            VitPreset::Dinov2VitS14 => VitConfig::dinov2_vits14(),
        }
    }
}

impl Vit {
    /// Builds the network from weights under `cfg.layout`'s key names (the checkpoint's own),
    /// in the dtype of `vb` (f32 for a comparator; f64 serves gradient checks through
    /// [`Vit::encode`]). `name` is what [`Comparator::name`] reports.
    ///
    /// # Errors
    /// An inconsistent `cfg` ([`Error::Config`]); a tensor missing or misshapen (named).
    pub fn new(name: &str, cfg: VitConfig, vb: VarBuilder) -> Result<Self> {
        cfg.check()?;
        let keys = Keys { layout: cfg.layout };
        let (d, p) = (cfg.hidden_size, cfg.patch_size);
        let pv = vb.pp(keys.patch());
        let weight = pv.get((d, 3, p, p), "weight")?.detach();
        let bias = if cfg.patch_bias { Some(pv.get(d, "bias")?.detach()) } else { None };
        let patch = FrozenConv2d::new(weight, bias, Conv2dConfig::new(p, 0))?;
        let (class, class_3d) = keys.class_token();
        let class_token = match class_3d {
            true => vb.get((1, 1, d), &class)?,
            false => vb.get(d, &class)?,
        };
        let tokens = cfg.grid() * cfg.grid() + 1;
        let (position, position_3d) = keys.position();
        let position = match position_3d {
            true => vb.get((1, tokens, d), &position)?,
            false => vb.get((tokens, d), &position)?,
        };
        let eps = cfg.layer_norm_eps;
        let pre_norm =
            if cfg.pre_norm { Some(Norm::new(&vb, &keys.pre_norm(), d, eps)?) } else { None };
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(&vb.pp(keys.block(i)), &cfg, &keys))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = Norm::new(&vb, &keys.final_norm(), d, eps)?;
        let projection = match cfg.projection_dim {
            Some(e) => Some(vb.pp(keys.projection()).get((e, d), "weight")?.detach()),
            None => None,
        };
        let pre = &cfg.preprocess;
        let scale = pre.std.map(|s| 1.0 / s);
        let shift = [0, 1, 2].map(|c| -pre.mean[c] / pre.std[c]);
        let taps = (0..cfg.layers as u8)
            .flat_map(|i| [Tap::Block(i), Tap::BlockCls(i)])
            .chain([Tap::Embedding])
            .collect();
        Ok(Self {
            name: name.to_owned(),
            cfg,
            patch,
            class_token: class_token.reshape((1, 1, d))?.detach(),
            position: position.reshape((1, tokens, d))?.detach(),
            pre_norm,
            blocks,
            final_norm,
            projection,
            normalize: ChannelAffine::new(&scale, &shift)?,
            taps,
        })
    }

    /// `preset`'s converted weights from `path`, else the weights cache.
    ///
    /// # Errors
    /// [`Error::MissingWeights`] with the command that downloads and converts them; a file
    /// of another architecture, a malformed file or a missing tensor, named.
    pub fn pretrained(preset: VitPreset, path: Option<&Path>, device: &Device) -> Result<Self> {
        weights::build(preset.arch(), path, device, |vb| {
            Self::new(preset.name(), preset.config(), vb)
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The image processor's steps on RGB in [0, 1] (f32 or f64): the shorter side resized to
    /// `shortest_edge` and the centre `crop`×`crop` cut, as one pair of matrix products with
    /// antialiased bicubic weights (Keys' kernel, a = −0.5, stretched when shrinking: Pillow's
    /// and torchvision's `antialias=True` weights, [`deepsim_data::bicubic_weights`]), rows and
    /// columns outside the crop never computed; then `(x − mean) / std`. Linear in `x`, so
    /// differentiable; on float input it is the processor's own arithmetic (no 8-bit rounding
    /// between steps, no clamping).
    ///
    /// # Shapes
    /// `[N, 3, H, W]` → `[N, 3, crop, crop]`.
    ///
    /// # Errors
    /// A rank other than 4, an empty image, a channel count other than 3.
    pub fn preprocess(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if h == 0 || w == 0 {
            return Err(Error::Input {
                comparator: self.name.clone(),
                shape: x.dims().to_vec(),
                reason: "an empty image".into(),
            });
        }
        let pre = &self.cfg.preprocess;
        let (s, crop) = (pre.shortest_edge, pre.crop);
        let (rh, rw) = if h <= w { (s, s * w / h) } else { (s * h / w, s) };
        let (top, left) = ((rh - crop) / 2, (rw - crop) / 2);
        let axis = |from: usize, to: usize, start: usize| -> Result<Option<Tensor>> {
            if from == to && start == 0 && crop == from {
                return Ok(None);
            }
            let m = deepsim_data::bicubic_weights(from, to).map_err(|e| Error::Input {
                comparator: self.name.clone(),
                shape: x.dims().to_vec(),
                reason: e.to_string(),
            })?;
            let m = Tensor::from_vec(m, (to, from), x.device())?.narrow(0, start, crop)?;
            Ok(Some(m.to_dtype(x.dtype())?))
        };
        let mut y = x.clone();
        if let Some(mw) = axis(w, rw, left)? {
            y = y.broadcast_matmul(&mw.t()?)?;
        }
        if let Some(mh) = axis(h, rh, top)? {
            y = mh.broadcast_matmul(&y)?;
        }
        Ok(self.normalize.forward(&y)?)
    }

    /// The taps for normalized pixel values (the processor's output, any float dtype the
    /// weights have): no input check, no preprocessing. DINOv2 takes any size of at least one
    /// patch (pixels beyond the last whole patch are ignored, as by the patch convolution); a
    /// [`PositionEmbedding::Fixed`] model only `image_size`×`image_size`.
    ///
    /// # Shapes
    /// `[N, 3, H, W]` → one tensor per tap (see [`Vit`]).
    ///
    /// # Errors
    /// A rank other than 4, a size the position embeddings do not cover, an unknown tap.
    pub fn encode(&self, pixels: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_taps(&self.name, &self.taps, taps)?;
        let mut got: Vec<(Tap, Tensor)> = Vec::new();
        let mut keep = |tap: Tap, t: &dyn Fn() -> Result<Tensor>| -> Result<bool> {
            if taps.contains(&tap) {
                got.push((tap, t()?));
            }
            Ok(taps.iter().all(|t| got.iter().any(|(g, _)| g == t)))
        };
        let mut h = self.embed(pixels)?;
        if let Some(norm) = &self.pre_norm {
            h = norm.forward(&h)?;
        }
        let mut done = taps.is_empty();
        for (i, block) in self.blocks.iter().enumerate() {
            if done {
                break;
            }
            h = block.forward(&h)?;
            let i = i as u8;
            keep(Tap::Block(i), &|| Ok(h.clone()))?;
            done = keep(Tap::BlockCls(i), &|| Ok(h.narrow(1, 0, 1)?.squeeze(1)?))?;
        }
        if !done {
            let mut e = self.final_norm.forward(&h.narrow(1, 0, 1)?.squeeze(1)?)?;
            if let Some(p) = &self.projection {
                e = linear(&e, p, None)?;
            }
            keep(Tap::Embedding, &|| Ok(e.clone()))?;
        }
        Ok(in_order(taps, &got))
    }

    /// The image embeddings `[N, E]` of RGB [0, 1] images ([`Tap::Embedding`]).
    ///
    /// # Errors
    /// As [`Comparator::features`].
    pub fn embed_images(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.features(x, &[Tap::Embedding])?.remove(0))
    }

    /// The cosine distance of the embeddings of two batches of RGB [0, 1] images, pair by pair
    /// (DreamSim's distance, Fu et al. 2023, §3): [`embedding_cosine_distance`] of
    /// [`Vit::embed_images`]. Batches of one size run as one.
    ///
    /// # Shapes
    /// `x` `[N, 3, H, W]`, `y` `[N, 3, H', W']` → `[N]`.
    ///
    /// # Errors
    /// Either input breaks the contract; the batches differ in size.
    pub fn cosine_distance(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let (n, _, _) = check_input(&self.name, x, self.min_size())?;
        let (m, _, _) = check_input(&self.name, y, self.min_size())?;
        if n != m {
            return Err(Error::Input {
                comparator: self.name.clone(),
                shape: y.dims().to_vec(),
                reason: format!("batch of {m}, expected {n} as the first input's"),
            });
        }
        let (a, b) = if x.dims() == y.dims() {
            let e = self.embed_images(&Tensor::cat(&[x, y], 0)?)?;
            (e.narrow(0, 0, n)?, e.narrow(0, n, n)?)
        } else {
            (self.embed_images(x)?, self.embed_images(y)?)
        };
        embedding_cosine_distance(&a, &b)
    }

    /// Patch tokens with the class token in front, plus position embeddings: `[N, 1 + P, D]`.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let bad = |reason: String| Error::Input {
            comparator: self.name.clone(),
            shape: pixels.dims().to_vec(),
            reason,
        };
        let &[n, c, h, w] = pixels.dims() else {
            return Err(bad(format!("rank {}, expected 4 (NCHW)", pixels.rank())));
        };
        let p = self.cfg.patch_size;
        if c != 3 || h < p || w < p {
            return Err(bad(format!("expected 3 channels and at least {p}×{p} pixels")));
        }
        let (gh, gw, g) = (h / p, w / p, self.cfg.grid());
        if self.cfg.position == PositionEmbedding::Fixed && (gh, gw) != (g, g) {
            let s = self.cfg.image_size;
            return Err(bad(format!("the position embeddings are for {s}×{s} pixels only")));
        }
        let patches = self.patch.forward(pixels)?; // [N, D, gh, gw]
        let d = self.cfg.hidden_size;
        let tokens = patches.flatten_from(2)?.transpose(1, 2)?;
        let class = self.class_token.to_dtype(tokens.dtype())?.broadcast_as((n, 1, d))?;
        let h = Tensor::cat(&[&class, &tokens], 1)?;
        Ok(h.broadcast_add(&self.position_embeddings(gh, gw)?)?)
    }

    /// The position embeddings added for a `gh`×`gw` patch grid, `[1, 1 + gh·gw, D]`: the
    /// trained ones on the trained square grid, else the patch part resampled with PyTorch's
    /// bicubic interpolation (a = −0.75, no antialiasing, one precomputed matrix per axis),
    /// as transformers' `Dinov2Embeddings.interpolate_pos_encoding` does. The embeddings are
    /// weights, not image: only the image's gradient flows, through the patch tokens.
    ///
    /// # Errors
    /// Only candle's.
    pub fn position_embeddings(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let g = self.cfg.grid();
        if (gh, gw) == (g, g) {
            return Ok(self.position.clone());
        }
        let d = self.cfg.hidden_size;
        let (dev, dt) = (self.position.device(), self.position.dtype());
        let matrix = |from: usize, to: usize| -> Result<Tensor> {
            Ok(Tensor::from_vec(torch_bicubic(from, to), (to, from), dev)?.to_dtype(dt)?)
        };
        let grid = self.position.narrow(1, 1, g * g)?.reshape((g, g * d))?;
        let rows = matrix(g, gh)?.matmul(&grid)?; // [gh, g·D]
        let rows = rows.reshape((gh, g, d))?.transpose(0, 1)?.reshape((g, gh * d))?;
        let both = matrix(g, gw)?.matmul(&rows)?; // [gw, gh·D]
        let both = both.reshape((gw, gh, d))?.transpose(0, 1)?.reshape((1, gh * gw, d))?;
        Ok(Tensor::cat(&[&self.position.narrow(1, 0, 1)?, &both], 1)?)
    }
}

/// The `[output, input]` matrix of PyTorch's bicubic interpolation of one axis
/// (`F.interpolate(mode="bicubic", align_corners=False)` given an output size, no
/// antialiasing): output `i` reads source coordinate `x = (i + ½)·input/output − ½`, four taps
/// `⌊x⌋ − 1 … ⌊x⌋ + 2` clamped into the axis, Keys' cubic kernel with a = −0.75 (Keys 1981,
/// eq. 15), unnormalized.
pub(crate) fn torch_bicubic(input: usize, output: usize) -> Vec<f32> {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f32 / output as f32;
    let mut m = vec![0f32; output * input];
    for (i, row) in m.chunks_exact_mut(input).enumerate() {
        // PyTorch computes the coordinate in f32 (its opmath type for f32).
        let x = scale * (i as f32 + 0.5) - 0.5;
        let floor = (x.floor() as i64).min(input as i64 - 1);
        let t = f64::from((x - floor as f32).clamp(0.0, 1.0));
        let weights = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, wgt) in weights.into_iter().enumerate() {
            let j = (floor - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            row[j] += wgt as f32;
        }
    }
    m
}

/// `1 − cos(a_i, b_i)` for each row: the cosine distance of embeddings (DreamSim's, Fu et al.
/// 2023, §3), differentiable in both; norms below 1e-8 count as 1e-8 (as
/// `torch.nn.functional.cosine_similarity`'s ε).
///
/// # Shapes
/// `a`, `b` `[N, E]` → `[N]`.
///
/// # Errors
/// Ranks other than 2 or shapes that differ ([`Error::Input`]).
pub fn embedding_cosine_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() != 2 || a.dims() != b.dims() {
        return Err(Error::Input {
            comparator: "embedding_cosine_distance".into(),
            shape: b.dims().to_vec(),
            reason: format!("expected [N, E] embeddings of equal shapes, got {:?}", a.dims()),
        });
    }
    let norm = |t: &Tensor| -> Result<Tensor> {
        Ok(t.sqr()?.sum(D::Minus1)?.sqrt()?.clamp(1e-8, f64::MAX)?)
    };
    let cos = ((a * b)?.sum(D::Minus1)? / (norm(a)? * norm(b)?)?)?;
    Ok(cos.affine(-1.0, 1.0)?)
}

impl Comparator for Vit {
    fn name(&self) -> &str {
        &self.name
    }

    fn taps(&self) -> &[Tap] {
        &self.taps
    }

    fn min_size(&self) -> (usize, usize) {
        (self.cfg.patch_size, self.cfg.patch_size)
    }

    fn resizes_input(&self) -> bool {
        true
    }

    fn features(&self, x: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        check_input(&self.name, x, self.min_size())?;
        check_taps(&self.name, &self.taps, taps)?;
        self.encode(&self.preprocess(x)?, taps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_bicubic_rows_sum_to_one_and_keep_a_grid() {
        for (i, o) in [(37, 16), (37, 60), (3, 5), (2, 7), (5, 1)] {
            let m = torch_bicubic(i, o);
            for row in m.chunks_exact(i) {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}→{o}: {s}");
            }
        }
        let m = torch_bicubic(4, 4);
        for (k, v) in m.iter().enumerate() {
            assert_eq!(*v, if k % 5 == 0 { 1.0 } else { 0.0 });
        }
    }

    #[test]
    fn tensor_shapes_count_published_parameters() {
        // transformers 5.25: sum(p.numel() for p in m.parameters()) and len(m.state_dict()) of
        // m = CLIPVisionModelWithProjection(CLIPVisionConfig(patch_size=32, projection_dim=512))
        // (87849216, 200) and of Dinov2Model(Dinov2Config(hidden_size=384,
        // num_attention_heads=6, image_size=518)) (22056576, 223), less its mask token.
        let count = |c: &VitConfig| -> usize {
            c.tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
        };
        assert_eq!(count(&VitConfig::clip_vit_b32()), 87_849_216);
        assert_eq!(count(&VitConfig::dinov2_vits14()), 22_056_576 - 384);
        assert_eq!(tensor_shapes(&VitConfig::clip_vit_b32()).len(), 200);
        assert_eq!(tensor_shapes(&VitConfig::dinov2_vits14()).len(), 223 - 1);
    }
}
