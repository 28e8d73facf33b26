//! Route classes, response outcomes and outbound observers through real Envoy (2 workers)
//! with canary-gate: exact per-class series and their Prometheus labels, a per-class gate that
//! trips on a fault the whole service dilutes, and an observer on a pod's outbound calls.
//!
//! Each response is decided by the request (the test backend's `x-backend-status` and
//! `x-backend-set` headers), so every expected number is derived from what the test sent.

use canary_gate::config::Config;
use canary_gate::model::{Reason, Version};
use canary_gate::route::bucket::Bucketer;
use canary_gate::route::Router;
use canary_harness::chaos::assert_no_wasm_errors;
use canary_harness::{start_envoy, start_stack, wait_until, Backend, Client, Envoy, Layout};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CODE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

// ---------------------------------------------------------------------------------------------
// Helpers

/// What came back to [`send`].
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Lower-case names, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn upstream_header(&self, name: &str) -> Option<String> {
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null);
        json["headers"][name].as_str().map(str::to_string)
    }
}

/// `GET path` over a new connection with exactly these header lines (a `host` among them
/// replaces the default `127.0.0.1:port`), then `connection: close`; reads the whole answer.
fn send(port: u16, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("read the answer to {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer to {path}: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status, headers, body: body.to_string() }
}

/// Every `canary_*` counter and gauge of the admin's `/stats`, by name (in the Wasm build's
/// namespace, `wasmcustom.`, whichever build runs).
fn stats_dump(envoy: &Envoy) -> BTreeMap<String, u64> {
    let namespace = canary_harness::stat_namespace();
    let body = Client::new().get(&envoy.admin(&format!("/stats?filter=^{namespace}\\.canary_")), &[]).body;
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| {
            let name = format!("wasmcustom.{}", k.strip_prefix(namespace)?.strip_prefix('.')?);
            Some((name, v.trim().parse().ok()?))
        })
        .collect()
}

/// The differences between `expected` and the same names in `actual` (absent: "missing").
fn differences(expected: &BTreeMap<String, u64>, actual: &BTreeMap<String, u64>) -> Vec<String> {
    expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .map(|(k, v)| match actual.get(k) {
            Some(a) => format!("{k}: expected {v}, got {a}"),
            None => format!("{k}: expected {v}, missing"),
        })
        .collect()
}

/// Waits until every stat of `expected` has exactly its value (counters reach the admin at
/// each VM's next tick, window gauges once merged); fails with the differences otherwise.
fn wait_for_stats(envoy: &Envoy, what: &str, expected: &BTreeMap<String, u64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let diff = differences(expected, &stats_dump(envoy));
        if diff.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s:\n{}", diff.join("\n"));
        thread::sleep(Duration::from_millis(100));
    }
}

/// One sample of Envoy's Prometheus text output.
#[derive(Debug, Clone)]
struct PromLine {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The `canary_*` samples of the admin's `/stats?format=prometheus`.
fn prometheus_lines(envoy: &Envoy) -> Vec<PromLine> {
    let body = Client::new().get(&envoy.admin("/stats?format=prometheus"), &[]).body;
    body.lines()
        .filter(|l| l.starts_with("canary_"))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("bad line {line}"))),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label {kv} in {line}"));
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            PromLine { name: name.to_string(), labels, value: value.parse().unwrap_or(f64::NAN) }
        })
        .collect()
}

/// The value of the sample `name` whose labels are exactly `labels`; fails if there is none.
fn prom_value(lines: &[PromLine], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let found: Vec<&PromLine> = lines.iter().filter(|l| l.name == name && l.labels == want).collect();
    assert_eq!(found.len(), 1, "one sample {name}{want:?}; samples of {name}: {:#?}", {
        lines.iter().filter(|l| l.name == name).map(|l| &l.labels).collect::<Vec<_>>()
    });
    found[0].value
}

/// Metric names every pair of which became a label: no `.label.value` left in a name.
const PROMETHEUS_NAMES: [&str; 17] = [
    "canary_requests_total",
    "canary_responses_total",
    "canary_outcomes_total",
    "canary_route_decisions_total",
    "canary_request_duration_milliseconds_bucket",
    "canary_request_duration_milliseconds_sum",
    "canary_request_duration_milliseconds_count",
    "canary_window_requests",
    "canary_window_error_ratio_ppm",
    "canary_window_latency_p50_microseconds",
    "canary_window_latency_p95_microseconds",
    "canary_window_latency_p99_microseconds",
    "canary_window_outcome_ratio_ppm",
    "canary_gate_tripped",
    "canary_gate_trips_total",
    "canary_gate_state",
    "canary_vm_memory_bytes",
];

fn label_names(line: &PromLine) -> BTreeSet<&str> {
    line.labels.keys().map(String::as_str).filter(|k| *k != "le").collect()
}

fn code_class(status: u16) -> &'static str {
    CODE_CLASSES[usize::from(status / 100) - 1]
}

// ---------------------------------------------------------------------------------------------
// a. Exact per-class counts, window gauges and labels

