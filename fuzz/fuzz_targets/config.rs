//! Arbitrary bytes as the plugin configuration. `Config::parse` must never panic; it must refuse
//! as invalid JSON exactly what serde_json refuses; every configuration it accepts must satisfy
//! the documented limits (route classes, outcomes and the class gates' names resolved to valid
//! indexes included, and the gate's comparison and evaluation period) and keep exactly what the
//! JSON writes (defaults where it writes nothing); its `Classifier` must follow the
//! documented matching rules on a request built for each class, and a `Router` built from it
//! must decide consistently on a few fixed requests.
#![no_main]

#[path = "common.rs"]
mod common;

use canary_gate::config::{
    self, ClassConfig, CompareConfig, Config, GateConfig, KeySource, Limits, Role, SplitMode, FULL_WEIGHT_BP,
    MAX_CLASSES, MAX_COOKIE_AGE_S, MAX_HASH_KEYS, MAX_HOSTS, MAX_MATCH_ENTRIES, MAX_OUTCOMES, MAX_WINDOW_S,
    OTHER_CLASS,
};
use canary_gate::measure::classify::Classifier;
use canary_gate::model::{Reason, Version};
use canary_gate::route::bucket::{BucketRng, BUCKETS};
use canary_gate::route::cookie;
use canary_gate::route::hosts::HostPattern;
use canary_gate::route::{Decision, Router};
use common::{reference_decimal, Headers};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let tree: Option<Value> = serde_json::from_slice(data).ok();
    let parsed = Config::parse(data);
    // Parsing is a pure function of the bytes.
    assert_eq!(parsed, Config::parse(data));
    let c = match parsed {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
            assert!(e.to_string().contains(&format!("field `{}`", e.field)), "{e}");
            // The hand-written JSON parser refuses as JSON exactly what serde_json refuses (a
            // duplicate key in an object closed before a syntax error is reported first).
            let refused_as_json = e.reason.starts_with("invalid JSON: ");
            let duplicate = e.reason.starts_with("duplicate field");
            assert!(!refused_as_json || tree.is_none(), "serde_json accepts what was refused: {e}");
            assert!(tree.is_some() || refused_as_json || duplicate, "serde_json refuses what was not: {e}");
            return;
        }
    };
    let tree = tree.expect("an accepted configuration is JSON");
    check_config(&c);
    check_numbers(&c, &tree);
    check_classifier(&c);
    check_router(c);
});

fn is_header_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with(':')
        && s.bytes().all(|b| config::is_token_byte(b) && !b.is_ascii_uppercase())
}

