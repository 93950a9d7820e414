//! A bounds-checked, safe front to the `gemm` crate's matrix multiply for f32 and f64.

use gemm::Parallelism;

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
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "gemm: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ld >= n && dst.len() >= (m - 1) * ld + n && lhs.fits() && rhs.fits(),
        "gemm: view out of bounds"
    );
    // SAFETY: the asserts above keep every index of all three views inside their slices, `dst`
    // is borrowed mutably (no aliasing), and T is f32 or f64 (the only implementors of Real).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
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
