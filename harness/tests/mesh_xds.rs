//! The mesh harness against real Envoys: an ingress fed by file-based RDS/CDS/EDS as istiod
//! would feed it, in front of one sidecar per pod, follows weight and endpoint changes (the
//! moves Argo Rollouts makes through Istio), and each pod's observer counts what it served; a
//! calling pod's sidecar routes the service's in-cluster names, its pinned routes matching the
//! router's own version header.

use canary_harness::mesh::{prometheus_sum, Router, Service, Sidecar, Subset};
use canary_harness::{mesh_config, wait_until, Backend, Client, Reply};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The observer as `istio/services/*/observers.yaml` configure it: version from the `role` label.
const OBSERVER: &str = r#"{"service": "checkout", "role": "observer", "version_label": "role"}"#;

/// `n` requests from new users (no cookie, so no pin) with `headers`.
fn send(client: &Client, url: &str, n: usize, headers: &[(&str, &[u8])]) -> Vec<Reply> {
    (0..n).map(|_| client.get(url, headers)).collect()
}

/// The 200s answered by the application of `version`.
fn served_by<'a>(replies: &'a [Reply], version: &'a str) -> impl Iterator<Item = &'a Reply> + 'a {
    replies.iter().filter(move |r| r.status == 200 && r.served_by.as_deref() == Some(version))
}

/// `canary_requests_total` of the observer in `pod` for its own version, from Prometheus text.
fn observed(pod: &Sidecar) -> u64 {
    let labels = [("service", "checkout"), ("version", pod.role.name()), ("reporter", "observer")];
    prometheus_sum(&pod.prometheus(), "canary_requests_total", &labels).unwrap_or(0.0) as u64
}

