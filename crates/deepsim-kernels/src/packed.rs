//! The Winograd points' matrix products on AVX-512, with the transformed kernels packed ahead.
//!
//! At each point ξ a Winograd convolution multiplies the kernels' `out × in` matrix `U` by the
//! transformed inputs' `in × tiles` matrix `V` (tiles in rows of 16-lane groups, the layout
//! [`crate::winograd`] writes). A general GEMM packs both operands on every call; here `U` is
//! packed once, when the kernels are transformed, into panels of [`ROWS`] rows (for each input
//! channel the panel's [`ROWS`] values side by side), and `V` is read where it lies: each step
//! of the micro-kernel loads [`SPAN`] vectors of 16 tiles from one row of `V`, broadcasts
//! [`ROWS`] kernel values and makes `ROWS × SPAN` vector FMAs into accumulators held in
//! registers, each finally stored as 16 tiles of one output channel's row, the layout the
//! output transform reads. On AlexNet conv4's points (256 × 384 by 384 × 198, one thread) the
//! micro-kernel ran at 111 GFLOP/s where the `gemm` crate ran at 104 and the FMA probe peaks at
//! 116.

use crate::check::Real;

/// Kernel rows (output channels) of a panel and of the micro-kernel's block.
pub(crate) const ROWS: usize = 8;
/// Groups of 16 tiles the micro-kernel spans: `ROWS × SPAN` = 24 accumulators of the 32
/// vector registers, the rest for the loaded tiles and the broadcast.
const SPAN: usize = 3;
/// Tiles a vector holds.
const LANES: usize = 16;

/// Whether products in `T` run here: f32 on a CPU with AVX-512 (elsewhere the transformed
/// kernels keep their row-major layout and go to the `gemm` crate).
pub(crate) fn packs<T: 'static>() -> bool {
    crate::simd::f32_on_avx512::<T>()
}

/// Elements of `rows × k` packed: rows rounded up to whole panels.
pub(crate) fn packed_len(rows: usize, k: usize) -> usize {
    rows.next_multiple_of(ROWS) * k
}

/// Packs the row-major `rows × k` matrix `u` into `dst` ([`packed_len`] elements): element
/// `(o, c)` at `(o / ROWS · k + c) · ROWS + o % ROWS`, the rows past `rows` zero.
pub(crate) fn pack<T: Real>(u: &[T], rows: usize, k: usize, dst: &mut [T]) {
    assert!(u.len() >= rows * k && dst.len() >= packed_len(rows, k), "pack: out of bounds");
    for (panel, out) in dst[..packed_len(rows, k)].chunks_exact_mut(ROWS * k).enumerate() {
        for (c, values) in out.chunks_exact_mut(ROWS).enumerate() {
            for (r, v) in values.iter_mut().enumerate() {
                let o = panel * ROWS + r;
                *v = if o < rows { u[o * k + c] } else { T::zero() };
            }
        }
    }
}

