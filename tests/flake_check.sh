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

suites=$(cd harness/tests && ls *.rs | sed 's/\.rs$//')
for i in $(seq 1 "$e2e_runs"); do
  for suite in $suites; do
    if cargo test -q -p canary-harness --test "$suite" -- --test-threads 2 > "$logs/$suite-$i.log" 2>&1; then
      passed=$((passed + 1)); rm "$logs/$suite-$i.log"
    else
      failed=$((failed + 1)); echo "FAILED $suite run $i: $logs/$suite-$i.log"
    fi
  done
  echo "end-to-end suites: run $i of $e2e_runs done"
done

echo "flake-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
