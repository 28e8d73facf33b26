//! Arbitrary bytes as the per-second messages worker VMs ship (`wire::decode`: a class count and
//! a tally per lane, a lane being a version and a route class), merged into a rolling `Window`
//! of some class count while time advances in arbitrary steps. The window's figures, per lane
//! (`class_stats`) and per version over every class (`recent_stats`, `stats`), outcome counts
//! included, are compared with a plain model (a list of what was added to which lane at which
//! second). Slow counts add up like the error counts; the users sketches of errors and of slow
//! requests are OR-merged across messages, seconds and classes. Every input (and every message
//! in it) is also read by a reference decoder written from the format's rules: `wire::decode`
//! must accept exactly what it accepts and hand over the same lanes. Decoded messages must
//! re-encode to an equivalent message no longer than them; tallies recorded request by request
//! must count what was recorded (the sketches: the OR of the users' bits) and survive the wire;
//! histogram merge/remove keep totals consistent and quantiles are monotone in q.
//!
//! Input layout (so seeds can be written by hand; fuzz/make_seeds.py writes some):
//!   [w_lo, w_hi, flags, classes]
//!                         window_s = u16 LE % MAX_WINDOW_S (600) + 1; classes = byte % 17 + 1
//!                         (the window's route classes, `other` included); flags bit 0: advance to
//!                         the start second first (else adds happen before any advance); bit 1:
//!                         start near u64::MAX
//!   [start: u32 LE]       the start second (or u64::MAX - start with flags bit 1)
//!   then records, at most `MAX_OPS`:
//!     op & 3 == 0  advance by one byte (op & 4: by a u32 LE instead)
//!     op & 3 == 1  op & 8 clear: add a message: u16 LE length, then that many message bytes;
//!                  op & 4: as the coordinator, only a message of the window's class count (else
//!                  every lane, the window keeping those of its classes)
//!                  op & 8 set: record: [lane] [n], then n requests of [bits] [outcomes] [user]
//!                  [micros: u32 LE] (bits: bit 0 a 5xx, bit 1 micros × 1024, bit 2 slow, bit 3
//!                  the user is known: `user_bit(user)`, else 0, bit 4 beyond its user's weight;
//!                  outcomes: bit i outcome i),
//!                  shipped in lane `lane % (2 × classes)` of a message and added
//!     op & 3 == 2  one byte of seconds; op & 8 clear: recent_stats(version (op >> 2) & 1,
//!                  seconds); op & 8 set: class_stats(version, class byte % (classes + 1),
//!                  seconds) (one class past the window's: empty)
//!     op & 3 == 3  op & 8 clear: go back in time by one byte (must change nothing);
//!                  op & 8 set: clear(version (op >> 2) & 1)
//! The whole input is also decoded as one message.
#![no_main]

#[path = "common.rs"]
mod common;

use canary_gate::config::{MAX_CLASSES, MAX_OUTCOMES, MAX_WINDOW_S};
use canary_gate::coord::wire;
use canary_gate::measure::histogram::{self, Histogram, BUCKETS};
use canary_gate::measure::window::{
    lane, user_bit, Completed, Outcomes, Tally, Unweighed, Users, Window, WindowStats,
};
use canary_gate::model::Version;
use common::Cursor;
use libfuzzer_sys::fuzz_target;

/// Records per input: keeps one run of an input in the milliseconds.
const MAX_OPS: usize = 256;
/// Route classes a window may keep: the configured ones and `other`.
const MAX_WINDOW_CLASSES: usize = MAX_CLASSES + 1;

/// One lane's tally added to the window: at which second (`None`: before the first advance).
#[derive(Clone)]
struct Entry {
    second: Option<u64>,
    lane: usize,
    requests: u64,
    errors: u64,
    slow: u64,
    error_users: Users,
    slow_users: Users,
    outcomes: Outcomes,
    unweighed: Unweighed,
    buckets: Vec<(usize, u32)>,
}

/// What the window must hold: every entry of the last `w` seconds, in lanes of its classes.
#[derive(Clone)]
struct Model {
    w: u64,
    classes: usize,
    head: Option<u64>,
    entries: Vec<Entry>,
}

