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
//! # N routers over one fleet (`gate.fleet`)
//!
//! The fleet's traffic split evenly over N = 1, 4, 16 routers (calling pods' sidecars), served
//! by 2 stable and 1 canary pods of 2 observer VMs each; each request goes to a random VM of
//! its version. Each observer VM keeps its cumulative counts (users sketches by the real
//! `Reporter`); a router hears a VM's report, as of the period before, with each response from
//! it, ships its inbox and merges with the real `Inbox` and `FleetMerge` every period (the
//! revision probe's answer, from a random canary VM, when no canary report came), and judges
//! the fleet's view while it is fresh, its own requests otherwise. A router that trips sends
//! its users to stable. Faulty runs ([`FLEET_DETECTION_RUNS`] per cell, +30 and +5 points from
//! minute 0 at 1, 10, 100 rps): the median router's and the last router's time to fall back,
//! with and without `fleet` on the same seeds. Healthy rollouts ([`FLEET_HEALTHY_ROLLOUTS`], as
//! above at 1–100 rps) at `alpha` 0.1: rollouts in which any router tripped.
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

use canary_charts::{Chart, Scale, Series, Style};
use canary_gate::config::{CompareConfig, Config, FleetConfig, GateConfig};
use canary_gate::coord::fleet::{FleetMerge, Inbox};
use canary_gate::gate::compare::{Compare, PeriodCounts, TESTS};
use canary_gate::gate::sequential::Period;
use canary_gate::gate::Gate;
use canary_gate::host::{Host, MetricKind, Stats};
use canary_gate::measure::report::{Report, Reporter, LIMITS};
use canary_gate::measure::window::{user_bit, Tally, Window, WindowStats};
use canary_gate::model::{Revision, Version};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
use std::cell::RefCell;
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

/// The README's picture, committed; `make pictures` writes it from the simulation.
const PICTURE: &str = "docs/img/time-to-fallback.svg";

/// Median time from a fault to the trip against the traffic, per fault and its start: the
/// detection table as a picture.
fn time_to_fallback_chart(results: &[CellResult]) -> Chart {
    let mut chart = Chart::new(
        "time-to-fallback",
        &format!(
            "Time from a fault to the trip: median of {DETECTION_RUNS} simulated runs, canary at {:.0}%, {:.0}% 5xx base",
            DETECTION_SHARE * 100.0,
            BASE_ERROR * 100.0
        ),
        "requests per second to the service (log)",
        "seconds from the fault to the trip (log)",
    );
    (chart.x_scale, chart.y_scale, chart.width, chart.height) = (Scale::Log10, Scale::Log10, 760, 420);
    chart.x_range = Some((RATES[0], RATES[RATES.len() - 1]));
    let colors = ["#805ad5", "#dd6b20", "#e53e3e", "#2b6cb0"];
    for (&fault, color) in FAULTS.iter().zip(colors) {
        for start in STARTS_MIN {
            let median = |rate: f64| find(results, fault, start, rate).median.unwrap_or(f64::NAN);
            let points = RATES.iter().map(|&rate| (rate, median(rate))).collect();
            let style = if start == 0 { Style::Line } else { Style::Dashed };
            chart.series.push(Series::new(format!("{}, from minute {start}", fault.name()), color, style, points));
        }
    }
    chart
}

/// Fails when the committed picture differs from `svg`; with `UPDATE_PICTURES` set, writes it.
fn check_picture(svg: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PICTURE);
    if std::env::var_os("UPDATE_PICTURES").is_some() {
        std::fs::create_dir_all(path.parent().expect("docs/img")).expect("docs/img created");
        std::fs::write(&path, svg).expect("the picture written");
        println!("wrote {PICTURE}");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == svg,
        "{PICTURE} is stale against the simulation (target/simulation.svg): run `make pictures` and commit it"
    );
}

fn find(results: &[CellResult], fault: Fault, start_min: u64, rate: f64) -> &CellResult {
    results
        .iter()
        .find(|r| r.cell.fault == fault && r.cell.start_min == start_min && r.cell.rate == rate)
        .expect("a simulated cell")
}

// N routers over one fleet (`gate.fleet`).

