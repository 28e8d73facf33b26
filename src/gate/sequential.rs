//! An anytime-valid sequential test that the canary's share of "bad" responses (5xx, or slower
//! than a limit) exceeds its share of traffic. It may be read after every evaluation period,
//! for as long as a rollout lasts, and the probability that it ever rejects while the canary
//! is no worse than stable stays below `alpha`.
//!
//! # The statistic
//!
//! Evaluation period `t` brings, from the merged workers' tallies, `n_c`, `n_s` requests of
//! canary and stable and `b_c`, `b_s` bad ones among them, `B = b_c + b_s`. Let
//! `ρ = n_c / (n_c + n_s)` be the canary's share of the period's traffic.
//!
//! *Null hypothesis* (the canary is no worse): within a period, whether a request is bad does
//! not depend on the version that served it. Given the period's requests and `B`, the bad
//! responses are then a random draw of `B` of them, and `b_c` is hypergeometric. Following
//! Lindon, Sanden and Shirikian (Netflix, "Rapid Regression Detection in Software Deployments
//! through Sequential Testing", KDD 2022) and Lindon and Malek ("Anytime-Valid Inference for
//! Multinomial Count Data", NeurIPS 2022), we condition on the bad events and ask which
//! version each fell on: under the null, `Binomial(B, ρ)` (up to the hypergeometric's
//! tighter spread, below).
//!
//! *Alternative*: a bad response is `r > 1` times as likely on the canary (relative risk), so
//! a bad event falls on the canary with probability `θ_r = ρr / (ρr + 1 − ρ)`. The period's
//! likelihood ratio is
//!
//! ```text
//! L_r(t) = (θ_r/ρ)^b_c · ((1−θ_r)/(1−ρ))^b_s,   ln L_r(t) = b_c·ln r − B·ln(1 + ρ(r − 1))
//! ```
//!
//! Under the binomial null `E[L_r(t)] = 1`; the hypergeometric is a convex-order contraction of
//! the binomial with the same mean (Hoeffding 1963, theorem 4), and `L_r` is convex in `b_c`,
//! so `E[L_r(t) | past] ≤ 1`. Since `ρ` changes with every weight step, no conjugate prior
//! over `θ` fits all periods; the mixture is over `r` instead, on the fixed grid [`RISKS`]
//! with weights `w_r` ([`WEIGHTS`]: a quarter on "every bad response is the canary's", the
//! usual shape of a broken deployment, the rest equal). Any product of period ratios started
//! at a stopping time is then a nonnegative supermartingale with initial value 1.
//!
//! # Restarts: evidence that stays valid over a long rollout
//!
//! A product started at the rollout's beginning sinks during 30 healthy minutes, and would
//! need as long to climb back once the canary turns bad. So the test keeps starting new
//! products, and mixes them with a prior over change points (a Shiryaev–Roberts-type
//! e-detector): start 1 at the beginning, with weight `π_1 = 0.9` (a faulty revision is
//! usually faulty from its first request), and start `k ≥ 2` once the previous start has seen
//! [`EVENTS_PER_START`] bad events (a stopping time), with weight `π_k = 0.2/(k(k+1))`; the
//! weights sum to 1. The statistic
//!
//! ```text
//! R(t) = Σ_r w_r Σ_{k started} π_k Π_{s ≥ start k} L_r(s)  +  Σ_{k not started} π_k
//! ```
//!
//! is a mixture of supermartingales with initial value 1, hence one itself, and by Ville's
//! inequality `P(sup_t R(t) ≥ 1/α) ≤ α` over an unbounded horizon. A fault after `m` healthy
//! starts pays `ln(1/π_m) ≈ 2 ln m + 1.6` nats more than one at the beginning (a bad canary
//! response at 10% canary traffic brings up to 2.3), and nothing for the healthy evidence
//! before its start. Per `r`, the inner sum follows
//! `A_r ← A_r · L_r(t)` and `A_r ← A_r + π_k` at a start: a fixed array, kept in logs.
//!
//! # What sticky per-user assignment breaks
//!
//! The null treats requests as exchangeable within a period. Users are assigned to a version
//! for good, so one user's requests are not independent: a user whose own requests fail (a
//! bad client, a broken account, a tester) puts all of its failures on one version, and the
//! test would read it as a version effect. The gate therefore trips on this test only when,
//! over the gate window, the observed effect (canary minus stable bad ratio) also exceeds
//! `min_effect` and the canary's bad responses come from at least `min_users` distinct users
//! (a mergeable 64-bit sketch; its popcount never exceeds the distinct users). Periods of
//! [`crate::config::GateConfig::eval_ms`] keep the canary's share steady within a period, so
//! a global incident that starts mid-period hits both versions alike.

