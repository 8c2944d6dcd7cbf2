#!/usr/bin/env bash
# Restarting Paz under load, measured with wrk (16 connections, keep-alive) through the router
# to a 2-instance demo service, in one run:
#   1. stop and start: SIGTERM to paz-server, then a new paz-server on the same settings;
#   2. `paz-server --upgrade`: the new process takes the sockets over, the old one drains.
# Each run prints wrk's requests, socket errors and non-2xx answers during a restart.
# Usage: benches/upgrade.sh [runs]   (default 3). Needs Docker, wrk and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
NET=paz-bench-upgrade-$$
WORK=$(mktemp -d)
cleanup() {
  for pid in $(cat "$WORK/pids" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  sleep 1
  docker ps -aq --filter "network=$NET" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for tool in wrk curl python3; do command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
cargo build --release -q -p paz-server -p paz-cli
scripts/build-demo-image.sh paz-demo:v1 >/dev/null
BIN=${CARGO_TARGET_DIR:-target}/release
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=127.0.0.1:$(free_port)
ROUTER=127.0.0.1:$(free_port)
SETTINGS=(--data-dir "$WORK/data" --api-listen "$API" --router-listen "$ROUTER" --docker-network "$NET")

# Starts a server (extra flags: $@) and waits until its API answers; prints its pid.
start_server() {
  "$BIN/paz-server" "${SETTINGS[@]}" "$@" > "$WORK/server.out" 2>> "$WORK/server.log" &
  echo $! >> "$WORK/pids"
  echo $!
}
wait_api() { until curl -sf -o /dev/null "http://$API/v1/health"; do sleep 0.02; done; }

pid=$(start_server)
wait_api
export PAZ_SERVER=http://$API PAZ_TOKEN=$(cat "$WORK/data/admin-token")
"$BIN/paz" service create web --image paz-demo:v1 --instances 2 --port 8080 --public --health-path /health >/dev/null
until "$BIN/paz" history web --output json | grep -q '"succeeded"'; do sleep 0.2; done
until curl -sf -o /dev/null -H 'Host: web.localhost' "http://$ROUTER/"; do sleep 0.05; done

# wrk for 8 s; after 3 s, the restart `$1` (stop-start | upgrade). Prints one result line.
run() {
  local how=$1 out="$WORK/wrk.out" new
  wrk -t2 -c16 -d8s -H 'Host: web.localhost' "http://$ROUTER/" > "$out" &
  local wrk_pid=$!
  sleep 3
  local started; started=$(date +%s%3N)
  if [ "$how" = stop-start ]; then
    kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
    new=$(start_server)
  else
    new=$(start_server --upgrade)
    while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
  fi
  wait_api
  local took=$(( $(date +%s%3N) - started ))
  pid=$new
  wait "$wrk_pid"
  python3 - "$how" "$took" "$out" <<'EOF'
import re, sys
how, took, text = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
requests = int(re.search(r"(\d+) requests in", text).group(1))
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
socket = sum(int(g) for g in errors.groups()) if errors else 0
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
non2xx = int(non2xx.group(1)) if non2xx else 0
print(f"{how:10s} requests {requests:7d}  socket errors {socket:6d}  non-2xx {non2xx:6d}  API back after {took} ms")
EOF
}

echo "== wrk -c16 through the router while paz-server restarts ($RUNS runs each)"
for _ in $(seq "$RUNS"); do
  run stop-start
  run upgrade
done
