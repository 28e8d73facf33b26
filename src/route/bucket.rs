//! Deterministic per-user buckets in `0..10_000`.
//!
//! A bucket depends only on the service name and the user's key, so every proxy, on every
//! platform and after every restart, puts a user in the same bucket. A request is canary iff
//! `bucket < canary weight in basis points`: raising the weight only ever adds users.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Number of buckets; one bucket is one basis point of traffic.
pub const BUCKETS: u16 = 10_000;

/// Maps keys of one service to buckets. The service name salts the hash so the same users
/// are not the first to see every service's canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucketer {
    seed: u64,
}

impl Bucketer {
    /// A bucketer salted with `service`.
    pub fn new(service: &str) -> Self {
        Bucketer { seed: xxh3_64_with_seed(service.as_bytes(), 0) }
    }

    /// The bucket of `key`, in `0..BUCKETS`.
    pub fn bucket(&self, key: &[u8]) -> u16 {
        scale_to_buckets(xxh3_64_with_seed(key, self.seed))
    }
}

/// Multiply-shift reduction of a 64-bit value to `0..BUCKETS`: uniform, no division.
fn scale_to_buckets(x: u64) -> u16 {
    // The product is < BUCKETS << 64, so the shifted result is < BUCKETS.
    ((u128::from(x) * u128::from(BUCKETS)) >> 64) as u16
}

/// Small, fast generator for the buckets of users without a key (splitmix64).
/// Not cryptographic: a bucket is not a secret, only its distribution matters.
#[derive(Debug, Clone, Copy, Default)]
pub struct BucketRng {
    state: u64,
}

impl BucketRng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        BucketRng { state: seed }
    }

    /// The next uniformly distributed bucket.
    pub fn next_bucket(&mut self) -> u16 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        scale_to_buckets(z ^ (z >> 31))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Fixed vectors: the same on the host and on wasm32. A change here moves users
    /// between versions in production, so it must never happen silently.
    #[wasm_bindgen_test(unsupported = test)]
    fn buckets_are_stable_across_platforms_and_releases() {
        let b = Bucketer::new("checkout");
        let got: Vec<u16> = ["", "alice", "bob", "user-42", "00000000-0000-0000-0000-000000000000"]
            .iter()
            .map(|k| b.bucket(k.as_bytes()))
            .collect();
        assert_eq!(got, BUCKET_VECTORS.to_vec());
    }

    const BUCKET_VECTORS: [u16; 5] = [2884, 7457, 4872, 7801, 9286];

    #[wasm_bindgen_test(unsupported = test)]
    fn service_salts_the_bucket() {
        let a = Bucketer::new("checkout");
        let b = Bucketer::new("profile");
        let differ = (0..1000).filter(|i| a.bucket(format!("u{i}").as_bytes()) != b.bucket(format!("u{i}").as_bytes()));
        assert!(differ.count() > 990);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keyed_buckets_are_uniform() {
        let b = Bucketer::new("checkout");
        let n = 100_000;
        let under_10pct = (0..n).filter(|i| b.bucket(format!("user-{i}").as_bytes()) < 1000).count();
        // 10% ± 0.5% at n = 100k is over 5 standard deviations.
        assert!((9_500..=10_500).contains(&under_10pct), "{under_10pct}");
        let mut deciles = [0u32; 10];
        for i in 0..n {
            deciles[usize::from(b.bucket(format!("k{i}").as_bytes()) / 1000)] += 1;
        }
        assert!(deciles.iter().all(|&d| (9_500..=10_500).contains(&d)), "{deciles:?}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn random_buckets_are_uniform_and_in_range() {
        let mut rng = BucketRng::new(7);
        let mut deciles = [0u32; 10];
        for _ in 0..100_000 {
            let b = rng.next_bucket();
            assert!(b < BUCKETS);
            deciles[usize::from(b / 1000)] += 1;
        }
        assert!(deciles.iter().all(|&d| (9_500..=10_500).contains(&d)), "{deciles:?}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn scaling_covers_both_ends() {
        assert_eq!(scale_to_buckets(0), 0);
        assert_eq!(scale_to_buckets(u64::MAX), BUCKETS - 1);
    }
}
