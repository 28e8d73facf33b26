//! proxy-wasm glue: reads headers and properties through [`host`], asks the pure modules, and
//! applies the answer. Compiled for the proxy (wasm32-wasip1) only.

mod beacon;
mod host;

use crate::config::{Config, Role, SplitMode};
use crate::coord::{Coordinator, VmState};
use crate::measure::classify::{ClassIndex, Classifier};
use crate::measure::grpc::{self, Protocol};
use crate::measure::metrics::MetricIds;
use crate::measure::report::{self, Report, Tag};
use crate::measure::window::{user_bit, Completed, Users};
use crate::model::{quoted, Reason, Revision, Version, UNKNOWN_VERSION};
use crate::route::bucket::BucketRng;
use crate::route::{Decision, RequestHeaders, Router};
use host::ProxyHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Talc instead of wasi-libc's dlmalloc: smaller, and faster for the short-lived allocations of
/// a request. A VM is single-threaded.
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

thread_local! {
    /// This VM's lease id and coordinators, kept across its root contexts.
    static VM: VmState = VmState::default();
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Filter-state keys (`wasm.` prefixed by Envoy) for the access log, with `filter_state` on.
const STATE_VERSION: &str = "canary_gate_version";
const STATE_REASON: &str = "canary_gate_reason";

/// Everything a stream needs from its configuration, shared by reference count.
struct Plugin {
    router: Router,
    classifier: Classifier,
    metrics: MetricIds,
    coordinator: Rc<Coordinator>,
    /// Observer role: this proxy's own version, from node metadata.
    own_version: Option<Version>,
    /// Observer role: this proxy's own revision, from node metadata.
    own_revision: Option<Revision>,
    /// The host offers the `clear_route_cache` foreign function.
    clear_route_cache: bool,
    /// Routers with `gate.fleet`: the latency limits their tag asks the observers to count.
    fleet_limits: Option<[u64; report::LIMITS]>,
    /// Mesh-mode routers without `gate.fleet`: their tag, the VM's stamp alone.
    stamp_tag: Option<String>,
}

impl Drop for Plugin {
    /// A configuration replaced by an update still owes the counts of its last second.
    fn drop(&mut self) {
        self.metrics.flush(&ProxyHost);
    }
}

#[derive(Default)]
struct Root {
    plugin: Option<Rc<Plugin>>,
    /// Beacons waiting for their body.
    pending: Rc<beacon::PendingBeacons>,
    rng: Rc<Cell<BucketRng>>,
    /// The second of the last counter flush.
    flushed_s: u64,
}

impl Context for Root {
    fn on_http_call_response(&mut self, _token_id: u32, _num_headers: usize, _body_size: usize, _num_trailers: usize) {
        // The answer to the revision probe of the canary subset (a tripped gate's).
        let Some(plugin) = &self.plugin else { return };
        let config = plugin.router.config();
        let header = |name: &str| {
            proxy_wasm::hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name).ok().flatten()
        };
        let answer = header(report::REPORT_HEADER).unwrap_or_default();
        let Some(report_text) = plugin.coordinator.own_answer(&answer) else { return };
        if let Some(revision) = header(&config.revision_header).as_deref().and_then(Revision::parse) {
            let now_s = host::now_micros() / 1_000_000;
            plugin.coordinator.revisions().learn(&ProxyHost, &config.service, Version::Canary, revision, now_s);
        }
        if config.gate.fleet.is_some() {
            if let Some(report) = Report::parse(report_text) {
                plugin.coordinator.hear_probe_report(report);
            }
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let seed = vm_seed();
        self.rng.set(BucketRng::new(seed));
        VM.with(|vm| vm.start(seed.rotate_left(17) ^ 0x5bd1_e995));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let parsed = Config::parse(&host::plugin_configuration());
        let config = match parsed.and_then(|mut c| c.resolve_key_env(host::env_var).map(|()| c)) {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let router = Router::new(config);
        let config = router.config();
        let classifier = Classifier::new(config);
        let (own_version, own_revision) = match config.role {
            Role::Router => (None, None),
            Role::Observer => (own_version(&router), own_revision(config)),
        };
        log::info!(
            "service={} role={} mode={} canary_percent={}.{:02} window_s={} gate={}{}",
            config.service,
            config.role.reporter(),
            if config.split.mode == SplitMode::Mesh { "mesh" } else { "filter" },
            config.split.canary_bp / 100,
            config.split.canary_bp % 100,
            config.metrics.window_s,
            if !config.gate.has_thresholds() {
                "off"
            } else if config.gate.dry_run {
                "dry-run"
            } else {
                "on"
            },
            own_revision.map(|r| format!(" revision={}", r.as_str())).unwrap_or_default()
        );
        let revision_label = match config.role {
            Role::Router => None,
            Role::Observer => Some(own_revision.as_ref().map_or(UNKNOWN_VERSION, |r| r.as_str())),
        };
        let metrics = MetricIds::define(&ProxyHost, config, revision_label);
        let clear_route_cache = config.role == Role::Router && host::offers_clear_route_cache();
        if config.role == Role::Router && !clear_route_cache {
            log::warn!("the host offers no clear_route_cache: routes follow the version header only while it clears the route cache itself (proxy-wasm ABI 0.2.1)");
        }
        let coordinator = VM.with(|vm| vm.coordinator(&config.service, config.measures()));
        if config.role == Role::Observer && config.direction == "inbound" {
            coordinator.resolve_pod(&ProxyHost);
        }
        let fleet_limits = config.gate.fleet.map(|_| crate::coord::fleet::tag_limits(config));
        let mesh_router = config.role == Role::Router && config.split.mode == SplitMode::Mesh;
        let stamp_tag = (mesh_router && fleet_limits.is_none())
            .then(|| Tag { stamp: Some(coordinator.stamp()), ..Tag::default() }.encode());
        let period = Duration::from_millis(u64::from(config.eval_period_ms()));
        self.plugin = Some(Rc::new(Plugin {
            router,
            classifier,
            metrics,
            coordinator,
            own_version,
            own_revision,
            clear_route_cache,
            fleet_limits,
            stamp_tag,
        }));
        if let Err(status) = proxy_wasm::hostcalls::set_tick_period(period) {
            log::warn!("cannot set tick period: {status:?}");
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            // Counters and memory once a second; the coordinator every evaluation period.
            let now_s = host::now_micros() / 1_000_000;
            if now_s != self.flushed_s {
                self.flushed_s = now_s;
                plugin.metrics.flush(&ProxyHost);
                plugin.metrics.note_vm_memory(&ProxyHost, host::vm_memory_bytes());
            }
            let next_ms = plugin.coordinator.tick(&ProxyHost, plugin.router.config(), &plugin.metrics);
            // Envoy re-arms the tick timer from now: the next step lands on its offset.
            if let Err(status) = proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(next_ms.max(1))) {
                log::warn!("cannot set tick period: {status:?}");
            }
            // Last: it switches the effective context to each stream it answers.
            self.pending.answer_overdue(plugin, host::now_micros());
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plugin = self.plugin.clone()?;
        let class = plugin.classifier.other();
        Some(Box::new(Stream {
            plugin,
            rng: self.rng.clone(),
            decision: None,
            served: None,
            status: 0,
            started_us: 0,
            skipped: false,
            class,
            protocol: Protocol::Http,
            tag: None,
            user: 0,
            outcomes: 0,
            beacon: false,
            context_id,
            pending: self.pending.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// An observer's own version, from its node metadata label `version_label`.
fn own_version(router: &Router) -> Option<Version> {
    let config = router.config();
    let label = host::node_label(&config.version_label);
    let version = label.as_deref().and_then(|v| router.version_named(v));
    if version.is_none() {
        log::warn!(
            "observer for {}: node label `{}` is {}, neither `{}` nor `{}`; counting its requests as version `unknown`",
            config.service,
            config.version_label,
            label.as_deref().map_or_else(|| "absent".into(), quoted),
            config.stable,
            config.canary
        );
    }
    version
}

/// An observer's own revision, from its node metadata label `revision_label`.
fn own_revision(config: &Config) -> Option<Revision> {
    let label = host::node_label(&config.revision_label);
    let revision = label.as_deref().and_then(Revision::parse);
    if revision.is_none() {
        log::warn!(
            "observer for {}: node label `{}` is {}, not a revision; series carry revision `unknown` and responses no `{}`",
            config.service,
            config.revision_label,
            label.as_deref().map_or_else(|| "absent".into(), quoted),
            config.revision_header
        );
    }
    revision
}

/// The response's outcomes: bit `i` set if response header `outcomes[i].response_header`
/// equals one of its values (nothing read without outcomes).
fn outcomes_of(config: &Config) -> u8 {
    let mut bits = 0u8;
    for (i, outcome) in config.outcomes.iter().enumerate() {
        let value = host::response_header(&outcome.response_header);
        if value.is_some_and(|v| outcome.equals.iter().any(|e| e.as_bytes() == v.as_slice())) {
            bits |= 1 << i;
        }
    }
    bits
}

/// Seed for keyless users' buckets and the VM's lease id: WASI randomness (which Envoy's Wasm
/// hosts implement), mixed with the clock in case the host answers with zeros.
fn vm_seed() -> u64 {
    host::random_u64() ^ host::now_micros().wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

struct Stream {
    plugin: Rc<Plugin>,
    rng: Rc<Cell<BucketRng>>,
    decision: Option<Decision>,
    served: Option<Version>,
    /// `:status` of the response headers, 0 until they pass.
    status: u64,
    started_us: u64,
    /// The request's authority is not in `hosts`: leave it alone.
    skipped: bool,
    /// The request's route class.
    class: ClassIndex,
    /// gRPC, gRPC-Web or anything else, from the request's `content-type`.
    protocol: Protocol,
    /// Inbound observer: the tag of the router that sent the request, asking for a report.
    tag: Option<Tag>,
    /// Router: the request's user in the gate's users sketch.
    user: Users,
    /// The response's outcomes: bit `i` set if it has outcome `i`.
    outcomes: u8,
    /// A web-vitals beacon whose body is being buffered.
    beacon: bool,
    context_id: u32,
    pending: Rc<beacon::PendingBeacons>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.end_wait();
    }
}

struct HostRequestHeaders;

impl RequestHeaders for HostRequestHeaders {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        host::request_header(name)
    }

    fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
        host::request_header_lines(name)
    }
}

impl Context for Stream {}

// The Makefile's WASM_EXPORTS keeps only the callbacks implemented here (Envoy skips the
// others): a new callback needs its export added there.
impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let router = &self.plugin.router;
        if !router.handles(|| host::request_header(":authority")) {
            self.skipped = true;
            self.drop_client_choice();
            return Action::Continue;
        }
        let config = router.config();
        self.started_us = host::now_micros();
        // With the beacon endpoint the path is read here, and the classifier reuses it.
        let mut path = config.vitals.as_ref().map(|_| host::request_header(":path"));
        if let (Some(vitals), Some(Some(p))) = (&config.vitals, &path) {
            if beacon::is_endpoint(p, &vitals.path) {
                return self.take_beacon(p, end_of_stream);
            }
        }
        // Read for every request counted: a gRPC call's status is not its HTTP status.
        self.protocol = host::request_header("content-type").map_or(Protocol::Http, |t| Protocol::of_content_type(&t));
        self.class = self.plugin.classifier.classify(|name| {
            if name == ":path" {
                if let Some(p) = path.take() {
                    return p;
                }
            }
            host::request_header(name)
        });
        if config.role == Role::Observer {
            if config.direction == "inbound" {
                self.tag = host::request_header(report::TAG_HEADER).as_deref().and_then(Tag::parse);
            }
            return self.answer_probe();
        }
        let mut rng = self.rng.get();
        let coordinator = &self.plugin.coordinator;
        let tripped = coordinator.gate_tripped();
        let decision =
            coordinator.revisions().with(|table| router.decide_with(&HostRequestHeaders, &mut rng, tripped, table));
        self.rng.set(rng);
        let version = decision.version.map(|v| config.version_name(v));
        // Replaces (or, in mesh mode, removes) whatever the client sent; the routes match on it.
        host::set_header(MapType::HttpRequestHeaders, &config.version_header, version);
        host::set_header(MapType::HttpRequestHeaders, &config.reason_header, Some(decision.reason.as_str()));
        if !config.r#override.token_sha256.is_empty() {
            // A tester's token is the tester's: the upstream never sees it.
            host::set_header(MapType::HttpRequestHeaders, &config.r#override.token_header, None);
        }
        if decision.override_refused || decision.cookie_refused {
            self.plugin.metrics.note_refused(&ProxyHost, decision.override_refused, decision.cookie_refused);
        }
        if self.plugin.clear_route_cache {
            host::clear_route_cache();
        }
        self.user = self.user_of(&decision);
        // Mesh mode: this VM's stamp, for the observers to echo, and with `fleet` the ask for
        // their report. No client's tag passes.
        let asking = self.plugin.fleet_limits.map(|limits_us| {
            let user = Some(self.user.trailing_zeros() as u8).filter(|&u| u < 64);
            Tag { report: true, user, limits_us, stamp: Some(coordinator.stamp()) }.encode()
        });
        let tag = asking.as_deref().or(self.plugin.stamp_tag.as_deref());
        host::set_header(MapType::HttpRequestHeaders, report::TAG_HEADER, tag);
        self.decision = Some(decision);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.beacon {
            return Action::Continue;
        }
        self.beacon_body(body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.skipped {
            return Action::Continue;
        }
        self.status = host::response_status().unwrap_or(0);
        let plugin = self.plugin.clone();
        let router = &plugin.router;
        let config = router.config();
        self.outcomes = outcomes_of(config);
        let Some(decision) = self.decision else {
            if config.direction == "inbound" {
                // Both replace (or remove) whatever the application set: only an observer
                // names a revision, and only its answer echoes the router's stamp.
                let revision = self.plugin.own_revision.as_ref().map(Revision::as_str);
                host::set_header(MapType::HttpResponseHeaders, &config.revision_header, revision);
                let answer = report::answer(self.report(), self.tag.and_then(|t| t.stamp));
                host::set_header(MapType::HttpResponseHeaders, report::REPORT_HEADER, answer.as_deref());
            }
            return Action::Continue;
        };
        let served_revision = match config.split.mode {
            SplitMode::Filter => {
                host::set_header(MapType::HttpResponseHeaders, report::REPORT_HEADER, None);
                self.served = decision.version;
                None
            }
            SplitMode::Mesh => self.learn_from_response(&decision),
        };
        let version = self.served.map(|v| config.version_name(v)).unwrap_or(UNKNOWN_VERSION);
        host::set_header(MapType::HttpResponseHeaders, &config.version_header, Some(version));
        host::set_header(MapType::HttpResponseHeaders, &config.reason_header, Some(decision.reason.as_str()));
        if let Some(cookie) = router.sticky_cookie_for(&decision, self.served, served_revision) {
            host::add_response_header("set-cookie", &cookie);
        }
        if config.filter_state {
            host::set_state(STATE_VERSION, version);
            host::set_state(STATE_REASON, decision.reason.as_str());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.skipped {
            return;
        }
        let (version, reason) = match (self.plugin.own_version, self.decision) {
            (Some(own), _) => (Some(own), None),
            (None, Some(decision)) => (self.served.or_else(|| self.served_version(&decision)), Some(decision.reason)),
            (None, None) => (None, None),
        };
        let status = self.counted_status();
        let now_us = host::now_micros();
        let micros = now_us.saturating_sub(self.started_us);
        // Requests no version served are counted as `unknown`, so every request counts.
        let (class, outcomes) = (self.class, self.outcomes);
        self.plugin.metrics.record_request(&ProxyHost, version, class, reason, status, micros / 1_000, outcomes);
        let user = match (self.decision, self.tag) {
            (Some(_), _) => self.user,
            (None, Some(Tag { user: Some(u), .. })) => 1 << u,
            (None, _) => self.random_user(),
        };
        let is_error = status >= 500;
        let coordinator = &self.plugin.coordinator;
        if let Some(version) = version {
            let gate = &self.plugin.router.config().gate;
            let is_slow = gate.slow_us().is_some_and(|limit| micros > limit);
            // The gate weighs each user's requests up to a bound: the testers' overrides as one
            // user, the others by bucket; mesh mode knows no user but the testers.
            let weighed_as = self.decision.filter(|_| gate.has_thresholds()).and_then(|d| match d.reason {
                Reason::Override => Some(u64::MAX),
                _ => d.bucket.map(u64::from),
            });
            let unweighed = weighed_as.is_some_and(|u| !coordinator.weighs(u, now_us / 1_000, is_error || is_slow));
            let completed = Completed { micros, is_error, is_slow, outcomes, user, unweighed };
            coordinator.record(version, class, &completed);
        }
        if self.plugin.own_revision.is_some() && self.plugin.router.config().direction == "inbound" {
            let limits = self.tag.map(|t| t.limits_us).unwrap_or_default();
            coordinator.record_for_report(micros, is_error, user, &limits, now_us / 1_000_000);
        }
    }
}

impl Stream {
    /// A request for a host this router does not handle: a version or reason header the
    /// client sent is removed, so no virtual host that routes on it lets a client choose.
    fn drop_client_choice(&self) {
        let config = self.plugin.router.config();
        let mut removed = false;
        for name in [&config.version_header, &config.reason_header] {
            if host::request_header(name).is_some() {
                host::set_header(MapType::HttpRequestHeaders, name, None);
                removed = true;
            }
        }
        if removed && self.plugin.clear_route_cache {
            host::clear_route_cache();
        }
    }

    /// The HTTP status the request counts as: a gRPC call's from its gRPC status (Envoy's
    /// `response.grpc_status`), anything else's own; 0 for none.
    fn counted_status(&self) -> u64 {
        let grpc_config = self.plugin.router.config().grpc;
        match self.protocol {
            Protocol::Grpc => grpc::call_status(grpc_config, host::property_u64(&["response", "grpc_status"]), || {
                host::property_u64(&["response", "flags"]).unwrap_or(0)
            }),
            Protocol::GrpcWeb => {
                grpc::web_call_status(grpc_config, host::response_header("grpc-status").as_deref(), self.http_status())
            }
            Protocol::Http => self.http_status(),
        }
    }

    /// The response's HTTP status; without response headers (a reset), what Envoy answered.
    fn http_status(&self) -> u64 {
        match self.status {
            0 => host::property_u64(&["response", "code"]).unwrap_or(0),
            status => status,
        }
    }

    /// The request's user for the gate's distinct-users sketch: its bucket; a tester's
    /// overrides count as one user; a request with no known user (mesh mode), as its own.
    fn user_of(&self, decision: &Decision) -> Users {
        match decision {
            Decision { reason: Reason::Override, .. } => user_bit(u64::MAX),
            Decision { bucket: Some(bucket), .. } => user_bit(u64::from(*bucket)),
            _ => self.random_user(),
        }
    }

    fn random_user(&self) -> Users {
        let mut rng = self.rng.get();
        let bit = user_bit(u64::from(rng.next_bucket()));
        self.rng.set(rng);
        bit
    }

    /// Inbound observer: this VM's report for a router's request asking for one (`None` for
    /// any other, or without a revision to report).
    fn report(&self) -> Option<String> {
        let revision = self.plugin.own_revision.filter(|_| self.tag.is_some_and(|t| t.report))?;
        self.plugin.coordinator.report(revision, host::now_micros() / 1_000_000).map(|report| report.encode())
    }

    /// Mesh router: removes the observer's answer from the response (read only when there is
    /// a revision to believe or a report to keep); whether it echoes this VM's stamp, and with
    /// `gate.fleet` keeps its report.
    fn take_answer(&self, read: bool) -> bool {
        let plugin = &self.plugin;
        let value = if read { host::response_header(report::REPORT_HEADER) } else { None };
        host::set_header(MapType::HttpResponseHeaders, report::REPORT_HEADER, None);
        let Some(report_text) = value.as_deref().and_then(|v| plugin.coordinator.own_answer(v)) else { return false };
        if let Some(fleet) = &plugin.router.config().gate.fleet {
            if let Some(report) = Report::parse(report_text) {
                plugin.coordinator.hear_report(report, fleet);
            }
        }
        true
    }

    /// The version that served: the chosen one in filter mode; in mesh mode, the version of
    /// the upstream cluster the route chose, else the pinned or overridden one.
    fn served_version(&self, decision: &Decision) -> Option<Version> {
        match self.plugin.router.config().split.mode {
            SplitMode::Filter => decision.version,
            SplitMode::Mesh => host::property(&["xds", "cluster_name"])
                .and_then(|cluster| self.plugin.router.version_of_cluster(&cluster))
                .or(decision.version),
        }
    }

    /// Mesh mode, response headers: sets `served` from the cluster that served, learns which
    /// revision serves that subset (from the observer's header, believed only with the
    /// observer's echo of this VM's stamp), and notes a canary subset with no healthy upstream.
    /// The serving revision, if an observer stamped it.
    fn learn_from_response(&mut self, decision: &Decision) -> Option<Revision> {
        let plugin = self.plugin.clone();
        let config = plugin.router.config();
        let named = host::response_header(&config.revision_header);
        let stamped = self.take_answer(named.is_some() || config.gate.fleet.is_some());
        let cluster = host::property(&["xds", "cluster_name"]);
        let from_cluster = cluster.as_deref().and_then(|c| plugin.router.version_of_cluster(c));
        self.served = from_cluster.or(decision.version);
        let served = from_cluster?;
        let revisions = plugin.coordinator.revisions();
        let revision = named.as_deref().and_then(Revision::parse).filter(|_| stamped);
        match revision {
            Some(revision) => {
                revisions.learn(&ProxyHost, &config.service, served, revision, self.started_us / 1_000_000);
                let cluster = cluster.as_deref().unwrap_or_default();
                if served == Version::Canary {
                    revisions.note_canary_cluster(&ProxyHost, cluster);
                } else if config.gate.fleet.is_some() {
                    // The probe finds a canary that has served this router nothing yet.
                    if let Some(canary) = plugin.router.canary_cluster_beside(cluster) {
                        revisions.note_canary_cluster(&ProxyHost, &canary);
                    }
                }
            }
            // Envoy's own 503 (for a gRPC call, its trailers-only UNAVAILABLE): the subset has no
            // endpoint left (scaled to zero).
            None if served == Version::Canary
                && (self.status == 503 || self.protocol == Protocol::Grpc)
                && host::property(&["response", "code_details"]).as_deref() == Some(b"no_healthy_upstream") =>
            {
                revisions.canary_unavailable(&ProxyHost, &config.service);
            }
            None => {}
        }
        revision
    }

    /// Inbound observer: answers the router's revision probe itself, never forwarding it.
    fn answer_probe(&mut self) -> Action {
        let config = self.plugin.router.config();
        if config.direction != "inbound" {
            return Action::Continue;
        }
        let target = host::request_header(":path").unwrap_or_default();
        let mut parts = target.splitn(2, |&b| b == b'?');
        if parts.next() != Some(config.revision_probe_path.as_bytes()) {
            return Action::Continue;
        }
        self.skipped = true;
        // Only a router's probe learns the pod's revision: GET or HEAD of the exact path, with
        // a router's tag. Anything else is told nothing, as for a path that does not exist.
        let method = host::request_header(":method");
        let probe = matches!(method.as_deref(), Some(b"GET" | b"HEAD")) && parts.next().is_none();
        let (stamp, revision) = (self.tag.and_then(|t| t.stamp), self.plugin.own_revision);
        let (Some(stamp), Some(revision), true) = (stamp, revision, probe) else {
            host::send_response(404, &[("cache-control", "no-store")], b"");
            return Action::Pause;
        };
        let answer = report::answer(self.report(), Some(stamp));
        let mut headers = vec![(config.revision_header.as_str(), revision.as_str()), ("cache-control", "no-store")];
        headers.extend(answer.as_deref().map(|a| (report::REPORT_HEADER, a)));
        host::send_response(200, &headers, revision.as_str().as_bytes());
        Action::Pause
    }
}
