//! Argo Rollouts AnalysisTemplates read from `istio/`, their queries with arguments
//! substituted as Argo does, and their conditions evaluated as Argo's Prometheus provider
//! would: `result` is the vector of sample values (empty when the query returns nothing).
//!
//! Conditions are restricted to a small subset of Argo's expression language, parsed strictly:
//! `true`, `false`, `len(result)`, `result[N]`, `isNaN(x)`, numbers, comparisons, `!`, `&&`, `||`
//! and parentheses. A template using anything else fails the test instead of being misjudged.

use std::fs;
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

/// One metric of an AnalysisTemplate.
#[derive(Debug, Clone)]
pub struct Metric {
    /// `metadata.name` of the template.
    pub template: String,
    /// `metrics[].name`.
    pub name: String,
    /// `provider.prometheus.query`, arguments not yet substituted.
    pub query: String,
    /// `successCondition`.
    pub success: Option<String>,
    /// `failureCondition`.
    pub failure: Option<String>,
    /// `provider.prometheus.address`.
    pub address: String,
    /// How Argo schedules and judges it: interval, count, limits, `initialDelay`, and whether
    /// the template names it in `dryRun`.
    pub run: crate::analysis_run::RunMetric,
}

impl Metric {
    /// Whether the query reads canary-gate's metrics (all other queries are the application's).
    pub fn from_canary_gate(&self) -> bool {
        self.query.contains("canary_")
    }
}

/// The outcome of one measurement, as Argo names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The success condition held.
    Successful,
    /// The failure condition held (or the success condition alone did not).
    Failed,
    /// Neither held.
    Inconclusive,
    /// The condition could not be evaluated (e.g. `result[0]` of an empty result).
    Error,
}

/// Every AnalysisTemplate metric in the YAML files under `dir` (recursively).
pub fn load_templates(dir: &Path) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for doc in &documents(dir, "AnalysisTemplate") {
        let template = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let dry_run: Vec<&str> =
            doc["spec"]["dryRun"].as_vec().into_iter().flatten().filter_map(|d| d["metricName"].as_str()).collect();
        for m in doc["spec"]["metrics"].as_vec().into_iter().flatten() {
            let prometheus = &m["provider"]["prometheus"];
            let text_of = |y: &Yaml| y.as_str().map(str::to_string);
            let name = text_of(&m["name"]).unwrap_or_default();
            let limit = |key: &str, default: i64| m[key].as_i64().unwrap_or(default);
            let run = crate::analysis_run::RunMetric {
                interval: m["interval"].as_str().map(duration),
                count: m["count"].as_i64().and_then(|c| u32::try_from(c).ok()),
                initial_delay: m["initialDelay"].as_str().map(duration),
                failure_limit: limit("failureLimit", 0),
                inconclusive_limit: limit("inconclusiveLimit", 0),
                consecutive_error_limit: limit(
                    "consecutiveErrorLimit",
                    crate::analysis_run::DEFAULT_CONSECUTIVE_ERROR_LIMIT,
                ),
                consecutive_success_limit: m["consecutiveSuccessLimit"].as_i64().and_then(|c| u32::try_from(c).ok()),
                dry_run: dry_run.iter().any(|d| *d == name || *d == "*"),
                ..crate::analysis_run::RunMetric::new(&name)
            };
            metrics.push(Metric {
                run,
                template: template.clone(),
                name,
                query: text_of(&prometheus["query"])
                    .unwrap_or_else(|| panic!("{template}: metric without a prometheus query")),
                success: text_of(&m["successCondition"]),
                failure: text_of(&m["failureCondition"]),
                address: text_of(&prometheus["address"]).unwrap_or_default(),
            });
        }
    }
    metrics
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out
}

/// A duration as Argo writes it: a number and `s`, `m` or `h`.
pub fn duration(text: &str) -> std::time::Duration {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    std::time::Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("duration {text:?}: unit"),
    })
}

