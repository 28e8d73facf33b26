//! The window and the gate across configuration updates, in real Envoy (2 workers, file-based
//! ECDS): Envoy starts a new root context in every VM for each update, and what the filter
//! measured must survive it.

use canary_harness::traffic::Recorder;
use canary_harness::{gated_config, start_envoy, wait_until, Backend, Envoy, Layout};
use std::thread::sleep;
use std::time::{Duration, Instant};

const GATE: &str = r#"{"max_error_ratio": 0.05}"#;

/// About 80 requests a second from 2 clients.
fn load(envoy: &Envoy) -> Recorder {
    Recorder::start(&envoy.url("/"), 2, 0, Duration::from_millis(25), 100_000)
}

fn window_requests(envoy: &Envoy) -> u64 {
    ["stable", "canary"].iter().map(|v| envoy.version_stats("checkout", v).window_requests).sum()
}

fn lease_takeovers(envoy: &Envoy) -> usize {
    envoy.log().lines().filter(|l| l.contains("takes the window lease of checkout/router")).count()
}

#[test]
fn the_window_survives_configuration_updates_and_keeps_moving() {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let envoy = start_envoy(Layout::FilterMode, &gated_config(30.0, GATE), &stable, &canary);
    let recorder = load(&envoy);
    wait_until("the window fills", Duration::from_secs(10), || window_requests(&envoy) > 300);
    for (update, percent) in [40.0, 30.0, 40.0, 30.0].into_iter().enumerate() {
        let before = window_requests(&envoy);
        assert!(envoy.reconfigure(&gated_config(percent, GATE)));
        // The window is published every second by the VM holding the lease: within 2.5 s it
        // must have moved on from `before`, and never have fallen below it (the test is
        // shorter than the 60 s window, so nothing slides out).
        let deadline = Instant::now() + Duration::from_millis(2_500);
        let mut grew = false;
        while Instant::now() < deadline {
            let now = window_requests(&envoy);
            assert!(now >= before, "update {update}: the window fell from {before} to {now}");
            grew |= now > before;
            sleep(Duration::from_millis(100));
        }
        assert!(grew, "update {update}: the window stayed at {before} for 2.5 s");
    }
    let events = recorder.finish();
    let failed: Vec<_> = events.iter().filter(|e| e.status != 200).map(|e| (e.status, e.version.clone())).collect();
    assert!(failed.is_empty(), "every request served: {failed:?}\n{}", envoy.log());
    assert_eq!(lease_takeovers(&envoy), 1, "one VM took the lease once and kept it:\n{}", envoy.log());
}

#[test]
fn a_rearmed_gate_does_not_trip_again_on_the_errors_that_tripped_it() {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let gate = |rearm: u32| format!(r#"{{"max_error_ratio": 0.05, "rearm": {rearm}}}"#);
    let envoy = start_envoy(Layout::FilterMode, &gated_config(30.0, &gate(0)), &stable, &canary);
    let recorder = load(&envoy);
    sleep(Duration::from_secs(3));
    canary.configure("error_ratio=0.3");
    sleep(Duration::from_secs(1));
    assert!(envoy.reconfigure(&gated_config(40.0, &gate(0))));
    wait_until("the gate trips", Duration::from_secs(10), || envoy.gate_stats("checkout").0 == 1);
    // Traffic stops, the canary heals, the gate is re-armed: nothing new reaches the canary,
    // so nothing may trip it again.
    recorder.finish();
    canary.configure("error_ratio=0");
    assert!(envoy.reconfigure(&gated_config(40.0, &gate(1))));
    wait_until("the gate re-arms", Duration::from_secs(5), || envoy.gate_stats("checkout").0 == 0);
    for _ in 0..8 {
        sleep(Duration::from_secs(1));
        let (tripped, trips, state) = envoy.gate_stats("checkout");
        assert_eq!((tripped, trips), (0, 1), "no second trip (state {state})\n{}", envoy.log());
        assert_ne!(state, 2, "the re-armed gate sees no breach");
    }
}
