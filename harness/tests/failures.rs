//! Failures around canary-gate in a real Envoy (filter mode, 2 workers): a dead canary, a canary
//! slower than the route timeout, a flapping canary, an Envoy restart and an unrelated live
//! configuration change. Envoy's own answers (503, 504) are counted under the version the
//! filter chose, the gate trips once and stays latched, and users keep their version.

use canary_gate::config::Config;
use canary_gate::model::Version;
use canary_gate::route::bucket::Bucketer;
use canary_gate::route::Router;
use canary_harness::traffic::{Event, Population, Recorder, Steady};
use canary_harness::{filter_config, gated_config, start_envoy, start_stack, wait_until, Backend, Client, Layout};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

const GATE: &str = r#"{"max_error_ratio": 0.05}"#;

fn router(percent: f64) -> Router {
    Router::new(Config::parse(filter_config(percent).as_bytes()).unwrap())
}

/// `n` keys the host puts on `version` at `percent`.
fn keys_on(version: Version, percent: f64, n: usize) -> Vec<String> {
    let (router, bucketer) = (router(percent), Bucketer::new("checkout"));
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|k| router.version_of_bucket(bucketer.bucket(k.as_bytes())) == version)
        .take(n)
        .collect()
}

fn count(events: &[Event], version: &str, errors_only: bool) -> u64 {
    events.iter().filter(|e| e.version.as_deref() == Some(version) && (!errors_only || e.status >= 500)).count() as u64
}

/// Latest send time, relative to `from`, of a non-override request the filter sent to canary.
fn last_canary_decision(events: &[Event], from: Duration) -> Duration {
    events
        .iter()
        .filter(|e| !e.overridden && e.sent >= from && e.version.as_deref() == Some("canary"))
        .map(|e| e.sent - from)
        .max()
        .unwrap_or_default()
}

#[test]
fn a_dead_canary_gets_envoys_503_counted_as_canary_5xx() {
    let (envoy, stable, canary) = start_stack(Layout::FilterMode, &filter_config(50.0), &|s| s);
    let client = Client::new();
    let url = envoy.url("/");
    for key in keys_on(Version::Canary, 50.0, 3) {
        assert_eq!(client.get(&url, &[("x-user-id", key.as_bytes())]).served_by.as_deref(), Some("canary"));
    }
    let canary_port = canary.port;
    drop(canary);
    assert!(std::net::TcpStream::connect(("127.0.0.1", canary_port)).is_err(), "canary port still open");
    let (router, bucketer) = (router(50.0), Bucketer::new("checkout"));
    let (mut to_canary, mut to_stable) = (0u64, 0u64);
    for i in 0..400 {
        let key = format!("user-{i}");
        let reply = client.get(&url, &[("x-user-id", key.as_bytes())]);
        assert_eq!(reply.reason.as_deref(), Some("hash"), "{key}");
        match router.version_of_bucket(bucketer.bucket(key.as_bytes())) {
            Version::Canary => {
                assert_eq!(
                    (reply.status, reply.version.as_deref(), reply.served_by.as_deref()),
                    (503, Some("canary"), None)
                );
                assert!(
                    reply.body.starts_with("upstream connect error or disconnect/reset before headers"),
                    "{}",
                    reply.body
                );
                to_canary += 1;
            }
            Version::Stable => {
                assert_eq!(
                    (reply.status, reply.version.as_deref(), reply.served_by.as_deref()),
                    (200, Some("stable"), Some("stable"))
                );
                to_stable += 1;
            }
        }
    }
    let (s, c) = envoy.counted("checkout", 403, Duration::from_secs(10));
    println!("dead canary: {to_canary} requests got 503, {to_stable} served by stable; canary {c:?}");
    assert_eq!((c.requests_total, c.errors_total), (3 + to_canary, to_canary), "canary counted as 5xx");
    assert_eq!((s.requests_total, s.errors_total), (to_stable, 0));
    assert!(to_canary > 150 && to_stable > 150);
    assert!(envoy.stat("cluster.canary.upstream_cx_connect_fail") > 0, "connection refused by the dead canary");
    assert_eq!(stable.requests(), to_stable);
    // The merged window sees the same: every canary request in it failed.
    wait_until("window shows the failures", Duration::from_secs(5), || {
        let w = envoy.version_stats("checkout", "canary");
        w.window_requests == 3 + to_canary && w.window_error_ppm == to_canary * 1_000_000 / (3 + to_canary)
    });
}

