#!/usr/bin/env bash
# Builds the image raftgate:local with no container registry: a fully static raftgate binary
# (glibc, +crt-static) copied into an image FROM scratch (docker/Dockerfile.scratch). Nothing is
# pulled. Then `docker compose up` runs the 3-node demo cluster (docker-compose.yml).
#
#   docker/build-image.sh            # static release build + image raftgate:local
#   IMAGE=raftgate:x docker/build-image.sh
#
# The static build has its own target directory (default target/static, or
# RAFTGATE_STATIC_TARGET_DIR) so it never fights over the lock of, or invalidates, target/.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-raftgate:local}
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=${RAFTGATE_STATIC_TARGET_DIR:-target/static}
BIN=$TARGET_DIR/$TRIPLE/release/raftgate

command -v docker >/dev/null || { echo "build-image.sh: docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build-image.sh: cannot reach the docker daemon (docker info failed)" >&2; exit 1; }

echo "==> static release build ($BIN)"
# RUSTFLAGS with an explicit --target apply to the binary only, not to build scripts and
# proc-macros (which must stay dynamic to be loaded by the compiler).
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    CARGO_TARGET_DIR=$TARGET_DIR \
    cargo build --release --target "$TRIPLE" --bin raftgate

# A dynamic binary would start nowhere in a scratch image: refuse it here, not at `up`.
if command -v file >/dev/null && ! file -L "$BIN" | grep -q 'static'; then
    echo "build-image.sh: $BIN is not statically linked: $(file -L "$BIN")" >&2
    exit 1
fi
"$BIN" --version >/dev/null

echo "==> staging docker/bin/raftgate"
mkdir -p docker/bin/empty
# Debug info off (100 MB -> ~20 MB); symbols kept for readable backtraces.
strip --strip-debug -o docker/bin/raftgate.tmp "$BIN" 2>/dev/null || cp "$BIN" docker/bin/raftgate.tmp
mv docker/bin/raftgate.tmp docker/bin/raftgate

echo "==> docker build -t $IMAGE (FROM scratch)"
docker build -t "$IMAGE" -f docker/Dockerfile.scratch docker
echo "built $IMAGE; now: docker compose up   (or docker-compose up)"
