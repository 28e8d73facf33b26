//! gRPC calls in real Envoy (2 workers, h2c upstreams) between a grpcio client and grpcio
//! servers: a call counts in the `code_class` of the HTTP status Envoy maps its gRPC status to,
//! whether the status came in the trailers, in a trailers-only answer, from Envoy itself, or
//! was inferred from a cut stream; the gate judges gRPC failures as it judges 5xx.

use canary_harness::grpc::{self, http2_upstreams, Call, GrpcBackend};
use canary_harness::traffic::{fallback_time, Event};
use canary_harness::{filter_config, gated_config, mesh_config, wait_until, Envoy, EnvoyOptions, Layout};
use serde_json::{json, Value};
use std::time::Duration;

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Requests and responses per code class of `version` (route class `other`).
fn counts(envoy: &Envoy, version: &str) -> (u64, [u64; 6]) {
    let series = |metric: &str, extra: &str| {
        envoy
            .stat(&format!("wasmcustom.{metric}.service.checkout.version.{version}.reporter.router.class.other{extra}"))
    };
    (
        series("canary_requests_total", ""),
        CLASSES.map(|class| series("canary_responses_total", &format!(".code_class.{class}"))),
    )
}

/// `(requests, [1xx, 2xx, 3xx, 4xx, 5xx, none])` from the classes given as `("5xx", n)`.
fn expected(classes: &[(&str, u64)]) -> (u64, [u64; 6]) {
    let per_class = CLASSES.map(|c| classes.iter().filter(|(k, _)| *k == c).map(|(_, n)| n).sum());
    (per_class.iter().sum(), per_class)
}

/// Waits until each version's counts are `wanted` (counters reach Envoy once a second), and
/// fails showing what was counted if they are not within 5 s.
fn assert_counts(envoy: &Envoy, wanted: &[(&str, (u64, [u64; 6]))]) {
    let counted = || wanted.iter().map(|(version, _)| (*version, counts(envoy, version))).collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counted() != wanted && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counted(), wanted, "(requests, [1xx, 2xx, 3xx, 4xx, 5xx, none]) per version");
}

fn start(layout: Layout, filter_json: &str, edit: &dyn Fn(String) -> String, ports: [u16; 2]) -> Envoy {
    let edit = |s: String| http2_upstreams(edit(s));
    Envoy::start_on_ports(EnvoyOptions { layout, filter_json, workers: 2, edit: &edit }, ports[0], ports[1])
}

/// A call of the plan: `count` calls of `method` to `version` (the tester's override) with
/// `metadata`.
fn call(version: &str, method: &str, metadata: Value, count: u64) -> Value {
    let mut metadata = metadata;
    metadata["x-canary"] = json!(version);
    json!({"method": method, "metadata": metadata, "count": count, "timeout_s": 10})
}

/// The codes the client saw, in order.
fn codes(calls: &[Call]) -> Vec<u64> {
    calls.iter().map(|c| c.code).collect()
}

