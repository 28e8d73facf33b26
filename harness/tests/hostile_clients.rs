//! Clients who try to decide what only operators may, through a real Envoy (2 workers): a
//! tester's override without the token, a bucket cookie of the client's choosing, a version
//! header for a host the router does not handle. Each test names the scenario of the hostile
//! client report it replays ("Why N") and what the filter did before.

use canary_harness::analysis::sha256_hex;
use canary_harness::{start_stack, validate, Client, Layout};

const TOKEN: &str = "a-testers-token-of-32-characters";

fn config(percent: f64, extra: &str) -> String {
    format!(
        r#"{{"service": "checkout", "split": {{"mode": "filter", "canary_percent": {percent}}},
  "override": {{"header": "x-canary", "token_sha256": ["{}"]}}{extra}}}"#,
        sha256_hex(TOKEN)
    )
}

fn refused(envoy: &canary_harness::Envoy, what: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.canary_{what}_refused_total.service.checkout"))
}

/// Why 7: the override header worked for anyone who could reach the router (every override
/// below reached the canary before).
#[test]
fn why_7_an_override_counts_only_with_a_testers_token_which_never_reaches_the_upstream() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &config(0.0, ""), &|s| s);
    let client = Client::new();
    let url = envoy.url("/profile");
    for token in [None, Some(&b"wrong"[..]), Some(b""), Some(&TOKEN.as_bytes()[1..])] {
        let mut headers = vec![("x-canary", &b"canary"[..]), ("x-user-id", b"mallory")];
        headers.extend(token.map(|t| ("x-canary-token", t)));
        let reply = client.get(&url, &headers);
        assert_eq!(reply.status, 200);
        assert_eq!(
            (reply.served_by.as_deref(), reply.reason.as_deref()),
            (Some("stable"), Some("hash")),
            "token {token:?}: routed as if it had no override"
        );
        assert_eq!(reply.upstream_header("x-canary-token"), None, "a token never reaches the upstream");
    }
    assert_eq!(refused(&envoy, "override"), 4);
    let reply = client.get(&url, &[("x-canary", b"canary"), ("x-canary-token", TOKEN.as_bytes())]);
    assert_eq!((reply.served_by.as_deref(), reply.reason.as_deref()), (Some("canary"), Some("override")));
    assert_eq!(reply.upstream_header("x-canary-token"), None, "not even a valid one");
    assert_eq!(refused(&envoy, "override"), 4, "a valid token is not refused");
}

/// Why 7: the bucket cookie was unsigned, so a client chose its bucket (`canary_bucket=0` was
/// the canary at any weight above 0).
#[test]
fn why_7_with_a_key_a_bucket_cookie_of_the_clients_choosing_is_ignored() {
    let extra = r#", "sticky": {"cookie": "canary_bucket", "key": "a-sticky-key-of-32-characters..."}"#;
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &config(10.0, extra), &|s| s);
    let client = Client::new();
    let url = envoy.url("/");
    let mut canary = 0;
    for _ in 0..20 {
        let reply = client.get(&url, &[("cookie", b"canary_bucket=0")]);
        assert_eq!(reply.reason.as_deref(), Some("random"), "a forged cookie is a fresh user");
        canary += usize::from(reply.served_by.as_deref() == Some("canary"));
        // The fresh cookie is signed, and brings its user back to the same version.
        let pair = reply.cookie_pair("canary_bucket").expect("a fresh signed cookie");
        let value = pair.strip_prefix("canary_bucket=").unwrap_or_default();
        let (bucket, mac) = value.split_once('.').expect("value.MAC");
        assert!(bucket.parse::<u16>().is_ok_and(|b| b < 10_000) && mac.len() == 24, "{pair}");
        let again = client.get(&url, &[("cookie", pair.as_bytes())]);
        assert_eq!((again.reason.as_deref(), again.served_by), (Some("cookie"), reply.served_by), "{pair}");
    }
    assert!(canary < 20, "forged canary cookies reached the canary {canary} times of 20");
    assert_eq!(refused(&envoy, "sticky_cookie"), 20);
}