fn is_version_name(s: &str) -> bool {
    (1..=63).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_token(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(config::is_token_byte)
}

fn is_host(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
}

/// The limits every accepted configuration obeys.
fn check_config(c: &Config) {
    assert!(c.split.canary_bp <= FULL_WEIGHT_BP, "canary_bp {}", c.split.canary_bp);
    assert!((1..=63).contains(&c.service.len()), "{c:?}");
    assert!(c.service.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{c:?}");
    assert!(is_version_name(&c.stable) && is_version_name(&c.canary), "{c:?}");
    assert_ne!(c.stable, c.canary);
    assert!(is_header_name(&c.version_header) && is_header_name(&c.reason_header), "{c:?}");
    assert_ne!(c.version_header, c.reason_header);
    assert!(is_header_name(&c.r#override.header), "{c:?}");
    assert!(is_token(&c.sticky.cookie), "{c:?}");
    assert!((1..=MAX_COOKIE_AGE_S).contains(&c.sticky.max_age_s), "{c:?}");
    assert!((1..=MAX_WINDOW_S).contains(&c.metrics.window_s), "{c:?}");
    assert!((1..=253).contains(&c.version_label.len()), "{c:?}");
    assert!(c.version_label.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)), "{c:?}");
    assert!(c.split.hash_key.len() <= MAX_HASH_KEYS, "{c:?}");
    if c.split.mode == SplitMode::Filter {
        assert!(!c.split.hash_key.contains(&KeySource::Cookie(c.sticky.cookie.clone())), "{c:?}");
    }
    for source in &c.split.hash_key {
        match source {
            KeySource::Header(h) => assert!(is_header_name(h), "{c:?}"),
            KeySource::Cookie(k) => assert!(is_token(k), "{c:?}"),
        }
    }
    assert!(c.hosts.len() <= MAX_HOSTS, "{c:?}");
    for host in &c.hosts {
        match HostPattern::new(host) {
            HostPattern::Exact(h) => assert!(is_host(&h), "{c:?}"),
            HostPattern::Suffix(s) => {
                assert!(s.starts_with('.') && is_host(&s[1..]), "{c:?}");
            }
        }
    }
    let g = &c.gate;
    assert!((1..=MAX_WINDOW_S).contains(&g.window_s), "{g:?}");
    assert!((1..=600).contains(&g.consecutive), "{g:?}");
    check_limits(&g.limits, c);
    if c.role == Role::Observer {
        assert!(!g.has_thresholds() && g.compare.is_none(), "{c:?}");
    }
    assert_eq!(g.has_limits(), g.limits.has_thresholds() || g.classes.iter().any(|k| k.limits.has_thresholds()));
    assert_eq!(g.has_thresholds(), g.has_limits() || g.compare.is_some());
    check_compare(g);
    // A router with a gate evaluates every `gate.eval_ms`; one without, and an observer (no
    // gate), merge once a second.
    let period = if c.role == Role::Router && g.has_thresholds() { g.eval_ms } else { 1_000 };
    assert_eq!(c.eval_period_ms(), period, "{c:?}");
    assert_eq!(c.merged_window_s(), c.metrics.window_s.max(g.window_s));
    assert!(["inbound", "outbound"].contains(&c.direction.as_str()), "{c:?}");
    if c.role == Role::Router {
        assert_eq!(c.direction, "inbound", "direction is an observer's");
    }
    check_classes(c);
    check_outcomes(c);
}

/// `gate.eval_ms` and `gate.compare` within their documented ranges.
fn check_compare(g: &GateConfig) {
    assert!((100..=1_000).contains(&g.eval_ms), "{g:?}");
    assert_eq!(g.slow_us(), g.compare.as_ref().and_then(|k| k.slow_us));
    let Some(k) = &g.compare else { return };
    // alpha in [0.000001, 0.1], min_effect a ratio, slow_ms in (0, 600000] ms, min_users 1..=32
    // (the users sketch has 64 bits).
    assert!((1..=100_000).contains(&k.alpha_ppm), "{k:?}");
    assert!(k.min_effect_ppm <= 1_000_000, "{k:?}");
    assert!(k.slow_us.is_none_or(|us| (1..=600_000_000).contains(&us)), "{k:?}");
    assert!((1..=32).contains(&k.min_users), "{k:?}");
}

/// `[a-z0-9_]{1,32}`: class and outcome names are metric labels.
fn is_label_value(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A `path_prefix` or `path_suffix` entry.
fn is_path_part(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// A `hosts` name without wildcard or trailing dot: labels of `[a-z0-9-]{1,63}`.
fn is_plain_host(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn is_match_list(list: &[String], valid: impl Fn(&str) -> bool) -> bool {
    list.len() <= MAX_MATCH_ENTRIES && list.iter().all(|s| valid(s))
}

fn check_classes(c: &Config) {
    assert!(c.classes.len() <= MAX_CLASSES, "{} classes", c.classes.len());
    for (i, class) in c.classes.iter().enumerate() {
        assert!(is_label_value(&class.name) && class.name != OTHER_CLASS, "{class:?}");
        assert!(c.classes[..i].iter().all(|earlier| earlier.name != class.name), "{:?} named twice", class.name);
        let fields = [&class.path_prefix, &class.path_suffix, &class.method, &class.authority_suffix];
        assert!(class.header.is_some() || fields.iter().any(|f| !f.is_empty()), "a class matching anything: {class:?}");
        assert!(is_match_list(&class.path_prefix, |p| is_path_part(p) && p.starts_with('/')), "{class:?}");
        assert!(is_match_list(&class.path_suffix, is_path_part), "{class:?}");
        let is_method =
            |m: &str| (1..=32).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_uppercase() || b"-_".contains(&b));
        assert!(is_match_list(&class.method, is_method), "{class:?}");
        assert!(is_match_list(&class.authority_suffix, is_plain_host), "{class:?}");
        if let Some(h) = &class.header {
            assert!(is_header_name(&h.name) && h.contains.as_ref().is_none_or(|t| !t.is_empty()), "{class:?}");
        }
    }
    let other = c.classes.len();
    for (i, gate) in c.gate.classes.iter().enumerate() {
        // Indexes 0..other are the configured classes, `other` is one past them.
        assert!(gate.class <= other, "{gate:?}");
        let name = c.classes.get(gate.class).map_or(OTHER_CLASS, |k| k.name.as_str());
        assert_eq!(gate.name, name, "{gate:?}");
        assert!(c.gate.classes[..i].iter().all(|earlier| earlier.class != gate.class), "{gate:?} twice");
        check_limits(&gate.limits, c);
    }
}

fn check_outcomes(c: &Config) {
    assert!(c.outcomes.len() <= MAX_OUTCOMES, "{} outcomes", c.outcomes.len());
    for (i, outcome) in c.outcomes.iter().enumerate() {
        assert!(is_label_value(&outcome.name), "{outcome:?}");
        assert!(c.outcomes[..i].iter().all(|earlier| earlier.name != outcome.name), "{outcome:?} named twice");
        assert!(is_header_name(&outcome.response_header), "{outcome:?}");
        let is_value = |v: &str| v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        assert!(!outcome.equals.is_empty() && is_match_list(&outcome.equals, is_value), "{outcome:?}");
    }
}

/// The thresholds of the gate or of one of its classes.
fn check_limits(l: &Limits, c: &Config) {
    assert!((1..=1_000_000_000).contains(&l.min_requests), "{l:?}");
    for ppm in [l.max_error_ratio_ppm, l.max_error_ratio_over_stable_ppm].into_iter().flatten() {
        assert!(ppm <= 1_000_000, "{l:?}");
    }
    for us in [l.max_p95_us, l.max_p99_us].into_iter().flatten() {
        assert!((1..=600_000_000).contains(&us), "{l:?}");
    }
    for (i, limit) in l.outcomes.iter().enumerate() {
        let outcome = c.outcomes.get(limit.outcome).unwrap_or_else(|| panic!("{limit:?} of no outcome"));
        assert_eq!(limit.name, outcome.name, "{limit:?}");
        assert!(l.outcomes[..i].iter().all(|earlier| earlier.outcome != limit.outcome), "{limit:?} twice");
        // A bound is only kept for a ratio written.
        assert!(limit.min_ppm.is_some() || limit.max_ppm.is_some(), "{limit:?}");
        for ppm in [limit.min_ppm, limit.max_ppm].into_iter().flatten() {
            assert!(ppm <= 1_000_000, "{limit:?}");
        }
    }
    assert_eq!(
        l.has_thresholds(),
        [l.max_error_ratio_ppm, l.max_p95_us, l.max_p99_us, l.max_error_ratio_over_stable_ppm]
            .iter()
            .any(Option::is_some)
            || !l.outcomes.is_empty()
    );
}

/// The number at `path` of `tree`, as written.
fn number_at<'t>(tree: &'t Value, path: &[&str]) -> Option<&'t str> {
    let mut v = tree;
    for key in path {
        v = v.get(key)?;
    }
    match v {
        Value::Number(n) => Some(n.as_str()),
        _ => None,
    }
}

/// The number at `path` of `tree` scaled by `10^decimals`, read by the reference reader.
fn exact_at(tree: &Value, path: &[&str], decimals: u32) -> Option<u128> {
    number_at(tree, path).map(|t| reference_decimal(t, decimals).expect("accepted number is a plain decimal").1)
}

/// Every number the configuration keeps is exactly the decimal written in the JSON, and every
/// class, outcome and class gate written is kept, in order.
fn check_numbers(c: &Config, tree: &Value) {
    assert_eq!(
        exact_at(tree, &["split", "canary_percent"], 2).unwrap_or(1_000),
        u128::from(c.split.canary_bp),
        "{c:?}"
    );
    if let Some(t) = number_at(tree, &["sticky", "max_age_s"]) {
        assert_eq!(t.parse::<u32>().ok(), Some(c.sticky.max_age_s));
    }
    if let Some(t) = number_at(tree, &["metrics", "window_s"]) {
        assert_eq!(t.parse::<u32>().ok(), Some(c.metrics.window_s));
    }
    let g = &c.gate;
    let defaults = GateConfig::default();
    for (name, kept, default) in [
        ("window_s", u64::from(g.window_s), u64::from(defaults.window_s)),
        ("consecutive", u64::from(g.consecutive), u64::from(defaults.consecutive)),
        ("rearm", g.rearm, defaults.rearm),
        ("eval_ms", u64::from(g.eval_ms), u64::from(defaults.eval_ms)),
    ] {
        let written = number_at(tree, &["gate", name]).map(|t| t.parse::<u64>().ok());
        assert_eq!(written.unwrap_or(Some(default)), Some(kept), "gate.{name}");
    }
    let gate = tree.get("gate");
    check_compare_numbers(g, gate.and_then(|v| v.get("compare")));
    check_limit_numbers(&g.limits, gate, Limits::default().min_requests);
    let class_gates = gate.and_then(|v| v.get("classes")).and_then(Value::as_object);
    assert_eq!(class_gates.map_or(0, |m| m.len()), g.classes.len(), "{c:?}");
    for class in &g.classes {
        let written = class_gates.and_then(|m| m.get(&class.name)).expect("a class gate is written");
        // A class's min_requests defaults to the gate's.
        check_limit_numbers(&class.limits, Some(written), g.limits.min_requests);
    }
    let names = |field: &str| -> Vec<&str> {
        let items = tree.get(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        items.iter().map(|item| item.get("name").and_then(Value::as_str).expect("an entry has a name")).collect()
    };
    assert_eq!(names("classes"), c.classes.iter().map(|k| k.name.as_str()).collect::<Vec<_>>());
    assert_eq!(names("outcomes"), c.outcomes.iter().map(|o| o.name.as_str()).collect::<Vec<_>>());
    assert_eq!(tree.get("direction").and_then(Value::as_str).unwrap_or("inbound"), c.direction);
}

/// `gate.compare` is kept exactly when written, with exactly its numbers (the defaults where it
/// writes none).
fn check_compare_numbers(g: &GateConfig, written: Option<&Value>) {
    let Some(written) = written else {
        assert_eq!(g.compare, None);
        return;
    };
    assert!(written.is_object(), "an accepted `gate.compare` is an object: {written}");
    let k = g.compare.as_ref().expect("a written `gate.compare` is kept");
    let defaults = CompareConfig::default();
    let exact = |name: &str, decimals| exact_at(written, &[name], decimals);
    assert_eq!(exact("alpha", 6).unwrap_or(u128::from(defaults.alpha_ppm)), u128::from(k.alpha_ppm), "{k:?}");
    assert_eq!(exact("min_effect", 6).unwrap_or(u128::from(defaults.min_effect_ppm)), u128::from(k.min_effect_ppm));
    assert_eq!(exact("slow_ms", 3), k.slow_us.map(u128::from), "{k:?}");
    let min_users = number_at(written, &["min_users"]).map(|t| t.parse::<u32>().ok());
    assert_eq!(min_users.unwrap_or(Some(defaults.min_users)), Some(k.min_users), "{k:?}");
}

/// `l` holds exactly the thresholds of `written` (the gate or one class's object).
fn check_limit_numbers(l: &Limits, written: Option<&Value>, default_min_requests: u64) {
    let exact = |name: &str, decimals| written.and_then(|w| exact_at(w, &[name], decimals));
    assert_eq!(exact("max_error_ratio", 6), l.max_error_ratio_ppm.map(u128::from));
    assert_eq!(exact("max_error_ratio_over_stable", 6), l.max_error_ratio_over_stable_ppm.map(u128::from));
    assert_eq!(exact("max_p95_ms", 3), l.max_p95_us.map(u128::from));
    assert_eq!(exact("max_p99_ms", 3), l.max_p99_us.map(u128::from));
    let min_requests = written.and_then(|w| number_at(w, &["min_requests"])).map(|t| t.parse::<u64>().ok());
    assert_eq!(min_requests.unwrap_or(Some(default_min_requests)), Some(l.min_requests));
    for field in ["min_outcome_ratio", "max_outcome_ratio"] {
        let bounds = written.and_then(|w| w.get(field)).and_then(Value::as_object);
        for (name, _) in bounds.into_iter().flatten() {
            assert!(l.outcomes.iter().any(|o| o.name == *name), "{field}.{name} is kept");
        }
        for limit in &l.outcomes {
            let kept = if field == "min_outcome_ratio" { limit.min_ppm } else { limit.max_ppm };
            let ratio = written.and_then(|w| exact_at(w, &[field, &limit.name], 6));
            assert_eq!(ratio, kept.map(u128::from), "{field}.{}", limit.name);
        }
    }
}

/// The classifier against the documented rules, on a request built to match each class and on
/// a few fixed ones.
fn check_classifier(c: &Config) {
    let classifier = Classifier::new(c);
    assert_eq!(classifier.other(), c.classes.len());
    let fixed = [
        Headers::default(),
        Headers::default()
            .with(":path", "/api/app.js?v=1")
            .with(":method", "GET")
            .with(":authority", "Shop.Example.com.:443")
            .with("accept", "text/html"),
    ];
    let built = c.classes.iter().map(|class| {
        let first = |list: &[String]| list.first().cloned().unwrap_or_default();
        let path = format!("{}{}", first(&class.path_prefix), first(&class.path_suffix));
        let mut h = Headers::default().with(":path", format!("{path}?q=/x.js"));
        if let Some(method) = class.method.first() {
            h = h.with(":method", method);
        }
        if let Some(host) = class.authority_suffix.first() {
            h = h.with(":authority", format!("a.{}.:8080", host.to_ascii_uppercase()));
        }
        if let Some(header) = &class.header {
            h = h.with(&header.name, format!("<{}>", header.contains.as_deref().unwrap_or_default()));
        }
        h
    });
    let fixed_count = fixed.len();
    let requests: Vec<Headers> = fixed.into_iter().chain(built).collect();
    for (i, h) in requests.iter().enumerate() {
        let mut reads = Vec::new();
        let got = classifier.classify(|name| {
            reads.push(name.to_string());
            h.get_first(name).map(<[u8]>::to_vec)
        });
        assert_eq!(got, reference_class(c, h), "{h:?}");
        if let Some(own) = i.checked_sub(fixed_count) {
            assert!(got <= own, "class {own} or an earlier one matches its own request, got {got}: {h:?}");
        }
        let mut distinct = reads.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), reads.len(), "each value is read at most once: {reads:?}");
        assert!(!c.classes.is_empty() || reads.is_empty(), "nothing is read without classes: {reads:?}");
    }
}

/// The first class whose fields all hold, else `other` (docs/classes.md).
fn reference_class(c: &Config, h: &Headers) -> usize {
    c.classes.iter().position(|class| reference_matches(class, h)).unwrap_or(c.classes.len())
}

fn reference_matches(class: &ClassConfig, h: &Headers) -> bool {
    let any = |list: &[String], hit: &dyn Fn(&[u8]) -> bool| list.is_empty() || list.iter().any(|e| hit(e.as_bytes()));
    let path = h.get_first(":path").map(|p| p.split(|&b| b == b'?').next().unwrap_or_default());
    let path_ok = (class.path_prefix.is_empty() && class.path_suffix.is_empty())
        || path.is_some_and(|p| {
            any(&class.path_prefix, &|e| p.starts_with(e)) && any(&class.path_suffix, &|e| p.ends_with(e))
        });
    let method_ok = class.method.is_empty() || h.get_first(":method").is_some_and(|m| any(&class.method, &|e| e == m));
    // The host: no port (what follows the first `:`, or the `]` of an IPv6 literal), no
    // brackets, no trailing dot, any case.
    let host = h.get_first(":authority").map(|a| {
        let a = a.to_ascii_lowercase();
        let host = if a.first() == Some(&b'[') {
            a[1..].split(|&b| b == b']').next().unwrap_or_default().to_vec()
        } else {
            a.split(|&b| b == b':').next().unwrap_or_default().to_vec()
        };
        host.strip_suffix(b".").map(<[u8]>::to_vec).unwrap_or(host)
    });
    let authority_ok = class.authority_suffix.is_empty()
        || host.is_some_and(|host| {
            any(&class.authority_suffix, &|s| {
                host == s || (host.ends_with(s) && host[..host.len() - s.len()].ends_with(b"."))
            })
        });
    let header_ok = class.header.as_ref().is_none_or(|m| {
        h.get_first(&m.name)
            .is_some_and(|v| m.contains.as_ref().is_none_or(|text| v.windows(text.len()).any(|w| w == text.as_bytes())))
    });
    path_ok && method_ok && authority_ok && header_ok
}

fn check_router(c: Config) {
    let router = Router::new(c.clone());
    assert_eq!(router.config(), &c);
    let (stable, canary) = (c.stable.clone(), c.canary.clone());

    // Fixed requests: nothing, an override each way, a user id, each hash key source, the
    // sticky cookie holding a bucket and a version name.
    let mut requests = vec![
        Headers::default(),
        Headers::default().with(&c.r#override.header, &stable),
        Headers::default().with(&c.r#override.header, &canary),
        Headers::default().with(&c.r#override.header, "no-such-version").with("x-user-id", "alice"),
        Headers::default().with("x-user-id", "alice"),
        Headers::default().with("cookie", format!("{}=42", c.sticky.cookie)),
        Headers::default().with("cookie", format!("{}={canary}", c.sticky.cookie)),
        Headers::default().with("cookie", format!("{}=9999; session=s1", c.sticky.cookie)),
        Headers::default().with(":authority", "shop.example.com"),
    ];
    for source in &c.split.hash_key {
        requests.push(match source {
            KeySource::Header(h) => Headers::default().with(h, "user-7"),
            KeySource::Cookie(k) => Headers::default().with("cookie", format!("{k}=user-7")),
        });
    }

    for (i, h) in requests.iter().enumerate() {
        for gate in [false, true] {
            let mut rng = BucketRng::new(i as u64);
            let d = router.decide(h, &mut rng, gate);
            let mut again = BucketRng::new(i as u64);
            assert_eq!(d, router.decide(h, &mut again, gate), "decide is deterministic");
            check_decision(&router, h, &d, gate);
        }
    }

    // Overrides always win, also over a tripped gate.
    for gate in [false, true] {
        let d = router.decide(&requests[1], &mut BucketRng::new(1), gate);
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Stable), Reason::Override, None));
        let d = router.decide(&requests[2], &mut BucketRng::new(2), gate);
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Canary), Reason::Override, None));
    }

    // Cluster names.
    assert_eq!(router.version_of_cluster(stable.as_bytes()), Some(Version::Stable));
    assert_eq!(router.version_of_cluster(canary.as_bytes()), Some(Version::Canary));
    let istio = format!("outbound|8080|{canary}|{}.ns.svc.cluster.local", c.service);
    assert_eq!(router.version_of_cluster(istio.as_bytes()), Some(Version::Canary));
    assert_eq!(router.version_of_cluster(format!("{istio}|x").as_bytes()), None);
    assert_eq!(router.version_named(b""), None);

    // Hosts.
    let handles = |authority: &[u8]| router.handles(|| Some(authority.to_vec()));
    assert_eq!(router.handles(|| None), c.hosts.is_empty());
    for host in &c.hosts {
        let host = HostPattern::new(host);
        let name = match &host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Suffix(s) => format!("a{s}"),
        };
        assert!(handles(name.as_bytes()), "{name} in {:?}", c.hosts);
        assert!(handles(format!("{}:8443", name.to_ascii_uppercase()).as_bytes()), "{name}");
        if let HostPattern::Suffix(s) = &host {
            // A wildcard needs a label in front of its suffix.
            assert!(!host.matches(s.as_bytes()) && !host.matches(&s.as_bytes()[1..]), "{s}");
        }
    }
    if c.hosts.is_empty() {
        assert!(handles(b"\xff\xfe:1"));
    }
}

