#!/usr/bin/env python3
"""Generate the Istio and Argo Rollouts manifests under istio/ for the tier-1 services.

    python3 istio/generate.py            write every file
    python3 istio/generate.py --check    exit 1 if a committed file differs from what this writes
    python3 istio/generate.py --json     print {path: [documents]} as JSON (what each file must parse to)
    python3 istio/generate.py --pin-image [LAYOUT]
                                         pin the WasmPlugins to the image `make image` built (its OCI
                                         layout, default target/oci/canary-gate): write its tag and
                                         digest to istio/image/canary-gate.pin, then every file

Python standard library only; the output is deterministic (no timestamps, fixed key order).
Edit this script, not the generated files: `--check` (run by tests/manifests/validate.mjs)
fails while they differ.
"""

import math
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))  # istio/
NAMESPACE = "teei-platform"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY = "istio-system/teei-gateway"
PROMETHEUS = "http://prometheus.monitoring.svc.cluster.local:9090"
# The registry the canary-gate image is pushed to; its tag and digest come from IMAGE_PIN.
WASM_REPO = "oci://registry.example.com/teei/canary-gate"
# What `make image` writes (istio/image/build.py), and the committed pin taken from it.
IMAGE_LAYOUT = os.path.join(os.path.dirname(ROOT), "target", "oci", "canary-gate")
IMAGE_PIN = "image/canary-gate.pin"
# A private registry: the name of a kubernetes.io/dockerconfigjson Secret in each WasmPlugin's
# namespace (istio-system and teei-platform), or None for a registry that needs none. With
# FAIL_OPEN a pull that fails is silent: traffic flows without canary-gate.
IMAGE_PULL_SECRET = None
IMAGE = "registry.example.com/teei/{svc}:1.0.0"
STATS_CONFIGMAP = "canary-gate-stats"
# The header a router sets and the VirtualService's pinned routes match, one per service: a
# header one service's router set, forwarded by an application to another service, never
# routes that other service (its router replaces its own header; no other header moves it).
VERSION_HEADER_PREFIX = "x-canary-version-"
# Observers stamp responses with their revision; mesh-mode routers learn from it which
# revision each subset serves.
REVISION_HEADER = "x-canary-revision"
# Pod label Argo Rollouts sets per ReplicaSet and never changes on a running pod.
REVISION_LABEL = "rollouts-pod-template-hash"
# Every value not from the tier-1 plan carries a comment starting with NOT_IN_PLAN_PREFIX.
NOT_IN_PLAN_PREFIX = "not in the tier-1 plan"
PLACEHOLDERS = f"Values marked `# {NOT_IN_PLAN_PREFIX}` are placeholders: set the real ones."
NOT_IN_PLAN = "not in the tier-1 plan: set to the service's real value"
NOT_IN_PLAN_REGISTRY = "not in the tier-1 plan: set WASM_REPO in istio/generate.py"
NOT_IN_PLAN_GATEWAY_PODS = "not in the tier-1 plan: your ingress gateway pods' label"
NOT_IN_PLAN_IMAGE = "not in the tier-1 plan: set to the service's real image"
NOT_IN_PLAN_HOST = "not in the tier-1 plan: set to the service's real public host name"
NOT_IN_PLAN_GATEWAY = "not in the tier-1 plan: set to your ingress Gateway"
NOT_IN_PLAN_SLO = "not in the tier-1 plan: set to the service's real SLO"
NOT_IN_PLAN_PARTNER = "not in the tier-1 plan: the real host name called"
NOT_IN_PLAN_CALLER = "not in the tier-1 plan: a workload that calls the service in the mesh"
NOT_IN_PLAN_PRINCIPAL = "not in the tier-1 plan: your trust domain and the router's service account"
# The plan names this address; it is still your cluster's: every use is marked.
PROMETHEUS_MARK = "placeholder: your Prometheus (the address the tier-1 plan names)"
# The mesh's trust domain and the ingress gateway's service account (Istio's defaults), whose
# SPIFFE identities the routers' revision probes carry.
TRUST_DOMAIN = "cluster.local"
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
# Whether the mesh denies by default (an ALLOW policy covers the services): then each service
# needs an AuthorizationPolicy letting the routers' revision probe through. Istio denies every
# request an ALLOW policy does not match once one applies to a workload, so in a mesh where no
# ALLOW policy covers these services, set this False: the policy would deny everything else.
MESH_DENIES_BY_DEFAULT = True
# The path observers answer with their revision (canary-gate's revision_probe_path default).
REVISION_PROBE_PATH = "/__canary/revision"
# The header a router sets on every request it handles to the reason of its decision, one per
# service like the version header (a router removes both from requests for hosts it does not
# handle, so two routers in one proxy must not share them), and the reason when it leaves the
# choice to the mesh's weights: then, and only then, the request carries no version header (the
# pinned routes match none). The mirror route of the shadow phase matches it.
REASON_HEADER_PREFIX = "x-canary-reason-"
MESH_REASON = "mesh"
NOT_IN_PLAN_TOKEN = "not in the tier-1 plan: the SHA-256 of your testers' token (docs/configuration.md, override)"
# No token hashes to it: overrides at the gateway stay off until the real digest is set.
TOKEN_DIGEST_PLACEHOLDER = "0" * 64
NOT_IN_PLAN_MIRROR = "not in the tier-1 plan: the shadow phase's length and share"
# Applications call external hosts as http://HOST (port 80): the sidecar sees the HTTP request
# (and canary-gate's outbound observer with it), then originates TLS to HOST:443.
EGRESS_PORT = 80
EGRESS_TLS_PORT = 443
APP_METRIC = "application metric (not from canary-gate)"
ABORT_TEMPLATE = "canary-gate-abort"
# Argo measures a background analysis at once when the rollout starts. The SLO metrics read
# rates over 5 minutes, so they wait for one window of canary traffic; after that a few
# inconclusive answers (no traffic for a moment) or errors (Prometheus restarting: Argo retries
# every 10 s) do not end the run, which would pause or abort the rollout.
RATE_WINDOW_DELAY = "5m"
SLO_INCONCLUSIVE_LIMIT = 5
# 30 errors in a row: 5 minutes of retries every 10 s.
CONSECUTIVE_ERROR_LIMIT = 30

# Histogram buckets of canary_request_duration_milliseconds (ms), as in envoy/*.yaml.
BUCKETS_MS = [1, 2, 5, 10, 20, 30, 40, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 750,
              1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 15000, 30000, 60000]
# Web vitals in ms (LCP, INP, FCP, TTFB): a bound at each "good" and "poor" limit.
VITALS_BUCKETS_MS = [25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1200, 1500, 1800,
                     2000, 2500, 3000, 3500, 4000, 5000, 7500, 10000, 20000, 30000, 60000]
# CLS x 1000 (100 is a CLS of 0.1).
CLS_BUCKETS = [1, 5, 10, 25, 50, 75, 100, 125, 150, 200, 250, 500, 1000, 2500, 5000]
# Every histogram's buckets by stat-name prefix: envoy/*.yaml's histogram_bucket_settings, and
# the sidecar.istio.io/statsHistogramBuckets annotation.
HISTOGRAM_BUCKETS = {
    "wasmcustom.canary_request_duration_milliseconds": BUCKETS_MS,
    **{f"wasmcustom.canary_web_vitals_{v}_milliseconds": VITALS_BUCKETS_MS for v in ("lcp", "inp", "fcp", "ttfb")},
    "wasmcustom.canary_web_vitals_cls": CLS_BUCKETS,
}

# Envoy stats_tags turning canary-gate's `.label.value` stat-name pairs into Prometheus labels,
# as in envoy/*.yaml.
STATS_TAGS = [
    ("service", r"^wasmcustom\.canary_[a-z0-9_]+(\.service\.([a-z0-9-]+))"),
    ("version", r"^wasmcustom\.canary_[a-z0-9_]+\.service\.[a-z0-9-]+(\.version\.([A-Za-z0-9_-]+))"),
    ("reporter", r"^wasmcustom\.canary_[a-z0-9_]+\.service\.[a-z0-9-]+\.version\.[A-Za-z0-9_-]+"
                 r"(\.reporter\.(router|observer))"),
    # After the reporter (observer series), the version (canary_revision_info) or the service
    # (a mesh-mode router's gate series, per canary revision).
    ("revision", r"^wasmcustom\.canary_[a-z0-9_]+\.service\.[a-z0-9-]+(?:\.version\.[A-Za-z0-9_-]+)?"
                 r"(?:\.reporter\.(?:router|observer))?(\.revision\.([A-Za-z0-9_-]+))"),
    ("direction", r"^wasmcustom\.canary_[a-z0-9_]+\..*(\.direction\.(inbound|outbound))"),
    # The route class, last but for the metric's own pair.
    ("class", r"^wasmcustom\.canary_[a-z0-9_]+\..*(\.class\.([a-z0-9_]+))(?:\.(?:code_class|outcome)\.[a-z0-9_]+)?$"),
    ("code_class", r"^wasmcustom\.canary_responses_total\..*(\.code_class\.([1-5]xx|none))$"),
    # Route decisions' and rejected beacons' reason.
    ("reason", r"^wasmcustom\.canary_(?:route_decisions_total|vitals_rejected_total)\..*(\.reason\.([a-z_]+))$"),
    ("outcome", r"^wasmcustom\.canary_(?:outcomes_total|window_outcome_ratio_ppm)\..*(\.outcome\.([a-z0-9_]+))$"),
    # The gate comparison's test (canary_gate_evidence), last in its name.
    ("test", r"^wasmcustom\.canary_gate_evidence\..*(\.test\.(errors|latency))$"),
]

# Ingress gateway replicas sharing the traffic (not in the tier-1 plan). Each replica gates on
# the requests it routes, so a gate sized for the plan's canary volume floor divides it by this.
GATEWAY_REPLICAS = 2
# Canary requests a gate needs in its window before judging: 2 errors in 20 exceed 5%.
GATE_MIN_REQUESTS = 20
# The longest gate window: a gate slower than a minute is no faster than the analysis.
GATE_MAX_WINDOW_S = 60
# Canary volume floor of the services the plan gives none (not in the tier-1 plan).
DEFAULT_VOLUME_FLOOR_RPS = 2

# gate.compare in every router (docs/gate.md#the-comparison): the anytime-valid test that the
# canary's share of bad responses exceeds its share of traffic. It judges the canary against
# stable, so it needs no threshold from the plan: alpha bounds the probability of a false trip
# per canary revision over the whole rollout, min_effect is the smallest canary-minus-stable
# bad ratio over the gate window worth a trip (both canary-gate's defaults). min_users keeps
# its default and is left out: a mesh-mode router knows no user (each request counts as one),
# so there only min_effect guards against one client's failures.
COMPARE = {"alpha": 0.001, "min_effect": 0.01}

# Canary page views a web-vitals judgement needs, in the gate window (gate.vitals.min_page_views,
# canary-gate's default) and in the analysis's 5 minutes: a P75 of a handful of pages, or one
# client's reports, is no verdict.
VITALS_MIN_PAGE_VIEWS = 50

