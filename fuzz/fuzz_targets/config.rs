//! Arbitrary bytes as the plugin configuration. `Config::parse` must never panic; it must refuse
//! as invalid JSON exactly what serde_json refuses; every configuration it accepts must satisfy
//! the documented limits, and a `Router` built from it must decide consistently on a few fixed
//! requests.
#![no_main]

#[path = "common.rs"]
mod common;

use canary_gate::config::{
    self, Config, KeySource, Role, SplitMode, FULL_WEIGHT_BP, MAX_COOKIE_AGE_S, MAX_HASH_KEYS, MAX_HOSTS, MAX_WINDOW_S,
};
use canary_gate::model::{Reason, Version};
use canary_gate::route::bucket::{BucketRng, BUCKETS};
use canary_gate::route::cookie;
use canary_gate::route::hosts::HostPattern;
use canary_gate::route::{Decision, Router};
use common::{reference_decimal, Headers};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let tree: Option<Value> = serde_json::from_slice(data).ok();
    let parsed = Config::parse(data);
    // Parsing is a pure function of the bytes.
    assert_eq!(parsed, Config::parse(data));
    let c = match parsed {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
            assert!(e.to_string().contains(&format!("field `{}`", e.field)), "{e}");
            // The hand-written JSON parser refuses as JSON exactly what serde_json refuses (a
            // duplicate key found before a syntax error is reported first).
            let refused_as_json = e.reason.starts_with("invalid JSON: ");
            let duplicate = e.reason.starts_with("duplicate field");
            assert!(!refused_as_json || tree.is_none(), "serde_json accepts what was refused: {e}");
            assert!(tree.is_some() || refused_as_json || duplicate, "serde_json refuses what was not: {e}");
            return;
        }
    };
    let tree = tree.expect("an accepted configuration is JSON");
    check_config(&c);
    check_numbers(&c, &tree);
    check_router(c);
});

fn is_header_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with(':')
        && s.bytes().all(|b| config::is_token_byte(b) && !b.is_ascii_uppercase())
}

