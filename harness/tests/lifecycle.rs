//! A real rollout, start to finish, as a cluster runs it: the test plays Argo Rollouts and the
//! Istio control plane against real Envoys. unified-profile is internal (no public name, no
//! gateway): its VirtualService, bound to `mesh`, routes in the sidecars of the pods that call
//! it. So each caller is a pod, one of corp-cockpit and one of api-gateway: a sidecar Envoy
//! running the shipped client-side router of unified-profile for that caller (mesh mode, its
//! own WasmPlugin), its outbound listener, routes, subset clusters and endpoints fed by
//! file-based xDS shaped as istiod generates them for the caller's sidecar. Each revision of
//! unified-profile is a pod too: a sidecar Envoy, its node metadata carrying the pod-template
//! hash, with the shipped inbound observer in front of a backend and the shipped outbound
//! observer on an outbound listener carrying the pod's own calls to the HRIS (a backend
//! answering for the host of the shipped ServiceEntry). A real Prometheus scrapes every proxy,
//! and the shipped AnalysisTemplates are evaluated with Argo's run semantics
//! (`canary_harness::analysis_run`) against it: their router queries sum both callers' series.
//!
//! The traffic is what the templates measure in a cluster: each caller's own users, calling
//! `http://unified-profile:3003` through their caller's sidecar (half the load each), whose
//! responses the service's cache answered 11 times in 12 (`x-cache: HIT`, set by the backend
//! on the user's request: `cache-hit-rate`), and every live pod's HRIS fetches, a few a second
//! (`external-fetch-success-rate`, by the pod's revision); a pod starts fetching when its
//! ReplicaSet comes up and stops when it is scaled down. The test's Argo moves the weights and
//! endpoints in both callers' sidecars, as istiod pushes the VirtualService and the
//! DestinationRule's subsets to every sidecar.
//!
//! Time runs `SPEED` times faster than in the Rollout: pauses, the abort scale-down delay,
//! analysis intervals and initial delays, and the queries' rate windows are divided by it. The
//! proxies run in real time, so the gate's thresholds and the volume floors hold as shipped.
//!
//! Four revisions follow each other behind the two subset names, with many users arriving and
//! leaving under steady load:
//! (a) r2 rolls out through the Rollout's steps and is promoted; its cache hit rate and HRIS
//!     fetch success rate pass at every measurement, from the first (at least 5 of each);
//! (b) r3 fails at 30 % 5xx on its inbound requests (its HRIS fetches stay healthy): a
//!     caller's gate trips, the analysis fails, Argo aborts and scales r3 to 0 (the shipped
//!     routers judge the fleet's counts, both callers' requests as r3's observer reports them:
//!     the other trips too if it convicts r3 in time; if not, its users pinned to r3 meet
//!     Envoy's 503 once, as in (d));
//! (c) r4 rolls out next, with no configuration change, and is judged afresh (the same two
//!     metrics pass at every measurement);
//! (d) r5 reaches its first step and is aborted by hand; no gate trip.
//!
//! What users see holds for each caller's users: no pin ahead of the weights, each canary
//! served some, everyone on the promoted revision at the end, a handful of Envoy's own 503s at
//! most, right after an aborted canary's scale-down. Every HRIS fetch is answered, and each
//! pod's outbound observer counted exactly the fetches it carried, under the pod's revision
//! and `direction="outbound"`.

use canary_harness::analysis::{background_run, evaluate, load_rollouts, load_templates, plugin_config, Phase};
use canary_harness::analysis_run::{AnalysisRun, RunPhase};
use canary_harness::mesh::{prometheus_sum, Outbound, Router, Service, Sidecar, Subset};
use canary_harness::prometheus::Prometheus;
use canary_harness::traffic::keep_cookies;
use canary_harness::{root, wait_until, Backend, Client};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// The tier-1 service whose shipped manifests are played.
const SERVICE: &str = "unified-profile";
/// The workloads whose pods call it: one pod each, running the shipped client-side router
/// `canary-gate-router-unified-profile-from-<caller>`.
const CALLERS: [&str; 2] = ["corp-cockpit", "api-gateway"];
/// How much faster than the Rollout's clock the test runs.
const SPEED: u32 = 30;
/// Requests a second of the whole population (both callers' users).
const RATE: u64 = 120;
/// Load threads; each sends the requests of users of every caller in turn.
const LOAD_THREADS: u64 = 3;
/// Users at a time per load thread, of each caller in turn: about one request a second each.
const USERS_PER_THREAD: u64 = 40;
/// Requests a user sends before leaving (a new user takes its place): new users keep arriving,
/// as they do in production, so the mesh's weights reach the canary.
const USER_LIFETIME: u32 = 12;
/// Between a rollout's end and the next one's start.
const SETTLE: Duration = Duration::from_secs(3);
/// Envoy's own 503s (no healthy upstream) allowed after a manual abort, per caller.
const MAX_ENVOY_FAILURES: usize = 10;
/// Users of each caller at least pinned to r5 when it is scaled to zero, and served after.
const MIN_MOVED_FROM_R5: usize = 3;
/// HRIS fetches a second each live pod makes.
const FETCHES_PER_POD: u32 = 4;
/// A user's requests its cache does not answer: the 10th of its `USER_LIFETIME` (`x-cache`
/// is HIT on the others: 11 in 12, over the 80% the template asks).
const CACHE_MISS_AT: u32 = 9;
/// The route class of the HRIS calls in the shipped outbound observer.
const HRIS_CLASS: &str = "hris";

