//! Arguments several commands share: the device, the output and images of the commands that
//! show reconstructions, the settings of inversion by optimization, and the clap value
//! parsers of comparator and tap names.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use deepsim_comparators::{Tap, COMPARATORS};
use deepsim_train::OptimInversionConfig;

/// A device named on the command line (`cpu`, `cuda`, `cuda:N`, `metal`), opened by
/// [`deepsim_train::parse_device`] while the arguments are parsed, so that a name it refuses
/// (or a device this build or machine lacks) is a clap error naming `--device`.
#[derive(Clone, Debug)]
pub struct DeviceName {
    /// The name as given, which checkpoints and configurations take (`run.device`).
    pub name: String,
    /// The device it opened.
    pub device: candle::Device,
}

/// The value parser of `--device`.
fn device_name(name: &str) -> Result<DeviceName, String> {
    let device = deepsim_train::parse_device(name).map_err(|e| match e {
        // Its message names the configuration key (`run.device "tpu": expected …`); clap's
        // error names the flag and the value already.
        deepsim_train::Error::Config(why) => {
            why.strip_prefix(&format!("run.device {name:?}: ")).unwrap_or(&why).to_owned()
        }
        other => other.to_string(),
    })?;
    Ok(DeviceName { name: name.to_owned(), device })
}

/// `--device` of a command that runs networks it builds itself (default: the CPU).
#[derive(clap::Args)]
pub struct DeviceArg {
    /// Device: cpu, cuda, cuda:N, metal.
    #[arg(long, default_value = "cpu", value_parser = device_name)]
    pub device: DeviceName,
}

impl DeviceArg {
    /// The device opened.
    pub fn device(&self) -> &candle::Device {
        &self.device.device
    }

    /// The device's name as given.
    pub fn name(&self) -> &str {
        &self.device.name
    }
}

/// `--device` of a command that runs a checkpoint or a configuration, which names its own
/// device (`run.device`): this overrides it.
#[derive(clap::Args)]
pub struct RunDeviceArg {
    /// Device: cpu, cuda, cuda:N, metal (default: the run's, `run.device`).
    #[arg(long, value_parser = device_name)]
    pub device: Option<DeviceName>,
}

impl RunDeviceArg {
    /// The device name to override the run's with, if given.
    pub fn name(&self) -> Option<&str> {
        self.device.as_ref().map(|d| d.name.as_str())
    }
}

/// What the commands that show a checkpoint's reconstructions (`invert`, `reencode`,
/// `ablation`) take besides their checkpoints: where to write, the device and the images.
#[derive(clap::Args)]
pub struct ImagesArgs {
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: RunDeviceArg,
    /// Images (resized and centre-cropped as the run's validation images).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// The settings of inversion by optimization.
#[derive(clap::Args)]
pub struct OptimArgs {
    /// Gradient steps of inversion by optimization.
    #[arg(long, default_value_t = OptimInversionConfig::default().steps)]
    optim_steps: usize,
    /// Its learning rate (Adam, pixels in [0, 1]).
    #[arg(long, default_value_t = OptimInversionConfig::default().lr)]
    optim_lr: f64,
    /// Weight of its total-variation prior.
    #[arg(long, default_value_t = OptimInversionConfig::default().lambda_tv)]
    lambda_tv: f64,
}

impl OptimArgs {
    /// The configuration these settings make.
    pub fn config(&self) -> OptimInversionConfig {
        OptimInversionConfig {
            steps: self.optim_steps,
            lr: self.optim_lr,
            lambda_tv: self.lambda_tv,
            ..OptimInversionConfig::default()
        }
    }
}

/// The value parser of a comparator name: one of [`COMPARATORS`], which `--help` lists and
/// clap's error names.
pub fn comparator() -> PossibleValuesParser {
    PossibleValuesParser::new(COMPARATORS)
}

/// The value parser of a tap name (`conv5`, `pool5`, `relu5_3`, `fire9`, `block15`, …).
/// Whether the comparator has that tap is checked when it runs.
pub fn tap(name: &str) -> Result<Tap, String> {
    Tap::from_name(name)
        .ok_or_else(|| format!("unknown tap `{name}` (e.g. conv5, pool5, relu5_3, fire9, block15)"))
}
