//! Plugin configuration: the JSON given as the Envoy wasm filter's `configuration`
//! or the Istio WasmPlugin's `pluginConfig`, parsed and validated once at configure time.
//!
//! Every refusal is a [`ConfigError`] naming the field (as a dotted path) and the reason.

mod json;

use crate::gate::GateConfig;
use json::Fields;
use std::fmt;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Chooses (or pins) the version and tags the request.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMode {
    /// canary-gate buckets the request and sets the version header.
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

/// The validated configuration the filter runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Service name, `[a-z0-9-]{1,63}`; the `service` metric label.
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
    /// Who chooses.
    pub mode: SplitMode,
    /// Canary weight in basis points (`0..=10_000`); filter mode only.
    pub canary_bp: u16,
    /// Hash key sources, first present wins.
    pub hash_key: Vec<KeySource>,
    /// Header whose value, when it names a version, forces that version.
    pub override_header: String,
    /// Sticky cookie name.
    pub sticky_cookie: String,
    /// Sticky cookie `Max-Age` in seconds.
    pub sticky_max_age_s: u32,
    /// Whether the sticky cookie carries `Secure`.
    pub sticky_secure: bool,
    /// Rolling window length of the window gauges, in seconds.
    pub window_s: u32,
    /// Node metadata label naming the proxy's own version (observer role).
    pub version_label: String,
    /// The SLO gate.
    pub gate: GateConfig,
    /// Request authorities this instance handles (empty: all).
    pub hosts: Vec<HostPattern>,
    /// Also write version and reason to filter state for the access log (two host calls per
    /// request; the response headers carry the same values at no extra cost).
    pub filter_state: bool,
}

/// One entry of `hosts`: an exact host name or a `*.suffix` wildcard, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches this host exactly.
    Exact(String),
    /// Matches any host ending in this suffix (which starts with `.`).
    Suffix(String),
}

