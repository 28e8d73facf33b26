//! Arbitrary request header values (anything a client may send, including invalid UTF-8)
//! against the cookie parser, the bucket parser, and routers of a fixed filter-mode and a fixed
//! mesh-mode configuration. Every decision is checked against a model of the documented rules.
#![no_main]

#[path = "common.rs"]
mod common;

use canary_gate::config::{Config, GrpcConfig};
use canary_gate::measure::grpc;
use canary_gate::measure::report::{Report, Tag};
use canary_gate::model::{Reason, Revision, Version};
use canary_gate::route::bucket::{BucketRng, Bucketer, BUCKETS};
use canary_gate::route::cookie::{self, SetCookie};
use canary_gate::route::hosts::authority_host;
use canary_gate::route::revisions::Revisions;
use canary_gate::route::{Decision, Router};
use common::{Cursor, Headers};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const FILTER: &str = r#"{"service": "checkout",
    "split": {"mode": "filter", "canary_percent": 12.34,
              "hash_key": [{"header": "x-user-id"}, {"cookie": "session"}]},
    "override": {"header": "x-canary"},
    "sticky": {"cookie": "canary_bucket", "max_age_s": 86400, "secure": true},
    "hosts": ["shop.example.com", "*.svc.cluster.local"]}"#;

const MESH: &str = r#"{"service": "checkout", "stable": "v1", "canary": "v2",
    "split": {"mode": "mesh"},
    "override": {"header": "x-canary"},
    "sticky": {"cookie": "canary_bucket", "max_age_s": 60}}"#;

/// Canary weight of `FILTER`, in basis points.
const FILTER_BP: u16 = 1234;
const STICKY: &str = "canary_bucket";
const SUFFIX: &[u8] = b".svc.cluster.local";

fn routers() -> &'static (Router, Router) {
    static ROUTERS: OnceLock<(Router, Router)> = OnceLock::new();
    ROUTERS.get_or_init(|| {
        let filter = Config::parse(FILTER.as_bytes()).expect("FILTER is valid");
        let mesh = Config::parse(MESH.as_bytes()).expect("MESH is valid");
        (Router::new(filter), Router::new(mesh))
    })
}

/// The input, read as
///   [flags] bit 0: gate tripped; bits 1, 2, 3: the request has `x-canary`, `x-user-id`, `cookie`
///   [seed: u64 LE] [bucket: u16 LE] [max_age_s: u32 LE]
///   then six fields, each a u16 LE length and that many bytes: the `x-canary` value, the
///   `x-user-id` value, the `cookie` value, an upstream cluster name, an `:authority`, a free value.
#[derive(Debug)]
struct Input<'a> {
    gate: bool,
    seed: u64,
    bucket: u16,
    max_age_s: u32,
    override_value: Option<&'a [u8]>,
    user: Option<&'a [u8]>,
    cookie: Option<&'a [u8]>,
    cluster: &'a [u8],
    authority: &'a [u8],
    value: &'a [u8],
}