/// The AnalysisRun Argo makes of a Rollout's background analysis: its templates' metrics
/// merged into one run, with the metrics in the same order.
pub fn background_run(
    rollout: &RolloutAnalysis,
    metrics: &[Metric],
) -> (Vec<Metric>, crate::analysis_run::AnalysisRun) {
    let merged: Vec<Metric> = metrics.iter().filter(|m| rollout.templates.contains(&m.template)).cloned().collect();
    let run = crate::analysis_run::AnalysisRun::new(merged.iter().map(|m| m.run.clone()).collect());
    (merged, run)
}

/// What a Rollout's background analysis runs: its templates and their arguments.
#[derive(Debug, Clone)]
pub struct RolloutAnalysis {
    /// `metadata.name` of the Rollout.
    pub rollout: String,
    /// `templateName`s of `spec.strategy.canary.analysis.templates`.
    pub templates: Vec<String>,
    /// `args` with literal values.
    pub args: Vec<(String, String)>,
}

/// Every Rollout under `dir` with its analysis.
pub fn load_rollouts(dir: &Path) -> Vec<RolloutAnalysis> {
    documents(dir, "Rollout")
        .iter()
        .map(|doc| {
            let analysis = &doc["spec"]["strategy"]["canary"]["analysis"];
            let names = |y: &Yaml, key: &str| -> Vec<String> {
                y.as_vec().into_iter().flatten().filter_map(|t| t[key].as_str().map(str::to_string)).collect()
            };
            // Literal values, and the pod-template hash Argo fills in for `valueFrom`.
            let args = analysis["args"]
                .as_vec()
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    let value = match (a["value"].as_str(), a["valueFrom"]["podTemplateHashValue"].as_str()) {
                        (Some(v), _) => v.to_string(),
                        (None, Some("Stable")) => "5d8f7c9b4".to_string(),
                        (None, Some(_)) => "6c9b8d7f5".to_string(),
                        (None, None) => return None,
                    };
                    Some((a["name"].as_str()?.to_string(), value))
                })
                .collect();
            RolloutAnalysis {
                rollout: doc["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                templates: names(&analysis["templates"], "templateName"),
                args,
            }
        })
        .collect()
}

/// Every document of `kind` in the YAML files under `dir`.
pub fn documents(dir: &Path, kind: &str) -> Vec<Yaml> {
    let mut files = walk(dir);
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            let text = fs::read_to_string(file).unwrap_or_default();
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        })
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// The document of `kind` whose `metadata.name` is `name` in the YAML files under `dir` (the
/// first in path order if several); panics if there is none.
pub fn document_named(dir: &Path, kind: &str, name: &str) -> Yaml {
    documents(dir, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name} under {}", dir.display()))
}

/// The override token the harness's testers send (`x-canary-token`), in place of the one an
/// operator mints for the shipped gateway routers.
pub const TESTER_TOKEN: &str = "canary-gate-harness-testers-token";

/// The lowercase hex SHA-256 of `text`, as `override.token_sha256` lists it.
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A shipped router's configuration with the operator's part done: its placeholder token digest
/// replaced by [`TESTER_TOKEN`]'s.
pub fn with_tester_token(mut config: serde_json::Value) -> serde_json::Value {
    if config["override"]["token_sha256"].is_array() {
        config["override"]["token_sha256"] = serde_json::json!([sha256_hex(TESTER_TOKEN)]);
    }
    config
}

/// The `pluginConfig` of the shipped WasmPlugin `name` (anywhere under `istio/`), as JSON.
pub fn plugin_config(name: &str) -> serde_json::Value {
    to_json(&document_named(&crate::root().join("istio"), "WasmPlugin", name)["spec"]["pluginConfig"])
}

/// A YAML value as JSON (for a WasmPlugin's `pluginConfig`).
pub fn to_json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value as J;
    match y {
        Yaml::Real(r) => r.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(J::Null, J::Number),
        Yaml::Integer(i) => J::from(*i),
        Yaml::String(s) => J::from(s.clone()),
        Yaml::Boolean(b) => J::from(*b),
        Yaml::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => J::Object(h.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_json(v)))).collect()),
        _ => J::Null,
    }
}

/// `{{args.NAME}}` replaced by each argument's value; panics on an unknown argument.
pub fn substitute(query: &str, args: &[(&str, &str)]) -> String {
    let mut out = query.to_string();
    for (name, value) in args {
        out = out.replace(&format!("{{{{args.{name}}}}}"), value);
    }
    assert!(!out.contains("{{"), "unsubstituted argument in {out}");
    out
}

