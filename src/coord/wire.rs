//! The message a worker VM ships every evaluation period to the VM that merges windows: the
//! gate identity the tallies were recorded under, the number of route classes, then each
//! non-empty lane's tally (version and class) as LEB128 varints: counts, users sketches,
//! outcome counts, the unweighed requests' counts and outcomes, and sparse histogram buckets. Decoding validates every field and answers
//! `None` to anything malformed; it never panics and allocates nothing unbounded.

use crate::config::{MAX_CLASSES, MAX_OUTCOMES};
use crate::measure::histogram::BUCKETS;
use crate::measure::window::{Outcomes, Tally};

/// Format tag of the message; bumped on any layout change.
const FORMAT: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    /// A LEB128 value; `None` for truncated or over-long encodings (bits past 64).
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Outcome counts as [`put_outcomes`] writes them, each at most `requests`.
    fn outcomes(&mut self, outcomes: &mut Outcomes, requests: u64) -> Option<()> {
        let n = usize::try_from(self.varint()?).ok().filter(|&n| n <= MAX_OUTCOMES)?;
        for slot in outcomes.iter_mut().take(n) {
            *slot = self.varint().filter(|&c| c <= requests)?;
        }
        Some(())
    }
}

/// Lanes a message may carry: both versions of every class a configuration may have.
pub const MAX_LANES: usize = 2 * (MAX_CLASSES + 1);

/// Encodes the non-empty tallies of `lanes` (indexed by [`crate::measure::window::lane`]),
/// recorded under the gate `identity` with `classes` route classes.
pub fn encode(lanes: &[Tally], classes: usize, identity: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT);
    out.extend_from_slice(&identity.to_le_bytes());
    put_varint(&mut out, classes as u64);
    let used: Vec<(usize, &Tally)> = lanes.iter().enumerate().filter(|(_, t)| !t.is_empty()).collect();
    put_varint(&mut out, used.len() as u64);
    for (lane, t) in used {
        put_varint(&mut out, lane as u64);
        put_varint(&mut out, t.requests);
        put_varint(&mut out, t.errors);
        put_varint(&mut out, t.slow);
        put_varint(&mut out, t.error_users);
        put_varint(&mut out, t.slow_users);
        put_outcomes(&mut out, &t.outcomes);
        let u = &t.unweighed;
        for v in [u.requests, u.errors, u.slow] {
            put_varint(&mut out, v);
        }
        put_outcomes(&mut out, &u.outcomes);
        let mut previous = 0usize;
        let nonzero: Vec<(usize, u32)> = t.latency.nonzero().collect();
        put_varint(&mut out, nonzero.len() as u64);
        for (i, c) in nonzero {
            // Delta-coded indexes: sorted, so small.
            put_varint(&mut out, (i - previous) as u64);
            put_varint(&mut out, u64::from(c));
            previous = i;
        }
    }
    out
}

/// Outcome counts up to the last non-zero one, after their number.
fn put_outcomes(out: &mut Vec<u8>, outcomes: &Outcomes) {
    let n = outcomes.iter().rposition(|&c| c > 0).map_or(0, |last| last + 1);
    put_varint(out, n as u64);
    for &c in outcomes.iter().take(n) {
        put_varint(out, c);
    }
}

/// What a valid message says before its tallies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The gate identity the tallies were recorded under.
    pub identity: u64,
    /// The number of route classes of the configuration that recorded them.
    pub classes: usize,
}

/// Decodes a message made by [`encode`], handing each lane's tally to `each` with the message's
/// header (through `scratch`), only once the whole message has proved valid. `None`, having
/// handed nothing, if the bytes are not a valid message.
pub fn decode(bytes: &[u8], scratch: &mut Tally, mut each: impl FnMut(&Header, usize, &Tally)) -> Option<Header> {
    read(bytes, scratch, &mut |_, _, _| ())?;
    read(bytes, scratch, &mut each)
}