impl<'a> Input<'a> {
    fn read(data: &'a [u8]) -> Self {
        let mut c = Cursor(data);
        let flags = c.byte().unwrap_or(0);
        let (seed, bucket, max_age_s) = (c.u64(), c.u16(), c.u32());
        let (override_value, user, cookie) = (c.field(), c.field(), c.field());
        Input {
            gate: flags & 1 != 0,
            seed,
            bucket,
            max_age_s,
            override_value: (flags & 2 != 0).then_some(override_value),
            user: (flags & 4 != 0).then_some(user),
            cookie: (flags & 8 != 0).then_some(cookie),
            cluster: c.field(),
            authority: c.field(),
            value: c.field(),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::read(data);
    check_cookies(&input);
    check_buckets(&input);
    check_revision_table(input.value);
    check_grpc(input.value);
    check_fleet(input.value);
    let (filter, mesh) = routers();
    let mut h = Headers::default();
    if let Some(v) = input.override_value {
        h = h.with("x-canary", v);
    }
    if let Some(v) = input.user {
        h = h.with("x-user-id", v);
    }
    if let Some(v) = input.cookie {
        h = h.with("cookie", v);
    }
    h = h.with(":authority", input.authority);
    check_filter(filter, &h, &input);
    check_mesh(mesh, &h, &input);
    check_clusters(filter, &input);
    check_clusters(mesh, &input);
    check_authority(filter, input.authority);
});

/// A fleet report or tag is read only if it is exactly what the writer makes of what was read,
/// and a report's counts add up.
fn check_fleet(value: &[u8]) {
    if let Some(report) = Report::parse(value) {
        assert_eq!(report.encode().as_bytes(), value, "a report reads back as written");
        assert!(report.errors <= report.requests);
        for (checked, over) in report.checked.iter().zip(report.over) {
            assert!(over <= *checked && *checked <= report.requests);
        }
        assert!(report.follows(&report));
    }
    if let Some(tag) = Tag::parse(value) {
        assert_eq!(tag.encode().as_bytes(), value, "a tag reads back as written");
        assert!(tag.user.is_none_or(|u| u < 64));
    }
}

/// A `grpc-status` value is read as Envoy reads it, a `content-type` sorted as Envoy sorts it,
/// and every code counts as a status whose class matches whether it is an error.
fn check_grpc(value: &[u8]) {
    let trimmed = value.trim_ascii();
    let digits = trimmed.strip_prefix(b"+").unwrap_or(trimmed);
    let model = std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok());
    assert_eq!(grpc::parse_status(value), model, "{value:?}");
    let protocol = grpc::Protocol::of_content_type(value);
    let expected = if value == b"application/grpc" || value.starts_with(b"application/grpc+") {
        grpc::Protocol::Grpc
    } else if value.starts_with(b"application/grpc-web") {
        grpc::Protocol::GrpcWeb
    } else {
        grpc::Protocol::Http
    };
    assert_eq!(protocol, expected, "{value:?}");
    // Codes 1 to 16 listed as errors or not by the value's first two bytes.
    let byte = |i: usize| u32::from(value.get(i).copied().unwrap_or(0));
    let config = GrpcConfig { error_codes: (byte(0) << 9 | byte(1) << 1) & 0x1_fffe };
    let code = model.unwrap_or(u64::MAX);
    let status = grpc::call_status(config, Some(code), || 0);
    let listed = |c: u64| c <= 16 && config.error_codes >> c & 1 == 1;
    let as_code = if code <= 16 { code } else { 2 };
    assert_eq!(status >= 500, listed(as_code), "code {code} counted as {status}");
    assert!((200..600).contains(&status));
    assert_eq!(grpc::web_call_status(config, Some(value), 200), status);
}

/// `find`'s answer is a piece of the header, never spans pairs, and a clean pair put first wins.
fn check_cookies(input: &Input<'_>) {
    for header in [input.cookie.unwrap_or_default(), input.value] {
        for name in [STICKY, "session", ""] {
            if let Some(v) = cookie::find(header, name) {
                let range = header.as_ptr_range();
                assert!(range.start <= v.as_ptr() && v.as_ptr_range().end <= range.end, "not a subslice");
                assert!(!v.contains(&b';'), "{v:?}");
            }
        }
    }
    let v = input.value;
    if v.contains(&b';') {
        return;
    }
    let rest = input.cookie.unwrap_or_default();
    // Quoted: the quotes go, everything between them stays.
    let quoted = [&b"canary_bucket=\""[..], v, b"\"; ", rest].concat();
    assert_eq!(cookie::find(&quoted, STICKY), Some(v), "{quoted:?}");
    // Unquoted: surrounding whitespace goes.
    let plain = [&b" canary_bucket = "[..], v, b" ;", rest].concat();
    let trimmed = v.trim_ascii();
    let expected = match trimmed {
        [b'"', inner @ .., b'"'] => inner,
        _ => trimmed,
    };
    assert_eq!(cookie::find(&plain, STICKY), Some(expected), "{plain:?}");
    // A pair of another name before it changes nothing.
    let other = [&b"canary_bucket_x=1; xcanary_bucket=2; "[..], &plain].concat();
    assert_eq!(cookie::find(&other, STICKY), Some(expected));
    // Repeated: the first value a reader accepts wins.
    for header in [input.cookie.unwrap_or_default(), input.value, &quoted, &plain] {
        let bucket = cookie::find_valid(header, STICKY, cookie::parse_bucket);
        assert_eq!(bucket, first_valid(header, STICKY, cookie::parse_bucket), "{header:?}");
    }
}

