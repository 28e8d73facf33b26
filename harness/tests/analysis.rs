//! Every PromQL query of every AnalysisTemplate in `istio/`, with the arguments its Rollout
//! passes substituted as Argo does, run against a real Prometheus scraping a real Envoy whose
//! canary-gate routers are configured from the shipped WasmPlugins: a healthy canary passes
//! every canary-gate gate, its route classes and cache outcomes included; a canary answering 5%
//! 5xx fails the error-rate gates. This stack has no observers, so their metrics (by revision,
//! inbound and outbound) are inconclusive here, like the application's; `lifecycle.rs` measures
//! the inbound ones against real observer sidecars, `classes.rs` the outbound ones.

use canary_harness::analysis::{
    documents, evaluate, load_rollouts, load_templates, substitute, to_json, Metric, Phase,
};
use canary_harness::prometheus::Prometheus;
use canary_harness::{root, wait_until, Backend, Envoy, EnvoyOptions, Layout};
use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

const PROMETHEUS: &str = "http://prometheus.monitoring.svc.cluster.local:9090";

/// The routers' pluginConfig per service, from the shipped gateway WasmPlugins.
fn router_configs() -> BTreeMap<String, String> {
    documents(&root().join("istio/wasmplugin"), "WasmPlugin")
        .iter()
        .map(|doc| to_json(&doc["spec"]["pluginConfig"]))
        .filter(|c| c["role"].as_str().unwrap_or("router") == "router" && c["hosts"].is_array())
        .map(|c| (c["service"].as_str().unwrap_or_default().to_string(), c.to_string()))
        .collect()
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

#[test]
fn every_analysis_query_gives_the_expected_verdict_healthy_and_failing() {
    let configs = router_configs();
    let services: Vec<String> = configs.keys().cloned().collect();
    assert_eq!(services.len(), 6, "{services:?}");
    let measurements = measurements();
    let stable = Backend::start("stable", &["--latency-ms", "1", "--latency-spread-ms", "4"]);
    let canary = Backend::start("canary", &["--latency-ms", "1", "--latency-spread-ms", "4"]);
    let weights = |s: String| s.replace("weight: 90\n", "weight: 50\n").replace("weight: 10\n", "weight: 50\n");
    let filters: Vec<&str> = configs.values().map(String::as_str).collect();
    let options = EnvoyOptions { layout: Layout::MeshMode, filter_json: filters[0], workers: 2, edit: &weights };
    let envoy = Envoy::start_inline(options, &stable, &canary, &filters);
    let prometheus = Prometheus::start(&[envoy.admin_port], &[]);

    // Steady traffic to every service (by Host) from wrk, bounded in time. The queries take
    // `rate(...[5m])`, which over a series younger than 5 minutes divides by the whole 5
    // minutes: the volume gates need a few hundred requests per second per service here.
    // corp-cockpit's requests cycle through its route classes (API, asset, page, other);
    // unified-profile's backend says its cache answered 9 requests in 10.
    let dir = canary_harness::TempDir::new("wrk");
    let script = dir.path().join("hosts.lua");
    let hosts: Vec<String> = services.iter().map(|s| format!("\"{s}\"")).collect();
    let lua = r#"local hosts = {HOSTS}
local n = 0
request = function()
  n = n + 1
  local host = hosts[(n % #hosts) + 1]
  local headers = {["Host"] = host, ["x-user-id"] = "u" .. n}
  local path = "/"
  local turn = math.floor(n / #hosts)
  if host == "corp-cockpit" then
    if turn % 4 == 0 then path = "/api/items" elseif turn % 4 == 1 then path = "/_astro/app.js?v=3"
    elseif turn % 4 == 2 then headers["accept"] = "text/html,application/xhtml+xml" end
  elseif host == "unified-profile" and turn % 10 ~= 0 then
    headers["x-backend-set"] = "x-cache=HIT"
  end
  return wrk.format("GET", path, headers)
end
"#;
    std::fs::write(&script, lua.replace("HOSTS", &hosts.join(", "))).unwrap();
    let mut wrk = std::process::Command::new("wrk")
        .args(["-t1", "-c8", "-d90s", "-s"])
        .arg(&script)
        .arg(envoy.url("/"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("wrk (Debian package `wrk`)");

    let verdicts = |scenario: &str| -> Vec<Verdict> {
        measurements
            .iter()
            .map(|(service, metric, query)| {
                let result = measure(&prometheus, query);
                let phase = evaluate(metric, &result);
                println!("{scenario:>8} {service:<16} {:<28} {phase:?} {result:?}", metric.name);
                Verdict { service, metric, query, phase, result }
            })
            .collect()
    };

    thread::sleep(Duration::from_secs(30));
    let from_router = |m: &Metric| m.from_canary_gate() && !m.query.contains("reporter=\"observer\"");
    for v in verdicts("healthy") {
        let expected = if from_router(v.metric) { Phase::Successful } else { Phase::Inconclusive };
        assert_eq!(v.phase, expected, "healthy {} {}/{}: {:?}", v.service, v.metric.template, v.metric.name, v.result);
    }

    canary.configure("error_ratio=0.05");
    thread::sleep(Duration::from_secs(15));
    for v in verdicts("failing") {
        let m = v.metric;
        if m.query.contains("canary_gate_tripped") {
            abort_metric_reports_the_gate(&envoy, &prometheus, v.service, m, v.query);
            continue;
        }
        // 5% 5xx on every canary path: every error ratio at the router fails (the API's 0.1%,
        // the assets' 1% of 4xx or 5xx); latencies, volumes and the cache hit rate pass.
        let counts_errors = m.query.contains("code_class=\"5xx\"") || m.query.contains("code_class=~\"4xx|5xx\"");
        let expected = if !from_router(m) {
            Phase::Inconclusive
        } else if counts_errors {
            Phase::Failed
        } else {
            Phase::Successful
        };
        assert_eq!(v.phase, expected, "failing {} {}/{}: {:?}", v.service, m.template, m.name, v.result);
    }
    let _ = wrk.kill();
    let _ = wrk.wait();
}
