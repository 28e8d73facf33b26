//! Arbitrary bytes as the per-second message a worker VM ships (`wire::decode_into`), merged into
//! a rolling `Window` while time advances in arbitrary steps. The window's figures are compared
//! with a plain model (a list of what was added at which second); decoded messages must re-encode
//! to an equivalent message; histogram merge/remove keep totals consistent and quantiles are
//! monotone in q.
//!
//! Input layout (so seeds can be written by hand):
//!   [w_lo, w_hi, flags]   window_s = u16 LE % MAX_WINDOW_S (600) + 1; flags bit 0: advance to the start second
//!                         first (else adds happen before any advance); bit 1: start near u64::MAX
//!   [start: u32 LE]       the start second (or u64::MAX - start with flags bit 1)
//!   then records, at most `MAX_OPS`:
//!     op & 3 == 0  advance by one byte (op & 4: by a u32 LE instead)
//!     op & 3 == 1  add: u16 LE length, then that many message bytes, for version (op >> 2) & 1
//!     op & 3 == 2  recent_stats(version (op >> 2) & 1, one byte of seconds)
//!     op & 3 == 3  go back in time by one byte (must change nothing)
//! The whole input is also decoded as one message.
#![no_main]

#[path = "common.rs"]
mod common;

use canary_gate::config::MAX_WINDOW_S;
use canary_gate::coord::wire;
use canary_gate::measure::histogram::{self, Histogram, BUCKETS};
use canary_gate::measure::window::{Tally, Window, WindowStats};
use canary_gate::model::Version;
use common::Cursor;
use libfuzzer_sys::fuzz_target;

/// Records per input: keeps one run of an input in the milliseconds.
const MAX_OPS: usize = 256;

/// One message added to the window: at which second (`None`: before the first advance).
struct Entry {
    second: Option<u64>,
    version: usize,
    requests: u64,
    errors: u64,
    buckets: Vec<(usize, u32)>,
}

/// What the window must hold: every entry of the last `w` seconds.
struct Model {
    w: u64,
    head: Option<u64>,
    entries: Vec<Entry>,
    /// Per version, per bucket: the sum over the entries in the window.
    counts: [Vec<u64>; 2],
}

impl Model {
    fn in_window(&self, e: &Entry) -> bool {
        match (self.head, e.second) {
            (Some(h), Some(t)) => u128::from(t) + u128::from(self.w) > u128::from(h),
            _ => true,
        }
    }

    fn advance_to(&mut self, now: u64) {
        match self.head {
            None => {
                // What was added before the first advance sits in slot 0: the second of the
                // window congruent to 0.
                let second = now - now % self.w;
                for e in &mut self.entries {
                    e.second.get_or_insert(second);
                }
                self.head = Some(now);
            }
            Some(h) if now > h => self.head = Some(now),
            Some(_) => {}
        }
        let (kept, gone): (Vec<Entry>, Vec<Entry>) =
            std::mem::take(&mut self.entries).into_iter().partition(|e| self.in_window(e));
        for e in gone {
            for &(i, c) in &e.buckets {
                self.counts[e.version][i] -= u64::from(c);
            }
        }
        self.entries = kept;
    }

    /// Whether adding `buckets` to `version` keeps every bucket of the window within u32.
    fn fits(&self, version: usize, buckets: &[(usize, u32)]) -> bool {
        buckets.iter().all(|&(i, c)| self.counts[version][i] + u64::from(c) <= u64::from(u32::MAX))
    }

    fn add(&mut self, version: usize, t: &Tally) {
        let buckets: Vec<(usize, u32)> = t.latency.nonzero().collect();
        for &(i, c) in &buckets {
            self.counts[version][i] += u64::from(c);
        }
        self.entries.push(Entry { second: self.head, version, requests: t.requests, errors: t.errors, buckets });
    }

    fn stats(&self, version: usize) -> WindowStats {
        let mine = self.entries.iter().filter(|e| e.version == version);
        let (requests, errors) = mine.fold((0, 0), |(r, e), entry| (r + entry.requests, e + entry.errors));
        figures(requests, errors, &self.counts[version])
    }

