//! Host stat ids of one configuration, defined once at configure time so every series exists
//! (at zero) from the start. The request path adds to this VM's pending counts with no host
//! call and records the latency histogram; the counts reach Envoy's counters at each tick (and
//! when the configuration is dropped), one host call per counter that moved.

use super::names::{self, code_class, series, series_with, service_series, SeriesKey, CODE_CLASSES};
use super::window::WindowStats;
use crate::config::Config;
use crate::host::{MetricKind, Stats};
use crate::model::{GateState, Reason, Version, UNKNOWN_VERSION};
use std::cell::RefCell;

/// Counters per version: requests, one per code class, one per reason.
const COUNTERS_PER_VERSION: usize = 1 + CODE_CLASSES.len() + Reason::ALL.len();
/// Counters of the three versions (stable, canary, unknown).
const COUNTER_SLOTS: usize = 3 * COUNTERS_PER_VERSION;

struct VersionIds {
    requests: Option<u32>,
    responses: [Option<u32>; 6],
    duration: Option<u32>,
    decisions: [Option<u32>; 7],
    window: [Option<u32>; 5],
}

/// Stat ids of both versions of one service (and of requests no version served), and of its
/// gate.
pub struct MetricIds {
    /// Stable, canary, unknown (no window gauges).
    versions: [VersionIds; 3],
    gate_tripped: Option<u32>,
    gate_trips: Option<u32>,
    gate_state: Option<u32>,
    vm_memory: Option<u32>,
    /// Counts not yet added to the host counters, per slot (see [`MetricIds::counter_id`]).
    pending: RefCell<[u32; COUNTER_SLOTS]>,
}

fn increment(stats: &impl Stats, id: Option<u32>) {
    if let Some(id) = id {
        stats.increment(id);
    }
}

fn record(stats: &impl Stats, id: Option<u32>, value: u64) {
    if let Some(id) = id {
        stats.record(id, value);
    }
}

impl MetricIds {
    /// Defines every series of `config`'s service and versions; an observer's carry its own
    /// `revision`.
    pub fn define(stats: &impl Stats, config: &Config, revision: Option<&str>) -> Self {
        let for_version = |version: &str, windowed: bool| {
            let key = SeriesKey { service: &config.service, version, reporter: config.role.reporter(), revision };
            let counter = |name: String| stats.define_metric(MetricKind::Counter, &name);
            let gauge = |name: String| stats.define_metric(MetricKind::Gauge, &name);
            VersionIds {
                requests: counter(series(names::REQUESTS, key)),
                responses: CODE_CLASSES.map(|class| counter(series_with(names::RESPONSES, key, "code_class", class))),
                duration: stats.define_metric(MetricKind::Histogram, &series(names::DURATION, key)),
                decisions: Reason::ALL.map(|r| counter(series_with(names::DECISIONS, key, "reason", r.as_str()))),
                window: [
                    names::WINDOW_REQUESTS,
                    names::WINDOW_ERROR_RATIO,
                    names::WINDOW_P50,
                    names::WINDOW_P95,
                    names::WINDOW_P99,
                ]
                .map(|m| if windowed { gauge(series(m, key)) } else { None }),
            }
        };
        let svc = config.service.as_str();
        MetricIds {
            versions: [
                for_version(&config.stable, true),
                for_version(&config.canary, true),
                for_version(UNKNOWN_VERSION, false),
            ],
            gate_tripped: stats.define_metric(MetricKind::Gauge, &service_series(names::GATE_TRIPPED, svc)),
            gate_trips: stats.define_metric(MetricKind::Counter, &service_series(names::GATE_TRIPS, svc)),
            gate_state: stats.define_metric(MetricKind::Gauge, &service_series(names::GATE_STATE, svc)),
            vm_memory: stats.define_metric(MetricKind::Gauge, names::VM_MEMORY),
            pending: RefCell::new([0; COUNTER_SLOTS]),
        }
    }

    /// The host counter of a pending-count slot: per version, requests, then the code classes,
    /// then the reasons.
    fn counter_id(&self, slot: usize) -> Option<u32> {
        let ids = self.versions.get(slot / COUNTERS_PER_VERSION)?;
        match slot % COUNTERS_PER_VERSION {
            0 => ids.requests,
            i if i <= CODE_CLASSES.len() => ids.responses.get(i - 1).copied().flatten(),
            i => ids.decisions.get(i - 1 - CODE_CLASSES.len()).copied().flatten(),
        }
    }

