//! Fleet reports across a router's VMs. Each VM keeps the latest report of every observer VM its
//! responses carried (request path: no host call), and ships them once an evaluation period
//! through a shared queue; the lease holder takes the increments into the fleet's window and
//! the period's counts, and tells the gate whether the fleet's counts are fresh enough to judge.

use crate::config::{Config, FleetConfig};
use crate::gate::compare::PeriodCounts;
use crate::host::Host;
use crate::measure::fleet::{Counts, Fleet, FleetWindow, VMS_PER_POD};
use crate::measure::report::Report;
use crate::measure::window::WindowStats;
use crate::model::{Revision, Version};
use std::cell::RefCell;

/// The latest reports one VM heard since its last shipment, one per observer VM.
#[derive(Debug, Default)]
pub struct Inbox {
    reports: RefCell<Vec<Report>>,
}

impl Inbox {
    /// Keeps `report` if it is the latest of its VM; at most `max_pods` × [`VMS_PER_POD`] VMs.
    pub fn hear(&self, report: Report, config: &FleetConfig) {
        let Ok(mut reports) = self.reports.try_borrow_mut() else { return };
        let capacity = config.max_pods as usize * VMS_PER_POD;
        match reports.iter_mut().find(|r| r.vm == report.vm && r.pod == report.pod) {
            Some(kept) => {
                if report.follows(kept) {
                    *kept = report;
                }
            }
            None => {
                if reports.len() < capacity {
                    reports.push(report);
                }
            }
        }
    }

    /// Ships the kept reports on `queue`, one per line, and forgets them.
    pub fn ship(&self, host: &impl Host, queue: u32) -> bool {
        let Ok(mut reports) = self.reports.try_borrow_mut() else { return true };
        if reports.is_empty() {
            return true;
        }
        let lines: Vec<String> = reports.iter().map(Report::encode).collect();
        reports.clear();
        host.enqueue(queue, lines.join("\n").as_bytes())
    }
}

/// What the gate judges when the fleet's counts are fresh.
#[derive(Debug, Clone, Copy)]
pub struct FleetView {
    /// The period's increments, for the comparison.
    pub period: PeriodCounts,
    /// The canary revision's figures over the gate window.
    pub canary: WindowStats,
    /// The stable revision's.
    pub stable: WindowStats,
    /// Pods heard from serving the stable revision and the canary one.
    pub pods: [usize; 2],
}

/// The lease holder's merge of every VM's reports.
#[derive(Debug)]
pub struct FleetMerge {
    table: Fleet,
    window: FleetWindow,
    period: PeriodCounts,
    /// Reports of the canary revision taken in this period.
    canary_reports: usize,
    /// The gate identity (canary revision and `rearm`) the window's canary side counts for.
    identity: Option<u64>,
    /// Whether the last evaluation judged the fleet's counts (`None` before the first).
    judged_fleet: Option<bool>,
}

impl FleetMerge {
    /// An empty merge with a window of `window_s` seconds.
    pub fn new(window_s: usize) -> Self {
        FleetMerge {
            table: Fleet::default(),
            window: FleetWindow::new(window_s),
            period: PeriodCounts::default(),
            canary_reports: 0,
            identity: None,
            judged_fleet: None,
        }
    }

    /// Whether it fits a gate window of `window_s` seconds.
    pub fn fits(&self, window_s: usize) -> bool {
        self.window.len_s() == window_s
    }

    /// Takes the reports shipped on `queue` at `now_ms` (the window's head at `head_s`), for
    /// the revisions serving now (`serving`: stable's, canary's) and the gate `identity`.
    pub fn merge(
        &mut self,
        host: &impl Host,
        queue: u32,
        (now_ms, head_s): (u64, u64),
        (serving, identity): ([Option<Revision>; 2], u64),
        probed: Option<Report>,
        config: &FleetConfig,
    ) {
        if self.identity.replace(identity).is_some_and(|before| before != identity) {
            // A new canary revision, or a re-arm, is judged afresh.
            self.window.clear(Version::Canary);
        }
        self.window.advance_to(head_s);
        self.table.expire(now_ms, config);
        self.period = PeriodCounts::default();
        self.canary_reports = 0;
        // The probe's answer, first: it does not count as a response of the canary.
        if let Some(report) = probed {
            self.take(&report, serving, now_ms, config);
        }
        while let Some(message) = host.dequeue(queue) {
            for line in message.split(|&b| b == b'\n') {
                match Report::parse(line) {
                    Some(report) => {
                        let version = self.take(&report, serving, now_ms, config);
                        self.canary_reports += usize::from(version == Some(Version::Canary));
                    }
                    None => log::warn!("dropped a malformed fleet report"),
                }
            }
        }
        let refused = self.table.take_refused();
        if refused > 0 {
            log::warn!("fleet: {refused} reports refused: more than {} pods heard from", config.max_pods);
        }
    }

