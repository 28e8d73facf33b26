//! The fleet report: the cumulative counts an inbound observer's VM attaches to its responses to
//! canary-gate routers, in ORCA's `endpoint-load-metrics` header (text form, named metrics),
//! and the request tag with which a router asks for it.
//!
//! Counts are cumulative since the VM started and keyed by the VM (`cg.vm`) and its pod
//! (`cg.pod`): a router takes the increments between two reports of one VM, so a lost or
//! repeated report loses or repeats nothing. A VM that restarts has a new key.

use crate::measure::window::Users;
use crate::model::Revision;

/// The response header carrying a report (ORCA's per-request load report).
pub const REPORT_HEADER: &str = "endpoint-load-metrics";
/// The request header with which a router asks for a report: its [`Tag`].
pub const TAG_HEADER: &str = "x-canary-gate-fleet";
/// The latency limits a router may ask counts for, in [`Tag::limits_us`] order: the
/// comparison's `slow_ms`, then `max_p95_ms` and `max_p99_ms` of the gate's thresholds.
pub const LIMITS: usize = 3;
/// Report keys are kept below 2^48, so they stay exact in ORCA's doubles.
pub const KEY_MASK: u64 = (1 << 48) - 1;
/// Seconds a users sketch collects before it starts over; a report carries the current and the
/// previous one's, so users of the last 10 to 20 seconds.
pub const USERS_EPOCH_S: u64 = 10;
/// The largest latency limit a tag may ask for (the configuration's largest, 10 minutes).
const MAX_LIMIT_US: u64 = 600_000_000;

/// What a router asks of the observer with its request: its stamp, which the observer's answer
/// echoes so the router knows an observer wrote the response's revision; and, with `report`,
/// the observer's report, the user's sketch bit for the comparison's distinct-users guard, and
/// the latency limits to count requests over (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tag {
    /// The router asks for a report (`gate.fleet`).
    pub report: bool,
    /// The index (0..64) of the request's user in a users sketch, if the router knows the user.
    pub user: Option<u8>,
    /// Latency limits in microseconds, in [`LIMITS`] order; 0 for a limit not asked.
    pub limits_us: [u64; LIMITS],
    /// The router's stamp (below 2^48): random per router VM, never shown to a client.
    pub stamp: Option<u64>,
}

impl Tag {
    /// `l=250000,0,800000`, `;u=17` with a user, `;s=…` with a stamp; `s=…` alone without a
    /// report.
    pub fn encode(&self) -> String {
        let [a, b, c] = self.limits_us;
        let mut out = if self.report { format!("l={a},{b},{c}") } else { String::new() };
        if let (true, Some(u)) = (self.report, self.user) {
            out.push_str(&format!(";u={u}"));
        }
        if let Some(stamp) = self.stamp {
            let sep = if self.report { ";" } else { "" };
            out.push_str(&format!("{sep}s={stamp}"));
        }
        out
    }

    /// The tag in a header value, if it is one [`Tag::encode`] makes.
    pub fn parse(value: &[u8]) -> Option<Tag> {
        let mut c = Cursor(value);
        let mut tag = Tag::default();
        if c.literal(b"l=").is_some() {
            tag.report = true;
            for (i, slot) in tag.limits_us.iter_mut().enumerate() {
                if i > 0 {
                    c.literal(b",")?;
                }
                *slot = c.number().filter(|&us| us <= MAX_LIMIT_US)?;
            }
            if c.literal(b";u=").is_some() {
                tag.user = Some(c.number().filter(|&u| u < 64)? as u8);
            }
            if c.literal(b";s=").is_some() {
                tag.stamp = Some(c.number().filter(|&s| s <= KEY_MASK)?);
            }
        } else {
            c.literal(b"s=")?;
            tag.stamp = Some(c.number().filter(|&s| s <= KEY_MASK)?);
        }
        c.end().then_some(tag)
    }
}

/// The metric an observer's answer carries the router's stamp in.
const STAMP_METRIC: &[u8] = b"named_metrics.cg.stamp=";

