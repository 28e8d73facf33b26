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

/// The host of an `:authority` value as DNS and Envoy's virtual hosts see it, in the client's
/// case: without port, IPv6 brackets or the trailing dot of a fully qualified name.
pub fn host_of(authority: &[u8]) -> &[u8] {
    let host = match authority.first() {
        Some(b'[') => {
            authority.split(|&b| b == b']').next().map(|h| h.get(1..).unwrap_or_default()).unwrap_or_default()
        }
        _ => authority.split(|&b| b == b':').next().unwrap_or_default(),
    };
    host.strip_suffix(b".").unwrap_or(host)
}

/// The version label, and `x-canary-version` response header value, of requests no version
/// served (mesh mode: the route sent them to no version subset, say a 404 for no route).
pub const UNKNOWN_VERSION: &str = "unknown";

/// The revision that serves a version: Argo Rollouts' pod-template hash of a ReplicaSet (or
/// any Kubernetes label value of `[A-Za-z0-9_-]`). The subset names `stable` and `canary` stay
/// while the revisions behind them change: pins, the gate latch and the `revision` label key
/// on this. Kept inline (no allocation) so a decision can carry one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Revision {
    len: u8,
    bytes: [u8; Revision::MAX_LEN],
}

impl Revision {
    /// Longest revision: a Kubernetes label value.
    pub const MAX_LEN: usize = 63;

    /// The revision `text` names, if it is `[A-Za-z0-9_-]{1,63}`.
    pub fn parse(text: &[u8]) -> Option<Revision> {
        let valid = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
        // `unknown` labels the series of an observer without a revision: never one.
        if text.is_empty()
            || text.len() > Self::MAX_LEN
            || !text.iter().all(valid)
            || text == UNKNOWN_VERSION.as_bytes()
        {
            return None;
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes.get_mut(..text.len())?.copy_from_slice(text);
        Some(Revision { len: text.len() as u8, bytes })
    }

    /// The revision as text.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl std::fmt::Debug for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Revision({})", self.as_str())
    }
}

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

/// The value of a lower-case hex digit.
pub fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// `text` in double quotes for a log line or an error, every byte that is not printable
/// ASCII as `\xNN` (lighter than `{:?}`, which links Unicode tables into the filter).
pub fn quoted(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for &b in text {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
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
    fn revisions_are_label_values() {
        assert_eq!(Revision::parse(b"5f7d9c8b4").map(|r| r.as_str().to_string()), Some("5f7d9c8b4".into()));
        let longest = [b'a'; Revision::MAX_LEN];
        assert_eq!(Revision::parse(&longest).map(|r| r.as_str().len()), Some(Revision::MAX_LEN));
        for bad in [&b""[..], b"a.b", b"a b", b"\xff", &[b'a'; Revision::MAX_LEN + 1], b"unknown"] {
            assert_eq!(Revision::parse(bad), None, "{bad:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn quoting_escapes_all_but_printable_ascii() {
        assert_eq!(quoted(b"a-b"), r#""a-b""#);
        assert_eq!(quoted("é\"\\\n".as_bytes()), r#""\xc3\xa9\"\\\x0a""#);
    }

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