use super::logmath::{exp, ln, log_add};

/// Relative risks of the alternative mixture: from barely worse to "every bad response is the
/// canary's".
pub const RISKS: [f64; 10] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0];

/// Their prior weights (summing to 1): a quarter on the last, the rest equal.
pub const WEIGHTS: [f64; 10] = {
    let rest = 0.75 / 9.0;
    [rest, rest, rest, rest, rest, rest, rest, rest, rest, 0.25]
};

/// `ln` of [`RISKS`] and of [`WEIGHTS`], precomputed (the request path never needs them, the
/// evaluation every period does; a unit test checks them).
const LN_RISKS: [f64; 10] = [
    0.095_310_179_804_324_93,
    0.223_143_551_314_209_76,
    0.405_465_108_108_164_4,
    std::f64::consts::LN_2,
    1.098_612_288_668_109_8,
    1.609_437_912_434_100_3,
    std::f64::consts::LN_10,
    3.401_197_381_662_155_5,
    4.605_170_185_988_092,
    6.907_755_278_982_137,
];
const LN_WEIGHTS: [f64; 10] = {
    let rest = -2.484_906_649_788_000_4;
    [rest, rest, rest, rest, rest, rest, rest, rest, rest, -1.386_294_361_119_890_6]
};

/// `π_1`, the prior weight of a fault from the first request.
const FIRST_START: f64 = 0.9;

/// Bad events (on either version) after which the next start begins.
pub const EVENTS_PER_START: u64 = 16;

/// One period's counts of one kind of bad response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    /// Canary requests.
    pub canary: u64,
    /// Stable requests.
    pub stable: u64,
    /// Bad canary responses.
    pub canary_bad: u64,
    /// Bad stable responses.
    pub stable_bad: u64,
}

/// The e-detector's state: fixed size whatever the traffic or the rollout's length.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequential {
    /// `ln A_r` per relative risk of [`RISKS`].
    log_a: [f64; RISKS.len()],
    /// Starts begun so far (at least 1).
    starts: u64,
    /// Bad events since the last start.
    since_start: u64,
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential { log_a: [ln(start_weight(1)); RISKS.len()], starts: 1, since_start: 0 }
    }
}

/// `π_1 = 0.9`, `π_k = 0.2/(k(k+1))` for `k ≥ 2`.
fn start_weight(k: u64) -> f64 {
    if k <= 1 {
        return FIRST_START;
    }
    let k = k as f64;
    2.0 * (1.0 - FIRST_START) / (k * (k + 1.0))
}

/// `Σ_{k > started} π_k = 0.2/(started + 1)`.
fn unstarted_weight(started: u64) -> f64 {
    2.0 * (1.0 - FIRST_START) / (started as f64 + 1.0)
}

/// The lowest `ln A_r` kept: far below any value that matters, and never `-inf` or NaN.
const LOG_FLOOR: f64 = -1e12;

impl Sequential {
    /// Takes in one evaluation period. A period without requests of both versions, or without
    /// bad responses, carries no evidence.
    pub fn observe(&mut self, p: Period) {
        let bad = p.canary_bad.saturating_add(p.stable_bad);
        if p.canary == 0 || p.stable == 0 || bad == 0 {
            return;
        }
        let share = p.canary as f64 / (p.canary as f64 + p.stable as f64);
        for ((log_a, &risk), &ln_risk) in self.log_a.iter_mut().zip(RISKS.iter()).zip(LN_RISKS.iter()) {
            let step = p.canary_bad as f64 * ln_risk - bad as f64 * ln(1.0 + share * (risk - 1.0));
            *log_a = (*log_a + step).max(LOG_FLOOR);
        }
        self.since_start = self.since_start.saturating_add(bad);
        if self.since_start >= EVENTS_PER_START {
            self.starts = self.starts.saturating_add(1);
            self.since_start = 0;
            let weight = ln(start_weight(self.starts));
            for log_a in &mut self.log_a {
                *log_a = log_add(*log_a, weight);
            }
        }
    }

    /// `ln R`: the log of the test statistic. Rejects at `alpha` once `ln R ≥ ln(1/alpha)`.
    pub fn log_statistic(&self) -> f64 {
        // ln Σ e^{x_i}, computed around the largest term.
        let unstarted = ln(unstarted_weight(self.starts));
        let terms = self.log_a.iter().zip(LN_WEIGHTS).map(|(&a, w)| a + w).chain([unstarted]);
        let top = terms.clone().fold(f64::NEG_INFINITY, f64::max);
        top + ln(terms.map(|x| exp(x - top)).sum())
    }