# Tier-1 services. `volume_floor_rps`: the plan's canary request-volume floor. `compare_slow`:
# (gate.compare.slow_ms, the SLO it stands for), a second comparison on responses slower than
# slow_ms, only where the plan has a latency SLO on the requests the router sees that reads as
# "slower than X ms"; the others, and the services the plan gives no SLOs (api-gateway,
# reporting, q2q-ai), compare 5xx only. `planned`: replicas, port and pause lengths come from
# the tier-1 plan; otherwise they are placeholders marked NOT_IN_PLAN. Steps: (weight, pause)
# with pause None on the last step (100: the end of the steps promotes the canary).
# `public_hosts`: the names clients use through the ingress gateway (placeholders, not in the
# plan); a gateway router handles these only. `callers`: the workloads (app labels) that call the
# service inside the mesh (placeholders, not in the plan: the frontend and the API gateway call
# the backends); each gets a router in its own sidecars, where a VirtualService bound to `mesh`
# routes its calls. `external_hosts` (under `outbound`): the hosts the service's pods call
# outside the mesh, as http://HOST, the sidecar originating TLS (placeholders, not in the plan).
SERVICES = [
    {"name": "corp-cockpit", "replicas": 4, "port": 4321, "planned": True, "volume_floor_rps": 5,
     "public_hosts": ["cockpit.example.com"], "callers": [],
     "steps": [(10, "5m"), (30, "10m"), (50, "15m"), (100, None)],
     "gate": {"max_p95_ms": 2000},
     # The plan's SSR page load p95 < 1 s: a response slower than 1 s is a slow one. Assets and
     # API routes answer far faster, so counting every class adds only responses that are slow
     # for them too; the test judges the canary's share of slow responses against stable's.
     "compare_slow": (1000, "the plan's SSR page load p95 < 1 s"),
     # Astro: API routes under /api/, pages asked for as HTML, built assets by extension.
     "classes": [
         {"name": "api", "path_prefix": ["/api/"]},
         {"name": "asset", "path_suffix": [".js", ".mjs", ".css", ".woff2", ".png", ".jpg", ".svg", ".webp", ".ico"]},
         {"name": "page", "header": {"name": "accept", "contains": "text/html"}},
     ],
     "gate_classes": {"api": {"max_error_ratio": 0.05}, "asset": {"max_error_ratio": 0.05}},
     # Its pages send web-vitals beacons (web/canary-vitals.js) to the router, which answers them
     # itself. The analysis holds the canary to the plan's Core Web Vitals and JS error rate over
     # 5 minutes; the in-proxy gate, on 10 s, to Core Web Vitals' "poor" limits and 5% of page
     # views with a JS error, as a guard rail (as its max_p95_ms is twice the plan's p95): one
     # error among a few hundred page views, or a forged beacon, must not trip it.
     "vitals": {"path": "/__canary/vitals", "max_body_bytes": 4096, "max_per_second": 200},
     "gate_vitals": {"max_lcp_p75_ms": 4000, "max_inp_p75_ms": 500, "max_cls_p75": 0.25,
                     "max_js_error_ratio": 0.05, "min_page_views": VITALS_MIN_PAGE_VIEWS},
     "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2000m", "memory": "2Gi"}}},
    {"name": "impact-in", "replicas": 4, "port": 3002, "planned": True, "volume_floor_rps": 2,
     "callers": ["corp-cockpit", "api-gateway"],
     "steps": [(10, "10m"), (40, "20m"), (100, None)],
     "gate": {},
     # No compare_slow: the plan's latency SLOs are the partner deliveries' and partner API
     # calls' (the pods' outbound calls, 5 s to 30 s), which the gateway router never sees; its
     # inbound API has an error-rate SLO only.
     # Its pods' calls to the partners: webhook deliveries (POST) and other partner API calls;
     # a delivery Envoy retried answers with x-envoy-attempt-count above 1.
     "outbound": {
         "external_hosts": ["partner.example.com"],
         "classes": [
             {"name": "delivery", "authority_suffix": ["partner.example.com"],
              "method": ["POST"]},
             {"name": "partner_api", "authority_suffix": ["partner.example.com"]},
         ],
         "outcomes": [{"name": "retried", "response_header": "x-envoy-attempt-count",
                       "equals": ["2", "3", "4", "5", "6", "7", "8", "9", "10"]}],
     },
     "resources": {"requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": "4000m", "memory": "4Gi"}}},
    {"name": "unified-profile", "replicas": 5, "port": 3003, "planned": True, "volume_floor_rps": 10,
     "callers": ["corp-cockpit", "api-gateway"],
     "steps": [(20, "5m"), (50, "15m"), (100, None)],
     "gate": {"max_p95_ms": 1000, "max_p99_ms": 2000},
     # The plan's primary SLO, p95 < 500 ms: a response slower than 500 ms is one the SLO allows
     # only 5% of. The test trips when the canary's share of them exceeds stable's.
     "compare_slow": (500, "the plan's p95 < 500 ms"),
     # The service says whether its cache answered in x-cache; its pods fetch from the HRIS.
     "outcomes": [{"name": "cache_hit", "response_header": "x-cache", "equals": ["HIT", "hit"]}],
     "outbound": {"external_hosts": ["hris.example.com"],
                  "classes": [{"name": "hris", "authority_suffix": ["hris.example.com"]}]},
     # An optional shadow phase before the first setWeight (istio/components/unified-profile-mirror,
     # mirror_component_docs): the plan's "mirroring for shadow testing" of a read-heavy service.
     # Every GET copied to the canary at weight 0 for `pause` (`percentage` and `pause` are not
     # in the plan), judged by revision over `window`.
     "mirror": {"route": "shadow", "methods": ["GET"], "percentage": 100, "pause": "5m", "window": "2m"},
     # The memory-utilization metric divides by the container's memory limit.
     "resources": {"requests": {"cpu": "1000m", "memory": "2Gi"}, "limits": {"cpu": "4000m", "memory": "8Gi"}}},
    {"name": "api-gateway", "replicas": 3, "port": 3000, "planned": False,
     "public_hosts": ["api.example.com"], "callers": ["corp-cockpit"],
     "steps": [(5, "10m"), (25, "10m"), (50, "10m"), (100, None)],
     "gate": {}},
    {"name": "reporting", "replicas": 3, "port": 3004, "planned": False, "callers": ["corp-cockpit", "api-gateway"],
     "steps": [(10, "10m"), (30, "10m"), (100, None)],
     "gate": {}},
    {"name": "q2q-ai", "replicas": 3, "port": 3005, "planned": False, "callers": ["corp-cockpit", "api-gateway"],
     "steps": [(5, "10m"), (20, "10m"), (50, "10m"), (100, None)],
     "gate": {}},
]


SERVICE_BY_NAME = {s["name"]: s for s in SERVICES}


# --------------------------------------------------------------------------------------------
# A small YAML writer: block style, comments, flow collections, literal blocks.

class C:
    """A value with comment lines above its key (or list item) and/or a comment after it."""

    def __init__(self, value, above=(), after=None):
        self.value, self.above, self.after = value, list(above), after


class Flow:
    """A short list or mapping written in flow style: [a, b] / {a: b}."""

    def __init__(self, value):
        self.value = value


class Lit:
    """A multi-line string written as a literal block (|, or |- without a final newline)."""

    def __init__(self, text):
        self.text = text


RESERVED = re.compile(r"(?i)^(true|false|yes|no|y|n|on|off|null|~)$")
PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:@=+-]*$")
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|Ki|Mi|Gi)$")  # durations and resource quantities


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)
        if "e" in text or "inf" in text or "nan" in text:
            raise ValueError(f"float {v!r} has no plain decimal form")
        return text
    if isinstance(v, str):
        if (PLAIN.match(v) and not RESERVED.match(v) and not v.endswith(":")) or DURATION.match(v):
            return v
        if "'" not in v and "\n" not in v and v.isprintable():
            return "'" + v + "'"
        return json.dumps(v)
    raise TypeError(f"cannot write {type(v).__name__}")


def flow(v):
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(k)}: {flow(x)}" for k, x in v.items()) + "}"
    return scalar(v)


def unwrap(v):
    if isinstance(v, C):
        return v.value, v.above, v.after
    return v, [], None


def comment_lines(pad, lines):
    return [f"{pad}# {c}".rstrip() for c in lines]


def inline(v):
    """The text after `key:` or `- ` when the value fits on that line, else None."""
    if isinstance(v, Flow):
        return flow(v.value)
    if isinstance(v, (dict, list)):
        return "{}" if v == {} else "[]" if v == [] else None
    if isinstance(v, Lit):
        return None
    return scalar(v)


def emit_map(d, indent):
    pad, out = " " * indent, []
    for key, raw in d.items():
        v, above, after = unwrap(raw)
        out += comment_lines(pad, above)
        tail = f"  # {after}" if after else ""
        text = inline(v)
        if text is not None:
            out.append(f"{pad}{scalar(key)}: {text}{tail}")
        elif isinstance(v, Lit):
            out.append(f"{pad}{scalar(key)}: {'|' if v.text.endswith(chr(10)) else '|-'}{tail}")
            out += [f"{pad}  {line}".rstrip() for line in v.text.rstrip("\n").split("\n")]
        elif isinstance(v, dict):
            out.append(f"{pad}{scalar(key)}:{tail}")
            out += emit_map(v, indent + 2)
        else:
            out.append(f"{pad}{scalar(key)}:{tail}")
            out += emit_seq(v, indent + 2)
    return out


def emit_seq(items, indent):
    pad, out = " " * indent, []
    for raw in items:
        v, above, after = unwrap(raw)
        out += comment_lines(pad, above)
        tail = f"  # {after}" if after else ""
        text = inline(v)
        if text is not None:
            out.append(f"{pad}- {text}{tail}")
        elif isinstance(v, dict):
            if isinstance(next(iter(v.values())), C) and next(iter(v.values())).above:
                raise ValueError("put the comment on the list item, not on its first key")
            body = emit_map(v, indent + 2)
            body[0] = f"{pad}- {body[0][indent + 2:]}{tail}"
            out += body
        else:
            raise ValueError("nested lists and literal blocks in lists are not used here")
    return out


def document(doc):
    return "\n".join(emit_map(doc, 0)) + "\n"


def plain(v):
    """The data a YAML parser reads back: wrappers removed."""
    while isinstance(v, (C, Flow)):
        v = v.value
    if isinstance(v, Lit):
        return v.text
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def render(header, docs, separators=True):
    text = "".join(f"# {line}".rstrip() + "\n" for line in header)
    if not separators:  # a single document that is not a Kubernetes object: a patch
        return text + "".join(document(d) for d in docs)
    return text + "---\n" + "---\n".join(document(d) for d in docs)


# --------------------------------------------------------------------------------------------
# Shared pieces

GENERATED = "Generated by istio/generate.py: edit the generator, then run `python3 istio/generate.py`."


def meta(name, namespace, labels=None):
    m = {"name": name, "namespace": namespace}
    if labels:
        m["labels"] = labels
    return m


def svc_hosts(svc):
    return [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.cluster.local"]


def public_hosts(s):
    return [C(h, after=NOT_IN_PLAN_HOST) for h in s.get("public_hosts", [])]


# --------------------------------------------------------------------------------------------
# The WasmPlugin image, pinned by digest

PIN_LINE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9._-]{0,127})@(sha256:[0-9a-f]{64})$")


def read_pin():
    """(tag, digest) from the committed IMAGE_PIN; exits with how to make it if it is missing."""
    path = os.path.join(ROOT, IMAGE_PIN)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        sys.exit(f"istio/{IMAGE_PIN} is missing: run `make image`, then `python3 istio/generate.py --pin-image`")
    m = PIN_LINE.match(lines[0]) if len(lines) == 1 else None
    if not m:
        sys.exit(f"istio/{IMAGE_PIN}: expected one line TAG@sha256:<64 hex digits>, got {lines!r}")
    return m.group(1), m.group(2)


