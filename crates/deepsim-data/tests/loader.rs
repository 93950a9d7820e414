//! The loader: the same batches for a seed whatever the thread count, exact resume, skipped
//! samples, errors that end the stream instead of hanging it.

mod common;

use std::sync::Arc;

use common::{pattern, save, temp_dir};
use deepsim_data::{
    Batch, Dataset, Error, FolderConfig, ImageFolder, Loader, LoaderConfig, Position, Rng, Sample,
    Transform,
};

/// 23 images of 40×36 with random crops of 32 and flips, so augmentation is exercised.
fn folder(name: &str) -> Arc<ImageFolder> {
    let dir = temp_dir(name);
    for i in 0..23 {
        let ext = if i % 2 == 0 { "png" } else { "jpg" };
        save(&pattern(40, 36, i), &dir.join(format!("img{i:02}.{ext}")));
    }
    let mut cfg = FolderConfig::new(Transform::train(36, 32));
    cfg.warn = false;
    Arc::new(ImageFolder::open(&dir, cfg).unwrap())
}

fn config(workers: usize, seed: u64) -> LoaderConfig {
    LoaderConfig { batch_size: 5, shuffle: true, drop_last: true, seed, workers, prefetch: 3 }
}

fn take(loader: &Loader, from: Position, n: usize) -> Vec<Batch> {
    let stream = loader.stream(from).unwrap();
    stream.take(n).map(|b| b.unwrap()).collect()
}

fn same(a: &[Batch], b: &[Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.position, y.position);
        assert_eq!(x.indices, y.indices);
        let dx = x.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dy = y.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(dx == dy, "images differ at {}", x.position);
    }
}

#[test]
fn batches_depend_on_the_seed_only() {
    let set = folder("determinism");
    let one = Loader::new(set.clone(), config(1, 7)).unwrap();
    let three = Loader::new(set.clone(), config(3, 7)).unwrap();
    assert_eq!(one.batches_per_epoch(), 4);
    // Three epochs and a bit, across epoch boundaries.
    let a = take(&one, Position::default(), 14);
    let b = take(&three, Position::default(), 14);
    same(&a, &b);
    assert_eq!(a[4].position, Position { epoch: 1, batch: 0 });
    assert_eq!(a[0].images.dims(), &[5, 3, 32, 32]);
    // Each epoch visits 20 distinct samples (23 with drop_last: three left out), in a new order.
    let epoch0: Vec<usize> = a[..4].iter().flat_map(|b| b.indices.clone()).collect();
    let epoch1: Vec<usize> = a[4..8].iter().flat_map(|b| b.indices.clone()).collect();
    let mut sorted = epoch0.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 20);
    assert_ne!(epoch0, epoch1);
    // The same sample is augmented differently in another epoch; a synchronous load agrees.
    let again = one.load(Position { epoch: 2, batch: 1 }).unwrap();
    same(&[again], &a[9..10]);
    // Another seed: another order.
    let other = take(&Loader::new(set, config(2, 8)).unwrap(), Position::default(), 1);
    assert_ne!(other[0].indices, a[0].indices);
}

#[test]
fn augmentations_vary_between_epochs() {
    let set = folder("augment");
    let loader = Loader::new(set, LoaderConfig { shuffle: false, ..config(2, 1) }).unwrap();
    let a = loader.load(Position { epoch: 0, batch: 0 }).unwrap();
    let b = loader.load(Position { epoch: 1, batch: 0 }).unwrap();
    assert_eq!(a.indices, b.indices);
    let da = a.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let db = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(da, db);
}

#[test]
fn resuming_from_a_saved_position_continues_exactly() {
    let set = folder("resume");
    let loader = Loader::new(set.clone(), config(2, 3)).unwrap();
    let whole = take(&loader, Position::default(), 11);
    // Interrupt after 6 batches, save, rebuild everything, resume.
    let saved = {
        let mut stream = loader.stream(Position::default()).unwrap();
        for _ in 0..6 {
            stream.next().unwrap().unwrap();
        }
        loader.resume_state(stream.next_position())
    };
    let fresh = Loader::new(set.clone(), config(3, 3)).unwrap();
    let at = fresh.resume_position(&saved).unwrap();
    assert_eq!(at, Position { epoch: 1, batch: 2 });
    let rest = take(&fresh, at, 5);
    same(&whole[6..], &rest);

    // What would change the batches is refused, naming the value.
    let other_seed = Loader::new(set.clone(), config(2, 4)).unwrap();
    let err = other_seed.resume_position(&saved).unwrap_err().to_string();
    assert!(err.contains("data.seed"), "{err}");
    let other_batch = Loader::new(set, LoaderConfig { batch_size: 4, ..config(2, 3) }).unwrap();
    let err = other_batch.resume_position(&saved).unwrap_err().to_string();
    assert!(err.contains("data.batch_size"), "{err}");
    let mut broken = saved.clone();
    broken.insert("data.position".into(), "epoch one".into());
    assert!(loader.resume_position(&broken).is_err());
    let mut changed = saved;
    changed.insert("data.fingerprint".into(), "0123".into());
    let err = loader.resume_position(&changed).unwrap_err().to_string();
    assert!(err.contains("data.fingerprint"), "{err}");
    assert_eq!("epoch 3 batch 9".parse::<Position>().unwrap(), Position { epoch: 3, batch: 9 });
}

