//! Which route class a request belongs to: the first configured class whose match fields all
//! hold, else `other`. Built once per configuration. Per request it reads only the headers a
//! class tests, each at most once, and allocates nothing beyond the values it reads; without
//! `classes` it reads nothing.

use crate::config::{ClassConfig, Config};
use crate::model::host_of;

/// A request's class: an index into the configured classes, or [`Classifier::other`].
pub type ClassIndex = usize;

struct Matcher {
    path_prefix: Vec<String>,
    path_suffix: Vec<String>,
    method: Vec<String>,
    /// Index into [`Classifier::headers`], and the text the value must contain (`None`: present).
    header: Option<(usize, Option<String>)>,
    authority_suffix: Vec<String>,
}

/// The configured classes, ready to match.
pub struct Classifier {
    matchers: Vec<Matcher>,
    /// Distinct header names the classes test (at most one per class).
    headers: Vec<String>,
}

/// The request's values, each read on first use.
struct Seen<F: FnMut(&str) -> Option<Vec<u8>>> {
    read: F,
    path: Option<Option<Vec<u8>>>,
    method: Option<Option<Vec<u8>>>,
    authority: Option<Option<Vec<u8>>>,
    headers: [Option<Option<Vec<u8>>>; crate::config::MAX_CLASSES],
}

impl<F: FnMut(&str) -> Option<Vec<u8>>> Seen<F> {
    fn pseudo<'s>(read: &mut F, slot: &'s mut Option<Option<Vec<u8>>>, name: &str) -> Option<&'s [u8]> {
        slot.get_or_insert_with(|| read(name)).as_deref()
    }
}

impl Classifier {
    /// The classifier of `config`'s classes.
    #[inline(never)]
    pub fn new(config: &Config) -> Self {
        let mut headers: Vec<String> = Vec::new();
        let matchers = config
            .classes
            .iter()
            .map(|class: &ClassConfig| Matcher {
                path_prefix: class.path_prefix.clone(),
                path_suffix: class.path_suffix.clone(),
                method: class.method.clone(),
                header: class.header.as_ref().map(|h| {
                    let index = headers.iter().position(|n| *n == h.name).unwrap_or_else(|| {
                        headers.push(h.name.clone());
                        headers.len() - 1
                    });
                    (index, h.contains.clone())
                }),
                authority_suffix: class.authority_suffix.clone(),
            })
            .collect();
        Classifier { matchers, headers }
    }

    /// The index of `other`: one past the configured classes.
    pub fn other(&self) -> ClassIndex {
        self.matchers.len()
    }

    /// The class of the request whose headers `read` returns (`:path`, `:method`,
    /// `:authority` and any lower-case name).
    #[inline(never)]
    pub fn classify(&self, read: impl FnMut(&str) -> Option<Vec<u8>>) -> ClassIndex {
        if self.matchers.is_empty() {
            return self.other();
        }
        let mut seen = Seen { read, path: None, method: None, authority: None, headers: Default::default() };
        self.matchers.iter().position(|m| self.matches(m, &mut seen)).unwrap_or(self.other())
    }

    /// The path first: most classes test it, and it rules most of them out.
    fn matches<F: FnMut(&str) -> Option<Vec<u8>>>(&self, m: &Matcher, seen: &mut Seen<F>) -> bool {
        if !m.path_prefix.is_empty() || !m.path_suffix.is_empty() {
            let Some(path) = Seen::pseudo(&mut seen.read, &mut seen.path, ":path") else { return false };
            let path = path.split(|&b| b == b'?').next().unwrap_or_default();
            if !m.path_prefix.is_empty() && !m.path_prefix.iter().any(|p| path.starts_with(p.as_bytes())) {
                return false;
            }
            if !m.path_suffix.is_empty() && !m.path_suffix.iter().any(|s| path.ends_with(s.as_bytes())) {
                return false;
            }
        }
        if !m.method.is_empty() {
            let Some(method) = Seen::pseudo(&mut seen.read, &mut seen.method, ":method") else { return false };
            if !m.method.iter().any(|x| x.as_bytes() == method) {
                return false;
            }
        }
        if !m.authority_suffix.is_empty() {
            let Some(authority) = Seen::pseudo(&mut seen.read, &mut seen.authority, ":authority") else {
                return false;
            };
            let host = host_of(authority);
            if !m.authority_suffix.iter().any(|s| is_host_or_subdomain(host, s.as_bytes())) {
                return false;
            }
        }
        if let Some((index, contains)) = &m.header {
            let (Some(name), Some(slot)) = (self.headers.get(*index), seen.headers.get_mut(*index)) else {
                return false;
            };
            let read = &mut seen.read;
            let Some(value) = slot.get_or_insert_with(|| read(name)).as_deref() else { return false };
            if let Some(text) = contains {
                let text = text.as_bytes();
                if !value.windows(text.len()).any(|w| w == text) {
                    return false;
                }
            }
        }
        true
    }

    /// The configured class names, in order, then `other`.
    pub fn names(config: &Config) -> impl Iterator<Item = &str> {
        config.classes.iter().map(|c| c.name.as_str()).chain(std::iter::once(crate::config::OTHER_CLASS))
    }
}

