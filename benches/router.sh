#!/usr/bin/env bash
# Router throughput and latency vs going direct, with wrk on loopback.
#
#   benches/router.sh                # 5 alternating runs of 10 s each, wrk -t2 -c64
#   RUNS=3 DURATION=5s WORKERS=1 benches/router.sh
#   HAPROXY=1 benches/router.sh      # also HAProxy 2.6 with nbthread 1 and 2 (http-reuse always)
#   BACKEND_KIND=nginx HAPROXY=1 benches/router.sh   # nginx (Debian's nginx-light) serving a
#                                    # small file as the backend, instead of bench_backend
#   BASELINE=path/to/bench_router benches/router.sh   # also another build of the router
#                                    # (e.g. an older commit's), to measure a change's cost
#
# Builds the release examples of paz-proxy (bench_backend, bench_router), starts one backend
# and one router in front of it on 127.0.0.1 ports the kernel picks, then runs wrk against
# the backend (direct) and the router, alternating, and prints the medians of req/s, p50 and
# p99 and the router/direct ratios. The goal: req/s ratio >= 0.5, p99 ratio <= 1.5.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-5}"
DURATION="${DURATION:-10s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
WORKERS="${WORKERS:-}"          # router worker threads; empty = the router's default
BACKEND_THREADS="${BACKEND_THREADS:-2}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --quiet -p paz-proxy --example bench_backend --example bench_router
BIN="${CARGO_TARGET_DIR:-target}/release/examples"

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# Starts "$@" in the background (stdout to $TMP/$name.out), waits for its "listening on ADDR"
# line and sets ADDR and PID. (Not called in $(...): PIDS must grow in this shell.)
start() {
  local name="$1"; shift
  "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID="$!"
  PIDS+=("$PID")
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$TMP/$name.out" 2>/dev/null; then
      ADDR="$(sed -n 's/^listening on //p' "$TMP/$name.out")"
      return
    fi
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$TMP/$name.err" >&2; exit 1
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ "${BACKEND_KIND:-hyper}" = nginx ]; then
  command -v nginx >/dev/null || { echo "BACKEND_KIND=nginx needs nginx (apt-get install nginx-light)" >&2; exit 1; }
  NGINX_PORT="$(free_port)"
  mkdir -p "$TMP/www"; printf 'hello from nginx\n' >"$TMP/www/index.html"
  # nginx's workers run as another user (www-data) when started by root.
  chmod 755 "$TMP" "$TMP/www"; chmod 644 "$TMP/www/index.html"
  cat >"$TMP/nginx.conf" <<CFG
worker_processes $BACKEND_THREADS;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/www; proxy_temp_path $TMP/www; fastcgi_temp_path $TMP/www;
    uwsgi_temp_path $TMP/www; scgi_temp_path $TMP/www;
    server { listen 127.0.0.1:$NGINX_PORT; root $TMP/www; }
}
CFG
  nginx -c "$TMP/nginx.conf" -p "$TMP" >"$TMP/nginx.out" 2>&1 &
  BACKEND_PID="$!"; PIDS+=("$BACKEND_PID")
  for i in $(seq 101); do
    curl -fs "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1 && break
    [ "$i" -lt 101 ] || { echo "nginx does not serve:" >&2; cat "$TMP/nginx.err" >&2; exit 1; }
    sleep 0.05
  done
  BACKEND="127.0.0.1:$NGINX_PORT"
else
  start backend "$BIN/bench_backend" 127.0.0.1:0 "$BACKEND_THREADS"
  BACKEND="$ADDR"; BACKEND_PID="$PID"
fi
if [ -n "$WORKERS" ]; then
  start router "$BIN/bench_router" "$BACKEND" 127.0.0.1:0 "$WORKERS"
else
  start router "$BIN/bench_router" "$BACKEND" 127.0.0.1:0
fi
ROUTER="$ADDR"; ROUTER_PID="$PID"
TARGETS=(direct router)
if [ -n "${BASELINE:-}" ]; then
  if [ -n "$WORKERS" ]; then
    start baseline "$BASELINE" "$BACKEND" 127.0.0.1:0 "$WORKERS"
  else
    start baseline "$BASELINE" "$BACKEND" 127.0.0.1:0
  fi
  BASELINE_ADDR="$ADDR"; BASELINE_PID="$PID"
  TARGETS+=(baseline)
fi
if [ "${HAPROXY:-0}" = 1 ]; then
  command -v haproxy >/dev/null || { echo "HAPROXY=1 needs haproxy (apt-get install haproxy)" >&2; exit 1; }
  for threads in 1 2; do
    port="$(free_port)"
    cat >"$TMP/haproxy$threads.cfg" <<CFG
global
    nbthread $threads
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
    http-reuse always
    server s1 $BACKEND
CFG
    haproxy -f "$TMP/haproxy$threads.cfg" -db >"$TMP/haproxy$threads.out" 2>&1 &
    PIDS+=("$!")
    eval "HAPROXY${threads}_PID=$!; HAPROXY${threads}_ADDR=127.0.0.1:$port"
    TARGETS+=("haproxy$threads")
  done
  sleep 0.5
fi
echo "backend $BACKEND, router $ROUTER (workers: ${WORKERS:-default})"

WRK=(wrk "-t$THREADS" "-c$CONNECTIONS" "-d$DURATION" --latency)
echo "command: ${WRK[*]} http://ADDR/   (runs: $RUNS, alternating)"

