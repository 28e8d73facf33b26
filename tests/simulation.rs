//! A deterministic host simulation of `gate.compare`: the real decision code (`Gate::new` /
//! `Gate::resumed` and `Gate::compare`, with a real `Window` for the gate window's effect and
//! users figures) fed with simulated traffic, period by period, as the proxy's leader VM feeds
//! it. Run it optimised: `make simulate` (`cargo test --profile simulation --test simulation
//! -- --nocapture`); it prints a Markdown report and writes it to `target/simulation.md`.
//!
//! # The proxy's schedule
//!
//! Every `gate.eval_ms` (250 ms, the default) the leader merges the workers' tallies into the
//! window (one-second slots, 60 of them: `metrics.window_s`; the gate reads its last
//! `gate.window_s` = 5) and calls `Gate::compare` with that period's counts. Period `k` covers
//! `[k/4, (k+1)/4)` s; its tallies land in second `k / 4` (the proxy merges the first period of
//! a new second into the second before), so the window is advanced to `k / 4` before they are
//! added. The period is judged at its end, `(k+1)/4` s: the time a trip is reported at. The
//! proxy's own pipeline (shipping, verdict propagation) is not part of it.
//!
//! # Traffic
//!
//! * Bursty arrivals: a per-second rate multiplier from a two-state Markov on/off process
//!   (calm → burst with probability 0.05 a second, burst → calm 0.25: bursts of 4 s on
//!   average, 1/6 of the time; levels 0.4 calm and 4.0 in a burst, mean 1), times an
//!   independent per-second lognormal jitter (σ 0.3, mean 1). A period brings
//!   `Poisson(rate × multiplier × 0.25)` requests, `Binomial(n, share)` of them the canary's.
//! * Each version's 5xx count is `Binomial(n_v, p_v)`, its slow count an independent
//!   `Binomial(n_v, q_v)` (slow: slower than `slow_ms`; latencies are not drawn, histograms
//!   stay empty). Each bad response comes from a user drawn at random from a large population
//!   (`user_bit` of a random `u64`), so the distinct-users guard is met.
//!
//! # Healthy rollouts (false trips)
//!
//! [`HEALTHY_ROLLOUTS`] rollouts of 30 minutes, rollout `i` seeded from `HEALTHY_SEED + i`:
//! canary share uniform in 5–50%, doubled at minutes 10 and 20 (at most 50%, like Argo steps),
//! mean rate log-uniform in 1–1,000 rps, 5xx ratio uniform in 0–5% and the same for both
//! versions, 5% slow on both. Four gates judge the same traffic: errors only, raw (guards off:
//! `min_effect` 0, `min_users` 1) and with the defaults (`gate.compare: {}`); the same two with
//! `slow_ms` (both tests, each at alpha/2). Any trip is a false trip.
//!
//! # Faulty canaries (detection times)
//!
//! Canary share 10%, 1% 5xx on both versions, mean rates 1, 10, 100, 1,000 rps,
//! [`DETECTION_RUNS`] runs per cell, a fault from minute 0 or minute 25 of a 30-minute
//! rollout. Error faults (+1, +5, +30 percentage points of 5xx on the canary) meet the default
//! errors-only gate. "2× p95": latencies are lognormal with σ 0.5, `slow_ms` is stable's p95 (5%
//! of stable slow), canary latencies doubled are slow with probability
//! `P(Z > 1.6449 − ln 2/0.5) = 39.8%`; it meets the default gate with `slow_ms` (both tests).
//! Detection time: the tripping period's end minus the fault's start, for a trip after the
//! fault by the test the fault concerns (any other trip is a false trip). Median and p95 are
//! nearest-rank over all runs, an undetected run counting as never ("—": not reached by the
//! rollout's end).
//!
//! # Speed
//!
//! `Gate::compare` judges all of its tests every period, microseconds of logarithms, and
//! 10,000 half-hour rollouts are 72 million periods. So the simulation judges only the periods that can judge otherwise:
//! * A gate's comparison state is kept between periods. A period with bad responses and
//!   requests of both versions, or one after a rejection the window did not confirm, is judged
//!   by `Gate::compare` on a gate resumed with that state (`Gate::resumed`, what a VM taking
//!   over does). Any other period goes through `Compare::observe` on a copy of the state: if
//!   the tests' state (its encoding, the open block aside) is unchanged, the judgement cannot
//!   change and the copy is kept; else the period is judged as above.
//! * A gate with the defaults trips only in a rollout where its raw twin trips, no later:
//!   both have the same state until the raw one trips (they differ in the guards only), and
//!   the defaults' guards (effect > 1%, 3 users) imply the raw ones (effect > 0, 1 user). So
//!   the raw gates judge every healthy rollout, and the defaults the rollouts where their twin
//!   tripped.
//! * `Window::add` scans the tally's latency histogram (a thousand buckets, empty here): the
//!   periods of a second are summed, and the seconds of the gate window added (in order, the
//!   window advanced to each) only when the gate window is read, plus the current second's
//!   periods so far.
//!
//! The reference way, `Gate::new` then `Gate::compare` every period and the window fed every
//! period, runs too on the first healthy rollouts and the first that trip (all four gates), and
//! on the first run of every detection cell (with the raw twin, which must trip no later): it
//! must give the same trips, with the same figures.

