// Validates every Kubernetes manifest under istio/ against the real schemas of the npm packages
// @kubernetes-models/istio, @kubernetes-models/argo-rollouts, @kubernetes-models/prometheus-operator
// and kubernetes-models, then checks
// what the schemas cannot: unknown fields, references between objects, route order, canary-gate's
// plugin configuration, the stats settings, PromQL syntax (promtool, from Debian's `prometheus`
// package), and that the generated files are up to date (python3 istio/generate.py --check).
//
//   node tests/manifests/validate.mjs                 run every check; last line "N passed, M failed"
//   node tests/manifests/validate.mjs --list-queries  print every AnalysisTemplate metric as a JSON line
//
// Skips istio/prometheus, istio/grafana, istio/image and documents without apiVersion/kind
// (except the gateway patch, validated as a Deployment's pod template).

import { readFileSync, readdirSync, statSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { isDeepStrictEqual } from "node:util";
import { loadAll, load, YAML11_SCHEMA } from "js-yaml";
import { WasmPlugin } from "@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin";
import * as NetV1 from "@kubernetes-models/istio/networking.istio.io/v1";
import * as NetV1beta1 from "@kubernetes-models/istio/networking.istio.io/v1beta1";
import * as NetV1alpha3 from "@kubernetes-models/istio/networking.istio.io/v1alpha3";
import {
  Rollout,
  AnalysisTemplate,
  ClusterAnalysisTemplate,
} from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { AuthorizationPolicy } from "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ISTIO = path.join(REPO, "istio");
const SKIP_DIRS = new Set(["prometheus", "grafana", "image"]);
const PROMETHEUS = "http://prometheus.monitoring.svc.cluster.local:9090";
// The ingress gateway patches: Istio 1.27+ (its gateway injection template mounts the ConfigMap
// sidecar.istio.io/bootstrapOverride names), and 1.26 and earlier (mounted by hand).
const GATEWAY_PATCH = "istio/stats/gateway-proxy-config.yaml";
const GATEWAY_PATCH_1_26 = "istio/stats/gateway-proxy-config-istio-1.26.yaml";
const APP_COMMENT = "# application metric (not from canary-gate)";
const NOT_IN_PLAN = "not in the tier-1 plan";
const IMAGE_PIN = "istio/image/canary-gate.pin";
const IMAGE_LAYOUT = "target/oci/canary-gate";
const REVISION_LABEL = "rollouts-pod-template-hash";
const REVISION_HEADER = "x-canary-revision";
const NAMESPACE = "teei-platform";
const VERSION_HEADER_PREFIX = "x-canary-version-";
const REASON_HEADER_PREFIX = "x-canary-reason-";
const REVISION_PROBE_PATH = "/__canary/revision";
const GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
const KUBECTL = process.env.KUBECTL ?? path.join(REPO, ".venv/bin/kubectl");
// Generated files that are no object of their own (applied by `kubectl patch`).
const NOT_APPLIED = new Set([GATEWAY_PATCH, GATEWAY_PATCH_1_26]);
// The workloads that call each service inside the mesh (not in the tier-1 plan: the frontend
// and the API gateway call the backends), and the public names of the services clients reach
// through the ingress gateway (placeholders).
const CALLERS = {
  "corp-cockpit": [], "api-gateway": ["corp-cockpit"],
  "impact-in": ["corp-cockpit", "api-gateway"], "unified-profile": ["corp-cockpit", "api-gateway"],
  reporting: ["corp-cockpit", "api-gateway"], "q2q-ai": ["corp-cockpit", "api-gateway"],
};
const PUBLIC_HOSTS = { "corp-cockpit": ["cockpit.example.com"], "api-gateway": ["api.example.com"] };
/** The names a sidecar routes to `svc` in the mesh (what a client router handles). */
const inClusterHosts = (svc) => [svc, `${svc}.${NAMESPACE}`, `${svc}.${NAMESPACE}.svc`, `${svc}.${NAMESPACE}.svc.cluster.local`];

const KINDS = {
  "extensions.istio.io/v1alpha1/WasmPlugin": WasmPlugin,
  "argoproj.io/v1alpha1/Rollout": Rollout,
  "argoproj.io/v1alpha1/AnalysisTemplate": AnalysisTemplate,
  "argoproj.io/v1alpha1/ClusterAnalysisTemplate": ClusterAnalysisTemplate,
  "v1/Service": Service,
  "v1/ServiceAccount": ServiceAccount,
  "security.istio.io/v1/AuthorizationPolicy": AuthorizationPolicy,
  "v1/ConfigMap": ConfigMap,
  "apps/v1/Deployment": Deployment,
};
for (const [version, mod] of [["v1", NetV1], ["v1beta1", NetV1beta1], ["v1alpha3", NetV1alpha3]]) {
  KINDS[`networking.istio.io/${version}/VirtualService`] = mod.VirtualService;
  KINDS[`networking.istio.io/${version}/DestinationRule`] = mod.DestinationRule;
}
KINDS["networking.istio.io/v1alpha3/EnvoyFilter"] = NetV1alpha3.EnvoyFilter;
KINDS["networking.istio.io/v1/ServiceEntry"] = NetV1.ServiceEntry;

// Paths (JSON pointers, `*` = any key or index) whose contents the schemas leave open.
const OPEN_PATHS = { WasmPlugin: ["/spec/pluginConfig"], EnvoyFilter: ["/spec/configPatches/*/patch/value"] };

// canary-gate's configuration (src/config/parse.rs): top-level keys and the keys of nested objects
// (a dotted parent is an object inside another).
const PLUGIN_KEYS = {
  "": ["service", "role", "version_header", "reason_header", "stable", "canary", "split", "override",
    "sticky", "metrics", "version_label", "gate", "hosts", "revision_label", "revision_header", "revision_probe_path",
    "classes", "outcomes", "direction", "vitals"],
  split: ["mode", "canary_percent", "hash_key"],
  override: ["header", "token_header", "token_sha256"],
  sticky: ["cookie", "max_age_s", "secure", "key", "key_env"],
  metrics: ["window_s"],
  gate: ["window_s", "min_requests", "max_error_ratio", "max_p95_ms", "max_p99_ms",
    "max_error_ratio_over_stable", "consecutive", "dry_run", "rearm", "min_outcome_ratio", "max_outcome_ratio", "classes",
    "compare", "eval_ms", "vitals", "fleet"],
  "gate.compare": ["alpha", "min_effect", "slow_ms", "min_users"],
  "gate.fleet": ["max_pods", "max_age_ms"],
  vitals: ["path", "max_body_bytes", "max_per_second"],
  "gate.vitals": ["max_lcp_p75_ms", "max_inp_p75_ms", "max_cls_p75", "max_js_error_ratio", "min_page_views"],
};

// corp-cockpit's in-proxy guard rails on web vitals (gate.vitals): Core Web Vitals' "poor" limits;
// the analysis judges the plan's SLOs (below).
const GATE_VITALS = {
  "corp-cockpit": { max_lcp_p75_ms: 4000, max_inp_p75_ms: 500, max_cls_p75: 0.25, max_js_error_ratio: 0.05, min_page_views: 50 },
};
// Series only a router reports, labelled service and version (no reporter): the web-vitals beacons'.
const UNREPORTED = /^canary_(?:window_)?web_/;

// The tier-1 plan: replicas, container port, canary steps (weight, then pause or null), and
// the container resources where the plan gives them.
const planResources = (cpu, cpuLimit, memory, memoryLimit) =>
  ({ requests: { cpu, memory }, limits: { cpu: cpuLimit, memory: memoryLimit } });
// Gateway replicas the shipped gate thresholds are sized for (not in the plan; see GATEWAY_REPLICAS
// in istio/generate.py).
const ASSUMED_GATEWAY_REPLICAS = 2;

const PLAN = {
  "corp-cockpit": { replicas: 4, port: 4321, steps: [[10, "5m"], [30, "10m"], [50, "15m"], [100, null]],
    resources: planResources("500m", "2000m", "512Mi", "2Gi") },
  "impact-in": { replicas: 4, port: 3002, steps: [[10, "10m"], [40, "20m"], [100, null]],
    resources: planResources("1000m", "4000m", "1Gi", "4Gi") },
  "unified-profile": { replicas: 5, port: 3003, steps: [[20, "5m"], [50, "15m"], [100, null]],
    resources: planResources("1000m", "4000m", "2Gi", "8Gi") },
  "api-gateway": { replicas: 3, port: 3000, steps: [[5, "10m"], [25, "10m"], [50, "10m"], [100, null]] },
  reporting: { replicas: 3, port: 3004, steps: [[10, "10m"], [30, "10m"], [100, null]] },
  "q2q-ai": { replicas: 3, port: 3005, steps: [[5, "10m"], [20, "10m"], [50, "10m"], [100, null]] },
};

// Every AnalysisTemplate metric: [comparison, threshold, failureLimit, application metric?].
// "volume" = request volume: success above the threshold, never a failure.
// The error rates at the router and at the canary's and the stable's pods (observers).
const errorRates = (t) => ({
  "error-rate": ["<", t, 3, false], "inbound-error-rate": ["<", t, 3, false], "inbound-error-rate-stable": ["<", t, 3, false],
});
// The optional shadow phase of a service (a kustomize Component): its mirror route, the header a
// router sets to the reason of its decision and the reason that leaves the choice to the mesh (no
// version header then), the pause, and the window of its template's queries.
const SHADOW = {
  service: "unified-profile", component: "components/unified-profile-mirror", template: "unified-profile-shadow",
  route: "shadow", reasonHeader: "x-canary-reason-unified-profile", meshReason: "mesh", pause: "5m", window: "2m",
};
// Metrics always in dryRun: shown beside the canary's, deciding nothing.
const BASELINE = new Set(["inbound-error-rate-stable"]);
// Templates of services the plan gives no SLOs for: their thresholds are marked placeholders.
const UNPLANNED_SLO = new Set(["api-gateway-slo", "reporting-slo", "q2q-ai-slo"]);
const SLO = {
  "canary-gate-abort": { "canary-gate-tripped": ["<", 1, 0, false] },
  "corp-cockpit-slo": {
    ...errorRates(0.001), "api-error-rate": ["<", 0.001, 3, false], "ssr-page-load-p95": ["<", 1000, 3, false],
    "resource-load-error-rate": ["<", 0.01, 3, false], "request-volume": ["volume", 5, 3, false],
    // From the router's web-vitals beacons: LCP and INP in ms, CLS x 1000.
    "web-vitals-lcp-p75": ["<", 2500, 3, false], "web-vitals-inp-p75": ["<", 200, 3, false],
    "web-vitals-cls-p75": ["<", 100, 3, false], "js-error-rate": ["<", 0.001, 3, false],
  },
  // Deliveries and partner calls: the canary pods' outbound calls, latencies in ms.
  "impact-in-slo": {
    ...errorRates(0.001), "request-volume": ["volume", 2, 3, false],
    "delivery-success-rate": [">", 0.99, 3, false], "delivery-latency-p95": ["<", 10000, 3, false],
    "delivery-latency-p99": ["<", 30000, 5, false], "retry-rate": ["<", 0.05, 3, false],
    "partner-api-latency-p95": ["<", 5000, 5, false], "queue-depth": ["<", 1000, 3, true],
    "db-pool-utilization": ["<", 0.75, 3, true],
  },
  "unified-profile-slo": {
    ...errorRates(0.002), "latency-p95": ["<", 500, 3, false],
    "latency-p99": ["<", 1000, 5, false], "request-volume": ["volume", 10, 3, false],
    "aggregation-success-rate": [">", 0.995, 3, true], "cache-hit-rate": [">", 0.8, 5, false],
    "db-query-latency-p95": ["<", 0.1, 3, true], "db-pool-utilization": ["<", 0.8, 3, true],
    "external-fetch-success-rate": [">", 0.98, 3, false], "memory-utilization": ["<", 0.85, 3, true],
  },
  // The shadow phase (istio/components/unified-profile-mirror): the copies the canary revision's
  // pods serve, by revision, over SHADOW.window.
  "unified-profile-shadow": {
    "shadow-request-volume": ["volume", 10, 0, false], "shadow-error-rate": ["<", 0.002, 1, false],
    "shadow-latency-p95": ["<", 500, 1, false], "shadow-latency-p99": ["<", 1000, 2, false],
  },
  "api-gateway-slo": errorRates(0.001),
  "reporting-slo": errorRates(0.001),
  "q2q-ai-slo": errorRates(0.001),
};

// ------------------------------------------------------------------------------------------------
// Loading

function yamlFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) {
      if (dir === ISTIO && SKIP_DIRS.has(name)) continue;
      out.push(...yamlFiles(full));
    } else if (/\.ya?ml$/.test(name)) {
      out.push(full);
    }
  }
  return out;
}

const parseYaml = (text) => loadAll(text, { schema: YAML11_SCHEMA });
const rel = (full) => path.relative(REPO, full).split(path.sep).join("/");
const clone = (v) => JSON.parse(JSON.stringify(v));

// ------------------------------------------------------------------------------------------------
// Schema checks

function modelFor(doc) {
  return KINDS[`${doc?.apiVersion}/${doc?.kind}`];
}

/** Errors of the package's schema for `doc` ([] when valid); an unknown kind is an error. */
function schemaErrors(doc) {
  const Model = modelFor(doc);
  if (!Model) return [`no schema for apiVersion ${doc?.apiVersion} kind ${doc?.kind}`];
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    return e.errors.map((err) => `${err.instancePath || "/"} ${err.message}`);
  }
}

/** The PrometheusRule against its schema and the plain rule file it wraps. */
function prometheusRuleProblems(rule, plain) {
  const p = rawSchemaErrors(PrometheusRule, rule).map((e) => `schema: ${e.instancePath || "/"} ${e.message}`);
  if (!isDeepStrictEqual(rule?.spec?.groups, plain?.groups)) p.push("spec.groups differ from canary-gate-rules.yaml's groups");
  return p;
}

function rawSchemaErrors(Model, data) {
  try {
    new Model(data).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    return e.errors;
  }
}

