//! Strided f32 matrix products on plain slices, for the fused training ops.
//!
//! A thin checked wrapper over the `gemm` crate, the kernel candle's own matmul runs (packed,
//! cache-blocked, AVX2/FMA or AVX-512 picked at run time, a portable fallback elsewhere). The
//! fused ops call it on their own buffers: the linear layer on whole activations (split over
//! the thread pool like candle's matmul), attention on one key/value head's tiles inside a task that is
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
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above keeps every read inside `a` and `b`, which stay borrowed for
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
            parallelism,
        );
    }
}

/// Threads for products over whole activations: candle's own count (`RAYON_NUM_THREADS`).
pub fn pool_threads() -> usize {
    candle_core::utils::get_num_threads()
}
