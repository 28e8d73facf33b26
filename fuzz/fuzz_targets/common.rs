//! Helpers shared by the fuzz targets (included with `#[path]`, not a crate of its own).
#![allow(dead_code)]

use canary_gate::route::RequestHeaders;

/// Request headers as a list of (lower-case name, raw value); the first entry of a name wins.
#[derive(Debug, Default, Clone)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// The value the filter reads for `name`: the first one.
    pub fn get_first(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

impl RequestHeaders for Headers {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

/// Reference reading of a plain decimal (`12`, `12.50`) scaled by `10^decimals`, in u128 so it
/// cannot overflow: `Some((whole, value))` when the text has that form with at most `decimals`
/// significant fractional digits, `None` otherwise.
pub fn reference_decimal(text: &str, decimals: u32) -> Option<(u128, u128)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) if !f.is_empty() => (w, f),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > decimals as usize {
        return None;
    }
    // More than 30 integer digits cannot be an accepted value anyway (and would not fit u128).
    let whole_digits = whole.trim_start_matches('0');
    if whole_digits.len() > 30 {
        return Some((u128::MAX, u128::MAX));
    }
    let w: u128 = if whole_digits.is_empty() { 0 } else { whole_digits.parse().ok()? };
    let mut f: u128 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        f += u128::from(b - b'0') * 10u128.pow(decimals - 1 - i as u32);
    }
    Some((w, w * 10u128.pow(decimals) + f))
}

/// Reads an input front to back; past its end every read is zero or empty.
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.byte().unwrap_or(0);
        }
        out
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A u16 LE length, then that many bytes.
    pub fn field(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16());
        self.take(len)
    }
}
