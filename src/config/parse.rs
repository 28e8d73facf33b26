//! Reading the JSON into [`Config`]: the configuration starts as its `Default` and each object
//! updates its part in place with what the JSON sets, validated field by field.

use super::json::{Fields, Item};
use super::value;
use super::{check, classes, decimal, grpc, refuse, vitals, ConfigError};
use super::{
    ClassGate, CompareConfig, Config, FleetConfig, GateConfig, KeySource, Limits, MetricsConfig, OutcomeLimit,
    OverrideConfig, Role, Secret, SplitConfig, SplitMode, StickyConfig, EVAL_MS_RANGE, FLEET_AGE_MS_RANGE,
    MAX_COOKIE_AGE_S, MAX_FLEET_PODS, MAX_HASH_KEYS, MAX_HOSTS, MAX_LATENCY_MS, MAX_MIN_USERS, MAX_OVERRIDE_TOKENS,
    MAX_WINDOW_S, MIN_STICKY_KEY_BYTES, OTHER_CLASS,
};

/// Parses and validates the plugin configuration bytes.
pub fn config(bytes: &[u8]) -> Result<Config, ConfigError> {
    let value = value::parse(bytes)?;
    let mut config = Config::default();
    Fields::read(String::new(), &value, |f| top_level(f, &mut config))?;
    resolve_gate_names(&mut config)?;
    if config.role == Role::Observer && config.gate.has_thresholds() {
        return Err(refuse(
            "gate",
            "thresholds and `compare` apply to the router role only (an observer never reroutes)",
        ));
    }
    if config.split.mode == SplitMode::Filter {
        sticky_cookie_is_no_hash_key(&config)?;
    }
    if config.gate.fleet.is_some() && config.role == Role::Observer {
        return Err(refuse("gate.fleet", "applies to the router role only (observers report, routers judge)"));
    }
    if config.gate.fleet.is_some() && !config.gate.has_thresholds() {
        return Err(refuse(
            "gate.fleet",
            "judges nothing without a threshold or `compare` to judge the fleet's counts",
        ));
    }
    if config.gate.fleet.is_some() && config.split.mode != SplitMode::Mesh {
        return Err(refuse(
            "gate.fleet",
            "applies to mesh-mode routers (`split.mode: mesh`): reports are keyed on the revision serving each subset",
        ));
    }
    vitals_fit(&config)?;
    Ok(config)
}

/// The beacon endpoint belongs to a router, on a path of its own; its limits need it.
fn vitals_fit(config: &Config) -> Result<(), ConfigError> {
    match &config.vitals {
        Some(_) if config.role == Role::Observer => {
            Err(refuse("vitals", "applies to the router role only (the router knows which version a user gets)"))
        }
        Some(v) if v.path == config.revision_probe_path => {
            Err(refuse("vitals.path", "must differ from revision_probe_path"))
        }
        None if config.gate.vitals.is_some() => {
            Err(refuse("gate.vitals", "needs `vitals`, the endpoint that collects what it limits"))
        }
        _ if config.gate.vitals.as_ref().is_some_and(|l| !l.has_thresholds()) => Err(refuse(
            "gate.vitals",
            "sets no limit: give one of `max_lcp_p75_ms`, `max_inp_p75_ms`, `max_cls_p75`, `max_js_error_ratio`",
        )),
        _ => Ok(()),
    }
}

/// A keyless user's bucket is stored in the sticky cookie; were it also a hash-key cookie, the
/// stored bucket would be hashed as a user key on the next request and move the user.
fn sticky_cookie_is_no_hash_key(config: &Config) -> Result<(), ConfigError> {
    let cookie = &config.sticky.cookie;
    let clash = config.split.hash_key.iter().position(|k| matches!(k, KeySource::Cookie(c) if c == cookie));
    match clash {
        None => Ok(()),
        Some(i) => Err(refuse(
            "sticky.cookie",
            format!(
                "`{cookie}` is also the hash key cookie `split.hash_key[{i}].cookie`{}: a stored bucket would be read \
                 as a user key and move keyless users between versions",
                if config.split.hash_key == SplitConfig::default().hash_key { " (by default)" } else { "" }
            ),
        )),
    }
}

