//! `vitals` (the beacon endpoint) and `gate.vitals` (thresholds on what the beacons report).

use super::json::Fields;
use super::{check, decimal, refuse, ConfigError};

/// The largest `vitals.max_body_bytes`.
pub const MAX_BEACON_BYTES: u64 = 65_536;
/// The largest `vitals.max_per_second`.
pub const MAX_BEACONS_PER_SECOND: u64 = 100_000;

/// `vitals`: the endpoint that takes the browser's web-vitals beacons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitalsConfig {
    /// The path (query aside) the filter answers itself.
    pub path: String,
    /// Larger bodies are answered 413.
    pub max_body_bytes: u32,
    /// Beacons accepted per proxy and second; more are answered 429 and counted.
    pub max_per_second: u32,
}

impl Default for VitalsConfig {
    fn default() -> Self {
        VitalsConfig { path: "/__canary/vitals".into(), max_body_bytes: 4096, max_per_second: 200 }
    }
}

/// `gate.vitals`: limits on the canary's web vitals over the gate window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitalsLimits {
    /// Below this many canary page views in the window these limits are inconclusive.
    pub min_page_views: u64,
    /// P75 of LCP, microseconds (from `max_lcp_p75_ms`).
    pub max_lcp_p75_us: Option<u64>,
    /// P75 of INP, microseconds (from `max_inp_p75_ms`).
    pub max_inp_p75_us: Option<u64>,
    /// P75 of CLS, in millionths (from `max_cls_p75`).
    pub max_cls_p75_millionths: Option<u64>,
    /// JS errors per page view, parts per million (from `max_js_error_ratio`).
    pub max_js_error_ratio_ppm: Option<u64>,
}

impl Default for VitalsLimits {
    fn default() -> Self {
        VitalsLimits {
            min_page_views: 50,
            max_lcp_p75_us: None,
            max_inp_p75_us: None,
            max_cls_p75_millionths: None,
            max_js_error_ratio_ppm: None,
        }
    }
}

/// `vitals`.
pub fn endpoint(f: &Fields<'_>, v: &mut VitalsConfig) -> Result<(), ConfigError> {
    f.set_string("path", &mut v.path)?;
    check::probe_path(&f.path_of("path"), &v.path)?;
    if let Some(bytes) = f.integer("max_body_bytes", u64::MAX)? {
        v.max_body_bytes = check::in_range(&f.path_of("max_body_bytes"), bytes, 1, MAX_BEACON_BYTES, " bytes")? as u32;
    }
    if let Some(rate) = f.integer("max_per_second", u64::MAX)? {
        v.max_per_second = check::in_range(&f.path_of("max_per_second"), rate, 1, MAX_BEACONS_PER_SECOND, "")? as u32;
    }
    Ok(())
}

/// `gate.vitals`.
pub fn limits(f: &Fields<'_>, l: &mut VitalsLimits) -> Result<(), ConfigError> {
    if let Some(views) = f.integer("min_page_views", u64::MAX)? {
        l.min_page_views = check::in_range(&f.path_of("min_page_views"), views, 1, 1_000_000_000, "")?;
    }
    let millis = |name: &'static str| -> Result<Option<u64>, ConfigError> {
        let Some(text) = f.number_text(name)? else { return Ok(None) };
        let us = decimal::parse_decimal(text, 3).map_err(|reason| refuse(&f.path_of(name), reason))?;
        if us == 0 || us > 600_000_000 {
            return Err(refuse(&f.path_of(name), format!("must be in (0, 600000] ms, got {text}")));
        }
        Ok(Some(us))
    };
    l.max_lcp_p75_us = millis("max_lcp_p75_ms")?;
    l.max_inp_p75_us = millis("max_inp_p75_ms")?;
    if let Some(text) = f.number_text("max_cls_p75")? {
        let path = f.path_of("max_cls_p75");
        let millionths = decimal::parse_decimal(text, 6).map_err(|reason| refuse(&path, reason))?;
        if millionths == 0 || millionths > 100_000_000 {
            return Err(refuse(&path, format!("must be in (0, 100], got {text}")));
        }
        l.max_cls_p75_millionths = Some(millionths);
    }
    if let Some(text) = f.number_text("max_js_error_ratio")? {
        let path = f.path_of("max_js_error_ratio");
        let ppm = decimal::parse_decimal(text, 6).map_err(|reason| refuse(&path, reason))?;
        if ppm > 1_000_000 {
            return Err(refuse(&path, format!("must be between 0 and 1, got {text}")));
        }
        l.max_js_error_ratio_ppm = Some(ppm);
    }
    if !l.has_thresholds() {
        return Err(refuse(
            f.path(),
            "sets no limit: give one of `max_lcp_p75_ms`, `max_inp_p75_ms`, `max_cls_p75`, `max_js_error_ratio`",
        ));
    }
    Ok(())
}

impl VitalsLimits {
    /// Whether any limit is set.
    pub fn has_thresholds(&self) -> bool {
        self.max_lcp_p75_us.is_some()
            || self.max_inp_p75_us.is_some()
            || self.max_cls_p75_millionths.is_some()
            || self.max_js_error_ratio_ppm.is_some()
    }
}
