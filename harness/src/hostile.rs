//! Hostile web-vitals beacons against the JSON reader: the largest bodies `vitals.max_body_bytes`
//! allows, built to hold as many distinct keys as fit, and the latency of an unrelated request
//! while two connections post them, one on each of Envoy's workers.

use crate::{filter_config, Envoy};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The largest `vitals.max_body_bytes`.
pub const MAX_BODY: usize = 65_536;

/// The beacon endpoint of [`attack_config`].
pub const ENDPOINT: &str = "/__canary/vitals";

/// Members `"key":0` with the shortest distinct keys (alphanumeric, after `prefix`), as many as
/// fit in `bytes` with their commas; and how many.
pub fn densest_members(prefix: &str, bytes: usize) -> (String, usize) {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let (mut out, mut count) = (String::new(), 0usize);
    for width in 1u32.. {
        for mut n in 0..DIGITS.len().pow(width) {
            let mut key = prefix.to_string();
            for _ in 0..width {
                key.push(char::from(DIGITS[n % DIGITS.len()]));
                n /= DIGITS.len();
            }
            let member = format!("{}\"{key}\":0", if out.is_empty() { "" } else { "," });
            if out.len() + member.len() > bytes {
                return (out, count);
            }
            out.push_str(&member);
            count += 1;
        }
    }
    unreachable!("the loop returns once `bytes` are filled")
}

/// A beacon of one `page_view` report padded with as many distinct keys as fit in `bytes`, then
/// with spaces to exactly `bytes` (8,686 keys in 64 KiB): the most work one body gives the
/// reader; and its number of keys.
pub fn widest_object(bytes: usize) -> (String, usize) {
    let head = r#"{"name":"page_view","#;
    let (members, count) = densest_members("", bytes - head.len() - 1);
    (format!("{head}{members:<width$}}}", width = bytes - head.len() - 1), count + 1)
}

/// The largest valid beacon: 64 `page_view` reports (the most one beacon may carry), each
/// padded with distinct keys to fill `bytes`.
pub fn largest_valid_beacon(bytes: usize) -> String {
    let reports = canary_gate::measure::beacon::MAX_REPORTS;
    let each = (bytes - 2) / reports - 1;
    let report = |i: usize| {
        let head = r#"{"name":"page_view","#;
        let (members, _) = densest_members(&format!("r{i}_"), each - head.len() - 1);
        format!("{head}{members}}}")
    };
    format!("[{}]", (0..reports).map(report).collect::<Vec<_>>().join(","))
}

/// A configuration of `keys` members besides `service` (refused: unknown fields, once read).
pub fn wide_config(keys: usize) -> String {
    let members: Vec<String> = (0..keys).map(|i| format!(r#""key-{i}":{i}"#)).collect();
    format!(r#"{{"service":"checkout",{}}}"#, members.join(","))
}

/// `filter_config(50)` with the beacon endpoint at its largest body and the gate on vitals.
pub fn attack_config() -> String {
    let base = filter_config(50.0);
    let body = base.trim_end().strip_suffix('}').unwrap_or_else(|| panic!("config is an object"));
    format!(
        r#"{body},
  "vitals": {{"max_body_bytes": {MAX_BODY}, "max_per_second": 200}},
  "gate": {{"vitals": {{"max_lcp_p75_ms": 4000, "min_page_views": 50}}}}
}}"#
    )
}

/// One `GET /` on a fresh connection (so either worker may take it), timed from connect to the
/// end of the response.
pub fn timed_get(port: u16) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = "GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-user-id: bystander\r\nconnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("send: {e}"));
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let took = start.elapsed();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "GET /: {}", String::from_utf8_lossy(&reply));
    took
}

/// Median of sequential [`timed_get`]s, one every `gap`, for `period` or `max` samples, in
/// milliseconds; and the sample count.
pub fn p50_ms(port: u16, period: Duration, gap: Duration, max: usize) -> (f64, usize) {
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < period && samples.len() < max {
        samples.push(timed_get(port).as_secs_f64() * 1e3);
        thread::sleep(gap);
    }
    (crate::median(&mut samples), samples.len())
}

/// A keep-alive connection posting beacons.
struct Poster {
    stream: TcpStream,
}

impl Poster {
    fn connect(port: u16) -> Poster {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_nodelay(true);
        Poster { stream }
    }

    /// POSTs `body` to the endpoint; the status, 0 when the connection failed.
    fn post(&mut self, body: &[u8]) -> u16 {
        let head = format!(
            "POST {ENDPOINT} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-user-id: attacker\r\ncontent-type: text/plain\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        if self.stream.write_all(head.as_bytes()).and_then(|()| self.stream.write_all(body)).is_err() {
            return 0;
        }
        self.status().unwrap_or(0)
    }

    /// Reads one response (head and a `content-length` body) and returns its status.
    fn status(&mut self) -> Option<u16> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            (self.stream.read(&mut byte).ok()? == 1).then_some(())?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).ok()?;
        Some(status)
    }
}

