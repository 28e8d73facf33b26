//! Plugin configuration: the JSON given as the Envoy wasm filter's `configuration` or the Istio
//! WasmPlugin's `pluginConfig`, parsed and validated once at configure time.
//!
//! The types mirror the JSON: one struct per JSON object, each with a `Default` that is the
//! documented default (written here once). Every refusal is a [`ConfigError`] naming the field
//! (as a dotted path) and the reason.

mod check;
mod classes;
mod decimal;
mod grpc;
mod json;
mod parse;
mod value;
mod vitals;

use crate::model::Version;
use std::fmt;

pub use check::is_token_byte;
pub use classes::{ClassConfig, HeaderMatch, OutcomeConfig, MAX_CLASSES, MAX_MATCH_ENTRIES, MAX_OUTCOMES, OTHER_CLASS};
pub use decimal::{parse_decimal, percent_to_bp};
pub use grpc::{GrpcConfig, ENVOY_HTTP_STATUS, GRPC_CODE_NAMES, UNKNOWN_CODE};
pub use value::{parse as parse_json, Value as JsonValue};
pub use vitals::{VitalsConfig, VitalsLimits, MAX_BEACONS_PER_SECOND, MAX_BEACON_BYTES};

/// Basis points in 100%: weights are kept as integers in `0..=10_000`.
pub const FULL_WEIGHT_BP: u16 = 10_000;
/// Longest value a browser keeps for `Max-Age` (400 days).
pub const MAX_COOKIE_AGE_S: u32 = 400 * 24 * 3600;
/// Upper bound on `split.hash_key` entries: each costs a header read per request.
pub const MAX_HASH_KEYS: usize = 8;
/// Longest rolling window, in one-second slots: bounds the window's memory.
pub const MAX_WINDOW_S: u32 = 600;
/// Upper bound on `hosts` entries.
pub const MAX_HOSTS: usize = 32;
/// Most override token digests (`override.token_sha256`).
pub const MAX_OVERRIDE_TOKENS: usize = 16;
/// Fewest bytes of a sticky cookie key: 128 bits.
pub const MIN_STICKY_KEY_BYTES: usize = 16;
/// Longest latency threshold: 10 minutes.
pub const MAX_LATENCY_MS: u64 = 600_000;

/// A refused configuration: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `split.canary_percent`.
    pub field: String,
    /// Human-readable reason.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn refuse(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), reason: reason.into() }
}

/// What the filter does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Chooses (or pins) the version and tags the request.
    #[default]
    Router,
    /// Records metrics for inbound traffic only; never touches routing.
    Observer,
}

impl Role {
    /// The `reporter` metric label of this role.
    pub fn reporter(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Observer => "observer",
        }
    }
}

/// Who chooses the version of a request that carries no override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitMode {
    /// canary-gate buckets the request and sets the version header.
    #[default]
    Filter,
    /// The route's weighted clusters choose; canary-gate learns and pins the choice.
    Mesh,
}

/// One place a per-user hash key may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (lower-case name).
    Header(String),
    /// A cookie of the `cookie` request header.
    Cookie(String),
}

/// The validated configuration the filter runs with (the top-level JSON object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Service name, `[a-z0-9-]{1,63}`; the `service` metric label. Required.
    pub service: String,
    /// Router or observer.
    pub role: Role,
    /// Header carrying the chosen version to the upstream and the client.
    pub version_header: String,
    /// Header carrying the reason of the decision to the upstream and the client.
    pub reason_header: String,
    /// Name of the stable version.
    pub stable: String,
    /// Name of the canary version.
    pub canary: String,
    /// How requests are split between the versions.
    pub split: SplitConfig,
    /// The tester's override header.
    pub r#override: OverrideConfig,
    /// The sticky cookie.
    pub sticky: StickyConfig,
    /// The rolling window of the window gauges.
    pub metrics: MetricsConfig,
    /// Node metadata label naming the proxy's own version (observer role). Istio copies pod
    /// labels once, at proxy start: a label Argo Rollouts changes in place goes stale.
    pub version_label: String,
    /// Node metadata label naming the proxy's own revision (observer role): the `revision`
    /// label of its series and the value of `revision_header`.
    pub revision_label: String,
    /// Response header carrying the serving revision: set by observers, read by mesh-mode
    /// routers to learn which revision each version's subset serves.
    pub revision_header: String,
    /// Path an observer answers itself with its revision (a router's probe of a subset).
    pub revision_probe_path: String,
    /// The SLO gate.
    pub gate: GateConfig,
    /// Request authorities this instance handles (empty: all): lower-case host names or
    /// `*.suffix` wildcards.
    pub hosts: Vec<String>,
    /// Also write version and reason to filter state for the access log (two host calls per
    /// request; the response headers carry the same values at no extra cost).
    pub filter_state: bool,
    /// Route classes, first match wins; a request matching none is class `other`.
    pub classes: Vec<ClassConfig>,
    /// Named classifications of a response by a response header.
    pub outcomes: Vec<OutcomeConfig>,
    /// Observer role: `inbound` (requests to this pod) or `outbound` (this pod's calls), the
    /// `direction` metric label.
    pub direction: String,
    /// The web-vitals beacon endpoint (router role), if set.
    pub vitals: Option<VitalsConfig>,
    /// How gRPC responses count: which status codes are errors.
    pub grpc: GrpcConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: String::new(),
            role: Role::default(),
            version_header: "x-canary-version".into(),
            reason_header: "x-canary-reason".into(),
            stable: "stable".into(),
            canary: "canary".into(),
            split: SplitConfig::default(),
            r#override: OverrideConfig::default(),
            sticky: StickyConfig::default(),
            metrics: MetricsConfig::default(),
            version_label: "version".into(),
            revision_label: "rollouts-pod-template-hash".into(),
            revision_header: "x-canary-revision".into(),
            revision_probe_path: "/__canary/revision".into(),
            gate: GateConfig::default(),
            hosts: Vec::new(),
            filter_state: false,
            classes: Vec::new(),
            outcomes: Vec::new(),
            direction: "inbound".into(),
            vitals: None,
            grpc: GrpcConfig::default(),
        }
    }
}