#![cfg(not(target_arch = "wasm32"))]

use canary_gate::config::{CompareConfig, Config, GateConfig};
use canary_gate::gate::compare::{Compare, PeriodCounts, TESTS};
use canary_gate::gate::sequential::Period;
use canary_gate::gate::Gate;
use canary_gate::measure::window::{user_bit, Tally, Window, WindowStats};
use canary_gate::model::Version;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Instant;

/// Evaluation periods per second (`gate.eval_ms` = 250).
const PERIODS_PER_S: u64 = 4;
/// A rollout: 30 minutes.
const ROLLOUT_PERIODS: u64 = 30 * 60 * PERIODS_PER_S;
/// The merged window's length: `metrics.window_s` (the longer of it and `gate.window_s`).
const MERGED_WINDOW_S: usize = 60;
/// Gates one simulated run may judge with.
const MAX_GATES: usize = 4;

const HEALTHY_ROLLOUTS: u64 = 10_000;
const HEALTHY_SEED: u64 = 0x5eed_0000_0000;
/// Healthy rollouts run the reference way too: this many of the first, and of those that trip.
const REFERENCE_HEALTHY: u64 = 4;
const DETECTION_RUNS: u64 = 200;
const DETECTION_SEED: u64 = 0xde7e_c700_0000;
/// Scoped worker threads.
const THREADS: u64 = 2;

/// Bursts: calm → burst and burst → calm probabilities a second, and the two levels.
const BURST_START: f64 = 0.05;
const BURST_END: f64 = 0.25;
const CALM_LEVEL: f64 = 0.4;
const BURST_LEVEL: f64 = 4.0;
/// σ of the per-second lognormal jitter of the rate.
const JITTER_SIGMA: f64 = 0.3;

/// σ of the lognormal latencies of the "2× p95" fault, and their median.
const LATENCY_SIGMA: f64 = 0.5;
const LATENCY_MEDIAN_MS: f64 = 100.0;
/// The standard normal's 95th percentile.
const Z95: f64 = 1.644_853_6;
/// Stable's slow ratio with `slow_ms` at its p95.
const STABLE_SLOW: f64 = 0.05;

const FAULTS: [Fault; 4] = [Fault::Errors(1), Fault::Errors(5), Fault::Errors(30), Fault::LatencyDouble];
const STARTS_MIN: [u64; 2] = [0, 25];
const RATES: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
const BASE_ERROR: f64 = 0.01;
const DETECTION_SHARE: f64 = 0.10;

/// A seed per index: `base + index`, mixed.
fn seed(base: u64, index: u64) -> u64 {
    base.wrapping_add(index).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The per-second rate multiplier: a Markov on/off burst process times a lognormal jitter.
struct Bursts {
    on: bool,
    jitter: LogNormal<f64>,
}

impl Bursts {
    fn new(rng: &mut SmallRng) -> Self {
        let jitter = LogNormal::new(-JITTER_SIGMA * JITTER_SIGMA / 2.0, JITTER_SIGMA).expect("valid lognormal");
        Bursts { on: rng.gen_bool(BURST_START / (BURST_START + BURST_END)), jitter }
    }

    fn next_second(&mut self, rng: &mut SmallRng) -> f64 {
        if rng.gen_bool(if self.on { BURST_END } else { BURST_START }) {
            self.on = !self.on;
        }
        (if self.on { BURST_LEVEL } else { CALM_LEVEL }) * self.jitter.sample(rng)
    }
}

/// What one period's requests are like.
#[derive(Debug, Clone, Copy)]
struct Probs {
    /// The canary's share of the requests.
    share: f64,
    /// 5xx probability, stable then canary.
    error: [f64; 2],
    /// Slow probability, stable then canary (`None`: not drawn).
    slow: Option<[f64; 2]>,
}

/// One simulated run: its seed, mean rate and requests period by period.
struct Run<'a> {
    seed: u64,
    rate: f64,
    probs: &'a dyn Fn(u64) -> Probs,
}

