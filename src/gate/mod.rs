//! The in-proxy SLO gate: evaluates the fixed thresholds on the canary's window once a second
//! and trips after `consecutive` breached evaluations in a row; runs the sequential
//! canary-vs-stable comparison ([`compare`]) every evaluation period and trips as soon as it
//! rejects. A trip is latched until the canary changes (another version name or revision) or
//! the configuration's `rearm` value changes.

pub mod compare;
pub mod logmath;
pub mod sequential;

use crate::config::{GateConfig, Limits, VitalsLimits};
use crate::measure::beacon::Vital;
use crate::measure::vitals::VitalsStats;
use crate::measure::window::WindowStats;
use crate::model::GateState;
use compare::{percent, Compare, Judgement, PeriodCounts};

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The state after this evaluation.
    pub state: GateState,
    /// True only on the evaluation that tripped the gate.
    pub tripped_now: bool,
    /// The breached thresholds with measured values (prefixed with the class they concern),
    /// empty if none.
    pub breaches: String,
}

/// One set of thresholds and the canary and stable figures they judge: the whole service's
/// (`class` `None`) or one route class's.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The class judged, `None` for the whole service.
    pub class: Option<&'a str>,
    /// Its thresholds.
    pub limits: &'a Limits,
    /// The canary's figures over the gate window.
    pub canary: WindowStats,
    /// The stable version's.
    pub stable: WindowStats,
}

impl Check<'_> {
    /// Enough canary requests to judge.
    fn conclusive(&self) -> bool {
        self.limits.has_thresholds() && self.canary.requests >= self.limits.min_requests.max(1)
    }
}

/// Evaluation state carried from one evaluation to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    consecutive_breaches: u32,
    tripped: bool,
    /// The state of the last threshold evaluation.
    limits_state: GateState,
    /// The comparison's tests, with `gate.compare`.
    compare: Option<Compare>,
    /// The comparison rejects, but the window does not confirm it yet.
    compare_unconfirmed: bool,
}

impl Gate {
    /// A fresh gate for `config`.
    pub fn new(config: &GateConfig) -> Self {
        Gate {
            consecutive_breaches: 0,
            tripped: false,
            limits_state: if config.has_limits() { GateState::Inconclusive } else { GateState::Ok },
            compare: config.compare.as_ref().map(|c| Compare::new(c, config.eval_ms)),
            compare_unconfirmed: false,
        }
    }

    /// A gate that is already latched (a trip found in shared data).
    pub fn latched(config: &GateConfig) -> Self {
        Gate { tripped: true, ..Gate::new(config) }
    }

    /// A gate that resumes the comparison's state `compare` (a VM taking over the evaluation).
    pub fn resumed(config: &GateConfig, compare: Compare) -> Self {
        Gate { compare: Some(compare), ..Gate::new(config) }
    }

    /// Whether its comparison has the tests `config` asks for (none, errors, or errors and
    /// latency): a configuration update that changes them needs a new gate.
    pub fn fits(&self, config: &GateConfig) -> bool {
        self.compare.as_ref().map(Compare::has_latency) == config.compare.as_ref().map(|c| c.slow_us.is_some())
    }

    /// The comparison's state, for a VM that takes over.
    pub fn compare_state(&self) -> Option<&Compare> {
        self.compare.as_ref()
    }

    /// The state to publish: tripped, else the worse of the thresholds' and the comparison's.
    pub fn state(&self) -> GateState {
        if self.tripped {
            GateState::Tripped
        } else if self.compare_unconfirmed || self.limits_state == GateState::Breaching {
            GateState::Breaching
        } else {
            self.limits_state
        }
    }

    /// Whether the gate is latched.
    pub fn is_tripped(&self) -> bool {
        self.tripped
    }

