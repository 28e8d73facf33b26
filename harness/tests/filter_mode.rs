//! Filter mode through a real Envoy: canary-gate chooses, the route table follows the header.

use canary_gate::config::Config;
use canary_gate::model::Version;
use canary_gate::route::bucket::Bucketer;
use canary_gate::route::Router;
use canary_harness::{filter_config, start_stack, Client, Layout};
use std::thread;
use std::time::Duration;

fn host_router(percent: f64) -> Router {
    Router::new(Config::parse(filter_config(percent).as_bytes()).unwrap())
}

#[test]
fn ten_thousand_users_split_at_ten_percent_exactly_as_the_host_computes() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(10.0), &|s| s);
    let router = host_router(10.0);
    let bucketer = Bucketer::new("checkout");
    let url = envoy.url("/profile");
    let canary_users: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (url, router) = (&url, &router);
                s.spawn(move || {
                    let client = Client::new();
                    let mut canary = 0;
                    for i in (t..10_000).step_by(4) {
                        let key = format!("user-{i}");
                        let reply = client.get(url, &[("x-user-id", key.as_bytes())]);
                        assert_eq!(reply.status, 200, "{key}: {}", reply.body);
                        let expected = match router.version_of_bucket(bucketer.bucket(key.as_bytes())) {
                            Version::Canary => "canary",
                            Version::Stable => "stable",
                        };
                        // The bucket computed in Envoy's wasm32 VM equals the host's.
                        assert_eq!(reply.version.as_deref(), Some(expected), "{key}");
                        assert_eq!(reply.reason.as_deref(), Some("hash"));
                        // The route followed the header, and the upstream saw the same tags.
                        assert_eq!(reply.served_by.as_deref(), Some(expected));
                        assert_eq!(reply.upstream_header("x-canary-version").as_deref(), Some(expected));
                        assert_eq!(reply.upstream_header("x-canary-reason").as_deref(), Some("hash"));
                        assert!(reply.set_cookies.is_empty(), "keyed users need no cookie");
                        canary += usize::from(expected == "canary");
                    }
                    canary
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let share = canary_users as f64 / 10_000.0;
    println!("canary share over 10,000 users at 10%: {:.2}%", share * 100.0);
    assert!((0.09..=0.11).contains(&share), "canary share {share}");
}

#[test]
fn override_header_forces_a_version_and_unknown_values_are_ignored() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(0.0), &|s| s);
    let client = Client::new();
    let url = envoy.url("/");
    let reply = client.get(&url, &[("x-canary", b"canary"), ("x-user-id", b"u1")]);
    assert_eq!((reply.version.as_deref(), reply.reason.as_deref()), (Some("canary"), Some("override")));
    assert_eq!(reply.served_by.as_deref(), Some("canary"));
    for bad in [&b"CANARY"[..], b"v2", b"canary,stable", b"\xc3\x28"] {
        let reply = client.get(&url, &[("x-canary", bad), ("x-user-id", b"u1")]);
        assert_eq!(reply.status, 200);
        assert_eq!((reply.version.as_deref(), reply.reason.as_deref()), (Some("stable"), Some("hash")), "{bad:?}");
        assert_eq!(reply.served_by.as_deref(), Some("stable"));
    }
}

#[test]
fn a_client_cannot_choose_its_version_by_sending_the_version_header() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(0.0), &|s| s);
    let client = Client::new();
    for (headers, reason) in [
        (vec![("x-canary-version", &b"canary"[..]), ("x-user-id", b"mallory")], "hash"),
        (vec![("x-canary-version", &b"canary"[..]), ("x-canary-reason", b"override")], "random"),
    ] {
        let reply = client.get(&envoy.url("/"), &headers);
        assert_eq!(reply.served_by.as_deref(), Some("stable"));
        assert_eq!(reply.upstream_header("x-canary-version").as_deref(), Some("stable"));
        assert_eq!(reply.upstream_header("x-canary-reason").as_deref(), Some(reason));
    }
}

#[test]
fn keyless_clients_keep_their_version_by_replaying_the_cookie() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(50.0), &|s| s);
    let client = Client::new();
    let url = envoy.url("/");
    let mut versions_seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let first = client.get(&url, &[]);
        assert_eq!(first.reason.as_deref(), Some("random"));
        let cookie = first.cookie_pair("canary_bucket").expect("a fresh bucket cookie");
        let set = &first.set_cookies[0];
        for attribute in ["Max-Age=86400", "Path=/", "HttpOnly", "SameSite=Lax"] {
            assert!(set.contains(attribute), "{set}");
        }
        let version = first.version.clone().unwrap();
        versions_seen.insert(version.clone());
        for _ in 0..100 {
            let reply = client.get(&url, &[("cookie", format!("theme=dark; {cookie}").as_bytes())]);
            assert_eq!(reply.version.as_deref(), Some(version.as_str()), "{cookie}");
            assert_eq!(reply.served_by.as_deref(), Some(version.as_str()));
            assert_eq!(reply.reason.as_deref(), Some("cookie"));
            assert!(reply.set_cookies.is_empty());
        }
    }
    assert_eq!(versions_seen.len(), 2, "20 keyless clients at 50% reach both versions");
}

