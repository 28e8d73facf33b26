//! A service's fleet in real Envoys, for `gate.fleet`: the sidecars of N calling pods, each a
//! mesh-mode router ([`Router::caller_sidecar`]) routing its own users to the service, over the
//! service's pods, each an inbound observer ([`Sidecar`]) in front of its application (a
//! [`Backend`]). The observers report their counts to every router that tags its requests;
//! routers with `gate.fleet` judge them.
//!
//! [`Fleet::start`] starts it all for a router configuration; [`Load`] drives each router's users
//! at a fixed rate and records what they saw; [`Fleet::fail_canary`] injects the canary's fault
//! at a known instant and [`Fleet::trip_times`] reads when each router tripped (its
//! `canary_gate_tripped` gauge, polled every 20 ms; the workers act on a trip within a
//! quarter of an evaluation period). All on 127.0.0.1, every process stopped on drop.
//!
//! ```no_run
//! use canary_harness::fleet::{router_config, Fleet, FleetOptions, Load, LoadOptions};
//! use std::time::Duration;
//!
//! let router = router_config("checkout", r#"{"compare": {}, "fleet": {}}"#);
//! let fleet = Fleet::start(&FleetOptions { router_json: &router, ..FleetOptions::default() });
//! let load = Load::start(&fleet, &LoadOptions::default());
//! fleet.wait_for_reports(Duration::from_secs(30)); // routers with `fleet` only
//! let fault = fleet.fail_canary(0.3);
//! let times = fleet.trip_times(fault, Duration::from_secs(180)); // per router, after the fault
//! let events = load.finish();
//! ```

use crate::mesh::{Router, Service, Sidecar, Subset};
use crate::traffic::keep_cookies;
use crate::{Backend, Client};
pub use canary_gate::measure::report::{split_answer, Report, Tag, REPORT_HEADER, TAG_HEADER};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The stable pods' `rollouts-pod-template-hash`.
pub const STABLE_REVISION: &str = "5f7d9c8b4";
/// The canary pods'.
pub const CANARY_REVISION: &str = "6c4b8d7f9";
/// The observers' revision probe path (canary-gate's default `revision_probe_path`).
pub const PROBE_PATH: &str = "/__canary/revision";

/// A mesh-mode router configuration of `service` with the `gate` object given as JSON.
pub fn router_config(service: &str, gate: &str) -> String {
    format!(r#"{{"service": "{service}", "split": {{"mode": "mesh"}}, "gate": {gate}}}"#)
}

/// The inbound observer as `istio/services/*/observers.yaml` configure it.
pub fn observer_config(service: &str) -> String {
    format!(r#"{{"service": "{service}", "role": "observer", "version_label": "role"}}"#)
}

/// What [`Fleet::start`] starts.
pub struct FleetOptions<'a> {
    /// The service the pods serve.
    pub service: Service,
    /// The workloads calling it: one router (a caller pod's sidecar) each.
    pub callers: &'a [&'a str],
    /// Every router's canary-gate configuration.
    pub router_json: &'a str,
    /// Pods of the stable revision, and of the canary one.
    pub pods: [usize; 2],
    /// The canary subset's weight in percent.
    pub canary_weight: u32,
    /// Flags of every application (`canary-backend`), e.g. `["--error-ratio", "0.01"]`.
    pub backend_args: &'a [&'a str],
}

impl Default for FleetOptions<'_> {
    fn default() -> Self {
        FleetOptions {
            service: Service::checkout(),
            callers: &["frontend", "api-gateway", "reports"],
            router_json: "",
            pods: [2, 1],
            canary_weight: 20,
            backend_args: &[],
        }
    }
}

/// One pod of the service: its application and its sidecar.
pub struct Pod {
    /// The application, answering as its subset's name (`stable`, `canary`).
    pub backend: Backend,
    /// Its sidecar, with the inbound observer.
    pub sidecar: Sidecar,
}

/// A running fleet: the pods of both revisions and the callers' routers.
pub struct Fleet {
    /// The service.
    pub service: Service,
    /// The stable revision's pods.
    pub stable: Vec<Pod>,
    /// The canary revision's pods.
    pub canary: Vec<Pod>,
    /// One router per caller, in `FleetOptions::callers` order.
    pub routers: Vec<Router>,
}

