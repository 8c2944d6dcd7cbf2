#!/usr/bin/env bash
# Runs the whole Paz test suite. On a fresh Debian machine with Rust and Docker it first
# installs what is missing (with apt-get), then builds everything and runs every test.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -p paz-core # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages the tests need, as "command:package".
REQUIRED=(
  "curl:curl"
)
missing=()
for pair in "${REQUIRED[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  log "installing missing packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "error: cargo is missing; install Rust first (https://rustup.rs)" >&2; exit 1; }

log "building the binaries"
cargo build --workspace --bins --quiet

log "running the tests"
cargo test --workspace --no-fail-fast "$@"
