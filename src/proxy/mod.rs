//! proxy-wasm glue: reads headers and properties through [`host`], asks the pure modules, and
//! applies the answer. Compiled for the proxy (wasm32-wasip1) only.

mod host;

use crate::config::{Config, Role, SplitMode};
use crate::coord::{Coordinator, VmState};
use crate::measure::metrics::MetricIds;
use crate::model::{Version, UNKNOWN_VERSION};
use crate::route::bucket::BucketRng;
use crate::route::{Decision, RequestHeaders, Router};
use host::ProxyHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

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
    metrics: MetricIds,
    coordinator: Rc<Coordinator>,
    /// Observer role: this proxy's own version, from node metadata.
    own_version: Option<Version>,
}

#[derive(Default)]
struct Root {
    plugin: Option<Rc<Plugin>>,
    rng: Rc<Cell<BucketRng>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let seed = vm_seed();
        self.rng.set(BucketRng::new(seed));
        VM.with(|vm| vm.start(seed.rotate_left(17) ^ 0x5bd1_e995));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match Config::parse(&host::plugin_configuration()) {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let router = Router::new(config);
        let config = router.config();
        let own_version = match config.role {
            Role::Router => None,
            Role::Observer => {
                let label = host::property(&["xds", "node", "metadata", "LABELS", &config.version_label]);
                let version = label.as_deref().and_then(|v| router.version_named(v));
                if version.is_none() {
                    log::warn!(
                        "observer for {}: node label `{}` is {:?}, neither `{}` nor `{}`; counting its requests as version `unknown`",
                        config.service,
                        config.version_label,
                        label.as_deref().map(String::from_utf8_lossy),
                        config.stable,
                        config.canary
                    );
                }
                version
            }
        };
        log::info!(
            "service={} role={} mode={} canary_percent={}.{:02} window_s={} gate={}",
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
            }
        );
        let metrics = MetricIds::define(&ProxyHost, config);
        let coordinator = VM.with(|vm| vm.coordinator(&config.service, config.role.reporter()));
        self.plugin = Some(Rc::new(Plugin { router, metrics, coordinator, own_version }));
        if let Err(status) = proxy_wasm::hostcalls::set_tick_period(Duration::from_secs(1)) {
            log::warn!("cannot set tick period: {status:?}");
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            plugin.metrics.note_vm_memory(&ProxyHost, host::vm_memory_bytes());
            plugin.coordinator.tick(&ProxyHost, plugin.router.config(), &plugin.metrics);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plugin = self.plugin.clone()?;
        Some(Box::new(Stream {
            plugin,
            rng: self.rng.clone(),
            decision: None,
            served: None,
            status: 0,
            started_us: 0,
            skipped: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Seed for keyless users' buckets and the VM's lease id: WASI randomness, mixed with the
/// clock in case the host answers with zeros.
fn vm_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(host::now_micros());
    hasher.finish()
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
}

struct HostRequestHeaders;

impl RequestHeaders for HostRequestHeaders {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        // HTTP/1.1 clients may split cookies over several lines; HTTP/2 ones always do.
        if name == "cookie" {
            return host::request_cookies();
        }
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
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let router = &self.plugin.router;
        if !router.handles(|| host::request_header(":authority")) {
            self.skipped = true;
            return Action::Continue;
        }
        let config = router.config();
        self.started_us = host::now_micros();
        if config.role == Role::Observer {
            return Action::Continue;
        }
        let mut rng = self.rng.get();
        let decision = router.decide(&HostRequestHeaders, &mut rng, self.plugin.coordinator.gate_tripped());
        self.rng.set(rng);
        let version = decision.version.map(|v| config.version_name(v));
        // Replaces (or, in mesh mode, removes) whatever the client sent.
        host::set_header(MapType::HttpRequestHeaders, &config.version_header, version);
        host::set_header(MapType::HttpRequestHeaders, &config.reason_header, Some(decision.reason.as_str()));
        self.decision = Some(decision);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.skipped {
            return Action::Continue;
        }
        self.status = host::response_status().unwrap_or(0);
        let Some(decision) = self.decision else {
            return Action::Continue;
        };
        let router = &self.plugin.router;
        let config = router.config();
        self.served = self.served_version(&decision);
        let version = self.served.map(|v| config.version_name(v)).unwrap_or(UNKNOWN_VERSION);
        host::set_header(MapType::HttpResponseHeaders, &config.version_header, Some(version));
        host::set_header(MapType::HttpResponseHeaders, &config.reason_header, Some(decision.reason.as_str()));
        if let Some(cookie) = router.sticky_cookie_for(&decision, self.served) {
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
        // Without response headers (a reset), ask Envoy what it answered.
        let status = match self.status {
            0 => host::property_u64(&["response", "code"]).unwrap_or(0),
            status => status,
        };
        let micros = host::now_micros().saturating_sub(self.started_us);
        // Requests no version served are counted as `unknown`, so every request counts.
        self.plugin.metrics.record_request(&ProxyHost, version, reason, status, micros / 1_000);
        if let Some(version) = version {
            self.plugin.coordinator.record(version, micros, status >= 500);
        }
    }
}

impl Stream {
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
}
