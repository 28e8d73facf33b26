//! `classes` and `outcomes`: named route classes a request is counted under, and named
//! classifications of a response by a response header. Read and validated here; the
//! measurement's classifier matches them.

use super::json::{Fields, Item};
use super::{check, refuse, ConfigError};
use crate::model::quoted;

/// Upper bound on `classes`: each multiplies the per-version series.
pub const MAX_CLASSES: usize = 16;
/// Upper bound on `outcomes`: each adds a counter per version and class.
pub const MAX_OUTCOMES: usize = 8;
/// Upper bound on the entries of one match list (`path_prefix`, `equals`...).
pub const MAX_MATCH_ENTRIES: usize = 16;
/// The class of a request no configured class matches.
pub const OTHER_CLASS: &str = "other";

/// One entry of `classes`: its match fields combine with AND; an empty list matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassConfig {
    /// `[a-z0-9_]{1,32}`, unique, not `other`: the `class` metric label.
    pub name: String,
    /// The path (query string excluded) starts with one of these.
    pub path_prefix: Vec<String>,
    /// The path (query string excluded) ends with one of these.
    pub path_suffix: Vec<String>,
    /// The method is one of these.
    pub method: Vec<String>,
    /// A request header is present, or contains a text.
    pub header: Option<HeaderMatch>,
    /// The host (`:authority` without port, lower-case) is one of these or a subdomain of one.
    pub authority_suffix: Vec<String>,
}

/// `classes[i].header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    /// `None`: present; `Some(text)`: the (first) value contains `text`, case-sensitively.
    pub contains: Option<String>,
}

/// One entry of `outcomes`: a response whose header `response_header` equals one of `equals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeConfig {
    /// `[a-z0-9_]{1,32}`, unique: the `outcome` metric label.
    pub name: String,
    /// Lower-case response header name.
    pub response_header: String,
    /// Values that make the outcome, compared exactly.
    pub equals: Vec<String>,
}

/// `[a-z0-9_]{1,32}`: class and outcome names become metric labels and stat name segments.
fn label_value(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must match [a-z0-9_]{{1,32}}, got {}", quoted(name.as_bytes()))))
    }
}

/// A name not already taken by an earlier entry.
fn unique(field: &str, name: &str, earlier: impl IntoIterator<Item = impl AsRef<str>>) -> Result<(), ConfigError> {
    if earlier.into_iter().any(|n| n.as_ref() == name) {
        return Err(refuse(field, format!("`{name}` is named twice")));
    }
    Ok(())
}

/// A non-empty list of at most [`MAX_MATCH_ENTRIES`] strings, each checked by `valid`.
// One copy for every list (`dyn`): a generic one per caller cost kilobytes of filter.
#[inline(never)]
fn string_list(
    f: &Fields<'_>,
    name: &'static str,
    valid: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
) -> Result<Vec<String>, ConfigError> {
    let Some(items) = f.array(name)? else { return Ok(Vec::new()) };
    let path = f.path_of(name);
    if items.is_empty() || items.len() > MAX_MATCH_ENTRIES {
        return Err(refuse(&path, format!("needs 1..={MAX_MATCH_ENTRIES} entries, got {}", items.len())));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let text = item.string()?;
        valid(&item.path, text)?;
        out.push(text.to_string());
    }
    Ok(out)
}

/// Visible ASCII, no query or fragment, at most 128 bytes.
fn path_part(field: &str, text: &str, must_start_with_slash: bool) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&text.len())
        && (!must_start_with_slash || text.starts_with('/'))
        && text.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if ok {
        Ok(())
    } else {
        let start = if must_start_with_slash { "starting with `/`, " } else { "" };
        Err(refuse(
            field,
            format!("must be 1..=128 visible ASCII characters, {start}no `?` or `#`, got {}", quoted(text.as_bytes())),
        ))
    }
}

/// An HTTP method: an upper-case token.
fn method(field: &str, text: &str) -> Result<(), ConfigError> {
    if (1..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') {
        Ok(())
    } else {
        Err(refuse(field, format!("must be an upper-case HTTP method, got {}", quoted(text.as_bytes()))))
    }
}

