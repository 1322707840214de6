//! Int8 group dot products and the Q8_0 matrix–vector product built on them: the innermost
//! loops of every matmul.
//!
//! There is one definition of the arithmetic and several ways of executing it:
//!
//! * [`dot_i8`] is the single dispatch point for one group: the ESP32-S3 PIE kernel
//!   (`pie::dot_i8_pie_slices`) when built for the badge (`esp32s3` on Xtensa), the portable
//!   kernel everywhere else. Both return the exact integer sum, so they are interchangeable.
//! * [`q8_matvec`] computes whole output rows. Per row it sums, in group order,
//!   `(dot(w_group, x_group) as f32 · w_scale) · x_scale` in f32, starting from 0. Every
//!   implementation performs exactly these float operations in exactly this order (the integer
//!   dot products are exact), so the result of a row does not depend on the implementation, on
//!   how many rows are computed together, or on which worker computes it: one and two workers,
//!   host and badge give bit-identical rows.
//!
//!   On the badge it calls [`dot_i8`] (PIE) for every group. On the host the portable code is
//!   written for LLVM to vectorise: group sizes 32 and 64 are compiled for their fixed length
//!   (widening i8 → i16 multiplies summed in pairs into i32, `pmaddwd`), and four rows are
//!   computed together so that each activation group is loaded once per four rows. On x86-64
//!   with `std`, the same generic code is also compiled with AVX2 enabled and chosen at run time
//!   when the CPU has it (the default x86-64 target only assumes SSE2).
//!
//! # Alignment
//!
//! `ee.vld.128.ip`, the PIE load, ignores the low four address bits, so every operand the PIE
//! kernel receives must start on a 16-byte boundary, or it silently reads the wrong bytes. This
//! holds by construction: the blob format places every tensor's int8 data at a 16-byte-aligned
//! offset in a blob whose base is 16-byte aligned (checked by `Blob::parse`), rows are `cols`
//! bytes long and groups `group_size` bytes long, both multiples of 16 for every group size
//! the PIE path accepts; the quantized activations live in an [`AlignedBuf`](crate::buffers::AlignedBuf).
//! Group sizes below 16 (or any misaligned operand) make `dot_i8_pie_slices` fall back to the
//! portable kernel, which is slower but exact.

// ESP32-S3 PIE kernel (Xtensa inline assembly) and the host interpreter that tests its template.
pub mod pie;
pub mod pie_interp;

/// Sum of `a[i] * b[i]` over two int8 slices of equal length, in 32-bit integer arithmetic.
///
/// Preconditions (checked in debug builds): equal lengths. A Q8_0 group of 64 values sums to at
/// most 64 · 128 · 128 = 2^20 in magnitude, so `i32` never overflows for any group size the
/// format allows (≤ 2^16 values).
#[inline]
pub fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len(), "dot_i8: operands differ in length");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// The group dot product of this build: the PIE kernel on the badge, the portable one elsewhere.
/// Both give the exact integer sum.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(all(feature = "esp32s3", target_arch = "xtensa"))]
    {
        pie::dot_i8_pie_slices(a, b)
    }
    #[cfg(not(all(feature = "esp32s3", target_arch = "xtensa")))]
    {
        dot_i8_portable(a, b)
    }
}

/// Which group-dot code a matmul runs (see [`q8_matvec_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    /// This build's fast path: the PIE kernel on the badge, the vectorised code on the host.
    #[default]
    Vector,
    /// The plain scalar loop ([`dot_i8_portable`]) for every group: the reference, and the
    /// badge's fallback when the boot self-test finds the PIE kernel wrong.
    Portable,
}

/// [`q8_matvec`] with the given kernel. Both give the same bits (the integer group sums are
/// exact and the float operations are the same, in the same order).
#[allow(clippy::too_many_arguments)]
pub fn q8_matvec_with(
    kernel: Kernel,
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    group_size: usize,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    match kernel {
        Kernel::Vector => q8_matvec(wq, ws, cols, group_size, xq, xs, out),
        Kernel::Portable => {
            let (wq, ws, xq, xs) = checked_operands(wq, ws, cols, group_size, xq, xs, out.len());
            matvec_groups(dot_i8_portable, wq, ws, cols, group_size, xq, xs, out);
        }
    }
}

