//! `gate.fleet` in real Envoys, as a mesh runs it: three calling pods' sidecars (mesh-mode
//! routers fed by file-based xDS) route one service, each for its own third of the users, 15
//! requests a second in all, 20% to the canary; the service has two stable pods and one canary
//! pod, each an inbound observer in front of its application. Every router judges the whole
//! fleet's counts, which the observers report on their responses to the routers' tagged
//! requests (`canary_harness::fleet`).
//!
//! - A canary that starts failing 30% of its requests trips every router, each judging the
//!   fleet's counts, and every router's users are on stable within moments of the first's.
//!   Typical fault-to-trip times: 4 to 7 s, the three routers within 0.05 s of each other (at
//!   most 1 s). Without `fleet`, in the same setup, each router judges its own third, and the
//!   last trips many times later (`make bench-gate`, scenario `fleet`, measures both side by
//!   side).
//! - A healthy canary, with 2% 5xx like stable, is never tripped in 2 minutes.
//! - Reports forged by the application (on its responses) or by a client (a tag and a report
//!   on its request) never reach a router's counts: no trip while the canary is healthy, the
//!   pods counted stay the real ones, and the trip a real fault then causes counts the real
//!   requests only.
//!
//! In every test no client ever receives a report or a tag, and every application receives the
//! router's own tag.

use canary_harness::fleet::{
    router_config, spread, trip_counts, Event, Fleet, FleetOptions, Load, LoadOptions, Report, Tag, REPORT_HEADER,
    TAG_HEADER,
};
use canary_harness::Client;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Every router's gate, shaped as the shipped routers' (`istio/services/*/routers.yaml`): the
/// comparison and a fixed error-ratio limit over a window sized for one router's slice, on the
/// fleet's counts. The thresholds keep the routers together: once one has tripped its users
/// leave the canary, and the others' comparisons would go on with a thinner fleet (with the
/// comparison alone, 3 of 13 runs had the last router trip 14 s after the first).
const GATE: &str = r#"{"window_s": 14, "min_requests": 20, "consecutive": 3, "max_error_ratio": 0.05,
  "compare": {}, "fleet": {}}"#;
/// `window_s` of `GATE`.
const WINDOW: Duration = Duration::from_secs(14);
/// What each trip line says it judged: both stable pods and the canary pod.
const FLEET_JUDGED: &str = "the fleet's, 2 stable and 1 canary pods";
/// The 5xx every application answers at rest.
const BASE_ERROR_RATIO: &str = "0.01";
/// The canary's fault.
const FAULT_RATIO: f64 = 0.3;
/// How long the routers may take to hear every pod.
const REPORTS_WITHIN: Duration = Duration::from_secs(30);
/// Longest a fault may take to trip every router (measured: 3.9 to 6.9 s).
const TRIP_WITHIN: Duration = Duration::from_secs(30);
/// Longest between the first router's trip and the last's. The routers evaluate at the same
/// instants on the wall clock and judge the same window a report apart; the comparison, whose
/// evidence depends on when each report arrived, may trip one an evaluation or two before the
/// thresholds trip the others. Measured in 12 runs on a 2-core machine kept busy: 6 ms to 1.0 s
/// (up to 2.5 s with a third of this gate window of traffic before the fault).
const MAX_SPREAD: Duration = Duration::from_secs(5);
/// After a router's trip shows, its workers have the verdict within a quarter of a period
/// (62 ms); a request sent this long after is routed by it.
const FALLBACK_GRACE: Duration = Duration::from_secs(1);

fn start(base_error_ratio: &str) -> Fleet {
    let router = router_config("checkout", GATE);
    Fleet::start(&FleetOptions {
        router_json: &router,
        backend_args: &["--error-ratio", base_error_ratio],
        ..FleetOptions::default()
    })
}

