//! Q8_0 quantization: int8 values in groups of `GS`, one f32 scale per group.
//!
//! The exporter quantizes weights with these functions and the engine quantizes activations
//! with the very same ones at run time, so the host and the badge can never round differently.
//! `scale = max|x| / 127`, `q = round(x / scale)` with ties away from zero, and an all-zero
//! group gets scale 0 (and all-zero values) instead of a division by zero. A group whose
//! largest value is so small a subnormal that `max / 127` underflows to 0 gets the smallest
//! subnormal as its scale instead: its values are whole multiples of it, at most 63, so they
//! are stored exactly. Any finite group therefore quantizes to values of the right sign.

/// Why a group size cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSizeError {
    /// Zero or not a power of two.
    NotPowerOfTwo { group_size: usize },
    /// The forced group size does not divide a row length the model has.
    DoesNotDivide { group_size: usize, row_len: usize },
}

impl core::fmt::Display for GroupSizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotPowerOfTwo { group_size } => {
                write!(f, "group size {group_size} is not a power of two ≥ 1")
            }
            Self::DoesNotDivide {
                group_size,
                row_len,
            } => write!(
                f,
                "group size {group_size} does not divide the row length {row_len}; \
                 pick a power of two that divides every row length, or leave the size to the exporter"
            ),
        }
    }
}

/// The largest power of two `≤ requested` that divides every row length: the group size the
/// exporter uses when the user did not force one (the 6M model's dim 224 rules out 64 → 32).
pub fn choose_group_size(requested: usize, row_lens: &[usize]) -> Result<usize, GroupSizeError> {
    if requested == 0 {
        return Err(GroupSizeError::NotPowerOfTwo { group_size: 0 });
    }
    let mut gs = 1usize << (usize::BITS - 1 - requested.leading_zeros());
    while gs > 1 && row_lens.iter().any(|&n| n % gs != 0) {
        gs /= 2;
    }
    Ok(gs)
}

/// Accepts a forced group size only when it is a power of two dividing every row length.
pub fn check_group_size(group_size: usize, row_lens: &[usize]) -> Result<(), GroupSizeError> {
    if group_size == 0 || !group_size.is_power_of_two() {
        return Err(GroupSizeError::NotPowerOfTwo { group_size });
    }
    match row_lens.iter().find(|&&n| n % group_size != 0) {
        Some(&row_len) => Err(GroupSizeError::DoesNotDivide {
            group_size,
            row_len,
        }),
        None => Ok(()),
    }
}

/// Quantizes one group and returns its scale.
#[inline]
pub fn quantize_group(x: &[f32], q: &mut [i8]) -> f32 {
    debug_assert_eq!(x.len(), q.len());
    let max_abs = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max_abs == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let scale = (max_abs / 127.0).max(SMALLEST_SUBNORMAL);
    for (qi, &xi) in q.iter_mut().zip(x) {
        // A subnormal scale is inexact, so a quotient may land a little past ±127: clamp.
        *qi = round_half_away(xi / scale).clamp(-127, 127) as i8;
    }
    scale
}

/// The smallest positive f32 (2^-149).
const SMALLEST_SUBNORMAL: f32 = f32::from_bits(1);

/// Rounds half away from zero, exactly like `roundf`, for |v| < 2^23 (here |v| ≤ 127), and
/// without a libm call: the engine quantizes every activation through this on every token.
/// `v - trunc(v)` is exact in f32 for such v. Any other input saturates: values beyond the
/// i32 range (±inf included) give `i32::MAX` or `i32::MIN`, never a wrapped sign; NaN gives 0.
#[inline]
pub fn round_half_away(v: f32) -> i32 {
    // `as` truncates toward zero and saturates at the i32 range.
    let t = v as i32;
    let frac = v - t as f32;
    if frac >= 0.5 {
        t.saturating_add(1)
    } else if frac <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// Quantizes `x` (its length a multiple of `group_size`) into `q` and one scale per group.
/// Every element belongs to exactly one group: there is no tail that could be skipped.
pub fn quantize(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32]) {
    assert!(
        group_size > 0 && x.len().is_multiple_of(group_size),
        "quantize: length {} is not a multiple of group size {group_size}",
        x.len()
    );
    assert_eq!(q.len(), x.len());
    assert_eq!(scales.len(), x.len() / group_size);
    for ((xg, qg), s) in x
        .chunks_exact(group_size)
        .zip(q.chunks_exact_mut(group_size))
        .zip(scales.iter_mut())
    {
        *s = quantize_group(xg, qg);
    }
}