fn is_version_name(s: &str) -> bool {
    (1..=63).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_token(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(config::is_token_byte)
}

fn is_host(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
}

/// The limits every accepted configuration obeys.
fn check_config(c: &Config) {
    assert!(c.split.canary_bp <= FULL_WEIGHT_BP, "canary_bp {}", c.split.canary_bp);
    assert!((1..=63).contains(&c.service.len()), "{c:?}");
    assert!(c.service.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{c:?}");
    assert!(is_version_name(&c.stable) && is_version_name(&c.canary), "{c:?}");
    assert_ne!(c.stable, c.canary);
    assert!(is_header_name(&c.version_header) && is_header_name(&c.reason_header), "{c:?}");
    assert_ne!(c.version_header, c.reason_header);
    assert!(is_header_name(&c.r#override.header), "{c:?}");
    assert!(is_token(&c.sticky.cookie), "{c:?}");
    assert!((1..=MAX_COOKIE_AGE_S).contains(&c.sticky.max_age_s), "{c:?}");
    assert!((1..=MAX_WINDOW_S).contains(&c.metrics.window_s), "{c:?}");
    assert!((1..=253).contains(&c.version_label.len()), "{c:?}");
    assert!(c.version_label.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)), "{c:?}");
    assert!(c.split.hash_key.len() <= MAX_HASH_KEYS, "{c:?}");
    if c.split.mode == SplitMode::Filter {
        assert!(!c.split.hash_key.contains(&KeySource::Cookie(c.sticky.cookie.clone())), "{c:?}");
    }
    for source in &c.split.hash_key {
        match source {
            KeySource::Header(h) => assert!(is_header_name(h), "{c:?}"),
            KeySource::Cookie(k) => assert!(is_token(k), "{c:?}"),
        }
    }
    assert!(c.hosts.len() <= MAX_HOSTS, "{c:?}");
    for host in &c.hosts {
        match HostPattern::new(host) {
            HostPattern::Exact(h) => assert!(is_host(&h), "{c:?}"),
            HostPattern::Suffix(s) => {
                assert!(s.starts_with('.') && is_host(&s[1..]), "{c:?}");
            }
        }
    }
    let g = &c.gate;
    assert!((1..=MAX_WINDOW_S).contains(&g.window_s), "{g:?}");
    assert!((1..=1_000_000_000).contains(&g.min_requests), "{g:?}");
    assert!((1..=600).contains(&g.consecutive), "{g:?}");
    for ppm in [g.max_error_ratio_ppm, g.max_error_ratio_over_stable_ppm].into_iter().flatten() {
        assert!(ppm <= 1_000_000, "{g:?}");
    }
    for us in [g.max_p95_us, g.max_p99_us].into_iter().flatten() {
        assert!((1..=600_000_000).contains(&us), "{g:?}");
    }
    if c.role == Role::Observer {
        assert!(!g.has_thresholds(), "{c:?}");
    }
}

/// Every number the configuration keeps is exactly the decimal written in the JSON.
fn check_numbers(c: &Config, tree: &Value) {
    let text = |path: &[&str]| -> Option<&str> {
        let mut v = tree;
        for key in path {
            v = v.get(key)?;
        }
        match v {
            Value::Number(n) => Some(n.as_str()),
            _ => None,
        }
    };
    let exact = |path: &[&str], decimals: u32| -> Option<u128> {
        text(path).map(|t| reference_decimal(t, decimals).expect("accepted number is a plain decimal").1)
    };
    assert_eq!(exact(&["split", "canary_percent"], 2).unwrap_or(1_000), u128::from(c.split.canary_bp), "{c:?}");
    let g = &c.gate;
    assert_eq!(exact(&["gate", "max_error_ratio"], 6), g.max_error_ratio_ppm.map(u128::from));
    assert_eq!(exact(&["gate", "max_error_ratio_over_stable"], 6), g.max_error_ratio_over_stable_ppm.map(u128::from));
    assert_eq!(exact(&["gate", "max_p95_ms"], 3), g.max_p95_us.map(u128::from));
    assert_eq!(exact(&["gate", "max_p99_ms"], 3), g.max_p99_us.map(u128::from));
    if let Some(t) = text(&["sticky", "max_age_s"]) {
        assert_eq!(t.parse::<u32>().ok(), Some(c.sticky.max_age_s));
    }
    if let Some(t) = text(&["metrics", "window_s"]) {
        assert_eq!(t.parse::<u32>().ok(), Some(c.metrics.window_s));
    }
}

fn check_router(c: Config) {
    let router = Router::new(c.clone());
    assert_eq!(router.config(), &c);
    let (stable, canary) = (c.stable.clone(), c.canary.clone());

    // Fixed requests: nothing, an override each way, a user id, each hash key source, the
    // sticky cookie holding a bucket and a version name.
    let mut requests = vec![
        Headers::default(),
        Headers::default().with(&c.r#override.header, &stable),
        Headers::default().with(&c.r#override.header, &canary),
        Headers::default().with(&c.r#override.header, "no-such-version").with("x-user-id", "alice"),
        Headers::default().with("x-user-id", "alice"),
        Headers::default().with("cookie", format!("{}=42", c.sticky.cookie)),
        Headers::default().with("cookie", format!("{}={canary}", c.sticky.cookie)),
        Headers::default().with("cookie", format!("{}=9999; session=s1", c.sticky.cookie)),
        Headers::default().with(":authority", "shop.example.com"),
    ];
    for source in &c.split.hash_key {
        requests.push(match source {
            KeySource::Header(h) => Headers::default().with(h, "user-7"),
            KeySource::Cookie(k) => Headers::default().with("cookie", format!("{k}=user-7")),
        });
    }

    for (i, h) in requests.iter().enumerate() {
        for gate in [false, true] {
            let mut rng = BucketRng::new(i as u64);
            let d = router.decide(h, &mut rng, gate);
            let mut again = BucketRng::new(i as u64);
            assert_eq!(d, router.decide(h, &mut again, gate), "decide is deterministic");
            check_decision(&router, h, &d, gate);
        }
    }

    // Overrides always win, also over a tripped gate.
    for gate in [false, true] {
        let d = router.decide(&requests[1], &mut BucketRng::new(1), gate);
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Stable), Reason::Override, None));
        let d = router.decide(&requests[2], &mut BucketRng::new(2), gate);
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Canary), Reason::Override, None));
    }

    // Cluster names.
    assert_eq!(router.version_of_cluster(stable.as_bytes()), Some(Version::Stable));
    assert_eq!(router.version_of_cluster(canary.as_bytes()), Some(Version::Canary));
    let istio = format!("outbound|8080|{canary}|{}.ns.svc.cluster.local", c.service);
    assert_eq!(router.version_of_cluster(istio.as_bytes()), Some(Version::Canary));
    assert_eq!(router.version_of_cluster(format!("{istio}|x").as_bytes()), None);
    assert_eq!(router.version_named(b""), None);

    // Hosts.
    let handles = |authority: &[u8]| router.handles(|| Some(authority.to_vec()));
    assert_eq!(router.handles(|| None), c.hosts.is_empty());
    for host in &c.hosts {
        let host = HostPattern::new(host);
        let name = match &host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Suffix(s) => format!("a{s}"),
        };
        assert!(handles(name.as_bytes()), "{name} in {:?}", c.hosts);
        assert!(handles(format!("{}:8443", name.to_ascii_uppercase()).as_bytes()), "{name}");
        if let HostPattern::Suffix(s) = &host {
            // A wildcard needs a label in front of its suffix.
            assert!(!host.matches(s.as_bytes()) && !host.matches(&s.as_bytes()[1..]), "{s}");
        }
    }
    if c.hosts.is_empty() {
        assert!(handles(b"\xff\xfe:1"));
    }
}