#[test]
fn a_dead_canary_trips_the_gate_and_its_users_reach_stable_within_5_s() {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let envoy = start_envoy(Layout::FilterMode, &gated_config(50.0, GATE), &stable, &canary);
    let recorder = Recorder::start(&envoy.url("/"), 2, 0, Duration::from_millis(1), 200_000);
    sleep(Duration::from_secs(3));
    assert_eq!(envoy.gate_stats("checkout"), (0, 0, 0), "healthy before the fault");
    let fault = recorder.elapsed();
    drop(canary);
    let killed = recorder.elapsed();
    let tripped = wait_until("gate trips", Duration::from_secs(15), || envoy.gate_stats("checkout").0 == 1);
    sleep(Duration::from_secs(4));
    let events = recorder.finish();
    let reaction = last_canary_decision(&events, fault);
    println!(
        "dead canary: gate tripped {:.2} s after the kill, last request sent to canary {:.2} s after it ({} requests)",
        tripped.as_secs_f64(),
        reaction.as_secs_f64(),
        events.len()
    );
    assert!(reaction <= Duration::from_secs(5), "canary kept receiving users for {reaction:?}");
    // Until the trip, canary users got Envoy's 503 (no backend answered).
    let dead: Vec<&Event> =
        events.iter().filter(|e| e.sent > killed && e.version.as_deref() == Some("canary")).collect();
    assert!(dead.len() > 10, "the dead canary was routed to before the trip ({})", dead.len());
    assert!(
        dead.iter().all(|e| e.status == 503 && e.served_by.is_none()),
        "{:?}",
        dead.iter().find(|e| e.status != 503)
    );
    // After it, everyone is served by stable; one tick later all with reason `gate`.
    let after: Vec<&Event> = events.iter().filter(|e| e.sent > fault + reaction + Duration::from_millis(1)).collect();
    assert!(after.len() > 100);
    assert!(after.iter().all(|e| e.status == 200 && e.served_by.as_deref() == Some("stable")));
    let settled = fault + reaction + Duration::from_millis(1_500);
    assert!(events.iter().filter(|e| e.sent > settled).all(|e| e.reason.as_deref() == Some("gate")));
    assert!(events.iter().all(|e| e.status != 0), "transport errors");
    assert_eq!(envoy.gate_stats("checkout"), (1, 1, 3));
    // Counted exactly: the 503s as canary 5xx.
    let (s, c) = envoy.counted("checkout", events.len() as u64, Duration::from_secs(10));
    assert_eq!((c.requests_total, c.errors_total), (count(&events, "canary", false), count(&events, "canary", true)));
    assert_eq!((s.requests_total, s.errors_total), (count(&events, "stable", false), 0));
    println!("counted: canary {} requests / {} 5xx, stable {}", c.requests_total, c.errors_total, s.requests_total);
}

