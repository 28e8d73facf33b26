//! The optional shadow phase of a Rollout, shipped as a kustomize Component under
//! `istio/components/`, and what Argo Rollouts does with its `setMirrorRoute` steps on the Istio
//! VirtualService, played as argo-rollouts' source does it
//! (`rollout/trafficrouting/istio/istio.go`), then routed as Istio routes a request.
//!
//! - [`component_patches`] and [`json_patch`] apply the Component's JSON patches (RFC 6902: `add`,
//!   `remove`, `replace`, `test`) to a shipped document, as `kubectl kustomize` does.
//! - [`ArgoIstio`]: `SetMirrorRoute` (`reconcileVirtualServiceMirrorRoutes`: remove the route of
//!   that name; without a match, that is all; else build it with `createMirrorRoute` and prepend
//!   it), then `orderRoutes` (the `managedRoutes`, in their order, above every other route);
//!   `SetWeight` (the routes of `virtualService.routes`, and the mirror routes `managedRoutes`
//!   lists); `RemoveManagedRoutes` (at the end of a rollout, on an abort).
//! - [`route`]: the first HTTP route whose match holds (a route without one matches every
//!   request), its destinations and weights, and its mirror.

use crate::analysis::to_json;
use serde_json::{json, Map, Value};
use std::fs;
use std::path::Path;
use yaml_rust2::YamlLoader;

/// One patch of a kustomize Component: the kind and name it targets and its JSON patch.
#[derive(Debug, Clone)]
pub struct ComponentPatch {
    /// `target.kind`.
    pub kind: String,
    /// `target.name`.
    pub name: String,
    /// The operations.
    pub ops: Vec<Value>,
}

/// The JSON patches of the Component in `dir` (its `kustomization.yaml`).
pub fn component_patches(dir: &Path) -> Vec<ComponentPatch> {
    let file = dir.join("kustomization.yaml");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let component = docs.first().map(to_json).unwrap_or_default();
    assert_eq!(component["kind"], "Component", "{} is no kustomize Component", file.display());
    component["patches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let text = p["patch"].as_str().unwrap_or_else(|| panic!("{}: a patch without text", file.display()));
            let ops = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let ops = ops.first().map(to_json).unwrap_or_default();
            ComponentPatch {
                kind: p["target"]["kind"].as_str().unwrap_or_default().to_string(),
                name: p["target"]["name"].as_str().unwrap_or_default().to_string(),
                ops: ops.as_array().cloned().unwrap_or_else(|| panic!("{}: not a JSON patch", file.display())),
            }
        })
        .collect()
}

/// `doc` (a Kubernetes object as JSON) with every patch of `patches` that targets it applied.
pub fn patched(mut doc: Value, patches: &[ComponentPatch]) -> Value {
    for p in patches {
        if doc["kind"] == p.kind.as_str() && doc["metadata"]["name"] == p.name.as_str() {
            json_patch(&mut doc, &p.ops).unwrap_or_else(|e| panic!("{} {}: {e}", p.kind, p.name));
        }
    }
    doc
}

/// The parent pointer and the last segment of `pointer` (`~1` and `~0` unescaped).
fn split_pointer(pointer: &str) -> Result<(&str, String), String> {
    let at = pointer.rfind('/').ok_or_else(|| format!("bad pointer {pointer:?}"))?;
    let last = pointer.get(at + 1..).unwrap_or_default().replace("~1", "/").replace("~0", "~");
    Ok((pointer.get(..at).unwrap_or_default(), last))
}

