//! Helpers for the bad-input, failure and soak tests: a raw HTTP/1.1 client that sends any
//! header bytes (repeated headers, control bytes, values past Envoy's limits), the decision the
//! host's own routing logic expects for the headers the filter sees, checks of Envoy's log and
//! Wasm VM health, and phased load that follows every user's version across live changes.

use crate::client::Client;
use crate::traffic::served_as_routed;
use crate::{Envoy, VersionStats};
use canary_gate::route::bucket::{BucketRng, Bucketer};
use canary_gate::route::cookie;
use canary_gate::route::{Decision, RequestHeaders, Router};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What came back to a [`raw_get`].
#[derive(Debug, Clone)]
pub struct RawReply {
    /// HTTP status; 0 if no HTTP response arrived.
    pub status: u16,
    /// Response headers in order, lower-case names, raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body as received.
    pub body: Vec<u8>,
    /// Why there is no response, if there is none.
    pub error: Option<String>,
}

impl RawReply {
    /// The first value of response header `name`, lossily decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of response header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }

    /// `x-canary-version`.
    pub fn version(&self) -> Option<String> {
        self.header("x-canary-version")
    }

    /// `x-canary-reason`.
    pub fn reason(&self) -> Option<String> {
        self.header("x-canary-reason")
    }

    /// `x-served-by` (set by the test backend only).
    pub fn served_by(&self) -> Option<String> {
        self.header("x-served-by")
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A request header as the upstream received it (from the backend's echo; the last value
    /// of a repeated header).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null);
        json["headers"][name].as_str().map(str::to_string)
    }

    /// Whether the backend of the version canary-gate named answered.
    pub fn served_as_routed(&self) -> bool {
        self.status != 0 && self.served_by().is_some() && self.served_by() == self.version()
    }
}

/// Sends `GET path` to 127.0.0.1:`port` over a new connection with exactly these header lines
/// (after `host`), raw bytes as given, then `connection: close`; reads the whole answer.
pub fn raw_get(port: u16, path: &str, headers: &[(&[u8], &[u8])]) -> RawReply {
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name);
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"connection: close\r\n\r\n");
    let fail = |error: String| RawReply { status: 0, headers: vec![], body: vec![], error: Some(error) };
    let mut stream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return fail(format!("connect: {e}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(15)));
    // Envoy may answer (431) and close before it read everything: a failed write is not yet
    // a failed request, the answer decides.
    let write_error = stream.write_all(&request).err();
    let mut out = Vec::new();
    let read_error = stream.read_to_end(&mut out).err();
    parse_response(&out).unwrap_or_else(|| {
        fail(format!("no HTTP response ({} bytes; write: {write_error:?}; read: {read_error:?})", out.len()))
    })
}

fn parse_response(raw: &[u8]) -> Option<RawReply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, body) = (raw.get(..end)?, raw.get(end + 4..)?.to_vec());
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = std::str::from_utf8(lines.next()?).ok()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = line.split_at(colon);
            Some((String::from_utf8_lossy(name).trim().to_ascii_lowercase(), value.get(1..)?.trim_ascii().to_vec()))
        })
        .collect();
    Some(RawReply { status, headers, body, error: None })
}

/// Request headers as the filter reads them through Envoy's header map on an HTTP/1.1
/// listener: values without surrounding spaces or tabs; Envoy keeps repeated HTTP/1.1 lines
/// apart (`cookie` included) and proxy-wasm's `get_header_map_value` returns the first, so the
/// filter reads every line where the rule needs them (cookies, an override).
pub struct EnvoyView(Vec<(String, Vec<u8>)>);

impl EnvoyView {
    /// The view of the given request header lines.
    pub fn new(headers: &[(&[u8], &[u8])]) -> EnvoyView {
        let trim = |v: &[u8]| {
            let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
            let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
            v.get(start..end).unwrap_or_default().to_vec()
        };
        EnvoyView(headers.iter().map(|(k, v)| (String::from_utf8_lossy(k).to_ascii_lowercase(), trim(v))).collect())
    }
}

impl RequestHeaders for EnvoyView {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        // Envoy's single-value read: the first line.
        self.get_all(name).into_iter().next()
    }

    fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