/// The phase Argo gives a measurement with `result`.
pub fn evaluate(metric: &Metric, result: &[f64]) -> Phase {
    let eval = |c: &Option<String>| c.as_deref().map(|text| Condition::parse(text).eval(result));
    match (eval(&metric.success), eval(&metric.failure)) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => Phase::Error,
        (_, Some(Ok(true))) => Phase::Failed,
        (Some(Ok(true)), _) => Phase::Successful,
        (Some(Ok(false)), None) => Phase::Failed,
        (None, Some(Ok(false))) => Phase::Successful,
        (None, None) => Phase::Successful,
        (Some(Ok(false)), Some(Ok(false))) => Phase::Inconclusive,
    }
}

/// A value the metric's success condition accepts: what a healthy canary shows.
pub fn healthy(metric: &Metric) -> Vec<f64> {
    [0.0, 1.0, 1e9]
        .into_iter()
        .map(|v| vec![v])
        .find(|r| evaluate(metric, r) == Phase::Successful)
        .unwrap_or_else(|| panic!("{}/{}: no healthy value", metric.template, metric.name))
}

/// A parsed condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `a && b`.
    And(Box<Condition>, Box<Condition>),
    /// `a || b`.
    Or(Box<Condition>, Box<Condition>),
    /// `!a`.
    Not(Box<Condition>),
    /// `true` / `false`.
    Literal(bool),
    /// `isNaN(x)`.
    IsNan(Value),
    /// `x OP y`.
    Compare(Value, String, Value),
}

/// A numeric operand.
#[derive(Debug, Clone)]
pub enum Value {
    /// A literal.
    Number(f64),
    /// `result[N]`.
    Index(usize),
    /// `len(result)`.
    Len,
}

impl Value {
    fn get(&self, result: &[f64]) -> Result<f64, String> {
        match self {
            Value::Number(n) => Ok(*n),
            Value::Len => Ok(result.len() as f64),
            Value::Index(i) => result.get(*i).copied().ok_or_else(|| format!("result[{i}] of {} values", result.len())),
        }
    }
}

struct Parser<'a> {
    tokens: Vec<&'a str>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.at).copied()
    }
    fn next(&mut self) -> &'a str {
        let t = self.peek().unwrap_or_else(|| panic!("condition ends early: {:?}", self.tokens));
        self.at += 1;
        t
    }
    fn expect(&mut self, t: &str) {
        let got = self.next();
        assert_eq!(got, t, "condition: expected `{t}` in {:?}", self.tokens);
    }
    fn or(&mut self) -> Condition {
        let mut left = self.and();
        while self.peek() == Some("||") {
            self.next();
            left = Condition::Or(Box::new(left), Box::new(self.and()));
        }
        left
    }
    fn and(&mut self) -> Condition {
        let mut left = self.unary();
        while self.peek() == Some("&&") {
            self.next();
            left = Condition::And(Box::new(left), Box::new(self.unary()));
        }
        left
    }
    fn unary(&mut self) -> Condition {
        match self.peek() {
            Some("!") => {
                self.next();
                Condition::Not(Box::new(self.unary()))
            }
            Some("(") => {
                self.next();
                let inner = self.or();
                self.expect(")");
                inner
            }
            Some("true") => {
                self.next();
                Condition::Literal(true)
            }
            Some("false") => {
                self.next();
                Condition::Literal(false)
            }
            Some("isNaN") => {
                self.next();
                self.expect("(");
                let v = self.value();
                self.expect(")");
                Condition::IsNan(v)
            }
            _ => {
                let left = self.value();
                let op = self.next();
                assert!(["<", "<=", ">", ">=", "==", "!="].contains(&op), "condition: unsupported operator `{op}`");
                Condition::Compare(left, op.to_string(), self.value())
            }
        }
    }
    fn value(&mut self) -> Value {
        match self.next() {
            "len" => {
                self.expect("(");
                self.expect("result");
                self.expect(")");
                Value::Len
            }
            "result" => {
                self.expect("[");
                let index = self.next().parse().unwrap_or_else(|e| panic!("condition: bad index: {e}"));
                self.expect("]");
                Value::Index(index)
            }
            number => {
                Value::Number(number.parse().unwrap_or_else(|_| panic!("condition: unsupported operand `{number}`")))
            }
        }
    }
}