#[test]
fn samples_found_bad_while_loading_are_left_out_once() {
    let dir = temp_dir("loader-bad");
    for i in 0..8 {
        save(&pattern(36, 36, i), &dir.join(format!("img{i}.jpg")));
    }
    let cut = dir.join("img3.jpg");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut cfg = FolderConfig::new(Transform::eval(36, 32));
    cfg.warn = false;
    let set = Arc::new(ImageFolder::open(&dir, cfg).unwrap());
    assert_eq!(set.len(), 8);
    let loader = Loader::new(set.clone(), LoaderConfig { shuffle: false, ..config(2, 0) }).unwrap();
    let batches = take(&loader, Position::default(), 3);
    assert_eq!(batches[0].indices, [0, 1, 2, 4]);
    assert_eq!(batches[0].images.dims(), &[4, 3, 32, 32]);
    assert_eq!(batches[1].indices, [0, 1, 2, 4]); // epoch 1: the same, still 4
    assert_eq!(set.summary().skipped["corrupt or truncated"], 1);
}

#[test]
fn strict_errors_end_the_stream() {
    let dir = temp_dir("loader-strict");
    for i in 0..6 {
        save(&pattern(32, 32, i), &dir.join(format!("img{i}.jpg")));
    }
    let cut = dir.join("img4.jpg");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut cfg = FolderConfig::new(Transform::identity());
    cfg.strict = true;
    let set = Arc::new(ImageFolder::open(&dir, cfg).unwrap());
    let loader =
        Loader::new(set, LoaderConfig { shuffle: false, batch_size: 2, ..config(2, 0) }).unwrap();
    let mut stream = loader.stream(Position::default()).unwrap();
    assert!(stream.next().unwrap().is_ok());
    assert!(stream.next().unwrap().is_ok());
    let err = stream.next().unwrap().unwrap_err().to_string();
    assert!(err.contains("img4.jpg"), "{err}");
    assert!(stream.next().is_none());
}

/// A dataset whose sample 5 panics, to check that a worker's panic becomes an error.
struct Panicky;

impl Dataset for Panicky {
    fn len(&self) -> usize {
        10
    }
    fn sample_shape(&self) -> [usize; 3] {
        [1, 1, 1]
    }
    fn classes(&self) -> Option<&[String]> {
        None
    }
    fn get(&self, index: usize, _rng: &mut Rng) -> deepsim_data::Result<Option<Sample>> {
        assert!(index != 5, "sample five is cursed");
        Ok(Some(Sample { image: vec![index as f32], label: None }))
    }
    fn is_deterministic(&self) -> bool {
        true
    }
    fn fingerprint(&self) -> String {
        "panicky".into()
    }
    fn describe(&self, index: usize) -> String {
        format!("panicky#{index}")
    }
}

#[test]
fn a_panicking_worker_is_an_error_not_a_hang() {
    let loader = Loader::new(
        Arc::new(Panicky),
        LoaderConfig { shuffle: false, batch_size: 2, ..config(3, 0) },
    )
    .unwrap();
    let results: Vec<_> = loader.epoch(0).unwrap().collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[1].is_ok());
    let err = results[2].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("panicked") && err.contains("cursed") && err.contains("epoch 0 batch 2"),
        "{err}"
    );
    // An epoch without drop_last ends with the short batch.
    let loader = Loader::new(
        Arc::new(Panicky),
        LoaderConfig { shuffle: false, drop_last: false, batch_size: 4, ..config(1, 0) },
    )
    .unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    assert_eq!(loader.batch_indices(Position { epoch: 0, batch: 2 }), [8, 9]);
}

#[test]
fn bad_configurations_are_refused() {
    let set = folder("config");
    let bad = |c: LoaderConfig| Loader::new(set.clone(), c).unwrap_err();
    assert!(matches!(
        bad(LoaderConfig { batch_size: 0, ..config(1, 0) }),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(bad(LoaderConfig { workers: 0, ..config(1, 0) }), Error::InvalidArgument(_)));
    let err = bad(LoaderConfig { batch_size: 24, ..config(1, 0) }).to_string();
    assert!(err.contains("23 samples make no full batch of 24"), "{err}");
    let loader = Loader::new(set, config(1, 0)).unwrap();
    assert!(loader.stream(Position { epoch: 0, batch: 4 }).is_err());
    assert!(loader.load(Position { epoch: 0, batch: 9 }).is_err());
}
