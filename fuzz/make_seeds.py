#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/: real configurations for `config`, typical requests for
`headers`, per-second messages and time steps for `window` (layouts in fuzz_targets/*.rs).
Run it again after changing an input layout or the wire format."""
import json
import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# --- config: the configurations the project ships, and one with every field --------------------
CONFIGS = {
    "envoy-filter": {"service": "checkout",
                     "split": {"mode": "filter", "canary_percent": 10,
                               "hash_key": [{"header": "x-user-id"}, {"cookie": "session"}]},
                     "override": {"header": "x-canary"},
                     "sticky": {"cookie": "canary_bucket", "max_age_s": 86400}, "vitals": {}},
    "envoy-mesh": {"service": "checkout", "split": {"mode": "mesh"}, "override": {"header": "x-canary"},
                   "sticky": {"cookie": "canary_bucket", "max_age_s": 86400}, "vitals": {}},
    "istio-router": {"service": "corp-cockpit",
                     "hosts": ["corp-cockpit", "corp-cockpit.teei-platform", "corp-cockpit.teei-platform.svc",
                               "corp-cockpit.teei-platform.svc.cluster.local"],
                     "split": {"mode": "mesh"}, "version_header": "x-canary-version",
                     "override": {"header": "x-canary"},
                     "sticky": {"cookie": "canary-corp-cockpit", "max_age_s": 86400, "secure": True},
                     "gate": {"window_s": 10, "min_requests": 50, "consecutive": 3, "max_error_ratio": 0.05,
                              "max_p95_ms": 2000}},
    "istio-observer": {"service": "impact-in", "role": "observer", "version_label": "role"},
    "bench": {"service": "checkout", "split": {"canary_percent": 10},
              "gate": {"max_error_ratio": 0.05, "max_p95_ms": 200}},
    "minimal": {"service": "checkout"},
    "grpc": {"service": "checkout", "grpc": {"error_codes": ["UNAVAILABLE", 13, "not_found", "Canceled"]}},
}
for name, config in CONFIGS.items():
    write("config", f"{name}.json", json.dumps(config, indent=2) + "\n")
# Every field, with numbers written exactly as the parser must keep them.
write("config", "every-field.json", """{
  "service": "corp-cockpit", "role": "router",
  "version_header": "x-v", "reason_header": "x-why", "stable": "v1", "canary": "v2_rc-1",
  "split": {"mode": "filter", "canary_percent": 12.34,
            "hash_key": [{"header": "x-user-id"}, {"cookie": "sid"}, {"header": "x-tenant"}]},
  "override": {"header": "x-force"},
  "sticky": {"cookie": "pin", "max_age_s": 34560000, "secure": true},
  "metrics": {"window_s": 600},
  "version_label": "app.kubernetes.io/version",
  "revision_label": "rollouts-pod-template-hash", "revision_header": "x-rev", "revision_probe_path": "/__rev",
  "gate": {"window_s": 10, "min_requests": 50, "max_error_ratio": 0.001, "max_p95_ms": 500,
           "max_p99_ms": 1000.5, "max_error_ratio_over_stable": 0.0025, "consecutive": 3,
           "dry_run": true, "rearm": 7, "min_outcome_ratio": {"cache_hit": 0.5}, "eval_ms": 1000,
           "compare": {"alpha": 0.1, "min_effect": 0, "slow_ms": 600000, "min_users": 1},
           "vitals": {"max_lcp_p75_ms": 2500.5, "max_inp_p75_ms": 200, "max_cls_p75": 0.000001,
                      "max_js_error_ratio": 1, "min_page_views": 1000000000},
           "classes": {"api": {"max_error_ratio": 0.01, "max_p95_ms": 300, "min_requests": 10,
                               "max_outcome_ratio": {"degraded": 0.000001}},
                       "page": {"max_p99_ms": 2000.125, "min_outcome_ratio": {"cache_hit": 0.8},
                                "max_outcome_ratio": {"cache_hit": 0.99}},
                       "other": {"max_error_ratio_over_stable": 1}}},
  "hosts": ["shop.example.com", "*.svc.cluster.local"],
  "filter_state": true,
  "vitals": {"path": "/__rum/v1", "max_body_bytes": 65536, "max_per_second": 100000},
  "classes": [
    {"name": "api", "path_prefix": ["/api/", "/v2/"], "method": ["GET", "POST"]},
    {"name": "asset", "path_suffix": [".js", ".css"], "method": ["GET", "HEAD"]},
    {"name": "page", "header": {"name": "accept", "contains": "text/html"}},
    {"name": "partner", "authority_suffix": ["partner.example.com"], "header": {"name": "x-retry", "present": true}},
    {"name": "static_v2", "path_prefix": ["/static/"], "path_suffix": [".woff2"],
     "authority_suffix": ["cdn.example.com", "example.net"]}
  ],
  "outcomes": [
    {"name": "cache_hit", "response_header": "x-cache", "equals": ["HIT", "hit"]},
    {"name": "degraded", "response_header": "x-degraded", "equals": ["1", "true", "partial answer"]}
  ]
}
""")
# The sequential comparison with every field of `gate.compare`, numbers written exactly as kept
# (the lowest alpha and eval_ms, the highest min_users).
write("config", "compare.json", """{
  "service": "checkout", "split": {"canary_percent": 5},
  "gate": {"window_s": 30, "eval_ms": 100, "dry_run": true,
           "compare": {"alpha": 0.000001, "min_effect": 0.025, "slow_ms": 250.125, "min_users": 32}}
}
""")
# An outbound observer measuring its calls per partner.
write("config", "observer-outbound.json", json.dumps({
    "service": "impact-in", "role": "observer", "direction": "outbound",
    "classes": [{"name": "payments", "authority_suffix": ["payments.svc.cluster.local"]},
                {"name": "search", "authority_suffix": ["search.example.com"], "method": ["GET"]}],
    "outcomes": [{"name": "retried", "response_header": "x-envoy-attempt-count", "equals": ["2", "3"]}],
    "gate": {"classes": {"payments": {"min_requests": 5}}},
}, indent=2) + "\n")


# --- beacon: what web/canary-vitals.js sends, and a beacon in the query ------------------------
write("beacon", "page", '[{"name":"page_view"},{"name":"LCP","value":1834.2999999523163,"rating":"good",'
      '"delta":1834.2999999523163,"id":"v5-1","navigationType":"navigate"},{"name":"CLS","value":0.10423},'
      '{"name":"INP","value":312},{"name":"FCP","value":850.5},{"name":"TTFB","value":12.2},'
      '{"name":"js_error"},{"name":"resource_error"}]')
write("beacon", "cls-exponent", '{"name":"CLS","value":1.5e-2}')
write("beacon", "negative", '{"name":"LCP","value":-1}')
write("beacon", "zero-far-exponent", '[{"name":"CLS","value":0e22},{"name":"LCP","value":1e-99999999999}]')
write("beacon", "query", "beacon=%5B%7B%22name%22%3A%22page_view%22%7D%5D")


# --- headers ------------------------------------------------------------------------------------
def field(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<H", len(b)) + b


def request(gate=False, override=None, user=None, cookie=None, cluster="", authority="", value="",
            seed=1, bucket=42, max_age_s=86400):
    flags = int(gate) | (override is not None) << 1 | (user is not None) << 2 | (cookie is not None) << 3
    out = bytes([flags]) + struct.pack("<QHI", seed, bucket, max_age_s)
    for f in (override or "", user or "", cookie or "", cluster, authority, value):
        out += field(f)
    return out


write("headers", "user-id", request(user="alice", authority="shop.example.com",
                                    cluster="outbound|8080|canary|checkout.shop.svc.cluster.local"))
write("headers", "bucket-cookie", request(cookie="a=1; canary_bucket=42; session=abc",
                                          authority="Shop.Example.COM:8443", value="1249"))
write("headers", "override-gate", request(gate=True, override="canary", cookie="canary_bucket=v2",
                                          cluster="v1", authority="a.teei.svc.cluster.local:80"))
write("headers", "quoted-cookie", request(cookie='q="x"; canary_bucket="9999"', authority="[::1]:80",
                                          cluster="inbound|80|v2|h", value='"quoted"'))
write("headers", "nothing", request(seed=7, bucket=10000, authority="svc.cluster.local", value="0"))
write("headers", "grpc-content-type", request(authority="svc.cluster.local", value="application/grpc+proto"))
write("headers", "grpc-status", request(authority="svc.cluster.local", value=" +14 "))
write("headers", "fleet-report", request(authority="svc.cluster.local", value=(
    "TEXT named_metrics.cg.pod=17, named_metrics.cg.vm=4, named_metrics.cg.rq=120, named_metrics.cg.er=3, "
    "named_metrics.cg.c0=120, named_metrics.cg.c1=120, named_metrics.cg.c2=0, named_metrics.cg.o0=7, "
    "named_metrics.cg.o1=2, named_metrics.cg.o2=0, named_metrics.cg.eu=5, named_metrics.cg.eu.hi=0, "
    "named_metrics.cg.su=1, named_metrics.cg.su.hi=0, named_metrics.cg.rev.6c4b8d7f9=1")))
write("headers", "fleet-tag", request(authority="svc.cluster.local", value="l=250000,0,800000;u=17"))
write("headers", "junk", request(override=b"\xff\x00", user=b"", cookie=b";;=; x; \xff\xfe=\x00; canary_bucket=v1",
                                 cluster="outbound|80||a.b", authority=b"\xc3\xa9x:1", value=b" 042 "))


# --- window -------------------------------------------------------------------------------------
def varint(v):
    out = b""
    while True:
        byte = v & 0x7F
        v >>= 7
        if v == 0:
            return out + bytes([byte])
        out += bytes([byte | 0x80])


def bucket_of(micros):
    v = min(micros, (1 << 37) - 1)
    if v < 64:
        return v
    octave = v.bit_length() - 1
    shift = octave - 5
    return (octave - 5 + 1) * 32 + ((v >> shift) - 32)


def user_bit(user):
    """The users sketch bit of user `user` (measure::window::user_bit)."""
    return 1 << ((((user + 1) * 0x9E3779B97F4A7C15) % (1 << 64)) >> 58)


def users(ids):
    sketch = 0
    for user in ids:
        sketch |= user_bit(user)
    return sketch


def tally(latencies_us, errors=0, outcomes=(), slow=0, error_users=(), slow_users=(), unweighed=(0, 0, 0, ())):
    """A lane's tally after its lane number: `outcomes` holds the count of each outcome, the users
    the ids whose bits make the sketches (at most one per error, or slow request); `unweighed`
    the requests, errors, slow requests and outcome counts beyond their users' weight."""
    counts = {}
    for us in latencies_us:
        counts[bucket_of(us)] = counts.get(bucket_of(us), 0) + 1
    return buckets_tally(counts, errors, outcomes, slow, error_users, slow_users, unweighed)


def buckets_tally(counts, errors=0, outcomes=(), slow=0, error_users=(), slow_users=(), unweighed=(0, 0, 0, ())):
    requests = sum(counts.values())
    assert errors <= requests and slow <= requests and len(error_users) <= errors and len(slow_users) <= slow
    out = varint(requests) + varint(errors) + varint(slow) + varint(users(error_users)) + varint(users(slow_users))
    out += varint(len(outcomes))
    out += b"".join(varint(c) for c in outcomes)
    u_requests, u_errors, u_slow, u_outcomes = unweighed
    assert u_requests <= requests and u_errors <= min(errors, u_requests) and u_slow <= min(slow, u_requests)
    out += varint(u_requests) + varint(u_errors) + varint(u_slow) + varint(len(u_outcomes))
    out += b"".join(varint(c) for c in u_outcomes) + varint(len(counts))
    previous = 0
    for i in sorted(counts):
        out += varint(i - previous) + varint(counts[i])
        previous = i
    return out


def message(lanes, classes=1, identity=0x0123456789ABCDEF):
    """FORMAT 5: identity, class count, then the lanes (lane = class * 2 + version) in order."""
    out = b"\x05" + struct.pack("<Q", identity) + varint(classes) + varint(len(lanes))
    return out + b"".join(varint(lane) + lanes[lane] for lane in sorted(lanes))


def add(msg, strict=False):
    return bytes([1 | strict << 2]) + struct.pack("<H", len(msg)) + msg


def record(lane, requests):
    """Requests as (micros, is_error, outcome bits[, is_slow, user id or None[, unweighed]]),
    recorded into one lane and shipped."""
    out = bytes([9, lane, len(requests)])
    for micros, is_error, outcome_bits, *rest in requests:
        is_slow, user, unweighed = rest + [False, None, False][len(rest):]
        scaled = micros >= 1 << 32
        value = micros >> 10 if scaled else micros
        bits = int(is_error) | scaled << 1 | int(is_slow) << 2 | (user is not None) << 3 | int(unweighed) << 4
        out += bytes([bits, outcome_bits, user or 0]) + struct.pack("<I", value)
    return out


def advance(step):
    return bytes([0, step]) if step < 256 else bytes([4]) + struct.pack("<I", step)


def recent(version, seconds):
    return bytes([2 | version << 2, seconds])


def class_recent(version, cls, seconds):
    return bytes([2 | version << 2 | 8, seconds, cls])


def back(step):
    return bytes([3, step])


def clear(version):
    return bytes([3 | version << 2 | 8])


def header(window_s, flags, start, classes=1):
    return struct.pack("<HBBI", window_s - 1, flags, classes - 1, start)


fast = tally([10_000 + 37 * i for i in range(100)], errors=2, outcomes=[30, 0, 100], slow=1, error_users=[7],
             unweighed=(60, 1, 0, [10, 0, 60]))
# As many error users as errors (the most a sketch may hold), slow requests from three users.
slow = tally([400_000 + 911 * i for i in range(40)], errors=9, outcomes=[0, 40], slow=40,
             error_users=range(9), slow_users=[1, 2, 3])
plain = tally([2_000 + i for i in range(10)])
# Three classes: class 0 both versions, class 1 canary, class 2 (`other`) both.
three = message({0: fast, 1: slow, 3: fast, 4: plain, 5: slow}, classes=3)
write("window", "message", three)
write("window", "ramp", header(60, 1, 1_000, classes=3)
      + b"".join(add(three) + add(message({1: fast, 3: slow}, classes=3), strict=True) + advance(1) for _ in range(5))
      + recent(1, 3) + class_recent(1, 1, 3) + class_recent(0, 2, 60) + advance(30) + recent(0, 60) + back(5)
      + advance(100) + add(message({5: fast}, classes=3)))
write("window", "before-first-advance", header(3, 0, 7, classes=2) + add(message({1: slow}, classes=2))
      + add(message({0: fast, 2: plain}, classes=2)) + recent(1, 1) + class_recent(0, 1, 1) + advance(1)
      + add(message({3: fast}, classes=2)) + advance(2) + advance(1))
# Every lane of the most classes a message may carry, near the end of time.
every_lane = message({lane: fast if lane % 2 else slow for lane in range(34)}, classes=17)
write("window", "end-of-time", header(600, 3, 5, classes=17) + add(every_lane) + advance(4) + advance(70_000)
      + add(every_lane, strict=True) + recent(1, 255) + class_recent(1, 16, 255) + back(1))
write("window", "one-second", header(1, 1, 0)
      + add(message({1: tally([1_000_003 * i % 3_000_000 for i in range(2_000)], 7, outcomes=[0, 0, 0, 0, 0, 0, 0, 5])}))
      + add(message({1: fast})) + recent(1, 1) + advance(1) + recent(1, 0))
write("window", "wide-buckets", header(10, 1, 42) + add(message({0: tally([i * i for i in range(1, 1500)])}))
      + advance(9) + add(message({0: tally([0, 63, 64, (1 << 37) - 1, 1 << 40])})) + advance(1) + recent(0, 9))
# Messages of another class count: the window keeps the lanes of its classes, the coordinator
# (strict) drops them all.
write("window", "other-classes", header(5, 1, 100, classes=2)
      + add(message({0: fast, 3: slow, 5: fast, 9: plain}, classes=5)) + add(message({1: fast}, classes=5), strict=True)
      + class_recent(1, 1, 5) + class_recent(0, 2, 5) + advance(1) + add(message({1: slow}, classes=1)))
write("window", "record", header(30, 1, 500, classes=4)
      + record(3, [(1_500, False, 0b1), (250_000, True, 0b101, True, 4), (0, False, 0, False, 0),
                   (1 << 36, True, 0xFF, True, None), (900_000, False, 0, True, 4)])
      + record(6, [(64 * i, i % 3 == 0, i & 0xF, i % 4 == 0, i % 5, i % 6 == 0) for i in range(40)])
      + class_recent(1, 1, 1) + advance(2)
      + record(1, []) + add(three) + clear(1) + recent(1, 30) + record(7, [(9_999, False, 0b10)]) + advance(40))
# Bucket counts past u32 once added twice: the window's buckets saturate, its quantiles must not
# drop to 0.
huge = buckets_tally({700: 3_000_000_000})
write("window", "regression-bucket-past-u32-zeroes-quantiles", header(60, 1, 1_000)
      + add(message({0: huge, 1: huge})) + add(message({1: huge})))