/// The key from the VM's environment (`vm_config.environment_variables`), and a refusal naming
/// `sticky.key_env` when the variable is not there.
#[test]
fn the_sticky_key_comes_from_the_environment_envoy_passes_to_the_vm() {
    let missing = config(10.0, r#", "sticky": {"key_env": "CANARY_GATE_NO_SUCH_KEY"}"#);
    let (ok, log) = validate(Layout::FilterMode, &missing);
    assert!(!ok, "accepted a key_env naming no variable:\n{log}");
    assert!(log.contains("sticky.key_env") && log.contains("`CANARY_GATE_NO_SUCH_KEY` is not set"), "{log}");

    // envoy/canary-gate.filter.yaml passes CANARY_GATE_STICKY_KEY; Envoy inherits it from here.
    std::env::set_var("CANARY_GATE_STICKY_KEY", "a-sticky-key-from-the-environment");
    let extra = r#", "sticky": {"cookie": "canary_bucket", "key_env": "CANARY_GATE_STICKY_KEY"}"#;
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &config(10.0, extra), &|s| s);
    let client = Client::new();
    let reply = client.get(&envoy.url("/"), &[]);
    let pair = reply.cookie_pair("canary_bucket").unwrap_or_else(|| panic!("no cookie: {reply:?}\n{}", envoy.log()));
    assert!(pair.split_once('.').is_some_and(|(_, mac)| mac.len() == 24), "signed: {pair}");
    let again = client.get(&envoy.url("/"), &[("cookie", pair.as_bytes())]);
    assert_eq!(again.reason.as_deref(), Some("cookie"));
    assert_eq!(refused(&envoy, "sticky_cookie"), 0);
}

/// Why 6: with `hosts` and the shipped catch-all virtual host (`domains: ["*"]`) routing on
/// the version header, `Host: other.local` with `x-canary-version: canary` reached the canary 20
/// of 20 times, unmeasured.
#[test]
fn why_6_a_client_cannot_choose_its_version_for_a_host_the_router_does_not_handle() {
    let json = config(50.0, r#", "hosts": ["shop.example.com"]"#);
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &json, &|s| s);
    let client = Client::new();
    let url = envoy.url("/");
    for i in 0..20 {
        let user = format!("user-{i}");
        let headers = [
            ("host", &b"other.local"[..]),
            ("x-canary-version", b"canary"),
            ("x-canary-reason", b"override"),
            ("x-user-id", user.as_bytes()),
        ];
        let reply = client.get(&url, &headers);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.served_by.as_deref(), Some("stable"), "{user}: the client chose");
        assert_eq!(reply.upstream_header("x-canary-version"), None);
        assert_eq!(reply.upstream_header("x-canary-reason"), None);
        assert_eq!(reply.version, None, "unhandled: no tag on the response");
    }
    // The handled host still routes, by the router's choice only.
    let reply =
        client.get(&url, &[("host", b"shop.example.com"), ("x-canary-version", b"canary"), ("x-user-id", b"u")]);
    assert_eq!(reply.reason.as_deref(), Some("hash"));
    assert_eq!(reply.served_by, reply.version);
}

/// Why 5: a mesh-mode router learnt a revision from any response header: one request whose
/// upstream reflected `x-canary-revision: r2` (here the client asks the test backend to set it)
/// made the router take r2 for the canary's revision, pin users to `canary.r2` and clear r1's
/// latched trip. Now a revision counts only with the observer's echo of the router's stamp.
#[test]
fn why_5_a_reflected_revision_header_teaches_a_router_nothing() {
    let weights = |s: String| s.replace("weight: 90\n", "weight: 50\n").replace("weight: 10\n", "weight: 50\n");
    let (envoy, _stable, _canary) = start_stack(Layout::MeshMode, &canary_harness::mesh_config(), &weights);
    let client = Client::new();
    let url = envoy.url("/");
    let reflect = &b"x-canary-revision=r2"[..];
    for _ in 0..10 {
        let reply = client.get(&url, &[("x-canary", b"canary"), ("x-backend-set", reflect)]);
        assert_eq!(reply.served_by.as_deref(), Some("canary"));
        let reply = client.get(&url, &[("x-backend-set", reflect)]);
        let pin = reply.cookie_pair("canary_bucket").expect("the mesh's choice pinned");
        assert!(!pin.contains("r2"), "pinned to a revision no observer named: {pin}");
    }
    for version in ["stable", "canary"] {
        let info = format!("wasmcustom.canary_revision_info.service.checkout.version.{version}.revision.r2");
        assert_eq!(envoy.stat(&info), 0, "{info}");
    }
    let stats = Client::new().get(&envoy.admin("/stats?filter=canary_revision_info"), &[]).body;
    assert!(!stats.contains("revision.r2"), "{stats}");
}

/// Why 5: an observer without its revision label passed the application's revision header
/// through, so a router in front learnt whatever the application said.
#[test]
fn why_5_an_observer_without_a_revision_removes_the_applications() {
    let observer = r#"{"service":"checkout","role":"observer"}"#;
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, observer, &|s| s);
    let reply = Client::new().get(&envoy.url("/"), &[("x-backend-set", b"x-canary-revision=r2")]);
    assert_eq!((reply.status, reply.header("x-canary-revision")), (200, None), "{reply:?}");
}

