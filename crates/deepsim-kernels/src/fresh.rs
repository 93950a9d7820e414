//! Output matrices written once, in parallel, without being zero-filled first.
//!
//! `vec![0.0; n]` writes every element before a kernel that overwrites every element anyway:
//! for a 4096×4096 weight gradient that is a 64 MiB memset per step (and, on memory the
//! allocator has just taken from the kernel, a page fault per 4 KiB). [`fill_rows`] hands a
//! kernel its rows uninitialized, behind cursors that only append, and checks that every row
//! was written to its end before the vector exists; [`Scattered`] takes writes at any places
//! (tiles of an image) and checks that as many elements were written as the vector holds.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

/// One row of a matrix being filled: values are appended in order, each element once.
pub(crate) struct RowCursor<'a, T> {
    row: &'a mut [MaybeUninit<T>],
    filled: usize,
}

impl<T: Copy> RowCursor<'_, T> {
    /// Writes `values` after those already written.
    ///
    /// # Panics
    /// When the row has fewer than `values.len()` elements left (a kernel bug).
    #[inline(always)]
    pub(crate) fn append(&mut self, values: &[T]) {
        let end = self.filled + values.len();
        for (slot, &v) in self.row[self.filled..end].iter_mut().zip(values) {
            slot.write(v);
        }
        self.filled = end;
    }
}

/// A row-major `rows × width` matrix whose rows `fill(first, cursors)` writes on rayon's
/// threads, `block` rows per call: `cursors` are the rows `first..first + cursors.len()`.
///
/// # Panics
/// When `fill` leaves any element of its rows unwritten (a kernel bug): the panic comes before
/// the vector is assembled, so no unwritten element can be read.
pub(crate) fn fill_rows<T, F>(rows: usize, width: usize, block: usize, fill: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(usize, &mut [RowCursor<'_, T>]) + Sync,
{
    let (len, block) = (rows * width, block.max(1));
    let mut out = Vec::with_capacity(len);
    if len > 0 {
        out.spare_capacity_mut()[..len].par_chunks_mut(block * width).enumerate().for_each(
            |(c, chunk)| {
                let mut cursors: Vec<RowCursor<'_, T>> =
                    chunk.chunks_mut(width).map(|row| RowCursor { row, filled: 0 }).collect();
                fill(c * block, &mut cursors);
                assert!(
                    cursors.iter().all(|r| r.filled == width),
                    "fill_rows: a row of block {c} was left short"
                );
            },
        );
    }
    // SAFETY: the capacity is at least `len`, and every one of the `len` elements was written:
    // each block asserted that all of its rows were filled to `width`, the blocks cover the
    // `len` elements, and a failed assertion panics out of `for_each` before this line.
    unsafe { out.set_len(len) };
    out
}

/// A vector of `len` elements that several threads fill at places no two of them share (the
/// tiles of a convolution's output), uninitialized until written. Writers report how many
/// elements they wrote ([`Scattered::count`], once per block of work); [`Scattered::finish`]
/// checks that the counts add up to `len` before the vector exists.
pub(crate) struct Scattered<T> {
    vec: Vec<T>,
    ptr: *mut T,
    len: usize,
    written: AtomicUsize,
}

// SAFETY: the buffer is owned by the value and reached only through `write`, whose contract
// forbids two writes of one element; `T` itself crosses threads.
unsafe impl<T: Send> Send for Scattered<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Scattered<T> {}

impl<T: Copy> Scattered<T> {
    /// `len` elements, none written.
    pub(crate) fn new(len: usize) -> Self {
        let mut vec = Vec::with_capacity(len);
        let ptr = vec.as_mut_ptr();
        Self { vec, ptr, len, written: AtomicUsize::new(0) }
    }

    /// Writes `values` at `start..start + values.len()`.
    ///
    /// # Safety
    /// No other call, on any thread, writes any of these elements.
    ///
    /// # Panics
    /// When the range does not lie inside the vector.
    #[inline(always)]
    pub(crate) unsafe fn write(&self, start: usize, values: &[T]) {
        assert!(
            start <= self.len && values.len() <= self.len - start,
            "scattered write out of bounds"
        );
        // SAFETY: in bounds of the allocation (asserted; the capacity is at least `len`); no
        // other write touches these elements (the caller's contract), and nothing reads them
        // before `finish`.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(start), values.len()) }
    }

    /// Records that `n` more elements were written.
    pub(crate) fn count(&self, n: usize) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// The vector, every element written.
    ///
    /// # Panics
    /// When the writers reported a number of elements other than `len` (a kernel bug): the
    /// panic comes before the vector is assembled, so no unwritten element can be read.
    pub(crate) fn finish(mut self) -> Vec<T> {
        let written = self.written.load(Ordering::Relaxed);
        assert_eq!(
            written, self.len,
            "scattered vector: {written} of {} elements written",
            self.len
        );
        // SAFETY: the capacity is at least `len`; writes are disjoint (the contract of
        // `write`) and `len` of them were counted, so every element was written once.
        unsafe { self.vec.set_len(self.len) };
        std::mem::take(&mut self.vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_written_in_order() {
        // 7 rows of 5 in blocks of 3 (a short last block): element (r, j) = 10r + j.
        let m = fill_rows(7, 5, 3, |first, rows| {
            for (i, row) in rows.iter_mut().enumerate() {
                let r = (first + i) as f32;
                row.append(&[10.0 * r, 10.0 * r + 1.0]);
                row.append(&[10.0 * r + 2.0, 10.0 * r + 3.0, 10.0 * r + 4.0]);
            }
        });
        let want: Vec<f32> =
            (0..7).flat_map(|r| (0..5).map(move |j| (10 * r + j) as f32)).collect();
        assert_eq!(m, want);
        assert!(fill_rows::<f32, _>(0, 5, 3, |_, _| {}).is_empty());
    }

    #[test]
    fn a_row_left_short_is_caught() {
        let short = std::panic::catch_unwind(|| {
            fill_rows(4, 3, 2, |first, rows| {
                for row in rows.iter_mut() {
                    let n = if first == 2 { 2 } else { 3 };
                    row.append(&vec![1.0f64; n]);
                }
            })
        });
        assert!(short.is_err());
    }

    #[test]
    fn scattered_writes_fill_the_vector() {
        // Four rows of 6 written as 2×3 tiles from two threads, in any order.
        let s = Scattered::new(24);
        rayon::scope(|scope| {
            for tile in 0..4 {
                let s = &s;
                scope.spawn(move |_| {
                    let (r0, c0) = (2 * (tile / 2), 3 * (tile % 2));
                    for r in r0..r0 + 2 {
                        let row: Vec<f32> = (c0..c0 + 3).map(|c| (10 * r + c) as f32).collect();
                        // SAFETY: the four tiles are disjoint.
                        unsafe { s.write(r * 6 + c0, &row) };
                    }
                    s.count(6);
                });
            }
        });
        let want: Vec<f32> =
            (0..4).flat_map(|r| (0..6).map(move |c| (10 * r + c) as f32)).collect();
        assert_eq!(s.finish(), want);
    }

    #[test]
    fn a_scattered_vector_left_short_is_caught() {
        let s = Scattered::<f64>::new(8);
        // SAFETY: one write.
        unsafe { s.write(0, &[1.0; 4]) };
        s.count(4);
        assert!(std::panic::catch_unwind(move || s.finish()).is_err());
        let s = Scattered::<f64>::new(8);
        assert!(std::panic::catch_unwind(|| unsafe { s.write(6, &[1.0; 4]) }).is_err());
    }
}
