//! A bounds-checked, safe front to the `gemm` crate's matrix multiply for f32 and f64.

use std::marker::PhantomData;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::check::Real;

/// A read-only strided matrix view: element (i, j) sits at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Threads for one GEMM call: all of rayon's when the caller does not parallelize itself.
pub(crate) fn parallelism(serial: bool) -> Parallelism {
    let threads = rayon::current_num_threads();
    if serial || threads <= 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// `dst` (row-major `cols × rows`) ← the transpose of `src` (row-major `rows × cols`), in 32×32
/// tiles so that the strided side of the copy stays within a few cache lines at a time.
pub(crate) fn transpose_into<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const TILE: usize = 32;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose: out of bounds");
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
}

/// [`transpose_into`] on rayon's threads, each writing a band of `dst`'s rows.
pub(crate) fn transpose_into_par<T: Copy + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    dst: &mut [T],
) {
    const BAND: usize = 32;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose: out of bounds");
    dst[..rows * cols].par_chunks_mut(BAND * rows).enumerate().for_each(|(band, out)| {
        let j0 = band * BAND;
        let width = out.len() / rows;
        for i0 in (0..rows).step_by(BAND) {
            for j in 0..width {
                for i in i0..(i0 + BAND).min(rows) {
                    out[j * rows + i] = src[i * cols + j0 + j];
                }
            }
        }
    });
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`), `dst` row-major `m × n`.
///
/// Asserts the shapes agree and every view lies inside its slice: callers derive both from
/// validated tensor shapes, so a failure here is a bug in this crate, not bad user input.
pub(crate) fn matmul<T: Real>(
    dst: &mut [T],
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    par: Parallelism,
) {
    matmul_into(dst, rhs.cols, lhs, rhs, accumulate, par)
}

/// [`matmul`] into a `dst` whose rows lie `ld` elements apart (`ld ≥ n`).
pub(crate) fn matmul_into<T: Real>(
    dst: &mut [T],
    ld: usize,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    par: Parallelism,
) {
    check_views(dst.len(), ld, &lhs, &rhs);
    // SAFETY: `check_views` keeps every index of all three views inside their slices, and
    // `dst` is borrowed mutably (no aliasing).
    unsafe { gemm_raw(dst.as_mut_ptr(), (ld, 1), lhs, rhs, accumulate, par) }
}

/// [`matmul`] into a column-major `dst`: element (i, j) at `dst[i + j·m]`.
///
/// The `gemm` crate packs its left operand fastest when it is column-major and turns a
/// row-major problem around (`dstᵀ = rhsᵀ·lhsᵀ`), so the operand that ends up on the left
/// decides the packing cost. A product with a short, wide row-major `rhsᵀ` (a weight gradient's
/// im2col columns) packs cheaply this way round.
pub(crate) fn matmul_col_major<T: Real>(
    dst: &mut [T],
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    par: Parallelism,
) {
    // The transposed problem has the same footprint with rows `m` apart.
    check_views(dst.len(), lhs.rows, &rhs.t(), &lhs.t());
    // SAFETY: as in `matmul_into`: every view is inside its slice and `dst` is exclusive.
    unsafe { gemm_raw(dst.as_mut_ptr(), (1, lhs.rows), lhs, rhs, accumulate, par) }
}

/// Asserts that the product of `lhs` and `rhs` fits a destination of `dst_len` elements with
/// rows `ld` apart, and that both views lie inside their slices.
///
/// Callers derive all shapes from validated tensor shapes, so a failure here is a bug in this
/// crate, not bad user input.
fn check_views<T>(dst_len: usize, ld: usize, lhs: &Mat<'_, T>, rhs: &Mat<'_, T>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "gemm: inner dimensions differ");
    assert!(
        m == 0 || n == 0 || (ld >= n && dst_len >= (m - 1) * ld + n && lhs.fits() && rhs.fits()),
        "gemm: view out of bounds"
    );
}

/// The `gemm` crate's call: `dst = lhs · rhs` (or `+=`), element (i, j) of `dst` at
/// `i·rs + j·cs` for `(rs, cs) = dst_strides`.
///
/// # Safety
/// `check_views` must hold for the `dst` that `dst` points into (for a column-major `dst`, on
/// the transposed problem), and no other thread may touch the `m × n` elements written while
/// the call runs. `T` is f32 or f64 (the only implementors of `Real`), which `gemm` supports.
unsafe fn gemm_raw<T: Real>(
    dst: *mut T,
    dst_strides: (usize, usize),
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    par: Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the caller's contract (above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// A mutable slice that several threads write at once, each at places no other thread touches
/// (tiles, pixel ranges of one image): the work split guarantees the disjointness that Rust's
/// borrows cannot express for interleaved regions such as one pixel range of every channel.
pub(crate) struct SharedSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: the slice is borrowed mutably for 'a, so only the threads sharing this handle reach
// it, and every write goes through the unsafe methods whose contract forbids overlap.
unsafe impl<T: Send> Send for SharedSlice<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedSlice<'_, T> {}

impl<'a, T: Real> SharedSlice<'a, T> {
    /// Shares `data` for the lifetime of the handle.
    pub fn new(data: &'a mut [T]) -> Self {
        Self { ptr: data.as_mut_ptr(), len: data.len(), _borrow: PhantomData }
    }

    /// The elements `start..start + len`.
    ///
    /// # Safety
    /// No other thread may access these elements while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start <= self.len && len <= self.len - start, "shared slice: out of bounds");
        // SAFETY: in bounds (asserted); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// [`matmul_into`] into the matrix starting at element `start`, rows `ld` apart.
    ///
    /// # Safety
    /// No other thread may access the written elements (rows `start + i·ld`, `n` long) while
    /// the call runs.
    pub unsafe fn matmul_into(
        &self,
        start: usize,
        ld: usize,
        lhs: Mat<'_, T>,
        rhs: Mat<'_, T>,
        accumulate: bool,
        par: Parallelism,
    ) {
        assert!(start <= self.len, "shared slice: out of bounds");
        check_views(self.len - start, ld, &lhs, &rhs);
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { gemm_raw(self.ptr.add(start), (ld, 1), lhs, rhs, accumulate, par) }
    }
}