/// Applies RFC 6902 operations `add`, `remove`, `replace` and `test` to `doc`, in order; the
/// first that fails stops it.
pub fn json_patch(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation without path")?;
        let value = op.get("value").cloned();
        match op["op"].as_str() {
            Some("test") => {
                let found = doc.pointer(path).ok_or_else(|| format!("test: nothing at {path}"))?;
                if Some(found) != value.as_ref() {
                    return Err(format!("test failed at {path}: {found} is not {}", value.unwrap_or_default()));
                }
            }
            Some("replace") => {
                let target = doc.pointer_mut(path).ok_or_else(|| format!("replace: nothing at {path}"))?;
                *target = value.ok_or("replace without value")?;
            }
            Some(kind @ ("add" | "remove")) => {
                let (parent, last) = split_pointer(path)?;
                let parent = doc.pointer_mut(parent).ok_or_else(|| format!("{kind}: no parent of {path}"))?;
                match (parent, kind) {
                    (Value::Object(map), "add") => {
                        map.insert(last, value.ok_or("add without value")?);
                    }
                    (Value::Object(map), _) => {
                        map.remove(&last).ok_or_else(|| format!("remove: nothing at {path}"))?;
                    }
                    (Value::Array(items), "add") if last == "-" => items.push(value.ok_or("add without value")?),
                    (Value::Array(items), _) => {
                        let i: usize = last.parse().map_err(|_| format!("{kind}: bad index in {path}"))?;
                        if kind == "add" && i <= items.len() {
                            items.insert(i, value.ok_or("add without value")?);
                        } else if kind == "remove" && i < items.len() {
                            items.remove(i);
                        } else {
                            return Err(format!("{kind}: index out of range in {path}"));
                        }
                    }
                    _ => return Err(format!("{kind}: {path} is inside a scalar")),
                }
            }
            other => return Err(format!("unsupported operation {other:?}")),
        }
    }
    Ok(())
}

/// What Argo Rollouts' Istio traffic router reads from a Rollout and its DestinationRule.
#[derive(Debug, Clone)]
pub struct ArgoIstio {
    /// `trafficRouting.istio.virtualService.routes`: the routes whose weights it sets.
    pub routes: Vec<String>,
    /// `trafficRouting.managedRoutes`.
    pub managed_routes: Vec<String>,
    /// `destinationRule.canarySubsetName` and `stableSubsetName`.
    pub canary_subset: String,
    /// See `canary_subset`.
    pub stable_subset: String,
    /// The DestinationRule's `spec.host`: the host of the mirror destination.
    pub host: String,
}

fn strings(v: &Value, key: Option<&str>) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| key.map_or(Some(x), |k| x.get(k)).and_then(Value::as_str).map(str::to_string))
        .collect()
}

