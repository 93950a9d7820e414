//! Image folders: decoding and conversions, labels, and every kind of bad file.

mod common;

use std::path::Path;

use common::{crc32, fixture, pattern, png_declaring, save, temp_dir};
use deepsim_data::{
    ColorMode, Conversion, Crop, Dataset, Error, Filter, FolderConfig, ImageFolder, Labels, Rng,
    SkipReason, Transform, Validation,
};
use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};

fn identity_config() -> FolderConfig {
    let mut c = FolderConfig::new(Transform::identity());
    c.warn = false;
    c
}

fn crop_config(side: u32) -> FolderConfig {
    let t = Transform {
        resize: None,
        crop: Crop::Center(side),
        hflip: false,
        filter: Filter::Bilinear,
    };
    let mut c = FolderConfig::new(t);
    c.warn = false;
    c
}

fn get(set: &ImageFolder, i: usize) -> Vec<f32> {
    set.get(i, &mut Rng::new(0)).unwrap().unwrap().image
}

fn truncate(path: &Path, keep: f64) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
}

#[test]
fn pixels_are_chw_in_unit_range_and_conversions_are_exact() {
    let dir = temp_dir("conversions");
    // 8-bit RGB PNG: values /255, channel-major.
    let rgb = pattern(6, 5, 1);
    save(&rgb, &dir.join("a_rgb.png"));
    // 16-bit RGB PNG: values /65535, not rounded to 8 bits.
    let rgb16 =
        ImageBuffer::from_fn(6, 5, |x, y| Rgb([x as u16 * 10_000 + 1, y as u16 * 257, 65_535]));
    save(&DynamicImage::ImageRgb16(rgb16), &dir.join("b_rgb16.png"));
    // Gray PNG: replicated to three channels.
    let gray = ImageBuffer::from_fn(6, 5, |x, y| Luma([(x * 40 + y) as u8]));
    save(&DynamicImage::ImageLuma8(gray), &dir.join("c_gray.png"));
    // RGBA PNG: alpha dropped, colour kept even where transparent.
    let rgba =
        ImageBuffer::from_fn(6, 5, |x, _| Rgba([200, 100, x as u8, if x < 3 { 0 } else { 255 }]));
    save(&DynamicImage::ImageRgba8(rgba), &dir.join("d_rgba.png"));
    // Gray + alpha, 16-bit gray.
    let la = ImageBuffer::from_fn(6, 5, |x, _| LumaA([x as u8 * 9, 7]));
    save(&DynamicImage::ImageLumaA8(la), &dir.join("e_graya.png"));
    let g16 = ImageBuffer::from_fn(6, 5, |x, _| Luma([x as u16 * 13_000]));
    save(&DynamicImage::ImageLuma16(g16), &dir.join("f_gray16.png"));

    let set = ImageFolder::open(&dir, identity_config()).unwrap();
    assert_eq!(set.len(), 6);
    assert_eq!(set.sample_shape(), [3, 5, 6]);
    let hw = 30;
    let a = get(&set, 0);
    let src = rgb.to_rgb8();
    for (x, y) in [(0, 0), (5, 4), (2, 3)] {
        for c in 0..3 {
            assert_eq!(a[c * hw + y * 6 + x], src.get_pixel(x as u32, y as u32)[c] as f32 / 255.0);
        }
    }
    let b = get(&set, 1);
    assert_eq!(b[4], 40_001.0 / 65_535.0); // red at (4, 0)
    assert_eq!(b[hw + 6 * 3], 3.0 * 257.0 / 65_535.0); // green at (0, 3)
    assert_eq!(b[2 * hw + 7], 1.0);
    let c = get(&set, 2);
    assert_eq!(c[3 * 6 + 2], 83.0 / 255.0);
    assert_eq!(c[hw + 3 * 6 + 2], 83.0 / 255.0);
    assert_eq!(c[2 * hw + 3 * 6 + 2], 83.0 / 255.0);
    let d = get(&set, 3);
    assert_eq!((d[0], d[hw], d[2 * hw + 1]), (200.0 / 255.0, 100.0 / 255.0, 1.0 / 255.0));
    let e = get(&set, 4);
    assert_eq!(e[2 * hw + 5], 45.0 / 255.0);
    let f = get(&set, 5);
    assert_eq!(f[hw + 4], 52_000.0 / 65_535.0);

    let summary = set.summary();
    assert_eq!(summary.skipped_total(), 0);
    assert_eq!(summary.converted[&Conversion::SixteenBit], 2);
    assert_eq!(summary.converted[&Conversion::GrayToRgb], 3);
    assert_eq!(summary.converted[&Conversion::AlphaDropped], 2);
    let text = summary.to_string();
    assert!(text.starts_with("6 usable, none skipped; converted:"), "{text}");

    // Gray mode: one channel; RGB reduced with BT.709 weights (0.2126, 0.7152, 0.0722).
    let mut cfg = identity_config();
    cfg.color = ColorMode::Gray;
    let set = ImageFolder::open(&dir, cfg).unwrap();
    assert_eq!(set.sample_shape(), [1, 5, 6]);
    let d = get(&set, 3);
    let luma = (0.2126 * 200.0 + 0.7152 * 100.0 + 0.0722 * 1.0) / 255.0;
    assert!((d[1] - luma).abs() < 1.0 / 255.0, "{} vs {luma}", d[1]);
}

