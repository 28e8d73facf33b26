//! proxy-wasm glue: binds the filter's flow ([`crate::filter`]) to proxy-wasm host calls
//! ([`host`]). Compiled for the proxy (wasm32-wasip1) only.

mod beacon;
mod host;

use crate::config::Role;
use crate::coord::{Coordinator, VmState};
use crate::filter::{self, Env, Setup};
use crate::measure::metrics::MetricIds;
use crate::route::bucket::BucketRng;
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

/// A configuration in this VM: the shared part, and this VM's stats and coordinator.
struct Plugin {
    filter: filter::Plugin,
    metrics: MetricIds,
    coordinator: Rc<Coordinator>,
    stamp_tag: Option<String>,
}

impl Plugin {
    fn env<'a>(&'a self, rng: &'a Cell<BucketRng>) -> Env<'a, ProxyHost> {
        Env {
            plugin: &self.filter,
            metrics: &self.metrics,
            coordinator: &self.coordinator,
            rng,
            stamp_tag: self.stamp_tag.as_deref(),
            host: &ProxyHost,
        }
    }
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
        filter::hear_probe_answer(&plugin.filter, &plugin.coordinator, &ProxyHost, |name| {
            proxy_wasm::hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name).ok().flatten()
        });
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
        let setup = Setup {
            node_label: host::node_label,
            env_var: host::env_var,
            offers_clear_route_cache: host::offers_clear_route_cache(),
        };
        let filter = match filter::Plugin::configure(&host::plugin_configuration(), &setup) {
            Ok(filter) => filter,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let config = filter.config();
        if config.role == Role::Router && !setup.offers_clear_route_cache {
            log::warn!("the host offers no clear_route_cache: routes follow the version header only while it clears the route cache itself (proxy-wasm ABI 0.2.1)");
        }
        let metrics = filter.define_metrics(&ProxyHost);
        let coordinator = VM.with(|vm| vm.coordinator(&config.service, config.measures()));
        if config.role == Role::Observer && config.direction == "inbound" {
            coordinator.resolve_pod(&ProxyHost);
        }
        let stamp_tag = filter.stamp_tag(&coordinator);
        let period = Duration::from_millis(u64::from(config.eval_period_ms()));
        self.plugin = Some(Rc::new(Plugin { filter, metrics, coordinator, stamp_tag }));
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
            let next_ms = plugin.coordinator.tick(&ProxyHost, plugin.filter.config(), &plugin.metrics);
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
        let flow = filter::Stream::new(&plugin.filter);
        Some(Box::new(Stream { plugin, rng: self.rng.clone(), flow, context_id, pending: self.pending.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Seed for keyless users' buckets and the VM's lease id: WASI randomness (which Envoy's Wasm
/// hosts implement), mixed with the clock in case the host answers with zeros.
fn vm_seed() -> u64 {
    host::random_u64() ^ host::now_micros().wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

struct Stream {
    plugin: Rc<Plugin>,
    rng: Rc<Cell<BucketRng>>,
    flow: filter::Stream,
    context_id: u32,
    /// This VM's beacons waiting for their body.
    pending: Rc<beacon::PendingBeacons>,
}

impl Stream {
    /// After a step of the flow that began `waiting` for a beacon's body or not: a beacon that
    /// starts or stops waiting joins or leaves the VM's table of pending beacons.
    fn after(&self, waiting: bool, action: filter::Action) -> Action {
        match (waiting, self.flow.awaits_body()) {
            (false, true) => self.pending.add(self.context_id, self.flow.started_us()),
            (true, false) => self.pending.remove(self.context_id),
            _ => {}
        }
        match action {
            filter::Action::Continue => Action::Continue,
            filter::Action::Pause => Action::Pause,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.flow.awaits_body() {
            self.pending.remove(self.context_id);
        }
    }
}

impl Context for Stream {}

// The Makefile's WASM_EXPORTS keeps only the callbacks implemented here (Envoy skips the
// others): a new callback needs its export added there.
impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.flow.on_request_headers(&self.plugin.env(&self.rng), end_of_stream);
        self.after(false, action)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.flow.awaits_body() {
            return Action::Continue;
        }
        self.pending.body_seen();
        let action = self.flow.on_request_body(&self.plugin.env(&self.rng), body_size, end_of_stream);
        self.after(true, action)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let action = self.flow.on_response_headers(&self.plugin.env(&self.rng));
        self.after(false, action)
    }

    fn on_log(&mut self) {
        self.flow.on_complete(&self.plugin.env(&self.rng));
    }
}
