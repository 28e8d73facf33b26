//! The in-proxy SLO gate: evaluates the canary's window once a second and trips after
//! `consecutive` breached evaluations in a row. A trip is latched until the canary changes
//! (another version name) or the configuration's `rearm` value changes.

use crate::config::GateConfig;
use crate::measure::window::WindowStats;
use crate::model::GateState;

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The state after this evaluation.
    pub state: GateState,
    /// True only on the evaluation that tripped the gate.
    pub tripped_now: bool,
    /// The breached thresholds with measured values, empty if none.
    pub breaches: String,
}

/// Evaluation state carried from one second to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    consecutive_breaches: u32,
    tripped: bool,
}

impl Gate {
    /// A gate that is already latched (a trip found in shared data).
    pub fn latched() -> Self {
        Gate { consecutive_breaches: 0, tripped: true }
    }

    /// Whether the gate is latched.
    pub fn is_tripped(&self) -> bool {
        self.tripped
    }

    /// Evaluates one second's windows.
    pub fn evaluate(&mut self, config: &GateConfig, canary: &WindowStats, stable: &WindowStats) -> Evaluation {
        let breaches = breaches(config, canary, stable);
        if self.tripped {
            return Evaluation { state: GateState::Tripped, tripped_now: false, breaches };
        }
        if canary.requests < config.min_requests.max(1) || !config.has_thresholds() {
            self.consecutive_breaches = 0;
            let state = if config.has_thresholds() { GateState::Inconclusive } else { GateState::Ok };
            return Evaluation { state, tripped_now: false, breaches: String::new() };
        }
        if breaches.is_empty() {
            self.consecutive_breaches = 0;
            return Evaluation { state: GateState::Ok, tripped_now: false, breaches };
        }
        self.consecutive_breaches += 1;
        if self.consecutive_breaches >= config.consecutive.max(1) {
            self.tripped = true;
            Evaluation { state: GateState::Tripped, tripped_now: true, breaches }
        } else {
            Evaluation { state: GateState::Breaching, tripped_now: false, breaches }
        }
    }
}

/// `12345` ppm as `1.2345%`.
fn percent(ppm: u64) -> String {
    format!("{}.{:04}%", ppm / 10_000, ppm % 10_000)
}

/// `123456` µs as `123.456ms`.
fn millis(us: u64) -> String {
    format!("{}.{:03}ms", us / 1000, us % 1000)
}

/// The thresholds `canary` breaches, as `name measured > limit` items.
fn breaches(config: &GateConfig, canary: &WindowStats, stable: &WindowStats) -> String {
    let mut out = String::new();
    let mut note = |text: String| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&text);
    };
    if let Some(limit) = config.max_error_ratio_ppm {
        if canary.error_ratio_ppm > limit {
            note(format!("error_ratio {} > {}", percent(canary.error_ratio_ppm), percent(limit)));
        }
    }
    if let Some(limit) = config.max_p95_us {
        if canary.p95_us > limit {
            note(format!("p95 {} > {}", millis(canary.p95_us), millis(limit)));
        }
    }
    if let Some(limit) = config.max_p99_us {
        if canary.p99_us > limit {
            note(format!("p99 {} > {}", millis(canary.p99_us), millis(limit)));
        }
    }
    if let Some(limit) = config.max_error_ratio_over_stable_ppm {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn stats(requests: u64, error_ratio_ppm: u64, p95_us: u64) -> WindowStats {
        WindowStats {
            requests,
            errors: requests * error_ratio_ppm / 1_000_000,
            error_ratio_ppm,
            p50_us: p95_us / 2,
            p95_us,
            p99_us: p95_us,
        }
    }

    fn config() -> GateConfig {
        GateConfig { max_error_ratio_ppm: Some(50_000), max_p95_us: Some(200_000), ..GateConfig::default() }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn trips_after_consecutive_breaches_and_latches() {
        let (c, mut g) = (config(), Gate::default());
        let healthy = stats(100, 1_000, 50_000);
        let failing = stats(100, 300_000, 50_000);
        assert_eq!(g.evaluate(&c, &healthy, &healthy).state, GateState::Ok);
        let first = g.evaluate(&c, &failing, &healthy);
        assert_eq!((first.state, first.tripped_now), (GateState::Breaching, false));
        assert_eq!(first.breaches, "error_ratio 30.0000% > 5.0000%");
        let second = g.evaluate(&c, &failing, &healthy);
        assert_eq!((second.state, second.tripped_now), (GateState::Tripped, true));
        let later = g.evaluate(&c, &healthy, &healthy);
        assert_eq!((later.state, later.tripped_now), (GateState::Tripped, false));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_healthy_evaluation_resets_the_count() {
        let (c, mut g) = (config(), Gate::default());
        let failing = stats(100, 0, 400_000);
        let healthy = stats(100, 0, 100_000);
        for _ in 0..10 {
            assert_eq!(g.evaluate(&c, &failing, &healthy).state, GateState::Breaching);
            assert_eq!(g.evaluate(&c, &healthy, &healthy).state, GateState::Ok);
        }
        assert!(!g.is_tripped());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn low_traffic_is_inconclusive_never_a_breach() {
        let (c, mut g) = (config(), Gate::default());
        for _ in 0..100 {
            let e = g.evaluate(&c, &stats(19, 1_000_000, 10_000_000), &stats(0, 0, 0));
            assert_eq!(e.state, GateState::Inconclusive);
        }
        assert!(!g.is_tripped());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn comparison_against_stable_uses_the_difference() {
        let c = GateConfig { max_error_ratio_over_stable_ppm: Some(10_000), consecutive: 1, ..GateConfig::default() };
        let mut g = Gate::default();
        assert_eq!(g.evaluate(&c, &stats(100, 60_000, 0), &stats(100, 55_000, 0)).state, GateState::Ok);
        let e = g.evaluate(&c, &stats(100, 70_000, 0), &stats(100, 55_000, 0));
        assert!(e.tripped_now, "{e:?}");
        assert_eq!(e.breaches, "error_ratio over stable 1.5000% (7.0000% - 5.5000%) > 1.0000%");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn latency_breaches_name_measured_and_limit() {
        let c = GateConfig { max_p95_us: Some(200_000), max_p99_us: Some(1_000_000), ..GateConfig::default() };
        let e = Gate::default().evaluate(&c, &stats(50, 0, 612_345), &stats(0, 0, 0));
        assert_eq!(e.breaches, "p95 612.345ms > 200.000ms");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_thresholds_the_gate_stays_ok() {
        let mut g = Gate::default();
        let e = g.evaluate(&GateConfig::default(), &stats(1000, 1_000_000, 9_000_000), &stats(0, 0, 0));
        assert_eq!(e.state, GateState::Ok);
    }
}
