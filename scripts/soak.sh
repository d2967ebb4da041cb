#!/usr/bin/env bash
# The replica scenario for SOAK_SECONDS (default 600): every service twice
# behind HAProxy on a three-node RabbitMQ cluster (network namespaces, so
# root) and the local PostgreSQL, under load, through restarts and broker
# faults. Release builds. Prints the counts and per-phase figures; exits
# non-zero on any loss.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

require_servers || exit 1
# haproxy is the load balancer in front of each service's replicas.
require_reference_tools
[ "$(id -u)" = 0 ] || { echo "make soak runs RabbitMQ nodes in network namespaces: run it as root" >&2; exit 1; }
export SEXTANT_TEST_DATABASE_URL="${SEXTANT_TEST_DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres}"
# 1,000 subscribers hold a socket each, through HAProxy to a gateway.
ulimit -n "$(ulimit -Hn)"
cargo build --release --bins
echo "soak: ${SOAK_SECONDS:-600} s, ${SOAK_SUBSCRIBERS:-1000} subscribers"
"$CARGO_TARGET_DIR/release/soak"
