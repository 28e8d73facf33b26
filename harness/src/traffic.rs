//! Synthetic users for the ramp test and the demo: users with a hash key (`x-user-id`) and
//! keyless users who replay the sticky cookie like a browser does.

use crate::client::Client;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// One synthetic user.
#[derive(Debug, Clone)]
pub struct User {
    /// `x-user-id`, if the user has one.
    pub key: Option<String>,
    /// `name=value` cookie pairs the user's browser keeps.
    pub cookies: Vec<String>,
    /// Version served at the end of the previous step (`true` = canary).
    pub last_canary: Option<bool>,
}

impl User {
    /// Sends one request as this user, keeping any cookie the response sets.
    pub fn visit(&mut self, client: &Client, url: &str) -> crate::Reply {
        let cookie = self.cookies.join("; ");
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(key) = &self.key {
            headers.push(("x-user-id", key.as_bytes()));
        }
        if !cookie.is_empty() {
            headers.push(("cookie", cookie.as_bytes()));
        }
        let reply = client.get(url, &headers);
        keep_cookies(&mut self.cookies, &reply);
        reply
    }
}

/// Keeps in `jar` (`name=value` pairs) every cookie `reply` sets, replacing one of that name.
pub fn keep_cookies(jar: &mut Vec<String>, reply: &crate::Reply) {
    for set in &reply.set_cookies {
        let Some(pair) = set.split(';').next() else { continue };
        let name = pair.split('=').next().unwrap_or_default();
        jar.retain(|c| c.split('=').next() != Some(name));
        jar.push(pair.to_string());
    }
}

/// Whether the backend of the version canary-gate named answered (whatever its status):
/// false for transport errors and Envoy's own replies.
pub fn served_as_routed(reply: &crate::Reply) -> bool {
    reply.status != 0 && reply.served_by.is_some() && reply.served_by == reply.version
}

/// What one pass over the population saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Canary weight configured for the step.
    pub percent: f64,
    /// Users in the population.
    pub users: usize,
    /// Users whose requests all went to canary.
    pub users_canary: usize,
    /// Requests sent.
    pub requests: u64,
    /// Requests served by canary.
    pub requests_canary: u64,
    /// Requests not answered by the backend of the version the filter named (transport
    /// errors, Envoy's own replies): what a routing change must never cause.
    pub failures: u64,
    /// Requests the backend itself answered with 5xx.
    pub backend_errors: u64,
    /// Users served canary in the previous step and stable now.
    pub canary_to_stable: usize,
    /// Users served stable in the previous step and canary now.
    pub stable_to_canary: usize,
    /// Users served both versions within this step.
    pub mixed: usize,
}

/// A fixed set of users.
pub struct Population {
    /// The users.
    pub users: Vec<User>,
}

impl Population {
    /// `n` users; every `keyless_every`-th has no key and relies on the cookie.
    pub fn new(n: usize, keyless_every: usize) -> Population {
        let users = (0..n)
            .map(|i| User {
                key: (keyless_every == 0 || i % keyless_every != 0).then(|| format!("user-{i:05}")),
                cookies: vec![],
                last_canary: None,
            })
            .collect();
        Population { users }
    }

