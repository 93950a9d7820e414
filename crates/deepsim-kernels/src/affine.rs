//! Per-channel affine maps of NCHW tensors with an optional reordering of the channels — a
//! comparator's input preprocessing (ImageNet mean and std; BGR, 0–255, minus the mean pixel;
//! LPIPS' scaling) in one pass — and the value range of a tensor in one pass (the [0, 1] input
//! check).
//!
//! Written with candle's built-ins, a per-channel affine map is three or four full-size ops, and
//! candle's backward of a broadcast division also computes the gradient of the (constant)
//! divisor: several more full-size passes. Here both directions are one pass each.

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::check::{by_float_dtype, contiguous, dims4, nchw, Real};
use crate::error::{invalid, Result};

/// `y[n, c] = scale[c] · x[n, source[c]] + shift[c]` over NCHW tensors.
///
/// ```
/// use candle::{Device, Tensor};
/// use deepsim_kernels::ChannelAffine;
///
/// # fn main() -> deepsim_kernels::Result<()> {
/// // Caffe's input: RGB in [0, 1] → BGR in 0–255 minus the mean pixel.
/// let caffe = ChannelAffine::new(&[255.0; 3], &[-104.0, -117.0, -123.0])?.with_source(&[2, 1, 0])?;
/// let x = Tensor::ones((1, 3, 2, 2), candle::DType::F32, &Device::Cpu)?;
/// let y = caffe.forward(&x)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[0], 151.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAffine {
    source: Vec<usize>,
    scale: Vec<f64>,
    shift: Vec<f64>,
}

impl ChannelAffine {
    /// `y[n, c] = scale[c] · x[n, c] + shift[c]`; `scale` and `shift` have one value per channel.
    ///
    /// # Errors
    /// `scale` and `shift` differ in length or are empty, or a value is not finite.
    pub fn new(scale: &[f64], shift: &[f64]) -> Result<Self> {
        const OP: &str = "ChannelAffine";
        if scale.is_empty() || scale.len() != shift.len() {
            return Err(invalid(
                OP,
                "shift",
                &[shift.len()],
                format!("expected one value per channel, as scale has ({})", scale.len()),
            ));
        }
        if let Some(v) = scale.iter().chain(shift).find(|v| !v.is_finite()) {
            return Err(invalid(OP, "scale/shift", &[scale.len()], format!("{v} is not finite")));
        }
        let source = (0..scale.len()).collect();
        Ok(Self { source, scale: scale.to_vec(), shift: shift.to_vec() })
    }

    /// The same map reading output channel `c` from input channel `source[c]` (e.g. `[2, 1, 0]`
    /// turns RGB into BGR).
    ///
    /// # Errors
    /// `source` is not a permutation of the channels.
    pub fn with_source(self, source: &[usize]) -> Result<Self> {
        let c = self.scale.len();
        let mut seen = vec![false; c];
        for &s in source {
            if s >= c || std::mem::replace(&mut seen[s], true) {
                return Err(invalid(
                    "ChannelAffine",
                    "source",
                    &[source.len()],
                    format!("{source:?} is not a permutation of 0..{c}"),
                ));
            }
        }
        if source.len() != c {
            return Err(invalid(
                "ChannelAffine",
                "source",
                &[source.len()],
                format!("expected {c} channels"),
            ));
        }
        Ok(Self { source: source.to_vec(), ..self })
    }

