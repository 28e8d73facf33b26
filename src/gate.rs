//! The in-proxy SLO gate: evaluates the canary's window once a second and trips after
//! `consecutive` breached evaluations in a row. A trip is latched until the canary changes
//! (another version name) or the configuration's `rearm` value changes.

use crate::window::WindowStats;

/// Validated gate thresholds. Absent thresholds are not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Evaluation window in seconds.
    pub window_s: u32,
    /// Below this many canary requests in the window the verdict is inconclusive.
    pub min_requests: u64,
    /// Canary 5xx ratio limit, parts per million.
    pub max_error_ratio_ppm: Option<u64>,
    /// Canary p95 limit, microseconds.
    pub max_p95_us: Option<u64>,
    /// Canary p99 limit, microseconds.
    pub max_p99_us: Option<u64>,
    /// Limit on canary minus stable 5xx ratio, parts per million.
    pub max_error_ratio_over_stable_ppm: Option<u64>,
    /// Breached evaluations in a row that trip the gate.
    pub consecutive: u32,
    /// Evaluate, export and log, but never reroute.
    pub dry_run: bool,
    /// Changing this value clears a latched trip.
    pub rearm: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            window_s: 5,
            min_requests: 20,
            max_error_ratio_ppm: None,
            max_p95_us: None,
            max_p99_us: None,
            max_error_ratio_over_stable_ppm: None,
            consecutive: 2,
            dry_run: false,
            rearm: 0,
        }
    }
}

impl GateConfig {
    /// Whether any threshold is set.
    pub fn has_thresholds(&self) -> bool {
        self.max_error_ratio_ppm.is_some()
            || self.max_p95_us.is_some()
            || self.max_p99_us.is_some()
            || self.max_error_ratio_over_stable_ppm.is_some()
    }
}

/// Exported as `canary_gate_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// Enough traffic, every threshold met.
    Ok = 0,
    /// Too little traffic to judge (never a breach).
    Inconclusive = 1,
    /// A threshold is breached, not yet `consecutive` times.
    Breaching = 2,
    /// Latched: canary traffic goes to stable.
    Tripped = 3,
}

impl GateState {
    /// The gauge value.
    pub fn value(self) -> u64 {
        self as u64
    }

    fn from_value(v: u8) -> Option<GateState> {
        [GateState::Ok, GateState::Inconclusive, GateState::Breaching, GateState::Tripped]
            .into_iter()
            .find(|s| *s as u8 == v)
    }
}

/// What a trip is latched to: the canary's name and the `rearm` value. A verdict for another
/// identity does not apply.
pub fn identity(canary: &str, rearm: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(canary.as_bytes(), rearm)
}

/// The verdict the evaluating VM publishes in shared data for every VM to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedVerdict {
    /// The gate's state.
    pub state: GateState,
    /// The [`identity`] it was computed for.
    pub identity: u64,
}

impl SharedVerdict {
    /// 9 bytes: state, then identity little-endian.
    pub fn encode(&self) -> [u8; 9] {
        let mut out = [0u8; 9];
        let (state, id) = out.split_at_mut(1);
        state.copy_from_slice(&[self.state as u8]);
        id.copy_from_slice(&self.identity.to_le_bytes());
        out
    }

    /// The verdict in `bytes`, if well formed.
    pub fn decode(bytes: &[u8]) -> Option<SharedVerdict> {
        let (&state, id) = bytes.split_first()?;
        let id: [u8; 8] = id.try_into().ok()?;
        Some(SharedVerdict { state: GateState::from_value(state)?, identity: u64::from_le_bytes(id) })
    }

    /// Whether this verdict reroutes traffic of a gate with `identity`.
    pub fn trips(&self, identity: u64) -> bool {
        self.state == GateState::Tripped && self.identity == identity
    }
}

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
    fn shared_verdicts_round_trip_and_bind_to_the_canary() {
        let id = identity("canary", 0);
        let v = SharedVerdict { state: GateState::Tripped, identity: id };
        assert_eq!(SharedVerdict::decode(&v.encode()), Some(v));
        assert!(v.trips(id));
        assert!(!v.trips(identity("canary-v2", 0)));
        assert!(!v.trips(identity("canary", 1)));
        assert!(!SharedVerdict { state: GateState::Breaching, identity: id }.trips(id));
        assert_eq!(SharedVerdict::decode(&[4, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(SharedVerdict::decode(&[3, 0]), None);
        assert_eq!(SharedVerdict::decode(&[]), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_thresholds_the_gate_stays_ok() {
        let mut g = Gate::default();
        let e = g.evaluate(&GateConfig::default(), &stats(1000, 1_000_000, 9_000_000), &stats(0, 0, 0));
        assert_eq!(e.state, GateState::Ok);
    }
}