/// Connections open on `worker` of the listener on `port`.
fn active_on_worker(envoy: &Envoy, worker: u32) -> u64 {
    envoy.stat(&format!("listener.127.0.0.1_{}.worker_{worker}.downstream_cx_active", envoy.port))
}

/// Two keep-alive connections, one on each of Envoy's 2 workers (the kernel spreads new
/// connections by a hash, so a second one is opened again until it lands on the other worker).
fn one_per_worker(envoy: &Envoy) -> [Poster; 2] {
    let first = Poster::connect(envoy.port);
    let on = |envoy: &Envoy| [active_on_worker(envoy, 0), active_on_worker(envoy, 1)];
    crate::wait_until("the first connection accepted", Duration::from_secs(5), || on(envoy).iter().sum::<u64>() == 1);
    let busy = usize::from(on(envoy)[1] == 1);
    for _ in 0..50 {
        let second = Poster::connect(envoy.port);
        crate::wait_until("the second connection accepted", Duration::from_secs(5), || {
            on(envoy).iter().sum::<u64>() == 2
        });
        if on(envoy)[1 - busy] == 1 {
            return [first, second];
        }
        drop(second);
        crate::wait_until("the second connection closed", Duration::from_secs(5), || {
            on(envoy).iter().sum::<u64>() == 1
        });
    }
    panic!("no connection landed on the other worker in 50 attempts")
}

/// Two connections, one per worker, each posting `body` at `per_second` until stopped or
/// `max_seconds` have passed.
pub struct Attack {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    taken: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<Vec<f64>>>,
}

/// What an [`Attack`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttackReport {
    /// Beacons posted and answered.
    pub sent: u64,
    /// Of those, read whole and taken (answered 204).
    pub taken: u64,
    /// Answered otherwise, or lost with their connection.
    pub other: u64,
    /// The median time from sending a beacon to its answer, ms.
    pub answer_ms: f64,
}

impl Attack {
    /// Starts posting; each connection waits for each answer (as a browser's `fetch` would).
    pub fn start(envoy: &Envoy, body: &str, per_second: f64, max_seconds: f64) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = [(); 3].map(|()| Arc::new(AtomicU64::new(0)));
        let body = Arc::new(body.as_bytes().to_vec());
        let period = Duration::from_secs_f64(1.0 / per_second);
        let most = (per_second * max_seconds).ceil() as u32;
        let threads = one_per_worker(envoy)
            .into_iter()
            .map(|mut poster| {
                let (stop, body, counts) = (stop.clone(), body.clone(), counts.clone());
                thread::spawn(move || {
                    let start = Instant::now();
                    let mut answers = Vec::new();
                    for i in 1..=most {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let sent = Instant::now();
                        let status = poster.post(&body);
                        answers.push(sent.elapsed().as_secs_f64() * 1e3);
                        counts[0].fetch_add(1, Ordering::Relaxed);
                        counts[if status == 204 { 1 } else { 2 }].fetch_add(1, Ordering::Relaxed);
                        if status == 0 {
                            break;
                        }
                        let next = start + period * i;
                        thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    answers
                })
            })
            .collect();
        let [sent, taken, other] = counts;
        Attack { stop, sent, taken, other, threads }
    }

    /// Stops posting and waits for the answers in flight.
    pub fn finish(self) -> AttackReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers: Vec<f64> = self.threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect();
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        AttackReport {
            sent: load(&self.sent),
            taken: load(&self.taken),
            other: load(&self.other),
            answer_ms: crate::median(&mut answers),
        }
    }
}

/// One round of the scenario: the p50 of an unrelated `GET /` idle, then while two connections
/// (one per worker) post [`widest_object`] at 20 beacons/s each.
#[derive(Debug, Clone, Copy)]
pub struct VictimLatency {
    /// p50 idle, ms.
    pub idle_ms: f64,
    /// Samples idle.
    pub idle_samples: usize,
    /// p50 under the beacons, ms.
    pub attacked_ms: f64,
    /// Samples under the beacons.
    pub attacked_samples: usize,
    /// The beacons posted.
    pub attack: AttackReport,
}

/// Runs one round against `envoy` (started with [`attack_config`]): 4 s of samples each way,
/// one `GET` every 10 ms, the beacons starting 1 s before the samples and posting for at most 6 s.
pub fn victim_latency(envoy: &Envoy) -> VictimLatency {
    let (period, gap, max) = (Duration::from_secs(4), Duration::from_millis(10), 400);
    let (idle_ms, idle_samples) = p50_ms(envoy.port, period, gap, max);
    let (body, _) = widest_object(MAX_BODY);
    let attack = Attack::start(envoy, &body, 20.0, 6.0);
    thread::sleep(Duration::from_secs(1));
    let (attacked_ms, attacked_samples) = p50_ms(envoy.port, period, gap, max);
    let attack = attack.finish();
    VictimLatency { idle_ms, idle_samples, attacked_ms, attacked_samples, attack }
}