const ROUTER_CLASSES: &str = r#"{
  "service": "checkout",
  "split": {"mode": "filter", "canary_percent": 0},
  "override": {"header": "x-canary"},
  "classes": [
    {"name": "api", "path_prefix": ["/api/"]},
    {"name": "asset", "path_suffix": [".js", ".css"]},
    {"name": "page", "header": {"name": "accept", "contains": "text/html"}}
  ],
  "outcomes": [{"name": "cache_hit", "response_header": "x-cache", "equals": ["HIT"]}]
}"#;

/// One kind of request of the mix: sent `times` times to `version` (by the override header).
struct Kind {
    version: &'static str,
    path: &'static str,
    accept: Option<&'static str>,
    /// `x-backend-status`; 200 when `None`.
    status: Option<u16>,
    /// `x-cache` the backend answers with (`x-backend-set`).
    cache: Option<&'static str>,
    /// The class the request must be counted in.
    class: &'static str,
    times: u64,
}

const fn kind(
    version: &'static str,
    path: &'static str,
    accept: Option<&'static str>,
    status: Option<u16>,
    cache: Option<&'static str>,
    class: &'static str,
    times: u64,
) -> Kind {
    Kind { version, path, accept, status, cache, class, times }
}

const HTML: Option<&str> = Some("text/html,application/xhtml+xml;q=0.9");
const HIT: Option<&str> = Some("HIT");

const MIX: [Kind; 26] = [
    // stable
    kind("stable", "/api/users", None, None, None, "api", 6),
    kind("stable", "/api/users", None, Some(503), None, "api", 2),
    kind("stable", "/api/orders/7", None, Some(404), None, "api", 1),
    // First match wins: an API path is `api` even when it asks for HTML.
    kind("stable", "/api/render", HTML, Some(201), None, "api", 1),
    // The suffix is matched on the path without its query string.
    kind("stable", "/static/app.js?v=3", None, None, HIT, "asset", 3),
    kind("stable", "/static/app.js?v=3", None, Some(500), HIT, "asset", 1),
    kind("stable", "/site.css", None, None, None, "asset", 2),
    kind("stable", "/logo.css", None, Some(304), None, "asset", 1),
    kind("stable", "/bundle.js", HTML, None, None, "asset", 1),
    kind("stable", "/", HTML, None, HIT, "page", 2),
    kind("stable", "/", HTML, None, None, "page", 1),
    kind("stable", "/checkout", HTML, Some(500), None, "page", 1),
    kind("stable", "/health", None, None, None, "other", 3),
    kind("stable", "/api", None, Some(429), None, "other", 1),
    kind("stable", "/app.js.map", None, None, None, "other", 1),
    kind("stable", "/download?file=a.js", None, None, None, "other", 1),
    // canary
    kind("canary", "/api/users", None, None, None, "api", 4),
    kind("canary", "/api/users", None, Some(500), None, "api", 3),
    kind("canary", "/api/users", None, Some(502), None, "api", 1),
    kind("canary", "/api/v2/prices?q=1", None, None, HIT, "api", 2),
    kind("canary", "/app.css?v=9", None, None, HIT, "asset", 5),
    kind("canary", "/", HTML, None, None, "page", 2),
    kind("canary", "/", HTML, Some(503), HIT, "page", 1),
    kind("canary", "/other", None, Some(201), None, "other", 2),
    // Outcome values are compared exactly: `hit` is not `HIT`.
    kind("canary", "/other", Some("image/*"), None, Some("hit"), "other", 1),
    kind("canary", "/favicon.ico", Some("image/*"), Some(404), None, "other", 1),
];

const CLASSES: [&str; 4] = ["api", "asset", "page", "other"];

fn router_series(metric: &str, version: &str, class: &str, extra: &str) -> String {
    format!("wasmcustom.{metric}.service.checkout.version.{version}.reporter.router.class.{class}{extra}")
}