def layout_pin(layout):
    """(tag, digest) of the single image in an OCI layout written by istio/image/build.py."""
    index_path = os.path.join(layout, "index.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        sys.exit(f"{index_path}: no OCI layout there (run `make image` first)")
    manifests = index.get("manifests", [])
    if len(manifests) != 1:
        sys.exit(f"{index_path}: expected one image, found {len(manifests)}")
    tag = manifests[0].get("annotations", {}).get("org.opencontainers.image.ref.name", "")
    pin = f"{tag}@{manifests[0].get('digest', '')}"
    m = PIN_LINE.match(pin)
    if not m:
        sys.exit(f"{index_path}: not a tagged sha256 image: {pin}")
    return m.group(1), m.group(2)


def write_pin(tag, digest):
    with open(os.path.join(ROOT, IMAGE_PIN), "w", encoding="utf-8") as f:
        f.write("# The canary-gate image every oci:// WasmPlugin pins: TAG@DIGEST of the OCI layout\n"
                "# `make image` builds, pushed unchanged (skopeo copy --preserve-digests) to\n"
                f"# {WASM_REPO.removeprefix('oci://')}:TAG. Written by `python3 istio/generate.py --pin-image`.\n"
                f"{tag}@{digest}\n")


def wasm_oci():
    """oci://REPO:TAG@sha256:DIGEST: Istio fetches by the digest and checks it; the tag is for people."""
    tag, digest = read_pin()
    return f"{WASM_REPO}:{tag}@{digest}"


def proxy_config_annotation():
    return 'proxyStatsMatcher:\n  inclusionRegexps: ["wasmcustom\\\\.canary_.*"]\n'


def buckets_annotation():
    return json.dumps(HISTOGRAM_BUCKETS, separators=(",", ":"))


def stats_annotations():
    return {
        "proxy.istio.io/config": C(Lit(proxy_config_annotation()), above=[
            "Istio exports only selected Envoy stats: include canary-gate's (wasmcustom.canary_*)."]),
        "sidecar.istio.io/statsHistogramBuckets": C(buckets_annotation(), above=[
            "Histogram buckets (latency and web vitals in ms, CLS x 1000), as in envoy/*.yaml."]),
        "sidecar.istio.io/bootstrapOverride": C(STATS_CONFIGMAP, above=[
            "stats_tags turning the stat-name pairs into Prometheus labels (istio/stats/)."]),
    }


def marked(value, planned):
    return value if planned else C(value, after=NOT_IN_PLAN)


# --------------------------------------------------------------------------------------------
# Per-service Kubernetes objects

def service_doc(s):
    svc, port = s["name"], s["port"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(svc, NAMESPACE, {"app": svc}),
        "spec": {
            "selector": {"app": svc},
            "ports": [{
                "name": "http",
                "appProtocol": "http",
                "port": marked(port, s["planned"]),
                "targetPort": "http",
                "protocol": "TCP",
            }],
        },
    }


def service_account_doc(s):
    """The pods' own identity: AuthorizationPolicies name the routers in callers' pods by it."""
    svc = s["name"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(svc, NAMESPACE, {"app": svc}),
    }


def destinationrule_doc(s):
    svc = s["name"]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": meta(f"{svc}-destrule", NAMESPACE, {"app": svc}),
        "spec": {
            "host": C(svc, above=[
                "Argo Rollouts adds rollouts-pod-template-hash to each subset's labels and keeps it",
                "pointing at the stable and the canary ReplicaSet."]),
            "subsets": [
                {"name": "stable", "labels": {"app": svc}},
                {"name": "canary", "labels": {"app": svc}},
            ],
        },
    }


def version_header(svc):
    return VERSION_HEADER_PREFIX + svc


def reason_header(svc):
    return REASON_HEADER_PREFIX + svc


def header_route(name, version, svc):
    return {
        "name": name,
        "match": [{"headers": {version_header(svc): {"exact": version}}}],
        "route": [{"destination": {"host": svc, "subset": version}}],
    }


def virtualservice_doc(s):
    svc = s["name"]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta(f"{svc}-vsvc", NAMESPACE, {"app": svc}),
        "spec": {
            "hosts": C([svc, f"{svc}.{NAMESPACE}.svc.cluster.local", *public_hosts(s)], above=[
                "In-cluster names, then the public names the ingress Gateway takes for it." if is_public(s)
                else "In-cluster names: an internal service, routed in its callers' sidecars."]),
            "gateways": C([C(GATEWAY, after=NOT_IN_PLAN_GATEWAY), "mesh"] if is_public(s) else ["mesh"], above=[
                "`mesh`: every calling pod's sidecar routes with these routes (where the client-side",
                "routers run)" + ("; the Gateway: requests from outside, at the ingress gateway." if is_public(s) else
                                  ". No Gateway: no public name reaches this service.")]),
            "http": [
                C(header_route("canary-pinned", "canary", svc), above=[
                    f"Users pinned (or overridden) by canary-gate: it sets {version_header(svc)} (this",
                    "service's own header) and the proxy re-selects the route, so these two routes must",
                    "come before `primary`."]),
                header_route("stable-pinned", "stable", svc),
                C({
                    "name": "primary",
                    "route": [
                        {"destination": {"host": svc, "subset": "stable"}, "weight": 100},
                        {"destination": {"host": svc, "subset": "canary"}, "weight": 0},
                    ],
                }, above=["Everyone else. Argo Rollouts sets these two weights at each step."]),
            ],
        },
    }


def canary_steps(s):
    """The Rollout's canary steps: each weight, then its pause."""
    steps = []
    for weight, pause in s["steps"]:
        steps.append({"setWeight": weight})
        if pause is not None:
            steps.append({"pause": {"duration": marked(pause, s["planned"])}})
    return steps


def rollout_doc(s):
    svc = s["name"]
    steps = canary_steps(s)
    args = [
        {"name": "service", "value": svc},
        C({"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}, above=[
            f"{REVISION_LABEL} of the new ReplicaSet and of the stable one, fixed when Argo",
            "creates the run: the revisions the observers' series are labelled with."]),
        {"name": "stable-hash", "valueFrom": {"podTemplateHashValue": "Stable"}},
    ]
    container = {
        "name": svc,
        "image": C(IMAGE.format(svc=svc), after=NOT_IN_PLAN_IMAGE),
        "ports": [{"name": "http", "containerPort": marked(s["port"], s["planned"]), "protocol": "TCP"}],
    }
    if "resources" in s:
        note = ["Resources from the tier-1 plan."]
        if svc == "unified-profile":
            note.append("The memory-utilization metric of unified-profile-slo divides by limits.memory.")
        container["resources"] = C(s["resources"], above=note)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": meta(svc, NAMESPACE, {"app": svc}),
        "spec": {
            "replicas": marked(s["replicas"], s["planned"]),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app": svc}},
            "analysis": C({
                "successfulRunHistoryLimit": 5,
                "unsuccessfulRunHistoryLimit": 5,
            }, above=["AnalysisRuns kept per Rollout (the schema has these on spec.analysis, not on",
                      "strategy.canary.analysis)."]),
            "template": {
                "metadata": {
                    "labels": {"app": svc},
                    "annotations": stats_annotations(),
                },
                "spec": {
                    "serviceAccountName": C(svc, above=[
                        "The pods' own identity (service.yaml): the services it calls let its routers'",
                        "revision probes through by it (authorizationpolicy.yaml)."]),
                    "containers": [container],
                },
            },
            "strategy": {
                "canary": {
                    "canaryMetadata": C({"labels": {"role": "canary"}}, above=[
                        "For people and the observers' version label. Argo relabels running pods at",
                        "promotion, but the observers keep the value their pod started with: they",
                        f"identify a revision by {REVISION_LABEL} instead."]),
                    "stableMetadata": {"labels": {"role": "stable"}},
                    "abortScaleDownDelaySeconds": 30,
                    "trafficRouting": C({
                        "istio": {
                            "virtualService": {"name": f"{svc}-vsvc", "routes": Flow(["primary"])},
                            "destinationRule": {
                                "name": f"{svc}-destrule",
                                "canarySubsetName": "canary",
                                "stableSubsetName": "stable",
                            },
                        },
                    }, above=["Subset-level routing: Argo sets the weights of the `primary` route only; the",
                              "header routes before it keep canary-gate's pinned users on their version."]),
                    "analysis": C({
                        "templates": [{"templateName": f"{svc}-slo"}, {"templateName": ABORT_TEMPLATE}],
                        "startingStep": 1,
                        "args": args,
                    }, above=["Background analysis from step 1 until promotion: the service's SLOs, and the",
                              "in-proxy gate's verdict (canary_gate_tripped) as an immediate abort."]),
                    "steps": steps,
                },
            },
        },
    }


# --------------------------------------------------------------------------------------------
# AnalysisTemplates

def prometheus_address():
    return C(PROMETHEUS, after=PROMETHEUS_MARK)


def sel(extra=""):
    return 'service="{{args.service}}",version="canary"' + extra


def with_label(name, value):
    return f',{name}="{value}"'


ROUTER = ',reporter="router"'


def cond(op, threshold):
    """NaN-safe success and failure conditions: an empty result or NaN is neither."""
    guard = "len(result) > 0 && !isNaN(result[0])"
    inverse = {"<": ">=", ">": "<="}[op]
    return (f"{guard} && result[0] {op} {threshold}", f"{guard} && result[0] {inverse} {threshold}")


def metric(name, query, op, threshold, failure_limit, above=()):
    success, failure = cond(op, threshold)
    m = {
        "name": name,
        "interval": "1m",
        "initialDelay": RATE_WINDOW_DELAY,
        "failureLimit": failure_limit,
        "inconclusiveLimit": SLO_INCONCLUSIVE_LIMIT,
        "consecutiveErrorLimit": CONSECUTIVE_ERROR_LIMIT,
        "successCondition": success,
        "failureCondition": failure,
        "provider": {"prometheus": {"address": prometheus_address(), "query": query}},
    }
    return C(m, above=above) if above else m


def app_metric(name, query, op, threshold, failure_limit, what):
    return metric(name, query, op, threshold, failure_limit, above=[what, APP_METRIC])


def observed(hash_arg, extra=',direction="inbound"'):
    """The observers' series of one revision: by default the requests its pods serve (the
    outbound observers' calls are apart). No version label: an observer's is the one its pod
    started with, and Argo's promotion leaves it stale."""
    return ('service="{{args.service}}",reporter="observer",revision="{{args.' + hash_arg + '}}"' + extra)


# Measured and shown beside the canary's, deciding nothing: always in the template's dryRun.
BASELINE_METRICS = ["inbound-error-rate-stable"]


def error_rates(svc, threshold):
    """The canary's 5xx ratio at the router, and at its own pods (observers), with the stable
    revision's beside it. The plan gives the threshold for planned services only."""
    unplanned = [] if SERVICE_BY_NAME[svc]["planned"] else [f"Threshold and failureLimit {NOT_IN_PLAN_SLO}."]
    router = (f'sum(rate(canary_responses_total{{{sel(ROUTER)},code_class="5xx"}}[5m])) / '
              f'sum(rate(canary_requests_total{{{sel(ROUTER)}}}[5m]))')

    def inbound(hash_arg):
        errors = observed(hash_arg, ',direction="inbound",code_class="5xx"')
        return (f"sum(rate(canary_responses_total{{{errors}}}[5m])) / "
                f"sum(rate(canary_requests_total{{{observed(hash_arg)}}}[5m]))")

    return [
        metric("error-rate", router, "<", threshold, 3, above=[
            f"Canary 5xx ratio at the router < {threshold:g} (canary-gate). No canary traffic: NaN, inconclusive.",
            *unplanned]),
        metric("inbound-error-rate", inbound("canary-hash"), "<", threshold, 3, above=[
            f"5xx ratio of every request the canary's pods serve < {threshold:g} (canary-gate observers),",
            "whoever calls them, routed by a canary-gate router or not.",
            "Selected by revision (canary-hash), not by version label.", *unplanned]),
        metric("inbound-error-rate-stable", inbound("stable-hash"), "<", threshold, 3, above=[
            "The same for the stable revision (stable-hash), to compare with: in dryRun, it decides",
            "nothing. Both failing points at something they share, not at the canary."]),
    ]


