//! Plays the Istio control plane against real Envoys, for tests that play Argo Rollouts'
//! canary lifecycle: a [`Router`], an Envoy routing requests for one [`Service`] to its two
//! subsets as Istio programs it for a VirtualService with subset-level routing (routes,
//! clusters and endpoints from file-based RDS, CDS and EDS shaped as istiod generates them,
//! canary-gate from file-based ECDS), either the ingress gateway ([`Router::gateway`]) or the
//! sidecar of a pod calling the service ([`Router::caller_sidecar`], where a VirtualService
//! bound to `mesh` routes the pod's calls); and one [`Sidecar`] per pod of the service, its node
//! metadata carrying the pod's labels where Istio's bootstrap puts them, with an inbound
//! listener and optionally an [`Outbound`] one (the pod's own calls to external hosts). No Argo
//! logic here: callers move the weights and endpoints.
//!
//! Every xDS update is written to a staging file and renamed into a watched directory (Envoy
//! reloads on a move, never on an in-place write); each update method returns once Envoy's
//! admin shows it applied. All on 127.0.0.1 and free ports; processes stopped by PID on drop;
//! logs kept in each process's TempDir and printed when the test panics.

use crate::{envoy_bin, free_port, root, stop, wait_for_port, Client, TempDir};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The weighted route Argo Rollouts manages (`trafficRouting.istio.virtualService.routes`).
pub const PRIMARY_ROUTE: &str = "primary";
/// The ingress gateway's HTTP listener port (istiod names its route configuration `http.8080`).
const GATEWAY_PORT: u16 = 8080;
/// Worker threads of every router proxy: Istio's default for gateways and sidecars alike.
const ROUTER_WORKERS: u32 = 2;
/// canary-gate's `version_header` and `reason_header` when its configuration sets none.
const DEFAULT_VERSION_HEADER: &str = "x-canary-version";
const DEFAULT_REASON_HEADER: &str = "x-canary-reason";
/// Longest an xDS update may take to show in the admin (it takes milliseconds).
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);
const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NATIVE_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)%\" %RESPONSE_CODE% \
flags=%RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% \
upstream=%UPSTREAM_HOST% canary_version=%RESP(X-CANARY-VERSION)% canary_reason=%RESP(X-CANARY-REASON)% \
served_by=%RESP(X-SERVED-BY)% %DURATION%ms\n";

/// A DestinationRule subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subset {
    /// `stable`.
    Stable,
    /// `canary`.
    Canary,
}

impl Subset {
    /// The subset's name: also the pods' `role` label and the version canary-gate reports.
    pub fn name(self) -> &'static str {
        match self {
            Subset::Stable => "stable",
            Subset::Canary => "canary",
        }
    }
}

/// A Kubernetes Service of the mesh: what istiod names its clusters, virtual hosts and pods'
/// listeners after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// Its HTTP port.
    pub port: u16,
}

impl Service {
    /// The service `name` in `namespace` on `port`.
    pub fn new(name: &str, namespace: &str, port: u16) -> Service {
        Service { name: name.to_string(), namespace: namespace.to_string(), port }
    }

    /// `checkout.shop:8080`, for tests that play no shipped manifest.
    pub fn checkout() -> Service {
        Service::new("checkout", "shop", 8080)
    }

    /// The shipped Service `name` (its namespace and first port) from the manifests under
    /// `istio/`.
    pub fn shipped(name: &str) -> Service {
        let doc = crate::analysis::document_named(&root().join("istio"), "Service", name);
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let port = doc["spec"]["ports"][0]["port"].as_i64().and_then(|p| u16::try_from(p).ok());
        Service::new(name, namespace, port.unwrap_or_else(|| panic!("Service {name} has no port")))
    }

    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// The names a pod of the namespace calls it by, shortest first.
    pub fn names(&self) -> Vec<String> {
        let namespaced = format!("{}.{}", self.name, self.namespace);
        vec![self.name.clone(), format!("{namespaced}.svc"), namespaced, self.fqdn()]
    }

    /// The `Host` an application sends calling `http://<name>:<port>`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.name, self.port)
    }

    /// Istio's cluster of `subset`: `outbound|<port>|<subset>|<fqdn>`.
    pub fn cluster(&self, subset: Subset) -> String {
        format!("outbound|{}|{}|{}", self.port, subset.name(), self.fqdn())
    }
}

