//! Web-vitals beacons: the body a page posts to the `vitals` endpoint, read into reports.
//!
//! A beacon is one JSON object or an array of them, as the npm `web-vitals` library's
//! `onLCP`/`onINP`/`onCLS`/`onFCP`/`onTTFB` callbacks hand them over (`{"name": "LCP", "value":
//! 1834.2, "id": ..., "delta": ...}`; fields other than `name` and `value` are ignored), plus the
//! events `page_view`, `js_error` and `resource_error`. A beacon is taken whole or refused whole.

use crate::config::{parse_json, JsonValue};

/// A web vital with a value, recorded in a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vital {
    /// Largest Contentful Paint.
    Lcp,
    /// Interaction to Next Paint.
    Inp,
    /// Cumulative Layout Shift (unitless).
    Cls,
    /// First Contentful Paint.
    Fcp,
    /// Time to First Byte.
    Ttfb,
}

impl Vital {
    /// Every vital, in lane order.
    pub const ALL: [Vital; 5] = [Vital::Lcp, Vital::Inp, Vital::Cls, Vital::Fcp, Vital::Ttfb];

    /// Its name in a beacon, as web-vitals writes it.
    pub fn name(self) -> &'static str {
        match self {
            Vital::Lcp => "LCP",
            Vital::Inp => "INP",
            Vital::Cls => "CLS",
            Vital::Fcp => "FCP",
            Vital::Ttfb => "TTFB",
        }
    }

    /// Its index in [`Vital::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Times are kept in microseconds (3 decimals of a millisecond), CLS in millionths.
    fn decimals(self) -> u32 {
        match self {
            Vital::Cls => 6,
            _ => 3,
        }
    }

    /// The largest value taken: an hour, or a CLS of 1000.
    fn max_scaled(self) -> u64 {
        match self {
            Vital::Cls => 1_000_000_000,
            _ => 3_600_000_000,
        }
    }
}

/// A page event, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A page was loaded.
    PageView,
    /// An uncaught JS error or unhandled rejection.
    JsError,
    /// A resource (image, script, style) failed to load.
    ResourceError,
}

/// One thing a beacon reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A vital's value: microseconds for times, millionths for CLS.
    Vital(Vital, u64),
    /// An event.
    Event(Event),
}

/// Why a beacon was refused; the `reason` label of `canary_vitals_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a `POST`.
    Method,
    /// Body over `vitals.max_body_bytes`, or more reports than [`MAX_REPORTS`].
    TooLarge,
    /// Not JSON, or not an object or a non-empty array of objects with a string `name`.
    Malformed,
    /// A `name` that is neither a vital nor an event.
    UnknownName,
    /// A vital whose `value` is missing, not a number, negative or beyond any page's.
    BadValue,
    /// Over `vitals.max_per_second` for the proxy.
    RateLimited,
    /// The request would be left to the mesh with no pin: no version to attribute it to.
    NoVersion,
    /// The body never reached the filter, and no beacon's body has reached it yet (Envoy
    /// holds bodies back without `allow_on_headers_stop_iteration`).
    NoBody,
    /// The body had not come [`BODY_WAIT_US`] after the headers, or when a newer beacon needed
    /// its place, though beacon bodies do reach the filter.
    LateBody,
}

impl Rejection {
    /// Every reason, in metric order.
    pub const ALL: [Rejection; 9] = [
        Rejection::Method,
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::UnknownName,
        Rejection::BadValue,
        Rejection::RateLimited,
        Rejection::NoVersion,
        Rejection::NoBody,
        Rejection::LateBody,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Method => "method",
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::UnknownName => "unknown_name",
            Rejection::BadValue => "bad_value",
            Rejection::RateLimited => "rate_limited",
            Rejection::NoVersion => "no_version",
            Rejection::NoBody => "no_body",
            Rejection::LateBody => "late_body",
        }
    }

    /// The status it is answered with (a beacon without a version or whose body the proxy
    /// held back is not the client's fault).
    pub fn status(self) -> u32 {
        match self {
            Rejection::TooLarge => 413,
            Rejection::RateLimited => 429,
            Rejection::LateBody => 408,
            Rejection::NoVersion | Rejection::NoBody => 204,
            _ => 400,
        }
    }

    /// Its index in [`Rejection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How long a beacon's body may follow its headers. `sendBeacon` and `fetch(..., {keepalive:
