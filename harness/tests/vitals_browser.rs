//! Web vitals from a real browser: Debian's headless Chromium loads the test pages
//! (`tests/browser/pages`) through real Envoy (2 workers) with canary-gate's beacon endpoint, and
//! the page's snippet (`web/canary-vitals.js`, npm `web-vitals`) sends what it measured. The
//! canary's page is slow (LCP > 3 s, CLS ~0.24, INP > 300 ms, an uncaught error and a missing
//! image), stable's is not.
//!
//! `tests/browser/vitals.mjs` loads each version's page as new users: 2 per version routed by
//! the filter's own sticky cookie (the page and its beacons carry it), then 3 per version with
//! the tester's override header. It prints what each page reported; this test checks that
//! Envoy's stats hold exactly that, per version: page views and error counters, each histogram's
//! sample count and every sample in the bin its value falls in, the window's P75 gauges on the
//! right side of the gate's limits; and that the gate trips on the canary and sends its cookie
//! users to stable.
//!
//! Needs `make deps` (Chromium, the npm packages of `tests/browser`); fails, never skips,
//! without them.

use canary_harness::{
    browser_test_dir, chromium_bin, envoy_histogram_bin, run_node, wait_until, Backend, Client, Envoy, EnvoyOptions,
    Layout, PromHistogram, TempDir,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SERVICE: &str = "corp-cockpit";
const VERSIONS: [&str; 2] = ["stable", "canary"];
const STICKY_PER_VERSION: usize = 2;
const FORCED_PER_VERSION: usize = 3;
const LOADS_PER_VERSION: usize = STICKY_PER_VERSION + FORCED_PER_VERSION;

/// Filter mode at 50% (each new user is a coin toss), the beacon endpoint, and a gate on the
/// canary's vitals alone over 30 s from 3 page views.
const FILTER: &str = r#"{
  "service": "corp-cockpit",
  "split": {"mode": "filter", "canary_percent": 50},
  "override": {"header": "x-canary"},
  "sticky": {"cookie": "canary_bucket", "max_age_s": 86400},
  "vitals": {"path": "/__canary/vitals", "max_body_bytes": 4096, "max_per_second": 200},
  "gate": {"window_s": 30, "consecutive": 1, "dry_run": false,
           "vitals": {"max_lcp_p75_ms": 2500, "max_inp_p75_ms": 200, "max_cls_p75": 0.1,
                      "max_js_error_ratio": 0.001, "min_page_views": 3}}
}"#;

/// The histograms: web-vitals metric name, histogram name, and the factor its values are
/// recorded with (CLS in thousandths).
const HISTOGRAMS: [(&str, &str, f64); 5] = [
    ("LCP", "canary_web_vitals_lcp_milliseconds", 1.0),
    ("INP", "canary_web_vitals_inp_milliseconds", 1.0),
    ("FCP", "canary_web_vitals_fcp_milliseconds", 1.0),
    ("TTFB", "canary_web_vitals_ttfb_milliseconds", 1.0),
    ("CLS", "canary_web_vitals_cls", 1000.0),
];

/// A backend answering as `version` that serves its test page, the shared assets, the snippet
/// and web-vitals under `/static/`.
fn page_backend(version: &str, browser: &std::path::Path) -> Backend {
    let root = canary_harness::root();
    let mounts = [
        browser.join("pages").join(version).display().to_string(),
        format!("/static/shared/={}", browser.join("pages/shared").display()),
        format!("/static/lib/={}", root.join("web").display()),
        format!("/static/vendor/={}", browser.join("node_modules/web-vitals/dist").display()),
    ];
    let args: Vec<&str> = mounts.iter().flat_map(|m| ["--static", m.as_str()]).collect();
    Backend::start(version, &args)
}

/// One page load as the browser reported it.
#[derive(Debug)]
struct Load {
    phase: String,
    forced: Option<String>,
    version: String,
    cookie: Option<String>,
    /// Every metric and event the page reported, in order.
    vitals: Vec<Value>,
    raw: Value,
}

