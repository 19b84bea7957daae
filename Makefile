# raftgate — a fresh Debian 12 machine with the Rust toolchain needs only `make run` and
# `make test`; both install what they need first (`make deps`).

SHELL := /bin/bash
CARGO ?= cargo
# System packages the build and the tests need: clang/libclang for RocksDB's bindgen,
# protoc for the tonic/prost code generation, git for the GitOps tests, pkg-config and
# OpenSSL headers for libgit2's https transport, ssh-keygen for the signed-commit tests;
# clients and servers we did not write, for the abuse tests: Python's h2 (HTTP/2 floods)
# and nginx (the upstream of the smuggling test; its packaged service is not started);
# HAProxy (a load balancer in front of raftgated speaking the PROXY protocol; its service
# is not started either); libfaketime to step one node's wall clock; headless Chromium,
# a browser enforcing CORS and the dashboard's real client; promtool (Debian's prometheus
# package, whose service is not started) for the alert rules in deploy/; curl and the
# brotli and zstd tools, real clients and decoders for the compression tests.
DEPS := clang libclang-dev protobuf-compiler git pkg-config libssl-dev ca-certificates openssh-client \
	python3-h2 nginx-light haproxy faketime chromium prometheus brotli zstd curl dnsmasq-base
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build run test lint fmt bench testbed schema clean fuzz soak chaos tls-check ui-screenshots

all: build

## Install the system packages the build and tests need (idempotent: does nothing when present).
deps:
	@missing=""; for p in $(DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	  $(SUDO) systemctl disable --now nginx haproxy prometheus >/dev/null 2>&1 || true; \
	fi

build: deps
	$(CARGO) build --workspace --release

## The main job on embedded defaults: raftgated serving examples/config with demo upstreams.
run: deps
	scripts/run.sh

# Ends with one `N passed, N failed` line summing every test binary, so a run that
# executed nothing is visible at a glance.
# Tests that cannot run here (the netns testbed without root) append a line to
# $RAFTGATE_SKIP_LOG and return; they are counted as skipped, with their reason.
# The fuzz harnesses (tests named fuzz_*) get FUZZ_CI_SECONDS each here; `make fuzz` runs
# them alone for longer.
FUZZ_CI_SECONDS ?= 30
test: deps
	@set -o pipefail; log=$$(mktemp); export RAFTGATE_SKIP_LOG=$$(mktemp); \
	export RAFTGATE_FUZZ_SECONDS=$${RAFTGATE_FUZZ_SECONDS:-$(FUZZ_CI_SECONDS)}; \
	$(CARGO) test --workspace 2>&1 | tee $$log; rc=$${PIPESTATUS[0]}; \
	sed 's/^/skipped: /' $$RAFTGATE_SKIP_LOG; \
	awk -v skips=$$(wc -l < $$RAFTGATE_SKIP_LOG) '/^test result:/ { for (i = 1; i <= NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i; if ($$(i+1) ~ /^ignored/) s += $$i } } \
	     END { printf "\ntests: %d passed, %d failed, %d skipped\n", p - skips, f, s + skips }' $$log; \
	rm -f $$log $$RAFTGATE_SKIP_LOG; exit $$rc

## Each fuzz harness (YAML loader and compiler, path cleaning, the router against a
## reference matcher, webhook verification, Raft message decoding) for FUZZ_SECONDS
## (30 minutes), all at once; executions per harness go to testkit/results/.
FUZZ_SECONDS ?= 1800
fuzz: deps
	RAFTGATE_FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

## The dashboard's screenshots in docs/ui/, from a live three-node cluster driven by the
## dashboard test (headless Chromium; about a minute).
ui-screenshots: deps
	RAFTGATE_UI_SCREENSHOTS=$(CURDIR)/docs/ui $(CARGO) test --workspace --test it -- dashboard::the_dashboard_follows_merges_refusals_and_node_failures --exact

## Read-only checks: never rewrites a file. Besides rustfmt and clippy: no import cycle
## between the files of a crate, and the request path made of short functions.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-module-cycles.py
	python3 scripts/check-fn-length.py 80 node/src/proxy

fmt:
	$(CARGO) fmt --all

## Regenerate the committed JSON Schema from the Rust types.
schema:
	$(CARGO) run -q --bin raftgate -- config schema > schemas/raftgate.schema.json

# Tools of the proxy benchmark (only `make bench` needs them).
BENCH_DEPS := nginx-light haproxy wrk nghttp2-client curl python3 iproute2 util-linux

## raftgated vs nginx and HAProxy, route lookup, compile+swap, memory; results in bench/results/.
bench: deps
	@missing=""; for p in $(BENCH_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Debian starts the packaged services; the benchmark runs its own, pinned.
	-@$(SUDO) systemctl stop nginx haproxy 2>/dev/null || true
	bench/run-all.sh

## The multi-region testbed: three-regions (7 nodes) behind the WAN emulator, all seven
## scenarios, a Markdown and JSON report in testbed/results/. Needs root and /dev/net/tun
## (without them the nodes run on loopback and the partition scenario is skipped).
testbed: deps
	$(CARGO) build --release -q --workspace
	$${CARGO_TARGET_DIR:-target}/release/testbed run all --topology testbed/topologies/three-regions.yaml

## Twenty minutes of load on three-regions with a config change every 5 s, judged over the
## last eleven (after the nodes' allocators settle): no failed request, memory and
## descriptors flat; a report in testbed/results/. Root for the regions.
soak: deps
	$(CARGO) build --release -q --workspace
	$${CARGO_TARGET_DIR:-target}/release/testbed soak --topology testbed/topologies/three-regions.yaml

## Thirty minutes of seeded chaos on three-regions under load and merges (kills, leader
## kills mid-rollout, partitions, cut-off nodes, latency spikes, Git outages), judged by
## the checker; a report in testbed/results/. CHAOS_SEED replays a schedule. Root.
CHAOS_DURATION ?= 30m
CHAOS_SEED ?= $(shell date +%s)
chaos: deps
	$(CARGO) build --release -q --workspace
	$${CARGO_TARGET_DIR:-target}/release/testbed chaos --topology testbed/topologies/three-regions.yaml \
	  --duration $(CHAOS_DURATION) --seed $(CHAOS_SEED)

## testssl.sh against the HTTPS listener, with the default TLS policy and a TLS 1.3-only one:
## no protocol, cipher or vulnerability finding above LOW, and the policy's versions, cipher
## order, ticket resumption and OCSP stapling as testssl sees them; reports in testkit/results/.
tls-check: deps
	@dpkg -s testssl.sh >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends testssl.sh; }
	$(CARGO) build --release -q --workspace
	scripts/tls-check.sh

clean:
	$(CARGO) clean