    /// Channels of the input (and output).
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// Applies the map. Differentiable w.r.t. `x` (to any order); `scale` and `shift` are
    /// constants.
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]` → `[N, C, H, W]`.
    ///
    /// # Errors
    /// `x` is not rank 4, f32 or f64, or has another number of channels.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check("ChannelAffine", "x", x)?;
        if !x.device().is_cpu() {
            return self.composite(x);
        }
        Ok(x.apply_op1(self.clone())?)
    }

    /// Checks that `x` (argument `name` of `op`) is NCHW with this map's channels; its dims.
    fn check(&self, op: &'static str, name: &'static str, x: &Tensor) -> Result<[usize; 4]> {
        let dims @ [_, c, _, _] = nchw(op, name, x)?;
        if c != self.channels() {
            return Err(invalid(
                op,
                name,
                x.dims(),
                format!("expected {} channels", self.channels()),
            ));
        }
        Ok(dims)
    }

    /// The input gradient of [`ChannelAffine::forward`] given the gradient `grad` of its
    /// output, outside candle's autograd (the adjoint map, for callers that run a chain's
    /// backward themselves).
    ///
    /// # Errors
    /// As [`ChannelAffine::forward`].
    pub fn backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.adjoint().forward(grad)
    }

    /// The adjoint map (the backward pass): `g_x[n, source[c]] = scale[c] · g_y[n, c]`.
    fn adjoint(&self) -> Self {
        let c = self.channels();
        let (mut source, mut scale) = (vec![0; c], vec![0.0; c]);
        for (out, &src) in self.source.iter().enumerate() {
            source[src] = out;
            scale[src] = self.scale[out];
        }
        Self { source, scale, shift: vec![0.0; c] }
    }

    /// The same from candle's built-ins (other devices).
    fn composite(&self, x: &Tensor) -> Result<Tensor> {
        let dev = x.device();
        let c = self.channels();
        let index: Vec<u32> = self.source.iter().map(|&s| s as u32).collect();
        let picked = x.index_select(&Tensor::new(index, dev)?, 1)?;
        let column = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::new(v, dev)?.to_dtype(x.dtype())?.reshape((1, c, 1, 1))?)
        };
        Ok(picked.broadcast_mul(&column(&self.scale)?)?.broadcast_add(&column(&self.shift)?)?)
    }

    fn run<T: Real>(&self, x: &[T], dims: [usize; 4]) -> Vec<T> {
        self.run_all(&[x], dims)
    }

    /// The map of each of `xs` (`[N_i, C, H, W]` with `dims` giving C, H, W and the first's
    /// N; the others' N from their lengths), one after another along the batch, every plane
    /// written once (no zero-fill first).
    fn run_all<T: Real>(&self, xs: &[&[T]], dims: [usize; 4]) -> Vec<T> {
        let [_, c, h, w] = dims;
        let hw = h * w;
        // Planes of the output: input `i`'s images follow those before it.
        let planes: Vec<(&[T], usize)> =
            xs.iter().flat_map(|x| (0..x.len() / hw.max(1)).map(move |p| (*x, p))).collect();
        crate::fresh::fill_rows(planes.len(), hw, 1, |plane, rows| {
            let (x, p) = planes[plane];
            let (image, ch) = (p / c, p % c);
            let src = &x[(image * c + self.source[ch]) * hw..][..hw];
            let (a, b) = (T::from_f64(self.scale[ch]), T::from_f64(self.shift[ch]));
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    // A few KiB at a time through a buffer that stays in L1.
                    let mut buf = [T::zero(); 1024];
                    for part in src.chunks(buf.len()) {
                        for (d, &v) in buf.iter_mut().zip(part) {
                            *d = a * v + b;
                        }
                        rows[0].append(&buf[..part.len()]);
                    }
                },
            )
        })
    }

    /// The map of `a` and of `b`, stacked along the batch: `Tensor::cat(&[forward(a),
    /// forward(b)], 0)` in one pass (LPIPS runs a pair through its trunk as one batch).
    /// Differentiable w.r.t. both (to any order).
    ///
    /// # Shapes
    /// `a`: `[Na, C, H, W]`, `b`: `[Nb, C, H, W]` → `[Na + Nb, C, H, W]`.
    ///
    /// # Errors
    /// As [`ChannelAffine::forward`] for each; `a` and `b` differ in height, width, dtype or
    /// device.
    pub fn forward_cat(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        const OP: &str = "ChannelAffine::forward_cat";
        let [_, _, h, w] = self.check(OP, "a", a)?;
        let [_, _, hb, wb] = self.check(OP, "b", b)?;
        if (hb, wb) != (h, w) || b.dtype() != a.dtype() || !b.device().same_device(a.device()) {
            return Err(invalid(
                OP,
                "b",
                b.dims(),
                format!("expected {h}×{w} images of a's dtype on a's device, as a {:?}", a.dims()),
            ));
        }
        if !a.device().is_cpu() {
            return Ok(Tensor::cat(&[self.composite(a)?, self.composite(b)?], 0)?);
        }
        Ok(a.apply_op2(b, CatAffine(self.clone()))?)
    }
}

/// [`ChannelAffine::forward_cat`] as a candle op (its backward splits the gradient).
struct CatAffine(ChannelAffine);

impl candle::CustomOp2 for CatAffine {
    fn name(&self) -> &'static str {
        "deepsim-channel-affine-cat"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            op: &ChannelAffine,
            (a, al): (&CpuStorage, &Layout),
            (b, bl): (&CpuStorage, &Layout),
            dims: [usize; 4],
        ) -> candle::Result<CpuStorage> {
            let (a, b) = (contiguous(a.as_slice::<T>()?, al), contiguous(b.as_slice::<T>()?, bl));
            Ok(T::to_cpu_storage_owned(op.run_all(&[&a, &b], dims)))
        }
        let dims @ [na, c, h, w] = dims4("ChannelAffine::forward_cat", "a", al)?;
        let out = by_float_dtype!("ChannelAffine", a.dtype(), go(&self.0, (a, al), (b, bl), dims))?;
        let nb = bl.shape().dims()[0];
        Ok((out, Shape::from((na + nb, c, h, w))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let na = a.dim(0)?;
        let adjoint = self.0.adjoint();
        let part = |from, len| grad.narrow(0, from, len)?.apply_op1(adjoint.clone());
        Ok((Some(part(0, na)?), Some(part(na, grad.dim(0)? - na)?)))
    }
}

impl CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "deepsim-channel-affine"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        fn go<T: Real>(
            op: &ChannelAffine,
            x: &CpuStorage,
            xl: &Layout,
        ) -> candle::Result<CpuStorage> {
            let dims = dims4("ChannelAffine", "x", xl)?;
            let x = contiguous(x.as_slice::<T>()?, xl);
            Ok(T::to_cpu_storage_owned(op.run(&x, dims)))
        }
        let out = by_float_dtype!("ChannelAffine", x.dtype(), go(self, x, xl))?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        Ok(Some(grad.apply_op1(self.adjoint())?))
    }
}