/// An observer's `endpoint-load-metrics` for a tagged request: its report, if asked for and
/// known, and the router's stamp.
pub fn answer(report: Option<String>, stamp: Option<u64>) -> Option<String> {
    match (report, stamp) {
        (Some(report), Some(stamp)) => Some(format!("{report}, named_metrics.cg.stamp={stamp}")),
        (None, Some(stamp)) => Some(format!("TEXT named_metrics.cg.stamp={stamp}")),
        (report, None) => report,
    }
}

/// An observer's answer split into its report's text (empty without one) and the stamp it
/// echoes.
pub fn split_answer(value: &[u8]) -> (&[u8], Option<u64>) {
    let Some(at) = value.iter().rposition(|&b| b == b' ') else { return (value, None) };
    let (head, last) = value.split_at(at + 1);
    let stamp = last.strip_prefix(STAMP_METRIC).and_then(|digits| {
        let mut c = Cursor(digits);
        let stamp = c.number();
        stamp.filter(|&s| s <= KEY_MASK && c.end())
    });
    match (stamp, head.strip_suffix(b", ")) {
        (Some(stamp), Some(report)) => (report, Some(stamp)),
        (Some(stamp), None) if head == b"TEXT " => (b"", Some(stamp)),
        _ => (value, None),
    }
}

/// Reads a header value made by this module, byte by byte (no string searching: small code).
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// Skips `expected`, if the value goes on with it.
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(expected)?;
        Some(())
    }

    /// A decimal integer of 1 to 16 digits (below 2^53, so exact as ORCA's double), no sign,
    /// no leading zero: one value has one spelling.
    fn number(&mut self) -> Option<u64> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 16 || (digits > 1 && self.0.first() == Some(&b'0')) {
            return None;
        }
        let (number, rest) = self.0.split_at_checked(digits)?;
        self.0 = rest;
        Some(number.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
    }

    /// A revision, up to `=`.
    fn revision(&mut self) -> Option<Revision> {
        let len = self.0.iter().position(|&b| b == b'=')?;
        let (revision, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Revision::parse(revision)
    }

    fn end(&self) -> bool {
        self.0.is_empty()
    }
}

/// One observer VM's counts since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The observer's pod (random, below 2^48).
    pub pod: u64,
    /// The observer's VM in that pod (random, below 2^48): the key of its cumulative counts.
    pub vm: u64,
    /// The revision the pod serves.
    pub revision: Revision,
    /// Completed requests.
    pub requests: u64,
    /// Of which 5xx (gRPC calls by their status).
    pub errors: u64,
    /// Of which checked against each limit: their router asked for it, in [`LIMITS`] order.
    pub checked: [u64; LIMITS],
    /// Of which slower than the limit their router asked for.
    pub over: [u64; LIMITS],
    /// The users of the errors in the last 10 to 20 seconds.
    pub error_users: Users,
    /// The users of the requests over the first limit in the last 10 to 20 seconds.
    pub slow_users: Users,
}

impl Report {
    /// ORCA's text form: `TEXT named_metrics.cg.pod=…, …, named_metrics.cg.rev.<revision>=1`.
    /// Sketches are written as two 32-bit halves (`eu`, `eu.hi`) so every value is an exact
    /// double.
    pub fn encode(&self) -> String {
        let [c0, c1, c2] = self.checked;
        let [o0, o1, o2] = self.over;
        let half = |users: Users| (users & 0xffff_ffff, users >> 32);
        let (eu, eu_hi) = half(self.error_users);
        let (su, su_hi) = half(self.slow_users);
        format!(
            "TEXT named_metrics.cg.pod={}, named_metrics.cg.vm={}, named_metrics.cg.rq={}, named_metrics.cg.er={}, \
             named_metrics.cg.c0={c0}, named_metrics.cg.c1={c1}, named_metrics.cg.c2={c2}, \
             named_metrics.cg.o0={o0}, named_metrics.cg.o1={o1}, named_metrics.cg.o2={o2}, \
             named_metrics.cg.eu={eu}, named_metrics.cg.eu.hi={eu_hi}, named_metrics.cg.su={su}, \
             named_metrics.cg.su.hi={su_hi}, named_metrics.cg.rev.{}=1",
            self.pod & KEY_MASK,
            self.vm & KEY_MASK,
            self.requests,
            self.errors,
            self.revision.as_str()
        )
    }