/// The operands of a matvec with `rows` output rows, checked (panics on a caller's shape
/// error) and cut to exactly what it reads.
fn checked_operands<'a>(
    wq: &'a [i8],
    ws: &'a [f32],
    cols: usize,
    group_size: usize,
    xq: &'a [i8],
    xs: &'a [f32],
    rows: usize,
) -> (&'a [i8], &'a [f32], &'a [i8], &'a [f32]) {
    assert!(group_size > 0 && cols.is_multiple_of(group_size));
    let groups = cols / group_size;
    assert!(wq.len() >= rows * cols && ws.len() >= rows * groups);
    assert!(xq.len() >= cols && xs.len() >= groups);
    (
        &wq[..rows * cols],
        &ws[..rows * groups],
        &xq[..cols],
        &xs[..groups],
    )
}

/// A fixed-length group dot product (the length known at compile time lets LLVM unroll it into
/// a few widening multiply-adds).
#[cfg(not(all(feature = "esp32s3", target_arch = "xtensa")))]
#[inline(always)]
fn dot_fixed<const N: usize>(a: &[i8; N], b: &[i8; N]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// Q8_0 matrix–vector product: `out[r] = Σ_g (dot(wq[r, g], xq[g]) as f32 · ws[r, g]) · xs[g]`,
/// the sum taken in group order from 0.
///
/// `wq` holds `out.len()` rows of `cols` int8 values, `ws` their `cols / group_size` scales
/// per row; `xq`/`xs` the quantized input (`cols` values, `cols / group_size` scales).
pub fn q8_matvec(
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    group_size: usize,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    let (wq, ws, xq, xs) = checked_operands(wq, ws, cols, group_size, xq, xs, out.len());

    #[cfg(all(feature = "esp32s3", target_arch = "xtensa"))]
    {
        matvec_by_group(wq, ws, cols, group_size, xq, xs, out);
    }
    #[cfg(not(all(feature = "esp32s3", target_arch = "xtensa")))]
    {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { matvec_avx2(wq, ws, cols, group_size, xq, xs, out) };
            return;
        }
        matvec_host(wq, ws, cols, group_size, xq, xs, out);
    }
}

/// One row at a time, one [`dot_i8`] call per group: the badge's path (PIE kernel), and the
/// host's for group sizes other than 32 and 64.
#[inline(always)]
fn matvec_by_group(
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    gs: usize,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    matvec_groups(dot_i8, wq, ws, cols, gs, xq, xs, out);
}

/// One row at a time, `dot` for every group.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn matvec_groups(
    dot: impl Fn(&[i8], &[i8]) -> i32,
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    gs: usize,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    let groups = cols / gs;
    for ((o, wr), sr) in out
        .iter_mut()
        .zip(wq.chunks_exact(cols))
        .zip(ws.chunks_exact(groups))
    {
        let mut sum = 0.0f32;
        for ((wg, xg), (&s, &x_s)) in wr
            .chunks_exact(gs)
            .zip(xq.chunks_exact(gs))
            .zip(sr.iter().zip(xs))
        {
            sum += dot(wg, xg) as f32 * s * x_s;
        }
        *o = sum;
    }
}

/// Rows in blocks of four for a group size fixed at compile time.
#[cfg(not(all(feature = "esp32s3", target_arch = "xtensa")))]
#[inline(always)]
fn matvec_fixed<const GS: usize>(
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    let groups = cols / GS;
    let group = |v: &[i8], g: usize| -> [i8; GS] {
        let mut a = [0i8; GS];
        a.copy_from_slice(&v[g * GS..][..GS]);
        a
    };
    let mut blocks = out.chunks_exact_mut(4);
    let mut row = 0;
    for o in &mut blocks {
        let w: [&[i8]; 4] = core::array::from_fn(|k| &wq[(row + k) * cols..][..cols]);
        let s: [&[f32]; 4] = core::array::from_fn(|k| &ws[(row + k) * groups..][..groups]);
        let mut sum = [0.0f32; 4];
        for g in 0..groups {
            let x = group(xq, g);
            let x_s = xs[g];
            for k in 0..4 {
                let acc = dot_fixed::<GS>(&group(w[k], g), &x);
                sum[k] += acc as f32 * s[k][g] * x_s;
            }
        }
        o.copy_from_slice(&sum);
        row += 4;
    }
    for o in blocks.into_remainder() {
        let w = &wq[row * cols..][..cols];
        let s = &ws[row * groups..][..groups];
        let mut sum = 0.0f32;
        for g in 0..groups {
            sum += dot_fixed::<GS>(&group(w, g), &group(xq, g)) as f32 * s[g] * xs[g];
        }
        *o = sum;
        row += 1;
    }
}