impl Load {
    fn parse(raw: &Value) -> Load {
        let text = |v: &Value| v.as_str().map(str::to_string);
        Load {
            phase: text(&raw["phase"]).unwrap_or_default(),
            forced: text(&raw["forced"]),
            version: text(&raw["version"]).unwrap_or_default(),
            cookie: text(&raw["cookie"]),
            vitals: raw["vitals"].as_array().cloned().unwrap_or_default(),
            raw: raw.clone(),
        }
    }

    /// The values the page reported for `name`.
    fn values(&self, name: &str) -> Vec<f64> {
        self.vitals.iter().filter(|v| v["name"] == name).filter_map(|v| v["value"].as_f64()).collect()
    }

    /// How many `name` items the page reported.
    fn count(&self, name: &str) -> usize {
        self.vitals.iter().filter(|v| v["name"] == name).count()
    }

    /// The single value of `name` (each is reported once per load here).
    fn value(&self, name: &str) -> f64 {
        let values = self.values(name);
        assert_eq!(values.len(), 1, "{name} of a {} page: {values:?}\n{:#}", self.version, self.raw);
        values[0]
    }
}

/// The stat `wasmcustom.{metric}.service.corp-cockpit.version.{version}` (counter or gauge).
fn version_stat(envoy: &Envoy, metric: &str, version: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.{metric}.service.{SERVICE}.version.{version}"))
}

/// `x` as the integer the filter records: the bracket `[floor, ceil]`, whatever its rounding.
fn recorded(x: f64, factor: f64) -> (u64, u64) {
    let scaled = x * factor;
    assert!(scaled >= 0.0 && scaled.is_finite(), "{x}");
    (scaled.floor() as u64, scaled.ceil() as u64)
}

/// Checks Envoy's histogram against the values the browser reported: the count exactly, each
/// bucket's cumulative count exactly (every sample in the bin of its value, counted in each
/// bucket `le` at or above the bin's low end; a value whose rounding straddles two bins may be
/// in either), and the sum within its bins.
fn assert_histogram(name: &str, version: &str, histogram: &PromHistogram, values: &[f64], factor: f64) {
    let what = format!("{name}{{version=\"{version}\"}}: {histogram:?}, browser values {values:?}");
    assert_eq!(histogram.count, values.len() as u64, "sample count of {what}");
    assert!(!histogram.buckets.is_empty(), "no buckets in {what}");
    let bins: Vec<((f64, f64), (f64, f64))> = values
        .iter()
        .map(|&x| {
            let (low, high) = recorded(x, factor);
            (envoy_histogram_bin(low), envoy_histogram_bin(high))
        })
        .collect();
    for &(le, count) in &histogram.buckets {
        let at_least = bins.iter().filter(|(_, ceil)| ceil.0 <= le).count() as u64;
        let at_most = bins.iter().filter(|(floor, _)| floor.0 <= le).count() as u64;
        assert!(
            (at_least..=at_most).contains(&count),
            "bucket le={le}: {count}, want {at_least}..={at_most} in {what}"
        );
    }
    let (least, most) = bins.iter().fold((0.0, 0.0), |(least, most), (low, high)| (least + low.0, most + high.1));
    assert!(histogram.sum >= least - 1e-6 && histogram.sum <= most + 1e-6, "sum not in [{least}, {most}] in {what}");
}

/// The P75 gauge must lie within the values it summarises (give or take a bin's width).
fn assert_within(gauge: &str, version: &str, got: u64, values: &[f64], factor: f64) {
    let scaled: Vec<f64> = values.iter().map(|v| v * factor).collect();
    let (min, max) = scaled.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (low, high) = (envoy_histogram_bin(min.floor() as u64).0, envoy_histogram_bin(max.ceil() as u64).1);
    let slack = 0.05 * high + 1.0;
    assert!(
        (got as f64) >= low - slack && (got as f64) <= high + slack,
        "{gauge}{{version=\"{version}\"}} = {got}, outside the reported {scaled:?}"
    );
}