fn top_level(f: &Fields<'_>, c: &mut Config) -> Result<(), ConfigError> {
    c.service = f.string("service")?.ok_or_else(|| refuse(f.path(), "missing field `service`"))?.to_string();
    check::service("service", &c.service)?;
    if let Some(i) = f.variant("role", &["router", "observer"])? {
        c.role = if i == 0 { Role::Router } else { Role::Observer };
    }
    f.set_string("version_header", &mut c.version_header)?;
    f.set_string("reason_header", &mut c.reason_header)?;
    check::header_name("version_header", &c.version_header)?;
    check::header_name("reason_header", &c.reason_header)?;
    if c.version_header == c.reason_header {
        return Err(refuse("reason_header", "must differ from version_header"));
    }
    f.set_string("stable", &mut c.stable)?;
    f.set_string("canary", &mut c.canary)?;
    check::version_name("stable", &c.stable)?;
    check::version_name("canary", &c.canary)?;
    if c.stable == c.canary {
        return Err(refuse("canary", "must differ from stable"));
    }
    f.section("split", &mut c.split, split)?;
    f.section("override", &mut c.r#override, override_header)?;
    // The filter replaces the version and reason headers a client sends; an override read
    // from one of them would hand every client the version of its choice.
    if [&c.version_header, &c.reason_header].contains(&&c.r#override.header) {
        return Err(refuse("override.header", "must differ from version_header and reason_header"));
    }
    if [&c.version_header, &c.reason_header].contains(&&c.r#override.token_header) {
        return Err(refuse("override.token_header", "must differ from version_header and reason_header"));
    }
    f.section("sticky", &mut c.sticky, sticky)?;
    f.section("metrics", &mut c.metrics, metrics)?;
    f.set_string("version_label", &mut c.version_label)?;
    check::label_name("version_label", &c.version_label)?;
    f.set_string("revision_label", &mut c.revision_label)?;
    check::label_name("revision_label", &c.revision_label)?;
    f.set_string("revision_header", &mut c.revision_header)?;
    check::header_name("revision_header", &c.revision_header)?;
    // The router reads it from responses and the observer sets it; as any other of the
    // filter's headers it would be overwritten or read as a request's choice.
    if [&c.version_header, &c.reason_header, &c.r#override.header].contains(&&c.revision_header) {
        return Err(refuse("revision_header", "must differ from version_header, reason_header and override.header"));
    }
    f.set_string("revision_probe_path", &mut c.revision_probe_path)?;
    check::probe_path("revision_probe_path", &c.revision_probe_path)?;
    f.section("gate", &mut c.gate, gate)?;
    if let Some(items) = f.array("hosts")? {
        c.hosts = hosts(items)?;
    }
    f.set_boolean("filter_state", &mut c.filter_state)?;
    if let Some(items) = f.array("classes")? {
        c.classes = classes::classes("classes", items)?;
    }
    if let Some(items) = f.array("outcomes")? {
        c.outcomes = classes::outcomes("outcomes", items)?;
    }
    f.section("vitals", &mut c.vitals, |f, into| vitals::endpoint(f, into.get_or_insert_with(Default::default)))?;
    f.section("grpc", &mut c.grpc, grpc::grpc)?;
    if let Some(i) = f.variant("direction", &["inbound", "outbound"])? {
        if c.role != Role::Observer {
            return Err(refuse("direction", "applies to the observer role only (a router handles inbound requests)"));
        }
        c.direction = if i == 0 { "inbound" } else { "outbound" }.to_string();
    }
    Ok(())
}

fn split(f: &Fields<'_>, s: &mut SplitConfig) -> Result<(), ConfigError> {
    if let Some(i) = f.variant("mode", &["filter", "mesh"])? {
        s.mode = if i == 0 { SplitMode::Filter } else { SplitMode::Mesh };
    }
    if let Some(text) = f.number_text("canary_percent")? {
        s.canary_bp = decimal::percent_to_bp(text)?;
    }
    if let Some(items) = f.array("hash_key")? {
        s.hash_key = hash_keys(&f.path_of("hash_key"), items)?;
    }
    Ok(())
}

fn hash_keys(path: &str, items: Vec<Item<'_>>) -> Result<Vec<KeySource>, ConfigError> {
    if items.len() > MAX_HASH_KEYS {
        return Err(refuse(path, format!("at most {MAX_HASH_KEYS} entries, got {}", items.len())));
    }
    items
        .into_iter()
        .map(|item| {
            let path = item.path.clone();
            let (mut header, mut cookie) = (None, None);
            item.object(|source| {
                header = source.string("header")?;
                cookie = source.string("cookie")?;
                if let Some(h) = header {
                    check::header_name(&source.path_of("header"), h)?;
                }
                if let Some(c) = cookie {
                    check::token(&source.path_of("cookie"), c)?;
                }
                Ok(())
            })?;
            match (header, cookie) {
                (Some(h), None) => Ok(KeySource::Header(h.to_string())),
                (None, Some(c)) => Ok(KeySource::Cookie(c.to_string())),
                _ => Err(refuse(&path, "needs exactly one of `header` or `cookie`")),
            }
        })
        .collect()
}

fn override_header(f: &Fields<'_>, o: &mut OverrideConfig) -> Result<(), ConfigError> {
    f.set_string("header", &mut o.header)?;
    check::header_name(&f.path_of("header"), &o.header)?;
    f.set_string("token_header", &mut o.token_header)?;
    check::header_name(&f.path_of("token_header"), &o.token_header)?;
    if o.token_header == o.header {
        return Err(refuse(&f.path_of("token_header"), "must differ from override.header"));
    }
    if let Some(items) = f.array("token_sha256")? {
        let path = f.path_of("token_sha256");
        if items.is_empty() || items.len() > MAX_OVERRIDE_TOKENS {
            let why = format!(
                "1 to {MAX_OVERRIDE_TOKENS} digests (leave it out to take overrides without a token), got {}",
                items.len()
            );
            return Err(refuse(&path, why));
        }
        for item in items {
            o.token_sha256.push(check::sha256_hex(&item.path, item.string()?)?);
        }
    }
    Ok(())
}

/// A sticky cookie key: at least [`MIN_STICKY_KEY_BYTES`] bytes.
pub(super) fn sticky_key(field: &str, key: &[u8]) -> Result<(), ConfigError> {
    if key.len() < MIN_STICKY_KEY_BYTES {
        let why =
            format!("a key of at least {MIN_STICKY_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`), got {}", key.len());
        return Err(refuse(field, why));
    }
    Ok(())
}

fn sticky(f: &Fields<'_>, s: &mut StickyConfig) -> Result<(), ConfigError> {
    f.set_string("cookie", &mut s.cookie)?;
    check::token(&f.path_of("cookie"), &s.cookie)?;
    if let Some(age) = f.integer("max_age_s", u64::from(u32::MAX))? {
        s.max_age_s = check::in_range(&f.path_of("max_age_s"), age, 1, u64::from(MAX_COOKIE_AGE_S), " seconds")? as u32;
    }
    f.set_boolean("secure", &mut s.secure)?;
    let key = f.string("key")?;
    s.key_env = f.string("key_env")?.map(str::to_string);
    match (key, &s.key_env) {
        (Some(_), Some(_)) => return Err(refuse(&f.path_of("key_env"), "set `key` or `key_env`, not both")),
        (Some(key), None) => {
            sticky_key(&f.path_of("key"), key.as_bytes())?;
            s.key = Some(Secret(key.as_bytes().to_vec()));
        }
        (None, Some(name)) => check::env_name(&f.path_of("key_env"), name)?,
        (None, None) => {}
    }
    Ok(())
}

fn metrics(f: &Fields<'_>, m: &mut MetricsConfig) -> Result<(), ConfigError> {
    if let Some(s) = f.integer("window_s", u64::from(u32::MAX))? {
        m.window_s = check::in_range(&f.path_of("window_s"), s, 1, u64::from(MAX_WINDOW_S), " seconds")? as u32;
    }
    Ok(())
}

fn gate(f: &Fields<'_>, g: &mut GateConfig) -> Result<(), ConfigError> {
    let in_range = |name: &'static str, into: &mut u64, low: u64, high: u64| -> Result<(), ConfigError> {
        if let Some(value) = f.integer(name, u64::MAX)? {
            *into = check::in_range(&f.path_of(name), value, low, high, "")?;
        }
        Ok(())
    };
    let mut window_s = u64::from(g.window_s);
    in_range("window_s", &mut window_s, 1, u64::from(MAX_WINDOW_S))?;
    g.window_s = window_s as u32;
    limits(f, &mut g.limits)?;
    let mut consecutive = u64::from(g.consecutive);
    in_range("consecutive", &mut consecutive, 1, 600)?;
    g.consecutive = consecutive as u32;
    f.set_boolean("dry_run", &mut g.dry_run)?;
    if let Some(rearm) = f.integer("rearm", u64::MAX)? {
        g.rearm = rearm;
    }
    let mut eval_ms = u64::from(g.eval_ms);
    in_range("eval_ms", &mut eval_ms, EVAL_MS_RANGE.0, EVAL_MS_RANGE.1)?;
    g.eval_ms = eval_ms as u32;
    f.section("compare", &mut g.compare, |f, into| compare(f, into.insert(CompareConfig::default())))?;
    f.section("vitals", &mut g.vitals, |f, into| vitals::limits(f, into.get_or_insert_with(Default::default)))?;
    f.section("fleet", &mut g.fleet, |f, into| fleet(f, into.get_or_insert_with(Default::default)))?;
    if let Some(members) = f.members("classes")? {
        for (name, item) in members {
            // A class's minimum volume defaults to the service's.
            let mut class_limits = Limits { min_requests: g.limits.min_requests, ..Limits::default() };
            item.object(|c| limits(c, &mut class_limits))?;
            // The index is resolved once the classes are read.
            g.classes.push(ClassGate { class: usize::MAX, name: name.to_string(), limits: class_limits });
        }
    }
    Ok(())
}

