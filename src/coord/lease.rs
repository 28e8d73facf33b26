//! Electing the one VM that merges windows and evaluates the gate: a lease in Envoy's shared
//! data, renewed every tick by its holder and taken over by another VM once it is older than
//! its time to live. Touched once an evaluation period per VM, never per request.

/// How long a lease holds without renewal.
pub const LEASE_TTL_S: u64 = 3;

/// The lease stored in shared data: holder VM id and last renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Random id of the holding VM, chosen at VM start.
    pub holder: u64,
    /// Unix seconds of the last renewal.
    pub renewed_s: u64,
}

/// Format tag of the encoding; bumped on any layout change.
const FORMAT: u8 = 1;

impl Lease {
    /// 17 bytes: the format tag, then holder and renewal, little-endian.
    pub fn encode(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        let (format, rest) = out.split_at_mut(1);
        format.copy_from_slice(&[FORMAT]);
        let (a, b) = rest.split_at_mut(8);
        a.copy_from_slice(&self.holder.to_le_bytes());
        b.copy_from_slice(&self.renewed_s.to_le_bytes());
        out
    }

    /// The lease in `bytes`, if well formed and of this format.
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let (&FORMAT, rest) = bytes.split_first()? else { return None };
        let rest: &[u8; 16] = rest.try_into().ok()?;
        let (a, b) = rest.split_at(8);
        Some(Lease {
            holder: u64::from_le_bytes(a.try_into().ok()?),
            renewed_s: u64::from_le_bytes(b.try_into().ok()?),
        })
    }
}

/// Whether VM `me` should write a fresh lease now: it holds the current one, or there is
/// none, or the current one expired. The write itself is a compare-and-swap, so of several
/// VMs deciding to take over at once exactly one succeeds.
pub fn should_claim(current: Option<Lease>, me: u64, now_s: u64) -> bool {
    match current {
        None => true,
        Some(lease) => lease.holder == me || now_s >= lease.renewed_s.saturating_add(LEASE_TTL_S),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn holder_renews_others_wait_for_expiry() {
        let lease = Lease { holder: 7, renewed_s: 100 };
        assert!(should_claim(Some(lease), 7, 101));
        assert!(!should_claim(Some(lease), 8, 101));
        assert!(!should_claim(Some(lease), 8, 102));
        assert!(should_claim(Some(lease), 8, 103));
        assert!(should_claim(None, 8, 0));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn encodes_a_format_tag_and_sixteen_bytes() {
        let lease = Lease { holder: u64::MAX - 3, renewed_s: 1_790_000_000 };
        let bytes = lease.encode();
        assert_eq!(Lease::decode(&bytes), Some(lease));
        assert_eq!(bytes[0], FORMAT);
        let mut foreign = bytes;
        foreign[0] = FORMAT + 1;
        assert_eq!(Lease::decode(&foreign), None);
        assert_eq!(Lease::decode(&bytes[1..]), None);
        assert_eq!(Lease::decode(&[1, 2, 3]), None);
        assert_eq!(Lease::decode(&[1; 18]), None);
    }
}
