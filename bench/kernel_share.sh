#!/usr/bin/env bash
# Where a proxied request's CPU goes: user and kernel (system) µs per request, and the system
# calls per request, of nginx and raftgate proxying the same upstream, interleaved in one run.
# This is the measurement behind bench/RESULTS.md "What bounds CPU per request".
#
#   bench/kernel_share.sh [path/to/raftgate]     (default target/release/raftgate; ~1 min)
#   C=256 REPS=5 D=4 bench/kernel_share.sh       connections, repetitions, seconds per run
#   STRACE=1 bench/kernel_share.sh               also counts system calls per request
#                                                (strace -c -f on each proxy for one extra run;
#                                                strace slows the proxy, so no CPU is taken then)
# nginx: bench/nginx-proxy.conf (:8081, one worker, upstream keep-alive 64); raftgate: one node,
# one proxy worker, plain route / (:8186); both to the nginx upstream on :9001 (100 bytes).
# CPU is utime and stime from /proc (raftgate: every thread of the process; nginx: its worker)
# around `wrk -t1 -cC -dD`, divided by the requests wrk completed. Stops what it starts, by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"
BIN="$(realpath "${1:-$HERE/../target/release/raftgate}")"
C="${C:-64}"; D="${D:-4}"; REPS="${REPS:-3}"
need_tools "wrk wrk" "nginx nginx" "curl curl"
[ "${STRACE:-0}" = 0 ] || need_tools "strace strace"
ports_free 8081 8084 8088 8089 8186 8196 8176
bench_init
upstream_or_reuse
start_nginx px "$HERE/nginx-proxy.conf"; NGX=$NGINX_PID
node_config "$BENCH_DIR/node.toml" data "127.0.0.1:8186" "127.0.0.1:8196" "127.0.0.1:8176"
start_node "$BIN" "$BENCH_DIR/node.toml" 127.0.0.1:8196 "$BENCH_DIR/rg.log"; RG=$NODE
admin 127.0.0.1:8196 PUT /services/bench '{"targets":[{"url":"http://127.0.0.1:9001"}]}'
admin 127.0.0.1:8196 PUT /routes/bench '{"service":"bench","paths":["/"]}'
wait_http http://127.0.0.1:8081/
wait_http http://127.0.0.1:8186/
WORKER=$(pgrep -P "$NGX" | head -1)
times() { awk '{sub(/^.*\) /,""); print $12, $13}' "/proc/$1/stat"; }
echo "proxy  c=$C  requests  user_us  sys_us  total_us  p99"
for rep in $(seq "$REPS"); do
  for t in "nginx 8081 $WORKER" "raftgate 8186 $RG"; do
    set -- $t
    wrk -t1 -c"$C" -d1s "http://127.0.0.1:$2/" >/dev/null   # warm-up: pools filled
    read -r u0 s0 < <(times "$3")
    wrk -t1 -c"$C" -d"${D}s" --latency "http://127.0.0.1:$2/" >"$BENCH_DIR/wrk.txt"
    read -r u1 s1 < <(times "$3")
    wrk_parse "$BENCH_DIR/wrk.txt"
    [ -z "$WRK_ERRS" ] || { echo "$1: wrk reported errors: $WRK_ERRS" >&2; exit 1; }
    awk -v n="$WRK_REQS" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v k="$TICK" -v name="$1" -v p="$WRK_P99" \
      'BEGIN { printf "%-8s %9d %8.1f %7.1f %9.1f  %.2f ms\n", name, n, u/k*1e6/n, s/k*1e6/n, (u+s)/k*1e6/n, p/1000 }'
  done
done
[ "${STRACE:-0}" = 0 ] && exit 0
echo "system calls per request (strace -c -f, one run of ${D} s each):"
for t in "nginx 8081 $WORKER" "raftgate 8186 $RG"; do
  set -- $t
  strace -c -f -p "$3" -o "$BENCH_DIR/strace.$1" 2>/dev/null & ST=$!
  sleep 1
  wrk -t1 -c"$C" -d"${D}s" "http://127.0.0.1:$2/" >"$BENCH_DIR/wrk.txt"
  kill -INT "$ST"; wait "$ST" 2>/dev/null || true
  wrk_parse "$BENCH_DIR/wrk.txt"
  awk -v n="$WRK_REQS" -v name="$1" '
    $4 ~ /^[0-9]+$/ && $NF != "total" && $4 / n >= 0.005 { calls = calls sprintf(" %s %.2f", $NF, $4 / n); sum += $4 }
    END { printf "%-8s %.2f:%s\n", name, sum / n, calls }' "$BENCH_DIR/strace.$1"
done
