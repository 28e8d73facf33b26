//! The routing decision: which version serves a request, and why. Pure logic over a
//! [`RequestHeaders`] view, so it runs the same on the host and inside the proxy.

pub mod auth;
pub mod bucket;
pub mod cookie;
pub mod hosts;
pub mod revisions;

use crate::config::{Config, KeySource, SplitMode};
use crate::model::{Reason, Revision, Version};
use auth::CookieSigner;
use bucket::{BucketRng, Bucketer};
use cookie::SetCookie;
use hosts::HostMatcher;
use revisions::{Pin, PinCheck, Revisions};
use std::cell::Cell;

/// Read access to the request headers. Values are raw bytes: clients may send anything.
pub trait RequestHeaders {
    /// The value of header `name` (lower-case), if present: the first line when the header is
    /// repeated.
    fn get(&self, name: &str) -> Option<Vec<u8>>;

    /// Every value of header `name`, in order.
    fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.get(name).into_iter().collect()
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The chosen version; `None` while the mesh has yet to choose.
    pub version: Option<Version>,
    /// Why.
    pub reason: Reason,
    /// A bucket the response must store in the sticky cookie.
    pub new_bucket: Option<u16>,
    /// The user's bucket, when the filter bucketed the request (its user's identity for the
    /// gate's distinct-users count).
    pub bucket: Option<u16>,
    /// Mesh mode: the pin the request's cookie carried, honoured or not.
    pub pin: Option<Pin>,
    /// Mesh mode: the pin could not be checked (its canary revision is not known yet); keep
    /// it unless the canary serves this request.
    pub keep_pin: bool,
    /// The request named a version in the override header without a valid token.
    pub override_refused: bool,
    /// The request's sticky cookie had no valid MAC.
    pub cookie_refused: bool,
}

impl Decision {
    fn new(version: Option<Version>, reason: Reason) -> Decision {
        Decision {
            version,
            reason,
            new_bucket: None,
            bucket: None,
            pin: None,
            keep_pin: false,
            override_refused: false,
            cookie_refused: false,
        }
    }
}

/// Decides versions for one configuration. Built once at configure time.
#[derive(Debug, Clone)]
pub struct Router {
    config: Config,
    bucketer: Bucketer,
    set_cookie: SetCookie,
    /// With a sticky key: signs and checks the sticky cookie.
    signer: Option<CookieSigner>,
    hosts: HostMatcher,
}

/// The `cookie` header, read only as far as needed: its first line, and the later lines (which
/// HTTP/1.1 clients may send) only when the first holds no valid value of a cookie asked for.
/// The first valid value wins either way, so a pinned user's request costs one header read.
struct CookieHeader<'r, R: RequestHeaders> {
    headers: &'r R,
    first: Option<Option<Vec<u8>>>,
    later: Option<Option<Vec<u8>>>,
}

impl<'r, R: RequestHeaders> CookieHeader<'r, R> {
    fn new(headers: &'r R) -> Self {
        CookieHeader { headers, first: None, later: None }
    }

    /// The first value of cookie `name` that `valid` accepts.
    fn find_valid<T>(&mut self, name: &str, valid: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
        let headers = self.headers;
        let first = self.first.get_or_insert_with(|| headers.get("cookie")).as_deref()?;
        if let Some(found) = cookie::find_valid(first, name, &valid) {
            return Some(found);
        }
        let later = self.later.get_or_insert_with(|| {
            let lines = headers.get_all("cookie");
            lines.get(1..).filter(|rest| !rest.is_empty()).map(|rest| rest.join(&b"; "[..]))
        });
        cookie::find_valid(later.as_deref()?, name, &valid)
    }
}

impl Router {
    /// A router for `config`.
    pub fn new(config: Config) -> Self {
        let bucketer = Bucketer::new(&config.service);
        let sticky = &config.sticky;
        let set_cookie = SetCookie::new(&sticky.cookie, sticky.max_age_s, sticky.secure);
        let hosts = HostMatcher::new(&config.hosts);
        let signer = sticky.key.as_ref().map(|key| CookieSigner::new(&key.0, &config.service, &sticky.cookie));
        Router { config, bucketer, set_cookie, signer, hosts }
    }

