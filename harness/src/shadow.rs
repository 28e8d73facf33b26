//! Shadow testing against real Envoys: a calling pod's sidecar ([`MirroringRouter`]) routes a
//! service to its stable subset only (the canary at weight 0) and copies the GETs canary-gate's
//! router leaves to the mesh to the canary subset with Envoy's request mirroring, as istiod
//! translates a VirtualService `mirror` (100%, `trace_sampled` off, the `-shadow` host suffix as
//! `DISABLE_SHADOW_HOST_SUFFIX` says); in front of one [`Pod`] per pod of the service, its
//! sidecar running canary-gate's inbound observer, with the pod's labels in the node metadata,
//! and logging the authority each request arrived with. Static configuration: weights and
//! endpoints do not move.
//!
//! All on 127.0.0.1 and free ports; processes stopped by PID on drop; logs kept in each
//! process's TempDir and printed when the test panics.

use crate::mesh::{shipped_stats_config, Proxy, Service, Subset};
use crate::{free_port, TempDir};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// Worker threads of the router: Istio's default.
const ROUTER_WORKERS: u32 = 2;
/// canary-gate's `version_header` and `reason_header` when its configuration sets none: the
/// pinned routes match the first, the mirror route the second.
const VERSION_HEADER: &str = "x-canary-version";
const REASON_HEADER: &str = "x-canary-reason";
/// The authority each request arrived with, so a test sees what a mirrored copy carried.
const ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)%\" %RESPONSE_CODE% \
authority=%REQ(:AUTHORITY)% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% revision=%RESP(X-CANARY-REVISION)% \
served_by=%RESP(X-SERVED-BY)% %DURATION%ms\n";

/// The authority a mirrored copy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowHost {
    /// Envoy's default: `-shadow` appended to the host (`checkout:8080` arrives as
    /// `checkout-shadow:8080`); Istio before 1.28, or with `DISABLE_SHADOW_HOST_SUFFIX=false`.
    Suffixed,
    /// `disable_shadow_host_suffix_append: true`, the request's own authority: what istiod sets
    /// since 1.28 (`DISABLE_SHADOW_HOST_SUFFIX` defaults to true).
    Unchanged,
}

impl ShadowHost {
    /// The authority a copy of a request to `authority` (`host` or `host:port`) arrives with.
    pub fn of(self, authority: &str) -> String {
        match (self, authority.rsplit_once(':')) {
            (ShadowHost::Unchanged, _) => authority.to_string(),
            (ShadowHost::Suffixed, Some((host, port))) => format!("{host}-shadow:{port}"),
            (ShadowHost::Suffixed, None) => format!("{authority}-shadow"),
        }
    }
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// An HTTP connection manager with canary-gate (`filter_json`) then Envoy's router, logging to
/// `dir/access.log`.
fn http_connection_manager(stat_prefix: &str, dir: &Path, routes: Value, filter_json: &str) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": dir.join("access.log").display().to_string(),
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}}
                }
            }],
            "route_config": routes,
            "http_filters": [
                {"name": "canary-gate", "typed_config": crate::build_filter_config("canary-gate", filter_json)},
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                }
            ]
        }
    })
}

/// A static cluster `name` with one endpoint per port on 127.0.0.1, with istiod's unlimited
/// circuit breakers.
fn static_cluster(name: &str, ports: &[u16]) -> Value {
    let endpoints: Vec<Value> = ports.iter().map(|p| json!({"endpoint": {"address": socket(*p)}})).collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
        "circuit_breakers": {"thresholds": [{
            "max_connections": 4294967295u32, "max_pending_requests": 4294967295u32,
            "max_requests": 4294967295u32, "max_retries": 4294967295u32, "track_remaining": true
        }]}
    })
}

/// Pod names `<workload>-<n>`, unique within the test process.
static POD_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn next_pod(workload: &str) -> String {
    format!("{workload}-shadow-{:05}", POD_SEQUENCE.fetch_add(1, Ordering::SeqCst))
}