    fn recent_stats(&self, version: usize, seconds: u64) -> WindowStats {
        if seconds >= self.w {
            return self.stats(version);
        }
        let head = self.head.unwrap_or(0);
        let low = head.saturating_sub(seconds.saturating_sub(1));
        summarize(self.entries.iter().filter(|e| {
            let t = e.second.unwrap_or(0);
            e.version == version && seconds > 0 && (low..=head).contains(&t)
        }))
    }
}

fn summarize<'e>(entries: impl Iterator<Item = &'e Entry>) -> WindowStats {
    let mut counts = vec![0u64; BUCKETS];
    let (mut requests, mut errors) = (0u64, 0u64);
    for e in entries {
        requests += e.requests;
        errors += e.errors;
        for &(i, c) in &e.buckets {
            counts[i] += u64::from(c);
        }
    }
    figures(requests, errors, &counts)
}

fn figures(requests: u64, errors: u64, counts: &[u64]) -> WindowStats {
    let total: u64 = counts.iter().sum();
    assert_eq!(total, requests, "every decoded request has a latency");
    let q = |p: f64| model_quantile(counts, total, p).unwrap_or(0);
    WindowStats {
        requests,
        errors,
        error_ratio_ppm: errors.saturating_mul(1_000_000).checked_div(requests).unwrap_or(0),
        p50_us: q(0.50),
        p95_us: q(0.95),
        p99_us: q(0.99),
    }
}

/// Nearest-rank quantile over exact (u64) counts.
fn model_quantile(counts: &[u64], total: u64, q: f64) -> Option<u64> {
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    counts
        .iter()
        .position(|&c| {
            seen += c;
            seen >= rank
        })
        .map(histogram::representative)
}

fn version(i: usize) -> Version {
    if i == 0 {
        Version::Stable
    } else {
        Version::Canary
    }
}

fuzz_target!(|data: &[u8]| {
    check_message(data);

    let mut input = Cursor(data);
    let w = u32::from(input.u16()) % MAX_WINDOW_S + 1;
    let flags = input.byte().unwrap_or(0);
    let start = u64::from(input.u32());
    let mut now = if flags & 2 != 0 { u64::MAX - start } else { start };

    let mut window = Window::new(w as usize);
    assert_eq!(window.len_s(), w as usize);
    let mut model =
        Model { w: u64::from(w), head: None, entries: Vec::new(), counts: [vec![0; BUCKETS], vec![0; BUCKETS]] };
    if flags & 1 != 0 {
        window.advance_to(now);
        model.advance_to(now);
    }
    let mut tallies: [Tally; 2] = Default::default();
    for _ in 0..MAX_OPS {
        let Some(op) = input.byte() else { break };
        let v = usize::from((op >> 2) & 1);
        match op & 3 {
            0 => {
                let step = if op & 4 != 0 { u64::from(input.u32()) } else { u64::from(input.byte().unwrap_or(1)) };
                now = now.saturating_add(step);
                window.advance_to(now);
                model.advance_to(now);
            }
            1 => {
                let len = usize::from(input.u16());
                let message = input.take(len);
                if !check_message(message) {
                    continue;
                }
                assert!(wire::decode_into(message, &mut tallies).is_some());
                let t = &tallies[v];
                let buckets: Vec<(usize, u32)> = t.latency.nonzero().collect();
                if !model.fits(v, &buckets) {
                    // The model counts past u32::MAX; a window bucket saturates there by design.
                    continue;
                }
                window.add(version(v), t);
                model.add(v, t);
            }
            2 => {
                let seconds = input.byte().unwrap_or(0);
                let got = window.recent_stats(version(v), usize::from(seconds));
                assert_eq!(got, model.recent_stats(v, u64::from(seconds)), "recent {seconds}s of {v}, w {w}");
            }
            _ => {
                let back = u64::from(input.byte().unwrap_or(1));
                let before = [window.stats(Version::Stable), window.stats(Version::Canary)];
                window.advance_to(now.saturating_sub(back));
                if model.head.is_none() {
                    // The first advance sets the head, whatever its value.
                    now = now.saturating_sub(back);
                    model.advance_to(now);
                } else {
                    assert_eq!(before, [window.stats(Version::Stable), window.stats(Version::Canary)]);
                }
            }
        }
        for v in 0..2 {
            assert_eq!(window.stats(version(v)), model.stats(v), "version {v}, w {w}, head {:?}", model.head);
        }
    }
});

