//! The filter's flow, host-neutral: what a stream does at each step (decide, tag, count,
//! answer a probe or a beacon) through [`StreamHost`]. The proxy-wasm glue (`proxy`) and the
//! native dynamic module (`native`) bind it to their host and nothing more.

pub mod beacon;
#[cfg(test)]
mod tests;

use crate::config::{Config, ConfigError, Role, SplitMode};
use crate::coord::Coordinator;
use crate::host::{Attribute, Host, Map, StreamHost};
use crate::measure::classify::{ClassIndex, Classifier};
use crate::measure::grpc::{self, Protocol};
use crate::measure::metrics::MetricIds;
use crate::measure::report::{self, Report, Tag};
use crate::measure::window::{user_bit, Completed, Users};
use crate::model::{quoted, Reason, Revision, Version, UNKNOWN_VERSION};
use crate::route::bucket::BucketRng;
use crate::route::{Decision, RequestHeaders, Router};
use std::cell::Cell;

/// Filter-state keys for the access log, with `filter_state` on (the proxy-wasm host prefixes
/// them with `wasm.`).
pub const STATE_VERSION: &str = "canary_gate_version";
/// The reason of the decision.
pub const STATE_REASON: &str = "canary_gate_reason";

/// What the filter asks of the host after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on with the stream.
    Continue,
    /// Stop here: the filter answered, or waits for the body.
    Pause,
}

/// What a configuration fixes for every stream: shared, read-only.
pub struct Plugin {
    /// The routing decisions, and the validated configuration.
    pub router: Router,
    /// The route classes.
    pub classifier: Classifier,
    /// Observer role: this proxy's own version, from node metadata.
    pub own_version: Option<Version>,
    /// Observer role: this proxy's own revision, from node metadata.
    pub own_revision: Option<Revision>,
    /// The host can make Envoy select the route again.
    pub clear_route_cache: bool,
    /// Routers with `gate.fleet`: the latency limits their tag asks the observers to count.
    pub fleet_limits: Option<[u64; report::LIMITS]>,
}

/// What the host offers a configuration besides its JSON.
pub struct Setup<N, E> {
    /// A label of this proxy's node metadata (where Istio puts the pod's labels).
    pub node_label: N,
    /// An environment variable (for `sticky.key_env`).
    pub env_var: E,
    /// Whether the host can make Envoy select the route again.
    pub offers_clear_route_cache: bool,
}