impl HostPattern {
    /// Whether `host` (lower case, without port) matches.
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostPattern::Exact(h) => host == h.as_bytes(),
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_bytes()),
        }
    }
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| refuse("(root)", strip_position(&e.to_string())))?;
        let root = Fields::root(&value, TOP_LEVEL_FIELDS)?;
        Self::from_fields(&root)
    }

    fn from_fields(root: &Fields<'_>) -> Result<Config, ConfigError> {
        let text = |fields: &Fields<'_>, name: &str, default: &str| -> Result<String, ConfigError> {
            Ok(fields.string(name)?.unwrap_or(default).to_string())
        };
        let service =
            root.string("service")?.ok_or_else(|| refuse(root.path(), "missing field `service`"))?.to_string();
        check_service(&service)?;
        let role = match root.variant("role", &["router", "observer"])? {
            Some("observer") => Role::Observer,
            _ => Role::Router,
        };
        let version_header = text(root, "version_header", "x-canary-version")?;
        let reason_header = text(root, "reason_header", "x-canary-reason")?;
        check_header_name("version_header", &version_header)?;
        check_header_name("reason_header", &reason_header)?;
        if version_header == reason_header {
            return Err(refuse("reason_header", "must differ from version_header"));
        }
        let stable = text(root, "stable", "stable")?;
        let canary = text(root, "canary", "canary")?;
        check_version_name("stable", &stable)?;
        check_version_name("canary", &canary)?;
        if stable == canary {
            return Err(refuse("canary", "must differ from stable"));
        }

        let split = root.object("split", &["mode", "canary_percent", "hash_key"])?;
        let (mode, canary_bp, hash_key) = match &split {
            Some(split) => (
                match split.variant("mode", &["filter", "mesh"])? {
                    Some("mesh") => SplitMode::Mesh,
                    _ => SplitMode::Filter,
                },
                split.number_text("canary_percent")?.map(percent_to_bp).transpose()?.unwrap_or(DEFAULT_CANARY_BP),
                match split.array("hash_key")? {
                    Some(items) => check_hash_keys(&split.path_of("hash_key"), items)?,
                    None => default_hash_key(),
                },
            ),
            None => (SplitMode::Filter, DEFAULT_CANARY_BP, default_hash_key()),
        };

        let override_header = match root.object("override", &["header"])? {
            Some(o) => text(&o, "header", "x-canary")?,
            None => "x-canary".to_string(),
        };
        check_header_name("override.header", &override_header)?;

        let sticky = root.object("sticky", &["cookie", "max_age_s", "secure"])?;
        let (sticky_cookie, sticky_max_age_s, sticky_secure) = match &sticky {
            Some(s) => (
                text(s, "cookie", "canary_bucket")?,
                s.integer("max_age_s", u64::from(u32::MAX))?.unwrap_or(86_400),
                s.boolean("secure")?.unwrap_or(false),
            ),
            None => ("canary_bucket".to_string(), 86_400, false),
        };
        check_token("sticky.cookie", &sticky_cookie)?;
        if sticky_max_age_s == 0 || sticky_max_age_s > u64::from(MAX_COOKIE_AGE_S) {
            return Err(refuse(
                "sticky.max_age_s",
                format!("must be in 1..={MAX_COOKIE_AGE_S} seconds, got {sticky_max_age_s}"),
            ));
        }

        let window_s = match root.object("metrics", &["window_s"])? {
            Some(m) => m.integer("window_s", u64::from(u32::MAX))?.unwrap_or(60),
            None => 60,
        };
        if !(1..=u64::from(MAX_WINDOW_S)).contains(&window_s) {
            return Err(refuse("metrics.window_s", format!("must be in 1..={MAX_WINDOW_S} seconds, got {window_s}")));
        }
        let version_label = text(root, "version_label", "version")?;
        check_label_name("version_label", &version_label)?;

        let gate = match root.object("gate", GATE_FIELDS)? {
            Some(g) => gate_config(&g)?,
            None => GateConfig::default(),
        };
        if role == Role::Observer && gate.has_thresholds() {
            return Err(refuse("gate", "thresholds apply to the router role only (an observer never reroutes)"));
        }
        let hosts = match root.array("hosts")? {
            Some(items) => check_hosts(items)?,
            None => Vec::new(),
        };
        let filter_state = root.boolean("filter_state")?.unwrap_or(false);
        Ok(Config {
            service,
            role,
            version_header,
            reason_header,
            stable,
            canary,
            mode,
            canary_bp,
            hash_key,
            override_header,
            sticky_cookie,
            // In range by the check above.
            sticky_max_age_s: sticky_max_age_s as u32,
            sticky_secure,
            window_s: window_s as u32,
            version_label,
            gate,
            hosts,
            filter_state,
        })
    }

    /// The name of `version`.
    pub fn version_name(&self, version: crate::route::Version) -> &str {
        match version {
            crate::route::Version::Stable => &self.stable,
            crate::route::Version::Canary => &self.canary,
        }
    }
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "service",
    "role",
    "version_header",
    "reason_header",
    "stable",
    "canary",
    "split",
    "override",
    "sticky",
    "metrics",
    "version_label",
    "gate",
    "hosts",
    "filter_state",
];

const GATE_FIELDS: &[&str] = &[
    "window_s",
    "min_requests",
    "max_error_ratio",
    "max_p95_ms",
    "max_p99_ms",
    "max_error_ratio_over_stable",
    "consecutive",
    "dry_run",
    "rearm",
];

/// Longest latency threshold: 10 minutes.
const MAX_LATENCY_MS: u64 = 600_000;

fn default_hash_key() -> Vec<KeySource> {
    vec![KeySource::Header("x-user-id".into()), KeySource::Cookie("session".into())]
}

