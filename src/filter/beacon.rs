//! The `vitals` endpoint: a `POST` of web-vitals reports, answered by the filter itself and
//! never forwarded. The reports come in the body, buffered by Envoy until it ends (or passes the
//! limit), or in the query parameter `beacon` (for proxies whose Wasm plugin configuration
//! cannot set `allow_on_headers_stop_iteration`, such as Istio's WasmPlugin).

use super::{Action, Env, Stream};
use crate::host::{Map, StreamHost};
use crate::measure::beacon::{self, Rejection};
use crate::model::Reason;

/// Whether the request path (query aside) is the endpoint's.
pub fn is_endpoint(path: &[u8], endpoint: &str) -> bool {
    path.split(|&b| b == b'?').next() == Some(endpoint.as_bytes())
}

impl Stream {
    /// Request headers of a beacon: refuses what the headers already rule out, else waits for
    /// the body ([`Stream::awaits_body`]). Never counted as a request.
    pub(super) fn take_beacon<H: StreamHost>(&mut self, env: &Env<H>, path: &[u8], end_of_stream: bool) -> Action {
        self.skipped = true;
        let Some(vitals) = env.plugin.config().vitals.as_ref() else { return Action::Continue };
        if env.host.header(Map::Request, ":method").as_deref() != Some(b"POST") {
            return refuse(env, Rejection::Method);
        }
        // In the query, it needs no body (nor `allow_on_headers_stop_iteration`).
        match beacon::from_query(path, vitals.max_body_bytes as usize) {
            Some(Ok(body)) => return self.finish_beacon(env, &body),
            Some(Err(rejection)) => return refuse(env, rejection),
            None => {}
        }
        let declared = env
            .host
            .header(Map::Request, "content-length")
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|v| v.trim().parse::<u64>().ok()));
        if declared.is_some_and(|length| length > u64::from(vitals.max_body_bytes)) {
            return refuse(env, Rejection::TooLarge);
        }
        if end_of_stream {
            return self.finish_beacon(env, &[]);
        }
        self.beacon = true;
        Action::Pause
    }

    /// A chunk of a beacon's body (`buffered` bytes so far): Envoy buffers it until the last one.
    pub(super) fn beacon_body<H: StreamHost>(&mut self, env: &Env<H>, buffered: usize, end_of_stream: bool) -> Action {
        let limit = env.plugin.config().vitals.as_ref().map_or(0, |v| v.max_body_bytes as usize);
        if buffered > limit {
            self.beacon = false;
            return refuse(env, Rejection::TooLarge);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.beacon = false;
        self.finish_beacon(env, &env.host.request_body(buffered))
    }

    /// A whole beacon: within the rate limit, well formed, of a user whose version is known.
    fn finish_beacon<H: StreamHost>(&mut self, env: &Env<H>, body: &[u8]) -> Action {
        let coordinator = env.coordinator;
        let Some(vitals) = env.plugin.config().vitals.as_ref() else { return Action::Continue };
        if !coordinator.admit_beacon(env.host, vitals.max_per_second) {
            return refuse(env, Rejection::RateLimited);
        }
        let mut reports = Vec::new();
        if let Err(rejection) = beacon::read(body, &mut reports) {
            return refuse(env, rejection);
        }
        beacon::keep_one_page(&mut reports);
        // The version this request would be routed to; a user the filter cannot place (a fresh
        // random bucket, or the mesh's choice with no pin) has none.
        let decision = self.decide(env);
        let version = decision.version.filter(|_| !matches!(decision.reason, Reason::Random | Reason::Mesh));
        let Some(version) = version else { return refuse(env, Rejection::NoVersion) };
        coordinator.record_beacon(version, &reports);
        if let Some(ids) = env.metrics.vitals() {
            ids.record(env.host, version, &reports);
        }
        env.host.send_response(204, &[("cache-control", "no-store")], b"");
        Action::Pause
    }
}

/// Refuses a beacon: counted by reason, answered with the reason's status.
pub fn refuse<H: StreamHost>(env: &Env<H>, rejection: Rejection) -> Action {
    if let Some(ids) = env.metrics.vitals() {
        ids.reject(env.host, rejection);
    }
    let config = env.plugin.config();
    log::debug!("{}: beacon refused ({}), answered {}", config.service, rejection.as_str(), rejection.status());
    env.host.send_response(rejection.status(), &[("cache-control", "no-store")], b"");
    Action::Pause
}