impl Plugin {
    /// Parses and checks `json`, and logs what it configures; the error names the field and the
    /// reason.
    pub fn configure<N, E>(json: &[u8], setup: &Setup<N, E>) -> Result<Plugin, ConfigError>
    where
        N: Fn(&str) -> Option<Vec<u8>>,
        E: Fn(&str) -> Option<String>,
    {
        let parsed = Config::parse(json);
        let config = parsed.and_then(|mut c| c.resolve_key_env(&setup.env_var).map(|()| c))?;
        let router = Router::new(config);
        let config = router.config();
        let classifier = Classifier::new(config);
        let (own_version, own_revision) = match config.role {
            Role::Router => (None, None),
            Role::Observer => (own_version(&router, setup), own_revision(config, setup)),
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
        let clear_route_cache = config.role == Role::Router && setup.offers_clear_route_cache;
        let fleet_limits = config.gate.fleet.map(|_| crate::coord::fleet::tag_limits(config));
        Ok(Plugin { router, classifier, own_version, own_revision, clear_route_cache, fleet_limits })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        self.router.config()
    }

    /// Defines the host stats of this configuration.
    pub fn define_metrics(&self, stats: &impl Host) -> MetricIds {
        let config = self.config();
        let revision_label = match config.role {
            Role::Router => None,
            Role::Observer => Some(self.own_revision.as_ref().map_or(UNKNOWN_VERSION, |r| r.as_str())),
        };
        MetricIds::define(stats, config, revision_label)
    }

    /// Mesh-mode routers without `gate.fleet`: the tag of their requests, `coordinator`'s stamp
    /// alone (the same for every request of a VM or worker).
    pub fn stamp_tag(&self, coordinator: &Coordinator) -> Option<String> {
        let config = self.config();
        let mesh_router = config.role == Role::Router && config.split.mode == SplitMode::Mesh;
        (mesh_router && self.fleet_limits.is_none())
            .then(|| Tag { stamp: Some(coordinator.stamp()), ..Tag::default() }.encode())
    }
}

/// An observer's own version, from its node metadata label `version_label`.
fn own_version<N: Fn(&str) -> Option<Vec<u8>>, E>(router: &Router, setup: &Setup<N, E>) -> Option<Version> {
    let config = router.config();
    let label = (setup.node_label)(&config.version_label);
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
fn own_revision<N: Fn(&str) -> Option<Vec<u8>>, E>(config: &Config, setup: &Setup<N, E>) -> Option<Revision> {
    let label = (setup.node_label)(&config.revision_label);
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

/// Everything a stream's callback reaches: the configuration, the state of its VM (Wasm) or
/// worker (native), and its host.
pub struct Env<'a, H> {
    /// The configuration.
    pub plugin: &'a Plugin,
    /// The host stats of the configuration, with this VM's or worker's pending counts.
    pub metrics: &'a MetricIds,
    /// This VM's or worker's coordinator of the service.
    pub coordinator: &'a Coordinator,
    /// Buckets of users with no key.
    pub rng: &'a Cell<BucketRng>,
    /// [`Plugin::stamp_tag`] of this VM or worker.
    pub stamp_tag: Option<&'a str>,
    /// The stream's host.
    pub host: &'a H,
}

struct Headers<'a, H>(&'a H);

impl<H: StreamHost> RequestHeaders for Headers<'_, H> {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.0.header(Map::Request, name)
    }

    fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.0.request_header_lines(name)
    }
}

/// The response's outcomes: bit `i` set if response header `outcomes[i].response_header`
/// equals one of its values (nothing read without outcomes).
fn outcomes_of(config: &Config, host: &impl StreamHost) -> u8 {
    let mut bits = 0u8;
    for (i, outcome) in config.outcomes.iter().enumerate() {
        let value = host.header(Map::Response, &outcome.response_header);
        if value.is_some_and(|v| outcome.equals.iter().any(|e| e.as_bytes() == v.as_slice())) {
            bits |= 1 << i;
        }
    }
    bits
}

/// One request's state between its callbacks.
pub struct Stream {
    decision: Option<Decision>,
    served: Option<Version>,
    /// `:status` of the response headers, 0 until they pass.
    status: u64,
    started_us: u64,
    /// The request's authority is not in `hosts`, or the filter answered it: leave it alone.
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
}

impl Stream {
    /// A new stream of `plugin`.
    pub fn new(plugin: &Plugin) -> Self {
        Stream {
            decision: None,
            served: None,
            status: 0,
            started_us: 0,
            skipped: false,
            class: plugin.classifier.other(),
            protocol: Protocol::Http,
            tag: None,
            user: 0,
            outcomes: 0,
            beacon: false,
        }
    }

    /// Whether the stream is a beacon waiting for its body.
    pub fn awaits_body(&self) -> bool {
        self.beacon
    }

    /// A beacon whose body is no longer waited for: true if it was.
    pub fn stop_waiting(&mut self) -> bool {
        std::mem::replace(&mut self.beacon, false)
    }

    /// When the request's headers came (µs since the epoch; 0 if not counted).
    pub fn started_us(&self) -> u64 {
        self.started_us
    }