    /// Whether this instance handles a request, given a way to read its `:authority` (read
    /// only when `hosts` is configured: without it every request is handled).
    pub fn handles(&self, authority: impl FnOnce() -> Option<Vec<u8>>) -> bool {
        self.hosts.is_empty() || self.hosts.matches(authority().as_deref())
    }

    /// The configuration this router runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decides the version of a request from its headers, with no revision learned; see
    /// [`Router::decide_with`].
    pub fn decide<R: RequestHeaders>(&self, headers: &R, rng: &mut BucketRng, gate_tripped: bool) -> Decision {
        self.decide_with(headers, rng, gate_tripped, &Revisions::default())
    }

    /// Decides the version of a request from its headers; with the gate tripped, everything
    /// but an override goes to stable. In mesh mode a pin is judged against the revisions
    /// the subsets serve now.
    pub fn decide_with<R: RequestHeaders>(
        &self,
        headers: &R,
        rng: &mut BucketRng,
        gate_tripped: bool,
        revisions: &Revisions,
    ) -> Decision {
        let override_refused = match self.override_version(headers) {
            Some(Some(version)) => return Decision::new(Some(version), Reason::Override),
            Some(None) => true,
            None => false,
        };
        let refused_cookie = Cell::new(false);
        let mut decision = if gate_tripped {
            Decision::new(Some(Version::Stable), Reason::Gate)
        } else {
            self.decide_unforced(headers, rng, revisions, &refused_cookie)
        };
        decision.override_refused = override_refused;
        decision.cookie_refused = refused_cookie.get();
        decision
    }

    /// The decision for a request no override or tripped gate forces.
    fn decide_unforced<R: RequestHeaders>(
        &self,
        headers: &R,
        rng: &mut BucketRng,
        revisions: &Revisions,
        refused_cookie: &Cell<bool>,
    ) -> Decision {
        let mut cookies = CookieHeader::new(headers);
        match self.config.split.mode {
            SplitMode::Filter => self.decide_by_bucket(headers, &mut cookies, rng, refused_cookie),
            SplitMode::Mesh => {
                let Some(pin) = self.sticky_value(&mut cookies, refused_cookie, |v| self.parse_pin(v)) else {
                    return Decision::new(None, Reason::Mesh);
                };
                let (version, reason, keep_pin) = match revisions.check(pin) {
                    PinCheck::Honour(version) => (Some(version), Reason::Pin, false),
                    PinCheck::Stale => (None, Reason::Mesh, false),
                    PinCheck::Unchecked => (None, Reason::Mesh, true),
                };
                Decision { pin: Some(pin), keep_pin, ..Decision::new(version, reason) }
            }
        }
    }

    /// A pin cookie's value: a version name, optionally `.` and the revision it was made under.
    fn parse_pin(&self, value: &[u8]) -> Option<Pin> {
        let mut parts = value.splitn(2, |&b| b == b'.');
        let version = self.version_named(parts.next()?)?;
        match parts.next() {
            None => Some(Pin { version, revision: None }),
            Some(text) => Some(Pin { version, revision: Some(Revision::parse(text)?) }),
        }
    }

