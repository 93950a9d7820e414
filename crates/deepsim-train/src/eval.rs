//! The perceptual distance of reconstructions to their targets, by a network no run trains
//! against (the measures that need no network, the normalized error and the edge ratio, are
//! deepsim-metrics').

use candle::{DType, Tensor};

use crate::error::{Error, Result};

/// The perceptual distance of reconstructions to their targets as a network that no run
/// trains against measures it: ST-LPIPS over the shift-tolerant AlexNet (Ghildyal & Liu 2022,
/// trunk and heads fitted to human judgments), from the weights that ship with deepsim. A
/// DeePSiM run whose comparator is this network would be judged by its own loss: the
/// report names the comparator beside the figure so that a reader can tell.
pub struct PerceptualDistance {
    lpips: deepsim_comparators::Lpips,
}

impl PerceptualDistance {
    /// The metric's name in reports.
    pub const NAME: &'static str = "ST-LPIPS-alex";

    /// ST-LPIPS-alex from `--weights`-style `path`, the weights cache or the shipped copy.
    ///
    /// # Errors
    /// Missing or damaged weights, named.
    pub fn new(path: Option<&std::path::Path>, device: &candle::Device) -> Result<Self> {
        let lpips = deepsim_comparators::Lpips::pretrained_shift_tolerant(
            deepsim_comparators::ShiftTolerantTrunk::Alex,
            path,
            device,
        )?;
        Ok(Self { lpips })
    }

    /// The mean distance over pairs `(a_i, b_i)`, in batches of 16.
    ///
    /// # Shapes
    /// `a`, `b`: `[N, 3, H, W]` in [0, 1], the same, N ≥ 1, H and W at least 21.
    ///
    /// # Errors
    /// Different shapes, or images the network refuses (too small, out of range).
    pub fn mean(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        if a.dims() != b.dims() || a.dims().len() != 4 || a.dim(0)? == 0 {
            return Err(Error::Config(format!(
                "PerceptualDistance: needs two [N ≥ 1, 3, H, W] tensors of one shape, got {:?} \
                 and {:?}",
                a.dims(),
                b.dims()
            )));
        }
        let n = a.dim(0)?;
        let mut total = 0.0;
        for start in (0..n).step_by(16) {
            let len = 16.min(n - start);
            let d = self.lpips.forward(&a.narrow(0, start, len)?, &b.narrow(0, start, len)?)?;
            total += d.distance.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok(total / n as f64)
    }

    /// The perceptual spread of a set of images: the mean distance over all pairs `i < j`
    /// (how unlike each other a generator's samples look; 0 when they are all the same).
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]` in [0, 1], N ≥ 2.
    ///
    /// # Errors
    /// Fewer than two images; images the network refuses.
    pub fn mean_pairwise(&self, x: &Tensor) -> Result<f64> {
        let n = x.dim(0)?;
        if n < 2 {
            return Err(Error::Config(format!(
                "PerceptualDistance::mean_pairwise: needs at least two images, got {n}"
            )));
        }
        let pairs: Vec<(u32, u32)> =
            (0..n as u32).flat_map(|i| (i + 1..n as u32).map(move |j| (i, j))).collect();
        let index = |k: usize| -> Result<Tensor> {
            let ids: Vec<u32> = pairs.iter().map(|p| if k == 0 { p.0 } else { p.1 }).collect();
            Ok(x.index_select(&Tensor::new(ids, x.device())?, 0)?)
        };
        self.mean(&index(0)?, &index(1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn perceptual_distance_is_the_mean_of_st_lpips_over_the_pairs() {
        let p = PerceptualDistance::new(None, &Device::Cpu).unwrap();
        // Four demo tiles, `[4, 3, 80, 80]`.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/val");
        let mut v = Vec::new();
        for name in ["astronaut_s400_r1_c0.jpg", "brick_s400_r1_c3.jpg", "chelsea_s240_r0_c2.jpg"]
            .into_iter()
            .chain(["gravel_s400_r0_c3.jpg"])
        {
            let img = image::open(dir.join(name)).unwrap().to_rgb8();
            for c in 0..3 {
                v.extend(img.pixels().map(|p| f32::from(p[c]) / 255.0));
            }
        }
        let x = Tensor::from_vec(v, (4, 3, 80, 80), &Device::Cpu).unwrap();
        assert!(p.mean(&x, &x).unwrap().abs() < 1e-7, "d(x, x) = 0");
        // 20 pairs: two batches of the metric (16 + 4), each pair's distance from ST-LPIPS
        // itself, one pair at a time.
        let idx: Vec<u32> = (0..20).map(|i| i % 4).collect();
        let a = x.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 0).unwrap();
        // Each reconstruction is the tile with its contrast lowered (a one-pixel shift would
        // be nearly free: the metric is shift-tolerant).
        let b = ((&a * 0.6).unwrap() + 0.2).unwrap();
        let lpips = deepsim_comparators::Lpips::pretrained_shift_tolerant(
            deepsim_comparators::ShiftTolerantTrunk::Alex,
            None,
            &Device::Cpu,
        )
        .unwrap();
        let by_pair: f64 = (0..20)
            .map(|i| {
                let d = lpips
                    .forward(&a.narrow(0, i, 1).unwrap(), &b.narrow(0, i, 1).unwrap())
                    .unwrap()
                    .distance;
                f64::from(d.to_vec1::<f32>().unwrap()[0])
            })
            .sum::<f64>()
            / 20.0;
        let got = p.mean(&a, &b).unwrap();
        assert!(got > 0.01 && (got - by_pair).abs() < 1e-5 * by_pair, "{got} vs {by_pair}");
        let err = p.mean(&a, &b.narrow(0, 0, 19).unwrap()).unwrap_err().to_string();
        assert!(err.contains("PerceptualDistance"), "{err}");
    }
}
