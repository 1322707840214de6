//! Int8 group dot products: the innermost loop of every Q8_0 matmul.
//!
//! The portable kernel is the reference: plain Rust that LLVM vectorises on the host. The
//! ESP32-S3 PIE kernel (feature `esp32s3`) must return exactly the same integers.

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

// ESP32-S3 PIE kernel (Xtensa inline assembly) and the host interpreter that tests its template.
pub mod pie;
pub mod pie_interp;
