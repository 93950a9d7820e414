//! The weights cache under `$DEEPSIM_HOME` and the Hub's offline path. One test in its own
//! binary, because it sets process-wide environment variables.

mod common;

use deepsim_comparators::weights::{self, arch::convert_file, hub::HubFile, Arch};
use deepsim_comparators::Error;

#[test]
fn weights_resolve_from_the_cache_or_say_how_to_make_them() {
    let home = common::temp_dir("home");
    std::env::set_var("DEEPSIM_HOME", &home);
    assert_eq!(weights::cached_path(Arch::LpipsAlex), home.join("weights/lpips-alex.safetensors"));

    let err = weights::resolve(Arch::LpipsAlex, None).unwrap_err();
    assert!(matches!(err, Error::MissingWeights { .. }));
    let msg = err.to_string();
    assert!(msg.contains("cargo xtask convert-weights --arch lpips-alex --input"), "{msg}");
    assert!(
        msg.contains(&home.join("weights/lpips-alex.safetensors").display().to_string()),
        "{msg}"
    );

    convert_file(
        Arch::LpipsAlex,
        &common::lpips("v0.1", "alex"),
        &weights::cached_path(Arch::LpipsAlex),
    )
    .unwrap();
    assert_eq!(
        weights::resolve(Arch::LpipsAlex, None).unwrap(),
        weights::cached_path(Arch::LpipsAlex)
    );
    let explicit = home.join("elsewhere.safetensors");
    let err = weights::resolve(Arch::LpipsAlex, Some(&explicit)).unwrap_err().to_string();
    assert!(err.contains("--output") && err.contains("elsewhere.safetensors"), "{err}");

    // Offline, a Hub file is an error naming the address and where a manual download goes;
    // once the file is there, it is used without the network.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let file = HubFile::parse("timm/vgg16.tv_in1k").unwrap();
    let err = file.fetch().unwrap_err().to_string();
    assert!(
        err.contains("https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors"),
        "{err}"
    );
    assert!(err.contains(&file.manual_path().display().to_string()), "{err}");
    std::fs::create_dir_all(file.manual_path().parent().unwrap()).unwrap();
    std::fs::write(file.manual_path(), b"downloaded").unwrap();
    assert_eq!(file.fetch().unwrap(), file.manual_path());

    // The vision transformers' published files come through the same path: offline, the
    // address and the manual location; a manual download is converted into the cache (here a
    // file that is not the model, refused by name).
    let err = weights::download(Arch::Dinov2VitS14).unwrap_err().to_string();
    assert!(
        err.contains("https://huggingface.co/facebook/dinov2-small/resolve/main/model.safetensors"),
        "{err}"
    );
    let dino = Arch::Dinov2VitS14.hub_file().unwrap();
    std::fs::create_dir_all(dino.manual_path().parent().unwrap()).unwrap();
    let mut tiny = weights::TensorSet::default();
    tiny.insert("layernorm.weight".into(), weights::RawTensor::from_f32(vec![2], &[1.0, 1.0]))
        .unwrap();
    weights::write_safetensors_atomic(&dino.manual_path(), &tiny, Default::default()).unwrap();
    let err = weights::download(Arch::Dinov2VitS14).unwrap_err().to_string();
    assert!(err.contains("`layernorm.weight` has shape [2], expected [384]"), "{err}");
    let err = weights::download(Arch::LpipsAlex).unwrap_err().to_string();
    assert!(err.contains("not published on the Hub"), "{err}");
}
