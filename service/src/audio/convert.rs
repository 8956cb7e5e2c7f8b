//! Sample conversions between `f32` and the integer formats.
//!
//! Integers map to floats by dividing by 2^15 (i16) or 2^31 (i32), so every integer value has an
//! exact float image and `i16 → f32 → i16` is lossless. Floats map back by multiplying by the
//! same power of two, rounding to nearest (ties to even) and saturating, so 1.0 becomes 32767
//! and anything beyond ±1.0 clips instead of wrapping. NaN becomes 0.

const I16_SCALE: f32 = 32_768.0;
const I32_SCALE: f64 = 2_147_483_648.0;

/// Adding then subtracting 1.5 × 2^23 rounds an `f32` of magnitude < 2^22 to the nearest
/// integer, ties to even, using only additions the compiler can vectorise on any x86_64.
const F32_ROUND_MAGIC: f32 = 12_582_912.0;
/// The same trick for `f64` (1.5 × 2^52).
const F64_ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

#[inline]
pub fn i16_to_f32(v: i16) -> f32 {
    f32::from(v) * (1.0 / I16_SCALE)
}

#[inline]
pub fn i32_to_f32(v: i32) -> f32 {
    (f64::from(v) * (1.0 / I32_SCALE)) as f32
}

#[inline]
pub fn f32_to_i16(v: f32) -> i16 {
    let scaled = v * I16_SCALE;
    // NaN is mapped to 0 first, so the clamp sees only numbers and compiles to min/max.
    let scaled = if scaled.is_nan() { 0.0 } else { scaled.clamp(-32_768.0, 32_767.0) };
    let rounded = (scaled + F32_ROUND_MAGIC) - F32_ROUND_MAGIC;
    // SAFETY: `rounded` is finite and within [-32768, 32767], so it fits an i32 exactly.
    unsafe { rounded.to_int_unchecked::<i32>() as i16 }
}

#[inline]
pub fn f32_to_i32(v: f32) -> i32 {
    let scaled = f64::from(v) * I32_SCALE;
    let scaled = if scaled.is_nan() { 0.0 } else { scaled.clamp(-2_147_483_648.0, 2_147_483_647.0) };
    let rounded = (scaled + F64_ROUND_MAGIC) - F64_ROUND_MAGIC;
    // SAFETY: `rounded` is finite and within the i32 range.
    unsafe { rounded.to_int_unchecked::<i32>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i16_edges_map_exactly() {
        assert_eq!(i16_to_f32(i16::MIN), -1.0);
        assert_eq!(i16_to_f32(i16::MAX), 32_767.0 / 32_768.0);
        assert_eq!(f32_to_i16(-1.0), i16::MIN);
        assert_eq!(f32_to_i16(1.0), i16::MAX, "1.0 saturates to 32767");
        assert_eq!(f32_to_i16(1.5), i16::MAX);
        assert_eq!(f32_to_i16(-7.0), i16::MIN);
        assert_eq!(f32_to_i16(f32::INFINITY), i16::MAX);
        assert_eq!(f32_to_i16(f32::NEG_INFINITY), i16::MIN);
        assert_eq!(f32_to_i16(f32::NAN), 0);
    }

    #[test]
    fn i16_round_trip_is_lossless_for_every_value() {
        for v in i16::MIN..=i16::MAX {
            assert_eq!(f32_to_i16(i16_to_f32(v)), v);
        }
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        let half = 1.0 / 32_768.0 / 2.0;
        assert_eq!(f32_to_i16(half), 0, "0.5 LSB rounds to even 0");
        assert_eq!(f32_to_i16(3.0 * half), 2, "1.5 LSB rounds to even 2");
        assert_eq!(f32_to_i16(-3.0 * half), -2);
        assert_eq!(f32_to_i16(0.4 / 32_768.0), 0);
        assert_eq!(f32_to_i16(0.6 / 32_768.0), 1);
    }

    #[test]
    fn i32_edges_map_exactly() {
        assert_eq!(i32_to_f32(i32::MIN), -1.0);
        assert_eq!(f32_to_i32(-1.0), i32::MIN);
        assert_eq!(f32_to_i32(1.0), i32::MAX, "1.0 saturates to 2^31 - 1");
        assert_eq!(f32_to_i32(2.0), i32::MAX);
        assert_eq!(f32_to_i32(0.5), 1 << 30);
        assert_eq!(f32_to_i32(f32::NAN), 0);
    }

    #[test]
    fn i32_round_trip_keeps_float_precision() {
        for v in [i32::MIN, -1 << 24, -12_345_678, 0, 1 << 8, 87_654_321, i32::MAX - 127] {
            let back = f32_to_i32(i32_to_f32(v));
            // f32 has a 24-bit mantissa: the round trip is exact to 2^-24 of full scale.
            assert!((i64::from(back) - i64::from(v)).abs() <= 128, "{v} -> {back}");
        }
    }
}
