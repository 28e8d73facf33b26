//! Host stat ids of one configuration, defined once at configure time so every series exists
//! (at zero) from the start: per version (stable, canary, and `unknown` for requests no version
//! served) and route class. The request path adds to this VM's pending counts with no host
//! call and records the latency histogram; the counts reach Envoy's counters at each tick (and
//! when the configuration is dropped), one host call per counter that moved.

use super::classify::Classifier;
use super::names::{self, class_series, code_class, series, service_series, SeriesKey, CODE_CLASSES};
use super::vitals::VitalsIds;
use super::window::WindowStats;
use crate::config::{Config, Role};
use crate::host::{MetricKind, Stats};
use crate::model::{GateState, Reason, Version, UNKNOWN_VERSION};
use std::cell::RefCell;

/// Window gauges of one version and class.
const WINDOW_GAUGES: [&str; 5] =
    [names::WINDOW_REQUESTS, names::WINDOW_ERROR_RATIO, names::WINDOW_P50, names::WINDOW_P95, names::WINDOW_P99];

#[derive(Clone)]
struct ClassIds {
    duration: Option<u32>,
    /// Requests, error ratio, p50, p95, p99; then one outcome ratio per outcome. Empty for
    /// the unknown version.
    window: Vec<Option<u32>>,
}

/// Stat ids of both versions of one service (and of requests no version served), and of its
/// gate.
#[derive(Clone)]
pub struct MetricIds {
    /// Stable, canary, unknown; each per class (`other` last).
    classes: [Vec<ClassIds>; 3],
    /// Counters per version, laid out by [`CounterLayout`]; and what is pending for each.
    counters: Vec<Option<u32>>,
    pending: RefCell<Vec<u32>>,
    layout: CounterLayout,
    gate_tripped: Option<u32>,
    gate_trips: Option<u32>,
    gate_state: Option<u32>,
    /// `canary_gate_evidence` per test of the comparison (none without `gate.compare`).
    evidence: [Option<u32>; 2],
    vm_memory: Option<u32>,
    vitals: Option<VitalsIds>,
    /// `canary_gate_fleet_pods` of stable and canary, with `gate.fleet`.
    fleet_pods: [Option<u32>; 2],
    /// Refused overrides (with tokens) and refused sticky cookies (with a key).
    refused: [Option<u32>; 2],
}

/// Where each counter sits in [`MetricIds::counters`]: per version, per class its requests, its
/// code classes and its outcomes; then the version's decisions by reason.
#[derive(Clone, Copy)]
struct CounterLayout {
    classes: usize,
    outcomes: usize,
}

impl CounterLayout {
    fn per_class(self) -> usize {
        1 + CODE_CLASSES.len() + self.outcomes
    }

    fn per_version(self) -> usize {
        self.classes * self.per_class() + Reason::ALL.len()
    }

    fn requests(self, version: usize, class: usize) -> usize {
        version * self.per_version() + class * self.per_class()
    }

    fn code_class(self, version: usize, class: usize, code_class: usize) -> usize {
        self.requests(version, class) + 1 + code_class
    }

    fn outcome(self, version: usize, class: usize, outcome: usize) -> usize {
        self.requests(version, class) + 1 + CODE_CLASSES.len() + outcome
    }