/// true})` hold the body (at most 64 KiB) in memory and send it with the headers: a body this
/// late has lost packets twice over (TCP retransmits after 1 s, then 2 s more). Envoy would
/// wait until its `stream_idle_timeout` (5 min); Chrome gives up 30 s after the page is gone.
pub const BODY_WAIT_US: u64 = 5_000_000;

/// Beacons awaiting their body, per VM.
pub const MAX_PENDING: usize = 64;

/// Beacons given up for room and awaiting the next tick's answer, per VM: a flood of stalled
/// beacons between two ticks, in 1 KiB.
pub const MAX_GIVEN_UP: usize = 4 * MAX_PENDING;

/// The beacons of one VM awaiting their body, oldest first: (stream id, since when), at most
/// [`MAX_PENDING`]. When full, a new beacon takes the oldest one's place, so stalled clients
/// cannot keep others out; the oldest is given up, to be answered at the next tick (answering
/// another stream from a stream's callback keeps Envoy from handing that stream its body).
/// At most [`MAX_GIVEN_UP`] given up wait for that tick; past them the oldest is forgotten,
/// left to Envoy's timeouts. Memory stays bounded whatever the traffic.
#[derive(Default)]
pub struct Pending {
    waiting: Vec<(u32, u64)>,
    given_up: Vec<u32>,
    /// A beacon body has reached this VM: the proxy hands bodies over, and one that has not
    /// come is late rather than held back.
    pub bodies_seen: bool,
}

impl Pending {
    /// Waits for `id`'s body, making room if full.
    pub fn add(&mut self, id: u32, now_us: u64) {
        if self.waiting.len() >= MAX_PENDING {
            if self.given_up.len() >= MAX_GIVEN_UP {
                take_first(&mut self.given_up);
            }
            if let Some((oldest, _)) = take_first(&mut self.waiting) {
                self.given_up.push(oldest);
            }
        }
        self.waiting.push((id, now_us));
    }

    /// No longer waits for `id`'s body (it came, or the stream ended).
    pub fn remove(&mut self, id: u32) {
        self.waiting.retain(|&(waiting, _)| waiting != id);
        self.given_up.retain(|&given_up| given_up != id);
    }

    /// The next beacon to answer at `now_us`: one given up for room, or the oldest whose body is
    /// overdue; no longer waited for.
    pub fn pop_due(&mut self, now_us: u64) -> Option<u32> {
        if let Some(id) = take_first(&mut self.given_up) {
            return Some(id);
        }
        let &(_, since) = self.waiting.first()?;
        if now_us.saturating_sub(since) < BODY_WAIT_US {
            return None;
        }
        take_first(&mut self.waiting).map(|(id, _)| id)
    }

    /// Why a beacon given up was: its body held back by the proxy, or late.
    pub fn rejection(&self) -> Rejection {
        if self.bodies_seen {
            Rejection::LateBody
        } else {
            Rejection::NoBody
        }
    }
}

fn take_first<T>(items: &mut Vec<T>) -> Option<T> {
    (!items.is_empty()).then(|| items.remove(0))
}

/// The most reports one beacon may carry (a page sends at most a dozen).
pub const MAX_REPORTS: usize = 64;

/// Reads a beacon body into `out` (cleared first); on a refusal `out` is left empty.
pub fn read(body: &[u8], out: &mut Vec<Report>) -> Result<(), Rejection> {
    out.clear();
    let result = read_into(body, out);
    if result.is_err() {
        out.clear();
    }
    result
}

