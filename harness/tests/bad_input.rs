//! Hostile and malformed request headers through a real Envoy (filter mode, 2 workers): every
//! request the filter sees is answered by the backend of the version it named, with a valid
//! reason, the decision the host computes, a fresh valid cookie in place of a bad one; no VM is
//! re-created or reloaded, nothing is logged per request, and every request is counted once.
//! What Envoy refuses before any filter runs (header block over its 60 KiB limit: 431; control
//! bytes in a header value: 400) is Envoy's own answer and is not counted.

use canary_gate::config::Config;
use canary_gate::model::Version;
use canary_gate::route::bucket::Bucketer;
use canary_gate::route::Router;
use canary_harness::chaos::{
    assert_no_wasm_errors, bucket_of_pair, expected_decision, log_lines, raw_get, wasm_log_lines, RawReply,
};
use canary_harness::{filter_config, start_stack, Client, Layout};
use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

const PERCENT: f64 = 50.0;

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answered by a backend with this reason (and, if given, this version).
    Routed(&'static str, Option<&'static str>),
    /// Refused by Envoy's codec with this status before any filter runs.
    Envoy(u16),
}

struct Case {
    name: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    expect: Expect,
}

fn case(name: impl Into<String>, headers: &[(&[u8], &[u8])], expect: Expect) -> Case {
    Case { name: name.into(), headers: headers.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(), expect }
}

fn routed(reason: &'static str) -> Expect {
    Expect::Routed(reason, None)
}

fn routed_to(reason: &'static str, version: &'static str) -> Expect {
    Expect::Routed(reason, Some(version))
}

fn name_of(v: Version) -> &'static str {
    match v {
        Version::Canary => "canary",
        Version::Stable => "stable",
    }
}

/// Oversized headers: near Envoy's 60 KiB request-header limit (answered) and over it (431).
fn oversized() -> Vec<Case> {
    const LIMIT: usize = 60 * 1024;
    let near = LIMIT - 400;
    let pad = |n: usize| "x".repeat(n);
    let mut cases = vec![
        case(
            "cookie near the limit, keyless",
            &[(b"cookie", format!("pad={}", pad(near)).as_bytes())],
            routed("random"),
        ),
        case(
            "cookie near the limit with a valid bucket after it",
            &[(b"cookie", format!("pad={}; canary_bucket=42", pad(near - 20)).as_bytes())],
            routed_to("cookie", "canary"),
        ),
        case(
            "bucket cookie of 59 KiB of digits",
            &[(b"cookie", format!("canary_bucket={}", "9".repeat(near - 20)).as_bytes())],
            routed("random"),
        ),
        case(
            "session cookie near the limit as hash key",
            &[(b"cookie", format!("session={}", pad(near)).as_bytes())],
            routed("hash"),
        ),
        case(
            "two cookie headers of 29 KiB each",
            &[
                (b"cookie", format!("a={}; canary_bucket=9999", pad(near / 2 - 40)).as_bytes()),
                (b"cookie", format!("b={}", pad(near / 2 - 10)).as_bytes()),
            ],
            routed_to("cookie", "stable"),
        ),
        case("cookie of 60 KiB + 1", &[(b"cookie", format!("pad={}", pad(LIMIT + 1)).as_bytes())], Expect::Envoy(431)),
        case(
            "cookie of 64 KiB",
            &[(b"cookie", format!("canary_bucket=1; pad={}", pad(64 * 1024)).as_bytes())],
            Expect::Envoy(431),
        ),
        case(
            "two cookie headers of 31 KiB each",
            &[
                (b"cookie", format!("a={}", pad(31 * 1024)).as_bytes()),
                (b"cookie", format!("b={}", pad(31 * 1024)).as_bytes()),
            ],
            Expect::Envoy(431),
        ),
        case("x-user-id of 61 KiB", &[(b"x-user-id", pad(61 * 1024).as_bytes())], Expect::Envoy(431)),
    ];
    // Many cookies, each small, adding up to near the limit.
    let many: Vec<String> = (0..5_000).map(|i| format!("c{i}=v")).collect();
    let many = many.join("; ");
    assert!(many.len() < near);
    cases.push(case("5,000 small cookies", &[(b"cookie", many.as_bytes())], routed("random")));
    cases.push(case(
        "5,000 small cookies then a bucket",
        &[(b"cookie", format!("{many}; canary_bucket=7").as_bytes())],
        routed_to("cookie", "canary"),
    ));
    cases
}

