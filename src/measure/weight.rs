//! Bounded weight per user in the gate: however fast one user (a bucket, or the testers'
//! overrides together) sends requests, the gate weighs at most [`REQUESTS_PER_S`] of them a
//! second (after a burst of [`REQUESTS_BURST`]) and at most [`BAD_PER_S`] bad ones (5xx, or
//! slower than the comparison's `slow_ms`; after a burst of [`BAD_BURST`]), per worker VM.
//! A request beyond that is still recorded in full (counters, histograms, window gauges) and
//! also counted as *unweighed*, which the gate's counts leave out
//! ([`super::window::Unweighed`]).
//!
//! Users share a fixed table of token buckets ([`SLOTS`]): each user has two candidate slots
//! (two hashes) and keeps the one it holds; a slot idle for [`IDLE_MS`] (its tokens full again)
//! goes to the next user. Memory is fixed; two users share a budget only when both slots of
//! the newcomer are held by users busy within the last [`IDLE_MS`].

/// Token buckets in the table (12 bytes each), allocated on a router's first weighed request.
pub const SLOTS: usize = 4096;
/// Requests a user's tokens refill per second.
pub const REQUESTS_PER_S: u32 = 16;
/// Requests a rested user may send at once (a page load).
pub const REQUESTS_BURST: u32 = 32;
/// Bad requests a user's tokens refill per second.
pub const BAD_PER_S: u32 = 1;
/// Bad requests a rested user may have at once.
pub const BAD_BURST: u32 = 2;
/// A slot unused this long has refilled both budgets: another user may take it.
pub const IDLE_MS: u32 = 2_000;

/// One slot: its user's tag, and its tokens in thousandths as of `at_ms`.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tag: u16,
    requests: u16,
    bad: u16,
    at_ms: u32,
}

/// The table of one router VM.
#[derive(Debug, Default)]
pub struct Weights {
    slots: Option<Box<[Slot; SLOTS]>>,
}

impl Weights {
    /// Whether the gate weighs a request of `user` completing at `now_ms` (`bad`: a 5xx, or
    /// slower than the latency test's limit); takes its tokens if so.
    pub fn admit(&mut self, user: u64, now_ms: u64, bad: bool) -> bool {
        let slots = self.slots.get_or_insert_with(|| Box::new([Slot::default(); SLOTS]));
        let hash = user.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (first, second) = ((hash >> 52) as usize & (SLOTS - 1), (hash >> 20) as usize & (SLOTS - 1));
        // Never 0, the tag of a slot no user took.
        let tag = (hash as u16) | 1;
        // Milliseconds wrap u32 every 49 days: a wrap only refills a slot early.
        let now = now_ms as u32;
        let slot_at = |i: usize| slots.get(i).copied().unwrap_or_default();
        let (a, b) = (slot_at(first), slot_at(second));
        let idle = |s: Slot| s.tag == 0 || now.wrapping_sub(s.at_ms) >= IDLE_MS;
        let (index, take) = if a.tag == tag {
            (first, false)
        } else if b.tag == tag {
            (second, false)
        } else if idle(a) {
            (first, true)
        } else if idle(b) {
            (second, true)
        } else {
            // Both held by busy users: share the budget of the one that spent less.
            (if b.requests > a.requests { second } else { first }, false)
        };
        let Some(slot) = slots.get_mut(index) else { return true };
        if take {
            *slot = Slot { tag, requests: 0, bad: 0, at_ms: now.wrapping_sub(IDLE_MS) };
        }
        // Thousandths of a token: elapsed ms × tokens per second, up to the burst.
        let elapsed = now.wrapping_sub(slot.at_ms).min(IDLE_MS);
        let refill = |tokens: u16, per_s: u32, burst: u32| (u32::from(tokens) + elapsed * per_s).min(burst * 1000);
        let requests = refill(slot.requests, REQUESTS_PER_S, REQUESTS_BURST);
        let bad_tokens = refill(slot.bad, BAD_PER_S, BAD_BURST);
        let admitted = requests >= 1000 && (!bad || bad_tokens >= 1000);
        let spend = |tokens: u32, spent: bool| tokens.saturating_sub(if spent { 1000 } else { 0 }) as u16;
        slot.at_ms = now;
        slot.requests = spend(requests, admitted);
        slot.bad = spend(bad_tokens, admitted && bad);
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// What the gate weighs of `per_s` requests a second of `user` for `seconds` from
    /// `start_ms`, every `bad_every`-th bad (0: none).
    fn weighed(w: &mut Weights, user: u64, start_ms: u64, per_s: u64, seconds: u64, bad_every: u64) -> (u64, u64) {
        let (mut requests, mut bad) = (0, 0);
        for i in 0..per_s * seconds {
            let is_bad = bad_every > 0 && i % bad_every == 0;
            if w.admit(user, start_ms + i * 1000 / per_s, is_bad) {
                requests += 1;
                bad += u64::from(is_bad);
            }
        }
        (requests, bad)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn one_user_weighs_at_most_its_rate_whatever_it_sends() {
        let mut w = Weights::default();
        // 150 good requests a second for 10 s (issue 26, Why 3): the burst, then 16 a second.
        let (requests, _) = weighed(&mut w, 7, 10_000, 150, 10, 0);
        assert!((32 + 16 * 9..=32 + 16 * 10).contains(&requests), "{requests}");
        // 1,000 a second weigh no more.
        let (requests, _) = weighed(&mut w, 9, 10_000, 1_000, 10, 0);
        assert!((32 + 16 * 9..=32 + 16 * 10).contains(&requests), "{requests}");
        // Every request failing, 100 a second for 10 s: 2, then 1 a second.
        let (requests, bad) = weighed(&mut w, 8, 10_000, 100, 10, 1);
        assert_eq!(requests, bad);
        assert!((2 + 9..=2 + 10).contains(&bad), "{bad}");
        // The testers' overrides are one user like any other.
        let (requests, bad) = weighed(&mut w, u64::MAX, 10_000, 100, 1, 1);
        assert_eq!((requests, bad), (2, 2));
    }

    /// Requests the gate leaves out when every bucket of 10,000 loads a page of `page`
    /// requests at once (the fourth bad) every 10 s, `per_s` users a second.
    fn missed(per_s: u64, page: u64) -> u64 {
        let mut w = Weights::default();
        let mut missed = 0;
        for load in 0..3u64 {
            for user in 0..10_000u64 {
                for i in 0..page {
                    missed += u64::from(!w.admit(user, 100_000 + load * 10_000 + user * 1000 / per_s, i == 3));
                }
            }
        }
        missed
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn users_at_a_human_pace_are_weighed_in_full() {
        assert_eq!(missed(2_000, 10), 0, "4,000 users within 2 s, each its own budget or a quiet share");
        // Pages of 30 where two users share a slot's budget: a few requests of 900,000.
        assert!(missed(1_000, 30) < 900, "{}", missed(1_000, 30));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn users_are_kept_apart_and_a_rested_one_gets_its_burst_back() {
        let mut w = Weights::default();
        let (requests, _) = weighed(&mut w, 1, 10_000, 1_000, 1, 0);
        assert!((32 + 15..=32 + 16).contains(&requests), "{requests}");
        // Another user at the same moment still has its whole burst, and no more.
        assert!((0..32).all(|_| w.admit(2, 11_000, false)));
        assert!(!w.admit(2, 11_000, false));
        // Rested for 2 s: the whole burst again.
        assert!((0..32).all(|_| w.admit(1, 13_000, false)));
    }
}