    /// The starts begun so far.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// Encoded size: `starts`, `since_start`, then each `ln A_r`, little-endian.
    pub const ENCODED_LEN: usize = 16 + 8 * RISKS.len();

    /// The state as bytes, for a VM that takes over the evaluation.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.starts.to_le_bytes());
        out.extend_from_slice(&self.since_start.to_le_bytes());
        for a in &self.log_a {
            out.extend_from_slice(&a.to_le_bytes());
        }
    }

    /// The state in the first [`Sequential::ENCODED_LEN`] bytes of `bytes`, if valid.
    pub fn decode(bytes: &[u8]) -> Option<Sequential> {
        let (starts, rest) = bytes.split_first_chunk::<8>()?;
        let (since_start, mut rest) = rest.split_first_chunk::<8>()?;
        let mut s = Sequential {
            starts: u64::from_le_bytes(*starts),
            since_start: u64::from_le_bytes(*since_start),
            ..Sequential::default()
        };
        for a in &mut s.log_a {
            let (value, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            *a = f64::from_le_bytes(*value);
            // Any value observe() can make: finite, at most what the whole history allows.
            if !(LOG_FLOOR..=1e12).contains(a) {
                return None;
            }
        }
        (s.starts >= 1 && s.since_start < EVENTS_PER_START).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn period(canary: u64, stable: u64, canary_bad: u64, stable_bad: u64) -> Period {
        Period { canary, stable, canary_bad, stable_bad }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_precomputed_logs_are_the_logs() {
        for (i, (&r, &w)) in RISKS.iter().zip(WEIGHTS.iter()).enumerate() {
            assert!((LN_RISKS[i] - r.ln()).abs() < 1e-15, "{r}");
            assert!((LN_WEIGHTS[i] - w.ln()).abs() < 1e-15, "{w}");
        }
        assert!((WEIGHTS.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn starts_at_one_and_ignores_periods_without_evidence() {
        let mut s = Sequential::default();
        assert!(s.log_statistic().abs() < 1e-12, "R(0) = 1: {}", s.log_statistic());
        for p in [period(0, 10, 0, 5), period(10, 0, 5, 0), period(10, 10, 0, 0)] {
            s.observe(p);
        }
        assert!(s.log_statistic().abs() < 1e-12);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_responses_all_on_a_tenth_of_the_traffic_reject_after_a_few() {
        // ln(1/0.001) = 6.9: four bad canary responses at 10% of the traffic, none on stable.
        let mut s = Sequential::default();
        let mut needed = 0;
        while s.log_statistic() < 1000f64.ln() {
            s.observe(period(10, 90, 1, 0));
            needed += 1;
        }
        assert_eq!(needed, 4, "{}", s.log_statistic());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_responses_in_proportion_to_traffic_build_no_evidence() {
        let mut s = Sequential::default();
        for _ in 0..10_000 {
            s.observe(period(100, 900, 5, 45));
        }
        assert!(s.log_statistic() < 0.0, "{}", s.log_statistic());
        assert_eq!(s.starts(), 1 + 10_000, "a start per period of at least EVENTS_PER_START bad events");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_fault_after_a_long_healthy_run_is_caught_within_a_few_events_more() {
        let reject = 1000f64.ln();
        let events_to_reject = |s: &mut Sequential| {
            let mut n = 0;
            while s.log_statistic() < reject {
                s.observe(period(20, 180, 6, 1));
                n += 7;
            }
            n
        };
        let fresh = events_to_reject(&mut Sequential::default());
        let mut long = Sequential::default();
        for _ in 0..7_200 {
            long.observe(period(100, 900, 5, 45));
        }
        let late = events_to_reject(&mut long);
        assert!(late <= fresh + 3 * 7, "fresh {fresh} events, after 30 healthy minutes {late}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_state_round_trips_and_refuses_what_observe_cannot_make() {
        let mut s = Sequential::default();
        for _ in 0..40 {
            s.observe(period(30, 70, 2, 3));
        }
        let mut bytes = Vec::new();
        s.encode(&mut bytes);
        assert_eq!(bytes.len(), Sequential::ENCODED_LEN);
        assert_eq!(Sequential::decode(&bytes), Some(s.clone()));
        assert_eq!(Sequential::decode(&bytes[..bytes.len() - 1]), None);
        let mut nan = bytes.clone();
        nan[16..24].copy_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(Sequential::decode(&nan), None);
        let mut no_start = bytes.clone();
        no_start[..8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Sequential::decode(&no_start), None);
    }
}