/// The model's own lane numbering: the classes one after the other, stable before canary.
fn model_lane(version: usize, class: usize) -> usize {
    class * 2 + version
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
        let entries = std::mem::take(&mut self.entries);
        self.entries = entries.into_iter().filter(|e| self.in_window(e)).collect();
    }

    fn keeps(&self, lane: usize) -> bool {
        lane < 2 * self.classes
    }

    /// Whether adding `lanes` keeps every bucket of each version, all classes together, within
    /// u32: the window's histograms saturate there by design, the model's counts do not.
    fn fits(&self, lanes: &[(usize, Tally)]) -> bool {
        (0..2).all(|version| {
            let mut counts = vec![0u64; BUCKETS];
            for e in self.entries.iter().filter(|e| e.lane % 2 == version) {
                for &(i, c) in &e.buckets {
                    counts[i] += u64::from(c);
                }
            }
            for (_, t) in lanes.iter().filter(|(lane, _)| lane % 2 == version && self.keeps(*lane)) {
                for (i, c) in t.latency.nonzero() {
                    counts[i] += u64::from(c);
                }
            }
            counts.iter().all(|&c| c <= u64::from(u32::MAX))
        })
    }

    fn add(&mut self, lane: usize, t: &Tally) {
        if !self.keeps(lane) {
            return;
        }
        self.entries.push(Entry {
            second: self.head,
            lane,
            requests: t.requests,
            errors: t.errors,
            slow: t.slow,
            error_users: t.error_users,
            slow_users: t.slow_users,
            outcomes: t.outcomes,
            unweighed: t.unweighed,
            buckets: t.latency.nonzero().collect(),
        });
    }

    fn clear(&mut self, version: usize) {
        self.entries.retain(|e| e.lane % 2 != version);
    }

    /// What the lanes `wanted` hold over the last `seconds` seconds, in exact counts.
    fn sums(&self, seconds: u64, wanted: impl Fn(usize) -> bool) -> Sums {
        let head = self.head.unwrap_or(0);
        let low = head.saturating_sub(seconds.saturating_sub(1));
        let recent = |e: &Entry| seconds >= self.w || (seconds > 0 && (low..=head).contains(&e.second.unwrap_or(0)));
        let mut sums = Sums { counts: vec![0; BUCKETS], ..Sums::default() };
        for e in self.entries.iter().filter(|e| wanted(e.lane) && recent(e)) {
            sums.requests += e.requests;
            sums.errors += e.errors;
            sums.slow += e.slow;
            sums.error_users |= e.error_users;
            sums.slow_users |= e.slow_users;
            for (total, &c) in sums.outcomes.iter_mut().zip(&e.outcomes) {
                *total += c;
            }
            let u = &mut sums.unweighed;
            (u.requests, u.errors, u.slow) =
                (u.requests + e.unweighed.requests, u.errors + e.unweighed.errors, u.slow + e.unweighed.slow);
            for (total, &c) in u.outcomes.iter_mut().zip(&e.unweighed.outcomes) {
                *total += c;
            }
            for &(i, c) in &e.buckets {
                sums.counts[i] += u64::from(c);
            }
        }
        sums
    }

    /// The figures of the lanes `wanted` over the last `seconds` seconds.
    fn summarize(&self, seconds: u64, wanted: impl Fn(usize) -> bool) -> WindowStats {
        figures(&self.sums(seconds, wanted))
    }

    fn stats(&self, version: usize) -> WindowStats {
        self.recent_stats(version, self.w)
    }

    fn recent_stats(&self, version: usize, seconds: u64) -> WindowStats {
        self.summarize(seconds, |lane| lane % 2 == version)
    }

    fn class_stats(&self, version: usize, class: usize, seconds: u64) -> WindowStats {
        self.summarize(seconds, |lane| lane == model_lane(version, class))
    }
}

/// Ratios in parts per million, exact (the model's counts stay far below any overflow).
fn ppm(part: u64, whole: u64) -> u64 {
    (u128::from(part) * 1_000_000).checked_div(u128::from(whole)).map_or(0, |r| r as u64)
}

