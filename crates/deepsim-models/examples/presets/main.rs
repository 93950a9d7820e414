//! Every generator, discriminator and VAE preset: its parameter count from the config, the
//! variables actually created, and (for the CPU presets) the output of a forward pass on a
//! batch of two.
//!
//!     cargo run --release -p deepsim-models --example presets -- [WIDTH]
//!
//! WIDTH is the CPU presets' channel multiplier, 0.25 by default.

// ANCHOR: readme
use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use deepsim_models::{Generator, GeneratorConfig};

/// The generator of `cfg` with fresh variables: its parameters, counted twice (from the
/// config and from the variables created), and its images of two zero codes.
fn generator(cfg: GeneratorConfig) -> deepsim_models::Result<(usize, usize, Tensor)> {
    let vars = VarMap::new();
    let g = Generator::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
    let created = vars.all_vars().iter().map(|v| v.elem_count()).sum();
    let input = match g.config().input {
        deepsim_models::GeneratorInput::Vector(d) => vec![2, d],
        deepsim_models::GeneratorInput::Map { channels, size } => vec![2, channels, size, size],
    };
    let images = g.forward(&Tensor::zeros(input, DType::F32, &Device::Cpu)?)?;
    Ok((g.config().param_count(), created, images))
}
// ANCHOR_END: readme

use anyhow::{ensure, Context};
use deepsim_models::{Discriminator, DiscriminatorConfig, Vae, VaeConfig};

/// Variables created in `vars`.
fn created(vars: &VarMap) -> usize {
    vars.all_vars().iter().map(|v| v.elem_count()).sum()
}

fn main() -> anyhow::Result<()> {
    let width = match std::env::args().nth(1) {
        Some(a) => {
            a.parse::<f64>().with_context(|| format!("WIDTH must be a number, got {a:?}"))?
        }
        None => 0.25,
    };
    ensure!(width > 0.0 && width <= 4.0, "WIDTH must be in (0, 4], got {width}");
    let dev = Device::Cpu;
    println!("{:<34} {:>12} {:>12}  output", "preset", "parameters", "created");
    let generators = [
        ("Generator cpu_64(256)", GeneratorConfig::cpu_64(256, width)),
        ("Generator cpu_128(256)", GeneratorConfig::cpu_128(256, width)),
        ("Generator cpu_64_map(192, 7)", GeneratorConfig::cpu_64_map(192, 7, width)?),
        ("Generator cpu_map(24, 24 → 96)", GeneratorConfig::cpu_map(24, 24, 96, width)?),
    ];
    for (name, cfg) in generators {
        let (count, made, images) = generator(cfg)?;
        println!("{name:<34} {count:>12} {made:>12}  {:?}", images.dims());
    }
    // The paper's sizes: built to count their variables, not run (a forward pass at 227×227 of
    // these takes seconds on a CPU).
    for (name, cfg) in [
        ("Generator paper_fc6", GeneratorConfig::paper_fc6()),
        ("Generator paper_fc8", GeneratorConfig::paper_fc8()),
        ("Generator paper_conv5", GeneratorConfig::paper_conv5()),
    ] {
        let vars = VarMap::new();
        let count = cfg.param_count();
        Generator::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev))?;
        println!("{name:<34} {count:>12} {:>12}  [N, 3, 227, 227]", created(&vars));
    }
    for (name, cfg, side) in [
        ("Discriminator cpu_64", DiscriminatorConfig::cpu_64(None, width), 64),
        ("Discriminator paper", DiscriminatorConfig::paper(None), 227),
    ] {
        let vars = VarMap::new();
        let count = cfg.param_count();
        let d = Discriminator::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev))?;
        let logits =
            d.forward_t(&Tensor::rand(0f32, 1., (2, 3, side, side), &dev)?, None, false)?;
        println!("{name:<34} {count:>12} {:>12}  {:?} logits", created(&vars), logits.dims());
    }
    for (name, cfg) in
        [("Vae cpu_64(128)", VaeConfig::cpu_64(128, width)), ("Vae paper", VaeConfig::paper())]
    {
        let vars = VarMap::new();
        let (count, side) = (cfg.param_count(), cfg.input);
        let vae = Vae::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev))?;
        let shown = if side <= 64 {
            let out = vae.forward(&Tensor::rand(0f32, 1., (2, 3, side, side), &dev)?)?;
            format!("{:?}", out.reconstruction.dims())
        } else {
            format!("[N, 3, {side}, {side}]")
        };
        println!("{name:<34} {count:>12} {:>12}  {shown}", created(&vars));
    }
    Ok(())
}
