//! Every PromQL query of every AnalysisTemplate in `istio/`, with the arguments its Rollout
//! passes substituted as Argo does, run against a real Prometheus scraping real Envoys
//! configured from the shipped WasmPlugins (every one under `istio/`):
//! - an Envoy running a router of every tier-1 service (its gateway router if it has public
//!   names, else its first caller's client-side router: the queries sum the router series of
//!   every proxy), under steady traffic to every service by a host its router handles
//!   (corp-cockpit's through its route classes, with its pages' web-vitals beacons,
//!   unified-profile's answered by its cache 9 times in 10);
//! - for each service with an outbound observer (impact-in, unified-profile), a pod of the
//!   canary revision (`role: canary`, `rollouts-pod-template-hash` = the `canary-hash` the
//!   Rollout passes): a sidecar Envoy with the shipped inbound observer and, on its outbound
//!   listener, the shipped outbound observer, carrying the pod's own calls to the hosts of the
//!   service's shipped ServiceEntry: impact-in's webhook
//!   deliveries (POST to a partner; the partner refuses the first attempt of 1 in 40 with a
//!   503, which istiod's default retry policy retries, and the shipped EnvoyFilter makes Envoy
//!   name the attempts in the response, `x-envoy-attempt-count: 2`) and partner API reads,
//!   unified-profile's HRIS fetches.
//!
//! Healthy, every canary-gate metric at the router and every outbound one passes (the retry
//! rate measures the 1 in 40; corp-cockpit's web vitals, its healthy beacons). Failing, the canary answers 5% 5xx at the router and the
//! partner and the HRIS answer 5% 5xx: every error-rate gate at the router fails, the delivery
//! and HRIS success rates fail, latencies, volumes, the cache hit rate and the retry rate pass.
//! The `[5m]` windows hold the healthy phase too, so each scenario is waited for (90 s at
//! most) until all its verdicts hold in one set of measurements.
//! No request reaches the pods' inbound side, so the inbound observers' metrics (by revision)
//! are inconclusive here, like the application's; `lifecycle.rs` measures them against real
//! observer sidecars.

use canary_harness::analysis::{
    documents, evaluate, load_rollouts, load_templates, substitute, to_json, Metric, Phase,
};
use canary_harness::mesh::{Outbound, Service, Sidecar, Subset};
use canary_harness::prometheus::Prometheus;
use canary_harness::{root, wait_until, Backend, Envoy, EnvoyOptions, Layout};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "http://prometheus.monitoring.svc.cluster.local:9090";

/// Every shipped WasmPlugin: whether it runs on the outbound side of its workloads' sidecars
/// (`match: [{mode: CLIENT}]`), and its pluginConfig.
fn plugins() -> Vec<(bool, Value)> {
    documents(&root().join("istio"), "WasmPlugin")
        .iter()
        .map(|doc| {
            let client =
                doc["spec"]["match"].as_vec().into_iter().flatten().any(|m| m["mode"].as_str() == Some("CLIENT"));
            (client, to_json(&doc["spec"]["pluginConfig"]))
        })
        .collect()
}

/// The pluginConfig of every shipped WasmPlugin.
fn plugin_configs() -> Vec<Value> {
    plugins().into_iter().map(|(_, config)| config).collect()
}

fn service_of(config: &Value) -> String {
    config["service"].as_str().unwrap_or_default().to_string()
}

fn is_observer(config: &Value) -> bool {
    config["role"].as_str() == Some("observer")
}

fn is_outbound(config: &Value) -> bool {
    config["direction"].as_str() == Some("outbound")
}

/// Per service, what the shipped EnvoyFilters merge into its sidecars' outbound virtual hosts.
fn attempt_count_patches() -> BTreeMap<String, Value> {
    documents(&root().join("istio"), "EnvoyFilter")
        .iter()
        .map(to_json)
        .flat_map(|filter| {
            let app = filter["spec"]["workloadSelector"]["labels"]["app"].as_str().unwrap_or_default().to_string();
            let patches: Vec<Value> = filter["spec"]["configPatches"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["applyTo"] == "VIRTUAL_HOST"
                        && p["match"]["context"] == "SIDECAR_OUTBOUND"
                        && p["patch"]["operation"] == "MERGE"
                })
                .map(|p| p["patch"]["value"].clone())
                .collect();
            patches.into_iter().map(move |value| (app.clone(), value))
        })
        .collect()
}

