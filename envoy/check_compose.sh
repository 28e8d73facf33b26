#!/usr/bin/env bash
# Checks envoy/docker-compose.yaml with docker-compose's own parser (Debian's docker-compose
# 1.29; no Docker engine needed), then what the demo relies on, in the resolved configuration.
#   bash envoy/check_compose.sh
# The last line is `N passed, M failed`; the exit code is 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
COMPOSE=(docker-compose -f envoy/docker-compose.yaml)
passed=0
failed=0

check() { # NAME COMMAND...
  local name=$1
  shift
  if "$@"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}

resolved=$(mktemp)
trap 'rm -f "$resolved"' EXIT

# A Python expression over the resolved configuration: `svc` is the services map, `repo` the
# repository root, `host(service, path)` the host file a container path is mounted from.
py() {
  REPO="$REPO" python3 - "$resolved" "$1" <<'PY'
import os, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
svc = cfg.get("services", {})
repo = os.environ["REPO"]

def host(service, path):
    best = None
    for v in svc[service].get("volumes", []):
        src, dst = v.split(":")[:2]
        if (path == dst or path.startswith(dst.rstrip("/") + "/")) and (best is None or len(dst) > len(best[1])):
            best = (src, dst)
    return None if best is None else best[0] + path[len(best[1]):]

def args(service):
    c = svc[service].get("command", [])
    return c.split() if isinstance(c, str) else c

try:
    sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
except Exception as e:
    print(f"     {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
PY
}

if ! command -v docker-compose >/dev/null; then
  check "docker-compose installed (apt-get install docker-compose)" false
  echo "$passed passed, $failed failed"
  exit 1
fi

check "docker-compose config -q" "${COMPOSE[@]}" config -q
if ! "${COMPOSE[@]}" config >"$resolved" 2>/dev/null; then
  echo "$passed passed, $failed failed"
  exit 1
fi

for s in envoy stable canary prometheus grafana; do
  check "service $s present" py "'$s' in svc"
done
check "every service on the host network" py 'svc and all(s.get("network_mode") == "host" for s in svc.values())'

check "envoy image is Envoy 1.40" py 'svc["envoy"]["image"].startswith("envoyproxy/envoy:v1.40")'
check "envoy runs envoy/filter-mode.yaml" py 'args("envoy")[:3] == ["envoy", "-c", "envoy/filter-mode.yaml"]'
check "envoy starts in the mounted repository root" \
  py 'host("envoy", svc["envoy"].get("working_dir", "")) == repo'
for f in envoy/filter-mode.yaml envoy/canary-gate.filter.yaml; do
  check "$f exists" test -f "$f"
done

for s in stable canary; do
  check "$s builds backend/Dockerfile from the repository root" \
    py 'svc["'$s'"]["build"]["context"] == repo and svc["'$s'"]["build"]["dockerfile"] == "backend/Dockerfile"'
done
check "backend/Dockerfile builds canary-backend" grep -q -- '-p canary-backend' backend/Dockerfile
check "stable listens on 127.0.0.1:18001" \
  py 'args("stable") == ["canary-backend", "--listen", "127.0.0.1:18001", "--version", "stable"]'
check "canary listens on 127.0.0.1:18002" \
  py 'args("canary") == ["canary-backend", "--listen", "127.0.0.1:18002", "--version", "canary"]'

check "prometheus uses envoy/prometheus.yml" \
  py '[a for a in args("prometheus") if a.startswith("--config.file=")] == ["--config.file=/work/envoy/prometheus.yml"]
      and host("prometheus", "/work/envoy/prometheus.yml") == repo + "/envoy/prometheus.yml"'
check "envoy/prometheus.yml loads the canary-gate rules" \
  py '"../istio/prometheus/canary-gate-rules.yaml" in yaml.safe_load(open(repo + "/envoy/prometheus.yml"))["rule_files"]'

check "grafana provisioning mounted" \
  py 'host("grafana", "/etc/grafana/provisioning") == repo + "/envoy/grafana/provisioning"'
check "grafana dashboard provider path holds the dashboard" \
  py 'os.path.isfile(host("grafana", yaml.safe_load(open(repo + "/envoy/grafana/provisioning/dashboards/canary-gate.yaml"))["providers"][0]["options"]["path"] + "/canary-gate-dashboard.json"))'
check "grafana datasource is the local Prometheus" \
  py 'yaml.safe_load(open(repo + "/envoy/grafana/provisioning/datasources/prometheus.yaml"))["datasources"][0]["url"] == "http://127.0.0.1:9090"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
