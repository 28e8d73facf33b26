//! Arbitrary bytes as a signed sticky cookie value and as an override token: never a panic; a
//! value verifies only as what the key signed, and a token only against its own digest.
#![no_main]

use canary_gate::route::auth::{token_matches, CookieSigner, MAC_HEX};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let signer = CookieSigner::new(b"0123456789abcdef", "checkout", "canary_bucket");
    if let Some(value) = signer.verify(data) {
        // Only what `sign` wrote verifies: a forgery is a 96-bit guess.
        let text = std::str::from_utf8(value).expect("signed values are text");
        assert_eq!(signer.sign(text).as_bytes(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let signed = signer.sign(text);
        assert_eq!(signer.verify(signed.as_bytes()), Some(data));
        assert_eq!(signed.len(), data.len() + 1 + MAC_HEX);
    }
    let digest: [u8; 32] = Sha256::digest(data).into();
    assert!(token_matches(data, &[[0; 32], digest]));
    let mut other = digest;
    other[usize::from(data.first().copied().unwrap_or(0)) % 32] ^= 1;
    assert!(!token_matches(data, &[other]));
});
