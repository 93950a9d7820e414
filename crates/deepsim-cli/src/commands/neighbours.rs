//! `deepsim neighbours`: each query's nearest training images in image space and in the
//! inverted layer's feature space (the paper's supplementary).

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle::Tensor;

use crate::args::RunDeviceArg;
use crate::checkpoint::{batched, load_all, load_model};
use crate::images::image_files;
use crate::output::{stem, write_png_rows};

/// Nearest neighbours (the paper's supplementary): for each query image a row with its
/// reconstruction, its k nearest training images in image space, then in the inverted
/// layer's feature space.
#[derive(clap::Args)]
pub struct NeighboursArgs {
    /// A checkpoint of an inverter.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Folder of the images to search (e.g. the training set).
    #[arg(long)]
    train: PathBuf,
    /// Neighbours per space.
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: RunDeviceArg,
    /// Query images.
    #[arg(required = true)]
    queries: Vec<PathBuf>,
}

impl NeighboursArgs {
    /// For each query, one row: the query, its reconstruction, its `k` nearest images of
    /// `train` in image space, then its `k` nearest in the inverted layer's feature space
    /// (Euclidean distances).
    pub fn run(self) -> Result<()> {
        let (queries, k) = (&self.queries, self.k);
        let model = load_model(&self.checkpoint, &self.device)?;
        let Some((_, tap)) = model.encoder() else {
            bail!(
                "{}: nearest neighbours need an inverter's feature space",
                self.checkpoint.display()
            );
        };
        let space = tap.name();
        let files = image_files(&self.train)?;
        if k == 0 || k > files.len() {
            bail!(
                "--k {k}: must be between 1 and the {} images of {}",
                files.len(),
                self.train.display()
            );
        }
        let base = load_all(&model, &files)?;
        let q = load_all(&model, queries)?;
        let q_code = batched(&q, |b| Ok(model.encode(b)?))?;
        let recon = batched(&q_code, |c| Ok(model.decode(c)?))?;
        let base_code = batched(&base, |b| Ok(model.encode(b)?))?;
        let by_pixels = nearest(&q.flatten_from(1)?, &base.flatten_from(1)?, k)?;
        let by_features = nearest(&q_code.flatten_from(1)?, &base_code.flatten_from(1)?, k)?;
        let rows = (0..queries.len())
            .map(|i| {
                let mut row = vec![q.get(i)?, recon.get(i)?];
                for &j in by_pixels[i].iter().chain(&by_features[i]) {
                    row.push(base.get(j)?);
                }
                Ok(Tensor::stack(&row, 0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        write_png_rows(&self.out, &rows)?;
        for (i, path) in queries.iter().enumerate() {
            let names =
                |idx: &[usize]| idx.iter().map(|&j| stem(&files[j])).collect::<Vec<_>>().join(", ");
            println!(
                "{}: image space {} | feature space {}",
                stem(path),
                names(&by_pixels[i]),
                names(&by_features[i])
            );
        }
        println!(
            "rows: query | reconstruction | {k} nearest in image space | {k} nearest in {space} \
             space → {}",
            self.out.display()
        );
        Ok(())
    }
}

/// For each row of `q` `[Q, D]`, the indices of its `k` nearest rows of `base` `[B, D]`.
fn nearest(q: &Tensor, base: &Tensor, k: usize) -> Result<Vec<Vec<usize>>> {
    let q = q.to_dtype(candle::DType::F64)?.to_vec2::<f64>()?;
    let base = base.to_dtype(candle::DType::F64)?.to_vec2::<f64>()?;
    Ok(q.iter()
        .map(|a| {
            let mut d: Vec<(f64, usize)> = base
                .iter()
                .enumerate()
                .map(|(j, b)| (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(), j))
                .collect();
            d.sort_by(|x, y| x.0.total_cmp(&y.0));
            d.iter().take(k).map(|&(_, j)| j).collect()
        })
        .collect())
}
