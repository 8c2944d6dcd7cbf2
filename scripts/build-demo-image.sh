#!/usr/bin/env bash
# Builds the Paz demo workload (examples/demo-app) into a static binary and a local
# `FROM scratch` Docker image. No registry or network access is needed.
#
#   scripts/build-demo-image.sh                  # tags paz-demo:v1 paz-demo:v2 paz-demo:v3
#   scripts/build-demo-image.sh my/demo:latest   # custom tag(s)
#
# All tags point at the same image: the version the app reports comes from the VERSION env
# var at run time (`docker run -e VERSION=v2 paz-demo:v1`), so tags are only labels.
# Idempotent: cargo rebuilds only on source changes, and docker build is skipped when every
# tag already holds an image built from the identical binary (label paz.demo.binary-sha256).
#
# Env: CARGO_TARGET_DIR (the demo uses "$CARGO_TARGET_DIR/demo-app"; default <repo>/target/demo-app),
#      DOCKER (default: docker), FORCE=1 to rebuild the image regardless.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/examples/demo-app"
DOCKER="${DOCKER:-docker}"
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    TARGET_DIR="$CARGO_TARGET_DIR/demo-app"
else
    TARGET_DIR="$ROOT/target/demo-app"
fi
TAGS=("$@")
if [[ ${#TAGS[@]} -eq 0 ]]; then
    TAGS=(paz-demo:v1 paz-demo:v2 paz-demo:v3)
fi

say() { printf '[build-demo-image] %s\n' "$*"; }

# 1. Static binary. An explicit --target keeps crt-static away from host build scripts, and
#    the dedicated target dir keeps these RUSTFLAGS from invalidating the main workspace build.
HOST="$(rustc -vV | sed -n 's/^host: //p')"
case "$HOST" in
    *-linux-gnu | *-linux-musl) ;;
    *) say "unsupported host $HOST (need a Linux target for a static binary)" >&2; exit 1 ;;
esac
say "cargo build --release (target $HOST, crt-static) into $TARGET_DIR"
(
    cd "$ROOT"
    CARGO_TARGET_DIR="$TARGET_DIR" RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --quiet --target "$HOST" \
        --manifest-path examples/demo-app/Cargo.toml
)
BIN="$TARGET_DIR/$HOST/release/demo-app"

FILE_INFO="$(file -b "$BIN")"
if [[ "$FILE_INFO" != *"statically linked"* && "$FILE_INFO" != *"static-pie linked"* ]]; then
    say "error: $BIN is not statically linked: $FILE_INFO" >&2
    exit 1
fi
SHA="$(sha256sum "$BIN" | cut -d' ' -f1)"
SIZE="$(stat -c %s "$BIN")"
say "binary: $BIN ($SIZE bytes, static, sha256 ${SHA:0:12})"

# 2. Image, unless every tag already carries this exact binary.
LABEL=paz.demo.binary-sha256
if [[ "${FORCE:-0}" != 1 ]]; then
    up_to_date=1
    for tag in "${TAGS[@]}"; do
        have="$("$DOCKER" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$tag" 2>/dev/null || true)"
        if [[ "$have" != "$SHA" ]]; then
            up_to_date=0
            break
        fi
    done
    if [[ $up_to_date == 1 ]]; then
        say "image up to date, docker build skipped: ${TAGS[*]}"
        exit 0
    fi
fi

OLD_IDS="$(for tag in "${TAGS[@]}"; do "$DOCKER" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true; done | sort -u)"

CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/paz-demo-image.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
cp "$DEMO/Dockerfile" "$CONTEXT/Dockerfile"
cp "$BIN" "$CONTEXT/demo-app"

TAG_ARGS=()
for tag in "${TAGS[@]}"; do
    TAG_ARGS+=(-t "$tag")
done
say "docker build ${TAG_ARGS[*]}"
# Quiet on success (the legacy builder prints a deprecation notice); full output on failure.
if ! BUILD_OUT="$("$DOCKER" build --quiet --label "$LABEL=$SHA" "${TAG_ARGS[@]}" "$CONTEXT" 2>&1)"; then
    printf '%s\n' "$BUILD_OUT" >&2
    say "error: docker build failed" >&2
    exit 1
fi
IMAGE_ID="$("$DOCKER" image inspect --format '{{.Id}}' "${TAGS[0]}")"
IMAGE_SIZE="$("$DOCKER" image inspect --format '{{.Size}}' "${TAGS[0]}")"
say "built image ${IMAGE_ID#sha256:} ($IMAGE_SIZE bytes) tagged: ${TAGS[*]}"

# Remove images this script built before that lost their last tag (ignores images in use).
for old in $OLD_IDS; do
    if [[ "$old" != "$IMAGE_ID" ]] && [[ "$("$DOCKER" image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" == 0 ]]; then
        if "$DOCKER" image rm "$old" >/dev/null 2>&1; then
            say "removed superseded untagged image ${old#sha256:}"
        fi
    fi
done