#[test]
fn cmyk_jpeg_matches_pillow() {
    // tests/fixtures/make_fixtures.py writes cmyk.jpg with Pillow and prints Pillow's RGB
    // decoding: (0,0) → [215, 215, 215], (12,16) → [107, 114, 121], (23,31) → [6, 21, 33].
    let dir = temp_dir("cmyk");
    std::fs::copy(fixture("cmyk.jpg"), dir.join("cmyk.jpg")).unwrap();
    let set = ImageFolder::open(&dir, identity_config()).unwrap();
    assert_eq!(set.sample_shape(), [3, 24, 32]);
    let px = get(&set, 0);
    let hw = 24 * 32;
    for ((y, x), want) in
        [((0, 0), [215, 215, 215]), ((12, 16), [107, 114, 121]), ((23, 31), [6, 21, 33])]
    {
        for c in 0..3 {
            let got = px[c * hw + y * 32 + x] * 255.0;
            assert!(
                (got - want[c] as f32).abs() <= 3.0,
                "({y},{x}) channel {c}: {got} vs {}",
                want[c]
            );
        }
    }
    assert_eq!(set.summary().converted[&Conversion::CmykToRgb], 1);
}

/// A folder with two good images and one file of every bad kind.
fn bad_folder(name: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    save(&pattern(40, 36, 1), &dir.join("good1.png"));
    save(&pattern(50, 40, 2), &dir.join("good2.jpg"));
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    std::fs::write(dir.join("text.png"), b"this is not an image at all, just words").unwrap();
    std::fs::write(
        dir.join("noise.jpg"),
        (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(dir.join("phone.heic"), b"\0\0\0\x18ftypheic\0\0\0\0mif1heic").unwrap();
    save(&pattern(20, 50, 3), &dir.join("small.png"));
    save(&pattern(48, 48, 4), &dir.join("cut.png"));
    truncate(&dir.join("cut.png"), 0.5);
    save(&pattern(64, 64, 5), &dir.join("cut.jpg"));
    truncate(&dir.join("cut.jpg"), 0.6);
    std::fs::write(dir.join("notes.txt"), "ignored: not an image extension").unwrap();
    dir
}

#[test]
fn bad_files_are_skipped_once_each_and_counted() {
    let dir = bad_folder("bad-full");
    let mut cfg = crop_config(32);
    cfg.validation = Validation::Full;
    let set = ImageFolder::open(&dir, cfg).unwrap();
    let names: Vec<String> =
        set.paths().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["good1.png", "good2.jpg"]);
    let skipped: Vec<(String, SkipReason)> = set
        .skip_log()
        .skipped()
        .into_iter()
        .map(|(p, r)| (p.file_name().unwrap().to_string_lossy().into_owned(), r))
        .collect();
    let kind = |name: &str| skipped.iter().find(|(n, _)| n == name).map(|(_, r)| r.kind()).unwrap();
    assert_eq!(skipped.len(), 7, "{skipped:?}");
    assert_eq!(kind("empty.png"), "zero-byte");
    assert_eq!(kind("text.png"), "unsupported format");
    assert_eq!(kind("phone.heic"), "unsupported format");
    assert_eq!(kind("noise.jpg"), "unsupported format");
    assert_eq!(kind("small.png"), "too small");
    assert_eq!(kind("cut.png"), "corrupt or truncated");
    assert_eq!(kind("cut.jpg"), "corrupt or truncated");
    let small = skipped.iter().find(|(n, _)| n == "small.png").unwrap().1.to_string();
    assert!(small.contains("20×50") && small.contains("32"), "{small}");
    let heic = skipped.iter().find(|(n, _)| n == "phone.heic").unwrap().1.to_string();
    assert!(heic.contains("HEIF"), "{heic}");
    let summary = set.summary().to_string();
    assert!(summary.starts_with("2 usable, 7 skipped ("), "{summary}");
    assert!(
        summary.contains("2 corrupt or truncated") && summary.contains("3 unsupported format"),
        "{summary}"
    );
}

#[test]
fn damage_past_the_header_is_found_on_loading() {
    let dir = bad_folder("bad-header");
    let set = ImageFolder::open(&dir, crop_config(32)).unwrap();
    // Header checks cannot see the cut bodies: both truncated files are still listed.
    assert_eq!(set.len(), 4);
    let mut found = Vec::new();
    for i in 0..set.len() {
        let name = set.describe(i);
        match set.get(i, &mut Rng::new(0)).unwrap() {
            Some(s) => assert_eq!(s.image.len(), 3 * 32 * 32),
            None => {
                found.push(Path::new(&name).file_name().unwrap().to_string_lossy().into_owned())
            }
        }
    }
    assert_eq!(found, ["cut.jpg", "cut.png"]);
    // Met again: still skipped, still counted once.
    assert!(set.get(0, &mut Rng::new(0)).unwrap().is_none());
    assert_eq!(set.summary().skipped["corrupt or truncated"], 2);
}

#[test]
fn strict_mode_names_the_first_bad_file() {
    let dir = bad_folder("bad-strict");
    let mut cfg = crop_config(32);
    cfg.strict = true;
    match ImageFolder::open(&dir, cfg.clone()) {
        Err(Error::BadImage { path, reason }) => {
            // The first in path order that fails a header check (cut.* pass it).
            assert_eq!(path.file_name().unwrap(), "empty.png");
            assert_eq!(reason, SkipReason::ZeroBytes);
        }
        other => panic!("expected BadImage, got {other:?}"),
    }
    // Only the truncated files: opening passes, loading fails with their names.
    let dir = temp_dir("strict-load");
    save(&pattern(40, 40, 1), &dir.join("a.png"));
    save(&pattern(64, 64, 5), &dir.join("b.jpg"));
    truncate(&dir.join("b.jpg"), 0.6);
    let set = ImageFolder::open(&dir, cfg).unwrap();
    let err = set.get(1, &mut Rng::new(0)).unwrap_err().to_string();
    assert!(err.contains("b.jpg") && err.contains("end-of-image"), "{err}");
}

#[test]
fn sources_without_usable_images_are_errors() {
    let dir = temp_dir("empty-dir");
    let err = ImageFolder::open(&dir, identity_config()).unwrap_err();
    assert!(
        matches!(&err, Error::Empty { detail, .. } if detail.starts_with("0 image file")),
        "{err}"
    );
    std::fs::write(dir.join("x.png"), b"").unwrap();
    std::fs::write(dir.join("y.jpg"), b"garbage").unwrap();
    let err = ImageFolder::open(&dir, identity_config()).unwrap_err().to_string();
    assert!(err.contains("2 image file(s) found") && err.contains("2 skipped"), "{err}");
    let missing = dir.join("no-such-dir");
    let err = ImageFolder::open(&missing, identity_config()).unwrap_err().to_string();
    assert!(err.contains("no-such-dir"), "{err}");
    let err = ImageFolder::open(&dir, FolderConfig::new(Transform::eval(16, 32))).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn full_images_must_share_a_size() {
    let dir = temp_dir("sizes");
    save(&pattern(8, 6, 1), &dir.join("a.png"));
    save(&pattern(8, 6, 2), &dir.join("b.png"));
    save(&pattern(6, 8, 3), &dir.join("c.png"));
    let set = ImageFolder::open(&dir, identity_config()).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.summary().skipped["size differs"], 1);
}

#[test]
fn labels_come_from_sorted_subfolders_recursively() {
    let dir = temp_dir("labels");
    save(&pattern(10, 10, 1), &dir.join("zebra/deep/nested/z1.png"));
    save(&pattern(10, 10, 2), &dir.join("cat/c1.png"));
    save(&pattern(10, 10, 3), &dir.join("cat/c2.jpg"));
    save(&pattern(10, 10, 4), &dir.join("loose.png"));
    save(&pattern(10, 10, 5), &dir.join(".hidden/h.png"));
    let mut cfg = identity_config();
    cfg.labels = Labels::Subfolders;
    let set = ImageFolder::open(&dir, cfg).unwrap();
    assert_eq!(set.classes().unwrap(), ["cat", "zebra"]);
    let labels: Vec<u32> = (0..set.len())
        .map(|i| set.get(i, &mut Rng::new(0)).unwrap().unwrap().label.unwrap())
        .collect();
    assert_eq!(labels, [0, 0, 1]);
    assert_eq!(set.summary().skipped["outside class folders"], 1);
    // Without labels, the loose file is used too (hidden folders never are).
    let set = ImageFolder::open(&dir, identity_config()).unwrap();
    assert_eq!(set.len(), 4);
    assert!(set.get(0, &mut Rng::new(0)).unwrap().unwrap().label.is_none());
}

#[test]
fn resize_and_centre_crop_match_pillow_geometry() {
    // A 300×200 image, eval(64, 56): resized to 96×64 (torchvision truncates the long side),
    // then the 56×56 centre starts at (20, 4).
    let dir = temp_dir("geometry");
    // Constant-colour columns so the result can be predicted after resampling: left half
    // black, right half white; the crop's middle column sits right of the edge at x = 48.
    let img =
        ImageBuffer::from_fn(300, 200, |x, _| Rgb(if x < 150 { [0u8; 3] } else { [255u8; 3] }));
    save(&DynamicImage::ImageRgb8(img), &dir.join("edge.png"));
    let mut cfg = FolderConfig::new(Transform::eval(64, 56));
    cfg.warn = false;
    let set = ImageFolder::open(&dir, cfg).unwrap();
    assert_eq!(set.sample_shape(), [3, 56, 56]);
    let px = get(&set, 0);
    // In the resized image the edge lies between x = 47 and 48, i.e. crop columns 27 and 28.
    assert_eq!(px[10 * 56], 0.0);
    assert_eq!(px[10 * 56 + 55], 1.0);
    assert!(px[10 * 56 + 26] < 0.05 && px[10 * 56 + 29] > 0.95);
}

#[test]
fn decompression_bombs_are_refused_before_allocation() {
    assert_eq!(crc32(b"IEND"), 0xAE42_6082); // the CRC every PNG's IEND chunk carries
    let dir = temp_dir("bombs");
    let png = png_declaring(100_000, 100_000);
    assert!(png.len() < 80, "{}", png.len());
    std::fs::write(dir.join("bomb.png"), &png).unwrap();
    // A real JPEG whose frame header is rewritten to declare 65000×65000.
    save(&pattern(64, 48, 3), &dir.join("small.jpg"));
    let mut jpeg = std::fs::read(dir.join("small.jpg")).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    assert_eq!(&jpeg[sof + 5..sof + 9], [0, 48, 0, 64]); // height, width
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    std::fs::write(dir.join("bomb.jpg"), &jpeg).unwrap();
    // A large image that is not a bomb still decodes: 16384 × 16384 is the limit.
    std::fs::write(dir.join("edge.png"), png_declaring(1 << 14, 1 << 14)).unwrap();
    for (name, w, h) in [("bomb.png", 100_000, 100_000), ("bomb.jpg", 65_000, 65_000)] {
        let path = dir.join(name);
        let expected = SkipReason::TooLarge { width: w, height: h };
        assert_eq!(deepsim_data::probe(&path), Err(expected.clone()), "{name}");
        assert_eq!(deepsim_data::decode(&path, ColorMode::Rgb).err(), Some(expected), "{name}");
    }
    assert_eq!(deepsim_data::probe(&dir.join("edge.png")), Ok((1 << 14, 1 << 14)));
    let msg = SkipReason::TooLarge { width: 100_000, height: 100_000 }.to_string();
    assert!(msg.contains("100000×100000") && msg.contains("268 million"), "{msg}");
    // In a training folder the bombs are skipped, the good image kept.
    std::fs::remove_file(dir.join("edge.png")).unwrap();
    let set = ImageFolder::open(&dir, crop_config(32)).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.summary().skipped["too large to decode"], 2);
}