#[test]
fn per_class_counts_outcomes_window_gauges_and_labels_are_exact() {
    let (envoy, stable, canary) = start_stack(Layout::FilterMode, ROUTER_CLASSES, &|s| s);
    let mut sent = 0;
    for k in &MIX {
        for _ in 0..k.times {
            let mut headers = vec![("x-canary", k.version), ("x-user-id", "someone")];
            let status_text = k.status.map(|s| s.to_string());
            if let Some(status) = &status_text {
                headers.push(("x-backend-status", status));
            }
            let set = k.cache.map(|c| format!("x-cache={c}"));
            if let Some(set) = &set {
                headers.push(("x-backend-set", set));
            }
            if let Some(accept) = k.accept {
                headers.push(("accept", accept));
            }
            let answer = send(envoy.port, k.path, &headers);
            let status = k.status.unwrap_or(200);
            assert_eq!(answer.status, status, "{} {}: {answer:?}", k.version, k.path);
            assert_eq!(answer.header("x-served-by"), Some(k.version), "{}", k.path);
            assert_eq!(answer.header("x-canary-reason"), Some("override"));
            assert_eq!(answer.header("x-cache"), k.cache, "{}", k.path);
            sent += 1;
        }
    }
    assert_eq!(stable.requests() + canary.requests(), sent);

    // What the filter must have counted, derived from the mix: every series of every version
    // and class, the untouched ones at zero.
    let mut expected = BTreeMap::new();
    for version in ["stable", "canary", "unknown"] {
        for class in CLASSES {
            let of = |k: &&Kind| k.version == version && k.class == class;
            let requests: u64 = MIX.iter().filter(of).map(|k| k.times).sum();
            expected.insert(router_series("canary_requests_total", version, class, ""), requests);
            for code in CODE_CLASSES {
                let n = MIX.iter().filter(of).filter(|k| code_class(k.status.unwrap_or(200)) == code).map(|k| k.times);
                expected.insert(
                    router_series("canary_responses_total", version, class, &format!(".code_class.{code}")),
                    n.sum(),
                );
            }
            let hits: u64 = MIX.iter().filter(of).filter(|k| k.cache == HIT).map(|k| k.times).sum();
            expected.insert(router_series("canary_outcomes_total", version, class, ".outcome.cache_hit"), hits);
        }
        // Decisions carry no class: every request was an override.
        for reason in Reason::ALL {
            let n: u64 =
                MIX.iter().filter(|k| k.version == version && reason == Reason::Override).map(|k| k.times).sum();
            expected.insert(
                format!(
                    "wasmcustom.canary_route_decisions_total.service.checkout.version.{version}.reporter.router.reason.{}",
                    reason.as_str()
                ),
                n,
            );
        }
    }
    // A few of them written out, so the derivation itself is checked.
    assert_eq!(expected[&router_series("canary_requests_total", "stable", "api", "")], 10);
    assert_eq!(expected[&router_series("canary_requests_total", "stable", "asset", "")], 8);
    assert_eq!(expected[&router_series("canary_requests_total", "stable", "other", "")], 6);
    assert_eq!(expected[&router_series("canary_responses_total", "canary", "api", ".code_class.5xx")], 4);
    assert_eq!(expected[&router_series("canary_outcomes_total", "canary", "page", ".outcome.cache_hit")], 1);
    assert_eq!(expected[&router_series("canary_outcomes_total", "canary", "other", ".outcome.cache_hit")], 0);
    wait_for_stats(&envoy, "per-class counters", &expected);
    // Nothing more arrives at a later tick.
    thread::sleep(Duration::from_millis(1_500));
    let dump = stats_dump(&envoy);
    let diff = differences(&expected, &dump);
    assert!(diff.is_empty(), "after one more tick:\n{}", diff.join("\n"));
    // Decisions have no class pair; no series of an unconfigured class exists.
    let decisions: Vec<&String> = dump.keys().filter(|k| k.contains("canary_route_decisions_total")).collect();
    assert_eq!(decisions.len(), 3 * Reason::ALL.len());
    assert!(decisions.iter().all(|k| !k.contains(".class.")), "{decisions:?}");
    for key in dump.keys().filter(|k| k.contains(".class.")) {
        let class = key.split(".class.").nth(1).unwrap().split('.').next().unwrap();
        assert!(CLASSES.contains(&class), "{key}");
    }

    // Window gauges per version and class, merged across both workers (no window for unknown).
    let mut window = BTreeMap::new();
    for version in ["stable", "canary"] {
        for class in CLASSES {
            let of = |k: &&Kind| k.version == version && k.class == class;
            let requests: u64 = MIX.iter().filter(of).map(|k| k.times).sum();
            let errors: u64 = MIX.iter().filter(of).filter(|k| k.status.unwrap_or(200) >= 500).map(|k| k.times).sum();
            let hits: u64 = MIX.iter().filter(of).filter(|k| k.cache == HIT).map(|k| k.times).sum();
            let ppm = |n: u64| (n * 1_000_000).checked_div(requests).unwrap_or(0);
            window.insert(router_series("canary_window_requests", version, class, ""), requests);
            window.insert(router_series("canary_window_error_ratio_ppm", version, class, ""), ppm(errors));
            window.insert(
                router_series("canary_window_outcome_ratio_ppm", version, class, ".outcome.cache_hit"),
                ppm(hits),
            );
        }
    }
    assert_eq!(window[&router_series("canary_window_error_ratio_ppm", "canary", "api", "")], 400_000);
    assert_eq!(
        window[&router_series("canary_window_outcome_ratio_ppm", "stable", "asset", ".outcome.cache_hit")],
        500_000
    );
    assert_eq!(
        window[&router_series("canary_window_outcome_ratio_ppm", "canary", "asset", ".outcome.cache_hit")],
        1_000_000
    );
    assert_eq!(window[&router_series("canary_window_error_ratio_ppm", "stable", "page", "")], 250_000);
    wait_for_stats(&envoy, "per-class window gauges", &window);
    assert!(!dump.contains_key(&router_series("canary_window_requests", "unknown", "other", "")));

    // The same through Envoy's stats_tags: each pair is a Prometheus label, no name keeps one.
    let lines = prometheus_lines(&envoy);
    for line in &lines {
        assert!(PROMETHEUS_NAMES.contains(&line.name.as_str()), "a pair left in the name: {line:?}");
        let labels = label_names(line);
        let want: BTreeSet<&str> = match line.name.as_str() {
            "canary_responses_total" => ["service", "version", "reporter", "class", "code_class"].into(),
            "canary_outcomes_total" | "canary_window_outcome_ratio_ppm" => {
                ["service", "version", "reporter", "class", "outcome"].into()
            }
            "canary_route_decisions_total" => ["service", "version", "reporter", "reason"].into(),
            "canary_gate_tripped" | "canary_gate_trips_total" | "canary_gate_state" => ["service"].into(),
            "canary_vm_memory_bytes" => [].into(),
            _ => ["service", "version", "reporter", "class"].into(),
        };
        assert_eq!(labels, want, "{line:?}");
    }
    let router = |version: &'static str, class: &'static str| {
        vec![("service", "checkout"), ("version", version), ("reporter", "router"), ("class", class)]
    };
    for version in ["stable", "canary"] {
        for class in CLASSES {
            let total = expected[&router_series("canary_requests_total", version, class, "")];
            assert_eq!(prom_value(&lines, "canary_requests_total", &router(version, class)), total as f64);
            for code in CODE_CLASSES {
                let mut labels = router(version, class);
                labels.push(("code_class", code));
                let n =
                    expected[&router_series("canary_responses_total", version, class, &format!(".code_class.{code}"))];
                assert_eq!(prom_value(&lines, "canary_responses_total", &labels), n as f64, "{labels:?}");
            }
            let mut labels = router(version, class);
            labels.push(("outcome", "cache_hit"));
            let hits = expected[&router_series("canary_outcomes_total", version, class, ".outcome.cache_hit")];
            assert_eq!(prom_value(&lines, "canary_outcomes_total", &labels), hits as f64, "{labels:?}");
            let ratio = window[&router_series("canary_window_outcome_ratio_ppm", version, class, ".outcome.cache_hit")];
            assert_eq!(prom_value(&lines, "canary_window_outcome_ratio_ppm", &labels), ratio as f64, "{labels:?}");
            let requests = window[&router_series("canary_window_requests", version, class, "")];
            assert_eq!(prom_value(&lines, "canary_window_requests", &router(version, class)), requests as f64);
        }
    }
    // Histograms reach the admin at Envoy's stats flush (every 5 s): one per version and class.
    let histogram_counts = |lines: &[PromLine]| {
        ["stable", "canary"].iter().all(|&version| {
            CLASSES.iter().all(|&class| {
                let total = expected[&router_series("canary_requests_total", version, class, "")];
                prom_value(lines, "canary_request_duration_milliseconds_count", &router(version, class)) == total as f64
            })
        })
    };
    wait_until("histogram counts per class", Duration::from_secs(20), || histogram_counts(&prometheus_lines(&envoy)));
    assert_eq!(prom_value(&lines, "canary_requests_total", &router("canary", "api")), 10.0);
    let mut hit = router("canary", "asset");
    hit.push(("outcome", "cache_hit"));
    assert_eq!(prom_value(&lines, "canary_outcomes_total", &hit), 5.0);
    let decision = [("service", "checkout"), ("version", "canary"), ("reporter", "router"), ("reason", "override")];
    assert_eq!(prom_value(&lines, "canary_route_decisions_total", &decision), 22.0);
    assert_no_wasm_errors(&envoy.log());
}

