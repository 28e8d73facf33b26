//! A real rollout, start to finish, as a cluster runs it: the test plays Argo Rollouts and the
//! Istio control plane against real Envoys. An ingress Envoy runs the shipped gateway router
//! (mesh mode) of a tier-1 service, its routes, subset clusters and endpoints fed by file-based
//! xDS shaped as istiod generates them; each revision is a "pod": a sidecar Envoy with the
//! shipped observer, its node metadata carrying the pod-template hash, in front of a backend.
//! A real Prometheus scrapes every proxy, and the shipped AnalysisTemplates are evaluated with
//! Argo's run semantics (`canary_harness::analysis_run`) against it.
//!
//! Time runs `SPEED` times faster than in the Rollout: pauses, the abort scale-down delay,
//! analysis intervals and initial delays, and the queries' rate windows are divided by it. The
//! proxies run in real time, so the gate's thresholds and the volume floors hold as shipped.
//!
//! Four revisions follow each other behind the two subset names, with many users arriving and
//! leaving under steady load:
//! (a) r2 rolls out through the Rollout's steps and is promoted;
//! (b) r3 fails at 30 % 5xx: the gate trips, the analysis fails, Argo aborts and scales r3 to 0;
//! (c) r4 rolls out next, with no configuration change, and is judged afresh;
//! (d) r5 reaches its first step and is aborted by hand; no gate trip.

use canary_harness::analysis::{background_run, evaluate, load_rollouts, load_templates, to_json};
use canary_harness::analysis_run::{AnalysisRun, RunPhase};
use canary_harness::mesh::{Ingress, Sidecar, Subset};
use canary_harness::prometheus::Prometheus;
use canary_harness::{root, Backend, Client};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// The tier-1 service whose shipped manifests are played.
const SERVICE: &str = "unified-profile";
/// How much faster than the Rollout's clock the test runs.
const SPEED: u32 = 30;
/// Requests a second of the whole population.
const RATE: u64 = 120;
/// Users at a time per load thread (3 threads): about one request a second each.
const USERS_PER_THREAD: u64 = 40;
/// Requests a user sends before leaving (a new user takes its place): new users keep arriving,
/// as they do in production, so the mesh's weights reach the canary.
const USER_LIFETIME: u32 = 12;
/// Between a rollout's end and the next one's start.
const SETTLE: Duration = Duration::from_secs(3);
/// Envoy's own 503s (no healthy upstream) allowed after a manual abort, per ingress.
const MAX_ENVOY_FAILURES: usize = 10;

/// The shipped `pluginConfig` of the WasmPlugin `name` in `istio/wasmplugin/file`, as JSON.
fn plugin_config(file: &str, name: &str) -> Value {
    let path = root().join("istio/wasmplugin").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let doc = docs.iter().find(|d| d["metadata"]["name"].as_str() == Some(name)).unwrap_or_else(|| panic!("{name}"));
    to_json(&doc["spec"]["pluginConfig"])
}

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
    user: u64,
    status: u16,
    /// The backend (revision) that answered, if any.
    served_by: Option<String>,
    version: Option<String>,
    reason: Option<String>,
}