    /// Takes one report into the table, and its increments into the window and the period if
    /// its revision serves a version (which it returns).
    fn take(
        &mut self,
        report: &Report,
        [stable, canary]: [Option<Revision>; 2],
        now_ms: u64,
        config: &FleetConfig,
    ) -> Option<Version> {
        let version = match Some(report.revision) {
            r if r == canary => Some(Version::Canary),
            r if r == stable => Some(Version::Stable),
            // Kept as a baseline: its revision may serve a subset soon.
            _ => None,
        };
        let counts = self.table.take(report, now_ms, config);
        if let (Some(version), Some(counts)) = (version, counts) {
            self.window.add(version, &counts);
            add_period(&mut self.period, version, &counts);
        }
        version
    }

    /// Whether a response of the canary revision carried a report in this period.
    pub fn heard_canary(&self) -> bool {
        self.canary_reports > 0
    }

    /// Pods heard from serving each revision of `serving` (stable's, canary's).
    pub fn pods(&self, serving: [Option<Revision>; 2]) -> [usize; 2] {
        serving.map(|r| self.table.pods_of(r))
    }

    /// The fleet's figures, if VMs of both serving revisions reported recently; logs when the
    /// gate starts or stops judging them.
    pub fn view(&mut self, serving: [Option<Revision>; 2], service: &str) -> Option<FleetView> {
        let pods = self.pods(serving);
        let fresh = pods.iter().all(|&n| n > 0);
        if self.judged_fleet != Some(fresh) {
            if fresh {
                log::info!(
                    "{service}: the gate judges the fleet's counts ({} stable, {} canary pods)",
                    pods[0],
                    pods[1]
                );
            } else if self.judged_fleet.is_some() {
                log::warn!(
                    "{service}: no fresh fleet reports of both revisions; the gate judges this router's own requests"
                );
            }
            self.judged_fleet = Some(fresh);
        }
        if !fresh {
            return None;
        }
        let [stable, canary] = serving;
        let stats = |version: Version, revision: Option<Revision>| {
            let (errors, slow) = revision.map_or((0, 0), |r| self.table.users(r));
            self.window.total(version).stats(errors, slow)
        };
        Some(FleetView {
            period: self.period,
            canary: stats(Version::Canary, canary),
            stable: stats(Version::Stable, stable),
            pods,
        })
    }
}

/// Adds one version's increments to the comparison's period counts: all requests for the
/// errors test, the ones checked against `slow_ms` for the latency test.
fn add_period(period: &mut PeriodCounts, version: Version, counts: &Counts) {
    let checked = counts.checked.first().copied().unwrap_or(0);
    let slow = counts.over.first().copied().unwrap_or(0);
    for (p, requests, bad) in [(&mut period.errors, counts.requests, counts.errors), (&mut period.slow, checked, slow)]
    {
        match version {
            Version::Canary => {
                p.canary += requests;
                p.canary_bad += bad;
            }
            Version::Stable => {
                p.stable += requests;
                p.stable_bad += bad;
            }
        }
    }
}

/// The tag a router with `gate.fleet` sends with every request, before its user: the latency
/// limits it asks the observers to count.
pub fn tag_limits(config: &Config) -> [u64; crate::measure::report::LIMITS] {
    let gate = &config.gate;
    [gate.slow_us().unwrap_or(0), gate.limits.max_p95_us.unwrap_or(0), gate.limits.max_p99_us.unwrap_or(0)]
}