/// Model of a repeated cookie: the first pair called `name` whose value `valid` accepts.
fn first_valid<'a, T>(header: &'a [u8], name: &str, valid: impl Fn(&'a [u8]) -> Option<T>) -> Option<T> {
    header.split(|&b| b == b';').find_map(|pair| cookie::find(pair, name).and_then(&valid))
}

fn is_canonical_bucket(v: &[u8]) -> bool {
    (1..=4).contains(&v.len()) && v.iter().all(u8::is_ascii_digit) && (v.len() == 1 || v[0] != b'0')
}

/// A bucket parses exactly when it is in canonical form, and then renders back to the same text.
fn check_buckets(input: &Input<'_>) {
    let mut values = vec![input.value];
    if let Some(v) = input.cookie.and_then(|c| cookie::find(c, STICKY)) {
        values.push(v);
    }
    for v in values {
        match cookie::parse_bucket(v) {
            Some(b) => {
                assert!(b < BUCKETS, "{v:?} -> {b}");
                assert_eq!(b.to_string().as_bytes(), v, "re-rendered bucket differs");
            }
            None => assert!(!is_canonical_bucket(v), "{v:?} refused"),
        }
    }
    let b = input.bucket;
    assert_eq!(cookie::parse_bucket(b.to_string().as_bytes()), (b < BUCKETS).then_some(b));
    let b = b % BUCKETS;
    for secure in [false, true] {
        let set = SetCookie::new(STICKY, input.max_age_s, secure).bucket(b);
        let pair = set.split(';').next().unwrap_or_default();
        assert_eq!(cookie::find(pair.as_bytes(), STICKY).and_then(cookie::parse_bucket), Some(b), "{set}");
        assert_eq!(cookie::find(set.as_bytes(), STICKY).and_then(cookie::parse_bucket), Some(b), "{set}");
        assert!(set.contains(&format!("; Max-Age={};", input.max_age_s)), "{set}");
    }
}

fn check_filter(router: &Router, h: &Headers, input: &Input<'_>) {
    let mut rng = BucketRng::new(input.seed);
    let d = router.decide(h, &mut rng, input.gate);
    let expected = filter_model(router, input);
    assert_eq!(d, expected, "{h:?}");
    let v = d.version.expect("filter mode always has a version");
    if let Some(b) = d.new_bucket {
        assert_eq!(d.reason, Reason::Random);
        assert!(b < BUCKETS);
        assert_eq!(v, router.version_of_bucket(b));
        let set = router.sticky_cookie_for(&d, Some(v), None).expect("a new bucket is stored");
        assert!(set.starts_with(&format!("{STICKY}={b}; Max-Age=86400;")) && set.ends_with("; Secure"), "{set}");
    } else {
        assert_ne!(d.reason, Reason::Random);
        assert_eq!(router.sticky_cookie_for(&d, Some(v), None), None);
    }
    for b in [0, FILTER_BP - 1, FILTER_BP, BUCKETS - 1, input.bucket % BUCKETS] {
        let want = if b < FILTER_BP { Version::Canary } else { Version::Stable };
        assert_eq!(router.version_of_bucket(b), want);
    }
}