/// Reads `classes`.
#[inline(never)]
pub fn classes(path: &str, items: Vec<Item<'_>>) -> Result<Vec<ClassConfig>, ConfigError> {
    if items.len() > MAX_CLASSES {
        return Err(refuse(path, format!("at most {MAX_CLASSES} entries, got {}", items.len())));
    }
    let mut classes: Vec<ClassConfig> = Vec::with_capacity(items.len());
    for item in items {
        let at = item.path.clone();
        let class = item.object(class)?;
        let matches_anything = class.path_prefix.is_empty()
            && class.path_suffix.is_empty()
            && class.method.is_empty()
            && class.header.is_none()
            && class.authority_suffix.is_empty();
        if matches_anything {
            return Err(refuse(
                &at,
                "needs at least one of `path_prefix`, `path_suffix`, `method`, `header`, `authority_suffix`",
            ));
        }
        unique(&format!("{at}.name"), &class.name, classes.iter().map(|c| c.name.as_str()))?;
        classes.push(class);
    }
    Ok(classes)
}

fn class(f: &Fields<'_>) -> Result<ClassConfig, ConfigError> {
    let name = f.string("name")?.ok_or_else(|| refuse(f.path(), "missing field `name`"))?;
    label_value(&f.path_of("name"), name)?;
    if name == OTHER_CLASS {
        return Err(refuse(&f.path_of("name"), "`other` is the class of requests no class matches"));
    }
    let class = ClassConfig {
        name: name.to_string(),
        path_prefix: string_list(f, "path_prefix", &|at, t| path_part(at, t, true))?,
        path_suffix: string_list(f, "path_suffix", &|at, t| path_part(at, t, false))?,
        method: string_list(f, "method", &method)?,
        header: header_match(f)?,
        authority_suffix: string_list(f, "authority_suffix", &|at, t| {
            check::host_pattern(at, t)?;
            if t.starts_with('*') || t.ends_with('.') {
                return Err(refuse(
                    at,
                    format!("must be a host name (it matches its subdomains too), got {}", quoted(t.as_bytes())),
                ));
            }
            Ok(())
        })?,
    };
    Ok(class)
}

fn header_match(f: &Fields<'_>) -> Result<Option<HeaderMatch>, ConfigError> {
    let mut found = None;
    f.section("header", &mut found, |h, found| {
        let name = h.string("name")?.ok_or_else(|| refuse(h.path(), "missing field `name`"))?;
        check::header_name(&h.path_of("name"), name)?;
        let mut present = false;
        h.set_boolean("present", &mut present)?;
        let contains = h.string("contains")?;
        if contains == Some("") {
            return Err(refuse(&h.path_of("contains"), "must not be empty"));
        }
        if present == contains.is_some() {
            return Err(refuse(h.path(), "needs exactly one of `\"present\": true` or `contains`"));
        }
        *found = Some(HeaderMatch { name: name.to_string(), contains: contains.map(str::to_string) });
        Ok(())
    })?;
    Ok(found)
}

