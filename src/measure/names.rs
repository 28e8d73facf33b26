//! Names of the host stats canary-gate defines. The proxy-wasm ABI has no labels, so labels
//! are encoded in the stat name as `.label.value` pairs after the metric name:
//!
//! `canary_responses_total.service.checkout.version.stable.reporter.router.class.api.code_class.5xx`
//!
//! The pairs come in a fixed order: `service`, `version`, `reporter`, then an observer's
//! `revision` and `direction`, then `class`, then the metric's own (`code_class`, `reason`,
//! `outcome`).
//!
//! Envoy's `stats_config.stats_tags` (see `envoy/*.yaml`) turn each pair into a Prometheus
//! label. Service and version names never contain `.`, so a pair cannot be misread.

/// Completed requests (counter).
pub const REQUESTS: &str = "canary_requests_total";
/// Completed requests by status class (counter, label `code_class`).
pub const RESPONSES: &str = "canary_responses_total";
/// Request start to end of response, in milliseconds (histogram).
pub const DURATION: &str = "canary_request_duration_milliseconds";
/// Routing decisions by reason (counter, label `reason`).
pub const DECISIONS: &str = "canary_route_decisions_total";
/// Completed requests by response outcome (counter, labels `class`, `outcome`).
pub const OUTCOMES: &str = "canary_outcomes_total";
/// Requests completed in the rolling window (gauge).
pub const WINDOW_REQUESTS: &str = "canary_window_requests";
/// 5xx share of the rolling window in parts per million (gauge).
pub const WINDOW_ERROR_RATIO: &str = "canary_window_error_ratio_ppm";
/// Rolling-window latency quantiles in microseconds (gauges).
pub const WINDOW_P50: &str = "canary_window_latency_p50_microseconds";
/// 95th percentile.
pub const WINDOW_P95: &str = "canary_window_latency_p95_microseconds";
/// 99th percentile.
pub const WINDOW_P99: &str = "canary_window_latency_p99_microseconds";
/// Share of the class's requests in the rolling window with an outcome, parts per million
/// (gauge, label `outcome`).
pub const WINDOW_OUTCOME_RATIO: &str = "canary_window_outcome_ratio_ppm";

/// 1 while the gate is tripped (gauge, label `service` only).
pub const GATE_TRIPPED: &str = "canary_gate_tripped";
/// Times the gate tripped (counter, label `service` only).
pub const GATE_TRIPS: &str = "canary_gate_trips_total";
/// 0 ok, 1 inconclusive, 2 breaching, 3 tripped (gauge, label `service` only).
pub const GATE_STATE: &str = "canary_gate_state";

/// The natural log of the gate comparison's test statistic, ×1000, 0 while at or below 0
/// (gauge, labels `service`, `test`).
pub const GATE_EVIDENCE: &str = "canary_gate_evidence";
/// Values of the `test` label of [`GATE_EVIDENCE`].
pub const EVIDENCE_TESTS: [&str; 2] = ["errors", "latency"];

/// Web vitals a page reported, per version (histograms): [`crate::measure::beacon::Vital`]
/// order. Times in milliseconds; CLS ×1000 as an integer (100 is a CLS of 0.1).
pub const WEB_VITALS: [&str; 5] = [
    "canary_web_vitals_lcp_milliseconds",
    "canary_web_vitals_inp_milliseconds",
    "canary_web_vitals_cls",
    "canary_web_vitals_fcp_milliseconds",
    "canary_web_vitals_ttfb_milliseconds",
];
/// Page events per version (counters): page views, JS errors, resource load errors.
pub const WEB_EVENTS: [&str; 3] =
    ["canary_web_page_views_total", "canary_web_js_errors_total", "canary_web_resource_errors_total"];
/// Rolling-window web vitals per version (gauges): P75 of LCP and INP in milliseconds, P75 of
/// CLS ×1000, JS errors per page view in parts per million, page views.
pub const WINDOW_WEB: [&str; 5] = [
    "canary_window_web_vitals_lcp_p75_milliseconds",
    "canary_window_web_vitals_inp_p75_milliseconds",
    "canary_window_web_vitals_cls_p75",
    "canary_window_web_js_error_ratio_ppm",
    "canary_window_web_page_views",
];
/// Override requests without a valid token, routed as if they had no override (counter, label
/// `service`; with `override.token_sha256`).
pub const OVERRIDE_REFUSED: &str = "canary_override_refused_total";
/// Sticky cookies without a valid MAC, ignored (counter, label `service`; with a sticky key).
pub const COOKIE_REFUSED: &str = "canary_sticky_cookie_refused_total";

/// Beacons refused or dropped (counter, labels `service`, `reason`).
pub const VITALS_REJECTED: &str = "canary_vitals_rejected_total";

