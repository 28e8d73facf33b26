//! Which requests a router instance handles: its `hosts` against the request's `:authority`,
//! so one instance per service can sit on a shared gateway.

use crate::model::host_of;

/// One entry of `hosts`: an exact host name or a `*.suffix` wildcard, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches this host exactly.
    Exact(String),
    /// Matches any host ending in this suffix (which starts with `.`).
    Suffix(String),
}

impl HostPattern {
    /// The pattern of a validated `hosts` entry (a fully qualified `name.` is `name`).
    pub fn new(entry: &str) -> Self {
        let entry = entry.strip_suffix('.').unwrap_or(entry);
        match entry.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.to_string()),
            None => HostPattern::Exact(entry.to_string()),
        }
    }

    /// Whether `host` (lower case, without port) matches.
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostPattern::Exact(h) => host == h.as_bytes(),
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_bytes()),
        }
    }
}

/// The patterns of one configuration's `hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostMatcher {
    patterns: Vec<HostPattern>,
}

impl HostMatcher {
    /// A matcher for validated `hosts` entries.
    pub fn new(hosts: &[String]) -> Self {
        HostMatcher { patterns: hosts.iter().map(|h| HostPattern::new(h)).collect() }
    }

    /// Whether no host is configured (every request is handled).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a request to `authority` matches a pattern (never, without an authority).
    pub fn matches(&self, authority: Option<&[u8]>) -> bool {
        let host = authority_host(authority.unwrap_or_default());
        self.patterns.iter().any(|p| p.matches(&host))
    }
}

/// The host of an `:authority` value ([`host_of`]), lower-cased.
pub fn authority_host(authority: &[u8]) -> Vec<u8> {
    host_of(authority).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::route::Router;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn router(json: &str) -> Router {
        Router::new(Config::parse(json.as_bytes()).unwrap())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hosts_match_authorities_without_port_and_case() {
        let r = router(r#"{"service":"a","hosts":["shop.example.com","*.svc.cluster.local"]}"#);
        let handles = |authority: Option<&[u8]>| r.handles(|| authority.map(<[u8]>::to_vec));
        assert!(handles(Some(b"shop.example.com")));
        assert!(handles(Some(b"Shop.Example.COM:8443")));
        assert!(handles(Some(b"a.teei.svc.cluster.local:80")));
        assert!(!handles(Some(b"svc.cluster.local")));
        assert!(!handles(Some(b"shop.example.com.evil")));
        assert!(!handles(Some(b"other.example.com")));
        assert!(!handles(None));
        assert!(!handles(Some(b"\xff\xfe")));
        assert_eq!(super::authority_host(b"[::1]:80"), b"::1");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_fully_qualified_name_is_the_same_host() {
        let r = router(r#"{"service":"a","hosts":["checkout.local","*.svc.cluster.local."]}"#);
        let handles = |authority: &[u8]| r.handles(|| Some(authority.to_vec()));
        for same in [
            &b"checkout.local."[..],
            b"CHECKOUT.LOCAL.",
            b"checkout.local.:8080",
            b"a.b.svc.cluster.local.",
            b"a.svc.cluster.local",
        ] {
            assert!(handles(same), "{}", String::from_utf8_lossy(same));
        }
        for other in [&b"checkout.local.."[..], b".checkout.local", b"checkout.local.evil", b"svc.cluster.local.", b"."]
        {
            assert!(!handles(other), "{}", String::from_utf8_lossy(other));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_hosts_every_request_is_handled_and_no_authority_read() {
        let r = router(r#"{"service":"a"}"#);
        assert!(r.handles(|| panic!("the authority must not be read")));
    }
}
