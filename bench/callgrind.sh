#!/usr/bin/env bash
# User-space instructions per proxied request, repeatable whatever else the machine does:
# one raftgate node under valgrind's callgrind, a plain route to an nginx upstream on :9001,
# counters zeroed after a warm-up, then a fixed number of requests from a fixed client.
#   bench/callgrind.sh [path/to/raftgate]      (default: target/release/raftgate)
# Prints `instructions_per_request N`; KEEP=FILE keeps the callgrind profile for callgrind_annotate. Everything it starts, it stops by PID.
# Other routes (bench/auth_cost.sh uses these):
#   bench/callgrind.sh BINARY PATH['|'HEADER]...   measures each PATH in turn (ab -H HEADER), one line each;
#   SETUP=CMD   run as `CMD ADMIN_ADDR` once the node is ready, instead of the default service + route "/";
#   PORT=P      proxy port (default 8186; admin P+10, cluster P-10). An upstream already on :9001 is reused.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"
BIN="$(realpath "${1:-$HERE/../target/release/raftgate}")"
shift $(($# > 0 ? 1 : 0))
TARGETS=("$@")
REQS="${REQS:-4000}"
CONNS="${CONNS:-8}"
PORT="${PORT:-8186}"
ADMIN="127.0.0.1:$((PORT + 10))"
need_tools "valgrind valgrind" "nginx nginx" "ab apache2-utils"
bench_init
DIR="$BENCH_DIR"
upstream_or_reuse
node_config "$DIR/node.toml" data "127.0.0.1:$PORT" "$ADMIN" "127.0.0.1:$((PORT - 10))"
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$BIN" serve --config "$DIR/node.toml" 2>"$DIR/vg.log" &
VG=$!; bench_track "$VG"
for _ in $(seq 600); do curl -sf -o /dev/null "http://$ADMIN/readyz" && break; sleep 0.1; done
if [ -n "${SETUP:-}" ]; then
  $SETUP "$ADMIN"
else
  curl -sf -X PUT "http://$ADMIN/services/bench" -d '{"targets":[{"url":"http://127.0.0.1:9001"}]}' >/dev/null
  curl -sf -X PUT "http://$ADMIN/routes/bench" -d '{"service":"bench","paths":["/"]}' >/dev/null
fi
# One measured route: $1 path, $2 optional request header, $3 index (profiles of earlier routes are moved aside).
measure() {
  local path=$1 hdr=(); [ -n "$2" ] && hdr=(-H "$2")
  ab -q -k -n 500 -c "$CONNS" "${hdr[@]}" "http://127.0.0.1:$PORT$path" >/dev/null          # warm-up: pools, code paths
  callgrind_control -z "$VG" >/dev/null
  ab -q -k -n "$REQS" -c "$CONNS" "${hdr[@]}" "http://127.0.0.1:$PORT$path" > "$DIR/ab.txt"
  callgrind_control -d "$VG" >/dev/null
  sleep 1
  ok=$(awk '/Complete requests/{print $3}' "$DIR/ab.txt"); bad=$(awk '/Failed requests/{print $3}' "$DIR/ab.txt")
  [ "$bad" = 0 ] || { echo "failed requests: $bad" >&2; exit 1; }
  non2xx=$(awk '/Non-2xx responses/{print $3}' "$DIR/ab.txt")
  [ -z "$non2xx" ] || { echo "non-2xx responses on $path: $non2xx" >&2; exit 1; }
  ir=$(for f in "$DIR"/cg.out.*; do callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; done | sort -n | tail -1)
  if [ "${#TARGETS[@]}" = 0 ]; then
    [ -n "${KEEP:-}" ] && cp "$DIR"/cg.out.* "$KEEP" 2>/dev/null
    echo "instructions_per_request $((ir / ok))  (requests $ok, total Ir $ir, binary $BIN)"
  else
    [ -n "${KEEP:-}" ] && cp "$DIR"/cg.out.* "$KEEP.$3" 2>/dev/null
    echo "instructions_per_request $((ir / ok))  (route $path, requests $ok, total Ir $ir, binary $BIN)"
    mkdir -p "$DIR/done$3"; mv "$DIR"/cg.out.* "$DIR/done$3/"
  fi
}
if [ "${#TARGETS[@]}" = 0 ]; then
  measure / "" 0
else
  i=0; for t in "${TARGETS[@]}"; do i=$((i + 1)); measure "${t%%|*}" "$([[ $t == *'|'* ]] && echo "${t#*|}")" "$i"; done
fi
