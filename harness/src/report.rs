//! The demo's report: canary-gate's own stats, read from Envoy's admin every 250 ms while the
//! demo runs, drawn on one time axis as a self-contained HTML page (inline SVG, no script, no
//! network access) and, when Chromium is installed, a PNG screenshot of it.

use crate::Client;
use canary_charts::{escape, Band, Chart, Marker, Series, Style};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The versions drawn, in this order, with their colours.
pub const VERSIONS: [&str; 2] = ["stable", "canary"];
const COLORS: [&str; 2] = ["#2b6cb0", "#dd6b20"];
const WIDTH: u32 = 960;
const HEIGHT: u32 = 290;
/// `canary_gate_state` values, and how the charts shade them.
const BREACHING: u64 = 2;
const TRIPPED: u64 = 3;
/// Label of the marker at each trip, and of the shaded time while tripped.
pub const TRIP_LABEL: &str = "gate tripped";

/// One version's stats at one instant (router reporter, summed over route classes; window
/// gauges: the largest over the classes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionSample {
    /// `canary_requests_total`.
    pub requests_total: u64,
    /// `canary_responses_total{code_class="5xx"}`.
    pub errors_total: u64,
    /// `canary_window_requests`.
    pub window_requests: u64,
    /// `canary_window_error_ratio_ppm`.
    pub window_error_ppm: u64,
    /// `canary_window_latency_p95_microseconds`.
    pub p95_us: u64,
    /// `canary_window_latency_p99_microseconds`.
    pub p99_us: u64,
    /// `canary_window_web_page_views`.
    pub page_views: u64,
    /// `canary_window_web_vitals_lcp_p75_milliseconds`.
    pub lcp_p75_ms: u64,
    /// `canary_window_web_vitals_inp_p75_milliseconds`.
    pub inp_p75_ms: u64,
    /// `canary_window_web_vitals_cls_p75` (CLS × 1000).
    pub cls_p75_milli: u64,
}

/// The stats of one service at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub at_s: f64,
    /// `canary_gate_state`: 0 clear, 1 inconclusive, 2 breaching, 3 tripped.
    pub gate_state: u64,
    /// Per version, in the order of [`VERSIONS`].
    pub versions: [VersionSample; 2],
}

impl Sample {
    /// Reads `service`'s stats from Envoy's `/stats` text (lines `name: value`); what is
    /// missing stays 0.
    pub fn parse(stats: &str, service: &str, at_s: f64) -> Sample {
        let mut sample = Sample { at_s, ..Sample::default() };
        let namespace = format!("{}.", crate::stat_namespace());
        for line in stats.lines() {
            let Some((name, value)) = line.split_once(": ") else { continue };
            let Ok(value) = value.trim().parse::<u64>() else { continue };
            let Some((metric, rest)) = name.strip_prefix(namespace.as_str()).and_then(|n| n.split_once(".service."))
            else {
                continue;
            };
            let Some(labels) = rest.strip_prefix(service).filter(|r| r.is_empty() || r.starts_with('.')) else {
                continue;
            };
            let labels: Vec<&str> = labels.split('.').skip(1).collect();
            let label =
                |key: &str| labels.chunks(2).find(|kv| kv.first() == Some(&key)).and_then(|kv| kv.get(1).copied());
            if metric == "canary_gate_state" && labels.is_empty() {
                sample.gate_state = value;
                continue;
            }
            let Some(index) = label("version").and_then(|v| VERSIONS.iter().position(|&known| known == v)) else {
                continue;
            };
            let Some(v) = sample.versions.get_mut(index) else { continue };
            let router = label("reporter") == Some("router");
            match metric {
                "canary_requests_total" if router => v.requests_total += value,
                "canary_responses_total" if router && label("code_class") == Some("5xx") => v.errors_total += value,
                "canary_window_requests" if router => v.window_requests = v.window_requests.max(value),
                "canary_window_error_ratio_ppm" if router => v.window_error_ppm = v.window_error_ppm.max(value),
                "canary_window_latency_p95_microseconds" if router => v.p95_us = v.p95_us.max(value),
                "canary_window_latency_p99_microseconds" if router => v.p99_us = v.p99_us.max(value),
                "canary_window_web_page_views" => v.page_views = value,
                "canary_window_web_vitals_lcp_p75_milliseconds" => v.lcp_p75_ms = value,
                "canary_window_web_vitals_inp_p75_milliseconds" => v.inp_p75_ms = value,
                "canary_window_web_vitals_cls_p75" => v.cls_p75_milli = value,
                _ => {}
            }
        }
        sample
    }
}

