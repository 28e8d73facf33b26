//! Metrics through real Envoy (2 workers) and a real Prometheus scraping it every second.

use canary_harness::prometheus::{Prometheus, Sample};
use canary_harness::{filter_config, start_envoy, Backend, Client, Layout};
use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

const RATE: &str = "sum by (version) (rate(canary_requests_total[1m]))";
const ERROR_RATIO: &str = "sum by (version) (rate(canary_responses_total{code_class=\"5xx\"}[1m])) / clamp_min(sum by (version) (rate(canary_requests_total[1m])), 1e-9)";
const P95: &str =
    "histogram_quantile(0.95, sum by (version, le) (rate(canary_request_duration_milliseconds_bucket[1m])))";
const WINDOW_P95: &str = "canary_window_latency_p95_microseconds";

fn by_version(samples: &[Sample]) -> HashMap<String, f64> {
    samples.iter().map(|s| (s.label("version").to_string(), s.value)).collect()
}

fn both_versions(samples: &[Sample]) -> bool {
    let v = by_version(samples);
    v.contains_key("stable") && v.contains_key("canary")
}

/// Whether both versions' values satisfy `ok` (the `unknown` version's series is not theirs).
fn both(samples: &[Sample], ok: impl Fn(f64) -> bool) -> bool {
    let v = by_version(samples);
    ["stable", "canary"].iter().all(|name| v.get(*name).is_some_and(|&x| ok(x)))
}

/// Exact nearest-rank quantile of the client's own timings.
fn exact_quantile(values: &mut [u64], q: f64) -> f64 {
    values.sort_unstable();
    values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64
}

struct Observed {
    status: u16,
    version: String,
    /// The client's time from sending to the whole reply.
    micros: u64,
    /// The backend's sleep (`x-backend-slept-us`), within Envoy's latency of the request.
    slept: u64,
}

