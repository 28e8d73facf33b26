//! `grpc`: which gRPC status codes count as errors, and the HTTP status each code counts as.
//!
//! A gRPC call answers HTTP 200 and carries its outcome in `grpc-status`. canary-gate counts it
//! in the `code_class` of the HTTP status Envoy maps that code to (`Grpc::Utility::
//! grpcToHttpStatus`), so UNAVAILABLE is a 5xx and NOT_FOUND a 4xx, and every series and the
//! gate read the same classification. `grpc.error_codes` overrides which codes are errors.

use super::json::{Fields, Item};
use super::{refuse, ConfigError};

/// The canonical names of the gRPC status codes 0 to 16.
pub const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The HTTP status Envoy maps each gRPC code to (`Grpc::Utility::grpcToHttpStatus`).
pub const ENVOY_HTTP_STATUS: [u16; 17] =
    [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];

/// `UNKNOWN`: what a code outside 0..=16, or a `grpc-status` that is no number, counts as.
pub const UNKNOWN_CODE: usize = 2;

/// `grpc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Bit `c` set: code `c` is an error.
    pub error_codes: u32,
}

impl Default for GrpcConfig {
    /// The codes Envoy maps to a 5xx status.
    fn default() -> Self {
        let error_codes = ENVOY_HTTP_STATUS
            .iter()
            .enumerate()
            .filter(|(_, &status)| status >= 500)
            .fold(0, |mask, (c, _)| mask | 1 << c);
        GrpcConfig { error_codes }
    }
}

impl GrpcConfig {
    /// The HTTP status code `code` counts as: Envoy's mapping, except that a code listed as an
    /// error but mapped below 500 counts as 500, and a code left out of the errors but mapped
    /// to a 5xx counts as 400. Codes outside 0..=16 count as UNKNOWN.
    pub fn counted_status(self, code: u64) -> u16 {
        let code = usize::try_from(code).ok().filter(|&c| c < ENVOY_HTTP_STATUS.len()).unwrap_or(UNKNOWN_CODE);
        let mapped = ENVOY_HTTP_STATUS.get(code).copied().unwrap_or(500);
        match (self.error_codes >> code & 1 == 1, mapped >= 500) {
            (true, false) => 500,
            (false, true) => 400,
            _ => mapped,
        }
    }
}

/// `grpc`.
pub fn grpc(f: &Fields<'_>, g: &mut GrpcConfig) -> Result<(), ConfigError> {
    if let Some(items) = f.array("error_codes")? {
        let path = f.path_of("error_codes");
        if items.is_empty() {
            return Err(refuse(&path, "is empty: no gRPC failure would count as an error; list at least one code"));
        }
        let mut mask = 0u32;
        for item in &items {
            let code = code_of(item)?;
            if code == 0 {
                return Err(refuse(&item.path, "OK is a success, not an error"));
            }
            if mask >> code & 1 == 1 {
                return Err(refuse(
                    &item.path,
                    format!("{} is listed twice", GRPC_CODE_NAMES.get(code).copied().unwrap_or_default()),
                ));
            }
            mask |= 1 << code;
        }
        g.error_codes = mask;
    }
    Ok(())
}

/// A code given as its number (0 to 16) or its name (`UNAVAILABLE`, any case).
fn code_of(item: &Item<'_>) -> Result<usize, ConfigError> {
    let expected = "expected a gRPC status code: a number from 0 to 16 or a name such as `UNAVAILABLE`";
    if let Ok(name) = item.string() {
        let upper = name.to_ascii_uppercase();
        let upper = if upper == "CANCELED" { "CANCELLED".to_string() } else { upper };
        return GRPC_CODE_NAMES
            .iter()
            .position(|n| *n == upper)
            .ok_or_else(|| refuse(&item.path, format!("unknown code name `{name}`, {expected}")));
    }
    let text = item.number_text().map_err(|_| refuse(&item.path, format!("invalid type, {expected}")))?;
    text.parse::<usize>()
        .ok()
        .filter(|&c| c < GRPC_CODE_NAMES.len())
        .ok_or_else(|| refuse(&item.path, format!("`{text}` is no code, {expected}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn grpc(json: &str) -> Result<GrpcConfig, String> {
        Config::parse(format!(r#"{{"service": "s", "grpc": {json}}}"#).as_bytes())
            .map(|c| c.grpc)
            .map_err(|e| e.to_string())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn by_default_a_code_counts_as_envoys_status_and_errs_when_that_is_a_5xx() {
        let config = GrpcConfig::default();
        let counted: Vec<u16> = (0..17).map(|c| config.counted_status(c)).collect();
        assert_eq!(counted, [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401]);
        let errors: Vec<&str> =
            (0..17).filter(|&c| config.error_codes >> c & 1 == 1).map(|c| GRPC_CODE_NAMES[c]).collect();
        assert_eq!(errors, ["UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"]);
        // A code past 16 is UNKNOWN, as gRPC clients read it (Envoy: InvalidCode, also 500).
        assert_eq!((config.counted_status(17), config.counted_status(u64::MAX)), (500, 500));
        assert_eq!(grpc("{}"), Ok(config));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn error_codes_take_numbers_and_names_and_move_the_class_with_the_error() {
        let config = grpc(r#"{"error_codes": ["UNAVAILABLE", 13, "not_found", "Canceled"]}"#).unwrap();
        assert_eq!(config.error_codes, 1 << 14 | 1 << 13 | 1 << 5 | 1 << 1);
        // Listed: a 5xx as mapped, or 500 where Envoy maps it lower.
        assert_eq!([14, 13, 5, 1].map(|c| config.counted_status(c)), [503, 500, 500, 500]);
        // Left out: a 4xx as mapped, or 400 where Envoy maps it to a 5xx.
        assert_eq!([4, 12, 2, 15, 3, 0].map(|c| config.counted_status(c)), [400, 400, 400, 400, 400, 200]);
        assert_eq!(config.counted_status(99), 400, "out of range: as UNKNOWN, which is not listed");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_error_codes_are_refused_naming_the_item() {
        let refused = |json: &str| grpc(json).unwrap_err();
        assert!(refused(r#"{"error_codes": []}"#).contains("`grpc.error_codes`: is empty"));
        assert!(refused(r#"{"error_codes": [14, 17]}"#).contains("`grpc.error_codes[1]`: `17` is no code"));
        assert!(refused(r#"{"error_codes": [-1]}"#).contains("`grpc.error_codes[0]`: `-1` is no code"));
        assert!(refused(r#"{"error_codes": [1.5]}"#).contains("`1.5` is no code"));
        assert!(refused(r#"{"error_codes": ["UNAVAIL"]}"#).contains("unknown code name `UNAVAIL`"));
        assert!(refused(r#"{"error_codes": [true]}"#).contains("`grpc.error_codes[0]`: invalid type"));
        assert!(refused(r#"{"error_codes": ["OK"]}"#).contains("OK is a success"));
        assert!(refused(r#"{"error_codes": [14, "UNAVAILABLE"]}"#)
            .contains("`grpc.error_codes[1]`: UNAVAILABLE is listed twice"));
        assert!(refused(r#"{"error_codes": 14}"#).contains("`grpc.error_codes`: invalid type"));
        assert!(refused(r#"{"errors": [14]}"#).contains("`grpc.errors`: unknown field"));
    }
}
