//! The linear probe: softmax cross-entropy against central differences and its closed form at
//! zero logits, a fit on separable Gaussian blobs, codes of Fashion-MNIST from an untrained
//! VAE, and bad inputs refused by name.

#[path = "../../deepsim-data/tests/common/mod.rs"]
mod data_common;

use candle::{DType, Device, Tensor};
use deepsim_data::{ColorMode, IdxDataset, Rng, Split, Transform};
use deepsim_train::{
    encode_labelled, pixels_labelled, softmax_cross_entropy, Error, LinearProbe, Model,
    ProbeConfig, TrainConfig,
};

/// `n` points per class around `k` centres in `d` dimensions (centre c: 4 on axis c, else 0),
/// unit-variance noise from `seed`.
fn blobs(k: usize, d: usize, n: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n * k {
        let c = i % k;
        for j in 0..d {
            x.push(if j == c { 4.0 } else { 0.0 } + rng.normal() as f32);
        }
        y.push(c as u32);
    }
    (Tensor::from_vec(x, (n * k, d), &Device::Cpu).unwrap(), y)
}

#[test]
fn cross_entropy_gradient_matches_central_differences() {
    let mut rng = Rng::new(3);
    let (n, k) = (5, 4);
    let v: Vec<f64> = (0..n * k).map(|_| 2.0 * rng.normal()).collect();
    let labels = [0u32, 3, 1, 1, 2];
    let logits = Tensor::from_vec(v.clone(), (n, k), &Device::Cpu).unwrap();
    let (loss, grad) = softmax_cross_entropy(&logits, &labels).unwrap();
    let grad: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-6;
    for i in 0..n * k {
        let at = |delta: f64| {
            let mut w = v.clone();
            w[i] += delta;
            let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
            softmax_cross_entropy(&t, &labels).unwrap().0
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!((numeric - grad[i]).abs() < 1e-8, "element {i}: {numeric} vs {}", grad[i]);
    }
    // The loss itself, from its definition: −mean log softmax at the label.
    let direct: f64 = (0..n)
        .map(|r| {
            let row = &v[r * k..(r + 1) * k];
            let z: f64 = row.iter().map(|x| x.exp()).sum();
            -(row[labels[r] as usize].exp() / z).ln()
        })
        .sum::<f64>()
        / n as f64;
    assert!((loss - direct).abs() < 1e-12, "{loss} vs {direct}");
}

#[test]
fn cross_entropy_at_zero_logits_is_log_k() {
    // Closed form: uniform softmax, loss ln K, gradient (1/K − onehot) / N. Large logits, which
    // overflow exp without the row maximum subtracted, give the same as zeros.
    let labels = [2u32, 0, 2];
    for offset in [0.0f32, 1000.0] {
        let logits =
            (Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap() + offset as f64).unwrap();
        let (loss, grad) = softmax_cross_entropy(&logits, &labels).unwrap();
        assert!((loss - 5f64.ln()).abs() < 1e-6, "{loss}");
        let grad: Vec<Vec<f32>> = grad.to_vec2().unwrap();
        for (r, row) in grad.iter().enumerate() {
            for (c, &g) in row.iter().enumerate() {
                let hot = if c == labels[r] as usize { 1.0 } else { 0.0 };
                assert!((g - (0.2 - hot) / 3.0).abs() < 1e-7, "[{r}, {c}] {g}");
            }
        }
    }
}

#[test]
fn separable_blobs_are_classified() {
    let (x, y) = blobs(4, 6, 200, 1);
    let (xt, yt) = blobs(4, 6, 250, 2);
    // Features on very different scales: standardization makes them equal to the probe.
    let scale = Tensor::new(&[[1000f32, 0.001, 1.0, 50.0, 1.0, 1.0]], &Device::Cpu).unwrap();
    let (x, xt) = (x.broadcast_mul(&scale).unwrap(), xt.broadcast_mul(&scale).unwrap());
    let probe = LinearProbe::fit(&x, &y, 4, &ProbeConfig::default()).unwrap();
    let acc = probe.accuracy(&xt, &yt).unwrap();
    // Bayes accuracy here is about 99.8 % (pairwise margin 4/√2 σ).
    assert!(acc >= 0.99, "held-out accuracy {acc}");
    assert!(probe.train_loss() < 0.1, "training loss {}", probe.train_loss());
}

#[test]
fn bad_inputs_are_refused_by_name() {
    let (x, y) = blobs(3, 4, 10, 1);
    let cfg = ProbeConfig::default();
    let msg = |e: Error| e.to_string();
    let e = msg(LinearProbe::fit(&x, &y[..29], 3, &cfg).unwrap_err());
    assert!(e.contains("29 labels for 30 feature rows"), "{e}");
    let e = msg(LinearProbe::fit(&x, &y, 2, &cfg).unwrap_err());
    assert!(e.contains("label 2 but 2 classes"), "{e}");
    let e = msg(LinearProbe::fit(&x.unsqueeze(0).unwrap(), &y, 3, &cfg).unwrap_err());
    assert!(e.contains("[N, D]") && e.contains("[1, 30, 4]"), "{e}");
    let nan = x.broadcast_mul(&Tensor::new(&[[1f32, f32::NAN, 1.0, 1.0]], &Device::Cpu).unwrap());
    let e = msg(LinearProbe::fit(&nan.unwrap(), &y, 3, &cfg).unwrap_err());
    assert!(e.contains("NaN"), "{e}");
    let e = msg(LinearProbe::fit(&x, &y, 3, &ProbeConfig { lr: -1.0, ..cfg }).unwrap_err());
    assert!(e.contains("lr"), "{e}");
    let probe = LinearProbe::fit(&x, &y, 3, &cfg).unwrap();
    let e = msg(probe.accuracy(&x.narrow(1, 0, 3).unwrap(), &y).unwrap_err());
    assert!(e.contains("[N, 4]") && e.contains("[30, 3]"), "{e}");
    let e = msg(softmax_cross_entropy(&x, &[0, 1]).unwrap_err());
    assert!(e.contains("2 labels for 30"), "{e}");
}

const TINY_VAE: &str = r#"
[run]
task = "vae"
out = "unused"
steps = 1
seed = 7

[data]
format = "idx"
train = "unused"
val = "unused"
resize = 64
crop = 64
flip = false

[vae]
latent = 8

[generator]
preset = "cpu_64"
width = 0.125

[loss]
lambda_feat = 0.0
lambda_adv = 0.0
lambda_img = 1.0
lambda_kl = 0.001
"#;

#[test]
fn fashion_mnist_codes_and_pixels() {
    let dir = data_common::fashion_mnist_dir();
    let model = Model::untrained(&TrainConfig::from_toml(TINY_VAE).unwrap()).unwrap();
    let rgb = IdxDataset::fashion_mnist(&dir, Split::Test, Transform::eval(64, 64), ColorMode::Rgb)
        .unwrap();
    // Codes do not depend on how the images are batched, and are the model's own μ.
    let a = encode_labelled(&model, &rgb, 20, 7).unwrap();
    let b = encode_labelled(&model, &rgb, 20, 20).unwrap();
    assert_eq!(a.x.dims(), [20, 8]);
    let diff = (&a.x - &b.x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>();
    assert!(diff.unwrap() < 1e-5);
    let labels = rgb.labels().unwrap();
    assert_eq!(a.labels, labels[..20].iter().map(|&l| l as u32).collect::<Vec<_>>());
    // The pixels at 28×28, as the IDX file holds them (its first test image is an ankle boot).
    let gray = IdxDataset::fashion_mnist(&dir, Split::Test, Transform::identity(), ColorMode::Gray)
        .unwrap();
    let p = pixels_labelled(&gray, 3).unwrap();
    assert_eq!(p.x.dims(), [3, 784]);
    assert_eq!(p.labels[0], 9);
    // The model refuses the 28×28 grey samples, naming both shapes.
    let e = encode_labelled(&model, &gray, 3, 3).unwrap_err().to_string();
    assert!(e.contains("[1, 28, 28]") && e.contains("[3, 64, 64]"), "{e}");
    let e = encode_labelled(&model, &rgb, 10_001, 100).unwrap_err().to_string();
    assert!(e.contains("10001") && e.contains("10000"), "{e}");
}
