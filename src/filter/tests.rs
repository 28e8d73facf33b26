//! The flow on the fake host: what a stream reads, writes, answers and counts at each step.

use super::*;
use crate::host::fake::{FakeProxy, FakeStream};
use crate::host::{Attribute, Map};
use wasm_bindgen_test::wasm_bindgen_test;

/// A configuration of the flow, with the VM state a stream needs.
struct Fixture {
    proxy: FakeProxy,
    plugin: Plugin,
    metrics: MetricIds,
    coordinator: Coordinator,
    rng: Cell<BucketRng>,
}

impl Fixture {
    fn new(json: &str) -> Fixture {
        let proxy = FakeProxy::at(1_700_000_000);
        let setup = Setup { node_label: |_: &str| None, env_var: |_: &str| None, offers_clear_route_cache: true };
        let plugin = Plugin::configure(json.as_bytes(), &setup).unwrap();
        let metrics = plugin.define_metrics(&proxy.vm());
        let config = plugin.config();
        let coordinator = Coordinator::new(&config.service, config.measures(), 7);
        Fixture { proxy, plugin, metrics, coordinator, rng: Cell::new(BucketRng::new(1)) }
    }

    fn env<'a>(&'a self, host: &'a FakeStream<'a>) -> Env<'a, FakeStream<'a>> {
        Env {
            plugin: &self.plugin,
            metrics: &self.metrics,
            coordinator: &self.coordinator,
            rng: &self.rng,
            stamp_tag: None,
            host,
        }
    }

    /// A request through every step, answered by the upstream with `status`.
    fn request(&self, headers: &[(&str, &str)], status: &str) -> FakeStream<'_> {
        let host = FakeStream::new(self.proxy.vm(), headers);
        let mut stream = Stream::new(&self.plugin);
        assert_eq!(stream.on_request_headers(&self.env(&host), true), Action::Continue);
        host.respond(&[(":status", status)]);
        assert_eq!(stream.on_response_headers(&self.env(&host)), Action::Continue);
        stream.on_complete(&self.env(&host));
        host
    }

    fn counter(&self, name: &str) -> u64 {
        self.metrics.flush(&self.proxy.vm());
        self.proxy.stat(name).unwrap_or_else(|| panic!("{name} is not defined"))
    }
}

const FILTER: &str = r#"{"service": "checkout", "split": {"canary_percent": 10}, "filter_state": true}"#;