const pointer = (keys) => keys.map((k) => "/" + String(k).replace(/~/g, "~0").replace(/\//g, "~1")).join("");

/** Whether JSON pointer `p` is `pattern`, where a `*` segment is any key or index. */
function matchesPointer(pattern, p) {
  const want = pattern.split("/"), got = p.split("/");
  return want.length === got.length && want.every((seg, i) => seg === "*" || seg === got[i]);
}

/**
 * Fields the schema does not declare. The packages' schemas accept unknown fields, so each field
 * is probed: its value is replaced by a function, which no JSON type matches. A declared field
 * then fails the schema at its own path; an undeclared one passes unnoticed.
 */
function unknownFields(doc, open = OPEN_PATHS[doc?.kind] ?? []) {
  const Model = modelFor(doc);
  if (!Model) return [];
  const unknown = [];
  const visit = (value, keys) => {
    if (Array.isArray(value)) {
      value.forEach((item, i) => visit(item, [...keys, i]));
      return;
    }
    if (!value || typeof value !== "object") return;
    for (const key of Object.keys(value)) {
      const at = [...keys, key];
      const probe = clone(doc);
      let parent = probe;
      for (const k of keys) parent = parent[k];
      parent[key] = () => {};
      const p = pointer(at);
      const hit = rawSchemaErrors(Model, probe).some(
        (e) => e.instancePath === p || e.instancePath.startsWith(p + "/"));
      if (!hit) unknown.push(p);
      else if (!open.some((o) => matchesPointer(o, p))) visit(value[key], at);
    }
  };
  visit(doc, []);
  return unknown;
}

// ------------------------------------------------------------------------------------------------
// Checks beyond the schemas. Each returns a list of problems ([] = fine).

const byKind = (docs, kind) => docs.filter((d) => d.doc.kind === kind);
const find = (docs, kind, ns, name) =>
  docs.find((d) => d.doc.kind === kind && d.doc.metadata?.name === name && d.doc.metadata?.namespace === ns);
const subset = (small, big) => Object.entries(small ?? {}).every(([k, v]) => big?.[k] === v);

let envoyStats;
function loadEnvoyStats() {
  if (envoyStats) return envoyStats;
  const out = {};
  for (const file of ["envoy/mesh-mode.yaml", "envoy/filter-mode.yaml"]) {
    const cfg = load(readFileSync(path.join(REPO, file), "utf8"), { schema: YAML11_SCHEMA });
    // The bootstraps serve both builds: each stat pattern names the Wasm filter's namespace
    // and the native module's (`(?:wasmcustom|dynamicmodulescustom)`). Istio runs the Wasm
    // filter: its settings must equal the bootstraps' as the Wasm build reads them.
    const BOTH = "(?:wasmcustom|dynamicmodulescustom)";
    const wasmOnly = (regex) => {
      if (!regex.includes(BOTH)) throw new Error(`${file}: stat pattern without both builds' namespaces: ${regex}`);
      return regex.replaceAll(BOTH, "wasmcustom");
    };
    // A bucket setting's `safe_regex` `^NS\.NAME(?:\..*)?`: the prefix `wasmcustom.NAME`.
    const prefixOf = (match) => {
      const m = /^\^(.*)\\\.([a-z0-9_]+)\(\?:\\\.\.\*\)\?$/.exec(match.safe_regex?.regex ?? "");
      if (!m || m[1] !== BOTH) throw new Error(`${file}: histogram bucket match is not both builds' stat prefix: ${JSON.stringify(match)}`);
      return `wasmcustom.${m[2]}`;
    };
    out[file] = {
      tags: cfg.stats_config.stats_tags.map((t) => ({ ...t, regex: wasmOnly(t.regex) })),
      // Buckets by stat-name prefix, as the statsHistogramBuckets annotation gives them.
      buckets: Object.fromEntries(cfg.stats_config.histogram_bucket_settings.map((b) => [prefixOf(b.match), b.buckets])),
    };
  }
  envoyStats = out;
  return out;
}

function canaryGateMetricNames() {
  const text = readFileSync(path.join(REPO, "src/measure/names.rs"), "utf8");
  const names = [...text.matchAll(/pub const \w+: &str = "(canary_[a-z0-9_]+)"/g)].map((m) => m[1]);
  // Families of names: `pub const NAMES: [&str; N] = ["canary_...", ...];`.
  for (const [, list] of text.matchAll(/pub const \w+: \[&str; \d+\] =\s*\[([^\]]*)\]/g))
    names.push(...[...list.matchAll(/"(canary_[a-z0-9_]+)"/g)].map((m) => m[1]));
  return new Set(names);
}

function rolloutProblems(ro, docs) {
  const p = [];
  const { name, namespace: ns } = ro.metadata;
  const spec = ro.spec ?? {};
  const canary = spec.strategy?.canary;
  if (!canary) return ["no strategy.canary"];
  if (canary.canaryService || canary.stableService) p.push("canaryService/stableService must not be used");
  const plan = PLAN[name];
  if (!plan) p.push(`${name} is not a tier-1 service`);
  else {
    if (spec.replicas !== plan.replicas) p.push(`replicas ${spec.replicas}, plan ${plan.replicas}`);
    const steps = [];
    for (const [w, pause] of plan.steps) {
      steps.push({ setWeight: w });
      if (pause) steps.push({ pause: { duration: pause } });
    }
    if (!isDeepStrictEqual(canary.steps, steps)) p.push(`steps ${JSON.stringify(canary.steps)}, plan ${JSON.stringify(steps)}`);
    const ports = spec.template?.spec?.containers?.flatMap((c) => c.ports ?? []) ?? [];
    if (!ports.some((pt) => pt.containerPort === plan.port && pt.name === "http")) p.push(`no container port http ${plan.port}`);
    const resources = spec.template?.spec?.containers?.[0]?.resources;
    if (plan.resources && !isDeepStrictEqual(resources, plan.resources))
      p.push(`resources ${JSON.stringify(resources)}, plan ${JSON.stringify(plan.resources)}`);
  }
  if (spec.revisionHistoryLimit !== 5) p.push("revisionHistoryLimit must be 5");
  if (spec.analysis?.successfulRunHistoryLimit !== 5 || spec.analysis?.unsuccessfulRunHistoryLimit !== 5)
    p.push("spec.analysis.{successful,unsuccessful}RunHistoryLimit must be 5");
  if (canary.abortScaleDownDelaySeconds !== 30) p.push("abortScaleDownDelaySeconds must be 30");
  if (canary.canaryMetadata?.labels?.role !== "canary") p.push("canaryMetadata.labels.role must be canary");
  if (canary.stableMetadata?.labels?.role !== "stable") p.push("stableMetadata.labels.role must be stable");
  if (spec.template?.spec?.containers?.[0]?.image !== `registry.example.com/teei/${name}:1.0.0`) p.push("image");
  const podLabels = spec.template?.metadata?.labels ?? {};
  if (!subset(spec.selector?.matchLabels, podLabels) || !spec.selector?.matchLabels)
    p.push("selector.matchLabels must match the pod template labels");

  // Traffic routing: the VirtualService, its routes and the DestinationRule exist and agree.
  const istio = canary.trafficRouting?.istio ?? {};
  const vsRef = istio.virtualService;
  const vs = vsRef && find(docs, "VirtualService", ns, vsRef.name);
  if (!vs) p.push(`VirtualService ${ns}/${vsRef?.name} not found`);
  else {
    const routeNames = (vs.doc.spec.http ?? []).map((r) => r.name);
    for (const r of vsRef.routes ?? []) if (!routeNames.includes(r)) p.push(`route ${r} not in ${vsRef.name}`);
    if (!isDeepStrictEqual(vsRef.routes, ["primary"])) p.push("virtualService.routes must be [primary]");
  }
  const drRef = istio.destinationRule;
  const dr = drRef && find(docs, "DestinationRule", ns, drRef.name);
  if (!dr) p.push(`DestinationRule ${ns}/${drRef?.name} not found`);
  else {
    const subsets = dr.doc.spec.subsets ?? [];
    for (const s of [drRef.canarySubsetName, drRef.stableSubsetName]) {
      const sub = subsets.find((x) => x.name === s);
      if (!sub) p.push(`subset ${s} not in ${drRef.name}`);
      else if (!subset(sub.labels, podLabels)) p.push(`subset ${s} labels do not select the pods`);
    }
    if (drRef.canarySubsetName !== "canary" || drRef.stableSubsetName !== "stable") p.push("subset names");
    if (dr.doc.spec.host !== name) p.push(`DestinationRule host ${dr.doc.spec.host}, expected ${name}`);
  }
  if (vs && dr) {
    for (const r of vs.doc.spec.http ?? [])
      for (const d of r.route ?? [])
        if (d.destination.host !== dr.doc.spec.host) p.push(`route ${r.name} host ${d.destination.host}`);
  }

  // The Service in front of the pods.
  const svc = find(docs, "Service", ns, name);
  if (!svc) p.push(`Service ${ns}/${name} not found`);
  else {
    if (!subset(svc.doc.spec.selector, podLabels) || !svc.doc.spec.selector) p.push("Service selector does not select the pods");
    const names = spec.template?.spec?.containers?.flatMap((c) => (c.ports ?? []).map((pt) => pt.name)) ?? [];
    for (const sp of svc.doc.spec.ports ?? []) {
      if (!names.includes(sp.targetPort)) p.push(`Service targetPort ${sp.targetPort} is no container port name`);
      if (plan && sp.port !== plan.port) p.push(`Service port ${sp.port}, plan ${plan.port}`);
    }
  }

  // Background analysis: templates exist, every argument they need is given.
  const analysis = canary.analysis;
  if (!analysis) p.push("no strategy.canary.analysis");
  else {
    if (analysis.startingStep !== 1) p.push("analysis.startingStep must be 1");
    const given = new Map((analysis.args ?? []).map((a) => [a.name, a]));
    if (given.get("service")?.value !== name) p.push("arg service must be the Rollout's name");
    const declared = new Set();
    for (const t of analysis.templates ?? []) {
      const kind = t.clusterScope ? "ClusterAnalysisTemplate" : "AnalysisTemplate";
      const tpl = docs.find((d) => d.doc.kind === kind && d.doc.metadata?.name === t.templateName &&
        (t.clusterScope || d.doc.metadata?.namespace === ns));
      if (!tpl) { p.push(`${kind} ${t.templateName} not found in ${ns}`); continue; }
      for (const a of tpl.doc.spec.args ?? []) {
        declared.add(a.name);
        if (a.value === undefined && !a.valueFrom && !given.has(a.name))
          p.push(`${t.templateName} needs arg ${a.name}`);
      }
    }
    for (const a of given.keys()) if (!declared.has(a)) p.push(`arg ${a} is declared by no template`);
    // The revisions the observers' series carry: the new ReplicaSet's and the stable one's.
    for (const [arg, which] of [["canary-hash", "Latest"], ["stable-hash", "Stable"]])
      if (given.get(arg)?.valueFrom?.podTemplateHashValue !== which || given.get(arg)?.value !== undefined)
        p.push(`arg ${arg} must be valueFrom.podTemplateHashValue: ${which}`);
    const names = (analysis.templates ?? []).map((t) => t.templateName);
    if (!isDeepStrictEqual(names, [`${name}-slo`, "canary-gate-abort"])) p.push(`templates ${names}, expected ${name}-slo, canary-gate-abort`);
  }

  // Stats annotations on the pods.
  p.push(...statsAnnotationProblems(spec.template?.metadata?.annotations ?? {}, true));
  const cmName = spec.template?.metadata?.annotations?.["sidecar.istio.io/bootstrapOverride"];
  const cm = find(docs, "ConfigMap", ns, cmName);
  if (!cm || !cm.doc.data?.["custom_bootstrap.json"]) p.push(`ConfigMap ${ns}/${cmName} with custom_bootstrap.json not found`);
  return p;
}

const SAMPLE_STAT = "wasmcustom.canary_requests_total.service.corp-cockpit.version.canary.reporter.router";

function statsAnnotationProblems(ann, sidecar) {
  const p = [];
  let proxyConfig;
  try {
    proxyConfig = load(ann["proxy.istio.io/config"] ?? "", { schema: YAML11_SCHEMA });
  } catch (e) {
    return [`proxy.istio.io/config is not YAML: ${e.message}`];
  }
  const keys = Object.keys(proxyConfig ?? {});
  if (!isDeepStrictEqual(keys, ["proxyStatsMatcher"])) p.push(`proxy.istio.io/config keys ${keys}`);
  const regexps = proxyConfig?.proxyStatsMatcher?.inclusionRegexps ?? [];
  if (!isDeepStrictEqual(regexps, ["wasmcustom\\.canary_.*"])) p.push(`inclusionRegexps ${JSON.stringify(regexps)}`);
  else if (!new RegExp(`^(?:${regexps[0]})$`).test(SAMPLE_STAT) || new RegExp(`^(?:${regexps[0]})$`).test("wasmcustomXcanary_x"))
    p.push("inclusionRegexps does not match canary-gate's stats exactly");
  let buckets;
  try {
    buckets = JSON.parse(ann["sidecar.istio.io/statsHistogramBuckets"] ?? "");
  } catch (e) {
    return [...p, `sidecar.istio.io/statsHistogramBuckets is not JSON: ${e.message}`];
  }
  const envoy = loadEnvoyStats()["envoy/mesh-mode.yaml"].buckets;
  if (!isDeepStrictEqual(buckets, envoy))
    p.push("statsHistogramBuckets differ from envoy/mesh-mode.yaml's histogram_bucket_settings");
  if (sidecar && ann["sidecar.istio.io/bootstrapOverride"] !== "canary-gate-stats")
    p.push("sidecar.istio.io/bootstrapOverride must be canary-gate-stats");
  return p;
}

function virtualServiceProblems(vs) {
  const p = [];
  const http = vs.spec?.http ?? [];
  const svc = vs.metadata.name.replace(/-vsvc$/, "");
  // The in-cluster names, then public ones (through the gateway), never another service's.
  const hosts = vs.spec?.hosts ?? [];
  if (!isDeepStrictEqual(hosts.slice(0, 2), [svc, `${svc}.teei-platform.svc.cluster.local`])) p.push(`hosts ${hosts}`);
  for (const h of hosts.slice(2))
    if (!HOST.test(h) || !h.includes(".") || h.endsWith(".cluster.local") || h.startsWith("*")) p.push(`public host ${h}`);
  if (new Set(hosts).size !== hosts.length) p.push(`duplicate hosts ${hosts}`);
  // Bound to `mesh` (every calling pod's sidecar); to the Gateway only with public names to take.
  const gateways = hosts.length > 2 ? ["istio-system/teei-gateway", "mesh"] : ["mesh"];
  if (!isDeepStrictEqual(vs.spec?.gateways, gateways)) p.push(`gateways ${vs.spec?.gateways}, expected ${gateways}`);
  if (!isDeepStrictEqual(http.map((r) => r.name), ["canary-pinned", "stable-pinned", "primary"]))
    p.push(`http routes ${http.map((r) => r.name)}, expected canary-pinned, stable-pinned, primary`);
  const primaryAt = http.findIndex((r) => r.name === "primary");
  if (primaryAt !== http.length - 1) p.push("route primary must be last");
  const primary = http[primaryAt];
  if (primary) {
    const dests = primary.route ?? [];
    if (dests.length !== 2) p.push(`primary has ${dests.length} destinations, expected 2`);
    const subsets = dests.map((d) => d.destination.subset);
    if (!isDeepStrictEqual(subsets, ["stable", "canary"])) p.push(`primary subsets ${subsets}`);
    if (!isDeepStrictEqual(dests.map((d) => d.weight), [100, 0])) p.push("primary weights must start at stable 100, canary 0");
    if (primary.match) p.push("primary must match everything (no match)");
  }
  http.slice(0, Math.max(primaryAt, 0)).forEach((r) => {
    const version = r.name.replace(/-pinned$/, "");
    // The service's own version header: another service's, forwarded by an application, never moves it.
    const own = VERSION_HEADER_PREFIX + svc;
    const header = r.match?.[0]?.headers?.[own];
    if (r.match?.length !== 1 || Object.keys(r.match?.[0]?.headers ?? {}).length !== 1 || !isDeepStrictEqual(header, { exact: version }))
      p.push(`route ${r.name} must match ${own} exact ${version}, and nothing else`);
    if (r.route?.length !== 1 || r.route[0].destination.subset !== version || r.route[0].weight !== undefined)
      p.push(`route ${r.name} must go to subset ${version} only`);
  });
  return p;
}

const HOST = /^(\*\.)?[a-z0-9.-]{1,253}$/;
const LABEL_VALUE = /^[a-z0-9-]{1,63}$/;

function pluginConfigProblems(wp, docs) {
  const p = [];
  const cfg = wp.spec?.pluginConfig;
  if (!cfg || typeof cfg !== "object") return ["no pluginConfig"];
  for (const [parent, keys] of Object.entries(PLUGIN_KEYS)) {
    const obj = parent ? parent.split(".").reduce((o, k) => o?.[k], cfg) : cfg;
    if (obj === undefined) continue;
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) { p.push(`pluginConfig.${parent} must be an object`); continue; }
    for (const k of Object.keys(obj)) if (!keys.includes(k)) p.push(`unknown pluginConfig key ${parent ? parent + "." : ""}${k}`);
  }
  if (!LABEL_VALUE.test(cfg.service ?? "")) p.push(`service ${cfg.service}`);
  const ro = find(docs, "Rollout", "teei-platform", cfg.service);
  if (!ro) p.push(`no Rollout for service ${cfg.service}`);
  if (wp.spec.failStrategy !== "FAIL_OPEN") p.push("failStrategy must be FAIL_OPEN");
  if (wp.spec.phase !== "STATS") p.push("phase must be STATS");
  p.push(...imageProblems(wp));
  const role = cfg.role ?? "router";
  if (role === "observer") {
    if (cfg.gate) p.push("an observer takes no gate");
    if (cfg.vitals) p.push("an observer takes no vitals (beacons go to routers)");
    if (wp.metadata.namespace !== "teei-platform") p.push("observers run in teei-platform");
    // An inbound observer measures the requests its pods serve; an outbound one, the calls they make.
    const mode = cfg.direction === "outbound" ? "CLIENT" : "SERVER";
    if (!isDeepStrictEqual(wp.spec.match, [{ mode }])) p.push(`observer match must be [{mode: ${mode}}]`);
    if (wp.spec.selector?.matchLabels?.app !== cfg.service) p.push("observer selector must be app: <service>");
    if (cfg.revision_label !== REVISION_LABEL)
      p.push(`revision_label must be ${REVISION_LABEL} (set per ReplicaSet, never changed on a running pod)`);
    if ((cfg.revision_header ?? REVISION_HEADER) !== REVISION_HEADER) p.push(`revision_header must be ${REVISION_HEADER}`);
    const canary = ro?.doc.spec.strategy?.canary;
    const label = cfg.version_label ?? "version";
    if (ro && (canary?.canaryMetadata?.labels?.[label] !== (cfg.canary ?? "canary") ||
      canary?.stableMetadata?.labels?.[label] !== (cfg.stable ?? "stable")))
      p.push(`version_label ${label} is not set to the version names by canaryMetadata/stableMetadata`);
  } else if (role === "router") {
    if (cfg.split?.mode !== "mesh") p.push("router split.mode must be mesh");
    const vs = find(docs, "VirtualService", NAMESPACE, `${cfg.service}-vsvc`);
    const matched = new Set((vs?.doc.spec.http ?? []).flatMap((r) => (r.match ?? []).flatMap((m) => Object.keys(m.headers ?? {}))));
    if (cfg.version_header !== VERSION_HEADER_PREFIX + cfg.service || !matched.has(cfg.version_header))
      p.push(`version_header ${cfg.version_header}: must be ${VERSION_HEADER_PREFIX}${cfg.service}, the header the VirtualService's pinned routes match`);
    if ((cfg.revision_header ?? REVISION_HEADER) !== REVISION_HEADER)
      p.push(`revision_header must be ${REVISION_HEADER} (what the observers stamp)`);
    // Each router removes its version and reason headers from requests for hosts it does not
    // handle: two routers in one proxy sharing either would remove each other's.
    if (cfg.reason_header !== REASON_HEADER_PREFIX + cfg.service)
      p.push(`reason_header ${cfg.reason_header}: must be ${REASON_HEADER_PREFIX}${cfg.service} (routers sharing a proxy remove each other's shared headers)`);
    const client = isDeepStrictEqual(wp.spec.match, [{ mode: "CLIENT" }]);
    // From outside the mesh anyone can send the override header: it needs a tester's token there.
    const tokens = cfg.override?.token_sha256;
    if (!client && !(Array.isArray(tokens) && tokens.length >= 1 && tokens.length <= 16 && tokens.every((t) => /^[0-9a-f]{64}$/.test(t))))
      p.push("a gateway router needs override.token_sha256 (1 to 16 SHA-256 digests): anyone outside the mesh can send the override header");
    const hosts = cfg.hosts ?? [];
    for (const h of hosts) if (!HOST.test(h)) p.push(`host ${h}`);
    // Only the names requests reach this router's proxies under: a gateway takes the public names
    // (in-cluster calls never cross it), a caller's sidecar the in-cluster ones (public names
    // resolve to the gateway, whose own router handles them).
    const receivable = client ? inClusterHosts(cfg.service) : (vs?.doc.spec.hosts ?? []).slice(2);
    for (const h of hosts) if (!receivable.includes(h))
      p.push(`host ${h}: ${client ? "a caller's sidecar" : "the ingress gateway"} never routes it to ${cfg.service}`);
    for (const h of receivable) if (!hosts.includes(h)) p.push(`hosts lack ${h}, a name requests reach ${client ? "the callers' sidecars" : "the gateway"} under`);
    if (hosts.length === 0) p.push("a router without hosts would route every request of its proxy");
    if (cfg.sticky?.cookie !== `canary-${cfg.service}` || cfg.sticky?.secure !== true || cfg.sticky?.max_age_s !== 86400)
      p.push("sticky must be {cookie: canary-<service>, max_age_s: 86400, secure: true}");
    const g = cfg.gate ?? {};
    for (const [k, v] of Object.entries({ consecutive: 3, max_error_ratio: 0.05 }))
      if (g[k] !== v) p.push(`gate.${k} must be ${v}`);
    // Each routing proxy gates on its share: at the plan's canary volume floor, spread over the
    // gateway replicas or the callers' pods, a window must hold min_requests, and min_requests
    // must be enough to tell 5% errors from noise.
    const floor = SLO[`${cfg.service}-slo`]?.["request-volume"]?.[1] ?? 2;
    const pods = client
      ? CALLERS[cfg.service].reduce((n, c) => n + (find(docs, "Rollout", NAMESPACE, c)?.doc.spec.replicas ?? 0), 0)
      : ASSUMED_GATEWAY_REPLICAS;
    const perProxy = (floor / pods) * (g.window_s ?? 5);
    if (!(g.min_requests >= 20)) p.push(`gate.min_requests ${g.min_requests}: below 20 a 5% error ratio is noise`);
    // A slice too thin for any minute-long window at the floor: the longest window, the fewest
    // requests (the thresholds judge above the floor; the comparison needs no minimum).
    const thin = (floor / pods) * 60 < 20 && g.window_s === 60 && g.min_requests === 20;
    if (!(g.min_requests <= perProxy) && !thin) p.push(`gate.min_requests ${g.min_requests} exceeds what one of ${pods} ${client ? "caller pods" : "gateway replicas"} sees in window_s ${g.window_s} at the volume floor of ${floor} req/s (${perProxy})`);
    if (!(g.window_s <= 60)) p.push(`gate.window_s ${g.window_s}: over a minute, the gate is no faster than the analysis`);
    const latency = { "unified-profile": { max_p95_ms: 1000, max_p99_ms: 2000 }, "corp-cockpit": { max_p95_ms: 2000 } }[cfg.service] ?? {};
    for (const k of ["max_p95_ms", "max_p99_ms"]) if (g[k] !== latency[k]) p.push(`gate.${k} must be ${latency[k]}`);
    // The canary-vs-stable comparison in every router; its latency test where the plan has a
    // latency SLO on the requests the router sees (istio/generate.py, `compare_slow`).
    const c = g.compare;
    if (!c || typeof c !== "object") p.push("gate.compare missing: every router compares the canary with stable");
    else {
      if (!(c.alpha === undefined || (c.alpha >= 0.000001 && c.alpha <= 0.1))) p.push(`gate.compare.alpha ${c.alpha} outside [0.000001, 0.1]`);
      if (!(c.min_effect === undefined || (c.min_effect > 0 && c.min_effect < 1))) p.push(`gate.compare.min_effect ${c.min_effect}: 0 trips on any difference`);
      const slow = { "unified-profile": 500, "corp-cockpit": 1000 }[cfg.service];
      if (c.slow_ms !== slow) p.push(`gate.compare.slow_ms must be ${slow} (the plan's latency SLO)`);
      if (!(c.min_users === undefined || (Number.isInteger(c.min_users) && c.min_users >= 1 && c.min_users <= 32)))
        p.push(`gate.compare.min_users ${c.min_users} outside 1..=32`);
    }
    if (!(g.eval_ms === undefined || (Number.isInteger(g.eval_ms) && g.eval_ms >= 100 && g.eval_ms <= 1000)))
      p.push(`gate.eval_ms ${g.eval_ms} outside 100..=1000`);
    p.push(...vitalsProblems(cfg));
    if (wp.spec.priority !== 10) p.push("router priority must be 10");
    if (client) {
      const caller = wp.spec.selector?.matchLabels?.app;
      if (wp.metadata.namespace !== NAMESPACE) p.push("client routers run in teei-platform");
      if (!find(docs, "Rollout", NAMESPACE, caller) || caller === cfg.service) p.push(`selector app ${caller}: no other tier-1 workload`);
      if (cfg.vitals) p.push("a client router takes no beacons: pages send them to the public name, through the gateway");
    } else if (wp.metadata.namespace !== "istio-system" || wp.spec.selector?.matchLabels?.istio !== "ingressgateway" || wp.spec.match)
      p.push("a gateway router runs in istio-system with selector istio: ingressgateway and no match");
  } else p.push(`role ${role}`);
  return p;
}