/// Malformed cookie headers; control bytes are refused by Envoy itself (400).
fn malformed_cookies() -> Vec<Case> {
    let semis = ";".repeat(20_000);
    let mut cases: Vec<Case> = [
        ("canary_bucket", "random", None),
        ("canary_bucket;;;;", "random", None),
        (";;;;;;;;canary_bucket=42;;;;;;", "cookie", Some("canary")),
        (semis.as_str(), "random", None),
        ("=; =; ==; canary_bucket==42", "random", None),
        ("canary_bucket=\"42\"", "cookie", Some("canary")),
        ("canary_bucket=\"42", "random", None),
        ("canary_bucket=42\"", "random", None),
        ("canary_bucket=\"\"", "random", None),
        ("canary_bucket=\"", "random", None),
        ("\"canary_bucket=42\"", "random", None),
        ("canary_bucket='42'", "random", None),
        ("canary_bucket=4 2", "random", None),
        ("canary_bucket=4\t2", "random", None),
        ("canary_bucket=\t42\t; theme=dark", "cookie", Some("canary")),
        ("canary_bucket = 42", "cookie", Some("canary")),
        ("canary_bucket=42 ; canary_bucket=9999", "cookie", Some("canary")),
        ("theme=dark; canary_bucket=9999", "cookie", Some("stable")),
        ("canary_bucket=abc; canary_bucket=42", "cookie", Some("canary")),
        ("canary_bucket=9999; canary_bucket=42", "cookie", Some("stable")),
        ("CANARY_BUCKET=42", "random", None),
        ("canary_bucket42", "random", None),
        ("canary_bucket=42=42", "random", None),
        ("session=; canary_bucket=9999", "cookie", Some("stable")),
        ("session=\"\"; canary_bucket=42", "cookie", Some("canary")),
        (",,,canary_bucket=42", "random", None),
        ("canary_bucket=42,theme=dark", "random", None),
    ]
    .into_iter()
    .map(|(cookie, reason, version)| {
        let expect = Expect::Routed(reason, version);
        case(
            format!("cookie {:?}", cookie.chars().take(60).collect::<String>()),
            &[(b"cookie", cookie.as_bytes())],
            expect,
        )
    })
    .collect();
    cases.push(case(
        format!("{} semicolons then a bucket", semis.len()),
        &[(b"cookie", format!("{semis}canary_bucket=9998").as_bytes())],
        routed_to("cookie", "stable"),
    ));
    // A malformed cookie next to a hash key: the key decides, nothing is set.
    cases.push(case(
        "keyed user with a junk bucket",
        &[(b"x-user-id", b"alice"), (b"cookie", b"canary_bucket=junk")],
        routed("hash"),
    ));
    for bytes in [
        &b"canary_bucket=\x01"[..],
        b"a=\x00; canary_bucket=42",
        b"canary_bucket=42\x7f",
        b"x=\x1b[31m; canary_bucket=1",
    ] {
        cases.push(case(
            format!("cookie with control bytes \"{}\"", bytes.escape_ascii()),
            &[(b"cookie", bytes)],
            Expect::Envoy(400),
        ));
    }
    cases
}

