//! An AnalysisRun as Argo Rollouts' controller runs it, so the shipped AnalysisTemplates can be
//! judged by the semantics a cluster applies to them, not by one measurement at a time.
//!
//! Follows argo-rollouts `analysis/analysis.go` (`generateMetricTasks`, `runMeasurements`,
//! `assessRunStatus`, `assessMetricStatus`, `assessMetricFailureInconclusiveOrError`) and
//! `utils/analysis/helpers.go` (`IsTerminating`, the order of phases):
//! - the templates of a Rollout are merged into one run, and every metric is measured at once
//!   when the run starts, unless it has an `initialDelay`;
//! - a metric is measured again `interval` after its last measurement finished (10 s after an
//!   error), until `count` measurements (1 when neither `count` nor `interval` is set);
//! - a metric completes Failed when failures exceed `failureLimit` (default 0; negative: never),
//!   Inconclusive when inconclusive measurements exceed `inconclusiveLimit` (default 0), Error
//!   when consecutive errors exceed `consecutiveErrorLimit` (default 4);
//! - once any metric that is not a dry run completes Failed, Error or Inconclusive, the run
//!   terminates: the other metrics count as Successful, and the run takes the worst phase of
//!   its metrics (Successful < Inconclusive < Error < Failed). Dry-run metrics never decide.
//!
//! Time is the duration since the run started; the caller reconciles as often as it likes.

use crate::analysis::Phase;
use std::time::Duration;

/// Argo's retry interval after a measurement error.
pub const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Argo's default `consecutiveErrorLimit`.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i64 = 4;

/// How a metric of the run is measured and judged: the fields of an AnalysisTemplate metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMetric {
    /// `name`.
    pub name: String,
    /// `interval`; `None`: measured once, unless `count` says otherwise.
    pub interval: Option<Duration>,
    /// `count`; `None`: indefinitely when `interval` is set.
    pub count: Option<u32>,
    /// `initialDelay`.
    pub initial_delay: Option<Duration>,
    /// `failureLimit` (default 0; negative: failures never complete the metric).
    pub failure_limit: i64,
    /// `inconclusiveLimit` (default 0).
    pub inconclusive_limit: i64,
    /// `consecutiveErrorLimit` (default 4).
    pub consecutive_error_limit: i64,
    /// `consecutiveSuccessLimit`, when set above 0.
    pub consecutive_success_limit: Option<u32>,
    /// Named in the template's `dryRun`.
    pub dry_run: bool,
}

impl RunMetric {
    /// A metric with Argo's defaults.
    pub fn new(name: &str) -> Self {
        RunMetric {
            name: name.to_string(),
            interval: None,
            count: None,
            initial_delay: None,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: DEFAULT_CONSECUTIVE_ERROR_LIMIT,
            consecutive_success_limit: None,
            dry_run: false,
        }
    }

    /// `EffectiveCount`: `count`, or 1 when neither `count` nor `interval` is set.
    fn effective_count(&self) -> Option<u32> {
        match (self.count.filter(|&c| c > 0), self.interval) {
            (Some(count), _) => Some(count),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        }
    }
}

/// The phase of a metric or of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// Not measured yet.
    Pending,
    /// Measuring.
    Running,
    /// Completed well.
    Successful,
    /// Completed: too many inconclusive measurements (the rollout pauses).
    Inconclusive,
    /// Completed: too many consecutive errors (the rollout aborts).
    Error,
    /// Completed: too many failures (the rollout aborts).
    Failed,
}

impl RunPhase {
    /// Whether the phase is final.
    pub fn completed(self) -> bool {
        matches!(self, RunPhase::Successful | RunPhase::Inconclusive | RunPhase::Error | RunPhase::Failed)
    }

    /// Position in Argo's order from best to worst.
    fn rank(self) -> u8 {
        match self {
            RunPhase::Successful => 0,
            RunPhase::Running => 1,
            RunPhase::Pending => 2,
            RunPhase::Inconclusive => 3,
            RunPhase::Error => 4,
            RunPhase::Failed => 5,
        }
    }
}

/// What the run knows of one metric: Argo's `MetricResult`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricResult {
    /// The metric's phase; `None` before its first measurement.
    pub phase: Option<RunPhase>,
    /// Measurements that were not errors.
    pub count: u32,
    /// Successful measurements.
    pub successful: u32,
    /// Failed measurements.
    pub failed: u32,
    /// Inconclusive measurements.
    pub inconclusive: u32,
    /// Errors.
    pub error: u32,
    /// Errors in a row.
    pub consecutive_error: u32,
    /// Successes in a row.
    pub consecutive_success: u32,
    /// Every measurement: when it was taken and its phase.
    pub measurements: Vec<(Duration, Phase)>,
}