    /// The request's headers: decide, tag and clear the route cache; or answer a beacon or a
    /// probe.
    pub fn on_request_headers<H: StreamHost>(&mut self, env: &Env<H>, end_of_stream: bool) -> Action {
        let (plugin, host) = (env.plugin, env.host);
        let router = &plugin.router;
        if !router.handles(|| host.header(Map::Request, ":authority")) {
            self.skipped = true;
            self.drop_client_choice(env);
            return Action::Continue;
        }
        let config = router.config();
        self.started_us = host.now_micros();
        // With the beacon endpoint the path is read here, and the classifier reuses it.
        let mut path = config.vitals.as_ref().map(|_| host.header(Map::Request, ":path"));
        if let (Some(vitals), Some(Some(p))) = (&config.vitals, &path) {
            if beacon::is_endpoint(p, &vitals.path) {
                return self.take_beacon(env, p, end_of_stream);
            }
        }
        // Read for every request counted: a gRPC call's status is not its HTTP status.
        self.protocol =
            host.header(Map::Request, "content-type").map_or(Protocol::Http, |t| Protocol::of_content_type(&t));
        self.class = plugin.classifier.classify(|name| {
            if name == ":path" {
                if let Some(p) = path.take() {
                    return p;
                }
            }
            host.header(Map::Request, name)
        });
        if config.role == Role::Observer {
            if config.direction == "inbound" {
                self.tag = host.header(Map::Request, report::TAG_HEADER).as_deref().and_then(Tag::parse);
            }
            return self.answer_probe(env);
        }
        let coordinator = env.coordinator;
        let decision = self.decide(env);
        let version = decision.version.map(|v| config.version_name(v));
        // Replaces (or, in mesh mode, removes) whatever the client sent; the routes match on it.
        host.set_header(Map::Request, &config.version_header, version);
        host.set_header(Map::Request, &config.reason_header, Some(decision.reason.as_str()));
        if !config.r#override.token_sha256.is_empty() {
            // A tester's token is the tester's: the upstream never sees it.
            host.set_header(Map::Request, &config.r#override.token_header, None);
        }
        if plugin.clear_route_cache {
            host.clear_route_cache();
        }
        self.user = self.user_of(env, &decision);
        // Mesh mode: this VM's stamp, for the observers to echo, and with `fleet` the ask for
        // their report. No client's tag passes.
        let asking = plugin.fleet_limits.map(|limits_us| {
            let user = Some(self.user.trailing_zeros() as u8).filter(|&u| u < 64);
            Tag { report: true, user, limits_us, stamp: Some(coordinator.stamp()) }.encode()
        });
        let tag = asking.as_deref().or(env.stamp_tag);
        host.set_header(Map::Request, report::TAG_HEADER, tag);
        self.decision = Some(decision);
        Action::Continue
    }

    /// The routing decision for this request, its refusals counted.
    fn decide<H: StreamHost>(&self, env: &Env<H>) -> Decision {
        let (router, coordinator) = (&env.plugin.router, env.coordinator);
        let mut rng = env.rng.get();
        let tripped = coordinator.gate_tripped();
        let decision =
            coordinator.revisions().with(|table| router.decide_with(&Headers(env.host), &mut rng, tripped, table));
        env.rng.set(rng);
        if decision.override_refused || decision.cookie_refused {
            env.metrics.note_refused(env.host, decision.override_refused, decision.cookie_refused);
        }
        decision
    }

    /// A chunk of the request body: only a beacon's is read.
    pub fn on_request_body<H: StreamHost>(&mut self, env: &Env<H>, buffered: usize, end_of_stream: bool) -> Action {
        if !self.beacon {
            return Action::Continue;
        }
        self.beacon_body(env, buffered, end_of_stream)
    }

