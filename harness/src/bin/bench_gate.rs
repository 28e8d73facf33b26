//! `make bench-gate`: time from a canary fault to full fallback (every non-override request on
//! stable), over several runs per scenario:
//! - `compare`: the acceptance scenario: 30% 5xx on the canary at 10% of the users, ~200
//!   requests per second, gate `{"compare": {}}` (default eval_ms 250);
//! - `compare100`: the same with `"eval_ms": 100`;
//! - `threshold`: the whole-service threshold `{"max_error_ratio": 0.05}` with its defaults
//!   (window_s 5, consecutive 2, min_requests 20), 50% of the users, closed-loop load.
//!
//! - `fleet`: three callers' routers (mesh mode, 5 requests/s each, 20% canary) over two stable
//!   pods and a canary pod with inbound observers; the gate of the shipped routers (comparison
//!   and `max_error_ratio` over 14 s) with `fleet` and without it, runs alternating, so both
//!   see the same machine: time from the canary's fault (30% 5xx) to the slowest router's trip.
//!
//! Usage: `bench_gate [RUNS] [SCENARIO,...]` (default 9 runs of every scenario, the `fleet`
//! scenario 5 of each kind, every one up to 3 minutes); the scenarios may also come from
//! `BENCH_GATE_SCENARIOS`.

use canary_harness::fleet::{router_config, spread, Fleet, FleetOptions, Load, LoadOptions};
use canary_harness::traffic::{fallback_time, Recorder};
use canary_harness::{gated_config, median, start_envoy, Backend, Layout};
use std::thread::sleep;
use std::time::{Duration, Instant};

struct Scenario {
    name: &'static str,
    about: &'static str,
    gate: &'static str,
    canary_percent: f64,
    /// Each of the 2 clients' pause between requests (zero: closed loop).
    pause: Duration,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "compare",
        about: "gate {\"compare\": {}} (alpha 0.001, eval_ms 250), 10% canary users, ~200 requests/s",
        gate: r#"{"compare": {}}"#,
        canary_percent: 10.0,
        pause: Duration::from_micros(8_500),
    },
    Scenario {
        name: "compare100",
        about: "gate {\"compare\": {}, \"eval_ms\": 100}, 10% canary users, ~200 requests/s",
        gate: r#"{"compare": {}, "eval_ms": 100}"#,
        canary_percent: 10.0,
        pause: Duration::from_micros(8_500),
    },
    Scenario {
        name: "threshold",
        about: "gate {\"max_error_ratio\": 0.05} (window_s 5, consecutive 2, min_requests 20), \
                50% canary users, closed loop",
        gate: r#"{"max_error_ratio": 0.05}"#,
        canary_percent: 50.0,
        pause: Duration::ZERO,
    },
];

/// One run: (fault to full fallback, fault to the trip seen in the admin, requests per second).
fn run(scenario: &Scenario, run: usize) -> (f64, f64, f64) {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let envoy =
        start_envoy(Layout::FilterMode, &gated_config(scenario.canary_percent, scenario.gate), &stable, &canary);
    let recorder = Recorder::start(&envoy.url("/"), 2, 0, scenario.pause, 1_000_000);
    // Let the fault land at a spread of phases of the evaluation period and of the second.
    sleep(Duration::from_millis(3_000 + (run as u64 * 137) % 1_000));
    let fault = recorder.elapsed();
    canary.configure("error_ratio=0.3");
    let deadline = Instant::now() + Duration::from_secs(20);
    while envoy.gate_stats("checkout").0 == 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    let trip = if envoy.gate_stats("checkout").0 == 1 { (recorder.elapsed() - fault).as_secs_f64() } else { f64::NAN };
    sleep(Duration::from_secs(3));
    let events = recorder.finish();
    let span = events.last().map_or(0.0, |e| e.sent.as_secs_f64()).max(1e-3);
    let fallback = if trip.is_nan() { f64::NAN } else { fallback_time(&events, fault).as_secs_f64() };
    (fallback, trip, events.len() as f64 / span)
}

/// The `fleet` scenario's gate: the shipped routers' (`istio/services/*/routers.yaml`).
const FLEET_GATE: &str = r#"{"window_s": 14, "min_requests": 20, "consecutive": 3, "max_error_ratio": 0.05,
  "compare": {}, "fleet": {}}"#;