/// A Rollout's canary steps and abort scale-down delay.
struct Plan {
    steps: Vec<Step>,
    abort_scale_down: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    SetWeight(u32),
    Pause(Duration),
}

fn plan() -> Plan {
    let path = root().join(format!("istio/services/{SERVICE}/rollout.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let canary = &docs[0]["spec"]["strategy"]["canary"];
    let steps = canary["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|s| match (s["setWeight"].as_i64(), s["pause"]["duration"].as_str()) {
            (Some(w), _) => Step::SetWeight(w as u32),
            (None, Some(d)) => Step::Pause(canary_harness::analysis::duration(d)),
            _ => panic!("step {s:?}: only setWeight and timed pauses are played"),
        })
        .collect();
    let delay = canary["abortScaleDownDelaySeconds"].as_i64().unwrap_or(30) as u64;
    Plan { steps, abort_scale_down: Duration::from_secs(delay) }
}

/// A duration of the Rollout's clock on the test's.
fn scaled(d: Duration) -> Duration {
    d / SPEED
}

/// `[5m]`-style range selectors divided by `SPEED` (at least 5 s: 5 scrapes).
fn scale_ranges(query: &str) -> String {
    let mut out = String::new();
    let mut rest = query;
    while let Some(at) = rest.find('[') {
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        let end = tail.find(']').unwrap();
        let range = canary_harness::analysis::duration(&tail[1..end]);
        out.push_str(&format!("[{}s]", (range.as_secs() / u64::from(SPEED)).max(5)));
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// One response a user saw.
#[derive(Debug, Clone)]
struct Event {
    at: Instant,
    /// The user's caller (index in `CALLERS`).
    caller: usize,
    user: u64,
    status: u16,
    /// The backend (revision) that answered, if any.
    served_by: Option<String>,
    /// The version the caller's router tagged (its `version_header`).
    version: Option<String>,
    reason: Option<String>,
}

/// One caller's pod: its sidecar, routing its calls to the service with the shipped
/// client-side router of the caller.
struct Caller {
    name: &'static str,
    sidecar: Router,
}

/// Steady load: `RATE` requests a second from users who come and go, each the user of one
/// caller, calling the service through that caller's sidecar with the service's authority.
struct Load {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Where a caller's requests go: its sidecar's URL, the Host the application sends, and the
/// headers its router tags responses with.
struct Target {
    url: String,
    host: String,
    version_header: String,
    reason_header: String,
}

impl Load {
    fn start(callers: &[Caller]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let targets: Arc<Vec<Target>> = Arc::new(
            callers
                .iter()
                .map(|c| Target {
                    url: c.sidecar.url("/"),
                    host: c.sidecar.service().authority(),
                    version_header: c.sidecar.version_header().to_string(),
                    reason_header: c.sidecar.reason_header().to_string(),
                })
                .collect(),
        );
        let threads = (0..LOAD_THREADS)
            .map(|w| {
                let (stop, events, targets) = (stop.clone(), events.clone(), targets.clone());
                thread::spawn(move || {
                    let client = Client::new();
                    let period = Duration::from_micros(1_000_000 * LOAD_THREADS / RATE);
                    // USERS_PER_THREAD at a time, each replaced after USER_LIFETIME requests by
                    // a new user of the same caller. The first users are met at every age, so
                    // users arrive and leave at a steady rate from the start.
                    let mut users: Vec<(u64, u32, Vec<String>)> =
                        (0..USERS_PER_THREAD).map(|i| (w * 1_000_000 + i, i as u32 % USER_LIFETIME, vec![])).collect();
                    let mut next_id = w * 1_000_000 + USERS_PER_THREAD;
                    let mut i = 0;
                    let start = Instant::now();
                    let mut sent = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let slot = i % users.len();
                        i += 1;
                        let caller = slot % targets.len();
                        let Target { url, host, version_header, reason_header } = &targets[caller];
                        let (id, count, cookies) = &mut users[slot];
                        let cookie = cookies.join("; ");
                        let mut headers: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
                        if !cookie.is_empty() {
                            headers.push(("cookie", cookie.as_bytes()));
                        }
                        // The service's cache answers the user, but for one request in its
                        // lifetime (the backend sets the header it is asked to).
                        if *count != CACHE_MISS_AT {
                            headers.push(("x-backend-set", b"x-cache=HIT"));
                        }
                        let reply = client.get(url, &headers);
                        keep_cookies(cookies, &reply);
                        events.lock().unwrap().push(Event {
                            at: Instant::now(),
                            caller,
                            user: *id,
                            status: reply.status,
                            served_by: reply.served_by.clone(),
                            version: reply.header(version_header).map(str::to_string),
                            reason: reply.header(reason_header).map(str::to_string),
                        });
                        *count += 1;
                        if *count >= USER_LIFETIME {
                            *id = next_id;
                            next_id += 1;
                            *count = 0;
                            cookies.clear();
                        }
                        sent += 1;
                        let due = start + period * sent;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            sleep(wait);
                        }
                    }
                })
            })
            .collect();
        Load { stop, events, threads }
    }

    fn finish(self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.events).unwrap().into_inner().unwrap()
    }
}

/// A revision: its backend and its pod's sidecar (inbound and outbound observers).
struct Pod {
    revision: String,
    _backend: Backend,
    sidecar: Sidecar,
}

impl Pod {
    fn start(
        service: &Service,
        revision: &str,
        role: Subset,
        observer: &str,
        outbound: &Outbound,
        backend_args: &[&str],
    ) -> Pod {
        let backend = Backend::start(revision, backend_args);
        let sidecar = Sidecar::start_with_outbound(service, revision, role, backend.port, observer, outbound);
        Pod { revision: revision.to_string(), _backend: backend, sidecar }
    }

    fn outbound_port(&self) -> u16 {
        self.sidecar.outbound_port.unwrap()
    }
}

/// What one revision's pod fetched from the HRIS.
#[derive(Debug, Clone, Default)]
struct Fetched {
    calls: u64,
    /// Calls not answered 200.
    failed: Vec<(u16, String)>,
}

/// The pods' own calls to the HRIS: `FETCHES_PER_POD` a second from every live pod, through
/// its sidecar's outbound listener with the HRIS's `Host`. A pod is live from its ReplicaSet's
/// start to its scale-down ([`Fetches::up`], [`Fetches::down`]).
struct Fetches {
    stop: Arc<AtomicBool>,
    /// The live pods: (revision, outbound port).
    live: Arc<Mutex<Vec<(String, u16)>>>,
    fetched: Arc<Mutex<BTreeMap<String, Fetched>>>,
    thread: thread::JoinHandle<()>,
}

impl Fetches {
    fn start(host: String) -> Fetches {
        let stop = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
        let fetched: Arc<Mutex<BTreeMap<String, Fetched>>> = Arc::default();
        let thread = {
            let (stop, live, fetched) = (stop.clone(), live.clone(), fetched.clone());
            thread::spawn(move || {
                let client = Client::new();
                let period = Duration::from_secs(1) / FETCHES_PER_POD;
                let start = Instant::now();
                let mut round = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let pods = live.lock().unwrap().clone();
                    for (revision, port) in pods {
                        let url = format!("http://127.0.0.1:{port}/v1/workers/{}", round % 500);
                        let reply = client.get(&url, &[("host", host.as_bytes())]);
                        let mut fetched = fetched.lock().unwrap();
                        let entry = fetched.entry(revision).or_default();
                        entry.calls += 1;
                        if reply.status != 200 || reply.served_by.as_deref() != Some("hris") {
                            entry.failed.push((reply.status, reply.body.chars().take(200).collect()));
                        }
                    }
                    round += 1;
                    if let Some(wait) = (start + period * round).checked_duration_since(Instant::now()) {
                        sleep(wait);
                    }
                }
            })
        };
        Fetches { stop, live, fetched, thread }
    }

    /// `pod`'s ReplicaSet is up: it starts fetching.
    fn up(&self, pod: &Pod) {
        let mut live = self.live.lock().unwrap();
        if !live.iter().any(|(r, _)| *r == pod.revision) {
            live.push((pod.revision.clone(), pod.outbound_port()));
        }
    }

    /// `pod` is scaled down: no more fetches.
    fn down(&self, pod: &Pod) {
        self.live.lock().unwrap().retain(|(r, _)| *r != pod.revision);
    }

    fn finish(self) -> BTreeMap<String, Fetched> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.fetched).unwrap().into_inner().unwrap()
    }
}