/// A router's pluginConfig per service: its gateway router's, or for a service with no public
/// names (no gateway router) its first client-side router's. In dry run: the gate's comparison
/// would take a failing canary's traffic away within a second, and the Prometheus queries under
/// test would see no failing requests (the abort metric still reports the gate's verdict).
fn router_configs() -> BTreeMap<String, Value> {
    let mut routers: Vec<(bool, Value)> =
        plugins().into_iter().filter(|(_, c)| c["role"].as_str().unwrap_or("router") == "router").collect();
    // Gateway routers first (a stable sort keeps the file order otherwise).
    routers.sort_by_key(|(client, _)| *client);
    let mut configs = BTreeMap::new();
    for (_, config) in routers {
        let mut config = canary_harness::analysis::with_tester_token(config);
        config["gate"]["dry_run"] = Value::Bool(true);
        configs.entry(service_of(&config)).or_insert(config);
    }
    configs
}

/// The first host of the shipped ServiceEntry of `service` (`metadata.labels.app`): a host its
/// pods call out of the mesh.
fn egress_host(service: &str) -> String {
    documents(&root().join("istio"), "ServiceEntry")
        .iter()
        .find(|d| d["metadata"]["labels"]["app"].as_str() == Some(service))
        .and_then(|d| d["spec"]["hosts"][0].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no ServiceEntry of {service} under istio/"))
}

/// The observers' pluginConfig per service: outbound ones (`outbound`) or inbound ones.
fn observer_configs(outbound: bool) -> BTreeMap<String, String> {
    plugin_configs()
        .iter()
        .filter(|c| is_observer(c) && is_outbound(c) == outbound)
        .map(|c| (service_of(c), c.to_string()))
        .collect()
}

/// Where a metric's numbers come from in this stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// canary-gate in a router (at the gateway or in a caller's sidecar).
    Router,
    /// canary-gate observing a pod's own calls (`direction="outbound"`).
    Outbound,
    /// canary-gate observing the requests a pod serves.
    Inbound,
    /// The application (not canary-gate).
    App,
}

fn source(m: &Metric) -> Source {
    if !m.from_canary_gate() {
        Source::App
    } else if !m.query.contains("reporter=\"observer\"") {
        Source::Router
    } else if m.query.contains("direction=\"outbound\"") {
        Source::Outbound
    } else {
        Source::Inbound
    }
}

/// The canary's pod-template hash the Rollout of `service` passes its analysis.
fn canary_hash(service: &str) -> String {
    load_rollouts(&root().join("istio"))
        .iter()
        .find(|r| r.args.iter().any(|(k, v)| k == "service" && v == service))
        .and_then(|r| r.args.iter().find(|(k, _)| k == "canary-hash").map(|(_, v)| v.clone()))
        .unwrap_or_else(|| panic!("no canary-hash argument in the Rollout of {service}"))
}

/// One delivery in this many is one Envoy retried (below the template's 5%).
const RETRIED_EVERY: u64 = 40;
/// Rounds of outbound calls a second: each round one delivery and one HRIS fetch, and a
/// partner API read every other round.
const CALL_ROUNDS_PER_S: u32 = 40;

/// The pods' own calls, paced, until dropped; counts what was sent.
struct Calls {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    /// (deliveries, retried deliveries, answers other than 200 or 500).
    counts: Arc<Mutex<(u64, u64, Vec<String>)>>,
}

