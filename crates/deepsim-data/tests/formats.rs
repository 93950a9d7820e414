//! IDX and CIFAR-10 readers on fixtures written by numpy (tests/fixtures/make_fixtures.py,
//! which prints the expected values quoted here) and on the real Fashion-MNIST files.

mod common;

use std::path::Path;

use common::{fashion_mnist_dir, fixture, temp_dir};
use deepsim_data::{
    parse_idx, read_idx, Cifar10, ColorMode, Crop, Dataset, Error, Filter, IdxData, IdxDataset,
    Rng, Split, Transform,
};

#[test]
fn idx_values_of_every_type() {
    // make_fixtures.py: idx images[1] = [184, 230, 222, 16, 98, 241, 119, 133, 167, 243, 210,
    // 110, 120, 166, 107, 14, 45, 124, 80, 187]; images[2][3][4] = 15. gzip-compressed.
    let images = read_idx(fixture("tiny-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(images.dims, [3, 4, 5]);
    let IdxData::U8(v) = &images.data else { panic!("{:?}", images.data) };
    #[rustfmt::skip]
    assert_eq!(&v[20..40], [184, 230, 222, 16, 98, 241, 119, 133, 167, 243, 210, 110, 120, 166, 107, 14, 45, 124, 80, 187]);
    assert_eq!(v[2 * 20 + 3 * 5 + 4], 15);
    // Raw (not compressed) labels [2, 0, 1].
    let labels = read_idx(fixture("tiny-labels-idx1-ubyte")).unwrap();
    assert_eq!((labels.dims, labels.data), (vec![3], IdxData::U8(vec![2, 0, 1])));
    let i16 = read_idx(fixture("i16.idx")).unwrap();
    assert_eq!(
        (i16.dims, i16.data),
        (vec![2, 3], IdxData::I16(vec![-300, 0, 7, 32767, -32768, 1]))
    );
    let f32 = read_idx(fixture("f32.idx")).unwrap();
    assert_eq!(f32.data, IdxData::F32(vec![1.5, -0.25, 3e-8, 1e30]));
    let f64 = read_idx(fixture("f64.idx")).unwrap();
    assert_eq!(
        f64.data,
        IdxData::F64(vec![std::f64::consts::PI, -std::f64::consts::E, 1e-300, 0.0])
    );
}

#[test]
fn malformed_idx_is_an_error_naming_the_problem() {
    let p = Path::new("x.idx");
    let err = |bytes: &[u8]| parse_idx(bytes, p).unwrap_err().to_string();
    assert!(err(b"\x01\x00\x08\x01").contains("magic bytes 01 00 08 01"));
    assert!(err(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05").contains("type code 0x07"));
    assert!(err(b"\x00\x00\x08\x02\x00\x00").contains("ends inside the header"));
    let e = err(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02");
    assert!(e.contains("need 13 bytes, the file has 10"), "{e}");
    // Dimensions whose product overflows.
    let e = err(b"\x00\x00\x0e\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
    assert!(e.starts_with("x.idx:"), "{e}");
    // A broken gzip stream.
    let dir = temp_dir("idx-bad");
    let gz = std::fs::read(fixture("tiny-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(dir.join("cut.gz"), &gz[..gz.len() - 20]).unwrap();
    let e = read_idx(dir.join("cut.gz")).unwrap_err().to_string();
    assert!(e.contains("cut.gz") && e.contains("gzip"), "{e}");
    // Labels that do not match the images.
    let e = IdxDataset::open(
        fixture("tiny-images-idx3-ubyte.gz"),
        Some(&fixture("i16.idx")),
        Transform::identity(),
        ColorMode::Gray,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("labels must be u8 [3]") && e.contains("i16 [2, 3]"), "{e}");
}

#[test]
fn idx_dataset_serves_scaled_pixels() {
    let set = IdxDataset::open(
        fixture("tiny-images-idx3-ubyte.gz"),
        Some(&fixture("tiny-labels-idx1-ubyte")),
        Transform::identity(),
        ColorMode::Rgb,
    )
    .unwrap();
    assert_eq!((set.len(), set.sample_shape()), (3, [3, 4, 5]));
    let s = set.get(1, &mut Rng::new(0)).unwrap().unwrap();
    assert_eq!(s.label, Some(0));
    assert_eq!(s.image[0], 184.0 / 255.0);
    assert_eq!(s.image[20], 184.0 / 255.0); // gray replicated
    assert!(set.get(3, &mut Rng::new(0)).is_err());
    // A crop larger than the images is refused up front.
    let t =
        Transform { resize: None, crop: Crop::Center(6), hflip: false, filter: Filter::Bilinear };
    let e = IdxDataset::open(fixture("tiny-images-idx3-ubyte.gz"), None, t, ColorMode::Gray)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[test]
fn cifar10_records() {
    // make_fixtures.py: 3 records, labels [3, 9, 0]; record 1 has R[0,0] = 88, G[0,0] = 27,
    // B[31,31] = 147.
    let set =
        Cifar10::from_files(&[fixture("cifar_tiny.bin")], Transform::identity(), ColorMode::Rgb)
            .unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.labels(), [3, 9, 0]);
    let s = set.get(1, &mut Rng::new(0)).unwrap().unwrap();
    assert_eq!(s.label, Some(9));
    assert_eq!(
        (s.image[0], s.image[1024], s.image[3071]),
        (88.0 / 255.0, 27.0 / 255.0, 147.0 / 255.0)
    );
    assert_eq!(set.classes().unwrap()[9], "truck");
    assert!(set.describe(2).ends_with("cifar_tiny.bin#2"));
    // Through the image path (a flip) the values move but stay the same set.
    let t = Transform { resize: None, crop: Crop::Full, hflip: true, filter: Filter::Bilinear };
    let flipped = Cifar10::from_files(&[fixture("cifar_tiny.bin")], t, ColorMode::Rgb).unwrap();
    let mut seen_flip = false;
    for seed in 0..8 {
        let f = flipped.get(1, &mut Rng::new(seed)).unwrap().unwrap().image;
        if f[31] == 88.0 / 255.0 && f != s.image {
            seen_flip = true;
        } else {
            assert_eq!(f, s.image);
        }
    }
    assert!(seen_flip);

    // Split names, from a directory.
    let dir = temp_dir("cifar");
    std::fs::create_dir_all(dir.join("cifar-10-batches-bin")).unwrap();
    std::fs::copy(fixture("cifar_tiny.bin"), dir.join("cifar-10-batches-bin/test_batch.bin"))
        .unwrap();
    let test = Cifar10::open(&dir, Split::Test, Transform::identity(), ColorMode::Gray).unwrap();
    assert_eq!(test.sample_shape(), [1, 32, 32]);
    let e = Cifar10::open(&dir, Split::Train, Transform::identity(), ColorMode::Rgb)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data_batch_1.bin"), "{e}");

    // A cut file and a bad label.
    let bytes = std::fs::read(fixture("cifar_tiny.bin")).unwrap();
    std::fs::write(dir.join("cut.bin"), &bytes[..5000]).unwrap();
    let e = Cifar10::from_files(&[dir.join("cut.bin")], Transform::identity(), ColorMode::Rgb)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.bin") && e.contains("1 records and 1927 bytes over"), "{e}");
    let mut bad = bytes.clone();
    bad[3073] = 12;
    std::fs::write(dir.join("label.bin"), &bad).unwrap();
    let e = Cifar10::from_files(&[dir.join("label.bin")], Transform::identity(), ColorMode::Rgb)
        .unwrap_err()
        .to_string();
    assert!(e.contains("record 1 (byte offset 3073) has label 12"), "{e}");
}

#[test]
fn real_fashion_mnist() {
    // Debian's dataset-fashion-mnist (zalandoresearch/fashion-mnist 2020-05-23). Reference
    // values with numpy: np.frombuffer(gzip.open(f).read(), np.uint8, offset=16) — train
    // labels[:10] = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], 6000 per class; image 0 sums to 76247,
    // the last to 16684; t10k labels[:10] = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7], 1000 per class.
    let dir = fashion_mnist_dir();
    let train =
        IdxDataset::fashion_mnist(&dir, Split::Train, Transform::identity(), ColorMode::Gray)
            .unwrap();
    assert_eq!((train.len(), train.sample_shape()), (60_000, [1, 28, 28]));
    let labels = train.labels().unwrap();
    assert_eq!(&labels[..10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [6000; 10]);
    let sum = |s: &IdxDataset, i: usize| -> f64 {
        s.get(i, &mut Rng::new(0))
            .unwrap()
            .unwrap()
            .image
            .iter()
            .map(|&v| (v * 255.0).round() as f64)
            .sum()
    };
    assert_eq!(sum(&train, 0), 76247.0);
    assert_eq!(sum(&train, 59_999), 16684.0);
    assert_eq!(train.classes().unwrap()[9], "Ankle boot");
    let test =
        IdxDataset::fashion_mnist(&dir, Split::Test, Transform::eval(32, 32), ColorMode::Rgb)
            .unwrap();
    assert_eq!((test.len(), test.sample_shape()), (10_000, [3, 32, 32]));
    assert_eq!(&test.labels().unwrap()[..10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    let e = IdxDataset::fashion_mnist(
        temp_dir("nofm"),
        Split::Test,
        Transform::identity(),
        ColorMode::Gray,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
}