/// The inverse of [`quantize`]: `out[i] = q[i] * scale[group of i]`.
pub fn dequantize(q: &[i8], scales: &[f32], group_size: usize, out: &mut [f32]) {
    assert_eq!(q.len(), out.len());
    assert_eq!(scales.len() * group_size, q.len());
    for ((qg, og), &s) in q
        .chunks_exact(group_size)
        .zip(out.chunks_exact_mut(group_size))
        .zip(scales)
    {
        for (o, &v) in og.iter_mut().zip(qg) {
            *o = f32::from(v) * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_largest_dividing_power_of_two() {
        assert_eq!(choose_group_size(64, &[224, 768]), Ok(32));
        assert_eq!(choose_group_size(64, &[128, 512]), Ok(64));
        assert_eq!(choose_group_size(100, &[128]), Ok(64));
        assert_eq!(choose_group_size(64, &[7]), Ok(1));
        assert!(choose_group_size(0, &[8]).is_err());
    }

    #[test]
    fn rejects_forced_size_that_does_not_divide() {
        assert_eq!(
            check_group_size(64, &[224, 768]),
            Err(GroupSizeError::DoesNotDivide {
                group_size: 64,
                row_len: 224
            })
        );
        assert!(check_group_size(48, &[96]).is_err());
        assert!(check_group_size(32, &[224, 768]).is_ok());
    }

    #[test]
    fn ties_round_away_from_zero_and_boundaries_hold() {
        // max 127 → scale 1: values are reproduced exactly, halves round away from zero.
        let x = [127.0, -127.0, 2.5, -2.5, 0.5, -0.5, 0.0, 1.49];
        let mut q = [0i8; 8];
        let s = quantize_group(&x, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [127, -127, 3, -3, 1, -1, 0, 1]);
    }

    #[test]
    fn fast_rounding_equals_roundf() {
        let mut x = 0x1234_5678u32;
        for i in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = (x as f32 / u32::MAX as f32 - 0.5) * 260.0;
            let v = if i % 3 == 0 {
                (v * 2.0).round_ties_even() / 2.0
            } else {
                v
            }; // many exact halves
            assert_eq!(round_half_away(v), libm::roundf(v) as i32, "{v}");
        }
        for v in [
            0.49999997f32,
            -0.49999997,
            0.5,
            -0.5,
            126.5,
            -126.5,
            0.0,
            -0.0,
        ] {
            assert_eq!(round_half_away(v), libm::roundf(v) as i32, "{v}");
        }
    }

    /// Quantizes `x` and checks what must hold for any finite group: every value keeps its
    /// sign (or becomes 0), the largest one saturates to ±127 unless the group is exact, and
    /// the round trip is within half a step (plus the scale's own rounding).
    fn check_group(x: &[f32]) -> (f32, alloc::vec::Vec<i8>) {
        let mut q = alloc::vec![0i8; x.len()];
        let s = quantize_group(x, &mut q);
        assert!(s.is_finite() && s >= 0.0, "scale {s} for {x:?}");
        for (&xi, &qi) in x.iter().zip(&q) {
            assert!(
                qi == 0 || (qi > 0) == (xi > 0.0),
                "{xi:e} quantized to {qi} (scale {s:e})"
            );
            assert!((-127..=127).contains(&qi));
            let back = f64::from(qi) * f64::from(s);
            let err = (back - f64::from(xi)).abs();
            assert!(
                err <= 0.5 * f64::from(s) * (1.0 + 1e-5) + 1e-45 * 2.0,
                "{xi:e} → {qi} × {s:e} = {back:e}"
            );
        }
        (s, q)
    }

    #[test]
    fn subnormal_zero_max_and_huge_groups_keep_their_signs() {
        let tiny = SMALLEST_SUBNORMAL;
        // Largest value a tiny subnormal: max/127 underflows; stored exactly.
        let x = [
            tiny,
            -tiny * 3.0,
            0.0,
            -0.0,
            tiny * 63.0,
            -tiny * 63.0,
            tiny * 2.0,
            0.0,
        ];
        let (s, q) = check_group(&x);
        assert_eq!(s, tiny);
        assert_eq!(q, [1, -3, 0, 0, 63, -63, 2, 0]);
        // Negative extreme alone (the overflow used to flip it positive in release).
        let (_, q) = check_group(&[-tiny, 0.0, 0.0, 0.0]);
        assert_eq!(q, [-1, 0, 0, 0]);
        // Larger subnormals: max/127 is a subnormal, inexact.
        for max_bits in [64u32, 127, 128, 1000, 0x7F_FFFF] {
            let m = f32::from_bits(max_bits);
            let (s, q) = check_group(&[m, -m, m / 2.0, -m / 3.0]);
            // Either the largest value uses the full range, or the scale is so fine that the
            // value is held exactly.
            let exact = f32::from(q[0]) * s == m;
            assert!(exact || q[0] >= 126, "{max_bits}: {q:?}");
            assert_eq!(q[1], -q[0]);
        }
        // ±0: zero scale, zero values.
        assert_eq!(
            check_group(&[0.0, -0.0, 0.0, -0.0]),
            (0.0, alloc::vec![0; 4])
        );
        // ±max and huge values.
        let (_, q) = check_group(&[f32::MAX, -f32::MAX, 1.0, -1e38]);
        assert_eq!((q[0], q[1], q[2]), (127, -127, 0));
        assert!(q[3] < 0);
        let (_, q) = check_group(&[-3e38, 1e30, -1e-30, f32::MIN_POSITIVE]);
        assert_eq!(q[0], -127);
    }

    #[test]
    fn rounding_saturates_instead_of_wrapping() {
        assert_eq!(round_half_away(f32::INFINITY), i32::MAX);
        assert_eq!(round_half_away(f32::NEG_INFINITY), i32::MIN);
        assert_eq!(round_half_away(3e9), i32::MAX);
        assert_eq!(round_half_away(-3e9), i32::MIN);
        assert_eq!(round_half_away(f32::NAN), 0);
        assert_eq!(round_half_away(-2147483648.0), i32::MIN);
        assert_eq!(round_half_away(16777216.0), 16777216);
    }

    proptest::proptest! {
        #[test]
        fn any_finite_group_keeps_signs(bits in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..40)) {
            let x: alloc::vec::Vec<f32> = bits
                .iter()
                .map(|&b| f32::from_bits(b))
                .map(|v| if v.is_finite() { v } else { 0.0 })
                .collect();
            check_group(&x);
            // The same values squeezed into the subnormal range.
            let sub: alloc::vec::Vec<f32> = bits.iter().map(|&b| f32::from_bits(b & 0x807F_FFFF)).collect();
            check_group(&sub);
        }
    }

    #[test]
    fn zero_group_gets_zero_scale() {
        let x = [0.0f32; 16];
        let mut q = [1i8; 16];
        assert_eq!(quantize_group(&x, &mut q), 0.0);
        assert!(q.iter().all(|&v| v == 0));
    }
}