fn fmt(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
}

fn fmt3(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", ")
}

#[test]
fn browser_vitals_reach_the_stats_of_the_version_that_served_the_page_and_trip_the_gate() {
    let start = Instant::now();
    // Fail early, naming `make deps`, if the browser or the npm packages are missing.
    let chromium = chromium_bin();
    let browser = browser_test_dir();
    let stable = page_backend("stable", &browser);
    let canary = page_backend("canary", &browser);
    // Histograms reach the admin output at each stats flush: every second, not every 5 s.
    let flush =
        |s: String| if s.contains("stats_flush_interval") { s } else { format!("stats_flush_interval: 1s\n{s}") };
    let envoy = Envoy::start(
        EnvoyOptions { layout: Layout::FilterMode, filter_json: FILTER, workers: 2, edit: &flush },
        &stable,
        &canary,
    );
    let up = start.elapsed();
    let ecds = |s: &str| envoy.stat(&format!("extension_config_discovery.http_filter.canary-gate.{s}"));
    assert!(
        ecds("update_success") >= 1 && ecds("update_rejected") == 0,
        "Envoy did not take the filter configuration (is the built filter current? `make build`)\n{}",
        envoy_logs(&envoy)
    );

    // Chromium's profile and puppeteer's files go to a directory removed on drop, even if node is killed.
    let tmp = TempDir::new("browser");
    let args: Vec<String> = [
        ("--base", envoy.url("")),
        ("--sticky", STICKY_PER_VERSION.to_string()),
        ("--forced", FORCED_PER_VERSION.to_string()),
        ("--override-header", "x-canary".to_string()),
        ("--sticky-cookie", "canary_bucket".to_string()),
        ("--vitals-path", "/__canary/vitals".to_string()),
        ("--chromium", chromium.display().to_string()),
        ("--timeout-ms", "40000".to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    let browsed = Instant::now();
    let out = run_node(&browser, "vitals.mjs", &args, &[("TMPDIR", tmp.path())], Duration::from_secs(45))
        .unwrap_or_else(|e| panic!("{e}\n{}", envoy_logs(&envoy)));
    let browsed = browsed.elapsed();
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("vitals.mjs output: {e}\n{out}"));
    let loads: Vec<Load> = report["loads"].as_array().map(|a| a.iter().map(Load::parse).collect()).unwrap_or_default();

    // What the browser saw: each page came from the version the filter routed it to, as the
    // user's cookie or the override chose, and reported each metric once; every beacon was
    // answered 204 by the filter itself (the backend would have answered 200).
    assert_eq!(loads.len(), 2 * LOADS_PER_VERSION, "{report:#}");
    for load in &loads {
        let raw = &load.raw;
        assert_eq!(raw["document"]["version"].as_str(), Some(load.version.as_str()), "routed as served: {raw:#}");
        match load.phase.as_str() {
            "sticky" => {
                assert_eq!(raw["document"]["reason"], "cookie", "{raw:#}");
                assert!(load.cookie.as_deref().is_some_and(|c| c.starts_with("canary_bucket=")), "{raw:#}");
            }
            "forced" => {
                assert_eq!(load.forced.as_deref(), Some(load.version.as_str()), "{raw:#}");
                assert_eq!(raw["document"]["reason"], "override", "{raw:#}");
            }
            other => panic!("phase {other}"),
        }
        for name in ["page_view", "LCP", "INP", "CLS", "FCP", "TTFB"] {
            assert_eq!(load.count(name), 1, "{name} of a {} page\n{raw:#}", load.version);
        }
        let beacons = raw["beacons"].as_array().map_or(0, Vec::len);
        let answers = raw["answers"].as_array().cloned().unwrap_or_default();
        assert!(beacons >= 1 && answers.len() == beacons, "{raw:#}");
        assert!(answers.iter().all(|a| a["status"] == 204), "beacons answered by the filter with 204: {raw:#}");
        // The stable page sends its beacons in the query, the canary page in the body.
        let in_query = load.version == "stable";
        assert!(answers.iter().all(|a| a["query"] == in_query), "beacons in the query: {in_query}\n{raw:#}");
        assert!(raw["beacons"].as_array().is_some_and(|b| b.iter().all(|b| b["via"] == "beacon")), "{raw:#}");
    }
    let by_version: BTreeMap<&str, Vec<&Load>> =
        VERSIONS.iter().map(|v| (*v, loads.iter().filter(|l| l.version == *v).collect())).collect();
    let values =
        |version: &str, name: &str| -> Vec<f64> { by_version[version].iter().flat_map(|l| l.values(name)).collect() };
    let events = |version: &str, name: &str| -> u64 { by_version[version].iter().map(|l| l.count(name) as u64).sum() };
    for version in VERSIONS {
        assert_eq!(by_version[version].len(), LOADS_PER_VERSION, "loads of {version}");
    }
    // The scenario is real: the canary's page is slow in each way, stable's is not.
    for load in &by_version["canary"] {
        let (lcp, cls, inp) = (load.value("LCP"), load.value("CLS"), load.value("INP"));
        assert!(lcp >= 3000.0 && cls > 0.2 && inp >= 290.0, "canary page: LCP {lcp}, CLS {cls}, INP {inp}");
        assert!(load.count("js_error") >= 1 && load.count("resource_error") >= 1, "{:#}", load.raw);
    }
    for load in &by_version["stable"] {
        let (lcp, cls, inp) = (load.value("LCP"), load.value("CLS"), load.value("INP"));
        // LCP and INP depend on how busy the machine is: only their P75 is held to the limits below.
        assert!(cls == 0.0 && lcp < 10_000.0 && inp < 1_000.0, "stable page: LCP {lcp}, CLS {cls}, INP {inp}");
        assert_eq!(load.count("js_error") + load.count("resource_error"), 0, "{:#}", load.raw);
    }

    // The gate trips on the canary's vitals (usually while the forced loads still run).
    let tripped = wait_until("the gate trips", Duration::from_secs(10), || envoy.gate_stats(SERVICE).0 == 1);

    // Envoy's counters: exactly the events each version's pages sent.
    let counters = [
        ("canary_web_page_views_total", "page_view"),
        ("canary_web_js_errors_total", "js_error"),
        ("canary_web_resource_errors_total", "resource_error"),
    ];
    // The filter counts a beacon before it answers it: a moment covers a read racing the last one.
    eventually(Duration::from_secs(2), || {
        VERSIONS.iter().all(|v| counters.iter().all(|(stat, event)| version_stat(&envoy, stat, v) == events(v, event)))
    });
    for version in VERSIONS {
        for (stat, event) in counters {
            assert_eq!(
                version_stat(&envoy, stat, version),
                events(version, event),
                "{stat} of {version}\n{}",
                envoy.log()
            );
        }
    }
    assert_eq!(events("stable", "js_error") + events("stable", "resource_error"), 0);

    // The histograms: every value in its bin, per version.
    for (metric, name, factor) in HISTOGRAMS {
        for version in VERSIONS {
            let labels = [("service", SERVICE), ("version", version)];
            let want = values(version, metric);
            let mut histogram = None;
            // Histograms reach the admin output at the next stats flush.
            eventually(Duration::from_secs(5), || {
                histogram = envoy.prometheus_histogram(name, &labels);
                histogram.as_ref().is_some_and(|h| h.count >= want.len() as u64)
            });
            let histogram = histogram.unwrap_or_else(|| panic!("no {name} series for {version} in /stats/prometheus"));
            assert_histogram(name, version, &histogram, &want, factor);
        }
    }

    // The window's gauges (merged across workers about once a second) once they hold every page view.
    wait_until("the window holds every page view", Duration::from_secs(10), || {
        VERSIONS.iter().all(|v| version_stat(&envoy, "canary_window_web_page_views", v) == LOADS_PER_VERSION as u64)
    });
    let gauge = |name: &str, version: &str| version_stat(&envoy, name, version);
    let limits = [
        ("canary_window_web_vitals_lcp_p75_milliseconds", "LCP", 1.0, 2500),
        ("canary_window_web_vitals_inp_p75_milliseconds", "INP", 1.0, 200),
        ("canary_window_web_vitals_cls_p75", "CLS", 1000.0, 100),
    ];
    for (name, metric, factor, limit) in limits {
        let (on_canary, on_stable) = (gauge(name, "canary"), gauge(name, "stable"));
        assert!(on_canary > limit, "{name} of the canary {on_canary}, want above {limit}");
        assert!(on_stable < limit, "{name} of stable {on_stable}, want below {limit}");
        assert_within(name, "canary", on_canary, &values("canary", metric), factor);
        assert_within(name, "stable", on_stable, &values("stable", metric), factor);
    }
    let ratio = |v: &str| gauge("canary_window_web_js_error_ratio_ppm", v);
    let canary_ratio = events("canary", "js_error") * 1_000_000 / LOADS_PER_VERSION as u64;
    assert!(ratio("canary") > 1_000 && ratio("canary").abs_diff(canary_ratio) <= 1, "js error ppm {}", ratio("canary"));
    assert_eq!(ratio("stable"), 0);

    // The trip: latched (state 3), logged once; the canary's cookie users go to stable (each
    // worker adopts the verdict at its next tick), a tester's override still reaches the canary.
    let (is_tripped, _, state) = envoy.gate_stats(SERVICE);
    assert_eq!((is_tripped, state), (1, 3));
    let log = envoy.log();
    assert_eq!(log.matches("gate tripped").count(), 1, "one trip line\n{log}");
    let line = log.lines().find(|l| l.contains("gate tripped")).unwrap_or_default();
    let cookie_user = by_version["canary"]
        .iter()
        .find_map(|l| (l.phase == "sticky").then(|| l.cookie.clone()).flatten())
        .unwrap_or_else(|| panic!("no sticky canary user"));
    let client = Client::new();
    let probe = |headers: &[(&str, &[u8])]| {
        let reply = client.get(&envoy.url("/static/version.txt"), headers);
        (reply.served_by, reply.reason)
    };
    let on_stable = (Some("stable".to_string()), Some("gate".to_string()));
    wait_until("the canary's cookie users go to stable", Duration::from_secs(5), || {
        (0..4).all(|_| probe(&[("cookie", cookie_user.as_bytes())]) == on_stable)
    });
    let forced = probe(&[("x-canary", b"canary")]);
    assert_eq!(forced, (Some("canary".to_string()), Some("override".to_string())));

    println!("{}", &line[line.find("gate tripped").unwrap_or(0)..]);
    for version in VERSIONS {
        println!(
            "{version}: LCP [{}] ms, CLS [{}], INP [{}] ms, FCP [{}] ms, TTFB [{}] ms, js errors {}, resource errors {}",
            fmt(&values(version, "LCP")),
            fmt3(&values(version, "CLS")),
            fmt(&values(version, "INP")),
            fmt(&values(version, "FCP")),
            fmt(&values(version, "TTFB")),
            events(version, "js_error"),
            events(version, "resource_error"),
        );
    }
    println!(
        "{}: stack up in {:.1} s, browser {:.1} s, gate trip seen {:.1} s after it finished, total {:.1} s",
        report["chromium"].as_str().unwrap_or("chromium"),
        up.as_secs_f64(),
        browsed.as_secs_f64(),
        tripped.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}

/// The end of Envoy's access log and its log's warnings and errors, for a failure message.
fn envoy_logs(envoy: &Envoy) -> String {
    let access = envoy.access_log();
    let lines: Vec<&str> = access.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    let log = envoy.log();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[critical]") || l.contains("[warning][wasm]"))
        .collect();
    format!("access log (last 40 lines):\n{tail}\nEnvoy warnings and errors:\n{}", problems.join("\n"))
}

/// Polls `ok` every 50 ms until it holds or `timeout` passes; whether it held.
fn eventually(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