/// No client saw a report or a tag, and every application saw its router's own tag (no user,
/// or one of the 64 sketch bits; no latency limit: the gate has no `slow_ms` nor p95/p99 limit).
fn assert_nothing_leaked(events: &[Event]) {
    let leaked: Vec<&Event> = events.iter().filter(|e| !e.leaked.is_empty()).collect();
    assert!(leaked.is_empty(), "{} of {} responses leaked, first {:?}", leaked.len(), events.len(), leaked.first());
    let foreign: Vec<&Event> = events
        .iter()
        .filter(|e| e.served_by.is_some())
        .filter(|e| {
            let tag = e.upstream_tag.as_deref().and_then(|t| Tag::parse(t.as_bytes()));
            tag.is_none_or(|t| t.limits_us != [0; 3])
        })
        .collect();
    assert!(foreign.is_empty(), "{} applications got another tag, first {:?}", foreign.len(), foreign.first());
}

/// Every router tripped once, on the fleet's counts, and the canary requests its trip line
/// counts in the gate window are the ones the canary served then, whichever router sent them:
/// at most those of the window (with a second either side: reports arrive a little late, and
/// the window is of whole seconds), at least those well inside it. Returns the counts.
fn assert_tripped_on_the_fleets_counts(
    fleet: &Fleet,
    events: &[Event],
    fault: Instant,
    times: &[Option<Duration>],
) -> Vec<u64> {
    let served_in = |from: Instant, to: Instant| {
        let canary = events.iter().filter(|e| e.served_by.as_deref() == Some("canary"));
        canary.filter(|e| e.sent >= from && e.sent < to).count() as u64
    };
    let second = Duration::from_secs(1);
    (0..fleet.routers.len())
        .map(|i| {
            let line = fleet.trip_line(i).unwrap_or_else(|| panic!("router {i} logged no trip"));
            let (requests, judged) = trip_counts(&line).unwrap_or_else(|| panic!("router {i}: {line}"));
            assert_eq!(judged, FLEET_JUDGED, "router {i}: {line}");
            assert_eq!(fleet.trips(i), 1, "router {i} tripped once");
            let tripped = fault + times[i].unwrap_or_else(|| panic!("router {i} did not trip"));
            let most = served_in(tripped - WINDOW - 2 * second, tripped + second);
            let least = served_in(tripped - WINDOW + 2 * second, tripped - 2 * second);
            assert!((least..=most).contains(&requests), "router {i}: {requests} not in {least}..={most}: {line}");
            requests
        })
        .collect()
}

/// Each router's users were on stable, sent back by the gate, from `FALLBACK_GRACE` after its
/// trip showed; returns how many requests that checks.
fn assert_fell_back(events: &[Event], fault: Instant, times: &[Option<Duration>]) -> usize {
    let mut checked = 0;
    for (i, at) in times.iter().enumerate() {
        let from = fault + at.unwrap_or_default() + FALLBACK_GRACE;
        let after: Vec<&Event> = events.iter().filter(|e| e.router == i && e.sent >= from).collect();
        assert!(after.len() >= 5, "router {i}: only {} requests after its trip", after.len());
        let wrong: Vec<&&Event> = after
            .iter()
            .filter(|e| e.served_by.as_deref() != Some("stable") || e.reason.as_deref() != Some("gate"))
            .collect();
        assert!(wrong.is_empty(), "router {i}: {} requests not sent back, first {:?}", wrong.len(), wrong.first());
        checked += after.len();
    }
    checked
}

