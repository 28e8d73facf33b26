//! The beacons of a VM waiting for their body ([`crate::filter::beacon`]): a beacon whose body
//! does not come in time is answered from the VM's tick.

use super::host::{self, ProxyHost};
use super::Plugin;
use crate::measure::beacon::{self, Pending, Rejection};
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
    pub fn add(&self, context_id: u32, now_us: u64) {
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
    pub fn body_seen(&self) {
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
            let service = &plugin.filter.config().service;
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
