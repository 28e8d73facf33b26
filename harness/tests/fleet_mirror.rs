//! Shadow testing with `gate.fleet` in real Envoys: a calling pod's sidecar sends every user to
//! the stable subset (the canary at weight 0) and mirrors the GETs it leaves to the mesh to the
//! canary subset, once with Envoy's `-shadow` host suffix (its default) and once without
//! (istiod's default since 1.28, `DISABLE_SHADOW_HOST_SUFFIX=true`). No user ever reaches the
//! canary, yet its pod's inbound observer counts every copy, the router hears the canary's
//! counts in the answers to its revision probe, and trips once the copies start failing, with
//! no user seeing an error; a healthy shadow canary, watched as long as a failing one may take
//! to trip, never trips.

use canary_harness::mesh::{prometheus_sum, Service, Subset};
use canary_harness::shadow::{MirroringRouter, Pod, ShadowHost};
use canary_harness::{wait_until, Backend, Client};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The inbound observer as `istio/services/*/observers.yaml` configure it.
const OBSERVER: &str = r#"{"service": "checkout", "role": "observer", "version_label": "role"}"#;
/// The caller's router: the comparison and a fixed error-ratio limit, on the fleet's counts.
const ROUTER: &str = r#"{"service": "checkout", "split": {"mode": "mesh"},
  "gate": {"compare": {}, "max_error_ratio": 0.2, "min_requests": 20, "fleet": {}}}"#;
const STABLE_REVISION: &str = "5f7d9c8b4";
const CANARY_REVISION: &str = "6c4b8d7f9";
/// Requests a second from the caller's users; every `POST_EVERY`-th is a POST, never copied.
const RATE: u64 = 20;
const POST_EVERY: u64 = 10;
/// How long a failing shadow canary may take to trip, and how long a healthy one is watched:
/// the trip comes 1.4 to 2.9 s after the fault on a loaded 2-core machine (the comparison, on
/// the copies of 20 GETs a second).
const RUN: Duration = Duration::from_secs(20);
/// The canary answers every other copy with a 500 once it fails.
const FAULT: &str = "error_ratio=0.5";

/// The service's pods (two stable, one canary) and the caller's mirroring sidecar.
struct Shadow {
    service: Service,
    stable_apps: Vec<Backend>,
    canary_app: Backend,
    stable_pods: Vec<Pod>,
    canary_pod: Pod,
    router: MirroringRouter,
}

impl Shadow {
    fn start(host: ShadowHost) -> Shadow {
        let service = Service::checkout();
        let stable_apps = vec![Backend::start("stable", &[]), Backend::start("stable", &[])];
        let canary_app = Backend::start("canary", &[]);
        let stable_pods: Vec<Pod> = stable_apps
            .iter()
            .map(|app| Pod::start(&service, STABLE_REVISION, Subset::Stable, app.port, OBSERVER))
            .collect();
        let canary_pod = Pod::start(&service, CANARY_REVISION, Subset::Canary, canary_app.port, OBSERVER);
        let stable: Vec<u16> = stable_pods.iter().map(|p| p.port).collect();
        let router = MirroringRouter::caller_sidecar(&service, "frontend", ROUTER, (&stable, &[canary_pod.port]), host);
        Shadow { service, stable_apps, canary_app, stable_pods, canary_pod, router }
    }

    /// A gauge of the router's gate for the canary revision.
    fn gate(&self, metric: &str) -> u64 {
        self.router.stat(&format!("wasmcustom.{metric}.service.checkout.revision.{CANARY_REVISION}"))
    }

    fn trips(&self) -> u64 {
        self.router.stat("wasmcustom.canary_gate_trips_total.service.checkout")
    }

    /// `canary_gate_fleet_pods` of (stable, canary).
    fn fleet_pods(&self) -> (u64, u64) {
        let pods = |version: &str| {
            self.router.stat(&format!("wasmcustom.canary_gate_fleet_pods.service.checkout.version.{version}"))
        };
        (pods("stable"), pods("canary"))
    }