fn gate_config(g: &Fields<'_>) -> Result<GateConfig, ConfigError> {
    let d = GateConfig::default();
    let in_range = |name: &str, default: u64, low: u64, high: u64| -> Result<u64, ConfigError> {
        let value = g.integer(name, u64::MAX)?.unwrap_or(default);
        if (low..=high).contains(&value) {
            Ok(value)
        } else {
            Err(refuse(&g.path_of(name), format!("must be in {low}..={high}, got {value}")))
        }
    };
    let ratio = |name: &str| -> Result<Option<u64>, ConfigError> {
        let Some(text) = g.number_text(name)? else { return Ok(None) };
        let ppm = parse_decimal(text, 6).map_err(|reason| refuse(&g.path_of(name), reason))?;
        if ppm > 1_000_000 {
            return Err(refuse(&g.path_of(name), format!("must be between 0 and 1, got {text}")));
        }
        Ok(Some(ppm))
    };
    let millis = |name: &str| -> Result<Option<u64>, ConfigError> {
        let Some(text) = g.number_text(name)? else { return Ok(None) };
        let us = parse_decimal(text, 3).map_err(|reason| refuse(&g.path_of(name), reason))?;
        if us == 0 || us > MAX_LATENCY_MS * 1000 {
            return Err(refuse(&g.path_of(name), format!("must be in (0, {MAX_LATENCY_MS}] ms, got {text}")));
        }
        Ok(Some(us))
    };
    Ok(GateConfig {
        window_s: in_range("window_s", u64::from(d.window_s), 1, u64::from(MAX_WINDOW_S))? as u32,
        min_requests: in_range("min_requests", d.min_requests, 1, 1_000_000_000)?,
        max_error_ratio_ppm: ratio("max_error_ratio")?,
        max_p95_us: millis("max_p95_ms")?,
        max_p99_us: millis("max_p99_ms")?,
        max_error_ratio_over_stable_ppm: ratio("max_error_ratio_over_stable")?,
        consecutive: in_range("consecutive", u64::from(d.consecutive), 1, 600)? as u32,
        dry_run: g.boolean("dry_run")?.unwrap_or(d.dry_run),
        rearm: g.integer("rearm", u64::MAX)?.unwrap_or(d.rearm),
    })
}

/// Default canary weight: 10%.
const DEFAULT_CANARY_BP: u16 = 1_000;

/// A JSON number in plain decimal notation with at most `decimals` fractional digits, as an
/// integer scaled by `10^decimals`: `parse_decimal("12.5", 2) == Ok(1250)`. Exact, no floats.
pub fn parse_decimal(text: &str, decimals: u32) -> Result<u64, String> {
    let text = text.trim();
    if text.starts_with('"')
        || text.starts_with('[')
        || text.starts_with('{')
        || text == "true"
        || text == "false"
        || text == "null"
    {
        return Err(format!("invalid type: {text}, expected a number"));
    }
    if text.starts_with('-') {
        return Err(format!("must not be negative, got {text}"));
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) || (text.contains('.') && fraction.is_empty())
    {
        return Err(format!("must be a plain decimal number, got {text}"));
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > decimals as usize {
        return Err(format!("at most {decimals} decimals allowed, got {text}"));
    }
    let scale = 10u64.pow(decimals);
    let mut frac_value: u64 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        frac_value += u64::from(b - b'0') * 10u64.pow(decimals - 1 - i as u32);
    }
    whole
        .parse::<u64>()
        .ok()
        .and_then(|w| w.checked_mul(scale))
        .and_then(|w| w.checked_add(frac_value))
        .ok_or_else(|| format!("out of range, got {text}"))
}

/// `0..=100` with at most two decimals, as basis points.
pub fn percent_to_bp(text: &str) -> Result<u16, ConfigError> {
    const FIELD: &str = "split.canary_percent";
    let bp = parse_decimal(text, 2).map_err(|reason| refuse(FIELD, reason))?;
    u16::try_from(bp)
        .ok()
        .filter(|&bp| bp <= FULL_WEIGHT_BP)
        .ok_or_else(|| refuse(FIELD, format!("must be between 0 and 100, got {}", text.trim())))
}

fn check_service(name: &str) -> Result<(), ConfigError> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(refuse("service", format!("must match [a-z0-9-]{{1,63}}, got {name:?}")))
    }
}

/// Version names become header values, cookie values and metric labels: keep them to
/// characters that are safe in all three and never split a stat name (no `.`).
fn check_version_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok =
        (1..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must match [A-Za-z0-9_-]{{1,63}}, got {name:?}")))
    }
}

/// HTTP/2 and Envoy want lower-case header names made of token characters.
fn check_header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with(':')
        && name.bytes().all(|b| is_token_byte(b) && !b.is_ascii_uppercase());
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must be a lower-case HTTP header name, got {name:?}")))
    }
}