// ---------------------------------------------------------------------------------------------
// b. A per-class gate trips on a fault the whole service dilutes

/// `gate.classes` of the gated run; the control run has none.
const API_GATE: &str = r#", "classes": {"api": {"max_error_ratio": 0.05, "min_requests": 10}}"#;

fn gated(gate_classes: &str) -> String {
    format!(
        r#"{{
  "service": "checkout",
  "split": {{"mode": "filter", "canary_percent": 50}},
  "classes": [{{"name": "api", "path_prefix": ["/api/"]}}],
  "gate": {{"max_error_ratio": 0.05, "window_s": 4, "min_requests": 120, "consecutive": 2{gate_classes}}}
}}"#
    )
}

/// Users whose hash sends them to `version` at the configuration's split, as the host
/// computes it (the same bucketing the filter runs in Envoy's VM).
fn users_of(config: &str, version: Version, n: usize) -> Vec<String> {
    let router = Router::new(Config::parse(config.as_bytes()).unwrap());
    let bucketer = Bucketer::new("checkout");
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|key| router.version_of_bucket(bucketer.bucket(key.as_bytes())) == version)
        .take(n)
        .collect()
}

/// What one run of [`drive`] saw.
#[derive(Debug, Default)]
struct RunReport {
    /// Gate states seen, polled every 100 ms.
    states: BTreeSet<u64>,
    /// When the gate was first seen tripped.
    tripped_at: Option<Duration>,
    /// Requests sent by canary users, and by stable users.
    canary_user_requests: u64,
    stable_user_requests: u64,
    /// Requests the canary backend answered, of which to `/api/`, and their 5xx.
    canary_served: u64,
    canary_api_served: u64,
    canary_5xx: u64,
    canary_api_5xx: u64,
}