/// `split`: who chooses the version and how users are bucketed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConfig {
    /// Who chooses.
    pub mode: SplitMode,
    /// Canary weight in basis points (`0..=10_000`, from `canary_percent`); filter mode only.
    pub canary_bp: u16,
    /// Hash key sources, first present wins.
    pub hash_key: Vec<KeySource>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            mode: SplitMode::default(),
            canary_bp: 1_000,
            hash_key: vec![KeySource::Header("x-user-id".into()), KeySource::Cookie("session".into())],
        }
    }
}

/// `override`: the header a tester sets to force a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideConfig {
    /// Header whose value, when it names a version, forces that version.
    pub header: String,
    /// Header carrying a tester's token; removed from every request when tokens are set.
    pub token_header: String,
    /// SHA-256 digests of the tokens an override needs (`token_sha256`); empty: none needed.
    pub token_sha256: Vec<[u8; 32]>,
}

impl Default for OverrideConfig {
    fn default() -> Self {
        OverrideConfig { header: "x-canary".into(), token_header: "x-canary-token".into(), token_sha256: Vec::new() }
    }
}

/// Key material that never shows in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// `sticky`: the cookie that keeps a user on the version it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    /// Cookie name.
    pub cookie: String,
    /// `Max-Age` in seconds.
    pub max_age_s: u32,
    /// Whether the cookie carries `Secure`.
    pub secure: bool,
    /// The key cookies are signed with (`key`, or the value of the variable `key_env` names,
    /// once [`Config::resolve_key_env`] read it); none: cookies carry no MAC.
    pub key: Option<Secret>,
    /// The environment variable holding the key.
    pub key_env: Option<String>,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig { cookie: "canary_bucket".into(), max_age_s: 86_400, secure: false, key: None, key_env: None }
    }
}

/// `metrics`: the window gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Rolling window length of the window gauges, in seconds.
    pub window_s: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { window_s: 60 }
    }
}

/// `gate`: validated SLO thresholds. Absent thresholds are not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Evaluation window in seconds.
    pub window_s: u32,
    /// The thresholds on the whole service's canary traffic.
    pub limits: Limits,
    /// Thresholds on one route class's canary traffic each (`gate.classes`).
    pub classes: Vec<ClassGate>,
    /// Breached evaluations in a row that trip the gate.
    pub consecutive: u32,
    /// Evaluate, export and log, but never reroute.
    pub dry_run: bool,
    /// Changing this value clears a latched trip.
    pub rearm: u64,
    /// The sequential canary-vs-stable comparison (`gate.compare`), if configured.
    pub compare: Option<CompareConfig>,
    /// Period of the merge and of the sequential comparison, in milliseconds; workers read the
    /// verdict at the same period.
    pub eval_ms: u32,
    /// Limits on the canary's web vitals (`gate.vitals`), if set.
    pub vitals: Option<VitalsLimits>,
    /// Judge the whole fleet's counts from the observers' reports (`gate.fleet`), if set.
    pub fleet: Option<FleetConfig>,
}

/// `gate.fleet`: the gate judges the counts every inbound observer of the service reports, so
/// every router judges all callers' traffic, not its own share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetConfig {
    /// Pods whose latest report is kept; reports of further pods are ignored.
    pub max_pods: u32,
    /// A pod not heard from for this long is dropped, in milliseconds.
    pub max_age_ms: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { max_pods: 64, max_age_ms: 5_000 }
    }
}

