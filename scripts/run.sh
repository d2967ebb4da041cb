#!/usr/bin/env bash
# Starts all four services against local PostgreSQL and RabbitMQ, prints the
# gateway URL and a development token, and stops everything on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

require_servers || exit 1

echo "building..." >&2
cargo build --quiet --bins
bin="$CARGO_TARGET_DIR/debug"
logs="${SEXTANT_LOG_DIR:-$CARGO_TARGET_DIR/sextant-logs}"
mkdir -p "$logs"

export SEXTANT_TELEMETRY__LOG_FORMAT="${SEXTANT_TELEMETRY__LOG_FORMAT:-json}"
# The diagnostic job kinds (noop, sleep, fail) make the local system demoable.
export SEXTANT_JOBS__QUEUE__DIAGNOSTIC_KINDS="${SEXTANT_JOBS__QUEUE__DIAGNOSTIC_KINDS:-true}"
pids=()
stop() {
  local status=$?
  trap - INT TERM EXIT
  set +e
  [ ${#pids[@]} -eq 0 ] && exit "$status"
  echo "stopping..." >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null
  echo "stopped" >&2
  exit "$status"
}
trap stop EXIT
trap 'exit 0' INT TERM

# Each service runs in a session of its own, so Ctrl-C reaches only this
# script, which stops them all with SIGTERM (below) and says so.
for service in analytics jobs exports gateway; do
  setsid "$bin/sextant-$service" >"$logs/$service.log" 2>&1 &
  pids+=($!)
done

gateway="http://${SEXTANT_GATEWAY__HTTP__HOST:-127.0.0.1}:${SEXTANT_GATEWAY__HTTP__PORT:-8080}"
for _ in $(seq 1 300); do
  if curl -fsS "$gateway/readyz" >/dev/null 2>&1; then break; fi
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "a service exited during start-up; its log:" >&2
      for service in analytics jobs exports gateway; do tail -n 5 "$logs/$service.log" >&2; done
      exit 1
    fi
  done
  sleep 0.2
done
if ! curl -fsS "$gateway/readyz" >/dev/null 2>&1; then
  echo "the system did not become ready in 60 s:" >&2
  curl -sS "$gateway/readyz" >&2 || true
  exit 1
fi

token=$("$bin/sextant-gateway" token --tenant "${SEXTANT_DEV_TENANT:-acme}" --user "${SEXTANT_DEV_USER:-alice}")
cat <<MSG

Sextant is up.
  console:    $gateway/console/#token=$token
  gateway:    $gateway   (readiness: $gateway/readyz)
  websocket:  ${gateway/http/ws}/api/v1/ws
  dev token:  $token
  logs:       $logs
Try: curl -H "Authorization: Bearer \$TOKEN" $gateway/api/v1/me
Ctrl-C stops everything.
MSG

# Stop everything when any service dies, or on Ctrl-C.
wait -n "${pids[@]}" || true
echo "a service exited; see $logs" >&2
exit 1
