//! Test backend: answers every request as one named version, with an error ratio and a
//! latency that can be switched while it runs (`POST /_backend/config?error_ratio=0.3&latency_ms=400`).
//!
//! Errors follow a deterministic pattern (request n fails iff floor(n·r) grows), so a run of
//! N requests carries exactly round-down(N·r) errors. With `error_path_prefix` (e.g. `/api/`)
//! only requests whose path starts with it are subject to the error ratio, and only they
//! advance the pattern: N such requests carry exactly round-down(N·r) errors, whatever else is
//! sent. The body echoes the request headers so tests can see what the upstream received.
//! HTTP/1.1 keep-alive, one thread per connection; header bytes need not be UTF-8 (they are
//! echoed lossily).
//!
//! A request may also decide its own response, by request headers:
//!
//! - `x-backend-status: NNN` answers status NNN (`200..=599`) instead of the error pattern
//!   (which it neither takes part in nor advances); an invalid value is ignored. The first
//!   valid line counts. 204 and 304 are sent without a body.
//! - `x-backend-first-attempt-status: NNN` answers NNN only to a first attempt (the request's
//!   `x-envoy-attempt-count`, which Envoy adds with `include_request_attempt_count`, absent or
//!   1): a 503 there is a failure Envoy retries, and the retry succeeds.
//! - `x-backend-set: name=value` adds the response header `name: value` (e.g.
//!   `x-backend-set: x-cache=HIT`); the header may repeat, one response header per line. A
//!   line whose name is not an HTTP token, or a framing header (`content-length`,
//!   `transfer-encoding`, `connection`), or whose value holds control bytes, is ignored.
//!
//! A response delayed by the latency setting says for how long in `x-backend-slept-us` (the
//! sleep as measured, at least the setting): a lower bound of any latency measured in front.
//!
//! `GET /_backend/state` reports the behaviour, the requests answered and the 5xx answered.
//!
//! For the browser tests, `--static [PREFIX=]DIR` (repeatable) serves `GET PREFIX<path>` from
//! files in DIR (PREFIX defaults to `/static/`), with `?delay_ms=N` to hold an answer back; see
//! `files.rs`. Those requests are counted but take no part in the error pattern.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod files;
mod http;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
struct Behaviour {
    error_ratio: f64,
    /// Only paths starting with this are subject to `error_ratio` (empty: every path).
    error_path_prefix: String,
    latency_ms: u64,
    latency_spread_ms: u64,
}

struct State {
    version: String,
    /// `--static` mounts.
    mounts: Vec<files::Mount>,
    behaviour: Mutex<Behaviour>,
    /// Requests answered (control requests aside).
    requests: AtomicU64,
    /// Requests subject to the error ratio so far: the position in its pattern.
    patterned: AtomicU64,
    /// 5xx answered.
    errors: AtomicU64,
    rng: AtomicU64,
}

impl State {
    fn behaviour(&self) -> Behaviour {
        match self.behaviour.lock() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen = "127.0.0.1:18001".to_string();
    let mut version = "stable".to_string();
    let mut mounts = Vec::new();
    let mut behaviour =
        Behaviour { error_ratio: 0.0, error_path_prefix: String::new(), latency_ms: 0, latency_spread_ms: 0 };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        let ok = match flag.as_str() {
            "--listen" => {
                listen = value.clone();
                true
            }
            "--version" => {
                version = value.clone();
                true
            }
            "--static" => match files::Mount::parse(&value) {
                Ok(mount) => {
                    mounts.push(mount);
                    true
                }
                Err(e) => {
                    eprintln!("canary-backend: {e}");
                    false
                }
            },
            other => apply(&mut behaviour, other.trim_start_matches("--").replace('-', "_").as_str(), &value),
        };
        if !ok {
            eprintln!("canary-backend: bad argument {flag} {value}");
            eprintln!("usage: canary-backend --listen ADDR --version NAME [--error-ratio R] [--error-path-prefix /PATH] [--latency-ms MS] [--latency-spread-ms MS] [--static [/PREFIX/=]DIR]...");
            std::process::exit(2);
        }
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("canary-backend: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let state = Arc::new(State {
        version,
        mounts,
        behaviour: Mutex::new(behaviour),
        requests: AtomicU64::new(0),
        patterned: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        rng: AtomicU64::new(u64::from(std::process::id()) | 1),
    });
    eprintln!("canary-backend {} listening on {listen}", state.version);
    for stream in listener.incoming().flatten() {
        let state = state.clone();
        thread::spawn(move || http::serve(stream, |request| handle(&state, request)));
    }
}

/// Sets one behaviour field from its name; false if the name or value is invalid.
fn apply(b: &mut Behaviour, name: &str, value: &str) -> bool {
    match name {
        "error_ratio" => {
            value.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).map(|r| b.error_ratio = r).is_some()
        }
        "error_path_prefix" => {
            (value.is_empty() || value.starts_with('/')).then(|| b.error_path_prefix = value.to_string()).is_some()
        }
        "latency_ms" => value.parse().map(|v| b.latency_ms = v).is_ok(),
        "latency_spread_ms" => value.parse().map(|v| b.latency_spread_ms = v).is_ok(),
        _ => false,
    }
}

