//! Exact decimal numbers: weights, ratios and milliseconds are read from the number's text as
//! scaled integers, so `0.1` is exactly 1000 ppm, with no floating point anywhere.

use super::{refuse, ConfigError, FULL_WEIGHT_BP};

/// A JSON number in plain decimal notation with at most `decimals` fractional digits, as an
/// integer scaled by `10^decimals`: `parse_decimal("12.5", 2) == Ok(1250)`. Exact, no floats.
pub fn parse_decimal(text: &str, decimals: u32) -> Result<u64, String> {
    let text = text.trim();
    if text.starts_with('"')
        || text.starts_with('[')
        || text.starts_with('{')
        || text == "true"
        || text == "false"
        || text == "null"
    {
        return Err(format!("invalid type: {text}, expected a number"));
    }
    if text.starts_with('-') {
        return Err(format!("must not be negative, got {text}"));
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) || (text.contains('.') && fraction.is_empty())
    {
        return Err(format!("must be a plain decimal number, got {text}"));
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > decimals as usize {
        return Err(format!("at most {decimals} decimals allowed, got {text}"));
    }
    let scale = 10u64.pow(decimals);
    let mut frac_value: u64 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        frac_value += u64::from(b - b'0') * 10u64.pow(decimals - 1 - i as u32);
    }
    whole
        .parse::<u64>()
        .ok()
        .and_then(|w| w.checked_mul(scale))
        .and_then(|w| w.checked_add(frac_value))
        .ok_or_else(|| format!("out of range, got {text}"))
}

/// `0..=100` with at most two decimals, as basis points.
pub fn percent_to_bp(text: &str) -> Result<u16, ConfigError> {
    const FIELD: &str = "split.canary_percent";
    let bp = parse_decimal(text, 2).map_err(|reason| refuse(FIELD, reason))?;
    u16::try_from(bp)
        .ok()
        .filter(|&bp| bp <= FULL_WEIGHT_BP)
        .ok_or_else(|| refuse(FIELD, format!("must be between 0 and 100, got {}", text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn percent_converts_exactly_to_basis_points() {
        assert_eq!(percent_to_bp("0").unwrap(), 0);
        assert_eq!(percent_to_bp("0.01").unwrap(), 1);
        assert_eq!(percent_to_bp("33.33").unwrap(), 3333);
        assert_eq!(percent_to_bp("12.50").unwrap(), 1250);
        assert_eq!(percent_to_bp("100").unwrap(), 10_000);
        assert_eq!(percent_to_bp("100.00").unwrap(), 10_000);
        assert_eq!(parse_decimal("0.001", 6).unwrap(), 1_000);
        assert_eq!(parse_decimal("18446744073709.551615", 6).unwrap(), u64::MAX);
        assert!(parse_decimal("18446744073709.551616", 6).is_err());
        for bad in
            ["1e1", "1.", ".5", "+1", "0x10", "", "1.2.3", "100.001", "99999999999999999999", "184467440737095516.17"]
        {
            assert!(percent_to_bp(bad).is_err(), "{bad}");
        }
    }
}