// One copy for both passes (`dyn`).
fn read(bytes: &[u8], t: &mut Tally, each: &mut dyn FnMut(&Header, usize, &Tally)) -> Option<Header> {
    let (&FORMAT, rest) = bytes.split_first()? else { return None };
    let (identity, rest) = rest.split_first_chunk::<8>()?;
    let mut r = Reader { bytes: rest };
    let classes = usize::try_from(r.varint()?).ok().filter(|&n| (1..=MAX_CLASSES + 1).contains(&n))?;
    let header = Header { identity: u64::from_le_bytes(*identity), classes };
    let lanes = usize::try_from(r.varint()?).ok().filter(|&n| n <= MAX_LANES)?;
    let mut next_lane = 0usize;
    for _ in 0..lanes {
        let lane = usize::try_from(r.varint()?).ok().filter(|&l| l >= next_lane && l < 2 * classes)?;
        next_lane = lane + 1;
        t.clear();
        let requests = r.varint()?;
        let errors = r.varint()?;
        let slow = r.varint()?;
        // Each error or slow request sets one bit of its users' sketch.
        let error_users = r.varint().filter(|u| u64::from(u.count_ones()) <= errors)?;
        let slow_users = r.varint().filter(|u| u64::from(u.count_ones()) <= slow)?;
        r.outcomes(&mut t.outcomes, requests)?;
        let u = &mut t.unweighed;
        u.requests = r.varint().filter(|&c| c <= requests)?;
        u.errors = r.varint().filter(|&c| c <= errors.min(u.requests))?;
        u.slow = r.varint().filter(|&c| c <= slow.min(u.requests))?;
        r.outcomes(&mut u.outcomes, u.requests)?;
        let entries = usize::try_from(r.varint()?).ok().filter(|&n| n <= BUCKETS)?;
        let mut index = 0usize;
        let mut latency_total = 0u64;
        for k in 0..entries {
            let delta = usize::try_from(r.varint()?).ok()?;
            if k > 0 && delta == 0 {
                return None;
            }
            index = index.checked_add(delta).filter(|&i| i < BUCKETS)?;
            let count = u32::try_from(r.varint()?).ok().filter(|&c| c > 0)?;
            t.latency.add(index, count);
            latency_total += u64::from(count);
        }
        if requests == 0 || errors > requests || slow > requests || latency_total != requests {
            return None;
        }
        t.requests = requests;
        t.errors = errors;
        t.slow = slow;
        t.error_users = error_users;
        t.slow_users = slow_users;
        each(&header, lane, t);
    }
    t.clear();
    r.bytes.is_empty().then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::window::{user_bit, Completed};
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Lanes of two classes: the first class's stable and canary, the second's canary.
    fn sample() -> Vec<Tally> {
        let mut t: Vec<Tally> = (0..4).map(|_| Tally::default()).collect();
        for i in 0..1_000u64 {
            let lane = [0, 1, 3][(i % 3) as usize];
            t[lane].record(&Completed {
                micros: i * 1_009 % 3_000_000,
                is_error: i % 7 == 0,
                is_slow: i % 13 == 0,
                outcomes: (i % 5 == 0) as u8 | u8::from(i % 11 == 0) << 2,
                user: user_bit(i % 17),
                unweighed: i % 4 == 0,
            });
        }
        t
    }

    /// Every lane a message hands over, or `None`.
    fn decoded(bytes: &[u8]) -> Option<(Header, Vec<(usize, Tally)>)> {
        let mut got = Vec::new();
        let header = decode(bytes, &mut Tally::default(), |_, lane, t| got.push((lane, t.clone())));
        match header {
            Some(h) => Some((h, got)),
            None => {
                assert!(got.is_empty(), "a refused message handed nothing over");
                None
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn varints_cover_u64_and_refuse_overlong_encodings() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Reader { bytes: &out }.varint(), Some(v));
        }
        let overlong = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(Reader { bytes: &overlong }.varint(), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn round_trips() {
        let t = sample();
        let (header, lanes) = decoded(&encode(&t, 2, 7)).unwrap();
        assert_eq!(header, Header { identity: 7, classes: 2 });
        let expected: Vec<(usize, Tally)> = [0, 1, 3].iter().map(|&l| (l, t[l].clone())).collect();
        assert_eq!(lanes, expected);
        assert!(lanes[0].1.outcomes[0] > 0 && lanes[0].1.outcomes[2] > 0 && lanes[0].1.outcomes[1] == 0);
        let u = lanes[0].1.unweighed;
        assert!(u.requests > 0 && u.errors > 0 && u.slow > 0 && u.outcomes[0] > 0 && u.outcomes[2] > 0, "{u:?}");
        let empty = vec![Tally::default(); 2];
        assert_eq!(decoded(&encode(&empty, 1, u64::MAX)), Some((Header { identity: u64::MAX, classes: 1 }, vec![])));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rejects_every_truncation_and_corruption() {
        let bytes = encode(&sample(), 2, 3);
        for len in 0..bytes.len() {
            assert_eq!(decoded(&bytes[..len]), None, "truncated at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decoded(&longer), None);
        let mut foreign = bytes.clone();
        foreign[0] = FORMAT - 1;
        assert_eq!(decoded(&foreign), None, "another format");
        let message = |values: &[u64]| {
            let mut out = vec![FORMAT];
            out.extend_from_slice(&[0; 8]);
            for &v in values {
                put_varint(&mut out, v);
            }
            out
        };
        // classes, lanes, then per lane: lane, requests, errors, slow, error users, slow
        // users, outcomes (n, counts), unweighed requests, errors, slow, outcomes (n,
        // counts), buckets (n, delta/count pairs).
        let one = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(decoded(&message(&one)).map(|(h, l)| (h.classes, l.len())), Some((1, 1)), "the valid twin");
        let weighed_twin = [1, 1, 0, 2, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 2];
        let (_, lanes) = decoded(&message(&weighed_twin)).unwrap();
        assert_eq!(
            (lanes[0].1.unweighed.requests, lanes[0].1.unweighed.errors, lanes[0].1.unweighed.outcomes[0]),
            (1, 1, 1)
        );
        for (bad, why) in [
            (vec![0, 0], "no class"),
            (vec![MAX_CLASSES as u64 + 2, 0], "too many classes"),
            (vec![1, MAX_LANES as u64 + 1], "too many lanes"),
            (vec![1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1], "lane of no class"),
            (
                vec![2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1],
                "lanes out of order",
            ),
            (vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "an empty lane"),
            (vec![1, 1, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1], "errors > requests"),
            (vec![1, 1, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1], "slow > requests"),
            (vec![1, 1, 0, 2, 1, 0, 3, 0, 0, 0, 0, 0, 0, 1, 0, 2], "more error users than errors"),
            (vec![1, 1, 0, 2, 0, 1, 0, 5, 0, 0, 0, 0, 0, 1, 0, 2], "more slow users than slow requests"),
            (vec![1, 1, 0, 1, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0, 1], "an outcome > requests"),
            (vec![1, 1, 0, 1, 0, 0, 0, 0, MAX_OUTCOMES as u64 + 1], "too many outcomes"),
            (vec![1, 1, 0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 1], "unweighed > requests"),
            (vec![1, 1, 0, 2, 1, 0, 1, 0, 0, 2, 2, 0, 0, 1, 0, 2], "unweighed errors > errors"),
            (vec![1, 1, 0, 2, 0, 2, 0, 0, 0, 1, 0, 2, 0, 1, 0, 2], "unweighed slow > unweighed requests"),
            (vec![1, 1, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 1, 0, 2], "an unweighed outcome > unweighed requests"),
            (vec![1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, BUCKETS as u64, 1], "bucket out of range"),
            (vec![1, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1], "bucket counts not the requests"),
        ] {
            assert_eq!(decoded(&message(&bad)), None, "{why}");
        }
    }
}