    /// Requests and 5xx the observer in `pod` counted for its own version and revision.
    fn observed(pod: &Pod) -> (u64, u64) {
        let exposition = pod.prometheus();
        let labels = [
            ("service", "checkout"),
            ("version", pod.role.name()),
            ("revision", &pod.revision),
            ("reporter", "observer"),
        ];
        let requests = prometheus_sum(&exposition, "canary_requests_total", &labels).unwrap_or(0.0);
        let mut errors = labels.to_vec();
        errors.push(("code_class", "5xx"));
        let errors = prometheus_sum(&exposition, "canary_responses_total", &errors).unwrap_or(0.0);
        (requests as u64, errors as u64)
    }

    /// The router's log lines containing `text`.
    fn log_lines(&self, text: &str) -> Vec<String> {
        self.router.log().lines().filter(|l| l.contains(text)).map(str::to_string).collect()
    }
}

/// What one user request came back with.
#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    status: u16,
    served_by: Option<String>,
    version: Option<String>,
    revision: Option<String>,
    reason: Option<String>,
    /// A fleet report or tag reached the client.
    leaked: bool,
}

/// The caller's users at `RATE` requests a second, a new user each (no pin), every
/// `POST_EVERY`-th a POST; records what each saw.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(shadow: &Shadow) -> Load {
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (url, authority) = (shadow.router.url("/"), shadow.service.authority());
        let (stop_flag, record) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = thread::spawn(move || {
            let client = Client::new();
            let pause = Duration::from_millis(1000 / RATE);
            // Bounded: at most 5 minutes of requests.
            for i in 0..RATE * 300 {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let post = i % POST_EVERY == POST_EVERY - 1;
                let reply = if post {
                    client.send("POST", &url, &[("host", &authority)], b"{}")
                } else {
                    client.get(&url, &[("host", authority.as_bytes())])
                };
                let leaked =
                    reply.header("endpoint-load-metrics").is_some() || reply.header("x-canary-gate-fleet").is_some();
                let entry = Seen {
                    method: if post { "POST" } else { "GET" },
                    status: reply.status,
                    served_by: reply.served_by.clone(),
                    version: reply.version.clone(),
                    revision: reply.header("x-canary-revision").map(str::to_string),
                    reason: reply.reason.clone(),
                    leaked,
                };
                record.lock().unwrap().push(entry);
                thread::sleep(pause.saturating_sub(started.elapsed()));
            }
        });
        Load { stop, seen, thread: Some(thread) }
    }

    /// What the requests so far saw.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops; what every request saw.
    fn finish(mut self) -> Vec<Seen> {
        self.halt();
        self.seen()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Every user was answered 200 by a stable pod, through the router, with nothing of the fleet.
fn assert_all_on_stable(seen: &[Seen]) {
    for s in seen {
        let from_stable = s.status == 200
            && s.served_by.as_deref() == Some("stable")
            && s.version.as_deref() == Some("stable")
            && s.revision.as_deref() == Some(STABLE_REVISION);
        assert!(from_stable && !s.leaked, "a user saw something other than stable: {s:?}");
    }
}

fn count(seen: &[Seen], method: &str) -> u64 {
    seen.iter().filter(|s| s.method == method).count() as u64
}

/// The `N` of `(N canary requests in the gate window` in a trip line.
fn judged_requests(line: &str) -> Option<u64> {
    line.split(" canary requests in the gate window").next()?.rsplit('(').next()?.parse().ok()
}

fn run(host: ShadowHost) {
    let shadow = Shadow::start(host);
    let authority = shadow.service.authority();

    // The router hears the stable pods in their responses and the canary pod in the probe's
    // answers, and judges the fleet: `ok`, not `inconclusive`, though it routed no canary request.
    let load = Load::start(&shadow);
    let took = wait_until("the router judges 2 stable pods and 1 canary pod", Duration::from_secs(30), || {
        shadow.fleet_pods() == (2, 1) && shadow.gate("canary_gate_state") == 0
    });
    println!("{host:?}: the fleet's counts judged {took:?} after the load started");
    let judging = shadow.log_lines("checkout: the gate judges the fleet's counts (");
    assert_eq!(judging.len(), 1, "{judging:?}");
    let learned = shadow.log_lines(&format!("the canary subset is now served by revision {CANARY_REVISION}"));
    assert_eq!(learned.len(), 1, "the probe's answer names the canary revision: {learned:?}");

    // A healthy shadow canary, watched as long as a failing one may take to trip.
    let watched = Instant::now();
    while watched.elapsed() < RUN {
        let state = (shadow.gate("canary_gate_tripped"), shadow.gate("canary_gate_state"), shadow.fleet_pods());
        assert_eq!(
            state,
            (0, 0, (2, 1)),
            "healthy shadow canary after {:?}: (tripped, state, pods)",
            watched.elapsed()
        );
        thread::sleep(Duration::from_millis(250));
    }
    let healthy = load.finish();
    assert_all_on_stable(&healthy);
    let (gets, posts) = (count(&healthy, "GET"), count(&healthy, "POST"));
    assert!(gets >= RATE * RUN.as_secs() / 2, "load too thin: {gets} GETs");
    assert_eq!(shadow.trips(), 0, "{:?}", shadow.log_lines("gate tripped"));

    // Every GET reached the canary as a copy with the authority the mirror policy gives it, and
    // the canary's observer counted each one (the revision probes it answers itself are not
    // requests of the service); no POST was copied.
    wait_until("the canary pod counts every copy", Duration::from_secs(10), || {
        Shadow::observed(&shadow.canary_pod) == (gets, 0) && shadow.canary_app.requests() == gets
    });
    let copies = shadow.canary_pod.authorities("/");
    let copied_as = host.of(&authority);
    assert_eq!(copies.len() as u64, gets, "the canary pod's access log");
    assert!(copies.iter().all(|a| *a == copied_as), "copies of {authority} arrive as {copied_as}: {copies:?}");
    let stable_observed: u64 = shadow.stable_pods.iter().map(|p| Shadow::observed(p).0).sum();
    let stable_served: u64 = shadow.stable_apps.iter().map(Backend::requests).sum();
    assert_eq!((stable_observed, stable_served), (gets + posts, gets + posts));
    let probes = shadow.canary_pod.authorities("/__canary/revision").len() as u64;
    assert!(probes >= RUN.as_secs(), "{probes} probes of the canary in {RUN:?}");
    println!("{host:?}: healthy for {RUN:?}: {gets} GETs copied as {copied_as}, {posts} POSTs not, {probes} probes");

    // The canary starts failing half of its copies.
    let load = Load::start(&shadow);
    wait_until("the router judges the fleet again", Duration::from_secs(10), || shadow.fleet_pods() == (2, 1));
    shadow.canary_app.configure(FAULT);
    let took = wait_until("the router trips the shadow canary", RUN, || shadow.gate("canary_gate_tripped") == 1);
    println!("{host:?}: fault to trip {took:?}");
    let line = shadow.log_lines("gate tripped for checkout").pop().unwrap_or_default();
    println!("{host:?}: {line}");
    assert!(line.contains(&format!("(revision {CANARY_REVISION})")), "{line}");
    assert!(line.contains("the fleet's, 2 stable and 1 canary pods"), "{line}");
    let judged = judged_requests(&line).unwrap_or_else(|| panic!("no canary request count: {line}"));
    let sent = count(&load.seen(), "GET") + gets;
    assert!(judged > 0 && judged <= sent, "{judged} canary requests judged, {sent} copies sent: {line}");
    assert!(Shadow::observed(&shadow.canary_pod).1 > 0, "the canary's observer counted no 5xx");

    // Each worker adopts the verdict a quarter period after it is published; from then on its
    // users go to stable with reason `gate`, which the mirror route does not match: nothing more
    // is copied.
    let recent = RATE as usize;
    wait_until("the users are routed by the gate", Duration::from_secs(10), || {
        let seen = load.seen();
        seen.len() > recent && seen[seen.len() - recent..].iter().all(|s| s.reason.as_deref() == Some("gate"))
    });
    let (copied, from) = (shadow.canary_app.requests(), load.seen().len());
    thread::sleep(Duration::from_secs(2));
    let faulty = load.finish();
    assert_eq!(shadow.canary_app.requests(), copied, "copies after the trip");
    assert!(faulty[from..].iter().all(|s| s.reason.as_deref() == Some("gate")), "{:?}", &faulty[from..]);
    assert_all_on_stable(&faulty);
    assert_eq!((shadow.gate("canary_gate_tripped"), shadow.trips()), (1, 1));
}

#[test]
fn a_mirrored_canary_with_the_shadow_host_suffix_is_counted_and_tripped_through_the_probe() {
    run(ShadowHost::Suffixed);
}

#[test]
fn a_mirrored_canary_without_the_shadow_host_suffix_is_counted_and_tripped_through_the_probe() {
    run(ShadowHost::Unchanged);
}
