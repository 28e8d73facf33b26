#!/usr/bin/env python3
"""Checks istio/grafana/canary-gate-dashboard.json.

Structure: unique panel ids; every panel has a type, a title, a gridPos inside the 24-column
grid, a datasource and targets, each target a refId (unique in its panel) and an expr; the
`datasource` and `service` template variables. PromQL: every expr, with `$service` replaced by
a literal and `$__rate_interval` by 1m, goes into one temporary rule file as a recording rule
and `promtool check rules` parses it, so Prometheus's own parser checks every query (on a
failure each expression is checked alone, to name the ones that fail). Per-version
series must be filtered to one reporter (router or observer), never summed across both, and
observer series to one direction (`direction="inbound"`, `direction!="outbound"` or
`direction="outbound"`): a pod's inbound and outbound observers share service and revision.
The web-vitals series (`canary_web_*`, `canary_window_web_*`, `canary_vitals_rejected_total`)
carry no reporter (only routers report them): a reporter filter on them would select nothing.
Every recorded series a panel reads (`canary:...`) must be recorded by
istio/prometheus/canary-gate-rules.yaml.

    python3 istio/grafana/check_dashboard.py [DASHBOARD.json]    (PROMTOOL=/path overrides)

The last line is `N passed, M failed`; the exit code is 1 if anything failed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "canary-gate-dashboard.json")
RULES = os.path.join(HERE, "..", "prometheus", "canary-gate-rules.yaml")

# Grafana variables and what stands in for them when Prometheus parses the expression.
SUBSTITUTIONS = {
    "service": "checkout",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1m",
}
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# Series that carry the reporter label (per service and version).
PER_VERSION = re.compile(r"\bcanary_(?:requests_total|responses_total|outcomes_total|request_duration_milliseconds\w*|"
                         r"route_decisions_total|window_(?!web_)\w+)\b")
# Series only routers report, without the reporter label: the web-vitals beacons'.
UNREPORTED = re.compile(r"\bcanary_(?:web_\w+|window_web_\w+|vitals_rejected_total)\b")
# One direction of the observers' series: inbound (or without the label, from observers older
# than it), or outbound.
DIRECTION = re.compile(r'direction\s*(?:=\s*"(?:inbound|outbound)"|!=\s*"outbound")')
# Recorded series: canary:<what>:<window>; the rule file's `- record: NAME` lines.
RECORDED = re.compile(r"\bcanary:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+\b")
RECORD_LINE = re.compile(r"^\s*-?\s*record:\s*(\S+)\s*$", re.M)

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else ": " + detail))
    return ok


def substitute(expr):
    """Replaces Grafana variables; returns (expr, unknown variable names)."""
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2)
        if name in SUBSTITUTIONS:
            return SUBSTITUTIONS[name]
        unknown.append(name)
        return m.group(0)

    return VARIABLE.sub(repl, expr), unknown


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # panels inside a collapsed row


def promtool_check(promtool, rules):
    """`promtool check rules` on a temporary file of recording rules [(record, expr)]: (ok, output)."""
    doc = {"groups": [{"name": "dashboard", "rules": [{"record": r, "expr": e} for r, e in rules]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".rules.yaml", delete=False) as f:
        json.dump(doc, f, indent=2)  # JSON is YAML
        path = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        return r.returncode == 0, (r.stdout + r.stderr).strip()
    finally:
        os.unlink(path)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        check(f"read {path}", False, str(e))
        dash = None
    if isinstance(dash, dict):
        run(dash)
    elif dash is not None:
        check("dashboard is a JSON object", False)
    passed, failed = results.count(True), results.count(False)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def run(dash):
    check("schemaVersion >= 36", isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36,
          repr(dash.get("schemaVersion")))
    check("uid and title", bool(dash.get("uid")) and bool(dash.get("title")))

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    check("variable datasource: type datasource, query prometheus",
          ds.get("type") == "datasource" and ds.get("query") == "prometheus")
    svc = variables.get("service", {})
    query = svc.get("query")
    query = query.get("query") if isinstance(query, dict) else query
    check("variable service: label_values(canary_requests_total, service)",
          svc.get("type") == "query" and query == "label_values(canary_requests_total, service)", repr(query))

    panels = list(all_panels(dash.get("panels", [])))
    check("dashboard has panels", len(panels) > 0)
    ids = [p.get("id") for p in panels]
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    check("panel ids are unique integers", all(isinstance(i, int) for i in ids) and not dup, f"duplicates {dup}")

    try:
        with open(RULES) as f:
            recorded = set(RECORD_LINE.findall(f.read()))
    except OSError as e:
        recorded = set()
        check(f"read {os.path.relpath(RULES)}", False, str(e))

    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    check("promtool found", promtool is not None, "install Debian's `prometheus` package or set PROMTOOL")

    rules = []  # (check name, record, expr with variables replaced)
    for p in panels:
        name = f"panel {p.get('id')} {p.get('title', '')!r}"
        if p.get("type") == "row":
            g = p.get("gridPos", {})
            check(f"{name}: row gridPos", all(isinstance(g.get(k), int) for k in "xywh"))
            continue
        check(f"{name}: type and title", bool(p.get("type")) and bool(p.get("title")))
        g = p.get("gridPos")
        check(f"{name}: gridPos", isinstance(g, dict) and all(isinstance(g.get(k), int) for k in "xywh")
              and g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, repr(g))
        dsref = p.get("datasource")
        check(f"{name}: datasource is ${{datasource}}",
              dsref in ("$datasource", "${datasource}")
              or (isinstance(dsref, dict) and dsref.get("uid") in ("$datasource", "${datasource}")), repr(dsref))
        targets = p.get("targets")
        if not check(f"{name}: targets", isinstance(targets, list) and len(targets) > 0):
            continue
        refs = [t.get("refId") for t in targets]
        check(f"{name}: refIds unique", all(refs) and len(set(refs)) == len(refs), repr(refs))
        for t in targets:
            tname = f"{name} {t.get('refId')}"
            expr = t.get("expr")
            if not check(f"{tname}: expr", isinstance(expr, str) and expr.strip() != ""):
                continue
            if PER_VERSION.search(expr):
                reporters = set(re.findall(r'reporter="(router|observer)"', expr))
                check(f"{tname}: one reporter (router or observer)", len(reporters) == 1, repr(sorted(reporters)))
                if reporters == {"observer"}:
                    selectors = re.findall(r"\{[^}]*\}", expr)
                    undirected = [m for m in selectors if 'reporter="observer"' in m and not DIRECTION.search(m)]
                    check(f"{tname}: one direction of the observers", not undirected,
                          f'add direction="inbound", direction!="outbound" or direction="outbound" to {undirected}')
            if UNREPORTED.search(expr):
                selectors = [m for m in re.findall(r"\bcanary_\w+\{[^}]*\}", expr) if UNREPORTED.match(m)]
                filtered = [m for m in selectors if re.search(r"\breporter\s*[!=~]", m)]
                check(f"{tname}: no reporter filter on web-vitals series", not filtered, f"they carry none: {filtered}")
            unrecorded = sorted(set(RECORDED.findall(expr)) - recorded)
            if RECORDED.search(expr):
                check(f"{tname}: recorded by the rule file", not unrecorded, f"not recorded {unrecorded}")
            concrete, unknown = substitute(expr)
            if not check(f"{tname}: known variables", not unknown, f"unknown {unknown}"):
                continue
            rules.append((tname, f"dashboard:panel{p.get('id')}:{t.get('refId')}", concrete))

    if not promtool or not rules:
        return
    ok, out = promtool_check(promtool, [(record, expr) for _, record, expr in rules])
    if check(f"promtool check rules: {len(rules)} dashboard expressions", ok, out):
        return
    for tname, record, expr in rules:
        ok, out = promtool_check(promtool, [(record, expr)])
        check(f"{tname}: promtool parses", ok, out)


if __name__ == "__main__":
    sys.exit(main())