#[test]
fn a_canary_slower_than_the_route_timeout_gets_504s_counted_as_5xx() {
    let timeouts = |s: String| {
        let out = s
            .replace("route: {cluster: canary}", "route: {cluster: canary, timeout: 1s}")
            .replace("route: {cluster: stable}", "route: {cluster: stable, timeout: 1s}");
        assert_eq!(out.matches(", timeout: 1s}").count(), 2, "route timeouts not applied");
        out
    };
    let (envoy, _stable, canary) = start_stack(Layout::FilterMode, &filter_config(50.0), &timeouts);
    canary.configure("latency_ms=1500");
    let (slow, fast) = (keys_on(Version::Canary, 50.0, 8), keys_on(Version::Stable, 50.0, 8));
    let url = envoy.url("/");
    thread::scope(|s| {
        for t in 0..2 {
            let (slow, fast, url) = (&slow, &fast, &url);
            s.spawn(move || {
                let client = Client::new();
                for (key, fast_key) in slow.iter().zip(fast).skip(t).step_by(2) {
                    let start = Instant::now();
                    let reply = client.get(url, &[("x-user-id", key.as_bytes())]);
                    let took = start.elapsed();
                    assert_eq!(
                        (reply.status, reply.version.as_deref(), reply.reason.as_deref(), reply.served_by.as_deref()),
                        (504, Some("canary"), Some("hash"), None),
                        "{key}: {}",
                        reply.body
                    );
                    assert_eq!(reply.body, "upstream request timeout");
                    assert!(took >= Duration::from_millis(990) && took < Duration::from_millis(1_450), "{took:?}");
                    let start = Instant::now();
                    let reply = client.get(url, &[("x-user-id", fast_key.as_bytes())]);
                    assert_eq!((reply.status, reply.served_by.as_deref()), (200, Some("stable")));
                    assert!(start.elapsed() < Duration::from_millis(500));
                }
            });
        }
    });
    let (s, c) = envoy.counted("checkout", 16, Duration::from_secs(10));
    assert_eq!((c.requests_total, c.errors_total), (8, 8), "504s are canary 5xx");
    assert_eq!((s.requests_total, s.errors_total), (8, 0));
    assert_eq!(envoy.stat("cluster.canary.upstream_rq_timeout"), 8);
    // The window measured the time Envoy took to give up (its quantiles are within 1.6%).
    wait_until("window has the 8 timeouts", Duration::from_secs(5), || {
        envoy.version_stats("checkout", "canary").window_requests == 8
    });
    let w = envoy.version_stats("checkout", "canary");
    println!("504s: canary window p50 {} µs, p99 {} µs, error ratio {} ppm", w.p50_us, w.p99_us, w.window_error_ppm);
    assert_eq!(w.window_error_ppm, 1_000_000);
    assert!((980_000..1_300_000).contains(&w.p50_us) && (980_000..1_300_000).contains(&w.p99_us), "{w:?}");
}

#[test]
fn a_flapping_canary_trips_the_gate_once_and_it_stays_latched() {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let envoy = start_envoy(Layout::FilterMode, &gated_config(50.0, GATE), &stable, &canary);
    let recorder = Recorder::start(&envoy.url("/"), 2, 0, Duration::from_millis(1), 300_000);
    sleep(Duration::from_secs(3));
    assert_eq!(envoy.gate_stats("checkout"), (0, 0, 0));
    let flap_start = recorder.elapsed();
    let mut samples = Vec::new();
    for i in 0..10 {
        canary.configure(if i % 2 == 0 { "error_ratio=1" } else { "error_ratio=0" });
        let second = Instant::now();
        while second.elapsed() < Duration::from_secs(1) {
            samples.push((recorder.elapsed(), envoy.gate_stats("checkout")));
            sleep(Duration::from_millis(100));
        }
    }
    canary.configure("error_ratio=0");
    let healthy_from = recorder.elapsed();
    // Longer than the gate's 5 s window: an unlatched verdict would clear by now.
    while recorder.elapsed() < healthy_from + Duration::from_secs(7) {
        samples.push((recorder.elapsed(), envoy.gate_stats("checkout")));
        sleep(Duration::from_millis(100));
    }
    let events = recorder.finish();
    let first_trip = samples.iter().position(|(_, (tripped, _, _))| *tripped == 1).expect("the gate tripped");
    let trip_at = samples[first_trip].0;
    println!(
        "flapping canary: gate tripped {:.2} s after the flapping began; {} samples after it, all latched",
        (trip_at - flap_start).as_secs_f64(),
        samples.len() - first_trip
    );
    for (at, stats) in &samples[first_trip..] {
        assert_eq!(*stats, (1, 1, 3), "at {at:?}: the trip did not hold, or tripped again");
    }
    assert_eq!(envoy.gate_stats("checkout"), (1, 1, 3));
    assert_eq!(envoy.log().matches("gate tripped").count(), 1, "one trip, one warning");
    // Every request after the trip (plus the tick in which workers adopt it) went to stable,
    // also once the canary was healthy.
    let settled = trip_at + Duration::from_millis(1_500);
    let after: Vec<&Event> = events.iter().filter(|e| e.sent > settled).collect();
    assert!(after.iter().all(|e| e.served_by.as_deref() == Some("stable") && e.reason.as_deref() == Some("gate")));
    let healthy = after.iter().filter(|e| e.sent > healthy_from + Duration::from_secs(1)).count();
    assert!(healthy > 100, "load continued after the canary recovered ({healthy})");
    assert!(events.iter().all(|e| e.status != 0 && e.served_by.is_some()), "only backends answered");
}