impl ArgoIstio {
    /// The traffic routing of `rollout` (JSON), with `destination_rule` (JSON) its DestinationRule.
    pub fn new(rollout: &Value, destination_rule: &Value) -> ArgoIstio {
        let routing = &rollout["spec"]["strategy"]["canary"]["trafficRouting"];
        let dr = &routing["istio"]["destinationRule"];
        assert_eq!(destination_rule["metadata"]["name"], dr["name"], "the Rollout's DestinationRule");
        ArgoIstio {
            routes: strings(&routing["istio"]["virtualService"]["routes"], None),
            managed_routes: strings(&routing["managedRoutes"], Some("name")),
            canary_subset: dr["canarySubsetName"].as_str().unwrap_or_default().to_string(),
            stable_subset: dr["stableSubsetName"].as_str().unwrap_or_default().to_string(),
            host: destination_rule["spec"]["host"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// `SetMirrorRoute(step)` on `vs` (a VirtualService as JSON), `step` the `setMirrorRoute`
    /// object of a canary step.
    pub fn set_mirror_route(&self, vs: &mut Value, step: &Value) {
        let name = step["name"].as_str().unwrap_or_default();
        remove_route(vs, name);
        if let Some(matches) = step.get("match").filter(|m| !m.is_null()) {
            let mirror = self.create_mirror_route(http(vs), name, matches, step.get("percentage"));
            http_mut(vs).insert(0, mirror);
        }
        self.order_routes(vs);
    }

    /// `createMirrorRoute`: the weights of the first route Argo sets weights on (as its Go
    /// types marshal them: `omitempty` drops a weight of 0), the match (method, `path` as
    /// `uri`, headers), the canary subset as mirror, the percentage (default 100).
    fn create_mirror_route(&self, routes: &[Value], name: &str, matches: &Value, percentage: Option<&Value>) -> Value {
        let set_weight_route = routes
            .iter()
            .find(|r| self.routes.iter().any(|n| r["name"] == n.as_str()))
            .unwrap_or_else(|| panic!("no route {:?} in the VirtualService", self.routes));
        let route: Vec<Value> =
            set_weight_route["route"].as_array().into_iter().flatten().map(go_destination).collect();
        let matches: Vec<Value> = matches
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let mut out = Map::new();
                for (from, to) in [("method", "method"), ("path", "uri")] {
                    if let Some(s) = m.get(from).filter(|s| !s.is_null()) {
                        out.insert(to.to_string(), go_string_match(s));
                    }
                }
                if let Some(headers) = m.get("headers").and_then(Value::as_object).filter(|h| !h.is_empty()) {
                    let headers = headers.iter().map(|(k, v)| (k.clone(), go_string_match(v))).collect();
                    out.insert("headers".to_string(), Value::Object(headers));
                }
                Value::Object(out)
            })
            .collect();
        let mut mirror = json!({"host": self.host, "subset": self.canary_subset});
        if let Some(port) = route.first().and_then(|d| d["destination"].get("port")) {
            mirror["port"] = json!({"number": port["number"]});
        }
        let percent = percentage.and_then(Value::as_i64).unwrap_or(100) as f64;
        json!({"name": name, "match": matches, "route": route, "mirror": mirror,
               "mirrorPercentage": {"value": percent}})
    }

    /// `orderRoutes`: with `managedRoutes`, the managed routes in their order, then the others.
    fn order_routes(&self, vs: &mut Value) {
        if self.managed_routes.is_empty() {
            return;
        }
        let routes = std::mem::take(http_mut(vs));
        let (managed, other): (Vec<Value>, Vec<Value>) =
            routes.into_iter().partition(|r| self.managed_routes.iter().any(|m| r["name"] == m.as_str()));
        let mut ordered: Vec<Value> = Vec::new();
        for name in &self.managed_routes {
            ordered.extend(managed.iter().filter(|r| r["name"] == name.as_str()).cloned());
        }
        ordered.extend(other);
        *http_mut(vs) = ordered;
    }

    /// `SetWeight(weight)`: the canary destinations of the routes of `virtualService.routes`
    /// and of the mirror routes `managedRoutes` lists get `weight`, the stable ones the rest.
    pub fn set_weight(&self, vs: &mut Value, weight: i64) {
        let mut names = self.routes.clone();
        for r in http(vs) {
            if r.get("mirror").is_some() && self.managed_routes.iter().any(|m| r["name"] == m.as_str()) {
                names.push(r["name"].as_str().unwrap_or_default().to_string());
            }
        }
        for r in http_mut(vs).iter_mut().filter(|r| names.iter().any(|n| r["name"] == n.as_str())) {
            for d in r["route"].as_array_mut().into_iter().flatten() {
                let subset = d["destination"]["subset"].as_str().unwrap_or_default().to_string();
                if subset == self.canary_subset {
                    d["weight"] = json!(weight);
                } else if subset == self.stable_subset {
                    d["weight"] = json!(100 - weight);
                }
            }
        }
    }

    /// `RemoveManagedRoutes`: the routes of every `setMirrorRoute` step of `steps`, then every
    /// route `managedRoutes` lists.
    pub fn remove_managed_routes(&self, vs: &mut Value, steps: &[Value]) {
        for step in steps {
            if let Some(name) = step["setMirrorRoute"]["name"].as_str() {
                remove_route(vs, name);
            }
        }
        http_mut(vs).retain(|r| !self.managed_routes.iter().any(|m| r["name"] == m.as_str()));
    }
}

/// A route destination as Argo's `VirtualServiceRouteDestination` marshals it.
fn go_destination(d: &Value) -> Value {
    let mut destination = Map::new();
    for key in ["host", "subset"] {
        if let Some(v) = d["destination"][key].as_str().filter(|v| !v.is_empty()) {
            destination.insert(key.to_string(), json!(v));
        }
    }
    if let Some(n) = d["destination"]["port"]["number"].as_u64().filter(|n| *n != 0) {
        destination.insert("port".to_string(), json!({"number": n}));
    }
    let mut out = json!({"destination": destination});
    if let Some(w) = d["weight"].as_i64().filter(|w| *w != 0) {
        out["weight"] = json!(w);
    }
    out
}

/// A `StringMatch` as Argo marshals it (`exact`, `prefix`, `regex`, each `omitempty`).
fn go_string_match(s: &Value) -> Value {
    let kept = ["exact", "prefix", "regex"]
        .into_iter()
        .filter_map(|k| s[k].as_str().filter(|v| !v.is_empty()).map(|v| (k.to_string(), json!(v))))
        .collect();
    Value::Object(kept)
}

/// `removeRoute`: every HTTP route named `name` removed.
fn remove_route(vs: &mut Value, name: &str) {
    http_mut(vs).retain(|r| r["name"].as_str() != Some(name));
}

fn http(vs: &Value) -> &[Value] {
    vs["spec"]["http"].as_array().map(Vec::as_slice).unwrap_or_else(|| panic!("VirtualService without spec.http"))
}

fn http_mut(vs: &mut Value) -> &mut Vec<Value> {
    vs["spec"]["http"].as_array_mut().unwrap_or_else(|| panic!("VirtualService without spec.http"))
}

/// The names of the HTTP routes of `vs`, in order.
pub fn route_names(vs: &Value) -> Vec<String> {
    http(vs).iter().map(|r| r["name"].as_str().unwrap_or_default().to_string()).collect()
}

/// A request as the sidecar routes it: after the filters (canary-gate's router among them).
#[derive(Debug, Clone)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Where Istio sends a request: the route that matched, its destinations (subset, weight) and
/// its mirror (subset, percentage).
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The route's name.
    pub route: String,
    /// `(subset, weight)` of each destination (a weight Argo left out is 0; a lone destination
    /// without one takes everything).
    pub destinations: Vec<(String, i64)>,
    /// `(subset, percentage)` of the mirror, if the route has one.
    pub mirror: Option<(String, f64)>,
}