/// The test's Argo Rollouts: moves weights and subsets as the controller does, in every
/// caller's sidecar as istiod pushes them (and scales the ReplicaSets: their pods fetch from the
/// HRIS while up), and runs the background analysis.
struct Argo<'a> {
    callers: &'a [Caller],
    prometheus: &'a Prometheus,
    fetches: &'a Fetches,
    plan: Plan,
    stable: String,
}

/// How a rollout ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Promoted,
    /// Its canary was scaled to zero from `scaled_down` on.
    Aborted {
        scaled_down: Instant,
    },
}

struct RunReport {
    outcome: Outcome,
    phase: RunPhase,
    message: String,
    first_phase: RunPhase,
    /// The run as it ended: its metrics' measurements.
    run: AnalysisRun,
}

impl RunReport {
    /// The phases of `metric`'s measurements.
    fn measured(&self, metric: &str) -> Vec<Phase> {
        let result = self.run.result(metric).unwrap_or_else(|| panic!("no metric {metric} in the run"));
        result.measurements.iter().map(|(_, phase)| *phase).collect()
    }
}

impl Argo<'_> {
    /// The VirtualService's `primary` weights, in every caller's sidecar.
    fn set_weights(&self, stable: u32, canary: u32) {
        for caller in self.callers {
            caller.sidecar.set_weights(stable, canary);
        }
    }

    /// The pods `subset` selects, in every caller's sidecar.
    fn set_endpoints(&self, subset: Subset, ports: &[u16]) {
        for caller in self.callers {
            caller.sidecar.set_endpoints(subset, ports);
        }
    }

    /// Rolls `pod` out through the plan's steps; `manual_abort_after` aborts by hand after
    /// that many steps.
    fn rollout(&mut self, pod: &Pod, stable_pod: &Pod, manual_abort_after: Option<usize>) -> RunReport {
        // The canary ReplicaSet is up: the DestinationRule's canary subset selects its pods,
        // which make their own calls from now on.
        self.fetches.up(pod);
        self.set_endpoints(Subset::Canary, &[pod.sidecar.port]);
        let metrics = load_templates(&root().join("istio"));
        let rollouts = load_rollouts(&root().join("istio"));
        let rollout = rollouts.iter().find(|r| r.rollout == SERVICE).unwrap();
        let (merged, mut run) = background_run(rollout, &metrics);
        let args: Vec<(String, String)> = rollout
            .args
            .iter()
            .map(|(name, value)| {
                let value = match name.as_str() {
                    "canary-hash" => pod.revision.clone(),
                    "stable-hash" => stable_pod.revision.clone(),
                    _ => value.clone(),
                };
                (name.clone(), value)
            })
            .collect();
        let args: Vec<(&str, &str)> = args.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut run_started: Option<Instant> = None;
        let mut first_phase = None;
        let mut reconcile = |run: &mut AnalysisRun, started: Instant| {
            let now = started.elapsed() * SPEED;
            let phase = run.reconcile(now, |m| {
                let metric = merged.iter().find(|x| x.name == m.name).unwrap();
                let query = scale_ranges(&canary_harness::analysis::substitute(&metric.query, &args));
                let values: Vec<f64> = self.prometheus.query(&query).iter().map(|s| s.value).collect();
                evaluate(metric, &values)
            });
            first_phase.get_or_insert(phase);
            phase
        };
        let steps = self.plan.steps.clone();
        for (index, step) in steps.iter().enumerate() {
            if manual_abort_after == Some(index) {
                return self.abort(pod, run, first_phase.unwrap_or(RunPhase::Running), "aborted by hand");
            }
            // Background analysis from `startingStep: 1`.
            if index == 1 && run_started.is_none() {
                run_started = Some(Instant::now());
            }
            let until = Instant::now()
                + match step {
                    Step::SetWeight(w) => {
                        self.set_weights(100 - w, *w);
                        Duration::ZERO
                    }
                    Step::Pause(d) => scaled(*d),
                };
            loop {
                if let Some(started) = run_started {
                    let phase = reconcile(&mut run, started);
                    if phase.completed() && phase != RunPhase::Successful {
                        let message = run.message.clone();
                        return self.abort(pod, run, first_phase.unwrap(), &message);
                    }
                }
                if Instant::now() >= until {
                    break;
                }
                sleep(Duration::from_millis(100));
            }
        }
        // The end of the steps promotes: stable is repointed at the canary's pods, the
        // weights return to stable, the analysis is terminated; the old stable ReplicaSet,
        // selected by no subset any more, is scaled down.
        self.set_endpoints(Subset::Stable, &[pod.sidecar.port]);
        self.set_weights(100, 0);
        self.fetches.down(stable_pod);
        self.stable = pod.revision.clone();
        run.terminate();
        let phase = run.reconcile(run_started.map_or(Duration::ZERO, |s| s.elapsed() * SPEED), |_| unreachable!());
        // The next rollout comes later (a new image, minutes or days on): the routers see the
        // promoted revision serve stable first, as they would.
        sleep(SETTLE);
        let message = run.message.clone();
        RunReport { outcome: Outcome::Promoted, phase, message, first_phase: first_phase.unwrap(), run }
    }

    /// Argo's abort: weights back to stable at once, the canary scaled to zero after
    /// `abortScaleDownDelaySeconds` (its subset left on the aborted ReplicaSet).
    fn abort(&self, pod: &Pod, run: AnalysisRun, first_phase: RunPhase, message: &str) -> RunReport {
        self.set_weights(100, 0);
        sleep(scaled(self.plan.abort_scale_down));
        let scaled_down = Instant::now();
        self.set_endpoints(Subset::Canary, &[]);
        self.fetches.down(pod);
        let outcome = Outcome::Aborted { scaled_down };
        RunReport { outcome, phase: run.phase, message: message.to_string(), first_phase, run }
    }
}