#[wasm_bindgen_test(unsupported = test)]
fn an_override_is_routed_tagged_both_ways_and_counted() {
    let f = Fixture::new(FILTER);
    let host = f.request(
        &[(":authority", "shop"), (":path", "/"), ("x-canary", "canary"), ("x-canary-version", "stable")],
        "200",
    );
    // The client's own version header is replaced, and the route chosen again.
    assert_eq!(host.lines(Map::Request, "x-canary-version"), ["canary"]);
    assert_eq!(host.lines(Map::Request, "x-canary-reason"), ["override"]);
    assert_eq!(host.route_cleared(), 1);
    assert_eq!(host.lines(Map::Response, "x-canary-version"), ["canary"]);
    assert_eq!(host.lines(Map::Response, "x-canary-reason"), ["override"]);
    assert_eq!(host.filter_state(STATE_VERSION).as_deref(), Some("canary"));
    let requests = "canary_requests_total.service.checkout.version.canary.reporter.router.class.other";
    assert_eq!(f.counter(requests), 1);
    let errors = "canary_responses_total.service.checkout.version.canary.reporter.router.class.other.code_class.5xx";
    assert_eq!(f.counter(errors), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_keyless_user_gets_a_bucket_cookie_and_keeps_it() {
    let f = Fixture::new(FILTER);
    let first = f.request(&[(":authority", "shop"), (":path", "/")], "503");
    let cookie = first.lines(Map::Response, "set-cookie");
    assert_eq!(cookie.len(), 1, "{cookie:?}");
    assert!(cookie[0].starts_with("canary_bucket="), "{cookie:?}");
    let version = first.lines(Map::Response, "x-canary-version");
    // The cookie replayed: the same version, by cookie, and no new cookie.
    let pair = cookie[0].split(';').next().unwrap().to_string();
    let again = f.request(&[(":authority", "shop"), (":path", "/"), ("cookie", &pair)], "200");
    assert_eq!(again.lines(Map::Response, "x-canary-version"), version);
    assert_eq!(again.lines(Map::Response, "x-canary-reason"), ["cookie"]);
    // The 503 counts as a 5xx of the version that served it.
    let errors = format!(
        "canary_responses_total.service.checkout.version.{}.reporter.router.class.other.code_class.5xx",
        version[0]
    );
    assert_eq!(f.counter(&errors), 1);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_host_not_handled_is_left_alone_but_loses_a_forged_version() {
    let f = Fixture::new(r#"{"service": "checkout", "hosts": ["shop.example.com"]}"#);
    let host = f.request(&[(":authority", "admin.example.com"), ("x-canary-version", "canary")], "200");
    assert!(host.lines(Map::Request, "x-canary-version").is_empty());
    assert!(host.lines(Map::Response, "x-canary-version").is_empty(), "not tagged");
    assert_eq!(f.counter("canary_requests_total.service.checkout.version.unknown.reporter.router.class.other"), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_grpc_call_counts_by_its_grpc_status() {
    let f = Fixture::new(FILTER);
    let host = FakeStream::new(
        f.proxy.vm(),
        &[
            (":authority", "shop"),
            (":path", "/pkg.Svc/Get"),
            ("content-type", "application/grpc"),
            ("x-canary", "stable"),
        ],
    );
    let mut stream = Stream::new(&f.plugin);
    stream.on_request_headers(&f.env(&host), false);
    host.respond(&[(":status", "200"), ("content-type", "application/grpc")]);
    stream.on_response_headers(&f.env(&host));
    host.set_attribute(Attribute::ResponseGrpcStatus, 14);
    stream.on_complete(&f.env(&host));
    let unavailable =
        "canary_responses_total.service.checkout.version.stable.reporter.router.class.other.code_class.5xx";
    assert_eq!(f.counter(unavailable), 1, "UNAVAILABLE behind HTTP 200 is a 5xx");
}

#[wasm_bindgen_test(unsupported = test)]
fn a_beacon_waits_for_its_body_and_is_answered_by_the_filter() {
    let f = Fixture::new(r#"{"service": "checkout", "vitals": {}}"#);
    let headers = [(":authority", "shop"), (":path", "/__canary/vitals"), (":method", "POST"), ("x-canary", "canary")];
    let host = FakeStream::new(f.proxy.vm(), &headers);
    let mut stream = Stream::new(&f.plugin);
    assert_eq!(stream.on_request_headers(&f.env(&host), false), Action::Pause);
    assert!(stream.awaits_body());
    let body = br#"[{"name":"page_view"},{"name":"LCP","value":1200}]"#;
    host.receive_body(body);
    assert_eq!(stream.on_request_body(&f.env(&host), body.len(), true), Action::Pause);
    assert!(!stream.awaits_body());
    assert_eq!(host.reply_status(), Some(204));
    assert_eq!(f.counter("canary_web_page_views_total.service.checkout.version.canary"), 1);
    // Never counted as a request.
    stream.on_complete(&f.env(&host));
    assert_eq!(f.counter("canary_requests_total.service.checkout.version.canary.reporter.router.class.other"), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_beacon_given_up_is_answered_late_body() {
    let f = Fixture::new(r#"{"service": "checkout", "vitals": {}}"#);
    let headers = [(":authority", "shop"), (":path", "/__canary/vitals"), (":method", "POST")];
    let host = FakeStream::new(f.proxy.vm(), &headers);
    let mut stream = Stream::new(&f.plugin);
    stream.on_request_headers(&f.env(&host), false);
    assert!(stream.stop_waiting());
    beacon::refuse(&f.env(&host), crate::measure::beacon::Rejection::LateBody);
    assert_eq!(host.reply_status(), Some(408));
    assert!(!stream.stop_waiting(), "given up once");
}

#[wasm_bindgen_test(unsupported = test)]
fn an_observer_tells_a_probe_without_a_routers_tag_nothing() {
    let f = Fixture::new(r#"{"service": "checkout", "role": "observer"}"#);
    let host = FakeStream::new(
        f.proxy.vm(),
        &[(":authority", "checkout"), (":path", "/__canary/revision"), (":method", "GET")],
    );
    let mut stream = Stream::new(&f.plugin);
    assert_eq!(stream.on_request_headers(&f.env(&host), true), Action::Pause);
    assert_eq!(host.reply_status(), Some(404));
}
