//! The `vitals` endpoint: a `POST` of web-vitals reports, answered by the filter itself and
//! never forwarded. The reports come in the body, buffered by Envoy until it ends (or passes the
//! limit), or in the query parameter `beacon` (for proxies whose Wasm plugin configuration
//! cannot set `allow_on_headers_stop_iteration`, such as Istio's WasmPlugin).

use super::host::{self, ProxyHost};
use super::Plugin;
use super::{HostRequestHeaders, Stream};
use crate::measure::beacon::{self, Pending, Rejection};
use crate::model::Reason;
use proxy_wasm::types::Action;
use std::cell::{Cell, RefCell};

/// The beacons of one VM waiting for their body.
#[derive(Default)]
pub struct PendingBeacons {
    table: RefCell<Pending>,
    /// Which of `no_body` and `late_body` were logged (bit per [`Rejection::index`]).
    logged: Cell<u16>,
}

impl PendingBeacons {
    /// Waits for `context_id`'s body.
    fn add(&self, context_id: u32, now_us: u64) {
        if let Ok(mut table) = self.table.try_borrow_mut() {
            table.add(context_id, now_us);
        }
    }

    pub fn remove(&self, context_id: u32) {
        if let Ok(mut table) = self.table.try_borrow_mut() {
            table.remove(context_id);
        }
    }

    /// A beacon body reached the filter: the proxy hands them over.
    fn body_seen(&self) {
        if let Ok(mut table) = self.table.try_borrow_mut() {
            table.bodies_seen = true;
        }
    }

    /// Answers the beacons given up for room and those whose body has not come in time. Called
    /// at the end of a tick: it switches the host's effective context.
    pub fn answer_overdue(&self, plugin: &Plugin, now_us: u64) {
        while let Some(id) = self.table.try_borrow_mut().ok().and_then(|mut t| t.pop_due(now_us)) {
            self.give_up(plugin, id);
        }
    }

    /// Answers a beacon whose body did not come (counted `no_body` or `late_body`), and says once
    /// why. Switches the host's effective context to it.
    fn give_up(&self, plugin: &Plugin, context_id: u32) {
        let rejection = self.table.try_borrow().map_or(Rejection::NoBody, |t| t.rejection());
        let bit = 1 << rejection.index();
        if self.logged.get() & bit == 0 {
            self.logged.set(self.logged.get() | bit);
            let service = &plugin.router.config().service;
            if rejection == Rejection::NoBody {
                log::warn!(
                    "{service}: no web-vitals beacon body has reached the filter yet: without \
                     `allow_on_headers_stop_iteration: true` in the Wasm plugin configuration (Envoy 1.35 or later) \
                     none will; such beacons are answered 204 and dropped"
                );
            } else {
                log::info!(
                    "{service}: a web-vitals beacon body came too late (over {} s after its headers, or more \
                     than {} beacons per worker were waiting): answered 408 and dropped",
                    beacon::BODY_WAIT_US / 1_000_000,
                    beacon::MAX_PENDING
                );
            }
        }
        if proxy_wasm::hostcalls::set_effective_context(context_id).is_ok() {
            if let Some(ids) = plugin.metrics.vitals() {
                ids.reject(&ProxyHost, rejection);
            }
            host::send_response(rejection.status(), &[("cache-control", "no-store")], b"");
        }
    }
}

/// Whether the request path (query aside) is the endpoint's.
pub fn is_endpoint(path: &[u8], endpoint: &str) -> bool {
    path.split(|&b| b == b'?').next() == Some(endpoint.as_bytes())
}

