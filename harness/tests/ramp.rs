//! Live weight changes through file-based ECDS on a running Envoy, under continuous traffic:
//! 10 → 30 → 50 → 100 → 0 with no failed request and no user moving back while the weight rises.

use canary_harness::traffic::{Population, Steady};
use canary_harness::{filter_config, start_stack, Layout};

#[test]
fn ramp_moves_users_only_forward_and_drops_no_request() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(10.0), &|s| s);
    let url = envoy.url("/");
    // 2,000 users; every 4th has no key and keeps its bucket in the cookie.
    let mut population = Population::new(2_000, 4);
    let steady = Steady::start(&url, 2, 200_000);
    let mut reports = Vec::new();
    for (i, percent) in [10.0, 30.0, 50.0, 100.0, 0.0].into_iter().enumerate() {
        if i > 0 {
            assert!(envoy.reconfigure(&filter_config(percent)), "update to {percent}% rejected");
        }
        let report = population.run_step(&url, percent, 3, 2);
        println!("{report:?}");
        assert_eq!(report.failures, 0, "{report:?}");
        assert_eq!(report.mixed, 0, "a user saw both versions within a step: {report:?}");
        let share = report.users_canary as f64 / report.users as f64 * 100.0;
        match percent as u32 {
            0 => assert_eq!(report.users_canary, 0, "at 0% every user, cookie holders too, is on stable"),
            100 => assert_eq!(report.users_canary, report.users),
            p => assert!((share - f64::from(p)).abs() <= 4.0, "{share}% of users at {p}%"),
        }
        if percent > 0.0 {
            assert_eq!(report.canary_to_stable, 0, "raising the weight moved users back: {report:?}");
        }
        reports.push(report);
    }
    let (sent, failed) = steady.finish();
    println!("steady traffic across the changes: {sent} requests, {failed} failed");
    assert!(sent > 1_000, "background traffic ran ({sent})");
    assert_eq!(failed, 0);
    assert!(reports[1].stable_to_canary > 0 && reports[4].canary_to_stable > 0);
}
