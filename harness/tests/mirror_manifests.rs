//! unified-profile's optional shadow phase (`istio/components/unified-profile-mirror`, a
//! kustomize Component), checked against the shipped manifests with Argo Rollouts' own rules
//! (`canary_harness::mirror`, after argo-rollouts' `rollout/trafficrouting/istio/istio.go`):
//!
//! - the mirror step comes before the first setWeight, and its route is gone before it;
//! - Argo puts the mirror route first in the VirtualService, above the pinned routes, with
//!   `primary`'s weights (stable 100). Each shipped router of unified-profile (canary-gate's own
//!   routing code, with the WasmPlugin's pluginConfig) decides a request, and the VirtualService
//!   as Argo left it routes it: a user pinned to stable or to the canary, a tester's override and
//!   a gated request keep their pinned routes, never the mirror route's weights; a new user's GET
//!   takes the mirror route (stable 100, copied to the canary subset), a POST `primary`;
//! - the background analysis of the Rollout with the Component judges the copies by the canary's
//!   revision (the observers' series) while the routers see none, under Argo's run semantics;
//! - the checks bite: a mirror route on GET alone, or one placed where Argo never puts it, fails.
//!
//! No Envoy, no cluster. `make manifests` builds the Component with `kubectl kustomize` and
//! validates what it applies against the real schemas.

use canary_gate::config::Config;
use canary_gate::model::{Revision, Version};
use canary_gate::route::bucket::BucketRng;
use canary_gate::route::revisions::Revisions;
use canary_gate::route::{RequestHeaders, Router};
use canary_harness::analysis::{
    background_run, document_named, documents, evaluate, healthy, load_rollouts, load_templates, to_json, Metric, Phase,
};
use canary_harness::analysis_run::{AnalysisRun, RunPhase};
use canary_harness::mirror::{component_patches, patched, route, route_names, ArgoIstio, Request, Routed};
use canary_harness::{root, TempDir};
use serde_json::{json, Value};
use std::fs;
use std::time::Duration;

const SERVICE: &str = "unified-profile";
const COMPONENT: &str = "istio/components/unified-profile-mirror";
const STABLE_REVISION: &str = "5d8f7c9b4";
const CANARY_REVISION: &str = "6c9b8d7f5";
const MINUTE: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_secs(5);

/// A shipped object under `istio/` as JSON.
fn shipped(kind: &str, name: &str) -> Value {
    to_json(&document_named(&root().join("istio"), kind, name))
}

/// The shipped Rollout with the Component's patches applied, as `kubectl kustomize` applies them.
fn mirror_rollout() -> Value {
    patched(shipped("Rollout", SERVICE), &component_patches(&root().join(COMPONENT)))
}

fn steps(rollout: &Value) -> Vec<Value> {
    rollout["spec"]["strategy"]["canary"]["steps"].as_array().cloned().unwrap_or_default()
}

fn argo(rollout: &Value) -> ArgoIstio {
    let routing = &rollout["spec"]["strategy"]["canary"]["trafficRouting"]["istio"];
    ArgoIstio::new(
        rollout,
        &shipped("DestinationRule", routing["destinationRule"]["name"].as_str().unwrap_or_default()),
    )
}

fn virtual_service(rollout: &Value) -> Value {
    let name = rollout["spec"]["strategy"]["canary"]["trafficRouting"]["istio"]["virtualService"]["name"].clone();
    shipped("VirtualService", name.as_str().unwrap_or_default())
}

/// Every shipped router of the service (a client router per caller), configured as Envoy would.
fn routers() -> Vec<(String, Router)> {
    let routers: Vec<(String, Router)> = documents(&root().join("istio"), "WasmPlugin")
        .iter()
        .map(to_json)
        .filter(|w| w["spec"]["pluginConfig"]["service"] == SERVICE && w["spec"]["pluginConfig"]["role"] != "observer")
        .map(|w| {
            let name = w["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let config = Config::parse(w["spec"]["pluginConfig"].to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{name}: canary-gate refuses its pluginConfig: {e:?}"));
            (name, Router::new(config))
        })
        .collect();
    assert!(routers.len() >= 2, "{SERVICE}'s routers, one per caller: {}", routers.len());
    routers
}

