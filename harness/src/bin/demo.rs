//! `make demo`: a real Envoy with canary-gate, two backend versions, a few thousand synthetic
//! users, and the canary ramp 10 → 30 → 50 → 100 → 0 applied live through ECDS. Draws what
//! happened, from canary-gate's own stats, in `target/demo/report.html` (and `report.png`).

use canary_harness::prometheus::Prometheus;
use canary_harness::report::Sampler;
use canary_harness::traffic::{fallback_time, Population, Recorder, Steady, StepReport};
use canary_harness::{gated_config, start_envoy, Backend, Client, Envoy, Layout, VersionStats};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

const USERS: usize = 3_000;
const REQUESTS_PER_USER: usize = 3;
/// The SLO gate of the demo, with re-arm generation `{}`.
const GATE: &str = r#"{"max_error_ratio": 0.02, "max_p95_ms": 250, "rearm": REARM}"#;

/// The demo's configuration: the gate, and the web-vitals beacon endpoint.
fn config(percent: f64, rearm: u32) -> String {
    let gated = gated_config(percent, &GATE.replace("REARM", &rearm.to_string()));
    let object = gated.trim_end().strip_suffix('}').unwrap_or_else(|| panic!("a JSON object: {gated}"));
    format!("{object}, \"vitals\": {{}}}}")
}