/// How a simulated gate is driven.
enum Drive {
    /// The reference: one `Gate::new`, then `Gate::compare` every period, as in the proxy.
    Reference(Box<Gate>),
    /// The comparison's state kept between periods, a gate resumed for the periods judged.
    Fast {
        /// The state before this period.
        state: Box<Compare>,
        /// Its tests' encoding (without the open block), once needed.
        tests: Option<Vec<u8>>,
        /// The state after this period, when it is not judged.
        next: Box<Compare>,
    },
}

/// A gate under simulation, and its first trip.
struct Tracked {
    config: GateConfig,
    drive: Drive,
    /// The last judgement had a test at or above its threshold (not confirmed by the window).
    armed: bool,
    /// The period of the first trip and its description.
    trip: Option<(u64, String)>,
}

impl Tracked {
    fn new(config: &GateConfig, reference: bool) -> Self {
        let gate = Gate::new(config);
        let drive = if reference {
            Drive::Reference(Box::new(gate))
        } else {
            let state = Box::new(gate.compare_state().expect("gate.compare is configured").clone());
            Drive::Fast { tests: None, next: state.clone(), state }
        };
        Tracked { config: config.clone(), drive, armed: false, trip: None }
    }

    fn is_reference(&self) -> bool {
        matches!(self.drive, Drive::Reference(_))
    }

    /// Takes in `counts` if that cannot change the judgement; true if the period is to be
    /// judged.
    fn prepare(&mut self, counts: &PeriodCounts) -> bool {
        if self.trip.is_some() {
            return false;
        }
        let Drive::Fast { state, tests, next } = &mut self.drive else { return true };
        // Judging a period that could have been skipped changes nothing: one with bad responses
        // and requests of both versions almost always brings evidence, so it is judged at once.
        let latency = self.config.slow_us().is_some();
        let evidence = |p: &Period| p.canary > 0 && p.stable > 0 && p.canary_bad + p.stable_bad > 0;
        if self.armed || evidence(&counts.errors) || (latency && evidence(&counts.slow)) {
            return true;
        }
        next.clone_from(state);
        next.observe(counts);
        let after = next.encode();
        if *tests.get_or_insert_with(|| state.encode()) != after {
            return true;
        }
        std::mem::swap(state, next);
        false
    }

    fn judge(&mut self, period: u64, counts: &PeriodCounts, canary: &WindowStats, stable: &WindowStats) {
        let config = &self.config;
        let (evaluation, judgement) = match &mut self.drive {
            Drive::Reference(gate) => gate.compare(config, counts, canary, stable),
            Drive::Fast { state, tests, .. } => {
                let mut gate = Gate::resumed(config, Compare::clone(state));
                let judged = gate.compare(config, counts, canary, stable);
                Compare::clone_from(state, gate.compare_state().expect("gate.compare is configured"));
                *tests = None;
                judged
            }
        };
        self.armed = judgement.expect("gate.compare is configured").rejected_unconfirmed;
        if evaluation.tripped_now {
            self.trip = Some((period, evaluation.breaches));
        }
    }
}

/// Sets `t` to one version's `requests` with `errors` 5xx and `slow` slow responses, each bad
/// one from a random user.
fn fill(t: &mut Tally, rng: &mut SmallRng, requests: u64, errors: u64, slow: u64) {
    let mut users = |count: u64| (0..count).fold(0, |acc, _| acc | user_bit(rng.gen()));
    (t.error_users, t.slow_users) = (users(errors), users(slow));
    (t.requests, t.errors, t.slow) = (requests, errors, slow);
}

fn binomial(rng: &mut SmallRng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    Binomial::new(n, p.min(1.0)).expect("valid binomial").sample(rng)
}

/// One version's counts in a second, not yet added to the window.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    requests: u64,
    errors: u64,
    slow: u64,
    error_users: u64,
    slow_users: u64,
}