/// Routers (calling pods' sidecars) over one fleet.
const FLEET_ROUTERS: [usize; 3] = [1, 4, 16];
/// Mean rates of the whole fleet's traffic in the faulty fleet runs.
const FLEET_RATES: [f64; 3] = [1.0, 10.0, 100.0];
/// Error faults of the faulty fleet runs: percentage points of 5xx on the canary from minute 0.
const FLEET_FAULTS: [u32; 2] = [30, 5];
const FLEET_DETECTION_RUNS: u64 = 80;
const FLEET_HEALTHY_ROLLOUTS: u64 = 150;
const FLEET_SEED: u64 = 0xf1ee_7000_0000;
const FLEET_HEALTHY_SEED: u64 = 0xf1ee_75a4_0000;
/// Observer pods serving stable and the canary, and observer VMs (Envoy workers) per pod.
const FLEET_PODS: [usize; 2] = [2, 1];
const FLEET_WORKERS: usize = 2;
/// The fleet's clock at the run's start, in seconds (a users epoch of 0 means "none" to the reporter).
const FLEET_EPOCH_S: u64 = 1_700_000_000;
/// The healthy fleet rollouts' `gate.compare.alpha`: the largest allowed, at which false trips
/// are frequent enough to count in a few hundred rollouts.
const FLEET_HEALTHY_ALPHA: &str = "0.1";

/// A router proxy's host as its fleet merge uses it: one shared queue.
#[derive(Default)]
struct FleetHost(RefCell<VecDeque<Vec<u8>>>);

impl Stats for FleetHost {
    fn define_metric(&self, _: MetricKind, _: &str) -> Option<u32> {
        None
    }
    fn add(&self, _: u32, _: u64) {}
    fn record(&self, _: u32, _: u64) {}
    fn metric_value(&self, _: u32) -> u64 {
        0
    }
}

impl Host for FleetHost {
    fn now_micros(&self) -> u64 {
        0
    }
    fn shared_data(&self, _: &str) -> (Option<Vec<u8>>, Option<u32>) {
        (None, None)
    }
    fn set_shared_data(&self, _: &str, _: &[u8], _: Option<u32>) -> bool {
        false
    }
    fn register_queue(&self, _: &str) -> Option<u32> {
        Some(0)
    }
    fn enqueue(&self, _: u32, message: &[u8]) -> bool {
        self.0.borrow_mut().push_back(message.to_vec());
        true
    }
    fn dequeue(&self, _: u32) -> Option<Vec<u8>> {
        self.0.borrow_mut().pop_front()
    }
    fn http_get(&self, _: &str, _: &str, _: &str, _: &[(&str, &str)], _: u64) -> bool {
        false
    }
}

/// An inbound observer VM: its cumulative counts (users sketches by the real [`Reporter`]).
struct Observer {
    version: Version,
    pod: u64,
    vm: u64,
    requests: u64,
    errors: u64,
    reporter: Reporter,
}

impl Observer {
    /// The fleet's observer VMs: stable's pods, then the canary's.
    fn fleet() -> Vec<Observer> {
        let versions = FLEET_PODS.iter().zip(Version::BOTH).flat_map(|(&pods, v)| std::iter::repeat_n(v, pods));
        let vms = versions.enumerate().flat_map(|(pod, version)| {
            (0..FLEET_WORKERS).map(move |w| Observer {
                version,
                pod: pod as u64 + 1,
                vm: (pod * FLEET_WORKERS + w) as u64 + 1,
                requests: 0,
                errors: 0,
                reporter: Reporter::default(),
            })
        });
        vms.collect()
    }

    fn report(&self, revisions: &[Revision; 2], now_s: u64) -> Report {
        let users = self.reporter.report(self.pod, self.vm, revisions[self.version.index()], now_s);
        Report { requests: self.requests, errors: self.errors, ..users }
    }
}

/// One router of a fleet run: its own window, its gates, its fleet merge.
struct FleetRouter {
    own: Merged,
    /// The gates judging its own requests, then those with `gate.fleet`.
    gates: Vec<Tracked>,
    own_gates: usize,
    fleet: Option<(FleetHost, Inbox, FleetMerge)>,
    /// No canary report in the last merge: the revision probe's answer comes with the next.
    probe: bool,
    /// A gate tripped: its users go to stable.
    redirected: bool,
}

/// What a fleet run simulates.
struct FleetSetup<'a> {
    routers: usize,
    /// Each router's gates judging its own requests, and those with `gate.fleet`.
    own: &'a [&'a GateConfig],
    fleet: &'a [&'a GateConfig],
    /// A router whose gate tripped sends its users to stable (one gate a router).
    redirect: bool,
    /// The reference way (`Gate::compare` every period, the window fed every period).
    reference: bool,
}

