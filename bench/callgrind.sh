#!/usr/bin/env bash
# User-space instructions per proxied request, repeatable whatever else the machine does:
# one raftgate node under valgrind's callgrind, a plain route to an nginx upstream on :9001,
# counters zeroed after a warm-up, then a fixed number of requests from a fixed client.
#   bench/callgrind.sh [path/to/raftgate]      (default: target/release/raftgate)
# Prints `instructions_per_request N`; KEEP=FILE keeps the callgrind profile for callgrind_annotate. Everything it starts, it stops by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$(realpath "${1:-$HERE/../target/release/raftgate}")"
REQS="${REQS:-4000}"
CONNS="${CONNS:-8}"
command -v valgrind >/dev/null && command -v nginx >/dev/null && command -v ab >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq valgrind nginx apache2-utils >/dev/null; }
DIR="$(mktemp -d)"; PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
mkdir -p "$DIR/up/tmp"
nginx -p "$DIR/up/" -e "$DIR/up/error.log" -c "$HERE/nginx-upstream.conf" & PIDS+=($!)
cat >"$DIR/node.toml" <<TOML
node_id = 1
data_dir = "$DIR/data"
workers = 1
[listen]
proxy = "127.0.0.1:8186"
admin = "127.0.0.1:8196"
cluster = "127.0.0.1:8176"
TOML
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$BIN" serve --config "$DIR/node.toml" 2>"$DIR/vg.log" & PIDS+=($!)
VG=$!
for _ in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:8196/readyz && break; sleep 0.1; done
curl -sf -X PUT http://127.0.0.1:8196/services/bench -d '{"targets":[{"url":"http://127.0.0.1:9001"}]}' >/dev/null
curl -sf -X PUT http://127.0.0.1:8196/routes/bench -d '{"service":"bench","paths":["/"]}' >/dev/null
ab -q -k -n 500 -c "$CONNS" http://127.0.0.1:8186/ >/dev/null          # warm-up: pools, code paths
callgrind_control -z "$VG" >/dev/null
ab -q -k -n "$REQS" -c "$CONNS" http://127.0.0.1:8186/ > "$DIR/ab.txt"
callgrind_control -d "$VG" >/dev/null
sleep 1
ok=$(awk '/Complete requests/{print $3}' "$DIR/ab.txt"); bad=$(awk '/Failed requests/{print $3}' "$DIR/ab.txt")
[ "$bad" = 0 ] || { echo "failed requests: $bad" >&2; exit 1; }
ir=$(for f in "$DIR"/cg.out.*; do callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; done | sort -n | tail -1)
[ -n "${KEEP:-}" ] && cp "$DIR"/cg.out.* "$KEEP" 2>/dev/null
echo "instructions_per_request $((ir / ok))  (requests $ok, total Ir $ir, binary $BIN)"