#[cfg(not(all(feature = "esp32s3", target_arch = "xtensa")))]
#[inline(always)]
fn matvec_host(
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    gs: usize,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    match gs {
        32 => matvec_fixed::<32>(wq, ws, cols, xq, xs, out),
        64 => matvec_fixed::<64>(wq, ws, cols, xq, xs, out),
        _ => matvec_by_group(wq, ws, cols, gs, xq, xs, out),
    }
}

/// The AVX2 path: the same arithmetic as [`matvec_host`], written with intrinsics because
/// LLVM, left to itself, vectorises the four-row block across rows (`vpmulld` on widened
/// values) instead of along the group.
///
/// Per group of four rows: the activation group is sign-extended to i16 once (`vpmovsxbw`),
/// each weight row is sign-extended and multiplied with `vpmaddwd` (i16·i16 products summed in
/// pairs into i32 lanes, exact: |a·b + c·d| ≤ 2^15 for int8 inputs), the four rows' lanes are
/// reduced together with two `vphaddd`, and the four integer sums are converted and scaled
/// lane-wise, `sum[r] = sum[r] + (acc[r] as f32 · ws[r]) · xs`: the same IEEE operations, in
/// the same order per row, as the scalar code.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(all(
    feature = "std",
    target_arch = "x86_64",
    not(all(feature = "esp32s3", target_arch = "xtensa"))
))]
#[target_feature(enable = "avx2")]
unsafe fn matvec_avx2(
    wq: &[i8],
    ws: &[f32],
    cols: usize,
    gs: usize,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    match gs {
        16 => avx2::matvec::<1>(wq, ws, cols, xq, xs, out),
        32 => avx2::matvec::<2>(wq, ws, cols, xq, xs, out),
        64 => avx2::matvec::<4>(wq, ws, cols, xq, xs, out),
        128 => avx2::matvec::<8>(wq, ws, cols, xq, xs, out),
        _ => matvec_host(wq, ws, cols, gs, xq, xs, out),
    }
}

#[cfg(all(
    feature = "std",
    target_arch = "x86_64",
    not(all(feature = "esp32s3", target_arch = "xtensa"))
))]
mod avx2 {
    use core::arch::x86_64::*;

    /// Sixteen int8 values at `p`, sign-extended to i16.
    #[inline(always)]
    unsafe fn widen(p: *const i8) -> __m256i {
        // SAFETY (caller): 16 bytes readable at `p`; unaligned loads are allowed.
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
    }

