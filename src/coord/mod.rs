//! Cross-VM coordination of one service. Envoy runs one VM per worker thread (plus one on the
//! main thread); the request path records into its own VM's tallies with no host call, and
//! every evaluation period (`gate.eval_ms`; a second for observers) each VM:
//! 1. ships its tallies through a shared queue ([`wire`]);
//! 2. renews or takes the lease ([`lease`]); the holder merges every VM's tallies into the
//!    rolling window, runs the gate's comparison on the period's counts and publishes the
//!    verdict in shared data ([`verdict`]); once a second it also publishes the window gauges
//!    and evaluates the gate's thresholds on the completed seconds;
//! 3. adopts the published verdict for its own requests.
//!
//! Everything goes through the [`Host`] trait, so several fake VMs drive it in tests
//! (`host::fake`).

pub mod beacons;
pub mod fleet;
pub mod lease;
pub mod revisions;
pub mod verdict;
pub mod wire;

use crate::config::{Config, Role, SplitMode};
use crate::gate::compare::{Compare, PeriodCounts};
use crate::gate::{Check, Evaluation, Gate};
use crate::host::Host;
use crate::measure::beacon::Report;
use crate::measure::metrics::MetricIds;
use crate::measure::report::{self, Reporter};
use crate::measure::vitals::{self, VitalsStats};
use crate::measure::weight::Weights;
use crate::measure::window::{lane, Completed, Tally, Users, Window};
use crate::model::{GateState, Revision, Version};
use beacons::BeaconBudget;
use fleet::{FleetMerge, FleetView, Inbox};
use lease::{should_claim, Lease};
use revisions::SharedRevisions;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use verdict::{identity, SharedVerdict};

/// What one VM keeps across its root contexts. Envoy starts a new root context in the same VM
/// for every configuration update (and calls its `on_vm_start` again): the VM's lease id and
/// its coordinators must outlive them, or the lease holder would lose its own lease and its
/// window with every update.
#[derive(Default)]
pub struct VmState {
    vm_id: Cell<u64>,
    /// One per configured service and role: bounded by configuration.
    coordinators: RefCell<Vec<Rc<Coordinator>>>,
}

impl VmState {
    /// A root context started with a random `seed`: the first one names the VM for good.
    pub fn start(&self, seed: u64) {
        if self.vm_id.get() == 0 {
            self.vm_id.set(seed.max(1));
        }
    }

    /// This VM's lease id (0 before the first start).
    pub fn vm_id(&self) -> u64 {
        self.vm_id.get()
    }

    /// The coordinator of `service` as measured by `measures` ([`crate::config::Config::measures`])
    /// in this VM, created on first use.
    pub fn coordinator(&self, service: &str, measures: &str) -> Rc<Coordinator> {
        let mut all = self.coordinators.borrow_mut();
        if let Some(existing) = all.iter().find(|c| c.is(service, measures)) {
            return existing.clone();
        }
        let created = Rc::new(Coordinator::new(service, measures, self.vm_id.get()));
        all.push(created.clone());
        created
    }
}

