//! Named feature taps: the layers of a comparator whose activations a loss may compare.

/// A layer output of a comparator. AlexNet-family networks (torchvision AlexNet, CaffeNet,
/// VideoNet, random AlexNet) offer every tap below except `Norm1`/`Norm2`, which only the Caffe
/// layout has (its LRN layers follow the pools).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tap {
    /// conv1, before its ReLU.
    Conv1,
    /// conv1 after ReLU.
    Relu1,
    /// pool1 (3×3, stride 2).
    Pool1,
    /// norm1 (LRN after pool1; Caffe layout only).
    Norm1,
    /// conv2, before its ReLU.
    Conv2,
    /// conv2 after ReLU.
    Relu2,
    /// pool2.
    Pool2,
    /// norm2 (LRN after pool2; Caffe layout only).
    Norm2,
    /// conv3, before its ReLU.
    Conv3,
    /// conv3 after ReLU.
    Relu3,
    /// conv4, before its ReLU.
    Conv4,
    /// conv4 after ReLU.
    Relu4,
    /// conv5, before its ReLU.
    Conv5,
    /// conv5 after ReLU.
    Relu5,
    /// pool5: conv5 after pooling, the DeePSiM paper's default comparator layer.
    Pool5,
    /// fc6, before its ReLU.
    Fc6,
    /// fc6 after ReLU.
    Relu6,
    /// fc7, before its ReLU.
    Fc7,
    /// fc7 after ReLU.
    Relu7,
    /// fc8: the 1000 ImageNet logits.
    Fc8,
    /// EfficientNet: the stem (3×3 stride-2 conv, batch norm, ReLU6).
    Stem,
    /// EfficientNet: the output of MBConv block `i` (0-based; EfficientNet-Lite0 has 16).
    /// Vision transformers: the token sequence `[N, 1 + patches, D]` after block `i` (0-based,
    /// the checkpoint's `encoder.layer.i`), class token first.
    Block(u8),
    /// Vision transformers: the class token `[N, D]` of [`Tap::Block`]`(i)` (`block{i}.cls`).
    BlockCls(u8),
    /// Vision transformers: the image embedding `[N, E]` (CLIP's projected `image_embeds`,
    /// DINOv2's `pooler_output`).
    Embedding,
    /// EfficientNet: the head (1×1 conv to 1280 channels, batch norm, ReLU6).
    Head,
    /// A classifier's ImageNet logits (EfficientNet's `_fc`).
    Logits,
    /// VGG: `relu{stage}_{index}`, the ReLU after conv `index` (1-based) of stage `stage`
    /// (1–5), e.g. `Vgg(5, 3)` = relu5_3.
    Vgg(u8, u8),
    /// SqueezeNet 1.1: the output of fire module `n` (2–9, the paper's numbering).
    Fire(u8),
}