/// `stats_config` of `envoy/mesh-mode.yaml`, read at run time so tag and bucket changes apply.
pub fn shipped_stats_config() -> Value {
    let path = root().join("envoy/mesh-mode.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stats = docs.first().map(|d| crate::analysis::to_json(&d["stats_config"])).unwrap_or_default();
    assert!(stats["stats_tags"].is_array(), "{} has no stats_config.stats_tags", path.display());
    stats
}

/// Sum of the samples of `metric` in Prometheus text `exposition` whose labels include every
/// pair of `labels`; None if no sample matches.
pub fn prometheus_sum(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let matching: Vec<f64> = exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let have: Vec<&str> = labels.split(',').collect();
            wanted.iter().all(|w| have.contains(&w.as_str())).then(|| value.trim().parse().ok()).flatten()
        })
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// A file-based config source watching the file's own directory.
fn path_source(file: &Path) -> Value {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    json!({
        "path_config_source": {
            "path": file.display().to_string(),
            "watched_directory": {"path": dir.display().to_string()}
        },
        "resource_api_version": "V3"
    })
}

/// canary-gate's Wasm filter configuration.
fn wasm_config(filter_json: &str) -> Value {
    crate::build_filter_config("canary-gate", filter_json)
}

/// The HTTP connection manager: `routes` is `("rds", …)` or `("route_config", …)`.
fn http_connection_manager(stat_prefix: &str, dir: &Path, routes: (&str, Value), filter: Value) -> Value {
    let mut hcm = json!({
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
            "http_filters": [
                filter,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                }
            ]
        }
    });
    hcm["typed_config"][routes.0] = routes.1;
    hcm
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = crate::read_to_string(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One Envoy process: its listener, admin and logs; stopped on drop (logs printed if the test
/// panicked). [`Router`], [`Sidecar`] and the shadow rig's proxies dereference to it.
pub struct Proxy {
    child: Child,
    dir: TempDir,
    what: String,
    port: u16,
    admin_port: u16,
}

impl Proxy {
    /// Starts Envoy on `bootstrap` (written into `dir`); waits for `port` and `/ready`.
    pub(crate) fn start(
        what: String,
        dir: TempDir,
        bootstrap: &Value,
        workers: u32,
        port: u16,
        admin_port: u16,
    ) -> Proxy {
        let path = dir.path().join("bootstrap.json");
        write_json(&path, bootstrap);
        let log = fs::File::create(dir.path().join("envoy.log")).unwrap_or_else(|e| panic!("create envoy.log: {e}"));
        let mut command = Command::new(envoy_bin());
        if crate::build() == crate::Build::Native {
            // The native module reads the pod's labels from the environment (Envoy gives a
            // dynamic module no node metadata).
            let labels = bootstrap.pointer("/node/metadata/LABELS").and_then(Value::as_object);
            for (label, value) in labels.into_iter().flatten() {
                command.env(format!("CANARY_GATE_LABEL_{label}"), value.as_str().unwrap_or_default());
            }
        }
        let mut child = command
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", &workers.to_string(), "--disable-hot-restart", "-l", "info"])
            // Access log lines on disk within 0.1 s (default 10 s), for tests that read them.
            .args(["--file-flush-interval-msec", "100"])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start envoy ({what}): {e}"));
        wait_for_port(port, &mut child, &what);
        let proxy = Proxy { child, dir, what, port, admin_port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::new().get(&proxy.admin("/ready"), &[]).status != 200 {
            assert!(Instant::now() < deadline, "{} not ready within 30 s\n{}", proxy.what, proxy.log());
            sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// URL of `path` on the listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// URL of `path` on the admin interface.
    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    fn admin_json(&self, path: &str) -> Value {
        let reply = Client::new().get(&self.admin(path), &[]);
        assert_eq!(reply.status, 200, "{}: admin {path}: {}", self.what, reply.body);
        reply.json()
    }

    /// Envoy's own log so far.
    pub fn log(&self) -> String {
        crate::read_to_string(&self.dir.path().join("envoy.log"))
    }

    /// The access log so far (flushed every 0.1 s).
    pub fn access_log(&self) -> String {
        crate::read_to_string(&self.dir.path().join("access.log"))
    }

    /// A counter or gauge from `/stats`, 0 if absent.
    pub fn stat(&self, name: &str) -> u64 {
        crate::admin_stat(self.admin_port, name)
    }

    /// `/stats/prometheus`.
    pub fn prometheus(&self) -> String {
        Client::new().get(&self.admin("/stats/prometheus"), &[]).body
    }

    /// Waits until `applied` holds; panics early, with Envoy's log, if the `rejected` counter
    /// moves past `rejected_before`.
    fn wait_applied(&self, what: &str, rejected: &str, rejected_before: u64, applied: impl Fn() -> bool) -> Duration {
        let start = Instant::now();
        while !applied() {
            assert!(self.stat(rejected) == rejected_before, "{}: Envoy rejected {what}\n{}", self.what, self.log());
            assert!(start.elapsed() < APPLY_TIMEOUT, "{}: {what} not applied within {APPLY_TIMEOUT:?}", self.what);
            sleep(Duration::from_millis(10));
        }
        start.elapsed()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop(&mut self.child);
        if std::thread::panicking() {
            let dir = self.dir.path();
            eprintln!("--- {} envoy.log (last lines) ---\n{}", self.what, tail(&dir.join("envoy.log"), 60));
            eprintln!("--- {} access.log (last lines) ---\n{}", self.what, tail(&dir.join("access.log"), 30));
            let outbound = dir.join("outbound").join("access.log");
            if outbound.exists() {
                eprintln!("--- {} outbound access.log (last lines) ---\n{}", self.what, tail(&outbound, 30));
            }
        }
    }
}

/// A router's xDS files, one watched directory each (a move into a directory reloads only
/// that directory's subscription).
struct XdsFiles {
    dir: PathBuf,
    /// The last `version_info` written (shown in `/config_dump`).
    version: AtomicU64,
}

impl XdsFiles {
    fn new(dir: &Path) -> XdsFiles {
        XdsFiles { dir: dir.to_path_buf(), version: AtomicU64::new(0) }
    }

    fn path(&self, kind: &str) -> PathBuf {
        self.dir.join("xds").join(kind).join(format!("{kind}.json"))
    }

    /// Replaces the `kind` file with a discovery response holding `resources` of `type_url`.
    fn publish(&self, kind: &str, type_url: &str, resources: Vec<Value>) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let resources: Vec<Value> = resources
            .into_iter()
            .map(|mut r| {
                r["@type"] = json!(type_url);
                r
            })
            .collect();
        let path = self.path(kind);
        let watched = path.parent().map(Path::to_path_buf).unwrap_or_default();
        fs::create_dir_all(&watched).unwrap_or_else(|e| panic!("create {}: {e}", watched.display()));
        // Staged outside the watched directory, then moved in: Envoy reloads on the move and
        // always reads a whole file.
        let staged = self.dir.join(format!("{kind}.staged.json"));
        write_json(&staged, &json!({"version_info": version.to_string(), "resources": resources}));
        fs::rename(&staged, &path).unwrap_or_else(|e| panic!("move {} into place: {e}", staged.display()));
    }
}

/// An Istio outbound cluster of `service`'s `subset`, its endpoints from the EDS file at `eds`.
fn cluster(service: &Service, subset: Subset, eds: &Path) -> Value {
    let name = service.cluster(subset);
    json!({
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"service_name": name, "eds_config": path_source(eds)},
        "connect_timeout": "1s",
        // As istiod sets them: no Envoy-default limit of 1024 requests.
        "circuit_breakers": {"thresholds": [{
            "max_connections": 4294967295u32, "max_pending_requests": 4294967295u32,
            "max_requests": 4294967295u32, "max_retries": 4294967295u32, "track_remaining": true
        }]}
    })
}

/// A ClusterLoadAssignment of `cluster` with one endpoint per port (none: no ready pod).
fn load_assignment(cluster: &str, ports: &[u16]) -> Value {
    let endpoints: Vec<Value> = ports.iter().map(|p| json!({"endpoint": {"address": socket(*p)}})).collect();
    let localities = if ports.is_empty() { json!([]) } else { json!([{"lb_endpoints": endpoints}]) };
    json!({"cluster_name": cluster, "endpoints": localities})
}

/// `ports` sorted, without duplicates.
fn sorted(ports: &[u16]) -> Vec<u16> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// istiod's default route retry policy (no `retries` in the VirtualService).
fn istio_retry_policy() -> Value {
    json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            }
        }],
        "host_selection_retry_max_attempts": 5,
        "retriable_status_codes": [503]
    })
}