#[test]
fn grpc_calls_count_in_the_class_of_their_status_trailers_or_trailers_only() {
    let (stable, canary) = (GrpcBackend::start("stable", &[]), GrpcBackend::start("canary", &[]));
    let envoy = start(Layout::FilterMode, &filter_config(50.0), &|s| s, [stable.port, canary.port]);
    let plan = json!([
        call("canary", "Unary", json!({}), 4),
        // Trailers-only answers: the status is in the only headers.
        call("canary", "Unary", json!({"x-grpc-code": 14}), 3),
        call("canary", "Unary", json!({"x-grpc-code": 13}), 2),
        call("canary", "Unary", json!({"x-grpc-code": 5}), 2),
        call("canary", "Unary", json!({"x-grpc-code": 3}), 1),
        call("canary", "Unary", json!({"x-grpc-code": 4}), 1),
        // Messages, then the status in the trailers.
        call("canary", "Stream", json!({}), 2),
        call("canary", "Stream", json!({"x-grpc-code": 13}), 2),
        call("canary", "Stream", json!({"x-grpc-code": 7}), 1),
        call("stable", "Unary", json!({}), 3),
        call("stable", "Unary", json!({"x-grpc-code": 14}), 1),
        call("stable", "Stream", json!({"x-grpc-code": 13}), 1),
    ]);
    let calls = grpc::calls(envoy.port, &plan);
    // The scenario is real: each call reached the version it asked for and ended as planned.
    let planned =
        [[0; 4].as_slice(), &[14; 3], &[13; 2], &[5; 2], &[3], &[4], &[0; 2], &[13; 2], &[7], &[0; 3], &[14], &[13]];
    assert_eq!(codes(&calls), planned.concat());
    assert!(calls.iter().all(|c| c.served_by == c.version), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.messages == 3).count(), 5 + 1, "every stream sent its messages");

    let canary_counts = expected(&[("2xx", 6), ("4xx", 4), ("5xx", 8)]);
    let stable_counts = expected(&[("2xx", 3), ("5xx", 2)]);
    assert_counts(&envoy, &[("canary", canary_counts), ("stable", stable_counts)]);
    // The window sees the same errors: 8 of 18.
    wait_until("the window", Duration::from_secs(5), || {
        let window = envoy.version_stats("checkout", "canary");
        window.window_requests == 18 && window.window_error_ppm.abs_diff(444_444) <= 1
    });

    // `grpc.error_codes` moves NOT_FOUND into the errors and INTERNAL out of them.
    let overridden = filter_config(50.0).replacen('{', r#"{"grpc": {"error_codes": ["UNAVAILABLE", "NOT_FOUND"]},"#, 1);
    assert!(envoy.reconfigure(&overridden));
    let plan = json!([
        call("canary", "Unary", json!({"x-grpc-code": 5}), 2),
        call("canary", "Unary", json!({"x-grpc-code": 13}), 1),
        call("canary", "Unary", json!({"x-grpc-code": 14}), 1),
    ]);
    assert_eq!(codes(&grpc::calls(envoy.port, &plan)), [5, 5, 13, 14]);
    let (requests, mut classes) = canary_counts;
    classes[4] += 3;
    classes[3] += 1;
    assert_counts(&envoy, &[("canary", (requests + 4, classes))]);
}

#[test]
fn envoys_own_grpc_errors_and_cut_streams_count_as_envoy_answers_them() {
    let stable = GrpcBackend::start("stable", &[]);
    // The canary's cluster has no endpoint; calls with `x-route-timeout` to stable time out
    // after 300 ms.
    let edit = |s: String| {
        s.replace(
            "      cluster_name: canary\n      endpoints:\n      - lb_endpoints:\n        - endpoint: \
             {address: {socket_address: {address: 127.0.0.1, port_value: 18002}}}",
            "      cluster_name: canary\n      endpoints: []",
        )
        .replace(
            "              - match: {prefix: /}\n                route: {cluster: stable}",
            "              - match: {prefix: /, headers: [{name: x-route-timeout, present_match: true}]}\n                \
             route: {cluster: stable, timeout: 0.3s}\n              - match: {prefix: /}\n                \
             route: {cluster: stable}",
        )
    };
    let envoy = start(Layout::FilterMode, &filter_config(50.0), &edit, [stable.port, canary_harness::free_port()]);
    let plan = json!([
        // Envoy's trailers-only UNAVAILABLE: no healthy upstream.
        call("canary", "Unary", json!({}), 3),
        // Envoy's UNAVAILABLE at the route timeout.
        call("stable", "Unary", json!({"x-sleep-ms": 2000, "x-route-timeout": 1}), 2),
        // The client cancels, before the answer and in the middle of a stream.
        {"method": "Unary", "metadata": {"x-canary": "stable", "x-sleep-ms": 2000}, "cancel_after_s": 0.1, "count": 2},
        {"method": "Stream", "metadata": {"x-canary": "stable", "x-sleep-ms": 1000, "x-messages": 5},
         "cancel_after_s": 0.02, "count": 2},
        // The server dies after two messages: a stream cut without a status.
        call("stable", "Stream", json!({"x-messages": 2, "x-sleep-ms": 300, "x-crash": 1}), 1),
    ]);
    let calls = grpc::calls(envoy.port, &plan);
    let seen = codes(&calls);
    assert_eq!(&seen[..9], [14, 14, 14, 14, 14, 1, 1, 1, 1], "{calls:?}");
    assert_eq!(calls[9].messages, 2, "{calls:?}");
    assert_ne!(seen[9], 0, "{calls:?}");
    assert!(calls[..3].iter().all(|c| c.served_by.is_none() && c.version.as_deref() == Some("canary")));

    // UNAVAILABLE is a 5xx; the calls the client left count in `none`, as an HTTP request
    // left before its response does; the cut stream is UNKNOWN, Envoy's inference: a 5xx.
    let canary_counts = expected(&[("5xx", 3)]);
    let stable_counts = expected(&[("5xx", 2 + 1), ("none", 2 + 2)]);
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("{}", envoy.access_log());
    assert_counts(&envoy, &[("canary", canary_counts), ("stable", stable_counts)]);
}