/// Repeated headers: the first `x-user-id` line counts; `x-canary` overrides only when every
/// line names the same version; of repeated cookies the first valid value wins; client-sent
/// version and reason headers never survive. (Repeated `cookie` lines whose later line carries
/// the bucket or session: see `repeated_cookie_lines_are_one_cookie_list`.)
fn duplicates(bucketer: &Bucketer, router: &Router) -> Vec<Case> {
    // Two keys on different versions, so the test shows which one decides.
    let version_of = |k: &str| router.version_of_bucket(bucketer.bucket(k.as_bytes()));
    let canary_key = (0..).map(|i| format!("dup-{i}")).find(|k| version_of(k) == Version::Canary).unwrap();
    let stable_key = (0..).map(|i| format!("dup-{i}")).find(|k| version_of(k) == Version::Stable).unwrap();
    vec![
        case(
            "two x-user-id, canary user first",
            &[(b"x-user-id", canary_key.as_bytes()), (b"x-user-id", stable_key.as_bytes())],
            routed_to("hash", "canary"),
        ),
        case(
            "two x-user-id, stable user first",
            &[(b"x-user-id", stable_key.as_bytes()), (b"x-user-id", canary_key.as_bytes())],
            routed_to("hash", "stable"),
        ),
        case(
            "two x-user-id, empty first",
            &[(b"x-user-id", b""), (b"x-user-id", canary_key.as_bytes())],
            routed("random"),
        ),
        case(
            "two cookie headers, two buckets",
            &[(b"cookie", b"canary_bucket=5"), (b"cookie", b"canary_bucket=9000")],
            routed_to("cookie", "canary"),
        ),
        case(
            "two cookie headers, junk bucket first",
            &[(b"cookie", b"canary_bucket=abc"), (b"cookie", b"canary_bucket=42")],
            routed_to("cookie", "canary"),
        ),
        case(
            "two cookie headers, session first",
            &[(b"cookie", format!("session={stable_key}").as_bytes()), (b"cookie", b"canary_bucket=42")],
            routed_to("hash", "stable"),
        ),
        case(
            "two x-canary, both canary",
            &[(b"x-canary", b"canary"), (b"x-canary", b"canary"), (b"x-user-id", stable_key.as_bytes())],
            routed_to("override", "canary"),
        ),
        case(
            "two x-canary, canary first",
            &[(b"x-canary", b"canary"), (b"x-canary", b"stable"), (b"x-user-id", stable_key.as_bytes())],
            routed_to("hash", "stable"),
        ),
        case(
            "two x-canary, stable first",
            &[(b"x-canary", b"stable"), (b"x-canary", b"canary"), (b"x-user-id", canary_key.as_bytes())],
            routed_to("hash", "canary"),
        ),
        case(
            "two x-canary, unknown second",
            &[(b"x-canary", b"canary"), (b"x-canary", b"foo"), (b"x-user-id", stable_key.as_bytes())],
            routed_to("hash", "stable"),
        ),
        case(
            "two x-canary, unknown first",
            &[(b"x-canary", b"foo"), (b"x-canary", b"canary"), (b"x-user-id", stable_key.as_bytes())],
            routed_to("hash", "stable"),
        ),
        case(
            "client sends x-canary-version twice",
            &[
                (b"x-canary-version", b"canary"),
                (b"x-canary-version", b"canary"),
                (b"x-user-id", stable_key.as_bytes()),
            ],
            routed_to("hash", "stable"),
        ),
        case(
            "client sends x-canary-reason twice",
            &[(b"x-canary-reason", b"override"), (b"x-canary-reason", b"gate"), (b"x-user-id", stable_key.as_bytes())],
            routed_to("hash", "stable"),
        ),
    ]
}