const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINTS_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const FILTER_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

fn eds_kind(subset: Subset) -> String {
    format!("eds-{}", subset.name())
}

/// The route configuration istiod generates for the service's subset-level-routing
/// VirtualService (`istio/services/*/virtualservice.yaml`) in one proxy.
struct Routes {
    service: Service,
    /// The route configuration's name: `http.8080` at the gateway, the port in a sidecar.
    name: String,
    /// The virtual host's domains.
    domains: Vec<String>,
    /// The header the pinned routes match: canary-gate's `version_header`.
    version_header: String,
}

impl Routes {
    /// A route as istiod translates one VirtualService `http` entry (no timeout: `0s`);
    /// `pinned`: the value of the version header it matches.
    fn route(&self, name: &str, pinned: Option<&str>, action: (&str, Value)) -> Value {
        let mut matcher = json!({"prefix": "/"});
        if let Some(value) = pinned {
            matcher["headers"] = json!([{"name": self.version_header, "string_match": {"exact": value}}]);
        }
        let mut route = json!({"timeout": "0s", "retry_policy": istio_retry_policy()});
        route[action.0] = action.1;
        json!({
            "name": name,
            "match": matcher,
            "route": route,
            "decorator": {"operation": format!("{}:{}/*", self.service.fqdn(), self.service.port)}
        })
    }