#[test]
fn mesh_mode_recognises_a_grpc_canary_subset_with_no_healthy_upstream() {
    let stable = GrpcBackend::start("stable", &["--revision", "r1"]);
    let mut canary = GrpcBackend::start("canary", &["--revision", "r2"]);
    // The canary subset's endpoint is health-checked, and no traffic goes to an unhealthy one:
    // a canary scaled to zero.
    let canary_cluster =
        "  - name: \"outbound|8080|canary|checkout.shop.svc.cluster.local\"\n    connect_timeout: 1s\n";
    let edit = |s: String| {
        s.replace(
            canary_cluster,
            &format!(
                "{canary_cluster}    common_lb_config: {{healthy_panic_threshold: {{value: 0}}}}\n    health_checks:\n    \
                 - {{timeout: 0.2s, interval: 0.2s, no_traffic_interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1, reuse_connection: false, \
                 tcp_health_check: {{}}}}\n"
            ),
        )
    };
    let envoy = start(Layout::MeshMode, &mesh_config(), &edit, [stable.port, canary.port]);
    // Overridden calls reach the canary subset, whose answers teach the router its revision.
    let learn = json!([call("canary", "Unary", json!({}), 3), call("stable", "Unary", json!({}), 1)]);
    let calls = grpc::calls(envoy.port, &learn);
    assert_eq!(codes(&calls), [0, 0, 0, 0]);
    assert_eq!(
        calls.iter().filter_map(|c| c.served_by.as_deref()).collect::<Vec<_>>(),
        ["canary", "canary", "canary", "stable"]
    );
    assert!(!envoy.log().contains("has no healthy upstream"));

    canary.kill();
    let health = format!(
        "outbound|8080|canary|checkout.shop.svc.cluster.local::127.0.0.1:{}::health_flags::/failed_active_hc",
        canary.port
    );
    wait_until("the canary endpoint is unhealthy", Duration::from_secs(10), || {
        canary_harness::Client::new().get(&envoy.admin("/clusters"), &[]).body.contains(&health)
    });
    // Calls keep coming, each answered with Envoy's trailers-only UNAVAILABLE, until the router
    // that answers one knows the canary revision (a worker adopts what another learned at its
    // next tick).
    let mut unavailable = 0;
    wait_until("the router notes the canary revision gone", Duration::from_secs(10), || {
        let calls = grpc::calls(envoy.port, &json!([call("canary", "Unary", json!({}), 1)]));
        assert_eq!(codes(&calls), [14], "Envoy's UNAVAILABLE");
        unavailable += 1;
        envoy.log().contains("checkout: canary revision r2 has no healthy upstream")
    });
    assert_counts(
        &envoy,
        &[("canary", expected(&[("2xx", 3), ("5xx", unavailable)])), ("stable", expected(&[("2xx", 1)]))],
    );
}

/// Non-override calls sent after `from`.
fn routed_after(events: &[Event], from: Duration) -> Vec<&Event> {
    events.iter().filter(|e| !e.overridden && e.sent > from).collect()
}

