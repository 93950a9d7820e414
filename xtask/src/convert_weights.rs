//! `cargo xtask convert-weights`: a published weights file (PyTorch zip or legacy, Caffe,
//! safetensors, or a Hub file) converted once into safetensors with deepsim's key names,
//! verified, and written atomically into the weights cache (or `--output`).

use std::io::Read;
use std::path::{Path, PathBuf};

use deepsim_comparators::weights::{self, arch::convert_bytes, hub::HubFile, Arch};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Converts a published weights file (PyTorch zip or legacy, Caffe, safetensors, or a Hub file)
/// into deepsim's safetensors layout, verified, written atomically into the weights cache.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "hub"])))]
pub struct Args {
    /// The architecture the file holds.
    #[arg(long, value_parser = parse_arch)]
    arch: Arch,
    /// .pth/.pt/.bin/.ckpt (PyTorch zip or legacy), .caffemodel, .safetensors.
    #[arg(long)]
    input: Option<PathBuf>,
    /// A safetensors file on the Hugging Face Hub, `OWNER/NAME` or `OWNER/NAME:FILE`, e.g.
    /// `timm/vgg16.tv_in1k`
    /// (honours HF_HUB_OFFLINE=1; then says where to put a manual download).
    #[arg(long, value_parser = parse_hub)]
    hub: Option<HubFile>,
    /// Output file (default: $DEEPSIM_HOME/weights/ARCH.safetensors, the weights cache).
    #[arg(long)]
    output: Option<PathBuf>,
}

fn parse_arch(name: &str) -> std::result::Result<Arch, String> {
    Arch::from_name(name).map_err(|e| e.to_string())
}

fn parse_hub(spec: &str) -> std::result::Result<HubFile, String> {
    HubFile::parse(spec).map_err(|e| e.to_string())
}

/// Runs the task.
pub fn run(Args { arch, input, hub, output }: Args) -> Result<()> {
    let input = match (input, hub) {
        (Some(p), _) => p,
        (None, Some(h)) => h.fetch()?,
        (None, None) => return Err("give --input or --hub".into()),
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