    /// The response's headers: the served version and its tags, the sticky cookie; in mesh mode
    /// what the observer said; an observer stamps its revision.
    pub fn on_response_headers<H: StreamHost>(&mut self, env: &Env<H>) -> Action {
        if self.skipped {
            return Action::Continue;
        }
        let (plugin, host) = (env.plugin, env.host);
        self.status = host.header(Map::Response, ":status").and_then(|v| parse_u64(&v)).unwrap_or(0);
        let router = &plugin.router;
        let config = router.config();
        self.outcomes = outcomes_of(config, host);
        let Some(decision) = self.decision else {
            if config.direction == "inbound" {
                // Both replace (or remove) whatever the application set: only an observer
                // names a revision, and only its answer echoes the router's stamp.
                let revision = plugin.own_revision.as_ref().map(Revision::as_str);
                host.set_header(Map::Response, &config.revision_header, revision);
                let answer = report::answer(self.report(env), self.tag.and_then(|t| t.stamp));
                host.set_header(Map::Response, report::REPORT_HEADER, answer.as_deref());
            }
            return Action::Continue;
        };
        let served_revision = match config.split.mode {
            SplitMode::Filter => {
                host.set_header(Map::Response, report::REPORT_HEADER, None);
                self.served = decision.version;
                None
            }
            SplitMode::Mesh => self.learn_from_response(env, &decision),
        };
        let version = self.served.map(|v| config.version_name(v)).unwrap_or(UNKNOWN_VERSION);
        host.set_header(Map::Response, &config.version_header, Some(version));
        host.set_header(Map::Response, &config.reason_header, Some(decision.reason.as_str()));
        if let Some(cookie) = router.sticky_cookie_for(&decision, self.served, served_revision) {
            host.add_response_header("set-cookie", &cookie);
        }
        if config.filter_state {
            host.set_state(STATE_VERSION, version);
            host.set_state(STATE_REASON, decision.reason.as_str());
        }
        Action::Continue
    }