struct Headers<'a>(&'a [(String, String)]);

impl RequestHeaders for Headers<'_> {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_bytes().to_vec())
    }
}

/// One kind of request a caller's user sends, and the version the router must pin it to
/// (`None`: it leaves the choice to the mesh).
struct Case {
    what: &'static str,
    headers: Vec<(String, String)>,
    gate_tripped: bool,
    pinned: Option<Version>,
}

fn cases(config: &Config) -> Vec<Case> {
    let cookie = |pin: &str| ("cookie".to_string(), format!("{}={pin}", config.sticky.cookie));
    let forced = |v: &str| (config.r#override.header.clone(), v.to_string());
    let case =
        |what, headers: Vec<(String, String)>, gate_tripped, pinned| Case { what, headers, gate_tripped, pinned };
    vec![
        case("a new user", vec![], false, None),
        case(
            "a user pinned to stable",
            vec![cookie(&format!("stable.{STABLE_REVISION}"))],
            false,
            Some(Version::Stable),
        ),
        case(
            "a user pinned to the canary",
            vec![cookie(&format!("canary.{CANARY_REVISION}"))],
            false,
            Some(Version::Canary),
        ),
        case("a tester forcing the canary", vec![forced("canary")], false, Some(Version::Canary)),
        case("a tester forcing stable", vec![forced("stable")], false, Some(Version::Stable)),
        case("a new user while the gate is tripped", vec![], true, Some(Version::Stable)),
        case(
            "a canary-pinned user sending the mesh reason itself",
            vec![cookie(&format!("canary.{CANARY_REVISION}")), (config.reason_header.clone(), "mesh".to_string())],
            false,
            Some(Version::Canary),
        ),
        case(
            "a new user forwarding another service's version header",
            vec![("x-canary-version-api-gateway".to_string(), "canary".to_string())],
            false,
            None,
        ),
    ]
}

/// The request as the caller's sidecar routes it: after `router` replaced the version header
/// (removed when it leaves the choice to the mesh) and the reason header with its decision,
/// the subsets serving the revisions the observers stamped.
fn decided(router: &Router, method: &str, case: &Case) -> (Request, Option<Version>) {
    let config = router.config();
    let mut revisions = Revisions::default();
    for (version, revision) in [(Version::Stable, STABLE_REVISION), (Version::Canary, CANARY_REVISION)] {
        revisions.learn(version, Revision::parse(revision.as_bytes()).expect("a revision"), 0, 0);
    }
    let decision = router.decide_with(&Headers(&case.headers), &mut BucketRng::new(7), case.gate_tripped, &revisions);
    let mut headers: Vec<(String, String)> = case
        .headers
        .iter()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case(&config.version_header) && !k.eq_ignore_ascii_case(&config.reason_header)
        })
        .cloned()
        .collect();
    if let Some(v) = decision.version {
        headers.push((config.version_header.clone(), config.version_name(v).to_string()));
    }
    headers.push((config.reason_header.clone(), decision.reason.as_str().to_string()));
    (Request { method: method.to_string(), path: "/v1/profiles/42".to_string(), headers }, decision.version)
}

/// What is wrong with where `vs` sends `req`, which a router pinned to `pinned` (`None`: left
/// to the mesh), while the mirror route `mirror` is in place or not (`weight`: the canary's).
fn misrouted(
    vs: &Value,
    argo: &ArgoIstio,
    req: &Request,
    pinned: Option<Version>,
    mirror: Option<&str>,
    weight: i64,
) -> Option<String> {
    let Some(routed) = route(vs, req) else { return Some("no route".to_string()) };
    let subset = |v: Version| if v == Version::Canary { &argo.canary_subset } else { &argo.stable_subset };
    let want = match pinned {
        Some(v) => Routed {
            route: format!("{}-pinned", subset(v)),
            destinations: vec![(subset(v).clone(), 100)],
            mirror: None,
        },
        None => {
            let weights = vec![(argo.stable_subset.clone(), 100 - weight), (argo.canary_subset.clone(), weight)];
            match mirror.filter(|_| req.method == "GET") {
                Some(name) => Routed {
                    route: name.to_string(),
                    destinations: weights,
                    mirror: Some((argo.canary_subset.clone(), 100.0)),
                },
                None => Routed { route: "primary".to_string(), destinations: weights, mirror: None },
            }
        }
    };
    (routed != want).then(|| format!("{} {:?}: {routed:?}, expected {want:?}", req.method, req.headers))
}