/// 1 for the revision a router sees serving a version now, 0 for one it saw before (gauge,
/// labels `service`, `version`, `revision`).
pub const REVISION_INFO: &str = "canary_revision_info";

/// Pods whose fleet report a router's gate counts, per version (gauge, labels `service`,
/// `version`; routers with `gate.fleet`).
pub const FLEET_PODS: &str = "canary_gate_fleet_pods";

/// Largest linear memory of any canary-gate VM in the proxy, bytes (gauge, no labels).
pub const VM_MEMORY: &str = "canary_vm_memory_bytes";

/// Values of the `code_class` label: `status / 100 - 1` for an HTTP status, then `none` for a
/// request that got no status (the client went away, or the stream was reset, before a
/// response), so the classes always add up to the requests.
pub const CODE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The index into [`CODE_CLASSES`] of a response status (0: none).
pub fn code_class(status: u64) -> usize {
    if (100..600).contains(&status) {
        (status / 100 - 1) as usize
    } else {
        CODE_CLASSES.len() - 1
    }
}

/// `metric.service.S`, for per-service metrics.
pub fn service_series(metric: &str, service: &str) -> String {
    format!("{metric}.service.{service}")
}

/// The labels of a per-version series.
#[derive(Debug, Clone, Copy)]
pub struct SeriesKey<'a> {
    /// The `service` label.
    pub service: &'a str,
    /// The `version` label.
    pub version: &'a str,
    /// The `reporter` label: `router` or `observer`.
    pub reporter: &'a str,
    /// The `revision` label: an observer's own revision (routers have none).
    pub revision: Option<&'a str>,
    /// The `direction` label: an observer's `inbound` or `outbound` (routers have none).
    pub direction: Option<&'a str>,
}

/// `metric.service.S.version.V.reporter.R`, then `.revision.X` and `.direction.D` if the key
/// has them.
pub fn series(metric: &str, key: SeriesKey<'_>) -> String {
    let mut name = format!("{metric}.service.{}.version.{}.reporter.{}", key.service, key.version, key.reporter);
    for (label, value) in [("revision", key.revision), ("direction", key.direction)] {
        if let Some(value) = value {
            name.push_str(&format!(".{label}.{value}"));
        }
    }
    name
}

/// `series(...)` plus the `class` pair, then an optional pair of the metric's own.
pub fn class_series(metric: &str, key: SeriesKey<'_>, class: &str, extra: Option<(&str, &str)>) -> String {
    let base = format!("{}.class.{class}", series(metric, key));
    match extra {
        Some((label, value)) => format!("{base}.{label}.{value}"),
        None => base,
    }
}

/// `metric.service.S.version.V`, for series only a router reports and no class divides.
pub fn version_series(metric: &str, service: &str, version: &str) -> String {
    format!("{metric}.service.{service}.version.{version}")
}

/// `canary_revision_info.service.S.version.V.revision.X`.
pub fn revision_info(service: &str, version: &str, revision: &str) -> String {
    format!("{REVISION_INFO}.service.{service}.version.{version}.revision.{revision}")
}

/// `series(...)` plus one more `.label.value` pair.
pub fn series_with(metric: &str, key: SeriesKey<'_>, label: &str, value: &str) -> String {
    format!("{}.{label}.{value}", series(metric, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn names_carry_labels_as_pairs() {
        let key = SeriesKey {
            service: "corp-cockpit",
            version: "canary",
            reporter: "router",
            revision: None,
            direction: None,
        };
        assert_eq!(series(REQUESTS, key), "canary_requests_total.service.corp-cockpit.version.canary.reporter.router");
        assert_eq!(
            class_series(OUTCOMES, key, "api", Some(("outcome", "cache_hit"))),
            "canary_outcomes_total.service.corp-cockpit.version.canary.reporter.router.class.api.outcome.cache_hit"
        );
        assert_eq!(service_series(GATE_TRIPPED, "impact-in"), "canary_gate_tripped.service.impact-in");
        let key = SeriesKey {
            service: "a-b",
            version: "v-2",
            reporter: "observer",
            revision: Some("5f7d9c8b4"),
            direction: Some("outbound"),
        };
        assert_eq!(
            class_series(RESPONSES, key, "other", Some(("code_class", "5xx"))),
            "canary_responses_total.service.a-b.version.v-2.reporter.observer.revision.5f7d9c8b4.direction.outbound\
             .class.other.code_class.5xx"
        );
        assert_eq!(
            revision_info("a-b", "canary", "6c4b8d7f9"),
            "canary_revision_info.service.a-b.version.canary.revision.6c4b8d7f9"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn status_classes() {
        let class = |status| CODE_CLASSES[code_class(status)];
        assert_eq!(class(200), "2xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(101), "1xx");
        assert_eq!(class(599), "5xx");
        assert_eq!(class(0), "none");
        assert_eq!(class(600), "none");
        assert_eq!(class(99), "none");
    }
}