const RUN: Duration = Duration::from_secs(12);

/// ~100 requests per second for [`RUN`] from 2 paced threads, alternating a canary user and
/// a stable user (so the filter splits them half and half by hash); every 10th request of
/// each user group is an API call. Polls the gate meanwhile.
fn drive(envoy: &Envoy, canary_users: &[String], stable_users: &[String]) -> RunReport {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let mut report = RunReport::default();
    thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (stop, url) = (&stop, envoy.url(""));
                s.spawn(move || {
                    let client = Client::new();
                    let mut seen = RunReport::default();
                    let (mut canary_sent, mut stable_sent) = (0usize, 0usize);
                    for i in 0u32.. {
                        let at = start + Duration::from_millis(20) * i;
                        if at >= start + RUN || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Some(wait) = at.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        let to_canary = i % 2 == 0;
                        let (users, n) =
                            if to_canary { (canary_users, &mut canary_sent) } else { (stable_users, &mut stable_sent) };
                        let user = &users[(*n * 2 + t) % users.len()];
                        let path = if *n % 10 == 9 { "/api/items" } else { "/home" };
                        *n += 1;
                        let reply = client.get(&format!("{url}{path}"), &[("x-user-id", user.as_bytes())]);
                        assert!(reply.status == 200 || reply.status == 500, "{reply:?}");
                        if to_canary {
                            seen.canary_user_requests += 1;
                        } else {
                            seen.stable_user_requests += 1;
                            assert_eq!(reply.served_by.as_deref(), Some("stable"), "{reply:?}");
                        }
                        if reply.served_by.as_deref() == Some("canary") {
                            let api = path.starts_with("/api/");
                            let failed = u64::from(reply.status == 500);
                            seen.canary_served += 1;
                            seen.canary_5xx += failed;
                            seen.canary_api_served += u64::from(api);
                            seen.canary_api_5xx += if api { failed } else { 0 };
                        } else {
                            assert_eq!(reply.status, 200, "stable never fails: {reply:?}");
                        }
                    }
                    seen
                })
            })
            .collect();
        while start.elapsed() < RUN {
            let (tripped, _, state) = envoy.gate_stats("checkout");
            report.states.insert(state);
            if tripped == 1 && report.tripped_at.is_none() {
                report.tripped_at = Some(start.elapsed());
            }
            thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        for handle in threads {
            let seen = handle.join().unwrap();
            report.canary_user_requests += seen.canary_user_requests;
            report.stable_user_requests += seen.stable_user_requests;
            report.canary_served += seen.canary_served;
            report.canary_api_served += seen.canary_api_served;
            report.canary_5xx += seen.canary_5xx;
            report.canary_api_5xx += seen.canary_api_5xx;
        }
    });
    report
}

/// Starts a fresh stack (the canary fails 30% of its `/api/` requests, exactly, and nothing
/// else) with `config` and drives the traffic; returns the stack (Envoy, stable, canary) and
/// what the run saw.
fn gate_run(config: &str) -> (Envoy, [Backend; 2], RunReport) {
    let canary_users = users_of(config, Version::Canary, 400);
    let stable_users = users_of(config, Version::Stable, 400);
    let stable = Backend::start("stable", &[]);
    let canary = Backend::start("canary", &["--error-ratio", "0.3", "--error-path-prefix", "/api/"]);
    let envoy = start_envoy(Layout::FilterMode, config, &stable, &canary);
    let report = drive(&envoy, &canary_users, &stable_users);
    // What the canary backend answered, against the client's count (exactly what it served).
    let canary_state = Client::new().get(&format!("http://127.0.0.1:{}/_backend/state", canary.port), &[]).json();
    assert_eq!(canary_state["requests"].as_u64(), Some(report.canary_served));
    assert_eq!(canary_state["errors"].as_u64(), Some(report.canary_5xx));
    // The canary's errors are 30% of its API calls, exactly (the backend's pattern).
    assert_eq!(report.canary_5xx, report.canary_api_5xx, "only API calls fail");
    assert_eq!(report.canary_api_5xx, report.canary_api_served * 3 / 10);
    (envoy, [stable, canary], report)
}

/// The canary's counted requests and 5xx of class `class` (a router's counters).
fn canary_class_counts(envoy: &Envoy, class: &str) -> (u64, u64) {
    (
        envoy.stat(&router_series("canary_requests_total", "canary", class, "")),
        envoy.stat(&router_series("canary_responses_total", "canary", class, ".code_class.5xx")),
    )
}