/// Runs `run` (its rate the whole fleet's) over `setup.routers` routers, each an equal share of
/// the requests, and the observer VMs of [`FLEET_PODS`]: every router's gates' first trips.
fn fleet_simulate(run: &Run<'_>, setup: &FleetSetup<'_>) -> Vec<Vec<Option<u64>>> {
    let mut rng = SmallRng::seed_from_u64(run.seed);
    // The probes' draws apart: the traffic is the same with `fleet` and without.
    let mut probe_rng = SmallRng::seed_from_u64(run.seed ^ 0x9b0b_e5ee_d000);
    let mut bursts = Bursts::new(&mut rng);
    let fleet_config = FleetConfig::default();
    let revisions = [b"stable-rev".as_slice(), b"canary-rev"].map(|r| Revision::parse(r).expect("a revision"));
    let serving = revisions.map(Some);
    let mut observers = Observer::fleet();
    let first_canary = FLEET_PODS[0] * FLEET_WORKERS;
    let gate_s = setup.own.iter().chain(setup.fleet).next().map_or(5, |g| g.window_s as usize);
    let mut routers: Vec<FleetRouter> = (0..setup.routers)
        .map(|_| FleetRouter {
            own: Merged::new(gate_s, setup.reference),
            gates: setup.own.iter().chain(setup.fleet).map(|g| Tracked::new(g, setup.reference)).collect(),
            own_gates: setup.own.len(),
            fleet: (!setup.fleet.is_empty()).then(|| (FleetHost::default(), Inbox::default(), FleetMerge::new(gate_s))),
            probe: false,
            redirected: false,
        })
        .collect();
    let mut tally = Tally::default();
    let mut arrivals = Poisson::new(1.0).expect("valid poisson");
    let mut reports = Vec::with_capacity(observers.len());
    for k in 0..ROLLOUT_PERIODS {
        if k % PERIODS_PER_S == 0 {
            let mean = run.rate * bursts.next_second(&mut rng) / (PERIODS_PER_S as f64 * setup.routers as f64);
            arrivals = Poisson::new(mean).expect("valid poisson");
        }
        let probs = (run.probs)(k);
        let now_s = FLEET_EPOCH_S + k / PERIODS_PER_S;
        // What a VM reports in this period: its counts up to the period before.
        reports.clear();
        reports.extend(observers.iter().map(|o| o.report(&revisions, now_s)));
        for r in &mut routers {
            let done = r.gates.iter().all(|g| g.trip.is_some());
            let n = arrivals.sample(&mut rng) as u64;
            let canary = binomial(&mut rng, n, if r.redirected { 0.0 } else { probs.share });
            r.own.advance_to(k / PERIODS_PER_S);
            let mut counts = PeriodCounts::default();
            for (version, requests) in [(Version::Stable, n - canary), (Version::Canary, canary)] {
                let i = version.index();
                (tally.requests, tally.errors, tally.error_users) = (requests, 0, 0);
                // Each request goes to one of the version's VMs, at random.
                let vms = if i == 0 { 0..first_canary } else { first_canary..observers.len() };
                let mut left = requests;
                for (j, v) in vms.clone().enumerate() {
                    let x = binomial(&mut rng, left, 1.0 / (vms.len() - j) as f64);
                    left -= x;
                    if x == 0 {
                        continue;
                    }
                    let o = &mut observers[v];
                    let errors = binomial(&mut rng, x, probs.error[i]);
                    for _ in 0..errors {
                        let user = user_bit(rng.gen());
                        tally.error_users |= user;
                        o.reporter.record(0, true, user, &[0; LIMITS], now_s);
                    }
                    (o.requests, o.errors) = (o.requests + x, o.errors + errors);
                    tally.errors += errors;
                    // A response from the VM: its report.
                    if let (Some((_, inbox, _)), false) = (&r.fleet, done) {
                        inbox.hear(reports[v], &fleet_config);
                    }
                }
                r.own.add(version, &tally);
                counts.add(version, &tally);
            }
            if done {
                continue;
            }
            let view = r.fleet.as_mut().and_then(|(host, inbox, merge)| {
                inbox.ship(host, 0);
                // The answer to the probe sent after the last merge, from one of the canary's VMs.
                let probed = r.probe.then(|| reports[probe_rng.gen_range(first_canary..observers.len())]);
                let now_ms = (FLEET_EPOCH_S * PERIODS_PER_S + k + 1) * 1000 / PERIODS_PER_S;
                merge.merge(host, 0, (now_ms, now_s), (serving, 1), probed, &fleet_config);
                r.probe = !merge.heard_canary();
                merge.view(serving, "sim")
            });
            let mut own_stats: Option<(WindowStats, WindowStats)> = None;
            for (g, gate) in r.gates.iter_mut().enumerate() {
                let fleet = view.as_ref().filter(|_| g >= r.own_gates);
                let counts = fleet.map_or(&counts, |v| &v.period);
                if !gate.prepare(counts) {
                    continue;
                }
                match fleet {
                    Some(v) => gate.judge(k, counts, &v.canary, &v.stable),
                    None => {
                        let own = &mut r.own;
                        let (canary, stable) = own_stats
                            .get_or_insert_with(|| (own.gate_stats(Version::Canary), own.gate_stats(Version::Stable)));
                        gate.judge(k, counts, canary, stable);
                    }
                }
            }
            r.redirected = setup.redirect && r.gates.iter().any(|g| g.trip.is_some());
        }
        if routers.iter().all(|r| r.gates.iter().all(|g| g.trip.is_some())) {
            break;
        }
    }
    routers.iter().map(|r| r.gates.iter().map(|g| g.trip.as_ref().map(|&(k, _)| k)).collect()).collect()
}

