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

# The e2e tests run the real binaries: build them first.
cargo build --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