    /// The pinned routes, then `primary` with these weights.
    fn configuration(&self, stable: u32, canary: u32) -> Value {
        // istiod leaves 0-weight destinations out of `weighted_clusters` (Envoy accepts a 0
        // weight, not a total of 0).
        let weighted: Vec<Value> = [(Subset::Stable, stable), (Subset::Canary, canary)]
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(s, w)| json!({"name": self.service.cluster(*s), "weight": w}))
            .collect();
        let pinned = |subset: Subset| {
            let name = format!("{}-pinned", subset.name());
            self.route(&name, Some(subset.name()), ("cluster", json!(self.service.cluster(subset))))
        };
        json!({
            "name": self.name,
            "virtual_hosts": [{
                "name": format!("{}:{}", self.service.fqdn(), self.service.port),
                "domains": self.domains,
                "routes": [
                    pinned(Subset::Canary),
                    pinned(Subset::Stable),
                    self.route(PRIMARY_ROUTE, None, ("weighted_clusters", json!({"clusters": weighted}))),
                ]
            }],
            "validate_clusters": false
        })
    }
}

/// Where a [`Router`] runs, as Istio places the proxy: its node, its listener and the route
/// configuration's name and domains there.
struct Placement {
    what: String,
    node: Value,
    listener_port: u16,
    route_config: String,
    domains: Vec<String>,
}

/// Pod names `<workload>-<n>`, unique within the test process.
static POD_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn next_pod(workload: &str) -> String {
    format!("{workload}-{:05}", POD_SEQUENCE.fetch_add(1, Ordering::SeqCst))
}

/// A proxy routing requests for a [`Service`] to its subsets (2 workers): canary-gate's
/// router, delivered by file-based ECDS, then Envoy's router; routes from file-based RDS, the
/// two subset clusters from file-based CDS and their endpoints from file-based EDS.
pub struct Router {
    proxy: Proxy,
    xds: XdsFiles,
    routes: Routes,
    /// canary-gate's `reason_header`: where the router tags its responses with its reason.
    reason_header: String,
    /// The HTTP connection manager's stat prefix.
    stat_prefix: String,
    /// Listener port on 127.0.0.1.
    pub port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
}

