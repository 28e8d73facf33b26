//! The canary-vs-stable comparison of `gate.compare`: one [`Sequential`] test on 5xx
//! responses and, with `slow_ms`, one on slow responses. A test trips the gate when it rejects
//! at its share of `alpha` and the gate window shows the effect: the canary's bad ratio exceeds
//! stable's by more than `min_effect`, and its bad responses come from at least `min_users`
//! distinct users (see [`super::sequential`] for why).
//!
//! The tests take in *blocks* of consecutive evaluation periods: a block closes once it holds
//! requests of both versions (a period without one carries no evidence, and at a few requests
//! a second most periods lack one), and keeps at most [`BLOCK_MAX_MS`] of periods. When a
//! block closes depends on request counts only, never on which responses were bad, so each
//! block's likelihood ratio keeps expectation at most 1 under the null.

use super::logmath::ln;
use super::sequential::{Period, Sequential};
use crate::config::CompareConfig;
use crate::measure::window::{Tally, WindowStats};
use crate::model::Version;

/// The tests, in the order of the judgement's figures.
pub use crate::measure::names::EVIDENCE_TESTS as TESTS;

/// The longest span of periods one block keeps: older periods are dropped unread, so a block
/// never mixes traffic shares of minutes apart.
pub const BLOCK_MAX_MS: u32 = 10_000;

/// One evaluation period's counts for both tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodCounts {
    /// Bad = 5xx.
    pub errors: Period,
    /// Bad = slower than `slow_ms`.
    pub slow: Period,
}

impl PeriodCounts {
    /// Adds `other`'s counts.
    fn absorb(&mut self, other: &PeriodCounts) {
        for (p, o) in [(&mut self.errors, &other.errors), (&mut self.slow, &other.slow)] {
            p.canary += o.canary;
            p.stable += o.stable;
            p.canary_bad += o.canary_bad;
            p.stable_bad += o.stable_bad;
        }
    }

    /// Adds one merged tally of `version`, without its unweighed requests.
    pub fn add(&mut self, version: Version, tally: &Tally) {
        let u = &tally.unweighed;
        let requests = tally.requests.saturating_sub(u.requests);
        for (p, bad) in [
            (&mut self.errors, tally.errors.saturating_sub(u.errors)),
            (&mut self.slow, tally.slow.saturating_sub(u.slow)),
        ] {
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
}

/// What one evaluation of the comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// `ln R` per test of [`TESTS`] (`None`: not configured).
    pub log_statistic: [Option<f64>; 2],
    /// A test rejects, but the gate window does not show the effect (yet).
    pub rejected_unconfirmed: bool,
    /// The trip, described with its counts, statistic and alpha, if a test trips.
    pub trip: Option<String>,
}

/// The sequential tests of one canary (one gate identity).
#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    tests: [Option<Sequential>; 2],
    /// The periods of the open block, oldest first; at most `block_periods`.
    block: Vec<PeriodCounts>,
    block_periods: usize,
}

impl Compare {
    /// Fresh tests for `config` (the latency test only with `slow_ms`), taking in a period
    /// every `eval_ms`.
    pub fn new(config: &CompareConfig, eval_ms: u32) -> Self {
        let block_periods = (BLOCK_MAX_MS / eval_ms.max(1)).max(1) as usize;
        Compare {
            tests: [Some(Sequential::default()), config.slow_us.map(|_| Sequential::default())],
            block: Vec::with_capacity(block_periods),
            block_periods,
        }
    }

    /// Whether it runs the latency test.
    pub fn has_latency(&self) -> bool {
        let [_, latency] = &self.tests;
        latency.is_some()
    }

    /// Takes in one evaluation period: the tests see the open block once it holds requests of
    /// both versions.
    pub fn observe(&mut self, counts: &PeriodCounts) {
        if self.block.len() >= self.block_periods {
            self.block.remove(0);
        }
        self.block.push(*counts);
        let mut total = PeriodCounts::default();
        for period in &self.block {
            total.absorb(period);
        }
        if total.errors.canary == 0 || total.errors.stable == 0 {
            return;
        }
        self.block.clear();
        for (test, period) in self.tests.iter_mut().zip([total.errors, total.slow]) {
            if let Some(test) = test {
                test.observe(period);
            }
        }
    }