// The web-vitals beacon endpoint (`vitals`) and the gate's limits on what it measures (`gate.vitals`).
function vitalsProblems(cfg) {
  const p = [];
  const v = cfg.vitals, gv = cfg.gate?.vitals;
  const int = (x, lo, hi) => x === undefined || (Number.isInteger(x) && x >= lo && x <= hi);
  if (v) {
    if (!(v.path === undefined || (typeof v.path === "string" && v.path.startsWith("/") && !v.path.includes("?"))))
      p.push(`vitals.path ${v.path}: a path starting with /, no query`);
    if (!int(v.max_body_bytes, 1, 65536)) p.push(`vitals.max_body_bytes ${v.max_body_bytes} outside 1..=65536`);
    if (!int(v.max_per_second, 1, 100000)) p.push(`vitals.max_per_second ${v.max_per_second} outside 1..=100000`);
  }
  if (gv && !v) p.push("gate.vitals without vitals: nothing would measure them");
  const want = GATE_VITALS[cfg.service];
  if (want && !isDeepStrictEqual(gv, want)) p.push(`gate.vitals ${JSON.stringify(gv)}, want ${JSON.stringify(want)}`);
  if (!want && (v || gv)) p.push(`${cfg.service} sends no web-vitals beacons: no vitals, no gate.vitals`);
  return p;
}

// An outcome on x-envoy-attempt-count needs Envoy to write it into responses, which it does only
// with include_attempt_count_in_response on the virtual host: Istio does not set it.
function attemptCountProblems(wp, docs) {
  const cfg = wp.spec?.pluginConfig ?? {};
  if (!(cfg.outcomes ?? []).some((o) => o.response_header === "x-envoy-attempt-count")) return [];
  const context = cfg.direction === "outbound" ? "SIDECAR_OUTBOUND" : "SIDECAR_INBOUND";
  const sets = byKind(docs, "EnvoyFilter").some(({ doc }) =>
    doc.metadata?.namespace === wp.metadata.namespace &&
    isDeepStrictEqual(doc.spec?.workloadSelector?.labels, wp.spec?.selector?.matchLabels) &&
    (doc.spec?.configPatches ?? []).some((c) => c.applyTo === "VIRTUAL_HOST" && c.match?.context === context &&
      c.patch?.operation === "MERGE" && c.patch?.value?.include_attempt_count_in_response === true));
  return sets ? [] : [`outcome on x-envoy-attempt-count without an EnvoyFilter setting include_attempt_count_in_response on ${context} virtual hosts of its workloads`];
}

// ------------------------------------------------------------------------------------------------
// The WasmPlugin image: pinned by digest, the digest of istio/image/canary-gate.pin.

const PIN_LINE = /^([A-Za-z0-9_][A-Za-z0-9._-]{0,127})@(sha256:[0-9a-f]{64})$/;
const OCI_URL = /^oci:\/\/[a-z0-9.-]+(?::[0-9]+)?\/[a-z0-9._\/-]+:([A-Za-z0-9_][A-Za-z0-9._-]{0,127})@(sha256:[0-9a-f]{64})$/;

