//! The weights that ship with the repository (`data/weights`): each is the conversion of its
//! published file (tensor for tensor), its SHA-256 is the one `data/README.md` records, it is
//! found when the cache has none, a cached file wins over it, and a missing or truncated copy
//! is an error naming the file and the fix. One test in its own binary, because it sets
//! process-wide environment variables.

mod common;

use std::path::Path;

use candle::Device;
use deepsim_comparators::weights::{self, arch::convert_file, Arch, Origin};
use deepsim_comparators::{Error, Lpips, ShiftTolerantTrunk};

#[test]
fn shipped_weights_are_the_published_ones_and_resolve_last() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(repo.join("data/README.md")).unwrap();
    let home = common::temp_dir("shipped-home");
    std::env::set_var("DEEPSIM_HOME", &home);
    std::env::remove_var("DEEPSIM_SHIPPED_WEIGHTS");

    let sources = [
        (Arch::StlpipsAlex, common::stlpips("alex")),
        (Arch::EfficientnetLite0, common::efficientnet_lite0()),
    ];
    for (arch, source) in &sources {
        assert!(arch.ships());
        let (origin, path) = weights::locate(*arch, None).unwrap();
        assert_eq!(origin, Origin::Shipped, "{}", arch.name());
        assert_eq!(
            path,
            repo.join("data/weights")
                .canonicalize()
                .unwrap()
                .join(format!("{}.safetensors", arch.name()))
        );
        let sha = weights::sha256_file(&path).unwrap();
        assert!(
            readme.contains(&sha),
            "data/README.md does not record {}'s sha256 {sha}",
            arch.name()
        );
        // The same tensors as a fresh conversion of the published file.
        let fresh = home.join(format!("fresh-{}.safetensors", arch.name()));
        let want = convert_file(*arch, source, &fresh).unwrap();
        let got = weights::read_safetensors(&path).unwrap();
        assert_eq!(got.names().len(), want.names().len(), "{}", arch.name());
        for (name, t) in want.iter() {
            assert_eq!(got.get(name), Some(t), "{}: tensor {name}", arch.name());
        }
    }
    assert!(!Arch::StlpipsVgg.ships() && weights::shipped_path(Arch::StlpipsVgg).is_none());

    // A cached copy comes first.
    let cached = weights::cached_path(Arch::StlpipsAlex);
    convert_file(Arch::StlpipsAlex, &sources[0].1, &cached).unwrap();
    assert_eq!(weights::locate(Arch::StlpipsAlex, None).unwrap(), (Origin::Cache, cached.clone()));
    std::fs::remove_file(&cached).unwrap();

    // No shipped copy where it should be: the error says where it looked and both fixes.
    let empty = common::temp_dir("shipped-empty");
    std::env::set_var("DEEPSIM_SHIPPED_WEIGHTS", &empty);
    let err = Lpips::pretrained_shift_tolerant(ShiftTolerantTrunk::Alex, None, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, Error::MissingWeights { .. }));
    let msg = err.to_string();
    assert!(msg.contains("cargo xtask convert-weights --arch stlpips-alex --input"), "{msg}");
    assert!(msg.contains("git checkout -- data/weights/stlpips-alex.safetensors"), "{msg}");
    assert!(msg.contains(&empty.join("stlpips-alex.safetensors").display().to_string()), "{msg}");

    // A truncated shipped copy (an interrupted checkout): named, with the restore command.
    let bytes = std::fs::read(repo.join("data/weights/stlpips-alex.safetensors")).unwrap();
    std::fs::write(empty.join("stlpips-alex.safetensors"), &bytes[..1000]).unwrap();
    let msg = Lpips::pretrained_shift_tolerant(ShiftTolerantTrunk::Alex, None, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains(&empty.join("stlpips-alex.safetensors").display().to_string()), "{msg}");
    assert!(msg.contains("git checkout -- data/weights/stlpips-alex.safetensors"), "{msg}");
}
