//! The feature cache: built once, reused, rebuilt when comparator, tap or data change, resumed
//! after an interruption, and served with the loader's batches.

mod common;

use std::sync::Arc;

use candle::Tensor;
use common::{pattern, save, temp_dir};
use deepsim_data::{
    CacheKey, CacheOptions, CacheStatus, Dataset, Error, FeatureCache, FolderConfig, ImageFolder,
    Loader, LoaderConfig, Position, Rng, Transform,
};

fn images(name: &str, n: u32) -> std::path::PathBuf {
    let dir = temp_dir(name);
    for i in 0..n {
        save(&pattern(24, 20, i), &dir.join(format!("img{i:02}.png")));
    }
    dir
}

fn open(dir: &std::path::Path, transform: Transform) -> ImageFolder {
    let mut cfg = FolderConfig::new(transform);
    cfg.warn = false;
    ImageFolder::open(dir, cfg).unwrap()
}

/// A stand-in comparator: 4×4 average pooling, scaled.
fn encoder(scale: f64) -> impl FnMut(&Tensor) -> candle::Result<Tensor> {
    move |x| x.avg_pool2d(4)? * scale
}

fn key(tap: &str) -> CacheKey {
    CacheKey { comparator: "avgpool4".into(), tap: tap.into() }
}

const OPTIONS: CacheOptions = CacheOptions { batch_size: 3, shard_size: 4, probe_tolerance: 1e-3 };

#[test]
fn features_match_the_encoder_and_are_reused() {
    let data = images("cache-data", 10);
    let set = open(&data, Transform::eval(16, 16));
    let dir = temp_dir("cache-a");
    let mut calls = 0;
    let (cache, status) = FeatureCache::open_or_build(&dir, &set, &key("pool"), &OPTIONS, |x| {
        calls += 1;
        encoder(2.0)(x)
    })
    .unwrap();
    assert_eq!(status, CacheStatus::Built { reused_shards: 0 });
    assert_eq!((cache.len(), cache.sample_shape()), (10, &[3usize, 4, 4][..]));
    // Shards of 4: files 0, 1, 2; the index written last.
    for f in ["shard-00000.safetensors", "shard-00002.safetensors", "index.safetensors"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // Every row equals the encoder applied to that sample alone.
    for i in [0, 3, 4, 9] {
        let x = Tensor::from_vec(
            set.get(i, &mut Rng::new(0)).unwrap().unwrap().image,
            (1, 3, 16, 16),
            &candle::Device::Cpu,
        )
        .unwrap();
        let want = encoder(2.0)(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = cache.gather(&[i]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "sample {i}: {worst}");
    }
    drop(cache);

    // Opened again: reused; the encoder only re-checks the first samples.
    calls = 0;
    let (_, status) = FeatureCache::open_or_build(&dir, &set, &key("pool"), &OPTIONS, |x| {
        calls += 1;
        encoder(2.0)(x)
    })
    .unwrap();
    assert_eq!((status, calls), (CacheStatus::Reused, 1));

    // Another tap, another comparator output (new weights, same name), or changed data:
    // rebuilt.
    let (_, status) =
        FeatureCache::open_or_build(&dir, &set, &key("other"), &OPTIONS, encoder(2.0)).unwrap();
    assert!(matches!(status, CacheStatus::Built { .. }));
    let (_, status) =
        FeatureCache::open_or_build(&dir, &set, &key("other"), &OPTIONS, encoder(2.5)).unwrap();
    assert!(matches!(status, CacheStatus::Built { .. }));
    save(&pattern(24, 20, 99), &data.join("img10.png"));
    let grown = open(&data, Transform::eval(16, 16));
    let (cache, status) =
        FeatureCache::open_or_build(&dir, &grown, &key("other"), &OPTIONS, encoder(2.5)).unwrap();
    assert!(matches!(status, CacheStatus::Built { .. }));
    assert_eq!(cache.len(), 11);
}

#[test]
fn an_interrupted_build_resumes_from_finished_shards() {
    let data = images("cache-resume-data", 10);
    let set = open(&data, Transform::eval(16, 16));
    let dir = temp_dir("cache-resume");
    let mut seen = 0;
    // The encoder fails on the sixth sample, in the second shard (like a crash or full disk).
    let err = FeatureCache::open_or_build(&dir, &set, &key("pool"), &OPTIONS, |x| {
        seen += x.dims()[0];
        if seen > 6 {
            candle::bail!("simulated failure")
        }
        encoder(1.0)(x)
    })
    .unwrap_err();
    assert!(err.to_string().contains("simulated failure"), "{err}");
    assert!(dir.join("shard-00000.safetensors").is_file());
    assert!(!dir.join("index.safetensors").exists());
    let (cache, status) =
        FeatureCache::open_or_build(&dir, &set, &key("pool"), &OPTIONS, encoder(1.0)).unwrap();
    assert_eq!(status, CacheStatus::Built { reused_shards: 1 });
    assert_eq!(cache.len(), 10);
}

#[test]
fn the_loader_serves_cached_features_with_each_batch() {
    let data = images("cache-loader-data", 9);
    let set = Arc::new(open(&data, Transform::eval(16, 16)));
    let dir = temp_dir("cache-loader");
    let (cache, _) =
        FeatureCache::open_or_build(&dir, set.as_ref(), &key("pool"), &OPTIONS, encoder(1.0))
            .unwrap();
    let cache = Arc::new(cache);
    let config = LoaderConfig {
        batch_size: 4,
        shuffle: true,
        drop_last: true,
        seed: 5,
        workers: 2,
        prefetch: 2,
    };
    let loader =
        Loader::new(set.clone(), config.clone()).unwrap().with_features(cache.clone()).unwrap();
    for batch in loader.stream(Position::default()).unwrap().take(5) {
        let batch = batch.unwrap();
        let feats = batch.features.unwrap();
        assert_eq!(feats.dims(), &[4, 3, 4, 4]);
        let want = encoder(1.0)(&batch.images).unwrap();
        let diff =
            (feats - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{diff}");
    }
    // A cache of other data is refused.
    let other = Arc::new(open(&images("cache-other", 9), Transform::eval(16, 16)));
    let err = Loader::new(other, config).unwrap().with_features(cache).unwrap_err();
    assert!(err.to_string().contains("built from other data"), "{err}");
}

#[test]
fn random_views_cannot_be_cached() {
    let data = images("cache-random", 4);
    let set = open(&data, Transform::train(16, 16));
    assert!(!set.is_deterministic());
    let err = FeatureCache::open_or_build(
        temp_dir("cache-r"),
        &set,
        &key("pool"),
        &OPTIONS,
        encoder(1.0),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("random")), "{err}");
    let bad = FeatureCache::open_or_build(
        temp_dir("cache-s"),
        &open(&data, Transform::eval(16, 16)),
        &key("pool"),
        &OPTIONS,
        |x| x.sum_all(),
    );
    assert!(bad.unwrap_err().to_string().contains("expected [1, …]"));
}