/// Kubernetes label keys: an optional DNS prefix and a name of `[A-Za-z0-9._-]`.
fn check_label_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=253).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must be a label name, got {name:?}")))
    }
}

fn check_hosts(items: Vec<(String, &serde_json::Value)>) -> Result<Vec<HostPattern>, ConfigError> {
    if items.len() > MAX_HOSTS {
        return Err(refuse("hosts", format!("at most {MAX_HOSTS} entries, got {}", items.len())));
    }
    items
        .into_iter()
        .map(|(path, value)| {
            let host = Fields::item_string(&path, value)?.to_string();
            let (pattern, name) = match host.strip_prefix('*') {
                Some(suffix) => (HostPattern::Suffix(suffix.to_string()), suffix.strip_prefix('.').unwrap_or("")),
                None => (HostPattern::Exact(host.clone()), host.as_str()),
            };
            let ok = (1..=253).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if ok {
                Ok(pattern)
            } else {
                Err(refuse(&path, format!("must be a lower-case host name or `*.suffix`, got {host:?}")))
            }
        })
        .collect()
}

/// The host of an `:authority` value: lower-cased, without port or IPv6 brackets.
pub fn authority_host(authority: &[u8]) -> Vec<u8> {
    let host = match authority.first() {
        Some(b'[') => {
            authority.split(|&b| b == b']').next().map(|h| h.get(1..).unwrap_or_default()).unwrap_or_default()
        }
        _ => authority.split(|&b| b == b':').next().unwrap_or_default(),
    };
    host.to_ascii_lowercase()
}

impl Config {
    /// Whether this instance handles a request to `authority` (all when `hosts` is empty).
    pub fn handles(&self, authority: Option<&[u8]>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let host = authority_host(authority.unwrap_or_default());
        self.hosts.iter().any(|p| p.matches(&host))
    }
}

fn check_token(field: &str, name: &str) -> Result<(), ConfigError> {
    if (1..=128).contains(&name.len()) && name.bytes().all(is_token_byte) {
        Ok(())
    } else {
        Err(refuse(field, format!("must be an HTTP token (cookie name), got {name:?}")))
    }
}