/// A canary failing 30% of its calls with `code` from 4 s into 12 s of load trips `gate`:
/// checks the scenario, the fallback and the trip, and returns the fallback time.
fn trips_on_grpc_failures(percent: f64, gate: &str, code: u64, pause_ms: u64, override_every: u64) -> Duration {
    let (stable, canary) = (GrpcBackend::start("stable", &[]), GrpcBackend::start("canary", &[]));
    let envoy = start(Layout::FilterMode, &gated_config(percent, gate), &|s| s, [stable.port, canary.port]);
    let fault = format!(r#"{{"error_ratio": 0.3, "error_code": {code}}}"#);
    let load = grpc::Load { seconds: 12.0, threads: 2, pause_ms, override_every, fault: Some((4.0, &canary, &fault)) };
    let (fault_at, events) = grpc::load(envoy.port, &load);
    let reaction = fallback_time(&events, fault_at);
    let rate = events.len() as f64 / 12.0;
    println!("30% gRPC code {code} on the canary at {percent}% of users, {rate:.0} calls/s: every non-override call on stable {:.2} s after the fault", reaction.as_secs_f64());

    // The scenario: calls reached the version the filter named; the canary served its share
    // without failures before the fault, and 30% of its calls failed after it.
    assert!(events.iter().all(|e| e.served_by.is_some() && e.served_by == e.version), "a call not answered as routed");
    let canary_before: Vec<&Event> =
        events.iter().filter(|e| e.sent < fault_at && e.served_by.as_deref() == Some("canary")).collect();
    assert!(
        canary_before.len() >= 30 && canary_before.iter().all(|e| e.status == 200),
        "{} canary calls before",
        canary_before.len()
    );
    let after: Vec<&Event> = events
        .iter()
        .filter(|e| e.sent > fault_at + Duration::from_millis(100) && e.served_by.as_deref() == Some("canary"))
        .collect();
    let failed = after.iter().filter(|e| e.status >= 500).count();
    assert!(
        after.len() >= 10 && (failed as f64 - 0.3 * after.len() as f64).abs() <= 2.0,
        "{failed}/{} failed",
        after.len()
    );

    assert!(reaction <= Duration::from_secs(5), "fallback took {reaction:?}");
    let settled = routed_after(&events, fault_at + reaction);
    assert!(settled.len() > 100, "load continued after the fallback ({})", settled.len());
    assert!(settled.iter().all(|e| e.served_by.as_deref() == Some("stable") && e.status == 200));
    let overrides: Vec<&Event> = events.iter().filter(|e| e.overridden && e.sent > fault_at + reaction).collect();
    assert!(!overrides.is_empty() && overrides.iter().all(|e| e.served_by.as_deref() == Some("canary")));
    assert_eq!(envoy.gate_stats("checkout"), (1, 1, 3));
    assert_eq!(envoy.log().matches("gate tripped").count(), 1);
    reaction
}

#[test]
fn thirty_percent_unavailable_trips_the_fixed_threshold() {
    trips_on_grpc_failures(50.0, r#"{"max_error_ratio": 0.05, "max_p95_ms": 200}"#, 14, 0, 10);
}

#[test]
fn thirty_percent_internal_at_ten_percent_of_users_trips_the_comparison() {
    trips_on_grpc_failures(10.0, r#"{"compare": {}}"#, 13, 8, 100);
}

#[test]
fn a_grpc_canary_answering_not_found_as_stable_does_never_trips() {
    let args = ["--error-ratio", "0.3", "--error-code", "5"];
    let (stable, canary) = (GrpcBackend::start("stable", &args), GrpcBackend::start("canary", &args));
    let gate = r#"{"max_error_ratio": 0.05, "compare": {}}"#;
    let envoy = start(Layout::FilterMode, &gated_config(50.0, gate), &|s| s, [stable.port, canary.port]);
    let load = grpc::Load { seconds: 20.0, threads: 2, pause_ms: 2, override_every: 0, fault: None };
    let events = std::thread::scope(|scope| {
        let running = scope.spawn(|| grpc::load(envoy.port, &load).1);
        while !running.is_finished() {
            assert_eq!(envoy.gate_stats("checkout").0, 0, "false trip\n{}", envoy.log());
            std::thread::sleep(Duration::from_millis(250));
        }
        running.join().unwrap_or_default()
    });
    assert_eq!(envoy.gate_stats("checkout").1, 0);
    // The scenario: both versions answered, 30% of each NOT_FOUND, which counts as 4xx.
    for version in ["stable", "canary"] {
        let served: Vec<&Event> = events.iter().filter(|e| e.served_by.as_deref() == Some(version)).collect();
        let not_found = served.iter().filter(|e| e.status == 404).count();
        assert!(
            served.len() > 500 && (not_found as f64 / served.len() as f64 - 0.3).abs() < 0.01,
            "{version}: {not_found}/{}",
            served.len()
        );
        let not_found = not_found as u64;
        let wanted = expected(&[("2xx", served.len() as u64 - not_found), ("4xx", not_found)]);
        assert_counts(&envoy, &[(version, wanted)]);
    }
    println!("healthy gRPC canary, 30% NOT_FOUND on both versions: {} calls in 20 s, no trip", events.len());
}
