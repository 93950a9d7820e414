//! A comparator's features of an image at every tap it offers, with their shapes and norms.
//!
//!     cargo run --release -p deepsim-comparators --example features -- [COMPARATOR] [IMAGE]
//!
//! The default, `alexnet-random`, needs no weights file; a name that needs weights resolves
//! them from the cache or the repository's `data/weights`, and says how to convert them when
//! they are missing. The default image is the repository's `data/coffee_224.png`.

// ANCHOR: readme
use candle::{Device, Tensor};
use deepsim_comparators::by_name;

/// Each tap of the comparator called `name`: its name, the shape of `image`'s features there,
/// and their L2 norm. `image` is `[N, 3, H, W]` RGB in [0, 1].
fn features(
    name: &str,
    image: &Tensor,
) -> deepsim_comparators::Result<Vec<(String, Vec<usize>, f32)>> {
    let net = by_name(name, None, &Device::Cpu)?; // seeded weights, or weights::locate's file
    let taps = net.taps().to_vec();
    let maps = net.features(image, &taps)?;
    let mut out = Vec::new();
    for (tap, map) in taps.iter().zip(maps) {
        let norm = map.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        out.push((tap.name().to_owned(), map.dims().to_vec(), norm));
    }
    Ok(out)
}
// ANCHOR_END: readme

use std::path::{Path, PathBuf};

use anyhow::Context;
use deepsim_comparators::weights::{self, Arch};

/// An image file as a `[1, 3, H, W]` f32 tensor in [0, 1], read by deepsim-data's decoder
/// (format from the content, files cut short and decompression bombs refused).
fn load(path: &Path) -> anyhow::Result<Tensor> {
    Ok(deepsim_data::load_image(path, deepsim_data::ColorMode::Rgb)?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "alexnet-random".to_owned());
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        data.canonicalize().unwrap_or(data).join("coffee_224.png")
    });
    // Where pretrained weights resolve from, for the names that need them.
    if let Ok(arch) = Arch::from_name(&name) {
        let (origin, file) = weights::locate(arch, None).context("no weights")?;
        println!("{name}: weights from {} ({})", file.display(), origin.name());
    }
    let image = load(&path)?;
    println!("{name} on {} {:?}", path.display(), image.dims());
    let taps = features(&name, &image).with_context(|| format!("comparator {name}"))?;
    for (tap, shape, norm) in taps {
        println!("{tap:>8} {shape:?}  ‖·‖₂ = {norm:.3}");
    }
    Ok(())
}
