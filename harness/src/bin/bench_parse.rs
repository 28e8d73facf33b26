//! `make bench-parse`: the JSON reader on its worst inputs, and what they do to other requests.
//!
//! 1. Natively (this optimised build): the time to read the largest beacons `vitals.max_body_bytes`
//!    allows (one report of 8,686 distinct keys in 64 KiB; 64 reports padded to 64 KiB) and to
//!    validate a 20,000-key configuration; the median of many runs.
//! 2. In a real Envoy (2 workers, `vitals.max_body_bytes` 65536, `gate.vitals`): the p50 of an
//!    unrelated `GET /` idle, then while two connections, one on each worker, post the 64 KiB
//!    one-report beacon at 20 beacons/s each; per round, then the medians over the rounds.
//!
//! Usage: `bench_parse [RUNS] [ROUNDS]` (default 501 runs per input, 5 rounds; 0 rounds skips Envoy).

use canary_gate::config::Config;
use canary_gate::measure::beacon;
use canary_harness::hostile::{
    attack_config, largest_valid_beacon, victim_latency, wide_config, widest_object, MAX_BODY,
};
use canary_harness::{median, start_stack, Layout};
use std::hint::black_box;
use std::time::Instant;

/// Median, min and max of `runs` timed calls of `work`, in µs, after a few untimed ones.
fn time_us(runs: usize, mut work: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..5 {
        work();
    }
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (min, max) = samples.iter().fold((f64::MAX, 0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    (median(&mut samples), min, max)
}

fn main() {
    let arg = |n: usize, default: usize| std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (runs, rounds) = (arg(1, 501), arg(2, 5));

    let (widest, keys) = widest_object(MAX_BODY);
    let valid = largest_valid_beacon(MAX_BODY);
    let config = wide_config(20_000);
    let mut reports = Vec::new();
    assert_eq!(beacon::read(widest.as_bytes(), &mut reports), Ok(()));
    assert_eq!(beacon::read(valid.as_bytes(), &mut reports), Ok(()));
    assert_eq!(reports.len(), beacon::MAX_REPORTS);
    assert!(Config::parse(config.as_bytes()).is_err_and(|e| e.reason.contains("unknown")), "refused as unknown");

    println!("worst-case beacon parse µs (native, release build, median of {runs} runs, min–max):");
    let inputs: [(String, &[u8], bool); 3] = [
        (format!("one report of {keys} distinct keys, {} bytes", widest.len()), widest.as_bytes(), true),
        (format!("64 reports padded with distinct keys, {} bytes", valid.len()), valid.as_bytes(), true),
        (format!("configuration of 20,001 keys, {} bytes", config.len()), config.as_bytes(), false),
    ];
    for (what, bytes, is_beacon) in inputs {
        let (p50, min, max) = time_us(runs, || {
            if is_beacon {
                let _ = black_box(beacon::read(black_box(bytes), &mut reports));
            } else {
                let _ = black_box(Config::parse(black_box(bytes)));
            }
        });
        println!("  {what}: {p50:.0} µs ({min:.0}–{max:.0})");
    }

    if rounds == 0 {
        return;
    }
    println!(
        "unrelated GET / p50, idle and while 2 connections (one per worker) post the {keys}-key beacon at 20/s each \
         (Envoy, 2 workers, {rounds} rounds):"
    );
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &attack_config(), &|s| s);
    let (mut idle, mut attacked, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let r = victim_latency(&envoy);
        assert_eq!(r.attack.other, 0, "every beacon read and taken: {:?}", r.attack);
        println!(
            "  round {round}: idle {:.3} ms ({} GETs), under beacons {:.3} ms ({} GETs), ×{:.2}; {} beacons, \
             each answered in {:.1} ms (median)",
            r.idle_ms,
            r.idle_samples,
            r.attacked_ms,
            r.attacked_samples,
            r.attacked_ms / r.idle_ms,
            r.attack.sent,
            r.attack.answer_ms
        );
        idle.push(r.idle_ms);
        attacked.push(r.attacked_ms);
        ratios.push(r.attacked_ms / r.idle_ms);
    }
    let most = ratios.iter().copied().fold(0f64, f64::max);
    println!(
        "  median: idle {:.3} ms, under beacons {:.3} ms, ratio ×{:.2} (largest ×{most:.2}; target ≤ ×2)",
        median(&mut idle),
        median(&mut attacked),
        median(&mut ratios)
    );
}
