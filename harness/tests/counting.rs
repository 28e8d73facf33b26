//! Every request that reaches a router is counted exactly once: under one version (or
//! `unknown` when no version served it) and in one status class (or `none` when it got no
//! status), so the classes always add up to the requests.

use canary_harness::{filter_config, mesh_config, start_stack, wait_until, Client, Envoy, Layout};
use std::io::Write;
use std::net::TcpStream;
use std::thread::sleep;
use std::time::Duration;

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// A per-version series of route class `other` (no `classes` configured).
fn stat(envoy: &Envoy, metric: &str, version: &str, extra: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.{metric}.service.checkout.version.{version}.reporter.router.class.other{extra}"))
}

fn requests(envoy: &Envoy, version: &str) -> u64 {
    stat(envoy, "canary_requests_total", version, "")
}

fn class(envoy: &Envoy, version: &str, class: &str) -> u64 {
    stat(envoy, "canary_responses_total", version, &format!(".code_class.{class}"))
}

fn assert_classes_add_up(envoy: &Envoy) {
    for version in ["stable", "canary", "unknown"] {
        let classes: u64 = CLASSES.iter().map(|c| class(envoy, version, c)).sum();
        assert_eq!(classes, requests(envoy, version), "{version}: the classes add up to the requests");
    }
}

#[test]
fn a_client_that_leaves_before_the_response_is_counted_in_class_none() {
    let (envoy, _stable, canary) = start_stack(Layout::FilterMode, &filter_config(100.0), &|s| s);
    canary.configure("latency_ms=3000");
    let port = envoy.port;
    for i in 0..3 {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(socket, "GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-user-id: leaver-{i}\r\n\r\n").unwrap();
        sleep(Duration::from_millis(200));
        drop(socket);
    }
    wait_until("the disconnects are counted", Duration::from_secs(5), || class(&envoy, "canary", "none") == 3);
    canary.configure("latency_ms=0");
    let reply = Client::new().get(&envoy.url("/"), &[("x-user-id", b"stayer")]);
    assert_eq!(reply.status, 200);
    wait_until("the answered request is counted", Duration::from_secs(5), || requests(&envoy, "canary") == 4);
    assert_eq!((class(&envoy, "canary", "2xx"), class(&envoy, "canary", "none")), (1, 3));
    assert_classes_add_up(&envoy);
}

#[test]
fn mesh_mode_counts_a_request_no_version_served_as_unknown() {
    // The weighted route serves /app only: anything else gets Envoy's 404, no route.
    let only_app = |s: String| {
        s.replace(
            "- name: primary\n                match: {prefix: /}",
            "- name: primary\n                match: {prefix: /app}",
        )
    };
    let (envoy, _stable, _canary) = start_stack(Layout::MeshMode, &mesh_config(), &only_app);
    let client = Client::new();
    for _ in 0..100 {
        assert_eq!(client.get(&envoy.url("/app"), &[]).status, 200);
    }
    for _ in 0..5 {
        let reply = client.get(&envoy.url("/nowhere"), &[]);
        assert_eq!(
            (reply.status, reply.version.as_deref(), reply.reason.as_deref()),
            (404, Some("unknown"), Some("mesh"))
        );
    }
    wait_until("every request is counted", Duration::from_secs(5), || {
        ["stable", "canary", "unknown"].iter().map(|v| requests(&envoy, v)).sum::<u64>() == 105
    });
    assert_eq!((requests(&envoy, "unknown"), class(&envoy, "unknown", "4xx")), (5, 5));
    let decisions =
        "wasmcustom.canary_route_decisions_total.service.checkout.version.unknown.reporter.router.reason.mesh";
    assert_eq!(envoy.stat(decisions), 5, "decisions carry no class");
    assert_classes_add_up(&envoy);
}