/// The largest `gate.fleet.max_pods`.
pub const MAX_FLEET_PODS: u64 = 1024;
/// The range of `gate.fleet.max_age_ms`.
pub const FLEET_AGE_MS_RANGE: (u64, u64) = (1_000, 60_000);

/// `gate.compare`: the sequential test that the canary's share of bad responses exceeds its
/// share of traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareConfig {
    /// Bound on the probability of a false trip per canary revision, parts per million.
    pub alpha_ppm: u64,
    /// The smallest canary-minus-stable bad ratio worth a trip, parts per million.
    pub min_effect_ppm: u64,
    /// A response slower than this (µs) is bad in the latency test; `None`: no latency test.
    pub slow_us: Option<u64>,
    /// Distinct users the canary's bad responses in the gate window must come from.
    pub min_users: u32,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig { alpha_ppm: 1_000, min_effect_ppm: 10_000, slow_us: None, min_users: 3 }
    }
}

/// The range of `gate.eval_ms`.
pub const EVAL_MS_RANGE: (u64, u64) = (100, 1_000);

/// The largest `gate.compare.min_users`: the users sketch has 64 bits.
pub const MAX_MIN_USERS: u64 = 32;

/// Thresholds on a set of canary requests (the whole service's, or one class's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Below this many canary requests in the window these limits are inconclusive.
    pub min_requests: u64,
    /// Canary 5xx ratio limit, parts per million (from `max_error_ratio`).
    pub max_error_ratio_ppm: Option<u64>,
    /// Canary p95 limit, microseconds (from `max_p95_ms`).
    pub max_p95_us: Option<u64>,
    /// Canary p99 limit, microseconds (from `max_p99_ms`).
    pub max_p99_us: Option<u64>,
    /// Limit on canary minus stable 5xx ratio, parts per million.
    pub max_error_ratio_over_stable_ppm: Option<u64>,
    /// Bounds on the share of canary requests with an outcome.
    pub outcomes: Vec<OutcomeLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_requests: 20,
            max_error_ratio_ppm: None,
            max_p95_us: None,
            max_p99_us: None,
            max_error_ratio_over_stable_ppm: None,
            outcomes: Vec::new(),
        }
    }
}

impl Limits {
    /// Whether any threshold is set.
    pub fn has_thresholds(&self) -> bool {
        self.max_error_ratio_ppm.is_some()
            || self.max_p95_us.is_some()
            || self.max_p99_us.is_some()
            || self.max_error_ratio_over_stable_ppm.is_some()
            || !self.outcomes.is_empty()
    }
}

/// Bounds on the share of canary requests with outcome `outcome` (`min_outcome_ratio`,
/// `max_outcome_ratio`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeLimit {
    /// The outcome's index in `outcomes`.
    pub outcome: usize,
    /// Its name.
    pub name: String,
    /// Lowest share, parts per million.
    pub min_ppm: Option<u64>,
    /// Highest share, parts per million.
    pub max_ppm: Option<u64>,
}

/// `gate.classes.NAME`: thresholds on one route class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassGate {
    /// The class's index in `classes` (`classes.len()` for `other`).
    pub class: usize,
    /// Its name.
    pub name: String,
    /// Its thresholds.
    pub limits: Limits,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            window_s: 5,
            limits: Limits::default(),
            classes: Vec::new(),
            consecutive: 2,
            dry_run: false,
            rearm: 0,
            compare: None,
            eval_ms: 250,
            vitals: None,
            fleet: None,
        }
    }
}

impl GateConfig {
    /// Whether any threshold is set, for the service or a class, or the comparison.
    pub fn has_thresholds(&self) -> bool {
        self.has_limits() || self.compare.is_some()
    }

    /// Whether any fixed threshold is set, for the service or a class.
    pub fn has_limits(&self) -> bool {
        self.limits.has_thresholds() || self.classes.iter().any(|c| c.limits.has_thresholds()) || self.vitals.is_some()
    }

