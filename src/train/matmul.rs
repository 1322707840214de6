//! Strided f32 matrix products on plain slices, for the fused training ops.
//!
//! A thin checked wrapper over the `gemm` crate, the kernel candle's own matmul runs (packed,
//! cache-blocked, AVX2/FMA or AVX-512 picked at run time, a portable fallback elsewhere). The
//! fused ops call it on their own buffers: the linear layer on whole activations (rows split
//! over candle's thread pool, [`row_blocks`]), attention on one key/value head's tiles inside a task that is
//! already one thread's work. For a given thread count each product sums in a fixed order, so
//! training stays deterministic.

/// A read-only matrix view: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix whose rows are `rs` apart (`cols` ≤ `rs` of them used).
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        MatRef { data, rs, cs: 1 }
    }
    /// The transpose of a row-major matrix whose rows are `rs` apart.
    pub fn transposed(data: &'a [f32], rs: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: rs,
        }
    }
    /// One past the largest offset `(r, c)` reaches for `r < rows`, `c < cols`.
    fn span(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * self.rs + (cols - 1) * self.cs + 1
        }
    }
}

/// `dst (m, n) = a (m, k) · b (k, n)`, or `dst += a·b` when `accumulate`; `dst` is row-major
/// with rows `dst_rs` apart. `threads` > 1 splits the product's rows over candle's pool
/// ([`row_blocks`]).
///
/// Panics if a view is too small for its shape (a bug in the caller, not bad input).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
    threads: usize,
) {
    let dst_span = MatRef::rows(&[], dst_rs).span(m, n);
    assert!(
        dst.len() >= dst_span && (m < 2 || dst_rs >= n),
        "gemm: destination too small"
    );
    // SAFETY: `dst` holds every element the product writes (asserted above; rows dst_rs ≥ n
    // apart, so no two share a slot), is initialised, and is borrowed mutably for the call.
    unsafe { gemm_raw(m, n, k, dst.as_mut_ptr(), dst_rs, accumulate, a, b, threads) }
}

/// `a (m, k) · b (k, n)` into a new row-major `(m, n)` vector. The product writes every
/// element without reading it, so the buffer is not zero-filled first (for a training step's
/// activation-sized products that fill was a few percent of the step).
///
/// Panics if a view is too small for its shape.
pub fn product(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    threads: usize,
) -> Vec<f32> {
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the spare capacity holds m·n elements, written row-major with rows n apart;
    // with `accumulate` false the product never reads them (gemm zeroes its alpha and writes
    // `beta·a·b`, or zeros when k = 0). After the call all m·n are initialised.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst.spare_capacity_mut().as_mut_ptr().cast(),
            n,
            false,
            a,
            b,
            threads,
        );
        dst.set_len(m * n);
    }
    dst
}

/// The product on a raw destination (see [`gemm`]); checks the operand views.
///
/// # Safety
///
/// `dst` must be valid for writes of every element `(r, c)`, `r < m`, `c < n`, at
/// `r·dst_rs + c`, with `dst_rs ≥ n` when `m > 1`, and not aliased; with `accumulate` those
/// elements must also be initialised.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
    threads: usize,
) {
    assert!(
        a.data.len() >= a.span(m, k) && b.data.len() >= b.span(k, n),
        "gemm: operands too small for a {m}x{k} by {k}x{n} product"
    );
    if m == 0 || n == 0 {
        return;
    }
    let _p = crate::train::profile::matmul();
    let parts = row_blocks(m, threads);
    if parts.len() < 2 {
        // SAFETY: as for this function.
        unsafe { gemm_serial(m, n, k, dst, dst_rs, accumulate, a, b) };
        return;
    }
    let dst = SharedDst(dst);
    candle_core::utils::barrier_pool().execute_chunked(parts.len(), |range| {
        for rows in &parts[range] {
            let a_rows = MatRef {
                data: &a.data[rows.start * a.rs..],
                ..a
            };
            // SAFETY: each block writes only its own rows of `dst` (rows `dst_rs ≥ n` apart,
            // vouched for by the caller), and `a_rows` holds the block's rows of `a`.
            unsafe {
                gemm_serial(
                    rows.len(),
                    n,
                    k,
                    dst.at(rows.start * dst_rs),
                    dst_rs,
                    accumulate,
                    a_rows,
                    b,
                )
            };
        }
    });
}

