//! Tallies per lane (a version and a route class) and the rolling window they are merged into.
//!
//! Each worker VM fills a [`Tally`] per lane on its request path, and ships them every
//! evaluation period.
//! One VM merges the shipped tallies into a [`Window`]: a ring of one-second slots per lane, so
//! the window's requests, errors, outcomes and quantiles cover exactly the last `window_s`
//! seconds. Memory is fixed by `window_s`, the number of classes and the histogram size, never
//! by traffic.

use super::histogram::Histogram;
use crate::config::MAX_OUTCOMES;
use crate::model::Version;

/// The lane of `version` in route class `class`: lanes of one class are adjacent.
pub fn lane(version: Version, class: usize) -> usize {
    class * 2 + version.index()
}

/// Outcome counts, one per configured outcome.
pub type Outcomes = [u64; MAX_OUTCOMES];

/// A distinct-users sketch: one bit per user, mergeable by OR across workers and seconds. Its
/// popcount never exceeds the number of distinct users it saw.
pub type Users = u64;

/// The sketch bit of user `id` (a bucket, or any stable number per user).
pub fn user_bit(id: u64) -> Users {
    1 << (id.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
}

/// One completed request, as the request path records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completed {
    /// Its duration in microseconds.
    pub micros: u64,
    /// Answered 5xx.
    pub is_error: bool,
    /// Slower than the latency test's limit.
    pub is_slow: bool,
    /// Bit `i` set if it had outcome `i`.
    pub outcomes: u8,
    /// Its user's [`user_bit`] (0: not known).
    pub user: Users,
    /// Beyond its user's weight in the gate ([`super::weight`]).
    pub unweighed: bool,
}

/// The requests of a tally or window beyond their users' weight ([`super::weight`]): counted
/// in full everywhere, and subtracted from what the gate judges ([`WindowStats::weighed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unweighed {
    /// Requests.
    pub requests: u64,
    /// Of which answered 5xx.
    pub errors: u64,
    /// Of which slower than the latency test's limit.
    pub slow: u64,
    /// Of which had each outcome.
    pub outcomes: Outcomes,
}

impl Unweighed {
    fn add(&mut self, other: &Unweighed) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.slow += other.slow;
        add_outcomes(&mut self.outcomes, &other.outcomes);
    }
}

fn add_outcomes(total: &mut Outcomes, counts: &[u64]) {
    for (total, &c) in total.iter_mut().zip(counts) {
        *total += c;
    }
}

/// What one VM saw for one version since its last shipment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Completed requests.
    pub requests: u64,
    /// Of which answered 5xx.
    pub errors: u64,
    /// Of which slower than the latency test's limit.
    pub slow: u64,
    /// The users of the errors.
    pub error_users: Users,
    /// The users of the slow ones.
    pub slow_users: Users,
    /// Their durations in microseconds.
    pub latency: Histogram,
    /// Of which had each outcome.
    pub outcomes: Outcomes,
    /// Of which beyond their users' weight.
    pub unweighed: Unweighed,
}