/// What one beacon weighs: a page's worth, whatever it holds. A page sends a beacon per view
/// (and again when hidden), so a beacon keeps at most one page view, one JS error, one resource
/// error and one value per vital: the last, as web-vitals reports a vital again as it changes.
/// One beacon of 50 page views and 14 slow LCPs counts as one page with one slow LCP.
pub fn keep_one_page(reports: &mut Vec<Report>) {
    let kind = |r: &Report| match *r {
        Report::Vital(vital, _) => vital.index(),
        Report::Event(Event::PageView) => Vital::ALL.len(),
        Report::Event(Event::JsError) => Vital::ALL.len() + 1,
        Report::Event(Event::ResourceError) => Vital::ALL.len() + 2,
    };
    let mut seen = 0u16;
    let mut kept = Vec::with_capacity(reports.len().min(Vital::ALL.len() + 3));
    for report in reports.iter().rev() {
        let bit = 1u16 << kind(report);
        if seen & bit == 0 {
            seen |= bit;
            kept.push(*report);
        }
    }
    kept.reverse();
    *reports = kept;
}

fn read_into(body: &[u8], out: &mut Vec<Report>) -> Result<(), Rejection> {
    let value = parse_json(body).map_err(|_| Rejection::Malformed)?;
    match &value {
        JsonValue::Object(_) => out.push(report(&value)?),
        JsonValue::Array(items) if !items.is_empty() => {
            if items.len() > MAX_REPORTS {
                return Err(Rejection::TooLarge);
            }
            for item in items {
                out.push(report(item)?);
            }
        }
        _ => return Err(Rejection::Malformed),
    }
    Ok(())
}

fn report(item: &JsonValue) -> Result<Report, Rejection> {
    let JsonValue::Object(members) = item else { return Err(Rejection::Malformed) };
    let field = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let Some(JsonValue::String(name)) = field("name") else { return Err(Rejection::Malformed) };
    let event = match name.as_str() {
        "page_view" => Some(Event::PageView),
        "js_error" => Some(Event::JsError),
        "resource_error" => Some(Event::ResourceError),
        _ => None,
    };
    if let Some(event) = event {
        return Ok(Report::Event(event));
    }
    let vital = Vital::ALL.into_iter().find(|v| v.name() == name).ok_or(Rejection::UnknownName)?;
    let Some(JsonValue::Number(text)) = field("value") else { return Err(Rejection::BadValue) };
    let value = scaled(text, vital.decimals()).filter(|&v| v <= vital.max_scaled()).ok_or(Rejection::BadValue)?;
    Ok(Report::Vital(vital, value))
}

/// The query parameter that carries a beacon in the URL instead of the body.
pub const QUERY_PARAMETER: &str = "beacon";

/// The beacon in `path`'s query parameter [`QUERY_PARAMETER`], percent-decoded (`+` is a
/// space): `None` without one, `Err` if it is not valid percent-encoding or longer than `max`
/// bytes decoded.
pub fn from_query(path: &[u8], max: usize) -> Option<Result<Vec<u8>, Rejection>> {
    let query = path.splitn(2, |&b| b == b'?').nth(1)?;
    let value = query.split(|&b| b == b'&').find_map(|pair| {
        let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (name == QUERY_PARAMETER.as_bytes()).then(|| value.get(1..).unwrap_or_default())
    })?;
    Some(percent_decode(value, max))
}

fn percent_decode(text: &[u8], max: usize) -> Result<Vec<u8>, Rejection> {
    let mut out = Vec::with_capacity(text.len().min(max));
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        let byte = match b {
            b'%' => {
                let hex = |d: Option<&u8>| d.and_then(|&d| char::from(d).to_digit(16));
                match (hex(bytes.next()), hex(bytes.next())) {
                    (Some(high), Some(low)) => (high * 16 + low) as u8,
                    _ => return Err(Rejection::Malformed),
                }
            }
            b'+' => b' ',
            b => b,
        };
        if out.len() >= max {
            return Err(Rejection::TooLarge);
        }
        out.push(byte);
    }
    Ok(out)
}