/// What one VM keeps for one service and role. Shared by the VM's root contexts (a
/// configuration update creates a new root context in the same VM, and the window must survive
/// it) and its streams.
pub struct Coordinator {
    /// `service/measures`: names its queue and shared-data keys.
    name: String,
    /// Random id of this VM, for the lease.
    vm_id: u64,
    /// Router: the stamp of this VM's request tags, which observers echo (from the VM's random
    /// id; stays in the proxy and the observers).
    stamp: u64,
    /// Per lane (version and route class); grown to the configuration's classes on first use.
    tallies: RefCell<Vec<Tally>>,
    /// Router with a gate: what each user may still weigh in it.
    weights: RefCell<Weights>,
    /// The gate identity this VM's tallies are being recorded under (set at each tick).
    recording_identity: Cell<Option<u64>>,
    scratch: RefCell<Tally>,
    queue: Cell<Option<u32>>,
    /// Per vitals lane (version and [`vitals::LANES`]): the beacons' reports since the last
    /// shipment, shipped on their own queue.
    vital_tallies: RefCell<Vec<Tally>>,
    vitals_queue: Cell<Option<u32>>,
    /// This VM's share of the beacon rate limit.
    beacons: Cell<BeaconBudget>,
    /// The evaluation periods of the last shipment, merge and verdict read.
    shipped_period: Cell<u64>,
    merged_period: Cell<u64>,
    read_period: Cell<u64>,
    /// Whether this VM held the lease at its last shipment.
    leader: Cell<bool>,
    /// The second the revision table was last shown in `canary_revision_info`.
    revisions_shown_s: Cell<u64>,
    /// The second the canary subset was last probed.
    probed_s: Cell<u64>,
    /// The merged window and the canary it measures (name, and the identity of its gate),
    /// while this VM holds the lease.
    merged: RefCell<Option<Merged>>,
    /// The gate's evaluation state and the identity it belongs to, while this VM holds the lease.
    gate: RefCell<Option<(u64, Gate)>>,
    /// Whether the published verdict reroutes this service's traffic (read per request).
    gate_tripped: Cell<bool>,
    /// Mesh-mode routers: the revisions serving the subsets.
    revisions: SharedRevisions,
    /// Routers with `gate.fleet`: the reports heard since the last shipment.
    inbox: Inbox,
    fleet_queue: Cell<Option<u32>>,
    /// The fleet's merged reports, while this VM holds the lease.
    fleet: RefCell<Option<FleetMerge>>,
    /// The report the revision probe's last answer carried, for the next merge.
    probed: Cell<Option<report::Report>>,
    /// Inbound observers: this VM's cumulative counts, and its pod's key.
    reporter: Cell<Reporter>,
    pod: Cell<u64>,
}

impl Coordinator {
    /// The state of `service` as measured by `measures` (`router`, `observer`,
    /// `observer-outbound`) in VM `vm_id`.
    pub fn new(service: &str, measures: &str, vm_id: u64) -> Self {
        let name = format!("{service}/{measures}");
        Coordinator {
            stamp: xxhash_rust::xxh3::xxh3_64_with_seed(name.as_bytes(), vm_id) & report::KEY_MASK,
            name,
            vm_id,
            tallies: RefCell::default(),
            weights: RefCell::default(),
            recording_identity: Cell::new(None),
            scratch: RefCell::default(),
            queue: Cell::new(None),
            vital_tallies: RefCell::default(),
            vitals_queue: Cell::new(None),
            beacons: Cell::default(),
            shipped_period: Cell::new(0),
            merged_period: Cell::new(0),
            read_period: Cell::new(0),
            leader: Cell::new(false),
            revisions_shown_s: Cell::new(0),
            probed_s: Cell::new(0),
            merged: RefCell::new(None),
            gate: RefCell::new(None),
            gate_tripped: Cell::new(false),
            revisions: SharedRevisions::new(&format!("{service}/{measures}")),
            inbox: Inbox::default(),
            fleet_queue: Cell::new(None),
            fleet: RefCell::new(None),
            probed: Cell::new(None),
            reporter: Cell::default(),
            pod: Cell::new(0),
        }
    }