/// Exact sums over some lanes and seconds (the users sketches: their OR).
#[derive(Default)]
struct Sums {
    requests: u64,
    errors: u64,
    slow: u64,
    error_users: Users,
    slow_users: Users,
    outcomes: Outcomes,
    unweighed: Unweighed,
    /// Per histogram bucket.
    counts: Vec<u64>,
}

fn figures(sums: &Sums) -> WindowStats {
    let total: u64 = sums.counts.iter().sum();
    assert_eq!(total, sums.requests, "every decoded request has a latency");
    let q = |p: f64| model_quantile(&sums.counts, total, p).unwrap_or(0);
    WindowStats {
        requests: sums.requests,
        errors: sums.errors,
        error_ratio_ppm: ppm(sums.errors, sums.requests),
        slow: sums.slow,
        error_users: sums.error_users,
        slow_users: sums.slow_users,
        p50_us: q(0.50),
        p75_us: q(0.75),
        p95_us: q(0.95),
        p99_us: q(0.99),
        outcomes: sums.outcomes,
        // The rolling window has the quantiles; only the fleet's counts carry shares.
        over_p95: None,
        over_p99: None,
        unweighed: sums.unweighed,
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

/// The window's figures against the model's: whole window per version, and with `every_lane`
/// each lane too (plus one class past the window's, which must be empty).
fn compare(window: &mut Window, model: &Model, every_lane: bool) {
    for v in 0..2 {
        let got = window.stats(version(v));
        assert_eq!(got, model.stats(v), "version {v}, w {}, head {:?}", model.w, model.head);
        for i in 0..MAX_OUTCOMES {
            assert_eq!(got.outcome_ratio_ppm(i), ppm(got.outcomes[i], got.requests), "outcome {i}");
        }
        assert_eq!(got.outcome_ratio_ppm(MAX_OUTCOMES), 0, "no such outcome");
        assert_eq!(got.share_ppm(got.slow), ppm(got.slow, got.requests), "slow share");
        assert_eq!(got.share_ppm(got.errors), got.error_ratio_ppm, "error share");
        check_sketches(&got);
        if every_lane {
            for class in 0..=model.classes {
                let got = window.class_stats(version(v), class, model.w as usize);
                assert_eq!(got, model.class_stats(v, class, model.w), "class {class} of version {v}");
            }
        }
    }
}

/// Adds the lanes of a valid `message` to `window` as the coordinator does (every lane with
/// `strict` unset) and to `model`; returns whether it was added.
fn add_message(window: &mut Window, model: &mut Model, message: &[u8], lanes: &[(usize, Tally)], strict: bool) -> bool {
    let mut scratch = Tally::default();
    let classes = window.classes();
    let mut handed = 0;
    let header = wire::decode(message, &mut scratch, |header, lane, tally| {
        handed += 1;
        if !strict || header.classes == classes {
            window.add(version(lane % 2), lane / 2, tally);
        }
    });
    let header = header.expect("a message that decoded once decodes again");
    assert_eq!(handed, lanes.len(), "every lane is handed over");
    if strict && header.classes != classes {
        return false;
    }
    for (lane, t) in lanes {
        model.add(*lane, t);
    }
    true
}

/// What `message` adds when its buckets would saturate the window's: not followed by the model,
/// so checked on copies. Requests, errors and outcomes stay exact; quantiles stay ordered and
/// among the buckets held.
fn check_saturated(window: &Window, model: &Model, message: &[u8], lanes: &[(usize, Tally)], strict: bool) {
    let (mut window, mut model) = (window.clone(), model.clone());
    if !add_message(&mut window, &mut model, message, lanes, strict) {
        return;
    }
    for v in 0..2 {
        let (got, exact) = (window.stats(version(v)), model.sums(model.w, |lane| lane % 2 == v));
        assert_eq!((got.requests, got.errors, got.outcomes), (exact.requests, exact.errors, exact.outcomes));
        assert_eq!((got.slow, got.error_users, got.slow_users), (exact.slow, exact.error_users, exact.slow_users));
        check_sketches(&got);
        assert_eq!(got.error_ratio_ppm, ppm(exact.errors, exact.requests));
        assert!(got.p50_us <= got.p95_us && got.p95_us <= got.p99_us, "{got:?}");
        let held = || exact.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, _)| i);
        if let (Some(low), Some(high)) = (held().next(), held().next_back()) {
            let range = histogram::representative(low)..=histogram::representative(high);
            assert!(range.contains(&got.p50_us) && range.contains(&got.p99_us), "{got:?} outside {range:?}");
        }
    }
}

