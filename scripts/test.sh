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

# The e2e tests run the real binaries: build them first.
cargo build --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
