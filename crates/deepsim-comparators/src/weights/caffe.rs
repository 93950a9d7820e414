//! Caffe `.caffemodel` files: the few messages of `caffe.proto` that hold weights, decoded by
//! prost (no hand-written wire-format code). Both the V1 `layers` field (2014 models such as
//! `bvlc_reference_caffenet`) and the current `layer` field are read, and blob shapes in both
//! the legacy num/channels/height/width fields and `BlobShape`.

use std::path::Path;

use prost::Message;

use super::{bad_file, read_file, RawTensor, TensorSet};
use crate::error::Result;

/// `caffe.NetParameter`, weights only.
#[derive(Clone, PartialEq, Message)]
pub struct NetParameter {
    /// Network name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Layers in the V1 format (`layers`).
    #[prost(message, repeated, tag = "2")]
    pub layers: Vec<V1LayerParameter>,
    /// Layers in the current format (`layer`).
    #[prost(message, repeated, tag = "100")]
    pub layer: Vec<LayerParameter>,
}

/// `caffe.LayerParameter`, weights only.
#[derive(Clone, PartialEq, Message)]
pub struct LayerParameter {
    /// Layer name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Layer type, e.g. `Convolution`.
    #[prost(string, optional, tag = "2")]
    pub r#type: Option<String>,
    /// Learned blobs: weight, then bias.
    #[prost(message, repeated, tag = "7")]
    pub blobs: Vec<BlobProto>,
}

/// `caffe.V1LayerParameter`, weights only.
#[derive(Clone, PartialEq, Message)]
pub struct V1LayerParameter {
    /// Layer name.
    #[prost(string, optional, tag = "4")]
    pub name: Option<String>,
    /// Layer type as the V1 enum (4 = CONVOLUTION, 14 = INNER_PRODUCT).
    #[prost(int32, optional, tag = "5")]
    pub r#type: Option<i32>,
    /// Learned blobs: weight, then bias.
    #[prost(message, repeated, tag = "6")]
    pub blobs: Vec<BlobProto>,
}

/// `caffe.BlobShape`.
#[derive(Clone, PartialEq, Message)]
pub struct BlobShape {
    /// Dimensions.
    #[prost(int64, repeated, tag = "1")]
    pub dim: Vec<i64>,
}

/// `caffe.BlobProto`.
#[derive(Clone, PartialEq, Message)]
pub struct BlobProto {
    /// Shape (current format).
    #[prost(message, optional, tag = "7")]
    pub shape: Option<BlobShape>,
    /// Values in f32.
    #[prost(float, repeated, tag = "5")]
    pub data: Vec<f32>,
    /// Values in f64.
    #[prost(double, repeated, tag = "8")]
    pub double_data: Vec<f64>,
    /// Legacy shape: num.
    #[prost(int32, optional, tag = "1")]
    pub num: Option<i32>,
    /// Legacy shape: channels.
    #[prost(int32, optional, tag = "2")]
    pub channels: Option<i32>,
    /// Legacy shape: height.
    #[prost(int32, optional, tag = "3")]
    pub height: Option<i32>,
    /// Legacy shape: width.
    #[prost(int32, optional, tag = "4")]
    pub width: Option<i32>,
}

/// Reads every learned blob of a caffemodel as `<layer>.weight` (blob 0), `<layer>.bias`
/// (blob 1) and `<layer>.blob<i>` beyond, in layer order, as f32 with the blob's own shape
/// (legacy shapes keep all four dims, e.g. an inner product's `[1, 1, out, in]`).
///
/// # Errors
/// [`Error::BadFile`](crate::Error::BadFile) naming the file when the protobuf does not decode
/// (truncated, wrong wire types) or a blob's values do not match its shape.
pub fn read_caffemodel(path: &Path) -> Result<TensorSet> {
    let bytes = read_file(path)?;
    parse_caffemodel(&bytes).map_err(|reason| bad_file(path, reason))
}

/// [`read_caffemodel`] on bytes in memory; the error is the problem alone.
pub fn parse_caffemodel(bytes: &[u8]) -> std::result::Result<TensorSet, String> {
    let net = NetParameter::decode(bytes).map_err(|e| format!("not a caffemodel: {e}"))?;
    let layers = net
        .layer
        .iter()
        .map(|l| (l.name.clone(), &l.blobs))
        .chain(net.layers.iter().map(|l| (l.name.clone(), &l.blobs)));
    let mut out = TensorSet::default();
    for (i, (name, blobs)) in layers.enumerate() {
        let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("layer{i}"));
        for (b, blob) in blobs.iter().enumerate() {
            let key = match b {
                0 => format!("{name}.weight"),
                1 => format!("{name}.bias"),
                _ => format!("{name}.blob{b}"),
            };
            let t = blob_tensor(blob).map_err(|e| format!("{key}: {e}"))?;
            out.insert(key, t)?;
        }
    }
    if out.is_empty() {
        return Err("caffemodel holds no learned blobs".into());
    }
    Ok(out)
}

fn blob_tensor(blob: &BlobProto) -> std::result::Result<RawTensor, String> {
    let shape: Vec<usize> = match &blob.shape {
        Some(s) => s
            .dim
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
            .collect::<std::result::Result<_, _>>()?,
        None => [blob.num, blob.channels, blob.height, blob.width]
            .iter()
            .map(|d| {
                usize::try_from(d.unwrap_or(0)).map_err(|_| format!("negative dimension {d:?}"))
            })
            .collect::<std::result::Result<_, _>>()?,
    };
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let values: Vec<f32> = if !blob.data.is_empty() {
        blob.data.clone()
    } else {
        blob.double_data.iter().map(|&v| v as f32).collect()
    };
    if values.len() != numel {
        return Err(format!("shape {shape:?} needs {numel} values, the blob has {}", values.len()));
    }
    Ok(RawTensor::from_f32(shape, &values))
}