/// Users first served by a canary revision through a pin, not by the mesh's weights: a pin
/// carried them there ahead of the weights.
fn pinned_into_a_canary(events: &[Event]) -> Vec<String> {
    let mut seen: HashMap<u64, HashSet<String>> = HashMap::new();
    let mut bad = Vec::new();
    for e in events {
        let Some(revision) = &e.served_by else { continue };
        let first = seen.entry(e.user).or_default().insert(revision.clone());
        if first && e.version.as_deref() == Some("canary") && e.reason.as_deref() == Some("pin") {
            bad.push(format!("user {} pinned into canary {revision}", e.user));
        }
    }
    bad
}

/// Failed responses no backend produced (Envoy's own replies, transport errors).
fn envoy_failures(events: &[Event]) -> Vec<&Event> {
    events.iter().filter(|e| (e.status == 0 || e.status >= 500) && e.served_by.is_none()).collect()
}

fn gauge(prometheus: &Prometheus, promql: &str) -> Option<f64> {
    prometheus.query(promql).first().map(|s| s.value)
}

/// `pod`'s outbound observer's count of its HRIS calls (every version; its revision and
/// direction outbound), from its sidecar's admin.
fn outbound_calls_counted(pod: &Pod) -> Option<f64> {
    let labels = [
        ("service", SERVICE),
        ("reporter", "observer"),
        ("revision", pod.revision.as_str()),
        ("direction", "outbound"),
        ("class", HRIS_CLASS),
    ];
    prometheus_sum(&pod.sidecar.prometheus(), "canary_requests_total", &labels)
}