/// One faulty fleet cell: `pp` points of 5xx on the canary from minute 0, `rate` over `routers`.
#[derive(Debug, Clone, Copy)]
struct FleetCell {
    pp: u32,
    rate: f64,
    routers: usize,
}

fn fleet_cells() -> Vec<FleetCell> {
    let mut out = Vec::new();
    for pp in FLEET_FAULTS {
        for rate in FLEET_RATES {
            for routers in FLEET_ROUTERS {
                out.push(FleetCell { pp, rate, routers });
            }
        }
    }
    out
}

/// Run `run` of fleet cell `index`, with `gate.fleet` or without: each router's trip, in seconds
/// after the fault (the same seed either way, so the same traffic until a router trips).
fn fleet_faulty_run(
    c: &Configs,
    index: usize,
    cell: FleetCell,
    fleet: bool,
    run: u64,
    reference: bool,
) -> Vec<Option<f64>> {
    let probs = move |_: u64| Probs {
        share: DETECTION_SHARE,
        error: [BASE_ERROR, BASE_ERROR + f64::from(cell.pp) / 100.0],
        slow: None,
    };
    let gates: &[&GateConfig] = &[&c.defaults];
    let (own, with_fleet) = if fleet { (&[][..], gates) } else { (gates, &[][..]) };
    let setup = FleetSetup { routers: cell.routers, own, fleet: with_fleet, redirect: true, reference };
    let run_seed = seed(FLEET_SEED, ((index as u64) << 20) + run);
    let trips = fleet_simulate(&Run { seed: run_seed, rate: cell.rate, probs: &probs }, &setup);
    trips.iter().map(|t| t[0].map(|k| (k + 1) as f64 / PERIODS_PER_S as f64)).collect()
}

/// Healthy fleet rollout `index` over `routers`, as [`healthy_run`]'s but at 1–100 rps: per
/// router the first trips of `gates` judging its own requests, then of the same with `gate.fleet`.
fn fleet_healthy_run(gates: &[&GateConfig], routers: usize, index: u64) -> Vec<Vec<Option<u64>>> {
    let mut rng = SmallRng::seed_from_u64(seed(FLEET_HEALTHY_SEED, index));
    let share = rng.gen_range(0.05..0.50);
    let rate = 10f64.powf(rng.gen_range(0.0..2.0));
    let error = rng.gen_range(0.0..0.05);
    let probs = move |k: u64| {
        let steps = (k / PERIODS_PER_S / 600).min(2) as i32;
        Probs { share: (share * 2f64.powi(steps)).min(0.5), error: [error, error], slow: None }
    };
    let setup = FleetSetup { routers, own: gates, fleet: gates, redirect: false, reference: false };
    fleet_simulate(&Run { seed: rng.gen(), rate, probs: &probs }, &setup)
}

/// Nearest-rank quantile `q` of `times`, a `None` ranking last (never).
fn nearest_rank(times: &[Option<f64>], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = times.iter().flatten().copied().collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(((q * times.len() as f64).ceil() as usize).max(1) - 1).copied()
}