/// Waits until the observer in `pod` has counted the `served` requests its application answered
/// (it counts when the stream ends, just after the client has its response).
fn assert_observed(pod: &Sidecar, served: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while observed(pod) != served {
        let exposition = pod.prometheus();
        let series: Vec<&str> = exposition.lines().filter(|l| l.starts_with("canary_requests_total")).collect();
        assert!(Instant::now() < deadline, "observer of {} did not count {served}: {series:#?}", pod.pod);
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_ingress_follows_weights_and_endpoints_and_each_pod_observes_what_it_served() {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let service = Service::checkout();
    let stable_pod = Sidecar::start(&service, "5f7d9c8b4", Subset::Stable, stable.port, OBSERVER);
    let canary_pod = Sidecar::start(&service, "6c4b8d7f9", Subset::Canary, canary.port, OBSERVER);
    let ingress = Router::gateway(&service, &mesh_config(), &[stable_pod.port], &[canary_pod.port]);
    let (client, url) = (Client::new(), ingress.url("/"));

    // At rest (100/0) the route sends every new user to stable.
    assert_eq!(ingress.weights(), (100, 0));
    let replies = send(&client, &url, 30, &[]);
    assert_eq!(served_by(&replies, "stable").count(), 30, "{replies:?}");
    assert!(replies.iter().all(|r| r.reason.as_deref() == Some("mesh")), "{replies:?}");

    // The tester's override reaches the canary through the pinned route, at weight 0 too.
    let overridden = send(&client, &url, 5, &[("x-canary", b"canary")]);
    assert_eq!(served_by(&overridden, "canary").count(), 5, "{overridden:?}");

    // 50/50: both subsets serve (fewer than 10 of 100 on one side has odds below 1e-16).
    let took = ingress.set_weights(50, 50);
    println!("RDS 100/0 -> 50/50 applied in {took:?}");
    assert_eq!(ingress.weights(), (50, 50));
    let replies = send(&client, &url, 100, &[]);
    let (to_stable, to_canary) = (served_by(&replies, "stable").count(), served_by(&replies, "canary").count());
    assert_eq!(to_stable + to_canary, 100, "{replies:?}");
    assert!(to_stable >= 10 && to_canary >= 10, "50/50 gave {to_stable}/{to_canary}");

    // Each pod's observer counted exactly the requests its application answered.
    assert_observed(&stable_pod, stable.requests());
    assert_observed(&canary_pod, canary.requests());

    // Canary scaled to zero: istiod sends the subset's cluster no endpoints; requests routed to
    // it get Envoy's 503 `no healthy upstream` (flag UH), the others still reach stable.
    let took = ingress.set_endpoints(Subset::Canary, &[]);
    println!("EDS canary -> no endpoints applied in {took:?}");
    assert_eq!(ingress.endpoints(Subset::Canary), Vec::<u16>::new());
    let overridden = send(&client, &url, 3, &[("x-canary", b"canary")]);
    assert!(overridden.iter().all(|r| r.status == 503 && r.body == "no healthy upstream"), "{overridden:?}");
    let replies = send(&client, &url, 100, &[]);
    let unavailable = replies.iter().filter(|r| r.status == 503 && r.body == "no healthy upstream").count();
    let to_stable = served_by(&replies, "stable").count();
    assert_eq!(unavailable + to_stable, 100, "{replies:?}");
    assert!(unavailable >= 10 && to_stable >= 10, "50/50 without canary pods: {unavailable} 503s of 100");
    let none_healthy = format!("cluster.{}.upstream_cx_none_healthy", service.cluster(Subset::Canary));
    assert_eq!(ingress.stat(&none_healthy), (unavailable + 3) as u64);
    let uh = format!(
        "503 flags=UH details=no_healthy_upstream route=canary-pinned cluster={}",
        service.cluster(Subset::Canary)
    );
    wait_until("the access log shows no healthy upstream", Duration::from_secs(10), || {
        ingress.access_log().contains(&uh)
    });

    // A new canary ReplicaSet: the subset now selects its pod only.
    let next = Backend::start("canary-2", &[]);
    let next_pod = Sidecar::start(&service, "7b5d8c6f4", Subset::Canary, next.port, OBSERVER);
    let took = ingress.set_endpoints(Subset::Canary, &[next_pod.port]);
    println!("EDS canary -> new pod applied in {took:?}");
    let overridden = send(&client, &url, 5, &[("x-canary", b"canary")]);
    assert_eq!(served_by(&overridden, "canary-2").count(), 5, "{overridden:?}");
    let replies = send(&client, &url, 100, &[]);
    let (to_stable, to_next) = (served_by(&replies, "stable").count(), served_by(&replies, "canary-2").count());
    assert_eq!(to_stable + to_next, 100, "{replies:?}");
    assert!(to_stable >= 10 && to_next >= 10, "50/50 with the new canary pod gave {to_stable}/{to_next}");
    assert_observed(&next_pod, next.requests());
    assert_eq!(canary.requests(), (5 + to_canary) as u64, "the old canary pod got nothing after it left");
    assert_observed(&canary_pod, canary.requests());
}

#[test]
fn a_callers_sidecar_routes_the_services_in_cluster_names_and_pins_on_the_routers_version_header() {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let service = Service::new("profile", "shop", 3003);
    let stable_pod = Sidecar::start(&service, "5f7d9c8b4", Subset::Stable, stable.port, OBSERVER);
    let canary_pod = Sidecar::start(&service, "6c4b8d7f9", Subset::Canary, canary.port, OBSERVER);
    let router = r#"{"service": "profile", "split": {"mode": "mesh"}, "hosts": ["profile", "profile.shop.svc.cluster.local"],
        "version_header": "x-canary-version-profile"}"#;
    let sidecar = Router::caller_sidecar(&service, "frontend", router, &[stable_pod.port], &[canary_pod.port]);
    assert_eq!(sidecar.version_header(), "x-canary-version-profile");
    let (client, url) = (Client::new(), sidecar.url("/"));

    // The application calls http://profile:3003 (or another in-cluster name): the service's
    // virtual host; any other host has none (404, from Envoy).
    for host in ["profile:3003", "profile", "profile.shop.svc.cluster.local:3003"] {
        let reply = client.get(&url, &[("host", host.as_bytes())]);
        assert_eq!(reply.served_by.as_deref(), Some("stable"), "{host}: {reply:?}");
        assert_eq!(reply.header("x-canary-version-profile"), Some("stable"), "{host}: {reply:?}");
    }
    assert_eq!(client.get(&url, &[("host", b"other:3003")]).status, 404);

    // At weight 0 the override reaches the canary only through the pinned route, which
    // matches the header the router sets.
    let authority = service.authority();
    let headers: &[(&str, &[u8])] = &[("host", authority.as_bytes()), ("x-canary", b"canary")];
    let overridden = send(&client, &url, 5, headers);
    assert_eq!(served_by(&overridden, "canary").count(), 5, "{overridden:?}");
    let routed = format!("route=canary-pinned cluster={}", service.cluster(Subset::Canary));
    wait_until("the access log shows the pinned route", Duration::from_secs(10), || {
        sidecar.access_log().contains(&routed)
    });
    // Istio's outbound listener: its HTTP stats under `outbound_0.0.0.0_3003`.
    assert_eq!(sidecar.stat("http.outbound_0.0.0.0_3003.downstream_rq_total"), 9);
}