    /// Every user sends `requests_per_user` requests, spread over `threads` clients.
    pub fn run_step(&mut self, url: &str, percent: f64, requests_per_user: usize, threads: usize) -> StepReport {
        let chunk = self.users.len().div_ceil(threads.max(1)).max(1);
        let partials: Vec<StepReport> = thread::scope(|scope| {
            let handles: Vec<_> = self
                .users
                .chunks_mut(chunk)
                .map(|users| scope.spawn(move || drive(users, url, percent, requests_per_user)))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        partials.into_iter().fold(StepReport { percent, ..Default::default() }, |mut acc, p| {
            acc.users += p.users;
            acc.users_canary += p.users_canary;
            acc.requests += p.requests;
            acc.requests_canary += p.requests_canary;
            acc.failures += p.failures;
            acc.backend_errors += p.backend_errors;
            acc.canary_to_stable += p.canary_to_stable;
            acc.stable_to_canary += p.stable_to_canary;
            acc.mixed += p.mixed;
            acc
        })
    }
}

fn drive(users: &mut [User], url: &str, percent: f64, requests_per_user: usize) -> StepReport {
    let client = Client::new();
    let mut report = StepReport { percent, ..Default::default() };
    for user in users {
        let mut seen = (false, false);
        for _ in 0..requests_per_user {
            let reply = user.visit(&client, url);
            report.requests += 1;
            let canary = reply.version.as_deref() == Some("canary");
            if !served_as_routed(&reply) {
                report.failures += 1;
                continue;
            }
            if reply.status >= 500 {
                report.backend_errors += 1;
            }
            if canary {
                report.requests_canary += 1;
                seen.1 = true;
            } else {
                seen.0 = true;
            }
        }
        report.users += 1;
        let now_canary = match seen {
            (true, true) => {
                report.mixed += 1;
                None
            }
            (false, true) => Some(true),
            (true, false) => Some(false),
            (false, false) => None,
        };
        if now_canary == Some(true) {
            report.users_canary += 1;
        }
        match (user.last_canary, now_canary) {
            (Some(true), Some(false)) => report.canary_to_stable += 1,
            (Some(false), Some(true)) => report.stable_to_canary += 1,
            _ => {}
        }
        user.last_canary = now_canary.or(user.last_canary);
    }
    report
}

/// Background load of keyed users that counts every answer, for checking that
/// configuration changes drop nothing.
pub struct Steady {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Steady {
    /// Starts `threads` clients looping over distinct users until [`Steady::finish`],
    /// capped at `max_requests` per client.
    pub fn start(url: &str, threads: usize, max_requests: u64) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..threads)
            .map(|t| {
                let (stop, sent, failed, url) = (stop.clone(), sent.clone(), failed.clone(), url.to_string());
                thread::spawn(move || {
                    let client = Client::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && n < max_requests {
                        let key = format!("steady-{t}-{}", n % 5000);
                        let reply = client.get(&url, &[("x-user-id", key.as_bytes())]);
                        if !served_as_routed(&reply) {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                })
            })
            .collect();
        Steady { stop, sent, failed, threads }
    }

    /// Stops the clients; returns (sent, failed).
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// One answered request of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct Event {
    /// When the request was sent, since the recorder started.
    pub sent: std::time::Duration,
    /// Whether it carried the tester override `x-canary: canary`.
    pub overridden: bool,
    /// HTTP status (0: transport error).
    pub status: u16,
    /// `x-canary-version`.
    pub version: Option<String>,
    /// `x-canary-reason`.
    pub reason: Option<String>,
    /// `x-served-by`.
    pub served_by: Option<String>,
}

/// Steady load from many keyed users that records every answer with its send time.
pub struct Recorder {
    start: std::time::Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Vec<Event>>>,
}

impl Recorder {
    /// `threads` clients, each cycling over 1,000 users; every `override_every`-th request
    /// (0: none) is a tester's override to canary; `pause` between a client's requests.
    /// Each client stops after `max_requests` or when [`Recorder::finish`] is called.
    pub fn start(
        url: &str,
        threads: usize,
        override_every: u64,
        pause: std::time::Duration,
        max_requests: u64,
    ) -> Recorder {
        let start = std::time::Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let (stop, url) = (stop.clone(), url.to_string());
                thread::spawn(move || {
                    let client = Client::new();
                    let mut events = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && n < max_requests {
                        let key = format!("load-{t}-{}", n % 1_000);
                        let overridden = override_every > 0 && n.is_multiple_of(override_every);
                        let mut headers: Vec<(&str, &[u8])> = vec![("x-user-id", key.as_bytes())];
                        if overridden {
                            headers.push(("x-canary", b"canary"));
                        }
                        let sent = start.elapsed();
                        let reply = client.get(&url, &headers);
                        events.push(Event {
                            sent,
                            overridden,
                            status: reply.status,
                            version: reply.version,
                            reason: reply.reason,
                            served_by: reply.served_by,
                        });
                        n += 1;
                        if !pause.is_zero() {
                            thread::sleep(pause);
                        }
                    }
                    events
                })
            })
            .collect();
        Recorder { start, stop, threads }
    }

    /// Time since the recorder started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    /// Stops the clients and returns every event, in send order.
    pub fn finish(self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        let mut events: Vec<Event> = self.threads.into_iter().filter_map(|t| t.join().ok()).flatten().collect();
        events.sort_by_key(|e| e.sent);
        events
    }
}

/// Time from `fault` to the last non-override request served by canary (zero if none was).
pub fn fallback_time(events: &[Event], fault: std::time::Duration) -> std::time::Duration {
    events
        .iter()
        .filter(|e| !e.overridden && e.sent >= fault && e.served_by.as_deref() == Some("canary"))
        .map(|e| e.sent - fault)
        .max()
        .unwrap_or_default()
}