/// The decision the host's routing logic takes for these request header lines (gate not
/// tripped). For reason `random` the version depends on the proxy's random bucket.
pub fn expected_decision(router: &Router, headers: &[(&[u8], &[u8])]) -> Decision {
    router.decide(&EnvoyView::new(headers), &mut BucketRng::new(0), false)
}

/// The bucket of a `canary_bucket=N` pair (any cookie name), if canonical.
pub fn bucket_of_pair(pair: &str) -> Option<u16> {
    pair.split_once('=').and_then(|(_, v)| cookie::parse_bucket(v.as_bytes()))
}

/// Counters telling whether Envoy re-created or reloaded a Wasm VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmHealth {
    /// `wasm.envoy.wasm.runtime.v8.created`.
    pub created: u64,
    /// `wasm.envoy.wasm.runtime.v8.active`.
    pub active: u64,
    /// `wasm.canary-gate.vm_reload`.
    pub reload: u64,
    /// `wasm.canary-gate.vm_reload_success`.
    pub reload_success: u64,
    /// `wasm.canary-gate.vm_reload_failure`.
    pub reload_failure: u64,
    /// `wasm.canary-gate.vm_reload_backoff`.
    pub reload_backoff: u64,
}

impl VmHealth {
    /// Sum of the `vm_reload*` counters.
    pub fn reloads(&self) -> u64 {
        self.reload + self.reload_success + self.reload_failure + self.reload_backoff
    }
}

impl Envoy {
    /// The Wasm VM counters.
    pub fn vm_health(&self) -> VmHealth {
        let reload = |s: &str| self.stat(&format!("wasm.canary-gate.{s}"));
        VmHealth {
            created: self.stat("wasm.envoy.wasm.runtime.v8.created"),
            active: self.stat("wasm.envoy.wasm.runtime.v8.active"),
            reload: reload("vm_reload"),
            reload_success: reload("vm_reload_success"),
            reload_failure: reload("vm_reload_failure"),
            reload_backoff: reload("vm_reload_backoff"),
        }
    }

    /// `canary_vm_memory_bytes`: the largest linear memory of any canary-gate VM.
    pub fn vm_memory_bytes(&self) -> u64 {
        self.stat("wasmcustom.canary_vm_memory_bytes")
    }

    /// Waits until `canary_requests_total` of stable plus canary reaches `expected` (requests
    /// are counted when their stream ends, just after the client has the answer), then
    /// returns both versions' stats; returns what it has after `timeout`.
    pub fn counted(&self, service: &str, expected: u64, timeout: Duration) -> (VersionStats, VersionStats) {
        let deadline = Instant::now() + timeout;
        loop {
            let (stable, canary) = (self.version_stats(service, "stable"), self.version_stats(service, "canary"));
            if stable.requests_total + canary.requests_total >= expected || Instant::now() > deadline {
                // Anything still in flight would land now: read once more after a pause.
                thread::sleep(Duration::from_millis(300));
                return (self.version_stats(service, "stable"), self.version_stats(service, "canary"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Lines of an Envoy log at `level` (`warning`, `error`, `critical`, ...), with their
/// component (`wasm`, `main`, ...).
pub fn log_lines<'a>(log: &'a str, level: &str) -> Vec<(&'a str, &'a str)> {
    log.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(5, ']');
            let (_time, _thread) = (fields.next()?, fields.next()?);
            let line_level = fields.next()?.strip_prefix('[')?;
            let component = fields.next()?.strip_prefix('[')?;
            (line_level == level).then_some((component, line))
        })
        .collect()
}

/// Lines of an Envoy log at `level` that come from Wasm (the `wasm` component or naming it).
pub fn wasm_log_lines<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    log_lines(log, level)
        .into_iter()
        .filter(|(component, line)| *component == "wasm" || line.contains("wasm") || line.contains("canary-gate"))
        .map(|(_, line)| line)
        .collect()
}

/// Panics if Envoy's log has any line at error or critical level from Wasm.
pub fn assert_no_wasm_errors(log: &str) {
    for level in ["error", "critical"] {
        let lines = wasm_log_lines(log, level);
        assert!(lines.is_empty(), "{level} lines from wasm:\n{}", lines.join("\n"));
    }
}

/// Marker of [`PhasedLoad`]'s phase while a change is being applied.
pub const TRANSITION: u64 = u64::MAX;

/// One user of a [`PhasedLoad`].
#[derive(Debug, Clone)]
struct PhasedUser {
    id: u32,
    key: Option<String>,
    /// `canary_bucket=N` as set by the proxy.
    cookie: Option<String>,
}

/// What a [`PhasedLoad`] saw.
#[derive(Debug, Default)]
pub struct PhasedReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests not answered by the backend of the version canary-gate named.
    pub failures: u64,
    /// The first few failures.
    pub failure_samples: Vec<String>,
    /// Answers whose reason, cookie or version differ from what the host computes for the
    /// phase's weight (requests that straddle a change are not checked for the version).
    pub wrong: u64,
    /// The first few wrong answers.
    pub wrong_samples: Vec<String>,
    /// Answers by reason.
    pub reasons: BTreeMap<String, u64>,
    /// Checked requests per phase.
    pub per_phase: BTreeMap<u64, u64>,
    /// Versions seen per (phase, user): bit 1 stable, bit 2 canary.
    pub seen: HashMap<(u64, u32), u8>,
    /// Users in the load.
    pub users: usize,
}

impl PhasedReport {
    fn merge(&mut self, other: PhasedReport) {
        self.sent += other.sent;
        self.failures += other.failures;
        self.failure_samples.extend(other.failure_samples.into_iter().take(10));
        self.wrong += other.wrong;
        self.wrong_samples.extend(other.wrong_samples.into_iter().take(10));
        for (k, v) in other.reasons {
            *self.reasons.entry(k).or_default() += v;
        }
        for (k, v) in other.per_phase {
            *self.per_phase.entry(k).or_default() += v;
        }
        self.seen.extend(other.seen);
        self.users += other.users;
    }