    /// Adds the pending counts to the host counters (each VM, once a second).
    pub fn flush(&self, stats: &impl Stats) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else { return };
        for (slot, count) in pending.iter_mut().enumerate() {
            if *count > 0 {
                if let Some(id) = self.counter_id(slot) {
                    stats.add(id, u64::from(*count));
                }
                *count = 0;
            }
        }
    }

    fn of(&self, version: Option<Version>) -> Option<&VersionIds> {
        self.versions.get(version.map_or(2, Version::index))
    }

    /// Counts one completed request of `version` (`None`: no version served it) with its
    /// response `status` (0: none).
    pub fn record_request(
        &self,
        stats: &impl Stats,
        version: Option<Version>,
        reason: Option<Reason>,
        status: u64,
        millis: u64,
    ) {
        let Some(ids) = self.of(version) else { return };
        record(stats, ids.duration, millis);
        let base = version.map_or(2, Version::index) * COUNTERS_PER_VERSION;
        if let Ok(mut pending) = self.pending.try_borrow_mut() {
            let slots = [
                Some(base),
                Some(base + 1 + code_class(status)),
                reason.map(|r| base + 1 + CODE_CLASSES.len() + r.index()),
            ];
            for slot in slots.into_iter().flatten() {
                if let Some(count) = pending.get_mut(slot) {
                    *count = count.saturating_add(1);
                }
            }
        }
    }

    /// Raises the VM memory gauge to `vm_bytes` (this VM's memory) if larger (each VM, once a
    /// second; a lost race between VMs only delays the maximum by a tick).
    pub fn note_vm_memory(&self, stats: &impl Stats, vm_bytes: u64) {
        if let Some(id) = self.vm_memory {
            if vm_bytes > stats.metric_value(id) {
                stats.record(id, vm_bytes);
            }
        }
    }

    /// Publishes the gate's state; `tripped_now` also counts a trip. A mesh-mode router's gate
    /// judges one canary revision: its state and trip series carry that `revision` (defined
    /// when first shown), so a query for a new canary revision never reads an older one's trip.
    pub fn set_gate(
        &self,
        stats: &impl Stats,
        config: &Config,
        revision: Option<&str>,
        state: GateState,
        tripped_now: bool,
    ) {
        let (state_id, tripped_id) = match revision {
            None => (self.gate_state, self.gate_tripped),
            Some(revision) => {
                let name = |metric| format!("{}.revision.{revision}", service_series(metric, &config.service));
                (
                    stats.define_metric(MetricKind::Gauge, &name(names::GATE_STATE)),
                    stats.define_metric(MetricKind::Gauge, &name(names::GATE_TRIPPED)),
                )
            }
        };
        record(stats, state_id, state.value());
        record(stats, tripped_id, u64::from(state == GateState::Tripped));
        if tripped_now {
            increment(stats, self.gate_trips);
        }
    }

    /// Sets `canary_revision_info` of `revision` serving `version` to 1 (`serving`) or 0.
    pub fn set_revision_info(
        &self,
        stats: &impl Stats,
        config: &Config,
        version: Version,
        revision: &str,
        serving: bool,
    ) {
        let name = names::revision_info(&config.service, config.version_name(version), revision);
        record(stats, stats.define_metric(MetricKind::Gauge, &name), u64::from(serving));
    }

    /// Publishes the merged window of `version`.
    pub fn set_window(&self, stats: &impl Stats, version: Version, window: &WindowStats) {
        let Some(ids) = self.of(Some(version)) else { return };
        let values = [window.requests, window.error_ratio_ppm, window.p50_us, window.p95_us, window.p99_us];
        for (id, value) in ids.window.iter().zip(values) {
            record(stats, *id, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeProxy;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn every_request_is_counted_in_one_class_and_one_version() {
        let proxy = FakeProxy::default();
        let host = proxy.vm();
        let config = Config::parse(br#"{"service":"checkout","split":{"mode":"mesh"}}"#).unwrap();
        let ids = MetricIds::define(&host, &config, None);
        let series = |metric: &str, version: &str, extra: &str| {
            proxy.stat(&format!("{metric}.service.checkout.version.{version}.reporter.router{extra}"))
        };
        // Every series exists at zero from the start, the unknown version's too.
        for version in ["stable", "canary", "unknown"] {
            assert_eq!(series(names::REQUESTS, version, ""), Some(0), "{version}");
            for class in CODE_CLASSES {
                assert_eq!(series(names::RESPONSES, version, &format!(".code_class.{class}")), Some(0));
            }
        }
        assert_eq!(series(names::WINDOW_REQUESTS, "unknown", ""), None, "no window for unknown");
        let served = [
            (Some(Version::Canary), Some(Reason::Mesh), 200),
            (Some(Version::Canary), Some(Reason::Pin), 0),
            (Some(Version::Stable), None, 503),
            (None, Some(Reason::Mesh), 404),
            (None, Some(Reason::Mesh), 0),
        ];
        for (version, reason, status) in served {
            ids.record_request(&host, version, reason, status, 3);
        }
        // Counted in this VM until the tick flushes them to the host counters.
        assert_eq!(series(names::REQUESTS, "canary", ""), Some(0));
        ids.flush(&host);
        ids.flush(&host);
        let class = |version: &str, class: &str| series(names::RESPONSES, version, &format!(".code_class.{class}"));
        assert_eq!(
            (series(names::REQUESTS, "canary", ""), class("canary", "2xx"), class("canary", "none")),
            (Some(2), Some(1), Some(1))
        );
        assert_eq!((series(names::REQUESTS, "stable", ""), class("stable", "5xx")), (Some(1), Some(1)));
        assert_eq!(
            (series(names::REQUESTS, "unknown", ""), class("unknown", "4xx"), class("unknown", "none")),
            (Some(2), Some(1), Some(1))
        );
        assert_eq!(series(names::DECISIONS, "unknown", ".reason.mesh"), Some(2));
        for version in ["stable", "canary", "unknown"] {
            let classes: u64 = CODE_CLASSES.iter().filter_map(|c| class(version, c)).sum();
            assert_eq!(Some(classes), series(names::REQUESTS, version, ""), "{version}: classes add up");
        }
    }
}