/// The fuzz target's check, deterministic: thousands of seeded mutations of the seed corpus
/// (bytes overwritten, flipped, inserted, removed; the file cut short) each decode to an image
/// or a reason, without a panic. Some decode still (a changed pixel value), most are refused.
#[test]
fn decode_survives_mutated_files() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert_eq!(seeds.len(), 4);
    for seed in &seeds {
        assert!(deepsim_data::decode_bytes(seed, ColorMode::Rgb).is_ok());
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut decoded, mut refused) = (0, 0);
    for seed in &seeds {
        for _ in 0..500 {
            let mut m = seed.clone();
            for _ in 0..1 + next(4) {
                let at = next(m.len());
                match next(5) {
                    0 => m[at] = next(256) as u8,
                    1 => m[at] ^= 1 << next(8),
                    2 => m.insert(at, next(256) as u8),
                    3 if m.len() > 1 => {
                        m.remove(at);
                    }
                    _ => m.truncate(at.max(1)),
                }
            }
            for mode in [ColorMode::Rgb, ColorMode::Gray] {
                match deepsim_data::decode_bytes(&m, mode) {
                    Ok(_) => decoded += 1,
                    Err(_) => refused += 1,
                }
            }
        }
    }
    assert_eq!(decoded + refused, 4 * 500 * 2);
    assert!(refused > decoded && decoded > 0, "{decoded} decoded, {refused} refused");
}