#[test]
fn a_per_class_gate_trips_on_an_api_fault_the_whole_service_dilutes() {
    // The gated run: the API class's own threshold trips the gate.
    let (envoy, backends, report) = gate_run(&gated(API_GATE));
    println!("with gate.classes: {report:?}");
    let tripped_at = report.tripped_at.unwrap_or_else(|| panic!("the API gate did not trip in {RUN:?}: {report:?}"));
    assert!(tripped_at < Duration::from_secs(10), "tripped after {tripped_at:?}");
    assert_eq!(envoy.gate_stats("checkout"), (1, 1, 3));
    assert!(report.states.contains(&3), "{:?}", report.states);
    let log = envoy.log();
    let trips: Vec<&str> = log.lines().filter(|l| l.contains("gate tripped")).collect();
    assert_eq!(trips.len(), 1, "{log}");
    let breaches = trips[0]
        .split_once("gate tripped for checkout canary `canary`: ")
        .and_then(|(_, rest)| rest.split_once(" in the last 4 s"))
        .map(|(breaches, _)| breaches)
        .unwrap_or_else(|| panic!("unexpected trip line: {}", trips[0]));
    // Only the API class breached, on its error ratio; the service as a whole did not.
    assert!(breaches.starts_with("class api: error_ratio ") && breaches.ends_with(" > 5.0000%"), "{breaches}");
    assert!(!breaches.contains(", "), "one breach only: {breaches}");
    let measured: f64 =
        breaches["class api: error_ratio ".len()..].split('%').next().and_then(|p| p.parse().ok()).unwrap();
    assert!((10.0..=50.0).contains(&measured), "the API class's ratio in the trip line: {measured}%");
    // Tripped: a canary user now gets stable, by reason gate.
    let canary_user = users_of(&gated(API_GATE), Version::Canary, 1);
    let reply = Client::new().get(&envoy.url("/api/items"), &[("x-user-id", canary_user[0].as_bytes())]);
    assert_eq!(
        (reply.status, reply.served_by.as_deref(), reply.reason.as_deref()),
        (200, Some("stable"), Some("gate"))
    );
    // The whole service stayed under its 5% while the API class failed 30%: in the counters.
    wait_until("the canary's requests counted", Duration::from_secs(10), || {
        canary_class_counts(&envoy, "api").0 + canary_class_counts(&envoy, "other").0 == report.canary_served
    });
    let (api, api_errors) = canary_class_counts(&envoy, "api");
    let (other, other_errors) = canary_class_counts(&envoy, "other");
    assert_eq!((api, api_errors, other_errors), (report.canary_api_served, report.canary_api_5xx, 0));
    let whole = (api_errors + other_errors) as f64 / (api + other) as f64;
    println!("canary: API {api_errors}/{api} failed, whole service {:.2}%", whole * 100.0);
    assert!(whole < 0.05, "whole-service canary error ratio {whole}");
    drop((envoy, backends));

    // The control run: the same traffic and fault without gate.classes never trips.
    let (envoy, _backends, control) = gate_run(&gated(""));
    println!("without gate.classes: {control:?}");
    assert_eq!(control.tripped_at, None, "{control:?}");
    assert_eq!(envoy.gate_stats("checkout").1, 0, "no trip counted");
    // The service was judged (ok), never breaching: the dilution hides the API fault.
    assert!(control.states.contains(&0) && !control.states.contains(&2), "{:?}", control.states);
    assert!(!envoy.log().contains("gate tripped"));
    // The canary kept its half of the traffic and the API fault to the end.
    assert!(control.canary_served == control.canary_user_requests, "{control:?}");
    assert!(control.canary_api_served >= 40, "{control:?}");
    let share = control.canary_api_5xx as f64 / control.canary_api_served as f64;
    assert!((0.25..=0.31).contains(&share), "{share}");
    let whole = control.canary_5xx as f64 / control.canary_served as f64;
    assert!(whole < 0.05, "whole-service canary error ratio {whole}");
    assert_no_wasm_errors(&envoy.log());
}

// ---------------------------------------------------------------------------------------------
// c. An observer on a pod's outbound calls

const OUTBOUND: &str = r#"{
  "service": "checkout",
  "role": "observer",
  "direction": "outbound",
  "classes": [{"name": "partner", "authority_suffix": ["partner.example.com"]}]
}"#;

const REVISION: &str = "5f7d9c8b4";

