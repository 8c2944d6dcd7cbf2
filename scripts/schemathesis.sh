#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with Schemathesis: builds paz-server,
# starts it on a free loopback port (memory store, no scheduler, a throwaway data dir), runs
# every check and the stateful phase (which follows the document's links from a create), stops
# the server and exits non-zero on any failure.
#
#   scripts/schemathesis.sh                  # a bounded run (MAX_EXAMPLES per operation)
#   MAX_EXAMPLES=200 scripts/schemathesis.sh # a longer one
#   scripts/schemathesis.sh --seed 1         # extra arguments go to `schemathesis run`
#
# Schemathesis is installed with pip into a venv under the cargo target dir when missing
# (SCHEMATHESIS_VENV overrides where). Rules JSON Schema cannot state are met by the hooks in
# scripts/schemathesis/hooks.py; scripts/schemathesis/schemathesis.toml lists the statuses
# that depend on the server's state.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="${SCHEMATHESIS_VENV:-$TARGET_DIR/schemathesis-venv}"
MAX_EXAMPLES="${MAX_EXAMPLES:-30}"
SCHEMATHESIS_VERSION='schemathesis>=4.32,<5'

if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  log "installing Schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "$SCHEMATHESIS_VERSION"
fi

log "building paz-server"
cargo build --quiet -p paz-server --bin paz-server
SERVER="$TARGET_DIR/debug/paz-server"

DATA_DIR="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT

TOKEN="schemathesis-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
log "starting paz-server (memory store, no scheduler)"
# Port 0: the server picks a free port and prints the address it listens on.
# --allow-host-mounts: which host paths a server refuses is its setting, not the document's
# (paz-server/tests/access.rs tests the refusal).
PAZ_TOKEN="$TOKEN" "$SERVER" --data-dir "$DATA_DIR" --store memory --scheduler none --allow-host-mounts \
  --api-listen 127.0.0.1:0 --log-format json >"$DATA_DIR/stdout" 2>"$DATA_DIR/stderr" &
SERVER_PID=$!
URL=""
for _ in $(seq 1 100); do
  URL="$(sed -n 's|^paz-server listening on \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$DATA_DIR/stdout")"
  [ -n "$URL" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA_DIR/stderr" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "error: paz-server did not start" >&2; cat "$DATA_DIR/stderr" >&2; exit 1; }
log "fuzzing $URL ($MAX_EXAMPLES examples per operation)"

# One worker: with several, Python 3.11's ast.parse (called by Hypothesis from threads) can
# fail with "AST constructor recursion depth mismatch"; one is also kinder to a small machine.
status=0
# Schemathesis keeps its cache (and the cases `st replay` reruns) in the directory it runs in.
RUN_DIR="$TARGET_DIR/schemathesis-run"
mkdir -p "$RUN_DIR"
CONFIG_DIR="$PWD/scripts/schemathesis"
(
  cd "$RUN_DIR"
  PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$CONFIG_DIR" \
    "$VENV/bin/schemathesis" --config-file "$CONFIG_DIR/schemathesis.toml" \
    run "$URL/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --workers 1 \
    "$@"
) || status=$?

# A panic is a failure even when every answer looked right.
if grep -q '"panicked\|panicked at' "$DATA_DIR/stderr"; then
  echo "error: paz-server panicked:" >&2
  grep 'panicked' "$DATA_DIR/stderr" >&2
  status=1
fi
exit "$status"