#[test]
fn malformed_sticky_cookies_are_replaced_not_errors() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(10.0), &|s| s);
    let client = Client::new();
    let long = format!("canary_bucket={}", "9".repeat(4000));
    for bad in [
        "canary_bucket=abc",
        "canary_bucket=10000",
        "canary_bucket=-1",
        "canary_bucket=",
        "canary_bucket",
        "canary_bucket=0042",
        long.as_str(),
    ] {
        let reply = client.get(&envoy.url("/"), &[("cookie", bad.as_bytes())]);
        assert_eq!(reply.status, 200, "{bad}");
        assert_eq!(reply.reason.as_deref(), Some("random"), "{bad}");
        let pair = reply.cookie_pair("canary_bucket").unwrap();
        let bucket: u16 = pair.trim_start_matches("canary_bucket=").parse().unwrap();
        assert!(bucket < 10_000);
        assert_eq!(reply.served_by, reply.version);
    }
}

#[test]
fn access_log_records_version_and_reason() {
    // The log format reads the response headers; filter state is written only on request.
    let (version_key, reason_key) = (
        canary_harness::filter_state_key("canary_gate_version"),
        canary_harness::filter_state_key("canary_gate_reason"),
    );
    let with_state = |s: String| {
        s.replace(
            "user=%REQ(X-USER-ID)%",
            &format!("state=%FILTER_STATE({version_key}:PLAIN)%/%FILTER_STATE({reason_key}:PLAIN)%"),
        )
    };
    let opted_in = filter_config(10.0).replacen('{', r#"{"filter_state": true, "#, 1);
    for (config, state_canary, state_stable) in
        [(filter_config(10.0), "state=-/-", "state=-/-"), (opted_in, "state=canary/override", "state=stable/override")]
    {
        let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &config, &with_state);
        let client = Client::new();
        client.get(&envoy.url("/logged"), &[("x-canary", b"canary")]);
        client.get(&envoy.url("/logged"), &[("x-user-id", b"u-stable-check"), ("x-canary", b"stable")]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = envoy.access_log();
            if log.lines().filter(|l| l.contains("/logged")).count() == 2 {
                let canary = format!("cluster=canary canary_version=canary canary_reason=override {state_canary}");
                let stable = format!("cluster=stable canary_version=stable canary_reason=override {state_stable}");
                assert!(log.contains(&canary), "{config}: {log}");
                assert!(log.contains(&stable), "{config}: {log}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "access log lines missing: {log}");
            thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn a_client_cannot_reach_the_canary_through_a_fully_qualified_host_name() {
    let config = r#"{"service": "checkout", "hosts": ["checkout.local"], "split": {"canary_percent": 0}}"#;
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, config, &|s| s);
    let client = Client::new();
    for host in [&b"checkout.local"[..], b"checkout.local.", b"Checkout.Local.:10000"] {
        let reply = client.get(&envoy.url("/"), &[("host", host), ("x-canary-version", b"canary")]);
        assert_eq!(
            (reply.version.as_deref(), reply.served_by.as_deref()),
            (Some("stable"), Some("stable")),
            "{}",
            host.escape_ascii()
        );
    }
}

#[test]
fn only_listed_hosts_are_routed_and_measured() {
    let config = r#"{"service": "checkout", "hosts": ["shop.example.com", "*.checkout.svc.cluster.local"], "split": {"canary_percent": 100}}"#;
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, config, &|s| s);
    let client = Client::new();
    // A fully qualified name (trailing dot) is the same host.
    for host in [
        &b"shop.example.com"[..],
        b"SHOP.example.com:10000",
        b"api.checkout.svc.cluster.local",
        b"shop.example.com.",
        b"api.checkout.svc.cluster.local.:10000",
    ] {
        let reply = client.get(&envoy.url("/"), &[("host", host), ("x-user-id", b"u1")]);
        assert_eq!(
            (reply.version.as_deref(), reply.served_by.as_deref()),
            (Some("canary"), Some("canary")),
            "{host:?}"
        );
    }
    for host in [&b"other.example.com"[..], b"checkout.svc.cluster.local", b"127.0.0.1"] {
        let reply = client.get(&envoy.url("/"), &[("host", host), ("x-user-id", b"u1")]);
        assert_eq!((reply.version.as_deref(), reply.served_by.as_deref()), (None, Some("stable")), "{host:?}");
        assert_eq!(reply.upstream_header("x-canary-reason"), None);
    }
    // Counters reach Envoy at each VM's next tick.
    let _ = canary_harness::wait_until("the requests counted", Duration::from_secs(5), || {
        envoy.version_stats("checkout", "canary").requests_total >= 5
    });
    thread::sleep(Duration::from_millis(1_200));
    let stats = envoy.version_stats("checkout", "canary");
    assert_eq!(stats.requests_total, 5, "only the listed hosts are measured");
}

/// Envoy resolves a request's route once and caches it; a filter before canary-gate that reads
/// the route (here the fault filter, which looks up its per-route configuration) resolves it
/// on the client's headers. canary-gate then replaces the version header and has the route
/// selected again (the `clear_route_cache` foreign function, which this Envoy offers): the
/// request goes where canary-gate sent it, not where the client asked.
#[test]
fn the_route_is_selected_again_after_the_version_header_changes() {
    let fault_first = |s: String| {
        s.replacen(
            "          http_filters:\n",
            "          http_filters:\n          - name: envoy.filters.http.fault\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n",
            1,
        )
    };
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(0.0), &fault_first);
    let client = Client::new();
    for i in 0..50 {
        let user = format!("u{i}");
        let reply = client.get(&envoy.url("/"), &[("x-canary-version", b"canary"), ("x-user-id", user.as_bytes())]);
        assert_eq!(reply.version.as_deref(), Some("stable"), "canary-gate chose stable at 0%");
        assert_eq!(reply.served_by.as_deref(), Some("stable"), "{user}: the route cached on the client's header");
    }
    assert!(!envoy.log().contains("offers no clear_route_cache"), "{}", envoy.log());
}