#[test]
fn a_failing_canary_trips_every_router_on_the_fleets_counts_within_moments_of_each_other() {
    let fleet = start(BASE_ERROR_RATIO);
    let load = Load::start(&fleet, &LoadOptions::default());
    let heard = fleet.wait_for_reports(REPORTS_WITHIN);
    for i in 0..fleet.routers.len() {
        assert_eq!(fleet.fleet_pods(i), [2, 1], "router {i} hears both stable pods and the canary pod");
    }
    // A gate window of healthy traffic first: the fleet's window holds the canary's volume.
    sleep(WINDOW);
    assert!((0..fleet.routers.len()).all(|i| !fleet.tripped(i)), "a trip before the fault");
    let served_before = fleet.canary_served();

    let fault = fleet.fail_canary(FAULT_RATIO);
    let times = fleet.trip_times(fault, TRIP_WITHIN);
    let (first, last) = spread(&times).unwrap_or_else(|| panic!("not every router tripped: {times:?}"));
    // Requests after the last trip, to see every router's users on stable.
    sleep(FALLBACK_GRACE + Duration::from_secs(2));
    let events = load.finish();
    let requests = assert_tripped_on_the_fleets_counts(&fleet, &events, fault, &times);
    println!(
        "reports heard from every pod after {heard:?}; fault to trip per router {times:?}, last - first {:?}; \
         canary requests in their gate windows {requests:?}",
        last - first
    );
    assert!(last - first <= MAX_SPREAD, "the routers tripped {:?} apart: {times:?}", last - first);
    // The canary served its users before the fault, and failed a share of them after.
    assert!(served_before >= 3, "the canary served {served_before} requests before the fault");
    let failed = events.iter().filter(|e| e.sent >= fault && e.served_by.as_deref() == Some("canary"));
    assert!(failed.filter(|e| e.status == 500).count() >= 1, "no canary 5xx reached the users");
    let before: Vec<&Event> = events.iter().filter(|e| e.sent < fault).collect();
    assert!(before.iter().all(|e| e.reason.as_deref() != Some("gate")), "a user sent back before the fault");
    let checked = assert_fell_back(&events, fault, &times);
    assert_nothing_leaked(&events);
    println!("{} requests, {checked} of them after the trips all on stable", events.len());
}

#[test]
fn a_healthy_canary_is_never_tripped() {
    // Both versions answer 2% 5xx: the comparison weighs bad responses on both sides.
    let fleet = start("0.02");
    let load = Load::start(&fleet, &LoadOptions::default());
    fleet.wait_for_reports(REPORTS_WITHIN);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        for i in 0..fleet.routers.len() {
            assert!(!fleet.tripped(i), "router {i} tripped after {:?}\n{}", start.elapsed(), fleet.routers[i].log());
        }
        sleep(Duration::from_millis(500));
    }
    // Read while the load runs: without it reports stop, and pods expire.
    for (i, router) in fleet.routers.iter().enumerate() {
        assert_eq!(fleet.trips(i), 0, "router {i}");
        assert_eq!(fleet.fleet_pods(i), [2, 1], "router {i}");
        let log = router.log();
        assert!(log.contains("the gate judges the fleet's counts ("), "router {i}: {log}");
        assert!(!log.contains("no fresh fleet reports"), "router {i} judged its own requests a while: {log}");
    }
    let events = load.finish();
    // The run was real: the canary served its share and answered some 5xx.
    let (canary, errors) = fleet.canary.iter().fold((0, 0), |(n, e), pod| {
        let state = Client::new().get(&format!("http://127.0.0.1:{}/_backend/state", pod.backend.port), &[]).json();
        (n + state["requests"].as_u64().unwrap_or(0), e + state["errors"].as_u64().unwrap_or(0))
    });
    let share = canary as f64 / events.len() as f64;
    println!("{} requests, {canary} served by the canary ({:.1}%), {errors} of them 5xx", events.len(), share * 100.0);
    assert!(events.len() >= 1_500, "load too thin: {} requests", events.len());
    assert!((0.1..=0.3).contains(&share) && errors >= 3, "canary: {canary} requests, {errors} 5xx");
    assert_nothing_leaked(&events);
}

/// `report` with its counts raised by a million requests, every one an error of 64 users.
fn inflated(report: &Report) -> Report {
    Report {
        requests: report.requests + 1_000_000,
        errors: report.errors + 1_000_000,
        error_users: u64::MAX,
        ..*report
    }
}

