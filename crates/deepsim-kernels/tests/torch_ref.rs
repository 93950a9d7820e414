//! Forward values and gradients against PyTorch: the cases of `fixtures/export_torch_ref.py`,
//! stored in `fixtures/torch_ref.safetensors` (float64; no torch at test time).

mod common;

use std::collections::{BTreeMap, HashMap};

use candle::{Device, Tensor, Var};
use common::{assert_close, values};
use deepsim_kernels::{
    conv2d, conv_transpose2d, local_response_norm, max_pool2d, Conv2dConfig, ConvTranspose2dConfig,
    LrnConfig, MaxPool2dConfig, PoolRounding,
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_ref.safetensors");

fn cases() -> BTreeMap<String, HashMap<String, Tensor>> {
    let all = candle::safetensors::load(FIXTURE, &Device::Cpu).expect("fixture loads");
    let mut cases: BTreeMap<String, HashMap<String, Tensor>> = BTreeMap::new();
    for (key, t) in all {
        let (case, field) = key.split_once('.').expect("keys are CASE.FIELD");
        cases.entry(case.to_string()).or_default().insert(field.to_string(), t);
    }
    cases
}

fn params(case: &HashMap<String, Tensor>) -> Vec<usize> {
    values(&case["params"]).iter().map(|&v| v as usize).collect()
}

/// Runs `f(x, w, b)` with every argument a `Var`, checks `y` and each gradient present in the case.
fn check(name: &str, case: &HashMap<String, Tensor>, f: impl Fn(&[Tensor]) -> Tensor) {
    let fields = ["x", "w", "b"];
    let vars: Vec<Var> =
        fields.iter().filter_map(|k| case.get(*k)).map(|t| Var::from_tensor(t).unwrap()).collect();
    let args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&args);
    assert_close(&y, &case["y"], 1e-10, 1e-10, &format!("{name}: forward"));
    let grads = (y * &case["g"]).unwrap().sum_all().unwrap().backward().unwrap();
    for (field, var) in fields.iter().zip(&vars) {
        let got = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no d{field}"));
        assert_close(got, &case[&format!("d{field}")], 1e-10, 1e-10, &format!("{name}: d{field}"));
    }
}

#[test]
fn every_fixture_case_matches_pytorch() {
    let cases = cases();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (name, case) in &cases {
        let prefix = name.split('_').next().unwrap();
        *seen.entry(prefix).or_default() += 1;
        match prefix {
            "lrn" => {
                let p = values(&case["params"]);
                let cfg = LrnConfig::torch(p[0] as usize, p[1], p[2], p[3]);
                check(name, case, |a| local_response_norm(&a[0], &cfg).unwrap());
            }
            "pool" => {
                let p = params(case);
                let cfg = MaxPool2dConfig {
                    kernel: (p[0], p[1]),
                    stride: (p[2], p[3]),
                    padding: (p[4], p[5]),
                    rounding: if p[6] == 1 { PoolRounding::Ceil } else { PoolRounding::Floor },
                };
                check(name, case, |a| max_pool2d(&a[0], &cfg).unwrap());
            }
            "conv" => {
                let p = params(case);
                let cfg = Conv2dConfig {
                    stride: (p[0], p[1]),
                    padding: (p[2], p[3]),
                    dilation: (p[4], p[5]),
                    groups: p[6],
                };
                check(name, case, |a| conv2d(&a[0], &a[1], Some(&a[2]), &cfg).unwrap());
            }
            "convt" => {
                let p = params(case);
                let cfg = ConvTranspose2dConfig {
                    stride: (p[0], p[1]),
                    padding: (p[2], p[3]),
                    dilation: (p[4], p[5]),
                    groups: p[6],
                    output_padding: (p[7], p[8]),
                };
                check(name, case, |a| conv_transpose2d(&a[0], &a[1], Some(&a[2]), &cfg).unwrap());
            }
            other => panic!("unknown fixture prefix {other} in {name}"),
        }
    }
    for prefix in ["lrn", "pool", "conv", "convt"] {
        assert!(seen.get(prefix).copied().unwrap_or(0) >= 4, "too few {prefix} cases: {seen:?}");
    }
}

#[test]
fn pool_fixture_has_ties() {
    // The first-maximum rule only matters where windows hold equal values: make sure they do.
    let cases = cases();
    let x = values(&cases["pool_caffe_ceil"]["x"]);
    let distinct: std::collections::BTreeSet<i64> = x.iter().map(|&v| v as i64).collect();
    assert!(distinct.len() <= 4 && x.len() > 100);
}