/// A sketch never counts more users than the requests it stands for: each sets one bit.
fn check_sketches(s: &WindowStats) {
    assert!(u64::from(s.error_users.count_ones()) <= s.errors, "{s:?}");
    assert!(u64::from(s.slow_users.count_ones()) <= s.slow, "{s:?}");
    assert!(s.errors <= s.requests && s.slow <= s.requests, "{s:?}");
}

/// Records `n` requests read from `input` into a tally, checking what it counts.
fn record(input: &mut Cursor<'_>, n: u8) -> Tally {
    let mut t = Tally::default();
    let (mut errors, mut slow, mut outcomes, mut counts) = (0u64, 0u64, Outcomes::default(), vec![0u32; BUCKETS]);
    let mut unweighed = Unweighed::default();
    // The distinct known users of the errors and of the slow requests.
    let (mut error_ids, mut slow_ids) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let bits = input.byte().unwrap_or(0);
        let outcome_bits = input.byte().unwrap_or(0);
        let id = input.byte().unwrap_or(0);
        let micros = u64::from(input.u32()) << if bits & 2 != 0 { 10 } else { 0 };
        let (is_error, is_slow, known, beyond) = (bits & 1 != 0, bits & 4 != 0, bits & 8 != 0, bits & 16 != 0);
        let user = if known { user_bit(u64::from(id)) } else { 0 };
        assert!(!known || user.count_ones() == 1, "a user is one bit: {id} -> {user:#x}");
        t.record(&Completed { micros, is_error, is_slow, outcomes: outcome_bits, user, unweighed: beyond });
        if beyond {
            unweighed.requests += 1;
            unweighed.errors += u64::from(is_error);
            unweighed.slow += u64::from(is_slow);
            for (i, count) in unweighed.outcomes.iter_mut().enumerate() {
                *count += u64::from(outcome_bits >> i & 1);
            }
        }
        errors += u64::from(is_error);
        slow += u64::from(is_slow);
        for (ids, bad) in [(&mut error_ids, is_error), (&mut slow_ids, is_slow)] {
            if bad && known && !ids.contains(&id) {
                ids.push(id);
            }
        }
        for (i, count) in outcomes.iter_mut().enumerate() {
            *count += u64::from(outcome_bits >> i & 1);
        }
        let bucket = histogram::bucket_of(micros);
        counts[bucket] += 1;
        check_bucket(micros, bucket);
    }
    assert_eq!((t.requests, t.errors, t.slow, t.outcomes), (u64::from(n), errors, slow, outcomes));
    assert_eq!(t.unweighed, unweighed);
    let sketch = |ids: &[u8]| ids.iter().fold(0, |acc, &id| acc | user_bit(u64::from(id)));
    assert_eq!((t.error_users, t.slow_users), (sketch(&error_ids), sketch(&slow_ids)));
    assert!(t.error_users.count_ones() as usize <= error_ids.len(), "at most one bit per distinct user");
    assert!(t.slow_users.count_ones() as usize <= slow_ids.len(), "at most one bit per distinct user");
    assert_eq!(t.is_empty(), n == 0);
    let nonzero: Vec<(usize, u32)> = counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| (i, c)).collect();
    assert_eq!(t.latency.nonzero().collect::<Vec<_>>(), nonzero);
    t
}

/// A value's bucket reports it within 1/64 (exactly below 64 µs), up to `MAX_MICROS`.
fn check_bucket(micros: u64, bucket: usize) {
    assert!(bucket < BUCKETS);
    let v = micros.min(histogram::MAX_MICROS);
    let reported = histogram::representative(bucket);
    assert!(reported.abs_diff(v) * 64 <= v, "{micros} µs reported as {reported}");
}