#[test]
fn forged_reports_never_reach_a_routers_counts_nor_a_client() {
    let fleet = start(BASE_ERROR_RATIO);
    let canary_pod = &fleet.canary[0];
    // The forgeries a router would take if they reached it: the canary pod's own VM a million
    // errors further on, and a second canary pod failing everything.
    let real = fleet.report_of(canary_pod);
    let same_vm = inflated(&real).encode();
    let other_pod = inflated(&Report { pod: real.pod ^ 1, vm: real.vm ^ 1, requests: 0, errors: 0, ..real }).encode();
    for forged in [&same_vm, &other_pod] {
        assert!(Report::parse(forged.as_bytes()).is_some(), "a well-formed report: {forged}");
    }
    // Without a router's tag the observer removes the application's report; with a tag (a
    // router's or a client's, it cannot tell) it answers its own counts in its place.
    let client = Client::new();
    let url = canary_pod.sidecar.url("/");
    let set = |r: &str| format!("{REPORT_HEADER}={r}").into_bytes();
    let (set_same, set_other) = (set(&same_vm), set(&other_pod));
    let asked = [("x-backend-set", set_same.as_slice()), ("x-backend-set", set_other.as_slice())];
    let reply = client.get(&url, &asked);
    assert_eq!((reply.status, reply.header(REPORT_HEADER)), (200, None), "{reply:?}");
    let tag = Tag { report: true, user: Some(1), limits_us: [1, 1, 1], stamp: None }.encode();
    let reply = client.get(&url, &[asked[0], asked[1], (TAG_HEADER, tag.as_bytes())]);
    let reports: Vec<&str> =
        reply.headers.iter().filter(|(n, _)| n == REPORT_HEADER).map(|(_, v)| v.as_str()).collect();
    let answered = reports.first().and_then(|r| Report::parse(r.as_bytes()));
    assert!(reports.len() == 1 && answered.is_some_and(|r| r.follows(&real)), "{reports:?}");
    assert!(answered.is_some_and(|r| r.requests < 1_000), "{reports:?}");

    // Through the routers: every application answers both forgeries, and every client sends
    // its own tag and a report.
    let forged_request = vec![
        ("x-backend-set".to_string(), set_same.clone()),
        ("x-backend-set".to_string(), set_other.clone()),
        (TAG_HEADER.to_string(), tag.clone().into_bytes()),
        (REPORT_HEADER.to_string(), same_vm.clone().into_bytes()),
    ];
    let options = LoadOptions { headers: vec![forged_request], ..LoadOptions::default() };
    let load = Load::start(&fleet, &options);
    fleet.wait_for_reports(REPORTS_WITHIN);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        for i in 0..fleet.routers.len() {
            assert!(!fleet.tripped(i), "router {i} tripped on a forgery\n{}", fleet.routers[i].log());
            assert_eq!(fleet.fleet_pods(i), [2, 1], "router {i} counts a forged pod");
        }
        sleep(Duration::from_millis(250));
    }

    // A real fault, forgeries still on every response: the trips count the real requests.
    let fault = fleet.fail_canary(FAULT_RATIO);
    let times = fleet.trip_times(fault, TRIP_WITHIN);
    assert!(spread(&times).is_some(), "not every router tripped: {times:?}");
    sleep(FALLBACK_GRACE + Duration::from_secs(2));
    let events = load.finish();
    let requests = assert_tripped_on_the_fleets_counts(&fleet, &events, fault, &times);
    println!("fault to trip per router {times:?}; canary requests in their gate windows {requests:?}");
    for (i, router) in fleet.routers.iter().enumerate() {
        assert!(!router.log().contains("malformed fleet report"), "router {i}: {}", router.log());
    }
    assert_fell_back(&events, fault, &times);
    assert_nothing_leaked(&events);
}