fn check_decision(router: &Router, h: &Headers, d: &Decision, gate: bool) {
    let c = router.config();
    let override_version = h.get_first(&c.r#override.header).and_then(|v| router.version_named(v));
    if let Some(v) = override_version {
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(v), Reason::Override, None), "{h:?}");
        return;
    }
    assert_ne!(d.reason, Reason::Override, "{h:?}");
    if gate {
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Stable), Reason::Gate, None), "{h:?}");
        assert_eq!(router.sticky_cookie_for(d, d.version, None), None);
        return;
    }
    assert_eq!(d.new_bucket.is_some(), d.reason == Reason::Random, "{d:?}");
    match c.split.mode {
        SplitMode::Filter => {
            assert!(matches!(d.reason, Reason::Hash | Reason::Cookie | Reason::Random), "{d:?}");
            let v = d.version.expect("filter mode always chooses");
            if c.split.canary_bp == 0 {
                assert_eq!(v, Version::Stable);
            }
            if c.split.canary_bp == FULL_WEIGHT_BP {
                assert_eq!(v, Version::Canary);
            }
            if let Some(b) = d.new_bucket {
                assert!(b < BUCKETS);
                assert_eq!(v, router.version_of_bucket(b));
                let set = router.sticky_cookie_for(d, d.version, None).expect("a new bucket is stored");
                let pair = set.split(';').next().unwrap_or_default();
                assert_eq!(cookie::find(pair.as_bytes(), &c.sticky.cookie).and_then(cookie::parse_bucket), Some(b));
                assert!(set.contains(&format!("; Max-Age={};", c.sticky.max_age_s)), "{set}");
                assert_eq!(set.ends_with("; Secure"), c.sticky.secure, "{set}");
            } else {
                assert_eq!(router.sticky_cookie_for(d, d.version, None), None);
            }
            if d.reason == Reason::Cookie {
                let stored = h
                    .get_first("cookie")
                    .and_then(|v| cookie::find(v, &c.sticky.cookie).and_then(cookie::parse_bucket))
                    .expect("a cookie decision has a bucket cookie");
                assert_eq!(v, router.version_of_bucket(stored));
            }
        }
        SplitMode::Mesh => {
            assert!(matches!(d.reason, Reason::Mesh | Reason::Pin), "{d:?}");
            assert_eq!(d.version.is_some(), d.reason == Reason::Pin, "{d:?}");
            if d.reason == Reason::Mesh {
                let set = router.sticky_cookie_for(d, Some(Version::Canary), None).expect("mesh choice is pinned");
                assert!(set.starts_with(&format!("{}={};", c.sticky.cookie, c.canary)), "{set}");
                assert_eq!(router.sticky_cookie_for(d, None, None), None);
            }
        }
    }
}