    /// i32 lanes of one row's group: Σ over `C` chunks of 16 of `vpmaddwd(w, x)`.
    #[inline(always)]
    unsafe fn group_lanes<const C: usize>(w: *const i8, x: &[__m256i; C]) -> __m256i {
        let mut acc = _mm256_setzero_si256();
        for (c, xc) in x.iter().enumerate() {
            // SAFETY (caller): the group's 16·C bytes are readable at `w`.
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(unsafe { widen(w.add(16 * c)) }, *xc));
        }
        acc
    }

    /// Rows of a matrix with groups of `16·C` values (see `super::matvec_avx2`).
    ///
    /// # Safety
    /// AVX2; `wq`/`ws` hold `out.len()` rows, `xq`/`xs` one input (checked by `q8_matvec`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn matvec<const C: usize>(
        wq: &[i8],
        ws: &[f32],
        cols: usize,
        xq: &[i8],
        xs: &[f32],
        out: &mut [f32],
    ) {
        let gs = 16 * C;
        let groups = cols / gs;
        assert!(wq.len() >= out.len() * cols && ws.len() >= out.len() * groups);
        assert!(xq.len() >= cols && xs.len() >= groups);
        let (w0, x0) = (wq.as_ptr(), xq.as_ptr());
        let mut blocks = out.chunks_exact_mut(4);
        let mut row = 0;
        for o in &mut blocks {
            let mut sum = _mm_setzero_ps();
            for g in 0..groups {
                // SAFETY: rows row..row+4 and group g lie inside `wq` (asserted above), the
                // activation group inside `xq`.
                unsafe {
                    let x: [__m256i; C] = core::array::from_fn(|c| widen(x0.add(g * gs + 16 * c)));
                    let w = w0.add(row * cols + g * gs);
                    let a0 = group_lanes::<C>(w, &x);
                    let a1 = group_lanes::<C>(w.add(cols), &x);
                    let a2 = group_lanes::<C>(w.add(2 * cols), &x);
                    let a3 = group_lanes::<C>(w.add(3 * cols), &x);
                    // hadd(a0, a1) per 128-bit half: [a0 01, a0 23, a1 01, a1 23]; again with
                    // (a2, a3): [Σa0, Σa1, Σa2, Σa3] per half (each over its four lanes).
                    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
                    let acc =
                        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                    let s = _mm_set_ps(
                        ws[(row + 3) * groups + g],
                        ws[(row + 2) * groups + g],
                        ws[(row + 1) * groups + g],
                        ws[row * groups + g],
                    );
                    let p = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(acc), s), _mm_set1_ps(xs[g]));
                    sum = _mm_add_ps(sum, p);
                }
            }
            // SAFETY: `o` holds exactly four f32s.
            unsafe { _mm_storeu_ps(o.as_mut_ptr(), sum) };
            row += 4;
        }
        for o in blocks.into_remainder() {
            let mut sum = 0.0f32;
            for g in 0..groups {
                // SAFETY: as above, for one row.
                let acc = unsafe {
                    let x: [__m256i; C] = core::array::from_fn(|c| widen(x0.add(g * gs + 16 * c)));
                    let a = group_lanes::<C>(w0.add(row * cols + g * gs), &x);
                    let q =
                        _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
                    let q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0b01_00_11_10));
                    let q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0b10_11_00_01));
                    _mm_cvtsi128_si32(q)
                };
                sum += acc as f32 * ws[row * groups + g] * xs[g];
            }
            *o = sum;
            row += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> alloc::vec::Vec<i8> {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 255) as i8 // covers -128..=127 through the wrap
            })
            .collect()
    }

    /// Every path (fixed 32/64, per group, AVX2 where present, odd row counts) gives the
    /// reference row sums bit for bit.
    #[test]
    fn matvec_matches_the_per_group_reference() {
        for (rows, cols, gs) in [
            (9, 128, 64),
            (7, 224, 32),
            (5, 96, 16),
            (4, 64, 8),
            (1, 64, 64),
        ] {
            let groups = cols / gs;
            let wq = values(rows * cols, 3);
            let xq = values(cols, 5);
            let ws: alloc::vec::Vec<f32> = (0..rows * groups)
                .map(|i| 0.001 + i as f32 * 1e-4)
                .collect();
            let xs: alloc::vec::Vec<f32> = (0..groups).map(|i| 0.02 / (1 + i) as f32).collect();
            let mut want = alloc::vec![0f32; rows];
            for (r, w) in want.iter_mut().enumerate() {
                let mut sum = 0.0f32;
                for g in 0..groups {
                    let acc = dot_i8_portable(&wq[r * cols + g * gs..][..gs], &xq[g * gs..][..gs]);
                    sum += acc as f32 * ws[r * groups + g] * xs[g];
                }
                *w = sum;
            }
            let mut got = alloc::vec![0f32; rows];
            q8_matvec(&wq, &ws, cols, gs, &xq, &xs, &mut got);
            let bits = |v: &[f32]| {
                v.iter()
                    .map(|x| x.to_bits())
                    .collect::<alloc::vec::Vec<_>>()
            };
            assert_eq!(bits(&got), bits(&want), "{rows}x{cols} gs {gs}");
            let mut portable = alloc::vec![0f32; rows];
            matvec_host(&wq, &ws, cols, gs, &xq, &xs, &mut portable);
            assert_eq!(
                bits(&portable),
                bits(&want),
                "portable {rows}x{cols} gs {gs}"
            );
            let mut scalar = alloc::vec![0f32; rows];
            q8_matvec_with(Kernel::Portable, &wq, &ws, cols, gs, &xq, &xs, &mut scalar);
            assert_eq!(bits(&scalar), bits(&want), "scalar {rows}x{cols} gs {gs}");
        }
    }
}
