//! The weight readers against the seeded fixtures of `fixtures/export_weights_fixtures.py`
//! (PyTorch zip and legacy formats, Caffe V1 and current formats), and against hostile and
//! broken files: every one an error naming the problem, none a panic.

use std::path::{Path, PathBuf};

use deepsim_comparators::weights::{
    caffe, parse_bytes, pickle, pytorch, read_any, RawTensor, TensorSet,
};
use deepsim_comparators::Error;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn as_f64(t: &RawTensor) -> Vec<f64> {
    use pickle::StorageDtype as D;
    match t.dtype {
        D::I64 => t
            .data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        _ => t.to_f32().unwrap().into_iter().map(f64::from).collect(),
    }
}

fn check_checkpoint(set: &TensorSet, what: &str) {
    let expected = expected();
    let mut names = Vec::new();
    for (name, e) in expected.as_object().unwrap() {
        if name == "caffe" {
            continue;
        }
        names.push(name.clone());
        let t = set.get(name).unwrap_or_else(|| panic!("{what}: `{name}` missing"));
        let shape: Vec<usize> =
            e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{what}: `{name}` shape");
        let dtype = format!("{:?}", t.dtype).to_lowercase();
        let want_dtype = match e["dtype"].as_str().unwrap() {
            "float32" => "f32",
            "float16" => "f16",
            "int64" => "i64",
            other => panic!("fixture dtype {other}"),
        };
        assert_eq!(dtype, want_dtype, "{what}: `{name}` dtype");
        let want: Vec<f64> =
            e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = as_f64(t);
        assert_eq!(got.len(), want.len(), "{what}: `{name}` length");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // f32 and f16 values widen exactly to f64: equality, not closeness.
            assert_eq!(g, w, "{what}: `{name}`[{i}]");
        }
    }
    let mut got = set.names();
    got.sort();
    names.sort();
    assert_eq!(got, names, "{what}: exactly the fixture's tensors (non-tensor entries skipped)");
}

#[test]
fn reads_zip_checkpoint() {
    check_checkpoint(&pytorch::read_checkpoint(&fixture("tiny_zip.pth")).unwrap(), "zip");
}

#[test]
fn reads_legacy_checkpoint() {
    check_checkpoint(&pytorch::read_checkpoint(&fixture("tiny_legacy.pth")).unwrap(), "legacy");
}

