//! The shared vocabulary of every other module: the two versions of a service, the reasons a
//! request gets one, and the states of the gate. Depends on nothing.

/// One of the two versions of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The version serving by default.
    Stable,
    /// The version being rolled out.
    Canary,
}

impl Version {
    /// Both versions, in index order.
    pub const BOTH: [Version; 2] = [Version::Stable, Version::Canary];

    /// Index of this version in per-version arrays: stable 0, canary 1.
    pub fn index(self) -> usize {
        match self {
            Version::Stable => 0,
            Version::Canary => 1,
        }
    }
}

/// The version label, and `x-canary-version` response header value, of requests no version
/// served (mesh mode: the route sent them to no version subset, say a 404 for no route).
pub const UNKNOWN_VERSION: &str = "unknown";

/// Why a request got its version; exported as a header value, access-log field and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The override header named a version.
    Override,
    /// Bucket from the user's hash key.
    Hash,
    /// Bucket from the sticky cookie.
    Cookie,
    /// Fresh random bucket, stored in the sticky cookie by the response.
    Random,
    /// Mesh mode: the route's weighted clusters chose.
    Mesh,
    /// Mesh mode: the sticky cookie pinned the version the mesh chose earlier.
    Pin,
    /// The SLO gate tripped: traffic that is not an override goes to stable.
    Gate,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 7] =
        [Reason::Override, Reason::Hash, Reason::Cookie, Reason::Random, Reason::Mesh, Reason::Pin, Reason::Gate];

    /// The lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Override => "override",
            Reason::Hash => "hash",
            Reason::Cookie => "cookie",
            Reason::Random => "random",
            Reason::Mesh => "mesh",
            Reason::Pin => "pin",
            Reason::Gate => "gate",
        }
    }

    /// Index of this reason in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The SLO gate's state, exported as `canary_gate_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// Enough traffic, every threshold met.
    Ok = 0,
    /// Too little traffic to judge (never a breach).
    Inconclusive = 1,
    /// A threshold is breached, not yet `consecutive` times.
    Breaching = 2,
    /// Latched: canary traffic goes to stable.
    Tripped = 3,
}

impl GateState {
    /// The gauge value.
    pub fn value(self) -> u64 {
        self as u64
    }

    /// The state of a gauge value, if it is one.
    pub fn from_value(v: u8) -> Option<GateState> {
        [GateState::Ok, GateState::Inconclusive, GateState::Breaching, GateState::Tripped]
            .into_iter()
            .find(|s| *s as u8 == v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn indexes_follow_the_declared_order() {
        for (i, v) in Version::BOTH.into_iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.as_str());
        }
    }
}
