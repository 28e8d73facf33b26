//! Issue 26, Why 1: a client posting the largest beacons `vitals.max_body_bytes` allows must not
//! stall Envoy's workers. With a quadratic duplicate-key check, one 64 KiB beacon object of
//! ~7,800 distinct keys took ~119 ms to read, and two connections at ~20 beacons/s moved an
//! unrelated `GET`'s p50 from 0.4 ms to 277 ms.

use canary_harness::chaos::assert_no_wasm_errors;
use canary_harness::hostile::{attack_config, victim_latency};
use canary_harness::{start_stack, Layout};

/// Allowed above twice the idle p50. In 10 runs beside one or two processes spinning on the 2
/// cores, the p50 under the beacons was at most 0.11 ms above twice the idle one (0.38–0.64 ms
/// idle, 0.45–1.39 ms under the beacons, each answered in ~4 ms); with the quadratic check it
/// was 190–510 ms (each beacon answered in ~210 ms, and only a dozen `GET`s in 4 s).
const MARGIN_MS: f64 = 5.0;

#[test]
fn issue_26_why_1_beacons_of_8686_keys_at_20_per_s_on_each_worker_leave_a_get_p50_within_2x_idle() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &attack_config(), &|s| s);
    let r = victim_latency(&envoy);
    eprintln!("{r:?}");
    assert_eq!(r.attack.other, 0, "every beacon read whole and taken: {r:?}");
    assert!(r.attack.sent >= 20 && r.idle_samples >= 100, "{r:?}");
    assert!(
        r.attacked_ms <= 2.0 * r.idle_ms + MARGIN_MS,
        "GET / p50 {:.3} ms under 64 KiB beacons against {:.3} ms idle (before the fix: 277 ms against 0.4 ms): {r:?}",
        r.attacked_ms,
        r.idle_ms
    );
    assert_no_wasm_errors(&envoy.log());
}