/// How long the `fleet` scenario waits for the slowest router.
const FLEET_TIMEOUT: Duration = Duration::from_secs(180);

/// One `fleet` run: each router's fault-to-trip time (`None`: not within the timeout).
fn fleet_run(with_fleet: bool) -> Vec<Option<Duration>> {
    let gate = if with_fleet { FLEET_GATE.to_string() } else { FLEET_GATE.replace(r#", "fleet": {}"#, "") };
    let router = router_config("checkout", &gate);
    let fleet = Fleet::start(&FleetOptions {
        router_json: &router,
        backend_args: &["--error-ratio", "0.01"],
        ..FleetOptions::default()
    });
    let load = Load::start(&fleet, &LoadOptions::default());
    if with_fleet {
        fleet.wait_for_reports(Duration::from_secs(30));
    }
    // A full gate window of healthy traffic first.
    sleep(Duration::from_secs(14));
    let fault = fleet.fail_canary(0.3);
    let times = fleet.trip_times(fault, FLEET_TIMEOUT);
    load.finish();
    times
}

fn bench_fleet(runs: usize) -> String {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 1..=runs {
        for with_fleet in [true, false] {
            let times = fleet_run(with_fleet);
            let kind = if with_fleet { "with fleet   " } else { "without fleet" };
            let shown: Vec<String> =
                times.iter().map(|t| t.map_or("never".into(), |t| format!("{:.2} s", t.as_secs_f64()))).collect();
            println!("  run {i} {kind}: routers tripped {} after the fault", shown.join(", "));
            // The slowest router's trip; NaN when one never tripped.
            let slowest = spread(&times).map_or(f64::NAN, |(_, last)| last.as_secs_f64());
            if with_fleet { &mut with } else { &mut without }.push(slowest);
        }
    }
    let (with, without) = (median(&mut with), median(&mut without));
    format!(
        "fleet: slowest router's trip, median {with:.2} s with fleet, {without:.2} s without ({:.1}x sooner) over {runs} runs each",
        without / with
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9).max(1);
    let picked = args.next().or_else(|| std::env::var("BENCH_GATE_SCENARIOS").ok());
    let picked: Vec<String> = picked.map(|p| p.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default();
    if let Some(unknown) =
        picked.iter().find(|p| p.as_str() != "fleet" && !SCENARIOS.iter().any(|s| s.name == p.as_str()))
    {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        names.push("fleet");
        eprintln!("unknown scenario `{unknown}` (one of {})", names.join(", "));
        std::process::exit(2);
    }
    println!("gate reaction: the canary switches from healthy to 30% 5xx under steady load from 2 clients");
    println!("(each cycling over 1,000 users by x-user-id); Envoy 2 workers, filter mode; {runs} runs per scenario.");
    let mut summary = Vec::new();
    for scenario in SCENARIOS.iter().filter(|s| picked.is_empty() || picked.iter().any(|p| p == s.name)) {
        println!("\n{}: {}", scenario.name, scenario.about);
        let mut times = Vec::new();
        for i in 1..=runs {
            let (fallback, trip, rate) = run(scenario, i);
            println!(
                "  run {i}: full fallback {fallback:.2} s after the fault (trip seen at {trip:.2} s), {rate:.0} requests/s"
            );
            times.push(fallback);
        }
        let failed = times.iter().filter(|t| t.is_nan()).count();
        times.retain(|t| !t.is_nan());
        times.sort_by(f64::total_cmp);
        let line = match (times.first(), times.last()) {
            (Some(min), Some(max)) => format!(
                "{}: median {:.2} s, min {min:.2} s, max {max:.2} s over {} runs{}",
                scenario.name,
                times[times.len() / 2],
                times.len(),
                if failed > 0 { format!(" ({failed} runs without a trip in 20 s)") } else { String::new() }
            ),
            _ => format!("{}: no run tripped within 20 s", scenario.name),
        };
        println!("  {line}");
        summary.push(line);
    }
    if picked.is_empty() || picked.iter().any(|p| p == "fleet") {
        let fleet_runs = if picked.is_empty() { runs.min(5) } else { runs };
        println!("\nfleet: three callers' routers over 2 stable pods and a canary pod, 30% 5xx on the canary, runs alternating");
        summary.push(bench_fleet(fleet_runs));
    }
    println!("\nfault-to-full-fallback (fleet: to the slowest router's trip):");
    for line in summary {
        println!("  {line}");
    }
}