# CPU time (user + system) a process used so far, in microseconds.
# (With its child processes: nginx's workers.)
cpu_us() {
  local files=("/proc/$1/stat")
  for child in $(pgrep -P "$1" 2>/dev/null); do files+=("/proc/$child/stat"); done
  cat "${files[@]}" 2>/dev/null | awk -v hz="$(getconf CLK_TCK)" '{ t += $14 + $15 } END { printf "%.0f\n", t * 1000000 / hz }'
}

# Prints "req_per_s p50_us p99_us requests" of a wrk --latency output.
parse() {
  awk '
    function us(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000000 }
      return v + 0
    }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    $1 == "Requests/sec:" { rps = $2 }
    $2 == "requests" && $3 == "in" { total = $1 }
    / Socket errors:|Non-2xx/ { print "warning: " $0 > "/dev/stderr" }
    END { printf "%s %s %s %s\n", rps, p50, p99, total }
  '
}

addr_of() { case "$1" in direct) echo "$BACKEND" ;; router) echo "$ROUTER" ;; baseline) echo "$BASELINE_ADDR" ;; haproxy1) echo "$HAPROXY1_ADDR" ;; haproxy2) echo "$HAPROXY2_ADDR" ;; esac; }
pid_of() { case "$1" in haproxy1) echo "$HAPROXY1_PID" ;; haproxy2) echo "$HAPROXY2_PID" ;; baseline) echo "$BASELINE_PID" ;; *) echo "$ROUTER_PID" ;; esac; }

# Warm up (connections, pools, caches).
for target in "${TARGETS[@]}"; do wrk -t2 -c64 -d2s "http://$(addr_of "$target")/" >/dev/null; done

for target in "${TARGETS[@]}"; do : >"$TMP/$target"; done
for i in $(seq "$RUNS"); do
  for target in "${TARGETS[@]}"; do
    addr="$(addr_of "$target")"; proxy_pid="$(pid_of "$target")"
    b0="$(cpu_us "$BACKEND_PID")"; r0="$(cpu_us "$proxy_pid")"
    line="$("${WRK[@]}" "http://$addr/" | parse)"
    b1="$(cpu_us "$BACKEND_PID")"; r1="$(cpu_us "$proxy_pid")"
    # CPU microseconds per request spent in the backend and in the router.
    cpu="$(echo "$line" | awk -v b="$((b1 - b0))" -v r="$((r1 - r0))" '{ printf "%.1f %.1f", b / $4, r / $4 }')"
    echo "$line $cpu" >>"$TMP/$target"
    printf 'run %d %-7s %10.0f req/s  p50 %8.0f us  p99 %8.0f us  cpu/req: backend %5.1f us, proxy %5.1f us\n' \
      "$i" "$target" $(echo "$line" | cut -d' ' -f1-3) $cpu
  done
done

median() { sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m }'; }
col() { awk -v c="$2" '{ print $c }' "$TMP/$1" | median; }

D_RPS="$(col direct 1)"; D_P50="$(col direct 2)"; D_P99="$(col direct 3)"
R_RPS="$(col router 1)"; R_P50="$(col router 2)"; R_P99="$(col router 3)"
R_CPU="$(col router 6)"; B_CPU="$(col router 5)"
echo
printf '%-8s %12s %10s %10s\n' "median" "req/s" "p50 us" "p99 us"
printf '%-8s %12.0f %10.0f %10.0f\n' direct "$D_RPS" "$D_P50" "$D_P99"
printf '%-8s %12.0f %10.0f %10.0f\n' router "$R_RPS" "$R_P50" "$R_P99"
if [ "${HAPROXY:-0}" = 1 ]; then
  for h in haproxy1 haproxy2; do
    H_RPS="$(col $h 1)"; H_P50="$(col $h 2)"; H_P99="$(col $h 3)"
    printf '%-8s %12.0f %10.0f %10.0f   (%.2fx req/s, %.2fx p99 of direct; %s CPU-us/req; router/%s: %.2fx req/s, %.2fx p99)\n' "$h" "$H_RPS" "$H_P50" "$H_P99" \
      "$(awk -v a="$H_RPS" -v b="$D_RPS" 'BEGIN { print a / b }')" "$(awk -v a="$H_P99" -v b="$D_P99" 'BEGIN { print a / b }')" "$(col $h 6)" "$h" \
      "$(awk -v a="$R_RPS" -v b="$H_RPS" 'BEGIN { print a / b }')" "$(awk -v a="$R_P99" -v b="$H_P99" 'BEGIN { print a / b }')"
  done
  echo "goal: router >= 1.10x HAProxy's req/s with a p99 no worse (p99 ratio <= 1.00x)"
fi
if [ -n "${BASELINE:-}" ]; then
  B_RPS="$(col baseline 1)"; B_P50="$(col baseline 2)"; B_P99="$(col baseline 3)"
  printf '%-8s %12.0f %10.0f %10.0f   (router/baseline: %.3fx req/s, %.3fx p99)\n' baseline "$B_RPS" "$B_P50" "$B_P99" \
    "$(awk -v a="$R_RPS" -v b="$B_RPS" 'BEGIN { print a / b }')" "$(awk -v a="$R_P99" -v b="$B_P99" 'BEGIN { print a / b }')"
fi
awk -v dr="$D_RPS" -v rr="$R_RPS" -v d99="$D_P99" -v r99="$R_P99" -v d50="$D_P50" -v r50="$R_P50" 'BEGIN {
  printf "ratio    %12.2fx %9.2fx %9.2fx   (router/direct; goal: req/s >= 0.50x, p99 <= 1.50x)\n", rr / dr, r50 / d50, r99 / d99
}'
echo "router CPU per proxied request: ${R_CPU} us (backend: ${B_CPU} us)"