/// A JSON number's text times `10^decimals`, rounded half up; `None` if negative or too large.
/// Exact, with no floating point: `scaled("1834.25", 3) == Some(1_834_250)`,
/// `scaled("1.5e-2", 6) == Some(15_000)`.
pub fn scaled(text: &str, decimals: u32) -> Option<u64> {
    if text.starts_with('-') {
        return None;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, exponent(e)?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = || whole.bytes().chain(fraction.bytes()).map(|b| u64::from(b.wrapping_sub(b'0')));
    if digits().any(|d| d > 9) {
        return None;
    }
    // How many of the digits form the integer part of the scaled value.
    let whole_digits = i64::from(exponent) + i64::from(decimals) + whole.len() as i64;
    let count = whole.len() + fraction.len();
    let mut value: u64 = 0;
    for d in digits().take(usize::try_from(whole_digits).unwrap_or(0)) {
        value = value.checked_mul(10)?.checked_add(d)?;
    }
    // Zero stays zero however far it is shifted.
    if whole_digits > count as i64 && value != 0 {
        let zeros = u32::try_from(whole_digits - count as i64).ok().filter(|&z| z <= 19)?;
        value = value.checked_mul(10u64.pow(zeros))?;
    }
    let next = usize::try_from(whole_digits).ok().and_then(|i| digits().nth(i));
    if next.is_some_and(|d| d >= 5) && whole_digits >= 0 {
        value = value.checked_add(1)?;
    }
    Some(value)
}

/// An exponent's decimal text, clamped to ±1,000,000: past that, with at most a body's worth of
/// digits, a value is zero or out of range all the same.
fn exponent(text: &str) -> Option<i32> {
    const CLAMP: i32 = 1_000_000;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().fold(0i32, |n, b| (n * 10 + i32::from(b - b'0')).min(CLAMP));
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_beacon_weighs_one_page_whatever_it_holds() {
        let mut reports = Vec::new();
        let mut body = String::from("[");
        for _ in 0..40 {
            body.push_str(r#"{"name":"page_view"},"#);
        }
        for i in 0..11 {
            body.push_str(&format!(r#"{{"name":"LCP","value":{}}},{{"name":"js_error"}},"#, 60_000 + i));
        }
        body.push_str(r#"{"name":"LCP","value":1200},{"name":"CLS","value":0.5}]"#);
        read(body.as_bytes(), &mut reports).unwrap();
        assert_eq!(reports.len(), MAX_REPORTS);
        keep_one_page(&mut reports);
        assert_eq!(
            reports,
            vec![
                Report::Event(Event::PageView),
                Report::Event(Event::JsError),
                Report::Vital(Vital::Lcp, 1_200_000),
                Report::Vital(Vital::Cls, 500_000),
            ],
            "one of each kind, the last value of a vital"
        );
    }

    fn reports(body: &str) -> Result<Vec<Report>, Rejection> {
        let mut out = vec![Report::Event(Event::PageView)];
        read(body.as_bytes(), &mut out).map(|()| out)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_table_gives_up_its_oldest_beacon_for_a_new_one() {
        let mut pending = Pending::default();
        for id in 0..MAX_PENDING as u32 {
            pending.add(id, 0);
        }
        // A legitimate beacon among 64 stalled ones still gets a place, and the oldest stalled
        // one is answered at the next tick.
        pending.add(1000, 100);
        pending.add(1001, 101);
        assert_eq!((pending.waiting.len(), pending.given_up.as_slice()), (MAX_PENDING, &[0, 1][..]));
        // A given-up beacon whose body comes first is taken after all.
        pending.remove(1);
        assert_eq!(pending.given_up, [0]);
        assert_eq!(pending.pop_due(200), Some(0));
        assert_eq!(pending.pop_due(200), None);
        pending.remove(1000);
        assert_eq!(pending.waiting.len(), MAX_PENDING - 1);
        // A flood between two ticks never grows it: the newest wait, the next newest are given
        // up, older ones are forgotten.
        for id in 2000..3000 {
            pending.add(id, 300);
        }
        assert_eq!((pending.waiting.len(), pending.given_up.len()), (MAX_PENDING, MAX_GIVEN_UP));
        assert!(pending.waiting.iter().all(|&(id, _)| (2936..3000).contains(&id)));
        let due: Vec<u32> = std::iter::from_fn(|| pending.pop_due(400)).collect();
        assert_eq!(due, (2680..2936).collect::<Vec<_>>());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_body_is_waited_for_five_seconds_then_given_up_as_late_or_held_back() {
        let mut pending = Pending::default();
        pending.add(1, 1_000_000);
        pending.add(2, 1_500_000);
        pending.add(3, 2_500_000);
        // A body 1.5 s late is still waited for.
        assert_eq!(pending.pop_due(2_500_000), None);
        assert_eq!(pending.pop_due(1_000_000 + BODY_WAIT_US - 1), None);
        assert_eq!(pending.pop_due(1_500_000 + BODY_WAIT_US), Some(1));
        assert_eq!(pending.pop_due(1_500_000 + BODY_WAIT_US), Some(2));
        assert_eq!(pending.pop_due(1_500_000 + BODY_WAIT_US), None);
        // A clock that went back gives nothing up early.
        assert_eq!(pending.pop_due(0), None);
        // No body seen yet: the proxy may be holding them back. Once one came, the rest are late.
        assert_eq!(pending.rejection(), Rejection::NoBody);
        pending.bodies_seen = true;
        assert_eq!(pending.rejection(), Rejection::LateBody);
        assert_eq!((Rejection::LateBody.as_str(), Rejection::LateBody.status()), ("late_body", 408));
        assert!(Rejection::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn scales_decimal_text_exactly() {
        assert_eq!(scaled("1834.25", 3), Some(1_834_250));
        assert_eq!(scaled("0", 3), Some(0));
        assert_eq!(scaled("12", 3), Some(12_000));
        assert_eq!(scaled("0.1", 6), Some(100_000));
        assert_eq!(scaled("0.10423452345", 6), Some(104_235));
        assert_eq!(scaled("0.0000004", 6), Some(0));
        assert_eq!(scaled("0.0000005", 6), Some(1));
        assert_eq!(scaled("1.5e-2", 6), Some(15_000));
        assert_eq!(scaled("1E+2", 3), Some(100_000));
        assert_eq!(scaled("2.5e3", 3), Some(2_500_000));
        assert_eq!(scaled("1e-7", 6), Some(0));
        assert_eq!(scaled("5e-7", 6), Some(1));
        assert_eq!(scaled("1e-400", 6), Some(0));
        assert_eq!(scaled("123.4999", 0), Some(123));
        assert_eq!(scaled("99.5", 0), Some(100));
        assert_eq!(scaled("-1", 3), None);
        assert_eq!(scaled("1e400", 3), None);
        assert_eq!(scaled("0e22", 3), Some(0));
        assert_eq!(scaled("0.000e400", 3), Some(0));
        assert_eq!(scaled("0e99999999999", 3), Some(0));
        assert_eq!(scaled("1e-99999999999", 3), Some(0));
        assert_eq!(scaled("1e", 3), None);
        assert_eq!(scaled("1e+", 3), None);
        assert_eq!(scaled("18446744073709551616", 0), None);
        assert_eq!(scaled("1e99999999999", 3), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reads_what_web_vitals_sends() {
        let lcp = r#"{"name":"LCP","value":1834.2999999523163,"rating":"good","delta":1834.2999999523163,
            "id":"v4-1700000000000-1234567890123","navigationType":"navigate","entries":[{"startTime":1834.3}]}"#;
        assert_eq!(reports(lcp), Ok(vec![Report::Vital(Vital::Lcp, 1_834_300)]));
        let batch = r#"[{"name":"CLS","value":0.1523},{"name":"INP","value":312},{"name":"FCP","value":420.5},
            {"name":"TTFB","value":12.1},{"name":"page_view"},{"name":"js_error","message":"x"},
            {"name":"resource_error"}]"#;
        assert_eq!(
            reports(batch),
            Ok(vec![
                Report::Vital(Vital::Cls, 152_300),
                Report::Vital(Vital::Inp, 312_000),
                Report::Vital(Vital::Fcp, 420_500),
                Report::Vital(Vital::Ttfb, 12_100),
                Report::Event(Event::PageView),
                Report::Event(Event::JsError),
                Report::Event(Event::ResourceError),
            ])
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_anything_else_whole() {
        let cases = [
            ("", Rejection::Malformed),
            ("{", Rejection::Malformed),
            ("[]", Rejection::Malformed),
            ("42", Rejection::Malformed),
            (r#""LCP""#, Rejection::Malformed),
            (r#"[{"name":"LCP","value":1},7]"#, Rejection::Malformed),
            (r#"{"value":1}"#, Rejection::Malformed),
            (r#"{"name":3,"value":1}"#, Rejection::Malformed),
            (r#"{"name":"lcp","value":1}"#, Rejection::UnknownName),
            (r#"[{"name":"LCP","value":1},{"name":"CPU","value":1}]"#, Rejection::UnknownName),
            (r#"{"name":"LCP"}"#, Rejection::BadValue),
            (r#"{"name":"LCP","value":null}"#, Rejection::BadValue),
            (r#"{"name":"LCP","value":"12"}"#, Rejection::BadValue),
            (r#"{"name":"LCP","value":-3}"#, Rejection::BadValue),
            (r#"{"name":"INP","value":3600001}"#, Rejection::BadValue),
            (r#"{"name":"CLS","value":1e308}"#, Rejection::BadValue),
            (r#"{"name":"LCP","value":NaN}"#, Rejection::Malformed),
            (r#"{"name":"LCP","value":1}{"name":"LCP","value":1}"#, Rejection::Malformed),
        ];
        for (body, expected) in cases {
            assert_eq!(reports(body), Err(expected), "{body}");
        }
        let many = format!("[{}]", vec![r#"{"name":"page_view"}"#; MAX_REPORTS + 1].join(","));
        assert_eq!(reports(&many), Err(Rejection::TooLarge));
        let most = format!("[{}]", vec![r#"{"name":"page_view"}"#; MAX_REPORTS].join(","));
        assert_eq!(reports(&most).map(|r| r.len()), Ok(MAX_REPORTS));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reads_a_beacon_from_the_query() {
        let path = b"/__canary/vitals?x=1&beacon=%5B%7B%22name%22%3A%22LCP%22%2C%22value%22%3A12%7D%5D&y";
        assert_eq!(from_query(path, 4096), Some(Ok(br#"[{"name":"LCP","value":12}]"#.to_vec())));
        assert_eq!(from_query(b"/v?beacon=a+b%20c", 4096), Some(Ok(b"a b c".to_vec())));
        assert_eq!(from_query(b"/v?beacon=", 4096), Some(Ok(Vec::new())));
        assert_eq!(from_query(b"/v?beacons=1&xbeacon=2", 4096), None);
        assert_eq!(from_query(b"/v", 4096), None);
        assert_eq!(from_query(b"/v?beacon=%4", 4096), Some(Err(Rejection::Malformed)));
        assert_eq!(from_query(b"/v?beacon=%zz", 4096), Some(Err(Rejection::Malformed)));
        assert_eq!(from_query(b"/v?beacon=abcdef", 5), Some(Err(Rejection::TooLarge)));
        assert_eq!(from_query(b"/v?beacon=abcde", 5), Some(Ok(b"abcde".to_vec())));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn never_panics_on_bytes() {
        let mut out = Vec::new();
        for body in [&b"\xff\xfe"[..], b"[[[[[[[[[[", b"{\"name\":\"LCP\",\"value\":1e-99999999999}", b"\0"] {
            let _ = read(body, &mut out);
        }
        out.clear();
        assert_eq!(read(b"{\"name\":\"LCP\",\"value\":1e-99999999999}", &mut out), Ok(()));
        assert_eq!(out, [Report::Vital(Vital::Lcp, 0)]);
    }
}
