//! The gate's verdict in shared data: published by the VM holding the lease, read by every VM
//! on its tick.

use crate::model::GateState;

/// Format tag of the encoding; bumped on any layout change.
const FORMAT: u8 = 1;

/// What a trip is latched to: the canary's name and the `rearm` value. A verdict for another
/// identity does not apply.
pub fn identity(canary: &str, rearm: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(canary.as_bytes(), rearm)
}

/// The verdict the evaluating VM publishes in shared data for every VM to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedVerdict {
    /// The gate's state.
    pub state: GateState,
    /// The [`identity`] it was computed for.
    pub identity: u64,
}

impl SharedVerdict {
    /// 10 bytes: the format tag, the state, then the identity little-endian.
    pub fn encode(&self) -> [u8; 10] {
        let mut out = [0u8; 10];
        let (head, id) = out.split_at_mut(2);
        head.copy_from_slice(&[FORMAT, self.state as u8]);
        id.copy_from_slice(&self.identity.to_le_bytes());
        out
    }

    /// The verdict in `bytes`, if well formed and of this format.
    pub fn decode(bytes: &[u8]) -> Option<SharedVerdict> {
        let [FORMAT, state, id @ ..] = bytes else { return None };
        let id: [u8; 8] = id.try_into().ok()?;
        Some(SharedVerdict { state: GateState::from_value(*state)?, identity: u64::from_le_bytes(id) })
    }

    /// Whether this verdict reroutes traffic of a gate with `identity`.
    pub fn trips(&self, identity: u64) -> bool {
        self.state == GateState::Tripped && self.identity == identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn shared_verdicts_round_trip_and_bind_to_the_canary() {
        let id = identity("canary", 0);
        let v = SharedVerdict { state: GateState::Tripped, identity: id };
        assert_eq!(SharedVerdict::decode(&v.encode()), Some(v));
        assert!(v.trips(id));
        assert!(!v.trips(identity("canary-v2", 0)));
        assert!(!v.trips(identity("canary", 1)));
        assert!(!SharedVerdict { state: GateState::Breaching, identity: id }.trips(id));
        assert_eq!(SharedVerdict::decode(&[FORMAT, 4, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(SharedVerdict::decode(&[FORMAT, 3, 0]), None);
        assert_eq!(SharedVerdict::decode(&[]), None);
        let mut foreign = v.encode();
        foreign[0] = FORMAT + 1;
        assert_eq!(SharedVerdict::decode(&foreign), None);
        assert_eq!(SharedVerdict::decode(&v.encode()[1..]), None);
    }
}
