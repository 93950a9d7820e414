//! The CPU's vector instructions for this crate's own loops, chosen when the program runs.
//!
//! Rust builds for the target's baseline (on x86-64: SSE2, four f32 lanes, no FMA) unless told
//! otherwise, and a library cannot tell its users to build with `-C target-cpu=native`. The
//! `gemm` crate (the matrix products) picks its kernels at run time; [`vectorized`] does the
//! same for everything else (im2col, the Winograd transforms, the streaming fully connected
//! kernels, bias and activation passes, Adam): it runs a closure inside a function compiled
//! for AVX-512 or AVX2 when the CPU has them, so that the loops the closure inlines are
//! vectorized 16 or 8 lanes wide.
//!
//! Results do not depend on the instruction set: Rust never contracts `a * b + c` into a
//! fused multiply-add on its own and never reorders floating-point sums, so every lane width
//! computes the same operations in the same order, bit for bit.

/// The vector instruction sets [`vectorized`] chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorIsa {
    /// AVX-512 (F, VL, DQ, BW) with FMA: 16 f32 lanes.
    Avx512,
    /// AVX2 with FMA: 8 f32 lanes.
    Avx2,
    /// The build's baseline (on x86-64, SSE2: 4 f32 lanes).
    Baseline,
}

impl VectorIsa {
    /// A short name for reports (`avx512`, `avx2`, `baseline`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Baseline => "baseline",
        }
    }
}

/// The instruction set [`vectorized`] runs on this CPU (detected once).
pub fn vector_isa() -> VectorIsa {
    use std::sync::OnceLock;
    static ISA: OnceLock<VectorIsa> = OnceLock::new();
    *ISA.get_or_init(detect)
}

fn detect() -> VectorIsa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512vl")
            && has!("avx512dq")
            && has!("avx512bw")
            && has!("fma")
        {
            return VectorIsa::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return VectorIsa::Avx2;
        }
    }
    VectorIsa::Baseline
}

/// Runs `f` compiled for the widest vector instructions this CPU has ([`vector_isa`]).
///
/// What runs with the wider instructions is the code inlined into `f`, so mark the closure
/// `#[inline(always)]` (without it the compiler may keep the closure a separate function,
/// compiled for the baseline) and keep the hot loop in its body or in `#[inline(always)]`
/// functions it calls. Call `vectorized` once per block of work (a chunk a thread owns), not
/// per element, and not around a parallel iterator, whose tasks run in rayon's functions.
///
/// ```
/// let (a, b) = (vec![1.5f32; 1000], vec![2.0f32; 1000]);
/// let dot: f32 = deepsim_kernels::vectorized(
///     #[inline(always)]
///     || a.iter().zip(&b).map(|(x, y)| x * y).sum(),
/// );
/// assert_eq!(dot, 3000.0);
/// ```
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    match vector_isa() {
        // SAFETY: `detect` found every feature `avx512` is compiled with.
        #[cfg(target_arch = "x86_64")]
        VectorIsa::Avx512 => unsafe { x86::avx512(f) },
        // SAFETY: as above, for `avx2`'s features.
        #[cfg(target_arch = "x86_64")]
        VectorIsa::Avx2 => unsafe { x86::avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// `f` with AVX-512 (F, VL, DQ, BW) and FMA enabled for what inlines into it.
    ///
    /// # Safety
    /// The CPU must have those features.
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// `f` with AVX2 and FMA enabled for what inlines into it.
    ///
    /// # Safety
    /// The CPU must have those features.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Whether `T` is f32 and this CPU has AVX-512: the condition under which this crate's
/// hand-written AVX-512 kernels run (the packed Winograd products, the fully connected
/// streaming kernels, the stride-4 gather of stacked sub-planes), each with a portable loop
/// for every other case.
pub(crate) fn f32_on_avx512<T: 'static>() -> bool {
    is_f32::<T>() && vector_isa() == VectorIsa::Avx512
}

fn is_f32<T: 'static>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
}

/// `x` seen as f32s, for the AVX-512 kernels of callers generic over the element.
///
/// # Panics
/// If `T` is not f32.
pub(crate) fn f32s<T: 'static>(x: &[T]) -> &[f32] {
    assert!(is_f32::<T>(), "f32 kernel: not f32");
    // SAFETY: `T` is f32 (asserted), so the slice is one of f32s.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

/// [`f32s`], mutable.
///
/// # Panics
/// If `T` is not f32.
pub(crate) fn f32s_mut<T: 'static>(x: &mut [T]) -> &mut [f32] {
    assert!(is_f32::<T>(), "f32 kernel: not f32");
    // SAFETY: as in `f32s`.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        // A dot product with lane accumulators and an elementwise update, run through the
        // dispatcher and through a plain call that stays on the baseline (no inlining into a
        // feature-enabled function): the results must agree bit for bit.
        let a: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let b: Vec<f32> = (0..1000).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021).collect();
        #[inline(never)]
        fn plain(a: &[f32], b: &[f32]) -> (f32, Vec<f32>) {
            body(a, b)
        }
        #[inline(always)]
        fn body(a: &[f32], b: &[f32]) -> (f32, Vec<f32>) {
            let mut acc = [0f32; 16];
            for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
                for j in 0..16 {
                    acc[j] += x[j] * y[j];
                }
            }
            let update = a.iter().zip(b).map(|(&x, &y)| 0.9 * x + 0.1 * y * y).collect();
            (acc.iter().sum(), update)
        }
        let (want_dot, want_update) = plain(&a, &b);
        let (dot, update) = vectorized(
            #[inline(always)]
            || body(&a, &b),
        );
        assert_eq!(dot.to_bits(), want_dot.to_bits(), "{} on {:?}", dot, vector_isa());
        assert!(update.iter().zip(&want_update).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
