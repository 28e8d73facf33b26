//! The per-request work of canary-gate's core on the host, for an instruction count under
//! callgrind: route decision from headers, the user's weight in the gate, then recording into
//! the worker's tally.
//! `hotpath N` runs N requests; the difference between two N gives the cost of one.

use canary_gate::config::Config;
use canary_gate::measure::weight::Weights;
use canary_gate::measure::window::{user_bit, Completed, Tally};
use canary_gate::model::Version;
use canary_gate::route::bucket::BucketRng;
use canary_gate::route::{RequestHeaders, Router};
use std::hint::black_box;

/// Headers of a keyed user, as the host would hand them over (one allocation per read, as
/// the proxy-wasm host call does).
struct Keyed<'a> {
    user: &'a [u8],
}

impl RequestHeaders for Keyed<'_> {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        match name {
            "x-user-id" => Some(self.user.to_vec()),
            _ => None,
        }
    }
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let config = Config::parse(
        br#"{"service": "checkout", "split": {"canary_percent": 10}, "gate": {"max_error_ratio": 0.05, "max_p95_ms": 200}}"#,
    )
    .expect("valid configuration");
    let router = Router::new(config);
    let mut rng = BucketRng::new(7);
    let mut tallies: [Tally; 2] = Default::default();
    let mut weights = Weights::default();
    let mut user = *b"user-0000000";
    let mut canary = 0u64;
    for i in 0..n {
        // A different user each request: the digits of i.
        let mut x = i;
        for d in user.iter_mut().rev().take(7) {
            *d = b'0' + (x % 10) as u8;
            x /= 10;
        }
        let decision = router.decide(&Keyed { user: &user }, &mut rng, false);
        let version = decision.version.unwrap_or(Version::Stable);
        canary += u64::from(version == Version::Canary);
        let slot = usize::from(version == Version::Canary);
        let micros = black_box(1_000 + i % 50_000);
        let bucket = u64::from(decision.bucket.unwrap_or(0));
        let is_error = i % 100 == 0;
        // 10,000 requests a second.
        let unweighed = !weights.admit(bucket, i / 10, is_error);
        tallies[slot].record(&Completed {
            micros,
            is_error,
            user: user_bit(bucket),
            unweighed,
            ..Completed::default()
        });
    }
    println!("{n} requests, {canary} canary, {} recorded", tallies[0].requests + tallies[1].requests);
}