fn check_decision(router: &Router, h: &Headers, d: &Decision, gate: bool) {
    let c = router.config();
    let override_version = h.get_first(&c.r#override.header).and_then(|v| router.version_named(v));
    if let Some(v) = override_version {
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(v), Reason::Override, None), "{h:?}");
        return;
    }
    assert_ne!(d.reason, Reason::Override, "{h:?}");
    if gate {
        assert_eq!((d.version, d.reason, d.new_bucket), (Some(Version::Stable), Reason::Gate, None), "{h:?}");
        assert_eq!(router.sticky_cookie_for(d, d.version, None), None);
        return;
    }
    assert_eq!(d.new_bucket.is_some(), d.reason == Reason::Random, "{d:?}");
    match c.split.mode {
        SplitMode::Filter => {
            assert!(matches!(d.reason, Reason::Hash | Reason::Cookie | Reason::Random), "{d:?}");
            let v = d.version.expect("filter mode always chooses");
            if c.split.canary_bp == 0 {
                assert_eq!(v, Version::Stable);
            }
            if c.split.canary_bp == FULL_WEIGHT_BP {
                assert_eq!(v, Version::Canary);
            }
            if let Some(b) = d.new_bucket {
                assert!(b < BUCKETS);
                assert_eq!(v, router.version_of_bucket(b));
                let set = router.sticky_cookie_for(d, d.version, None).expect("a new bucket is stored");
                let pair = set.split(';').next().unwrap_or_default();
                assert_eq!(cookie::find(pair.as_bytes(), &c.sticky.cookie).and_then(cookie::parse_bucket), Some(b));
                assert!(set.contains(&format!("; Max-Age={};", c.sticky.max_age_s)), "{set}");
                assert_eq!(set.ends_with("; Secure"), c.sticky.secure, "{set}");
            } else {
                assert_eq!(router.sticky_cookie_for(d, d.version, None), None);
            }
            if d.reason == Reason::Cookie {
                let stored = h
                    .get_first("cookie")
                    .and_then(|v| cookie::find(v, &c.sticky.cookie).and_then(cookie::parse_bucket))
                    .expect("a cookie decision has a bucket cookie");
                assert_eq!(v, router.version_of_bucket(stored));
            }
        }
        SplitMode::Mesh => {
            assert!(matches!(d.reason, Reason::Mesh | Reason::Pin), "{d:?}");
            assert_eq!(d.version.is_some(), d.reason == Reason::Pin, "{d:?}");
            if d.reason == Reason::Mesh {
                let set = router.sticky_cookie_for(d, Some(Version::Canary), None).expect("mesh choice is pinned");
                assert!(set.starts_with(&format!("{}={};", c.sticky.cookie, c.canary)), "{set}");
                assert_eq!(router.sticky_cookie_for(d, None, None), None);
            }
        }
    }
}