    /// The stream is done: count it in the host stats and in this VM's or worker's tallies.
    pub fn on_complete<H: StreamHost>(&mut self, env: &Env<H>) {
        if self.skipped {
            return;
        }
        let plugin = env.plugin;
        let (version, reason) = match (plugin.own_version, self.decision) {
            (Some(own), _) => (Some(own), None),
            (None, Some(decision)) => {
                (self.served.or_else(|| self.served_version(env, &decision)), Some(decision.reason))
            }
            (None, None) => (None, None),
        };
        let status = self.counted_status(env);
        let now_us = env.host.now_micros();
        let micros = now_us.saturating_sub(self.started_us);
        // Requests no version served are counted as `unknown`, so every request counts.
        let (class, outcomes) = (self.class, self.outcomes);
        env.metrics.record_request(env.host, version, class, reason, status, micros / 1_000, outcomes);
        let user = match (self.decision, self.tag) {
            (Some(_), _) => self.user,
            (None, Some(Tag { user: Some(u), .. })) => 1 << u,
            (None, _) => random_user(env),
        };
        let is_error = status >= 500;
        let coordinator = env.coordinator;
        if let Some(version) = version {
            let gate = &plugin.config().gate;
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
        if plugin.own_revision.is_some() && plugin.config().direction == "inbound" {
            let limits = self.tag.map(|t| t.limits_us).unwrap_or_default();
            coordinator.record_for_report(micros, is_error, user, &limits, now_us / 1_000_000);
        }
    }

    /// A request for a host this router does not handle: a version or reason header the
    /// client sent is removed, so no virtual host that routes on it lets a client choose.
    fn drop_client_choice<H: StreamHost>(&self, env: &Env<H>) {
        let config = env.plugin.config();
        let mut removed = false;
        for name in [&config.version_header, &config.reason_header] {
            if env.host.header(Map::Request, name).is_some() {
                env.host.set_header(Map::Request, name, None);
                removed = true;
            }
        }
        if removed && env.plugin.clear_route_cache {
            env.host.clear_route_cache();
        }
    }

    /// The HTTP status the request counts as: a gRPC call's from its gRPC status (Envoy's
    /// `response.grpc_status`), anything else's own; 0 for none.
    fn counted_status<H: StreamHost>(&self, env: &Env<H>) -> u64 {
        let grpc_config = env.plugin.config().grpc;
        let host = env.host;
        match self.protocol {
            Protocol::Grpc => grpc::call_status(grpc_config, host.attribute(Attribute::ResponseGrpcStatus), || {
                host.attribute(Attribute::ResponseFlags).unwrap_or(0)
            }),
            Protocol::GrpcWeb => grpc::web_call_status(
                grpc_config,
                host.header(Map::Response, "grpc-status").as_deref(),
                self.http_status(env),
            ),
            Protocol::Http => self.http_status(env),
        }
    }

    /// The response's HTTP status; without response headers (a reset), what Envoy answered.
    fn http_status<H: StreamHost>(&self, env: &Env<H>) -> u64 {
        match self.status {
            0 => env.host.attribute(Attribute::ResponseCode).unwrap_or(0),
            status => status,
        }
    }

    /// The request's user for the gate's distinct-users sketch: its bucket; a tester's
    /// overrides count as one user; a request with no known user (mesh mode), as its own.
    fn user_of<H: StreamHost>(&self, env: &Env<H>, decision: &Decision) -> Users {
        match decision {
            Decision { reason: Reason::Override, .. } => user_bit(u64::MAX),
            Decision { bucket: Some(bucket), .. } => user_bit(u64::from(*bucket)),
            _ => random_user(env),
        }
    }

    /// Inbound observer: this VM's report for a router's request asking for one (`None` for
    /// any other, or without a revision to report).
    fn report<H: StreamHost>(&self, env: &Env<H>) -> Option<String> {
        let revision = env.plugin.own_revision.filter(|_| self.tag.is_some_and(|t| t.report))?;
        env.coordinator.report(revision, env.host.now_micros() / 1_000_000).map(|report| report.encode())
    }

    /// Mesh router: removes the observer's answer from the response (read only when there is
    /// a revision to believe or a report to keep); whether it echoes this VM's stamp, and with
    /// `gate.fleet` keeps its report.
    fn take_answer<H: StreamHost>(&self, env: &Env<H>, read: bool) -> bool {
        let host = env.host;
        let value = if read { host.header(Map::Response, report::REPORT_HEADER) } else { None };
        host.set_header(Map::Response, report::REPORT_HEADER, None);
        let Some(report_text) = value.as_deref().and_then(|v| env.coordinator.own_answer(v)) else { return false };
        if let Some(fleet) = &env.plugin.config().gate.fleet {
            if let Some(report) = Report::parse(report_text) {
                env.coordinator.hear_report(report, fleet);
            }
        }
        true
    }

    /// The version that served: the chosen one in filter mode; in mesh mode, the version of
    /// the upstream cluster the route chose, else the pinned or overridden one.
    fn served_version<H: StreamHost>(&self, env: &Env<H>, decision: &Decision) -> Option<Version> {
        match env.plugin.config().split.mode {
            SplitMode::Filter => decision.version,
            SplitMode::Mesh => env
                .host
                .cluster_name()
                .and_then(|cluster| env.plugin.router.version_of_cluster(&cluster))
                .or(decision.version),
        }
    }

    /// Mesh mode, response headers: sets `served` from the cluster that served, learns which
    /// revision serves that subset (from the observer's header, believed only with the
    /// observer's echo of this VM's stamp), and notes a canary subset with no healthy upstream.
    /// The serving revision, if an observer stamped it.
    fn learn_from_response<H: StreamHost>(&mut self, env: &Env<H>, decision: &Decision) -> Option<Revision> {
        let (plugin, host) = (env.plugin, env.host);
        let config = plugin.config();
        let named = host.header(Map::Response, &config.revision_header);
        let stamped = self.take_answer(env, named.is_some() || config.gate.fleet.is_some());
        let cluster = host.cluster_name();
        let from_cluster = cluster.as_deref().and_then(|c| plugin.router.version_of_cluster(c));
        self.served = from_cluster.or(decision.version);
        let served = from_cluster?;
        let revisions = env.coordinator.revisions();
        let revision = named.as_deref().and_then(Revision::parse).filter(|_| stamped);
        match revision {
            Some(revision) => {
                revisions.learn(host, &config.service, served, revision, self.started_us / 1_000_000);
                let cluster = cluster.as_deref().unwrap_or_default();
                if served == Version::Canary {
                    revisions.note_canary_cluster(host, cluster);
                } else if config.gate.fleet.is_some() {
                    // The probe finds a canary that has served this router nothing yet.
                    if let Some(canary) = plugin.router.canary_cluster_beside(cluster) {
                        revisions.note_canary_cluster(host, &canary);
                    }
                }
            }
            // Envoy's own 503 (for a gRPC call, its trailers-only UNAVAILABLE): the subset has no
            // endpoint left (scaled to zero).
            None if served == Version::Canary
                && (self.status == 503 || self.protocol == Protocol::Grpc)
                && host.response_code_details().as_deref() == Some(b"no_healthy_upstream") =>
            {
                revisions.canary_unavailable(host, &config.service);
            }
            None => {}
        }
        revision
    }

    /// Inbound observer: answers the router's revision probe itself, never forwarding it.
    fn answer_probe<H: StreamHost>(&mut self, env: &Env<H>) -> Action {
        let (config, host) = (env.plugin.config(), env.host);
        if config.direction != "inbound" {
            return Action::Continue;
        }
        let target = host.header(Map::Request, ":path").unwrap_or_default();
        let mut parts = target.splitn(2, |&b| b == b'?');
        if parts.next() != Some(config.revision_probe_path.as_bytes()) {
            return Action::Continue;
        }
        self.skipped = true;
        // Only a router's probe learns the pod's revision: GET or HEAD of the exact path, with
        // a router's tag. Anything else is told nothing, as for a path that does not exist.
        let method = host.header(Map::Request, ":method");
        let probe = matches!(method.as_deref(), Some(b"GET" | b"HEAD")) && parts.next().is_none();
        let (stamp, revision) = (self.tag.and_then(|t| t.stamp), env.plugin.own_revision);
        let (Some(stamp), Some(revision), true) = (stamp, revision, probe) else {
            host.send_response(404, &[("cache-control", "no-store")], b"");
            return Action::Pause;
        };
        let answer = report::answer(self.report(env), Some(stamp));
        let mut headers = vec![(config.revision_header.as_str(), revision.as_str()), ("cache-control", "no-store")];
        headers.extend(answer.as_deref().map(|a| (report::REPORT_HEADER, a)));
        host.send_response(200, &headers, revision.as_str().as_bytes());
        Action::Pause
    }
}

fn random_user<H>(env: &Env<H>) -> Users {
    let mut rng = env.rng.get();
    let bit = user_bit(u64::from(rng.next_bucket()));
    env.rng.set(rng);
    bit
}

/// A header value as a number (`:status`).
fn parse_u64(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The answer to the revision probe of the canary subset, which the root context (Wasm) or
/// configuration (native) sent: learn the canary's revision and keep its report.
pub fn hear_probe_answer(
    plugin: &Plugin,
    coordinator: &Coordinator,
    host: &impl Host,
    header: impl Fn(&str) -> Option<Vec<u8>>,
) {
    let config = plugin.config();
    let answer = header(report::REPORT_HEADER).unwrap_or_default();
    let Some(report_text) = coordinator.own_answer(&answer) else { return };
    if let Some(revision) = header(&config.revision_header).as_deref().and_then(Revision::parse) {
        let now_s = host.now_micros() / 1_000_000;
        coordinator.revisions().learn(host, &config.service, Version::Canary, revision, now_s);
    }
    if config.gate.fleet.is_some() {
        if let Some(report) = Report::parse(report_text) {
            coordinator.hear_probe_report(report);
        }
    }
}