impl Tally {
    /// Records one completed request.
    pub fn record(&mut self, c: &Completed) {
        self.requests += 1;
        self.errors += u64::from(c.is_error);
        self.slow += u64::from(c.is_slow);
        if c.is_error {
            self.error_users |= c.user;
        }
        if c.is_slow {
            self.slow_users |= c.user;
        }
        self.latency.record(c.micros);
        for (i, count) in self.outcomes.iter_mut().enumerate() {
            *count += u64::from(c.outcomes >> i & 1);
        }
        if c.unweighed {
            let u = &mut self.unweighed;
            u.requests += 1;
            u.errors += u64::from(c.is_error);
            u.slow += u64::from(c.is_slow);
            for (i, count) in u.outcomes.iter_mut().enumerate() {
                *count += u64::from(c.outcomes >> i & 1);
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }

    /// Resets to empty, keeping the allocation.
    pub fn clear(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.slow = 0;
        self.error_users = 0;
        self.slow_users = 0;
        self.latency.clear();
        self.outcomes = Outcomes::default();
        self.unweighed = Unweighed::default();
    }
}

/// One second of one lane, stored sparsely.
#[derive(Debug, Clone, Default)]
struct Second {
    requests: u64,
    errors: u64,
    slow: u64,
    error_users: Users,
    slow_users: Users,
    buckets: Vec<(u16, u32)>,
    /// Outcome counts; empty while none was seen this second.
    outcomes: Vec<u64>,
    unweighed: Unweighed,
}

impl Second {
    fn clear(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.slow = 0;
        self.error_users = 0;
        self.slow_users = 0;
        self.buckets.clear();
        self.outcomes.clear();
        self.unweighed = Unweighed::default();
    }

    /// Adds a histogram's counts to the slot's sorted bucket list, summing equal buckets:
    /// the list holds exactly the second's distinct buckets. Merged through the window's
    /// `scratch`, so no allocation once the window has seen its traffic.
    fn add_buckets(&mut self, latency: &Histogram, scratch: &mut Vec<(u16, u32)>) {
        scratch.clear();
        let mut old = self.buckets.iter().copied().peekable();
        for (i, c) in latency.nonzero() {
            // BUCKETS < u16::MAX, so every index fits.
            let i = i as u16;
            while let Some(&entry) = old.peek().filter(|(j, _)| *j < i) {
                scratch.push(entry);
                old.next();
            }
            match old.peek() {
                Some(&(j, d)) if j == i => {
                    scratch.push((i, d.saturating_add(c)));
                    old.next();
                }
                _ => scratch.push((i, c)),
            }
        }
        scratch.extend(old);
        self.buckets.clear();
        self.buckets.extend_from_slice(scratch);
    }
}

/// The rolling window of one lane.
#[derive(Debug, Clone)]
struct LaneWindow {
    seconds: Vec<Second>,
    requests: u64,
    errors: u64,
    slow: u64,
    latency: Histogram,
    outcomes: Outcomes,
}

impl LaneWindow {
    fn new(window_s: usize) -> Self {
        LaneWindow {
            seconds: vec![Second::default(); window_s],
            requests: 0,
            errors: 0,
            slow: 0,
            latency: Histogram::default(),
            outcomes: Outcomes::default(),
        }
    }

    fn expire(&mut self, slot: usize) {
        if let Some(second) = self.seconds.get_mut(slot) {
            self.requests -= second.requests.min(self.requests);
            self.errors -= second.errors.min(self.errors);
            self.slow -= second.slow.min(self.slow);
            for &(i, c) in &second.buckets {
                self.latency.remove(usize::from(i), c);
            }
            for (total, &c) in self.outcomes.iter_mut().zip(&second.outcomes) {
                *total -= c.min(*total);
            }
            second.clear();
        }
    }

    fn add(&mut self, slot: usize, tally: &Tally, scratch: &mut Vec<(u16, u32)>) {
        let Some(second) = self.seconds.get_mut(slot) else { return };
        second.requests += tally.requests;
        second.errors += tally.errors;
        second.slow += tally.slow;
        second.error_users |= tally.error_users;
        second.slow_users |= tally.slow_users;
        self.requests += tally.requests;
        self.errors += tally.errors;
        self.slow += tally.slow;
        second.unweighed.add(&tally.unweighed);
        if tally.outcomes.iter().any(|&c| c > 0) {
            second.outcomes.resize(MAX_OUTCOMES, 0);
            for ((total, sum), &c) in self.outcomes.iter_mut().zip(second.outcomes.iter_mut()).zip(&tally.outcomes) {
                *total += c;
                *sum += c;
            }
        }
        second.add_buckets(&tally.latency, scratch);
        self.latency.merge(&tally.latency);
    }
}

/// Figures of one version over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Requests completed in the window.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// `errors / requests` in parts per million (0 without requests).
    pub error_ratio_ppm: u64,
    /// Requests slower than the latency test's limit.
    pub slow: u64,
    /// The users of the errors.
    pub error_users: Users,
    /// The users of the slow requests.
    pub slow_users: Users,
    /// Latency quantiles in microseconds (0 without requests).
    pub p50_us: u64,
    /// 75th percentile.
    pub p75_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Requests with each outcome.
    pub outcomes: Outcomes,
    /// The fleet's counts ([`super::fleet`]): requests over `max_p95_ms` and requests checked
    /// against it, which stand for the 95th percentile (over 5% of them: above the limit).
    pub over_p95: Option<(u64, u64)>,
    /// The same for `max_p99_ms`.
    pub over_p99: Option<(u64, u64)>,
    /// Of the requests, those beyond their users' weight.
    pub unweighed: Unweighed,
}

impl WindowStats {
    /// The share of requests with outcome `i`, in parts per million (0 without requests).
    pub fn outcome_ratio_ppm(&self, i: usize) -> u64 {
        self.share_ppm(self.outcomes.get(i).copied().unwrap_or(0))
    }

