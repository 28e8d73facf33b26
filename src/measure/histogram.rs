//! Mergeable latency histogram with log-linear buckets: values below 64 µs are exact, above
//! that every power of two is split into 32 equal sub-buckets. Reporting a bucket's midpoint
//! is then within 1/64 (1.6%) of any value in it, and histograms merge by adding counts.

/// Sub-buckets per power of two (2^SUB_BITS).
const SUB_BITS: u32 = 5;
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Largest value kept apart; larger values share the last bucket (~137 s).
pub const MAX_MICROS: u64 = (1 << 37) - 1;
/// Number of buckets: the exact range 0..64 plus 32 sub-buckets per octave 6..=36.
pub const BUCKETS: usize = (2 * SUB_COUNT + (37 - (SUB_BITS as u64 + 1)) * SUB_COUNT) as usize;

/// The bucket index of `micros` (clamped to [`MAX_MICROS`]).
pub fn bucket_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < 2 * SUB_COUNT {
        return v as usize;
    }
    let octave = 63 - u64::from(v.leading_zeros()); // >= SUB_BITS + 1
    let shift = octave - u64::from(SUB_BITS);
    let sub = (v >> shift) - SUB_COUNT; // 0..SUB_COUNT
    ((octave - u64::from(SUB_BITS) + 1) * SUB_COUNT + sub) as usize
}

/// The lowest value of bucket `index` and its width.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < 2 * SUB_COUNT {
        return (i, 1);
    }
    let group = i / SUB_COUNT; // >= 2
    let sub = i % SUB_COUNT;
    let shift = group - 1;
    ((SUB_COUNT + sub) << shift, 1 << shift)
}

/// The value reported for bucket `index`: its midpoint (its value when exact).
pub fn representative(index: usize) -> u64 {
    let (low, width) = bucket_bounds(index);
    low + width / 2
}

/// Counts per bucket, dense: fixed size, no allocation after creation.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram {{ total: {} }}", self.total)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: Box::new([0; BUCKETS]), total: 0 }
    }
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, micros: u64) {
        self.add(bucket_of(micros), 1);
    }

    /// Adds `count` to bucket `index` (ignored if out of range). A bucket saturates at
    /// `u32::MAX`; the total only counts what the buckets hold, so they never disagree.
    pub fn add(&mut self, index: usize, count: u32) {
        if let Some(c) = self.counts.get_mut(index) {
            let added = count.min(u32::MAX - *c);
            *c += added;
            self.total += u64::from(added);
        }
    }

    /// Removes `count` from bucket `index` (saturating).
    pub fn remove(&mut self, index: usize, count: u32) {
        if let Some(c) = self.counts.get_mut(index) {
            let taken = count.min(*c);
            *c -= taken;
            self.total -= u64::from(taken);
        }
    }

    /// Number of recorded values.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Non-empty buckets as (index, count).
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| (i, c))
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (i, c) in other.nonzero() {
            self.add(i, c);
        }
    }

    /// Empties the histogram.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }

    /// The `q`-quantile (0 < q <= 1) by nearest rank, as its bucket's representative;
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(representative(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn buckets_are_contiguous_and_monotonic() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(63), 63);
        assert_eq!(bucket_of(64), 64);
        assert_eq!(bucket_of(MAX_MICROS), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let mut last = 0;
        for v in 0..2_000_000u64 {
            let b = bucket_of(v);
            assert!(b == last || b == last + 1, "jump at {v}: {last} -> {b}");
            let (low, width) = bucket_bounds(b);
            assert!(low <= v && v < low + width, "{v} not in bucket {b} [{low}, {})", low + width);
            last = b;
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn representative_is_within_two_percent() {
        for v in (1..50_000_000u64).step_by(997) {
            let r = representative(bucket_of(v));
            let err = (r as f64 - v as f64).abs() / v as f64;
            assert!(err <= 1.0 / 64.0 + 1e-12, "{v} -> {r}: {err}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn quantiles_match_exact_ranks() {
        let mut h = Histogram::default();
        let mut values: Vec<u64> = (0..10_000u64).map(|i| 1_000 + (i * 7919) % 400_000).collect();
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
            let exact = values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64;
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - exact).abs() / exact <= 0.02, "q{q}: {got} vs {exact}");
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_saturated_bucket_keeps_total_and_counts_in_step() {
        let mut h = Histogram::default();
        h.add(5, u32::MAX);
        h.add(5, 7);
        assert_eq!(h.total(), u64::from(u32::MAX));
        assert_eq!(h.quantile(1.0), Some(5));
        h.remove(5, u32::MAX);
        assert_eq!((h.total(), h.quantile(0.5)), (0, None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::default(), Histogram::default(), Histogram::default());
        for v in 0..5_000u64 {
            let x = v * v % 1_000_003;
            if v % 3 == 0 {
                a.record(x)
            } else {
                b.record(x)
            }
            all.record(x);
        }
        a.merge(&b);
        assert_eq!(a, all);
        for (i, c) in b.nonzero() {
            a.remove(i, c);
        }
        assert_eq!(a.total(), 5_000u64.div_ceil(3));
    }
}
