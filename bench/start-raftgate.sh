#!/usr/bin/env bash
# One raftgate node for peers.sh: proxy 127.0.0.1:8086 -> http://127.0.0.1:9001/, one proxy worker.
#   RAFTGATE_CMD="exec $PWD/bench/start-raftgate.sh" bench/peers.sh
# RAFTGATE_BIN picks the binary (default: target/release/raftgate of this checkout).
# Runs in the foreground until TERM; stops the node it started, by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${RAFTGATE_BIN:-$HERE/../target/release/raftgate}"
PORT="${RAFTGATE_PORT:-8086}"
ADMIN="127.0.0.1:$((PORT + 10))"
DIR="$(mktemp -d)"
cat >"$DIR/node.toml" <<TOML
node_id = 1
data_dir = "$DIR/data"
workers = 1
[listen]
proxy = "127.0.0.1:$PORT"
admin = "$ADMIN"
cluster = "127.0.0.1:$((PORT + 20))"
TOML
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$DIR/node.toml" &
NODE=$!
trap 'kill -TERM $NODE 2>/dev/null; wait $NODE 2>/dev/null; rm -rf "$DIR"' EXIT
trap 'exit 0' TERM INT
for _ in $(seq 200); do curl -sf -o /dev/null "http://$ADMIN/readyz" && break; sleep 0.05; done
curl -sf -X PUT "http://$ADMIN/services/bench" -d '{"targets":[{"url":"http://127.0.0.1:9001"}]}' >/dev/null
curl -sf -X PUT "http://$ADMIN/routes/bench" -d '{"service":"bench","paths":["/"]}' >/dev/null
wait $NODE
