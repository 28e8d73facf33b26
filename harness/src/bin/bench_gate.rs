//! `make bench-gate`: time from a canary fault to full fallback, over several runs, with the
//! gate's default window, consecutive count and minimum traffic (threshold: 5% 5xx).

use canary_harness::traffic::{fallback_time, Recorder};
use canary_harness::{gated_config, start_envoy, Backend, Layout};
use std::thread::sleep;
use std::time::{Duration, Instant};

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    println!("gate reaction: canary switches to 30% 5xx under steady load (2 clients, 50% canary users);");
    println!("gate {{\"max_error_ratio\": 0.05}} with defaults window_s=5, consecutive=2, min_requests=20; Envoy 2 workers\n");
    let mut times = Vec::new();
    for run in 1..=runs {
        let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
        let envoy =
            start_envoy(Layout::FilterMode, &gated_config(50.0, r#"{"max_error_ratio": 0.05}"#), &stable, &canary);
        let recorder = Recorder::start(&envoy.url("/"), 2, 0, Duration::ZERO, 1_000_000);
        // Let the fault land at a random phase of the one-second tick.
        sleep(Duration::from_millis(3_000 + (run as u64 * 137) % 1_000));
        let fault = recorder.elapsed();
        canary.configure("error_ratio=0.3");
        let deadline = Instant::now() + Duration::from_secs(20);
        while envoy.gate_stats("checkout").0 == 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        sleep(Duration::from_secs(3));
        let events = recorder.finish();
        let t = fallback_time(&events, fault);
        println!("run {run}: full fallback {:.2} s after the fault ({} requests)", t.as_secs_f64(), events.len());
        times.push(t.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "\nmedian fault-to-fallback: {median:.2} s over {runs} runs (min {:.2} s, max {:.2} s)",
        times[0],
        times[times.len() - 1]
    );
}