/// The rows of an `m`-row product split into one contiguous block per thread, each a multiple
/// of [`ROW_ALIGN`] rows but the last; a single block when the product is too small to share.
///
/// Why our own split rather than gemm's rayon parallelism: for training's shapes (thousands of
/// rows, a few hundred columns) gemm split the work so finely, on a second pool beside candle's,
/// that two threads ran the products no faster than one. One block per thread on candle's
/// pool keeps both cores on long serial kernels. The blocks depend only on `m` and the thread
/// count, and every element is summed by the same serial kernel in the same order, so results
/// are deterministic for a given thread count.
fn row_blocks(m: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let threads = threads.max(1);
    if threads == 1 || m < MIN_ROWS_PER_THREAD * threads {
        return std::iter::once(0..m).collect();
    }
    let per = m.div_ceil(threads).next_multiple_of(ROW_ALIGN);
    (0..m).step_by(per).map(|s| s..(s + per).min(m)).collect()
}

/// How many threads' blocks an `m`-row product splits into ([`row_blocks`]).
pub fn row_split(m: usize, threads: usize) -> usize {
    row_blocks(m, threads).len()
}

/// Block sizes are multiples of this (a few of the kernels' register tiles).
const ROW_ALIGN: usize = 16;
/// Products with fewer rows than this per thread run on one thread.
const MIN_ROWS_PER_THREAD: usize = 64;

/// A destination pointer shared by threads that write disjoint rows.
#[derive(Clone, Copy)]
struct SharedDst(*mut f32);
// SAFETY: only used for disjoint writes while the destination is borrowed by `gemm_raw`.
unsafe impl Send for SharedDst {}
unsafe impl Sync for SharedDst {}
impl SharedDst {
    /// SAFETY: `offset` lies within the destination.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

/// One gemm call on the calling thread.
///
/// # Safety
///
/// As for [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_serial(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
) {
    // SAFETY: the caller's assert keeps every read inside `a` and `b`, which stay borrowed for
    // the call; the caller vouches for `dst`. gemm handles k = 0 itself (zeros, or `dst`
    // unchanged when accumulating).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The transpose of a row-major `(rows, cols)` matrix, in square tiles so that both the
/// reads and the writes stay within a few cache lines per tile.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 16;
    assert!(src.len() >= rows * cols, "transpose: source too small");
    let mut dst = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..rows.min(r0 + TILE) {
                for c in c0..cols.min(c0 + TILE) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    dst
}

/// Threads for products over whole activations: candle's pool, its workers and the caller.
pub fn pool_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

#[cfg(test)]
mod tests {
    use super::row_blocks;

    #[test]
    fn transpose_moves_every_element_across_the_diagonal() {
        // Sizes that are and are not multiples of the tile, and degenerate ones.
        for (rows, cols) in [(0, 3), (1, 1), (1, 17), (16, 16), (33, 7), (40, 129)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = super::transpose(&src, rows, cols);
            assert_eq!(t.len(), rows * cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} ({r}, {c})"
                    );
                }
            }
            assert_eq!(
                super::transpose(&t, cols, rows),
                src,
                "{rows}x{cols} round trip"
            );
        }
    }

    #[test]
    fn row_blocks_cover_every_row_once_in_aligned_blocks() {
        for (m, threads) in [
            (0, 2),
            (1, 2),
            (127, 2),
            (128, 2),
            (258, 2),
            (4096, 2),
            (1000, 3),
        ] {
            let blocks = row_blocks(m, threads);
            assert!(
                blocks.len() <= threads,
                "{m} rows, {threads} threads: {blocks:?}"
            );
            assert_eq!(blocks.first().map(|b| b.start), Some(0));
            assert_eq!(blocks.last().map(|b| b.end), Some(m));
            for w in blocks.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{m} rows: {blocks:?}");
                assert_eq!(w[0].len() % 16, 0, "{m} rows: {blocks:?}");
            }
        }
        assert_eq!(row_blocks(4096, 1).len(), 1);
        assert_eq!(row_blocks(100, 2).len(), 1, "too few rows to share");
        assert_eq!(row_blocks(258, 2), [0..144, 144..258]);
    }
}
