//! Natural logarithm and exponential for the sequential test, small enough for the filter:
//! std's (libm's) carry about 6 KB of tables. Accurate to a few units in the 15th digit,
//! far finer than the evidence needs (a trip threshold is `ln(1/alpha)` ≈ 6.9).

const LN_2: f64 = std::f64::consts::LN_2;

/// `ln x` for finite `x > 0`; `-inf` for 0, NaN below.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // x = m · 2^e with m in [√½, √2): ln x = e·ln 2 + ln m.
    let bits = x.to_bits();
    let (mut exponent, mut fraction) = ((bits >> 52) as i64, bits & ((1 << 52) - 1));
    if exponent == 0 {
        // Subnormal: scale into the normal range first.
        let scaled = (x * (1u64 << 54) as f64).to_bits();
        exponent = (scaled >> 52) as i64 - 54;
        fraction = scaled & ((1 << 52) - 1);
    }
    let mut m = f64::from_bits(fraction | (1023 << 52));
    let mut e = exponent - 1023;
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln m = 2·atanh(s), s = (m−1)/(m+1), |s| ≤ 0.172: the series converges fast.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..12 {
        sum += term / f64::from(2 * k + 1);
        term *= s2;
    }
    e as f64 * LN_2 + 2.0 * sum
}

/// `e^x`; 0 far below zero, `inf` far above.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < -745.2 {
        return 0.0;
    }
    if x > 709.8 {
        return f64::INFINITY;
    }
    // x = k·ln 2 + r with |r| ≤ ½ln 2: e^x = 2^k · e^r.
    let k = (x / LN_2).round();
    let r = x - k * LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=16 {
        term *= r / f64::from(n);
        sum += term;
    }
    // 2^k in two steps, so that k down to −1074 (subnormal results) stays exact.
    let half = (k / 2.0).trunc();
    sum * pow2(half) * pow2(k - half)
}

/// `2^k` for an integer `k` in `[-1022, 1023]`, clamped at the ends.
fn pow2(k: f64) -> f64 {
    let k = k.clamp(-1022.0, 1023.0) as i64;
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `ln(e^a + e^b)` without overflow; `-inf` is zero.
pub fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + ln(1.0 + exp(lo - hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-13 * b.abs().max(1.0)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ln_matches_std_across_the_range() {
        let mut x = 1e-310;
        while x < 1e300 {
            assert!(close(ln(x), x.ln()), "ln({x}) = {} vs {}", ln(x), x.ln());
            x *= 1.37;
        }
        for x in [1.0, 2.0, 0.5, std::f64::consts::SQRT_2, 1.0 + 1e-9, 1000.0, 0.1] {
            assert!(close(ln(x), x.ln()), "ln({x})");
        }
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f64::NAN).is_nan());
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn exp_matches_std_across_the_range() {
        let mut x = -700.0;
        while x < 709.0 {
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= 1e-13 * want, "exp({x}) = {got} vs {want}");
            x += 0.731;
        }
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(1000.0), f64::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn log_add_is_the_log_of_a_sum() {
        assert!(close(log_add(2f64.ln(), 3f64.ln()), 5f64.ln()));
        assert_eq!(log_add(f64::NEG_INFINITY, 1.5), 1.5);
        assert_eq!(log_add(f64::NEG_INFINITY, f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(close(log_add(1000.0, 0.0), 1000.0));
    }
}
