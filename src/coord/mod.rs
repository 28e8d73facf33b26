//! Cross-VM coordination of one service. Envoy runs one VM per worker thread (plus one on the
//! main thread); the request path records into its own VM's tallies with no host call, and
//! once a second each VM:
//! 1. ships its tallies through a shared queue ([`wire`]);
//! 2. renews or takes the lease ([`lease`]); the holder merges every VM's tallies into the
//!    rolling window, publishes the window gauges, evaluates the gate and publishes the
//!    verdict in shared data ([`verdict`]);
//! 3. adopts the published verdict for its own requests.
//!
//! Everything goes through the [`Host`] trait, so several fake VMs drive it in tests
//! ([`fake`]).

#[cfg(test)]
pub mod fake;
pub mod lease;
pub mod verdict;
pub mod wire;

use crate::config::{Config, Role};
use crate::gate::Gate;
use crate::host::Host;
use crate::measure::metrics::MetricIds;
use crate::measure::window::{Tally, Window, WindowStats};
use crate::model::Version;
use lease::{should_claim, Lease};
use std::cell::{Cell, RefCell};
use verdict::{identity, SharedVerdict};

/// What one VM keeps for one service and role. Shared by the VM's root contexts (a
/// configuration update creates a new root context in the same VM, and the window must survive
/// it) and its streams.
pub struct Coordinator {
    /// `service/reporter`: names its queue and shared-data keys.
    name: String,
    /// Random id of this VM, for the lease.
    vm_id: u64,
    tallies: RefCell<[Tally; 2]>,
    scratch: RefCell<[Tally; 2]>,
    queue: Cell<Option<u32>>,
    last_tick_s: Cell<u64>,
    /// The merged window and the canary it measures, while this VM holds the lease.
    merged: RefCell<Option<(String, Window)>>,
    /// The gate's evaluation state and the identity it belongs to, while this VM holds the lease.
    gate: RefCell<Option<(u64, Gate)>>,
    /// Whether the published verdict reroutes this service's traffic (read per request).
    gate_tripped: Cell<bool>,
}

impl Coordinator {
    /// The state of `service` as seen by `reporter` (the role's metric label) in VM `vm_id`.
    pub fn new(service: &str, reporter: &str, vm_id: u64) -> Self {
        Coordinator {
            name: format!("{service}/{reporter}"),
            vm_id,
            tallies: RefCell::default(),
            scratch: RefCell::default(),
            queue: Cell::new(None),
            last_tick_s: Cell::new(0),
            merged: RefCell::new(None),
            gate: RefCell::new(None),
            gate_tripped: Cell::new(false),
        }
    }

    /// `service/reporter`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether canary traffic currently goes to stable (request path: one cell read).
    pub fn gate_tripped(&self) -> bool {
        self.gate_tripped.get()
    }

    /// Records one completed request in this VM's tally (request path: no host call).
    pub fn record(&self, version: Version, micros: u64, is_error: bool) {
        if let Ok(mut tallies) = self.tallies.try_borrow_mut() {
            if let Some(t) = tallies.get_mut(version.index()) {
                t.record(micros, is_error);
            }
        }
    }

    /// Once a second per VM: ship, renew or take the lease, and if held, merge, evaluate the
    /// gate and publish; then adopt the published verdict. More calls within the same second
    /// do nothing.
    pub fn tick<H: Host>(&self, host: &H, config: &Config, ids: &MetricIds) {
        let now_s = host.now_micros() / 1_000_000;
        if now_s == self.last_tick_s.get() {
            return;
        }
        self.last_tick_s.set(now_s);
        let queue = self.queue.get().or_else(|| {
            let q = host.register_queue(&format!("canary-gate/{}/tallies", self.name));
            self.queue.set(q);
            q
        });
        let Some(queue) = queue else { return };
        self.ship(host, queue);
        if self.hold_lease(host, now_s) {
            self.merge(host, queue, now_s, config, ids);
        } else {
            if let Ok(mut merged) = self.merged.try_borrow_mut() {
                *merged = None;
            }
            if let Ok(mut gate) = self.gate.try_borrow_mut() {
                *gate = None;
            }
        }
        let verdict = host.shared_data(&self.verdict_key()).0.as_deref().and_then(SharedVerdict::decode);
        let id = identity(&config.canary, config.gate.rearm);
        self.gate_tripped.set(!config.gate.dry_run && verdict.is_some_and(|v| v.trips(id)));
    }

    fn verdict_key(&self) -> String {
        format!("canary-gate/{}/verdict", self.name)
    }