fuzz_target!(|data: &[u8]| {
    check_message(data);

    let mut input = Cursor(data);
    let w = u32::from(input.u16()) % MAX_WINDOW_S + 1;
    let flags = input.byte().unwrap_or(0);
    let classes = usize::from(input.byte().unwrap_or(0)) % MAX_WINDOW_CLASSES + 1;
    let start = u64::from(input.u32());
    let mut now = if flags & 2 != 0 { u64::MAX - start } else { start };

    let mut window = Window::new(w as usize, classes);
    assert_eq!((window.len_s(), window.classes()), (w as usize, classes));
    for class in 0..classes {
        for v in 0..2 {
            assert_eq!(lane(version(v), class), model_lane(v, class));
        }
    }
    let mut model = Model { w: u64::from(w), classes, head: None, entries: Vec::new() };
    if flags & 1 != 0 {
        window.advance_to(now);
        model.advance_to(now);
    }
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
                let (message, strict, lanes) = if op & 8 == 0 {
                    let len = usize::from(input.u16());
                    let message = input.take(len);
                    let Some(lanes) = check_message(message) else { continue };
                    (message.to_vec(), op & 4 != 0, lanes)
                } else {
                    let recorded = usize::from(input.byte().unwrap_or(0)) % (2 * classes);
                    let n = input.byte().unwrap_or(0);
                    let mut dense = vec![Tally::default(); 2 * classes];
                    dense[recorded] = record(&mut input, n);
                    let message = wire::encode(&dense, classes, u64::from(n));
                    let lanes = check_message(&message).expect("an encoded tally decodes");
                    let shipped: Vec<(usize, Tally)> =
                        if n == 0 { vec![] } else { vec![(recorded, dense[recorded].clone())] };
                    assert_eq!(lanes, shipped, "a recorded tally survives the wire");
                    (message, true, lanes)
                };
                if model.fits(&lanes) {
                    add_message(&mut window, &mut model, &message, &lanes, strict);
                } else {
                    check_saturated(&window, &model, &message, &lanes, strict);
                }
            }
            2 => {
                let seconds = input.byte().unwrap_or(0);
                if op & 8 == 0 {
                    let got = window.recent_stats(version(v), usize::from(seconds));
                    assert_eq!(got, model.recent_stats(v, u64::from(seconds)), "recent {seconds}s of {v}, w {w}");
                } else {
                    let class = usize::from(input.byte().unwrap_or(0)) % (classes + 1);
                    let got = window.class_stats(version(v), class, usize::from(seconds));
                    let expected = model.class_stats(v, class, u64::from(seconds));
                    assert_eq!(got, expected, "recent {seconds}s of class {class} of {v}, w {w}");
                }
            }
            _ if op & 8 != 0 => {
                window.clear(version(v));
                model.clear(v);
            }
            _ => {
                let back = u64::from(input.byte().unwrap_or(1));
                window.advance_to(now.saturating_sub(back));
                // The first advance sets the head, whatever its value; later ones going back
                // must change nothing (the model stays as it was).
                if model.head.is_none() {
                    now = now.saturating_sub(back);
                    model.advance_to(now);
                }
            }
        }
        // Queries are checked by themselves and by the next comparison: comparing after each
        // is what costs most per input.
        if op & 3 != 2 {
            compare(&mut window, &model, false);
        }
    }
    compare(&mut window, &model, true);
});

/// One lane of a message as the reference decoder reads it.
#[derive(Debug, PartialEq)]
struct RefLane {
    lane: usize,
    requests: u64,
    errors: u64,
    slow: u64,
    error_users: u64,
    slow_users: u64,
    outcomes: Outcomes,
    unweighed: Unweighed,
    buckets: Vec<(usize, u32)>,
}

/// A message as the reference decoder reads it: identity, class count, lanes.
type RefMessage = (u64, usize, Vec<RefLane>);