/// Something that happened at an instant of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the sampler started.
    pub at_s: f64,
    /// What happened.
    pub label: String,
}

/// Everything sampled during a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// The service sampled.
    pub service: String,
    /// Stats, in time order.
    pub samples: Vec<Sample>,
    /// Events the driver marked.
    pub events: Vec<Event>,
    /// `(seconds, canary_percent)` each time the configured weight changed.
    pub weights: Vec<(f64, f64)>,
    /// Seconds from the start to the end of sampling.
    pub end_s: f64,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    timeline: Mutex<Timeline>,
}

impl Shared {
    fn timeline(&self) -> MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads a service's stats from Envoy's admin on a thread, every `period`, until
/// [`Sampler::finish`].
pub struct Sampler {
    shared: Arc<Shared>,
    started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `service` through the admin listener on `admin_port`.
    pub fn start(admin_port: u16, service: &str, period: Duration) -> Sampler {
        let shared = Arc::new(Shared::default());
        shared.timeline().service = service.to_string();
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{admin_port}/stats?filter=^{}\\.canary_", crate::stat_namespace());
        let (worker, service) = (Arc::clone(&shared), service.to_string());
        let thread = thread::spawn(move || {
            let client = Client::new();
            let mut next = Instant::now();
            while !worker.stop.load(Ordering::Relaxed) {
                let reply = client.get(&url, &[]);
                if reply.status == 200 {
                    let sample = Sample::parse(&reply.body, &service, started.elapsed().as_secs_f64());
                    worker.timeline().samples.push(sample);
                }
                next += period;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Sampler { shared, started, thread: Some(thread) }
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records that the configured canary weight is now `percent`.
    pub fn set_weight(&self, percent: f64) {
        let at_s = self.elapsed_s();
        self.shared.timeline().weights.push((at_s, percent));
    }

    /// Records an event now.
    pub fn mark(&self, label: &str) {
        let at_s = self.elapsed_s();
        self.shared.timeline().events.push(Event { at_s, label: label.to_string() });
    }

    /// Stops sampling: what was sampled.
    pub fn finish(mut self) -> Timeline {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut timeline = self.shared.timeline().clone();
        timeline.end_s = self.elapsed_s();
        timeline
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The report's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// The page.
    pub html: PathBuf,
    /// Its screenshot, if Chromium is installed and took it.
    pub png: Option<PathBuf>,
}

impl Timeline {
    /// The intervals `(from, to)` during which the gate was in `state`.
    fn gate_intervals(&self, state: u64) -> Vec<(f64, f64)> {
        let mut intervals: Vec<(f64, f64)> = Vec::new();
        let mut open: Option<f64> = None;
        for s in &self.samples {
            match (open, s.gate_state == state) {
                (None, true) => open = Some(s.at_s),
                (Some(from), false) => {
                    intervals.push((from, s.at_s));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(from) = open {
            intervals.push((from, self.end_s.max(from)));
        }
        intervals
    }

    /// The instants the gate tripped (the first sample in the tripped state).
    pub fn trips(&self) -> Vec<f64> {
        self.gate_intervals(TRIPPED).into_iter().map(|(from, _)| from).collect()
    }

    /// Per-second rate of `counter` of each version over the last second, at each sample.
    fn rates(&self, counter: impl Fn(&VersionSample) -> u64) -> [Vec<(f64, f64)>; 2] {
        let mut out = [Vec::new(), Vec::new()];
        let mut earlier = 0;
        for (i, s) in self.samples.iter().enumerate() {
            while self.samples.get(earlier + 1).is_some_and(|e| e.at_s <= s.at_s - 1.0) {
                earlier += 1;
            }
            let Some(base) = self.samples.get(earlier).filter(|_| earlier < i) else { continue };
            let dt = s.at_s - base.at_s;
            for (v, series) in out.iter_mut().enumerate() {
                let (now, then) = (s.versions.get(v), base.versions.get(v));
                if let (Some(now), Some(then)) = (now, then) {
                    series.push((s.at_s, counter(now).saturating_sub(counter(then)) as f64 / dt));
                }
            }
        }
        out
    }

    /// A gauge of each version at each sample; `None` (a gap) where `present` says the
    /// window is empty.
    fn gauge(&self, value: impl Fn(&VersionSample) -> Option<f64>) -> [Vec<(f64, f64)>; 2] {
        [0, 1].map(|v| {
            self.samples
                .iter()
                .filter_map(|s| s.versions.get(v).map(|vs| (s.at_s, value(vs).unwrap_or(f64::NAN))))
                .collect()
        })
    }

    /// A chart on the run's time axis with the gate's states shaded and the events marked.
    fn chart(&self, id: &str, title: &str, y_label: &str) -> Chart {
        let mut chart = Chart::new(id, title, "seconds since the start", y_label);
        chart.width = WIDTH;
        chart.height = HEIGHT;
        chart.x_range = Some((0.0, self.end_s.max(1.0)));
        for (from, to) in self.gate_intervals(BREACHING) {
            chart.bands.push(Band { from, to, label: "breaching".into(), color: "#d69e2e".into() });
        }
        for (from, to) in self.gate_intervals(TRIPPED) {
            chart.bands.push(Band { from, to, label: TRIP_LABEL.into(), color: "#e53e3e".into() });
        }
        chart.markers.extend(self.events.iter().map(|e| Marker { x: e.at_s, label: e.label.clone() }));
        chart.markers.extend(self.trips().into_iter().map(|x| Marker { x, label: TRIP_LABEL.into() }));
        chart
    }

    fn per_version(chart: &mut Chart, suffix: &str, style: Style, data: [Vec<(f64, f64)>; 2]) {
        for ((version, color), points) in VERSIONS.iter().zip(COLORS).zip(data) {
            chart.series.push(Series::new(format!("{version}{suffix}"), color, style, points));
        }
    }

    /// The charts, on one time axis: weight and the canary's share of requests, requests/s,
    /// 5xx % of the gate's window, latency p95 and p99, web vitals LCP and INP p75, CLS p75.
    pub fn charts(&self) -> Vec<Chart> {
        let mut weight = self.chart("weight", "Canary weight and the canary's share of requests", "%");
        let mut steps: Vec<(f64, f64)> = self.weights.clone();
        if let Some(&(_, last)) = steps.last() {
            steps.push((self.end_s, last));
        }
        weight.series.push(Series::new("canary_percent (configured)", "#4a5568", Style::Step, steps));
        let [stable, canary] = self.rates(|v| v.requests_total);
        let share = canary
            .iter()
            .zip(&stable)
            .map(|(&(t, c), &(_, s))| (t, if c + s > 0.0 { 100.0 * c / (c + s) } else { f64::NAN }))
            .collect();
        weight.series.push(Series::new("canary share of requests (last second)", COLORS[1], Style::Line, share));
        weight.y_range = Some((0.0, 100.0));

        let mut requests = self.chart("requests", "Requests per second, per version", "requests/s");
        Self::per_version(&mut requests, "", Style::Line, [stable, canary]);

        let mut errors = self.chart("errors", "5xx % in the gate's rolling window", "% of requests");
        let error_pct = |v: &VersionSample| (v.window_requests > 0).then(|| v.window_error_ppm as f64 / 10_000.0);
        Self::per_version(&mut errors, "", Style::Line, self.gauge(error_pct));

        let mut latency = self.chart("latency", "Latency in the window: p95 (solid) and p99 (dashed)", "ms");
        let ms = |us: u64, v: &VersionSample| (v.window_requests > 0).then_some(us as f64 / 1000.0);
        Self::per_version(&mut latency, " p95", Style::Line, self.gauge(|v| ms(v.p95_us, v)));
        Self::per_version(&mut latency, " p99", Style::Dashed, self.gauge(|v| ms(v.p99_us, v)));

        let mut vitals = self.chart("vitals", "Web vitals P75: LCP (solid) and INP (dashed)", "ms");
        let reported = |value: u64, v: &VersionSample| (v.page_views > 0 && value > 0).then_some(value as f64);
        Self::per_version(&mut vitals, " LCP", Style::Line, self.gauge(|v| reported(v.lcp_p75_ms, v)));
        Self::per_version(&mut vitals, " INP", Style::Dashed, self.gauge(|v| reported(v.inp_p75_ms, v)));

        let mut cls = self.chart("cls", "Web vitals P75: cumulative layout shift", "CLS");
        let shift = |v: &VersionSample| (v.page_views > 0).then_some(v.cls_p75_milli as f64 / 1000.0);
        Self::per_version(&mut cls, " CLS", Style::Line, self.gauge(shift));

        vec![weight, requests, errors, latency, vitals, cls]
    }

    /// The page: a summary, the charts, the events and `log_lines` (Envoy's lines about the
    /// gate), self-contained.
    pub fn html(&self, title: &str, notes: &[String], log_lines: &[String]) -> String {
        self.page(&self.charts(), title, notes, log_lines)
    }

    fn page(&self, charts: &[Chart], title: &str, notes: &[String], log_lines: &[String]) -> String {
        let mut page = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            escape(title),
            escape(title)
        );
        page.push_str(&format!(
            "<p class=\"about\">Service <code>{}</code>: canary-gate's own stats, read from Envoy's admin <code>/stats</code> \
             every 250 ms ({} samples over {:.0} s). Requests/s from its counters, errors and latency from the window \
             gauges the gate judges, web vitals from the pages' beacons. Shaded: the gate breaching (amber) and tripped (red).</p>\n",
            escape(&self.service),
            self.samples.len(),
            self.end_s
        ));
        if !notes.is_empty() {
            page.push_str("<ul class=\"notes\">\n");
            for note in notes {
                page.push_str(&format!("<li>{}</li>\n", escape(note)));
            }
            page.push_str("</ul>\n");
        }
        page.push_str(&self.summary_table());
        for chart in charts {
            page.push_str(&format!("<figure>\n{}\n</figure>\n", chart.svg()));
        }
        page.push_str("<h2>Events</h2>\n<ol class=\"events\">\n");
        let mut events: Vec<Event> = self.events.clone();
        events.extend(self.weights.iter().map(|&(at_s, p)| Event { at_s, label: format!("canary_percent {p}") }));
        events.extend(self.trips().into_iter().map(|at_s| Event { at_s, label: TRIP_LABEL.into() }));
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        for e in &events {
            page.push_str(&format!("<li><span class=\"at\">{:.2} s</span> {}</li>\n", e.at_s, escape(&e.label)));
        }
        page.push_str("</ol>\n");
        if !log_lines.is_empty() {
            page.push_str("<h2>Envoy's log</h2>\n<pre class=\"log\">");
            for line in log_lines {
                page.push_str(&escape(line));
                page.push('\n');
            }
            page.push_str("</pre>\n");
        }
        page.push_str("</body>\n</html>\n");
        page
    }

    fn summary_table(&self) -> String {
        let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) else { return String::new() };
        let mut table = String::from(
            "<table class=\"summary\">\n<tr><th>version</th><th>requests</th><th>5xx</th><th>5xx %</th></tr>\n",
        );
        for (v, version) in VERSIONS.iter().enumerate() {
            let (Some(a), Some(b)) = (first.versions.get(v), last.versions.get(v)) else { continue };
            let requests = b.requests_total.saturating_sub(a.requests_total);
            let errors = b.errors_total.saturating_sub(a.errors_total);
            let pct = if requests > 0 { 100.0 * errors as f64 / requests as f64 } else { 0.0 };
            table.push_str(&format!(
                "<tr><td>{version}</td><td>{requests}</td><td>{errors}</td><td>{pct:.2}</td></tr>\n"
            ));
        }
        table.push_str("</table>\n");
        table
    }

    /// Writes `report.html` into `dir` and, with Chromium installed (`CHROMIUM_BIN`, default
    /// `/usr/bin/chromium`), its screenshot `report.png`.
    pub fn write(
        &self,
        dir: &Path,
        title: &str,
        notes: &[String],
        log_lines: &[String],
    ) -> std::io::Result<ReportFiles> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let html = dir.join("report.html");
        let charts = self.charts();
        std::fs::write(&html, self.page(&charts, title, notes, log_lines))?;
        let png = dir.join("report.png");
        let _ = std::fs::remove_file(&png);
        let height = charts.iter().map(|c| c.height + 30).sum::<u32>() + 700;
        let png = screenshot(&html, &png, WIDTH + 80, height).then_some(png);
        Ok(ReportFiles { html, png })
    }
}

/// Page style: readable on screen and in the screenshot.
const STYLE: &str = "body{font-family:sans-serif;margin:24px;max-width:1000px;color:#1a202c}\
h1{font-size:20px}h2{font-size:16px;margin-top:24px}p.about{color:#4a5568;font-size:13px}\
figure{margin:12px 0}table.summary{border-collapse:collapse;font-size:13px}\
table.summary td,table.summary th{border:1px solid #cbd5e0;padding:3px 10px;text-align:right}\
ol.events{font-size:13px}span.at{display:inline-block;width:70px;color:#4a5568}\
pre.log{font-size:11px;white-space:pre-wrap;background:#f7fafc;padding:8px}";

/// Headless Chromium's screenshot of `html` at `width`×`height` into `png`; false (and why, on
/// stderr) if Chromium is not installed or fails within 60 s.
fn screenshot(html: &Path, png: &Path, width: u32, height: u32) -> bool {
    let chromium = crate::chromium_path();
    if !chromium.exists() {
        eprintln!("no screenshot: {} is not installed (make deps installs it)", chromium.display());
        return false;
    }
    let profile = crate::TempDir::new("report-chromium");
    let started = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = started else {
        eprintln!("no screenshot: {} did not start", chromium.display());
        return false;
    };
    if crate::wait_or_stop(&mut child, Duration::from_secs(60)).is_none() {
        eprintln!("no screenshot: Chromium did not finish within 60 s");
        return false;
    }
    png.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "\
wasmcustom.canary_gate_state.service.checkout: 3
wasmcustom.canary_gate_tripped.service.checkout: 1
wasmcustom.canary_requests_total.service.checkout.version.stable.reporter.router.class.other: 120
wasmcustom.canary_requests_total.service.checkout.version.stable.reporter.router.class.api: 30
wasmcustom.canary_requests_total.service.checkout.version.canary.reporter.router.class.other: 40
wasmcustom.canary_requests_total.service.checkout.version.canary.reporter.observer.class.other: 999
wasmcustom.canary_responses_total.service.checkout.version.canary.reporter.router.class.other.code_class.5xx: 12
wasmcustom.canary_responses_total.service.checkout.version.canary.reporter.router.class.other.code_class.2xx: 28
wasmcustom.canary_window_requests.service.checkout.version.canary.reporter.router.class.other: 40
wasmcustom.canary_window_error_ratio_ppm.service.checkout.version.canary.reporter.router.class.other: 300000
wasmcustom.canary_window_latency_p95_microseconds.service.checkout.version.canary.reporter.router.class.other: 8123
wasmcustom.canary_window_web_vitals_lcp_p75_milliseconds.service.checkout.version.canary: 2900
wasmcustom.canary_window_web_vitals_cls_p75.service.checkout.version.canary: 170
wasmcustom.canary_window_web_page_views.service.checkout.version.canary: 150
wasmcustom.canary_requests_total.service.checkout2.version.stable.reporter.router.class.other: 7
wasmcustom.canary_request_duration_milliseconds.service.checkout.version.stable.reporter.router.class.other: P0(nan,1)
";

    #[test]
    fn parses_the_services_router_stats_and_nothing_else() {
        let s = Sample::parse(STATS, "checkout", 1.5);
        assert_eq!(s.at_s, 1.5);
        assert_eq!(s.gate_state, 3);
        assert_eq!(s.versions[0].requests_total, 150, "both classes, not checkout2");
        let canary = s.versions[1];
        assert_eq!(canary.requests_total, 40, "the observer's count is not the router's");
        assert_eq!((canary.errors_total, canary.window_requests, canary.window_error_ppm), (12, 40, 300_000));
        assert_eq!((canary.p95_us, canary.lcp_p75_ms, canary.cls_p75_milli, canary.page_views), (8123, 2900, 170, 150));
    }

    fn sample(at_s: f64, state: u64, stable: u64, canary: u64) -> Sample {
        let mut s = Sample { at_s, gate_state: state, ..Sample::default() };
        s.versions[0].requests_total = stable;
        s.versions[1].requests_total = canary;
        s.versions[1].window_requests = canary;
        s.versions[1].window_error_ppm = 50_000;
        s
    }

    fn timeline() -> Timeline {
        // 100 requests/s, 30% of them on the canary until the trip at 3 s, then none.
        let mut samples = Vec::new();
        for i in 0..=24u64 {
            let t = i as f64 * 0.25;
            let canary = if t <= 3.0 { 30 * i / 4 } else { 90 };
            samples.push(sample(
                t,
                if t < 2.5 {
                    0
                } else if t < 3.0 {
                    2
                } else {
                    3
                },
                100 * i / 4 - canary,
                canary,
            ));
        }
        Timeline {
            service: "checkout".into(),
            samples,
            events: vec![Event { at_s: 2.0, label: "fault: canary answers <30%> 5xx".into() }],
            weights: vec![(0.0, 30.0)],
            end_s: 6.0,
        }
    }

    #[test]
    fn rates_gate_states_and_trips_from_the_samples() {
        let t = timeline();
        assert_eq!(t.trips(), vec![3.0]);
        assert_eq!(t.gate_intervals(BREACHING), vec![(2.5, 3.0)]);
        assert_eq!(t.gate_intervals(TRIPPED), vec![(3.0, 6.0)]);
        let [stable, canary] = t.rates(|v| v.requests_total);
        // The first second has no earlier sample a second back: rates over what there is.
        let at = |series: &[(f64, f64)], x: f64| series.iter().find(|p| p.0 == x).map(|p| p.1);
        assert_eq!(at(&canary, 2.0), Some(30.0));
        assert_eq!(at(&stable, 2.0), Some(70.0));
        assert_eq!(at(&canary, 5.0), Some(0.0));
        assert_eq!(at(&stable, 5.0), Some(100.0));
    }

    #[test]
    fn charts_carry_the_series_bands_and_the_trip_marker() {
        let charts = timeline().charts();
        let ids: Vec<&str> = charts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["weight", "requests", "errors", "latency", "vitals", "cls"]);
        for chart in &charts {
            assert_eq!(chart.x_range, Some((0.0, 6.0)));
            assert!(chart.markers.iter().any(|m| m.label == TRIP_LABEL && m.x == 3.0), "{}", chart.id);
            assert!(chart.bands.iter().any(|b| b.label == TRIP_LABEL && (b.from, b.to) == (3.0, 6.0)), "{}", chart.id);
        }
        let weight = &charts[0];
        assert_eq!(weight.series[0].points, vec![(0.0, 30.0), (6.0, 30.0)]);
        let share = &weight.series[1].points;
        assert!(share.iter().filter(|p| p.0 >= 1.0 && p.0 <= 3.0).all(|p| (p.1 - 30.0).abs() < 1e-9), "{share:?}");
        assert!(share.iter().filter(|p| p.0 >= 4.0).all(|p| p.1 == 0.0), "{share:?}");
        let errors = &charts[2];
        assert!(errors.series[0].points.iter().all(|p| p.1.is_nan()), "stable has no window: gaps");
        assert!(errors.series[1].points.iter().skip(1).all(|p| p.1 == 5.0));
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let page = timeline().html("demo <report>", &["fallback 1.3 s & done".into()], &["gate tripped: <x>".into()]);
        assert!(page.starts_with("<!doctype html>") && page.ends_with("</html>\n"));
        assert_eq!(page.matches("<svg").count(), 6);
        for absent in ["<script", "http://", "https://www.", "src="] {
            let found =
                page.match_indices(absent).filter(|(i, _)| !page[*i..].starts_with("http://www.w3.org/2000/svg"));
            assert_eq!(found.count(), 0, "{absent}");
        }
        for escaped in ["demo &lt;report&gt;", "fallback 1.3 s &amp; done", "gate tripped: &lt;x&gt;", "&lt;30%&gt;"] {
            assert!(page.contains(escaped), "{escaped}");
        }
        assert!(page.contains("<td>canary</td><td>90</td><td>0</td>"), "summary of the run");
    }
}
