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
                     "sticky": {"cookie": "canary_bucket", "max_age_s": 86400}},
    "envoy-mesh": {"service": "checkout", "split": {"mode": "mesh"}, "override": {"header": "x-canary"},
                   "sticky": {"cookie": "canary_bucket", "max_age_s": 86400}},
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
  "gate": {"window_s": 10, "min_requests": 50, "max_error_ratio": 0.001, "max_p95_ms": 500,
           "max_p99_ms": 1000.5, "max_error_ratio_over_stable": 0.0025, "consecutive": 3,
           "dry_run": true, "rearm": 7},
  "hosts": ["shop.example.com", "*.svc.cluster.local"]
}
""")


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


def tally(latencies_us, errors=0):
    counts = {}
    for us in latencies_us:
        counts[bucket_of(us)] = counts.get(bucket_of(us), 0) + 1
    out = varint(len(latencies_us)) + varint(errors) + varint(len(counts))
    previous = 0
    for i in sorted(counts):
        out += varint(i - previous) + varint(counts[i])
        previous = i
    return out


def message(stable, canary, identity=0x0123456789ABCDEF):
    return b"\x02" + struct.pack("<Q", identity) + stable + canary


def add(version, msg):
    return bytes([1 | version << 2]) + struct.pack("<H", len(msg)) + msg


def advance(step):
    return bytes([0, step]) if step < 256 else bytes([4]) + struct.pack("<I", step)


def recent(version, seconds):
    return bytes([2 | version << 2, seconds])


def back(step):
    return bytes([3, step])


def header(window_s, flags, start):
    return struct.pack("<HBI", window_s - 1, flags, start)


fast = tally([10_000 + 37 * i for i in range(100)], errors=2)
slow = tally([400_000 + 911 * i for i in range(40)], errors=9)
empty = tally([])
write("window", "message", message(fast, slow))
write("window", "ramp", header(60, 1, 1_000)
      + b"".join(add(0, message(fast, slow)) + add(1, message(fast, slow)) + advance(1) for _ in range(5))
      + recent(1, 3) + advance(30) + recent(0, 60) + back(5) + advance(100) + add(1, message(empty, fast)))
write("window", "before-first-advance", header(3, 0, 7) + add(1, message(empty, slow)) + add(0, message(fast, empty))
      + recent(1, 1) + advance(1) + add(1, message(empty, fast)) + advance(2) + advance(1))
write("window", "end-of-time", header(600, 3, 5) + add(0, message(fast, fast)) + advance(4) + advance(70_000)
      + add(1, message(slow, slow)) + recent(1, 255) + back(1))
write("window", "one-second", header(1, 1, 0) + add(1, message(empty, tally([1_000_003 * i % 3_000_000 for i in range(2_000)], 7)))
      + add(1, message(empty, fast)) + recent(1, 1) + advance(1) + recent(1, 0))
write("window", "wide-buckets", header(10, 1, 42) + add(0, message(tally([i * i for i in range(1, 1500)]), empty))
      + advance(9) + add(0, message(tally([0, 63, 64, (1 << 37) - 1, 1 << 40]), empty)) + advance(1) + recent(0, 9))
