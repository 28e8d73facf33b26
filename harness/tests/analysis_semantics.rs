//! The shipped AnalysisTemplates under Argo Rollouts' AnalysisRun semantics
//! (`canary_harness::analysis_run`): each Rollout's templates merged into one background run,
//! every measurement judged by the template's own conditions on the result a situation yields.
//! No Envoy, no Prometheus: what is checked is how the run schedules and ends.

use canary_harness::analysis::{background_run, evaluate, healthy, load_rollouts, load_templates, Metric, Phase};
use canary_harness::analysis_run::{AnalysisRun, RunPhase};
use canary_harness::root;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_secs(5);

/// What Prometheus answers a metric at a moment of the scenario.
enum Answer {
    /// The query returns these samples.
    Result(Vec<f64>),
    /// Prometheus cannot be reached.
    Down,
}

/// Reconciles every 5 s until `until`, each measurement answered by `answer(metric, now)`.
fn run_scenario(
    run: &mut AnalysisRun,
    metrics: &[Metric],
    until: Duration,
    answer: impl Fn(&Metric, Duration) -> Answer,
) {
    let mut now = Duration::ZERO;
    while now <= until && !run.phase.completed() {
        run.reconcile(now, |m| {
            let metric = metrics.iter().find(|x| x.name == m.name).expect("a metric of the run");
            match answer(metric, now) {
                Answer::Down => Phase::Error,
                Answer::Result(result) => evaluate(metric, &result),
            }
        });
        now += TICK;
    }
}

fn rollouts() -> Vec<(String, Vec<Metric>, AnalysisRun)> {
    let metrics = load_templates(&root().join("istio"));
    let rollouts = load_rollouts(&root().join("istio"));
    assert!(rollouts.len() >= 6, "the tier-1 Rollouts");
    rollouts
        .iter()
        .map(|r| {
            let (merged, run) = background_run(r, &metrics);
            assert!(merged.iter().any(|m| m.template == "canary-gate-abort"), "{}: the abort template", r.rollout);
            (r.rollout.clone(), merged, run)
        })
        .collect()
}

/// The run starts with the rollout's first step: for the first minutes no rate query has data
/// (the canary has just started taking traffic) and the gate reads 0. A healthy canary must
/// not see its analysis end there, Inconclusive, before anything was judged.
#[test]
fn a_healthy_rollout_is_not_judged_before_its_queries_have_data() {
    for (rollout, metrics, mut run) in rollouts() {
        let no_data_until = 4 * MINUTE;
        run_scenario(&mut run, &metrics, 30 * MINUTE, |m, now| {
            if m.from_canary_gate() && m.query.contains("canary_gate_tripped") {
                Answer::Result(vec![0.0])
            } else if now < no_data_until {
                Answer::Result(vec![])
            } else {
                Answer::Result(healthy(m))
            }
        });
        assert_eq!(run.phase, RunPhase::Running, "{rollout}: {}", run.message);
        run.terminate();
        assert_eq!(run.reconcile(31 * MINUTE, |_| unreachable!()), RunPhase::Successful, "{rollout}");
    }
}

/// Prometheus restarts (3 minutes without answers) in the middle of a healthy rollout: the
/// analysis waits for it rather than ending in Error and aborting the rollout.
#[test]
fn a_prometheus_restart_does_not_abort_a_healthy_rollout() {
    for (rollout, metrics, mut run) in rollouts() {
        run_scenario(&mut run, &metrics, 20 * MINUTE, |m, now| {
            if (10 * MINUTE..13 * MINUTE).contains(&now) {
                Answer::Down
            } else if m.query.contains("canary_gate_tripped") {
                Answer::Result(vec![0.0])
            } else {
                Answer::Result(healthy(m))
            }
        });
        assert_eq!(run.phase, RunPhase::Running, "{rollout}: {}", run.message);
    }
}

/// The gate trips at minute 7: the run fails at the abort metric's next measurement.
#[test]
fn a_tripped_gate_fails_the_run_at_the_next_abort_measurement() {
    for (rollout, metrics, mut run) in rollouts() {
        let tripped_at = 7 * MINUTE;
        run_scenario(&mut run, &metrics, 30 * MINUTE, |m, now| {
            if m.query.contains("canary_gate_tripped") {
                Answer::Result(vec![if now >= tripped_at { 1.0 } else { 0.0 }])
            } else {
                Answer::Result(healthy(m))
            }
        });
        assert_eq!(run.phase, RunPhase::Failed, "{rollout}: {}", run.message);
        let abort = run.result("canary-gate-tripped").expect("the abort metric");
        let failed_at = abort.measurements.iter().find(|m| m.1 == Phase::Failed).map(|m| m.0).unwrap();
        assert!(
            failed_at >= tripped_at && failed_at <= tripped_at + Duration::from_secs(25),
            "{rollout}: {failed_at:?}"
        );
    }
}
