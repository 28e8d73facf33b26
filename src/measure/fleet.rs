//! The fleet's counts as one router merges them: the latest report of every observer VM it heard
//! from ([`Fleet`]), the increments between a VM's reports, and a rolling window of those
//! increments per version ([`FleetWindow`]). Memory is fixed by `gate.fleet.max_pods`.

use super::report::{Report, LIMITS};
use super::window::{Users, WindowStats};
use crate::config::FleetConfig;
use crate::model::{Revision, Version};

/// Observer VMs kept per pod: Envoy's worker threads (Istio's sidecars run two).
pub const VMS_PER_POD: usize = 8;

/// Requests counted between two reports (or over a window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Completed requests.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Of which checked against each latency limit ([`LIMITS`] order).
    pub checked: [u64; LIMITS],
    /// Of which slower than that limit.
    pub over: [u64; LIMITS],
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (total, c) in self.checked.iter_mut().zip(other.checked).chain(self.over.iter_mut().zip(other.over)) {
            *total += c;
        }
    }

    fn since(later: &Report, earlier: &Report) -> Counts {
        let diff = |a: [u64; LIMITS], b: [u64; LIMITS]| {
            let mut out = [0; LIMITS];
            for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                *o = a.saturating_sub(b);
            }
            out
        };
        Counts {
            requests: later.requests.saturating_sub(earlier.requests),
            errors: later.errors.saturating_sub(earlier.errors),
            checked: diff(later.checked, earlier.checked),
            over: diff(later.over, earlier.over),
        }
    }

    /// The gate's figures of these counts, with the users sketches of the reports: the
    /// latency quantiles as the shares over the p95 and p99 limits ([`WindowStats::over_p95`]).
    pub fn stats(&self, error_users: Users, slow_users: Users) -> WindowStats {
        let [_, (p95_checked, p95_over), (p99_checked, p99_over)] =
            [0, 1, 2].map(|i| (self.checked.get(i).copied().unwrap_or(0), self.over.get(i).copied().unwrap_or(0)));
        WindowStats {
            requests: self.requests,
            errors: self.errors,
            error_ratio_ppm: self.errors.saturating_mul(1_000_000).checked_div(self.requests).unwrap_or(0),
            slow: self.over.first().copied().unwrap_or(0),
            error_users,
            slow_users,
            over_p95: Some((p95_over, p95_checked)),
            over_p99: Some((p99_over, p99_checked)),
            ..WindowStats::default()
        }
    }
}

/// One observer VM's latest report and when it was heard.
#[derive(Debug, Clone, Copy)]
struct Entry {
    report: Report,
    heard_ms: u64,
}

/// The latest report of every observer VM heard from, bounded by `max_pods` pods of at most
/// [`VMS_PER_POD`] VMs each.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    entries: Vec<Entry>,
    /// Reports refused because the table was full, since the last [`Fleet::take_refused`].
    refused: u64,
}

impl Fleet {
    /// Takes a report heard at `heard_ms`: the counts since the same VM's last report, or
    /// `None` for a VM heard for the first time (its counts so far are its baseline), a report
    /// older than the one kept, or a table already full.
    pub fn take(&mut self, report: &Report, heard_ms: u64, config: &FleetConfig) -> Option<Counts> {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.report.vm == report.vm && e.report.pod == report.pod) {
            if !report.follows(&entry.report) {
                // Older (reordered), or counts that went down: a report never rewinds a VM.
                return None;
            }
            let counts = Counts::since(report, &entry.report);
            *entry = Entry { report: *report, heard_ms: heard_ms.max(entry.heard_ms) };
            return Some(counts);
        }
        let same_pod = self.entries.iter().filter(|e| e.report.pod == report.pod).count();
        let new_pod = same_pod == 0;
        if same_pod >= VMS_PER_POD || (new_pod && self.pods(|_| true) >= config.max_pods as usize) {
            self.refused += 1;
            return None;
        }
        self.entries.push(Entry { report: *report, heard_ms });
        None
    }

    /// Drops the VMs not heard from in `max_age_ms` before `now_ms`.
    pub fn expire(&mut self, now_ms: u64, config: &FleetConfig) {
        self.entries.retain(|e| e.heard_ms.saturating_add(u64::from(config.max_age_ms)) >= now_ms);
    }

    /// The number of distinct pods among the VMs kept whose revision passes `filter`.
    pub fn pods(&self, filter: impl Fn(&Revision) -> bool) -> usize {
        let kept = || self.entries.iter().filter(|e| filter(&e.report.revision));
        // The first VM of each pod counts it (a few dozen entries: quadratic is cheap).
        kept().enumerate().filter(|(i, e)| kept().take(*i).all(|o| o.report.pod != e.report.pod)).count()
    }

    /// The pods serving `revision`.
    pub fn pods_of(&self, revision: Option<Revision>) -> usize {
        revision.map_or(0, |r| self.pods(|rev| *rev == r))
    }

    /// The users sketches of errors and slow requests reported by the VMs serving `revision`.
    pub fn users(&self, revision: Revision) -> (Users, Users) {
        self.entries
            .iter()
            .filter(|e| e.report.revision == revision)
            .fold((0, 0), |(errors, slow), e| (errors | e.report.error_users, slow | e.report.slow_users))
    }

    /// Reports refused since the last call (a full table).
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }
}