/// Reads `outcomes`.
#[inline(never)]
pub fn outcomes(path: &str, items: Vec<Item<'_>>) -> Result<Vec<OutcomeConfig>, ConfigError> {
    if items.len() > MAX_OUTCOMES {
        return Err(refuse(path, format!("at most {MAX_OUTCOMES} entries, got {}", items.len())));
    }
    let mut outcomes: Vec<OutcomeConfig> = Vec::with_capacity(items.len());
    for item in items {
        let at = item.path.clone();
        let outcome = item.object(|f| {
            let name = f.string("name")?.ok_or_else(|| refuse(f.path(), "missing field `name`"))?;
            label_value(&f.path_of("name"), name)?;
            let header =
                f.string("response_header")?.ok_or_else(|| refuse(f.path(), "missing field `response_header`"))?;
            check::header_name(&f.path_of("response_header"), header)?;
            let equals = string_list(f, "equals", &|at, t| {
                if t.len() <= 256 && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                    Ok(())
                } else {
                    Err(refuse(
                        at,
                        format!("must be at most 256 visible ASCII characters, got {}", quoted(t.as_bytes())),
                    ))
                }
            })?;
            if equals.is_empty() {
                return Err(refuse(f.path(), "missing field `equals`"));
            }
            Ok(OutcomeConfig { name: name.to_string(), response_header: header.to_string(), equals })
        })?;
        unique(&format!("{at}.name"), &outcome.name, outcomes.iter().map(|o| o.name.as_str()))?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(format!(r#"{{"service":"corp-cockpit"{extra}}}"#).as_bytes())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn classes_and_outcomes_are_read_in_order() {
        let c = parse(
            r#","classes":[
                {"name":"api","path_prefix":["/api/"],"method":["GET","POST"]},
                {"name":"asset","path_suffix":[".js",".css"]},
                {"name":"page","header":{"name":"accept","contains":"text/html"}},
                {"name":"partner","authority_suffix":["partner.example.com"],"header":{"name":"x-retry","present":true}}
            ],
            "outcomes":[{"name":"cache_hit","response_header":"x-cache","equals":["HIT","hit"]}]"#,
        )
        .unwrap();
        let names: Vec<&str> = c.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["api", "asset", "page", "partner"]);
        assert_eq!(c.classes[0].method, ["GET", "POST"]);
        assert_eq!(
            c.classes[2].header,
            Some(HeaderMatch { name: "accept".into(), contains: Some("text/html".into()) })
        );
        assert_eq!(c.classes[3].header, Some(HeaderMatch { name: "x-retry".into(), contains: None }));
        assert_eq!(
            c.outcomes,
            [OutcomeConfig {
                name: "cache_hit".into(),
                response_header: "x-cache".into(),
                equals: vec!["HIT".into(), "hit".into()]
            }]
        );
        let none = parse("").unwrap();
        assert!(none.classes.is_empty() && none.outcomes.is_empty());
        // An Istio sidecar's inbound and outbound observers share a VM: their windows are apart.
        let measures = |extra: &str| parse(extra).unwrap().measures();
        assert_eq!(measures(""), "router");
        assert_eq!(measures(r#","role":"observer""#), "observer");
        assert_eq!(measures(r#","role":"observer","direction":"outbound""#), "observer-outbound");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn class_gates_resolve_their_class_and_outcome_names() {
        let c = parse(
            r#","classes":[{"name":"api","path_prefix":["/api/"]},{"name":"page","method":["GET"]}],
            "outcomes":[{"name":"cache_hit","response_header":"x-cache","equals":["HIT"]}],
            "gate":{"min_requests":30,"min_outcome_ratio":{"cache_hit":0.5},
                    "classes":{"page":{"max_p95_ms":2000,"min_outcome_ratio":{"cache_hit":0.8},"max_outcome_ratio":{"cache_hit":0.99}},
                               "other":{"max_error_ratio":0.1,"min_requests":5}}}"#,
        )
        .unwrap();
        let g = &c.gate;
        assert_eq!(g.limits.outcomes[0].outcome, 0);
        assert_eq!(g.limits.outcomes[0].min_ppm, Some(500_000));
        let page = &g.classes[0];
        assert_eq!(
            (page.name.as_str(), page.class, page.limits.min_requests),
            ("page", 1, 30),
            "inherits min_requests"
        );
        assert_eq!(page.limits.max_p95_us, Some(2_000_000));
        let o = &page.limits.outcomes[0];
        assert_eq!((o.outcome, o.min_ppm, o.max_ppm), (0, Some(800_000), Some(990_000)));
        let other = &g.classes[1];
        assert_eq!((other.class, other.limits.min_requests), (2, 5), "`other` is after the classes");
        assert!(g.has_thresholds());
        let only_class =
            parse(r#","classes":[{"name":"api","method":["GET"]}],"gate":{"classes":{"api":{"max_p99_ms":5}}}"#);
        assert!(only_class.unwrap().gate.has_thresholds(), "a class threshold is a threshold");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_classes_and_outcomes_are_refused_naming_the_field() {
        let many = vec![r#"{"name":"c","method":["GET"]}"#; MAX_CLASSES + 1].join(",");
        let cases = [
            (format!(r#","classes":[{many}]"#), "classes", "at most 16"),
            (r#","classes":[{"name":"API","method":["GET"]}]"#.into(), "classes[0].name", "[a-z0-9_]{1,32}"),
            (r#","classes":[{"name":"other","method":["GET"]}]"#.into(), "classes[0].name", "no class matches"),
            (r#","classes":[{"method":["GET"]}]"#.into(), "classes[0]", "missing field `name`"),
            (r#","classes":[{"name":"a"}]"#.into(), "classes[0]", "needs at least one of"),
            (
                r#","classes":[{"name":"a","method":["GET"]},{"name":"a","method":["PUT"]}]"#.into(),
                "classes[1].name",
                "named twice",
            ),
            (r#","classes":[{"name":"a","path_prefix":["api"]}]"#.into(), "classes[0].path_prefix[0]", "starting with `/`"),
            (r#","classes":[{"name":"a","path_prefix":[]}]"#.into(), "classes[0].path_prefix", "1..=16 entries"),
            (r#","classes":[{"name":"a","path_suffix":[".js?v=1"]}]"#.into(), "classes[0].path_suffix[0]", "no `?`"),
            (r#","classes":[{"name":"a","method":["get"]}]"#.into(), "classes[0].method[0]", "upper-case"),
            (r#","classes":[{"name":"a","method":"GET"}]"#.into(), "classes[0].method", "invalid type"),
            (r#","classes":[{"name":"a","header":{"name":"Accept","present":true}}]"#.into(), "classes[0].header.name", "header name"),
            (r#","classes":[{"name":"a","header":{"name":"x"}}]"#.into(), "classes[0].header", "exactly one of"),
            (
                r#","classes":[{"name":"a","header":{"name":"x","present":true,"contains":"y"}}]"#.into(),
                "classes[0].header",
                "exactly one of",
            ),
            (r#","classes":[{"name":"a","header":{"name":"x","contains":""}}]"#.into(), "classes[0].header.contains", "empty"),
            (r#","classes":[{"name":"a","authority_suffix":["*.x.com"]}]"#.into(), "classes[0].authority_suffix[0]", "host name"),
            (r#","classes":[{"name":"a","authority_suffix":["X.com"]}]"#.into(), "classes[0].authority_suffix[0]", "host name"),
            (r#","classes":[{"name":"a","query":["x"]}]"#.into(), "classes[0].query", "unknown field"),
            (r#","outcomes":[{"name":"hit","equals":["HIT"]}]"#.into(), "outcomes[0]", "missing field `response_header`"),
            (r#","outcomes":[{"name":"hit","response_header":"x-cache"}]"#.into(), "outcomes[0]", "missing field `equals`"),
            (
                r#","outcomes":[{"name":"hit","response_header":"x-cache","equals":["HIT"]},{"name":"hit","response_header":"x-c","equals":["1"]}]"#.into(),
                "outcomes[1].name",
                "named twice",
            ),
            (r#","outcomes":[{"name":"hit","response_header":"x-cache","equals":["\n"]}]"#.into(), "outcomes[0].equals[0]", "visible ASCII"),
            (r#","gate":{"classes":{"api":{"max_error_ratio":0.1}}}"#.into(), "gate.classes.api", "not one of `classes`"),
            (r#","gate":{"classes":[]}"#.into(), "gate.classes", "invalid type"),
            (r#","gate":{"classes":{"other":{"max_error_rate":0.1}}}"#.into(), "gate.classes.other.max_error_rate", "unknown field"),
            (r#","gate":{"classes":{"other":{"max_p95_ms":0}}}"#.into(), "gate.classes.other.max_p95_ms", "(0, 600000]"),
            (r#","gate":{"min_outcome_ratio":{"hit":0.5}}"#.into(), "gate", "outcome `hit` is not one of `outcomes`"),
            (
                r#","outcomes":[{"name":"hit","response_header":"x-cache","equals":["HIT"]}],"gate":{"max_outcome_ratio":{"hit":1.5}}"#.into(),
                "gate.max_outcome_ratio.hit",
                "between 0 and 1",
            ),
            (
                r#","outcomes":[{"name":"hit","response_header":"x-cache","equals":["HIT"]}],"gate":{"min_outcome_ratio":{"hit":"high"}}"#.into(),
                "gate.min_outcome_ratio.hit",
                "invalid type",
            ),
            (
                r#","outcomes":[{"name":"hit","response_header":"x-cache","equals":["HIT"]}],"gate":{"min_outcome_ratio":{"hit":0.9},"max_outcome_ratio":{"hit":0.1}}"#.into(),
                "gate.min_outcome_ratio.hit",
                "must not exceed `max_outcome_ratio.hit`",
            ),
            (
                r#","outcomes":[{"name":"hit","response_header":"x-cache","equals":["HIT"]}],"classes":[{"name":"api","path_prefix":"/api/"}],"gate":{"classes":{"api":{"max_outcome_ratio":{"hit":0.2},"min_outcome_ratio":{"hit":0.3}}}}"#.into(),
                "gate.classes.api.min_outcome_ratio.hit",
                "must not exceed",
            ),
            (r#","direction":"outbound""#.into(), "direction", "observer role only"),
            (r#","role":"observer","direction":"sideways""#.into(), "direction", "unknown variant"),
            (r#","role":"observer","gate":{"classes":{"other":{"max_p95_ms":5}}}"#.into(), "gate", "router role only"),
        ];
        for (extra, field, reason) in cases {
            let e = parse(&extra).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
            assert!(e.reason.contains(reason), "{extra}: {e}");
        }
    }
}