    /// `count / requests` in parts per million (0 without requests).
    pub fn share_ppm(&self, count: u64) -> u64 {
        count.saturating_mul(1_000_000).checked_div(self.requests).unwrap_or(0)
    }

    /// The figures the gate judges: without the unweighed requests (counts, ratios and
    /// outcomes; the latency quantiles and the users' sketches keep every request).
    pub fn weighed(&self) -> WindowStats {
        let u = &self.unweighed;
        let mut weighed = WindowStats {
            requests: self.requests.saturating_sub(u.requests),
            errors: self.errors.saturating_sub(u.errors),
            slow: self.slow.saturating_sub(u.slow),
            unweighed: Unweighed::default(),
            ..*self
        };
        weighed.error_ratio_ppm = weighed.share_ppm(weighed.errors);
        for (count, &c) in weighed.outcomes.iter_mut().zip(&u.outcomes) {
            *count = count.saturating_sub(c);
        }
        weighed
    }
}

/// Rolling windows of every lane, advanced by whole seconds.
#[derive(Debug, Clone)]
pub struct Window {
    lanes: Vec<LaneWindow>,
    /// Reused by [`Window::recent_stats`].
    scratch: Histogram,
    /// Reused by the slots' bucket merges.
    merge_scratch: Vec<(u16, u32)>,
    window_s: usize,
    /// The second the head slot stands for; `None` before the first advance.
    head: Option<u64>,
}

impl Window {
    /// A window of `window_s` one-second slots (at least one) for both versions of `classes`
    /// route classes (at least one: `other`).
    pub fn new(window_s: usize, classes: usize) -> Self {
        let window_s = window_s.max(1);
        Window {
            lanes: (0..2 * classes.max(1)).map(|_| LaneWindow::new(window_s)).collect(),
            scratch: Histogram::default(),
            merge_scratch: Vec::new(),
            window_s,
            head: None,
        }
    }

    /// Its length in seconds.
    pub fn len_s(&self) -> usize {
        self.window_s
    }

    /// The number of route classes it keeps apart.
    pub fn classes(&self) -> usize {
        self.lanes.len() / 2
    }

    fn slot(&self, second: u64) -> usize {
        (second % self.window_s as u64) as usize
    }

    /// Moves the head to `now_s`, expiring the seconds that fall out of the window.
    /// Time going backwards is ignored.
    pub fn advance_to(&mut self, now_s: u64) {
        let Some(head) = self.head else {
            self.head = Some(now_s);
            return;
        };
        if now_s <= head {
            return;
        }
        let steps = (now_s - head).min(self.window_s as u64);
        for s in (now_s - steps + 1)..=now_s {
            let slot = self.slot(s);
            for lane in &mut self.lanes {
                lane.expire(slot);
            }
        }
        self.head = Some(now_s);
    }

    /// Forgets everything recorded for `version`.
    pub fn clear(&mut self, version: Version) {
        let window_s = self.window_s;
        for lane in self.lanes.iter_mut().skip(version.index()).step_by(2) {
            *lane = LaneWindow::new(window_s);
        }
    }

    /// Adds a tally of `version` in route class `class` to the current second.
    pub fn add(&mut self, version: Version, class: usize, tally: &Tally) {
        let slot = self.slot(self.head.unwrap_or(0));
        if let Some(lane) = self.lanes.get_mut(lane(version, class)) {
            lane.add(slot, tally, &mut self.merge_scratch);
        }
    }

    /// The figures of `version`, all classes together, over the whole window.
    pub fn stats(&mut self, version: Version) -> WindowStats {
        self.recent_stats(version, self.window_s)
    }

    /// The figures of `version`, all classes together, over its last `seconds` seconds (the
    /// whole window if longer).
    pub fn recent_stats(&mut self, version: Version, seconds: usize) -> WindowStats {
        let lanes: Vec<usize> = (0..self.classes()).map(|class| lane(version, class)).collect();
        self.summarize_lanes(&lanes, seconds)
    }

    /// The figures of `version` in route class `class` over its last `seconds` seconds.
    pub fn class_stats(&mut self, version: Version, class: usize, seconds: usize) -> WindowStats {
        self.summarize_lanes(&[lane(version, class)], seconds)
    }