    /// Users seen in `phase`.
    pub fn users_in(&self, phase: u64) -> usize {
        self.seen.keys().filter(|(p, _)| *p == phase).count()
    }

    /// Users served by both versions within `phase`.
    pub fn mixed(&self, phase: u64) -> usize {
        self.seen.iter().filter(|((p, _), mask)| *p == phase && **mask == 3).count()
    }

    /// Users only on canary in `from` who saw stable in `to`, and users only on stable in
    /// `from` who saw canary in `to`.
    pub fn moves(&self, from: u64, to: u64) -> (usize, usize) {
        let mut moved = (0, 0);
        for ((p, user), mask) in &self.seen {
            if *p != from {
                continue;
            }
            let Some(next) = self.seen.get(&(to, *user)) else { continue };
            if *mask == 2 && next & 1 != 0 {
                moved.0 += 1;
            }
            if *mask == 1 && next & 2 != 0 {
                moved.1 += 1;
            }
        }
        moved
    }

    /// Users only on canary in `phase`.
    pub fn canary_users(&self, phase: u64) -> usize {
        self.seen.iter().filter(|((p, _), mask)| *p == phase && **mask == 2).count()
    }
}

/// Closed-loop load from keyed users and keyless users who replay the sticky cookie, tagged
/// with the phase of a schedule of weights, checking every answer against the host's
/// routing logic.
pub struct PhasedLoad {
    phase: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<PhasedReport>>,
}

/// Settings of a [`PhasedLoad`].
pub struct PhasedOptions<'a> {
    /// URL to request.
    pub url: &'a str,
    /// Service name (salts the users' buckets).
    pub service: &'a str,
    /// Canary weight in basis points of each phase, by phase index.
    pub weights_bp: Vec<u16>,
    /// Client threads.
    pub threads: usize,
    /// Users per thread.
    pub users_per_thread: usize,
    /// Every n-th user has no key and relies on the cookie.
    pub keyless_every: usize,
    /// Pause between a client's requests.
    pub pause: Duration,
    /// Cap on each client's requests.
    pub max_requests: u64,
}

impl PhasedLoad {
    /// Starts the clients in phase 0.
    pub fn start(options: PhasedOptions<'_>) -> PhasedLoad {
        let phase = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let weights = Arc::new(options.weights_bp);
        let bucketer = Bucketer::new(options.service);
        let threads = (0..options.threads)
            .map(|t| {
                let users: Vec<PhasedUser> = (0..options.users_per_thread)
                    .map(|i| {
                        let id = (t * options.users_per_thread + i) as u32;
                        let keyless = options.keyless_every > 0 && i % options.keyless_every == 0;
                        PhasedUser { id, key: (!keyless).then(|| format!("soak-{t}-{i:05}")), cookie: None }
                    })
                    .collect();
                let (phase, stop, weights, url) =
                    (phase.clone(), stop.clone(), weights.clone(), options.url.to_string());
                let (pause, max_requests) = (options.pause, options.max_requests);
                thread::spawn(move || drive_phased(users, &url, bucketer, &weights, &phase, &stop, pause, max_requests))
            })
            .collect();
        PhasedLoad { phase, stop, threads }
    }

