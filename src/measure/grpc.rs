//! What a gRPC call counts as. A gRPC call answers HTTP 200 whatever its outcome; its status is
//! `grpc-status`, in the trailers or, for a trailers-only response (Envoy's own errors among
//! them), in the headers. The call counts as the HTTP status [`GrpcConfig::counted_status`]
//! gives its code, so its `code_class`, the windows and the gate all see the same thing.

use crate::config::{GrpcConfig, UNKNOWN_CODE};

/// The protocol of a request, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Anything else: counted by its HTTP status.
    #[default]
    Http,
    /// `application/grpc`, alone or followed by `+` (`application/grpc+proto`), as Envoy's
    /// `Grpc::Common::hasGrpcContentType` has it.
    Grpc,
    /// `application/grpc-web…`: its status is in the body, except for a trailers-only answer.
    GrpcWeb,
}

impl Protocol {
    /// The protocol a request with `content_type` speaks.
    pub fn of_content_type(content_type: &[u8]) -> Protocol {
        const GRPC: &[u8] = b"application/grpc";
        match content_type.strip_prefix(GRPC) {
            Some([] | [b'+', ..]) => Protocol::Grpc,
            Some(rest) if rest.starts_with(b"-web") => Protocol::GrpcWeb,
            _ => Protocol::Http,
        }
    }
}

/// Envoy's response flags (`response.flags`) that say the client went away first:
/// DownstreamConnectionTermination (DC) and DownstreamRemoteReset (DR).
pub const CLIENT_WENT_AWAY: u64 = 1 << 14 | 1 << 28;

/// A `grpc-status` value read as Envoy reads it (`absl::SimpleAtoi`: surrounding white space and
/// a `+` allowed); anything else is `None`, which counts as UNKNOWN.
pub fn parse_status(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    let digits = value.strip_prefix(b"+").unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// The HTTP status a gRPC call counts as, from Envoy's `response.grpc_status` (the trailers'
/// status, else the headers', else one inferred from the HTTP status; absent without any) and
/// its response `flags`, read only for a call with no status or an UNKNOWN one. A call the
/// client left before its status counts as none (0), as an HTTP request the client left before
/// its response does, where Envoy would infer UNKNOWN from a 200 it had passed on: a client's
/// cancel or deadline is not the version's failure (its latency still counts).
pub fn call_status(config: GrpcConfig, grpc_status: Option<u64>, flags: impl FnOnce() -> u64) -> u64 {
    match grpc_status {
        Some(code) if code != UNKNOWN_CODE as u64 => u64::from(config.counted_status(code)),
        _ if flags() & CLIENT_WENT_AWAY != 0 => 0,
        Some(code) => u64::from(config.counted_status(code)),
        None => 0,
    }
}

/// The HTTP status a gRPC-Web call counts as: its trailers-only `grpc-status` if the response
/// headers carry one, else the HTTP `status` (a gRPC-Web status in the body is not read).
pub fn web_call_status(config: GrpcConfig, header: Option<&[u8]>, status: u64) -> u64 {
    match header {
        Some(value) => u64::from(config.counted_status(parse_status(value).unwrap_or(UNKNOWN_CODE as u64))),
        None => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn grpc_is_envoys_content_type_and_grpc_web_its_own() {
        let of = |t: &str| Protocol::of_content_type(t.as_bytes());
        assert_eq!(of("application/grpc"), Protocol::Grpc);
        assert_eq!(of("application/grpc+proto"), Protocol::Grpc);
        assert_eq!(of("application/grpc-web"), Protocol::GrpcWeb);
        assert_eq!(of("application/grpc-web-text+proto"), Protocol::GrpcWeb);
        for other in ["application/grpcx", "application/grpc;charset=utf-8", "Application/grpc", "application/json", ""]
        {
            assert_eq!(of(other), Protocol::Http, "{other}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn status_values_are_read_as_envoy_reads_them() {
        assert_eq!(parse_status(b"14"), Some(14));
        assert_eq!(parse_status(b" +0 "), Some(0));
        assert_eq!(parse_status(b"99999999999999999999999"), None);
        for bad in [&b""[..], b"-1", b"1 4", b"0x1", b"+", b"\xff"] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_call_counts_as_its_status_and_one_the_client_left_as_none() {
        let config = GrpcConfig::default();
        let no_flags = || 0;
        let never = || -> u64 { panic!("flags read for a call with a status") };
        assert_eq!(call_status(config, Some(0), never), 200);
        assert_eq!(call_status(config, Some(14), never), 503);
        assert_eq!(call_status(config, Some(5), never), 404);
        assert_eq!(call_status(config, Some(4), never), 504);
        // A stream the upstream cut: Envoy infers UNKNOWN from its 200.
        assert_eq!(call_status(config, Some(2), no_flags), 500);
        // The client reset it (DR) or closed its connection (DC), after the response headers
        // or before them (no status at all).
        assert_eq!(call_status(config, Some(2), || 1 << 28), 0);
        assert_eq!(call_status(config, None, || 1 << 28), 0);
        assert_eq!(call_status(config, None, || 1 << 14), 0);
        assert_eq!(call_status(config, None, no_flags), 0);
        // Other flags (UC: the upstream's connection ended) leave Envoy's inference.
        assert_eq!(call_status(config, Some(2), || 1 << 6), 500);
        // Envoy's InvalidCode (-1 as an int64) is UNKNOWN.
        assert_eq!(call_status(config, Some(u64::MAX), never), 500);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_grpc_web_call_counts_by_its_trailers_only_status_else_its_http_status() {
        let config = GrpcConfig::default();
        assert_eq!(web_call_status(config, Some(b"14"), 200), 503);
        assert_eq!(web_call_status(config, Some(b"bad"), 200), 500);
        assert_eq!(web_call_status(config, None, 200), 200);
        assert_eq!(web_call_status(config, None, 502), 502);
    }
}