/// Bytes that are not UTF-8 in every header the filter reads or writes.
fn non_utf8() -> Vec<Case> {
    let mut cases = Vec::new();
    for key in
        [&b"\xff\xfe\xfd"[..], b"\xc3\x28user", b"caf\xe9", b"\x80", b"\xed\xa0\x80surrogate", b"\xf4\x90\x80\x80"]
    {
        cases.push(case(format!("x-user-id \"{}\"", key.escape_ascii()), &[(b"x-user-id", key)], routed("hash")));
    }
    for cookie in [&b"session=\xc3\x28"[..], b"session=\xff; canary_bucket=42"] {
        cases.push(case(format!("cookie \"{}\"", cookie.escape_ascii()), &[(b"cookie", cookie)], routed("hash")));
    }
    for cookie in
        [&b"canary_bucket=\xff"[..], b"canary_bucket=4\xb2", b"canary_bucket=\xef\xbc\x94\xef\xbc\x92", b"\xff\xfe=1"]
    {
        cases.push(case(format!("cookie \"{}\"", cookie.escape_ascii()), &[(b"cookie", cookie)], routed("random")));
    }
    cases.push(case(
        "cookie name not UTF-8 before a bucket",
        &[(b"cookie", b"\xff\xfe=1; canary_bucket=42")],
        routed_to("cookie", "canary"),
    ));
    for value in [&b"canary\xff"[..], b"\xe2\x80\x8bcanary", b"\xff", b"st\xe4ble"] {
        cases.push(case(
            format!("x-canary \"{}\"", value.escape_ascii()),
            &[(b"x-canary", value), (b"cookie", b"canary_bucket=9999")],
            routed_to("cookie", "stable"),
        ));
    }
    for value in [&b"\xff"[..], b"canary\x80", b"\xc3\x28"] {
        cases.push(case(
            format!("x-canary-version \"{}\"", value.escape_ascii()),
            &[(b"x-canary-version", value), (b"cookie", b"canary_bucket=9999")],
            routed_to("cookie", "stable"),
        ));
        cases.push(case(
            format!("x-canary-reason \"{}\"", value.escape_ascii()),
            &[(b"x-canary-reason", value), (b"cookie", b"canary_bucket=0")],
            routed_to("cookie", "canary"),
        ));
    }
    for key in [&b"a\x01b"[..], b"\x00", b"user\x7f"] {
        cases.push(case(
            format!("x-user-id with control bytes \"{}\"", key.escape_ascii()),
            &[(b"x-user-id", key)],
            Expect::Envoy(400),
        ));
    }
    cases
}

/// Override header values that name no version are ignored.
fn unknown_overrides() -> Vec<Case> {
    let long = "canary".repeat(200);
    let mut cases: Vec<Case> = [
        "CANARY",
        "Canary",
        "stable,canary",
        "canary,canary",
        "canary;",
        "1",
        "true",
        "null",
        "",
        "can ary",
        "\"canary\"",
        long.as_str(),
    ]
    .into_iter()
    .map(|v| {
        case(
            format!("x-canary {:?}", v.chars().take(30).collect::<String>()),
            &[(b"x-canary", v.as_bytes()), (b"cookie", b"canary_bucket=9999")],
            routed_to("cookie", "stable"),
        )
    })
    .collect();
    // Envoy strips the spaces around a value (RFC 9110 optional whitespace) before any filter runs.
    cases.push(case(
        "x-canary \" canary\\t\"",
        &[(b"x-canary", b" canary\t"), (b"cookie", b"canary_bucket=9999")],
        routed_to("override", "canary"),
    ));
    cases
}

/// Forged and out-of-range bucket cookies.
fn forged_buckets() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        "99999",
        "10000",
        "-1",
        "0x10",
        "00042",
        "0042",
        "042",
        "00",
        "+42",
        "4.2",
        "42e0",
        "1e3",
        " ",
        "18446744073709551617",
        "65536",
        "NaN",
        "\u{0664}\u{0662}",
    ]
    .into_iter()
    .map(|v| {
        case(format!("canary_bucket={v}"), &[(b"cookie", format!("canary_bucket={v}").as_bytes())], routed("random"))
    })
    .collect();
    // A client can forge a valid bucket: it is not a secret, only sticky.
    for (v, version) in [("0", "canary"), ("4999", "canary"), ("5000", "stable"), ("9999", "stable")] {
        cases.push(case(
            format!("forged canary_bucket={v}"),
            &[(b"cookie", format!("canary_bucket={v}").as_bytes())],
            routed_to("cookie", version),
        ));
    }
    cases
}

