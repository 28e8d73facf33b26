//! The demo's report as a person sees it: a short rollout on real Envoy (2 workers) sampled as
//! `make demo` samples it (10% then 50%, pages' web-vitals beacons, then a canary answering 30%
//! 5xx until the gate trips), written as `report.html`, opened in Debian's headless Chromium by
//! `tests/browser/report.mjs`. Every chart must show data: its series drawn with points, both
//! axis labels and their ticks, the events and the trip marked, the tripped time shaded; the page
//! logs no console error and loads nothing from outside itself.
//!
//! Needs `make deps` (Chromium, the npm packages of `tests/browser`); fails, never skips,
//! without them.

use canary_harness::report::{Sampler, Timeline, TRIP_LABEL};
use canary_harness::traffic::Recorder;
use canary_harness::{
    browser_test_dir, chromium_bin, gated_config, run_node, start_envoy, wait_until, Backend, Client, Envoy, Layout,
    TempDir,
};
use serde_json::Value;
use std::thread::sleep;
use std::time::Duration;

const FAULT: &str = "fault: canary answers 30% 5xx";
const VITALS: &str = "pages report web vitals";
const PAGE_VIEWS: u64 = 40;

fn config(percent: f64) -> String {
    let gated = gated_config(percent, r#"{"max_error_ratio": 0.02, "max_p95_ms": 250}"#);
    let object = gated.trim_end().strip_suffix('}').expect("a JSON object");
    format!("{object}, \"vitals\": {{}}}}")
}

/// Page views with the filter's bucket cookie, each posting a beacon (LCP, INP, CLS).
fn post_beacons(envoy: &Envoy) {
    let client = Client::new();
    for user in 0..PAGE_VIEWS {
        let page = client.get(&envoy.url("/"), &[]);
        let cookie = page.cookie_pair("canary_bucket").expect("a new user gets the bucket cookie");
        let beacon = format!(
            r#"[{{"name":"page_view"}},{{"name":"LCP","value":{}}},{{"name":"INP","value":{}}},{{"name":"CLS","value":0.0{}}}]"#,
            900 + user * 40,
            40 + user * 5,
            user % 10
        );
        let headers = [("cookie", cookie.as_str()), ("content-type", "text/plain")];
        let reply = client.send("POST", &envoy.url("/__canary/vitals"), &headers, beacon.as_bytes());
        assert_eq!(reply.status, 204, "beacon answered: {}", reply.body);
    }
}

/// A short rollout, sampled; returns the timeline.
fn rollout(envoy: &Envoy, canary: &Backend) -> Timeline {
    let sampler = Sampler::start(envoy.admin_port, "checkout", Duration::from_millis(250));
    sampler.set_weight(10.0);
    let recorder = Recorder::start(&envoy.url("/"), 2, 20, Duration::from_millis(2), 1_000_000);
    sleep(Duration::from_secs(2));
    assert!(envoy.reconfigure(&config(50.0)), "Envoy took 50%");
    sampler.set_weight(50.0);
    sampler.mark(VITALS);
    post_beacons(envoy);
    let vitals_in =
        |v: &str| envoy.stat(&format!("wasmcustom.canary_window_web_page_views.service.checkout.version.{v}"));
    wait_until("both versions' page views in the window", Duration::from_secs(10), || {
        vitals_in("stable") > 0 && vitals_in("canary") > 0
    });
    sleep(Duration::from_secs(1));
    assert_eq!(envoy.gate_stats("checkout").0, 0, "healthy canary: not tripped before the fault");
    canary.configure("error_ratio=0.3");
    sampler.mark(FAULT);
    wait_until("the gate trips", Duration::from_secs(15), || envoy.gate_stats("checkout").0 == 1);
    sleep(Duration::from_millis(1500));
    recorder.finish();
    sampler.finish()
}

#[test]
fn the_demo_report_shows_the_ramp_the_vitals_and_the_trip_in_chromium() {
    let chromium = chromium_bin();
    let browser = browser_test_dir();
    let stable = Backend::start("stable", &["--latency-ms", "2", "--latency-spread-ms", "3"]);
    let canary = Backend::start("canary", &["--latency-ms", "3", "--latency-spread-ms", "6"]);
    let envoy = start_envoy(Layout::FilterMode, &config(10.0), &stable, &canary);
    let timeline = rollout(&envoy, &canary);

    // The timeline, from the filter's stats.
    let fault_at = timeline.events.iter().find(|e| e.label == FAULT).map(|e| e.at_s).expect("the fault marked");
    let trips = timeline.trips();
    assert_eq!(trips.len(), 1, "one trip: {trips:?}");
    assert!(trips[0] > fault_at, "tripped at {} s, after the fault at {fault_at} s", trips[0]);
    let worst = timeline.samples.iter().filter(|s| s.at_s > fault_at).map(|s| s.versions[1].window_error_ppm).max();
    // Above the gate's 2% limit; how far above depends on when the trip stops the canary's
    // traffic (9.5% to 15% seen under load).
    assert!(worst.is_some_and(|ppm| ppm > 20_000), "the canary's window 5xx after the fault: {worst:?} ppm");
    assert!(timeline.samples.len() >= 20, "{} samples", timeline.samples.len());

    let trip_lines: Vec<String> =
        envoy.log().lines().filter(|l| l.contains("gate tripped")).map(str::to_string).collect();
    assert!(!trip_lines.is_empty(), "Envoy logged the trip");
    let tmp = TempDir::new("report");
    let files = timeline.write(tmp.path(), "canary-gate report test", &["a short rollout".into()], &trip_lines);
    let files = files.expect("report written");
    let html = std::fs::read_to_string(&files.html).expect("report.html");
    assert!(html.contains(&canary_charts::escape(trip_lines[0].as_str())), "the trip's log line on the page");
    let png = files.png.expect("Chromium is installed: the report's screenshot");
    let png_bytes = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(png_bytes > 20_000, "report.png has {png_bytes} bytes");

    // The page, in Chromium.
    let full = tmp.path().join("full.png");
    let args =
        ["--page".to_string(), files.html.display().to_string(), "--screenshot".into(), full.display().to_string()];
    let out = run_node(&browser, "report.mjs", &args, &[("CHROMIUM_BIN", &chromium)], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let facts: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("report.mjs output: {e}: {out}"));
    assert_eq!(facts["ok"], true, "{facts}");
    assert_eq!(facts["console_errors"], serde_json::json!([]), "console errors");
    assert_eq!(facts["external"], serde_json::json!([]), "requests beyond the page itself");
    let charts = facts["charts"].as_array().expect("charts");
    let ids: Vec<&str> = charts.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, ["weight", "requests", "errors", "latency", "vitals", "cls"]);
    for chart in charts {
        let id = chart["id"].as_str().unwrap_or("?");
        assert!(chart["width"].as_f64().unwrap_or(0.0) >= 900.0 && chart["height"].as_f64().unwrap_or(0.0) >= 200.0);
        assert_eq!(
            chart["axis_labels"].as_array().map(Vec::len),
            Some(2),
            "{id}: axis labels {}",
            chart["axis_labels"]
        );
        assert!(chart["ticks"].as_array().map_or(0, Vec::len) >= 6, "{id}: ticks {}", chart["ticks"]);
        let markers: Vec<&str> = chart["markers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for label in [VITALS, FAULT, TRIP_LABEL] {
            assert!(markers.contains(&label), "{id}: marker {label:?} among {markers:?}");
        }
        let tripped = chart["bands"].as_array().into_iter().flatten().find(|b| b["label"] == TRIP_LABEL);
        assert!(
            tripped.is_some_and(|b| b["width"].as_f64().unwrap_or(0.0) > 5.0),
            "{id}: tripped band {}",
            chart["bands"]
        );
    }
    // Each version's series is drawn with points, in every chart.
    let points = |chart: usize, series: &str| charts[chart]["series"][series]["points"].as_u64().unwrap_or(0);
    for (chart, series, at_least) in [
        (0, "canary_percent (configured)", 3),
        (0, "canary share of requests (last second)", 20),
        (1, "stable", 20),
        (1, "canary", 20),
        (2, "stable", 20),
        (2, "canary", 20),
        (3, "stable p95", 20),
        (3, "canary p99", 20),
        (4, "stable LCP", 4),
        (4, "canary INP", 4),
        (5, "stable CLS", 4),
        (5, "canary CLS", 4),
    ] {
        assert!(points(chart, series) >= at_least, "{}: {series}: {} points", ids[chart], charts[chart]["series"]);
    }
    let full_bytes = std::fs::metadata(&full).map(|m| m.len()).unwrap_or(0);
    assert!(full_bytes > 20_000, "full-page screenshot: {full_bytes} bytes");
}