/// Rolling window of the fleet's increments per version, one-second slots.
#[derive(Debug, Clone)]
pub struct FleetWindow {
    seconds: Vec<[Counts; 2]>,
    head: Option<u64>,
}

impl FleetWindow {
    /// A window of `window_s` seconds (at least one).
    pub fn new(window_s: usize) -> Self {
        FleetWindow { seconds: vec![[Counts::default(); 2]; window_s.max(1)], head: None }
    }

    /// Its length in seconds.
    pub fn len_s(&self) -> usize {
        self.seconds.len()
    }

    fn slot(&self, second: u64) -> usize {
        (second % self.seconds.len() as u64) as usize
    }

    /// Moves the head to `now_s`, clearing the seconds that fall out. Time going backwards is
    /// ignored.
    pub fn advance_to(&mut self, now_s: u64) {
        let start = match self.head {
            Some(head) if now_s <= head => return,
            Some(head) => head + 1 + (now_s - head).saturating_sub(self.seconds.len() as u64),
            None => now_s,
        };
        for s in start..=now_s {
            let slot = self.slot(s);
            if let Some(second) = self.seconds.get_mut(slot) {
                *second = [Counts::default(); 2];
            }
        }
        self.head = Some(now_s);
    }

    /// Adds counts of `version` to the head second.
    pub fn add(&mut self, version: Version, counts: &Counts) {
        let slot = self.slot(self.head.unwrap_or(0));
        if let Some(c) = self.seconds.get_mut(slot).and_then(|s| s.get_mut(version.index())) {
            c.add(counts);
        }
    }

    /// The counts of `version` over the whole window.
    pub fn total(&self, version: Version) -> Counts {
        let mut total = Counts::default();
        for second in &self.seconds {
            if let Some(c) = second.get(version.index()) {
                total.add(c);
            }
        }
        total
    }

    /// Forgets everything recorded for `version`.
    pub fn clear(&mut self, version: Version) {
        for second in &mut self.seconds {
            if let Some(c) = second.get_mut(version.index()) {
                *c = Counts::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn report(pod: u64, vm: u64, requests: u64, errors: u64) -> Report {
        Report {
            pod,
            vm,
            revision: Revision::parse(b"r1").unwrap(),
            requests,
            errors,
            checked: [requests; LIMITS],
            over: [0; LIMITS],
            error_users: 0,
            slow_users: 0,
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn increments_between_reports_of_one_vm() {
        let config = FleetConfig::default();
        let mut fleet = Fleet::default();
        assert_eq!(fleet.take(&report(1, 1, 100, 1), 0, &config), None, "the first report is a baseline");
        let c = fleet.take(&report(1, 1, 130, 4), 10, &config).unwrap();
        assert_eq!((c.requests, c.errors, c.checked), (30, 3, [30; LIMITS]));
        assert_eq!(fleet.take(&report(1, 1, 120, 4), 20, &config), None, "an older report is ignored");
        assert_eq!(fleet.take(&report(1, 1, 130, 4), 30, &config).map(|c| c.requests), Some(0), "a repeat adds 0");
        assert_eq!(fleet.take(&report(1, 2, 50, 0), 30, &config), None, "another VM of the pod: its own baseline");
        assert_eq!(fleet.pods(|_| true), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_table_is_bounded_and_forgets_silent_vms() {
        let config = FleetConfig { max_pods: 2, max_age_ms: 1_000 };
        let mut fleet = Fleet::default();
        fleet.take(&report(1, 1, 1, 0), 0, &config);
        fleet.take(&report(2, 1, 1, 0), 0, &config);
        fleet.take(&report(3, 1, 1, 0), 0, &config);
        assert_eq!((fleet.pods(|_| true), fleet.take_refused()), (2, 1), "a third pod is refused");
        for vm in 2..=VMS_PER_POD as u64 + 1 {
            fleet.take(&report(1, vm, 1, 0), 0, &config);
        }
        assert_eq!(fleet.take_refused(), 1, "at most {VMS_PER_POD} VMs a pod");
        fleet.take(&report(2, 1, 5, 0), 900, &config);
        fleet.expire(1_500, &config);
        assert_eq!(fleet.pods(|_| true), 1, "pod 1 silent for 1.5 s");
        assert_eq!(fleet.take(&report(3, 1, 1, 0), 1_500, &config), None);
        assert_eq!((fleet.pods(|_| true), fleet.take_refused()), (2, 0), "room again");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_window_keeps_the_last_seconds() {
        let mut w = FleetWindow::new(3);
        let one = Counts { requests: 10, errors: 1, checked: [10; LIMITS], over: [2, 1, 0] };
        for s in 100..106 {
            w.advance_to(s);
            w.add(Version::Canary, &one);
        }
        assert_eq!(w.total(Version::Canary).requests, 30);
        assert_eq!(w.total(Version::Stable), Counts::default());
        w.advance_to(107);
        assert_eq!(w.total(Version::Canary).requests, 10, "two seconds passed with nothing");
        w.advance_to(200);
        assert_eq!(w.total(Version::Canary), Counts::default());
        let stats = Counts { requests: 100, errors: 5, checked: [100, 80, 80], over: [9, 8, 1] }.stats(0b11, 0b1);
        assert_eq!(
            (stats.error_ratio_ppm, stats.slow, stats.over_p95, stats.over_p99),
            (50_000, 9, Some((8, 80)), Some((1, 80)))
        );
    }
}