    /// Judges the evidence so far against `config`, with the gate window's figures of both
    /// versions for the observed effect.
    pub fn judge(&self, config: &CompareConfig, canary: &WindowStats, stable: &WindowStats) -> Judgement {
        let active = self.tests.iter().flatten().count();
        // Each test spends its share of alpha: `ln(tests / alpha)`.
        let threshold = ln(active as f64 * 1e6 / config.alpha_ppm.max(1) as f64);
        let mut judgement = Judgement { log_statistic: [None; 2], rejected_unconfirmed: false, trip: None };
        for (i, test) in self.tests.iter().enumerate() {
            let Some(test) = test else { continue };
            let log_r = test.log_statistic();
            if let Some(slot) = judgement.log_statistic.get_mut(i) {
                *slot = Some(log_r);
            }
            if log_r < threshold || judgement.trip.is_some() {
                continue;
            }
            let (canary_bad, stable_bad, users) = match i {
                0 => (canary.errors, stable.errors, canary.error_users),
                _ => (canary.slow, stable.slow, canary.slow_users),
            };
            let (canary_ppm, stable_ppm) = (canary.share_ppm(canary_bad), stable.share_ppm(stable_bad));
            let effect = canary_ppm.saturating_sub(stable_ppm);
            let users = users.count_ones();
            if effect <= config.min_effect_ppm || users < config.min_users {
                judgement.rejected_unconfirmed = true;
                continue;
            }
            let name = TESTS.get(i).copied().unwrap_or_default();
            judgement.trip = Some(format!(
                "compare {name}: ln R {} >= ln({active}/alpha) {} (alpha {}, {} starts); \
                 gate window: canary {canary_bad}/{} bad ({}), stable {stable_bad}/{} ({}), effect {} > {}, \
                 from at least {users} users",
                hundredths(log_r),
                hundredths(threshold),
                ppm_decimal(config.alpha_ppm),
                test.starts(),
                canary.requests,
                percent(canary_ppm),
                stable.requests,
                percent(stable_ppm),
                percent(effect),
                percent(config.min_effect_ppm),
            ));
        }
        judgement
    }

    /// The state as bytes, for a VM that takes over the evaluation.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 2 * Sequential::ENCODED_LEN);
        for test in &self.tests {
            match test {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    t.encode(&mut out);
                }
            }
        }
        out
    }

    /// The state in `bytes`, if valid and shaped like `config`'s tests (the open block is not
    /// kept: dropping periods unread is always safe).
    pub fn decode(config: &CompareConfig, eval_ms: u32, mut bytes: &[u8]) -> Option<Compare> {
        let mut tests = [None, None];
        for test in &mut tests {
            let (&present, rest) = bytes.split_first()?;
            bytes = rest;
            if present == 1 {
                let (state, rest) = bytes.split_at_checked(Sequential::ENCODED_LEN)?;
                *test = Some(Sequential::decode(state)?);
                bytes = rest;
            }
        }
        let [errors, latency] = &tests;
        (bytes.is_empty() && errors.is_some() && latency.is_some() == config.slow_us.is_some())
            .then(|| Compare { tests, ..Compare::new(config, eval_ms) })
    }
}

/// `12345` ppm as `1.2345%`.
pub fn percent(ppm: u64) -> String {
    format!("{}.{:04}%", ppm / 10_000, ppm % 10_000)
}

/// `x` with two decimals, without the float formatter (kilobytes of code in the filter).
fn hundredths(x: f64) -> String {
    // Saturating conversion; NaN is 0.
    let v = (x * 100.0).round() as i64;
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", (v / 100).unsigned_abs(), (v % 100).unsigned_abs())
}

