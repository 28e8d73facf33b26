//! `make demo`: a real Envoy with canary-gate, two backend versions, a few thousand synthetic
//! users, and the canary ramp 10 → 30 → 50 → 100 → 0 applied live through ECDS.

use canary_harness::traffic::{Population, Steady, StepReport};
use canary_harness::{filter_config, start_envoy, Backend, Client, Envoy, Layout, VersionStats};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

const USERS: usize = 3_000;
const REQUESTS_PER_USER: usize = 3;

fn main() {
    println!("canary-gate demo: Envoy {} + canary-gate, stable and canary backends on 127.0.0.1", envoy_version());
    let stable = Backend::start("stable", &["--latency-ms", "2", "--latency-spread-ms", "4"]);
    let canary = Backend::start("canary", &["--latency-ms", "3", "--latency-spread-ms", "8", "--error-ratio", "0.005"]);
    let envoy = start_envoy(Layout::FilterMode, &filter_config(10.0), &stable, &canary);
    println!("  listener http://127.0.0.1:{}   admin http://127.0.0.1:{}", envoy.port, envoy.admin_port);
    println!("  backends: stable :{}  canary :{}", stable.port, canary.port);
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
        if i > 0 && !envoy.reconfigure(&filter_config(percent)) {
            eprintln!("Envoy rejected the update to {percent}%");
            std::process::exit(1);
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
    println!("\nlast access-log lines (version and reason from filter state):");
    for line in envoy.access_log().lines().rev().take(3).collect::<Vec<_>>().into_iter().rev() {
        println!("  {line}");
    }
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

/// Runs `work` while printing one line per second of per-version stats.
fn with_live_stats<T: Send>(envoy: &Envoy, work: impl FnOnce() -> T + Send) -> T {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let printer = s.spawn(|| {
            let mut last = [envoy.version_stats("checkout", "stable"), envoy.version_stats("checkout", "canary")];
            while !done.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_secs(1));
                let now = [envoy.version_stats("checkout", "stable"), envoy.version_stats("checkout", "canary")];
                println!("    {}   {}", live_line("stable", &last[0], &now[0]), live_line("canary", &last[1], &now[1]));
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
