//! Web vitals per version: the lanes a beacon's reports are tallied in (merged across VMs as
//! the request lanes are), their figures over the window, and their host stats.
//!
//! A vitals window has [`LANES`] lanes per version: one per [`Vital`] (a sample count and a
//! histogram of values: microseconds for times, millionths for CLS) and [`PAGE_LANE`] for the
//! page events (see [`tally`]).

use super::beacon::{Event, Rejection, Report, Vital};
use super::names::{self, service_series, version_series};
use super::window::{lane, Completed, Tally, Window};
use crate::config::Config;
use crate::host::{MetricKind, Stats};
use crate::model::Version;

/// The lane of page events, after the vitals'.
pub const PAGE_LANE: usize = Vital::ALL.len();
/// Lanes per version of a vitals window.
pub const LANES: usize = PAGE_LANE + 1;

/// Adds a beacon's reports for `version` to `tallies` (indexed by [`lane`], grown as needed).
/// Each report is one recorded "request" of its lane, so a tally keeps the shape the wire
/// checks: a vital's value goes to the histogram; an event records 0, with `is_error` for a
/// JS error, `is_slow` for a resource error and outcome 0 for a page view.
pub fn tally(tallies: &mut Vec<Tally>, version: Version, reports: &[Report]) {
    if tallies.len() < 2 * LANES {
        tallies.resize_with(2 * LANES, Tally::default);
    }
    for report in reports {
        let (class, completed) = match *report {
            Report::Vital(vital, micros) => (vital.index(), Completed { micros, ..Completed::default() }),
            Report::Event(event) => (
                PAGE_LANE,
                Completed {
                    is_error: event == Event::JsError,
                    is_slow: event == Event::ResourceError,
                    outcomes: u8::from(event == Event::PageView),
                    ..Completed::default()
                },
            ),
        };
        if let Some(t) = tallies.get_mut(lane(version, class)) {
            t.record(&completed);
        }
    }
}

/// One version's web vitals over a span of the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VitalsStats {
    /// Page views.
    pub page_views: u64,
    /// JS errors.
    pub js_errors: u64,
    /// P75 per vital, [`Vital::ALL`] order (microseconds; CLS in millionths), 0 without samples.
    pub p75: [u64; 5],
}

impl VitalsStats {
    /// The figures of `version` over the last `seconds` of a vitals window.
    pub fn of(window: &mut Window, version: Version, seconds: usize) -> Self {
        let mut stats = VitalsStats::default();
        for vital in Vital::ALL {
            if let Some(p75) = stats.p75.get_mut(vital.index()) {
                *p75 = window.class_stats(version, vital.index(), seconds).p75_us;
            }
        }
        let page = window.class_stats(version, PAGE_LANE, seconds);
        (stats.page_views, stats.js_errors) = (page.outcomes.first().copied().unwrap_or(0), page.errors);
        stats
    }

    /// The P75 of `vital` (microseconds; CLS in millionths).
    pub fn p75(&self, vital: Vital) -> u64 {
        self.p75.get(vital.index()).copied().unwrap_or(0)
    }

    /// JS errors per page view, parts per million (0 without page views).
    pub fn js_error_ratio_ppm(&self) -> u64 {
        self.js_errors.saturating_mul(1_000_000).checked_div(self.page_views).unwrap_or(0)
    }
}

/// The host stats of the beacon endpoint, defined only with `vitals`.
#[derive(Clone)]
pub struct VitalsIds {
    /// Per version: a histogram per vital.
    vitals: [Vec<Option<u32>>; 2],
    /// Per version: page views, JS errors, resource errors.
    events: [Vec<Option<u32>>; 2],
    /// Per version: the window gauges of [`names::WINDOW_WEB`].
    window: [Vec<Option<u32>>; 2],
    rejected: [Option<u32>; Rejection::ALL.len()],
}

impl VitalsIds {
    /// Defines every series, so each is there at 0 before the first beacon.
    #[inline(never)]
    pub fn define(stats: &impl Stats, config: &Config) -> Self {
        let service = config.service.as_str();
        let define = |kind: MetricKind, metrics: &[&str]| {
            Version::BOTH.map(|v| {
                let name = |metric: &&str| version_series(metric, service, config.version_name(v));
                metrics.iter().map(|metric| stats.define_metric(kind, &name(metric))).collect::<Vec<_>>()
            })
        };
        VitalsIds {
            vitals: define(MetricKind::Histogram, &names::WEB_VITALS),
            events: define(MetricKind::Counter, &names::WEB_EVENTS),
            window: define(MetricKind::Gauge, &names::WINDOW_WEB),
            rejected: Rejection::ALL.map(|r| {
                let name = format!("{}.reason.{}", service_series(names::VITALS_REJECTED, service), r.as_str());
                stats.define_metric(MetricKind::Counter, &name)
            }),
        }
    }

    /// Exports a taken beacon's reports for `version`: times in ms, CLS ×1000, rounded.
    pub fn record(&self, stats: &impl Stats, version: Version, reports: &[Report]) {
        let v = version.index();
        for report in reports {
            let (id, value) = match *report {
                Report::Vital(vital, value) => {
                    (self.vitals.get(v).and_then(|ids| ids.get(vital.index())), Some(value.saturating_add(500) / 1000))
                }
                Report::Event(event) => (self.events.get(v).and_then(|ids| ids.get(event as usize)), None),
            };
            match (id.copied().flatten(), value) {
                (Some(id), Some(value)) => stats.record(id, value),
                (Some(id), None) => stats.increment(id),
                (None, _) => {}
            }
        }
    }

    /// Counts a refused or dropped beacon.
    pub fn reject(&self, stats: &impl Stats, rejection: Rejection) {
        if let Some(id) = self.rejected.get(rejection.index()).copied().flatten() {
            stats.increment(id);
        }
    }

    /// Sets the window gauges of `version`.
    pub fn set_window(&self, stats: &impl Stats, version: Version, figures: &VitalsStats) {
        let Some(ids) = self.window.get(version.index()) else { return };
        let values = [
            figures.p75(Vital::Lcp) / 1000,
            figures.p75(Vital::Inp) / 1000,
            figures.p75(Vital::Cls) / 1000,
            figures.js_error_ratio_ppm(),
            figures.page_views,
        ];
        for (id, value) in ids.iter().zip(values) {
            if let Some(id) = id {
                stats.record(*id, value);
            }
        }
    }
}
