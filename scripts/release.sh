#!/usr/bin/env bash
# make release VERSION=x.y.z [REGISTRY=host/path] [WASM_URL=https://…] [RELEASE_BASE=postgres|base|single-node]
#
# Builds the release artifacts into dist/ and the kustomize overlay k8s/release/ from the already
# built collector binary (make build) and filter module (make wasm); no Docker daemon needed.
# The work is done by scripts/release/main.py; docs/deploy.md "Releases" says what comes out and
# how to publish it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VERSION:-}" ]; then
  echo "usage: make release VERSION=x.y.z [REGISTRY=host/path] [WASM_URL=https://…] [RELEASE_BASE=postgres]" >&2
  exit 2
fi
args=(--version "$VERSION")
[ -n "${REGISTRY:-}" ] && args+=(--registry "$REGISTRY")
[ -n "${WASM_URL:-}" ] && args+=(--wasm-url "$WASM_URL")
[ -n "${RELEASE_BASE:-}" ] && args+=(--base "$RELEASE_BASE")
exec "${MESHAUDIT_PYTHON:-.venv/bin/python}" scripts/release/main.py "${args[@]}"
