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

# The same load through Celery (RabbitMQ broker, PostgreSQL result backend),
# for the side-by-side figures in docs/benchmarks.md.
venv="${SEXTANT_CACHE:-$HOME/.cache/sextant}/celery-venv"
if [ ! -x "$venv/bin/celery" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "celery==5.*" "sqlalchemy==2.*" psycopg2-binary
fi
"$venv/bin/python" scripts/celery_bench.py