impl Stream {
    /// Request headers of a beacon: refuses what the headers already rule out, else waits for
    /// the body. Never counted as a request.
    pub(super) fn take_beacon(&mut self, path: &[u8], end_of_stream: bool) -> Action {
        self.skipped = true;
        let plugin = self.plugin.clone();
        let Some(vitals) = plugin.router.config().vitals.as_ref() else { return Action::Continue };
        if host::request_header(":method").as_deref() != Some(b"POST") {
            return self.refuse_beacon(Rejection::Method);
        }
        // In the query, it needs no body (nor `allow_on_headers_stop_iteration`).
        match beacon::from_query(path, vitals.max_body_bytes as usize) {
            Some(Ok(body)) => return self.finish_beacon(&body),
            Some(Err(rejection)) => return self.refuse_beacon(rejection),
            None => {}
        }
        let declared = host::request_header("content-length")
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|v| v.trim().parse::<u64>().ok()));
        if declared.is_some_and(|length| length > u64::from(vitals.max_body_bytes)) {
            return self.refuse_beacon(Rejection::TooLarge);
        }
        if end_of_stream {
            return self.finish_beacon(&[]);
        }
        // A full table makes room by giving up its oldest beacon: stalled clients cannot keep
        // others out.
        self.pending.add(self.context_id, self.started_us);
        self.beacon = true;
        Action::Pause
    }

    /// A chunk of a beacon's body: Envoy buffers it until the last one.
    pub(super) fn beacon_body(&mut self, buffered: usize, end_of_stream: bool) -> Action {
        self.pending.body_seen();
        let limit = self.plugin.router.config().vitals.as_ref().map_or(0, |v| v.max_body_bytes as usize);
        if buffered > limit {
            self.end_wait();
            return self.refuse_beacon(Rejection::TooLarge);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.end_wait();
        self.finish_beacon(&host::request_body(buffered))
    }

    /// A whole beacon: within the rate limit, well formed, of a user whose version is known.
    fn finish_beacon(&mut self, body: &[u8]) -> Action {
        let plugin = self.plugin.clone();
        let (router, coordinator) = (&plugin.router, &plugin.coordinator);
        let Some(vitals) = router.config().vitals.as_ref() else { return Action::Continue };
        if !coordinator.admit_beacon(&ProxyHost, vitals.max_per_second) {
            return self.refuse_beacon(Rejection::RateLimited);
        }
        let mut reports = Vec::new();
        if let Err(rejection) = beacon::read(body, &mut reports) {
            return self.refuse_beacon(rejection);
        }
        beacon::keep_one_page(&mut reports);
        // The version this request would be routed to; a user the filter cannot place (a fresh
        // random bucket, or the mesh's choice with no pin) has none.
        let mut rng = self.rng.get();
        let decision = coordinator
            .revisions()
            .with(|table| router.decide_with(&HostRequestHeaders, &mut rng, coordinator.gate_tripped(), table));
        self.rng.set(rng);
        if decision.override_refused || decision.cookie_refused {
            plugin.metrics.note_refused(&ProxyHost, decision.override_refused, decision.cookie_refused);
        }
        let version = decision.version.filter(|_| !matches!(decision.reason, Reason::Random | Reason::Mesh));
        let Some(version) = version else { return self.refuse_beacon(Rejection::NoVersion) };
        coordinator.record_beacon(version, &reports);
        if let Some(ids) = plugin.metrics.vitals() {
            ids.record(&ProxyHost, version, &reports);
        }
        host::send_response(204, &[("cache-control", "no-store")], b"");
        Action::Pause
    }

    /// The body came (or the stream ends): no longer waiting for it.
    pub(super) fn end_wait(&mut self) {
        if std::mem::replace(&mut self.beacon, false) {
            self.pending.remove(self.context_id);
        }
    }

    fn refuse_beacon(&mut self, rejection: Rejection) -> Action {
        if let Some(ids) = self.plugin.metrics.vitals() {
            ids.reject(&ProxyHost, rejection);
        }
        let config = self.plugin.router.config();
        log::debug!("{}: beacon refused ({}), answered {}", config.service, rejection.as_str(), rejection.status());
        host::send_response(rejection.status(), &[("cache-control", "no-store")], b"");
        Action::Pause
    }
}