impl Router {
    /// The ingress gateway routing `service` (listener `0.0.0.0_8080`, route configuration
    /// `http.8080`, any `Host`: tests address it as 127.0.0.1:<port>), with canary-gate
    /// configured by `filter_json`, weights stable 100 / canary 0 (a rollout at rest), and each
    /// subset's endpoints at `stable` and `canary`.
    pub fn gateway(service: &Service, filter_json: &str, stable: &[u16], canary: &[u16]) -> Router {
        let placement = Placement {
            what: "mesh ingress".into(),
            node: json!({
                "id": "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
                "cluster": "istio-ingressgateway.istio-system",
                "metadata": {
                    "LABELS": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                    "NAMESPACE": "istio-system"
                }
            }),
            listener_port: GATEWAY_PORT,
            route_config: format!("http.{GATEWAY_PORT}"),
            domains: vec!["*".into()],
        };
        Router::start(service, placement, filter_json, stable, canary)
    }

    /// The sidecar of a pod of workload `caller` (app label, in the service's namespace)
    /// routing its calls to `service` as istiod programs a client sidecar: listener
    /// `0.0.0.0_<port>`, route configuration `<port>`, a virtual host `<fqdn>:<port>` for the
    /// service's in-cluster names with and without the port (the application sends `Host:
    /// <name>:<port>`, [`Service::authority`]). Otherwise as [`Router::gateway`].
    pub fn caller_sidecar(
        service: &Service,
        caller: &str,
        filter_json: &str,
        stable: &[u16],
        canary: &[u16],
    ) -> Router {
        let (namespace, pod) = (&service.namespace, next_pod(caller));
        let names = service.names();
        let with_port = names.iter().map(|n| format!("{n}:{}", service.port));
        let placement = Placement {
            what: format!("sidecar {pod} (caller)"),
            node: json!({
                "id": format!("sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
                "cluster": format!("{caller}.{namespace}"),
                "metadata": {
                    "LABELS": {
                        "app": caller,
                        "security.istio.io/tlsMode": "istio",
                        "service.istio.io/canonical-name": caller
                    },
                    "NAME": pod,
                    "NAMESPACE": namespace,
                    "WORKLOAD_NAME": caller
                }
            }),
            listener_port: service.port,
            route_config: service.port.to_string(),
            domains: names.iter().cloned().chain(with_port).collect(),
        };
        Router::start(service, placement, filter_json, stable, canary)
    }

    fn start(service: &Service, at: Placement, filter_json: &str, stable: &[u16], canary: &[u16]) -> Router {
        let dir = TempDir::new("mesh-router");
        let xds = XdsFiles::new(dir.path());
        let (port, admin_port) = (free_port(), free_port());
        let config = serde_json::from_str::<Value>(filter_json).ok();
        let header =
            |field: &str, default: &str| config.as_ref().and_then(|c| c[field].as_str()).unwrap_or(default).to_string();
        let (version_header, reason_header) =
            (header("version_header", DEFAULT_VERSION_HEADER), header("reason_header", DEFAULT_REASON_HEADER));
        let routes = Routes { service: service.clone(), name: at.route_config, domains: at.domains, version_header };
        // The files must exist before Envoy starts: it reads them while initialising.
        let clusters = [Subset::Stable, Subset::Canary].map(|s| cluster(service, s, &xds.path(&eds_kind(s))));
        for (subset, ports) in [(Subset::Stable, stable), (Subset::Canary, canary)] {
            let assignment = load_assignment(&service.cluster(subset), &sorted(ports));
            xds.publish(&eds_kind(subset), ENDPOINTS_TYPE, vec![assignment]);
        }
        xds.publish("cds", CLUSTER_TYPE, clusters.to_vec());
        xds.publish("rds", ROUTE_TYPE, vec![routes.configuration(100, 0)]);
        xds.publish(
            "ecds",
            FILTER_TYPE,
            vec![json!({"name": "canary-gate", "typed_config": wasm_config(filter_json)})],
        );
        let canary_gate = json!({
            "name": "canary-gate",
            "config_discovery": {"config_source": path_source(&xds.path("ecds")), "type_urls": [WASM_TYPE, NATIVE_TYPE]}
        });
        let rds = json!({"route_config_name": routes.name, "config_source": path_source(&xds.path("rds"))});
        let listener = format!("0.0.0.0_{}", at.listener_port);
        let stat_prefix = format!("outbound_{listener}");
        let bootstrap = json!({
            "node": at.node,
            "stats_config": shipped_stats_config(),
            "admin": {"address": socket(admin_port)},
            "dynamic_resources": {"cds_config": path_source(&xds.path("cds"))},
            "static_resources": {"listeners": [{
                "name": listener,
                "address": socket(port),
                "traffic_direction": "OUTBOUND",
                "filter_chains": [{
                    "filters": [http_connection_manager(&stat_prefix, dir.path(), ("rds", rds), canary_gate)]
                }]
            }]}
        });
        let proxy = Proxy::start(at.what, dir, &bootstrap, ROUTER_WORKERS, port, admin_port);
        Router { proxy, xds, routes, reason_header, stat_prefix, port, admin_port }
    }

    /// The service it routes to.
    pub fn service(&self) -> &Service {
        &self.routes.service
    }

    /// The header its pinned routes match (canary-gate's `version_header`).
    pub fn version_header(&self) -> &str {
        &self.routes.version_header
    }

    /// The header it tags its responses with its reason in (canary-gate's `reason_header`).
    pub fn reason_header(&self) -> &str {
        &self.reason_header
    }

    /// Sets the `primary` route's weights (as Argo Rollouts sets the VirtualService's) and
    /// waits until Envoy's main thread holds them (it has then posted them to the workers,
    /// which take them before reading any later request); returns how long Envoy took.
    pub fn set_weights(&self, stable: u32, canary: u32) -> Duration {
        assert!(stable + canary > 0, "weights {stable}/{canary}: Envoy refuses a total of 0");
        if self.weights() == (stable, canary) {
            return Duration::ZERO;
        }
        let rejected = format!("http.{}.rds.{}.update_rejected", self.stat_prefix, self.routes.name);
        let before = self.proxy.stat(&rejected);
        self.xds.publish("rds", ROUTE_TYPE, vec![self.routes.configuration(stable, canary)]);
        self.proxy.wait_applied(&format!("weights {stable}/{canary}"), &rejected, before, || {
            self.weights() == (stable, canary)
        })
    }

    /// The `primary` route's (stable, canary) weights Envoy routes with now.
    pub fn weights(&self) -> (u32, u32) {
        let dump = self.proxy.admin_json("/config_dump?resource=dynamic_route_configs");
        let primary = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["route_config"]["name"] == self.routes.name.as_str())
            .flat_map(|c| c["route_config"]["virtual_hosts"].as_array().cloned().unwrap_or_default())
            .flat_map(|vh| vh["routes"].as_array().cloned().unwrap_or_default())
            .find(|r| r["name"] == PRIMARY_ROUTE)
            .unwrap_or_else(|| panic!("no route `{PRIMARY_ROUTE}` in the config dump: {dump}"));
        let weight = |subset: Subset| {
            primary["route"]["weighted_clusters"]["clusters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == self.service().cluster(subset).as_str())
                .and_then(|c| c["weight"].as_u64())
                .map_or(0, |w| w as u32)
        };
        (weight(Subset::Stable), weight(Subset::Canary))
    }

    /// Replaces `subset`'s endpoints by one per port (as istiod does when the pods its
    /// DestinationRule subset selects change; empty: scaled to zero, and Envoy answers 503
    /// `no healthy upstream`); waits until Envoy has exactly these hosts, returns how long
    /// Envoy took.
    pub fn set_endpoints(&self, subset: Subset, ports: &[u16]) -> Duration {
        let wanted = sorted(ports);
        let cluster = self.service().cluster(subset);
        let rejected = format!("cluster.{cluster}.update_rejected");
        let before = self.proxy.stat(&rejected);
        self.xds.publish(&eds_kind(subset), ENDPOINTS_TYPE, vec![load_assignment(&cluster, &wanted)]);
        self.proxy.wait_applied(&format!("{} endpoints {wanted:?}", subset.name()), &rejected, before, || {
            self.endpoints(subset) == wanted
        })
    }

    /// The ports of `subset`'s hosts in Envoy now, sorted.
    pub fn endpoints(&self, subset: Subset) -> Vec<u16> {
        let clusters = self.proxy.admin_json("/clusters?format=json");
        let cluster = self.service().cluster(subset);
        let mut ports: Vec<u16> = clusters["cluster_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == cluster.as_str())
            .flat_map(|c| c["host_statuses"].as_array().cloned().unwrap_or_default())
            .filter_map(|h| h["address"]["socket_address"]["port_value"].as_u64().map(|p| p as u16))
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Replaces canary-gate's configuration through ECDS and waits until Envoy applied it
    /// (true) or rejected it (false). The routes keep matching the version header the router
    /// started with.
    pub fn reconfigure(&self, filter_json: &str) -> bool {
        let stat = |s: &str| self.proxy.stat(&format!("extension_config_discovery.http_filter.canary-gate.{s}"));
        let (successes, rejects) = (stat("update_success"), stat("update_rejected"));
        self.xds.publish(
            "ecds",
            FILTER_TYPE,
            vec![json!({"name": "canary-gate", "typed_config": wasm_config(filter_json)})],
        );
        let start = Instant::now();
        loop {
            if stat("update_success") > successes {
                return true;
            }
            if stat("update_rejected") > rejects {
                return false;
            }
            assert!(start.elapsed() < APPLY_TIMEOUT, "ECDS update not seen within {APPLY_TIMEOUT:?}\n{}", self.log());
            sleep(Duration::from_millis(10));
        }
    }
}

impl std::ops::Deref for Router {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}

/// The port of the external hosts a pod calls, as the application addresses them (plain HTTP).
pub const OUTBOUND_PORT: u16 = 80;

/// A pod's own calls out of the mesh: canary-gate on the sidecar's outbound HTTP listener
/// (Istio's `0.0.0.0_80`, where a WasmPlugin with `match: [{mode: CLIENT}]` goes), and the
/// external hosts the pod calls, each routed to its server as istiod routes a ServiceEntry's
/// host: a virtual host `<host>:80` (with istiod's default retry policy and
/// `include_request_attempt_count`) to the cluster `outbound|80||<host>`.
pub struct Outbound<'a> {
    /// canary-gate's configuration on the outbound listener (an outbound observer).
    pub filter_json: &'a str,
    /// Each external host name and the port on 127.0.0.1 of the server answering for it.
    pub hosts: &'a [(&'a str, u16)],
    /// Fields an EnvoyFilter merges into every outbound virtual host (`applyTo: VIRTUAL_HOST`,
    /// `context: SIDECAR_OUTBOUND`, `operation: MERGE`), as istiod applies it.
    pub virtual_host_patch: Option<&'a Value>,
}