/// Steady load: `RATE` requests a second from users who come and go.
struct Load {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, host: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let workers = 3u64;
        let threads = (0..workers)
            .map(|w| {
                let (stop, events, url, host) = (stop.clone(), events.clone(), url.clone(), host.clone());
                thread::spawn(move || {
                    let client = Client::new();
                    let period = Duration::from_micros(1_000_000 * workers / RATE);
                    // USERS_PER_THREAD at a time, each replaced after USER_LIFETIME requests.
                    let mut users: Vec<(u64, u32, Vec<String>)> =
                        (0..USERS_PER_THREAD).map(|i| (w * 1_000_000 + i, 0, vec![])).collect();
                    let mut next_id = w * 1_000_000 + USERS_PER_THREAD;
                    let mut i = 0;
                    let start = Instant::now();
                    let mut sent = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let slot = i % users.len();
                        i += 1;
                        let (id, count, cookies) = &mut users[slot];
                        let cookie = cookies.join("; ");
                        let mut headers: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
                        if !cookie.is_empty() {
                            headers.push(("cookie", cookie.as_bytes()));
                        }
                        let reply = client.get(&url, &headers);
                        for set in &reply.set_cookies {
                            let pair = set.split(';').next().unwrap_or_default().to_string();
                            let name = pair.split('=').next().unwrap_or_default().to_string();
                            cookies.retain(|c| c.split('=').next() != Some(name.as_str()));
                            cookies.push(pair);
                        }
                        events.lock().unwrap().push(Event {
                            at: Instant::now(),
                            user: *id,
                            status: reply.status,
                            served_by: reply.served_by.clone(),
                            version: reply.version.clone(),
                            reason: reply.reason.clone(),
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

/// A revision: its backend and its pod's sidecar.
struct Pod {
    revision: String,
    _backend: Backend,
    sidecar: Sidecar,
}

impl Pod {
    fn start(revision: &str, role: Subset, observer: &str, backend_args: &[&str]) -> Pod {
        let backend = Backend::start(revision, backend_args);
        let sidecar = Sidecar::start(revision, role, backend.port, observer);
        Pod { revision: revision.to_string(), _backend: backend, sidecar }
    }
}

/// The test's Argo Rollouts: moves weights and subsets as the controller does, and runs the
/// background analysis.
struct Argo<'a> {
    ingress: &'a Ingress,
    prometheus: &'a Prometheus,
    plan: Plan,
    stable: String,
}

/// How a rollout ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Promoted,
    Aborted,
}

struct RunReport {
    outcome: Outcome,
    phase: RunPhase,
    message: String,
    first_phase: RunPhase,
}

impl Argo<'_> {
    /// Rolls `pod` out through the plan's steps; `manual_abort_after` aborts by hand after
    /// that many steps.
    fn rollout(&mut self, pod: &Pod, stable_pod: &Pod, manual_abort_after: Option<usize>) -> RunReport {
        // The canary ReplicaSet is up: the DestinationRule's canary subset selects its pods.
        self.ingress.set_endpoints(Subset::Canary, &[pod.sidecar.port]);
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
                        self.ingress.set_weights(100 - w, *w);
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
        // weights return to stable, the analysis is terminated.
        self.ingress.set_endpoints(Subset::Stable, &[pod.sidecar.port]);
        self.ingress.set_weights(100, 0);
        self.stable = pod.revision.clone();
        run.terminate();
        let phase = run.reconcile(run_started.map_or(Duration::ZERO, |s| s.elapsed() * SPEED), |_| unreachable!());
        // The next rollout comes later (a new image, minutes or days on): the routers see the
        // promoted revision serve stable first, as they would.
        sleep(SETTLE);
        RunReport { outcome: Outcome::Promoted, phase, message: run.message.clone(), first_phase: first_phase.unwrap() }
    }

    /// Argo's abort: weights back to stable at once, the canary scaled to zero after
    /// `abortScaleDownDelaySeconds` (its subset left on the aborted ReplicaSet).
    fn abort(&self, _pod: &Pod, run: AnalysisRun, first_phase: RunPhase, message: &str) -> RunReport {
        self.ingress.set_weights(100, 0);
        sleep(scaled(self.plan.abort_scale_down));
        self.ingress.set_endpoints(Subset::Canary, &[]);
        RunReport { outcome: Outcome::Aborted, phase: run.phase, message: message.to_string(), first_phase }
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

#[test]
fn revisions_roll_out_fail_abort_and_roll_out_again_behind_two_subset_names() {
    let router = plugin_config("router-gateway.yaml", &format!("canary-gate-router-{SERVICE}"));
    let observer = plugin_config("observer.yaml", &format!("canary-gate-observer-{SERVICE}"));
    let host = router["hosts"].as_array().and_then(|h| h.last()).and_then(Value::as_str).unwrap().to_string();
    let observer = observer.to_string();
    let r1 = Pod::start("r1", Subset::Stable, &observer, &[]);
    let r2 = Pod::start("r2", Subset::Canary, &observer, &[]);
    let r3 = Pod::start("r3", Subset::Canary, &observer, &["--error-ratio", "0.3"]);
    let r4 = Pod::start("r4", Subset::Canary, &observer, &[]);
    let r5 = Pod::start("r5", Subset::Canary, &observer, &[]);
    // At rest both subsets select the stable ReplicaSet's pods.
    let ingress = Ingress::start(&router.to_string(), &[r1.sidecar.port], &[r1.sidecar.port]);
    let admin_ports: Vec<u16> = std::iter::once(ingress.admin_port)
        .chain([&r1, &r2, &r3, &r4, &r5].iter().map(|p| p.sidecar.admin_port))
        .collect();
    let prometheus = Prometheus::start(&admin_ports, &[]);
    let load = Load::start(ingress.url("/"), host);
    let mut argo = Argo { ingress: &ingress, prometheus: &prometheus, plan: plan(), stable: "r1".into() };
    sleep(Duration::from_secs(3));

    // (a) r2 rolls out and is promoted.
    let a_start = Instant::now();
    let a = argo.rollout(&r2, &r1, None);
    assert_eq!(a.outcome, Outcome::Promoted);
    assert_eq!((a.first_phase, a.phase), (RunPhase::Running, RunPhase::Successful), "(a): {}", a.message);
    // The router tells which revision serves each subset.
    let info = |version: &str| {
        prometheus.query(&format!("canary_revision_info{{service=\"{SERVICE}\",version=\"{version}\"}} == 1"))
    };
    prometheus.wait_for(
        &format!("canary_revision_info{{service=\"{SERVICE}\",version=\"stable\",revision=\"r2\"}} == 1"),
        Duration::from_secs(10),
        |r| !r.is_empty(),
    );
    assert!(info("canary").iter().all(|s| s.label("revision") == "r2"), "{:?}", info("canary"));

    // (b) r3 fails: the gate trips, the abort metric fails the run, Argo aborts.
    let b_start = Instant::now();
    let b = argo.rollout(&r3, &r2, None);
    assert_eq!(b.outcome, Outcome::Aborted);
    assert_eq!((b.first_phase, b.phase), (RunPhase::Running, RunPhase::Failed), "(b): {}", b.message);
    let tripped = format!("canary_gate_tripped{{service=\"{SERVICE}\",revision=\"r3\"}}");
    assert_eq!(gauge(&prometheus, &tripped), Some(1.0), "the gate tripped on r3");
    sleep(SETTLE);

    // (c) r4 is rolled out next, with no configuration change: judged afresh.
    let c_start = Instant::now();
    let c = argo.rollout(&r4, &r2, None);
    assert_eq!(c.outcome, Outcome::Promoted);
    assert_eq!((c.first_phase, c.phase), (RunPhase::Running, RunPhase::Successful), "(c): {}", c.message);
    assert_eq!(gauge(&prometheus, &tripped), Some(0.0), "r3's trip cleared");
    let any_trip = format!("max(canary_gate_tripped{{service=\"{SERVICE}\"}})");
    assert_eq!(gauge(&prometheus, &any_trip), Some(0.0));

    // (d) r5 reaches its first step, then is aborted by hand: no trip; its pinned users fall
    // back to stable once it is scaled to zero.
    let d_start = Instant::now();
    let d = argo.rollout(&r5, &r4, Some(2));
    assert_eq!(d.outcome, Outcome::Aborted);
    let scaled_down = Instant::now();
    sleep(Duration::from_secs(4));
    let events = load.finish();
    assert_eq!(gauge(&prometheus, &any_trip), Some(0.0), "(d): no trip");

    // Every user that reached a canary revision got there by the weights.
    let bad = pinned_into_a_canary(&events);
    assert!(bad.is_empty(), "{} pins ahead of the weights: {:?}", bad.len(), &bad[..bad.len().min(10)]);
    // Users reached each canary at its weight, never before its rollout started.
    for (revision, from) in [("r2", a_start), ("r3", b_start), ("r4", c_start), ("r5", d_start)] {
        let early = events.iter().filter(|e| e.at < from && e.served_by.as_deref() == Some(revision)).count();
        assert_eq!(early, 0, "{revision} served before its rollout");
        let users: HashSet<u64> = events
            .iter()
            .filter(|e| e.at >= from && e.served_by.as_deref() == Some(revision))
            .map(|e| e.user)
            .collect();
        assert!(!users.is_empty(), "{revision} served nobody");
    }
    // No failure Envoy made itself, but a handful in the second after r5 was scaled to zero.
    let failures = envoy_failures(&events);
    let late: Vec<_> = failures.iter().filter(|e| e.at > scaled_down + Duration::from_secs(1)).collect();
    let before: Vec<_> = failures.iter().filter(|e| e.at < scaled_down).collect();
    assert!(before.is_empty(), "Envoy's own failures before the scale-down: {before:?}");
    assert!(late.is_empty(), "Envoy's own failures later than 1 s after the scale-down: {late:?}");
    assert!(failures.len() <= MAX_ENVOY_FAILURES, "{} Envoy failures: {failures:?}", failures.len());
    // Users pinned to r5 when it was scaled to zero are on stable from then on.
    let on_r5: HashSet<u64> = events
        .iter()
        .filter(|e| e.at < scaled_down && e.at > d_start && e.served_by.as_deref() == Some("r5"))
        .map(|e| e.user)
        .collect();
    let moved: HashSet<u64> = events
        .iter()
        .filter(|e| e.at > scaled_down + Duration::from_secs(1) && on_r5.contains(&e.user))
        .map(|e| e.user)
        .collect();
    assert!(moved.len() >= 5, "only {} users pinned to r5 outlived its scale-down", moved.len());
    // After the scale-down every user is served by stable r4.
    let tail: Vec<_> = events.iter().filter(|e| e.at > scaled_down + Duration::from_secs(2)).collect();
    assert!(!tail.is_empty());
    assert!(
        tail.iter().all(|e| e.served_by.as_deref() == Some("r4")),
        "{:?}",
        tail.iter().find(|e| e.served_by.as_deref() != Some("r4"))
    );
    let first = |from: Instant, what: &dyn Fn(&Event) -> bool| {
        events.iter().find(|e| e.at >= from && what(e)).map(|e| e.at - from)
    };
    let r3_first = first(b_start, &|e| e.served_by.as_deref() == Some("r3")).unwrap();
    let tripped_after = first(b_start + r3_first, &|e| e.reason.as_deref() == Some("gate"));
    let r4_after = first(c_start, &|e| e.served_by.as_deref() == Some("r4"));
    println!(
        "lifecycle: (a) {:?} (b) {:?}, gate {tripped_after:?} after r3's first response (c) {:?}, r4 first served after {r4_after:?} \
         (d) {} users on r5 at its scale-down, {} Envoy failures; {} requests",
        a.phase,
        b.phase,
        c.phase,
        moved.len(),
        failures.len(),
        events.len()
    );
    for line in ingress.log().lines().filter(|l| l.contains("[wasm]") && !l.contains("service=")) {
        println!("{line}");
    }
}
