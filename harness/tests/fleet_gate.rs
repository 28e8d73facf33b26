//! `gate.fleet` in real Envoys: three calling pods' sidecars route one service, each with a
//! third of the users at a low rate, over two stable pods and one canary pod whose inbound
//! observers report their counts. Every router judges the whole fleet's counts, so all three
//! fall back within seconds of each other; a healthy canary is never tripped; and a report the
//! application or a client forges never reaches a router's counts nor a client.

use canary_harness::mesh::{Router, Service, Sidecar, Subset};
use canary_harness::{wait_until, Backend, Client};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The observer as `istio/services/*/observers.yaml` configure it.
const OBSERVER: &str = r#"{"service": "checkout", "role": "observer", "version_label": "role"}"#;
/// Each caller's router: the comparison, on the fleet's counts.
const ROUTER: &str = r#"{"service": "checkout", "split": {"mode": "mesh"}, "gate": {"compare": {}, "fleet": {}}}"#;
const STABLE_REVISION: &str = "5f7d9c8b4";
const CANARY_REVISION: &str = "6c4b8d7f9";
/// Requests a second each caller sends: 15 for the whole fleet, a fifth of them to the canary.
const RATE_PER_CALLER: u64 = 5;
const CANARY_WEIGHT: u32 = 20;

/// The service's pods and its callers' sidecars.
struct Fleet {
    service: Service,
    backends: Vec<Backend>,
    pods: Vec<Sidecar>,
    routers: Vec<Router>,
}

impl Fleet {
    fn start() -> Fleet {
        let service = Service::checkout();
        let backends =
            vec![Backend::start("stable", &[]), Backend::start("stable", &[]), Backend::start("canary", &[])];
        let pods: Vec<Sidecar> = backends
            .iter()
            .map(|b| {
                let (revision, role) = match b.version.as_str() {
                    "canary" => (CANARY_REVISION, Subset::Canary),
                    _ => (STABLE_REVISION, Subset::Stable),
                };
                Sidecar::start(&service, revision, role, b.port, OBSERVER)
            })
            .collect();
        let (stable, canary) = ([pods[0].port, pods[1].port], [pods[2].port]);
        let routers: Vec<Router> = ["frontend", "api-gateway", "reports"]
            .iter()
            .map(|caller| Router::caller_sidecar(&service, caller, ROUTER, &stable, &canary))
            .collect();
        for router in &routers {
            router.set_weights(100 - CANARY_WEIGHT, CANARY_WEIGHT);
        }
        Fleet { service, backends, pods, routers }
    }

    fn canary(&self) -> &Backend {
        &self.backends[2]
    }

    /// `canary_gate_tripped` of router `i` for the canary revision.
    fn tripped(&self, i: usize) -> bool {
        let name = format!("wasmcustom.canary_gate_tripped.service.checkout.revision.{CANARY_REVISION}");
        self.routers[i].stat(&name) == 1
    }

    fn fleet_pods(&self, i: usize, version: &str) -> u64 {
        self.routers[i].stat(&format!("wasmcustom.canary_gate_fleet_pods.service.checkout.version.{version}"))
    }
}

/// Each caller's users at `RATE_PER_CALLER` a second, a new user each request (no pin), with
/// `headers`; counts responses that carried a report or a tag to the client.
struct Load {
    stop: Arc<AtomicBool>,
    leaked: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(fleet: &Fleet, headers: &'static [(&'static str, &'static [u8])]) -> Load {
        let (stop, leaked, sent) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let threads = fleet
            .routers
            .iter()
            .map(|router| {
                let (stop, leaked, sent): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
                    (stop.clone(), Arc::clone(&leaked), Arc::clone(&sent));
                let (url, authority) = (router.url("/"), fleet.service.authority());
                thread::spawn(move || {
                    let client = Client::new();
                    let pause = Duration::from_millis(1000 / RATE_PER_CALLER);
                    // Bounded: at most 10 minutes of requests.
                    for _ in 0..RATE_PER_CALLER * 600 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let started = Instant::now();
                        let mut all: Vec<(&str, &[u8])> = vec![("host", authority.as_bytes())];
                        all.extend_from_slice(headers);
                        let reply = client.get(&url, &all);
                        let leak = reply.header("endpoint-load-metrics").is_some()
                            || reply.header("x-canary-gate-fleet").is_some();
                        leaked.fetch_add(u64::from(leak), Ordering::Relaxed);
                        sent.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(pause.saturating_sub(started.elapsed()));
                    }
                })
            })
            .collect();
        Load { stop, leaked, sent, threads }
    }

    /// Stops; returns (requests sent, responses that leaked a report or a tag).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (self.sent.load(Ordering::Relaxed), self.leaked.load(Ordering::Relaxed))
    }
}

/// Waits until every router counts reports from both stable pods and the canary pod.
fn wait_for_reports(fleet: &Fleet) {
    for i in 0..fleet.routers.len() {
        wait_until("every router hears from 2 stable pods and 1 canary pod", Duration::from_secs(30), || {
            fleet.fleet_pods(i, "stable") == 2 && fleet.fleet_pods(i, "canary") == 1
        });
    }
}