    fn ship(&self, host: &impl Host, queue: u32) {
        let Ok(mut tallies) = self.tallies.try_borrow_mut() else { return };
        if tallies.iter().all(Tally::is_empty) {
            return;
        }
        if !host.enqueue(queue, &wire::encode(&tallies)) {
            log::warn!("cannot ship window data for {}", self.name);
        }
        for t in tallies.iter_mut() {
            t.clear();
        }
    }

    fn hold_lease(&self, host: &impl Host, now_s: u64) -> bool {
        let key = format!("canary-gate/{}/leader", self.name);
        let (value, cas) = host.shared_data(&key);
        let current = value.as_deref().and_then(Lease::decode);
        if !should_claim(current, self.vm_id, now_s) {
            return false;
        }
        if !host.set_shared_data(&key, &Lease { holder: self.vm_id, renewed_s: now_s }.encode(), cas) {
            return false;
        }
        // Two VMs that found no lease at all may both have written: the last write wins.
        let (value, _) = host.shared_data(&key);
        let held = value.as_deref().and_then(Lease::decode).is_some_and(|l| l.holder == self.vm_id);
        if held && current.is_none_or(|l| l.holder != self.vm_id) {
            log::info!("this VM ({}) takes the window lease of {}", self.vm_id, self.name);
        }
        held
    }

    fn merge(&self, host: &impl Host, queue: u32, now_s: u64, config: &Config, ids: &MetricIds) {
        let (Ok(mut merged), Ok(mut scratch)) = (self.merged.try_borrow_mut(), self.scratch.try_borrow_mut()) else {
            return;
        };
        // A new canary or a new window length starts a new window.
        let window_s = config.merged_window_s() as usize;
        let window = match merged.as_mut() {
            Some((canary, w)) if w.len_s() == window_s && *canary == config.canary => w,
            _ => &mut merged.insert((config.canary.clone(), Window::new(window_s))).1,
        };
        window.advance_to(now_s);
        while let Some(message) = host.dequeue(queue) {
            if wire::decode_into(&message, &mut scratch) {
                for version in Version::BOTH {
                    if let Some(t) = scratch.get(version.index()) {
                        window.add(version, t);
                    }
                }
            } else {
                log::warn!("dropped a malformed window message for {}", self.name);
            }
        }
        for version in Version::BOTH {
            ids.set_window(host, version, &window.recent_stats(version, config.metrics.window_s as usize));
        }
        if config.role == Role::Observer {
            return;
        }
        let gate_s = config.gate.window_s as usize;
        let (canary, stable) =
            (window.recent_stats(Version::Canary, gate_s), window.recent_stats(Version::Stable, gate_s));
        self.evaluate_gate(host, config, ids, &canary, &stable);
    }

    /// Evaluates the gate on the merged window and publishes the verdict.
    fn evaluate_gate(
        &self,
        host: &impl Host,
        config: &Config,
        ids: &MetricIds,
        canary: &WindowStats,
        stable: &WindowStats,
    ) {
        let Ok(mut slot) = self.gate.try_borrow_mut() else { return };
        let id = identity(&config.canary, config.gate.rearm);
        let key = self.verdict_key();
        let gate = match slot.as_mut() {
            Some((held, gate)) if *held == id => gate,
            _ => {
                // Taking over (or a new canary, or a re-arm): a trip already published for this
                // identity stays latched.
                let published = host.shared_data(&key).0.as_deref().and_then(SharedVerdict::decode);
                let gate = if published.is_some_and(|v| v.trips(id)) { Gate::latched() } else { Gate::default() };
                &mut slot.insert((id, gate)).1
            }
        };
        let evaluation = gate.evaluate(&config.gate, canary, stable);
        if evaluation.tripped_now {
            let g = &config.gate;
            let action = if g.dry_run { "dry run, routing unchanged" } else { "routing canary traffic to stable" };
            log::warn!(
                "gate tripped for {} canary `{}`: {} in the last {} s ({} requests), {} evaluations in a row; {action}",
                config.service,
                config.canary,
                evaluation.breaches,
                g.window_s,
                canary.requests,
                g.consecutive
            );
        }
        ids.set_gate(host, evaluation.state, evaluation.tripped_now);
        let verdict = SharedVerdict { state: evaluation.state, identity: id };
        if !host.set_shared_data(&key, &verdict.encode(), None) {
            log::warn!("cannot publish the gate verdict for {}", config.service);
        }
    }
}

#[cfg(test)]
mod tests;
