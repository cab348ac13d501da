#!/usr/bin/env bash
# One raftgate node for peers.sh: proxy 127.0.0.1:8086 -> http://127.0.0.1:9001/, one proxy worker.
#   RAFTGATE_CMD="exec $PWD/bench/start-raftgate.sh" bench/peers.sh
# RAFTGATE_BIN picks the binary (default: target/release/raftgate of this checkout).
# The route is written on a first start with the proxy on a side port, then the node restarts on
# the real port with that state (a restarted node replays its log before it serves), so the
# harness never sees the port before the route exists. Stops what it started, by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"   # node_config
BIN="${RAFTGATE_BIN:-$HERE/../target/release/raftgate}"
PORT="${RAFTGATE_PORT:-8086}"
ADMIN="127.0.0.1:$((PORT + 10))"
DIR="$(mktemp -d)"
NODE=
trap '[ -n "$NODE" ] && kill -TERM $NODE 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
trap 'exit 0' TERM INT
BENCH_DIR="$DIR"   # node_config keeps the node's data under it
config() { node_config "$DIR/node.toml" data "127.0.0.1:$1" "$ADMIN" "127.0.0.1:$((PORT + 20))"; }   # proxy port
ready() { for _ in $(seq 200); do curl -sf -o /dev/null "http://$ADMIN/readyz" && return 0; sleep 0.05; done; return 1; }

config $((PORT + 30))
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$DIR/node.toml" & NODE=$!
ready
curl -sf -X PUT "http://$ADMIN/services/bench" -d '{"targets":[{"url":"http://127.0.0.1:9001"}]}' >/dev/null
curl -sf -X PUT "http://$ADMIN/routes/bench" -d '{"service":"bench","paths":["/"]}' >/dev/null
kill -TERM $NODE; wait $NODE || true

config "$PORT"
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$DIR/node.toml" & NODE=$!
wait $NODE