def latency(quantile, threshold_ms, failure_limit, what, name=None, series=None):
    series = series or sel(ROUTER)
    q = (f"histogram_quantile({quantile}, sum by (le) "
         f"(rate(canary_request_duration_milliseconds_bucket{{{series}}}[5m])))")
    name = name or f"latency-p{round(quantile * 100)}"
    return metric(name, q, "<", threshold_ms, failure_limit, above=[f"{what} (canary-gate, ms)."])


UNPLANNED_CLASSES = f"Route classes and outcomes are {NOT_IN_PLAN_PREFIX}: set the service's real ones."


def class_ratio(name, series, good, op, threshold, failure_limit, what):
    """The share of `series` (a label selector) whose responses match `good` (more labels):
    of canary_responses_total by code_class, or of canary_outcomes_total by outcome."""
    num_metric = "canary_outcomes_total" if "outcome=" in good else "canary_responses_total"
    query = (f"sum(rate({num_metric}{{{series}{good}}}[5m])) / "
             f"sum(rate(canary_requests_total{{{series}}}[5m]))")
    return metric(name, query, op, threshold, failure_limit, above=[f"{what} (canary-gate).", UNPLANNED_CLASSES])


def outbound(cls):
    """The canary pods' own calls of route class `cls`, by revision (outbound observers)."""
    return observed("canary-hash", f',direction="outbound",class="{cls}"')


def request_volume(min_rps):
    m = {
        "name": "request-volume",
        "interval": "1m",
        "initialDelay": RATE_WINDOW_DELAY,
        "failureLimit": 3,
        "inconclusiveLimit": SLO_INCONCLUSIVE_LIMIT,
        "consecutiveErrorLimit": CONSECUTIVE_ERROR_LIMIT,
        "successCondition": f"len(result) > 0 && result[0] > {min_rps}",
        "failureCondition": "false",
        "provider": {"prometheus": {
            "address": prometheus_address(),
            "query": f"sum(rate(canary_requests_total{{{sel(ROUTER)}}}[5m]))",
        }},
    }
    return C(m, above=[
        f"Canary traffic > {min_rps} req/s (canary-gate). Never a failure (failureCondition: false):",
        "below it the measurement is inconclusive; more than inconclusiveLimit of those pause the",
        "rollout for a human instead of judging, or promoting, a canary that too few requests reached."])


def quantile_query(q, bucket_metric):
    return f"histogram_quantile({q}, sum by (le) (rate({bucket_metric}{{{sel()}}}[5m])))"


def ratio_query(num, den):
    return f"sum(rate({num}[5m])) / sum(rate({den}[5m]))"


def with_page_views(query):
    """`query`, or nothing while the canary had fewer than VITALS_MIN_PAGE_VIEWS page views in
    the 5 minutes: inconclusive, as the router's gate.vitals is below min_page_views."""
    views = f"sum(increase(canary_web_page_views_total{{{sel()}}}[5m]))"
    return f"{query} and on () ({views} >= {VITALS_MIN_PAGE_VIEWS})"


def web_vitals():
    """The plan's web-vitals SLOs from the beacons the router answers (canary_web_*, labels
    service and version only: the router alone reports them)."""
    floor = f"Inconclusive below {VITALS_MIN_PAGE_VIEWS} canary page views in the 5 minutes"

    def p75(name, series, threshold, what):
        return metric(name, with_page_views(quantile_query(0.75, f"{series}_bucket")), "<", threshold, 3,
                      above=[f"{what} (canary-gate, web-vitals beacons).", f"{floor}."])

    errors = ratio_query(f"canary_web_js_errors_total{{{sel()}}}", f"canary_web_page_views_total{{{sel()}}}")
    return [
        p75("web-vitals-lcp-p75", "canary_web_vitals_lcp_milliseconds", 2500,
            "Largest Contentful Paint p75 < 2500 ms"),
        p75("web-vitals-inp-p75", "canary_web_vitals_inp_milliseconds", 200,
            "Interaction to Next Paint p75 < 200 ms"),
        p75("web-vitals-cls-p75", "canary_web_vitals_cls", 100,
            "Cumulative Layout Shift p75 < 0.1, in the series' unit CLS x 1000: < 100"),
        metric("js-error-rate", with_page_views(errors), "<", 0.001, 3, above=[
            "JavaScript errors per page view < 0.1% (canary-gate, web-vitals beacons).", f"{floor}."]),
    ]


def slo_metrics(svc):
    if svc == "corp-cockpit":
        return [
            *error_rates(svc, 0.001),
            class_ratio("api-error-rate", sel(ROUTER + with_label("class", "api")), ',code_class="5xx"', "<", 0.001, 3,
                        "API routes' 5xx ratio < 0.1% (class api)"),
            latency(0.95, 1000, 3, "SSR page load p95 < 1000 (class page)", name="ssr-page-load-p95",
                    series=sel(ROUTER + with_label("class", "page"))),
            class_ratio("resource-load-error-rate", sel(ROUTER + with_label("class", "asset")),
                        ',code_class=~"4xx|5xx"', "<", 0.01, 3,
                        "Static resources that fail to load (4xx or 5xx) < 1% (class asset)"),
            request_volume(volume_floor(SERVICE_BY_NAME[svc])),
            *web_vitals(),
        ]
    if svc == "impact-in":
        return [
            *error_rates(svc, 0.001),
            request_volume(volume_floor(SERVICE_BY_NAME[svc])),
            class_ratio("delivery-success-rate", outbound("delivery"), ',code_class="2xx"', ">", 0.99, 3,
                        "Webhook deliveries the partners answer 2xx > 99% (the canary's pods' outbound calls)"),
            latency(0.95, 10000, 3, "Webhook delivery p95 < 10 s, each call to a partner", name="delivery-latency-p95",
                    series=outbound("delivery")),
            latency(0.99, 30000, 5, "Webhook delivery p99 < 30 s, each call to a partner (secondary)",
                    name="delivery-latency-p99", series=outbound("delivery")),
            class_ratio("retry-rate", outbound("delivery"), ',outcome="retried"', "<", 0.05, 3,
                        "Deliveries Envoy had to retry (x-envoy-attempt-count > 1) < 5%"),
            latency(0.95, 5000, 5, "Other partner API calls p95 < 5 s (secondary)", name="partner-api-latency-p95",
                    series=outbound("partner_api")),
            app_metric("queue-depth", f"max(impact_in_queue_depth{{{sel()}}})",
                       "<", 1000, 3, "Delivery queue depth < 1000."),
            app_metric("db-pool-utilization",
                       f"max(db_pool_active_connections{{{sel()}}} / db_pool_connections_max{{{sel()}}})",
                       "<", 0.75, 3, "Database connection pool utilization < 75%."),
        ]
    if svc == "unified-profile":
        pods = (f'namespace="{NAMESPACE}",container="{{{{args.service}}}}",'
                f'pod=~"{{{{args.service}}}}-{{{{args.canary-hash}}}}-.*"')
        return [
            *error_rates(svc, 0.002),
            latency(0.95, 500, 3, "p95 latency < 500"),
            latency(0.99, 1000, 5, "p99 latency < 1000 (secondary)"),
            request_volume(volume_floor(SERVICE_BY_NAME[svc])),
            app_metric("aggregation-success-rate",
                       ratio_query(f'profile_aggregation_total{{{sel(with_label("status", "success"))}}}',
                                   f"profile_aggregation_total{{{sel()}}}"),
                       ">", 0.995, 3, "Profile aggregation success rate > 99.5%."),
            class_ratio("cache-hit-rate", sel(ROUTER), ',outcome="cache_hit"', ">", 0.8, 5,
                        "Responses the service's cache answered (x-cache: HIT) > 80% (secondary)"),
            app_metric("db-query-latency-p95", quantile_query(0.95, "db_query_duration_seconds_bucket"),
                       "<", 0.1, 3, "Database query latency p95 < 100 ms."),
            app_metric("db-pool-utilization",
                       f"max(db_pool_active_connections{{{sel()}}} / db_pool_connections_max{{{sel()}}})",
                       "<", 0.8, 3, "Database connection pool utilization < 80%."),
            class_ratio("external-fetch-success-rate", outbound("hris"), ',code_class="2xx"', ">", 0.98, 3,
                        "Calls from the canary's pods to the HRIS answered 2xx > 98%"),
            app_metric("memory-utilization",
                       f"sum(container_memory_working_set_bytes{{{pods}}}) / "
                       f'sum(kube_pod_container_resource_limits{{{pods},resource="memory"}})',
                       "<", 0.85, 3,
                       "Canary pods' working set / memory limit < 85% (cAdvisor, kube-state-metrics)."),
        ]
    return error_rates(svc, 0.001)


def has_app_metrics(s):
    return any(APP_METRIC in unwrap(m)[1] for m in slo_metrics(s["name"]))


def analysistemplate_doc(s):
    svc = s["name"]
    args = [{"name": "service"}, {"name": "canary-hash"}, {"name": "stable-hash"}]
    metrics = slo_metrics(svc)
    spec = {"args": args, "metrics": metrics}
    app = [unwrap(m)[0]["name"] for m in metrics if APP_METRIC in unwrap(m)[1]]
    if app and not SERVICE_BY_NAME[svc].get("app_metrics", False):
        dry = BASELINE_METRICS + app
        why = ["Measured and shown, deciding nothing: the stable revision's inbound error rate (a",
               "baseline), and the application metrics until the service exports them (then set",
               "`app_metrics` for it in istio/generate.py)."]
    else:
        dry = BASELINE_METRICS
        why = ["Measured and shown, deciding nothing: the stable revision's inbound error rate (a baseline)."]
    spec["dryRun"] = C([{"metricName": n} for n in dry], above=why)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": meta(f"{svc}-slo", NAMESPACE, {"app": svc}),
        "spec": spec,
    }


def abort_doc():
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": meta(ABORT_TEMPLATE, NAMESPACE),
        "spec": {
            "args": [{"name": "service"}, {"name": "canary-hash"}],
            "metrics": [C({
                "name": "canary-gate-tripped",
                "interval": "15s",
                "failureLimit": 0,
                "inconclusiveLimit": 30,
                "consecutiveErrorLimit": CONSECUTIVE_ERROR_LIMIT,
                "successCondition": "len(result) > 0 && !isNaN(result[0]) && result[0] < 1",
                "failureCondition": "len(result) > 0 && !isNaN(result[0]) && result[0] >= 1",
                "provider": {"prometheus": {
                    "address": prometheus_address(),
                    "query": 'max(canary_gate_tripped{service="{{args.service}}",revision=~"{{args.canary-hash}}|"})',
                }},
            }, above=[
                "1 while canary-gate's in-proxy SLO gate has tripped (and already sends the canary's",
                "users to stable): the first such measurement aborts the rollout. Mesh-mode routers",
                "judge each canary revision apart: only this run's (canary-hash) counts, or a gate",
                "that knows no revision (no revision label); an earlier canary's trip never aborts",
                "the next one, even before every router has seen the new revision. No series (no router",
                "yet, Prometheus restarting): inconclusive, and only more than 30 of those (7.5 min)",
                "pause the rollout; errors are retried every 10 s, 30 in a row (5 min) end it.",
            ])],
        },
    }