/// The sidecar of a pod calling a [`Service`] (2 workers), routing its calls as istiod programs
/// a client sidecar for a VirtualService bound to `mesh` in a rollout's shadow phase, with the
/// mirror route Argo Rollouts' `setMirrorRoute` writes above the others (the copies: GETs the
/// router left to the mesh, never a pinned, overridden or gated request):
///
/// ```yaml
/// http:
/// - name: shadow
///   match: [{method: {exact: GET}, headers: {x-canary-reason: {exact: mesh}}}]
///   route: [{destination: {subset: stable}, weight: 100}, {destination: {subset: canary}}]
///   mirror: {host: <fqdn>, subset: canary}
///   mirrorPercentage: {value: 100}
/// - {name: canary-pinned, match: [{headers: {x-canary-version: {exact: canary}}}], route: [canary]}
/// - {name: stable-pinned, match: [{headers: {x-canary-version: {exact: stable}}}], route: [stable]}
/// - {name: primary, route: [{subset: stable, weight: 100}, {subset: canary, weight: 0}]}
/// ```
///
/// canary-gate's router (`filter_json`, with the default version and reason headers) runs
/// before Envoy's router, and the subsets' clusters are Istio's `outbound|<port>|<subset>|<fqdn>`.
pub struct MirroringRouter {
    proxy: Proxy,
    /// Listener port on 127.0.0.1.
    pub port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
}

/// The route named `name` for requests whose headers equal `headers` (name, value), to `action`
/// (`("cluster", …)` or `("weighted_clusters", …)`).
fn route(service: &Service, name: &str, headers: &[(&str, &str)], action: (&str, Value)) -> Value {
    let mut matcher = json!({"prefix": "/"});
    if !headers.is_empty() {
        let matchers: Vec<Value> =
            headers.iter().map(|(name, value)| json!({"name": name, "string_match": {"exact": value}})).collect();
        matcher["headers"] = json!(matchers);
    }
    let mut action_value = json!({"timeout": "0s"});
    action_value[action.0] = action.1;
    json!({
        "name": name,
        "match": matcher,
        "route": action_value,
        "decorator": {"operation": format!("{}:{}/*", service.fqdn(), service.port)}
    })
}