    /// Router: the stamp an observer's answer must echo for this VM to believe its revision
    /// and report.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Router: the report text (empty without a report) of an observer's answer that echoes
    /// this VM's stamp; `None` for any other answer, which teaches nothing.
    pub fn own_answer<'a>(&self, answer: &'a [u8]) -> Option<&'a [u8]> {
        let (report, stamp) = report::split_answer(answer);
        (stamp == Some(self.stamp)).then_some(report)
    }

    /// The revisions serving the subsets, as this VM knows them.
    pub fn revisions(&self) -> &SharedRevisions {
        &self.revisions
    }

    /// Whether this is the coordinator of `service` as measured by `measures`.
    pub fn is(&self, service: &str, measures: &str) -> bool {
        self.name.strip_prefix(service).and_then(|r| r.strip_prefix('/')) == Some(measures)
    }

    /// Whether canary traffic currently goes to stable (request path: one cell read).
    pub fn gate_tripped(&self) -> bool {
        self.gate_tripped.get()
    }

    /// Whether one more beacon fits `vitals.max_per_second` in the proxy's count for this
    /// second; counts it if so (shared data, [`beacons`]).
    pub fn admit_beacon(&self, host: &impl Host, limit: u32) -> bool {
        let mut budget = self.beacons.get();
        let key = format!("canary-gate/{}/beacons", self.name);
        let admitted = budget.admit(host, &key, host.now_micros() / 1_000_000, u64::from(limit));
        self.beacons.set(budget);
        admitted
    }

    /// Records a taken beacon's reports for `version` in this VM's vitals tally (no host call).
    pub fn record_beacon(&self, version: Version, reports: &[Report]) {
        if let Ok(mut tallies) = self.vital_tallies.try_borrow_mut() {
            vitals::tally(&mut tallies, version, reports);
        }
    }

    /// Keeps a fleet report a response carried, for the next shipment (request path: no host
    /// call).
    pub fn hear_report(&self, report: report::Report, config: &crate::config::FleetConfig) {
        self.inbox.hear(report, config);
    }

    /// Keeps the report of the revision probe's answer, for the next merge in this VM (the one
    /// that probed: the lease holder).
    pub fn hear_probe_report(&self, report: report::Report) {
        self.probed.set(Some(report));
    }

    /// Inbound observer: records one completed request in this VM's report (request path: no
    /// host call).
    pub fn record_for_report(
        &self,
        micros: u64,
        is_error: bool,
        user: Users,
        limits_us: &[u64; report::LIMITS],
        now_s: u64,
    ) {
        let mut reporter = self.reporter.get();
        reporter.record(micros, is_error, user, limits_us, now_s);
        self.reporter.set(reporter);
    }

    /// Inbound observer: this VM's report for a response, serving `revision` (request path: no
    /// host call); `None` until the pod's key is known, so a pod is never heard as two.
    pub fn report(&self, revision: Revision, now_s: u64) -> Option<report::Report> {
        let pod = Some(self.pod.get()).filter(|&pod| pod != 0)?;
        Some(self.reporter.get().report(pod, self.vm_id, revision, now_s))
    }

    /// Whether the gate weighs a request of `user` (a bucket, or `u64::MAX` for the testers'
    /// overrides) completing at `now_ms`, `bad` or not; takes its share of the user's weight if
    /// so ([`Weights`]; request path: no host call).
    pub fn weighs(&self, user: u64, now_ms: u64, bad: bool) -> bool {
        self.weights.try_borrow_mut().map_or(true, |mut w| w.admit(user, now_ms, bad))
    }

    /// Records one completed request of `version` in route class `class` in this VM's tally
    /// (request path: no host call).
    pub fn record(&self, version: Version, class: usize, completed: &Completed) {
        if let Ok(mut tallies) = self.tallies.try_borrow_mut() {
            let lane = lane(version, class);
            if lane >= tallies.len() && lane < wire::MAX_LANES {
                // Once per lane and VM: the classes come from the configuration.
                tallies.resize_with(lane + 1, Tally::default);
            }
            if let Some(t) = tallies.get_mut(lane) {
                t.record(completed);
            }
        }
    }

    /// Every evaluation period, in three steps at fixed offsets into the period (wall clock,
    /// so every VM of the proxy agrees): at its start each VM ships its tallies and renews or
    /// takes the lease; at [`MERGE_OFFSET`] the holder merges what was shipped, evaluates the
    /// gate and publishes the verdict; at [`READ_OFFSET`] every VM adopts the verdict. A tick
    /// late in a period does the steps still due, in order. Returns the milliseconds until the
    /// next step, the tick period to ask the host for.
    pub fn tick<H: Host>(&self, host: &H, config: &Config, ids: &MetricIds) -> u64 {
        let period_ms = u64::from(config.eval_period_ms()).max(1);
        let now_us = host.now_micros();
        let (now_ms, now_s) = (now_us / 1_000, now_us / 1_000_000);
        let (period, phase) = (now_ms / period_ms, now_ms % period_ms);
        let (merge_at, read_at) =
            (period_ms * MERGE_OFFSET.0 / MERGE_OFFSET.1, period_ms * READ_OFFSET.0 / READ_OFFSET.1);
        let next = if phase < merge_at {
            merge_at - phase
        } else if phase < read_at {
            read_at - phase
        } else {
            period_ms - phase
        };
        let queue = self.queue.get().or_else(|| {
            let q = host.register_queue(&format!("canary-gate/{}/tallies", self.name));
            self.queue.set(q);
            q
        });
        let Some(queue) = queue else { return next };
        let mesh_router = config.role == Role::Router && config.split.mode == SplitMode::Mesh;
        if self.shipped_period.replace(period) != period {
            if mesh_router {
                self.revisions.sync(host);
                if now_s != self.revisions_shown_s.replace(now_s) {
                    self.revisions.show(host, config, ids);
                }
            }
            let id = self.gate_identity(config, mesh_router);
            let recorded_under = self.recording_identity.replace(Some(id)).unwrap_or(id);
            self.ship(host, queue, &self.tallies, config.classes.len() + 1, recorded_under);
            if config.vitals.is_some() {
                if let Some(vitals_queue) = self.vitals_queue(host) {
                    self.ship(host, vitals_queue, &self.vital_tallies, vitals::LANES, recorded_under);
                }
            }
            if config.role == Role::Router && config.gate.fleet.is_some() {
                if let Some(fleet_queue) = self.fleet_queue(host) {
                    if !self.inbox.ship(host, fleet_queue) {
                        log::warn!("cannot ship fleet reports for {}", self.name);
                    }
                }
            }
            if config.role == Role::Observer && config.direction == "inbound" {
                self.resolve_pod(host);
            }
            self.leader.set(self.hold_lease(host, now_s));
            if !self.leader.get() {
                if let Ok(mut merged) = self.merged.try_borrow_mut() {
                    *merged = None;
                }
                if let Ok(mut fleet) = self.fleet.try_borrow_mut() {
                    *fleet = None;
                }
                if let Ok(mut gate) = self.gate.try_borrow_mut() {
                    *gate = None;
                }
            }
        }
        let id = self.recording_identity.get().unwrap_or_default();
        if phase >= merge_at && self.leader.get() && self.merged_period.replace(period) != period {
            if let Ok(mut slot) = self.merged.try_borrow_mut() {
                if let Some(merged) = self.merge(host, queue, &mut slot, now_s, id, config) {
                    let completed = merged.shown_s != now_s;
                    if config.role == Role::Router {
                        let head_s = if completed { now_s.saturating_sub(1) } else { now_s };
                        let view = self.merge_fleet(host, config, ids, (now_us / 1_000, head_s), id, completed);
                        self.evaluate_gate(host, id, config, ids, merged, completed, view);
                    }
                    if completed {
                        // The gauges show the completed seconds; then the window moves on.
                        for version in Version::BOTH {
                            for class in 0..merged.window.classes() {
                                let stats = merged.window.class_stats(version, class, config.metrics.window_s as usize);
                                ids.set_window(host, version, class, &stats);
                            }
                            if let (Some(window), Some(vitals_ids)) = (&mut merged.vitals, ids.vitals()) {
                                let figures = VitalsStats::of(window, version, config.metrics.window_s as usize);
                                vitals_ids.set_window(host, version, &figures);
                            }
                        }
                        merged.window.advance_to(now_s);
                        if let Some(vitals) = &mut merged.vitals {
                            vitals.advance_to(now_s);
                        }
                        merged.shown_s = now_s;
                    }
                }
            }
        }
        if phase >= read_at && self.read_period.replace(period) != period {
            // The verdict applies to the canary this VM routes to now: a revision the holder
            // learned since the shipment must not clear the trip of the one still pinned here.
            if mesh_router {
                self.revisions.sync(host);
            }
            let id = self.gate_identity(config, mesh_router);
            let verdict = host.shared_data(&self.verdict_key()).0.as_deref().and_then(SharedVerdict::decode);
            self.gate_tripped.set(!config.gate.dry_run && verdict.is_some_and(|v| v.trips(id)));
            // A tripped gate sends no user to the canary subset, so no response would tell of
            // a new canary revision: the leader asks the subset once a second. With `fleet`, a
            // canary that served this router no response in the period (weight 0, mirrored
            // copies only, or tripped) is asked for its report too, once a period.
            if mesh_router && self.leader.get() {
                let tripped = self.gate_tripped.get() && now_s != self.probed_s.get();
                let unheard = config.gate.fleet.is_some()
                    && !self.fleet.try_borrow().is_ok_and(|f| f.as_ref().is_some_and(FleetMerge::heard_canary));
                if tripped || unheard {
                    self.probed_s.set(now_s);
                    self.probe_canary(host, config);
                }
            }
        }
        next
    }

    /// The identity a trip is latched to: the canary's revision when observers name it (mesh
    /// mode), so a new canary revision starts with a clear gate; else its name; and `rearm`.
    fn gate_identity(&self, config: &Config, mesh_router: bool) -> u64 {
        let canary_revision = self.revisions.with(|r| r.serving(Version::Canary)).filter(|_| mesh_router);
        let subject = canary_revision.as_ref().map_or(config.canary.as_str(), |r| r.as_str());
        identity(subject, config.gate.rearm)
    }

    /// Sends the revision probe to the canary subset's cluster, if one is known, tagged with
    /// this VM's stamp (an observer answers only a router), and with `fleet` asking for the
    /// observer's report.
    fn probe_canary(&self, host: &impl Host, config: &Config) {
        let Some(cluster) = self.revisions.canary_cluster(host) else { return };
        // Istio's `outbound|PORT|SUBSET|HOST`: the service's host name; else the service.
        let authority = cluster.rsplit('|').next().filter(|_| cluster.contains('|')).unwrap_or(&config.service);
        let report = config.gate.fleet.is_some();
        let limits_us = if report { fleet::tag_limits(config) } else { [0; report::LIMITS] };
        let tag = report::Tag { report, user: None, limits_us, stamp: Some(self.stamp) }.encode();
        let headers = [(report::TAG_HEADER, tag.as_str())];
        if !host.http_get(&cluster, authority, &config.revision_probe_path, &headers, PROBE_TIMEOUT_MS) {
            log::debug!("cannot probe {cluster} for its revision");
        }
    }

    fn fleet_queue(&self, host: &impl Host) -> Option<u32> {
        self.fleet_queue.get().or_else(|| {
            let q = host.register_queue(&format!("canary-gate/{}/fleet", self.name));
            self.fleet_queue.set(q);
            q
        })
    }

    /// Inbound observer: the key of this pod's reports, the first any of its VMs chose (shared
    /// data: at configuration, then once a period).
    pub fn resolve_pod(&self, host: &impl Host) {
        let key = "canary-gate/pod";
        let read = |host: &dyn Fn(&str) -> Option<Vec<u8>>| {
            host(key).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).filter(|&pod| pod != 0)
        };
        let get = |k: &str| host.shared_data(k).0;
        let pod = match read(&get) {
            Some(pod) => pod,
            None => {
                let mine = (self.vm_id & report::KEY_MASK).max(1);
                host.set_shared_data(key, &mine.to_le_bytes(), None);
                read(&get).unwrap_or(mine)
            }
        };
        self.pod.set(pod & report::KEY_MASK);
    }

    /// Leader, with `gate.fleet`: takes the period's reports and publishes the pods heard from
    /// (once a second); the fleet's figures if fresh.
    fn merge_fleet(
        &self,
        host: &impl Host,
        config: &Config,
        ids: &MetricIds,
        (now_ms, head_s): (u64, u64),
        id: u64,
        completed: bool,
    ) -> Option<FleetView> {
        let fleet_config = config.gate.fleet.as_ref()?;
        let queue = self.fleet_queue(host)?;
        let mut slot = self.fleet.try_borrow_mut().ok()?;
        let window_s = config.gate.window_s as usize;
        if !slot.as_ref().is_some_and(|f| f.fits(window_s)) {
            *slot = Some(FleetMerge::new(window_s));
        }
        let fleet = slot.as_mut()?;
        let serving = self.revisions.with(|r| [r.serving(Version::Stable), r.serving(Version::Canary)]);
        fleet.merge(host, queue, (now_ms, head_s), (serving, id), self.probed.take(), fleet_config);
        if completed {
            ids.set_fleet_pods(host, fleet.pods(serving));
        }
        fleet.view(serving, &config.service)
    }

    fn verdict_key(&self) -> String {
        format!("canary-gate/{}/verdict", self.name)
    }

    fn vitals_queue(&self, host: &impl Host) -> Option<u32> {
        self.vitals_queue.get().or_else(|| {
            let q = host.register_queue(&format!("canary-gate/{}/vitals", self.name));
            self.vitals_queue.set(q);
            q
        })
    }

    fn ship(&self, host: &impl Host, queue: u32, tallies: &RefCell<Vec<Tally>>, classes: usize, identity: u64) {
        let Ok(mut tallies) = tallies.try_borrow_mut() else { return };
        if tallies.iter().all(Tally::is_empty) {
            return;
        }
        if !host.enqueue(queue, &wire::encode(&tallies, classes, identity)) {
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

    /// Merges the shipped tallies into the window of the canary with gate identity `id`, and
    /// sums this period's counts for the comparison. Data merged in the first period of a
    /// second still goes to the second before (it was mostly recorded then): the window's head
    /// moves on only once that second is published.
    fn merge<'m>(
        &self,
        host: &impl Host,
        queue: u32,
        slot: &'m mut Option<Merged>,
        now_s: u64,
        id: u64,
        config: &Config,
    ) -> Option<&'m mut Merged> {
        let Ok(mut scratch) = self.scratch.try_borrow_mut() else { return None };
        // A new canary or a new window length starts a new window; a re-arm starts a clean
        // canary side, so the re-armed gate never judges the errors that tripped it.
        let window_s = config.merged_window_s() as usize;
        let classes = config.classes.len() + 1;
        let fits = |m: &Merged| {
            m.window.len_s() == window_s
                && m.window.classes() == classes
                && m.canary == config.canary
                && m.vitals.is_some() == config.vitals.is_some()
        };
        if !slot.as_ref().is_some_and(fits) {
            *slot = Some(Merged {
                canary: config.canary.clone(),
                identity: id,
                window: Window::new(window_s, classes),
                vitals: config.vitals.as_ref().map(|_| Window::new(window_s, vitals::LANES)),
                period: PeriodCounts::default(),
                // Published at once: the first data goes to the second before.
                shown_s: now_s.saturating_sub(1),
            });
        }
        let merged = slot.as_mut()?;
        if merged.identity != id {
            merged.identity = id;
            merged.window.clear(Version::Canary);
            if let Some(vitals) = &mut merged.vitals {
                vitals.clear(Version::Canary);
            }
        }
        // The first period of a new second merges into the second before.
        let head_s = if merged.shown_s == now_s { now_s } else { now_s.saturating_sub(1) };
        merged.window.advance_to(head_s);
        if let Some(vitals) = &mut merged.vitals {
            vitals.advance_to(head_s);
            if let Some(vitals_queue) = self.vitals_queue(host) {
                self.drain(host, (vitals_queue, "vitals"), &mut scratch, vitals::LANES, id, |version, lane, tally| {
                    vitals.add(version, lane, tally);
                });
            }
        }
        let (window, period) = (&mut merged.window, &mut merged.period);
        *period = PeriodCounts::default();
        self.drain(host, (queue, "window"), &mut scratch, classes, id, |version, class, tally| {
            window.add(version, class, tally);
            period.add(version, tally);
        });
        Some(merged)
    }

    /// Hands `add` each lane (version and class) of every `what` message on `queue` recorded
    /// with `classes` classes. Canary tallies recorded before a re-arm or a new canary (another
    /// identity than `id`) belong to the gate that judged them, and tallies counted under
    /// another configuration's classes are dropped.
    fn drain(
        &self,
        host: &impl Host,
        (queue, what): (u32, &str),
        scratch: &mut Tally,
        classes: usize,
        id: u64,
        mut add: impl FnMut(Version, usize, &Tally),
    ) {
        while let Some(message) = host.dequeue(queue) {
            let decoded = wire::decode(&message, scratch, |header, lane, tally| {
                let version = if lane % 2 == 0 { Version::Stable } else { Version::Canary };
                if header.classes == classes && (version == Version::Stable || header.identity == id) {
                    add(version, lane / 2, tally);
                }
            });
            if decoded.is_none() {
                log::warn!("dropped a malformed {what} message for {}", self.name);
            }
        }
    }

    /// Evaluates the gate: the comparison on this period, and with a `completed` second the
    /// thresholds on the window up to it; publishes the verdict. With a fresh fleet `view`,
    /// the comparison and the service's thresholds judge the fleet's counts; route classes and
    /// web vitals always judge this router's own.
    #[allow(clippy::too_many_arguments)]
    fn evaluate_gate(
        &self,
        host: &impl Host,
        id: u64,
        config: &Config,
        ids: &MetricIds,
        merged: &mut Merged,
        completed: bool,
        view: Option<FleetView>,
    ) {
        let Ok(mut slot) = self.gate.try_borrow_mut() else { return };
        let key = self.verdict_key();
        let evidence_key = format!("canary-gate/{}/evidence", self.name);
        let gate = match slot.as_mut() {
            Some((held, gate)) if *held == id && gate.fits(&config.gate) => gate,
            _ => {
                // Taking over (or a new canary, a re-arm, or an update that changes the
                // comparison's tests): a trip already published for this identity stays latched,
                // and the comparison resumes where its last holder left it if its tests fit.
                let published = host.shared_data(&key).0.as_deref().and_then(SharedVerdict::decode);
                let gate = if published.is_some_and(|v| v.trips(id)) {
                    Gate::latched(&config.gate)
                } else {
                    let resumed = host.shared_data(&evidence_key).0.as_deref().and_then(|bytes| {
                        let (held, state) = bytes.split_first_chunk::<8>()?;
                        let compare = config.gate.compare.as_ref()?;
                        (u64::from_le_bytes(*held) == id)
                            .then(|| Compare::decode(compare, config.gate.eval_ms, state))
                            .flatten()
                    });
                    resumed.map_or_else(|| Gate::new(&config.gate), |c| Gate::resumed(&config.gate, c))
                };
                &mut slot.insert((id, gate)).1
            }
        };
        let gate_s = config.gate.window_s as usize;
        let window = &mut merged.window;
        // The gate judges the weighed requests; the fleet's counts are not weighed.
        let (period, canary, stable) = match &view {
            Some(fleet) => (fleet.period, fleet.canary, fleet.stable),
            None => (
                merged.period,
                window.recent_stats(Version::Canary, gate_s).weighed(),
                window.recent_stats(Version::Stable, gate_s).weighed(),
            ),
        };
        let judged = match &view {
            Some(FleetView { pods: [stable_pods, canary_pods], .. }) => {
                format!("the fleet's, {stable_pods} stable and {canary_pods} canary pods")
            }
            None => "this router's own".to_string(),
        };
        let (mut evaluation, judgement) = gate.compare(&config.gate, &period, &canary, &stable);
        if let Some(judgement) = &judgement {
            ids.set_evidence(host, &judgement.log_statistic);
            if let Some(state) = gate.compare_state().filter(|_| period != PeriodCounts::default()) {
                let mut bytes = id.to_le_bytes().to_vec();
                bytes.extend_from_slice(&state.encode());
                host.set_shared_data(&evidence_key, &bytes, None);
            }
        }
        if evaluation.tripped_now {
            self.log_trip(config, &evaluation, "", (canary.requests, &judged));
        }
        if completed {
            let mut checks = vec![Check { class: None, limits: &config.gate.limits, canary, stable }];
            for class in &config.gate.classes {
                checks.push(Check {
                    class: Some(&class.name),
                    limits: &class.limits,
                    canary: window.class_stats(Version::Canary, class.class, gate_s).weighed(),
                    stable: window.class_stats(Version::Stable, class.class, gate_s).weighed(),
                });
            }
            let vitals = merged.vitals.as_mut().map(|w| VitalsStats::of(w, Version::Canary, gate_s));
            let thresholds = gate.evaluate(&config.gate, &checks, vitals.as_ref());
            if thresholds.tripped_now {
                let g = &config.gate;
                let detail = format!(" in the last {} s, {} evaluations in a row", g.window_s, g.consecutive);
                self.log_trip(config, &thresholds, &detail, (canary.requests, &judged));
            }
            evaluation = Evaluation { tripped_now: evaluation.tripped_now || thresholds.tripped_now, ..thresholds };
        }
        self.show_gate(host, config, ids, evaluation.state, evaluation.tripped_now);
        let verdict = SharedVerdict { state: evaluation.state, identity: id };
        if !host.set_shared_data(&key, &verdict.encode(), None) {
            log::warn!("cannot publish the gate verdict for {}", config.service);
        }
    }

    fn log_trip(&self, config: &Config, evaluation: &Evaluation, detail: &str, (canary_requests, judged): (u64, &str)) {
        let action =
            if config.gate.dry_run { "dry run, routing unchanged" } else { "routing canary traffic to stable" };
        let revision = self.revisions.with(|r| r.serving(Version::Canary));
        log::warn!(
            "gate tripped for {} canary `{}`{}: {}{detail} ({canary_requests} canary requests in the gate window, \
             {judged}); {action}",
            config.service,
            config.canary,
            revision.map(|r| format!(" (revision {})", r.as_str())).unwrap_or_default(),
            evaluation.breaches,
        );
    }
}