impl Calls {
    /// Sends impact-in's calls to `partner` through `impact_in`'s outbound listener and
    /// unified-profile's to `hris` through `unified_profile`'s.
    fn start(impact_in: u16, partner: String, unified_profile: u16, hris: String) -> Calls {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<Mutex<(u64, u64, Vec<String>)>> = Arc::default();
        let thread = {
            let (stop, counts) = (stop.clone(), counts.clone());
            thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let status = |result: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
                    result.map(|mut r| {
                        let _ = r.body_mut().read_to_string();
                        r.status().as_u16()
                    })
                };
                let period = Duration::from_secs(1) / CALL_ROUNDS_PER_S;
                let start = Instant::now();
                let mut round: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut answers = Vec::new();
                    // impact-in delivers a webhook to a partner; one in 40 was retried.
                    let retried = round % RETRIED_EVERY == RETRIED_EVERY - 1;
                    let mut delivery = agent
                        .post(format!("http://127.0.0.1:{impact_in}/v1/webhooks"))
                        .header("host", &partner)
                        .header("content-type", "application/json");
                    if retried {
                        // The partner refuses the first attempt: Envoy's retry policy retries it.
                        delivery = delivery.header("x-backend-first-attempt-status", "503");
                    }
                    answers.push(("delivery", status(delivery.send(r#"{"event":"impact.recorded"}"#))));
                    // impact-in reads the partner's API.
                    if round.is_multiple_of(2) {
                        let url = format!("http://127.0.0.1:{impact_in}/v1/organisations/{}", round % 100);
                        answers.push(("partner_api", status(agent.get(url).header("host", &partner).call())));
                    }
                    // unified-profile fetches a worker from the HRIS.
                    let url = format!("http://127.0.0.1:{unified_profile}/v1/workers/{}", round % 100);
                    answers.push(("hris", status(agent.get(url).header("host", &hris).call())));
                    let mut counts = counts.lock().unwrap();
                    counts.0 += 1;
                    counts.1 += u64::from(retried);
                    for (what, answer) in answers {
                        if !matches!(answer, Ok(200 | 500)) {
                            counts.2.push(format!("{what}: {answer:?}"));
                        }
                    }
                    drop(counts);
                    round += 1;
                    let due = start + period * u32::try_from(round).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
            })
        };
        Calls { stop, thread: Some(thread), counts }
    }

    /// (deliveries, retried deliveries, unexpected answers) so far.
    fn counts(&self) -> (u64, u64, Vec<String>) {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for Calls {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A child process killed when dropped (wrk).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every (rollout service, metric, substituted query).
fn measurements() -> Vec<(String, Metric, String)> {
    let templates = load_templates(&root().join("istio"));
    let rollouts = load_rollouts(&root().join("istio"));
    assert!(rollouts.len() >= 6, "six tier-1 Rollouts, found {}", rollouts.len());
    let mut out = Vec::new();
    for rollout in &rollouts {
        let args: Vec<(&str, &str)> = rollout.args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let service = rollout.args.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()).unwrap();
        for name in &rollout.templates {
            let metrics: Vec<&Metric> = templates.iter().filter(|m| &m.template == name).collect();
            assert!(!metrics.is_empty(), "{}: template {name} not found", rollout.rollout);
            for m in metrics {
                assert_eq!(m.address, PROMETHEUS, "{}/{}", m.template, m.name);
                out.push((service.clone(), m.clone(), substitute(&m.query, &args)));
            }
        }
    }
    out
}

/// One measurement's verdict from Prometheus.
struct Verdict<'a> {
    service: &'a str,
    metric: &'a Metric,
    query: &'a str,
    phase: Phase,
    result: Vec<f64>,
}

fn measure(prometheus: &Prometheus, query: &str) -> Vec<f64> {
    prometheus.query(query).iter().map(|s| s.value).collect()
}

/// Whatever the in-proxy gate decided, the abort metric reports it: Failed once the gate has
/// tripped, Successful before. The canary's 5% errors sit on the gate's threshold, so a gate may
/// trip between Prometheus's last scrape and the admin read: the gate latches, so the two agree
/// within a few 1 s scrapes.
fn abort_metric_reports_the_gate(envoy: &Envoy, prometheus: &Prometheus, service: &str, m: &Metric, query: &str) {
    let mut seen = String::new();
    let what = format!("failing {service} {}/{}: the abort metric reports the gate", m.template, m.name);
    wait_until(&what, Duration::from_secs(10), || {
        let tripped = envoy.gate_stats(service).0 == 1;
        let result = measure(prometheus, query);
        let phase = evaluate(m, &result);
        let expected = if tripped { Phase::Failed } else { Phase::Successful };
        let now = format!("{phase:?} {result:?}, gate tripped: {tripped}");
        if now != seen {
            println!("   {service} {}: {now}", m.name);
            seen = now;
        }
        phase == expected && (envoy.gate_stats(service).0 == 1) == tripped
    });
}

/// What a measurement must give: `Some(phase)`, or `None` for the abort metric, which reports
/// whatever the gate decided (see [`abort_metric_reports_the_gate`]).
fn expected(m: &Metric, failing: bool) -> Option<Phase> {
    match source(m) {
        _ if failing && m.query.contains("canary_gate_tripped") => None,
        Source::App | Source::Inbound => Some(Phase::Inconclusive),
        // 5% 5xx on every canary path: every error ratio at the router fails (the API's 0.1%,
        // the assets' 1% of 4xx or 5xx); latencies, volumes and the cache hit rate pass.
        Source::Router => {
            let counts_errors = m.query.contains("code_class=\"5xx\"") || m.query.contains("code_class=~\"4xx|5xx\"");
            Some(if failing && counts_errors { Phase::Failed } else { Phase::Successful })
        }
        // 5% 5xx from the partner and the HRIS: the success rates (2xx shares) fail; latencies
        // and the retry rate pass.
        Source::Outbound => {
            let counts_answers = m.query.contains("code_class=");
            Some(if failing && counts_answers { Phase::Failed } else { Phase::Successful })
        }
    }
}

#[test]
fn every_analysis_query_gives_the_expected_verdict_healthy_and_failing() {
    let configs = router_configs();
    let services: Vec<String> = configs.keys().cloned().collect();
    assert_eq!(services.len(), 6, "{services:?}");
    let measurements = measurements();
    let stable = Backend::start("stable", &["--latency-ms", "1", "--latency-spread-ms", "4"]);
    let canary = Backend::start("canary", &["--latency-ms", "1", "--latency-spread-ms", "4"]);
    let weights = |s: String| s.replace("weight: 90\n", "weight: 50\n").replace("weight: 10\n", "weight: 50\n");
    let filters: Vec<String> = configs.values().map(Value::to_string).collect();
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let options = EnvoyOptions { layout: Layout::MeshMode, filter_json: filters[0], workers: 2, edit: &weights };
    let envoy = Envoy::start_inline(options, &stable, &canary, &filters);

    // A pod of the canary revision per service whose own calls an outbound observer measures,
    // and the servers those calls reach.
    let outbound = observer_configs(true);
    let inbound = observer_configs(false);
    let services_calling: Vec<&str> = outbound.keys().map(String::as_str).collect();
    assert_eq!(services_calling, ["impact-in", "unified-profile"], "the outbound observers this test drives calls for");
    let partner = Backend::start("partner", &["--latency-ms", "1", "--latency-spread-ms", "4"]);
    let hris = Backend::start("hris", &["--latency-ms", "1", "--latency-spread-ms", "4"]);
    let patches = attempt_count_patches();
    assert!(patches.contains_key("impact-in"), "impact-in's retried outcome needs the shipped EnvoyFilter");
    let (partner_host, hris_host) = (egress_host("impact-in"), egress_host("unified-profile"));
    let pod = |service: &str, host: &str, server: &Backend| {
        let calls = Outbound {
            filter_json: &outbound[service],
            hosts: &[(host, server.port)],
            virtual_host_patch: patches.get(service),
        };
        let revision = canary_hash(service);
        let service = Service::shipped(service);
        Sidecar::start_with_outbound(&service, &revision, Subset::Canary, canary.port, &inbound[&service.name], &calls)
    };
    let impact_in = pod("impact-in", &partner_host, &partner);
    let unified_profile = pod("unified-profile", &hris_host, &hris);
    let prometheus = Prometheus::start(&[envoy.admin_port, impact_in.admin_port, unified_profile.admin_port], &[]);

    // Steady traffic to every service from wrk, bounded in time, with the first host its router
    // handles (a public name at the gateway, an in-cluster one in a caller's sidecar). The queries take
    // `rate(...[5m])`, which over a series younger than 5 minutes divides by the whole 5
    // minutes: the volume gates need a few hundred requests per second per service here.
    // corp-cockpit's requests cycle through its route classes (API, asset, page, other), and
    // half its `other` turns are healthy web-vitals beacons of a page view, for the canary and
    // stable in turn (placed by the override header: the mesh router knows no user), in the
    // query parameter, as the shipped pages send them (a WasmPlugin's filter sees no body);
    // unified-profile's backend says its cache answered 9 requests in 10.
    let dir = canary_harness::TempDir::new("wrk");
    let script = dir.path().join("hosts.lua");
    let targets: Vec<String> = configs
        .iter()
        .map(|(service, config)| {
            let host = config["hosts"][0].as_str().unwrap_or_else(|| panic!("{service}'s router has no hosts"));
            format!("{{\"{service}\", \"{host}\"}}")
        })
        .collect();
    let lua = r#"local targets = {TARGETS}
local beacon = "/__canary/vitals?beacon=BEACON"
local n = 0
request = function()
  n = n + 1
  local target = targets[(n % #targets) + 1]
  local service, host = target[1], target[2]
  local headers = {["Host"] = host, ["x-user-id"] = "u" .. n}
  local path = "/"
  local turn = math.floor(n / #targets)
  if service == "corp-cockpit" then
    if turn % 4 == 0 then path = "/api/items" elseif turn % 4 == 1 then path = "/_astro/app.js?v=3"
    elseif turn % 4 == 2 then headers["accept"] = "text/html,application/xhtml+xml"
    elseif turn % 8 == 3 then
      headers["x-canary"] = (turn % 16 == 3) and "canary" or "stable"
      headers["x-canary-token"] = "TOKEN"
      return wrk.format("POST", beacon, headers)
    end
  elseif service == "unified-profile" and turn % 10 ~= 0 then
    headers["x-backend-set"] = "x-cache=HIT"
  end
  return wrk.format("GET", path, headers)
end
"#;
    let beacon =
        r#"[{"name":"page_view"},{"name":"LCP","value":1200},{"name":"INP","value":80},{"name":"CLS","value":0.02}]"#;
    let lua = lua
        .replace("TARGETS", &targets.join(", "))
        .replace("BEACON", &canary_harness::percent_encoded(beacon))
        .replace("TOKEN", canary_harness::analysis::TESTER_TOKEN);
    std::fs::write(&script, lua).unwrap();
    let _wrk = Killed(
        std::process::Command::new("wrk")
            .args(["-t1", "-c8", "-d240s", "-s"])
            .arg(&script)
            .arg(envoy.url("/"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("wrk (Debian package `wrk`)"),
    );
    // The pods' own calls, a hundred a second between them.
    let calls =
        Calls::start(impact_in.outbound_port.unwrap(), partner_host, unified_profile.outbound_port.unwrap(), hris_host);

    let verdicts = || -> Vec<Verdict> {
        measurements
            .iter()
            .map(|(service, metric, query)| {
                let result = measure(&prometheus, query);
                let phase = evaluate(metric, &result);
                Verdict { service, metric, query, phase, result }
            })
            .collect()
    };
    // Every verdict of `scenario` as expected at once (the abort metric aside), waited for up
    // to 90 s: volumes build up and ratios move over the 5-minute windows as traffic goes on
    // (a ratio just past its threshold may cross back and forth by a call: the verdicts judged
    // are one set of measurements). Returns them, printed.
    let settle = |scenario: &str, failing: bool| -> Vec<Verdict> {
        let started = Instant::now();
        loop {
            let all = verdicts();
            let off: Vec<String> = all
                .iter()
                .filter(|v| expected(v.metric, failing).is_some_and(|e| e != v.phase))
                .map(|v| format!("{} {}/{}: {:?} {:?}", v.service, v.metric.template, v.metric.name, v.phase, v.result))
                .collect();
            if off.is_empty() {
                println!("{scenario}: as expected after {:?}", started.elapsed());
                for v in &all {
                    println!("{scenario:>8} {:<16} {:<28} {:?} {:?}", v.service, v.metric.name, v.phase, v.result);
                }
                return all;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "{scenario}: not as expected within 90 s: {off:#?}");
            thread::sleep(Duration::from_secs(1));
        }
    };

    let healthy = settle("healthy", false);
    // The retry rate measured the deliveries Envoy retried: 1 in 40.
    for v in healthy.iter().filter(|v| v.metric.name == "retry-rate") {
        let rate = v.result[0];
        assert!((0.5 / RETRIED_EVERY as f64..1.5 / RETRIED_EVERY as f64).contains(&rate), "retry rate {rate}");
    }
    let outbound_measured = healthy.iter().filter(|v| source(v.metric) == Source::Outbound).count();
    assert!(outbound_measured >= 6, "{outbound_measured} outbound metrics");
    // Each pod's inbound and outbound observers share its sidecar's VM: each keeps its own
    // window, so the outbound calls show in the outbound window gauges, never the inbound's.
    for service in ["impact-in", "unified-profile"] {
        let window = |direction: &str| {
            let query = format!(
                "sum(canary_window_requests{{service=\"{service}\",reporter=\"observer\",direction=\"{direction}\"}})"
            );
            prometheus.query(&query).first().map_or(0.0, |s| s.value)
        };
        wait_until(&format!("{service}'s outbound window counts its calls"), Duration::from_secs(10), || {
            window("outbound") > 0.0
        });
    }

    canary.configure("error_ratio=0.05");
    partner.configure("error_ratio=0.05");
    hris.configure("error_ratio=0.05");
    for v in settle("failing", true).iter().filter(|v| expected(v.metric, true).is_none()) {
        abort_metric_reports_the_gate(&envoy, &prometheus, v.service, v.metric, v.query);
    }
    let (deliveries, retried, unexpected) = calls.counts();
    assert!(unexpected.is_empty(), "outbound calls answered neither 200 nor the backends' 500: {unexpected:?}");
    println!("outbound: {deliveries} deliveries, {retried} retried");
}