/// `gate.fleet`.
fn fleet(f: &Fields<'_>, c: &mut FleetConfig) -> Result<(), ConfigError> {
    if let Some(value) = f.integer("max_pods", u64::MAX)? {
        c.max_pods = check::in_range(&f.path_of("max_pods"), value, 1, MAX_FLEET_PODS, "")? as u32;
    }
    if let Some(value) = f.integer("max_age_ms", u64::MAX)? {
        let (low, high) = FLEET_AGE_MS_RANGE;
        c.max_age_ms = check::in_range(&f.path_of("max_age_ms"), value, low, high, " ms")? as u32;
    }
    Ok(())
}

/// `gate.compare`.
fn compare(f: &Fields<'_>, c: &mut CompareConfig) -> Result<(), ConfigError> {
    if let Some(text) = f.number_text("alpha")? {
        let path = f.path_of("alpha");
        c.alpha_ppm = decimal::parse_decimal(text, 6)
            .ok()
            .filter(|ppm| (1..=100_000).contains(ppm))
            .ok_or_else(|| refuse(&path, format!("must be in [0.000001, 0.1], got {text}")))?;
    }
    if let Some(text) = f.number_text("min_effect")? {
        let path = f.path_of("min_effect");
        c.min_effect_ppm = ratio_ppm(&path, text)?;
        if c.min_effect_ppm >= 1_000_000 {
            return Err(refuse(&path, format!("must be below 1 (no effect exceeds 1), got {text}")));
        }
    }
    c.slow_us = latency_us(f, "slow_ms")?;
    if let Some(value) = f.integer("min_users", u64::MAX)? {
        c.min_users = check::in_range(&f.path_of("min_users"), value, 1, MAX_MIN_USERS, "")? as u32;
    }
    Ok(())
}