/// The smallest and largest element of `x`, in one pass; `None` when `x` holds a NaN or no
/// element at all.
///
/// # Errors
/// `x` is not f32 or f64.
pub fn value_range(x: &Tensor) -> Result<Option<(f64, f64)>> {
    let x = x.flatten_all()?;
    if x.elem_count() == 0 {
        return Ok(None);
    }
    if !x.device().is_cpu() {
        // NaN compares false both ways, so a NaN anywhere shows in the sum.
        let lo = x.min(0)?.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?;
        let hi = x.max(0)?.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?;
        let sum = x.sum_all()?.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?;
        return Ok((!sum.is_nan() && lo <= hi).then_some((lo, hi)));
    }
    fn go<T: Real>(s: &CpuStorage, l: &Layout) -> candle::Result<Option<(f64, f64)>> {
        let data = contiguous(s.as_slice::<T>()?, l);
        let chunk = data.len().div_ceil(rayon::current_num_threads().max(1)).max(1 << 16);
        let parts: Vec<Option<(T, T)>> = data
            .par_chunks(chunk)
            .map(|part| {
                // Sixteen lanes of running extremes and NaN flags, without branches, so that
                // the loop runs on the CPU's vectors; folded at the end.
                crate::simd::vectorized(
                    #[inline(always)]
                    || {
                        let (mut lo, mut hi) = ([part[0]; 16], [part[0]; 16]);
                        let mut nan = [false; 16];
                        let mut take = |values: &[T; 16]| {
                            for (l, &v) in values.iter().enumerate() {
                                lo[l] = if v < lo[l] { v } else { lo[l] };
                                hi[l] = if v > hi[l] { v } else { hi[l] };
                                nan[l] |= v.is_nan();
                            }
                        };
                        // Sixteen elements a step (the lane loop then runs as one vector
                        // operation); the tail padded with the part's first element.
                        let mut steps = part.chunks_exact(16);
                        for values in steps.by_ref() {
                            take(values.try_into().expect("16 elements"));
                        }
                        let mut tail = [part[0]; 16];
                        tail[..steps.remainder().len()].copy_from_slice(steps.remainder());
                        take(&tail);
                        if nan.contains(&true) {
                            return None;
                        }
                        let least = lo.into_iter().fold(lo[0], |a, b| if b < a { b } else { a });
                        let most = hi.into_iter().fold(hi[0], |a, b| if b > a { b } else { a });
                        Some((least, most))
                    },
                )
            })
            .collect();
        let mut all: Option<(f64, f64)> = None;
        for part in parts {
            let (lo, hi) = match part {
                Some((lo, hi)) => (lo.to_f64(), hi.to_f64()),
                None => return Ok(None),
            };
            all = Some(all.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
        Ok(all)
    }
    let (storage, layout) = x.storage_and_layout();
    match &*storage {
        candle::Storage::Cpu(s) => Ok(by_float_dtype!("value_range", x.dtype(), go(s, layout))?),
        _ => Err(invalid("value_range", "x", x.dims(), "storage is not on the CPU")),
    }
}
