//! Strided f32 matrix products on plain slices, for the fused training ops.
//!
//! A thin checked wrapper over the `gemm` crate, the kernel candle's own matmul runs (packed,
//! cache-blocked, AVX2/FMA or AVX-512 picked at run time, a portable fallback elsewhere). The
//! fused ops call it on their own buffers: the linear layer on whole activations (split over
//! the thread pool like candle's matmul), attention on one head's tiles inside a task that is
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
/// with rows `dst_rs` apart. `threads` > 1 splits the product over rayon's pool.
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
    assert!(
        a.data.len() >= a.span(m, k) && b.data.len() >= b.span(k, n),
        "gemm: operands too small for a {m}x{k} by {k}x{n} product"
    );
    let dst_span = MatRef::rows(&[], dst_rs).span(m, n);
    assert!(
        dst.len() >= dst_span && (m < 2 || dst_rs >= n),
        "gemm: destination too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let _p = crate::train::profile::matmul();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every read inside `a` and `b` and every write inside
    // `dst` (rows dst_rs ≥ n apart, so no two elements share a slot); the views borrow their
    // slices for the whole call, and `dst` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
            parallelism,
        );
    }
}

/// Threads for products over whole activations: candle's own count (`RAYON_NUM_THREADS`).
pub fn pool_threads() -> usize {
    candle_core::utils::get_num_threads()
}