impl Fleet {
    /// Starts the pods, then the routers (each with the canary at `canary_weight`); Envoys of
    /// a kind start side by side.
    pub fn start(options: &FleetOptions<'_>) -> Fleet {
        let service = &options.service;
        let observer = observer_config(&service.name);
        let start_pods = |subset: Subset, revision: &str, n: usize| -> Vec<Pod> {
            thread::scope(|s| {
                let started: Vec<_> = (0..n)
                    .map(|_| {
                        s.spawn(|| {
                            let backend = Backend::start(subset.name(), options.backend_args);
                            let sidecar = Sidecar::start(service, revision, subset, backend.port, &observer);
                            Pod { backend, sidecar }
                        })
                    })
                    .collect();
                started.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a pod did not start"))).collect()
            })
        };
        let [stable_pods, canary_pods] = options.pods;
        let stable = start_pods(Subset::Stable, STABLE_REVISION, stable_pods);
        let canary = start_pods(Subset::Canary, CANARY_REVISION, canary_pods);
        let ports = |pods: &[Pod]| pods.iter().map(|p| p.sidecar.port).collect::<Vec<u16>>();
        let (stable_ports, canary_ports) = (ports(&stable), ports(&canary));
        let routers = thread::scope(|s| {
            let started: Vec<_> = options
                .callers
                .iter()
                .map(|caller| {
                    let (stable_ports, canary_ports) = (&stable_ports, &canary_ports);
                    s.spawn(move || {
                        let router =
                            Router::caller_sidecar(service, caller, options.router_json, stable_ports, canary_ports);
                        router.set_weights(100 - options.canary_weight, options.canary_weight);
                        router
                    })
                })
                .collect();
            started.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a router did not start"))).collect()
        });
        Fleet { service: service.clone(), stable, canary, routers }
    }

    fn gauge(&self, router: usize, metric: &str, label: &str) -> u64 {
        self.routers[router].stat(&format!("wasmcustom.{metric}.service.{}.{label}", self.service.name))
    }

    /// Whether router `i`'s gate is tripped on the canary revision (`canary_gate_tripped`).
    pub fn tripped(&self, i: usize) -> bool {
        self.gauge(i, "canary_gate_tripped", &format!("revision.{CANARY_REVISION}")) == 1
    }

    /// Router `i`'s `canary_gate_trips_total`.
    pub fn trips(&self, i: usize) -> u64 {
        self.routers[i].stat(&format!("wasmcustom.canary_gate_trips_total.service.{}", self.service.name))
    }

    /// Router `i`'s `canary_gate_fleet_pods` of stable and canary.
    pub fn fleet_pods(&self, i: usize) -> [u64; 2] {
        [Subset::Stable, Subset::Canary]
            .map(|s| self.gauge(i, "canary_gate_fleet_pods", &format!("version.{}", s.name())))
    }