/// One AnalysisRun.
#[derive(Debug, Clone)]
pub struct AnalysisRun {
    metrics: Vec<RunMetric>,
    results: Vec<MetricResult>,
    terminate: bool,
    /// The run's phase.
    pub phase: RunPhase,
    /// Why it completed, as Argo words it.
    pub message: String,
}

impl AnalysisRun {
    /// A run of `metrics` (the merged metrics of a Rollout's templates), started at time 0.
    pub fn new(metrics: Vec<RunMetric>) -> Self {
        let results = vec![MetricResult::default(); metrics.len()];
        AnalysisRun { metrics, results, terminate: false, phase: RunPhase::Pending, message: String::new() }
    }

    /// The result of metric `name`.
    pub fn result(&self, name: &str) -> Option<&MetricResult> {
        self.metrics.iter().position(|m| m.name == name).and_then(|i| self.results.get(i))
    }

    /// Asks the run to stop (`spec.terminate`: the rollout was promoted, aborted or finished).
    pub fn terminate(&mut self) {
        self.terminate = true;
    }

    /// `IsTerminating`: asked to, or a metric that is not a dry run completed badly.
    fn terminating(&self) -> bool {
        self.terminate
            || self.metrics.iter().zip(&self.results).any(|(m, r)| {
                !m.dry_run && matches!(r.phase, Some(RunPhase::Failed | RunPhase::Error | RunPhase::Inconclusive))
            })
    }

    /// One reconciliation at `now`: takes the measurements that are due with `measure`, then
    /// assesses the run (again at once when that made it terminate, as the controller's
    /// requeue does). Returns the run's phase.
    pub fn reconcile(&mut self, now: Duration, mut measure: impl FnMut(&RunMetric) -> Phase) -> RunPhase {
        if self.phase.completed() {
            return self.phase;
        }
        let terminating = self.terminating();
        for i in 0..self.metrics.len() {
            let (metric, result) = (&self.metrics[i], &mut self.results[i]);
            if terminating || result.phase.is_some_and(RunPhase::completed) || !due(metric, result, now) {
                continue;
            }
            let phase = measure(metric);
            record(result, now, phase);
        }
        self.assess();
        if !self.phase.completed() && self.terminating() {
            self.assess();
        }
        self.phase
    }

    /// `assessRunStatus`.
    fn assess(&mut self) {
        let terminating = self.terminating();
        let mut worst: Option<RunPhase> = None;
        let mut everything_completed = true;
        for (metric, result) in self.metrics.iter().zip(self.results.iter_mut()) {
            if result.measurements.is_empty() && !terminating {
                everything_completed = false;
                continue;
            }
            let status = assess_metric(metric, result, terminating);
            result.phase = Some(status);
            if !status.completed() {
                everything_completed = false;
                continue;
            }
            if metric.dry_run {
                worst.get_or_insert(RunPhase::Successful);
                continue;
            }
            if worst.is_none_or(|w| status.rank() > w.rank()) {
                worst = Some(status);
                if let Some(why) = limit_reached(metric, result) {
                    self.message = format!("Metric \"{}\" assessed {status:?} due to {why}", metric.name);
                }
            }
        }
        self.phase = match worst {
            Some(worst) if terminating => worst,
            None if terminating => RunPhase::Successful,
            Some(worst) if everything_completed => worst,
            _ => RunPhase::Running,
        };
    }
}

/// `generateMetricTasks` for one metric not yet completed, while the run is not terminating.
fn due(metric: &RunMetric, result: &MetricResult, now: Duration) -> bool {
    let Some(&(last_at, last_phase)) = result.measurements.last() else {
        return metric.initial_delay.is_none_or(|delay| now >= delay);
    };
    if metric.effective_count().is_some_and(|count| result.count >= count) {
        return false;
    }
    let interval = match (last_phase, metric.interval) {
        (Phase::Error, _) | (_, None) => ERROR_RETRY_INTERVAL,
        (_, Some(interval)) => interval,
    };
    now > last_at + interval
}

/// `runMeasurements` for one completed measurement.
fn record(result: &mut MetricResult, now: Duration, phase: Phase) {
    match phase {
        Phase::Successful => {
            result.successful += 1;
            result.count += 1;
            result.consecutive_error = 0;
            result.consecutive_success += 1;
        }
        Phase::Failed | Phase::Inconclusive => {
            if phase == Phase::Failed {
                result.failed += 1;
            } else {
                result.inconclusive += 1;
            }
            result.count += 1;
            result.consecutive_error = 0;
            result.consecutive_success = 0;
        }
        Phase::Error => {
            result.error += 1;
            result.consecutive_error += 1;
            result.consecutive_success = 0;
        }
    }
    result.measurements.push((now, phase));
}