impl Tap {
    /// The tap's name as the command line and error messages spell it (`conv5`, `pool5`,
    /// `block3`).
    pub fn name(self) -> &'static str {
        const BLOCKS: [&str; 32] = [
            "block0", "block1", "block2", "block3", "block4", "block5", "block6", "block7",
            "block8", "block9", "block10", "block11", "block12", "block13", "block14", "block15",
            "block16", "block17", "block18", "block19", "block20", "block21", "block22", "block23",
            "block24", "block25", "block26", "block27", "block28", "block29", "block30", "block31",
        ];
        const CLS: [&str; 32] = [
            "block0.cls",
            "block1.cls",
            "block2.cls",
            "block3.cls",
            "block4.cls",
            "block5.cls",
            "block6.cls",
            "block7.cls",
            "block8.cls",
            "block9.cls",
            "block10.cls",
            "block11.cls",
            "block12.cls",
            "block13.cls",
            "block14.cls",
            "block15.cls",
            "block16.cls",
            "block17.cls",
            "block18.cls",
            "block19.cls",
            "block20.cls",
            "block21.cls",
            "block22.cls",
            "block23.cls",
            "block24.cls",
            "block25.cls",
            "block26.cls",
            "block27.cls",
            "block28.cls",
            "block29.cls",
            "block30.cls",
            "block31.cls",
        ];
        const VGG: [[&str; 4]; 5] = [
            ["relu1_1", "relu1_2", "relu1_3", "relu1_4"],
            ["relu2_1", "relu2_2", "relu2_3", "relu2_4"],
            ["relu3_1", "relu3_2", "relu3_3", "relu3_4"],
            ["relu4_1", "relu4_2", "relu4_3", "relu4_4"],
            ["relu5_1", "relu5_2", "relu5_3", "relu5_4"],
        ];
        const FIRE: [&str; 8] =
            ["fire2", "fire3", "fire4", "fire5", "fire6", "fire7", "fire8", "fire9"];
        match self {
            Tap::Vgg(s, i) => VGG
                .get((s as usize).wrapping_sub(1))
                .and_then(|r| r.get((i as usize).wrapping_sub(1)))
                .copied()
                .unwrap_or("relu?_?"),
            Tap::Fire(n) => FIRE.get((n as usize).wrapping_sub(2)).copied().unwrap_or("fire?"),
            Tap::Stem => "stem",
            Tap::Block(i) => BLOCKS.get(i as usize).copied().unwrap_or("block?"),
            Tap::BlockCls(i) => CLS.get(i as usize).copied().unwrap_or("block?.cls"),
            Tap::Embedding => "embedding",
            Tap::Head => "head",
            Tap::Logits => "logits",
            Tap::Conv1 => "conv1",
            Tap::Relu1 => "relu1",
            Tap::Pool1 => "pool1",
            Tap::Norm1 => "norm1",
            Tap::Conv2 => "conv2",
            Tap::Relu2 => "relu2",
            Tap::Pool2 => "pool2",
            Tap::Norm2 => "norm2",
            Tap::Conv3 => "conv3",
            Tap::Relu3 => "relu3",
            Tap::Conv4 => "conv4",
            Tap::Relu4 => "relu4",
            Tap::Conv5 => "conv5",
            Tap::Relu5 => "relu5",
            Tap::Pool5 => "pool5",
            Tap::Fc6 => "fc6",
            Tap::Relu6 => "relu6",
            Tap::Fc7 => "fc7",
            Tap::Relu7 => "relu7",
            Tap::Fc8 => "fc8",
        }
    }

    /// The taps of the AlexNet family, shallow to deep.
    pub const ALEXNET: [Tap; 20] = [
        Tap::Conv1,
        Tap::Relu1,
        Tap::Pool1,
        Tap::Norm1,
        Tap::Conv2,
        Tap::Relu2,
        Tap::Pool2,
        Tap::Norm2,
        Tap::Conv3,
        Tap::Relu3,
        Tap::Conv4,
        Tap::Relu4,
        Tap::Conv5,
        Tap::Relu5,
        Tap::Pool5,
        Tap::Fc6,
        Tap::Relu6,
        Tap::Fc7,
        Tap::Relu7,
        Tap::Fc8,
    ];

    /// The tap called `name`, if any.
    pub fn from_name(name: &str) -> Option<Tap> {
        if let Some(i) = name
            .strip_prefix("block")
            .and_then(|r| r.strip_suffix(".cls"))
            .and_then(|i| i.parse::<u8>().ok())
        {
            return (i < 32).then_some(Tap::BlockCls(i));
        }
        if let Some(i) = name.strip_prefix("block").and_then(|i| i.parse::<u8>().ok()) {
            return (i < 32).then_some(Tap::Block(i));
        }
        if let Some(n) = name.strip_prefix("fire").and_then(|n| n.parse::<u8>().ok()) {
            return (2..=9).contains(&n).then_some(Tap::Fire(n));
        }
        if let Some((s, i)) = name.strip_prefix("relu").and_then(|r| r.split_once('_')) {
            let (s, i) = (s.parse::<u8>().ok()?, i.parse::<u8>().ok()?);
            return ((1..=5).contains(&s) && (1..=4).contains(&i)).then_some(Tap::Vgg(s, i));
        }
        Tap::ALEXNET
            .into_iter()
            .chain([Tap::Stem, Tap::Head, Tap::Logits, Tap::Embedding])
            .find(|t| t.name() == name)
    }
}