impl MirroringRouter {
    /// The sidecar of a pod of workload `caller` routing its calls to `service` (listener
    /// `0.0.0.0_<port>`, a virtual host for the service's in-cluster names with and without the
    /// port), with canary-gate configured by `filter_json` and each subset's pods at `stable`
    /// and `canary`; the copies carry the authority `shadow_host` says.
    pub fn caller_sidecar(
        service: &Service,
        caller: &str,
        filter_json: &str,
        (stable, canary): (&[u16], &[u16]),
        shadow_host: ShadowHost,
    ) -> MirroringRouter {
        let dir = TempDir::new("shadow-router");
        let (port, admin_port) = (free_port(), free_port());
        let (namespace, pod) = (&service.namespace, next_pod(caller));
        let names = service.names();
        let domains: Vec<String> =
            names.iter().cloned().chain(names.iter().map(|n| format!("{n}:{}", service.port))).collect();
        let (stable_cluster, canary_cluster) = (service.cluster(Subset::Stable), service.cluster(Subset::Canary));
        // istiod leaves the 0-weight canary out of `weighted_clusters`.
        let weighted = json!({"clusters": [{"name": stable_cluster, "weight": 100}]});
        let copied = [(":method", "GET"), (REASON_HEADER, "mesh")];
        let mut shadow = route(service, "shadow", &copied, ("weighted_clusters", weighted.clone()));
        shadow["route"]["request_mirror_policies"] = json!([{
            "cluster": canary_cluster,
            "runtime_fraction": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "trace_sampled": false,
            "disable_shadow_host_suffix_append": shadow_host == ShadowHost::Unchanged
        }]);
        let pinned = |subset: Subset, cluster: &str| {
            let name = format!("{}-pinned", subset.name());
            route(service, &name, &[(VERSION_HEADER, subset.name())], ("cluster", json!(cluster)))
        };
        let routes = json!({
            "name": service.port.to_string(),
            "virtual_hosts": [{
                "name": format!("{}:{}", service.fqdn(), service.port),
                "domains": domains,
                "routes": [
                    shadow,
                    pinned(Subset::Canary, &canary_cluster),
                    pinned(Subset::Stable, &stable_cluster),
                    route(service, "primary", &[], ("weighted_clusters", weighted)),
                ]
            }],
            "validate_clusters": false
        });
        let listener = format!("0.0.0.0_{}", service.port);
        let bootstrap = json!({
            "node": {
                "id": format!("sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
                "cluster": format!("{caller}.{namespace}"),
                "metadata": {
                    "LABELS": {"app": caller, "service.istio.io/canonical-name": caller},
                    "NAME": pod,
                    "NAMESPACE": namespace,
                    "WORKLOAD_NAME": caller
                }
            },
            "stats_config": shipped_stats_config(),
            "admin": {"address": socket(admin_port)},
            "static_resources": {
                "listeners": [{
                    "name": listener,
                    "address": socket(port),
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [{"filters": [http_connection_manager(
                        &format!("outbound_{listener}"),
                        dir.path(),
                        routes,
                        filter_json
                    )]}]
                }],
                "clusters": [static_cluster(&stable_cluster, stable), static_cluster(&canary_cluster, canary)]
            }
        });
        let what = format!("sidecar {pod} (caller, mirroring)");
        let proxy = Proxy::start(what, dir, &bootstrap, ROUTER_WORKERS, port, admin_port);
        MirroringRouter { proxy, port, admin_port }
    }
}

impl std::ops::Deref for MirroringRouter {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}

/// One pod of a ReplicaSet: its sidecar Envoy (1 worker) with canary-gate (`filter_json`, an
/// inbound observer) on the inbound listener in front of the application's port, the pod's
/// labels (`app`, `rollouts-pod-template-hash`, `role`) in the node metadata where Istio's
/// bootstrap puts them.
pub struct Pod {
    proxy: Proxy,
    /// Inbound listener port on 127.0.0.1: the endpoint the router lists for this pod.
    pub port: u16,
    /// The pod's name.
    pub pod: String,
    /// Its `rollouts-pod-template-hash` label.
    pub revision: String,
    /// Its `role` label.
    pub role: Subset,
}

impl Pod {
    /// Starts the sidecar of a pod of `service` of `revision` labelled `role`, forwarding to
    /// the application at `app_port`.
    pub fn start(service: &Service, revision: &str, role: Subset, app_port: u16, filter_json: &str) -> Pod {
        let dir = TempDir::new("shadow-pod");
        let (port, admin_port) = (free_port(), free_port());
        let (app, namespace, service_port) = (&service.name, &service.namespace, service.port);
        let pod = next_pod(&format!("{app}-{revision}"));
        let inbound = format!("inbound|{service_port}||");
        let routes = json!({
            "name": inbound,
            "virtual_hosts": [{
                "name": format!("inbound|http|{service_port}"),
                "domains": ["*"],
                "routes": [{"name": "default", "match": {"prefix": "/"}, "route": {"cluster": inbound, "timeout": "0s"}}]
            }]
        });
        let bootstrap = json!({
            "node": {
                "id": format!("sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
                "cluster": format!("{app}.{namespace}"),
                "metadata": {
                    "LABELS": {"app": app, "rollouts-pod-template-hash": revision, "role": role.name()},
                    "NAME": pod,
                    "NAMESPACE": namespace,
                    "WORKLOAD_NAME": app
                }
            },
            "stats_config": shipped_stats_config(),
            "admin": {"address": socket(admin_port)},
            "static_resources": {
                "listeners": [{
                    "name": "virtualInbound",
                    "address": socket(port),
                    "traffic_direction": "INBOUND",
                    "filter_chains": [{"filters": [http_connection_manager(
                        &format!("inbound_0.0.0.0_{service_port}"),
                        dir.path(),
                        routes,
                        filter_json
                    )]}]
                }],
                "clusters": [static_cluster(&inbound, &[app_port])]
            }
        });
        let proxy = Proxy::start(format!("sidecar {pod}"), dir, &bootstrap, 1, port, admin_port);
        Pod { proxy, port, pod, revision: revision.to_string(), role }
    }

    /// The authority of every request its access log shows for `path`, in order.
    pub fn authorities(&self, path: &str) -> Vec<String> {
        let request = format!(" {path}\" ");
        self.access_log()
            .lines()
            .filter(|l| l.contains(&request))
            .filter_map(|l| l.split(" authority=").nth(1)?.split(' ').next().map(str::to_string))
            .collect()
    }
}

impl std::ops::Deref for Pod {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}