/// Decodes `bytes` as one message; when valid, checks the round trip and the histograms.
/// Returns whether it was valid.
fn check_message(bytes: &[u8]) -> bool {
    let mut t: [Tally; 2] = Default::default();
    let Some(identity) = wire::decode_into(bytes, &mut t) else {
        assert_eq!(t, <[Tally; 2]>::default(), "a refused message leaves nothing behind");
        return false;
    };
    for tally in &t {
        assert!(tally.errors <= tally.requests);
        assert_eq!(tally.latency.total(), tally.requests);
        assert_eq!(tally.latency.nonzero().map(|(_, c)| u64::from(c)).sum::<u64>(), tally.requests);
    }
    let encoded = wire::encode(&t, identity);
    assert!(encoded.len() <= bytes.len(), "the encoding is the shortest form");
    let mut back: [Tally; 2] = Default::default();
    assert_eq!(wire::decode_into(&encoded, &mut back), Some(identity), "encode(decode(x)) decodes");
    assert_eq!(back, t);
    assert_eq!(wire::encode(&back, identity), encoded);
    check_histograms(&t[0].latency, &t[1].latency, bytes);
    true
}

fn sum(h: &Histogram) -> u64 {
    h.nonzero().map(|(_, c)| u64::from(c)).sum()
}

fn check_histograms(a: &Histogram, b: &Histogram, bytes: &[u8]) {
    let saturates = a.nonzero().any(|(i, c)| b.nonzero().any(|(j, d)| i == j && c.checked_add(d).is_none()));
    let mut m = a.clone();
    m.merge(b);
    if saturates {
        // A full bucket stops at u32::MAX: the total counts what the buckets hold.
        assert!(m.total() < a.total() + b.total());
    } else {
        assert_eq!(m.total(), a.total() + b.total());
    }
    assert_eq!(sum(&m), m.total(), "total is the sum of the counts");
    check_quantiles(&m, bytes);
    for (i, c) in b.nonzero() {
        let before = m.total();
        m.remove(i, c);
        assert!(m.total() <= before, "remove never grows the total");
    }
    if !saturates {
        assert_eq!(&m, a, "merge then remove gives back the original");
    }
    // Removing more than a bucket holds empties it and takes exactly what it held.
    let mut m = a.clone();
    for (i, c) in a.nonzero() {
        let before = m.total();
        m.remove(i, c.saturating_add(1));
        assert_eq!(before - m.total(), u64::from(c));
    }
    assert_eq!((m.total(), m.nonzero().count()), (0, 0));
    m.remove(0, u32::MAX);
    m.remove(BUCKETS, 1);
    assert_eq!(m.total(), 0);
    check_quantiles(a, bytes);
}

fn check_quantiles(h: &Histogram, bytes: &[u8]) {
    // A q from the input too (any f64, NaN included: must not panic).
    let raw = bytes.get(..8).and_then(|b| b.try_into().ok()).map(f64::from_le_bytes).unwrap_or(0.5);
    let _ = h.quantile(raw);
    let mut qs = vec![-1.0, 0.0, f64::MIN_POSITIVE, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, 2.0];
    if raw.is_finite() {
        qs.push(raw);
    }
    qs.sort_by(f64::total_cmp);
    let got: Vec<Option<u64>> = qs.iter().map(|&q| h.quantile(q)).collect();
    if h.total() == 0 {
        assert!(got.iter().all(Option::is_none));
        return;
    }
    assert_eq!(sum(h), h.total(), "total is the sum of the counts");
    {
        assert!(got.iter().all(Option::is_some), "{got:?}");
        assert!(got.windows(2).all(|p| p[0] <= p[1]), "quantile not monotone in q: {qs:?} -> {got:?}");
        let lowest = h.nonzero().next().map(|(i, _)| histogram::representative(i));
        let highest = h.nonzero().last().map(|(i, _)| histogram::representative(i));
        assert_eq!((got.first().copied().flatten(), got.last().copied().flatten()), (lowest, highest));
    }
    for v in [0, 1, 63, 64, 1_000, 123_456, histogram::MAX_MICROS, u64::MAX, raw.to_bits()] {
        assert!(histogram::bucket_of(v) < BUCKETS);
    }
}
