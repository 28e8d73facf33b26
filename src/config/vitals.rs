//! `vitals` (the beacon endpoint) and `gate.vitals` (thresholds on what the beacons report).

use super::json::Fields;
use super::{check, decimal, parse, refuse, ConfigError};

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
    l.max_lcp_p75_us = parse::latency_us(f, "max_lcp_p75_ms")?;
    l.max_inp_p75_us = parse::latency_us(f, "max_inp_p75_ms")?;
    if let Some(text) = f.number_text("max_cls_p75")? {
        let path = f.path_of("max_cls_p75");
        let millionths = decimal::parse_decimal(text, 6).map_err(|reason| refuse(&path, reason))?;
        if millionths == 0 || millionths > 100_000_000 {
            return Err(refuse(&path, format!("must be in (0, 100], got {text}")));
        }
        l.max_cls_p75_millionths = Some(millionths);
    }
    if let Some(text) = f.number_text("max_js_error_ratio")? {
        l.max_js_error_ratio_ppm = Some(parse::ratio_ppm(&f.path_of("max_js_error_ratio"), text)?);
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

#[cfg(test)]
mod tests {
    use crate::config::{Config, Role};
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn defaults_and_every_field() {
        let c = Config::parse(br#"{"service":"web","vitals":{}}"#).unwrap();
        let v = c.vitals.unwrap();
        assert_eq!((v.path.as_str(), v.max_body_bytes, v.max_per_second), ("/__canary/vitals", 4096, 200));
        assert!(c.gate.vitals.is_none() && !c.gate.has_thresholds());
        assert!(Config::parse(br#"{"service":"web"}"#).unwrap().vitals.is_none());
        let c = Config::parse(
            br#"{"service":"web","vitals":{"path":"/rum","max_body_bytes":65536,"max_per_second":5},
                "gate":{"vitals":{"max_lcp_p75_ms":2500,"max_inp_p75_ms":200.5,"max_cls_p75":0.1,
                "max_js_error_ratio":0.001,"min_page_views":20}}}"#,
        )
        .unwrap();
        let v = c.vitals.as_ref().unwrap();
        assert_eq!((v.path.as_str(), v.max_body_bytes, v.max_per_second), ("/rum", 65_536, 5));
        let l = c.gate.vitals.as_ref().unwrap();
        assert_eq!(l.min_page_views, 20);
        assert_eq!((l.max_lcp_p75_us, l.max_inp_p75_us), (Some(2_500_000), Some(200_500)));
        assert_eq!((l.max_cls_p75_millionths, l.max_js_error_ratio_ppm), (Some(100_000), Some(1_000)));
        assert!(c.gate.has_limits() && c.gate.has_thresholds());
        assert_eq!((c.role, c.eval_period_ms()), (Role::Router, 250));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_fuzz_seed_with_every_field_sets_them_all() {
        let c = Config::parse(include_bytes!("../../fuzz/corpus/config/every-field.json")).unwrap();
        let v = c.vitals.unwrap();
        assert_eq!((v.path.as_str(), v.max_body_bytes, v.max_per_second), ("/__rum/v1", 65_536, 100_000));
        let l = c.gate.vitals.unwrap();
        assert_eq!((l.max_lcp_p75_us, l.max_inp_p75_us), (Some(2_500_500), Some(200_000)));
        assert_eq!((l.max_cls_p75_millionths, l.max_js_error_ratio_ppm), (Some(1), Some(1_000_000)));
        assert_eq!(l.min_page_views, 1_000_000_000);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refusals_name_the_field_and_the_reason() {
        let cases = [
            (r#"{"vitals":{"path":"rum"}}"#, "vitals.path", "starts with `/`"),
            (r#"{"vitals":{"path":"/"}}"#, "vitals.path", "must not be `/`"),
            (r#"{"vitals":{"path":"/rum?x=1"}}"#, "vitals.path", "no query"),
            (r#"{"vitals":{"path":"/__canary/revision"}}"#, "vitals.path", "revision_probe_path"),
            (r#"{"vitals":{"max_body_bytes":0}}"#, "vitals.max_body_bytes", "1..=65536 bytes"),
            (r#"{"vitals":{"max_body_bytes":65537}}"#, "vitals.max_body_bytes", "65536"),
            (r#"{"vitals":{"max_per_second":0}}"#, "vitals.max_per_second", "1..=100000"),
            (r#"{"vitals":{"max_per_second":1.5}}"#, "vitals.max_per_second", "integer"),
            (r#"{"vitals":{"sample":1}}"#, "vitals.sample", "unknown field"),
            (r#"{"vitals":[]}"#, "vitals", "expected an object"),
            (r#"{"role":"observer","vitals":{}}"#, "vitals", "router role only"),
            (r#"{"gate":{"vitals":{"max_lcp_p75_ms":2500}}}"#, "gate.vitals", "needs `vitals`"),
            (r#"{"vitals":{},"gate":{"vitals":{}}}"#, "gate.vitals", "sets no limit"),
            (r#"{"vitals":{},"gate":{"vitals":{"min_page_views":10}}}"#, "gate.vitals", "sets no limit"),
            (r#"{"vitals":{},"gate":{"vitals":{"max_lcp_p75_ms":0}}}"#, "gate.vitals.max_lcp_p75_ms", "(0, 600000]"),
            (r#"{"vitals":{},"gate":{"vitals":{"max_inp_p75_ms":-1}}}"#, "gate.vitals.max_inp_p75_ms", "negative"),
            (r#"{"vitals":{},"gate":{"vitals":{"max_cls_p75":0}}}"#, "gate.vitals.max_cls_p75", "(0, 100]"),
            (
                r#"{"vitals":{},"gate":{"vitals":{"max_cls_p75":"0.1"}}}"#,
                "gate.vitals.max_cls_p75",
                "expected a number",
            ),
            (
                r#"{"vitals":{},"gate":{"vitals":{"max_js_error_ratio":1.5}}}"#,
                "gate.vitals.max_js_error_ratio",
                "between 0 and 1",
            ),
            (
                r#"{"vitals":{},"gate":{"vitals":{"max_cls_p75":0.1,"min_page_views":0}}}"#,
                "gate.vitals.min_page_views",
                "1..=",
            ),
            (r#"{"vitals":{},"gate":{"vitals":{"max_fid_ms":100}}}"#, "gate.vitals.max_fid_ms", "unknown field"),
        ];
        for (json, field, reason) in cases {
            let json = json.replacen('{', r#"{"service":"web","#, 1);
            let e = Config::parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{json} -> {e}");
            assert!(e.reason.contains(reason), "{json} -> {e}");
        }
    }
}