impl Coordinator {
    /// Publishes the gate's series for the canary revision it judges (mesh-mode routers with
    /// observers), and clears the series of the revision shown before, whichever VM showed it.
    fn show_gate(&self, host: &impl Host, config: &Config, ids: &MetricIds, state: GateState, tripped_now: bool) {
        let mesh_router = config.role == Role::Router && config.split.mode == SplitMode::Mesh;
        let revision = self.revisions.with(|r| r.serving(Version::Canary)).filter(|_| mesh_router);
        let key = format!("canary-gate/{}/gate-revision", self.name);
        let shown = host.shared_data(&key).0.as_deref().and_then(Revision::parse);
        if shown != revision {
            if let Some(old) = shown {
                ids.set_gate(host, config, Some(old.as_str()), GateState::Ok, false);
            }
            host.set_shared_data(&key, revision.as_ref().map_or(&b""[..], |r| r.as_str().as_bytes()), None);
        }
        ids.set_gate(host, config, revision.as_ref().map(|r| r.as_str()), state, tripped_now);
    }
}

/// Where in an evaluation period the lease holder merges (a fraction of the period): after
/// every VM shipped at the period's start, with room for a late timer.
pub const MERGE_OFFSET: (u64, u64) = (1, 8);
/// Where in an evaluation period every VM adopts the verdict: after the merge.
pub const READ_OFFSET: (u64, u64) = (1, 4);

/// A probe answered later than this is dropped: the next tick sends another.
const PROBE_TIMEOUT_MS: u64 = 900;

/// The merged window of one canary.
struct Merged {
    canary: String,
    /// The gate identity (canary and `rearm`) the canary side was recorded under.
    identity: u64,
    window: Window,
    /// The web vitals' window, with `vitals`.
    vitals: Option<Window>,
    /// The counts merged in this evaluation period, for the comparison.
    period: PeriodCounts,
    /// The second the window's head stands for; the gauges and thresholds see it complete.
    shown_s: u64,
}

#[cfg(test)]
mod tests;