/// `dst[o][t] = Σ_c u[o][c] · v[c][t]` for the `rows` rows of the packed `u` (`rows × k`,
/// from [`pack`]) and the tiles `t < count` rounded up to whole groups of 16: `v` has rows
/// `vs` apart, `dst` rows `ld` apart, and both hold those whole groups (lanes past `count`
/// get what `v`'s lanes there give).
///
/// # Panics
/// If a slice is too short, or a row stride shorter than the groups; where [`packs`] is false.
#[allow(clippy::too_many_arguments)]
// The micro-kernel exists on x86-64 only; elsewhere the call stops at the assertion.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn multiply(
    u: &[f32],
    rows: usize,
    k: usize,
    v: &[f32],
    vs: usize,
    count: usize,
    dst: &mut [f32],
    ld: usize,
) {
    assert!(packs::<f32>(), "packed products: no AVX-512 here");
    let width = count.div_ceil(LANES) * LANES;
    if rows == 0 || width == 0 {
        return;
    }
    assert!(width <= vs && width <= ld, "packed products: a row stride under {width} tiles");
    assert!(u.len() >= packed_len(rows, k), "packed products: kernels out of bounds");
    assert!(k == 0 || v.len() >= (k - 1) * vs + width, "packed products: inputs out of bounds");
    assert!(dst.len() >= (rows - 1) * ld + width, "packed products: output out of bounds");
    if k == 0 {
        for row in dst.chunks_mut(ld).take(rows) {
            row[..width].fill(0.0);
        }
        return;
    }
    let groups = width / LANES;
    for g0 in (0..groups).step_by(SPAN) {
        let span = SPAN.min(groups - g0);
        for panel in 0..rows.div_ceil(ROWS) {
            let held = ROWS.min(rows - panel * ROWS);
            // SAFETY: AVX-512 is here (asserted); the panel's `k · ROWS` kernel values, the
            // `k` rows of `span` groups of `v` from group `g0` and the `held` rows of `dst`
            // there lie inside the slices (asserted above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let u = u.as_ptr().add(panel * ROWS * k);
                let v = v.as_ptr().add(g0 * LANES);
                let d = dst.as_mut_ptr().add(panel * ROWS * ld + g0 * LANES);
                match span {
                    3 => x86::block::<3>(k, u, v, vs, d, ld, held),
                    2 => x86::block::<2>(k, u, v, vs, d, ld, held),
                    _ => x86::block::<1>(k, u, v, vs, d, ld, held),
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LANES, ROWS};

    /// One block: `held` (≤ [`ROWS`]) rows of `dst` (`ld` apart) over `N` groups of 16 tiles,
    /// from a panel `u` (`k · ROWS` values) and `k` rows of `v` (`vs` apart).
    ///
    /// # Safety
    /// AVX-512F must be present and the pointers valid for those reads and writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block<const N: usize>(
        k: usize,
        u: *const f32,
        v: *const f32,
        vs: usize,
        dst: *mut f32,
        ld: usize,
        held: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); N]; ROWS];
        for c in 0..k {
            // SAFETY: row `c` of `v` and value `c` of the panel are in bounds (the caller's).
            unsafe {
                let row = v.add(c * vs);
                let x: [__m512; N] = std::array::from_fn(|i| _mm512_loadu_ps(row.add(i * LANES)));
                let w = u.add(c * ROWS);
                for (r, sums) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*w.add(r));
                    for (s, &xi) in sums.iter_mut().zip(&x) {
                        *s = _mm512_fmadd_ps(b, xi, *s);
                    }
                }
            }
        }
        for (r, sums) in acc.iter().enumerate().take(held) {
            for (i, &s) in sums.iter().enumerate() {
                // SAFETY: row `r < held` of `dst`, group `i < N`: in bounds (the caller's).
                unsafe { _mm512_storeu_ps(dst.add(r * ld + i * LANES), s) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::seeded;

    #[test]
    fn packed_products_match_a_direct_sum() {
        // Odd sizes: rows not a whole panel, tiles not whole groups nor whole spans, strides
        // wider than the tiles; against sums in f64.
        if !packs::<f32>() {
            eprintln!("no AVX-512 on this CPU: the packed products are not used here");
            return;
        }
        for &(rows, k, count, vs, ld) in &[
            (13usize, 37usize, 53usize, 80usize, 64usize),
            (8, 1, 16, 16, 16),
            (3, 200, 100, 112, 128),
            (24, 5, 33, 48, 48),
        ] {
            let u: Vec<f32> = seeded(rows * k, 1).into_iter().map(|x| x as f32).collect();
            let v: Vec<f32> = seeded(k * vs, 2).into_iter().map(|x| x as f32).collect();
            let mut packed = vec![0.0; packed_len(rows, k)];
            pack(&u, rows, k, &mut packed);
            let mut dst = vec![f32::NAN; (rows - 1) * ld + count.div_ceil(16) * 16];
            multiply(&packed, rows, k, &v, vs, count, &mut dst, ld);
            for o in 0..rows {
                for t in 0..count.div_ceil(16) * 16 {
                    let want: f64 =
                        (0..k).map(|c| u[o * k + c] as f64 * v[c * vs + t] as f64).sum();
                    let got = dst[o * ld + t] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "rows {rows} k {k} count {count}: ({o}, {t}) {got} against {want}"
                    );
                }
            }
        }
    }
}