    /// Waits until every router counts reports from every pod; returns how long that took.
    pub fn wait_for_reports(&self, timeout: Duration) -> Duration {
        let wanted = [self.stable.len() as u64, self.canary.len() as u64];
        let start = Instant::now();
        for i in 0..self.routers.len() {
            while self.fleet_pods(i) != wanted {
                assert!(
                    start.elapsed() < timeout,
                    "router {i} hears from {:?} pods, not {wanted:?}, after {timeout:?}\n{}",
                    self.fleet_pods(i),
                    self.routers[i].log()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        start.elapsed()
    }

    /// Every canary application starts failing `error_ratio` of its requests; returns the
    /// instant from which every one does.
    pub fn fail_canary(&self, error_ratio: f64) -> Instant {
        for pod in &self.canary {
            pod.backend.configure(&format!("error_ratio={error_ratio}"));
        }
        Instant::now()
    }

    /// Polls every router's trip gauge every 20 ms until all tripped or `timeout` passed;
    /// returns when each tripped, after `since` (`None`: not within `timeout`).
    pub fn trip_times(&self, since: Instant, timeout: Duration) -> Vec<Option<Duration>> {
        let mut times = vec![None; self.routers.len()];
        while times.iter().any(Option::is_none) && since.elapsed() < timeout {
            for (i, at) in times.iter_mut().enumerate() {
                if at.is_none() && self.tripped(i) {
                    *at = Some(since.elapsed());
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        times
    }

    /// Router `i`'s first `gate tripped` log line, if any.
    pub fn trip_line(&self, i: usize) -> Option<String> {
        let needle = format!("gate tripped for {}", self.service.name);
        self.routers[i].log().lines().find(|l| l.contains(&needle)).map(str::to_string)
    }

    /// The report `pod`'s observer answers a router's revision probe with, asked directly (the
    /// probe reaches no application and counts nowhere).
    pub fn report_of(&self, pod: &Pod) -> Report {
        let tag = Tag { report: true, stamp: Some(1), ..Tag::default() }.encode();
        let reply = Client::new().get(&pod.sidecar.url(PROBE_PATH), &[(TAG_HEADER, tag.as_bytes())]);
        let value = reply.header(REPORT_HEADER).unwrap_or_else(|| panic!("{}: no report: {reply:?}", pod.sidecar.pod));
        let (report, stamp) = split_answer(value.as_bytes());
        assert_eq!(stamp, Some(1), "{}: the stamp echoed: {value}", pod.sidecar.pod);
        Report::parse(report).unwrap_or_else(|| panic!("{}: not a report: {value}", pod.sidecar.pod))
    }

    /// Requests the canary applications answered.
    pub fn canary_served(&self) -> u64 {
        self.canary.iter().map(|p| p.backend.requests()).sum()
    }
}

/// How [`Load`] drives the routers.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Requests a second through each router.
    pub rate_per_router: f64,
    /// Users of each router at a time, taking turns; each keeps its cookies (its pin) and is
    /// replaced by a new user after `user_lifetime` requests, so new users keep arriving.
    pub users_per_router: usize,
    /// Requests a user sends before leaving.
    pub user_lifetime: u32,
    /// Extra request headers: request `n` of a router sends set `n % len` (none if empty).
    pub headers: Vec<Vec<(String, Vec<u8>)>>,
    /// The longest the load runs, whatever the test does.
    pub max_duration: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            rate_per_router: 5.0,
            users_per_router: 50,
            user_lifetime: 6,
            headers: vec![],
            max_duration: Duration::from_secs(300),
        }
    }
}

/// One response a user saw.
#[derive(Debug, Clone)]
pub struct Event {
    /// The router the user called through (index in [`Fleet::routers`]).
    pub router: usize,
    /// When the request was sent.
    pub sent: Instant,
    /// HTTP status; 0 for a transport error.
    pub status: u16,
    /// The application that answered (`stable`, `canary`), if one did.
    pub served_by: Option<String>,
    /// `x-canary-reason`.
    pub reason: Option<String>,
    /// Headers of the response no client may see: a report or a tag.
    pub leaked: Vec<(String, String)>,
    /// The tag the application received with the request, from its echo.
    pub upstream_tag: Option<String>,
}

/// Each router's users at a fixed rate, one thread per router; stopped by [`Load::finish`] or
/// after `max_duration`.
pub struct Load {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    /// Starts the users of every router of `fleet`.
    pub fn start(fleet: &Fleet, options: &LoadOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let threads = fleet
            .routers
            .iter()
            .enumerate()
            .map(|(router, r)| {
                let (stop, events, options) = (stop.clone(), events.clone(), options.clone());
                let (url, authority) = (r.url("/"), fleet.service.authority());
                thread::spawn(move || drive(router, &url, &authority, &options, &stop, &events))
            })
            .collect();
        Load { stop, events, threads }
    }

    /// What the users saw so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Stops the users; returns everything they saw.
    pub fn finish(mut self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One router's users.
fn drive(
    router: usize,
    url: &str,
    authority: &str,
    options: &LoadOptions,
    stop: &AtomicBool,
    events: &Mutex<Vec<Event>>,
) {
    let client = Client::new();
    let period = Duration::from_secs_f64(1.0 / options.rate_per_router);
    // (requests sent, cookies): users met at every age from the start, so they come and go
    // at a steady rate.
    let mut users: Vec<(u32, Vec<String>)> =
        (0..options.users_per_router.max(1)).map(|i| (i as u32 % options.user_lifetime.max(1), vec![])).collect();
    let start = Instant::now();
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < options.max_duration {
        let slot = n as usize % users.len();
        let (count, cookies) = &mut users[slot];
        let cookie = cookies.join("; ");
        let mut headers: Vec<(&str, &[u8])> = vec![("host", authority.as_bytes())];
        if !cookie.is_empty() {
            headers.push(("cookie", cookie.as_bytes()));
        }
        if !options.headers.is_empty() {
            let set = &options.headers[n as usize % options.headers.len()];
            headers.extend(set.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        }
        let sent = Instant::now();
        let reply = client.get(url, &headers);
        keep_cookies(cookies, &reply);
        *count += 1;
        if *count >= options.user_lifetime {
            *count = 0;
            cookies.clear();
        }
        let leaked =
            reply.headers.iter().filter(|(name, _)| name == REPORT_HEADER || name == TAG_HEADER).cloned().collect();
        let event = Event {
            router,
            sent,
            status: reply.status,
            served_by: reply.served_by.clone(),
            reason: reply.reason.clone(),
            leaked,
            upstream_tag: reply.upstream_header(TAG_HEADER),
        };
        if let Ok(mut events) = events.lock() {
            events.push(event);
        }
        n += 1;
        if let Some(wait) = (start + period * n).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
}

/// The (first, last) of the trip times, if every router tripped.
pub fn spread(times: &[Option<Duration>]) -> Option<(Duration, Duration)> {
    let times: Option<Vec<Duration>> = times.iter().copied().collect();
    let times = times?;
    Some((*times.iter().min()?, *times.iter().max()?))
}

/// The number of canary requests and the judged counts a trip log line names:
/// `(41 canary requests in the gate window, the fleet's, 2 stable and 1 canary pods)`
/// gives `(41, "the fleet's, 2 stable and 1 canary pods")`.
pub fn trip_counts(line: &str) -> Option<(u64, String)> {
    let (head, tail) = line.split_once(" canary requests in the gate window, ")?;
    let requests = head.rsplit('(').next()?.parse().ok()?;
    let judged = tail.split_once(')')?.0.to_string();
    Some((requests, judged))
}