/// The documented precedence: override, gate, hash key (x-user-id, then the `session` cookie),
/// sticky bucket cookie, fresh random bucket.
fn filter_model(router: &Router, input: &Input<'_>) -> Decision {
    let named = |v: &[u8]| match v {
        b"stable" => Some(Version::Stable),
        b"canary" => Some(Version::Canary),
        _ => None,
    };
    if let Some(v) = input.override_value.and_then(named) {
        return Decision {
            version: Some(v),
            reason: Reason::Override,
            new_bucket: None,
            bucket: None,
            pin: None,
            keep_pin: false,
            override_refused: false,
            cookie_refused: false,
        };
    }
    if input.gate {
        return Decision {
            version: Some(Version::Stable),
            reason: Reason::Gate,
            new_bucket: None,
            bucket: None,
            pin: None,
            keep_pin: false,
            override_refused: false,
            cookie_refused: false,
        };
    }
    let bucketer = Bucketer::new("checkout");
    let cookie = input.cookie;
    let key = input
        .user
        .filter(|u| !u.is_empty())
        .or_else(|| cookie.and_then(|c| first_valid(c, "session", |s| (!s.is_empty()).then_some(s))));
    let (bucket, reason, new_bucket) = if let Some(key) = key {
        (bucketer.bucket(key), Reason::Hash, None)
    } else if let Some(b) = cookie.and_then(|c| first_valid(c, STICKY, cookie::parse_bucket)) {
        (b, Reason::Cookie, None)
    } else {
        let b = BucketRng::new(input.seed).next_bucket();
        (b, Reason::Random, Some(b))
    };
    assert!(bucket < BUCKETS);
    // The bucket decided is the user's identity for the gate's distinct-users count.
    Decision {
        version: Some(router.version_of_bucket(bucket)),
        reason,
        new_bucket,
        bucket: Some(bucket),
        pin: None,
        keep_pin: false,
        override_refused: false,
        cookie_refused: false,
    }
}

fn check_mesh(router: &Router, h: &Headers, input: &Input<'_>) {
    let named = |v: &[u8]| match v {
        b"v1" => Some(Version::Stable),
        b"v2" => Some(Version::Canary),
        _ => None,
    };
    // A pin: a version name, optionally `.` and a revision of `[A-Za-z0-9_-]{1,63}`.
    let pin_of = |v: &[u8]| {
        let (name, revision) = match v.iter().position(|&b| b == b'.') {
            Some(at) => (&v[..at], Some(&v[at + 1..])),
            None => (v, None),
        };
        let valid = |r: &[u8]| {
            (1..=63).contains(&r.len()) && r.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        };
        match revision {
            Some(r) if !valid(r) => None,
            _ => named(name).map(|version| (version, revision.is_some())),
        }
    };
    let d = router.decide(h, &mut BucketRng::new(input.seed), input.gate);
    assert_eq!((d.new_bucket, d.bucket), (None, None), "mesh mode never buckets");
    let pinned = input.cookie.and_then(|c| first_valid(c, STICKY, pin_of));
    // With no revision learned: a pin naming a version only is honoured; with a revision, a
    // stable pin is (stable is safe) and a canary one cannot be checked: the mesh decides and
    // the pin is kept unless the canary serves.
    let expected = if let Some(v) = input.override_value.and_then(named) {
        (Some(v), Reason::Override, false)
    } else if input.gate {
        (Some(Version::Stable), Reason::Gate, false)
    } else {
        match pinned {
            Some((Version::Canary, true)) => (None, Reason::Mesh, true),
            Some((v, _)) => (Some(v), Reason::Pin, false),
            None => (None, Reason::Mesh, false),
        }
    };
    assert_eq!((d.version, d.reason, d.keep_pin), expected, "{h:?}");

    let served = router.version_of_cluster(input.cluster);
    let set = router.sticky_cookie_for(&d, served, None);
    let pin_to = match (d.reason, served) {
        (Reason::Mesh, Some(Version::Stable)) if d.keep_pin => None,
        (Reason::Mesh, Some(v)) => Some(v),
        (Reason::Pin, Some(v)) if d.version != Some(v) => Some(v),
        _ => None,
    };
    match (pin_to, set) {
        (None, None) => {}
        (Some(v), Some(set)) => {
            let name = if v == Version::Stable { "v1" } else { "v2" };
            assert!(set.starts_with(&format!("{STICKY}={name}; Max-Age=60;")), "{set}");
            assert!(!set.ends_with("Secure"), "{set}");
            // The next request carrying it is pinned there.
            let pair = set.split(';').next().unwrap_or_default();
            let next = router.decide(&Headers::default().with("cookie", pair), &mut BucketRng::new(0), false);
            assert_eq!((next.version, next.reason), (Some(v), Reason::Pin));
        }
        (want, got) => panic!("sticky cookie: want pin to {want:?}, got {got:?} for {d:?}"),
    }
}