/// One pod of a ReplicaSet: its sidecar Envoy (1 worker) with canary-gate on the inbound
/// listener in front of the pod's application port, and optionally on an outbound listener
/// ([`Outbound`]) carrying the pod's own calls. The pod's labels are in the node metadata
/// (`LABELS`), where Istio's bootstrap puts them and where canary-gate's observers read their
/// version and revision. Both filters run the same module with the same VM id, so, as in an
/// Istio sidecar (a WasmPlugin sets no `vm_id`: plugins of the same module share a VM), they
/// share each worker's VM.
pub struct Sidecar {
    proxy: Proxy,
    /// Inbound listener port on 127.0.0.1: the endpoint the routers' EDS lists for this pod.
    pub port: u16,
    /// Outbound listener port on 127.0.0.1, if the pod has one: where the application sends
    /// its calls to the [`Outbound`] hosts (with their `Host`).
    pub outbound_port: Option<u16>,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
    /// The pod's name.
    pub pod: String,
    /// Its `rollouts-pod-template-hash` label.
    pub revision: String,
    /// Its `role` label.
    pub role: Subset,
}

/// The outbound listener of [`Outbound`]: its listener and its clusters.
fn outbound_resources(dir: &Path, port: u16, outbound: &Outbound<'_>) -> (Value, Vec<Value>) {
    let cluster_of = |host: &str| format!("outbound|{OUTBOUND_PORT}||{host}");
    let virtual_hosts: Vec<Value> = outbound
        .hosts
        .iter()
        .map(|(host, _)| {
            let mut virtual_host = json!({
                "name": format!("{host}:{OUTBOUND_PORT}"),
                "domains": [host, format!("{host}:{OUTBOUND_PORT}")],
                "include_request_attempt_count": true,
                "routes": [{
                    "name": "default",
                    "match": {"prefix": "/"},
                    "route": {"cluster": cluster_of(host), "timeout": "0s", "retry_policy": istio_retry_policy()},
                    "decorator": {"operation": format!("{host}:{OUTBOUND_PORT}/*")}
                }]
            });
            for (field, value) in outbound.virtual_host_patch.and_then(Value::as_object).into_iter().flatten() {
                virtual_host[field] = value.clone();
            }
            virtual_host
        })
        .collect();
    let routes = json!({
        "name": OUTBOUND_PORT.to_string(),
        "virtual_hosts": virtual_hosts,
        "validate_clusters": false
    });
    let canary_gate = json!({"name": "canary-gate", "typed_config": wasm_config(outbound.filter_json)});
    let listener = json!({
        "name": format!("0.0.0.0_{OUTBOUND_PORT}"),
        "address": socket(port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [http_connection_manager(
            &format!("outbound_0.0.0.0_{OUTBOUND_PORT}"),
            &dir.join("outbound"),
            ("route_config", routes),
            canary_gate
        )]}]
    });
    let clusters = outbound
        .hosts
        .iter()
        .map(|(host, server)| {
            json!({
                "name": cluster_of(host),
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": cluster_of(host),
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(*server)}}]}]
                }
            })
        })
        .collect();
    (listener, clusters)
}