impl Routed {
    /// The weight of `subset` among the destinations (0 if absent).
    pub fn weight(&self, subset: &str) -> i64 {
        self.destinations.iter().filter(|(s, _)| s == subset).map(|(_, w)| w).sum()
    }
}

/// Whether `value` satisfies an Istio `StringMatch`. A regular expression is refused: nothing
/// shipped uses one, and a test should fail rather than misjudge it.
fn string_match(m: &Value, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    assert!(m.get("regex").is_none(), "regex matches are not emulated: {m}");
    match (m["exact"].as_str(), m["prefix"].as_str()) {
        (Some(exact), _) => value == exact,
        (None, Some(prefix)) => value.starts_with(prefix),
        (None, None) => panic!("a StringMatch without exact or prefix: {m}"),
    }
}

/// Whether one `HTTPMatchRequest` holds for `req`: every condition it names.
fn match_holds(m: &Value, req: &Request) -> bool {
    let known = ["method", "uri", "headers", "name"];
    if let Some(key) = m.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !known.contains(&k.as_str())) {
        panic!("match condition {key:?} is not emulated: {m}");
    }
    m.get("method").is_none_or(|s| string_match(s, Some(&req.method)))
        && m.get("uri").is_none_or(|s| string_match(s, Some(&req.path)))
        && m["headers"].as_object().into_iter().flatten().all(|(name, s)| string_match(s, req.header(name)))
}

/// The first HTTP route of `vs` that `req` matches (its match entries are alternatives; a
/// route without match takes every request), or `None`.
pub fn route(vs: &Value, req: &Request) -> Option<Routed> {
    let found = http(vs).iter().find(|r| match r["match"].as_array() {
        None => true,
        Some(entries) => entries.iter().any(|m| match_holds(m, req)),
    })?;
    let routes = found["route"].as_array().cloned().unwrap_or_default();
    let lone = routes.len() == 1;
    let destinations = routes
        .iter()
        .map(|d| {
            let subset = d["destination"]["subset"].as_str().unwrap_or_default().to_string();
            (subset, d["weight"].as_i64().unwrap_or(if lone { 100 } else { 0 }))
        })
        .collect();
    let mirror = found.get("mirror").map(|m| {
        let percent = found["mirrorPercentage"]["value"].as_f64().unwrap_or(100.0);
        (m["subset"].as_str().unwrap_or_default().to_string(), percent)
    });
    Some(Routed { route: found["name"].as_str().unwrap_or_default().to_string(), destinations, mirror })
}