    /// The report in a header value, if it is exactly one [`Report::encode`] makes with
    /// consistent counts; anything else (an application's own load report, a forgery that
    /// does not add up) is `None`.
    pub fn parse(value: &[u8]) -> Option<Report> {
        let mut c = Cursor(value);
        c.literal(b"TEXT ")?;
        let mut next = |name: &[u8]| -> Option<u64> {
            if name != b"pod" {
                c.literal(b", ")?;
            }
            c.literal(b"named_metrics.cg.")?;
            c.literal(name)?;
            c.literal(b"=")?;
            c.number()
        };
        let (pod, vm, requests, errors) = (next(b"pod")?, next(b"vm")?, next(b"rq")?, next(b"er")?);
        let checked = [next(b"c0")?, next(b"c1")?, next(b"c2")?];
        let over = [next(b"o0")?, next(b"o1")?, next(b"o2")?];
        let sketch =
            |lo: u64, hi: u64| (lo <= u64::from(u32::MAX) && hi <= u64::from(u32::MAX)).then_some(hi << 32 | lo);
        let error_users = sketch(next(b"eu")?, next(b"eu.hi")?)?;
        let slow_users = sketch(next(b"su")?, next(b"su.hi")?)?;
        c.literal(b", named_metrics.cg.rev.")?;
        let revision = c.revision()?;
        c.literal(b"=1")?;
        let consistent = pod <= KEY_MASK
            && vm <= KEY_MASK
            && errors <= requests
            && checked.iter().zip(&over).all(|(&c, &o)| o <= c && c <= requests)
            && u64::from(error_users.count_ones()) <= errors
            && over.first().is_some_and(|&slow| u64::from(slow_users.count_ones()) <= slow);
        (consistent && c.end()).then_some(Report {
            pod,
            vm,
            revision,
            requests,
            errors,
            checked,
            over,
            error_users,
            slow_users,
        })
    }

    /// Whether `self` is a later report of the same VM than `earlier` (no count went down).
    pub fn follows(&self, earlier: &Report) -> bool {
        self.vm == earlier.vm
            && self.pod == earlier.pod
            && self.revision == earlier.revision
            && self.requests >= earlier.requests
            && self.errors >= earlier.errors
            && self.checked.iter().zip(&earlier.checked).all(|(a, b)| a >= b)
            && self.over.iter().zip(&earlier.over).all(|(a, b)| a >= b)
    }
}

/// An inbound observer VM's cumulative counts, reported to routers (request path: no host
/// call). Memory is fixed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reporter {
    requests: u64,
    errors: u64,
    checked: [u64; LIMITS],
    over: [u64; LIMITS],
    /// Users sketches of the current epoch and the one before: (epoch, errors', slow ones').
    users: [(u64, Users, Users); 2],
}

impl Reporter {
    /// Records one completed request, by a user with sketch bit `user` (0: unknown), checked
    /// against the latency limits its router asked for (0: not asked). Each request is judged
    /// by its own router's limits, so no caller changes how another's requests count.
    pub fn record(&mut self, micros: u64, is_error: bool, user: Users, limits_us: &[u64; LIMITS], now_s: u64) {
        self.requests += 1;
        self.errors += u64::from(is_error);
        let mut slow = false;
        for (i, &limit) in limits_us.iter().enumerate() {
            let (Some(checked), Some(over)) = (self.checked.get_mut(i), self.over.get_mut(i)) else { continue };
            let is_over = limit > 0 && micros > limit;
            *checked += u64::from(limit > 0);
            *over += u64::from(is_over);
            slow |= is_over && i == 0;
        }
        if is_error || slow {
            let epoch = now_s / USERS_EPOCH_S;
            let [current, previous] = &mut self.users;
            if current.0 != epoch {
                *previous = if current.0 + 1 == epoch { *current } else { (0, 0, 0) };
                *current = (epoch, 0, 0);
            }
            if is_error {
                current.1 |= user;
            }
            if slow {
                current.2 |= user;
            }
        }
    }

