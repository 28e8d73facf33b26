#!/usr/bin/env bash
# Runs every cargo-fuzz target of canary-gate for SECONDS each, FUZZ_JOBS (default 2) at a time.
#
#   fuzz/run.sh SECONDS [extra `cargo fuzz run` options]
#
# Environment: FUZZ_TARGETS="config window" runs only those; FUZZ_SANITIZER is passed as
# --sanitizer (default none: the code under test is safe Rust, and AddressSanitizer makes the
# config target about 8 times slower and takes its memory from 30 MB to about 300 MB).
#
# Seeds are read from fuzz/corpus/<target>/ (with fuzz/dict/<target>.dict, if any) and never
# written: what a run discovers goes to fuzz/work/corpus/<target>/ (kept between runs, ignored by
# git). A crashing input is saved as
# fuzz/artifacts/<target>/crash-*; reproduce it with
#   cargo +nightly fuzz run -a -s none <target> fuzz/artifacts/<target>/crash-...
# Each target's full libFuzzer log is in fuzz/work/logs/<target>.log.
# Exits non-zero if any target fails; the last line is `N passed, M failed`.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

usage() {
    echo "usage: fuzz/run.sh SECONDS [cargo fuzz run options]" >&2
    exit 2
}
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
SECONDS_EACH=$1
shift

# Largest input per target: a configuration is small; header values and messages may be large.
declare -A MAX_LEN=([config]=4096 [headers]=65536 [window]=65536 [beacon]=65536 [auth]=4096)
TARGETS=(${FUZZ_TARGETS:-config headers window beacon auth})
SANITIZER=${FUZZ_SANITIZER:-none}
RSS_LIMIT_MB=512

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: 'cargo +nightly' does not run: install the nightly toolchain with 'rustup toolchain install nightly --profile minimal'" >&2
    exit 2
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    if [[ -x $ROOT/.tools/bin/cargo-fuzz ]]; then
        export PATH="$ROOT/.tools/bin:$PATH"
    else
        echo "fuzz/run.sh: cargo-fuzz is not installed: install it with 'cargo +nightly install --root .tools cargo-fuzz'" >&2
        exit 2
    fi
fi
for t in "${TARGETS[@]}"; do
    [[ -n ${MAX_LEN[$t]:-} ]] || { echo "fuzz/run.sh: unknown target '$t'" >&2; exit 2; }
done

# The same build flags for `build` and `run`, so the run reuses the build: optimized, with
# overflow checks and debug assertions (a silent wrap-around is a bug too).
BUILD_FLAGS=(--debug-assertions --sanitizer "$SANITIZER")
mkdir -p fuzz/work/logs

echo "== building fuzz targets (${TARGETS[*]})"
build_start=$(date +%s)
if ! cargo +nightly fuzz build "${BUILD_FLAGS[@]}" "$@"; then
    echo "fuzz targets failed to build"
    echo "0 passed, ${#TARGETS[@]} failed"
    exit 1
fi
echo "== built in $(($(date +%s) - build_start)) s"

# One target's run, its exit status in fuzz/work/logs/<target>.status.
run_target() {
    local t=$1 log="fuzz/work/logs/$1.log" dict=()
    mkdir -p "fuzz/work/corpus/$t" "fuzz/artifacts/$t"
    [[ -f fuzz/dict/$t.dict ]] && dict=(-dict="fuzz/dict/$t.dict")
    cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "${EXTRA[@]}" "$t" "fuzz/work/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_LIMIT_MB" -max_len="${MAX_LEN[$t]}" \
        -timeout=10 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1
    echo $? >"fuzz/work/logs/$t.status"
}

# FUZZ_JOBS targets at a time (default 2: libFuzzer runs one process per target, and a core
# each is what a 2-core machine has).
EXTRA=("$@")
JOBS=${FUZZ_JOBS:-2}
rm -f fuzz/work/logs/*.status
for t in "${TARGETS[@]}"; do
    echo "== $t: ${SECONDS_EACH} s, max_len ${MAX_LEN[$t]}, rss limit ${RSS_LIMIT_MB} MB"
    while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do wait -n; done
    run_target "$t" &
done
wait

passed=0
failed=0
failures=()
for t in "${TARGETS[@]}"; do
    log="fuzz/work/logs/$t.log"
    status=$(cat "fuzz/work/logs/$t.status" 2>/dev/null || echo 1)
    # libFuzzer's last status line: `#RUNS DONE cov: N ft: N corp: N/SIZE ... exec/s: N rss: NMb`.
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' <<<"$done_line")
    if [[ $status -eq 0 ]]; then
        passed=$((passed + 1))
        echo "ok   $t: ${execs:-?} runs, ${rate:-?} exec/s, ${cov:-no coverage line}, peak rss ${rss:-?} MB"
    else
        failed=$((failed + 1))
        failures+=("$t")
        echo "FAIL $t (exit $status); the end of $log:"
        tail -n 60 "$log" | sed 's/^/    /'
        artifact=$(grep -oE 'fuzz/artifacts/[^ ]+' "$log" | tail -n 1)
        [[ -n $artifact ]] && echo "    reproduce: cargo +nightly fuzz run ${BUILD_FLAGS[*]} $* $t $artifact"
    fi
done

[[ $failed -eq 0 ]] || echo "failed targets: ${failures[*]}"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