impl Counts {
    fn add(&mut self, t: &Tally) {
        self.requests += t.requests;
        self.errors += t.errors;
        self.slow += t.slow;
        self.error_users |= t.error_users;
        self.slow_users |= t.slow_users;
    }
}

/// The merged window. `Window::add` scans the tally's latency histogram (a thousand buckets,
/// empty here), so the periods of a second are summed and added once, and only when the gate
/// window is read: the seconds it covers are then added in order, each after advancing the
/// window to it (the older ones would not count). The gate window's figures are the window's
/// plus the current second's periods so far. `reference` adds every period at once.
struct Merged {
    window: Window,
    gate_s: u64,
    /// The current second, and its counts not added yet (stable, canary).
    second: Option<u64>,
    current: [Counts; 2],
    /// Completed seconds not added yet, oldest first: those of the gate window only.
    completed: VecDeque<(u64, [Counts; 2])>,
    scratch: Tally,
    reference: bool,
}

impl Merged {
    fn new(gate_s: usize, reference: bool) -> Self {
        Merged {
            window: Window::new(MERGED_WINDOW_S, 1),
            gate_s: gate_s as u64,
            second: None,
            current: Default::default(),
            completed: VecDeque::new(),
            scratch: Tally::default(),
            reference,
        }
    }

    fn advance_to(&mut self, second: u64) {
        if self.reference {
            self.window.advance_to(second);
            return;
        }
        match self.second {
            Some(s) if s == second => return,
            Some(s) if self.current.iter().any(|c| c.requests > 0) => {
                self.completed.push_back((s, std::mem::take(&mut self.current)));
            }
            _ => {}
        }
        self.second = Some(second);
        while self.completed.front().is_some_and(|&(s, _)| s + self.gate_s <= second) {
            self.completed.pop_front();
        }
    }

    fn add(&mut self, version: Version, t: &Tally) {
        if self.reference {
            self.window.add(version, 0, t);
        } else {
            self.current[version.index()].add(t);
        }
    }

    /// `version`'s figures over the gate window, this period's included.
    fn gate_stats(&mut self, version: Version) -> WindowStats {
        for (second, counts) in self.completed.drain(..) {
            self.window.advance_to(second);
            for v in Version::BOTH {
                let c = counts[v.index()];
                if c.requests > 0 {
                    let t = &mut self.scratch;
                    (t.requests, t.errors, t.slow, t.error_users, t.slow_users) =
                        (c.requests, c.errors, c.slow, c.error_users, c.slow_users);
                    self.window.add(v, 0, t);
                }
            }
        }
        if let Some(second) = self.second {
            self.window.advance_to(second);
        }
        let mut stats = self.window.recent_stats(version, self.gate_s as usize);
        let c = &self.current[version.index()];
        stats.requests += c.requests;
        stats.errors += c.errors;
        stats.slow += c.slow;
        stats.error_users |= c.error_users;
        stats.slow_users |= c.slow_users;
        stats.error_ratio_ppm = stats.share_ppm(stats.errors);
        stats
    }
}

/// Runs `run` for a whole rollout (or until every gate has tripped), judged by `gates`.
fn simulate(run: &Run<'_>, gates: &mut [Tracked]) {
    assert!(gates.len() <= MAX_GATES);
    let mut rng = SmallRng::seed_from_u64(run.seed);
    let mut bursts = Bursts::new(&mut rng);
    let gate_s = gates.first().map_or(5, |g| g.config.window_s as usize);
    let mut merged = Merged::new(gate_s, gates.iter().any(Tracked::is_reference));
    let mut tally = Tally::default();
    let mut arrivals = Poisson::new(1.0).expect("valid poisson");
    for k in 0..ROLLOUT_PERIODS {
        if k % PERIODS_PER_S == 0 {
            let mean = run.rate * bursts.next_second(&mut rng) / PERIODS_PER_S as f64;
            arrivals = Poisson::new(mean).expect("valid poisson");
        }
        let probs = (run.probs)(k);
        let n = arrivals.sample(&mut rng) as u64;
        let canary = binomial(&mut rng, n, probs.share);
        // The period's tallies land in second k / 4.
        merged.advance_to(k / PERIODS_PER_S);
        let mut counts = PeriodCounts::default();
        for (version, requests) in [(Version::Stable, n - canary), (Version::Canary, canary)] {
            let i = version.index();
            let errors = binomial(&mut rng, requests, probs.error[i]);
            let slow = probs.slow.map_or(0, |slow| binomial(&mut rng, requests, slow[i]));
            fill(&mut tally, &mut rng, requests, errors, slow);
            merged.add(version, &tally);
            counts.add(version, &tally);
        }
        let mut judged = [false; MAX_GATES];
        for (g, judge) in gates.iter_mut().zip(&mut judged) {
            *judge = g.prepare(&counts);
        }
        if judged.contains(&true) {
            let canary = merged.gate_stats(Version::Canary);
            let stable = merged.gate_stats(Version::Stable);
            for (g, _) in gates.iter_mut().zip(judged).filter(|(_, judge)| *judge) {
                g.judge(k, &counts, &canary, &stable);
            }
        }
        if gates.iter().all(|g| g.trip.is_some()) {
            break;
        }
    }
}

