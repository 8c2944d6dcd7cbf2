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
  "python3:python3"
  "pebble:pebble"
  "docker-registry:docker-registry"
  "openssl:openssl"
  "chromium:chromium"
  "chromedriver:chromium-driver"
  "etcd:etcd-server"
  "etcdctl:etcd-client"
  "protoc:protobuf-compiler"
  "haproxy:haproxy"
  "ip:iproute2"
  "nsenter:util-linux"
  "iptables:iptables"
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

# Docker: the engine is the machine's (this script cannot install it). Tests that need it
# fail when CI=true and it is missing, and skip loudly otherwise.
if docker info >/dev/null 2>&1; then
  log "building the demo image (paz-demo:v1, v2, v3)"
  scripts/build-demo-image.sh paz-demo:v1 paz-demo:v2 paz-demo:v3
elif [ "${CI:-}" = "true" ]; then
  echo "error: the Docker Engine is not reachable; the tests need it (CI=true)" >&2
  exit 1
else
  log "WARNING: Docker is not reachable: the tests that need it will be SKIPPED"
fi

log "testing the demo app"
cargo test --quiet --manifest-path examples/demo-app/Cargo.toml

log "building the binaries"
cargo build --workspace --bins --quiet

log "running the tests"
cargo test --workspace --all-features --no-fail-fast "$@"

# The API fuzzed from its own OpenAPI document (Schemathesis from PyPI, in a venv under the
# target dir): no 5xx, every answer as documented, schema-valid requests accepted.
log "fuzzing the API from its OpenAPI document (scripts/schemathesis.sh)"
if ! python3 -m venv --help >/dev/null 2>&1; then
  log "installing python3-venv"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
scripts/schemathesis.sh

# The embedded example deploys v1 -> v2 on the real engine under load, with no paz-server,
# and exits non-zero on any failed request.
if docker info >/dev/null 2>&1; then
  log "running the embedded example (examples/embedded_deploy.rs)"
  cargo run --quiet --example embedded_deploy --features docker
fi