    /// Evaluates one second's threshold checks. Any conclusive check that breaches is a breach;
    /// with none conclusive the thresholds' verdict is inconclusive.
    pub fn evaluate(&mut self, config: &GateConfig, checks: &[Check<'_>], vitals: Option<&VitalsStats>) -> Evaluation {
        let mut breaches = String::new();
        for check in checks.iter().filter(|c| c.conclusive() || self.tripped) {
            note_breaches(&mut breaches, check);
        }
        let vitals = config.vitals.as_ref().zip(vitals);
        let vitals_conclusive =
            vitals.is_some_and(|(limits, canary)| canary.page_views >= limits.min_page_views.max(1));
        if let Some((limits, canary)) = vitals.filter(|_| vitals_conclusive || self.tripped) {
            note_vitals_breaches(&mut breaches, limits, canary);
        }
        let conclusive = vitals_conclusive || checks.iter().any(Check::conclusive);
        if self.tripped {
            return Evaluation { state: GateState::Tripped, tripped_now: false, breaches };
        }
        let (limits_state, tripped_now) = if !config.has_limits() || !conclusive {
            self.consecutive_breaches = 0;
            breaches.clear();
            (if config.has_limits() { GateState::Inconclusive } else { GateState::Ok }, false)
        } else if breaches.is_empty() {
            self.consecutive_breaches = 0;
            (GateState::Ok, false)
        } else {
            self.consecutive_breaches += 1;
            (GateState::Breaching, self.consecutive_breaches >= config.consecutive.max(1))
        };
        self.limits_state = limits_state;
        self.tripped = tripped_now;
        Evaluation { state: self.state(), tripped_now, breaches }
    }

    /// Takes in one evaluation period of the comparison and judges it, with the gate window's
    /// figures of both versions; a rejection the window confirms trips the gate at once. The
    /// judgement is `None` without `gate.compare`.
    pub fn compare(
        &mut self,
        config: &GateConfig,
        counts: &PeriodCounts,
        canary: &WindowStats,
        stable: &WindowStats,
    ) -> (Evaluation, Option<Judgement>) {
        let (Some(tests), Some(compare_config)) = (self.compare.as_mut(), config.compare.as_ref()) else {
            return (Evaluation { state: self.state(), tripped_now: false, breaches: String::new() }, None);
        };
        if !self.tripped {
            tests.observe(counts);
        }
        let judgement = tests.judge(compare_config, canary, stable);
        self.compare_unconfirmed = judgement.rejected_unconfirmed;
        let tripped_now = !self.tripped && judgement.trip.is_some();
        self.tripped |= tripped_now;
        let breaches = judgement.trip.clone().unwrap_or_default();
        (Evaluation { state: self.state(), tripped_now, breaches }, Some(judgement))
    }
}

/// `123456` µs as `123.456ms`.
fn millis(us: u64) -> String {
    format!("{}.{:03}ms", us / 1000, us % 1000)
}

/// Appends the thresholds `check` breaches, as `name measured > limit` items (after `class
/// NAME:` for a class).
fn note_breaches(out: &mut String, check: &Check<'_>) {
    let (limits, canary, stable) = (check.limits, &check.canary, &check.stable);
    let mut note = |text: String| push_breach(out, check.class, &text);
    if let Some(limit) = limits.max_error_ratio_ppm {
        if canary.error_ratio_ppm > limit {
            note(format!("error_ratio {} > {}", percent(canary.error_ratio_ppm), percent(limit)));
        }
    }
    for (name, limit, quantile, over, allowed_ppm) in [
        ("p95", limits.max_p95_us, canary.p95_us, canary.over_p95, 50_000),
        ("p99", limits.max_p99_us, canary.p99_us, canary.over_p99, 10_000),
    ] {
        let Some(limit) = limit else { continue };
        match over {
            // The fleet's counts: the quantile is above the limit when more than its tail is.
            Some((over, checked)) => {
                let share = over.saturating_mul(1_000_000).checked_div(checked).unwrap_or(0);
                if share > allowed_ppm {
                    note(format!("{name} > {} ({} of {checked} requests slower)", millis(limit), percent(share)));
                }
            }
            None if quantile > limit => note(format!("{name} {} > {}", millis(quantile), millis(limit))),
            None => {}
        }
    }
    if let Some(limit) = limits.max_error_ratio_over_stable_ppm {
        let over = canary.error_ratio_ppm.saturating_sub(stable.error_ratio_ppm);
        if over > limit {
            note(format!(
                "error_ratio over stable {} ({} - {}) > {}",
                percent(over),
                percent(canary.error_ratio_ppm),
                percent(stable.error_ratio_ppm),
                percent(limit)
            ));
        }
    }
    for outcome in &limits.outcomes {
        let ratio = canary.outcome_ratio_ppm(outcome.outcome);
        if let Some(min) = outcome.min_ppm.filter(|&min| ratio < min) {
            note(format!("{} ratio {} < {}", outcome.name, percent(ratio), percent(min)));
        }
        if let Some(max) = outcome.max_ppm.filter(|&max| ratio > max) {
            note(format!("{} ratio {} > {}", outcome.name, percent(ratio), percent(max)));
        }
    }
}

/// Appends one breach to the list, naming its route class if it has one.
fn push_breach(out: &mut String, class: Option<&str>, text: &str) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    if let Some(class) = class {
        out.push_str(&format!("class {class}: "));
    }
    out.push_str(text);
}