# --------------------------------------------------------------------------------------------
# WasmPlugins

FAIL_OPEN_WHY = [
    "FAIL_OPEN: if the module cannot be fetched or loaded, traffic keeps flowing on the",
    "VirtualService's own weights and header routes; canary-gate must never take a service down.",
]


def volume_floor(s):
    return s.get("volume_floor_rps", DEFAULT_VOLUME_FLOOR_RPS)


def is_public(s):
    return bool(s.get("public_hosts"))


def caller_pods(s):
    """Pods whose sidecars route calls to `s` in the mesh: its callers' replicas."""
    return sum(SERVICE_BY_NAME[c]["replicas"] for c in s["callers"])


def gate_config(s, pods):
    # Sized for one proxy's share of the canary at the plan's volume floor, the traffic spread
    # over `pods` routing proxies: a window long enough for GATE_MIN_REQUESTS, and min_requests
    # what the window then holds. A slice too thin for that within GATE_MAX_WINDOW_S keeps the
    # longest window and GATE_MIN_REQUESTS: its thresholds judge above the floor only (the
    # comparison needs no minimum).
    window_s = min(GATE_MAX_WINDOW_S, max(10, math.ceil(GATE_MIN_REQUESTS * pods / volume_floor(s))))
    g = {"window_s": window_s, "min_requests": max(GATE_MIN_REQUESTS, volume_floor(s) * window_s // pods),
         "consecutive": 3, "max_error_ratio": 0.05}
    g.update(s["gate"])
    compare = dict(COMPARE)
    slow = []
    if "compare_slow" in s:
        compare["slow_ms"], slo = s["compare_slow"]
        slow = [f"slow_ms: {slo}. With it, a second test on slow responses; each test gets alpha/2."]
    g["compare"] = C(compare, above=[
        "The canary against stable, every eval_ms (250 ms): trips at once when the anytime-valid",
        "test rejects at alpha (a bound on false trips per canary revision, however long the",
        "rollout) and the gate window shows the canary's bad ratio over stable's by more than",
        "min_effect. A failure both versions share (a dependency down) never trips it.",
        *slow])
    g["fleet"] = C({}, above=[
        "Every router judges the whole fleet's counts, reported by the service's inbound observers",
        "on the responses it gets (any caller's requests, mirrored copies included), not its own",
        "slice: all routers trip together. Without fresh reports it judges its own slice, which",
        "window_s and min_requests are sized for."])
    if "gate_classes" in s:
        g["classes"] = C(s["gate_classes"], above=[
            "Per route class: a fault one class's share of the traffic would dilute below the",
            "service-wide ratio (failing API calls among many page loads) still trips the gate.",
            UNPLANNED_CLASSES])
    if "gate_vitals" in s:
        g["vitals"] = C(s["gate_vitals"], above=[
            "Guard rails on the canary's beacons in the gate window: Core Web Vitals' \"poor\" limits",
            "(P75 LCP 4 s, INP 500 ms, CLS 0.25) and 5% of page views with a JS error; the analysis",
            "judges the plan's SLOs (2.5 s, 200 ms, 0.1, 0.1%) over 5 minutes. Inconclusive below",
            "min_page_views canary page views in the window (one gateway replica's share)."])
    return g


def measured(s, what):
    """The `classes` and `outcomes` of a plugin config: the inbound ones or `outbound`'s."""
    source = s.get("outbound", {}) if what == "outbound" else s
    out = {}
    for key in ("classes", "outcomes"):
        if key in source:
            out[key] = C(mark_hosts(source[key]), above=[UNPLANNED_CLASSES])
    return out


def mark_hosts(v):
    """`v` with each placeholder host name marked where it stands."""
    if isinstance(v, dict):
        return {k: mark_hosts(x) for k, x in v.items()}
    if isinstance(v, list):
        return [mark_hosts(x) for x in v]
    return C(v, after=NOT_IN_PLAN_PARTNER) if isinstance(v, str) and v.endswith("example.com") else v


def override_config(where):
    """Testers' override: at the gateway, anyone outside the mesh could send the header, so an
    override counts only with a token whose SHA-256 is listed (a placeholder no token matches
    until it is set; docs/configuration.md says how to mint one)."""
    if where != "gateway":
        return {"header": "x-canary"}
    return {"header": "x-canary", "token_header": "x-canary-token", "token_sha256": C(
        [C(TOKEN_DIGEST_PLACEHOLDER, after=NOT_IN_PLAN_TOKEN)], above=[
            "Overrides from outside the mesh need a tester's token (x-canary-token); without",
            "one a request is routed as any other and counted in canary_override_refused_total."])}


def router_config(s, hosts, pods, where):
    """A mesh-mode router of `s` handling `hosts`, in one of `pods` proxies sharing its traffic
    (`where` says which, for people)."""
    svc = s["name"]
    return {
        "service": svc,
        "hosts": hosts,
        "split": {"mode": "mesh"},
        "version_header": C(version_header(svc), above=[
            "This service's own header: the VirtualService's pinned routes match it; a router of",
            "another service never sets it, so a forwarded one routes nothing else."]),
        "reason_header": C(reason_header(svc), above=[
            "This service's own too: every router removes its version and reason headers from",
            "requests for hosts it does not handle, so a client's never routes, and one shared",
            "by two routers in a proxy would be removed by the other."]),
        "revision_header": C(REVISION_HEADER, above=[
            "The observers' header: which revision served a response. Pins and the gate's latch",
            "follow revisions; a new canary revision starts with a clear gate."]),
        "override": override_config(where),
        "sticky": {"cookie": f"canary-{svc}", "max_age_s": 86400, "secure": True},
        **measured(s, "inbound"),
        **(vitals_endpoint(s) if where == "gateway" else {}),
        "gate": C(gate_config(s, pods), above=gate_why(s, pods, where)),
    }


def gate_why(s, pods, where):
    floor = "the tier-1 plan" if "volume_floor_rps" in s else "not in the tier-1 plan"
    spread = ("GATEWAY_REPLICAS in istio/generate.py, not in the tier-1 plan" if where == "gateway"
              else "the callers' replicas")
    thin = volume_floor(s) * GATE_MAX_WINDOW_S < GATE_MIN_REQUESTS * pods
    return [
        "The in-proxy gate: `compare` trips on a canary worse than stable within seconds, the fixed",
        "thresholds on gross regressions whatever stable does; the fine SLOs (0.1%, 500 ms) are",
        "judged by the Argo analysis over 5 minutes. Each proxy gates on the requests it routes,",
        f"its slice of the canary's volume floor of {volume_floor(s)} req/s ({floor}) spread over {pods} {where}",
        f"pods ({spread}): " + (f"under {GATE_MIN_REQUESTS} canary requests a minute at the floor, so the thresholds"
                                 if thin else "window_s and min_requests hold at the floor."),
        *(["judge above it (window_s at its longest); the comparison needs no minimum."] if thin else []),
    ]


def vitals_endpoint(s):
    """The `vitals` of a router config: the beacon endpoint, where the service's pages send them."""
    if "vitals" not in s:
        return {}
    return {"vitals": C(s["vitals"], above=[
        "Web-vitals beacons: a POST to `path` on these hosts is answered here (204), never",
        "forwarded, and counted for the version the request would be routed to (the pin in the",
        "cookie); at most max_per_second accepted per gateway replica, the rest answered 429.",
        "A WasmPlugin cannot set allow_on_headers_stop_iteration, so the filter never sees a",
        "request body here: pages send with startCanaryVitals({transport: 'query'})."])}


def router_spec(config, url, extra):
    spec = dict(extra)
    spec.update({
        "url": url_marked(url),
        "imagePullPolicy": "IfNotPresent",
        **({"imagePullSecret": IMAGE_PULL_SECRET} if IMAGE_PULL_SECRET else {}),
        "phase": "STATS",
        "priority": 10,
        "failStrategy": C("FAIL_OPEN", above=FAIL_OPEN_WHY),
        "pluginConfig": config,
    })
    return spec


def url_marked(url):
    return C(url, above=[
        f"Pinned by digest (istio/{IMAGE_PIN}, from `make image`): Istio fetches and",
        "checks exactly this image, and IfNotPresent never pulls it again.",
        f"The registry is {NOT_IN_PLAN_REGISTRY}."])


def gateway_router_doc(s):
    """The router at the ingress gateway: the requests from outside, to the public names."""
    config = router_config(s, C(public_hosts(s), above=[
        "The public names only: in-cluster calls never cross the gateway (callers' sidecars route them)."]),
        GATEWAY_REPLICAS, "gateway")
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": meta(f"canary-gate-router-{s['name']}", GATEWAY_NAMESPACE, {"app": "canary-gate"}),
        "spec": router_spec(config, wasm_oci(), {
            "selector": {"matchLabels": {"istio": C("ingressgateway", after=NOT_IN_PLAN_GATEWAY_PODS)}}}),
    }


def client_router_doc(s, caller):
    """The router in `caller`'s sidecars: its calls to `s`, routed there by the mesh's VirtualService."""
    svc = s["name"]
    config = router_config(s, C(svc_hosts(svc), above=[
        "The in-cluster names only: the names the caller's sidecar routes to this service."]),
        caller_pods(s), "caller")
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": meta(client_router_name(svc, caller), NAMESPACE, {"app": "canary-gate"}),
        "spec": router_spec(config, wasm_oci(), {
            "selector": {"matchLabels": {"app": C(caller, after=NOT_IN_PLAN_CALLER)}},
            "match": C([{"mode": "CLIENT"}], above=[
                f"Outbound only: {caller}'s calls to {svc}, in {caller}'s sidecars."]),
        }),
    }


def client_router_name(svc, caller):
    return f"canary-gate-router-{svc}-from-{caller}"


