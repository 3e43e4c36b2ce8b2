# meshaudit: `make demo` runs the whole thing; `make test` is what CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
export MESHAUDIT_ENVOY ?= $(abspath $(VENV)/bin/envoy)
export MESHAUDIT_PYTHON ?= $(abspath $(VENV)/bin/python)
export MESHAUDIT_WASM ?= $(abspath dist/meshaudit_filter.wasm)
export MESHAUDIT_COLLECTOR_BIN ?= $(abspath target/release/meshaudit-collector)
export PATH := $(abspath $(VENV)/bin):$(PATH)

.PHONY: help setup build wasm test lint unit e2e validate demo bench fuzz clean release release-version

help:
	@echo "make demo   - set up, build and run collector + Envoy + filter + upstream with sample traffic"
	@echo "make test   - fmt, clippy, unit, integration, end-to-end (real Envoy) and manifest tests"
	@echo "make bench  - benchmarks (see docs/BENCHMARKS.md)"
	@echo "make fuzz   - the ingest decoder's property tests with many cases (PROPTEST_CASES, default 100000)"
	@echo "make release VERSION=x.y.z [REGISTRY=host/path] - images, SBOMs and k8s/release/ (docs/deploy.md)"

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release -p meshaudit-collector

wasm: setup
	@bash scripts/build-wasm.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace --exclude meshaudit-e2e

e2e: build wasm
	cargo test -p meshaudit-e2e -- --test-threads=2

validate: setup build wasm
	$(VENV)/bin/python tests/manifests/validate.py

test: setup build wasm lint
	cargo test --workspace -- --test-threads=2
	$(VENV)/bin/python tests/manifests/validate.py
	$(VENV)/bin/python tests/manifests/release_check.py
	bash scripts/bench.sh --smoke

# VERSION, REGISTRY, WASM_URL, RELEASE_BASE reach scripts/release.sh through the environment.
release: release-version build wasm
	@bash scripts/release.sh

release-version:  # before the builds: a missing VERSION should not cost a build first
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x.y.z [REGISTRY=host/path]" >&2; exit 2; }

demo: build wasm
	@bash scripts/demo.sh

bench: build wasm
	@bash scripts/bench.sh
	@bash scripts/bench.sh --only log
	@python3 scripts/search_latency.py --backend sqlite
	@python3 scripts/search_latency.py --backend postgres
	@python3 scripts/export_throughput.py
	@bash scripts/workload_key_bench.sh

# `make test` runs the same properties with proptest's default 256 cases.
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} cargo test --release -p meshaudit-collector --test fuzz

clean:
	cargo clean
	rm -rf dist