/// RFC 9110 `tchar`.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_hash_keys(path: &str, items: Vec<(String, &serde_json::Value)>) -> Result<Vec<KeySource>, ConfigError> {
    if items.len() > MAX_HASH_KEYS {
        return Err(refuse(path, format!("at most {MAX_HASH_KEYS} entries, got {}", items.len())));
    }
    items
        .into_iter()
        .map(|(path, value)| {
            let source = Fields::item(path, value, &["header", "cookie"])?;
            match (source.string("header")?, source.string("cookie")?) {
                (Some(h), None) => {
                    check_header_name(&source.path_of("header"), h).map(|_| KeySource::Header(h.to_string()))
                }
                (None, Some(c)) => check_token(&source.path_of("cookie"), c).map(|_| KeySource::Cookie(c.to_string())),
                _ => Err(refuse(source.path(), "needs exactly one of `header` or `cookie`")),
            }
        })
        .collect()
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
        assert_eq!(c.mode, SplitMode::Filter);
        assert_eq!(c.canary_bp, 1000);
        assert_eq!(c.hash_key, vec![KeySource::Header("x-user-id".into()), KeySource::Cookie("session".into())]);
        assert_eq!(c.override_header, "x-canary");
        assert_eq!((c.sticky_cookie.as_str(), c.sticky_max_age_s), ("canary_bucket", 86_400));
        assert_eq!((c.window_s, c.version_label.as_str()), (60, "version"));
        assert_eq!(c.gate, GateConfig::default());
        assert!(!c.filter_state);
        assert!(Config::parse(br#"{"service":"a","filter_state":true}"#).unwrap().filter_state);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn gate_thresholds_parse_exactly() {
        let c = Config::parse(
            br#"{"service":"a","gate":{"window_s":10,"min_requests":50,"max_error_ratio":0.001,"max_p95_ms":500,
                "max_p99_ms":1000.5,"max_error_ratio_over_stable":0.0025,"consecutive":3,"dry_run":true,"rearm":7}}"#,
        )
        .unwrap();
        let g = c.gate;
        assert_eq!((g.window_s, g.min_requests, g.consecutive, g.dry_run, g.rearm), (10, 50, 3, true, 7));
        assert_eq!(g.max_error_ratio_ppm, Some(1_000));
        assert_eq!((g.max_p95_us, g.max_p99_us), (Some(500_000), Some(1_000_500)));
        assert_eq!(g.max_error_ratio_over_stable_ppm, Some(2_500));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn full_config_is_accepted() {
        let c = Config::parse(
            br#"{"service":"corp-cockpit","role":"router","version_header":"x-v","stable":"v1","canary":"v2",
                "split":{"mode":"mesh","canary_percent":12.34,"hash_key":[{"cookie":"sid"}]},
                "override":{"header":"x-force"},"sticky":{"cookie":"pin","max_age_s":60,"secure":true}}"#,
        )
        .unwrap();
        assert_eq!(c.canary_bp, 1234);
        assert_eq!(c.mode, SplitMode::Mesh);
        assert_eq!(c.hash_key, vec![KeySource::Cookie("sid".into())]);
        assert!(c.sticky_secure);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn percent_converts_exactly_to_basis_points() {
        assert_eq!(percent_to_bp("0").unwrap(), 0);
        assert_eq!(percent_to_bp("0.01").unwrap(), 1);
        assert_eq!(percent_to_bp("33.33").unwrap(), 3333);
        assert_eq!(percent_to_bp("12.50").unwrap(), 1250);
        assert_eq!(percent_to_bp("100").unwrap(), 10_000);
        assert_eq!(percent_to_bp("100.00").unwrap(), 10_000);
        assert_eq!(parse_decimal("0.001", 6).unwrap(), 1_000);
        assert_eq!(parse_decimal("18446744073709.551615", 6).unwrap(), u64::MAX);
        assert!(parse_decimal("18446744073709.551616", 6).is_err());
        for bad in
            ["1e1", "1.", ".5", "+1", "0x10", "", "1.2.3", "100.001", "99999999999999999999", "184467440737095516.17"]
        {
            assert!(percent_to_bp(bad).is_err(), "{bad}");
        }
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
            (r#"{"service":"a","version_header":":path"}"#, "version_header", "header name"),
            (r#"{"service":"a","override":{"header":""}}"#, "override.header", "header name"),
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
            (r#"{"service":"a","hosts":["Shop.example.com"]}"#, "hosts[0]", "lower-case host"),
            (r#"{"service":"a","hosts":["a.b","*"]}"#, "hosts[1]", "lower-case host"),
            (r#"{"service":"a","hosts":"a.b"}"#, "hosts", "invalid type"),
        ];
        for (json, field, reason) in cases {
            let e = err(json);
            assert_eq!(&e.field, field, "{json} -> {e}");
            assert!(e.reason.contains(reason), "{json} -> {e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hosts_match_authorities_without_port_and_case() {
        let c = Config::parse(br#"{"service":"a","hosts":["shop.example.com","*.svc.cluster.local"]}"#).unwrap();
        assert!(c.handles(Some(b"shop.example.com")));
        assert!(c.handles(Some(b"Shop.Example.COM:8443")));
        assert!(c.handles(Some(b"a.teei.svc.cluster.local:80")));
        assert!(!c.handles(Some(b"svc.cluster.local")));
        assert!(!c.handles(Some(b"shop.example.com.evil")));
        assert!(!c.handles(Some(b"other.example.com")));
        assert!(!c.handles(None));
        assert!(!c.handles(Some(b"\xff\xfe")));
        let all = Config::parse(br#"{"service":"a"}"#).unwrap();
        assert!(all.handles(None));
        assert_eq!(authority_host(b"[::1]:80"), b"::1");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn too_many_hash_keys_are_refused() {
        let keys = [r#"{"header":"x-a"}"#; MAX_HASH_KEYS + 1].join(",");
        let e = err(&format!(r#"{{"service":"a","split":{{"hash_key":[{keys}]}}}}"#));
        assert_eq!(e.field, "split.hash_key");
    }
}