/// The fleet figures of one cell and mode, over its runs: the median router's time to fall back
/// and the last router's (each run's), median and p95 over the runs.
struct FleetTimes {
    median_router: [Option<f64>; 2],
    last_router: [Option<f64>; 2],
    /// Runs in which every router tripped.
    all: usize,
}

fn fleet_times(runs: &[Vec<Option<f64>>]) -> FleetTimes {
    let router = |q: f64| runs.iter().map(|trips| nearest_rank(trips, q)).collect::<Vec<_>>();
    let (median, last) = (router(0.5), router(1.0));
    FleetTimes {
        median_router: [nearest_rank(&median, 0.5), nearest_rank(&median, 0.95)],
        last_router: [nearest_rank(&last, 0.5), nearest_rank(&last, 0.95)],
        all: last.iter().flatten().count(),
    }
}

fn median_p95(t: [Option<f64>; 2]) -> String {
    match t {
        [None, _] => "—".into(),
        [Some(m), None] => format!("{m:.2} s / —"),
        [Some(m), Some(p)] => format!("{m:.2} / {p:.2} s"),
    }
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
    // N routers over one fleet: faulty runs, with `gate.fleet` and without on the same seeds.
    let started = Instant::now();
    let fleet_cells = fleet_cells();
    let fleet_runs = FLEET_DETECTION_RUNS as usize;
    let fleet_outcomes = parallel((fleet_cells.len() * fleet_runs * 2) as u64, |job| {
        // A cell's runs without `fleet`, then with it: on both threads alike.
        let (cell, fleet, run) =
            (job as usize / (2 * fleet_runs), job / FLEET_DETECTION_RUNS % 2 == 1, job % FLEET_DETECTION_RUNS);
        fleet_faulty_run(&c, cell, fleet_cells[cell], fleet, run, false)
    });
    let outcome =
        |cell: usize, fleet: bool, run: usize| &fleet_outcomes[(cell * 2 + usize::from(fleet)) * fleet_runs + run];
    // The reference way: the first run of every cell of 4 routers.
    let checked: Vec<(usize, bool)> =
        (0..fleet_cells.len()).filter(|&i| fleet_cells[i].routers == 4).flat_map(|i| [(i, false), (i, true)]).collect();
    let reference = parallel(checked.len() as u64, |j| {
        let (i, fleet) = checked[j as usize];
        fleet_faulty_run(&c, i, fleet_cells[i], fleet, 0, true)
    });
    for (&(i, fleet), trips) in checked.iter().zip(&reference) {
        assert_eq!(trips, outcome(i, fleet, 0), "{:?} with fleet {fleet}, run 0, the reference way", fleet_cells[i]);
    }
    let fleet_times: Vec<[FleetTimes; 2]> = (0..fleet_cells.len())
        .map(|i| {
            [false, true]
                .map(|fleet| fleet_times(&(0..fleet_runs).map(|r| outcome(i, fleet, r).clone()).collect::<Vec<_>>()))
        })
        .collect();
    let fleet_detection_s = started.elapsed().as_secs_f64();

    // N routers over one fleet: healthy rollouts, defaults and raw at a raised alpha.
    let started = Instant::now();
    let compare = |fields: &str| {
        gate_config(&format!(
            r#"{{"service": "sim", "gate": {{"compare": {{"alpha": {FLEET_HEALTHY_ALPHA}{fields}}}}}}}"#
        ))
    };
    let healthy_gates = [compare(""), compare(r#", "min_effect": 0, "min_users": 1"#)];
    let fleet_healthy: Vec<Vec<Vec<Vec<Option<u64>>>>> = FLEET_ROUTERS
        .iter()
        .map(|&n| {
            parallel(FLEET_HEALTHY_ROLLOUTS, |i| fleet_healthy_run(&[&healthy_gates[0], &healthy_gates[1]], n, i))
        })
        .collect();
    let fleet_healthy_s = started.elapsed().as_secs_f64();
    // Per router count and gate (own defaults, own raw, fleet defaults, fleet raw): rollouts
    // with a trip, and routers tripped.
    let false_trips = |n: usize, gate: usize| {
        let rollouts = &fleet_healthy[n];
        let tripped = |r: &Vec<Vec<Option<u64>>>| r.iter().filter(|router| router[gate].is_some()).count();
        (rollouts.iter().filter(|r| tripped(r) > 0).count(), rollouts.iter().map(tripped).sum::<usize>())
    };
    writeln!(
        report,
        "\n## N routers over one fleet: `gate.compare: {{}}` on each router's own requests, or with `gate.fleet`\n"
    )
    .unwrap();
    writeln!(
        report,
        "The fleet's traffic split evenly over N routers; {} stable and {} canary pods of {FLEET_WORKERS} observer VMs. \
         Canary share {:.0}%, 5xx {:.0}% on both, the fault from minute 0, {FLEET_DETECTION_RUNS} runs per cell. \
         Time to fall back: from the fault to the trip of the run's median router and of its last one \
         (every user back on stable), median / p95 over the runs (— never, within the 30-minute rollout; \
         in brackets the runs in which every router tripped).\n",
        FLEET_PODS[0],
        FLEET_PODS[1],
        DETECTION_SHARE * 100.0,
        BASE_ERROR * 100.0
    )
    .unwrap();
    writeln!(
        report,
        "| fault | rps | routers | median router | last router | median router, fleet | last router, fleet |"
    )
    .unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for (cell, [own, fleet]) in fleet_cells.iter().zip(&fleet_times) {
        writeln!(
            report,
            "| +{} pp errors | {} | {} | {} | {} ({}) | {} | {} ({}) |",
            cell.pp,
            cell.rate,
            cell.routers,
            median_p95(own.median_router),
            median_p95(own.last_router),
            own.all,
            median_p95(fleet.median_router),
            median_p95(fleet.last_router),
            fleet.all
        )
        .unwrap();
    }
    writeln!(
        report,
        "\nFalse trips: {FLEET_HEALTHY_ROLLOUTS} healthy rollouts (as above, at 1–100 rps; the same ones for every \
         router count) judged at alpha {FLEET_HEALTHY_ALPHA}, where they are frequent enough to count (at {alpha}, \
         6 in 10,000 for one router, above): rollouts in which a router tripped (routers tripped in all), with the \
         default guards and raw (`min_effect` 0, `min_users` 1).\n"
    )
    .unwrap();
    writeln!(report, "| routers | defaults | defaults, fleet | raw | raw, fleet |").unwrap();
    writeln!(report, "|---:|---:|---:|---:|---:|").unwrap();
    for (n, routers) in FLEET_ROUTERS.iter().enumerate() {
        let cells = [0, 2, 1, 3].map(|g| {
            let (rollouts, tripped) = false_trips(n, g);
            format!("{rollouts} ({tripped})")
        });
        writeln!(report, "| {routers} | {} |", cells.join(" | ")).unwrap();
    }
    writeln!(
        report,
        "\nRun time: fleet detection {fleet_detection_s:.1} s, fleet healthy rollouts {fleet_healthy_s:.1} s ({THREADS} threads)."
    )
    .unwrap();
    println!("{report}");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory");
    std::fs::write(target.join("simulation.md"), &report).expect("target/simulation.md written");
    let picture = time_to_fallback_chart(&results).svg();
    std::fs::write(target.join("simulation.svg"), &picture).expect("target/simulation.svg written");

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

    // N routers over one fleet: with `gate.fleet` the last router falls back at least 1.5 times
    // sooner at 4 and 16 routers, every run, and false trips stay within the union bound.
    for (cell, [own, fleet]) in fleet_cells.iter().zip(&fleet_times) {
        if cell.routers == 1 || cell.rate < 100.0 {
            continue;
        }
        assert_eq!(fleet.all, fleet_runs, "{cell:?}: with fleet, every router trips in every run");
        let with = fleet.last_router[0].expect("the last router trips with fleet");
        let without = own.last_router[0].unwrap_or(f64::INFINITY);
        assert!(1.5 * with <= without, "{cell:?}: last router {with} s with fleet, {without} s without");
    }
    let alpha_fleet: f64 = FLEET_HEALTHY_ALPHA.parse().expect("a number");
    for (n, &routers) in FLEET_ROUTERS.iter().enumerate() {
        let (rollouts, _) = false_trips(n, 2);
        let bound = (routers as f64 * alpha_fleet).min(1.0) * FLEET_HEALTHY_ROLLOUTS as f64;
        assert!(rollouts as f64 <= bound, "{routers} routers with fleet: {rollouts} rollouts tripped, bound {bound}");
    }

    // The README's picture matches what this simulation drew.
    check_picture(&picture);
}
