#!/usr/bin/env bash
# Benchmarks on release builds against local PostgreSQL and RabbitMQ.
# Record what it prints in docs/benchmarks.md, with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

require_servers || exit 1
export SEXTANT_TEST_DATABASE_URL="${SEXTANT_TEST_DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres}"
export SEXTANT_TEST_AMQP_URL="${SEXTANT_TEST_AMQP_URL:-amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/%2f}"

cargo build --release --quiet --bins
"$CARGO_TARGET_DIR/release/bench_jobs"