/// Every measurement of the run's canary-gate metrics that are new with route classes,
/// outcomes and outbound observers was taken and Successful: at least `min` each.
fn assert_measured_successful(what: &str, report: &RunReport, min: usize) {
    for metric in ["cache-hit-rate", "external-fetch-success-rate"] {
        let phases = report.measured(metric);
        assert!(phases.len() >= min, "{what}: {metric} measured {} times: {phases:?}", phases.len());
        assert!(phases.iter().all(|p| *p == Phase::Successful), "{what}: {metric}: {phases:?}");
    }
}

/// When each rollout started, and when the aborted canaries were scaled to zero.
struct Marks {
    rollouts: [(&'static str, Instant); 4],
    /// (b)'s r3, after the analysis failed, and (d)'s r5, after the manual abort.
    scale_downs: [Instant; 2],
}

/// What one caller's users saw, checked; returns a line for the summary.
fn assert_users_saw_the_rollouts(caller: &str, events: &[Event], marks: &Marks) -> String {
    assert!(!events.is_empty(), "{caller}: no requests");
    // Every user that reached a canary revision got there by the weights.
    let bad = pinned_into_a_canary(events);
    assert!(bad.is_empty(), "{caller}: {} pins ahead of the weights: {:?}", bad.len(), &bad[..bad.len().min(10)]);
    // Users reached each canary at its weight, never before its rollout started.
    for (revision, from) in marks.rollouts {
        let early = events.iter().filter(|e| e.at < from && e.served_by.as_deref() == Some(revision)).count();
        assert_eq!(early, 0, "{caller}: {revision} served before its rollout");
        let users: HashSet<u64> = events
            .iter()
            .filter(|e| e.at >= from && e.served_by.as_deref() == Some(revision))
            .map(|e| e.user)
            .collect();
        assert!(!users.is_empty(), "{caller}: {revision} served nobody");
    }
    // No failure Envoy made itself, but a handful in the second after an aborted canary was
    // scaled to zero, to its users still pinned to it then: r5's, and r3's if this caller's
    // gate had not tripped by then (another caller's trip aborts the rollout; each caller's
    // gate runs its own comparison on the fleet's counts).
    let failures = envoy_failures(events);
    let within = |e: &Event, from: Instant| e.at >= from && e.at <= from + Duration::from_secs(1);
    let outside: Vec<_> = failures.iter().filter(|e| !marks.scale_downs.iter().any(|s| within(e, *s))).collect();
    assert!(outside.is_empty(), "{caller}: Envoy's own failures but in the second after a scale-down: {outside:?}");
    let r5_down = marks.scale_downs[1];
    let per_scale_down = marks.scale_downs.map(|s| failures.iter().filter(|e| within(e, s)).count());
    for (n, revision) in per_scale_down.iter().zip(["r3", "r5"]) {
        assert!(*n <= MAX_ENVOY_FAILURES, "{caller}: {n} Envoy failures after {revision}'s scale-down: {failures:?}");
    }
    // Users pinned to r5 when it was scaled to zero are on stable from then on.
    let d_start = marks.rollouts[3].1;
    let on_r5: HashSet<u64> = events
        .iter()
        .filter(|e| e.at < r5_down && e.at > d_start && e.served_by.as_deref() == Some("r5"))
        .map(|e| e.user)
        .collect();
    let moved: HashSet<u64> = events
        .iter()
        .filter(|e| e.at > r5_down + Duration::from_secs(1) && on_r5.contains(&e.user))
        .map(|e| e.user)
        .collect();
    assert!(
        moved.len() >= MIN_MOVED_FROM_R5,
        "{caller}: only {} users pinned to r5 outlived its scale-down",
        moved.len()
    );
    // After the scale-down every user is served by stable r4.
    let tail: Vec<_> = events.iter().filter(|e| e.at > r5_down + Duration::from_secs(2)).collect();
    assert!(!tail.is_empty(), "{caller}: no requests after the scale-down");
    assert!(
        tail.iter().all(|e| e.served_by.as_deref() == Some("r4")),
        "{caller}: {:?}",
        tail.iter().find(|e| e.served_by.as_deref() != Some("r4"))
    );
    let first = |from: Instant, what: &dyn Fn(&Event) -> bool| {
        events.iter().find(|e| e.at >= from && what(e)).map(|e| e.at - from)
    };
    let [_, (_, b_start), (_, c_start), _] = marks.rollouts;
    let r3_first = first(b_start, &|e| e.served_by.as_deref() == Some("r3")).unwrap();
    let gate_after = first(b_start + r3_first, &|e| e.reason.as_deref() == Some("gate"));
    let r4_after = first(c_start, &|e| e.served_by.as_deref() == Some("r4"));
    format!(
        "{caller}: {} requests; first gate reply {gate_after:?} after r3's first response; \
         r4 first served after {r4_after:?}; {} users on r5 at its scale-down; Envoy failures after the scale-downs \
         {per_scale_down:?}",
        events.len(),
        moved.len(),
    )
}

#[test]
fn revisions_roll_out_fail_abort_and_roll_out_again_behind_two_subset_names() {
    let service = Service::shipped(SERVICE);
    let observer = plugin_config(&format!("canary-gate-observer-{SERVICE}"));
    let outbound = plugin_config(&format!("canary-gate-outbound-{SERVICE}"));
    // The HRIS's host: the one the outbound observer's `hris` class names.
    let hris_host = outbound["classes"]
        .as_array()
        .and_then(|classes| classes.iter().find(|c| c["name"] == HRIS_CLASS))
        .and_then(|c| c["authority_suffix"][0].as_str())
        .unwrap_or_else(|| panic!("no class {HRIS_CLASS} in {outbound}"))
        .to_string();
    let observer = observer.to_string();
    let outbound = outbound.to_string();
    let hris = Backend::start("hris", &[]);
    let calls = Outbound { filter_json: &outbound, hosts: &[(&hris_host, hris.port)], virtual_host_patch: None };
    let pod =
        |revision: &str, role: Subset, args: &[&str]| Pod::start(&service, revision, role, &observer, &calls, args);
    let r1 = pod("r1", Subset::Stable, &[]);
    let r2 = pod("r2", Subset::Canary, &[]);
    let r3 = pod("r3", Subset::Canary, &["--error-ratio", "0.3"]);
    let r4 = pod("r4", Subset::Canary, &[]);
    let r5 = pod("r5", Subset::Canary, &[]);
    let pods = [&r1, &r2, &r3, &r4, &r5];
    // At rest both subsets select the stable ReplicaSet's pods.
    let callers: Vec<Caller> = CALLERS
        .iter()
        .map(|&name| {
            let router = plugin_config(&format!("canary-gate-router-{SERVICE}-from-{name}")).to_string();
            let sidecar = Router::caller_sidecar(&service, name, &router, &[r1.sidecar.port], &[r1.sidecar.port]);
            Caller { name, sidecar }
        })
        .collect();
    let admin_ports: Vec<u16> =
        callers.iter().map(|c| c.sidecar.admin_port).chain(pods.iter().map(|p| p.sidecar.admin_port)).collect();
    let prometheus = Prometheus::start(&admin_ports, &[]);
    let fetches = Fetches::start(hris_host);
    fetches.up(&r1);
    let load = Load::start(&callers);
    let mut argo =
        Argo { callers: &callers, prometheus: &prometheus, fetches: &fetches, plan: plan(), stable: "r1".into() };
    sleep(Duration::from_secs(3));

    // (a) r2 rolls out and is promoted.
    let a_start = Instant::now();
    let a = argo.rollout(&r2, &r1, None);
    assert_eq!(a.outcome, Outcome::Promoted);
    assert_eq!((a.first_phase, a.phase), (RunPhase::Running, RunPhase::Successful), "(a): {}", a.message);
    assert_measured_successful("(a)", &a, 5);
    // Each caller's router tells which revision serves each subset.
    let info = |version: &str| {
        prometheus.query(&format!("canary_revision_info{{service=\"{SERVICE}\",version=\"{version}\"}} == 1"))
    };
    prometheus.wait_for(
        &format!("canary_revision_info{{service=\"{SERVICE}\",version=\"stable\",revision=\"r2\"}} == 1"),
        Duration::from_secs(10),
        |r| r.len() == CALLERS.len(),
    );
    assert!(info("canary").iter().all(|s| s.label("revision") == "r2"), "{:?}", info("canary"));

    // (b) r3 fails: the gate of each caller's router trips, the abort metric fails the run,
    // Argo aborts.
    let b_start = Instant::now();
    let b = argo.rollout(&r3, &r2, None);
    let Outcome::Aborted { scaled_down: r3_down } = b.outcome else { panic!("(b): r3 {:?}", b.outcome) };
    assert_eq!((b.first_phase, b.phase), (RunPhase::Running, RunPhase::Failed), "(b): {}", b.message);
    // r3's fault is its inbound requests': its HRIS fetches, if measured before the abort, pass.
    let fetch = b.measured("external-fetch-success-rate");
    assert!(fetch.iter().all(|p| *p == Phase::Successful), "(b): r3's HRIS fetches: {fetch:?}");
    // The first caller's gate to trip fails the analysis; another caller's trips too if its
    // comparison of the fleet's counts convicts r3 before r3 is scaled to zero (or just after,
    // on the counts already in its window). r3 has served nobody for a while after SETTLE: each router's
    // gauge is final.
    sleep(SETTLE);
    let tripped = format!("canary_gate_tripped{{service=\"{SERVICE}\",revision=\"r3\"}}");
    let r3_tripped: Vec<bool> = callers
        .iter()
        .map(|c| {
            let labels = [("service", SERVICE), ("revision", "r3")];
            prometheus_sum(&c.sidecar.prometheus(), "canary_gate_tripped", &labels) == Some(1.0)
        })
        .collect();
    assert!(r3_tripped.contains(&true), "the gate tripped on r3");
    assert_eq!(gauge(&prometheus, &format!("max({tripped})")), Some(1.0), "the gate tripped on r3");

    // (c) r4 is rolled out next, with no configuration change: judged afresh.
    let c_start = Instant::now();
    let c = argo.rollout(&r4, &r2, None);
    assert_eq!(c.outcome, Outcome::Promoted);
    assert_eq!((c.first_phase, c.phase), (RunPhase::Running, RunPhase::Successful), "(c): {}", c.message);
    assert_measured_successful("(c)", &c, 5);
    let r3_trips = prometheus.query(&tripped);
    for (caller, tripped) in callers.iter().zip(&r3_tripped) {
        let instance = format!("127.0.0.1:{}", caller.sidecar.admin_port);
        let trip = r3_trips.iter().find(|s| s.label("instance") == instance).map(|s| s.value);
        assert!(trip == Some(0.0) || (!tripped && trip.is_none()), "{}: r3's trip cleared: {trip:?}", caller.name);
    }
    let any_trip = format!("max(canary_gate_tripped{{service=\"{SERVICE}\"}})");
    assert_eq!(gauge(&prometheus, &any_trip), Some(0.0));

    // (d) r5 reaches its first step, then is aborted by hand: no trip; its pinned users fall
    // back to stable once it is scaled to zero.
    let d_start = Instant::now();
    let d = argo.rollout(&r5, &r4, Some(2));
    let Outcome::Aborted { scaled_down: r5_down } = d.outcome else { panic!("(d): r5 {:?}", d.outcome) };
    sleep(Duration::from_secs(4));
    let events = load.finish();
    let fetched = fetches.finish();
    assert_eq!(gauge(&prometheus, &any_trip), Some(0.0), "(d): no trip");

    // Every pod fetched from the HRIS while up, every fetch was answered, and each pod's
    // outbound observer counted exactly the fetches it carried, under its own revision.
    for pod in pods {
        let made = fetched.get(&pod.revision).cloned().unwrap_or_default();
        assert!(made.calls >= 10, "{}: {} HRIS fetches", pod.revision, made.calls);
        assert!(made.failed.is_empty(), "{}: failed HRIS fetches: {:?}", pod.revision, made.failed);
        wait_until(
            &format!("{}'s outbound observer counts its fetches", pod.revision),
            Duration::from_secs(10),
            || outbound_calls_counted(pod) == Some(made.calls as f64),
        );
    }

    // What users saw, for each caller's users.
    let rollouts = [("r2", a_start), ("r3", b_start), ("r4", c_start), ("r5", d_start)];
    let marks = Marks { rollouts, scale_downs: [r3_down, r5_down] };
    let summaries: Vec<String> = callers
        .iter()
        .enumerate()
        .map(|(i, caller)| {
            let events: Vec<Event> = events.iter().filter(|e| e.caller == i).cloned().collect();
            let tripped = if r3_tripped[i] { "tripped" } else { "not tripped" };
            format!("{} (gate on r3 {tripped})", assert_users_saw_the_rollouts(caller.name, &events, &marks))
        })
        .collect();
    // The gate, not r3's scale-down, sent r3's users back to stable, at least at one caller.
    let sent_back = events.iter().filter(|e| e.at < r3_down && e.reason.as_deref() == Some("gate")).count();
    assert!(sent_back > 0, "no user sent back to stable by a gate before r3's scale-down");
    let fetch_counts: Vec<String> = fetched.iter().map(|(r, f)| format!("{r} {}", f.calls)).collect();
    println!(
        "lifecycle: (a) {:?} (b) {:?} (c) {:?}; HRIS fetches {}\n  {}",
        a.phase,
        b.phase,
        c.phase,
        fetch_counts.join(", "),
        summaries.join("\n  ")
    );
    for caller in &callers {
        for line in caller.sidecar.log().lines().filter(|l| l.contains("[wasm]") && !l.contains("service=")) {
            println!("{}: {line}", caller.name);
        }
    }
}