    fn summarize_lanes(&mut self, lanes: &[usize], seconds: usize) -> WindowStats {
        self.scratch.clear();
        let (mut requests, mut errors, mut outcomes) = (0, 0, Outcomes::default());
        let (mut slow, mut error_users, mut slow_users) = (0, 0, 0);
        let mut unweighed = Unweighed::default();
        if seconds >= self.window_s {
            for lane in lanes.iter().filter_map(|&i| self.lanes.get(i)) {
                requests += lane.requests;
                errors += lane.errors;
                slow += lane.slow;
                add_outcomes(&mut outcomes, &lane.outcomes);
                self.scratch.merge(&lane.latency);
                for second in &lane.seconds {
                    error_users |= second.error_users;
                    slow_users |= second.slow_users;
                    unweighed.add(&second.unweighed);
                }
            }
        } else {
            let head = self.head.unwrap_or(0);
            let slots: Vec<usize> =
                (0..seconds as u64).filter_map(|back| head.checked_sub(back)).map(|s| self.slot(s)).collect();
            for lane in lanes.iter().filter_map(|&i| self.lanes.get(i)) {
                for second in slots.iter().filter_map(|&slot| lane.seconds.get(slot)) {
                    requests += second.requests;
                    errors += second.errors;
                    slow += second.slow;
                    error_users |= second.error_users;
                    slow_users |= second.slow_users;
                    add_outcomes(&mut outcomes, &second.outcomes);
                    unweighed.add(&second.unweighed);
                    for &(i, c) in &second.buckets {
                        self.scratch.add(usize::from(i), c);
                    }
                }
            }
        }
        WindowStats { outcomes, slow, error_users, slow_users, unweighed, ..summarize(requests, errors, &self.scratch) }
    }
}

fn summarize(requests: u64, errors: u64, latency: &Histogram) -> WindowStats {
    let q = |p: f64| latency.quantile(p).unwrap_or(0);
    WindowStats {
        requests,
        errors,
        error_ratio_ppm: errors.saturating_mul(1_000_000).checked_div(requests).unwrap_or(0),
        p50_us: q(0.50),
        p75_us: q(0.75),
        p95_us: q(0.95),
        p99_us: q(0.99),
        ..WindowStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::histogram::BUCKETS;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn tally(requests: u64, errors: u64, micros: u64) -> Tally {
        let mut t = Tally::default();
        for i in 0..requests {
            t.record(&Completed { micros, is_error: i < errors, ..Completed::default() });
        }
        t
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn counts_cover_exactly_the_last_window_seconds() {
        let mut w = Window::new(3, 1);
        for s in 100..110u64 {
            w.advance_to(s);
            w.add(Version::Canary, 0, &tally(s - 99, 1, 1000));
        }
        // Seconds 107, 108, 109 carry 8 + 9 + 10 requests.
        let st = w.stats(Version::Canary);
        assert_eq!((st.requests, st.errors), (27, 3));
        assert_eq!(st.error_ratio_ppm, 3 * 1_000_000 / 27);
        assert_eq!(w.stats(Version::Stable), WindowStats::default());
        w.advance_to(110);
        assert_eq!(w.stats(Version::Canary).requests, 19);
        w.advance_to(111);
        assert_eq!(w.stats(Version::Canary).requests, 10);
        w.advance_to(500);
        assert_eq!(w.stats(Version::Canary), WindowStats::default());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn quantiles_follow_the_window() {
        let mut w = Window::new(2, 1);
        w.advance_to(1);
        w.add(Version::Stable, 0, &tally(100, 0, 10_000));
        w.advance_to(2);
        w.add(Version::Stable, 0, &tally(100, 0, 400_000));
        let st = w.stats(Version::Stable);
        assert!((st.p50_us as f64 - 10_000.0).abs() / 10_000.0 < 0.02, "{st:?}");
        assert!((st.p99_us as f64 - 400_000.0).abs() / 400_000.0 < 0.02, "{st:?}");
        w.advance_to(3);
        let st = w.stats(Version::Stable);
        assert!((st.p50_us as f64 - 400_000.0).abs() / 400_000.0 < 0.02, "{st:?}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn many_small_tallies_in_one_second_stay_bounded() {
        let mut w = Window::new(1, 1);
        w.advance_to(1);
        for i in 0..5_000u64 {
            w.add(Version::Canary, 0, &tally(1, 0, i * 97));
        }
        let slot_len = w.lanes[1].seconds[0].buckets.len();
        assert!(slot_len <= 2 * BUCKETS, "{slot_len}");
        assert_eq!(w.stats(Version::Canary).requests, 5_000);
        w.advance_to(2);
        assert_eq!(w.stats(Version::Canary).requests, 0);
        assert_eq!(w.lanes[1].latency.total(), 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn recent_stats_cover_the_last_seconds_only() {
        let mut w = Window::new(60, 1);
        for s in 1..=20u64 {
            w.advance_to(s);
            let micros = if s > 17 { 500_000 } else { 1_000 };
            w.add(Version::Canary, 0, &tally(10, u64::from(s > 17) * 5, micros));
        }
        let recent = w.recent_stats(Version::Canary, 3);
        assert_eq!((recent.requests, recent.errors), (30, 15));
        assert!(recent.p50_us > 490_000, "{recent:?}");
        assert_eq!(w.recent_stats(Version::Canary, 60), w.stats(Version::Canary));
        assert_eq!(w.stats(Version::Canary).requests, 200);
        let mut fresh = Window::new(10, 1);
        fresh.advance_to(2);
        assert_eq!(fresh.recent_stats(Version::Stable, 5), WindowStats::default());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn classes_are_kept_apart_and_add_up_with_their_outcomes() {
        let mut w = Window::new(3, 3);
        let with_outcomes = |requests: u64, errors: u64, outcome_bits: u8| {
            let mut t = Tally::default();
            for i in 0..requests {
                t.record(&Completed {
                    micros: 2_000,
                    is_error: i < errors,
                    outcomes: outcome_bits,
                    ..Completed::default()
                });
            }
            t
        };
        w.advance_to(1);
        w.add(Version::Canary, 0, &with_outcomes(10, 5, 0b01));
        w.add(Version::Canary, 2, &with_outcomes(90, 0, 0b10));
        w.add(Version::Stable, 2, &with_outcomes(50, 0, 0));
        let api = w.class_stats(Version::Canary, 0, 3);
        assert_eq!((api.requests, api.error_ratio_ppm, api.outcome_ratio_ppm(0)), (10, 500_000, 1_000_000));
        let whole = w.recent_stats(Version::Canary, 3);
        assert_eq!((whole.requests, whole.errors, whole.outcomes[0], whole.outcomes[1]), (100, 5, 10, 90));
        assert_eq!(whole.error_ratio_ppm, 50_000, "the API's 50% is 5% of the service");
        assert_eq!(w.class_stats(Version::Canary, 1, 3), WindowStats::default());
        assert_eq!(w.class_stats(Version::Stable, 2, 3).requests, 50);
        w.advance_to(2);
        w.add(Version::Canary, 2, &with_outcomes(10, 0, 0));
        assert_eq!(w.class_stats(Version::Canary, 2, 1).outcomes[1], 0, "the last second only");
        w.advance_to(4);
        let other = w.class_stats(Version::Canary, 2, 3);
        assert_eq!((other.requests, other.outcomes[1]), (10, 0), "second 1 expired with its outcomes");
        w.clear(Version::Canary);
        assert_eq!(w.recent_stats(Version::Canary, 3), WindowStats::default());
        assert_eq!(w.stats(Version::Stable).requests, 0, "expired too");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unweighed_requests_count_in_full_and_leave_the_gates_figures() {
        // One user's 100 good requests, 90 beyond its weight, beside 20 users' 20 requests
        // of which 6 fail (issue 26, Why 3).
        let mut t = Tally::default();
        for i in 0..100 {
            t.record(&Completed { micros: 1_000, outcomes: 0b1, unweighed: i >= 10, ..Completed::default() });
        }
        for i in 0..20 {
            t.record(&Completed { micros: 1_000, is_error: i < 6, is_slow: i < 2, ..Completed::default() });
        }
        assert_eq!((t.unweighed.requests, t.unweighed.errors, t.unweighed.outcomes[0]), (90, 0, 90));
        let mut w = Window::new(2, 1);
        w.advance_to(1);
        w.add(Version::Canary, 0, &t);
        let all = w.stats(Version::Canary);
        assert_eq!((all.requests, all.errors, all.error_ratio_ppm, all.outcomes[0]), (120, 6, 50_000, 100));
        let gate = all.weighed();
        assert_eq!((gate.requests, gate.errors, gate.slow, gate.outcomes[0]), (30, 6, 2, 10));
        assert_eq!((gate.error_ratio_ppm, gate.unweighed), (200_000, Unweighed::default()));
        assert_eq!(w.recent_stats(Version::Canary, 1).weighed(), gate, "the same from the seconds");
        w.advance_to(3);
        assert_eq!(w.stats(Version::Canary), WindowStats::default(), "expired with the rest");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn time_going_backwards_changes_nothing() {
        let mut w = Window::new(5, 1);
        w.advance_to(10);
        w.add(Version::Stable, 0, &tally(4, 0, 5));
        w.advance_to(3);
        assert_eq!(w.stats(Version::Stable).requests, 4);
    }
}
