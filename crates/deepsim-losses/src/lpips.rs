//! LPIPS (Zhang et al. 2018) as a training loss: the comparators crate's metric, reduced over
//! the batch. As a loss of the generated image alone it runs as one fused autograd node.

use candle::Tensor;
use deepsim_comparators::Lpips;

use crate::error::Result;
use crate::reduction::Reduction;

/// LPIPS between generated images and their targets, reduced over the batch.
pub struct LpipsLoss {
    lpips: Lpips,
    reduction: Reduction,
}

impl LpipsLoss {
    /// The loss with `lpips` (e.g. `Lpips::pretrained_alex`).
    pub fn new(lpips: Lpips, reduction: Reduction) -> Self {
        Self { lpips, reduction }
    }

    /// The loss and each layer's share (both reduced).
    ///
    /// # Shapes
    /// `generated`, `target`: `[N, 3, H, W]` in [0, 1] → a scalar (or `[N]`), and one per layer.
    ///
    /// # Errors
    /// The LPIPS input contract.
    pub fn forward(&self, generated: &Tensor, target: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let out = self.lpips.forward(generated, &target.detach())?;
        let per_layer =
            out.per_layer.iter().map(|l| self.reduction.apply(l)).collect::<Result<Vec<_>>>()?;
        Ok((self.reduction.apply(&out.distance)?, per_layer))
    }
}