#[test]
fn an_outbound_observer_counts_calls_per_partner_class_under_its_pod_version() {
    let with_labels =
        canary_harness::with_node_labels("app: checkout, version: canary, rollouts-pod-template-hash: 5f7d9c8b4");
    let (envoy, stable, _canary) = start_stack(Layout::FilterMode, OUTBOUND, &with_labels);
    // (host, path, x-backend-status, class, times)
    let calls: [(&str, &str, Option<&str>, &str, u64); 9] = [
        ("api.partner.example.com", "/v1/quote", None, "partner", 5),
        ("api.partner.example.com", "/v1/quote", Some("502"), "partner", 2),
        ("partner.example.com:8443", "/v1/rates", None, "partner", 1),
        ("API.Partner.Example.COM.", "/v1/rates", None, "partner", 1),
        ("badpartner.example.com", "/v1/quote", None, "other", 1),
        ("partner.example.com.evil.org", "/v1/quote", None, "other", 1),
        ("inventory.internal", "/stock", None, "other", 1),
        ("inventory.internal", "/stock/9", Some("404"), "other", 1),
        // The revision probe path of an inbound observer is an ordinary call outbound.
        ("api.partner.example.com", "/__canary/revision?x=1", None, "partner", 1),
    ];
    let mut sent = 0;
    for (host, path, status, _, times) in calls {
        for _ in 0..times {
            let mut headers = vec![("host", host), ("x-user-id", "u1")];
            if let Some(status) = status {
                headers.push(("x-backend-status", status));
            }
            let answer = send(envoy.port, path, &headers);
            assert_eq!(answer.status, status.map_or(200, |s| s.parse().unwrap()), "{host}{path}: {answer:?}");
            // It reached the backend (the probe too); an observer neither routes nor tags.
            assert_eq!(answer.header("x-served-by"), Some("stable"), "{host}{path}: {answer:?}");
            assert_eq!(answer.upstream_header("x-canary-version"), None);
            assert_eq!(answer.upstream_header("x-canary-reason"), None);
            assert_eq!(answer.header("x-canary-version"), None);
            // An outbound observer does not stamp its revision.
            assert_eq!(answer.header("x-canary-revision"), None, "{host}{path}: {answer:?}");
            sent += 1;
        }
    }
    assert_eq!(stable.requests(), sent, "every call reached the backend, the probe path too");

    let observer = |version: &str, class: &str, metric: &str, extra: &str| {
        format!(
            "wasmcustom.{metric}.service.checkout.version.{version}.reporter.observer.revision.{REVISION}\
             .direction.outbound.class.{class}{extra}"
        )
    };
    let mut expected = BTreeMap::new();
    for version in ["stable", "canary", "unknown"] {
        for class in ["partner", "other"] {
            let of = |c: &&(&str, &str, Option<&str>, &str, u64)| version == "canary" && c.3 == class;
            let requests: u64 = calls.iter().filter(of).map(|c| c.4).sum();
            expected.insert(observer(version, class, "canary_requests_total", ""), requests);
            for code in CODE_CLASSES {
                let n = calls.iter().filter(of).filter(|c| code_class(c.2.map_or(200, |s| s.parse().unwrap())) == code);
                expected.insert(
                    observer(version, class, "canary_responses_total", &format!(".code_class.{code}")),
                    n.map(|c| c.4).sum(),
                );
            }
            if version != "unknown" {
                expected.insert(observer(version, class, "canary_window_requests", ""), requests);
            }
        }
    }
    assert_eq!(expected[&observer("canary", "partner", "canary_requests_total", "")], 10);
    assert_eq!(expected[&observer("canary", "partner", "canary_responses_total", ".code_class.5xx")], 2);
    assert_eq!(expected[&observer("canary", "other", "canary_requests_total", "")], 4);
    assert_eq!(expected[&observer("canary", "other", "canary_responses_total", ".code_class.4xx")], 1);
    expected.insert(observer("canary", "partner", "canary_window_error_ratio_ppm", ""), 200_000);
    expected.insert(observer("canary", "other", "canary_window_error_ratio_ppm", ""), 0);
    wait_for_stats(&envoy, "outbound observer series", &expected);
    thread::sleep(Duration::from_millis(1_500));
    let dump = stats_dump(&envoy);
    let diff = differences(&expected, &dump);
    assert!(diff.is_empty(), "after one more tick:\n{}", diff.join("\n"));
    // Every per-version series of this observer is outbound; no router series, no decisions.
    for key in dump.keys().filter(|k| k.contains(".version.")) {
        assert!(
            key.contains(&format!(".reporter.observer.revision.{REVISION}.direction.outbound.")),
            "not an outbound observer series: {key}"
        );
    }
    let decisions: u64 = dump.iter().filter(|(k, _)| k.contains("canary_route_decisions_total")).map(|(_, v)| v).sum();
    assert_eq!(decisions, 0);
    // The pod's version and revision came from its node labels.
    assert!(!envoy.log().contains("node label"), "{}", envoy.log());
    assert_no_wasm_errors(&envoy.log());

    // The labels in Envoy's Prometheus output.
    let lines = prometheus_lines(&envoy);
    let labels = |class: &'static str| {
        vec![
            ("service", "checkout"),
            ("version", "canary"),
            ("reporter", "observer"),
            ("revision", REVISION),
            ("direction", "outbound"),
            ("class", class),
        ]
    };
    assert_eq!(prom_value(&lines, "canary_requests_total", &labels("partner")), 10.0);
    assert_eq!(prom_value(&lines, "canary_requests_total", &labels("other")), 4.0);
    let mut failed = labels("partner");
    failed.push(("code_class", "5xx"));
    assert_eq!(prom_value(&lines, "canary_responses_total", &failed), 2.0);
    assert_eq!(prom_value(&lines, "canary_window_requests", &labels("partner")), 10.0);
    for line in lines.iter().filter(|l| l.labels.contains_key("version")) {
        assert!(PROMETHEUS_NAMES.contains(&line.name.as_str()), "a pair left in the name: {line:?}");
        assert_eq!(line.labels.get("direction").map(String::as_str), Some("outbound"), "{line:?}");
        assert_eq!(line.labels.get("revision").map(String::as_str), Some(REVISION), "{line:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// d. Paths reach the classifier as Envoy normalised them

/// Raw paths, and whether each is class `api` once Envoy normalises it (`asset` otherwise,
/// `other` for the last two, which normalisation leaves as they are). Each is sent `2^i` times,
/// so a class's count names exactly the paths it took.
const RAW_PATHS: [(&str, &str, &str); 7] = [
    ("//api/x", "api", "/api/x"),
    ("/./api/x", "api", "/api/x"),
    ("/x/../api/x", "api", "/api/x"),
    ("/%61pi/x", "api", "/api/x"),
    ("/api/../static/app.js", "asset", "/static/app.js"),
    ("/API/x", "other", "/API/x"),
    ("/api;v=1/x", "other", "/api;v=1/x"),
];

/// The HCM settings of the shipped `envoy/*-mode.yaml` that normalise paths.
const NORMALISING: [&str; 2] = ["normalize_path: true", "merge_slashes: true"];

/// The paths of [`RAW_PATHS`] each class counted, for canary, through an Envoy edited by `edit`;
/// and the path the upstream received for each.
fn classes_of_raw_paths(edit: &dyn Fn(String) -> String) -> (BTreeMap<&'static str, Vec<&'static str>>, Vec<String>) {
    let config = r#"{"service": "checkout", "split": {"mode": "filter", "canary_percent": 0},
        "classes": [{"name": "api", "path_prefix": ["/api/"]}, {"name": "asset", "path_suffix": [".js"]}]}"#;
    let (envoy, _stable, canary) = start_stack(Layout::FilterMode, config, edit);
    let mut upstream = Vec::new();
    let mut sent = 0;
    for (i, (path, _, _)) in RAW_PATHS.iter().enumerate() {
        for n in 0..1u64 << i {
            let answer = send(envoy.port, path, &[("x-canary", "canary")]);
            assert_eq!(answer.status, 200, "{path}: {answer:?}");
            if n == 0 {
                let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
                upstream.push(json["path"].as_str().unwrap_or_default().to_string());
            }
            sent += 1;
        }
    }
    assert_eq!(canary.requests(), sent);
    let count = |class: &str| envoy.stat(&router_series("canary_requests_total", "canary", class, ""));
    wait_until("every request counted", Duration::from_secs(10), || {
        ["api", "asset", "other"].iter().map(|c| count(c)).sum::<u64>() == sent
    });
    let classes = ["api", "asset", "other"]
        .into_iter()
        .map(|class| {
            let n = count(class);
            (class, RAW_PATHS.iter().enumerate().filter(|(i, _)| n & (1 << i) != 0).map(|(_, p)| p.0).collect())
        })
        .collect();
    assert_no_wasm_errors(&envoy.log());
    (classes, upstream)
}

/// Issue 26, Why 8: route classes matched the raw `:path`, so `//api/x`, `/./api/x`,
/// `/x/../api/x` and `/%61pi/x` were `other` and `/api/../static/app.js` was `api`: errors
/// on such requests escaped the `api` class gate. With the shipped `normalize_path` and
/// `merge_slashes`, Envoy normalises the path before any filter, and the class, the route and
/// the upstream all see the same path. Without them the classifier sees the raw path.
#[test]
fn route_classes_see_the_path_envoy_normalised() {
    let (classes, upstream) = classes_of_raw_paths(&|s| s);
    for class in ["api", "asset", "other"] {
        let expected: Vec<&str> = RAW_PATHS.iter().filter(|p| p.1 == class).map(|p| p.0).collect();
        assert_eq!(classes[class], expected, "class {class} with the shipped settings: {classes:?}");
    }
    let normalised: Vec<&str> = RAW_PATHS.iter().map(|p| p.2).collect();
    assert_eq!(upstream, normalised, "the paths the upstream received");

    // The same Envoy without the settings: the classifier matches the raw path, as the routes do.
    let raw = |s: String| {
        let edited = NORMALISING.iter().fold(s.clone(), |s, line| s.replace(line, ""));
        assert_ne!(edited, s, "the shipped envoy/filter-mode.yaml sets {NORMALISING:?}");
        edited
    };
    let (classes, upstream) = classes_of_raw_paths(&raw);
    assert_eq!(classes["api"], ["/api/../static/app.js"], "{classes:?}");
    assert!(classes["asset"].is_empty(), "{classes:?}");
    assert_eq!(classes["other"], ["//api/x", "/./api/x", "/x/../api/x", "/%61pi/x", "/API/x", "/api;v=1/x"]);
    assert_eq!(upstream, RAW_PATHS.map(|p| p.0), "the paths the upstream received");
}
