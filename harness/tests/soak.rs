//! Soak: steady bounded load (2 clients, keyed users and keyless users replaying the sticky
//! cookie) through a real Envoy (filter mode, 2 workers) while live ECDS changes alternate
//! between the canary weight (10 → 30 → 50 → 20 → 10 …) and the gate's settings (dry run on
//! and off, other error ratios), with healthy backends.
//!
//! Duration: `CANARY_GATE_SOAK_S` seconds (default 60, the `make test` run; `make soak` runs
//! 600). A change every 30 s, or every 10 s for runs shorter than 150 s, so a 60 s run sees 5.
//!
//! `metrics.window_s` is half the warm-up, at most the default 60 s.
//!
//! Asserts: every request answered by the backend of the version canary-gate named; every
//! answer is the decision the host computes for the phase's weight; no user moves from canary
//! to stable while the weight rises (nor at all while it holds, nor stable to canary while it
//! falls); `canary_vm_memory_bytes` flat after the first 20% of the run; no VM reload, no error
//! from Wasm, no trip; `canary_requests_total` over both versions equals the requests sent.

use canary_harness::chaos::{assert_no_wasm_errors, log_lines, wasm_log_lines, PhasedLoad, PhasedOptions};
use canary_harness::{start_stack, Layout};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Settings {
    percent: u16,
    dry_run: bool,
    max_error_ratio: &'static str,
}

impl Settings {
    fn json(self, window_s: u64) -> String {
        format!(
            r#"{{"service": "checkout",
  "split": {{"mode": "filter", "canary_percent": {}, "hash_key": [{{"header": "x-user-id"}}, {{"cookie": "session"}}]}},
  "sticky": {{"cookie": "canary_bucket", "max_age_s": 86400}},
  "metrics": {{"window_s": {window_s}}},
  "gate": {{"max_error_ratio": {}, "dry_run": {}}}}}"#,
            self.percent, self.max_error_ratio, self.dry_run
        )
    }
}

const INITIAL: Settings = Settings { percent: 10, dry_run: false, max_error_ratio: "0.05" };

/// The changes, in order and repeating: a weight change, then a gate change.
const CHANGES: [Settings; 8] = [
    Settings { percent: 30, dry_run: false, max_error_ratio: "0.05" },
    Settings { percent: 30, dry_run: true, max_error_ratio: "0.05" },
    Settings { percent: 50, dry_run: true, max_error_ratio: "0.05" },
    Settings { percent: 50, dry_run: false, max_error_ratio: "0.1" },
    Settings { percent: 20, dry_run: false, max_error_ratio: "0.1" },
    Settings { percent: 20, dry_run: true, max_error_ratio: "0.02" },
    Settings { percent: 10, dry_run: true, max_error_ratio: "0.02" },
    Settings { percent: 10, dry_run: false, max_error_ratio: "0.05" },
];

/// Time after a change is applied before answers count for the new phase.
const SETTLE: Duration = Duration::from_millis(500);

