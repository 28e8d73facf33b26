//! What a client must prove before the filter believes it: a tester's override token (its
//! SHA-256 among the configured digests) and a sticky cookie's MAC (HMAC-SHA-256 under the
//! operator's key, bound to the service and the cookie's name).

use crate::model::hex_value;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Hex digits of a cookie's MAC: 96 bits, far beyond what a client can guess online.
pub const MAC_HEX: usize = 24;

/// Whether `token`'s SHA-256 is one of `digests`. Every digest is compared in full, in
/// constant time: the answer's timing tells nothing of how close a guess came.
pub fn token_matches(token: &[u8], digests: &[[u8; 32]]) -> bool {
    let digest: [u8; 32] = Sha256::digest(token).into();
    let mut matched = 0u8;
    for known in digests {
        let mut difference = 0u8;
        for (a, b) in digest.iter().zip(known) {
            difference |= a ^ b;
        }
        matched |= u8::from(difference == 0);
    }
    matched != 0
}

/// Signs and checks sticky cookie values. Keyed once per configuration: a request pays the two
/// compressions of its value, not the key's.
#[derive(Clone)]
pub struct CookieSigner {
    keyed: Hmac<Sha256>,
}

impl core::fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CookieSigner")
    }
}

impl CookieSigner {
    /// A signer for the cookie `cookie` of `service` under `key` (any length; HMAC hashes a
    /// long one).
    pub fn new(key: &[u8], service: &str, cookie: &str) -> Self {
        let mut keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
            // HMAC takes keys of any length; this branch is unreachable.
            <Hmac<Sha256> as KeyInit>::new(&Default::default())
        });
        // Binds the MAC to the service and the cookie: a value signed for one is no other's.
        keyed.update(service.as_bytes());
        keyed.update(b"\0");
        keyed.update(cookie.as_bytes());
        keyed.update(b"\0");
        CookieSigner { keyed }
    }

    /// `value` and its MAC: `value.MAC`.
    pub fn sign(&self, value: &str) -> String {
        let mut out = String::with_capacity(value.len() + 1 + MAC_HEX);
        out.push_str(value);
        out.push('.');
        for byte in self.mac(value.as_bytes()) {
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0xf));
        }
        out
    }

    /// The value of a signed `value.MAC`, if its MAC is valid.
    pub fn verify<'a>(&self, signed: &'a [u8]) -> Option<&'a [u8]> {
        let split = signed.len().checked_sub(MAC_HEX + 1)?;
        let (value, rest) = signed.split_at(split);
        let (dot, mac) = rest.split_first()?;
        if *dot != b'.' {
            return None;
        }
        let expected = self.mac(value);
        let mut difference = 0u8;
        for (pair, byte) in mac.chunks(2).zip(expected) {
            let got = match pair {
                [hi, lo] => hex_value(*hi).zip(hex_value(*lo)).map(|(h, l)| h << 4 | l),
                _ => None,
            };
            // A bad digit is a difference like any other: no early exit.
            difference |= got.map_or(1, |g| g ^ byte);
        }
        (difference == 0).then_some(value)
    }

    fn mac(&self, value: &[u8]) -> [u8; MAC_HEX / 2] {
        let mut mac = self.keyed.clone();
        mac.update(value);
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut out = [0u8; MAC_HEX / 2];
        if let Some(head) = full.get(..MAC_HEX / 2) {
            out.copy_from_slice(head);
        }
        out
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef".get(usize::from(nibble)).copied().unwrap_or(b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn parse_digest(text: &str) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
            *o = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
        }
        Some(out)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn digests_are_sha256() {
        // FIPS 180-2's "abc" vector.
        let abc = parse_digest("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").unwrap();
        assert!(token_matches(b"abc", &[abc]));
        assert!(!token_matches(b"abd", &[abc]));
        assert!(!token_matches(b"abc", &[]));
        let other = parse_digest(&"0".repeat(64)).unwrap();
        assert!(token_matches(b"abc", &[other, abc]), "any of the digests");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn signed_values_verify_and_forgeries_do_not() {
        let signer = CookieSigner::new(b"k1", "checkout", "canary_bucket");
        let signed = signer.sign("1234");
        assert_eq!(signed.len(), 4 + 1 + MAC_HEX);
        assert_eq!(signer.verify(signed.as_bytes()), Some(&b"1234"[..]));
        // Another value with this MAC, another key, service or cookie name: refused.
        let mac = &signed[4..];
        assert_eq!(signer.verify(format!("1235{mac}").as_bytes()), None);
        for other in [
            CookieSigner::new(b"k2", "checkout", "canary_bucket"),
            CookieSigner::new(b"k1", "profile", "canary_bucket"),
            CookieSigner::new(b"k1", "checkout", "other"),
        ] {
            assert_eq!(other.verify(signed.as_bytes()), None);
        }
        let upper = signed.to_uppercase();
        for bad in
            ["", "1234", "1234.", &signed[..signed.len() - 1], &format!("{signed}0"), &upper, &signed.replace('.', "~")]
        {
            assert_eq!(signer.verify(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(signer.verify(b"\xff\xfe.000000000000000000000000"), None);
    }
}
