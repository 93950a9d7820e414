//! Weight gradients delivered straight into the gradient store, around candle's accumulation.
//!
//! candle 0.11's `Tensor::backward` accumulates every gradient it is handed by allocating a
//! zero tensor of the argument's shape and adding the gradient into it: for a weight, a fresh
//! buffer filled with zeros, a second one for the sum, and three passes over memory, on
//! every step. For the paper's generator (three 4096×4096 layers) that is about 200 MB of
//! zeros and 600 MB of additions a step, most of it on pages the kernel must first clear.
//! [`backward`] runs candle's backward while this crate's ops ([`crate::linear`],
//! [`crate::conv2d`], [`crate::conv_transpose2d`], [`crate::bias_leaky_relu`]) set the
//! gradients of trainable variables aside as they compute them; it then puts each into the
//! gradient store as it is — or adds it to what candle accumulated for the same variable
//! through other ops. The store it returns holds the same gradients as `loss.backward()`.

use std::cell::RefCell;

use candle::backprop::GradStore;
use candle::Tensor;

thread_local! {
    /// The gradients set aside by the [`backward`] running on this thread, `None` outside one.
    static SET_ASIDE: RefCell<Option<Vec<(Tensor, Tensor)>>> = const { RefCell::new(None) };
}

/// What a custom op's backward hands candle for its argument `arg`, whose gradient is `grad`:
/// inside [`backward`], when `arg` is a trainable variable, the gradient is set aside (summed
/// with any set aside for it before) and candle gets `None`; otherwise candle gets the
/// gradient to accumulate. This crate's ops call it for their weights; a custom op of another
/// crate whose argument may be a variable (a weight's layout change) can do the same.
///
/// # Errors
/// candle's, when adding to a gradient set aside before.
pub fn deliver_grad(arg: &Tensor, grad: Tensor) -> candle::Result<Option<Tensor>> {
    if !arg.is_variable() {
        return Ok(Some(grad));
    }
    SET_ASIDE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let Some(list) = slot.as_mut() else { return Ok(Some(grad)) };
        match list.iter_mut().find(|(var, _)| var.id() == arg.id()) {
            Some((_, sum)) => *sum = sum.add(&grad)?,
            None => list.push((arg.clone(), grad)),
        }
        Ok(None)
    })
}

/// Clears this thread's set-aside gradients when dropped, also when candle's backward fails.
struct Collecting;

impl Collecting {
    fn start() -> Self {
        SET_ASIDE.with(|cell| *cell.borrow_mut() = Some(Vec::new()));
        Collecting
    }

    fn take(&self) -> Vec<(Tensor, Tensor)> {
        SET_ASIDE.with(|cell| cell.borrow_mut().take().unwrap_or_default())
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        SET_ASIDE.with(|cell| cell.borrow_mut().take());
    }
}

/// `loss.backward()`, with the gradients of trainable variables that this crate's ops
/// compute delivered into the store directly instead of through candle's zero-then-add
/// accumulation. The returned store has the same entries and values as `loss.backward()`
/// (up to the order of floating-point additions when a variable feeds several ops).
///
/// # Errors
/// Whatever `loss.backward()` returns.
pub fn backward(loss: &Tensor) -> candle::Result<GradStore> {
    let collecting = Collecting::start();
    let mut grads = loss.backward()?;
    for (var, grad) in collecting.take() {
        let grad = match grads.get(&var) {
            Some(other) => (other + &grad)?,
            None => grad,
        };
        grads.insert(&var, grad);
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{Device, Var};

    use crate::testing::seq;

    #[test]
    fn same_gradients_as_candles_backward() {
        // A graph where the variables feed this crate's ops (some twice, as a discriminator's
        // weights do on real and generated images) and candle's own ops, so that set-aside
        // gradients are summed with each other and with what candle accumulates.
        let w = Var::from_tensor(&seq(&[4, 6], 0.05)).unwrap();
        let b = Var::from_tensor(&seq(&[4], 0.2)).unwrap();
        let k = Var::from_tensor(&seq(&[3, 2, 3, 3], 0.03)).unwrap();
        let x = Var::from_tensor(&seq(&[2, 6], 0.1)).unwrap();
        let img = seq(&[2, 2, 5, 5], 0.07);
        let loss = || -> Tensor {
            let h = crate::linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap();
            let h2 = crate::linear(
                &h.tanh().unwrap().matmul(w.as_tensor()).unwrap(),
                w.as_tensor(),
                None,
            )
            .unwrap();
            let direct = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            let c =
                crate::conv2d(&img, k.as_tensor(), None, &crate::Conv2dConfig::new(1, 1)).unwrap();
            let c =
                crate::bias_leaky_relu(&c, &b.as_tensor().narrow(0, 0, 3).unwrap(), 0.3).unwrap();
            let terms =
                [h2.sqr().unwrap().sum_all().unwrap(), direct, c.sqr().unwrap().sum_all().unwrap()];
            terms.iter().fold(Tensor::new(0f64, &Device::Cpu).unwrap(), |s, t| (s + t).unwrap())
        };
        let want = loss().backward().unwrap();
        let got = backward(&loss()).unwrap();
        for var in [&w, &b, &k, &x] {
            let (g, e) = (got.get(var.as_tensor()).unwrap(), want.get(var.as_tensor()).unwrap());
            let diff =
                (g - e).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let scale = e.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(scale > 0.0 && diff <= 1e-12 * scale, "{:?}: {diff} of {scale}", var.dims());
        }
        // Outside `backward` nothing is set aside (candle accumulates as usual), and nothing
        // is left over from the call above.
        assert!(SET_ASIDE.with(|c| c.borrow().is_none()));
        let g = crate::linear(x.as_tensor(), w.as_tensor(), None).unwrap().sum_all().unwrap();
        assert!(g.backward().unwrap().get(w.as_tensor()).is_some());
    }
}