/// A shared revision table decodes only from its own encoding (another VM's bytes are
/// untrusted), and what decodes encodes back to the same bytes.
fn check_revision_table(bytes: &[u8]) {
    if let Some(table) = Revisions::decode(bytes) {
        assert_eq!(table.encode(), bytes);
    }
    if let Some(revision) = Revision::parse(bytes) {
        assert_eq!(revision.as_str().as_bytes(), bytes);
    }
}

/// A cluster is a version when named like one, or when it is an Istio `outbound|PORT|SUBSET|HOST`
/// (or `inbound|…`) name whose subset is one.
fn check_clusters(router: &Router, input: &Input<'_>) {
    let cluster = input.cluster;
    let parts: Vec<&[u8]> = cluster.split(|&b| b == b'|').collect();
    let expected = router.version_named(cluster).or_else(|| match parts.as_slice() {
        [b"outbound" | b"inbound", _, subset, _] => router.version_named(subset),
        _ => None,
    });
    assert_eq!(router.version_of_cluster(cluster), expected, "{cluster:?}");
    if !input.value.contains(&b'|') {
        let c = router.config();
        for (name, v) in [(&c.stable, Version::Stable), (&c.canary, Version::Canary)] {
            let istio = [&b"outbound|"[..], input.value, b"|", name.as_bytes(), b"|", input.value].concat();
            assert_eq!(router.version_of_cluster(&istio), Some(v), "{istio:?}");
            let longer = [&istio[..], b"|", input.value].concat();
            assert_eq!(router.version_of_cluster(&longer), None, "{longer:?}");
        }
    }
}

fn check_authority(router: &Router, authority: &[u8]) {
    let handles_authority = |a: &[u8]| router.handles(|| Some(a.to_vec()));
    let host = authority_host(authority);
    let expected: &[u8] = match authority.first() {
        Some(b'[') => {
            let inner = &authority[1..];
            &inner[..inner.iter().position(|&b| b == b']').unwrap_or(inner.len())]
        }
        _ => &authority[..authority.iter().position(|&b| b == b':').unwrap_or(authority.len())],
    };
    let expected = expected.strip_suffix(b".").unwrap_or(expected);
    assert_eq!(host, expected.to_ascii_lowercase(), "{authority:?}");
    assert!(!host.iter().any(u8::is_ascii_uppercase));

    let handles = handles_authority(authority);
    let model = host == b"shop.example.com" || (host.len() > SUFFIX.len() && host.ends_with(SUFFIX));
    assert_eq!(handles, model, "{authority:?}");
    assert_eq!(handles_authority(&authority.to_ascii_uppercase()), handles, "{authority:?}");
    if !authority.starts_with(b"[") && !authority.contains(&b':') {
        let with_port = [authority, b":8443"].concat();
        assert_eq!(handles_authority(&with_port), handles, "{authority:?}");
    }
    assert!(!router.handles(|| None));
}
