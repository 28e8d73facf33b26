//! Host stat ids, defined once per configuration so every series exists (at zero) from the
//! start and the request path only passes cached ids.

use super::host;
use crate::config::Config;
use crate::gate::GateState;
use crate::route::{Reason, Version};
use crate::stats::{self, code_class, series, series_with, service_series, SeriesKey, CODE_CLASSES};
use crate::window::{slot_of, WindowStats};
use proxy_wasm::types::MetricType;

struct VersionIds {
    requests: Option<u32>,
    responses: [Option<u32>; 5],
    duration: Option<u32>,
    decisions: [Option<u32>; 7],
    window: [Option<u32>; 5],
}

/// Stat ids of both versions of one service, and of its gate.
pub struct MetricIds {
    versions: [VersionIds; 2],
    gate_tripped: Option<u32>,
    gate_trips: Option<u32>,
    gate_state: Option<u32>,
    vm_memory: Option<u32>,
}

impl MetricIds {
    /// Defines every series of `config`'s service and versions.
    pub fn define(config: &Config) -> Self {
        let for_version = |version: &str| {
            let key = SeriesKey { service: &config.service, version, reporter: config.role.reporter() };
            let counter = |name: String| host::define_metric(MetricType::Counter, &name);
            let gauge = |name: String| host::define_metric(MetricType::Gauge, &name);
            VersionIds {
                requests: counter(series(stats::REQUESTS, key)),
                responses: CODE_CLASSES.map(|class| counter(series_with(stats::RESPONSES, key, "code_class", class))),
                duration: host::define_metric(MetricType::Histogram, &series(stats::DURATION, key)),
                decisions: Reason::ALL.map(|r| counter(series_with(stats::DECISIONS, key, "reason", r.as_str()))),
                window: [
                    stats::WINDOW_REQUESTS,
                    stats::WINDOW_ERROR_RATIO,
                    stats::WINDOW_P50,
                    stats::WINDOW_P95,
                    stats::WINDOW_P99,
                ]
                .map(|m| gauge(series(m, key))),
            }
        };
        let svc = config.service.as_str();
        MetricIds {
            versions: [for_version(&config.stable), for_version(&config.canary)],
            gate_tripped: host::define_metric(MetricType::Gauge, &service_series(stats::GATE_TRIPPED, svc)),
            gate_trips: host::define_metric(MetricType::Counter, &service_series(stats::GATE_TRIPS, svc)),
            gate_state: host::define_metric(MetricType::Gauge, &service_series(stats::GATE_STATE, svc)),
            vm_memory: host::define_metric(MetricType::Gauge, stats::VM_MEMORY),
        }
    }

    fn of(&self, version: Version) -> Option<&VersionIds> {
        self.versions.get(slot_of(version))
    }

    /// Counts one completed request.
    pub fn record_request(&self, version: Version, reason: Option<Reason>, status: u64, millis: u64) {
        let Some(ids) = self.of(version) else { return };
        host::increment(ids.requests);
        if let Some(class) = code_class(status) {
            host::increment(ids.responses.get(class).copied().flatten());
        }
        host::record(ids.duration, millis);
        if let Some(reason) = reason {
            let index = Reason::ALL.iter().position(|&r| r == reason);
            host::increment(index.and_then(|i| ids.decisions.get(i).copied().flatten()));
        }
    }

    /// Raises the VM memory gauge to this VM's memory if larger (each VM, once a second; a
    /// lost race between VMs only delays the maximum by a tick).
    pub fn note_vm_memory(&self) {
        let mine = host::vm_memory_bytes();
        if mine > host::metric_value(self.vm_memory) {
            host::record(self.vm_memory, mine);
        }
    }

    /// Publishes the gate's state; `tripped_now` also counts a trip.
    pub fn set_gate(&self, state: GateState, tripped_now: bool) {
        host::record(self.gate_state, state.value());
        host::record(self.gate_tripped, u64::from(state == GateState::Tripped));
        if tripped_now {
            host::increment(self.gate_trips);
        }
    }

    /// Publishes the merged window of `version`.
    pub fn set_window(&self, version: Version, stats: &WindowStats) {
        let Some(ids) = self.of(version) else { return };
        let values = [stats.requests, stats.error_ratio_ppm, stats.p50_us, stats.p95_us, stats.p99_us];
        for (id, value) in ids.window.iter().zip(values) {
            host::record(*id, value);
        }
    }
}
