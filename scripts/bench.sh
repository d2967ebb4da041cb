#!/usr/bin/env bash
# Benchmarks on release builds against local PostgreSQL and RabbitMQ.
# `scripts/bench.sh` runs them all; `scripts/bench.sh jobs analytics` some.
# Record what they print in docs/benchmarks.md, with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

require_servers || exit 1
# bench-console drives chromium; bench-prometheus runs prometheus beside Sextant.
require_reference_tools
export SEXTANT_TEST_DATABASE_URL="${SEXTANT_TEST_DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres}"
export SEXTANT_TEST_AMQP_URL="${SEXTANT_TEST_AMQP_URL:-amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/%2f}"
cache="${SEXTANT_CACHE:-$HOME/.cache/sextant}"

# A virtualenv under the cache with the given packages, made once.
venv() {
  local dir="$cache/$1"; shift
  if [ ! -f "$dir/.ready" ]; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet "$@"
    touch "$dir/.ready"
  fi
  echo "$dir"
}

bench_jobs() {
  "$CARGO_TARGET_DIR/release/bench_jobs"
  # The same load through Celery (RabbitMQ broker, PostgreSQL result backend).
  local celery
  celery=$(venv celery-venv "celery==5.*" "sqlalchemy==2.*" psycopg2-binary)
  "$celery/bin/python" scripts/celery_bench.py
}

bench_fanout() {
  # Sockets: the client and each server hold one per connection.
  ulimit -n "$(ulimit -Hn)"
  local fastapi
  fastapi=$(venv fanout-venv "fastapi==0.*" "uvicorn[standard]==0.*")
  FANOUT_PYTHON="$fastapi/bin/python" "$CARGO_TARGET_DIR/release/bench_fanout"
}

bench_analytics() {
  local duckdb
  duckdb=$(venv duckdb-venv "duckdb==1.*" pytz)
  DUCKDB_PYTHON="$duckdb/bin/python" "$CARGO_TARGET_DIR/release/bench_analytics"
}

bench_analysis() {
  "$CARGO_TARGET_DIR/release/bench_analysis"
}

bench_exports() {
  local python
  python=$(venv export-venv "openpyxl==3.*" "XlsxWriter==3.*")
  EXPORT_PYTHON="$python/bin/python" "$CARGO_TARGET_DIR/release/bench_exports"
}

bench_console() {
  local python
  python=$(venv playwright-venv "playwright==1.49.1")
  CONSOLE_PYTHON="$python/bin/python" "$CARGO_TARGET_DIR/release/bench_console"
}

bench_prometheus() {
  "$CARGO_TARGET_DIR/release/bench_prometheus"
}

cargo build --release --quiet --bins
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(jobs fanout analytics analysis exports console prometheus)
for target in "${targets[@]}"; do
  case "$target" in
    jobs) bench_jobs ;;
    fanout) bench_fanout ;;
    analytics) bench_analytics ;;
    analysis) bench_analysis ;;
    exports) bench_exports ;;
    console) bench_console ;;
    prometheus) bench_prometheus ;;
    *) echo "unknown benchmark: $target (jobs, fanout, analytics, analysis, exports, console, prometheus)" >&2; exit 2 ;;
  esac
done