    /// The sticky cookie's first valid value, as `parse` reads it; with a key, only a value
    /// whose MAC is valid (a wrong MAC sets `refused`).
    fn sticky_value<R: RequestHeaders, T>(
        &self,
        cookies: &mut CookieHeader<'_, R>,
        refused: &Cell<bool>,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Option<T> {
        cookies.find_valid(&self.config.sticky.cookie, |value| {
            let value = match &self.signer {
                None => value,
                Some(signer) => match signer.verify(value) {
                    Some(value) => value,
                    None => {
                        refused.set(true);
                        return None;
                    }
                },
            };
            parse(value)
        })
    }

    /// A sticky cookie's `Set-Cookie` value for `value`, signed with a key.
    fn set_sticky(&self, value: &str) -> String {
        match &self.signer {
            Some(signer) => self.set_cookie.value(&signer.sign(value)),
            None => self.set_cookie.value(value),
        }
    }

    fn decide_by_bucket<R: RequestHeaders>(
        &self,
        headers: &R,
        cookies: &mut CookieHeader<'_, R>,
        rng: &mut BucketRng,
        refused_cookie: &Cell<bool>,
    ) -> Decision {
        let (bucket, reason, new_bucket) = if let Some(bucket) = self.keyed_bucket(headers, cookies) {
            (bucket, Reason::Hash, None)
        } else if let Some(bucket) = self.sticky_value(cookies, refused_cookie, cookie::parse_bucket) {
            (bucket, Reason::Cookie, None)
        } else {
            let bucket = rng.next_bucket();
            (bucket, Reason::Random, Some(bucket))
        };
        Decision { new_bucket, bucket: Some(bucket), ..Decision::new(Some(self.version_of_bucket(bucket)), reason) }
    }

    /// Canary iff the bucket lies below the canary weight.
    pub fn version_of_bucket(&self, bucket: u16) -> Version {
        if bucket < self.config.split.canary_bp {
            Version::Canary
        } else {
            Version::Stable
        }
    }

    /// The version the override header names: `Some(None)` when it names one without a valid
    /// token. A repeated header overrides only when every value names the same version:
    /// conflicting values are no override.
    fn override_version<R: RequestHeaders>(&self, headers: &R) -> Option<Option<Version>> {
        let settings = &self.config.r#override;
        let version = headers.get(&settings.header).and_then(|v| self.version_named(&v))?;
        // Read every line only for a valid override (testers' requests): one more host call.
        let values = headers.get_all(&settings.header);
        let version = values.iter().all(|v| self.version_named(v) == Some(version)).then_some(version)?;
        if settings.token_sha256.is_empty() {
            return Some(Some(version));
        }
        let token = headers.get(&settings.token_header);
        Some(token.is_some_and(|t| auth::token_matches(&t, &settings.token_sha256)).then_some(version))
    }

    fn keyed_bucket<R: RequestHeaders>(&self, headers: &R, cookies: &mut CookieHeader<'_, R>) -> Option<u16> {
        self.config.split.hash_key.iter().find_map(|source| match source {
            KeySource::Header(name) => headers.get(name).filter(|v| !v.is_empty()).map(|v| self.bucketer.bucket(&v)),
            KeySource::Cookie(name) => cookies.find_valid(name, |v| (!v.is_empty()).then(|| self.bucketer.bucket(v))),
        })
    }

    /// The version whose configured name is exactly `name`.
    pub fn version_named(&self, name: &[u8]) -> Option<Version> {
        if name == self.config.stable.as_bytes() {
            Some(Version::Stable)
        } else if name == self.config.canary.as_bytes() {
            Some(Version::Canary)
        } else {
            None
        }
    }

    /// Mesh mode: the version of the upstream cluster that served, from a cluster named like a
    /// version or the subset of an Istio cluster name `outbound|PORT|SUBSET|HOST`.
    pub fn version_of_cluster(&self, cluster: &[u8]) -> Option<Version> {
        self.version_named(cluster).or_else(|| {
            let mut parts = cluster.split(|&b| b == b'|');
            match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(b"outbound" | b"inbound"), Some(_port), Some(subset), Some(_host), None) => {
                    self.version_named(subset)
                }
                _ => None,
            }
        })
    }

    /// The canary subset's cluster beside the stable subset's `cluster` (the other subset of the
    /// same Istio service and port, or the cluster named like the canary), so a router can ask
    /// the canary for its revision before the canary served it.
    pub fn canary_cluster_beside(&self, cluster: &[u8]) -> Option<Vec<u8>> {
        if self.version_named(cluster) == Some(Version::Stable) {
            return Some(self.config.canary.as_bytes().to_vec());
        }
        let mut parts = cluster.splitn(4, |&b| b == b'|');
        let (kind, port, subset, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (self.version_of_cluster(cluster) == Some(Version::Stable) && subset == self.config.stable.as_bytes())
            .then(|| [kind, port, self.config.canary.as_bytes(), host].join(&b'|'))
    }

    /// The `Set-Cookie` value the response must carry, if any, once the serving version (and,
    /// with observers, its revision) is known.
    pub fn sticky_cookie_for(
        &self,
        decision: &Decision,
        served: Option<Version>,
        served_revision: Option<Revision>,
    ) -> Option<String> {
        if let Some(bucket) = decision.new_bucket {
            return Some(self.set_sticky(&bucket.to_string()));
        }
        let version = served?;
        let now = Pin { version, revision: served_revision };
        let unchanged = decision.pin == Some(now);
        let pin_it = match decision.reason {
            Reason::Mesh => !(unchanged || decision.keep_pin && version == Version::Stable),
            // A pin the mesh did not honour (the subset is gone), or one to refresh with the
            // revision that serves it: follow what served.
            Reason::Pin => !unchanged && (served_revision.is_some() || decision.version != Some(version)),
            _ => false,
        };
        pin_it.then(|| {
            let name = self.config.version_name(version);
            match served_revision {
                Some(revision) => self.set_sticky(&format!("{name}.{}", revision.as_str())),
                None => self.set_sticky(name),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Header lines in order, as a client sent them.
    struct Headers(Vec<(String, Vec<u8>)>);

    impl RequestHeaders for Headers {
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            self.get_all(name).into_iter().next()
        }

        fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
            self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
        }
    }

    fn headers(pairs: &[(&str, &[u8])]) -> Headers {
        Headers(pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect())
    }

    fn router(extra: &str) -> Router {
        Router::new(Config::parse(format!(r#"{{"service":"checkout"{extra}}}"#).as_bytes()).unwrap())
    }

    fn rng() -> BucketRng {
        BucketRng::new(1)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn override_wins_over_everything() {
        let r = router(r#","split":{"canary_percent":0}"#);
        let d = r.decide(&headers(&[("x-canary", b"canary"), ("x-user-id", b"u1")]), &mut rng(), false);
        assert_eq!((d.version, d.reason), (Some(Version::Canary), Reason::Override));
        let d = r.decide(&headers(&[("x-canary", b"stable"), ("cookie", b"canary_bucket=0")]), &mut rng(), false);
        assert_eq!((d.version, d.reason), (Some(Version::Stable), Reason::Override));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_override_values_are_ignored() {
        let r = router("");
        for bad in [&b"CANARY"[..], b"", b"canary ", b"\xff\x00", b"prod"] {
            let d = r.decide(&headers(&[("x-canary", bad), ("x-user-id", b"u1")]), &mut rng(), false);
            assert_eq!(d.reason, Reason::Hash, "{bad:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn repeated_override_values_override_only_when_they_agree() {
        let r = router(r#","split":{"canary_percent":0}"#);
        let decide = |lines: &[&[u8]]| {
            let mut pairs: Vec<(&str, &[u8])> = lines.iter().map(|v| ("x-canary", *v)).collect();
            pairs.push(("x-user-id", b"u1"));
            let d = r.decide(&headers(&pairs), &mut rng(), false);
            (d.version, d.reason)
        };
        assert_eq!(decide(&[b"canary", b"canary"]), (Some(Version::Canary), Reason::Override));
        assert_eq!(decide(&[b"canary", b"stable"]), (Some(Version::Stable), Reason::Hash));
        assert_eq!(decide(&[b"stable", b"canary"]), (Some(Version::Stable), Reason::Hash));
        assert_eq!(decide(&[b"canary", b"junk"]), (Some(Version::Stable), Reason::Hash));
        assert_eq!(decide(&[b"junk", b"canary"]), (Some(Version::Stable), Reason::Hash));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_valid_value_of_a_repeated_cookie_wins() {
        let r = router(r#","split":{"canary_percent":10}"#);
        let d = r.decide(&headers(&[("cookie", b"canary_bucket=abc; canary_bucket=5")]), &mut rng(), false);
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Canary), Reason::Cookie, None));
        let d =
            r.decide(&headers(&[("cookie", b"canary_bucket=9999"), ("cookie", b"canary_bucket=5")]), &mut rng(), false);
        assert_eq!((d.version, d.reason), (Some(Version::Stable), Reason::Cookie), "the first valid one");
        let d = r.decide(&headers(&[("cookie", b"session=; session=bob")]), &mut rng(), false);
        assert_eq!(
            (d.reason, d.version),
            (Reason::Hash, Some(r.version_of_bucket(Bucketer::new("checkout").bucket(b"bob"))))
        );
        let mesh = router(r#","split":{"mode":"mesh"}"#);
        let d = mesh.decide(&headers(&[("cookie", b"canary_bucket=v9; canary_bucket=canary")]), &mut rng(), false);
        assert_eq!((d.version, d.reason), (Some(Version::Canary), Reason::Pin));
    }

    /// Counts every-line reads, the costly host call (the whole header map).
    struct CountingHeaders(Headers, std::cell::Cell<usize>);

    impl RequestHeaders for CountingHeaders {
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            self.0.get(name)
        }

        fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
            self.1.set(self.1.get() + 1);
            self.0.get_all(name)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn later_cookie_lines_are_read_only_when_the_first_holds_no_valid_value() {
        let r = router(r#","split":{"canary_percent":10,"hash_key":[{"header":"x-user-id"}]}"#);
        let decide = |lines: &[&[u8]]| {
            let pairs: Vec<(&str, &[u8])> = lines.iter().map(|l| ("cookie", *l)).collect();
            let counting = CountingHeaders(headers(&pairs), std::cell::Cell::new(0));
            let d = r.decide(&counting, &mut rng(), false);
            (d.version, d.reason, counting.1.get())
        };
        assert_eq!(
            decide(&[b"a=1; canary_bucket=5", b"canary_bucket=9999"]),
            (Some(Version::Canary), Reason::Cookie, 0)
        );
        assert_eq!(decide(&[b"a=1", b"canary_bucket=5"]), (Some(Version::Canary), Reason::Cookie, 1));
        assert_eq!(decide(&[b"canary_bucket=x", b"canary_bucket=9999"]), (Some(Version::Stable), Reason::Cookie, 1));
        assert_eq!(decide(&[]).2, 0, "no cookie at all");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hash_key_sources_apply_in_order() {
        let r = router("");
        let b = Bucketer::new("checkout");
        let d = r.decide(&headers(&[("x-user-id", b"alice"), ("cookie", b"session=bob")]), &mut rng(), false);
        assert_eq!((d.reason, d.version), (Reason::Hash, Some(r.version_of_bucket(b.bucket(b"alice")))));
        let d = r.decide(&headers(&[("cookie", b"session=bob; canary_bucket=1")]), &mut rng(), false);
        assert_eq!((d.reason, d.version), (Reason::Hash, Some(r.version_of_bucket(b.bucket(b"bob")))));
        let d = r.decide(&headers(&[("x-user-id", b""), ("cookie", b"canary_bucket=5")]), &mut rng(), false);
        assert_eq!((d.reason, d.version), (Reason::Cookie, Some(Version::Canary)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn sticky_cookie_compares_against_the_weight() {
        let r = router(r#","split":{"canary_percent":12.5}"#);
        let at =
            |b: &str| r.decide(&headers(&[("cookie", format!("canary_bucket={b}").as_bytes())]), &mut rng(), false);
        assert_eq!(at("1249").version, Some(Version::Canary));
        assert_eq!(at("1250").version, Some(Version::Stable));
        assert_eq!(at("0").reason, Reason::Cookie);
        assert_eq!(at("0").new_bucket, None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_cookies_get_a_fresh_bucket() {
        let r = router("");
        for bad in ["canary_bucket=abc", "canary_bucket=10000", "canary_bucket=", "canary_bucket", "canary_bucket=-3"] {
            let d = r.decide(&headers(&[("cookie", bad.as_bytes())]), &mut rng(), false);
            assert_eq!(d.reason, Reason::Random, "{bad}");
            let b = d.new_bucket.unwrap();
            assert_eq!(d.version, Some(r.version_of_bucket(b)));
            assert_eq!(
                r.sticky_cookie_for(&d, d.version, None).unwrap(),
                SetCookie::new("canary_bucket", 86_400, false).bucket(b)
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn raising_the_weight_never_moves_canary_users_back() {
        let steps = [10.0, 30.0, 50.0, 100.0];
        let routers: Vec<Router> =
            steps.iter().map(|p| router(&format!(r#","split":{{"canary_percent":{p}}}"#))).collect();
        for i in 0..5000 {
            let h = headers(&[("x-user-id", format!("user-{i}").as_bytes())]);
            let versions: Vec<_> = routers.iter().map(|r| r.decide(&h, &mut rng(), false).version.unwrap()).collect();
            let first_canary = versions.iter().position(|&v| v == Version::Canary).unwrap_or(versions.len());
            assert!(versions[first_canary..].iter().all(|&v| v == Version::Canary), "user-{i}: {versions:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn zero_percent_sends_everyone_to_stable() {
        let r = router(r#","split":{"canary_percent":0}"#);
        for cookie in ["canary_bucket=0", "canary_bucket=9999", ""] {
            let d = r.decide(&headers(&[("cookie", cookie.as_bytes()), ("x-user-id", b"u")]), &mut rng(), false);
            assert_eq!(d.version, Some(Version::Stable));
        }
        let mut g = rng();
        assert!((0..1000).all(|_| r.decide(&headers(&[]), &mut g, false).version == Some(Version::Stable)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn mesh_mode_pins_what_the_mesh_chose() {
        let r = router(r#","split":{"mode":"mesh"}"#);
        let d = r.decide(&headers(&[("x-user-id", b"u")]), &mut rng(), false);
        assert_eq!((d.version, d.reason), (None, Reason::Mesh));
        let served = r.version_of_cluster(b"outbound|8080|canary|checkout.shop.svc.cluster.local");
        assert_eq!(served, Some(Version::Canary));
        assert_eq!(r.sticky_cookie_for(&d, served, None).unwrap().split(';').next(), Some("canary_bucket=canary"));

        let d = r.decide(&headers(&[("cookie", b"canary_bucket=canary")]), &mut rng(), false);
        assert_eq!((d.version, d.reason), (Some(Version::Canary), Reason::Pin));
        assert_eq!(r.sticky_cookie_for(&d, Some(Version::Canary), None), None);
        assert!(r.sticky_cookie_for(&d, Some(Version::Stable), None).unwrap().starts_with("canary_bucket=stable;"));

        let d = r.decide(&headers(&[("cookie", b"canary_bucket=v9")]), &mut rng(), false);
        assert_eq!(d.reason, Reason::Mesh);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn mesh_pins_name_the_revision_that_served() {
        use revisions::Revisions;
        let r = router(r#","split":{"mode":"mesh"}"#);
        let rev = |t: &str| Revision::parse(t.as_bytes()).unwrap();
        let mut table = Revisions::default();
        table.learn(Version::Stable, rev("r1"), 1, 1);
        table.learn(Version::Canary, rev("r2"), 1, 1);
        let decide = |cookie: &str, table: &Revisions| {
            r.decide_with(&headers(&[("cookie", cookie.as_bytes())]), &mut rng(), false, table)
        };
        // First request: the mesh chooses, the response pins version and revision.
        let d = decide("", &table);
        let cookie = r.sticky_cookie_for(&d, Some(Version::Canary), Some(rev("r2"))).unwrap();
        assert!(cookie.starts_with("canary_bucket=canary.r2;"), "{cookie}");
        // Pinned: routed to canary while r2 is the canary; no new cookie.
        let d = decide("canary_bucket=canary.r2", &table);
        assert_eq!((d.version, d.reason), (Some(Version::Canary), Reason::Pin));
        assert_eq!(r.sticky_cookie_for(&d, Some(Version::Canary), Some(rev("r2"))), None);
        // A pin from before observers is refreshed with the revision.
        let d = decide("canary_bucket=stable", &table);
        assert_eq!((d.version, d.reason), (Some(Version::Stable), Reason::Pin));
        assert!(r
            .sticky_cookie_for(&d, Some(Version::Stable), Some(rev("r1")))
            .unwrap()
            .starts_with("canary_bucket=stable.r1;"));
        // r2 promoted, r3 the next canary: r2's users stay on r2, now stable; the cookie follows.
        table.learn(Version::Stable, rev("r2"), 2, 2);
        table.learn(Version::Canary, rev("r3"), 2, 2);
        let d = decide("canary_bucket=canary.r2", &table);
        assert_eq!((d.version, d.reason), (Some(Version::Stable), Reason::Pin));
        assert!(r
            .sticky_cookie_for(&d, Some(Version::Stable), Some(rev("r2")))
            .unwrap()
            .starts_with("canary_bucket=stable.r2;"));
        // An old stable's users are not pinned into r3: the mesh decides.
        let d = decide("canary_bucket=stable.r1", &table);
        assert_eq!((d.version, d.reason), (None, Reason::Mesh));
        assert!(r
            .sticky_cookie_for(&d, Some(Version::Stable), Some(rev("r2")))
            .unwrap()
            .starts_with("canary_bucket=stable.r2;"));
        // A malformed revision is no pin.
        assert_eq!(decide("canary_bucket=canary.r.2", &table).pin, None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_unchecked_canary_pin_survives_a_stable_answer() {
        // Just after a restart nothing is known: the mesh decides, and a stable answer does
        // not overwrite the user's canary pin.
        let r = router(r#","split":{"mode":"mesh"}"#);
        let rev = |t: &str| Revision::parse(t.as_bytes()).unwrap();
        let d = r.decide(&headers(&[("cookie", b"canary_bucket=canary.r2")]), &mut rng(), false);
        assert_eq!((d.version, d.reason, d.keep_pin), (None, Reason::Mesh, true));
        assert_eq!(r.sticky_cookie_for(&d, Some(Version::Stable), Some(rev("r1"))), None);
        assert_eq!(r.sticky_cookie_for(&d, Some(Version::Canary), Some(rev("r2"))), None, "the same pin");
        assert!(r.sticky_cookie_for(&d, Some(Version::Canary), Some(rev("r3"))).unwrap().contains("=canary.r3;"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_tripped_gate_sends_all_but_overrides_to_stable() {
        for mode in ["filter", "mesh"] {
            let r = router(&format!(r#","split":{{"mode":"{mode}","canary_percent":100}}"#));
            for h in [headers(&[("x-user-id", b"u")]), headers(&[("cookie", b"canary_bucket=canary")]), headers(&[])] {
                let d = r.decide(&h, &mut rng(), true);
                assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Stable), Reason::Gate, None), "{mode}");
                assert_eq!(r.sticky_cookie_for(&d, d.version, None), None);
            }
            let d = r.decide(&headers(&[("x-canary", b"canary")]), &mut rng(), true);
            assert_eq!((d.version, d.reason), (Some(Version::Canary), Reason::Override));
        }
    }

    /// `printf %s abc | sha256sum`.
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[wasm_bindgen_test(unsupported = test)]
    fn with_tokens_an_override_needs_one() {
        let r = router(&format!(r#","split":{{"canary_percent":0}},"override":{{"token_sha256":["{ABC_SHA256}"]}}"#));
        let decide = |pairs: &[(&str, &[u8])], tripped: bool| {
            let d = r.decide(&headers(pairs), &mut rng(), tripped);
            (d.version, d.reason, d.override_refused)
        };
        let granted = (Some(Version::Canary), Reason::Override, false);
        assert_eq!(decide(&[("x-canary", b"canary"), ("x-canary-token", b"abc")], false), granted);
        assert_eq!(decide(&[("x-canary", b"canary"), ("x-canary-token", b"abc")], true), granted, "tripped");
        for token in [&b"abd"[..], b"", b"ABC", b"abc "] {
            let got = decide(&[("x-canary", b"canary"), ("x-canary-token", token), ("x-user-id", b"u1")], false);
            assert_eq!(got, (Some(Version::Stable), Reason::Hash, true), "{token:?}");
        }
        assert_eq!(decide(&[("x-canary", b"canary")], true), (Some(Version::Stable), Reason::Gate, true));
        assert!(!decide(&[("x-canary", b"nothing"), ("x-user-id", b"u1")], false).2, "no override asked");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn with_a_key_cookies_are_signed_and_forgeries_ignored() {
        let r = router(r#","split":{"canary_percent":50},"sticky":{"key":"0123456789abcdef"}"#);
        let d = r.decide(&headers(&[]), &mut rng(), false);
        let set = r.sticky_cookie_for(&d, d.version, None).unwrap();
        let pair = set.split(';').next().unwrap();
        let value = pair.strip_prefix("canary_bucket=").unwrap();
        assert_eq!(value.len(), d.new_bucket.unwrap().to_string().len() + 1 + auth::MAC_HEX, "{set}");
        let back = r.decide(&headers(&[("cookie", pair.as_bytes())]), &mut rng(), false);
        assert_eq!((back.reason, back.bucket, back.cookie_refused), (Reason::Cookie, d.new_bucket, false));
        // A bucket chosen by the client, or a signed one altered, is a fresh user.
        let mac = &value[value.find('.').unwrap()..];
        for forged in ["canary_bucket=0".to_string(), format!("canary_bucket=1{mac}"), format!("{pair}0")] {
            let f = r.decide(&headers(&[("cookie", forged.as_bytes())]), &mut rng(), false);
            assert_eq!((f.reason, f.cookie_refused), (Reason::Random, true), "{forged}");
        }
        // Mesh pins too.
        let mesh = router(r#","split":{"mode":"mesh"},"sticky":{"key":"0123456789abcdef"}"#);
        let d = mesh.decide(&headers(&[]), &mut rng(), false);
        let set = mesh.sticky_cookie_for(&d, Some(Version::Canary), None).unwrap();
        let pair = set.split(';').next().unwrap();
        let pinned = mesh.decide(&headers(&[("cookie", pair.as_bytes())]), &mut rng(), false);
        assert_eq!((pinned.version, pinned.reason), (Some(Version::Canary), Reason::Pin));
        let forged = mesh.decide(&headers(&[("cookie", b"canary_bucket=canary")]), &mut rng(), false);
        assert_eq!((forged.version, forged.reason, forged.cookie_refused), (None, Reason::Mesh, true));
        // Without a key, nothing is refused.
        let d = router("").decide(&headers(&[("cookie", b"canary_bucket=x")]), &mut rng(), false);
        assert!(!d.cookie_refused);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn cluster_names_map_to_versions() {
        let r = router("");
        assert_eq!(r.version_of_cluster(b"stable"), Some(Version::Stable));
        assert_eq!(r.version_of_cluster(b"outbound|80|stable|a.b"), Some(Version::Stable));
        assert_eq!(r.version_of_cluster(b"outbound|80||a.b"), None);
        assert_eq!(r.version_of_cluster(b"outbound|80|canary"), None);
        assert_eq!(r.version_of_cluster(b"outbound|80|canary|h|x"), None);
        assert_eq!(r.version_of_cluster(b"backend-canary"), None);
        let beside = |c: &[u8]| r.canary_cluster_beside(c).map(|c| String::from_utf8(c).unwrap());
        assert_eq!(beside(b"outbound|80|stable|a.b").as_deref(), Some("outbound|80|canary|a.b"));
        assert_eq!(beside(b"stable").as_deref(), Some("canary"));
        assert_eq!(beside(b"outbound|80|canary|a.b"), None);
        assert_eq!(beside(b"outbound|80|stable|a|b"), None);
        assert_eq!(beside(b"other"), None);
    }
}