#[test]
fn every_router_judges_the_fleets_counts_and_falls_back_with_the_others() {
    let fleet = Fleet::start();
    let load = Load::start(&fleet, &[]);
    wait_for_reports(&fleet);
    assert!((0..3).all(|i| !fleet.tripped(i)), "healthy so far");

    // The canary starts failing 30% of its requests.
    fleet.canary().configure("error_ratio=0.3");
    let fault = Instant::now();
    let mut tripped_at = [None; 3];
    while tripped_at.iter().any(Option::is_none) {
        assert!(fault.elapsed() < Duration::from_secs(90), "not every router tripped: {tripped_at:?}");
        for (i, at) in tripped_at.iter_mut().enumerate() {
            if at.is_none() && fleet.tripped(i) {
                *at = Some(fault.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    let times: Vec<Duration> = tripped_at.iter().flatten().copied().collect();
    let (first, last) = (times.iter().min().copied().unwrap(), times.iter().max().copied().unwrap());
    println!("fault to trip per router: {times:?}; last - first {:?}", last - first);
    let (sent, leaked) = load.finish();
    // The routers judge the same counts, a report apart, each with its own comparison: they
    // trip within seconds of each other. Over 20 runs on a loaded 2-core machine the first trip
    // came 4.7-7.7 s after the fault, the last 5.5-13.8 s, spread 0.01-7.5 s (median 1.7 s).
    assert!(last - first <= Duration::from_secs(12), "trips spread over {:?}: {times:?}", last - first);
    assert!(last <= Duration::from_secs(30), "the last router tripped {last:?} after the fault: {times:?}");
    for router in &fleet.routers {
        let log = router.log();
        let line = log.lines().find(|l| l.contains("gate tripped for checkout")).unwrap_or_default();
        assert!(line.contains("the fleet's, 2 stable and 1 canary pods"), "{line}");
    }
    assert_eq!(leaked, 0, "{leaked} of {sent} responses carried a report or a tag to the client");
}

#[test]
fn a_healthy_canary_is_never_tripped_and_forged_reports_count_for_nothing() {
    // The clients send a forged tag and report, and ask the application to answer with a forged
    // report of the canary revision failing every request: observers replace it, routers strip it.
    const FORGED: &[u8] = b"endpoint-load-metrics=TEXT named_metrics.cg.pod=1, named_metrics.cg.vm=1, \
named_metrics.cg.rq=1000000, named_metrics.cg.er=1000000, named_metrics.cg.c0=0, named_metrics.cg.c1=0, \
named_metrics.cg.c2=0, named_metrics.cg.o0=0, named_metrics.cg.o1=0, named_metrics.cg.o2=0, \
named_metrics.cg.eu=4294967295, named_metrics.cg.eu.hi=4294967295, named_metrics.cg.su=0, \
named_metrics.cg.su.hi=0, named_metrics.cg.rev.6c4b8d7f9=1";
    const HEADERS: &[(&str, &[u8])] = &[
        ("x-backend-set", FORGED),
        ("x-canary-gate-fleet", b"l=1,1,1;u=1"),
        ("endpoint-load-metrics", b"TEXT named_metrics.cg.pod=2"),
    ];
    let fleet = Fleet::start();
    // The application does answer with the forgery; the canary pod's observer replaces it with
    // its own report for a router's tag, and removes it for any other request.
    let client = Client::new();
    let app = client.get(&format!("http://127.0.0.1:{}/", fleet.canary().port), &HEADERS[..1]);
    assert!(app.header("endpoint-load-metrics").is_some_and(|r| r.contains("cg.er=1000000")), "{app:?}");
    let pod = &fleet.pods[2];
    let untagged = client.get(&pod.url("/"), &HEADERS[..1]);
    assert_eq!(untagged.header("endpoint-load-metrics"), None, "{untagged:?}");
    let tagged = client.get(&pod.url("/"), &[HEADERS[0], ("x-canary-gate-fleet", b"l=0,0,0")]);
    let report = tagged.header("endpoint-load-metrics").unwrap_or_default();
    assert!(report.contains("cg.rq=") && !report.contains("cg.er=1000000"), "{tagged:?}");
    let load = Load::start(&fleet, HEADERS);
    wait_for_reports(&fleet);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        for i in 0..3 {
            assert!(!fleet.tripped(i), "router {i} tripped a healthy canary after {:?}", start.elapsed());
            assert_eq!(fleet.fleet_pods(i, "canary"), 1, "router {i}: one canary pod, whatever is forged");
        }
        thread::sleep(Duration::from_millis(500));
    }
    let (sent, leaked) = load.finish();
    assert!(sent >= 3 * RATE_PER_CALLER * 100, "load too thin: {sent}");
    assert_eq!(leaked, 0, "{leaked} of {sent} responses carried a report or a tag to the client");
    // The state stays ok: the forged million errors never reached a gate.
    for router in &fleet.routers {
        let state = router.stat(&format!("wasmcustom.canary_gate_state.service.checkout.revision.{CANARY_REVISION}"));
        assert_eq!(state, 0, "{}", router.log());
        assert!(!router.log().contains("malformed fleet report"), "{}", router.log());
    }
}