#[test]
fn counts_quantiles_and_user_queries_match_what_the_client_saw() {
    let stable = Backend::start("stable", &["--latency-ms", "5", "--latency-spread-ms", "20", "--error-ratio", "0.02"]);
    let canary = Backend::start("canary", &["--latency-ms", "20", "--latency-spread-ms", "40", "--error-ratio", "0.1"]);
    let envoy = start_envoy(Layout::FilterMode, &filter_config(50.0), &stable, &canary);
    let prometheus = Prometheus::start(&[envoy.admin_port], &[]);

    // Right after start, before any request: every query a user writes has both versions, at zero.
    let zero = |s: &[Sample]| both_versions(s) && s.iter().all(|x| x.value == 0.0);
    prometheus.wait_for(RATE, Duration::from_secs(30), zero);
    prometheus.wait_for(ERROR_RATIO, Duration::from_secs(10), zero);
    prometheus.wait_for(WINDOW_P95, Duration::from_secs(10), zero);
    prometheus.wait_for("canary_window_requests", Duration::from_secs(10), zero);
    let p95_at_start = prometheus.wait_for(P95, Duration::from_secs(10), both_versions);
    println!("histogram_quantile at zero traffic: {p95_at_start:?}");

    // 4,000 requests from 4 threads, distinct users.
    let url = envoy.url("/");
    let observed: Vec<Observed> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let url = &url;
                s.spawn(move || {
                    let client = Client::new();
                    (0..1_000)
                        .map(|i| {
                            let key = format!("user-{t}-{i}");
                            let start = Instant::now();
                            let reply = client.get(url, &[("x-user-id", key.as_bytes())]);
                            let micros = start.elapsed().as_micros() as u64;
                            let slept = reply.header("x-backend-slept-us").and_then(|v| v.parse().ok());
                            let slept = slept.unwrap_or_else(|| panic!("no x-backend-slept-us: {reply:?}"));
                            Observed { status: reply.status, version: reply.version.unwrap_or_default(), micros, slept }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let count = |v: &str| observed.iter().filter(|o| o.version == v).count() as u64;
    let errors = |v: &str| observed.iter().filter(|o| o.version == v && o.status >= 500).count() as u64;
    assert_eq!(count("stable") + count("canary"), 4_000);
    assert!(observed.iter().all(|o| o.status == 200 || o.status == 500));

    // Exact counts in Envoy's own Prometheus output, per version, across both workers.
    let labelled = |name: &str, version: &str, pair: &str| {
        envoy.stat(&format!("wasmcustom.{name}.service.checkout.version.{version}.reporter.router.class.other{pair}"))
    };
    let stat = |name: &str, version: &str| labelled(name, version, "");
    // Counters reach Envoy at each VM's next tick: wait for them, then for one more tick, so
    // the comparison is exact.
    let _ = canary_harness::wait_until("the requests counted", Duration::from_secs(5), || {
        stat("canary_requests_total", "stable") + stat("canary_requests_total", "canary") >= 4_000
    });
    thread::sleep(Duration::from_millis(1_200));
    for v in ["stable", "canary"] {
        assert_eq!(stat("canary_requests_total", v), count(v), "{v} requests");
        assert_eq!(labelled("canary_responses_total", v, ".code_class.5xx"), errors(v), "{v} 5xx");
        let decisions = envoy.stat(&format!(
            "wasmcustom.canary_route_decisions_total.service.checkout.version.{v}.reporter.router.reason.hash"
        ));
        assert_eq!(decisions, count(v), "{v} decisions (no class label)");
    }
    let scraped = prometheus.wait_for("canary_requests_total", Duration::from_secs(10), |s| {
        let v = by_version(s);
        v.get("stable") == Some(&(count("stable") as f64)) && v.get("canary") == Some(&(count("canary") as f64))
    });
    println!("scraped canary_requests_total: {:?}", by_version(&scraped));

    // The window gauges, merged across workers, against exact quantiles: Envoy's latency of a
    // request lies between the backend's sleep and the client's time, so each quantile of it
    // lies between theirs, and a gauge is within its bucket's 2% of Envoy's quantile. The
    // bounds hold on a loaded machine, where the client's time drifts from Envoy's.
    let window = |metric: &str, v: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let requests = stat("canary_window_requests", v);
            if requests == count(v) {
                return stat(metric, v);
            }
            assert!(Instant::now() < deadline, "window requests of {v}: {requests} != {}", count(v));
            thread::sleep(Duration::from_millis(200));
        }
    };
    for v in ["stable", "canary"] {
        let mut client: Vec<u64> = observed.iter().filter(|o| o.version == v).map(|o| o.micros).collect();
        let mut backend: Vec<u64> = observed.iter().filter(|o| o.version == v).map(|o| o.slept).collect();
        for (metric, q) in [
            ("canary_window_latency_p50_microseconds", 0.5),
            ("canary_window_latency_p95_microseconds", 0.95),
            ("canary_window_latency_p99_microseconds", 0.99),
        ] {
            let (low, high) = (exact_quantile(&mut backend, q), exact_quantile(&mut client, q));
            let gauge = window(metric, v) as f64;
            println!(
                "{v} q{q}: window gauge {gauge:.0} µs; the backend's sleep {low:.0} µs, the client's time {high:.0} µs"
            );
            assert!(gauge >= low * 0.98 && gauge <= high * 1.02, "{v} q{q}: gauge {gauge} outside [{low}, {high}] ±2%");
        }
        let ppm = window("canary_window_error_ratio_ppm", v);
        assert_eq!(ppm, errors(v) * 1_000_000 / count(v), "{v} window error ratio");
    }

    // The PromQL a user writes now has traffic in it, for both versions.
    let rates = by_version(&prometheus.wait_for(RATE, Duration::from_secs(10), |s| both(s, |x| x > 0.0)));
    let ratios = by_version(
        &prometheus
            .wait_for(ERROR_RATIO, Duration::from_secs(10), |s| both_versions(s) && s.iter().any(|x| x.value > 0.05)),
    );
    let p95 = by_version(&prometheus.wait_for(P95, Duration::from_secs(15), |s| both(s, |x| x.is_finite() && x > 0.0)));
    println!("rate {rates:?}\nerror ratio {ratios:?}\nhistogram p95 ms {p95:?}");
    assert_eq!(rates.get("unknown"), Some(&0.0), "every request was served by a version: {rates:?}");
    assert!((ratios["canary"] - 0.1).abs() < 0.02 && ratios["stable"] < 0.04, "{ratios:?}");
    assert!(p95["canary"] > p95["stable"], "{p95:?}");
}

#[test]
fn observer_records_under_its_own_version_from_node_metadata_and_never_routes() {
    let with_labels =
        canary_harness::with_node_labels("app: checkout, role: canary, rollouts-pod-template-hash: 5f7d9c8b4");
    let (envoy, _stable, _canary) = canary_harness::start_stack(
        Layout::FilterMode,
        r#"{"service":"checkout","role":"observer","version_label":"role"}"#,
        &with_labels,
    );
    let client = Client::new();
    for i in 0..50 {
        let reply =
            client.get(&envoy.url("/"), &[("x-user-id", format!("u{i}").as_bytes()), ("x-canary-version", b"canary")]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, None, "an observer adds no tags");
        // The client-sent header passes untouched and the route follows it: observers never route.
        assert_eq!(reply.served_by.as_deref(), Some("canary"));
        assert_eq!(reply.upstream_header("x-canary-reason"), None);
    }
    // The one tag an observer adds: its revision, for the router in front of it.
    let raw = canary_harness::chaos::raw_get(envoy.port, "/", &[]);
    assert_eq!(raw.header("x-canary-revision").as_deref(), Some("5f7d9c8b4"));
    // It answers a router's revision probe itself (a GET of the exact path with a router's
    // tag), echoing the router's stamp; the backend never sees it.
    let tag: [(&[u8], &[u8]); 1] = [(b"x-canary-gate-fleet", b"s=12345")];
    let probe = canary_harness::chaos::raw_get(envoy.port, "/__canary/revision", &tag);
    assert_eq!((probe.status, probe.header("x-canary-revision").as_deref()), (200, Some("5f7d9c8b4")));
    assert_eq!(probe.header("endpoint-load-metrics").as_deref(), Some("TEXT named_metrics.cg.stamp=12345"));
    assert_eq!(probe.served_by(), None);
    // Issue 26, Why 7: anyone else learnt the pod-template hash (any method, any query, no
    // tag). Now nobody but a router is told anything, and nothing is forwarded.
    for (path, headers) in [("/__canary/revision", &[][..]), ("/__canary/revision?x=1", &tag[..])] {
        let refused = canary_harness::chaos::raw_get(envoy.port, path, headers);
        assert_eq!((refused.status, refused.header("x-canary-revision")), (404, None), "{path} {headers:?}");
        assert_eq!(refused.served_by(), None);
    }
    let series = "service.checkout.version.canary.reporter.observer.revision.5f7d9c8b4.direction.inbound.class.other";
    let stat = |name: &str| envoy.stat(&format!("wasmcustom.{name}.{series}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat("canary_window_requests") != 51 {
        assert!(Instant::now() < deadline, "window requests {}", stat("canary_window_requests"));
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stat("canary_requests_total"), 51, "the 50 and the plain request; not the probe");
    let labelled = |name: &str, pair: &str| envoy.stat(&format!("wasmcustom.{name}.{series}.{pair}"));
    assert_eq!(labelled("canary_responses_total", "code_class.2xx"), 51);
    assert_eq!(
        envoy.stat(
            "wasmcustom.canary_requests_total.service.checkout.version.stable.reporter.observer.revision.5f7d9c8b4\
             .direction.inbound.class.other"
        ),
        0
    );
    for reason in ["hash", "override", "random"] {
        let decisions = "service.checkout.version.canary.reporter.observer.revision.5f7d9c8b4.direction.inbound";
        assert_eq!(envoy.stat(&format!("wasmcustom.canary_route_decisions_total.{decisions}.reason.{reason}")), 0);
    }
}

#[test]
fn observer_without_its_version_label_records_nothing_and_says_why() {
    let (envoy, _stable, _canary) =
        canary_harness::start_stack(Layout::FilterMode, r#"{"service":"checkout","role":"observer"}"#, &|s| s);
    let client = Client::new();
    for _ in 0..10 {
        assert_eq!(client.get(&envoy.url("/"), &[]).status, 200);
    }
    thread::sleep(Duration::from_millis(300));
    for v in ["stable", "canary"] {
        assert_eq!(
            envoy.stat(&format!(
                "wasmcustom.canary_requests_total.service.checkout.version.{v}.reporter.observer.revision.unknown\
                 .direction.inbound.class.other"
            )),
            0
        );
    }
    assert!(envoy.log().contains("node label `version` is absent"), "{}", envoy.log());
    assert!(envoy.log().contains("node label `rollouts-pod-template-hash` is absent"), "{}", envoy.log());
}