let pinned;
/** TAG@DIGEST from the pin file, or { error }. */
function readPin() {
  if (pinned) return pinned;
  let lines;
  try {
    lines = readFileSync(path.join(REPO, IMAGE_PIN), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  } catch (e) {
    return (pinned = { error: `${IMAGE_PIN}: ${e.message}` });
  }
  pinned = lines.length === 1 && PIN_LINE.test(lines[0]) ? { pin: lines[0] } : { error: `${IMAGE_PIN}: expected one line TAG@sha256:DIGEST` };
  return pinned;
}

function imageProblems(wp, pin = readPin()) {
  const url = wp.spec?.url ?? "";
  if (url.startsWith("file:///")) return url.endsWith(".wasm") ? [] : [`url ${url}`];
  const m = OCI_URL.exec(url);
  if (!m) return [`url ${url}: expected oci://REGISTRY/REPO:TAG@sha256:DIGEST (pinned by digest)`];
  const p = [];
  if (pin.error) p.push(pin.error);
  else if (`${m[1]}@${m[2]}` !== pin.pin) p.push(`url pins ${m[1]}@${m[2]}, ${IMAGE_PIN} has ${pin.pin}`);
  if (wp.spec.imagePullPolicy !== "IfNotPresent") p.push("imagePullPolicy must be IfNotPresent (the digest never changes)");
  return p;
}

/** The image `make image` built here, if any, as TAG@DIGEST. */
function localImage() {
  try {
    const index = JSON.parse(readFileSync(path.join(REPO, IMAGE_LAYOUT, "index.json"), "utf8"));
    const m = index.manifests?.[0];
    return m ? `${m.annotations?.["org.opencontainers.image.ref.name"]}@${m.digest}` : undefined;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------------------------------------
// Values the tier-1 plan does not give: each line holding one carries "# not in the tier-1 plan"
// at its end or in the comment block right above it.

const PLACEHOLDER_VALUES = [/example\.com/, /teei-gateway/, /^\s*istio: ingressgateway$/, /file:\/\/\//, /cluster\.local\/ns\//];
// The Prometheus address the plan names, still the reader's to set: marked on every use.
const PROMETHEUS_MARK = "placeholder: your Prometheus";
const UNPLANNED_VALUES = [/^\s*(replicas|port|containerPort|duration):/];

function placeholderProblems(file, text) {
  const lines = text.split("\n");
  const unplanned = Object.entries(PLAN).some(([svc, plan]) => !plan.resources && file.startsWith(`istio/services/${svc}/`));
  const patterns = [...PLACEHOLDER_VALUES, ...(unplanned ? UNPLANNED_VALUES : [])];
  const p = [];
  lines.forEach((line, i) => {
    if (/^\s*#/.test(line)) return;
    const value = line.replace(/\s+#.*$/, "");
    if (value.includes(PROMETHEUS) && !line.slice(value.length).includes(PROMETHEUS_MARK))
      p.push(`line ${i + 1}: the Prometheus address without "# ${PROMETHEUS_MARK} ..."`);
    if (!patterns.some((re) => re.test(value))) return;
    const marked = line.slice(value.length).includes(NOT_IN_PLAN) || commentAbove(lines, i).some((c) => c.includes(NOT_IN_PLAN));
    if (!marked) p.push(`line ${i + 1} "${value.trim()}" lacks "# ${NOT_IN_PLAN}"`);
  });
  return p;
}

function argsUsed(text) {
  return new Set([...text.matchAll(/\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}/g)].map((m) => m[1]));
}

function analysisTemplateProblems(entry, gateMetrics) {
  const p = [];
  const at = entry.doc;
  const expected = SLO[at.metadata.name];
  if (!expected) return [`no SLO table entry for ${at.metadata.name}`];
  const metrics = at.spec.metrics ?? [];
  const names = metrics.map((m) => m.name);
  if (!isDeepStrictEqual([...names].sort(), Object.keys(expected).sort()))
    p.push(`metrics ${names}, expected ${Object.keys(expected)}`);
  const declared = new Set((at.spec.args ?? []).map((a) => a.name));
  const lines = entry.text.split("\n");
  for (const m of metrics) {
    const want = expected[m.name];
    const prom = m.provider?.prometheus;
    if (!prom) { p.push(`${m.name}: no prometheus provider`); continue; }
    if (prom.address !== PROMETHEUS) p.push(`${m.name}: address ${prom.address}`);
    for (const a of argsUsed(JSON.stringify(m))) if (!declared.has(a)) p.push(`${m.name}: uses undeclared arg ${a}`);
    const wantInterval = at.metadata.name === "canary-gate-abort" ? "15s" : "1m";
    if (m.interval !== wantInterval) p.push(`${m.name}: interval ${m.interval}`);
    // canary-gate's series, or an application metric (marked by a comment right above it).
    const series = [...prom.query.matchAll(/\b(canary_[a-z0-9_]+?)(_bucket)?\{/g)].map((x) => x[1]);
    for (const s of series) if (!gateMetrics.has(s)) p.push(`${m.name}: ${s} is no canary-gate metric (src/measure/names.rs)`);
    const app = series.length === 0;
    const at_ = lines.findIndex((l) => new RegExp(`^\\s*- name: ${m.name}$`).test(l));
    const marked = at_ > 0 && lines[at_ - 1].trim() === APP_COMMENT;
    if (app !== marked) p.push(`${m.name}: ${app ? "application metric without" : "canary-gate metric with"} the comment "${APP_COMMENT}" right above it`);
    if (!app && at.metadata.name !== "canary-gate-abort") {
      // Router series by version; observer series by revision only (their version label is the
      // pod's as of proxy start, stale after a promotion).
      const observer = prom.query.includes('reporter="observer"');
      const hash = BASELINE.has(m.name) ? "stable-hash" : "canary-hash";
      // The web-vitals series carry no reporter (only routers report them): selecting one finds nothing.
      const unreported = series.every((s) => UNREPORTED.test(s));
      if (unreported && /\breporter=/.test(prom.query)) p.push(`${m.name}: selects a reporter the web-vitals series do not carry`);
      if (!unreported && series.some((s) => UNREPORTED.test(s))) p.push(`${m.name}: mixes web-vitals series with per-reporter ones`);
      const window = at.metadata.name === SHADOW.template ? `[${SHADOW.window}]` : "[5m]";
      const needles = observer
        ? ['service="{{args.service}}"', `revision="{{args.${hash}}}"`, window]
        : ['service="{{args.service}}"', 'version="canary"', ...(unreported ? [] : ['reporter="router"']), window];
      if (at.metadata.name === SHADOW.template && !observer) p.push(`${m.name}: the shadow phase is judged by revision, from the observers`);
      for (const needle of needles) if (!prom.query.includes(needle)) p.push(`${m.name}: query lacks ${needle}`);
      if (observer && /\bversion=/.test(prom.query)) p.push(`${m.name}: an observer query selects by version`);
      // Inbound and outbound observers of one pod share service and revision.
      if (observer && !/direction="(inbound|outbound)"/.test(prom.query)) p.push(`${m.name}: an observer query mixes directions`);
      if (observer && prom.query.includes('reporter="router"')) p.push(`${m.name}: mixes router and observer series`);
    }
    if (at.metadata.name === "canary-gate-abort" && !prom.query.includes('revision=~"{{args.canary-hash}}|"'))
      p.push(`${m.name}: must read this run's canary revision (or a gate without one), never an earlier canary's trip`);
    if (UNPLANNED_SLO.has(at.metadata.name) && !app && !BASELINE.has(m.name) &&
      !commentAbove(lines, at_).some((c) => c.includes(NOT_IN_PLAN)))
      p.push(`${m.name}: a threshold the plan does not give, without "${NOT_IN_PLAN}" above it`);
    if (!want) continue;
    const [op, threshold, failureLimit, wantApp] = want;
    if (wantApp !== app) p.push(`${m.name}: expected ${wantApp ? "an application" : "a canary-gate"} metric`);
    if (m.failureLimit !== failureLimit) p.push(`${m.name}: failureLimit ${m.failureLimit}, expected ${failureLimit}`);
    const guard = "len(result) > 0 && !isNaN(result[0])";
    let success, failure;
    if (op === "volume") [success, failure] = [`len(result) > 0 && result[0] > ${threshold}`, "false"];
    else if (op === "<") [success, failure] = [`${guard} && result[0] < ${threshold}`, `${guard} && result[0] >= ${threshold}`];
    else[success, failure] = [`${guard} && result[0] > ${threshold}`, `${guard} && result[0] <= ${threshold}`];
    if (m.successCondition !== success) p.push(`${m.name}: successCondition ${m.successCondition}, expected ${success}`);
    if (m.failureCondition !== failure) p.push(`${m.name}: failureCondition ${m.failureCondition}, expected ${failure}`);
  }
  // dryRun: every baseline, and application metrics only.
  const dry = (at.spec.dryRun ?? []).map((d) => d.metricName);
  for (const b of BASELINE) if (names.includes(b) && !dry.includes(b)) p.push(`${b}: a baseline missing from dryRun`);
  for (const d of dry) {
    const want = expected[d];
    if (!names.includes(d)) p.push(`dryRun names ${d}, no metric of the template`);
    else if (!BASELINE.has(d) && !want?.[3]) p.push(`dryRun holds ${d}, a canary-gate SLO`);
  }
  return p;
}

/** The comment lines right above line `at` (its own comment block). */
function commentAbove(lines, at) {
  const out = [];
  for (let i = at - 1; i >= 0 && /^\s*#/.test(lines[i]); i--) out.push(lines[i]);
  return out;
}

/** Tag values Envoy extracts from `name` (first capture group removed, second is the value). */
function extractTags(tags, name) {
  const values = {};
  let stripped = name;
  for (const t of tags) {
    const m = new RegExp(t.regex).exec(name);
    if (!m) continue;
    values[t.tag_name] = m[2];
    stripped = stripped.replace(m[1], "");
  }
  return { values, stripped };
}

const TAG_SAMPLES = [
  ["wasmcustom.canary_responses_total.service.corp-cockpit.version.canary.reporter.router.code_class.5xx",
    { service: "corp-cockpit", version: "canary", reporter: "router", code_class: "5xx" }, "wasmcustom.canary_responses_total"],
  ["wasmcustom.canary_responses_total.service.impact-in.version.unknown.reporter.router.code_class.none",
    { service: "impact-in", version: "unknown", reporter: "router", code_class: "none" }, "wasmcustom.canary_responses_total"],
  ["wasmcustom.canary_request_duration_milliseconds.service.q2q-ai.version.stable.reporter.observer",
    { service: "q2q-ai", version: "stable", reporter: "observer" }, "wasmcustom.canary_request_duration_milliseconds"],
  ["wasmcustom.canary_route_decisions_total.service.unified-profile.version.canary.reporter.router.reason.pin",
    { service: "unified-profile", version: "canary", reporter: "router", reason: "pin" }, "wasmcustom.canary_route_decisions_total"],
  ["wasmcustom.canary_gate_tripped.service.impact-in", { service: "impact-in" }, "wasmcustom.canary_gate_tripped"],
  // Observer series carry the revision after the reporter.
  ["wasmcustom.canary_requests_total.service.corp-cockpit.version.canary.reporter.observer.revision.6c9b8d7f5",
    { service: "corp-cockpit", version: "canary", reporter: "observer", revision: "6c9b8d7f5" }, "wasmcustom.canary_requests_total"],
  ["wasmcustom.canary_responses_total.service.unified-profile.version.stable.reporter.observer.revision.5d8f7c9b4.code_class.5xx",
    { service: "unified-profile", version: "stable", reporter: "observer", revision: "5d8f7c9b4", code_class: "5xx" },
    "wasmcustom.canary_responses_total"],
  ["wasmcustom.canary_route_decisions_total.service.q2q-ai.version.canary.reporter.observer.revision.unknown.reason.pin",
    { service: "q2q-ai", version: "canary", reporter: "observer", revision: "unknown", reason: "pin" }, "wasmcustom.canary_route_decisions_total"],
  ["wasmcustom.canary_request_duration_milliseconds.service.impact-in.version.canary.reporter.observer.revision.A_b-9",
    { service: "impact-in", version: "canary", reporter: "observer", revision: "A_b-9" }, "wasmcustom.canary_request_duration_milliseconds"],
  ["wasmcustom.canary_window_requests.service.reporting.version.stable.reporter.observer.revision.7f6e5d4c3",
    { service: "reporting", version: "stable", reporter: "observer", revision: "7f6e5d4c3" }, "wasmcustom.canary_window_requests"],
  // A mesh-mode router's gate series, per canary revision: no version, no reporter.
  ["wasmcustom.canary_gate_tripped.service.impact-in.revision.6c9b8d7f5",
    { service: "impact-in", revision: "6c9b8d7f5" }, "wasmcustom.canary_gate_tripped"],
  ["wasmcustom.canary_gate_state.service.corp-cockpit.revision.unknown",
    { service: "corp-cockpit", revision: "unknown" }, "wasmcustom.canary_gate_state"],
  // The gate comparison's evidence, per test: service and test only.
  ["wasmcustom.canary_gate_evidence.service.unified-profile.test.latency",
    { service: "unified-profile", test: "latency" }, "wasmcustom.canary_gate_evidence"],
  ["wasmcustom.canary_gate_evidence.service.api-gateway.test.errors",
    { service: "api-gateway", test: "errors" }, "wasmcustom.canary_gate_evidence"],
  // Web-vitals beacons: service and version only; rejected beacons by service and reason.
  ["wasmcustom.canary_web_vitals_lcp_milliseconds.service.corp-cockpit.version.canary",
    { service: "corp-cockpit", version: "canary" }, "wasmcustom.canary_web_vitals_lcp_milliseconds"],
  ["wasmcustom.canary_web_page_views_total.service.corp-cockpit.version.stable",
    { service: "corp-cockpit", version: "stable" }, "wasmcustom.canary_web_page_views_total"],
  ["wasmcustom.canary_window_web_js_error_ratio_ppm.service.corp-cockpit.version.canary",
    { service: "corp-cockpit", version: "canary" }, "wasmcustom.canary_window_web_js_error_ratio_ppm"],
  ["wasmcustom.canary_vitals_rejected_total.service.corp-cockpit.reason.rate_limited",
    { service: "corp-cockpit", reason: "rate_limited" }, "wasmcustom.canary_vitals_rejected_total"],
  ["wasmcustom.canary_vitals_rejected_total.service.corp-cockpit.reason.method",
    { service: "corp-cockpit", reason: "method" }, "wasmcustom.canary_vitals_rejected_total"],
  // The router's view of which revision serves each version: no reporter.
  ["wasmcustom.canary_revision_info.service.corp-cockpit.version.stable.revision.5d8f7c9b4",
    { service: "corp-cockpit", version: "stable", revision: "5d8f7c9b4" }, "wasmcustom.canary_revision_info"],
];

function configMapProblems(cm, envoy) {
  const p = [];
  let boot;
  try {
    boot = JSON.parse(cm.data?.["custom_bootstrap.json"] ?? "");
  } catch (e) {
    return [`custom_bootstrap.json is not JSON: ${e.message}`];
  }
  if (!isDeepStrictEqual(Object.keys(boot), ["stats_config"]) || !isDeepStrictEqual(Object.keys(boot.stats_config), ["stats_tags"]))
    p.push("custom_bootstrap.json must hold stats_config.stats_tags only");
  const tags = boot.stats_config?.stats_tags ?? [];
  for (const [file, e] of Object.entries(envoy))
    if (!isDeepStrictEqual(tags, e.tags)) p.push(`stats_tags differ from ${file}`);
  for (const [name, want, stripped] of TAG_SAMPLES) {
    const got = extractTags(tags, name);
    if (!isDeepStrictEqual(got.values, want)) p.push(`${name}: tags ${JSON.stringify(got.values)}`);
    if (got.stripped !== stripped) p.push(`${name}: tag-extracted name ${got.stripped}`);
  }
  return p;
}

const BOOTSTRAP_DIR = "/etc/istio/custom-bootstrap";

/**
 * The gateway pod as injected from a patched Deployment: Istio 1.27+'s gateway injection template
 * (`templateMounts`) mounts the ConfigMap `sidecar.istio.io/bootstrapOverride` names as volume
 * custom-bootstrap-volume and sets ISTIO_BOOTSTRAP_OVERRIDE, as the sidecar template does; 1.26
 * and earlier ignore the annotation. Exactly one mount must then hold the bootstrap.
 */
function gatewayPatchProblems(patch, docs, templateMounts) {
  const p = [];
  const template = patch?.spec?.template;
  if (!template) return ["no spec.template"];
  const extra = Object.keys(patch).filter((k) => k !== "spec").concat(Object.keys(patch.spec).filter((k) => k !== "template"));
  if (extra.length) p.push(`the patch touches more than spec.template: ${extra}`);
  const wrapped = {
    apiVersion: "apps/v1", kind: "Deployment",
    metadata: { name: "istio-ingressgateway", namespace: "istio-system" },
    spec: { selector: { matchLabels: { istio: "ingressgateway" } }, template },
  };
  p.push(...schemaErrors(wrapped).map((e) => `schema: ${e}`));
  p.push(...unknownFields(wrapped).map((f) => `unknown field ${f}`));
  const ann = template.metadata?.annotations ?? {};
  p.push(...statsAnnotationProblems(ann, templateMounts));
  if (!templateMounts && ann["sidecar.istio.io/bootstrapOverride"])
    p.push("sidecar.istio.io/bootstrapOverride here: from Istio 1.27 the template mounts it too, beside the mount by hand");
  const proxy = template.spec?.containers?.find((c) => c.name === "istio-proxy");
  const injected = templateMounts && ann["sidecar.istio.io/bootstrapOverride"];
  const mounts = [...(proxy?.volumeMounts ?? []), ...(injected ? [{ name: "custom-bootstrap-volume", mountPath: BOOTSTRAP_DIR }] : [])];
  const volumes = [...(template.spec?.volumes ?? []), ...(injected ? [{ name: "custom-bootstrap-volume", configMap: { name: injected } }] : [])];
  const env = injected ? `${BOOTSTRAP_DIR}/custom_bootstrap.json` : proxy?.env?.find((e) => e.name === "ISTIO_BOOTSTRAP_OVERRIDE")?.value;
  const at = mounts.filter((m) => m.mountPath === BOOTSTRAP_DIR);
  if (at.length !== 1) p.push(`${at.length} mounts at ${BOOTSTRAP_DIR} (the injection template's and the patch's): expected one`);
  if (env !== `${BOOTSTRAP_DIR}/custom_bootstrap.json`) p.push("ISTIO_BOOTSTRAP_OVERRIDE must point at custom_bootstrap.json");
  const vol = volumes.find((v) => v.name === at[0]?.name);
  const cm = vol?.configMap && find(docs, "ConfigMap", "istio-system", vol.configMap.name);
  if (!cm || !cm.doc.data?.["custom_bootstrap.json"]) p.push("the mounted ConfigMap is not an istio-system ConfigMap with custom_bootstrap.json");
  return p;
}

/**
 * PromQL syntax of every query, arguments substituted, checked by promtool (Debian's
 * `prometheus` package) as the expressions of recording rules.
 */
function promqlProblems(templates) {
  const rules = [];
  for (const d of templates) {
    const service = d.doc.metadata.name === "canary-gate-abort" ? "corp-cockpit" : d.doc.metadata.name.replace(/-slo$/, "");
    const args = { service, "canary-hash": "6c9b8d7f5", "stable-hash": "5d8f7c9b4" };
    for (const m of d.doc.spec.metrics ?? []) {
      const expr = (m.provider?.prometheus?.query ?? "").replace(/\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}/g, (_, a) => args[a] ?? "");
      rules.push({ record: `check:${d.doc.metadata.name}:${m.name}`.replace(/-/g, "_"), expr });
    }
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "canary-gate-promql-"));
  try {
    const file = path.join(dir, "rules.yaml");
    writeFileSync(file, JSON.stringify({ groups: [{ name: "analysis", rules }] }));
    const r = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
    if (r.error) return [`promtool: ${r.error.message} (Debian package prometheus)`];
    return r.status === 0 ? [] : [(r.stdout + r.stderr).trim()];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------------------
// Where the traffic flows: routers for every caller, probes allowed, external hosts as HTTP.

/** Every router of `svc`: [{ doc, principal }], the identity its proxies' probes carry. */
function routersOf(docs, svc) {
  return byKind(docs, "WasmPlugin").filter((d) => (d.doc.spec.pluginConfig?.role ?? "router") === "router" &&
    d.doc.spec.pluginConfig?.service === svc).map((d) => {
    const client = isDeepStrictEqual(d.doc.spec.match, [{ mode: "CLIENT" }]);
    const app = d.doc.spec.selector?.matchLabels?.app;
    const account = find(docs, "Rollout", NAMESPACE, app)?.doc.spec.template?.spec?.serviceAccountName ?? "default";
    return { doc: d.doc, principal: client ? `cluster.local/ns/${NAMESPACE}/sa/${account}` : GATEWAY_PRINCIPAL };
  });
}

/** A router in each caller's sidecars, and at the gateway exactly when there are public names. */
function topologyProblems(docs, svc) {
  const p = [];
  const routers = routersOf(docs, svc);
  const clients = routers.filter((r) => isDeepStrictEqual(r.doc.spec.match, [{ mode: "CLIENT" }]));
  const callers = clients.map((r) => r.doc.spec.selector?.matchLabels?.app).sort();
  if (!isDeepStrictEqual(callers, [...CALLERS[svc]].sort())) p.push(`client routers in ${callers}, callers are ${CALLERS[svc]}`);
  const gateway = routers.length - clients.length;
  if (gateway !== (PUBLIC_HOSTS[svc] ? 1 : 0)) p.push(`${gateway} gateway routers for ${PUBLIC_HOSTS[svc] ? "a public" : "an internal"} service`);
  for (const r of routers) if (!r.doc.spec.pluginConfig.hosts?.length) p.push(`${r.doc.metadata.name}: no hosts`);
  return p;
}

/** Whether a value list of an AuthorizationPolicy matches `value` (exact, `prefix*`, `*suffix`, `*`). */
function istioMatch(patterns, value) {
  return patterns.some((pt) => pt === "*" || pt === value ||
    (pt.endsWith("*") && value.startsWith(pt.slice(0, -1))) || (pt.startsWith("*") && value.endsWith(pt.slice(1))));
}

function ruleMatches(rule, req) {
  const any = (list, fn) => list === undefined || list.some(fn);
  const field = (values, v) => values === undefined || istioMatch(values, v);
  const notField = (values, v) => values === undefined || !istioMatch(values, v);
  // Query strings are not part of the path Istio matches.
  const path = req.path.split("?")[0];
  return any(rule.from, (f) => field(f.source?.principals, req.principal) && notField(f.source?.notPrincipals, req.principal) &&
      field(f.source?.namespaces, req.principal.split("/")[2]) && notField(f.source?.notNamespaces, req.principal.split("/")[2])) &&
    any(rule.to, (t) => field(t.operation?.methods, req.method) && notField(t.operation?.notMethods, req.method) &&
      field(t.operation?.paths, path) && notField(t.operation?.notPaths, path)) &&
    (rule.when ?? []).length === 0;
}

/**
 * Istio's verdict on `req` to a pod labelled `labels` in `ns`: the policies of the root namespace
 * (istio-system) and of `ns` whose selector matches apply; a matching DENY denies, then, once any
 * ALLOW policy applies, only a matching ALLOW rule allows (an ALLOW policy without rules matches
 * nothing: allow-nothing). No policy applies: allowed.
 */
function authorize(policies, ns, labels, req) {
  const applies = policies.filter((ap) => (ap.metadata.namespace === "istio-system" || ap.metadata.namespace === ns) &&
    subset(ap.spec?.selector?.matchLabels, labels));
  const matches = (ap) => (ap.spec?.rules ?? []).some((r) => ruleMatches(r, req));
  if (applies.some((ap) => ap.spec?.action === "DENY" && matches(ap))) return "deny";
  const allow = applies.filter((ap) => (ap.spec?.action ?? "ALLOW") === "ALLOW");
  return allow.length === 0 || allow.some(matches) ? "allow" : "deny";
}

/**
 * In a mesh that denies by default (an allow-nothing policy in the root namespace and the
 * service's own path-based ALLOW policy), each router's revision probe reaches the observer
 * (phase STATS runs after Istio's authorization filter) only through the shipped policy, and
 * nothing else gets through it.
 */
function probeAuthorizationProblems(docs, svc) {
  const p = [];
  const labels = find(docs, "Rollout", NAMESPACE, svc)?.doc.spec.template?.metadata?.labels ?? {};
  const shipped = byKind(docs, "AuthorizationPolicy").map((d) => d.doc);
  const mesh = [
    { metadata: { name: "allow-nothing", namespace: "istio-system" }, spec: { action: "ALLOW" } },
    { metadata: { name: `${svc}-api`, namespace: NAMESPACE }, spec: { selector: { matchLabels: { app: svc } }, action: "ALLOW",
      rules: [{ from: [{ source: { namespaces: [NAMESPACE, "istio-system"] } }], to: [{ operation: { paths: ["/v1/*", "/api/*"] } }] }] } },
  ];
  const probe = (principal, method = "GET", path = REVISION_PROBE_PATH) => ({ principal, method, path });
  const routers = routersOf(docs, svc);
  if (routers.length === 0) p.push("no routers");
  for (const r of routers) {
    if (authorize([...mesh, ...shipped], NAMESPACE, labels, probe(r.principal)) !== "allow")
      p.push(`${r.doc.metadata.name}'s probe (${r.principal}) is denied`);
    if (authorize(mesh, NAMESPACE, labels, probe(r.principal)) !== "deny")
      p.push("the probe passes without the shipped policy: the scenario proves nothing");
    for (const req of [probe(r.principal, "POST"), probe(r.principal, "GET", "/admin"), probe(r.principal, "DELETE", "/v1/x")])
      if (authorize([...mesh, ...shipped], NAMESPACE, labels, req) !== authorize(mesh, NAMESPACE, labels, req))
        p.push(`the shipped policy changes the verdict on ${req.method} ${req.path}: it must allow the probe only`);
  }
  const stranger = `cluster.local/ns/${NAMESPACE}/sa/stranger`;
  if (authorize([...mesh, ...shipped], NAMESPACE, labels, probe(stranger)) !== "deny") p.push("a workload that routes nothing may probe");
  if (authorize([...mesh, ...shipped], NAMESPACE, labels, probe(routers[0]?.principal ?? "", "GET", `${REVISION_PROBE_PATH}?x=1`)) !== "allow")
    p.push("a probe with a query is denied");
  return p;
}

/** Each external host an outbound observer's classes name is called as http://HOST:80, the sidecar originating TLS to 443. */
function egressProblems(docs, wp) {
  const cfg = wp.spec.pluginConfig;
  if (cfg.direction !== "outbound") return [];
  const p = [];
  const ns = wp.metadata.namespace;
  const visible = (d) => d.doc.metadata.namespace === ns && (d.doc.spec.exportTo ?? ["*"]).some((e) => e === "*" || e === ".");
  const entries = byKind(docs, "ServiceEntry").filter(visible);
  const suffixes = (cfg.classes ?? []).flatMap((c) => c.authority_suffix ?? []);
  if (suffixes.length === 0) p.push("no class names an external host");
  for (const suffix of new Set(suffixes)) {
    const hosts = entries.flatMap((e) => (e.doc.spec.hosts ?? []).map((h) => [h, e.doc])).filter(([h]) => h === suffix || h.endsWith("." + suffix));
    if (hosts.length === 0) { p.push(`no ServiceEntry for ${suffix}: calls to it are TCP passthrough, no HTTP filter sees them`); continue; }
    for (const [host, se] of hosts) {
      if (se.spec.location !== "MESH_EXTERNAL" || se.spec.resolution !== "DNS") p.push(`ServiceEntry ${se.metadata.name}: MESH_EXTERNAL, resolution DNS`);
      if (!(se.spec.ports ?? []).some((pt) => pt.number === 80 && pt.protocol === "HTTP" && pt.targetPort === 443))
        p.push(`ServiceEntry ${se.metadata.name}: port 80 must be HTTP with targetPort 443 (the application calls http://${host})`);
      const tls = byKind(docs, "DestinationRule").filter(visible).filter((d) => d.doc.spec.host === host)
        .flatMap((d) => d.doc.spec.trafficPolicy?.portLevelSettings ?? []).find((s) => s.port?.number === 80);
      if (tls?.tls?.mode !== "SIMPLE" || tls?.tls?.sni !== host) p.push(`${host}: no DestinationRule originating TLS (SIMPLE, sni ${host}) on port 80`);
    }
  }
  return p;
}

// ------------------------------------------------------------------------------------------------
// Kustomize: `kubectl apply -k` applies what `kubectl kustomize` builds.

// Options: kustomize Components a kustomization may list, applied with it then.
const COMPONENTS = "istio/components/";
const BEACON_BODIES = "components/corp-cockpit-beacon-bodies";
const objectId = (d) => `${d.kind} ${d.metadata?.namespace}/${d.metadata?.name}`;

/** The objects `kubectl kustomize dir` builds, or { error }. */
function kustomize(dir) {
  const r = spawnSync(KUBECTL, ["kustomize", dir], { encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || `exit ${r.status}`).trim() };
  return { objects: parseYaml(r.stdout).filter(Boolean) };
}

/** `built` holds exactly `want` (by kind, namespace and name), each object as the file has it. */
function builtProblems(built, want) {
  if (built.error) return [built.error];
  const p = [];
  const got = new Map(built.objects.map((o) => [objectId(o), o]));
  for (const d of want) {
    const o = got.get(objectId(d));
    if (!o) p.push(`${objectId(d)} is not applied`);
    else if (!isDeepStrictEqual(o, d)) p.push(`${objectId(d)} is applied other than written`);
  }
  const wanted = new Set(want.map(objectId));
  for (const id of got.keys()) if (!wanted.has(id)) p.push(`${id} is applied, unexpected`);
  if (got.size !== built.objects.length) p.push("an object is applied twice");
  return p;
}

/** What `kubectl apply -k istio/services/<svc>` applies: its objects and the shared ones. */
const serviceObjects = (files, svc) =>
  [...applied(files, `istio/services/${svc}/`), ...applied(files, "istio/shared/"), ...applied(files, "istio/stats/")];

/** Every object of every file under istio/ (the PrometheusRule too), but what is applied otherwise. */
function applied(files, dirPrefix = "istio/") {
  return files.filter((f) => f.file.startsWith(dirPrefix) && f.docs && !NOT_APPLIED.has(f.file) && !f.file.startsWith(COMPONENTS))
    .flatMap((f) => f.docs.filter((d) => d?.apiVersion && d.kind && !KUSTOMIZE.test(d.apiVersion)));
}

/**
 * The beacon-bodies option (Istio 1.28+): a kustomization with the Component applies corp-cockpit's
 * gateway router as an EnvoyFilter (its own ECDS Wasm filter, allow_on_headers_stop_iteration) in
 * place of the WasmPlugin, with the same module and configuration.
 */
function beaconBodiesProblems(files, docs) {
  const p = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), "beacon-bodies-"));
  try {
    writeFileSync(path.join(dir, "kustomization.yaml"), JSON.stringify({
      apiVersion: "kustomize.config.k8s.io/v1beta1", kind: "Kustomization",
      // kustomize takes relative paths only.
      resources: [path.relative(dir, path.join(ISTIO, "services/corp-cockpit"))],
      components: [path.relative(dir, path.join(ISTIO, BEACON_BODIES))] }));
    const built = kustomize(dir);
    const wasmPlugin = find(docs, "WasmPlugin", "istio-system", "canary-gate-router-corp-cockpit")?.doc;
    const filter = find(docs, "EnvoyFilter", "istio-system", "canary-gate-router-corp-cockpit")?.doc;
    if (!wasmPlugin || !filter) return ["corp-cockpit's gateway router, as a WasmPlugin and as an EnvoyFilter"];
    const want = serviceObjects(files, "corp-cockpit").filter((d) => objectId(d) !== objectId(wasmPlugin));
    p.push(...builtProblems(built, [...want, filter]));
    const [ecds, insert] = filter.spec.configPatches ?? [];
    const wasm = ecds?.patch?.value?.typed_config?.config ?? {};
    if (ecds?.applyTo !== "EXTENSION_CONFIG" || ecds.patch.operation !== "ADD") p.push("first patch: EXTENSION_CONFIG ADD");
    if (wasm.allow_on_headers_stop_iteration !== true) p.push("allow_on_headers_stop_iteration must be true: the point of the option");
    if (wasm.failure_policy !== "FAIL_OPEN") p.push("failure_policy must be FAIL_OPEN, as the WasmPlugin's failStrategy");
    if (wasm.vm_config?.code?.remote?.http_uri?.uri !== wasmPlugin.spec.url) p.push("the module must be the WasmPlugin's pinned image");
    let cfg;
    try { cfg = JSON.parse(wasm.configuration?.value ?? ""); } catch (e) { p.push(`configuration is not JSON: ${e.message}`); }
    if (!isDeepStrictEqual(cfg, wasmPlugin.spec.pluginConfig)) p.push("configuration differs from the WasmPlugin router's pluginConfig");
    if (insert?.applyTo !== "HTTP_FILTER" || insert.match?.context !== "GATEWAY" || insert.patch?.operation !== "INSERT_BEFORE" ||
      insert.match?.listener?.filterChain?.filter?.subFilter?.name !== "envoy.filters.http.router" ||
      insert.patch?.value?.name !== ecds?.patch?.value?.name || !insert.patch?.value?.config_discovery?.config_source?.ads)
      p.push("second patch: an HTTP filter before the router, its configuration the first patch's ECDS resource (ADS)");
    if (!isDeepStrictEqual(filter.spec.workloadSelector?.labels, wasmPlugin.spec.selector?.matchLabels)) p.push("workloadSelector differs from the WasmPlugin's selector");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return p;
}

/** `kubectl kustomize` of a kustomization of `resources` (paths under istio/) with the shadow Component. */
function kustomizeWithShadow(resources) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "shadow-phase-"));
  try {
    writeFileSync(path.join(dir, "kustomization.yaml"), JSON.stringify({
      apiVersion: "kustomize.config.k8s.io/v1beta1", kind: "Kustomization",
      resources: resources.map((r) => path.relative(dir, path.join(ISTIO, r))),
      components: [path.relative(dir, path.join(ISTIO, SHADOW.component))] }));
    return kustomize(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const minutesOf = (d) => { const m = /^(\d+)m$/.exec(d ?? ""); return m ? Number(m[1]) : NaN; };
const readsRouters = (m) => /reporter="router"|canary_web_/.test(m.provider?.prometheus?.query ?? "");

/**
 * The Rollout with the shadow phase against the shipped one: a canary scale for the copies, the
 * mirror route (every GET whose router left the choice to the mesh), a pause, the route removed,
 * then the plan's steps; the route managed; the analysis from the mirror step on, with the shadow
 * template. Argo's SetMirrorRoute puts a managed route above every route of the VirtualService,
 * the pinned ones too: the match must require the reason a pinned request never carries.
 */
function shadowRolloutProblems(rollout, base, vs) {
  const p = [];
  const canary = rollout.spec?.strategy?.canary ?? {}, baseCanary = base.spec.strategy.canary;
  const strip = (r) => {
    const c = clone(r), k = c.spec.strategy.canary;
    delete k.steps; delete k.trafficRouting.managedRoutes; delete k.analysis.templates; delete k.analysis.startingStep;
    return c;
  };
  if (!isDeepStrictEqual(strip(rollout), strip(base))) p.push("the Component changes the Rollout beyond its steps, managed routes and analysis");
  const steps = canary.steps ?? [], planSteps = baseCanary.steps;
  const mirrorAt = steps.findIndex((s) => s.setMirrorRoute?.match);
  const removeAt = steps.findIndex((s) => s.setMirrorRoute && !s.setMirrorRoute.match);
  const firstWeight = steps.findIndex((s) => s.setWeight !== undefined);
  if (!(mirrorAt >= 0 && mirrorAt < removeAt && removeAt < firstWeight))
    p.push(`steps: the mirror route (${mirrorAt}) must be set, then removed (${removeAt}), before the first setWeight (${firstWeight})`);
  if (!isDeepStrictEqual(steps[0], { setCanaryScale: { weight: planSteps[0].setWeight } }))
    p.push("step 0 must scale the canary to the first setWeight's pods (at weight 0 Argo scales it to none)");
  const mirror = steps[1]?.setMirrorRoute ?? {};
  if (mirror.name !== SHADOW.route || mirror.percentage !== 100) p.push(`step 1 must mirror to route ${SHADOW.route}, 100%`);
  for (const m of mirror.match ?? []) {
    if (!isDeepStrictEqual(m.headers, { [SHADOW.reasonHeader]: { exact: SHADOW.meshReason } }))
      p.push(`mirror match ${JSON.stringify(m)}: Argo puts the mirror route above the pinned routes; without ` +
        `${SHADOW.reasonHeader}: ${SHADOW.meshReason} it takes pinned users' requests to stable`);
    if (!isDeepStrictEqual(Object.keys(m).sort(), ["headers", "method"]) || !isDeepStrictEqual(m.method, { exact: "GET" }))
      p.push(`mirror match ${JSON.stringify(m)}: GET requests only (a read-heavy service's reads)`);
  }
  if (!mirror.match?.length) p.push("step 1 has no match");
  if (!isDeepStrictEqual(steps.slice(2, 4), [{ pause: { duration: SHADOW.pause } }, { setMirrorRoute: { name: SHADOW.route } }]))
    p.push(`steps 2 and 3: a pause of ${SHADOW.pause}, then the mirror route removed (no match)`);
  if (!isDeepStrictEqual(steps.slice(4), [planSteps[0], { setCanaryScale: { matchTrafficWeight: true } }, ...planSteps.slice(1)]))
    p.push("after the shadow phase: the plan's steps, the canary's scale following the weights from the first on");
  const managed = (canary.trafficRouting?.managedRoutes ?? []).map((r) => r.name);
  if (!isDeepStrictEqual(managed, [SHADOW.route])) p.push(`managedRoutes ${managed}, expected ${SHADOW.route}`);
  for (const name of managed) if ((vs?.spec?.http ?? []).some((r) => r.name === name))
    p.push(`managed route ${name} is a route of the VirtualService: Argo would delete it at the end of every rollout`);
  const templates = (canary.analysis?.templates ?? []).map((x) => x.templateName);
  if (!isDeepStrictEqual(templates, [...baseCanary.analysis.templates.map((x) => x.templateName), SHADOW.template]))
    p.push(`analysis templates ${templates}: the shipped ones and ${SHADOW.template}`);
  if (canary.analysis?.startingStep !== mirrorAt) p.push("the background analysis must start at the mirror step");
  return p;
}

/** The SLO template with the shadow phase: only the router metrics' initialDelay moves, past the phase. */
function shadowTemplateProblems(slo, base, shadow) {
  const p = [];
  const delay = `${minutesOf(SHADOW.pause) + 5}m`;
  (slo.spec?.metrics ?? []).forEach((m, i) => {
    const want = clone(base.spec.metrics[i]);
    if (readsRouters(want)) want.initialDelay = delay;
    if (!isDeepStrictEqual(m, want)) p.push(`${m.name}: ${readsRouters(want) ? `initialDelay must be ${delay} (the shadow phase, then one window)` : "changed"}`);
  });
  if (slo.spec?.metrics?.length !== base.spec.metrics.length) p.push("metrics added or removed");
  for (const m of shadow.spec.metrics) {
    const last = minutesOf(m.initialDelay) + (m.count - 1) * minutesOf(m.interval);
    if (!(Number.isInteger(m.count) && last < minutesOf(SHADOW.pause)))
      p.push(`${m.name}: its last measurement (${last}m) must fall within the shadow phase (${SHADOW.pause})`);
    if (!(m.inconclusiveLimit < m.count)) p.push(`${m.name}: a phase with nothing to judge must end the run Inconclusive`);
  }
  return p;
}

/** A kustomization with the shadow Component applies `want` unchanged, and the changed Rollout and SLO template. */
function shadowProblems(built, want, docs) {
  if (built.error) return [built.error];
  const p = [];
  const svc = SHADOW.service;
  const base = find(docs, "Rollout", NAMESPACE, svc)?.doc, slo = find(docs, "AnalysisTemplate", NAMESPACE, `${svc}-slo`)?.doc;
  const shadow = find(docs, "AnalysisTemplate", NAMESPACE, SHADOW.template)?.doc;
  const vs = find(docs, "VirtualService", NAMESPACE, base?.spec?.strategy?.canary?.trafficRouting?.istio?.virtualService?.name)?.doc;
  if (!base || !slo || !shadow || !vs) return [`the shipped Rollout, VirtualService and templates of ${svc}, and ${SHADOW.template}`];
  const changed = new Set([objectId(base), objectId(slo)]);
  p.push(...builtProblems({ objects: built.objects.filter((o) => !changed.has(objectId(o))) },
    [...want.filter((d) => !changed.has(objectId(d))), shadow]));
  const got = (d) => built.objects.find((o) => objectId(o) === objectId(d));
  const rollout = got(base), template = got(slo);
  if (!rollout || !template) return [...p, "the Rollout or the SLO template is not applied"];
  for (const o of [rollout, template])
    p.push(...schemaErrors(o).map((e) => `${o.kind} schema: ${e}`), ...unknownFields(o).map((f) => `${o.kind}: field ${f} is not in the schema`));
  p.push(...shadowRolloutProblems(rollout, base, vs), ...shadowTemplateProblems(template, slo, shadow));
  return p;
}

// ------------------------------------------------------------------------------------------------
// Runner

let passed = 0;
let failed = 0;
function check(name, fn, detail = () => "") {
  let problems;
  try {
    problems = fn();
  } catch (e) {
    problems = [`threw: ${e.stack ?? e}`];
  }
  if (problems.length === 0) {
    passed++;
    console.log(`ok   ${name}${detail()}`);
  } else {
    failed++;
    console.log(`FAIL ${name}`);
    for (const pr of problems) console.log(`       ${pr}`);
  }
}

/** A negative check: `problems` of a broken copy must not be empty. */
function rejects(name, problems) {
  let got = [];
  check(`rejects ${name}`, () => {
    got = problems();
    return got.length ? [] : ["accepted"];
  }, () => `: ${String(got[0]).replace(/\s+/g, " ").slice(0, 300)}`);
}

const KUSTOMIZE = /^kustomize\.config\.k8s\.io\//;

function loadAllDocs() {
  const docs = [];
  const files = [];
  for (const full of yamlFiles(ISTIO)) {
    const file = rel(full);
    const text = readFileSync(full, "utf8");
    let parsed;
    try {
      parsed = parseYaml(text);
    } catch (e) {
      files.push({ file, text, error: e.message });
      continue;
    }
    files.push({ file, text, docs: parsed });
    parsed.forEach((doc, index) => {
      // Kustomizations are kustomize's input, not objects: checked by building them.
      if (doc && typeof doc === "object" && doc.apiVersion && doc.kind && !KUSTOMIZE.test(doc.apiVersion))
        docs.push({ file, index, doc, text });
    });
  }
  return { docs, files };
}

function listQueries(docs) {
  for (const d of byKind(docs, "AnalysisTemplate"))
    for (const m of d.doc.spec.metrics ?? [])
      console.log(JSON.stringify({
        template: d.doc.metadata.name, metric: m.name, file: d.file,
        application: !/\bcanary_[a-z0-9_]+\{/.test(m.provider?.prometheus?.query ?? ""),
        query: m.provider?.prometheus?.query, successCondition: m.successCondition,
        failureCondition: m.failureCondition, args: (d.doc.spec.args ?? []).map((a) => a.name),
      }));
}

function main() {
  const { docs, files } = loadAllDocs();
  if (process.argv.includes("--list-queries")) return listQueries(docs);

  // Generated files: up to date, and each parses to exactly the generator's data.
  check("istio/generate.py --check: the committed files are the generator's output", () => {
    const r = spawnSync("python3", [path.join(ISTIO, "generate.py"), "--check"], { encoding: "utf8" });
    return r.status === 0 ? [] : [(r.stderr || r.error?.message || `exit ${r.status}`).trim()];
  });
  const generatedJson = spawnSync("python3", [path.join(ISTIO, "generate.py"), "--json"], { encoding: "utf8", maxBuffer: 1 << 26 });
  const generated = generatedJson.status === 0 ? JSON.parse(generatedJson.stdout) : undefined;
  check("generated YAML parses to exactly the generator's data", () => {
    if (!generated) return [(generatedJson.stderr || generatedJson.error?.message || `exit ${generatedJson.status}`).trim()];
    const p = [];
    for (const [file, wantDocs] of Object.entries(generated)) {
      const f = files.find((x) => x.file === file);
      if (!f?.docs) { p.push(`${file}: missing or unparsable`); continue; }
      if (!isDeepStrictEqual(JSON.parse(JSON.stringify(f.docs.filter((d) => d != null))), wantDocs)) p.push(`${file}: parses differently`);
    }
    return p;
  });

  for (const f of files) if (f.error) check(`parse ${f.file}`, () => [f.error]);
  for (const f of files) check(`${f.file}: every value not from the tier-1 plan is marked`, () => placeholderProblems(f.file, f.text));
  check(`every oci:// WasmPlugin pins ${IMAGE_PIN}`, () => readPin().error ? [readPin().error] : [], () => {
    const local = localImage();
    return local && local !== readPin().pin ? ` (note: ${IMAGE_LAYOUT} holds ${local}; pin it with python3 istio/generate.py --pin-image once pushed)` : "";
  });

  const readRules = (file) => load(readFileSync(path.join(ISTIO, "prometheus", file), "utf8"), { schema: YAML11_SCHEMA });
  const promRule = readRules("canary-gate-prometheusrule.yaml");
  const plainRules = readRules("canary-gate-rules.yaml");
  check("the PrometheusRule: its schema, and exactly the rule file's groups", () => prometheusRuleProblems(promRule, plainRules));

  // Every document: the package's schema, then unknown fields.
  for (const d of docs) {
    const id = `${d.file}#${d.index} ${d.doc.kind} ${d.doc.metadata?.namespace}/${d.doc.metadata?.name}`;
    check(`schema ${id}`, () => schemaErrors(d.doc));
    check(`known fields ${id}`, () => unknownFields(d.doc).map((f) => `field ${f} is not in the schema`));
    check(`namespace ${id}`, () => (["teei-platform", "istio-system"].includes(d.doc.metadata?.namespace) ? [] : ["metadata.namespace"]));
  }

  check("no duplicate objects", () => {
    const seen = new Map();
    const p = [];
    for (const d of docs) {
      const key = objectId(d.doc);
      if (seen.has(key)) p.push(`${key} in ${seen.get(key)} and ${d.file}`);
      seen.set(key, d.file);
    }
    return p;
  });

  check("every tier-1 service has its Rollout, Service, ServiceAccount, DestinationRule, VirtualService, AnalysisTemplate, observer and probe policy in its directory", () => {
    const p = [];
    for (const svc of Object.keys(PLAN)) {
      const dir = `istio/services/${svc}/`;
      for (const [kind, name, file] of [["Rollout", svc, "rollout.yaml"], ["Service", svc, "service.yaml"],
        ["ServiceAccount", svc, "service.yaml"], ["DestinationRule", `${svc}-destrule`, "destinationrule.yaml"],
        ["VirtualService", `${svc}-vsvc`, "virtualservice.yaml"], ["AnalysisTemplate", `${svc}-slo`, "analysistemplate.yaml"],
        ["WasmPlugin", `canary-gate-observer-${svc}`, "observers.yaml"],
        ["AuthorizationPolicy", `${svc}-canary-gate-probe`, "authorizationpolicy.yaml"]]) {
        const d = find(docs, kind, "teei-platform", name);
        if (!d || d.file !== dir + file) p.push(`${kind} ${name} not in ${dir}${file}`);
      }
      for (const r of routersOf(docs, svc)) {
        const d = docs.find((x) => x.doc === r.doc);
        if (d.file !== `${dir}routers.yaml`) p.push(`${objectId(r.doc)} not in ${dir}routers.yaml`);
      }
      const sa = find(docs, "Rollout", NAMESPACE, svc)?.doc.spec.template?.spec?.serviceAccountName;
      if (sa !== svc) p.push(`Rollout ${svc}: serviceAccountName ${sa}, expected its own ${svc} (the identity callers' policies name)`);
    }
    if (!find(docs, "AnalysisTemplate", "teei-platform", "canary-gate-abort")) p.push("AnalysisTemplate canary-gate-abort");
    for (const ns of ["teei-platform", "istio-system"]) if (!find(docs, "ConfigMap", ns, "canary-gate-stats")) p.push(`ConfigMap ${ns}/canary-gate-stats`);
    return p;
  });

  for (const d of byKind(docs, "Rollout")) check(`Rollout ${d.doc.metadata.name}: plan, references, analysis, stats annotations`, () => rolloutProblems(d.doc, docs));
  for (const d of byKind(docs, "VirtualService")) check(`VirtualService ${d.doc.metadata.name}: header routes, then primary last with 2 destinations`, () => virtualServiceProblems(d.doc));
  const gateMetrics = canaryGateMetricNames();
  for (const d of byKind(docs, "AnalysisTemplate")) check(`AnalysisTemplate ${d.doc.metadata.name}: thresholds, NaN-safe conditions, markers`, () => analysisTemplateProblems(d, gateMetrics));
  check("PromQL syntax of every AnalysisTemplate query (promtool check rules)", () => promqlProblems(byKind(docs, "AnalysisTemplate")));
  for (const d of byKind(docs, "WasmPlugin")) check(`WasmPlugin ${d.doc.metadata.namespace}/${d.doc.metadata.name} (${d.file}): pluginConfig`, () => pluginConfigProblems(d.doc, docs));
  for (const d of byKind(docs, "WasmPlugin")) check(`WasmPlugin ${d.doc.metadata.namespace}/${d.doc.metadata.name}: attempt counts`, () => attemptCountProblems(d.doc, docs));
  for (const svc of Object.keys(PLAN)) {
    check(`${svc}: a router in each caller's sidecars (${CALLERS[svc].join(", ") || "none"}), at the gateway ${PUBLIC_HOSTS[svc] ? "for its public names" : "none"}`,
      () => topologyProblems(docs, svc));
    check(`${svc}: in a deny-by-default mesh, each router's revision probe is allowed, nothing else by the shipped policy`,
      () => probeAuthorizationProblems(docs, svc));
  }
  for (const d of byKind(docs, "WasmPlugin").filter((x) => x.doc.spec.pluginConfig?.direction === "outbound"))
    check(`WasmPlugin ${d.doc.metadata.name}: each external host called as HTTP, TLS originated by the sidecar`, () => egressProblems(docs, d.doc));
  const kustomized = kustomize(ISTIO);
  check("kubectl kustomize istio/: every generated object once, as written (the PrometheusRule too)",
    () => builtProblems(kustomized, [...applied(files), promRule]));
  for (const svc of Object.keys(PLAN))
    check(`kubectl kustomize istio/services/${svc}: its objects and the shared ones`, () => builtProblems(
      kustomize(path.join(ISTIO, "services", svc)),
      serviceObjects(files, svc)));
  check(`istio/${BEACON_BODIES} (Istio 1.28+): corp-cockpit's gateway router as an EnvoyFilter taking request bodies, instead of the WasmPlugin`,
    () => beaconBodiesProblems(files, docs));
  const shadowBuilt = kustomizeWithShadow([`services/${SHADOW.service}`]);
  check(`istio/${SHADOW.component}: ${SHADOW.service}'s shadow phase before the first setWeight, its mirror route never above a pinned user, judged by revision`,
    () => shadowProblems(shadowBuilt, serviceObjects(files, SHADOW.service), docs));
  check(`istio/${SHADOW.component} in a kustomization of istio/: the same, every other object as written`,
    () => shadowProblems(kustomizeWithShadow(["."]), [...applied(files), promRule], docs));
  check("every YAML file under istio/ is generated by istio/generate.py", () =>
    files.filter((f) => !(f.file in (generated ?? {}))).map((f) => `${f.file} is not generated by istio/generate.py`));
  const envoy = loadEnvoyStats();
  for (const d of byKind(docs, "ConfigMap")) check(`ConfigMap ${d.doc.metadata.namespace}/${d.doc.metadata.name}: stats_tags`, () => configMapProblems(d.doc, envoy));
  for (const [file, templateMounts] of [[GATEWAY_PATCH, true], [GATEWAY_PATCH_1_26, false]])
    check(`${file}: Deployment pod template, stats settings, one mounted bootstrap once injected`, () => {
      const f = files.find((x) => x.file === file);
      if (!f?.docs) return ["missing or unparsable"];
      if (f.docs.length !== 1) return ["expected one document"];
      return gatewayPatchProblems(f.docs[0], docs, templateMounts);
    });

  // The checks reject broken manifests.
  const pick = (kind, name) => clone(docs.find((d) => d.doc.kind === kind && d.doc.metadata.name === name).doc);
  const rollout = () => pick("Rollout", "corp-cockpit");
  const vsvc = () => pick("VirtualService", "corp-cockpit-vsvc");
  const router = () => pick("WasmPlugin", "canary-gate-router-unified-profile-from-corp-cockpit");
  const tplEntry = () => { const d = docs.find((x) => x.doc.metadata.name === "unified-profile-slo"); return { ...d, doc: clone(d.doc) }; };
  const mutate = (doc, fn) => { fn(doc); return doc; };

  rejects("a WasmPlugin with failStrategy FAIL_OPN (schema: enum)", () => schemaErrors(mutate(router(), (w) => { w.spec.failStrategy = "FAIL_OPN"; })));
  rejects("a WasmPlugin with priority \"10\" (schema: type)", () => schemaErrors(mutate(router(), (w) => { w.spec.priority = "10"; })));
  rejects("a WasmPlugin with match mode INBOUND (schema: enum)", () => schemaErrors(mutate(router(), (w) => { w.spec.match = [{ mode: "INBOUND" }]; })));
  rejects("a Rollout with replicas \"4\" (schema: type)", () => schemaErrors(mutate(rollout(), (r) => { r.spec.replicas = "4"; })));
  rejects("a Rollout without destinationRule.canarySubsetName (schema: required)", () => schemaErrors(mutate(rollout(), (r) => { delete r.spec.strategy.canary.trafficRouting.istio.destinationRule.canarySubsetName; })));
  rejects("a VirtualService with weight \"100\" (schema: type)", () => schemaErrors(mutate(vsvc(), (v) => { v.spec.http[2].route[0].weight = "100"; })));
  rejects("a Service with port \"4321\" (schema: type)", () => schemaErrors(mutate(pick("Service", "corp-cockpit"), (s) => { s.spec.ports[0].port = "4321"; })));
  rejects("an AnalysisTemplate metric without provider (schema: required)", () => schemaErrors(mutate(tplEntry().doc, (t) => { delete t.spec.metrics[0].provider; })));
  rejects("a ConfigMap with a number as data value (schema: type)", () => schemaErrors(mutate(pick("ConfigMap", "canary-gate-stats"), (c) => { c.data.x = 1; })));
  rejects("an unknown kind", () => schemaErrors({ apiVersion: "networking.istio.io/v1", kind: "VirtualServise", metadata: { name: "x" } }));
  check("schema alone accepts the typo spec.phsae (the packages allow unknown fields); the known-field check does not", () => {
    const typo = mutate(router(), (w) => { w.spec.phsae = "STATS"; });
    const p = [];
    if (schemaErrors(typo).length) console.log("       note: the schema now rejects unknown fields itself");
    if (!isDeepStrictEqual(unknownFields(typo), ["/spec/phsae"])) p.push(`known-field check found ${unknownFields(typo)}`);
    return p;
  });
  rejects("a Rollout with successfulRunHistoryLimit under strategy.canary.analysis (known fields)",
    () => unknownFields(mutate(rollout(), (r) => { r.spec.strategy.canary.analysis.successfulRunHistoryLimit = 5; })));
  rejects("a typo in a VirtualService header match (known fields)",
    () => unknownFields(mutate(vsvc(), (v) => { v.spec.http[0].match[0].headers["x-canary-version-corp-cockpit"] = { exakt: "canary" }; })));
  rejects("a typo in metadata (known fields)", () => unknownFields(mutate(rollout(), (r) => { r.metadata.namepsace = "x"; })));
  rejects("a VirtualService with primary first", () => virtualServiceProblems(mutate(vsvc(), (v) => { v.spec.http.unshift(v.spec.http.pop()); })));
  rejects("a VirtualService whose primary has 3 destinations", () => virtualServiceProblems(mutate(vsvc(), (v) => { v.spec.http[2].route.push(clone(v.spec.http[2].route[0])); })));
  rejects("a gate that cannot judge at impact-in's volume floor (min_requests 20 in 30 s over its 7 caller pods)",
    () => pluginConfigProblems(mutate(pick("WasmPlugin", "canary-gate-router-impact-in-from-api-gateway"), (w) => {
      Object.assign(w.spec.pluginConfig.gate, { window_s: 30, min_requests: 20 }); }), docs));
  rejects("a pluginConfig with gate.max_error_rate", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.gate.max_error_rate = 0.1; }), docs));
  rejects("a pluginConfig with a top-level typo", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.versionHeader = "x"; }), docs));
  rejects("an observer with a gate", () => pluginConfigProblems(mutate(pick("WasmPlugin", "canary-gate-observer-impact-in"), (w) => { w.spec.pluginConfig.gate = { max_p95_ms: 100 }; }), docs));
  rejects("a Rollout naming a missing AnalysisTemplate", () => rolloutProblems(mutate(rollout(), (r) => { r.spec.strategy.canary.analysis.templates[0].templateName = "corp-cockpit-slos"; }), docs));
  rejects("a Rollout naming a missing VirtualService route", () => rolloutProblems(mutate(rollout(), (r) => { r.spec.strategy.canary.trafficRouting.istio.virtualService.routes = ["primari"]; }), docs));
  rejects("a Rollout with unified-profile's former 1Gi memory limit", () => rolloutProblems(mutate(pick("Rollout", "unified-profile"), (r) => { r.spec.template.spec.containers[0].resources.limits.memory = "1Gi"; }), docs));
  rejects("a PrometheusRule whose alert drifted from the rule file", () => prometheusRuleProblems(mutate(promRule, (r) => { r.spec.groups[0].rules.at(-1).for = "1m"; }), plainRules));
  rejects("a PrometheusRule with groups as a map (schema: type)", () => prometheusRuleProblems(mutate(promRule, (r) => { r.spec.groups = { slo: r.spec.groups[0] }; }), plainRules));
  rejects("a Rollout not giving an argument its template needs", () => rolloutProblems(mutate(pick("Rollout", "unified-profile"), (r) => { r.spec.strategy.canary.analysis.args.pop(); }), docs));
  rejects("a metric whose failure on NaN would fail the rollout", () => analysisTemplateProblems(mutate(tplEntry(), (e) => { e.doc.spec.metrics[0].failureCondition = "result[0] >= 0.002"; }), gateMetrics));
  rejects("a canary-gate query on a misspelt series", () => analysisTemplateProblems(mutate(tplEntry(), (e) => { e.doc.spec.metrics[0].provider.prometheus.query = e.doc.spec.metrics[0].provider.prometheus.query.replace("canary_requests_total", "canary_request_total"); }), gateMetrics));
  rejects("an application metric without its marker comment", () => analysisTemplateProblems(mutate(tplEntry(), (e) => { e.text = e.text.replaceAll(APP_COMMENT, "#"); }), gateMetrics));
  rejects("a query with an unbalanced parenthesis (promtool)", () => promqlProblems([mutate(tplEntry(), (e) => { e.doc.spec.metrics[1].provider.prometheus.query += ")"; })]));
  rejects("a stats tag regex that no longer captures the version", () => configMapProblems(mutate(pick("ConfigMap", "canary-gate-stats"), (c) => { c.data["custom_bootstrap.json"] = c.data["custom_bootstrap.json"].replace("(\\\\.version\\\\.([A-Za-z0-9_-]+))", "\\\\.version\\\\.[A-Za-z0-9_-]+"); }), envoy));
  const observerWp = () => pick("WasmPlugin", "canary-gate-observer-corp-cockpit");
  const inboundAt = (e) => e.doc.spec.metrics.findIndex((m) => m.name === "inbound-error-rate");
  rejects("an observer reading its revision from the role label", () => pluginConfigProblems(mutate(observerWp(), (w) => { w.spec.pluginConfig.revision_label = "role"; }), docs));
  rejects("a router without gate.compare", () => pluginConfigProblems(mutate(router(), (w) => { delete w.spec.pluginConfig.gate.compare; }), docs));
  rejects("a pluginConfig with gate.compare.alfa", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.gate.compare.alfa = 0.01; }), docs));
  rejects("a comparison whose latency test is not the plan's p95 < 500 ms", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.gate.compare.slow_ms = 200; }), docs));
  rejects("a gate.eval_ms over a second", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.gate.eval_ms = 2000; }), docs));
  rejects("a stats tag regex that no longer captures the comparison's test", () => configMapProblems(mutate(pick("ConfigMap", "canary-gate-stats"), (c) => { c.data["custom_bootstrap.json"] = c.data["custom_bootstrap.json"].replace("(\\\\.test\\\\.(errors|latency))", "\\\\.test\\\\.(errors|latency)"); }), envoy));
  rejects("a router learning revisions from another header than the observers stamp", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.revision_header = "x-revision"; }), docs));
  rejects("a WasmPlugin image by tag only", () => pluginConfigProblems(mutate(observerWp(), (w) => { w.spec.url = w.spec.url.replace(/@sha256:[0-9a-f]+$/, ""); }), docs));
  rejects("a WasmPlugin pinning another digest than the pin file", () => imageProblems(observerWp(), { pin: "0.1.0@sha256:" + "0".repeat(64) }));
  rejects("a Rollout without the stable-hash argument", () => rolloutProblems(mutate(rollout(), (r) => { r.spec.strategy.canary.analysis.args = r.spec.strategy.canary.analysis.args.filter((a) => a.name !== "stable-hash"); }), docs));
  rejects("a Rollout passing the canary-hash of the stable ReplicaSet", () => rolloutProblems(mutate(rollout(), (r) => { r.spec.strategy.canary.analysis.args.find((a) => a.name === "canary-hash").valueFrom.podTemplateHashValue = "Stable"; }), docs));
  rejects("an observer metric selecting the canary by its stale version label", () => analysisTemplateProblems(mutate(tplEntry(), (e) => { const m = e.doc.spec.metrics[inboundAt(e)]; m.provider.prometheus.query = m.provider.prometheus.query.replaceAll('revision="{{args.canary-hash}}"', 'version="canary"'); }), gateMetrics));
  rejects("a retried-call outcome whose header Envoy never writes (no EnvoyFilter)", () => attemptCountProblems(pick("WasmPlugin", "canary-gate-outbound-impact-in"), docs.filter((d) => d.doc.kind !== "EnvoyFilter")));
  rejects("an observer metric mixing the pods' own calls into what they serve", () => analysisTemplateProblems(mutate(tplEntry(), (e) => { const m = e.doc.spec.metrics[inboundAt(e)]; m.provider.prometheus.query = m.provider.prometheus.query.replaceAll(',direction="inbound"', ""); }), gateMetrics));
  rejects("an abort metric reading every revision's trip", () => {
    const d = docs.find((x) => x.doc.metadata.name === "canary-gate-abort");
    return analysisTemplateProblems(mutate({ ...d, doc: clone(d.doc) }, (e) => { e.doc.spec.metrics[0].provider.prometheus.query = 'max(canary_gate_tripped{service="{{args.service}}"})'; }), gateMetrics);
  });
  rejects("the stable baseline deciding (not in dryRun)", () => analysisTemplateProblems(mutate(tplEntry(), (e) => { e.doc.spec.dryRun = e.doc.spec.dryRun.filter((d) => d.metricName !== "inbound-error-rate-stable"); }), gateMetrics));
  rejects("an SLO metric in dryRun", () => analysisTemplateProblems(mutate(tplEntry(), (e) => { e.doc.spec.dryRun.push({ metricName: "inbound-error-rate" }); }), gateMetrics));
  rejects("an unplanned service's threshold without its marker", () => {
    const d = docs.find((x) => x.doc.metadata.name === "reporting-slo");
    return analysisTemplateProblems({ ...d, text: d.text.replaceAll(NOT_IN_PLAN, "in the plan") }, gateMetrics);
  });
  rejects("a public host name without its marker", () => placeholderProblems("istio/services/corp-cockpit/routers.yaml",
    files.find((x) => x.file === "istio/services/corp-cockpit/routers.yaml").text.replace(/(cockpit\.example\.com)\s+#.*/, "$1")));
  rejects("a Prometheus address without its marker", () => placeholderProblems("istio/services/q2q-ai/analysistemplate.yaml",
    files.find((x) => x.file === "istio/services/q2q-ai/analysistemplate.yaml").text.replace(/(:9090)\s+#.*/, "$1")));
  // Where the traffic flows.
  const gatewayRouter = () => pick("WasmPlugin", "canary-gate-router-api-gateway");
  rejects("a gateway router listing an in-cluster name (in-cluster calls never cross the gateway)", () => pluginConfigProblems(
    mutate(gatewayRouter(), (w) => { w.spec.pluginConfig.hosts.push("api-gateway.teei-platform.svc.cluster.local"); }), docs));
  rejects("a client router listing a public name (its sidecar never routes it to the service)", () => pluginConfigProblems(
    mutate(pick("WasmPlugin", "canary-gate-router-api-gateway-from-corp-cockpit"), (w) => { w.spec.pluginConfig.hosts.push("api.example.com"); }), docs));
  rejects("a client router missing an in-cluster name", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.hosts.pop(); }), docs));
  rejects("a router setting the version header all services share", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.version_header = "x-canary-version"; }), docs));
  rejects("a router setting the reason header all services share (another router in its proxy would remove it)", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.pluginConfig.reason_header = "x-canary-reason"; }), docs));
  rejects("a gateway router taking overrides without a token", () => pluginConfigProblems(mutate(gatewayRouter(), (w) => { delete w.spec.pluginConfig.override.token_sha256; }), docs));
  rejects("a gateway router with a token digest in capitals", () => pluginConfigProblems(mutate(gatewayRouter(), (w) => { w.spec.pluginConfig.override.token_sha256 = ["A".repeat(64)]; }), docs));
  rejects("a VirtualService routing on another service's version header", () => virtualServiceProblems(mutate(vsvc(), (v) => {
    v.spec.http[0].match[0].headers = { "x-canary-version-api-gateway": { exact: "canary" } }; })));
  rejects("an internal service's VirtualService bound to the ingress Gateway", () => virtualServiceProblems(mutate(pick("VirtualService", "unified-profile-vsvc"), (v) => {
    v.spec.gateways.unshift("istio-system/teei-gateway"); })));
  rejects("an internal service routed only at the gateway (no router in a caller's sidecars)", () => topologyProblems(
    docs.filter((d) => d.doc.metadata?.name !== "canary-gate-router-reporting-from-api-gateway"), "reporting"));
  rejects("a client router in a workload that is no caller", () => pluginConfigProblems(mutate(router(), (w) => { w.spec.selector.matchLabels.app = "unified-profile"; }), docs));
  const policy = (svc, fn) => docs.map((d) => d.doc.kind === "AuthorizationPolicy" && d.doc.metadata.name === `${svc}-canary-gate-probe`
    ? { ...d, doc: mutate(clone(d.doc), fn) } : d);
  rejects("a probe policy without a caller's service account (its router never learns the next revision)", () => probeAuthorizationProblems(
    policy("unified-profile", (a) => { a.spec.rules[0].from[0].source.principals.pop(); }), "unified-profile"));
  rejects("a probe policy allowing every method on every path", () => probeAuthorizationProblems(
    policy("impact-in", (a) => { delete a.spec.rules[0].to; }), "impact-in"));
  rejects("a probe policy for another path", () => probeAuthorizationProblems(
    policy("corp-cockpit", (a) => { a.spec.rules[0].to[0].operation.paths = ["/__canary/revisions"]; }), "corp-cockpit"));
  rejects("no probe policy at all", () => probeAuthorizationProblems(docs.filter((d) => d.doc.kind !== "AuthorizationPolicy"), "q2q-ai"));
  const outboundWp = () => pick("WasmPlugin", "canary-gate-outbound-unified-profile");
  rejects("an HTTPS partner without a ServiceEntry (TCP passthrough: no HTTP filter sees the calls)", () => egressProblems(
    docs.filter((d) => d.doc.kind !== "ServiceEntry"), outboundWp()));
  rejects("a ServiceEntry whose port 80 reaches the partner's port 80 (no TLS)", () => egressProblems(
    docs.map((d) => d.doc.kind === "ServiceEntry" ? { ...d, doc: mutate(clone(d.doc), (s) => { delete s.spec.ports[0].targetPort; }) } : d), outboundWp()));
  rejects("a DestinationRule that does not originate TLS", () => egressProblems(
    docs.map((d) => d.doc.kind === "DestinationRule" && d.doc.spec.trafficPolicy ? { ...d, doc: mutate(clone(d.doc), (r) => { r.spec.trafficPolicy.portLevelSettings[0].tls.mode = "DISABLE"; }) } : d), outboundWp()));
  rejects("a kustomization that leaves a generated object out", () => builtProblems(
    { objects: kustomized.objects?.filter((o) => o.kind !== "AuthorizationPolicy") ?? [] }, [...applied(files), promRule]));
  rejects("a kustomization that applies an object changed", () => builtProblems(
    { objects: kustomized.objects?.map((o) => (o.kind === "Rollout" ? mutate(clone(o), (r) => { r.spec.replicas += 1; }) : o)) ?? [] }, [...applied(files), promRule]));
  rejects("an unplanned service's replicas without the marker", () => placeholderProblems("istio/services/q2q-ai/rollout.yaml",
    files.find((x) => x.file === "istio/services/q2q-ai/rollout.yaml").text.replace(/(replicas: \d+)\s+#.*/, "$1")));
  rejects("a VirtualService host of the cluster domain among the public ones", () => virtualServiceProblems(mutate(vsvc(), (v) => { v.spec.hosts.push("impact-in.teei-platform.svc.cluster.local"); })));
  rejects("a stats tag regex that no longer captures the revision", () => configMapProblems(mutate(pick("ConfigMap", "canary-gate-stats"), (c) => { const b = JSON.parse(c.data["custom_bootstrap.json"]); b.stats_config.stats_tags = b.stats_config.stats_tags.filter((t) => t.tag_name !== "revision"); c.data["custom_bootstrap.json"] = JSON.stringify(b); }), {}));
  const cockpit = () => pick("WasmPlugin", "canary-gate-router-corp-cockpit");
  rejects("a router with gate.vitals but no vitals endpoint", () => pluginConfigProblems(mutate(cockpit(), (w) => { delete w.spec.pluginConfig.vitals; }), docs));
  rejects("corp-cockpit's gate with a web-vitals limit off its guard rails (LCP 2500 ms)", () => pluginConfigProblems(mutate(cockpit(), (w) => { w.spec.pluginConfig.gate.vitals.max_lcp_p75_ms = 2500; }), docs));
  rejects("a pluginConfig with vitals.max_body_byte", () => pluginConfigProblems(mutate(cockpit(), (w) => { w.spec.pluginConfig.vitals.max_body_byte = 1; }), docs));
  rejects("an observer with vitals", () => pluginConfigProblems(mutate(observerWp(), (w) => { w.spec.pluginConfig.vitals = {}; }), docs));
  rejects("a web-vitals query selecting reporter=\"router\" (the series carry none)", () => {
    const d = docs.find((x) => x.doc.metadata.name === "corp-cockpit-slo");
    return analysisTemplateProblems(mutate({ ...d, doc: clone(d.doc) }, (e) => {
      const m = e.doc.spec.metrics.find((x) => x.name === "web-vitals-lcp-p75");
      m.provider.prometheus.query = m.provider.prometheus.query.replaceAll('version="canary"', 'version="canary",reporter="router"'); }), gateMetrics);
  });
  rejects("a stats tag regex that no longer captures a rejected beacon's reason", () => configMapProblems(mutate(pick("ConfigMap", "canary-gate-stats"), (c) => { c.data["custom_bootstrap.json"] = c.data["custom_bootstrap.json"].replace("([a-z_]+))$", "([a-z]+))$"); }), {}));
  rejects("a gateway patch mounting a missing ConfigMap", () => {
    const patch = clone(files.find((x) => x.file === GATEWAY_PATCH_1_26).docs[0]);
    patch.spec.template.spec.volumes[0].configMap.name = "canary-gate-stat";
    return gatewayPatchProblems(patch, docs, false);
  });
  rejects("the Istio 1.26 gateway patch on Istio 1.27+ with the annotation added (the template's mount and the one by hand)", () => {
    const patch = clone(files.find((x) => x.file === GATEWAY_PATCH_1_26).docs[0]);
    patch.spec.template.metadata.annotations["sidecar.istio.io/bootstrapOverride"] = "canary-gate-stats";
    return gatewayPatchProblems(patch, docs, true);
  });
  rejects("the Istio 1.27 gateway patch on Istio 1.26 (nothing mounts the bootstrap)",
    () => gatewayPatchProblems(clone(files.find((x) => x.file === GATEWAY_PATCH).docs[0]), docs, false));

  // The shadow phase.
  const shadowRollout = () => clone(shadowBuilt.objects?.find((o) => o.kind === "Rollout" && o.metadata.name === SHADOW.service) ?? {});
  const shadowArgs = [pick("Rollout", SHADOW.service), pick("VirtualService", `${SHADOW.service}-vsvc`)];
  rejects("a mirror route on GET alone (Argo places it above the pinned routes: pinned users' GETs to stable)", () => shadowRolloutProblems(
    mutate(shadowRollout(), (r) => { delete r.spec.strategy.canary.steps[1].setMirrorRoute.match[0].headers; }), ...shadowArgs));
  rejects("a mirror route left in place at the first setWeight", () => shadowRolloutProblems(
    mutate(shadowRollout(), (r) => { r.spec.strategy.canary.steps.splice(3, 1); }), ...shadowArgs));
  rejects("a managed route named like a route of the VirtualService (Argo deletes it at the end)", () => shadowRolloutProblems(
    mutate(shadowRollout(), (r) => { r.spec.strategy.canary.trafficRouting.managedRoutes.push({ name: "canary-pinned" }); }), ...shadowArgs));
  rejects("a shadow phase with the canary scaled to none (no setCanaryScale)", () => shadowRolloutProblems(
    mutate(shadowRollout(), (r) => { r.spec.strategy.canary.steps.shift(); }), ...shadowArgs));
  rejects("a shadow template judging the copies at the routers (which never see them)", () => {
    const d = docs.find((x) => x.doc.metadata?.name === SHADOW.template);
    return analysisTemplateProblems(mutate({ ...d, doc: clone(d.doc) }, (e) => {
      const m = e.doc.spec.metrics[1];
      m.provider.prometheus.query = m.provider.prometheus.query.replaceAll('reporter="observer",revision="{{args.canary-hash}}",direction="inbound"', 'version="canary",reporter="router"'); }), gateMetrics);
  });

  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main();