/// Every request of every router and case misrouted in `vs`.
fn misrouted_all(vs: &Value, argo: &ArgoIstio, mirror: Option<&str>, weight: i64) -> Vec<String> {
    let mut out = Vec::new();
    for (name, router) in routers() {
        for case in cases(router.config()) {
            for method in ["GET", "POST"] {
                let (req, pinned) = decided(&router, method, &case);
                assert_eq!(pinned, case.pinned, "{name}: {}: the router's decision", case.what);
                if let Some(wrong) = misrouted(vs, argo, &req, pinned, mirror, weight) {
                    out.push(format!("{name}, {}: {wrong}", case.what));
                }
            }
        }
    }
    out
}

/// The `setMirrorRoute` of the step that sets the mirror route (with a match).
fn mirror_step(rollout: &Value) -> Value {
    steps(rollout)
        .into_iter()
        .find(|s| s["setMirrorRoute"].get("match").is_some())
        .map(|s| s["setMirrorRoute"].clone())
        .expect("a setMirrorRoute step with a match")
}

#[test]
fn the_shadow_phase_comes_before_the_first_set_weight_and_is_removed_before_it() {
    let rollout = mirror_rollout();
    let steps = steps(&rollout);
    let shipped_steps = self::steps(&shipped("Rollout", SERVICE));
    let mirror = mirror_step(&rollout);
    let name = mirror["name"].as_str().expect("a mirror route name");
    let set_at = steps.iter().position(|s| s["setMirrorRoute"].get("match").is_some()).unwrap();
    let removed_at =
        steps.iter().position(|s| s["setMirrorRoute"]["name"] == name && s["setMirrorRoute"].get("match").is_none());
    let first_weight = steps.iter().position(|s| s.get("setWeight").is_some()).unwrap();
    let removed_at = removed_at.expect("the mirror route removed (setMirrorRoute with its name, no match)");
    assert!(
        set_at < removed_at && removed_at < first_weight,
        "mirror {set_at}, removal {removed_at}, first setWeight {first_weight}"
    );
    assert!(
        steps[set_at..removed_at].iter().any(|s| s["pause"]["duration"].is_string()),
        "a timed pause while the copies flow: {steps:?}"
    );
    // Argo scales the canary with the weights: at 0 it has no pods to copy to.
    assert_eq!(steps[0], json!({"setCanaryScale": {"weight": shipped_steps[0]["setWeight"]}}), "{steps:?}");
    assert!(
        steps[..set_at].iter().all(|s| s.get("setCanaryScale").is_some()),
        "only the canary's scale before the mirror"
    );
    let rest: Vec<&Value> =
        steps[first_weight..].iter().filter(|s| s["setCanaryScale"] != json!({"matchTrafficWeight": true})).collect();
    assert_eq!(rest, shipped_steps.iter().collect::<Vec<_>>(), "the plan's steps after the shadow phase");
    assert!(
        steps[first_weight..].iter().position(|s| s["setCanaryScale"]["matchTrafficWeight"] == true)
            < steps[first_weight + 1..].iter().position(|s| s.get("setWeight").is_some()).map(|i| i + 1),
        "the canary's scale follows the weights again before the second setWeight: {steps:?}"
    );
    // What the plan asks: the reads of a read-heavy service, all of them.
    assert_eq!(mirror["percentage"], 100);
    for m in mirror["match"].as_array().expect("a match") {
        assert_eq!(m["method"], json!({"exact": "GET"}), "{m}");
    }
    // Argo requires the route among managedRoutes, and deletes every route listed there at the
    // end of a rollout and on an abort: never a route the VirtualService itself has.
    let argo = argo(&rollout);
    assert_eq!(argo.managed_routes, vec![name.to_string()]);
    let shipped_routes = route_names(&virtual_service(&rollout));
    assert!(!shipped_routes.contains(&name.to_string()), "{name} is a route of the VirtualService: {shipped_routes:?}");
    // The background analysis starts at the mirror step.
    assert_eq!(rollout["spec"]["strategy"]["canary"]["analysis"]["startingStep"], json!(set_at));
}