impl Sidecar {
    /// Starts the sidecar of a pod of `service` of `revision` labelled `role`, forwarding to
    /// the application at `app_port`, with canary-gate configured by `filter_json` (e.g.
    /// `{"service":"checkout","role":"observer","version_label":"role"}`).
    pub fn start(service: &Service, revision: &str, role: Subset, app_port: u16, filter_json: &str) -> Sidecar {
        Self::start_with(service, revision, role, app_port, filter_json, None)
    }

    /// [`Sidecar::start`], with an outbound listener for the pod's calls to `outbound`'s hosts.
    pub fn start_with_outbound(
        service: &Service,
        revision: &str,
        role: Subset,
        app_port: u16,
        filter_json: &str,
        outbound: &Outbound<'_>,
    ) -> Sidecar {
        Self::start_with(service, revision, role, app_port, filter_json, Some(outbound))
    }

    fn start_with(
        service: &Service,
        revision: &str,
        role: Subset,
        app_port: u16,
        filter_json: &str,
        outbound: Option<&Outbound<'_>>,
    ) -> Sidecar {
        let dir = TempDir::new("mesh-sidecar");
        let (port, admin_port) = (free_port(), free_port());
        let (app, namespace, service_port) = (&service.name, &service.namespace, service.port);
        let pod = next_pod(&format!("{app}-{revision}"));
        let inbound = format!("inbound|{service_port}||");
        let routes = json!({
            "name": inbound,
            "virtual_hosts": [{
                "name": format!("inbound|http|{service_port}"),
                "domains": ["*"],
                "routes": [{
                    "name": "default",
                    "match": {"prefix": "/"},
                    "route": {"cluster": inbound, "timeout": "0s"}
                }]
            }]
        });
        let canary_gate = json!({"name": "canary-gate", "typed_config": wasm_config(filter_json)});
        let mut listeners = vec![json!({
            "name": "virtualInbound",
            "address": socket(port),
            "traffic_direction": "INBOUND",
            "filter_chains": [{"filters": [http_connection_manager(
                &format!("inbound_0.0.0.0_{service_port}"),
                dir.path(),
                ("route_config", routes),
                canary_gate
            )]}]
        })];
        let mut clusters = vec![json!({
            "name": inbound,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": inbound,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(app_port)}}]}]
            }
        })];
        let outbound_port = outbound.map(|outbound| {
            let outbound_port = free_port();
            let outbound_dir = dir.path().join("outbound");
            fs::create_dir_all(&outbound_dir).unwrap_or_else(|e| panic!("create {}: {e}", outbound_dir.display()));
            let (listener, external) = outbound_resources(dir.path(), outbound_port, outbound);
            listeners.push(listener);
            clusters.extend(external);
            outbound_port
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
            "static_resources": {"listeners": listeners, "clusters": clusters}
        });
        let proxy = Proxy::start(format!("sidecar {pod}"), dir, &bootstrap, 1, port, admin_port);
        if let Some(outbound_port) = outbound_port {
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", outbound_port)).is_err() {
                assert!(Instant::now() < deadline, "{}: outbound listener not up within 30 s", proxy.what);
                sleep(Duration::from_millis(20));
            }
        }
        Sidecar { proxy, port, outbound_port, admin_port, pod, revision: revision.to_string(), role }
    }
}

impl std::ops::Deref for Sidecar {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}