    /// The latency test's limit, if the comparison has one.
    pub fn slow_us(&self) -> Option<u64> {
        self.compare.as_ref().and_then(|c| c.slow_us)
    }
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        parse::config(bytes)
    }

    /// Reads the sticky cookie key from the environment variable `sticky.key_env` names
    /// (`lookup` answers a variable's value); refused when it is unset or short.
    pub fn resolve_key_env(&mut self, lookup: impl FnOnce(&str) -> Option<String>) -> Result<(), ConfigError> {
        let Some(name) = &self.sticky.key_env else { return Ok(()) };
        let key = lookup(name).ok_or_else(|| {
            refuse(
                "sticky.key_env",
                format!("environment variable `{name}` is not set in the VM (Envoy `vm_config.environment_variables`, Istio `vmConfig.env`)"),
            )
        })?;
        parse::sticky_key("sticky.key_env", key.as_bytes())?;
        self.sticky.key = Some(Secret(key.into_bytes()));
        Ok(())
    }

    /// What this instance measures, as the name of the cross-VM state it shares with the same
    /// instance in the proxy's other VMs: `router`, `observer`, or `observer-outbound`. An
    /// Istio sidecar's inbound and outbound observers of one service share a VM, and their
    /// windows must stay apart.
    pub fn measures(&self) -> &'static str {
        match (self.role, self.direction.as_str()) {
            (Role::Observer, "outbound") => "observer-outbound",
            (role, _) => role.reporter(),
        }
    }

    /// The name of `version`.
    pub fn version_name(&self, version: Version) -> &str {
        match version {
            Version::Stable => &self.stable,
            Version::Canary => &self.canary,
        }
    }

    /// The period of the cross-VM merge and of the gate's evaluation: `gate.eval_ms` for a
    /// router with a gate; a second for a router without one, and for an observer (it has no
    /// gate): nothing to decide faster, and a quarter of the idle ticks.
    pub fn eval_period_ms(&self) -> u32 {
        match self.role {
            Role::Router if self.gate.has_thresholds() => self.gate.eval_ms,
            Role::Router | Role::Observer => 1_000,
        }
    }

    /// The length of the merged window: long enough for the gauges and the gate.
    pub fn merged_window_s(&self) -> u32 {
        self.metrics.window_s.max(self.gate.window_s)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn err(json: &str) -> ConfigError {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn defaults_match_the_documented_ones() {
        let c = Config::parse(br#"{"service":"checkout"}"#).unwrap();
        assert_eq!(c.role, Role::Router);
        assert_eq!(c.version_header, "x-canary-version");
        assert_eq!(c.reason_header, "x-canary-reason");
        assert_eq!((c.stable.as_str(), c.canary.as_str()), ("stable", "canary"));
        assert_eq!(c.split.mode, SplitMode::Filter);
        assert_eq!(c.split.canary_bp, 1000);
        assert_eq!(c.split.hash_key, vec![KeySource::Header("x-user-id".into()), KeySource::Cookie("session".into())]);
        assert_eq!(c.r#override.header, "x-canary");
        assert_eq!((c.sticky.cookie.as_str(), c.sticky.max_age_s, c.sticky.secure), ("canary_bucket", 86_400, false));
        assert_eq!((c.metrics.window_s, c.version_label.as_str()), (60, "version"));
        assert_eq!(
            (c.revision_label.as_str(), c.revision_header.as_str(), c.revision_probe_path.as_str()),
            ("rollouts-pod-template-hash", "x-canary-revision", "/__canary/revision")
        );
        assert!(c.hosts.is_empty());
        assert_eq!(c.gate, GateConfig::default());
        assert_eq!((c.gate.compare.as_ref(), c.gate.eval_ms, c.eval_period_ms()), (None, 250, 1_000), "no gate");
        assert!(!c.gate.has_thresholds() && c.gate.slow_us().is_none());
        assert!(!c.filter_state);
        assert!(Config::parse(br#"{"service":"a","filter_state":true}"#).unwrap().filter_state);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_empty_compare_is_the_documented_default() {
        assert_eq!(
            CompareConfig::default(),
            CompareConfig { alpha_ppm: 1_000, min_effect_ppm: 10_000, slow_us: None, min_users: 3 }
        );
        let g = Config::parse(br#"{"service":"a","gate":{"compare":{}}}"#).unwrap().gate;
        assert_eq!(g.compare, Some(CompareConfig::default()));
        assert_eq!(g, GateConfig { compare: Some(CompareConfig::default()), ..GateConfig::default() });
        // The comparison is a threshold of its own (an observer may not have it), not a fixed limit.
        assert!(g.has_thresholds() && !g.has_limits());
        assert_eq!(g.slow_us(), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn compare_and_eval_ms_parse_exactly() {
        let c = Config::parse(
            br#"{"service":"a","gate":{"eval_ms":100,
                "compare":{"alpha":0.000001,"min_effect":0.025,"slow_ms":250.125,"min_users":32}}}"#,
        )
        .unwrap();
        let expected = CompareConfig { alpha_ppm: 1, min_effect_ppm: 25_000, slow_us: Some(250_125), min_users: 32 };
        assert_eq!((c.gate.eval_ms, c.eval_period_ms()), (100, 100));
        assert_eq!(c.gate.compare, Some(expected));
        assert_eq!(c.gate.slow_us(), Some(250_125));
        // The other ends of each range; a fixed limit alongside is kept apart.
        let c = Config::parse(
            br#"{"service":"a","gate":{"eval_ms":1000,"max_p95_ms":300,
                "compare":{"alpha":0.1,"min_effect":0,"slow_ms":600000,"min_users":1}}}"#,
        )
        .unwrap();
        let expected =
            CompareConfig { alpha_ppm: 100_000, min_effect_ppm: 0, slow_us: Some(600_000_000), min_users: 1 };
        assert_eq!((c.gate.eval_ms, c.gate.compare.as_ref()), (1_000, Some(&expected)));
        assert_eq!(c.gate.limits.max_p95_us, Some(300_000));
        assert!(c.gate.has_limits() && c.gate.has_thresholds());
        // Each field alone leaves the others at their defaults.
        let g = Config::parse(br#"{"service":"a","gate":{"compare":{"min_effect":0.999999,"slow_ms":0.001}}}"#)
            .unwrap()
            .gate;
        let expected = CompareConfig { min_effect_ppm: 999_999, slow_us: Some(1), ..CompareConfig::default() };
        assert_eq!((g.eval_ms, g.compare), (250, Some(expected)));
        // An observer merges once a second whatever `gate.eval_ms` says (it has no gate).
        let observer = Config::parse(br#"{"service":"a","role":"observer","gate":{"eval_ms":500}}"#).unwrap();
        assert_eq!((observer.gate.eval_ms, observer.eval_period_ms()), (500, 1_000));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn gate_thresholds_parse_exactly() {
        let c = Config::parse(
            br#"{"service":"a","gate":{"window_s":10,"min_requests":50,"max_error_ratio":0.001,"max_p95_ms":500,
                "max_p99_ms":1000.5,"max_error_ratio_over_stable":0.0025,"consecutive":3,"dry_run":true,"rearm":7}}"#,
        )
        .unwrap();
        let g = c.gate;
        assert_eq!((g.window_s, g.limits.min_requests, g.consecutive, g.dry_run, g.rearm), (10, 50, 3, true, 7));
        assert_eq!(g.limits.max_error_ratio_ppm, Some(1_000));
        assert_eq!((g.limits.max_p95_us, g.limits.max_p99_us), (Some(500_000), Some(1_000_500)));
        assert_eq!(g.limits.max_error_ratio_over_stable_ppm, Some(2_500));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn full_config_is_accepted() {
        let c = Config::parse(
            br#"{"service":"corp-cockpit","role":"router","version_header":"x-v","stable":"v1","canary":"v2",
                "split":{"mode":"mesh","canary_percent":12.34,"hash_key":[{"cookie":"sid"}]},
                "override":{"header":"x-force"},"sticky":{"cookie":"pin","max_age_s":60,"secure":true}}"#,
        )
        .unwrap();
        assert_eq!(c.split.canary_bp, 1234);
        assert_eq!(c.split.mode, SplitMode::Mesh);
        assert_eq!(c.split.hash_key, vec![KeySource::Cookie("sid".into())]);
        assert!(c.sticky.secure);
        assert_eq!(
            (c.sticky.cookie.as_str(), c.sticky.max_age_s, c.r#override.header.as_str()),
            ("pin", 60, "x-force")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fleet_takes_its_defaults_and_its_limits() {
        let parse = |json: &str| Config::parse(json.as_bytes()).unwrap().gate.fleet;
        let mesh = r#"{"service":"a","split":{"mode":"mesh"},"gate":{"compare":{}"#;
        assert_eq!(parse(&format!("{mesh}}}}}")), None);
        assert_eq!(parse(&format!(r#"{mesh},"fleet":{{}}}}}}"#)), Some(FleetConfig::default()));
        assert_eq!(
            parse(&format!(r#"{mesh},"fleet":{{"max_pods":1024,"max_age_ms":60000}}}}}}"#)),
            Some(FleetConfig { max_pods: 1024, max_age_ms: 60_000 })
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_configurations_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{}"#, "(root)", "missing field `service`"),
            (r#"{"service":"Checkout"}"#, "service", "[a-z0-9-]"),
            (r#"{"service":""}"#, "service", "[a-z0-9-]"),
            (r#"{"service":"a","colour":1}"#, "colour", "unknown field"),
            (r#"{"service":"a","role":"boss"}"#, "role", "unknown variant"),
            (r#"{"service":"a","split":{"canary_percent":101}}"#, "split.canary_percent", "between 0 and 100"),
            (r#"{"service":"a","split":{"canary_percent":-1}}"#, "split.canary_percent", "negative"),
            (r#"{"service":"a","split":{"canary_percent":10.005}}"#, "split.canary_percent", "2 decimals"),
            (r#"{"service":"a","split":{"canary_percent":"10"}}"#, "split.canary_percent", "invalid type"),
            (r#"{"service":"a","split":{"mode":"random"}}"#, "split.mode", "unknown variant"),
            (
                r#"{"service":"a","split":{"hash_key":[{"header":"x","cookie":"y"}]}}"#,
                "split.hash_key[0]",
                "exactly one",
            ),
            (r#"{"service":"a","split":{"hash_key":[{}]}}"#, "split.hash_key[0]", "exactly one"),
            (r#"{"service":"a","split":{"hash_key":[{"header":"X-User"}]}}"#, "split.hash_key[0].header", "lower-case"),
            (r#"{"service":"a","split":{"hash_key":[{"query":"u"}]}}"#, "split.hash_key[0].query", "unknown field"),
            (r#"{"service":"a","stable":"v 1"}"#, "stable", "[A-Za-z0-9_-]"),
            (r#"{"service":"a","canary":"stable"}"#, "canary", "differ"),
            (r#"{"service":"a","canary":"unknown"}"#, "canary", "no version served"),
            (r#"{"service":"a","version_header":":path"}"#, "version_header", "header name"),
            (r#"{"service":"a","override":{"header":""}}"#, "override.header", "header name"),
            (r#"{"service":"a","override":{"header":"x-canary-version"}}"#, "override.header", "must differ"),
            (r#"{"service":"a","reason_header":"x-r","override":{"header":"x-r"}}"#, "override.header", "must differ"),
            (r#"{"service":"a","override":{"token_header":"x-canary"}}"#, "override.token_header", "differ"),
            (r#"{"service":"a","override":{"token_header":"x-canary-reason"}}"#, "override.token_header", "differ"),
            (r#"{"service":"a","override":{"token_sha256":[]}}"#, "override.token_sha256", "1 to 16 digests"),
            (r#"{"service":"a","override":{"token_sha256":["abc"]}}"#, "override.token_sha256[0]", "64 lower-case hex"),
            (r#"{"service":"a","override":{"token_sha256":[1]}}"#, "override.token_sha256[0]", "invalid type"),
            (r#"{"service":"a","sticky":{"key":"short"}}"#, "sticky.key", "at least 16 bytes"),
            (r#"{"service":"a","sticky":{"key_env":"1X"}}"#, "sticky.key_env", "environment variable name"),
            (r#"{"service":"a","sticky":{"key_env":"K","key":"0123456789abcdef"}}"#, "sticky.key_env", "not both"),
            (r#"{"service":"a","sticky":{"max_age_s":0}}"#, "sticky.max_age_s", "1..="),
            (r#"{"service":"a","sticky":{"max_age_s":-5}}"#, "sticky.max_age_s", "invalid value"),
            (r#"{"service":"a","sticky":{"cookie":"a;b"}}"#, "sticky.cookie", "token"),
            (r#"{"service":"a","sticky":{"secure":"yes"}}"#, "sticky.secure", "invalid type"),
            (r#"{"service":"a","filter_state":1}"#, "filter_state", "invalid type"),
            (r#"not json"#, "(root)", "expected"),
            (r#"{"service":"a","metrics":{"window_s":0}}"#, "metrics.window_s", "1..="),
            (r#"{"service":"a","metrics":{"window_s":601}}"#, "metrics.window_s", "1..="),
            (r#"{"service":"a","metrics":{"buckets":[1]}}"#, "metrics.buckets", "unknown field"),
            (r#"{"service":"a","version_label":"app version"}"#, "version_label", "label name"),
            (r#"{"service":"a","revision_label":""}"#, "revision_label", "label name"),
            (r#"{"service":"a","revision_header":"x-canary-version"}"#, "revision_header", "must differ"),
            (r#"{"service":"a","revision_header":"x-canary"}"#, "revision_header", "must differ"),
            (r#"{"service":"a","revision_header":"X-Rev"}"#, "revision_header", "header name"),
            (r#"{"service":"a","revision_probe_path":"health"}"#, "revision_probe_path", "starts with `/`"),
            (r#"{"service":"a","revision_probe_path":"/a?b"}"#, "revision_probe_path", "no query"),
            (r#"{"service":"a","gate":{"max_error_ratio":1.5}}"#, "gate.max_error_ratio", "between 0 and 1"),
            (r#"{"service":"a","gate":{"max_error_ratio":0.0000001}}"#, "gate.max_error_ratio", "6 decimals"),
            (r#"{"service":"a","gate":{"max_p95_ms":0}}"#, "gate.max_p95_ms", "(0, 600000]"),
            (r#"{"service":"a","gate":{"max_p99_ms":"1s"}}"#, "gate.max_p99_ms", "invalid type"),
            (r#"{"service":"a","gate":{"consecutive":0}}"#, "gate.consecutive", "1..=600"),
            (r#"{"service":"a","gate":{"window_s":601}}"#, "gate.window_s", "1..=600"),
            (r#"{"service":"a","gate":{"min_requests":0}}"#, "gate.min_requests", "1..="),
            (r#"{"service":"a","gate":{"dry_run":1}}"#, "gate.dry_run", "invalid type"),
            (r#"{"service":"a","gate":{"max_error_rate":0.1}}"#, "gate.max_error_rate", "unknown field"),
            (r#"{"service":"a","role":"observer","gate":{"max_p95_ms":100}}"#, "gate", "router role only"),
            (r#"{"service":"a","gate":{"eval_ms":99}}"#, "gate.eval_ms", "must be in 100..=1000, got 99"),
            (r#"{"service":"a","split":{"mode":"mesh"},"gate":{"fleet":{}}}"#, "gate.fleet", "judges nothing"),
            (r#"{"service":"a","gate":{"compare":{},"fleet":{}}}"#, "gate.fleet", "mesh-mode routers"),
            (r#"{"service":"a","role":"observer","gate":{"fleet":{}}}"#, "gate.fleet", "router role only"),
            (
                r#"{"service":"a","split":{"mode":"mesh"},"gate":{"compare":{},"fleet":{"max_pods":0}}}"#,
                "gate.fleet.max_pods",
                "must be in 1..=1024, got 0",
            ),
            (
                r#"{"service":"a","split":{"mode":"mesh"},"gate":{"compare":{},"fleet":{"max_age_ms":999}}}"#,
                "gate.fleet.max_age_ms",
                "must be in 1000..=60000 ms, got 999",
            ),
            (
                r#"{"service":"a","split":{"mode":"mesh"},"gate":{"compare":{},"fleet":{"max_pod":2}}}"#,
                "gate.fleet.max_pod",
                "unknown field",
            ),
            (r#"{"service":"a","gate":{"eval_ms":1001}}"#, "gate.eval_ms", "must be in 100..=1000, got 1001"),
            (r#"{"service":"a","gate":{"eval_ms":250.5}}"#, "gate.eval_ms", "invalid value"),
            (r#"{"service":"a","gate":{"compare":{"alpha":0}}}"#, "gate.compare.alpha", "[0.000001, 0.1], got 0"),
            (r#"{"service":"a","gate":{"compare":{"alpha":0.2}}}"#, "gate.compare.alpha", "[0.000001, 0.1], got 0.2"),
            (r#"{"service":"a","gate":{"compare":{"alpha":0.0000001}}}"#, "gate.compare.alpha", "[0.000001, 0.1]"),
            (r#"{"service":"a","gate":{"compare":{"alpha":1.5}}}"#, "gate.compare.alpha", "[0.000001, 0.1], got 1.5"),
            (r#"{"service":"a","gate":{"compare":{"min_effect":1}}}"#, "gate.compare.min_effect", "below 1"),
            (r#"{"service":"a","gate":{"compare":{"alpha":"0.01"}}}"#, "gate.compare.alpha", "invalid type"),
            (r#"{"service":"a","gate":{"compare":{"min_effect":1.5}}}"#, "gate.compare.min_effect", "between 0 and 1"),
            (r#"{"service":"a","gate":{"compare":{"min_effect":-0.1}}}"#, "gate.compare.min_effect", "negative"),
            (r#"{"service":"a","gate":{"compare":{"slow_ms":0}}}"#, "gate.compare.slow_ms", "(0, 600000] ms, got 0"),
            (r#"{"service":"a","gate":{"compare":{"slow_ms":600000.001}}}"#, "gate.compare.slow_ms", "(0, 600000]"),
            (r#"{"service":"a","gate":{"compare":{"slow_ms":0.0005}}}"#, "gate.compare.slow_ms", "3 decimals"),
            (r#"{"service":"a","gate":{"compare":{"min_users":0}}}"#, "gate.compare.min_users", "1..=32, got 0"),
            (r#"{"service":"a","gate":{"compare":{"min_users":33}}}"#, "gate.compare.min_users", "1..=32, got 33"),
            (r#"{"service":"a","gate":{"compare":{"beta":1}}}"#, "gate.compare.beta", "unknown field `beta`"),
            (r#"{"service":"a","gate":{"compare":true}}"#, "gate.compare", "invalid type"),
            (r#"{"service":"a","gate":{"compare":{},"compare":{}}}"#, "gate.compare", "duplicate field `compare`"),
            (
                r#"{"service":"a","gate":{"classes":{"other":{"compare":{}}}}}"#,
                "gate.classes.other.compare",
                "unknown field",
            ),
            (r#"{"service":"a","role":"observer","gate":{"compare":{}}}"#, "gate", "router role only"),
            (r#"{"service":"a","hosts":["Shop.example.com"]}"#, "hosts[0]", "lower-case host"),
            (r#"{"service":"a","hosts":["a.b","*"]}"#, "hosts[1]", "lower-case host"),
            (r#"{"service":"a","hosts":["."]}"#, "hosts[0]", "lower-case host"),
            (r#"{"service":"a","hosts":["a..b"]}"#, "hosts[0]", "lower-case host"),
            (r#"{"service":"a","hosts":["*.b.."]}"#, "hosts[0]", "lower-case host"),
            (r#"{"service":"a","hosts":"a.b"}"#, "hosts", "invalid type"),
            (r#"{"service":"checkout","service":"other"}"#, "service", "duplicate field `service`"),
            (r#"{"service":"a","split":{"mode":"mesh","mode":"filter"}}"#, "split.mode", "duplicate field `mode`"),
            (
                r#"{"service":"a","split":{"hash_key":[{"header":"x-a"},{"cookie":"s","cookie":"t"}]}}"#,
                "split.hash_key[1].cookie",
                "duplicate",
            ),
            (r#"{"service":"a","gate":{},"gate":{}}"#, "gate", "duplicate field `gate`"),
            (
                r#"{"service":"a","sticky":{"cookie":"session"}}"#,
                "sticky.cookie",
                "`split.hash_key[1].cookie` (by default)",
            ),
            (
                r#"{"service":"a","split":{"hash_key":[{"cookie":"sid"}]},"sticky":{"cookie":"sid"}}"#,
                "sticky.cookie",
                "split.hash_key[0].cookie`: a stored",
            ),
        ];
        for (json, field, reason) in cases {
            let e = err(json);
            assert_eq!(&e.field, field, "{json} -> {e}");
            assert!(e.reason.contains(reason), "{json} -> {e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn mesh_mode_may_pin_in_a_hash_key_cookie() {
        // Mesh mode never hashes a key: the pin cookie may share a hash-key cookie's name.
        assert!(Config::parse(br#"{"service":"a","split":{"mode":"mesh"},"sticky":{"cookie":"session"}}"#).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn override_tokens_are_digests() {
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let c = Config::parse(format!(r#"{{"service":"a","override":{{"token_sha256":["{digest}"]}}}}"#).as_bytes())
            .unwrap();
        assert_eq!(c.r#override.token_sha256.len(), 1);
        assert_eq!(c.r#override.token_sha256[0][..2], [0xba, 0x78]);
        assert_eq!(c.r#override.token_header, "x-canary-token");
        let many = vec![format!("\"{digest}\""); MAX_OVERRIDE_TOKENS + 1].join(",");
        let e = Config::parse(format!(r#"{{"service":"a","override":{{"token_sha256":[{many}]}}}}"#).as_bytes());
        assert!(e.unwrap_err().to_string().contains("got 17"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_sticky_key_comes_inline_or_from_the_environment() {
        let c = Config::parse(br#"{"service":"a","sticky":{"key":"0123456789abcdef"}}"#).unwrap();
        assert_eq!(c.sticky.key, Some(Secret(b"0123456789abcdef".to_vec())));
        assert!(!format!("{c:?}").contains("0123456789abcdef"), "a key never shows in a log line");
        let mut c = Config::parse(br#"{"service":"a","sticky":{"key_env":"CANARY_KEY"}}"#).unwrap();
        assert_eq!(c.sticky.key, None);
        let unset = c.clone().resolve_key_env(|_| None).unwrap_err().to_string();
        assert!(unset.contains("sticky.key_env") && unset.contains("`CANARY_KEY` is not set"), "{unset}");
        let short = c.clone().resolve_key_env(|_| Some("abc".into())).unwrap_err().to_string();
        assert!(short.contains("sticky.key_env") && short.contains("at least 16 bytes"), "{short}");
        c.resolve_key_env(|name| (name == "CANARY_KEY").then(|| "k".repeat(32))).unwrap();
        assert_eq!(c.sticky.key, Some(Secret(b"k".repeat(32))));
        let mut none = Config::parse(br#"{"service":"a"}"#).unwrap();
        none.resolve_key_env(|_| panic!("no variable to read")).unwrap();
        assert_eq!(none.sticky.key, None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn too_many_hash_keys_are_refused() {
        let keys = [r#"{"header":"x-a"}"#; MAX_HASH_KEYS + 1].join(",");
        let e = err(&format!(r#"{{"service":"a","split":{{"hash_key":[{keys}]}}}}"#));
        assert_eq!(e.field, "split.hash_key");
    }
}
