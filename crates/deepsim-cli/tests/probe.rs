//! `deepsim probe` end to end on Fashion-MNIST: the pixel baseline's accuracy, and a missing
//! checkpoint, a folder without the IDX files, a file that is not IDX and an empty request
//! refused by name.

mod common;
#[path = "../../deepsim-data/tests/common/mod.rs"]
mod data_common;

use common::{deepsim, scratch};

fn failure(args: &[&str]) -> String {
    let o = deepsim(args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stderr).unwrap()
}

#[test]
fn pixels_are_probed_and_bad_inputs_named() {
    let fm = data_common::fashion_mnist_dir();
    let fm = fm.to_str().unwrap();
    let dir = scratch("run");
    let json = dir.join("probe.json");
    let o = deepsim(&[
        "probe",
        "--pixels",
        "--data",
        fm,
        "--train",
        "2000",
        "--test",
        "1000",
        "--steps",
        "200",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let row = &report["rows"][0];
    assert_eq!(row["kind"], "pixels");
    assert_eq!(row["dim"], 784);
    // Logistic regression on Fashion-MNIST's pixels: about 84 % with all 60,000 training
    // images (Xiao et al. 2017's benchmark); fewer here, so somewhat lower.
    let acc = row["test_accuracy"].as_f64().unwrap();
    assert!((0.74..0.88).contains(&acc), "test accuracy {acc}");
    assert!(row["train_accuracy"].as_f64().unwrap() >= acc);

    let e = failure(&["probe", "--data", fm]);
    assert!(e.contains("nothing to probe"), "{e}");
    let missing = dir.join("missing.safetensors");
    let e = failure(&["probe", "--checkpoint", missing.to_str().unwrap(), "--data", fm]);
    assert!(e.contains("missing.safetensors"), "{e}");
    let empty = scratch("empty");
    let e = failure(&["probe", "--pixels", "--data", empty.to_str().unwrap()]);
    assert!(e.contains("deepsim-cli-probe-empty") && e.contains("train-images-idx3-ubyte"), "{e}");
    let fake = scratch("fake");
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        std::fs::write(fake.join(name), b"not an IDX file").unwrap();
    }
    let e = failure(&["probe", "--pixels", "--data", fake.to_str().unwrap()]);
    assert!(e.contains("fake/train-images-idx3-ubyte"), "{e}");
}