#[test]
fn argo_puts_the_mirror_route_above_the_pinned_routes_and_pinned_users_keep_theirs() {
    let rollout = mirror_rollout();
    let argo = argo(&rollout);
    let steps = steps(&rollout);
    let shipped_vs = virtual_service(&rollout);
    let mut vs = shipped_vs.clone();
    let name = mirror_step(&rollout)["name"].as_str().unwrap().to_string();
    let mut weight = 0;
    let mut mirrored_at = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if let Some(m) = step.get("setMirrorRoute") {
            argo.set_mirror_route(&mut vs, m);
        }
        if let Some(w) = step["setWeight"].as_i64() {
            assert!(!route_names(&vs).contains(&name), "step {i}: setWeight {w} with the mirror route in place");
            weight = w;
            argo.set_weight(&mut vs, w);
        }
        let mirror = route_names(&vs).contains(&name).then_some(name.as_str());
        if mirror.is_some() {
            mirrored_at.push(i);
            // Where Argo puts it, and what it holds (`omitempty` drops the canary's weight of 0).
            assert_eq!(route_names(&vs)[0], name, "step {i}: {:?}", route_names(&vs));
            let host = argo.host.clone();
            assert_eq!(
                vs["spec"]["http"][0],
                json!({"name": name,
                       "match": [{"method": {"exact": "GET"}, "headers": {"x-canary-reason-unified-profile": {"exact": "mesh"}}}],
                       "route": [{"destination": {"host": host, "subset": "stable"}, "weight": 100},
                                 {"destination": {"host": host, "subset": "canary"}}],
                       "mirror": {"host": host, "subset": "canary"},
                       "mirrorPercentage": {"value": 100.0}}),
                "step {i}"
            );
        }
        let wrong = misrouted_all(&vs, &argo, mirror, weight);
        assert!(wrong.is_empty(), "step {i} {step}:\n{}", wrong.join("\n"));
        // Without canary-gate (a router failing open) no request carries the reason: nothing is
        // copied and the request takes `primary`, as without the shadow phase.
        let bare = Request { method: "GET".into(), path: "/".into(), headers: vec![] };
        let routed = route(&vs, &bare).expect("a route");
        assert_eq!((routed.route.as_str(), routed.mirror), ("primary", None), "step {i}");
    }
    assert!(!mirrored_at.is_empty(), "the mirror route is never in place");
    // The end of the steps promotes: Argo removes the managed routes, the VirtualService has its own.
    argo.remove_managed_routes(&mut vs, &steps);
    assert_eq!(route_names(&vs), route_names(&shipped_vs));

    // An abort during the shadow phase: the managed routes go, the weights back to stable.
    let mut vs = shipped_vs.clone();
    for step in &steps[..=mirrored_at[0]] {
        if let Some(m) = step.get("setMirrorRoute") {
            argo.set_mirror_route(&mut vs, m);
        }
    }
    assert_eq!(route_names(&vs)[0], name);
    argo.remove_managed_routes(&mut vs, &steps);
    argo.set_weight(&mut vs, 0);
    assert_eq!(vs, shipped_vs, "after an abort in the shadow phase");
}

