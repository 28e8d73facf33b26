//! Per-VM state of a service, shared by its root contexts (a configuration update creates a
//! new root context in the same VM, and the window must survive it):
//! the request path records into this VM's tallies; once a second each VM ships them through
//! a shared queue, and the VM holding the lease merges everything into the rolling window and
//! publishes the window gauges.

use super::host;
use super::metrics::MetricIds;
use crate::config::{Config, Role};
use crate::gate::{identity, Gate, SharedVerdict};
use crate::leader::{should_claim, Lease};
use crate::route::Version;
use crate::window::{slot_of, Tally, Window, WindowStats};
use crate::wire;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

thread_local! {
    /// One entry per configured service in this VM: bounded by configuration.
    static SERVICES: RefCell<Vec<Rc<ServiceState>>> = const { RefCell::new(Vec::new()) };
    /// Random id of this VM for the lease.
    static VM_ID: Cell<u64> = const { Cell::new(0) };
}

/// Sets this VM's lease id (once, at VM start).
pub fn set_vm_id(id: u64) {
    VM_ID.with(|v| v.set(id));
}

/// The state of `service` as seen by `role` (its `reporter` label) in this VM, created on
/// first use.
pub fn service_state(service: &str, reporter: &str) -> Rc<ServiceState> {
    let name = format!("{service}/{reporter}");
    SERVICES.with(|services| {
        let mut services = services.borrow_mut();
        if let Some(existing) = services.iter().find(|s| s.service == name) {
            return existing.clone();
        }
        let state = Rc::new(ServiceState::new(&name));
        services.push(state.clone());
        state
    })
}

/// What one VM keeps for one service and role.
pub struct ServiceState {
    /// `service/reporter`: names its queue and shared-data keys.
    service: String,
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

impl ServiceState {
    fn new(service: &str) -> Self {
        ServiceState {
            service: service.to_string(),
            tallies: RefCell::default(),
            scratch: RefCell::default(),
            queue: Cell::new(None),
            last_tick_s: Cell::new(0),
            merged: RefCell::new(None),
            gate: RefCell::new(None),
            gate_tripped: Cell::new(false),
        }
    }

    /// Whether canary traffic currently goes to stable (request path: one cell read).
    pub fn gate_tripped(&self) -> bool {
        self.gate_tripped.get()
    }

    /// Records one completed request in this VM's tally (request path: no host call).
    pub fn record(&self, version: Version, micros: u64, is_error: bool) {
        if let Ok(mut tallies) = self.tallies.try_borrow_mut() {
            if let Some(t) = tallies.get_mut(slot_of(version)) {
                t.record(micros, is_error);
            }
        }
    }

    /// Once a second per VM: ship, renew or take the lease, and if held, merge, evaluate the
    /// gate and publish; then adopt the published verdict.
    pub fn tick(&self, now_s: u64, config: &Config, ids: &MetricIds) {
        if now_s == self.last_tick_s.get() {
            return;
        }
        self.last_tick_s.set(now_s);
        ids.note_vm_memory();
        let queue = self.queue.get().or_else(|| {
            let q = host::register_queue(&format!("canary-gate/{}/tallies", self.service));
            self.queue.set(q);
            q
        });
        let Some(queue) = queue else { return };
        self.ship(queue);
        if self.hold_lease(now_s) {
            self.merge(queue, now_s, config, ids);
        } else {
            if let Ok(mut merged) = self.merged.try_borrow_mut() {
                *merged = None;
            }
            if let Ok(mut gate) = self.gate.try_borrow_mut() {
                *gate = None;
            }
        }
        let verdict = host::shared_data(&self.verdict_key()).0.as_deref().and_then(SharedVerdict::decode);
        let id = identity(&config.canary, config.gate.rearm);
        self.gate_tripped.set(!config.gate.dry_run && verdict.is_some_and(|v| v.trips(id)));
    }

    fn verdict_key(&self) -> String {
        format!("canary-gate/{}/verdict", self.service)
    }

    fn ship(&self, queue: u32) {
        let Ok(mut tallies) = self.tallies.try_borrow_mut() else { return };
        if tallies.iter().all(Tally::is_empty) {
            return;
        }
        if !host::enqueue(queue, &wire::encode(&tallies)) {
            log::warn!("cannot ship window data for {}", self.service);
        }
        for t in tallies.iter_mut() {
            t.clear();
        }
    }

    fn hold_lease(&self, now_s: u64) -> bool {
        let key = format!("canary-gate/{}/leader", self.service);
        let me = VM_ID.with(Cell::get);
        let (value, cas) = host::shared_data(&key);
        if !should_claim(value.as_deref().and_then(Lease::decode), me, now_s) {
            return false;
        }
        if !host::set_shared_data(&key, &Lease { holder: me, renewed_s: now_s }.encode(), cas) {
            return false;
        }
        // Two VMs that found no lease at all may both have written: the last write wins.
        let (value, _) = host::shared_data(&key);
        value.as_deref().and_then(Lease::decode).is_some_and(|l| l.holder == me)
    }

    fn merge(&self, queue: u32, now_s: u64, config: &Config, ids: &MetricIds) {
        let (Ok(mut merged), Ok(mut scratch)) = (self.merged.try_borrow_mut(), self.scratch.try_borrow_mut()) else {
            return;
        };
        // A new canary or a new window length starts a new window.
        let window_s = config.window_s.max(config.gate.window_s) as usize;
        let window = match merged.as_mut() {
            Some((canary, w)) if w.len_s() == window_s && *canary == config.canary => w,
            _ => &mut merged.insert((config.canary.clone(), Window::new(window_s))).1,
        };
        window.advance_to(now_s);
        while let Some(message) = host::dequeue(queue) {
            if wire::decode_into(&message, &mut scratch) {
                for version in [Version::Stable, Version::Canary] {
                    if let Some(t) = scratch.get(slot_of(version)) {
                        window.add(version, t);
                    }
                }
            } else {
                log::warn!("dropped a malformed window message for {}", self.service);
            }
        }
        for version in [Version::Stable, Version::Canary] {
            ids.set_window(version, &window.recent_stats(version, config.window_s as usize));
        }
        if config.role == Role::Observer {
            return;
        }
        let gate_s = config.gate.window_s as usize;
        let (canary, stable) =
            (window.recent_stats(Version::Canary, gate_s), window.recent_stats(Version::Stable, gate_s));
        self.evaluate_gate(config, ids, &canary, &stable);
    }

    /// Evaluates the gate on the merged window and publishes the verdict.
    fn evaluate_gate(&self, config: &Config, ids: &MetricIds, canary: &WindowStats, stable: &WindowStats) {
        let Ok(mut slot) = self.gate.try_borrow_mut() else { return };
        let id = identity(&config.canary, config.gate.rearm);
        let key = self.verdict_key();
        let gate = match slot.as_mut() {
            Some((held, gate)) if *held == id => gate,
            _ => {
                // Taking over (or a new canary, or a re-arm): a trip already published for this
                // identity stays latched.
                let published = host::shared_data(&key).0.as_deref().and_then(SharedVerdict::decode);
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
        ids.set_gate(evaluation.state, evaluation.tripped_now);
        let verdict = SharedVerdict { state: evaluation.state, identity: id };
        if !host::set_shared_data(&key, &verdict.encode(), None) {
            log::warn!("cannot publish the gate verdict for {}", config.service);
        }
    }
}