BODIES = "components/corp-cockpit-beacon-bodies"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def beacon_bodies_docs(s):
    """Istio 1.28+: the gateway router of `s` as an EnvoyFilter instead of a WasmPlugin, so that
    Envoy hands it request bodies (allow_on_headers_stop_iteration, which a WasmPlugin cannot
    set) and pages may send their beacons in the body. Its own ECDS resource: the Istio agent
    fetches the oci:// module of an ECDS Wasm filter as it does a WasmPlugin's."""
    name = f"canary-gate-router-{s['name']}"
    config = router_config(s, public_hosts(s), GATEWAY_REPLICAS, "gateway")
    tag, digest = read_pin()
    envoyfilter = {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": meta(name, GATEWAY_NAMESPACE, {"app": "canary-gate"}),
        "spec": {
            "workloadSelector": {"labels": {"istio": C("ingressgateway", after=NOT_IN_PLAN_GATEWAY_PODS)}},
            "configPatches": [
                C({
                    "applyTo": "EXTENSION_CONFIG",
                    "patch": {"operation": "ADD", "value": {"name": name, "typed_config": {
                        "@type": WASM_TYPE,
                        "config": {
                            "name": name,
                            "root_id": name,
                            "failure_policy": "FAIL_OPEN",
                            "allow_on_headers_stop_iteration": True,
                            "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"remote": {"http_uri": {
                                "uri": C(f"{WASM_REPO}:{tag}@{digest}", after=NOT_IN_PLAN_REGISTRY),
                                "cluster": "_", "timeout": "30s"}}}},
                            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                              "value": C(json.dumps(plain(config), separators=(",", ":")), above=[
                                                  "The WasmPlugin router's pluginConfig, as JSON (its public",
                                                  "host names are not in the tier-1 plan)."])},
                        },
                    }}},
                }, above=["The router as an ECDS resource: istiod passes it to the gateway's agent, which",
                          "fetches the pinned oci:// module as for a WasmPlugin (failure_policy FAIL_OPEN).",
                          "allow_on_headers_stop_iteration: Envoy 1.35+, set through Istio 1.28+ only",
                          "(earlier istiod drops the unknown field: no bodies, query beacons still work)."]),
                C({
                    "applyTo": "HTTP_FILTER",
                    "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": "envoy.filters.http.router"}}}}},
                    "patch": {"operation": "INSERT_BEFORE", "value": {"name": name, "config_discovery": {
                        "config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
                        "type_urls": Flow([WASM_TYPE])}}},
                }, above=["In every HTTP filter chain of the gateway, before the router: where the",
                          "WasmPlugin (phase STATS) would be."]),
            ],
        },
    }
    component = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": ["envoyfilter.yaml"],
        "patches": [C({"patch": Lit(
            "$patch: delete\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n"
            f"metadata:\n  name: {name}\n  namespace: {GATEWAY_NAMESPACE}\n")}, above=[
            "The WasmPlugin router it replaces: never both in one gateway."])],
    }
    return envoyfilter, component


def minutes(duration):
    """A duration of whole minutes ("5m") as a number of minutes."""
    assert duration.endswith("m"), duration
    return int(duration[:-1])


def mirror_dir(s):
    return f"components/{s['name']}-mirror"


def mirror_steps(s):
    """The shadow phase before the first setWeight, then the Rollout's own steps.

    Placement: Argo's SetMirrorRoute (rollout/trafficrouting/istio/istio.go,
    reconcileVirtualServiceMirrorRoutes) puts the mirror route first in the VirtualService and
    orderRoutes keeps every managedRoutes entry above the routes it does not manage, so the
    mirror route precedes canary-pinned and stable-pinned, and carries the weights of `primary`
    (stable 100). Matching GET alone, it would take pinned users' and testers' GETs to stable.
    Argo's match cannot say "without a header", so it also matches the service's reason header: MESH_REASON,
    which a router sets exactly when it sets no version header; pinned, overridden and gated
    requests say pin, override or gate and keep their routes. Without canary-gate (FAIL_OPEN)
    nothing carries the header and nothing is copied."""
    m, first_weight = s["mirror"], s["steps"][0][0]
    route = {"name": m["route"], "percentage": C(m["percentage"], after=NOT_IN_PLAN_MIRROR), "match": [
        {"method": {"exact": method}, "headers": {reason_header(s["name"]): {"exact": MESH_REASON}}} for method in m["methods"]]}
    return [
        C({"setCanaryScale": {"weight": first_weight}}, above=[
            "Canary pods to copy to: at weight 0 Argo scales the canary to none. As many as the",
            "first setWeight routes to (the step waits for them)."]),
        C({"setMirrorRoute": route}, above=[
            f"Copies of every {'/'.join(m['methods'])} a router leaves to the mesh ({reason_header(s['name'])}: {MESH_REASON}), never",
            "a pinned, overridden or gated request's: Argo puts this route above the pinned ones."]),
        {"pause": {"duration": C(m["pause"], after=NOT_IN_PLAN_MIRROR)}},
        C({"setMirrorRoute": {"name": m["route"]}}, above=["No match: Argo removes the mirror route."]),
        C(canary_steps(s)[0], above=["The plan's steps from here."]),
        C({"setCanaryScale": {"matchTrafficWeight": True}}, above=[
            "The canary's pods follow the weights again (as without the shadow phase)."]),
        *canary_steps(s)[1:],
    ]


def shadow_metric(s, name, query, op, threshold, failure_limit, what):
    """A measurement of the copies the canary revision's pods serve during the shadow phase: from
    one window of copies on, every minute, done before the mirror route is removed."""
    m = s["mirror"]
    count = minutes(m["pause"]) - minutes(m["window"])
    volume = op == "volume"
    success, failure = (f"len(result) > 0 && result[0] > {threshold}", "false") if volume else cond(op, threshold)
    return C({
        "name": name,
        "interval": "1m",
        "initialDelay": m["window"],
        "count": count,
        "failureLimit": failure_limit,
        "inconclusiveLimit": count - 1,
        "consecutiveErrorLimit": CONSECUTIVE_ERROR_LIMIT,
        "successCondition": success,
        "failureCondition": failure,
        "provider": {"prometheus": {"address": prometheus_address(), "query": query}},
    }, above=[*what[:-1], f"{what[-1]} (canary-gate observers, by revision)."])


def shadow_template_doc(s):
    """The shadow phase's judgement: the canary revision's own pods (observers, by
    rollouts-pod-template-hash), which serve nothing but the copies at weight 0. Routers see no
    canary response then (Envoy discards a copy's), so their series stay empty."""
    svc, w = s["name"], s["mirror"]["window"]
    served = observed("canary-hash")
    errors = observed("canary-hash", ',direction="inbound",code_class="5xx"')
    requests = f"sum(rate(canary_requests_total{{{served}}}[{w}]))"

    def quantile(q):
        return f"histogram_quantile({q}, sum by (le) (rate(canary_request_duration_milliseconds_bucket{{{served}}}[{w}])))"

    metrics = [
        shadow_metric(s, "shadow-request-volume", requests, "volume", volume_floor(s), 0,
                      [f"Copies > {volume_floor(s)} req/s, the plan's volume floor. Fewer are inconclusive: a phase",
                       "that copied too little pauses the rollout for a human"]),
        shadow_metric(s, "shadow-error-rate", f"sum(rate(canary_responses_total{{{errors}}}[{w}])) / {requests}",
                      "<", 0.002, 1, ["5xx ratio of the copies < 0.002, the plan's error rate"]),
        shadow_metric(s, "shadow-latency-p95", quantile(0.95), "<", 500, 1,
                      ["p95 latency of the copies < 500 ms, the plan's"]),
        shadow_metric(s, "shadow-latency-p99", quantile(0.99), "<", 1000, 2,
                      ["p99 latency of the copies < 1000 ms, the plan's (secondary)"]),
    ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": meta(f"{svc}-shadow", NAMESPACE, {"app": svc}),
        "spec": {"args": [{"name": "service"}, {"name": "canary-hash"}], "metrics": metrics},
    }


def reads_routers(metric_doc):
    """Whether a metric reads router series (canary traffic the routers route)."""
    query = plain(metric_doc)["provider"]["prometheus"]["query"]
    return ROUTER in query or "canary_web_" in query


def json_patch(ops):
    """JSON patch operations as the YAML text of a kustomize patch."""
    return Lit("\n".join(emit_seq(ops, 0)) + "\n")


def mirror_component_docs(s):
    """The shadow phase as a kustomize Component: the Rollout's steps with the mirror phase
    first, its managed route, the shadow template in its background analysis, and the router
    metrics of <service>-slo waiting for the weights."""
    svc, m = s["name"], s["mirror"]
    canary = "/spec/strategy/canary"
    rollout_ops = [
        C({"op": "test", "path": f"{canary}/steps", "value": canary_steps(s)}, above=[
            "Only the Rollout this was generated for: its steps as istio/generate.py writes them."]),
        {"op": "replace", "path": f"{canary}/steps", "value": mirror_steps(s)},
        C({"op": "add", "path": f"{canary}/trafficRouting/managedRoutes", "value": [{"name": m["route"]}]}, above=[
            "Argo requires the mirror route here; at the end of the rollout, or an abort, it removes",
            "every route listed (never list a route of the VirtualService itself)."]),
        C({"op": "add", "path": f"{canary}/analysis/templates/-", "value": {"templateName": f"{svc}-shadow"}}, above=[
            "The background analysis, from the mirror step on, judges the copies by revision."]),
        {"op": "replace", "path": f"{canary}/analysis/startingStep",
         "value": next(i for i, step in enumerate(map(plain, mirror_steps(s))) if "setMirrorRoute" in step)},
    ]
    delay = f"{minutes(m['pause']) + minutes(RATE_WINDOW_DELAY)}m"
    template_ops = []
    for i, metric_doc in enumerate(slo_metrics(svc)):
        if reads_routers(metric_doc):
            name = plain(metric_doc)["name"]
            template_ops += [{"op": "test", "path": f"/spec/metrics/{i}/name", "value": name},
                             {"op": "replace", "path": f"/spec/metrics/{i}/initialDelay", "value": delay}]
    component = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": ["analysistemplate.yaml"],
        "patches": [
            C({"target": {"group": "argoproj.io", "version": "v1alpha1", "kind": "Rollout", "name": svc},
               "patch": json_patch(rollout_ops)}, above=["The Rollout: the shadow phase before the first setWeight."]),
            C({"target": {"group": "argoproj.io", "version": "v1alpha1", "kind": "AnalysisTemplate",
                          "name": f"{svc}-slo"},
               "patch": json_patch(template_ops)}, above=[
                "The router metrics: no canary traffic reaches a router during the shadow phase, so",
                f"they wait for it and one window of weighted traffic ({m['pause']} + {RATE_WINDOW_DELAY})."]),
        ],
    }
    return shadow_template_doc(s), component


def routers(s):
    return ([gateway_router_doc(s)] if is_public(s) else []) + [client_router_doc(s, c) for c in s["callers"]]


def router_principals(s):
    """The SPIFFE identities every router of `s` probes with: the gateway's, each caller's."""
    accounts = ([(GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT)] if is_public(s) else []) + \
        [(NAMESPACE, c) for c in s["callers"]]
    return [C(f"{TRUST_DOMAIN}/ns/{ns}/sa/{sa}", after=NOT_IN_PLAN_PRINCIPAL) for ns, sa in accounts]


def authorization_policy_doc(s):
    """Lets the routers' revision probe reach the service's observers in a deny-by-default mesh."""
    svc = s["name"]
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": meta(f"{svc}-canary-gate-probe", NAMESPACE, {"app": svc}),
        "spec": {
            "selector": {"matchLabels": {"app": svc}},
            "action": "ALLOW",
            "rules": [C({
                "from": [{"source": {"principals": router_principals(s)}}],
                "to": [{"operation": {"methods": Flow(["GET"]), "paths": Flow([REVISION_PROBE_PATH])}}],
            }, above=[
                "The routers' GET of the revision probe path, answered by the observer (phase STATS,",
                "after Istio's authorization filter): a tripped gate learns the next canary revision by it.",
                "The answer carries the pod's revision and nothing else."])],
        },
    }