/// A latency in ms with at most 3 decimals, in `(0, MAX_LATENCY_MS]`, in microseconds.
pub(super) fn latency_us(f: &Fields<'_>, name: &'static str) -> Result<Option<u64>, ConfigError> {
    let Some(text) = f.number_text(name)? else { return Ok(None) };
    let us = decimal::parse_decimal(text, 3).map_err(|reason| refuse(&f.path_of(name), reason))?;
    if us == 0 || us > MAX_LATENCY_MS * 1000 {
        return Err(refuse(&f.path_of(name), format!("must be in (0, {MAX_LATENCY_MS}] ms, got {text}")));
    }
    Ok(Some(us))
}

/// A ratio in `[0, 1]` with at most 6 decimals, in parts per million.
pub(super) fn ratio_ppm(path: &str, text: &str) -> Result<u64, ConfigError> {
    let ppm = decimal::parse_decimal(text, 6).map_err(|reason| refuse(path, reason))?;
    if ppm > 1_000_000 {
        return Err(refuse(path, format!("must be between 0 and 1, got {text}")));
    }
    Ok(ppm)
}

/// The thresholds of the gate or of one of its classes.
fn limits(f: &Fields<'_>, l: &mut Limits) -> Result<(), ConfigError> {
    let ratio = |name: &'static str| -> Result<Option<u64>, ConfigError> {
        f.number_text(name)?.map(|text| ratio_ppm(&f.path_of(name), text)).transpose()
    };
    if let Some(value) = f.integer("min_requests", u64::MAX)? {
        l.min_requests = check::in_range(&f.path_of("min_requests"), value, 1, 1_000_000_000, "")?;
    }
    l.max_error_ratio_ppm = ratio("max_error_ratio")?;
    l.max_p95_us = latency_us(f, "max_p95_ms")?;
    l.max_p99_us = latency_us(f, "max_p99_ms")?;
    l.max_error_ratio_over_stable_ppm = ratio("max_error_ratio_over_stable")?;
    for (field, is_min) in [("min_outcome_ratio", true), ("max_outcome_ratio", false)] {
        for (name, item) in f.members(field)?.unwrap_or_default() {
            let ppm = ratio_ppm(&item.path, item.number_text()?)?;
            let limit = match l.outcomes.iter().position(|o| o.name == name) {
                Some(i) => l.outcomes.get_mut(i),
                None => {
                    // The index is resolved once the outcomes are read.
                    l.outcomes.push(OutcomeLimit {
                        outcome: usize::MAX,
                        name: name.to_string(),
                        min_ppm: None,
                        max_ppm: None,
                    });
                    l.outcomes.last_mut()
                }
            };
            if let Some(limit) = limit {
                if is_min {
                    limit.min_ppm = Some(ppm);
                } else {
                    limit.max_ppm = Some(ppm);
                }
            }
        }
    }
    for limit in &l.outcomes {
        if let (Some(min), Some(max)) = (limit.min_ppm, limit.max_ppm) {
            if min > max {
                let path = format!("{}.{}", f.path_of("min_outcome_ratio"), limit.name);
                let reason = format!("must not exceed `max_outcome_ratio.{}`: no share could pass both", limit.name);
                return Err(refuse(&path, reason));
            }
        }
    }
    Ok(())
}

