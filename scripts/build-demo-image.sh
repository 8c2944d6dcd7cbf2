#!/usr/bin/env bash
# Builds the Paz demo workload (examples/demo-app) into a static binary and a local
# `FROM scratch` Docker image. No registry or network access is needed.
#
#   scripts/build-demo-image.sh                  # tags paz-demo:v1 paz-demo:v2 paz-demo:v3
#   scripts/build-demo-image.sh my/demo:latest   # custom tag(s)
#
# Every tag gets the same binary, with its version baked in as the image's default VERSION
# env (`ENV VERSION=...`, what `GET /` answers), taken from the tag: paz-demo:v2 answers v2.
# Only a tag of the form vN or vN.N... (v2, v10, v1.2.3) names a version; any other tag
# (`latest`, `dev`, no tag at all) gets the app's default, v1. `docker run -e VERSION=x`
# still overrides it. Tags with the same version share one image; all images share the
# binary layer.
# Idempotent: cargo rebuilds only on source changes, and docker build is skipped when every
# tag already holds an image built from the identical binary (label paz.demo.binary-sha256)
# with the expected version (label paz.demo.version).
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

# 2. Images, unless every tag already carries this exact binary and its version.
# The version a tag bakes in: its tag part (after the last ':' that is not followed by a '/',
# so a registry port is not a tag) if it looks like vN or vN.N..., else v1.
tag_version() {
    local tag="$1" name="${1##*/}" version=v1
    if [[ "$name" == *:* ]]; then
        local t="${tag##*:}"
        if [[ "$t" =~ ^v[0-9]+(\.[0-9]+)*$ ]]; then
            version="$t"
        fi
    fi
    printf '%s' "$version"
}

LABEL=paz.demo.binary-sha256
VERSION_LABEL=paz.demo.version
if [[ "${FORCE:-0}" != 1 ]]; then
    up_to_date=1
    for tag in "${TAGS[@]}"; do
        have="$("$DOCKER" image inspect --format "{{ index .Config.Labels \"$LABEL\" }} {{ index .Config.Labels \"$VERSION_LABEL\" }}" "$tag" 2>/dev/null || true)"
        if [[ "$have" != "$SHA $(tag_version "$tag")" ]]; then
            up_to_date=0
            break
        fi
    done
    if [[ $up_to_date == 1 ]]; then
        say "images up to date, docker build skipped: ${TAGS[*]}"
        exit 0
    fi
fi

OLD_IDS="$(for tag in "${TAGS[@]}"; do "$DOCKER" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true; done | sort -u)"

CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/paz-demo-image.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
cp "$BIN" "$CONTEXT/demo-app"

# One build per distinct version (in first-seen order), tagging every tag of that version.
VERSIONS=()
declare -A VERSION_TAGS=()
for tag in "${TAGS[@]}"; do
    version="$(tag_version "$tag")"
    if [[ -z "${VERSION_TAGS[$version]+set}" ]]; then
        VERSIONS+=("$version")
        VERSION_TAGS[$version]=""
    fi
    VERSION_TAGS[$version]+=" -t $tag"
done

NEW_IDS=()
for version in "${VERSIONS[@]}"; do
    # Same Dockerfile for every version up to the last line, so the binary layer is shared.
    { cat "$DEMO/Dockerfile"; printf '# Baked in by scripts/build-demo-image.sh; `-e VERSION=x` overrides it.\nENV VERSION=%s\n' "$version"; } \
        >"$CONTEXT/Dockerfile"
    read -r -a TAG_ARGS <<<"${VERSION_TAGS[$version]}"
    say "docker build (VERSION=$version) ${TAG_ARGS[*]}"
    # Quiet on success (the legacy builder prints a deprecation notice); full output on failure.
    if ! BUILD_OUT="$("$DOCKER" build --quiet --label "$LABEL=$SHA" --label "$VERSION_LABEL=$version" \
        "${TAG_ARGS[@]}" "$CONTEXT" 2>&1)"; then
        printf '%s\n' "$BUILD_OUT" >&2
        say "error: docker build failed" >&2
        exit 1
    fi
    first_tag="${TAG_ARGS[1]}"
    IMAGE_ID="$("$DOCKER" image inspect --format '{{.Id}}' "$first_tag")"
    IMAGE_SIZE="$("$DOCKER" image inspect --format '{{.Size}}' "$first_tag")"
    NEW_IDS+=("$IMAGE_ID")
    say "built image ${IMAGE_ID#sha256:} ($IMAGE_SIZE bytes, VERSION=$version) tagged:${VERSION_TAGS[$version]//-t /}"
done

# Remove images this script built before that lost their last tag (ignores images in use).
for old in $OLD_IDS; do
    if [[ " ${NEW_IDS[*]} " != *" $old "* ]] && [[ "$("$DOCKER" image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" == 0 ]]; then
        if "$DOCKER" image rm "$old" >/dev/null 2>&1; then
            say "removed superseded untagged image ${old#sha256:}"
        fi
    fi
done