/// `assessMetricFailureInconclusiveOrError`: the limit a metric's result exceeds, if any (the
/// last one checked wins, as in Argo).
fn limit_phase(metric: &RunMetric, result: &MetricResult) -> Option<RunPhase> {
    let mut phase = None;
    if metric.failure_limit >= 0 && i64::from(result.failed) > metric.failure_limit {
        phase = Some(RunPhase::Failed);
    }
    if i64::from(result.inconclusive) > metric.inconclusive_limit {
        phase = Some(RunPhase::Inconclusive);
    }
    if i64::from(result.consecutive_error) > metric.consecutive_error_limit {
        phase = Some(RunPhase::Error);
    }
    phase
}

/// The words Argo gives for the limit reached.
fn limit_reached(metric: &RunMetric, result: &MetricResult) -> Option<String> {
    Some(match limit_phase(metric, result)? {
        RunPhase::Failed => format!("failed ({}) > failureLimit ({})", result.failed, metric.failure_limit),
        RunPhase::Inconclusive => {
            format!("inconclusive ({}) > inconclusiveLimit ({})", result.inconclusive, metric.inconclusive_limit)
        }
        _ => format!(
            "consecutiveErrors ({}) > consecutiveErrorLimit ({})",
            result.consecutive_error, metric.consecutive_error_limit
        ),
    })
}