/// `1000` ppm as `0.001`.
fn ppm_decimal(ppm: u64) -> String {
    let text = format!("{}.{:06}", ppm / 1_000_000, ppm % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::window::{user_bit, Completed};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn window(requests: u64, errors: u64, users: u64) -> WindowStats {
        let error_users = (0..users).fold(0, |acc, u| acc | user_bit(u));
        WindowStats { requests, errors, error_users, ..WindowStats::default() }
    }

    fn failing_period() -> PeriodCounts {
        PeriodCounts { errors: Period { canary: 20, stable: 180, canary_bad: 2, stable_bad: 0 }, ..Default::default() }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn trips_when_the_test_rejects_and_the_window_shows_the_effect() {
        let config = CompareConfig::default();
        let mut c = Compare::new(&config, 250);
        c.observe(&failing_period());
        let early = c.judge(&config, &window(20, 2, 2), &window(180, 0, 0));
        assert_eq!((early.trip.as_deref(), early.rejected_unconfirmed), (None, false), "{early:?}");
        c.observe(&failing_period());
        let j = c.judge(&config, &window(40, 4, 4), &window(360, 0, 0));
        let trip = j.trip.unwrap();
        assert!(trip.starts_with("compare errors: ln R "), "{trip}");
        assert!(trip.contains("(alpha 0.001, 1 starts); gate window: canary 4/40 bad (10.0000%)"), "{trip}");
        assert!(trip.ends_with("effect 10.0000% > 1.0000%, from at least 4 users"), "{trip}");
        assert!(j.log_statistic[0].unwrap() >= 1000f64.ln());
        assert_eq!(j.log_statistic[1], None, "no latency test without slow_ms");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_rejection_without_the_effect_or_enough_users_does_not_trip() {
        let config = CompareConfig::default();
        let mut c = Compare::new(&config, 250);
        for _ in 0..3 {
            c.observe(&failing_period());
        }
        for (canary, why) in [(window(60, 0, 0), "no effect in the window"), (window(60, 6, 2), "two users only")] {
            let j = c.judge(&config, &canary, &window(540, 0, 0));
            assert_eq!((j.trip, j.rejected_unconfirmed), (None, true), "{why}");
        }
        let small = CompareConfig { min_effect_ppm: 200_000, ..config.clone() };
        assert_eq!(c.judge(&small, &window(60, 6, 6), &window(540, 0, 0)).trip, None, "10% is under 20%");
        assert!(c.judge(&config, &window(60, 6, 3), &window(540, 0, 0)).trip.is_some());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_latency_test_spends_half_of_alpha() {
        let config = CompareConfig { slow_us: Some(200_000), ..CompareConfig::default() };
        let mut c = Compare::new(&config, 250);
        let requests = Period { canary_bad: 0, ..failing_period().errors };
        let slow = PeriodCounts { errors: requests, slow: failing_period().errors };
        let slow_window = |requests, slow, users: u64| WindowStats {
            requests,
            slow,
            slow_users: (0..users).fold(0, |acc, u| acc | user_bit(u)),
            ..WindowStats::default()
        };
        let mut periods = 0;
        while c.judge(&config, &slow_window(60, 6, 6), &slow_window(540, 0, 0)).trip.is_none() {
            assert!(periods < 10, "no trip");
            c.observe(&slow);
            periods += 1;
        }
        let j = c.judge(&config, &slow_window(60, 6, 6), &slow_window(540, 0, 0));
        assert!(j.trip.unwrap().starts_with("compare latency:"));
        assert!(j.log_statistic[1].unwrap() >= 2000f64.ln() && j.log_statistic[0].unwrap().abs() < 1e-9);
        assert_eq!(periods, 2, "4 slow canary responses at 10% of the traffic: ln R 8.02 >= ln 2000 = 7.60");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn sparse_periods_add_up_to_blocks_of_both_versions() {
        let config = CompareConfig::default();
        let one = |canary, stable, canary_bad| PeriodCounts {
            errors: Period { canary, stable, canary_bad, stable_bad: 0 },
            ..Default::default()
        };
        let evidence = |c: &Compare| c.judge(&config, &window(0, 0, 0), &window(0, 0, 0)).log_statistic[0].unwrap();
        // Two requests a second: a failing canary request, then stable ones, periods apart.
        let mut c = Compare::new(&config, 250);
        c.observe(&one(1, 0, 1));
        c.observe(&one(0, 0, 0));
        assert!(evidence(&c).abs() < 1e-9, "no stable request yet: nothing judged");
        c.observe(&one(0, 2, 0));
        assert!(evidence(&c) > 0.5, "the block closed: 1 bad canary request of 3");
        // A block keeps 10 s of periods: a canary request 11 s before the first stable one
        // is dropped unread.
        let mut c = Compare::new(&config, 250);
        c.observe(&one(1, 0, 1));
        for _ in 0..43 {
            c.observe(&one(0, 0, 0));
        }
        c.observe(&one(0, 2, 0));
        assert!(evidence(&c).abs() < 1e-9);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_period_counts_only_the_weighed_requests() {
        // Ten failing overrides, eight of them beyond the testers' weight (issue 26, Why 3),
        // and 20 good canary requests.
        let mut tally = Tally::default();
        for i in 0..30 {
            let completed = Completed {
                is_error: i < 10,
                is_slow: i < 10,
                unweighed: (2..10).contains(&i),
                ..Completed::default()
            };
            tally.record(&completed);
        }
        let mut counts = PeriodCounts::default();
        counts.add(Version::Canary, &tally);
        counts.add(Version::Stable, &Tally { requests: 50, ..Tally::default() });
        let expected = Period { canary: 22, stable: 50, canary_bad: 2, stable_bad: 0 };
        assert_eq!(counts, PeriodCounts { errors: expected, slow: expected });
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_state_round_trips_for_the_same_tests_only() {
        let with_latency = CompareConfig { slow_us: Some(1_000), ..CompareConfig::default() };
        let mut c = Compare::new(&with_latency, 250);
        c.observe(&failing_period());
        let bytes = c.encode();
        assert_eq!(Compare::decode(&with_latency, 250, &bytes), Some(c.clone()));
        assert_eq!(Compare::decode(&CompareConfig::default(), 250, &bytes), None, "another shape");
        assert_eq!(Compare::decode(&with_latency, 250, &bytes[..bytes.len() - 1]), None);
        assert_eq!(Compare::decode(&with_latency, 250, &[]), None);
        assert_eq!(ppm_decimal(1_000), "0.001");
        assert_eq!(ppm_decimal(100_000), "0.1");
        assert_eq!(
            (hundredths(6.9077), hundredths(-0.004), hundredths(-1.5)),
            ("6.91".into(), "0.00".into(), "-1.50".into())
        );
    }
}