#[test]
fn the_checks_reject_a_mirror_route_that_takes_pinned_users_or_copies_nothing() {
    let rollout = mirror_rollout();
    let argo = argo(&rollout);
    let mut step = mirror_step(&rollout);
    let name = step["name"].as_str().unwrap().to_string();

    // GET alone: Argo puts the route above the pinned ones, and pinned users' GETs go to stable.
    for m in step["match"].as_array_mut().unwrap() {
        m.as_object_mut().unwrap().remove("headers");
    }
    let mut vs = virtual_service(&rollout);
    argo.set_mirror_route(&mut vs, &step);
    let wrong = misrouted_all(&vs, &argo, Some(&name), 0);
    for who in ["a user pinned to the canary", "a tester forcing the canary", "a user pinned to stable"] {
        assert!(
            wrong.iter().any(|w| w.contains(who) && w.contains(&format!("route: \"{name}\""))),
            "{who} not caught: {wrong:?}"
        );
    }

    // The shipped match, placed below `primary` (where Argo never puts it): nothing is copied.
    let mut vs = virtual_service(&rollout);
    argo.set_mirror_route(&mut vs, &mirror_step(&rollout));
    let http = vs["spec"]["http"].as_array_mut().unwrap();
    let mirror = http.remove(0);
    http.push(mirror);
    let wrong = misrouted_all(&vs, &argo, Some(&name), 0);
    assert!(wrong.iter().any(|w| w.contains("a new user") && w.starts_with("canary-gate-router")), "{wrong:?}");
    assert!(wrong.iter().all(|w| w.contains("GET")), "only GETs are copied: {wrong:?}");
}

/// The Rollout with the Component, its templates (the SLO template patched, the shadow one,
/// the abort one) written to `dir` as the documents `kubectl kustomize` would apply.
fn write_mirror_documents(dir: &TempDir) {
    let patches = component_patches(&root().join(COMPONENT));
    let shadow = to_json(&document_named(&root().join(COMPONENT), "AnalysisTemplate", &format!("{SERVICE}-shadow")));
    let docs = [
        mirror_rollout(),
        patched(shipped("AnalysisTemplate", &format!("{SERVICE}-slo")), &patches),
        shipped("AnalysisTemplate", "canary-gate-abort"),
        shadow,
    ];
    for (i, doc) in docs.iter().enumerate() {
        // JSON is YAML.
        fs::write(dir.path().join(format!("{i}.yaml")), doc.to_string()).expect("write a document");
    }
}

/// The mirror pause: how long the copies flow before the route is removed and the weights move.
fn mirror_pause(rollout: &Value) -> Duration {
    let steps = steps(rollout);
    let set_at = steps.iter().position(|s| s["setMirrorRoute"].get("match").is_some()).unwrap();
    steps[set_at..]
        .iter()
        .take_while(|s| s.get("setWeight").is_none())
        .filter_map(|s| s["pause"]["duration"].as_str())
        .map(canary_harness::analysis::duration)
        .sum()
}

fn reads_routers(m: &Metric) -> bool {
    m.query.contains("reporter=\"router\"")
}

fn reads_canary_revision(m: &Metric) -> bool {
    m.query.contains("reporter=\"observer\"") && m.query.contains("revision=\"{{args.canary-hash}}\"")
}

/// The merged background run of the Rollout with the Component, reconciled every 5 s from the
/// mirror step (where it starts) until `until` or its end; `answer(metric, now)` is Prometheus.
fn play_analysis(until: Duration, answer: impl Fn(&Metric, Duration) -> Vec<f64>) -> (Vec<Metric>, AnalysisRun) {
    let dir = TempDir::new("mirror-analysis");
    write_mirror_documents(&dir);
    let metrics = load_templates(dir.path());
    let rollouts = load_rollouts(dir.path());
    let (merged, mut run) = background_run(&rollouts[0], &metrics);
    let mut now = Duration::ZERO;
    while now <= until && !run.phase.completed() {
        run.reconcile(now, |m| {
            let metric = merged.iter().find(|x| x.name == m.name).expect("a metric of the run");
            evaluate(metric, &answer(metric, now))
        });
        now += TICK;
    }
    (merged, run)
}