#[test]
fn soak() {
    let duration_s: u64 = std::env::var("CANARY_GATE_SOAK_S").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let interval_s = if duration_s >= 150 { 30 } else { 10 };
    let duration = Duration::from_secs(duration_s);
    let changes = (duration_s.saturating_sub(1) / interval_s) as usize;
    let schedule: Vec<Settings> =
        std::iter::once(INITIAL).chain(CHANGES.iter().copied().cycle().take(changes)).collect();
    let warm_up = duration / 5;
    // The rolling window allocates its one-second slots as they first fill: a window no longer
    // than half the warm-up (the default 60 s from 120 s runs on) is full before memory must
    // stay flat.
    let window_s = (warm_up.as_secs() / 2).clamp(1, 60);
    println!("soak: {duration_s} s, a change every {interval_s} s: {changes} changes; metrics.window_s {window_s}");

    let (mut envoy, stable, canary) = start_stack(Layout::FilterMode, &INITIAL.json(window_s), &|s| s);
    let load = PhasedLoad::start(PhasedOptions {
        url: &envoy.url("/"),
        service: "checkout",
        weights_bp: schedule.iter().map(|s| s.percent * 100).collect(),
        threads: 2,
        users_per_thread: 600,
        keyless_every: 3,
        pause: Duration::from_millis(2),
        max_requests: duration_s * 1_000,
    });
    let start = Instant::now();
    let mut memory: Vec<(Duration, u64)> = Vec::new();
    let mut created_at_warm_up = None;
    let mut applied = 1usize;
    while start.elapsed() < duration {
        if applied < schedule.len() && start.elapsed() >= Duration::from_secs(interval_s * applied as u64) {
            load.begin_transition();
            let at = start.elapsed();
            assert!(
                envoy.reconfigure(&schedule[applied].json(window_s)),
                "change {applied} rejected: {:?}",
                schedule[applied]
            );
            let took = start.elapsed() - at;
            sleep(SETTLE);
            load.enter(applied as u64);
            println!(
                "{:>5.1} s: change {applied} -> {:?} applied in {} ms; canary_vm_memory_bytes {}",
                at.as_secs_f64(),
                schedule[applied],
                took.as_millis(),
                envoy.vm_memory_bytes()
            );
            applied += 1;
        }
        memory.push((start.elapsed(), envoy.vm_memory_bytes()));
        if created_at_warm_up.is_none() && start.elapsed() >= warm_up {
            created_at_warm_up = Some(envoy.vm_health());
        }
        sleep(Duration::from_millis(500));
    }
    let report = load.finish();
    let elapsed = start.elapsed();
    println!(
        "sent {} requests in {:.1} s ({:.0}/s) by {} users; reasons {:?}; checked per phase {:?}",
        report.sent,
        elapsed.as_secs_f64(),
        report.sent as f64 / elapsed.as_secs_f64(),
        report.users,
        report.reasons,
        report.per_phase
    );

    // Every request answered by the named version's backend, as the host computes.
    assert_eq!(report.failures, 0, "not answered by the named backend: {:#?}", report.failure_samples);
    assert_eq!(report.wrong, 0, "answers the host disagrees with: {:#?}", report.wrong_samples);
    assert!(report.reasons.keys().all(|r| ["hash", "cookie", "random"].contains(&r.as_str())), "{:?}", report.reasons);

    // Users per phase: one version each; only forward while the weight rises.
    let mut forward_moves = 0;
    for (phase, settings) in schedule.iter().enumerate() {
        let phase = phase as u64;
        let (seen, on_canary) = (report.users_in(phase), report.canary_users(phase));
        let share = on_canary as f64 / seen.max(1) as f64 * 100.0;
        println!("phase {phase} {settings:?}: {seen} users seen, {share:.1}% on canary, {} mixed", report.mixed(phase));
        assert!(seen * 10 >= report.users * 9, "phase {phase} saw only {seen} of {} users", report.users);
        assert_eq!(report.mixed(phase), 0, "users served both versions within phase {phase}");
        assert!((share - f64::from(settings.percent)).abs() <= 5.0, "phase {phase}: {share:.1}% on canary");
        if phase == 0 {
            continue;
        }
        let previous = schedule[phase as usize - 1].percent;
        let (back, forward) = report.moves(phase - 1, phase);
        println!("  {previous}% -> {}%: {back} users canary -> stable, {forward} stable -> canary", settings.percent);
        match settings.percent.cmp(&previous) {
            std::cmp::Ordering::Greater => assert_eq!(back, 0, "raising the weight moved users back"),
            std::cmp::Ordering::Equal => assert_eq!((back, forward), (0, 0), "a gate change moved users"),
            std::cmp::Ordering::Less => assert_eq!(forward, 0, "lowering the weight moved users to canary"),
        }
        if settings.percent > previous {
            forward_moves += forward;
        }
    }
    if changes > 0 {
        assert!(forward_moves > 0, "raising the weight moved nobody forward");
    }

    // Memory flat after warm-up.
    let at_warm_up =
        memory.iter().find(|(t, _)| *t >= warm_up).map(|(_, m)| *m).expect("a memory sample after warm-up");
    let peak = memory.iter().map(|(_, m)| *m).max().unwrap_or(0);
    let first = memory.first().map_or(0, |(_, m)| *m);
    println!(
        "canary_vm_memory_bytes: {first} at start, {at_warm_up} after warm-up ({:.0} s), {peak} peak, {} at the end",
        warm_up.as_secs_f64(),
        envoy.vm_memory_bytes()
    );
    for (t, m) in memory.iter().filter(|(t, _)| *t >= warm_up) {
        assert_eq!(*m, at_warm_up, "canary_vm_memory_bytes grew after warm-up, at {:.1} s", t.as_secs_f64());
    }

    // Counted exactly; no trip; no VM reload or crash; nothing logged per request.
    let (s, c) = envoy.counted("checkout", report.sent, Duration::from_secs(10));
    println!("canary_requests_total: stable {} + canary {} = {}", s.requests_total, c.requests_total, report.sent);
    assert_eq!(s.requests_total + c.requests_total, report.sent);
    assert_eq!((s.errors_total, c.errors_total), (0, 0));
    assert_eq!(stable.requests() + canary.requests(), report.sent, "backends' own counts");
    assert_eq!(envoy.gate_stats("checkout").1, 0, "a healthy canary tripped the gate");
    let health = envoy.vm_health();
    println!("VMs at warm-up {created_at_warm_up:?}, at the end {health:?}");
    assert_eq!(health.reloads(), 0, "{health:?}");
    assert!(envoy.is_running(), "envoy exited\n{}", envoy.log());
    let log = envoy.log();
    assert_no_wasm_errors(&log);
    let warnings = log_lines(&log, "warning");
    for (_, line) in &warnings {
        println!("  {line}");
    }
    assert!(wasm_log_lines(&log, "warning").is_empty(), "wasm warnings with a healthy canary");
}