def egress_docs(s):
    """TLS origination for each external host the pods call: the application calls
    http://HOST, the sidecar sees HTTP (the outbound observer measures it) and connects to
    HOST:443 over TLS."""
    docs = []
    for host in s["outbound"]["external_hosts"]:
        name = host.replace(".", "-")
        docs.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": meta(name, NAMESPACE, {"app": s["name"]}),
            "spec": {
                "hosts": [C(host, after=NOT_IN_PLAN_PARTNER)],
                "location": "MESH_EXTERNAL",
                "resolution": "DNS",
                "ports": [C({"number": EGRESS_PORT, "name": "http", "protocol": "HTTP", "targetPort": EGRESS_TLS_PORT},
                            above=[f"The application calls http://{host}: plain HTTP to the sidecar, which",
                                   f"connects to port {EGRESS_TLS_PORT} (targetPort)."])],
                "exportTo": Flow(["."]),
            },
        })
        docs.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": meta(f"{name}-tls", NAMESPACE, {"app": s["name"]}),
            "spec": {
                "host": C(host, after=NOT_IN_PLAN_PARTNER),
                "exportTo": Flow(["."]),
                "trafficPolicy": {"portLevelSettings": [C({
                    "port": {"number": EGRESS_PORT},
                    "tls": {"mode": "SIMPLE", "sni": C(host, after=NOT_IN_PLAN_PARTNER)},
                }, above=["The sidecar originates TLS to the host, with the host as SNI."])]},
            },
        })
    return docs


def observer_doc(s, direction="inbound"):
    """An observer in the service's own sidecars: of the requests its pods serve (inbound), or of
    the calls they make (outbound)."""
    svc = s["name"]
    inbound = direction == "inbound"
    config = {"service": svc, "role": "observer"}
    if not inbound:
        config["direction"] = C("outbound", above=[
            "The series say direction=\"outbound\": the calling pod's version and revision,",
            "by route class (the partner called)."])
    config.update({
        "version_label": C("role", above=[
            "The `version` label: the pod's `role` (canaryMetadata/stableMetadata) as of proxy",
            "start, when Istio copies pod labels into node metadata. Argo changes `role` in place",
            "at promotion, so a promoted pod keeps reporting canary until it restarts."]) if inbound else "role",
        "revision_label": C(REVISION_LABEL, above=[
            "The `revision` label and response header: set once per ReplicaSet, never stale.",
            "The analysis selects the canary's and the stable's series by it."]) if inbound else REVISION_LABEL,
        "revision_header": REVISION_HEADER,
        **measured(s, direction),
    })
    what = "requests" if inbound else "calls"
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": meta(f"canary-gate-{'observer' if inbound else 'outbound'}-{svc}", NAMESPACE, {"app": "canary-gate"}),
        "spec": {
            "selector": {"matchLabels": {"app": svc}},
            "match": C([{"mode": "SERVER" if inbound else "CLIENT"}], above=[
                "Inbound only: the requests this service's pods serve." if inbound
                else f"Outbound only: the calls {svc}'s pods make."]),
            "url": url_marked(wasm_oci()),
            "imagePullPolicy": "IfNotPresent",
        **({"imagePullSecret": IMAGE_PULL_SECRET} if IMAGE_PULL_SECRET else {}),
            "phase": "STATS",
            "failStrategy": C("FAIL_OPEN", above=[
                f"FAIL_OPEN: if the module cannot be fetched or loaded, {what} pass unmeasured;",
                "canary-gate must never take a service down."]),
            "pluginConfig": config,
        },
    }


def attempt_count_doc(s):
    """Envoy names how many attempts a call took in the response only when asked: the outbound
    observer's `retried` outcome reads it."""
    svc = s["name"]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": meta(f"{svc}-attempt-count", NAMESPACE, {"app": "canary-gate"}),
        "spec": {
            "workloadSelector": {"labels": {"app": svc}},
            "configPatches": [C({
                "applyTo": "VIRTUAL_HOST",
                "match": {"context": "SIDECAR_OUTBOUND"},
                "patch": {"operation": "MERGE", "value": {"include_attempt_count_in_response": True}},
            }, above=[
                f"Every outbound virtual host of {svc}'s sidecars: responses carry x-envoy-attempt-count,",
                "the attempts Envoy made (Istio retries per its default retry policy)."])],
        },
    }


def reads_attempt_count(s):
    return any(o["response_header"] == "x-envoy-attempt-count" for o in s.get("outbound", {}).get("outcomes", []))


# --------------------------------------------------------------------------------------------
# Stats settings

def custom_bootstrap_json():
    tags = [{"tag_name": name, "regex": regex} for name, regex in STATS_TAGS]
    return json.dumps({"stats_config": {"stats_tags": tags}}, indent=2) + "\n"


def stats_configmap_doc(namespace, who):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(STATS_CONFIGMAP, namespace, {"app": "canary-gate"}),
        "data": {"custom_bootstrap.json": C(Lit(custom_bootstrap_json()), above=[who])},
    }


def gateway_patch(mount_by_hand):
    """Strategic-merge patch of the ingress gateway Deployment: the stats settings the Rollouts'
    pods have. From Istio 1.27 the gateway injection template mounts the ConfigMap that
    sidecar.istio.io/bootstrapOverride names (volume custom-bootstrap-volume), as the sidecar
    template does; before, the patch mounts it by hand. Never both."""
    annotations = {
        "proxy.istio.io/config": C(Lit(proxy_config_annotation()), above=[
            "Istio exports only selected Envoy stats: include canary-gate's (wasmcustom.canary_*)."]),
        "sidecar.istio.io/statsHistogramBuckets": C(buckets_annotation(), above=[
            "Histogram buckets (latency and web vitals in ms, CLS x 1000), as in envoy/*.yaml."]),
    }
    if not mount_by_hand:
        annotations["sidecar.istio.io/bootstrapOverride"] = C(STATS_CONFIGMAP, above=[
            "stats_tags turning the stat-name pairs into Prometheus labels: the gateway injection",
            "template (Istio 1.27 and later) mounts this ConfigMap and points Envoy at it."])
        return {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    return {
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containers": [C({
                        "name": "istio-proxy",
                        "env": [{
                            "name": "ISTIO_BOOTSTRAP_OVERRIDE",
                            "value": "/etc/istio/custom-bootstrap/custom_bootstrap.json",
                        }],
                        "volumeMounts": [{
                            "name": "canary-gate-stats",
                            "mountPath": "/etc/istio/custom-bootstrap",
                            "readOnly": True,
                        }],
                    }, above=[
                        "What sidecar.istio.io/bootstrapOverride does, by hand: the gateway injection",
                        "template of Istio 1.26 and earlier ignores that annotation.",
                    ])],
                    "volumes": [{
                        "name": "canary-gate-stats",
                        "configMap": {"name": STATS_CONFIGMAP},
                    }],
                },
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Files

def files():
    out = {}
    by_name = {s["name"]: s for s in SERVICES}
    for s in SERVICES:
        svc, d = s["name"], f"services/{s['name']}"
        out[f"{d}/service.yaml"] = ([f"Service {svc}: port {s['port']} to the pods' `http` port; the pods' ServiceAccount."],
                                    [service_doc(s), service_account_doc(s)])
        out[f"{d}/destinationrule.yaml"] = (
            [f"DestinationRule {svc}-destrule: the stable and canary subsets Argo Rollouts manages."],
            [destinationrule_doc(s)])
        out[f"{d}/virtualservice.yaml"] = (
            [f"VirtualService {svc}-vsvc: header routes for canary-gate's pinned users, then `primary`",
             "whose two weights Argo Rollouts sets (at the ingress gateway and in the mesh)."],
            [virtualservice_doc(s)])
        steps = ", ".join(f"{w}%" + (f" pause {p}" if p else "") for w, p in s["steps"])
        out[f"{d}/rollout.yaml"] = (
            [f"Rollout {svc}: {s['replicas']} replicas, port {s['port']}, canary steps {steps} (the end of the steps promotes).",
             ],
            [rollout_doc(s)])
        out[f"{d}/analysistemplate.yaml"] = (
            [f"AnalysisTemplate {svc}-slo: the canary's SLOs, measured every minute over 5 minutes, from",
             "5 minutes into the rollout (initialDelay: one window of canary traffic first).",
             "Conditions are NaN-safe: an empty result or NaN (no traffic) is inconclusive, never a pass",
             f"or a failure; more than {SLO_INCONCLUSIVE_LIMIT} inconclusive measurements of a metric pause the rollout for a human.",
             "failureLimit N: the metric fails at its (N+1)th failed measurement in total, not in a row.",
             "canary-gate's series carry service, version and reporter labels, the observers' also",
             f"revision (the pods' {REVISION_LABEL}: the Rollout passes the canary's and the stable's",
             "as canary-hash and stable-hash)" + (
                 "; the web-vitals series (canary_web_*) carry service and version only." if "vitals" in s else "."),
             *(["Application metrics are expected with the labels service and version (canary|stable)",
                "and run as dryRun until the service exports them."] if has_app_metrics(s) else []),
             *([] if s["planned"] else [f"The tier-1 plan gives no SLOs for {svc}: the error rates below stand in."])],
            [analysistemplate_doc(s)])
        out[f"{d}/routers.yaml"] = (
            [f"canary-gate routers of {svc}, mesh mode, in every proxy that routes requests to it:",
             *(["- at the ingress gateway for its public names (requests from outside);"] if is_public(s) else []),
             *(["- in each calling workload's sidecars for its in-cluster names (a VirtualService bound",
                "  to `mesh` routes a pod's calls in the pod's own sidecar; the gateway never sees them)."]
               if s["callers"] else []),
             "The VirtualService's weights (set by Argo Rollouts) choose; each router pins a user to the",
             "revision that first served them (learnt from the observers' x-canary-revision header),",
             "and sends a failing canary's users back to stable when its gate trips."],
            routers(s))
        out[f"{d}/observers.yaml"] = (
            [f"canary-gate observers in {svc}'s own sidecars: per-version and per-revision series with",
             "reporter=\"observer\" of every request the pods serve, whoever calls them, each response",
             "stamped with x-canary-revision" + (";" if "outbound" in s else "."),
             *(["and of the calls the pods make (direction=\"outbound\"), by route class (which external",
                "host), for the SLOs on those calls."] if "outbound" in s else []),
             "They never touch routing."],
            [observer_doc(s)] + ([observer_doc(s, "outbound")] if "outbound" in s else []))
        if "outbound" in s:
            out[f"{d}/egress.yaml"] = (
                [f"The external hosts {svc}'s pods call, as http://HOST: the sidecar sees plain HTTP (the",
                 "outbound observer measures each call) and originates TLS to HOST:443. An application",
                 "calling https:// itself would leave the sidecar as opaque TCP, seen by no HTTP filter.",
                 *(["The EnvoyFilter names each response's attempts (x-envoy-attempt-count), for the",
                    "outbound observer's `retried` outcome: Istio does not set include_attempt_count_in_response."]
                   if reads_attempt_count(s) else [])],
                egress_docs(s) + ([attempt_count_doc(s)] if reads_attempt_count(s) else []))
        if MESH_DENIES_BY_DEFAULT:
            out[f"{d}/authorizationpolicy.yaml"] = (
                [f"Lets {svc}'s routers probe its pods for their revision in a mesh that denies by default",
                 "(an ALLOW policy covers the service). Where no ALLOW policy covers it, leave this out",
                 "(MESH_DENIES_BY_DEFAULT in istio/generate.py): an ALLOW policy makes Istio deny every",
                 "request to these pods that it does not match."],
                [authorization_policy_doc(s)])
    out["shared/canary-gate-abort.yaml"] = (
        ["AnalysisTemplate canary-gate-abort, shared by every tier-1 Rollout: aborts the rollout as soon",
         "as canary-gate's in-proxy SLO gate has tripped for the service's canary revision."],
        [abort_doc()])
    out["stats/canary-gate-stats-configmap.yaml"] = (
        ["Custom Envoy bootstrap with the stats_tags that turn canary-gate's `.label.value` stat-name",
         "pairs into the Prometheus labels service, version, reporter, revision, direction, class,",
         "code_class, reason, outcome and test (the same tags as envoy/*.yaml). Envoy merges it into",
         "Istio's bootstrap (repeated fields appended)."],
        [stats_configmap_doc(NAMESPACE, "Sidecars: pods annotated sidecar.istio.io/bootstrapOverride: canary-gate-stats."),
         stats_configmap_doc(GATEWAY_NAMESPACE, "Ingress gateway: mounted as istio/stats/gateway-proxy-config*.yaml set up.")])
    patch = ["  kubectl -n istio-system patch deployment istio-ingressgateway \\",
             "    --patch-file istio/stats/{}"]
    out["stats/gateway-proxy-config.yaml"] = (
        ["Strategic-merge patch for the ingress gateway Deployment, Istio 1.27 and later: the same stats",
         "settings as the Rollouts' pod annotations. From 1.27 the gateway injection template, like the",
         "sidecar one, mounts the ConfigMap sidecar.istio.io/bootstrapOverride names and sets",
         "ISTIO_BOOTSTRAP_OVERRIDE. Istio 1.26 and earlier: gateway-proxy-config-istio-1.26.yaml instead,",
         "never both (the template's mount and a second one by hand at the same path).",
         "", patch[0], patch[1].format("gateway-proxy-config.yaml"), "",
         "With the Helm `gateway` chart: the three annotations go in the values' podAnnotations."],
        [gateway_patch(mount_by_hand=False)])
    out["stats/gateway-proxy-config-istio-1.26.yaml"] = (
        ["Strategic-merge patch for the ingress gateway Deployment, Istio 1.26 and earlier, whose gateway",
         "injection template ignores sidecar.istio.io/bootstrapOverride: the patch mounts the istio-system",
         "canary-gate-stats ConfigMap and points ISTIO_BOOTSTRAP_OVERRIDE at it by hand. From Istio 1.27",
         "use gateway-proxy-config.yaml: the template then mounts the annotation's ConfigMap itself.",
         "", patch[0], patch[1].format("gateway-proxy-config-istio-1.26.yaml"), "",
         "With the Helm `gateway` chart: the two annotations go in the values' podAnnotations and",
         "ISTIO_BOOTSTRAP_OVERRIDE in env; the ConfigMap volume and its mount need this patch, or the",
         "chart's volumes/volumeMounts values in chart versions that have them."],
        [gateway_patch(mount_by_hand=True)])
    envoyfilter, component = beacon_bodies_docs(SERVICE_BY_NAME["corp-cockpit"])
    bodies = ["Istio 1.28 and later, an option: corp-cockpit's gateway router as an EnvoyFilter that",
              "receives request bodies, so its pages may send web-vitals beacons in the body",
              "(transport 'body'); the WasmPlugin router keeps the query transport. A kustomize",
              "Component: add `components: [../../" + BODIES + "]` to",
              "istio/services/corp-cockpit/kustomization.yaml, or `components: [" + BODIES + "]`",
              "to istio/kustomization.yaml. It replaces the WasmPlugin router."]
    out[f"{BODIES}/envoyfilter.yaml"] = (bodies, [envoyfilter])
    out[f"{BODIES}/kustomization.yaml"] = (bodies, [component])
    for s in SERVICES:
        if "mirror" not in s:
            continue
        template, component = mirror_component_docs(s)
        d, svc, m = mirror_dir(s), s["name"], s["mirror"]
        mirror = [f"An option: {svc}'s shadow phase. Before the first setWeight, Argo Rollouts mirrors",
                  f"every {'/'.join(m['methods'])} the routers leave to the mesh to the canary (weight 0) for {m['pause']},",
                  "then removes the mirror route; the background analysis judges the copies by the",
                  "canary's revision. A kustomize Component: on, add `components: [../../" + d + "]`",
                  f"to a kustomization of istio/services/{svc} (or `components: [{d}]` to one of istio/);",
                  "off, leave it out (the shipped kustomizations do). Switch between rollouts only.",
                  "docs/istio-argo.md#mirroring-shadow-testing."]
        out[f"{d}/analysistemplate.yaml"] = (
            [f"AnalysisTemplate {svc}-shadow: the copies the canary revision's pods serve during the",
             f"shadow phase ({d}), from the observers' series by revision."], [template])
        out[f"{d}/kustomization.yaml"] = (mirror, [component])
    out.update(kustomizations(out))
    return {path: (header, docs) for path, (header, docs) in sorted(out.items())}