/// Why 4: flooded, two workers took about twice `vitals.max_per_second` (each admitted up to the
/// limit before its count reached the other), and beacons whose headers came in one second and
/// bodies in the next started a fresh budget. Now the workers share one count per second.
#[test]
fn why_4_two_flooded_workers_take_no_more_than_the_limit_in_any_second() {
    let base = canary_harness::filter_config(50.0);
    let body = base.trim_end().strip_suffix('}').unwrap_or_default();
    let json = format!(r#"{body}, "vitals": {{"max_per_second": 10}}}}"#);
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &json, &|s| s);
    let unix_s = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let first_s = unix_s();
    let attack = canary_harness::hostile::Attack::start(&envoy, r#"{"name":"page_view"}"#, 200.0, 3.0);
    std::thread::sleep(std::time::Duration::from_millis(3_200));
    let report = attack.finish();
    // The seconds the flood touched, each allowing 10.
    let seconds = unix_s() - first_s + 1;
    eprintln!("{report:?} over {seconds} seconds");
    assert!(report.sent > 200, "a flood: {report:?}");
    assert!(report.taken <= 10 * seconds, "{} taken in {seconds} seconds at 10/s: {report:?}", report.taken);
    assert!(report.taken >= 10 * (seconds - 2), "every whole second takes its 10: {report:?}");
}

/// `filter_config(50)` with the beacon endpoint and the gate on LCP (the Why 2 set-up).
fn vitals_gate_config() -> String {
    let base = canary_harness::filter_config(50.0);
    let body = base.trim_end().strip_suffix('}').unwrap_or_default();
    format!(
        r#"{body}, "vitals": {{"max_per_second": 1000}},
  "gate": {{"vitals": {{"max_lcp_p75_ms": 4000, "min_page_views": 50}}}}}}"#
    )
}

fn beacon(envoy: &canary_harness::Envoy, cookie: &str, body: &str) {
    let reply = Client::new().send(
        "POST",
        &envoy.url("/__canary/vitals"),
        &[("cookie", cookie), ("content-type", "text/plain")],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 204, "{reply:?}");
}

/// Why 2: one beacon of 50 page views and 14 LCPs of 60 s, with a canary bucket cookie and no
/// other traffic, tripped the vitals gate in 1.3 s (`min_page_views` met by the beacon itself).
/// A beacon now weighs one page; 50 pages still trip it (the control).
#[test]
fn why_2_one_forged_beacon_is_one_page_and_trips_nothing() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &vitals_gate_config(), &|s| s);
    let mut forged = vec![r#"{"name":"page_view"}"#; 50];
    forged.extend([r#"{"name":"LCP","value":60000}"#; 14]);
    beacon(&envoy, "canary_bucket=0", &format!("[{}]", forged.join(",")));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(envoy.gate_stats("checkout").0, 0, "one beacon tripped the gate");
    for _ in 0..50 {
        beacon(&envoy, "canary_bucket=0", r#"[{"name":"page_view"},{"name":"LCP","value":60000}]"#);
    }
    canary_harness::wait_until("50 slow pages trip the gate", std::time::Duration::from_secs(10), || {
        envoy.gate_stats("checkout").0 == 1
    });
}

/// Why 2: with 20 honest canary page views a second (LCP 1 s), one beacon of 64 reports (a page
/// view and 63 LCPs of 60 s) tripped the gate in 1.9 s.
#[test]
fn why_2_one_64_report_beacon_among_honest_pages_trips_nothing() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &vitals_gate_config(), &|s| s);
    let started = std::time::Instant::now();
    let honest = r#"[{"name":"page_view"},{"name":"LCP","value":1000}]"#;
    let mut forged = vec![r#"{"name":"page_view"}"#];
    forged.extend([r#"{"name":"LCP","value":60000}"#; 63]);
    let forged = format!("[{}]", forged.join(","));
    for i in 0..120 {
        beacon(&envoy, &format!("canary_bucket={}", i % 50), honest);
        if i == 60 {
            beacon(&envoy, "canary_bucket=0", &forged);
        }
        let next = started + std::time::Duration::from_millis(50 * (i + 1));
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(envoy.gate_stats("checkout").0, 0, "one beacon tripped the gate among 120 honest pages");
}

/// A beacon's override counts only with a token, as a request's does; one without is
/// attributed as if it had none (here: a keyless user, so not at all) and counted.
#[test]
fn why_7_a_beacons_override_needs_the_token_too() {
    let json = config(0.0, r#", "vitals": {}"#);
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &json, &|s| s);
    let post = |headers: &[(&str, &str)]| {
        Client::new().send("POST", &envoy.url("/__canary/vitals"), headers, br#"{"name":"page_view"}"#).status
    };
    assert_eq!(post(&[("x-canary", "canary")]), 204);
    assert_eq!(post(&[("x-canary", "canary"), ("x-canary-token", TOKEN)]), 204);
    let page_views = |version: &str| {
        envoy.stat(&format!("wasmcustom.canary_web_page_views_total.service.checkout.version.{version}"))
    };
    canary_harness::wait_until("the page view counted", std::time::Duration::from_secs(5), || {
        page_views("canary") == 1
    });
    assert_eq!(page_views("stable"), 0);
    assert_eq!(refused(&envoy, "override"), 1);
}