#[test]
fn the_shadow_phase_is_judged_by_the_canary_revision() {
    let pause = mirror_pause(&mirror_rollout());
    assert!(pause >= 3 * MINUTE, "a shadow phase of a few minutes: {pause:?}");
    let dir = TempDir::new("mirror-templates");
    write_mirror_documents(&dir);
    let metrics = load_templates(dir.path());
    let rollout = load_rollouts(dir.path()).remove(0);
    assert!(rollout.templates.contains(&format!("{SERVICE}-shadow")), "{:?}", rollout.templates);
    let (merged, _) = background_run(&rollout, &metrics);
    // The copies are judged by revision, from the observers, before the mirror route goes.
    let shadow: Vec<&Metric> = merged.iter().filter(|m| m.template == format!("{SERVICE}-shadow")).collect();
    assert!(shadow.len() >= 3, "{shadow:?}");
    for m in &shadow {
        assert!(reads_canary_revision(m) && m.query.contains("direction=\"inbound\""), "{}: {}", m.name, m.query);
        let (delay, interval, count) =
            (m.run.initial_delay.unwrap_or_default(), m.run.interval.unwrap(), m.run.count.unwrap());
        assert!(delay + interval * (count - 1) < pause, "{}: its last measurement after the shadow phase", m.name);
    }
    // The routers see no canary response during the phase: their metrics wait for the weights.
    for m in merged.iter().filter(|m| reads_routers(m)) {
        assert!(m.run.initial_delay.unwrap_or_default() >= pause + 5 * MINUTE, "{}: {:?}", m.name, m.run.initial_delay);
    }

    // Healthy copies, no router data until a minute after the weights start: the shadow metrics
    // pass within the phase, nothing ends the run.
    let (_, run) = play_analysis(40 * MINUTE, |m, now| {
        if m.query.contains("canary_gate_tripped") {
            vec![0.0]
        } else if reads_routers(m) && now < pause + MINUTE {
            vec![]
        } else {
            healthy(m)
        }
    });
    assert_eq!(run.phase, RunPhase::Running, "{}", run.message);
    for m in &shadow {
        let result = run.result(&m.name).expect("measured");
        assert_eq!(result.phase, Some(RunPhase::Successful), "{}", m.name);
        assert!(result.measurements.iter().all(|(at, _)| *at < pause), "{}: {:?}", m.name, result.measurements);
    }

    // The copies fail (5% 5xx at the canary's pods) while no user reaches the canary: the run
    // fails before the mirror route is removed, on the revision's own series.
    let (_, run) = play_analysis(40 * MINUTE, |m, now| {
        if m.query.contains("canary_gate_tripped") {
            vec![0.0]
        } else if reads_routers(m) && now < pause + MINUTE {
            vec![]
        } else if reads_canary_revision(m) && m.query.contains("code_class=\"5xx\"") {
            vec![0.05]
        } else {
            healthy(m)
        }
    });
    assert_eq!(run.phase, RunPhase::Failed, "{}", run.message);
    let failed_at = shadow
        .iter()
        .filter_map(|m| run.result(&m.name))
        .flat_map(|r| r.measurements.iter().filter(|(_, p)| *p == Phase::Failed).map(|(at, _)| *at))
        .min()
        .expect("a shadow metric failed");
    assert!(failed_at < pause, "failed at {failed_at:?}, the phase ends at {pause:?}");

    // Nothing copied (no caller's router sets the reason): the run ends Inconclusive within the
    // phase and Argo pauses the rollout for a human, rather than weighting an unjudged canary.
    let (_, run) = play_analysis(40 * MINUTE, |m, now| {
        if m.query.contains("canary_gate_tripped") {
            vec![0.0]
        } else if (reads_routers(m) && now < pause + MINUTE) || reads_canary_revision(m) {
            vec![]
        } else {
            healthy(m)
        }
    });
    assert_eq!(run.phase, RunPhase::Inconclusive, "{}", run.message);
    let ended = merged
        .iter()
        .filter_map(|m| run.result(&m.name))
        .flat_map(|r| r.measurements.iter().map(|(at, _)| *at))
        .max()
        .unwrap_or_default();
    assert!(ended < pause, "ended at {ended:?}, the phase ends at {pause:?}");
}