/// Resolves the class and outcome names the gate names, refusing unknown ones.
fn resolve_gate_names(c: &mut Config) -> Result<(), ConfigError> {
    let outcome_names: Vec<String> = c.outcomes.iter().map(|o| o.name.clone()).collect();
    let resolve_outcomes = |path: &str, l: &mut Limits| -> Result<(), ConfigError> {
        for limit in &mut l.outcomes {
            limit.outcome = outcome_names
                .iter()
                .position(|n| *n == limit.name)
                .ok_or_else(|| refuse(path, format!("outcome `{}` is not one of `outcomes`", limit.name)))?;
        }
        Ok(())
    };
    resolve_outcomes("gate", &mut c.gate.limits)?;
    let class_names: Vec<&str> = c.classes.iter().map(|k| k.name.as_str()).chain([OTHER_CLASS]).collect();
    for class in &mut c.gate.classes {
        let path = format!("gate.classes.{}", class.name);
        class.class = class_names
            .iter()
            .position(|n| *n == class.name)
            .ok_or_else(|| refuse(&path, format!("`{}` is not one of `classes` (or `{OTHER_CLASS}`)", class.name)))?;
        resolve_outcomes(&path, &mut class.limits)?;
    }
    Ok(())
}

fn hosts(items: Vec<Item<'_>>) -> Result<Vec<String>, ConfigError> {
    if items.len() > MAX_HOSTS {
        return Err(refuse("hosts", format!("at most {MAX_HOSTS} entries, got {}", items.len())));
    }
    items
        .into_iter()
        .map(|item| {
            let host = item.string()?;
            check::host_pattern(&item.path, host)?;
            Ok(host.to_string())
        })
        .collect()
}