fn tokenize(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let two = text.get(i..i + 2).unwrap_or("");
        if c.is_ascii_whitespace() {
            i += 1;
        } else if ["&&", "||", "<=", ">=", "==", "!="].contains(&two) {
            tokens.push(two);
            i += 2;
        } else if b"()[]!<>".contains(&c) {
            tokens.push(&text[i..i + 1]);
            i += 1;
        } else {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_') {
                i += 1;
            }
            assert!(i > start, "condition: unsupported character {:?} in {text}", c as char);
            tokens.push(&text[start..i]);
        }
    }
    tokens
}

impl Condition {
    /// Parses `text`; panics on anything outside the supported subset.
    pub fn parse(text: &str) -> Condition {
        let mut p = Parser { tokens: tokenize(text), at: 0 };
        let c = p.or();
        assert_eq!(p.at, p.tokens.len(), "condition: trailing tokens in {text}");
        c
    }

    /// Evaluates with `result`, short-circuiting like Argo's expression engine.
    pub fn eval(&self, result: &[f64]) -> Result<bool, String> {
        Ok(match self {
            Condition::And(a, b) => a.eval(result)? && b.eval(result)?,
            Condition::Or(a, b) => a.eval(result)? || b.eval(result)?,
            Condition::Not(a) => !a.eval(result)?,
            Condition::Literal(b) => *b,
            Condition::IsNan(v) => v.get(result)?.is_nan(),
            Condition::Compare(a, op, b) => {
                let (a, b) = (a.get(result)?, b.get(result)?);
                match op.as_str() {
                    "<" => a < b,
                    "<=" => a <= b,
                    ">" => a > b,
                    ">=" => a >= b,
                    "==" => a == b,
                    _ => a != b,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(success: Option<&str>, failure: Option<&str>) -> Metric {
        Metric {
            template: "t".into(),
            name: "m".into(),
            query: "q".into(),
            success: success.map(str::to_string),
            failure: failure.map(str::to_string),
            address: String::new(),
            run: crate::analysis_run::RunMetric::new("m"),
        }
    }

    #[test]
    fn nan_safe_conditions_make_empty_and_nan_inconclusive() {
        let m = metric(
            Some("len(result) > 0 && !isNaN(result[0]) && result[0] < 0.001"),
            Some("len(result) > 0 && !isNaN(result[0]) && result[0] >= 0.001"),
        );
        assert_eq!(evaluate(&m, &[0.0005]), Phase::Successful);
        assert_eq!(evaluate(&m, &[0.05]), Phase::Failed);
        assert_eq!(evaluate(&m, &[]), Phase::Inconclusive);
        assert_eq!(evaluate(&m, &[f64::NAN]), Phase::Inconclusive);
    }

    #[test]
    fn argo_phase_rules() {
        assert_eq!(evaluate(&metric(Some("result[0] > 5"), None), &[3.0]), Phase::Failed);
        assert_eq!(evaluate(&metric(None, Some("result[0] > 5")), &[3.0]), Phase::Successful);
        assert_eq!(
            evaluate(&metric(Some("len(result) > 0 && result[0] > 5"), Some("false")), &[3.0]),
            Phase::Inconclusive
        );
        assert_eq!(evaluate(&metric(Some("result[0] > 5"), None), &[]), Phase::Error);
        assert_eq!(evaluate(&metric(Some("(true || false) && !false"), None), &[]), Phase::Successful);
    }

    #[test]
    #[should_panic(expected = "unsupported")]
    fn unsupported_expressions_are_refused() {
        Condition::parse("result[0] ~ 5");
    }

    #[test]
    fn substitutes_arguments() {
        assert_eq!(
            substitute(r#"x{service="{{args.service}}"}"#, &[("service", "impact-in")]),
            r#"x{service="impact-in"}"#
        );
    }
}