/// Huge hash keys.
fn huge_keys() -> Vec<Case> {
    let random: Vec<u8> = (0..32 * 1024u32).map(|i| 0x80 | (i.wrapping_mul(2_654_435_761) >> 25) as u8).collect();
    vec![
        case("x-user-id of 32 KiB", &[(b"x-user-id", "a".repeat(32 * 1024).as_bytes())], routed("hash")),
        case(
            "x-user-id of 32 KiB again (same key)",
            &[(b"x-user-id", "a".repeat(32 * 1024).as_bytes())],
            routed("hash"),
        ),
        case("x-user-id of 32 KiB + 1", &[(b"x-user-id", "a".repeat(32 * 1024 + 1).as_bytes())], routed("hash")),
        case("x-user-id of 32 KiB of non-UTF-8 bytes", &[(b"x-user-id", &random)], routed("hash")),
        case("x-user-id of 58 KiB", &[(b"x-user-id", "k".repeat(58 * 1024).as_bytes())], routed("hash")),
        case(
            "session cookie of 32 KiB",
            &[(b"cookie", format!("session={}", "s".repeat(32 * 1024)).as_bytes())],
            routed("hash"),
        ),
        case(
            "32 KiB x-user-id and 20 KiB session cookie",
            &[
                (b"x-user-id", "u".repeat(32 * 1024).as_bytes()),
                (b"cookie", format!("session={}", "s".repeat(20 * 1024)).as_bytes()),
            ],
            routed("hash"),
        ),
    ]
}

#[derive(Default, Debug)]
struct Tally {
    by_version: BTreeMap<String, u64>,
    refused: u64,
}

fn check(port: u16, router: &Router, case: &Case, tally: &mut Tally) {
    let headers: Vec<(&[u8], &[u8])> = case.headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    let reply: RawReply = raw_get(port, "/bad", &headers);
    let name = &case.name;
    let context = || {
        let headers: Vec<String> = reply.headers.iter().map(|(k, v)| format!("{k}: {}", v.escape_ascii())).collect();
        format!(
            "{name}: status {} headers {headers:?} error {:?} body {:.200}",
            reply.status,
            reply.error,
            reply.text()
        )
    };
    match case.expect {
        Expect::Envoy(status) => {
            assert_eq!(reply.status, status, "{}", context());
            assert_eq!(reply.header("server").as_deref(), Some("envoy"), "{}", context());
            assert_eq!((reply.served_by(), reply.version(), reply.reason()), (None, None, None), "{}", context());
            tally.refused += 1;
        }
        Expect::Routed(reason, version) => {
            assert_eq!(reply.status, 200, "{}", context());
            assert!(reply.served_as_routed(), "not answered by the named version's backend: {}", context());
            let got = reply.version().unwrap_or_default();
            assert_eq!(reply.reason().as_deref(), Some(reason), "{}", context());
            if let Some(version) = version {
                assert_eq!(got, version, "{}", context());
            }
            let expected = expected_decision(router, &headers);
            assert_eq!(expected.reason.as_str(), reason, "host logic disagrees with the case: {name}");
            let cookies = reply.all("set-cookie");
            if reason == "random" {
                assert_eq!(cookies.len(), 1, "{}", context());
                let pair = cookies[0].split(';').next().unwrap_or_default();
                let bucket = bucket_of_pair(pair).filter(|_| pair.starts_with("canary_bucket="));
                let bucket = bucket.unwrap_or_else(|| panic!("invalid replacement cookie {pair:?}: {}", context()));
                assert_eq!(got, name_of(router.version_of_bucket(bucket)), "{}", context());
                assert!(cookies[0].ends_with("; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax"), "{}", context());
            } else {
                assert!(cookies.is_empty(), "{}", context());
                assert_eq!(
                    Some(got.as_str()),
                    expected.version.map(name_of),
                    "host computes another version: {}",
                    context()
                );
            }
            // The upstream saw the filter's tags, not what the client sent.
            assert_eq!(reply.upstream_header("x-canary-version").as_deref(), Some(got.as_str()), "{}", context());
            assert_eq!(reply.upstream_header("x-canary-reason").as_deref(), Some(reason), "{}", context());
            *tally.by_version.entry(got).or_default() += 1;
        }
    }
}