def kustomization(resources):
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}


# Generated files that are no Kubernetes object of their own: applied another way.
NOT_APPLIED = {"stats/gateway-proxy-config.yaml": "a patch of the gateway Deployment (Istio 1.27+): kubectl patch",
               "stats/gateway-proxy-config-istio-1.26.yaml": "the same for Istio 1.26 and earlier"}
INSTALL_ORDER = ["Istio (its CRDs and istiod) and Argo Rollouts (its CRDs and controller) are installed first:",
                 "kubectl cannot map a WasmPlugin, VirtualService or Rollout before its CRD exists."]


def kustomizations(out):
    """One kustomization per service (the service's objects and the shared ones), one for the
    shared objects, and istio/kustomization.yaml with every object once."""
    k = {}
    k["stats/kustomization.yaml"] = (
        ["The stats_tags ConfigMaps (sidecars in teei-platform, the ingress gateway in istio-system)."],
        [kustomization(["canary-gate-stats-configmap.yaml"])])
    k["shared/kustomization.yaml"] = (
        ["What every tier-1 service needs: the abort AnalysisTemplate and the stats ConfigMaps."],
        [kustomization(["canary-gate-abort.yaml", "../stats"])])
    every = ["shared"]
    for s in SERVICES:
        d = f"services/{s['name']}"
        own = sorted(p.removeprefix(d + "/") for p in out if p.startswith(d + "/"))
        k[f"{d}/kustomization.yaml"] = (
            [f"Everything {s['name']} needs: `kubectl apply -k istio/{d}`.", *INSTALL_ORDER],
            [kustomization(["../../shared", *own])])
        every += [f"{d}/{f}" for f in own]
    k["kustomization.yaml"] = (
        ["Every tier-1 service and what they share, each object once: `kubectl apply -k istio/`.",
         *INSTALL_ORDER,
         f"{PROMETHEUS_RULE} needs prometheus-operator's CRDs too (without the operator, give",
         "your Prometheus prometheus/canary-gate-rules.yaml and take it out of this list).",
         *[f"Not here: istio/{p}, {why}." for p, why in NOT_APPLIED.items()]],
        [kustomization([*every, PROMETHEUS_RULE])])
    return k


RULES = "prometheus/canary-gate-rules.yaml"
PROMETHEUS_RULE = "prometheus/canary-gate-prometheusrule.yaml"


def prometheus_rule_text():
    """The rule file as a prometheus-operator PrometheusRule: its `groups:` block, comments
    included, indented under `spec:`, so the two can never say different things."""
    with open(os.path.join(ROOT, RULES), encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = lines.index("groups:")
    body = "\n".join(("  " + line) if line else "" for line in lines[start:])
    return "\n".join([
        f"# {GENERATED}",
        "#",
        f"# The rules of istio/{RULES} as a prometheus-operator PrometheusRule (kube-prometheus",
        "# selects it by its labels; adjust them to your Prometheus's ruleSelector):",
        "#   kubectl apply -f istio/prometheus/canary-gate-prometheusrule.yaml",
        "apiVersion: monitoring.coreos.com/v1",
        "kind: PrometheusRule",
        "metadata:",
        "  name: canary-gate",
        "  namespace: monitoring",
        "  labels:",
        "    release: kube-prometheus-stack",
        "spec:",
        body,
        "",
    ])


GUIDE = "../docs/istio-argo.md"
TABLE_BEGIN = "<!-- install table: generated by istio/generate.py from its kustomizations -->"
TABLE_END = "<!-- end of the install table -->"


def install_table(all_files):
    """The objects each kustomization applies, as a Markdown table: a row a file."""
    rows = ["| `kubectl apply -k` | file | objects |", "|---|---|---|"]
    for path, (_, docs) in all_files.items():
        if not path.endswith("kustomization.yaml"):
            continue
        target = "istio/" + os.path.dirname(path) if os.path.dirname(path) else "istio/"
        for resource in plain(docs[0])["resources"]:
            if resource.startswith("services/"):
                continue  # istio/ lists the services' files: their own rows say what they hold
            key = os.path.normpath(os.path.join(os.path.dirname(path), resource))
            if key in all_files:
                objects = "; ".join(f"{d['kind']} {d['metadata']['name']}" for d in map(plain, all_files[key][1]))
            elif key in texts():
                objects = "PrometheusRule canary-gate (monitoring; prometheus-operator's CRDs)"
            else:
                objects = f"everything `kubectl apply -k istio/{key}` applies"
            rows.append(f"| `{target}` | `{resource}` | {objects} |")
    return "\n".join(rows) + "\n"


def guide_text(all_files):
    """docs/istio-argo.md with its install table made anew."""
    with open(os.path.join(ROOT, GUIDE), encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(TABLE_BEGIN + "\n", 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + TABLE_BEGIN + "\n" + install_table(all_files) + TABLE_END + tail


def texts():
    """Generated files that are text around another file rather than documents."""
    return {PROMETHEUS_RULE: prometheus_rule_text()}


def shown(path):
    return os.path.normpath(os.path.join("istio", path))


def leftovers(rendered):
    """Files under istio/ that an earlier generator wrote and this one no longer does."""
    out = []
    for top, _, names in os.walk(ROOT):
        for name in names:
            path = os.path.relpath(os.path.join(top, name), ROOT)
            if path in rendered or not name.endswith(".yaml"):
                continue
            with open(os.path.join(top, name), encoding="utf-8") as f:
                if GENERATED in f.readline():
                    out.append(path)
    return sorted(out)


def main(argv):
    mode = argv[1] if len(argv) > 1 else "--write"
    if mode not in ("--write", "--check", "--json", "--pin-image") or len(argv) > (3 if mode == "--pin-image" else 2):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if mode == "--pin-image":
        tag, digest = layout_pin(argv[2] if len(argv) > 2 else IMAGE_LAYOUT)
        write_pin(tag, digest)
        print(f"istio/{IMAGE_PIN}: {tag}@{digest}")
        mode = "--write"
    all_files = files()
    if mode == "--json":
        print(json.dumps({f"istio/{p}": [plain(d) for d in docs] for p, (_, docs) in all_files.items()},
                         indent=1, sort_keys=True))
        return 0
    stale = []
    rendered = {}
    for path, (header, docs) in all_files.items():
        separators = path not in NOT_APPLIED
        if NOT_IN_PLAN_PREFIX in render([], docs, separators):
            header = [*header, PLACEHOLDERS]
        rendered[path] = render([GENERATED, "", *header], docs, separators)
    rendered.update(texts())
    rendered[GUIDE] = guide_text(all_files)
    for path, text in rendered.items():
        full = os.path.join(ROOT, path)
        current = None
        if os.path.exists(full):
            with open(full, encoding="utf-8") as f:
                current = f.read()
        if current == text:
            continue
        if mode == "--check":
            stale.append(path)
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {shown(path)}")
    for path in leftovers(rendered):
        if mode == "--check":
            stale.append(path)
            continue
        os.remove(os.path.join(ROOT, path))
        print(f"removed istio/{path}")
    if stale:
        for path in stale:
            print(f"{shown(path)}: differs from istio/generate.py's output (run python3 istio/generate.py)",
                  file=sys.stderr)
        return 1
    if mode == "--check":
        print(f"{len(rendered)} generated files up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