    /// The report of VM `vm` of pod `pod`, serving `revision`, at `now_s`.
    pub fn report(&self, pod: u64, vm: u64, revision: Revision, now_s: u64) -> Report {
        let epoch = now_s / USERS_EPOCH_S;
        let (mut error_users, mut slow_users) = (0, 0);
        for &(e, errors, slow) in &self.users {
            if e + 1 >= epoch && e <= epoch && e != 0 {
                error_users |= errors;
                slow_users |= slow;
            }
        }
        Report {
            pod: pod & KEY_MASK,
            vm: vm & KEY_MASK,
            revision,
            requests: self.requests,
            errors: self.errors,
            checked: self.checked,
            over: self.over,
            error_users,
            slow_users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn revision() -> Revision {
        Revision::parse(b"5f7d9c8b4").unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_answer_carries_the_stamp_after_the_report() {
        let report = Report {
            pod: 1,
            vm: 2,
            revision: revision(),
            requests: 3,
            errors: 1,
            checked: [0; LIMITS],
            over: [0; LIMITS],
            error_users: 1,
            slow_users: 0,
        };
        let text = report.encode();
        let both = answer(Some(text.clone()), Some(77)).unwrap();
        assert_eq!(split_answer(both.as_bytes()), (text.as_bytes(), Some(77)));
        assert_eq!(Report::parse(split_answer(both.as_bytes()).0), Some(report));
        let alone = answer(None, Some(KEY_MASK)).unwrap();
        assert_eq!(split_answer(alone.as_bytes()), (&b""[..], Some(KEY_MASK)));
        assert_eq!(answer(Some(text.clone()), None), Some(text.clone()));
        assert_eq!(answer(None, None), None);
        assert_eq!(split_answer(text.as_bytes()), (text.as_bytes(), None), "no stamp");
        for forged in [
            "named_metrics.cg.stamp=1",
            "TEXT  named_metrics.cg.stamp=1",
            "TEXT named_metrics.cg.stamp=01",
            "TEXT named_metrics.cg.stamp=1 ",
            "TEXT named_metrics.cg.stamp=281474976710656",
            "TEXT x, named_metrics.cg.stampx=1",
        ] {
            assert_eq!(split_answer(forged.as_bytes()).1, None, "{forged}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn tags_round_trip_and_refuse_anything_else() {
        for tag in [
            Tag { report: true, user: Some(17), limits_us: [250_000, 0, 800_000], stamp: None },
            Tag { report: true, user: None, limits_us: [0; LIMITS], stamp: Some(KEY_MASK) },
            Tag { report: true, user: Some(63), limits_us: [MAX_LIMIT_US; LIMITS], stamp: Some(0) },
            Tag { stamp: Some(12345), ..Tag::default() },
        ] {
            assert_eq!(Tag::parse(tag.encode().as_bytes()), Some(tag), "{}", tag.encode());
        }
        for bad in [
            "",
            "l=1,2",
            "l=1,2,3,4",
            "l=1,2,3;u=64",
            "l=1,2,3;u=",
            "l=-1,2,3",
            "l=+1,2,3",
            "l=1,2,600000001",
            "u=1;l=1,2,3",
            "s=",
            "s=281474976710656",
            "s=1;u=1",
            "l=1,2,3;s=1;u=1",
            "l=1,2,3;s=1;s=2",
            "l=1,2,3;u=1;u=2",
            "l=1, 2,3",
            "l=01,2,3",
        ] {
            assert_eq!(Tag::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reports_round_trip_as_orca_text() {
        let report = Report {
            pod: KEY_MASK,
            vm: 7,
            revision: revision(),
            requests: 1_000,
            errors: 30,
            checked: [900, 1_000, 1_000],
            over: [12, 40, 3],
            error_users: 0x8000_0000_0000_0001,
            slow_users: 0b110,
        };
        let text = report.encode();
        assert!(text.starts_with("TEXT named_metrics.cg.pod=281474976710655, named_metrics.cg.vm=7,"), "{text}");
        assert!(text.ends_with(", named_metrics.cg.rev.5f7d9c8b4=1"), "{text}");
        assert!(text.contains("named_metrics.cg.eu=1, named_metrics.cg.eu.hi=2147483648,"), "{text}");
        assert_eq!(Report::parse(text.as_bytes()), Some(report));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reports_that_do_not_add_up_or_are_not_ours_are_refused() {
        let good = Report {
            pod: 1,
            vm: 2,
            revision: revision(),
            requests: 10,
            errors: 2,
            checked: [10, 10, 0],
            over: [1, 0, 0],
            error_users: 0b11,
            slow_users: 0b1,
        };
        let text = good.encode();
        assert!(Report::parse(text.as_bytes()).is_some());
        for bad in [
            Report { errors: 11, ..good },
            Report { over: [11, 0, 0], checked: [11, 10, 0], ..good },
            Report { over: [1, 0, 1], ..good },
            Report { error_users: 0b111, ..good },
            Report { slow_users: 0b11, ..good },
            Report { pod: KEY_MASK + 1, ..good },
        ] {
            // The encoder masks keys: a forged key above 2^48 is written by hand below.
            if bad.pod > KEY_MASK {
                continue;
            }
            assert_eq!(Report::parse(bad.encode().as_bytes()), None, "{bad:?}");
        }
        let forged = [
            text.replace("TEXT ", "JSON "),
            text.replace("pod=1", "pod=281474976710656"),
            text.replace(", named_metrics.cg.vm", ",named_metrics.cg.vm"),
            format!("{text}, named_metrics.cg.extra=1"),
            text.replace("=1, named_metrics.cg.vm", "=1, cpu_utilization=0.5, named_metrics.cg.vm"),
            text.replace("rev.5f7d9c8b4=1", "rev.a.b=1"),
            text.replace("rev.5f7d9c8b4=1", "rev.5f7d9c8b4=2"),
            text.replace("rq=10", "rq=1e1"),
            text.replace("rq=10", "rq=010"),
            "TEXT cpu_utilization=0.3".to_string(),
            String::new(),
        ];
        for bad in forged {
            assert_eq!(Report::parse(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(Report::parse(b"TEXT named_metrics.cg.pod=\xff"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_reporter_counts_over_the_asked_limits_and_keeps_recent_users() {
        let mut r = Reporter::default();
        let limits = [250_000, 0, 800_000];
        r.record(900_000, false, 1, &[0; LIMITS], 100);
        assert_eq!(r.report(1, 2, revision(), 100).over, [0, 0, 0], "no limit asked");
        r.record(900_000, true, 1 << 3, &limits, 100);
        r.record(300_000, false, 1 << 4, &limits, 100);
        r.record(10_000, true, 1 << 5, &limits, 100);
        let report = r.report(1, 2, revision(), 105);
        assert_eq!((report.requests, report.errors, report.over), (4, 2, [2, 0, 1]));
        assert_eq!(report.checked, [3, 0, 3], "only requests whose router asked");
        assert_eq!((report.error_users, report.slow_users), (1 << 3 | 1 << 5, 1 << 3 | 1 << 4));
        assert_eq!(r.report(1, 2, revision(), 119).error_users, 1 << 3 | 1 << 5, "the epoch before still counts");
        assert_eq!(r.report(1, 2, revision(), 120).error_users, 0, "two epochs later, forgotten");
        r.record(10_000, true, 1 << 6, &limits, 121);
        assert_eq!(r.report(1, 2, revision(), 121).error_users, 1 << 6);
        let later = r.report(1, 2, revision(), 121);
        assert!(later.follows(&report) && !report.follows(&later));
        assert!(!Report { vm: 3, ..later }.follows(&report));
    }
}
