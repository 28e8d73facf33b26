//! proxy-wasm glue: reads headers through host calls, asks [`Router`] and applies the answer.
//! Every host call's error is handled here; none can trap the VM.

use crate::bucket::BucketRng;
use crate::config::{Config, Role, SplitMode};
use crate::route::{Decision, RequestHeaders, Router, Version};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Filter-state keys (`wasm.` prefixed by Envoy) that the access log reads.
const STATE_VERSION: &str = "canary_gate_version";
const STATE_REASON: &str = "canary_gate_reason";

#[derive(Default)]
struct Root {
    router: Option<Rc<Router>>,
    rng: Rc<Cell<BucketRng>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        self.rng.set(BucketRng::new(vm_seed()));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        match Config::parse(&bytes) {
            Ok(config) => {
                log::info!(
                    "service={} role={:?} mode={:?} canary_percent={}.{:02}",
                    config.service,
                    config.role,
                    config.mode,
                    config.canary_bp / 100,
                    config.canary_bp % 100
                );
                self.router = Some(Rc::new(Router::new(config)));
                true
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let router = self.router.clone()?;
        Some(Box::new(Stream { router, rng: self.rng.clone(), decision: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Seed for keyless users' buckets: WASI randomness, mixed with the clock in case the host
/// answers with zeros.
fn vm_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(now) = hostcalls::get_current_time() {
        if let Ok(since) = now.duration_since(std::time::UNIX_EPOCH) {
            hasher.write_u128(since.as_nanos());
        }
    }
    hasher.finish()
}

struct Stream {
    router: Rc<Router>,
    rng: Rc<Cell<BucketRng>>,
    decision: Option<Decision>,
}

struct HostRequestHeaders;

impl RequestHeaders for HostRequestHeaders {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok().flatten()
    }
}

fn set_header(map: MapType, name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(map, name, value) {
        log::debug!("cannot set header {name}: {status:?}");
    }
}

fn set_state(key: &str, value: &str) {
    if let Err(status) = hostcalls::set_property(vec![key], Some(value.as_bytes())) {
        log::debug!("cannot set filter state {key}: {status:?}");
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let config = self.router.config();
        if config.role == Role::Observer {
            return Action::Continue;
        }
        let mut rng = self.rng.get();
        let decision = self.router.decide(&HostRequestHeaders, &mut rng);
        self.rng.set(rng);
        let version = decision.version.map(|v| config.version_name(v));
        // Replaces (or, in mesh mode, removes) whatever the client sent.
        set_header(MapType::HttpRequestHeaders, &config.version_header, version);
        set_header(MapType::HttpRequestHeaders, &config.reason_header, Some(decision.reason.as_str()));
        self.decision = Some(decision);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(decision) = self.decision else {
            return Action::Continue;
        };
        let config = self.router.config();
        let served = match config.mode {
            SplitMode::Filter => decision.version,
            SplitMode::Mesh => self.served_by_cluster().or(decision.version),
        };
        let version = served.map(|v| config.version_name(v)).unwrap_or("unknown");
        set_header(MapType::HttpResponseHeaders, &config.version_header, Some(version));
        set_header(MapType::HttpResponseHeaders, &config.reason_header, Some(decision.reason.as_str()));
        if let Some(cookie) = self.router.sticky_cookie_for(&decision, served) {
            if let Err(status) = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie) {
                log::debug!("cannot add set-cookie: {status:?}");
            }
        }
        set_state(STATE_VERSION, version);
        set_state(STATE_REASON, decision.reason.as_str());
        Action::Continue
    }
}

impl Stream {
    /// The version of the upstream cluster the route chose.
    fn served_by_cluster(&self) -> Option<Version> {
        let cluster = hostcalls::get_property(vec!["xds", "cluster_name"]).ok().flatten()?;
        self.router.version_of_cluster(&cluster)
    }
}