/// `assessMetricStatus`.
fn assess_metric(metric: &RunMetric, result: &MetricResult, terminating: bool) -> RunPhase {
    if let Some(phase) = result.phase.filter(|p| p.completed()) {
        return phase;
    }
    if result.measurements.is_empty() {
        return if terminating { RunPhase::Successful } else { RunPhase::Pending };
    }
    if let Some(phase) = limit_phase(metric, result) {
        return phase;
    }
    if metric.consecutive_success_limit.is_some_and(|limit| result.consecutive_success >= limit) {
        return RunPhase::Successful;
    }
    if metric.effective_count().is_some_and(|count| result.count >= count) {
        let failure_applicable = metric.failure_limit >= 0;
        return match (failure_applicable, metric.consecutive_success_limit.is_some()) {
            (true, true) => RunPhase::Inconclusive,
            (false, true) => RunPhase::Failed,
            _ => RunPhase::Successful,
        };
    }
    if terminating {
        RunPhase::Successful
    } else {
        RunPhase::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn every_minute(name: &str) -> RunMetric {
        RunMetric { interval: Some(MINUTE), ..RunMetric::new(name) }
    }

    /// Reconciles every 10 s from 0 to `until`, answering each metric with `answer(name, now)`.
    fn drive(run: &mut AnalysisRun, until: Duration, answer: impl Fn(&str, Duration) -> Phase) -> Duration {
        let mut now = Duration::ZERO;
        while now <= until {
            let at = now;
            if run.reconcile(now, |m| answer(&m.name, at)).completed() {
                return now;
            }
            now += Duration::from_secs(10);
        }
        now
    }

    #[test]
    fn an_inconclusive_first_measurement_ends_the_whole_run_inconclusive() {
        // Background analysis of a rollout: the volume metric is inconclusive while the canary
        // has no traffic yet, and with the default inconclusiveLimit of 0 that ends the run,
        // the abort metric included.
        let mut run = AnalysisRun::new(vec![every_minute("request-volume"), every_minute("canary-gate-tripped")]);
        let ended = drive(&mut run, 10 * MINUTE, |name, _| {
            if name == "request-volume" {
                Phase::Inconclusive
            } else {
                Phase::Successful
            }
        });
        assert_eq!((run.phase, ended), (RunPhase::Inconclusive, Duration::ZERO));
        assert_eq!(
            run.message,
            "Metric \"request-volume\" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0)"
        );
        assert_eq!(run.result("canary-gate-tripped").and_then(|r| r.phase), Some(RunPhase::Successful));
    }

    #[test]
    fn initial_delay_and_an_inconclusive_limit_let_the_run_go_on() {
        let volume =
            RunMetric { initial_delay: Some(2 * MINUTE), inconclusive_limit: 3, ..every_minute("request-volume") };
        let mut run = AnalysisRun::new(vec![volume, every_minute("errors")]);
        // Inconclusive twice (traffic still ramping), then fine: the run is still running at 10 min.
        let ended = drive(&mut run, 10 * MINUTE, |name, now| match name {
            "request-volume" if now < 4 * MINUTE => Phase::Inconclusive,
            _ => Phase::Successful,
        });
        assert_eq!(run.phase, RunPhase::Running, "ended at {ended:?}");
        let volume = run.result("request-volume").unwrap();
        assert_eq!(volume.measurements.first().map(|m| m.0), Some(2 * MINUTE), "first measured after the delay");
        assert_eq!((volume.inconclusive, volume.phase), (2, Some(RunPhase::Running)));
        // Measured every interval after the last one finished (each reconciliation is 10 s apart).
        let errors = run.result("errors").unwrap();
        assert_eq!(
            errors.measurements.iter().map(|m| m.0.as_secs()).collect::<Vec<_>>(),
            [0, 70, 140, 210, 280, 350, 420, 490, 560]
        );
        run.terminate();
        assert_eq!(
            run.reconcile(11 * MINUTE, |_| unreachable!("a terminating run measures nothing")),
            RunPhase::Successful
        );
    }

    #[test]
    fn failures_count_in_total_not_in_a_row() {
        // failureLimit 3: the 4th failure fails the metric, whatever came between.
        let mut run = AnalysisRun::new(vec![RunMetric { failure_limit: 3, ..every_minute("errors") }]);
        let pattern =
            [Phase::Failed, Phase::Successful, Phase::Failed, Phase::Successful, Phase::Failed, Phase::Failed];
        let mut i = 0;
        let mut now = Duration::ZERO;
        while !run.phase.completed() {
            run.reconcile(now, |_| {
                let p = pattern[i];
                i += 1;
                p
            });
            now += MINUTE + Duration::from_secs(1);
        }
        assert_eq!((run.phase, i), (RunPhase::Failed, 6));
        assert!(run.message.ends_with("failed (4) > failureLimit (3)"), "{}", run.message);
    }

    #[test]
    fn consecutive_errors_end_the_run_after_the_limit_and_retry_every_ten_seconds() {
        let abort = RunMetric { consecutive_error_limit: 2, ..every_minute("abort") };
        let mut run = AnalysisRun::new(vec![abort]);
        let ended = drive(&mut run, 10 * MINUTE, |_, _| Phase::Error);
        // Errors at 0, 20, 40 (retried 10 s after the last, first reconcile strictly after): the 3rd ends it.
        assert_eq!((run.phase, ended), (RunPhase::Error, Duration::from_secs(40)));
        let mut run = AnalysisRun::new(vec![RunMetric { consecutive_error_limit: 2, ..every_minute("abort") }]);
        drive(
            &mut run,
            10 * MINUTE,
            |_, now| if now < Duration::from_secs(30) { Phase::Error } else { Phase::Successful },
        );
        assert_eq!(run.phase, RunPhase::Running, "an answer in between resets the count");
    }

    #[test]
    fn dry_run_metrics_never_decide() {
        let app = RunMetric { dry_run: true, ..every_minute("web-vitals") };
        let mut run = AnalysisRun::new(vec![app, every_minute("errors")]);
        drive(
            &mut run,
            5 * MINUTE,
            |name, _| if name == "web-vitals" { Phase::Inconclusive } else { Phase::Successful },
        );
        assert_eq!(run.phase, RunPhase::Running);
        assert_eq!(run.result("web-vitals").and_then(|r| r.phase), Some(RunPhase::Inconclusive));
        let mut run =
            AnalysisRun::new(vec![RunMetric { dry_run: true, ..every_minute("web-vitals") }, every_minute("errors")]);
        drive(&mut run, 5 * MINUTE, |name, now| match name {
            "errors" if now >= 2 * MINUTE => Phase::Failed,
            _ => Phase::Successful,
        });
        assert_eq!(run.phase, RunPhase::Failed);
    }

    #[test]
    fn a_counted_metric_completes_and_the_worst_phase_wins() {
        let once = RunMetric::new("smoke");
        assert_eq!(once.effective_count(), Some(1));
        let mut run = AnalysisRun::new(vec![once, RunMetric { count: Some(3), ..every_minute("soak") }]);
        let ended = drive(&mut run, 10 * MINUTE, |_, _| Phase::Successful);
        assert_eq!((run.phase, ended.as_secs()), (RunPhase::Successful, 140));
        let mut run = AnalysisRun::new(vec![RunMetric::new("a"), RunMetric::new("b")]);
        run.reconcile(Duration::ZERO, |m| if m.name == "a" { Phase::Inconclusive } else { Phase::Failed });
        assert_eq!(run.phase, RunPhase::Failed);
    }
}