fn main() {
    let build = match canary_harness::build() {
        canary_harness::Build::Wasm => "the Wasm filter",
        canary_harness::Build::Native => "the native module",
    };
    println!(
        "canary-gate demo: Envoy {} + canary-gate ({build}), stable and canary backends on 127.0.0.1",
        envoy_version()
    );
    let stable = Backend::start("stable", &["--latency-ms", "2", "--latency-spread-ms", "4"]);
    let canary = Backend::start("canary", &["--latency-ms", "3", "--latency-spread-ms", "8", "--error-ratio", "0.005"]);
    let envoy = start_envoy(Layout::FilterMode, &config(10.0, 0), &stable, &canary);
    println!("  listener http://127.0.0.1:{}   admin http://127.0.0.1:{}", envoy.port, envoy.admin_port);
    println!("  backends: stable :{}  canary :{}", stable.port, canary.port);
    let sampler = Sampler::start(envoy.admin_port, "checkout", Duration::from_millis(250));
    sampler.set_weight(10.0);
    let prometheus = Prometheus::start_shipped(envoy.admin_port);
    println!("  prometheus http://127.0.0.1:{} (envoy/prometheus.yml with the canary-gate rules)", prometheus.port);
    println!("  {USERS} users ({} keyed by x-user-id, {} keyless with the sticky cookie), {REQUESTS_PER_USER} requests each per step\n", USERS - USERS / 4, USERS / 4);

    tagging_examples(&envoy.url("/"));

    let url = envoy.url("/");
    let mut population = Population::new(USERS, 4);
    let steady = Steady::start(&url, 1, 1_000_000);
    println!(
        "{:>8} | {:>8} | {:>14} | {:>17} | {:>16} | {:>16} | {:>8}",
        "weight", "version", "share of users", "share of requests", "canary → stable", "stable → canary", "unserved"
    );
    println!("{}", "-".repeat(105));
    let mut moved_back_while_rising = 0;
    for (i, percent) in [10.0, 30.0, 50.0, 100.0, 0.0].into_iter().enumerate() {
        if i > 0 {
            apply(&envoy, &sampler, percent, 0);
        }
        println!("  step {percent}%: live, from canary-gate's own stats (rps from counters; error %, p95, p99 from window gauges)");
        let report = with_live_stats(&envoy, || population.run_step(&url, percent, REQUESTS_PER_USER, 4));
        print_step(&report);
        if percent > 0.0 {
            moved_back_while_rising += report.canary_to_stable;
        }
    }
    let (sent, failed) = steady.finish();
    println!("\nbackground traffic during the live weight changes: {sent} requests, {failed} not served by the version chosen");
    println!("users moved from canary back to stable while the weight rose: {moved_back_while_rising}");
    web_vitals(&envoy, &sampler);
    let (fallback_s, trip_lines) = bad_release(&envoy, &canary, &sampler);
    prometheus_view(&prometheus);

    println!("\nlast access-log lines (version and reason from the response headers):");
    for line in envoy.access_log().lines().rev().take(3).collect::<Vec<_>>().into_iter().rev() {
        println!("  {line}");
    }

    let timeline = sampler.finish();
    let notes = [
        format!("ramp 10 → 30 → 50 → 100 → 0 % over {USERS} users, applied live through ECDS"),
        format!(
            "background traffic during the weight changes: {sent} requests, {failed} not served by the version chosen"
        ),
        format!("users moved from canary back to stable while the weight rose: {moved_back_while_rising}"),
        format!("a bad release: every non-override request back on stable {fallback_s:.2} s after the fault"),
    ];
    let dir = canary_harness::root().join("target/demo");
    match timeline.write(&dir, "canary-gate demo: a canary rollout on a real Envoy", &notes, &trip_lines) {
        Ok(files) => {
            println!("\nthe report: {}", files.html.display());
            match files.png {
                Some(png) => println!("its screenshot: {}", png.display()),
                None => println!("(no screenshot: Chromium is not installed or failed)"),
            }
        }
        Err(e) => {
            eprintln!("the report could not be written to {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}

/// Applies `percent` (re-arm generation `rearm`) through ECDS, and records it for the report.
fn apply(envoy: &Envoy, sampler: &Sampler, percent: f64, rearm: u32) {
    if !envoy.reconfigure(&config(percent, rearm)) {
        eprintln!("Envoy rejected the update to {percent}%");
        std::process::exit(1);
    }
    sampler.set_weight(percent);
}

fn print_step(r: &StepReport) {
    let users_pct = |n: usize| 100.0 * n as f64 / r.users.max(1) as f64;
    let req_pct = |n: u64| 100.0 * n as f64 / r.requests.max(1) as f64;
    let weight = format!("{}%", r.percent);
    println!(
        "{weight:>8} | {:>8} | {:>13.1}% | {:>16.1}% | {:>16} | {:>16} | {:>8}",
        "canary",
        users_pct(r.users_canary),
        req_pct(r.requests_canary),
        r.canary_to_stable,
        r.stable_to_canary,
        r.failures
    );
    println!(
        "{:>8} | {:>8} | {:>13.1}% | {:>16.1}% | {:>16} | {:>16} | {:>8}",
        "",
        "stable",
        users_pct(r.users - r.users_canary),
        req_pct(r.requests - r.requests_canary),
        "",
        "",
        ""
    );
}

/// Between the acts: pages report their web vitals to the router, per version.
fn web_vitals(envoy: &Envoy, sampler: &Sampler) {
    println!(
        "\n--- web vitals: 300 page views post their beacons to /__canary/vitals (what web/canary-vitals.js sends) ---"
    );
    println!(
        "  the router answers them itself (204, never forwarded) and counts them for the user's version, by its cookie"
    );
    apply(envoy, sampler, 30.0, 0);
    sampler.mark("pages report web vitals");
    let client = Client::new();
    let mut answered = std::collections::BTreeMap::new();
    for user in 0..300u64 {
        let page = client.get(&envoy.url("/"), &[]);
        let Some(cookie) = page.cookie_pair("canary_bucket") else { continue };
        // This release's canary paints its largest element later, and shifts its layout.
        let (lcp, inp, cls) = match page.version.as_deref() {
            Some("canary") => (1900 + user * 37 % 1400, 60 + user * 13 % 180, 0.02 + (user % 10) as f64 * 0.03),
            _ => (900 + user * 53 % 900, 40 + user * 11 % 120, (user % 10) as f64 * 0.005),
        };
        let beacon = format!(
            r#"[{{"name":"page_view"}},{{"name":"LCP","value":{lcp}}},{{"name":"INP","value":{inp}}},{{"name":"CLS","value":{cls:.3}}}]"#
        );
        let reply = client.send(
            "POST",
            &envoy.url("/__canary/vitals"),
            &[("cookie", &cookie), ("content-type", "text/plain")],
            beacon.as_bytes(),
        );
        *answered.entry(reply.status).or_insert(0u64) += 1;
    }
    println!("  beacon answers by status: {answered:?}");
    thread::sleep(Duration::from_millis(2500));
    println!("  {:>8} | {:>10} | {:>10} | {:>10} | {:>8}", "version", "page views", "LCP p75", "INP p75", "CLS p75");
    for version in ["stable", "canary"] {
        let gauge = |metric: &str| envoy.stat(&format!("wasmcustom.{metric}.service.checkout.version.{version}"));
        println!(
            "  {version:>8} | {:>10} | {:>7} ms | {:>7} ms | {:>8.3}",
            gauge("canary_window_web_page_views"),
            gauge("canary_window_web_vitals_lcp_p75_milliseconds"),
            gauge("canary_window_web_vitals_inp_p75_milliseconds"),
            gauge("canary_window_web_vitals_cls_p75") as f64 / 1000.0,
        );
    }
    println!("  (window gauges merged across workers; Prometheus: canary:web_vitals_lcp_milliseconds:p75_5m, ...; gate.vitals can gate on them)");
}

/// Act two: a new canary at 30% turns bad; the gate sends its users back to stable. Returns
/// the time from the fault to the fallback, in seconds, and Envoy's log lines of the trip.
fn bad_release(envoy: &Envoy, canary: &Backend, sampler: &Sampler) -> (f64, Vec<String>) {
    println!(
        "\n--- a bad release: new rollout at 30% (gate re-armed), then the canary starts failing 30% of requests ---"
    );
    apply(envoy, sampler, 30.0, 1);
    sampler.mark("new rollout at 30% (gate re-armed)");
    let recorder = Recorder::start(&envoy.url("/"), 2, 20, Duration::from_millis(1), 1_000_000);
    let fault = with_live_stats(envoy, || {
        thread::sleep(Duration::from_secs(4));
        let fault = recorder.elapsed();
        println!("    >>> fault injected: canary answers 30% 5xx");
        canary.configure("error_ratio=0.3");
        sampler.mark("fault: canary answers 30% 5xx");
        thread::sleep(Duration::from_secs(8));
        fault
    });
    let events = recorder.finish();
    let reaction = fallback_time(&events, fault);
    let (tripped, trips, state) = envoy.gate_stats("checkout");
    let last_second =
        events.iter().filter(|e| e.sent + Duration::from_secs(1) > events.last().map_or(Duration::ZERO, |l| l.sent));
    let (mut to_stable, mut overrides) = (0, 0);
    for e in last_second {
        if e.overridden {
            overrides += 1;
        } else if e.served_by.as_deref() == Some("stable") && e.reason.as_deref() == Some("gate") {
            to_stable += 1;
        }
    }
    println!("  every non-override request back on stable {:.2} s after the fault", reaction.as_secs_f64());
    println!("  canary_gate_tripped={tripped} canary_gate_trips_total={trips} canary_gate_state={state} (3 = tripped)");
    println!("  last second: {to_stable} requests rerouted to stable (reason=gate), {overrides} tester overrides still reaching the canary");
    println!("  an Argo Rollouts AnalysisTemplate on canary_gate_tripped aborts the rollout at its next measurement");
    let trip_lines: Vec<String> =
        envoy.log().lines().filter(|l| l.contains("gate tripped")).map(str::to_string).collect();
    for line in &trip_lines {
        println!("  envoy log: {}", line.split("canary-gate: ").last().unwrap_or(line));
    }
    (reaction.as_secs_f64(), trip_lines)
}

/// What Prometheus, with the shipped rules, says now.
fn prometheus_view(prometheus: &Prometheus) {
    println!("\nPrometheus (recording rules from istio/prometheus/canary-gate-rules.yaml):");
    for (label, query) in [
        ("requests/s (1m)", "canary:requests:rate1m{service=\"checkout\"}"),
        ("5xx ratio (1m)", "canary:request_error_ratio:rate1m{service=\"checkout\"}"),
        ("p95 ms (1m)", "canary:request_duration_milliseconds:p95_1m{service=\"checkout\"}"),
    ] {
        let values: Vec<String> =
            prometheus.query(query).iter().map(|s| format!("{}={:.4}", s.label("version"), s.value)).collect();
        println!("  {label:<16} {}", values.join("  "));
    }
    let alerts: Vec<String> = prometheus
        .query("ALERTS{alertname=\"CanaryGateTripped\"}")
        .iter()
        .map(|s| format!("{} ({}, service={})", s.label("alertname"), s.label("alertstate"), s.label("service")))
        .collect();
    println!("  alerts           {}", if alerts.is_empty() { "none".to_string() } else { alerts.join(", ") });
}

/// Runs `work` while printing one line per second of per-version stats.
fn with_live_stats<T: Send>(envoy: &Envoy, work: impl FnOnce() -> T + Send) -> T {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let printer = s.spawn(|| {
            let mut last = [envoy.version_stats("checkout", "stable"), envoy.version_stats("checkout", "canary")];
            while !done.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_secs(1));
                let now = [envoy.version_stats("checkout", "stable"), envoy.version_stats("checkout", "canary")];
                let gate = ["ok", "inconclusive", "breaching", "TRIPPED"]
                    .get(envoy.gate_stats("checkout").2 as usize)
                    .copied();
                println!(
                    "    {}   {}   gate {}",
                    live_line("stable", &last[0], &now[0]),
                    live_line("canary", &last[1], &now[1]),
                    gate.unwrap_or("?")
                );
                last = now;
            }
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        let _ = printer.join();
        result
    })
}

fn live_line(version: &str, before: &VersionStats, now: &VersionStats) -> String {
    format!(
        "{version:>6}: {:>5} rps  err {:>5.2}%  p95 {:>6.2} ms  p99 {:>6.2} ms",
        now.requests_total.saturating_sub(before.requests_total),
        now.window_error_ppm as f64 / 10_000.0,
        now.p95_us as f64 / 1000.0,
        now.p99_us as f64 / 1000.0
    )
}

fn tagging_examples(url: &str) {
    let client = Client::new();
    println!("what a request gets (response headers; the upstream sees the same):");
    for (label, headers) in [
        ("tester override  x-canary: canary", vec![("x-canary", &b"canary"[..])]),
        ("keyed user       x-user-id: alice", vec![("x-user-id", &b"alice"[..])]),
        ("new keyless user (no key, no cookie)", vec![]),
        (
            "forged header    x-canary-version: canary",
            vec![("x-canary-version", &b"canary"[..]), ("x-user-id", b"bob")],
        ),
    ] {
        let r = client.get(url, &headers);
        println!(
            "  {label:<44} -> version={:<7} reason={:<9} served-by={:<7} {}",
            r.version.unwrap_or_default(),
            r.reason.unwrap_or_default(),
            r.served_by.unwrap_or_default(),
            r.set_cookies.first().map(|c| format!("set-cookie: {c}")).unwrap_or_default()
        );
    }
    println!();
}

fn envoy_version() -> String {
    std::process::Command::new(canary_harness::envoy_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split("version: ").nth(1).and_then(|v| v.split('/').nth(1)).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