/// 10,000 distinct keys of arbitrary non-control bytes, from 2 clients, each answered as the
/// host computes. Returns requests per version.
fn ten_thousand_keys(url: &str, router: &Router, bucketer: &Bucketer) -> BTreeMap<String, u64> {
    let parts: Vec<BTreeMap<String, u64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..2u32)
            .map(|t| {
                s.spawn(move || {
                    let client = Client::new();
                    let mut seen = BTreeMap::new();
                    let mut x = 0x9e37_79b9_u32 ^ (t + 1);
                    for i in (t..10_000).step_by(2) {
                        let mut key = format!("k{i}:").into_bytes();
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        for _ in 0..(x % 200) {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            // Visible ASCII and obs-text: everything Envoy accepts in a value.
                            let b = (x % 190) as u8;
                            key.push(if b < 94 { 0x21 + b } else { 0x80 + (b - 94) });
                        }
                        let reply = client.get(url, &[("x-user-id", &key)]);
                        let expected = name_of(router.version_of_bucket(bucketer.bucket(&key)));
                        assert_eq!(reply.status, 200, "key {key:?}: {}", reply.body);
                        assert_eq!(reply.version.as_deref(), Some(expected), "key {}", key.escape_ascii());
                        assert_eq!(reply.served_by.as_deref(), Some(expected), "key {}", key.escape_ascii());
                        assert_eq!(reply.reason.as_deref(), Some("hash"), "key {}", key.escape_ascii());
                        assert!(reply.set_cookies.is_empty(), "key {}", key.escape_ascii());
                        *seen.entry(expected.to_string()).or_insert(0) += 1;
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = BTreeMap::new();
    for part in parts {
        for (k, v) in part {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

#[test]
fn hostile_headers_are_answered_by_a_backend_and_never_hurt_the_vm() {
    let started = Instant::now();
    let (mut envoy, stable, canary) = start_stack(Layout::FilterMode, &filter_config(PERCENT), &|s| s);
    let router = Router::new(Config::parse(filter_config(PERCENT).as_bytes()).unwrap());
    let bucketer = Bucketer::new("checkout");
    let mut tally = Tally::default();

    // Warm-up: both versions served, every VM ticking.
    let warm = [
        case("warm-up canary", &[(b"x-canary", b"canary")], routed_to("override", "canary")),
        case("warm-up stable", &[(b"x-canary", b"stable")], routed_to("override", "stable")),
    ];
    for c in &warm {
        check(envoy.port, &router, c, &mut tally);
    }
    thread::sleep(Duration::from_millis(1_500));
    let baseline = envoy.vm_health();
    let memory_before = envoy.vm_memory_bytes();
    println!("after warm-up: {baseline:?}, canary_vm_memory_bytes {memory_before}");
    assert_eq!(baseline.reloads(), 0, "{baseline:?}");

    let groups: Vec<(&str, Vec<Case>)> = vec![
        ("oversized cookies and headers", oversized()),
        ("malformed cookies", malformed_cookies()),
        ("duplicate headers", duplicates(&bucketer, &router)),
        ("non-UTF-8 bytes", non_utf8()),
        ("unknown override values", unknown_overrides()),
        ("forged and out-of-range bucket cookies", forged_buckets()),
        ("huge hash keys", huge_keys()),
    ];
    for (group, cases) in &groups {
        let before = (tally.by_version.values().sum::<u64>(), tally.refused);
        for c in cases {
            check(envoy.port, &router, c, &mut tally);
        }
        println!(
            "{group}: {} cases, {} answered by a backend, {} refused by Envoy",
            cases.len(),
            tally.by_version.values().sum::<u64>() - before.0,
            tally.refused - before.1
        );
    }

    // The same bad inputs again, interleaved from 2 clients, to hit both workers' VMs.
    let all: Vec<&Case> = groups.iter().flat_map(|(_, cases)| cases.iter()).collect();
    let partial: Vec<Tally> = thread::scope(|s| {
        (0..2)
            .map(|t| {
                let (all, router, port) = (&all, &router, envoy.port);
                s.spawn(move || {
                    let mut tally = Tally::default();
                    for c in all.iter().skip(t).step_by(2) {
                        check(port, router, c, &mut tally);
                    }
                    tally
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    for p in partial {
        tally.refused += p.refused;
        for (k, v) in p.by_version {
            *tally.by_version.entry(k).or_default() += v;
        }
    }

    let keyed = ten_thousand_keys(&envoy.url("/keys"), &router, &bucketer);
    let share = keyed.get("canary").copied().unwrap_or(0) as f64 / 10_000.0;
    println!("10,000 distinct keys: {keyed:?} (canary share {:.2}%)", share * 100.0);
    assert!((0.48..=0.52).contains(&share), "{share}");
    for (k, v) in keyed {
        *tally.by_version.entry(k).or_default() += v;
    }

    // Every request the filter saw is counted once, under the version that served it; what
    // Envoy refused never reached a filter or a backend.
    let served: u64 = tally.by_version.values().sum();
    let (s, c) = envoy.counted("checkout", served, Duration::from_secs(10));
    println!(
        "answered by a backend: {served} ({:?}), refused by Envoy: {}, canary_requests_total stable {} canary {}",
        tally.by_version, tally.refused, s.requests_total, c.requests_total
    );
    assert_eq!(s.requests_total, tally.by_version.get("stable").copied().unwrap_or(0));
    assert_eq!(c.requests_total, tally.by_version.get("canary").copied().unwrap_or(0));
    assert_eq!((s.errors_total, c.errors_total), (0, 0));
    assert_eq!(stable.requests() + canary.requests(), served, "backends' own counts");
    assert!(tally.refused > 0);

    // No VM re-created, reloaded or crashed; the process is alive.
    let after = envoy.vm_health();
    let memory_after = envoy.vm_memory_bytes();
    println!("at the end: {after:?}, canary_vm_memory_bytes {memory_after}");
    assert_eq!(after.created, baseline.created, "a Wasm VM was re-created: {baseline:?} -> {after:?}");
    assert_eq!(after.active, baseline.active);
    assert_eq!(after.reloads(), 0, "{after:?}");
    assert!(envoy.is_running(), "envoy exited\n{}", envoy.log());

    // Nothing at error or critical from Wasm; warnings bounded (none per request).
    let log = envoy.log();
    assert_no_wasm_errors(&log);
    let warnings = log_lines(&log, "warning");
    println!("warning lines in Envoy's log: {}", warnings.len());
    for (_, line) in &warnings {
        println!("  {line}");
    }
    assert!(wasm_log_lines(&log, "warning").len() <= 2, "wasm warnings:\n{log}");
    assert!(warnings.len() <= 5, "{} warning lines for {served} requests", warnings.len());
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}

/// RFC 9113 lets HTTP/2 clients split cookies over several `cookie` fields and Envoy's HTTP/2
/// codec joins them, and Envoy forwards repeated HTTP/1.1 `cookie` lines to the upstream as they
/// came: the sticky bucket or the `session` key must count wherever it is in the cookie list,
/// or a bucket in a later line would be replaced by a fresh one and the user could flip.
#[test]
fn repeated_cookie_lines_are_one_cookie_list() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(PERCENT), &|s| s);
    let router = Router::new(Config::parse(filter_config(PERCENT).as_bytes()).unwrap());
    let bucketer = Bucketer::new("checkout");
    let key = (0..)
        .map(|i| format!("dup-{i}"))
        .find(|k| router.version_of_bucket(bucketer.bucket(k.as_bytes())) == Version::Stable)
        .unwrap();
    let session = format!("session={key}");
    for (lines, reason, version) in [
        (vec![&b"theme=x"[..], b"canary_bucket=9000"], "cookie", "stable"),
        (vec![&b"theme=x"[..], b"canary_bucket=42"], "cookie", "canary"),
        (vec![&b"canary_bucket=42"[..], session.as_bytes()], "hash", "stable"),
        (vec![&b"a=1"[..], b"b=2", b"c=3; canary_bucket=9999"], "cookie", "stable"),
    ] {
        let headers: Vec<(&[u8], &[u8])> = lines.iter().map(|l| (&b"cookie"[..], *l)).collect();
        let lines: Vec<String> = lines.iter().map(|l| l.escape_ascii().to_string()).collect();
        let reply = raw_get(envoy.port, "/", &headers);
        assert!(reply.served_as_routed(), "{lines:?}: status {}", reply.status);
        assert_eq!(
            (reply.reason().as_deref(), reply.version().as_deref(), reply.all("set-cookie")),
            (Some(reason), Some(version), vec![]),
            "cookie lines {lines:?}"
        );
    }
}