/// The format of the messages `wire` writes.
const FORMAT: u8 = 5;

/// A LEB128 value of at most 10 bytes that fits in 64 bits (redundant zero groups allowed).
fn reference_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value: u128 = 0;
    for i in 0..10 {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u128::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return u64::try_from(value).ok();
        }
    }
    None
}

/// The message format written out from its rules, independently of `wire::decode`:
///   FORMAT, identity (8 bytes LE), classes (1..=MAX_CLASSES + 1), lane count, then per lane in
///   strictly increasing lane order (< 2 × classes): requests (> 0), errors (<= requests), slow
///   (<= requests), error users (popcount <= errors), slow users (popcount <= slow), the number of
///   outcome counts (<= MAX_OUTCOMES) and each (<= requests), the unweighed requests (<= requests),
///   errors (<= errors and <= unweighed requests), slow (<= slow and <= unweighed requests), the
///   number of their outcome counts (<= MAX_OUTCOMES) and each (<= unweighed requests), the
///   number of buckets (<= BUCKETS)
///   and per bucket its index delta (> 0 but for the first; index < BUCKETS) and count (1..=u32
///   max), the counts summing to the requests; nothing after the last lane.
fn reference_decode(bytes: &[u8]) -> Option<RefMessage> {
    let (&format, rest) = bytes.split_first()?;
    let (identity, mut input) = rest.split_first_chunk::<8>()?;
    if format != FORMAT {
        return None;
    }
    let r = &mut input;
    let classes = reference_varint(r)?;
    if !(1..=MAX_WINDOW_CLASSES as u64).contains(&classes) {
        return None;
    }
    let count = reference_varint(r)?;
    let mut lanes: Vec<RefLane> = Vec::new();
    for _ in 0..count {
        let lane = reference_varint(r)?;
        if lane >= 2 * classes || lanes.last().is_some_and(|previous| lane <= previous.lane as u64) {
            return None;
        }
        let requests = reference_varint(r)?;
        let errors = reference_varint(r)?;
        let slow = reference_varint(r)?;
        let error_users = reference_varint(r)?;
        let slow_users = reference_varint(r)?;
        let mut outcomes = Outcomes::default();
        let n = reference_varint(r)?;
        if n > MAX_OUTCOMES as u64 {
            return None;
        }
        for slot in outcomes.iter_mut().take(n as usize) {
            *slot = reference_varint(r)?;
        }
        let mut unweighed = Unweighed {
            requests: reference_varint(r)?,
            errors: reference_varint(r)?,
            slow: reference_varint(r)?,
            outcomes: Outcomes::default(),
        };
        let n = reference_varint(r)?;
        if n > MAX_OUTCOMES as u64 {
            return None;
        }
        for slot in unweighed.outcomes.iter_mut().take(n as usize) {
            *slot = reference_varint(r)?;
        }
        let entries = reference_varint(r)?;
        if entries > BUCKETS as u64 {
            return None;
        }
        let mut buckets: Vec<(usize, u32)> = Vec::new();
        let mut index: u128 = 0;
        for k in 0..entries {
            let delta = reference_varint(r)?;
            let count = u32::try_from(reference_varint(r)?).ok()?;
            index += u128::from(delta);
            if (k > 0 && delta == 0) || index >= BUCKETS as u128 || count == 0 {
                return None;
            }
            buckets.push((index as usize, count));
        }
        let total: u64 = buckets.iter().map(|&(_, c)| u64::from(c)).sum();
        let valid = requests > 0
            && errors <= requests
            && slow <= requests
            && u64::from(error_users.count_ones()) <= errors
            && u64::from(slow_users.count_ones()) <= slow
            && outcomes.iter().all(|&c| c <= requests)
            && unweighed.requests <= requests
            && unweighed.errors <= errors.min(unweighed.requests)
            && unweighed.slow <= slow.min(unweighed.requests)
            && unweighed.outcomes.iter().all(|&c| c <= unweighed.requests)
            && total == requests;
        if !valid {
            return None;
        }
        let lane = lane as usize;
        lanes.push(RefLane { lane, requests, errors, slow, error_users, slow_users, outcomes, unweighed, buckets });
    }
    if !r.is_empty() {
        return None;
    }
    Some((u64::from_le_bytes(*identity), classes as usize, lanes))
}

