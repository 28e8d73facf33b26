//! Cookie header parsing and `Set-Cookie` rendering, on raw bytes: a request header may be
//! anything a client sends, including invalid UTF-8, so nothing here assumes text.

/// The value of the first cookie called `name` in a `Cookie` header, without surrounding quotes.
/// Pairs without `=` and stray whitespace are skipped, never an error.
pub fn find<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    find_valid(header, name, Some)
}

/// The first value of the cookies called `name` that `valid` accepts, as `valid` reads it: a
/// repeated cookie (two paths, a stale copy) is read as its first valid value.
pub fn find_valid<'a, T>(header: &'a [u8], name: &str, valid: impl Fn(&'a [u8]) -> Option<T>) -> Option<T> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = pair.split_at(eq);
        if k.trim_ascii() != name.as_bytes() {
            return None;
        }
        let v = v.get(1..)?.trim_ascii();
        valid(match v {
            [b'"', inner @ .., b'"'] => inner,
            _ => v,
        })
    })
}

/// A bucket as written by [`SetCookie::bucket`]: canonical decimal in `0..10_000`.
pub fn parse_bucket(value: &[u8]) -> Option<u16> {
    if value.is_empty() || value.len() > 4 || (value.len() > 1 && value.first() == Some(&b'0')) {
        return None;
    }
    let mut n: u16 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u16::from(b - b'0');
    }
    Some(n)
}

/// Pre-rendered pieces of the sticky `Set-Cookie` header, built once per configuration so a
/// request only appends the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    prefix: String,
    attributes: String,
}

impl SetCookie {
    /// `name=…; Max-Age=…; Path=/; HttpOnly; SameSite=Lax[; Secure]`.
    pub fn new(name: &str, max_age_s: u32, secure: bool) -> Self {
        let secure = if secure { "; Secure" } else { "" };
        SetCookie {
            prefix: format!("{name}="),
            attributes: format!("; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Lax{secure}"),
        }
    }

    /// The header value storing `bucket`.
    pub fn bucket(&self, bucket: u16) -> String {
        self.value(&bucket.to_string())
    }

    /// The header value storing `value` (a pin, or a signed value).
    pub fn value(&self, value: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + value.len() + self.attributes.len());
        out.push_str(&self.prefix);
        out.push_str(value);
        out.push_str(&self.attributes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn finds_cookies_among_others() {
        let h = b"a=1; canary_bucket=42;session=abc ; q=\"quoted\"";
        assert_eq!(find(h, "canary_bucket"), Some(&b"42"[..]));
        assert_eq!(find(h, "session"), Some(&b"abc"[..]));
        assert_eq!(find(h, "q"), Some(&b"quoted"[..]));
        assert_eq!(find(h, "missing"), None);
        assert_eq!(find(h, "canary"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn first_of_duplicates_wins_and_junk_is_skipped() {
        assert_eq!(find(b"x=1; x=2", "x"), Some(&b"1"[..]));
        assert_eq!(find(b";;junk; =; x; \xff\xfe=\x00; x=ok", "x"), Some(&b"ok"[..]));
        assert_eq!(find(b"x=", "x"), Some(&b""[..]));
        assert_eq!(find(b"", "x"), None);
        assert_eq!(find(b"x=\"", "x"), Some(&b"\""[..]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_valid_value_of_a_repeated_cookie_wins() {
        assert_eq!(find_valid(b"x=abc; x=5; x=7", "x", parse_bucket), Some(5));
        assert_eq!(find_valid(b"x=; y=3; x=2", "x", |v: &[u8]| (!v.is_empty()).then_some(v)), Some(&b"2"[..]));
        assert_eq!(find_valid(b"x=abc; x=10000", "x", parse_bucket), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn buckets_parse_only_in_canonical_form() {
        assert_eq!(parse_bucket(b"0"), Some(0));
        assert_eq!(parse_bucket(b"9999"), Some(9999));
        assert_eq!(parse_bucket(b"42"), Some(42));
        for bad in [&b""[..], b"10000", b"042", b"-1", b"+1", b"1e3", b"12a", b"\xff", b" 1", b"99999999999999999999"] {
            assert_eq!(parse_bucket(bad), None, "{bad:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn set_cookie_round_trips_and_carries_attributes() {
        let sc = SetCookie::new("canary_bucket", 86_400, false);
        for b in [0u16, 7, 10, 999, 1000, 9999] {
            let v = sc.bucket(b);
            let pair = v.split(';').next().unwrap();
            assert_eq!(find(pair.as_bytes(), "canary_bucket").and_then(parse_bucket), Some(b));
        }
        assert_eq!(sc.bucket(42), "canary_bucket=42; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(
            SetCookie::new("pin", 60, true).value("canary"),
            "pin=canary; Max-Age=60; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