    /// Marks that a change is being applied: answers from now on are not attributed to a phase.
    pub fn begin_transition(&self) {
        self.phase.store(TRANSITION, Ordering::SeqCst);
    }

    /// Enters phase `index` (its weight is `weights_bp[index]`).
    pub fn enter(&self, index: u64) {
        self.phase.store(index, Ordering::SeqCst);
    }

    /// Stops the clients and merges what they saw.
    pub fn finish(self) -> PhasedReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = PhasedReport::default();
        for t in self.threads {
            if let Ok(part) = t.join() {
                report.merge(part);
            }
        }
        report
    }
}

#[allow(clippy::too_many_arguments)]
fn drive_phased(
    mut users: Vec<PhasedUser>,
    url: &str,
    bucketer: Bucketer,
    weights: &[u16],
    phase: &AtomicU64,
    stop: &AtomicBool,
    pause: Duration,
    max_requests: u64,
) -> PhasedReport {
    let client = Client::new();
    let mut report = PhasedReport { users: users.len(), ..Default::default() };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < max_requests && !users.is_empty() {
        let index = (n % users.len() as u64) as usize;
        n += 1;
        let Some(user) = users.get_mut(index) else { break };
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(key) = &user.key {
            headers.push(("x-user-id", key.as_bytes()));
        }
        if let Some(cookie) = &user.cookie {
            headers.push(("cookie", cookie.as_bytes()));
        }
        let before = phase.load(Ordering::SeqCst);
        let reply = client.get(url, &headers);
        let after = phase.load(Ordering::SeqCst);
        report.sent += 1;
        if !served_as_routed(&reply) {
            report.failures += 1;
            if report.failure_samples.len() < 10 {
                report.failure_samples.push(format!(
                    "user {}: status {} version {:?} served_by {:?}: {}",
                    user.id,
                    reply.status,
                    reply.version,
                    reply.served_by,
                    reply.body.chars().take(200).collect::<String>()
                ));
            }
            continue;
        }
        let reason = reply.reason.clone().unwrap_or_default();
        *report.reasons.entry(reason.clone()).or_default() += 1;
        let new_cookie = reply.cookie_pair("canary_bucket");
        let expected_reason = match (&user.key, &user.cookie) {
            (Some(_), _) => "hash",
            (None, Some(_)) => "cookie",
            (None, None) => "random",
        };
        let bucket = match (&user.key, reason.as_str()) {
            (Some(key), _) => Some(bucketer.bucket(key.as_bytes())),
            (None, "cookie") => user.cookie.as_deref().and_then(bucket_of_pair),
            (None, "random") => new_cookie.as_deref().and_then(bucket_of_pair),
            _ => None,
        };
        let cookie_ok = (reason == "random") == new_cookie.is_some();
        let mut problem = (reason != expected_reason || bucket.is_none() || !cookie_ok)
            .then(|| format!("reason {reason} (expected {expected_reason}), new cookie {new_cookie:?}"));
        if let Some(pair) = new_cookie {
            user.cookie = Some(pair);
        }
        let canary = reply.version.as_deref() == Some("canary");
        if before == after && before != TRANSITION {
            *report.per_phase.entry(before).or_default() += 1;
            *report.seen.entry((before, user.id)).or_default() |= if canary { 2 } else { 1 };
            if let (Some(bucket), Some(&weight)) = (bucket, weights.get(before as usize)) {
                if (bucket < weight) != canary {
                    problem.get_or_insert(format!("bucket {bucket} at {weight} bp served {:?}", reply.version));
                }
            }
        }
        if let Some(problem) = problem {
            report.wrong += 1;
            if report.wrong_samples.len() < 10 {
                report.wrong_samples.push(format!("user {} (key {:?}) phase {before}: {problem}", user.id, user.key));
            }
        }
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    report
}