/// Decodes `bytes` as one message; checks the answer against the reference decoder's and, when
/// valid, its lanes, the round trip and the histograms, and returns the lanes handed over (lane,
/// tally).
fn check_message(bytes: &[u8]) -> Option<Vec<(usize, Tally)>> {
    let mut scratch = Tally::default();
    let mut lanes: Vec<(usize, Tally)> = Vec::new();
    let mut headers = Vec::new();
    let reference = reference_decode(bytes);
    let Some(header) = wire::decode(bytes, &mut scratch, |header, lane, t| {
        headers.push(*header);
        lanes.push((lane, t.clone()));
    }) else {
        assert!(lanes.is_empty(), "a refused message hands nothing over");
        assert_eq!(reference, None, "refused a valid message");
        return None;
    };
    let reference = reference.expect("accepted a message the format refuses");
    assert_eq!((header.identity, header.classes), (reference.0, reference.1));
    let read: Vec<RefLane> = lanes
        .iter()
        .map(|(lane, t)| RefLane {
            lane: *lane,
            requests: t.requests,
            errors: t.errors,
            slow: t.slow,
            error_users: t.error_users,
            slow_users: t.slow_users,
            outcomes: t.outcomes,
            unweighed: t.unweighed,
            buckets: t.latency.nonzero().collect(),
        })
        .collect();
    assert_eq!(read, reference.2, "the lanes the format says");
    assert!(headers.iter().all(|h| *h == header), "each lane comes with the message's header");
    assert!((1..=MAX_WINDOW_CLASSES).contains(&header.classes), "{header:?}");
    assert!(lanes.len() <= wire::MAX_LANES);
    assert!(lanes.windows(2).all(|p| p[0].0 < p[1].0), "lanes strictly increasing");
    for (lane, tally) in &lanes {
        assert!(*lane < 2 * header.classes, "lane {lane} of {header:?}");
        assert!(!tally.is_empty(), "an empty lane is not shipped");
        assert!(tally.errors <= tally.requests && tally.slow <= tally.requests, "{tally:?}");
        assert!(u64::from(tally.error_users.count_ones()) <= tally.errors, "{tally:?}");
        assert!(u64::from(tally.slow_users.count_ones()) <= tally.slow, "{tally:?}");
        assert!(tally.outcomes.iter().all(|&c| c <= tally.requests), "{:?}", tally.outcomes);
        assert_eq!(tally.latency.total(), tally.requests);
        assert_eq!(tally.latency.nonzero().map(|(_, c)| u64::from(c)).sum::<u64>(), tally.requests);
    }

    let mut dense = vec![Tally::default(); 2 * header.classes];
    for (lane, tally) in &lanes {
        dense[*lane] = tally.clone();
    }
    let encoded = wire::encode(&dense, header.classes, header.identity);
    assert!(encoded.len() <= bytes.len(), "the encoding is the shortest form");
    let mut back = Vec::new();
    let again = wire::decode(&encoded, &mut scratch, |_, lane, t| back.push((lane, t.clone())));
    assert_eq!(again, Some(header), "encode(decode(x)) decodes");
    assert_eq!(back, lanes);
    // Empty lanes past the message's are not shipped either.
    dense.resize(wire::MAX_LANES, Tally::default());
    assert_eq!(wire::encode(&dense, header.classes, header.identity), encoded);

    let empty = Histogram::default();
    let latencies: Vec<&Histogram> = lanes.iter().map(|(_, t)| &t.latency).collect();
    match latencies.as_slice() {
        [] => check_histograms(&empty, &empty, bytes),
        [only] => check_histograms(only, &empty, bytes),
        many => {
            for (a, b) in many.iter().zip(many.iter().cycle().skip(1)) {
                check_histograms(a, b, bytes);
            }
        }
    }
    Some(lanes)
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
        check_bucket(v, histogram::bucket_of(v));
    }
}