/// The canary's web vitals against `gate.vitals`.
fn note_vitals_breaches(out: &mut String, limits: &VitalsLimits, canary: &VitalsStats) {
    let mut note = |text: String| push_breach(out, None, &text);
    for (vital, limit) in [(Vital::Lcp, limits.max_lcp_p75_us), (Vital::Inp, limits.max_inp_p75_us)] {
        let p75 = canary.p75(vital);
        if let Some(limit) = limit.filter(|&limit| p75 > limit) {
            note(format!("{} p75 {} > {}", vital.name(), millis(p75), millis(limit)));
        }
    }
    let cls = canary.p75(Vital::Cls);
    if let Some(limit) = limits.max_cls_p75_millionths.filter(|&limit| cls > limit) {
        note(format!("CLS p75 {} > {}", millionths(cls), millionths(limit)));
    }
    let js = canary.js_error_ratio_ppm();
    if let Some(limit) = limits.max_js_error_ratio_ppm.filter(|&limit| js > limit) {
        note(format!("js_error_ratio {} > {} ({} page views)", percent(js), percent(limit), canary.page_views));
    }
}

fn millionths(value: u64) -> String {
    format!("{}.{:06}", value / 1_000_000, value % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OutcomeLimit, VitalsLimits};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn stats(requests: u64, error_ratio_ppm: u64, p95_us: u64) -> WindowStats {
        WindowStats {
            requests,
            errors: requests * error_ratio_ppm / 1_000_000,
            error_ratio_ppm,
            p50_us: p95_us / 2,
            p95_us,
            p99_us: p95_us,
            ..WindowStats::default()
        }
    }

    fn config() -> GateConfig {
        gate(Limits { max_error_ratio_ppm: Some(50_000), max_p95_us: Some(200_000), ..Limits::default() })
    }

    fn gate(limits: Limits) -> GateConfig {
        GateConfig { limits, ..GateConfig::default() }
    }

    impl Default for Gate {
        fn default() -> Self {
            Gate::new(&config())
        }
    }

    /// Evaluates the whole service only.
    fn judge(g: &mut Gate, c: &GateConfig, canary: &WindowStats, stable: &WindowStats) -> Evaluation {
        g.evaluate(c, &[Check { class: None, limits: &c.limits, canary: *canary, stable: *stable }], None)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn trips_after_consecutive_breaches_and_latches() {
        let (c, mut g) = (config(), Gate::default());
        let healthy = stats(100, 1_000, 50_000);
        let failing = stats(100, 300_000, 50_000);
        assert_eq!(judge(&mut g, &c, &healthy, &healthy).state, GateState::Ok);
        let first = judge(&mut g, &c, &failing, &healthy);
        assert_eq!((first.state, first.tripped_now), (GateState::Breaching, false));
        assert_eq!(first.breaches, "error_ratio 30.0000% > 5.0000%");
        let second = judge(&mut g, &c, &failing, &healthy);
        assert_eq!((second.state, second.tripped_now), (GateState::Tripped, true));
        let later = judge(&mut g, &c, &healthy, &healthy);
        assert_eq!((later.state, later.tripped_now), (GateState::Tripped, false));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_healthy_evaluation_resets_the_count() {
        let (c, mut g) = (config(), Gate::default());
        let failing = stats(100, 0, 400_000);
        let healthy = stats(100, 0, 100_000);
        for _ in 0..10 {
            assert_eq!(judge(&mut g, &c, &failing, &healthy).state, GateState::Breaching);
            assert_eq!(judge(&mut g, &c, &healthy, &healthy).state, GateState::Ok);
        }
        assert!(!g.is_tripped());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn low_traffic_is_inconclusive_never_a_breach() {
        let (c, mut g) = (config(), Gate::default());
        for _ in 0..100 {
            let e = judge(&mut g, &c, &stats(19, 1_000_000, 10_000_000), &stats(0, 0, 0));
            assert_eq!(e.state, GateState::Inconclusive);
        }
        assert!(!g.is_tripped());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn comparison_against_stable_uses_the_difference() {
        let c = GateConfig {
            consecutive: 1,
            ..gate(Limits { max_error_ratio_over_stable_ppm: Some(10_000), ..Limits::default() })
        };
        let mut g = Gate::default();
        assert_eq!(judge(&mut g, &c, &stats(100, 60_000, 0), &stats(100, 55_000, 0)).state, GateState::Ok);
        let e = judge(&mut g, &c, &stats(100, 70_000, 0), &stats(100, 55_000, 0));
        assert!(e.tripped_now, "{e:?}");
        assert_eq!(e.breaches, "error_ratio over stable 1.5000% (7.0000% - 5.5000%) > 1.0000%");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn latency_breaches_name_measured_and_limit() {
        let c = gate(Limits { max_p95_us: Some(200_000), max_p99_us: Some(1_000_000), ..Limits::default() });
        let e = judge(&mut Gate::default(), &c, &stats(50, 0, 612_345), &stats(0, 0, 0));
        assert_eq!(e.breaches, "p95 612.345ms > 200.000ms");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_class_breach_trips_what_the_whole_service_dilutes() {
        let api = Limits { max_error_ratio_ppm: Some(10_000), min_requests: 10, ..Limits::default() };
        let c = GateConfig { consecutive: 1, ..config() };
        let check = |class, limits, canary: WindowStats| Check { class, limits, canary, stable: stats(100, 0, 0) };
        // 3% errors overall (under 5%) are 30% of the API calls.
        let whole = stats(100, 30_000, 50_000);
        let mut g = Gate::default();
        let e = g.evaluate(
            &c,
            &[check(None, &c.limits, whole), check(Some("api"), &api, stats(10, 300_000, 50_000))],
            None,
        );
        assert!(e.tripped_now, "{e:?}");
        assert_eq!(e.breaches, "class api: error_ratio 30.0000% > 1.0000%");
        // Too few API calls to judge: the whole service alone decides.
        let mut g = Gate::default();
        let e =
            g.evaluate(&c, &[check(None, &c.limits, whole), check(Some("api"), &api, stats(9, 1_000_000, 0))], None);
        assert_eq!(e.state, GateState::Ok);
        let only_class = GateConfig { limits: Limits::default(), classes: Vec::new(), ..c.clone() };
        let e = Gate::default().evaluate(&only_class, &[check(Some("api"), &api, stats(9, 1_000_000, 0))], None);
        assert_eq!(e.state, GateState::Ok, "no thresholds in the config: ok");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn outcome_shares_are_bounded_both_ways() {
        let outcome =
            OutcomeLimit { outcome: 1, name: "cache_hit".into(), min_ppm: Some(800_000), max_ppm: Some(990_000) };
        let limits = Limits { outcomes: vec![outcome], ..Limits::default() };
        let c = GateConfig { limits: limits.clone(), consecutive: 1, ..GateConfig::default() };
        let with_hits = |hits: u64| WindowStats { outcomes: [0, hits, 0, 0, 0, 0, 0, 0], ..stats(100, 0, 0) };
        let judge = |hits| {
            Gate::default().evaluate(
                &c,
                &[Check { class: None, limits: &limits, canary: with_hits(hits), stable: with_hits(0) }],
                None,
            )
        };
        assert_eq!(judge(85).state, GateState::Ok);
        assert_eq!(judge(70).breaches, "cache_hit ratio 70.0000% < 80.0000%");
        assert_eq!(judge(100).breaches, "cache_hit ratio 100.0000% > 99.0000%");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_thresholds_the_gate_stays_ok() {
        let mut g = Gate::default();
        let e = judge(&mut g, &GateConfig::default(), &stats(1000, 1_000_000, 9_000_000), &stats(0, 0, 0));
        assert_eq!(e.state, GateState::Ok);
    }

    fn vitals(page_views: u64, js_errors: u64, lcp_us: u64, cls_millionths: u64) -> VitalsStats {
        VitalsStats { page_views, js_errors, p75: [lcp_us, 0, cls_millionths, 0, 0] }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn vitals_over_their_limits_trip_once_there_are_enough_page_views() {
        let c = GateConfig {
            consecutive: 2,
            vitals: Some(VitalsLimits {
                min_page_views: 20,
                max_lcp_p75_us: Some(2_500_000),
                max_cls_p75_millionths: Some(100_000),
                max_js_error_ratio_ppm: Some(1_000),
                ..VitalsLimits::default()
            }),
            ..GateConfig::default()
        };
        let mut g = Gate::new(&c);
        let bad = vitals(19, 5, 4_000_000, 300_000);
        for _ in 0..5 {
            let e = g.evaluate(&c, &[], Some(&bad));
            assert_eq!((e.state, e.tripped_now, e.breaches.as_str()), (GateState::Inconclusive, false, ""));
        }
        let healthy = vitals(400, 0, 1_800_000, 20_000);
        assert_eq!(g.evaluate(&c, &[], Some(&healthy)).state, GateState::Ok);
        let slow = vitals(400, 0, 3_100_000, 20_000);
        let first = g.evaluate(&c, &[], Some(&slow));
        assert_eq!((first.state, first.tripped_now), (GateState::Breaching, false));
        assert_eq!(first.breaches, "LCP p75 3100.000ms > 2500.000ms");
        let bad = vitals(400, 2, 4_000_000, 250_000);
        let second = g.evaluate(&c, &[], Some(&bad));
        assert_eq!((second.state, second.tripped_now), (GateState::Tripped, true));
        assert_eq!(
            second.breaches,
            "LCP p75 4000.000ms > 2500.000ms, CLS p75 0.250000 > 0.100000, \
             js_error_ratio 0.5000% > 0.1000% (400 page views)"
        );
        // Without vitals figures (no beacon window yet) the limits are inconclusive.
        let mut g = Gate::new(&c);
        assert_eq!(g.evaluate(&c, &[], None).state, GateState::Inconclusive);
    }
}
