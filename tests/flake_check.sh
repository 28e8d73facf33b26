#!/usr/bin/env bash
# make flake-check: repeats what depends on timing and reports every failure.
#   the Prometheus rule tests, PROMTOOL_RUNS times (default 50);
#   the real-Envoy end-to-end suites, E2E_RUNS times (default 3).
# Exits non-zero if any run failed; the logs of failed runs stay in target/flake-check/.
set -u
cd "$(dirname "$0")/.."
promtool_runs=${PROMTOOL_RUNS:-50}
e2e_runs=${E2E_RUNS:-3}
logs=target/flake-check
rm -rf "$logs" && mkdir -p "$logs"
passed=0
failed=0

for i in $(seq 1 "$promtool_runs"); do
  if promtool test rules istio/prometheus/tests/canary-gate-rules.test.yaml > "$logs/promtool-$i.log" 2>&1; then
    passed=$((passed + 1)); rm "$logs/promtool-$i.log"
  else
    failed=$((failed + 1)); echo "FAILED promtool run $i: $logs/promtool-$i.log"
  fi
done
echo "promtool test rules: $promtool_runs runs"

for i in $(seq 1 "$e2e_runs"); do
  # As `make e2e` runs them: two at a time across the suites (.config/nextest.toml).
  if cargo nextest run -p canary-harness > "$logs/e2e-$i.log" 2>&1; then
    passed=$((passed + 1)); rm "$logs/e2e-$i.log"
  else
    failed=$((failed + 1)); echo "FAILED end-to-end run $i: $logs/e2e-$i.log"
    grep -E '^ +(FAIL|TIMEOUT|SIGSEGV|SIGABRT) ' "$logs/e2e-$i.log" || true
  fi
  echo "end-to-end suites: run $i of $e2e_runs done"
done

echo "flake-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
