#!/usr/bin/env bash
# HTTPS through Paz's router vs HTTPS through HAProxy 2.6 terminating TLS with the same
# certificate, in front of the same backend, with wrk on loopback: keep-alive connections,
# and a new connection (a full TLS handshake) per request.
#
#   benches/https.sh                     # 3 alternating runs of 5 s per mode and proxy
#   RUNS=5 DURATION=10s benches/https.sh
#
# Builds the release examples of paz-proxy (bench_backend, bench_router with PAZ_BENCH_TLS),
# makes a self-signed certificate with openssl, starts HAProxy with 2 threads and the router on
# a 2-thread runtime (TLS connections are served on the caller's runtime), and prints the
# medians of req/s and p99 and the router/HAProxy ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-64}"
for tool in wrk haproxy openssl; do
  command -v "$tool" >/dev/null || { echo "benches/https.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done

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

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

start() {
  local name="$1"; shift
  "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID="$!"; PIDS+=("$PID")
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$TMP/$name.out" 2>/dev/null; then
      ADDR="$(sed -n 's/^listening on //p' "$TMP/$name.out")"; return
    fi
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$TMP/$name.err" >&2; exit 1
}

start backend "$BIN/bench_backend" 127.0.0.1:0 2
BACKEND="$ADDR"
PAZ_BENCH_TLS="$TMP/cert.pem:$TMP/key.pem" start router "$BIN/bench_router" "$BACKEND" 127.0.0.1:0 0
ROUTER="$ADDR"
HAPROXY_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$TMP/haproxy.cfg" <<CFG
global
    nbthread 2
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $TMP/combined.pem alpn http/1.1
    default_backend be
backend be
    http-reuse always
    server s1 $BACKEND
CFG
haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.out" 2>&1 &
PIDS+=("$!")
sleep 0.5
echo "backend $BACKEND, router https://$ROUTER, haproxy https://127.0.0.1:$HAPROXY_PORT (nbthread 2)"

parse() {
  awk '
    function us(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000000 }
      return v + 0
    }
    $1 == "99%" { p99 = us($2) }
    $1 == "Requests/sec:" { rps = $2 }
    / Socket errors:|Non-2xx/ { print "warning: " $0 > "/dev/stderr" }
    END { printf "%s %s\n", rps, p99 }
  '
}
median() { sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m }'; }

for mode in keepalive newconn; do
  extra=()
  [ "$mode" = newconn ] && extra=(-H "Connection: close")
  : >"$TMP/router.$mode"; : >"$TMP/haproxy.$mode"
  echo "command: wrk -t2 -c$CONNECTIONS -d$DURATION --latency ${extra[*]} https://ADDR/   ($mode)"
  for i in $(seq "$RUNS"); do
    for target in router haproxy; do
      addr="$ROUTER"; [ "$target" = haproxy ] && addr="127.0.0.1:$HAPROXY_PORT"
      line="$(wrk -t2 "-c$CONNECTIONS" "-d$DURATION" --latency "${extra[@]}" "https://$addr/" | parse)"
      echo "$line" >>"$TMP/$target.$mode"
      printf 'run %d %-8s %-9s %10.0f req/s  p99 %8.0f us\n' "$i" "$mode" "$target" $line
    done
  done
  R_RPS="$(awk '{print $1}' "$TMP/router.$mode" | median)"; R_P99="$(awk '{print $2}' "$TMP/router.$mode" | median)"
  H_RPS="$(awk '{print $1}' "$TMP/haproxy.$mode" | median)"; H_P99="$(awk '{print $2}' "$TMP/haproxy.$mode" | median)"
  awk -v rr="$R_RPS" -v hr="$H_RPS" -v r99="$R_P99" -v h99="$H_P99" -v m="$mode" 'BEGIN {
    printf "median %-9s router %8.0f req/s p99 %7.0f us | haproxy %8.0f req/s p99 %7.0f us | ratio %.2fx req/s, %.2fx p99\n", m, rr, r99, hr, h99, rr / hr, r99 / h99
  }'
done
