//! `cargo xtask convert-weights`: a published weights file (PyTorch zip or legacy, Caffe,
//! safetensors, or a Hub file) converted once into safetensors with deepsim's key names,
//! verified, and written atomically into the weights cache (or `--output`).

use std::io::Read;
use std::path::{Path, PathBuf};

use deepsim_comparators::weights::{self, arch::convert_bytes, hub::HubFile, Arch};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn help() -> String {
    let archs: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
    format!(
        "usage: cargo xtask convert-weights --arch ARCH (--input FILE | --hub OWNER/NAME[:FILE]) [--output FILE]

  --arch ARCH     one of: {}
  --input FILE    .pth/.pt/.bin/.ckpt (PyTorch zip or legacy), .caffemodel, .safetensors
  --hub SPEC      a safetensors file on the Hugging Face Hub, e.g. timm/vgg16.tv_in1k
                  (honours HF_HUB_OFFLINE=1; then says where to put a manual download)
  --output FILE   default: {}/ARCH.safetensors ($DEEPSIM_HOME/weights)",
        archs.join(", "),
        weights::weights_dir().display()
    )
}

/// Runs the task with the arguments after its name.
pub fn run(args: &[String]) -> Result<()> {
    let (mut arch, mut input, mut hub, mut output) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{}", help());
            return Ok(());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n\n{}", help()))?;
        match flag.as_str() {
            "--arch" => arch = Some(Arch::from_name(value)?),
            "--input" => input = Some(PathBuf::from(value)),
            "--hub" => hub = Some(HubFile::parse(value)?),
            "--output" => output = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}\n\n{}", help()).into()),
        }
    }
    let arch = arch.ok_or_else(|| format!("--arch is required\n\n{}", help()))?;
    let input = match (input, hub) {
        (Some(p), None) => p,
        (None, Some(h)) => h.fetch()?,
        _ => return Err(format!("give exactly one of --input and --hub\n\n{}", help()).into()),
    };
    let output = output.unwrap_or_else(|| weights::cached_path(arch));
    let bytes = read_with_progress(&input)?;
    let done = convert_bytes(arch, &input, &bytes, &output)?;
    let params: usize = done.tensors.iter().map(|(_, t)| t.numel()).sum();
    println!(
        "{}: {} tensors read, {} written ({params} values), sha256 {}\n→ {}",
        input.display(),
        done.read,
        done.tensors.len(),
        done.sha256,
        output.display()
    );
    Ok(())
}

/// The whole file, with a progress bar on files over 16 MB.
fn read_with_progress(path: &Path) -> Result<Vec<u8>> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    let bar = (len > 16 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "reading {bytes}/{total_bytes} {wide_bar} {eta}",
            )
            .expect("static template"),
        );
        bar
    });
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(err)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(b) = &bar {
            b.inc(n as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(bytes)
}