#[test]
fn reads_caffemodels_in_both_layer_formats() {
    let expected = expected();
    for (file, key) in [("tiny_v1.caffemodel", "v1_shape"), ("tiny_v2.caffemodel", "v2_shape")] {
        let set = caffe::read_caffemodel(&fixture(file)).unwrap();
        assert_eq!(set.len(), 4, "{file}: blobs of conv1 and fc6 only");
        for (name, e) in expected["caffe"].as_object().unwrap() {
            let t = set.get(name).unwrap_or_else(|| panic!("{file}: `{name}` missing"));
            let shape: Vec<usize> =
                e[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(t.shape, shape, "{file}: `{name}` shape");
            let want: Vec<f64> =
                e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(as_f64(t), want, "{file}: `{name}` values");
        }
    }
}

fn bad(err: Error) -> String {
    match err {
        Error::BadFile { reason, .. } => reason,
        other => panic!("expected BadFile, got {other}"),
    }
}

#[test]
fn refuses_globals_outside_the_allow_list() {
    // protocol 2: cos\nsystem\n ('echo pwned',) REDUCE STOP — what a malicious .pth holds.
    let mut evil = vec![0x80, 0x02];
    evil.extend_from_slice(b"cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.");
    let err = bad(parse_bytes(Path::new("evil.pth"), &evil).unwrap_err());
    assert!(err.contains("global `os.system` is not allowed"), "{err}");

    // The same inside the legacy stream, after a valid header: replace the first allowed
    // global of the fixture with a forbidden one of the same length.
    let bytes = std::fs::read(fixture("tiny_legacy.pth")).unwrap();
    let at = bytes.windows(12).position(|w| w == b"collections\n").expect("OrderedDict global");
    let mut evil = bytes.clone();
    evil[at..at + 24].copy_from_slice(b"subprocess\nOrderedDict\n\n");
    let err = parse_bytes(Path::new("evil.pth"), &evil).unwrap_err().to_string();
    assert!(err.contains("evil.pth") && err.contains("subprocess"), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    for name in ["tiny_zip.pth", "tiny_legacy.pth", "tiny_v1.caffemodel", "tiny_v2.caffemodel"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let path = fixture(name);
        let full = parse_bytes(&path, &bytes).unwrap();
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            // A protobuf cut between two layers is a valid, shorter message: it may hold only
            // whole blobs of the full file; all other cuts are errors.
            match parse_bytes(&path, cut) {
                Err(Error::BadFile { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(!reason.is_empty());
                }
                Err(other) => panic!("{name} cut at {len}: unexpected error kind {other}"),
                Ok(set) => {
                    assert!(name.ends_with(".caffemodel"), "{name} cut at {len} parsed");
                    for (n, t) in set.iter() {
                        assert_eq!(Some(t), full.get(n), "{name} cut at {len}: `{n}` differs");
                    }
                }
            }
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Every single-byte change of the small fixtures (three values per byte): an error or a
    // (possibly different) parse, never a panic or a runaway allocation.
    for name in ["tiny_legacy.pth", "tiny_v1.caffemodel", "tiny_v2.caffemodel", "tiny_zip.pth"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for i in 0..bytes.len() {
            for v in [0x00, 0xff, bytes[i] ^ 0x01] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = parse_bytes(&fixture(name), &b);
            }
        }
    }
}

#[test]
fn storage_shorter_than_its_tensor_is_an_error() {
    // The legacy stream ends with the raw storages: drop the last byte and restore the length,
    // so the element count in front of the storage promises more than is there.
    let bytes = std::fs::read(fixture("tiny_legacy.pth")).unwrap();
    let err = bad(parse_bytes(Path::new("x.pth"), &bytes[..bytes.len() - 1]).unwrap_err());
    assert!(err.contains("do not fit"), "{err}");

    // A pickle whose tensor view (offset 2, 4 elements) runs past its 5-element storage.
    let pkl = legacy_with_view(5, 2, 4);
    let err = bad(parse_bytes(Path::new("x.pth"), &pkl).unwrap_err());
    assert!(err.contains("reaches past the 5 elements"), "{err}");
    // The same view inside the storage reads back.
    let ok = parse_bytes(Path::new("x.pth"), &legacy_with_view(6, 2, 4)).unwrap();
    assert_eq!(as_f64(ok.get("w").unwrap()), vec![2.0, 3.0, 4.0, 5.0]);
}

/// A legacy stream holding `{'w': tensor}` viewing `len` elements from `offset` of a float
/// storage of `numel` elements 0, 1, 2, …, written opcode by opcode.
fn legacy_with_view(numel: u8, offset: u8, len: u8) -> Vec<u8> {
    let mut b = Vec::new();
    // magic number (LONG1, 10 bytes), protocol 1001, sys info {}.
    b.extend_from_slice(&[
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ]);
    b.extend_from_slice(&[0x80, 0x02, b'M', 0xe9, 0x03, b'.']);
    b.extend_from_slice(&[0x80, 0x02, b'}', b'.']);
    // {'w': _rebuild_tensor_v2(pid('storage', FloatStorage, '0', 'cpu', numel), offset,
    //  (len,), (1,), False, OrderedDict())}
    b.extend_from_slice(&[0x80, 0x02, b'}', b'X', 1, 0, 0, 0, b'w']);
    b.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    b.extend_from_slice(
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu",
    );
    b.extend_from_slice(&[
        b'K', numel, b't', b'Q', b'K', offset, b'K', len, 0x85, b'K', 1, 0x85, 0x89,
    ]);
    b.extend_from_slice(b"ccollections\nOrderedDict\n)Rt");
    b.extend_from_slice(b"Rs.");
    // storage keys ['0'], then the storage: count, values.
    b.extend_from_slice(&[0x80, 0x02, b']', b'X', 1, 0, 0, 0, b'0', b'a', b'.']);
    b.extend_from_slice(&u64::from(numel).to_le_bytes());
    for v in 0..numel {
        b.extend_from_slice(&f32::from(v).to_le_bytes());
    }
    b
}

#[test]
fn protobuf_with_wrong_wire_types_is_an_error() {
    // Field 100 (`layer`, a message) sent as a varint; field 2 (`layers`) as a fixed32.
    for bytes in [vec![0xa0, 0x06, 0x01], vec![0x15, 1, 2, 3, 4]] {
        let err = bad(caffe::parse_caffemodel(&bytes)
            .map_err(|r| Error::BadFile { path: "m".into(), reason: r })
            .unwrap_err());
        assert!(err.contains("not a caffemodel"), "{err}");
    }
    // A blob whose values do not fill its shape.
    use prost::Message;
    let blob = caffe::BlobProto {
        shape: Some(caffe::BlobShape { dim: vec![2, 2] }),
        data: vec![1.0],
        ..Default::default()
    };
    let layer =
        caffe::LayerParameter { name: Some("conv1".into()), r#type: None, blobs: vec![blob] };
    let net = caffe::NetParameter { name: None, layers: vec![], layer: vec![layer] };
    let err = caffe::parse_caffemodel(&net.encode_to_vec()).unwrap_err();
    assert!(
        err.contains("conv1.weight") && err.contains("needs 4 values, the blob has 1"),
        "{err}"
    );
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    // A BINUNICODE string claiming 4 GB, a LONG_BINPUT-sized BINBYTES, a storage count of 2^61.
    for pkl in [
        vec![0x80, 0x02, b'X', 0xff, 0xff, 0xff, 0xff, b'a'],
        vec![0x80, 0x03, b'B', 0xff, 0xff, 0xff, 0x7f],
        vec![0x80, 0x04, 0x8d, 0, 0, 0, 0, 0, 0, 0, 0x20, b'.'],
    ] {
        let err = pickle::read(&pkl).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }
    let mut huge = legacy_with_view(6, 0, 4);
    let at = huge.len() - 6 * 4 - 8;
    huge[at..at + 8].copy_from_slice(&(1u64 << 61).to_le_bytes());
    let err = bad(parse_bytes(Path::new("x.pth"), &huge).unwrap_err());
    assert!(err.contains("holds 2305843009213693952 elements"), "{err}");
}

#[test]
fn other_files_are_named_in_errors() {
    let err = read_any(Path::new("/nonexistent/w.pth")).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("/nonexistent/w.pth"),
        "{err}"
    );
    let err = bad(parse_bytes(Path::new("x.pth"), b"GIF89a").unwrap_err());
    assert!(err.contains("not a PyTorch checkpoint"), "{err}");
    let err =
        bad(parse_bytes(Path::new("x.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
            .unwrap_err());
    assert!(err.contains("safetensors"), "{err}");
}
