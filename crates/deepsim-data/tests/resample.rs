//! Bicubic resampling against Pillow's `Image.resize(…, BICUBIC)` on a seeded image
//! (`tests/fixtures/resample/export_pil.py` wrote the fixture): noise, a smooth ramp and a
//! hard edge, shrunk by 2, 4 and a non-integer factor, kept, and enlarged by 2.

use std::path::PathBuf;

use deepsim_data::{quantize_8bit, resize_bicubic};

fn fixture(name: &str) -> (Vec<f32>, usize, usize) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resample").join(name);
    let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut chw = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            chw[(c * h + y as usize) * w + x as usize] = f32::from(p[c]) / 255.0;
        }
    }
    (chw, h, w)
}

#[test]
fn bicubic_resize_matches_pillow_within_one_level() {
    let (input, h, w) = fixture("input.png");
    for (ow, oh) in [(24, 20), (12, 10), (17, 13), (48, 40), (96, 80)] {
        let (expected, eh, ew) = fixture(&format!("pil_{ow}x{oh}.png"));
        assert_eq!((eh, ew), (oh, ow));
        let mut ours = resize_bicubic(&input, (3, h, w), (oh, ow)).unwrap();
        quantize_8bit(&mut ours);
        let diffs: Vec<f32> =
            ours.iter().zip(&expected).map(|(a, b)| ((a - b) * 255.0).abs().round()).collect();
        let max = diffs.iter().cloned().fold(0.0, f32::max);
        let off = diffs.iter().filter(|&&d| d > 0.0).count() as f64 / diffs.len() as f64;
        // Pillow rounds to 8 bits between the passes and uses 22-bit fixed-point weights.
        assert!(max <= 1.0, "{ow}×{oh}: a value {max} levels from Pillow's");
        assert!(off < 0.25, "{ow}×{oh}: {:.0} % of values off by a level", off * 100.0);
        if (ow, oh) == (48, 40) {
            assert_eq!(max, 0.0, "the same size is the identity");
        }
    }
}