/// Runs `job(i)` for `0..count` on [`THREADS`] scoped threads; the results in index order.
fn parallel<T: Send>(count: u64, job: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let job = &job;
    let mut parts: Vec<Vec<(u64, T)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| scope.spawn(move || (t..count).step_by(THREADS as usize).map(|i| (i, job(i))).collect()))
            .collect();
        workers.into_iter().map(|w| w.join().expect("a worker panicked")).collect()
    });
    let mut all: Vec<(u64, T)> = parts.iter_mut().flat_map(std::mem::take).collect();
    all.sort_by_key(|&(i, _)| i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// The gates simulated: raw and defaults, without and with `slow_ms`.
struct Configs {
    raw: GateConfig,
    defaults: GateConfig,
    raw_latency: GateConfig,
    defaults_latency: GateConfig,
}

fn gate_config(json: &str) -> GateConfig {
    Config::parse(json.as_bytes()).expect("a valid configuration").gate
}

fn configs() -> Configs {
    let slow_ms = LATENCY_MEDIAN_MS * (Z95 * LATENCY_SIGMA).exp();
    let compare = |fields: &str| gate_config(&format!(r#"{{"service": "sim", "gate": {{"compare": {{{fields}}}}}}}"#));
    let raw = r#""min_effect": 0, "min_users": 1"#;
    let c = Configs {
        raw: compare(raw),
        defaults: compare(""),
        raw_latency: compare(&format!(r#"{raw}, "slow_ms": {slow_ms:.3}"#)),
        defaults_latency: compare(&format!(r#""slow_ms": {slow_ms:.3}"#)),
    };
    assert_eq!(c.defaults.compare, Some(CompareConfig::default()));
    assert_eq!((c.defaults.eval_ms, c.defaults.window_s), (250, 5), "the schedule simulated");
    assert_eq!(c.defaults_latency.slow_us(), Some(227_602), "stable's p95: 100 ms · e^(1.6449 · 0.5)");
    c
}

/// Which test a trip names.
fn tripped_test(trip: &str) -> &'static str {
    TESTS.iter().copied().find(|t| trip.starts_with(&format!("compare {t}:"))).unwrap_or("?")
}

type Trip = Option<(u64, String)>;

/// Healthy rollout `index` judged by `gates`: their first trips.
fn healthy_run(gates: &[&GateConfig], index: u64, reference: bool) -> Vec<Trip> {
    let mut rng = SmallRng::seed_from_u64(seed(HEALTHY_SEED, index));
    let share = rng.gen_range(0.05..0.50);
    let rate = 10f64.powf(rng.gen_range(0.0..3.0));
    let error = rng.gen_range(0.0..0.05);
    let probs = move |k: u64| {
        let steps = (k / PERIODS_PER_S / 600).min(2) as i32;
        Probs {
            share: (share * 2f64.powi(steps)).min(0.5),
            error: [error, error],
            slow: Some([STABLE_SLOW, STABLE_SLOW]),
        }
    };
    let mut gates: Vec<Tracked> = gates.iter().map(|g| Tracked::new(g, reference)).collect();
    simulate(&Run { seed: rng.gen(), rate, probs: &probs }, &mut gates);
    gates.into_iter().map(|g| g.trip).collect()
}

/// Healthy rollout `index`: the first trips of the four gates, in the order of [`Configs`].
fn healthy_rollout(c: &Configs, index: u64, reference: bool) -> [Trip; 4] {
    if reference {
        let all = healthy_run(&[&c.raw, &c.defaults, &c.raw_latency, &c.defaults_latency], index, true);
        return all.try_into().expect("four gates");
    }
    let raw = healthy_run(&[&c.raw, &c.raw_latency], index, false);
    // The defaults trip only where their raw twin does.
    let defaults = |config, twin: &Trip| twin.as_ref().and_then(|_| healthy_run(&[config], index, false).pop()?);
    [raw[0].clone(), defaults(&c.defaults, &raw[0]), raw[1].clone(), defaults(&c.defaults_latency, &raw[1])]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Percentage points of 5xx added on the canary.
    Errors(u32),
    /// Canary latencies doubled.
    LatencyDouble,
}

impl Fault {
    fn name(self) -> String {
        match self {
            Fault::Errors(pp) => format!("+{pp} pp errors"),
            Fault::LatencyDouble => "2× p95".into(),
        }
    }

    /// The test that should trip.
    fn test(self) -> &'static str {
        match self {
            Fault::Errors(_) => TESTS[0],
            Fault::LatencyDouble => TESTS[1],
        }
    }
}

/// Upper-tail probability of the standard normal (erfc of Numerical Recipes, error < 1.2e-7).
fn normal_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * (-a * a + poly).exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// The canary's slow ratio under "2× p95".
fn doubled_slow() -> f64 {
    normal_tail(Z95 - 2f64.ln() / LATENCY_SIGMA)
}

/// One detection cell.
#[derive(Debug, Clone, Copy)]
struct Cell {
    fault: Fault,
    start_min: u64,
    rate: f64,
}

fn cells() -> Vec<Cell> {
    let mut out = Vec::new();
    for fault in FAULTS {
        for start_min in STARTS_MIN {
            for rate in RATES {
                out.push(Cell { fault, start_min, rate });
            }
        }
    }
    out
}

/// One faulty run's outcome.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Detected this many seconds after the fault started.
    Detected(f64),
    /// No trip by the rollout's end.
    Missed,
    /// A trip before the fault, or by the other test.
    FalseTrip,
}

/// Run `run` of cell `index`: its outcome and the trip (`reference`: also the raw twin, which
/// must trip no later).
fn faulty_run(c: &Configs, index: usize, cell: Cell, run: u64, reference: bool) -> (Outcome, Trip) {
    let canary_slow = doubled_slow();
    let start = cell.start_min * 60 * PERIODS_PER_S;
    let fault = cell.fault;
    let probs = move |k: u64| {
        let on = k >= start;
        let mut p = Probs { share: DETECTION_SHARE, error: [BASE_ERROR, BASE_ERROR], slow: None };
        match fault {
            Fault::Errors(pp) if on => p.error[1] += f64::from(pp) / 100.0,
            Fault::Errors(_) => {}
            Fault::LatencyDouble => p.slow = Some([STABLE_SLOW, if on { canary_slow } else { STABLE_SLOW }]),
        }
        p
    };
    let (config, twin) = match fault {
        Fault::Errors(_) => (&c.defaults, &c.raw),
        Fault::LatencyDouble => (&c.defaults_latency, &c.raw_latency),
    };
    let mut gates = vec![Tracked::new(config, reference)];
    if reference {
        gates.push(Tracked::new(twin, true));
    }
    let run_seed = seed(DETECTION_SEED, ((index as u64) << 20) + run);
    simulate(&Run { seed: run_seed, rate: cell.rate, probs: &probs }, &mut gates);
    let trip = gates.swap_remove(0).trip;
    if let (Some((at, _)), Some(raw)) = (&trip, gates.first()) {
        let raw_at = raw.trip.as_ref().map(|(k, _)| *k);
        assert!(raw_at.is_some_and(|r| r <= *at), "{cell:?} run {run}: raw at {raw_at:?}, defaults at {at}");
    }
    let outcome = match &trip {
        None => Outcome::Missed,
        Some((k, text)) if *k >= start && tripped_test(text) == fault.test() => {
            Outcome::Detected((k + 1 - start) as f64 / PERIODS_PER_S as f64)
        }
        Some(_) => Outcome::FalseTrip,
    };
    (outcome, trip)
}

/// The detection figures of one cell.
struct CellResult {
    cell: Cell,
    runs: usize,
    detected: usize,
    false_trips: usize,
    median: Option<f64>,
    p95: Option<f64>,
}

fn summarize(cell: Cell, outcomes: &[(Outcome, Trip)]) -> CellResult {
    let mut times: Vec<f64> =
        outcomes.iter().filter_map(|(o, _)| if let Outcome::Detected(t) = o { Some(*t) } else { None }).collect();
    times.sort_by(f64::total_cmp);
    // Nearest rank among all runs; the undetected ones rank last.
    let quantile = |q: f64| times.get(((q * outcomes.len() as f64).ceil() as usize).max(1) - 1).copied();
    CellResult {
        cell,
        runs: outcomes.len(),
        detected: times.len(),
        false_trips: outcomes.iter().filter(|(o, _)| *o == Outcome::FalseTrip).count(),
        median: quantile(0.5),
        p95: quantile(0.95),
    }
}

fn seconds(t: Option<f64>) -> String {
    t.map_or("—".into(), |t| format!("{t:.2} s"))
}

fn find(results: &[CellResult], fault: Fault, start_min: u64, rate: f64) -> &CellResult {
    results
        .iter()
        .find(|r| r.cell.fault == fault && r.cell.start_min == start_min && r.cell.rate == rate)
        .expect("a simulated cell")
}

#[test]
#[cfg_attr(debug_assertions, ignore = "run optimised: make simulate")]
fn healthy_rollouts_rarely_trip_and_faulty_canaries_are_caught() {
    let c = configs();
    let alpha = c.defaults.compare.as_ref().map_or(0, |c| c.alpha_ppm) as f64 / 1e6;
    let budget = (1.5 * alpha * HEALTHY_ROLLOUTS as f64).floor() as usize;
    assert!((normal_tail(Z95) - STABLE_SLOW).abs() < 1e-6 && (normal_tail(0.0) - 0.5).abs() < 1e-6);
    let mut report = String::new();

    // False trips.
    let started = Instant::now();
    let healthy = parallel(HEALTHY_ROLLOUTS, |i| healthy_rollout(&c, i, false));
    // The reference way: the first rollouts, and the first that tripped.
    let tripped = (0..HEALTHY_ROLLOUTS).filter(|&i| healthy[i as usize].iter().any(Option::is_some));
    let checked: Vec<u64> = (0..REFERENCE_HEALTHY).chain(tripped.take(REFERENCE_HEALTHY as usize)).collect();
    let reference = parallel(checked.len() as u64, |i| healthy_rollout(&c, checked[i as usize], true));
    for (&i, trips) in checked.iter().zip(&reference) {
        assert_eq!(trips, &healthy[i as usize], "healthy rollout {i}, the reference way");
    }
    let healthy_s = started.elapsed().as_secs_f64();
    let count = |gate: usize, test: Option<&str>| {
        let trips = healthy.iter().filter_map(|trips| trips[gate].as_ref());
        trips.filter(|(_, text)| test.is_none_or(|t| tripped_test(text) == t)).count()
    };
    let by_test = |gate| format!("errors {}, latency {}", count(gate, Some(TESTS[0])), count(gate, Some(TESTS[1])));
    let rows = [
        ("errors only, raw (min_effect 0, min_users 1)", count(0, None), String::new()),
        ("errors only, defaults", count(1, None), String::new()),
        ("errors and latency (slow_ms), raw", count(2, None), by_test(2)),
        ("errors and latency (slow_ms), defaults", count(3, None), by_test(3)),
    ];
    writeln!(report, "# gate.compare simulation\n").unwrap();
    writeln!(
        report,
        "## False trips: {HEALTHY_ROLLOUTS} healthy rollouts of 30 minutes (alpha {alpha}, at most {budget})\n"
    )
    .unwrap();
    writeln!(report, "| gate | false trips | by test |\n|---|---:|---|").unwrap();
    for (name, trips, by_test) in &rows {
        writeln!(report, "| {name} | {trips} | {by_test} |").unwrap();
    }
    writeln!(report, "\nThe false trips:\n").unwrap();
    for (i, trips) in healthy.iter().enumerate() {
        for (gate, (at, text)) in trips.iter().enumerate().filter_map(|(g, t)| Some((g, t.as_ref()?))) {
            let gate = ["errors only, raw", "errors only, defaults", "slow_ms, raw", "slow_ms, defaults"][gate];
            writeln!(report, "- rollout {i} ({gate}), at {:.2} s: {text}", (at + 1) as f64 / 4.0).unwrap();
        }
    }

    // Detection times.
    let started = Instant::now();
    let cells = cells();
    let runs = DETECTION_RUNS as usize;
    let outcomes = parallel((cells.len() * runs) as u64, |job| {
        let (cell, run) = (job as usize / runs, job % DETECTION_RUNS);
        faulty_run(&c, cell, cells[cell], run, false)
    });
    let reference = parallel(cells.len() as u64, |i| faulty_run(&c, i as usize, cells[i as usize], 0, true));
    for (i, (cell, outcome)) in cells.iter().zip(reference).enumerate() {
        assert_eq!(outcome, outcomes[i * runs], "{cell:?} run 0, the reference way");
    }
    let detection_s = started.elapsed().as_secs_f64();
    let results: Vec<CellResult> =
        cells.iter().enumerate().map(|(i, &cell)| summarize(cell, &outcomes[i * runs..(i + 1) * runs])).collect();
    writeln!(
        report,
        "\n## Detection times: canary share {:.0}%, 5xx {:.0}% on both, {DETECTION_RUNS} runs per cell\n",
        DETECTION_SHARE * 100.0,
        BASE_ERROR * 100.0
    )
    .unwrap();
    writeln!(
        report,
        "From the fault's start to the end of the period whose `Gate::compare` trips, with the default \
         `gate.compare` (2× p95: `slow_ms` = stable's p95, lognormal σ {LATENCY_SIGMA}, canary {:.1}% slow). \
         Detected: by the 30-minute rollout's end. Median and p95 nearest-rank over all runs, \
         undetected = never (—).\n",
        100.0 * doubled_slow()
    )
    .unwrap();
    writeln!(report, "| fault | start | rps | median | p95 | detected | false trips |").unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for r in &results {
        writeln!(
            report,
            "| {} | {} min | {} | {} | {} | {:.1}% | {} |",
            r.cell.fault.name(),
            r.cell.start_min,
            r.cell.rate,
            seconds(r.median),
            seconds(r.p95),
            100.0 * r.detected as f64 / r.runs as f64,
            r.false_trips
        )
        .unwrap();
    }
    writeln!(
        report,
        "\nRun time: healthy rollouts {healthy_s:.1} s, detection {detection_s:.1} s ({THREADS} threads)."
    )
    .unwrap();
    println!("{report}");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory");
    std::fs::write(target.join("simulation.md"), &report).expect("target/simulation.md written");

    // At most 1.5 alpha false trips per gate.
    for (name, trips, _) in &rows {
        assert!(*trips <= budget, "{name}: {trips} false trips in {HEALTHY_ROLLOUTS} rollouts, over {budget}");
    }
    // Sanity of the detection figures.
    for start in STARTS_MIN {
        for rate in [10.0, 100.0, 1000.0] {
            let r = find(&results, Fault::Errors(30), start, rate);
            assert_eq!(r.detected, r.runs, "+30 pp at {rate} rps from minute {start}: every run detected");
        }
        for fault in [Fault::Errors(5), Fault::LatencyDouble] {
            let r = find(&results, fault, start, 1000.0);
            assert_eq!(r.detected, r.runs, "{} at 1000 rps from minute {start}: every run detected", fault.name());
        }
        for fault in FAULTS {
            let detected: Vec<usize> = RATES.iter().map(|&rate| find(&results, fault, start, rate).detected).collect();
            assert!(
                detected.windows(2).all(|w| w[1] + runs / 20 >= w[0]),
                "{} from minute {start}: more traffic, detected no less often: {detected:?}",
                fault.name()
            );
        }
    }
    // A fault after 25 healthy minutes pays ln(1/π_m) nats more than one from the start (see
    // gate::sequential): about 10.7 at 100 rps, m ≈ 95 starts, on top of ln(1/alpha) = 6.9. So it
    // may take about 2.5 times as long, never minutes.
    let (fresh, late) = (find(&results, Fault::Errors(30), 0, 100.0), find(&results, Fault::Errors(30), 25, 100.0));
    let (fresh, late) = (fresh.median.expect("detected"), late.median.expect("detected"));
    assert!(late <= 3.0 * fresh + 1.0, "+30 pp at 100 rps: median {late} s from minute 25, {fresh} s from minute 0");
}