fn handle(state: &State, request: &http::Request) -> http::Response {
    if let Some(rest) = request.target.strip_prefix("/_backend/") {
        return control(state, &request.method, rest);
    }
    let behaviour = state.behaviour();
    state.requests.fetch_add(1, Ordering::Relaxed);
    if request.method == "GET" {
        if let Some((status, content_type, body)) = files::serve(&state.mounts, &request.target) {
            let headers = vec![
                ("x-served-by".to_string(), state.version.clone()),
                ("cache-control".to_string(), "no-store".to_string()),
            ];
            return http::Response { status, content_type, headers, body };
        }
    }
    let path = request.target.split(['?', '#']).next().unwrap_or_default();
    let status = match requested_status(request) {
        Some(status) => status,
        None if path.starts_with(&behaviour.error_path_prefix) => {
            let n = state.patterned.fetch_add(1, Ordering::Relaxed);
            let fails = ((n + 1) as f64 * behaviour.error_ratio).floor() > (n as f64 * behaviour.error_ratio).floor();
            if fails {
                500
            } else {
                200
            }
        }
        None => 200,
    };
    if status >= 500 {
        state.errors.fetch_add(1, Ordering::Relaxed);
    }
    let mut response_headers = vec![("x-served-by".to_string(), state.version.clone())];
    response_headers.extend(requested_headers(request));
    let headers: BTreeMap<&str, String> =
        request.headers.iter().map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned())).collect();
    let body =
        serde_json::json!({ "version": state.version, "status": status, "path": request.target, "headers": headers });
    let delay = behaviour.latency_ms + spread(state, behaviour.latency_spread_ms);
    if delay > 0 {
        let start = Instant::now();
        thread::sleep(Duration::from_millis(delay));
        response_headers.push(("x-backend-slept-us".to_string(), start.elapsed().as_micros().to_string()));
    }
    http::Response::json(status, response_headers, &body)
}

/// The first valid `x-backend-status` (`200..=599`), if any; or, on a first attempt (the
/// request's `x-envoy-attempt-count` absent or 1), the first valid
/// `x-backend-first-attempt-status`: a failure Envoy's retry policy retries.
fn requested_status(request: &http::Request) -> Option<u16> {
    let first = |name: &str| {
        request.headers.iter().filter(|(k, _)| k == name).find_map(|(_, v)| {
            std::str::from_utf8(v).ok()?.trim().parse::<u16>().ok().filter(|s| (200..=599).contains(s))
        })
    };
    let attempt = request
        .headers
        .iter()
        .find(|(k, _)| k == "x-envoy-attempt-count")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok())
        .unwrap_or(1);
    first("x-backend-status").or_else(|| (attempt <= 1).then(|| first("x-backend-first-attempt-status")).flatten())
}

/// The response headers the request's valid `x-backend-set: name=value` lines ask for.
fn requested_headers(request: &http::Request) -> Vec<(String, String)> {
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    request
        .headers
        .iter()
        .filter(|(k, _)| k == "x-backend-set")
        .filter_map(|(_, line)| {
            let eq = line.iter().position(|&b| b == b'=')?;
            let (name, value) = (line.get(..eq)?.trim_ascii(), line.get(eq + 1..)?.trim_ascii());
            let name = String::from_utf8(name.to_vec()).ok()?.to_ascii_lowercase();
            let framing = ["content-length", "transfer-encoding", "connection"].contains(&name.as_str());
            let valid_name = !name.is_empty() && name.bytes().all(is_token) && !framing;
            let valid_value = value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
            (valid_name && valid_value).then(|| (name, String::from_utf8_lossy(value).into_owned()))
        })
        .collect()
}

/// Uniform extra latency in `0..=max_ms` (xorshift; only the distribution matters).
fn spread(state: &State, max_ms: u64) -> u64 {
    if max_ms == 0 {
        return 0;
    }
    let mut x = state.rng.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.rng.store(x, Ordering::Relaxed);
    x % (max_ms + 1)
}

fn control(state: &State, method: &str, rest: &str) -> http::Response {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut status = 200;
    match (method, path) {
        ("POST", "config") => {
            let mut guard = match state.behaviour.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let mut next = guard.clone();
            let valid = query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .all(|kv| kv.split_once('=').is_some_and(|(k, v)| apply(&mut next, k, v)));
            if valid {
                *guard = next;
            } else {
                status = 400;
            }
        }
        ("POST", "reset") => {
            state.requests.store(0, Ordering::Relaxed);
            state.patterned.store(0, Ordering::Relaxed);
            state.errors.store(0, Ordering::Relaxed);
        }
        (_, "state") => {}
        _ => status = 404,
    }
    let body = serde_json::json!({
        "version": state.version,
        "behaviour": state.behaviour(),
        "requests": state.requests.load(Ordering::Relaxed),
        "errors": state.errors.load(Ordering::Relaxed),
    });
    http::Response::json(status, vec![], &body)
}
