#!/usr/bin/env bash
# Round trip of the canary-gate OCI image through a real registry on loopback:
# build the layout (build.py), push it with skopeo to a private docker-registry,
# pull it back and check it is what Istio's WasmPlugin fetcher expects
# (OCI manifest, one tar+gzip layer holding exactly plugin.wasm) and byte-equal
# to the input module.
#
# Usage: roundtrip.sh [WASM]   (default: $CANARY_GATE_WASM, else the release build)
# Needs: python3 (3.11+), docker-registry, skopeo, tar, gzip, coreutils.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WASM="${1:-${CANARY_GATE_WASM:-$ROOT/target/wasm32-wasip1/release/canary_gate.wasm}}"
PYTHON="${PYTHON:-python3}"
# build.py tags with the crate version by default; pushing oci:LAYOUT:TAG checks that too.
TAG="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["package"]["version"])' "$ROOT/Cargo.toml")"
REPO="canary-gate"

OCI_MANIFEST="application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG="application/vnd.oci.image.config.v1+json"
OCI_LAYER="application/vnd.oci.image.layer.v1.tar+gzip"

passed=0
failed=0
registry_pid=""
WORK="$(mktemp -d "${TMPDIR:-/tmp}/canary-gate-oci.XXXXXX")"

cleanup() {
    if [[ -n "$registry_pid" ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

summary() {
    echo "$passed passed, $failed failed"
    [[ "$failed" -eq 0 ]]
}

# check NAME COMMAND...: runs COMMAND, counts and reports the result.
check() {
    local name="$1"
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   - $name"
    else
        failed=$((failed + 1))
        echo "FAIL - $name"
    fi
}

# step NAME COMMAND...: a check the later ones depend on: stops at failure.
step() {
    local before="$failed"
    check "$@"
    if ((failed > before)); then
        if [[ -s "$WORK/registry.log" ]]; then
            echo "--- registry log (last lines)"
            tail -n 20 "$WORK/registry.log"
        fi
        summary || exit 1
    fi
}

# json FILE EXPR: prints the Python expression EXPR evaluated on the JSON document `d`.
json() {
    "$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
blob() { echo "$1/blobs/sha256/${2#sha256:}"; }
skopeo_() { timeout 60 skopeo --policy "$WORK/policy.json" "$@"; }

# Work on a snapshot so a rebuild of the module during the run cannot skew the comparison.
step "input module $WASM" cp "$WASM" "$WORK/input.wasm"

# --- build, twice: the digest must depend only on the module and the version.
build() { "$PYTHON" "$HERE/build.py" --wasm "$WORK/input.wasm" --out "$1" >"$1.digest"; }
step "build.py writes the layout" build "$WORK/layout"
digest="$(cat "$WORK/layout.digest")"
sleep 1 # a second apart, so a timestamp leaking into any blob would change the digest
build "$WORK/layout-again" || true
check "build is reproducible ($digest)" test "$digest" = "$(cat "$WORK/layout-again.digest")"

# --- registry on a free loopback port, own storage, no auth.
port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$port
EOF
# Accept any image: the test registry is the only source and destination.
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$WORK/policy.json"
echo '{"auths":{}}' >"$WORK/auth.json"

# REGISTRY_* variables in the caller's environment would override the config file.
env -i PATH="$PATH" docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
registry_pid=$!

registry_up() {
    local _
    for _ in $(seq 50); do
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
            "http://127.0.0.1:$port/v2/" 2>/dev/null && return 0
        kill -0 "$registry_pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
step "docker-registry answers on 127.0.0.1:$port" registry_up
ref="127.0.0.1:$port/$REPO:$TAG"

# --- push; --preserve-digests makes skopeo fail rather than rewrite the manifest.
step "skopeo pushes the layout to $ref" skopeo_ copy --quiet --preserve-digests \
    --dest-tls-verify=false --dest-authfile "$WORK/auth.json" "oci:$WORK/layout:$TAG" "docker://$ref"

# --- what the registry serves, as Istio's fetcher reads it.
inspect_raw() { skopeo_ inspect --raw --tls-verify=false --authfile "$WORK/auth.json" "docker://$ref" >"$WORK/manifest.json"; }
step "skopeo inspect --raw reads the manifest back" inspect_raw
check "served manifest digest equals pushed digest" test "$(sha256_of "$WORK/manifest.json")" = "$digest"
check "manifest media type is $OCI_MANIFEST" test "$(json "$WORK/manifest.json" 'd["mediaType"]')" = "$OCI_MANIFEST"
check "config media type is $OCI_CONFIG" test "$(json "$WORK/manifest.json" 'd["config"]["mediaType"]')" = "$OCI_CONFIG"
check "exactly one layer" test "$(json "$WORK/manifest.json" 'len(d["layers"])')" = 1
check "layer media type is $OCI_LAYER" test "$(json "$WORK/manifest.json" 'd["layers"][0]["mediaType"]')" = "$OCI_LAYER"

# --- pull into a fresh layout and unpack the layer.
step "skopeo pulls $ref into a fresh layout" skopeo_ copy --quiet --preserve-digests \
    --src-tls-verify=false --src-authfile "$WORK/auth.json" "docker://$ref" "oci:$WORK/pulled:$TAG"
pulled_digest="$(json "$WORK/pulled/index.json" 'd["manifests"][0]["digest"]')"
check "pulled manifest digest equals pushed digest" test "$pulled_digest" = "$digest"

pulled_manifest="$(blob "$WORK/pulled" "$pulled_digest")"
layer="$(blob "$WORK/pulled" "$(json "$pulled_manifest" 'd["layers"][0]["digest"]')")"
config="$(blob "$WORK/pulled" "$(json "$pulled_manifest" 'd["config"]["digest"]')")"
check "layer lists exactly plugin.wasm" test "$(tar -tzf "$layer")" = "plugin.wasm"
mkdir "$WORK/unpacked"
check "layer unpacks (tar -xz)" tar -xzf "$layer" -C "$WORK/unpacked"
check "plugin.wasm equals the input module (cmp)" cmp "$WORK/unpacked/plugin.wasm" "$WORK/input.wasm"
check "config diff_ids name the uncompressed layer" test \
    "$(json "$config" 'd["rootfs"]["diff_ids"]')" = "['sha256:$(gzip -dc "$layer" | sha256sum | cut -d' ' -f1)']"

summary