#[test]
fn users_keep_their_version_across_an_envoy_restart() {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let config = filter_config(30.0);
    let envoy = start_envoy(Layout::FilterMode, &config, &stable, &canary);
    // 2,000 users, every 2nd without a key (it keeps the bucket cookie like a browser).
    let mut population = Population::new(2_000, 2);
    let before = population.run_step(&envoy.url("/"), 30.0, 2, 2);
    println!("before the restart: {before:?}");
    assert_eq!((before.failures, before.mixed), (0, 0), "{before:?}");
    let kept: Vec<(Option<bool>, Vec<String>)> =
        population.users.iter().map(|u| (u.last_canary, u.cookies.clone())).collect();
    assert!(population.users.iter().filter(|u| u.key.is_none()).all(|u| u.cookies.len() == 1));
    let old_port = envoy.port;
    drop(envoy);
    assert!(std::net::TcpStream::connect(("127.0.0.1", old_port)).is_err(), "old Envoy still listening");
    let envoy = start_envoy(Layout::FilterMode, &config, &stable, &canary);
    let after = population.run_step(&envoy.url("/"), 30.0, 2, 2);
    println!("after the restart:  {after:?}");
    assert_eq!((after.failures, after.mixed), (0, 0), "{after:?}");
    assert_eq!((after.canary_to_stable, after.stable_to_canary), (0, 0), "users changed version: {after:?}");
    for (user, (last, cookies)) in population.users.iter().zip(&kept) {
        assert_eq!(user.last_canary, *last, "{:?}", user.key);
        assert_eq!(&user.cookies, cookies, "no new cookie for {:?}", user.key);
    }
    assert_eq!(after.users_canary, before.users_canary);
    let share = after.users_canary as f64 / after.users as f64;
    assert!((0.26..0.34).contains(&share), "{share}");
    let cookie_decisions = || {
        envoy.stat(
            "wasmcustom.canary_route_decisions_total.service.checkout.version.canary.reporter.router.reason.cookie",
        ) + envoy.stat(
            "wasmcustom.canary_route_decisions_total.service.checkout.version.stable.reporter.router.reason.cookie",
        )
    };
    // Counters reach Envoy at each VM's next tick.
    let _ = wait_until("the decisions counted", Duration::from_secs(5), || cookie_decisions() >= 2_000);
    sleep(Duration::from_millis(1_200));
    assert_eq!(cookie_decisions(), 2_000, "every keyless request after the restart replayed its cookie");
}

#[test]
fn a_live_reload_of_an_unrelated_field_keeps_every_pinned_user() {
    let config = |window: u32| {
        format!(
            r#"{{"service": "checkout",
  "split": {{"mode": "filter", "canary_percent": 30, "hash_key": [{{"header": "x-user-id"}}, {{"cookie": "session"}}]}},
  "sticky": {{"cookie": "canary_bucket", "max_age_s": 86400}},
  "metrics": {{"window_s": {window}}}}}"#
        )
    };
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &config(60), &|s| s);
    let url = envoy.url("/");
    let mut population = Population::new(2_000, 2);
    let first = population.run_step(&url, 30.0, 2, 2);
    assert_eq!((first.failures, first.mixed), (0, 0), "{first:?}");
    let steady = Steady::start(&url, 1, 100_000);
    for window in [30, 600, 1] {
        let cookies: Vec<Vec<String>> = population.users.iter().map(|u| u.cookies.clone()).collect();
        assert!(envoy.reconfigure(&config(window)), "window_s {window} rejected");
        let report = population.run_step(&url, 30.0, 2, 2);
        println!("after window_s -> {window}: {report:?}");
        assert_eq!((report.failures, report.mixed), (0, 0), "{report:?}");
        assert_eq!((report.canary_to_stable, report.stable_to_canary), (0, 0), "{report:?}");
        assert_eq!(report.users_canary, first.users_canary);
        assert!(population.users.iter().zip(&cookies).all(|(u, c)| &u.cookies == c), "a cookie was replaced");
        assert!(envoy.log().contains(&format!("canary_percent=30.00 window_s={window} ")), "reload not applied");
    }
    let (sent, failed) = steady.finish();
    println!("background traffic across 3 reloads: {sent} requests, {failed} failed");
    assert!(sent > 500);
    assert_eq!(failed, 0);
}