/// `host` is `suffix` or one of its subdomains, case-insensitively.
fn is_host_or_subdomain(host: &[u8], suffix: &[u8]) -> bool {
    if host.len() == suffix.len() {
        return host.eq_ignore_ascii_case(suffix);
    }
    let Some(dot) = host.len().checked_sub(suffix.len() + 1) else { return false };
    host.get(dot) == Some(&b'.') && host.get(dot + 1..).is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn classifier(classes: &str) -> (Classifier, Config) {
        let config = Config::parse(format!(r#"{{"service":"corp-cockpit","classes":{classes}}}"#).as_bytes()).unwrap();
        (Classifier::new(&config), config)
    }

    /// The class name of a request with these headers, and the header names read, in order.
    fn class_of(classifier: &Classifier, config: &Config, headers: &[(&str, &str)]) -> (String, Vec<String>) {
        let reads = RefCell::new(Vec::new());
        let index = classifier.classify(|name| {
            reads.borrow_mut().push(name.to_string());
            headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_bytes().to_vec())
        });
        let name = Classifier::names(config).nth(index).unwrap().to_string();
        (name, reads.into_inner())
    }

    const PLAN: &str = r#"[
        {"name":"api","path_prefix":["/api/"]},
        {"name":"asset","path_suffix":[".js",".css"],"method":["GET","HEAD"]},
        {"name":"page","header":{"name":"accept","contains":"text/html"}},
        {"name":"partner","authority_suffix":["partner.example.com"]},
        {"name":"retry","header":{"name":"x-envoy-attempt-count","present":true}}
    ]"#;

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_class_that_matches_wins() {
        let (c, config) = classifier(PLAN);
        let class = |headers: &[(&str, &str)]| class_of(&c, &config, headers).0;
        assert_eq!(class(&[(":path", "/api/users?id=1"), (":method", "GET")]), "api");
        assert_eq!(class(&[(":path", "/api/app.js"), (":method", "GET")]), "api", "api comes first");
        assert_eq!(class(&[(":path", "/static/app.js?v=3"), (":method", "GET")]), "asset", "query ignored");
        assert_eq!(class(&[(":path", "/static/app.js"), (":method", "POST")]), "other", "AND of the fields");
        assert_eq!(class(&[(":path", "/app.jsx"), (":method", "GET")]), "other");
        assert_eq!(class(&[(":path", "/"), ("accept", "text/html,application/xhtml+xml")]), "page");
        assert_eq!(class(&[(":path", "/"), ("accept", "application/json")]), "other");
        assert_eq!(class(&[(":path", "/v1/hook"), (":authority", "eu.Partner.Example.com.:443")]), "partner");
        assert_eq!(class(&[(":path", "/v1/hook"), (":authority", "notpartner.example.com")]), "other");
        assert_eq!(class(&[(":path", "/v1/hook"), (":authority", "partner.example.com")]), "partner");
        assert_eq!(class(&[(":path", "/x"), ("x-envoy-attempt-count", "")]), "retry", "present, even empty");
        assert_eq!(class(&[]), "other", "a request with no path matches no path class");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_value_is_read_at_most_once_and_only_when_a_class_needs_it() {
        let (c, config) = classifier(PLAN);
        let (_, reads) = class_of(&c, &config, &[(":path", "/api/x")]);
        assert_eq!(reads, [":path"], "the first class decided");
        let (_, reads) = class_of(&c, &config, &[(":path", "/x")]);
        assert_eq!(reads, [":path", "accept", ":authority", "x-envoy-attempt-count"]);
        let (_, reads) = class_of(&c, &config, &[(":path", "/x.css"), (":method", "GET")]);
        assert_eq!(reads, [":path", ":method"]);
        let twice = r#"[{"name":"a","header":{"name":"x-a","contains":"1"}},{"name":"b","header":{"name":"x-a","contains":"2"}}]"#;
        let (c, config) = classifier(twice);
        assert_eq!(class_of(&c, &config, &[("x-a", "2")]), ("b".to_string(), vec!["x-a".to_string()]));
        let none = Config::parse(br#"{"service":"corp-cockpit"}"#).unwrap();
        let c = Classifier::new(&none);
        assert_eq!(class_of(&c, &none, &[(":path", "/api/x")]), ("other".to_string(), vec![]));
    }

    /// The classifier matches the path Envoy hands it, as Envoy's routes do; it normalises
    /// nothing. With the HCM's `normalize_path` and `merge_slashes` (the shipped `envoy/`
    /// configurations) the dot segments, duplicate slashes and `%61` below arrive as `/api/x` and
    /// `/static/app.js`; without them they are classed as they come, here.
    #[wasm_bindgen_test(unsupported = test)]
    fn raw_paths_are_classed_as_they_come() {
        let (c, config) = classifier(PLAN);
        let class = |path: &str| class_of(&c, &config, &[(":path", path), (":method", "GET")]).0;
        for raw in ["//api/x", "/./api/x", "/x/../api/x", "/%61pi/x"] {
            assert_eq!(class(raw), "other", "{raw}: a path Envoy normalises to /api/x");
        }
        assert_eq!(class("/api%2Fx"), "other", "/api/x only with `path_with_escaped_slashes_action` UNESCAPE_*");
        assert_eq!(class("/api/../static/app.js"), "api", "a path Envoy normalises to /static/app.js");
        // Distinct paths for Envoy's routes too, normalised or not: case, path parameters.
        assert_eq!(class("/API/x"), "other");
        assert_eq!(class("/api;v=1/x"), "other");
        // What Envoy hands over once normalised.
        assert_eq!(class("/api/x"), "api");
        assert_eq!(class("/static/app.js"), "asset");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hosts_match_with_port_case_and_trailing_dot_ignored() {
        assert_eq!(host_of(b"a.example.com:8080"), b"a.example.com");
        assert_eq!(host_of(b"a.Example.com."), b"a.Example.com");
        assert_eq!(host_of(b"[::1]:80"), b"::1");
        assert!(is_host_or_subdomain(b"A.Example.com", b"example.com"));
        assert!(is_host_or_subdomain(b"example.com", b"example.com"));
        assert!(!is_host_or_subdomain(b"badexample.com", b"example.com"));
        assert!(!is_host_or_subdomain(b"com", b"example.com"));
    }
}
