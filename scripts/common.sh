# Shared by the scripts: where builds go, and whether the servers answer.
# Sourced, not run.

# Builds live outside the clone so every clone on a machine reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sextant/target}"

PG_HOST="${SEXTANT_PG_HOST:-127.0.0.1}"
PG_PORT="${SEXTANT_PG_PORT:-5432}"
AMQP_HOST="${SEXTANT_AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${SEXTANT_AMQP_PORT:-5672}"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Prints what to start for each server that does not answer; fails if any.
require_servers() {
  local missing=0
  if ! port_open "$PG_HOST" "$PG_PORT"; then
    missing=1
    cat >&2 <<MSG
PostgreSQL is not reachable at $PG_HOST:$PG_PORT. Start it, e.g.:
  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start   # Debian/Ubuntu
  docker compose up -d postgres                                              # with Docker
MSG
  fi
  if ! port_open "$AMQP_HOST" "$AMQP_PORT"; then
    missing=1
    cat >&2 <<MSG
RabbitMQ is not reachable at $AMQP_HOST:$AMQP_PORT. Start it, e.g.:
  rabbitmq-server -detached                                                  # Debian/Ubuntu
  docker compose up -d rabbitmq                                              # with Docker
MSG
  fi
  return $missing
}

# Debian's chromium (the console's browser test and benchmark) and
# prometheus with promtool (the reference the Prometheus surface is tested
# and benchmarked against), installed when missing.
require_reference_tools() {
  local packages=()
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  { command -v prometheus && command -v promtool; } >/dev/null || packages+=(prometheus)
  # the load balancer in front of each service's replicas in the soak scenario
  command -v haproxy >/dev/null || packages+=(haproxy)
  [ ${#packages[@]} -eq 0 ] && return 0
  echo "installing ${packages[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null; }
}
