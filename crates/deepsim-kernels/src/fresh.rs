//! Output matrices written once, in parallel, without being zero-filled first.
//!
//! `vec![0.0; n]` writes every element before a kernel that overwrites every element anyway:
//! for a 4096×4096 weight gradient that is a 64 MiB memset per step (and, on memory the
//! allocator has just taken from the kernel, a page fault per 4 KiB). [`fill_rows`] hands a
//! kernel its rows uninitialized, behind cursors that only append, and checks that every row
//! was written to its end before the vector exists.

use std::mem::MaybeUninit;

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
}