    fn decision(self, version: usize, reason: Reason) -> usize {
        version * self.per_version() + self.classes * self.per_class() + reason.index()
    }
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

/// Index of a version in per-version arrays: stable, canary, then unknown.
fn version_slot(version: Option<Version>) -> usize {
    version.map_or(2, Version::index)
}

impl MetricIds {
    /// Defines every series of `config`'s service, versions and classes; an observer's carry
    /// its own `revision` and its `direction`.
    #[inline(never)]
    pub fn define(stats: &impl Stats, config: &Config, revision: Option<&str>) -> Self {
        let layout = CounterLayout { classes: config.classes.len() + 1, outcomes: config.outcomes.len() };
        let direction = (config.role == Role::Observer).then_some(config.direction.as_str());
        let versions = [config.stable.as_str(), config.canary.as_str(), UNKNOWN_VERSION];
        let mut counters = vec![None; 3 * layout.per_version()];
        let counter = |name: String| stats.define_metric(MetricKind::Counter, &name);
        let gauge = |name: String| stats.define_metric(MetricKind::Gauge, &name);
        let classes = versions.map(|version| {
            let windowed = version != UNKNOWN_VERSION;
            let key =
                SeriesKey { service: &config.service, version, reporter: config.role.reporter(), revision, direction };
            Classifier::names(config)
                .map(|class| {
                    let gauges = WINDOW_GAUGES.iter().map(|m| class_series(m, key, class, None)).chain(
                        config
                            .outcomes
                            .iter()
                            .map(|o| class_series(names::WINDOW_OUTCOME_RATIO, key, class, Some(("outcome", &o.name)))),
                    );
                    ClassIds {
                        duration: stats
                            .define_metric(MetricKind::Histogram, &class_series(names::DURATION, key, class, None)),
                        window: if windowed { gauges.map(gauge).collect() } else { Vec::new() },
                    }
                })
                .collect::<Vec<_>>()
        });
        for (v, version) in versions.into_iter().enumerate() {
            let key =
                SeriesKey { service: &config.service, version, reporter: config.role.reporter(), revision, direction };
            let mut set = |slot: usize, name: String| {
                if let Some(id) = counters.get_mut(slot) {
                    *id = counter(name);
                }
            };
            for (c, class) in Classifier::names(config).enumerate() {
                set(layout.requests(v, c), class_series(names::REQUESTS, key, class, None));
                for (k, code) in CODE_CLASSES.iter().enumerate() {
                    set(
                        layout.code_class(v, c, k),
                        class_series(names::RESPONSES, key, class, Some(("code_class", code))),
                    );
                }
                for (o, outcome) in config.outcomes.iter().enumerate() {
                    set(
                        layout.outcome(v, c, o),
                        class_series(names::OUTCOMES, key, class, Some(("outcome", &outcome.name))),
                    );
                }
            }
            for reason in Reason::ALL {
                set(
                    layout.decision(v, reason),
                    format!("{}.reason.{}", series(names::DECISIONS, key), reason.as_str()),
                );
            }
        }
        let svc = config.service.as_str();
        MetricIds {
            classes,
            pending: RefCell::new(vec![0; counters.len()]),
            counters,
            layout,
            gate_tripped: stats.define_metric(MetricKind::Gauge, &service_series(names::GATE_TRIPPED, svc)),
            gate_trips: stats.define_metric(MetricKind::Counter, &service_series(names::GATE_TRIPS, svc)),
            gate_state: stats.define_metric(MetricKind::Gauge, &service_series(names::GATE_STATE, svc)),
            evidence: names::EVIDENCE_TESTS.map(|test| {
                let defined = match test {
                    "errors" => config.gate.compare.is_some(),
                    _ => config.gate.slow_us().is_some(),
                };
                let name = format!("{}.test.{test}", service_series(names::GATE_EVIDENCE, svc));
                defined.then(|| stats.define_metric(MetricKind::Gauge, &name)).flatten()
            }),
            vm_memory: stats.define_metric(MetricKind::Gauge, names::VM_MEMORY),
            vitals: config.vitals.as_ref().map(|_| VitalsIds::define(stats, config)),
            fleet_pods: Version::BOTH.map(|v| {
                let name = names::version_series(names::FLEET_PODS, svc, config.version_name(v));
                config.gate.fleet.and_then(|_| stats.define_metric(MetricKind::Gauge, &name))
            }),
            refused: [
                (names::OVERRIDE_REFUSED, !config.r#override.token_sha256.is_empty()),
                (names::COOKIE_REFUSED, config.sticky.key.is_some()),
            ]
            .map(|(name, defined)| {
                defined.then(|| stats.define_metric(MetricKind::Counter, &service_series(name, svc))).flatten()
            }),
        }
    }

    /// Counts a request's refused override and refused sticky cookie (rare: no batching).
    pub fn note_refused(&self, stats: &impl Stats, override_refused: bool, cookie_refused: bool) {
        for (id, refused) in self.refused.iter().zip([override_refused, cookie_refused]) {
            if refused {
                increment(stats, *id);
            }
        }
    }

    /// The beacon endpoint's stats, with `vitals`.
    pub fn vitals(&self) -> Option<&VitalsIds> {
        self.vitals.as_ref()
    }

    /// Adds the pending counts to the host counters (each VM, once a second).
    pub fn flush(&self, stats: &impl Stats) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else { return };
        for (count, id) in pending.iter_mut().zip(&self.counters) {
            if *count > 0 {
                if let Some(id) = id {
                    stats.add(*id, u64::from(*count));
                }
                *count = 0;
            }
        }
    }

    /// Counts one completed request of `version` (`None`: no version served it) in route
    /// class `class`, with its response `status` (0: none) and outcomes (bit `i`: outcome `i`).
    #[allow(clippy::too_many_arguments)]
    pub fn record_request(
        &self,
        stats: &impl Stats,
        version: Option<Version>,
        class: usize,
        reason: Option<Reason>,
        status: u64,
        millis: u64,
        outcomes: u8,
    ) {
        let v = version_slot(version);
        let Some(ids) = self.classes.get(v).and_then(|classes| classes.get(class)) else { return };
        record(stats, ids.duration, millis);
        let layout = self.layout;
        if let Ok(mut pending) = self.pending.try_borrow_mut() {
            let mut bump = |slot: usize| {
                if let Some(count) = pending.get_mut(slot) {
                    *count = count.saturating_add(1);
                }
            };
            bump(layout.requests(v, class));
            bump(layout.code_class(v, class, code_class(status)));
            if let Some(reason) = reason {
                bump(layout.decision(v, reason));
            }
            for o in (0..layout.outcomes).filter(|o| outcomes >> o & 1 == 1) {
                bump(layout.outcome(v, class, o));
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

    /// Publishes the comparison's evidence: `ln R` per test, ×1000, 0 while at or below 0.
    pub fn set_evidence(&self, stats: &impl Stats, log_statistic: &[Option<f64>; 2]) {
        for (id, log_r) in self.evidence.iter().zip(log_statistic) {
            if let Some(log_r) = log_r {
                // Saturating float-to-int conversion: NaN is 0.
                record(stats, *id, (log_r * 1000.0).round().max(0.0) as u64);
            }
        }
    }

    /// Publishes the pods heard from serving the stable revision and the canary one.
    pub fn set_fleet_pods(&self, stats: &impl Stats, pods: [usize; 2]) {
        for (id, pods) in self.fleet_pods.iter().zip(pods) {
            record(stats, *id, pods as u64);
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

    /// Publishes the merged window of `version` in route class `class`.
    pub fn set_window(&self, stats: &impl Stats, version: Version, class: usize, window: &WindowStats) {
        let Some(ids) = self.classes.get(version.index()).and_then(|classes| classes.get(class)) else { return };
        let values = [window.requests, window.error_ratio_ppm, window.p50_us, window.p95_us, window.p99_us]
            .into_iter()
            .chain((0..self.layout.outcomes).map(|o| window.outcome_ratio_ppm(o)));
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
            let class = if metric == names::DECISIONS { "" } else { ".class.other" };
            proxy.stat(&format!("{metric}.service.checkout.version.{version}.reporter.router{class}{extra}"))
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
            ids.record_request(&host, version, 0, reason, status, 3, 0);
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
