#!/usr/bin/env bash
# CPU cost of a response-cache HIT per request, in ONE run, next to proxying:
#   rg_plain   raftgate, route /plain (no cache) -> nginx upstream :9001
#   rg_hit     raftgate, route /cached ({"cache": {"ttl_s": 3600}}): every measured request a HIT
#   nginx      nginx proxy_pass (bench/nginx-proxy.conf, :8081), no cache
#   nginx_hit  nginx proxy_cache (bench/nginx-cache.conf, :8087): every measured request a HIT
#   bench/cache_cost.sh [path/to/raftgate]      (default: target/release/raftgate)
#   ROUNDS=3 N=20000 C=32 bench/cache_cost.sh   (the defaults; about 1 min)
# One raftgate node (workers = 1; proxy 127.0.0.1:8486, admin :8496, cluster :8476); each nginx
# runs 1 worker. CPU is utime+stime (/proc/PID/stat) of the proxy's process and its children
# around each bounded `ab -k -n N -c C`, and the same for the upstream (a HIT should cost it
# nothing). Rounds are interleaved (rg_plain, rg_hit, nginx, nginx_hit, rg_plain, …) so drift
# hits every target alike; medians are reported. Everything it starts, it stops by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"
BIN="$(realpath "${1:-$HERE/../target/release/raftgate}")"
ROUNDS="${ROUNDS:-3}"
N="${N:-20000}"
C="${C:-32}"
WARM="${WARM:-2000}"       # unmeasured requests per target before the first round
PORT=8486; ADMIN="127.0.0.1:8496"; CLUSTER="127.0.0.1:8476"
need_tools "nginx nginx" "ab apache2-utils"
[ -x "$BIN" ] || { echo "no raftgate binary at $BIN (cargo build --release)" >&2; exit 1; }

bench_init
DIR="$BENCH_DIR"
# nginx-proxy.conf also listens on 8088 (and 8084), unused here
ports_free 8486 8496 8476 8081 8084 8088 8087
upstream_or_reuse   # e.g. a concurrent auth_cost.sh: same fixed answer
UPSTREAM=$UPSTREAM_PID
start_nginx proxy "$HERE/nginx-proxy.conf"; NGINX=$NGINX_PID
start_nginx cache "$HERE/nginx-cache.conf"; NGINX_CACHE=$NGINX_PID

node_config "$DIR/node.toml" data "127.0.0.1:$PORT" "$ADMIN" "$CLUSTER"
start_node "$BIN" "$DIR/node.toml" "$ADMIN" "$DIR/node.log"
admin "$ADMIN" PUT /services/bench '{"targets":[{"url":"http://127.0.0.1:9001"}]}'
admin "$ADMIN" PUT /routes/plain '{"service":"bench","paths":["/plain"]}'
admin "$ADMIN" PUT /routes/cached '{"service":"bench","paths":["/cached"],"cache":{"ttl_s":3600}}'
for p in 8081 8087; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.05; done
done

declare -A URL=([rg_plain]="http://127.0.0.1:$PORT/plain" [rg_hit]="http://127.0.0.1:$PORT/cached"
                [nginx]="http://127.0.0.1:8081/" [nginx_hit]="http://127.0.0.1:8087/")
declare -A PROC=([rg_plain]=$NODE [rg_hit]=$NODE [nginx]=$NGINX [nginx_hit]=$NGINX_CACHE)
TARGETS=(rg_plain rg_hit nginx nginx_hit)

# --- checks: every target answers the upstream's 100 bytes; the cached ones MISS, then HIT ---
xcache() { curl -s -D - -o /dev/null "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}'; }
for t in "${TARGETS[@]}"; do
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${URL[$t]}")
  [ "$got" = "200 100" ] || { echo "check failed: $t answered '$got', want '200 100'" >&2; exit 1; }
done
for t in rg_hit nginx_hit; do
  [ "$(xcache "${URL[$t]}")" = HIT ] || { echo "check failed: $t is not a HIT after a first request" >&2; exit 1; }
done
[ -z "$(xcache "${URL[rg_plain]}")" ] || { echo "check failed: /plain carries X-Cache" >&2; exit 1; }
echo "# checks passed: all four answer 200 with the 100-byte body; rg_hit and nginx_hit answer X-Cache: HIT" >&2

up_ticks() { if [ -n "$UPSTREAM" ]; then proc_ticks "$UPSTREAM"; else echo 0; fi; }
run_ab() { ab_run "${URL[$1]}" "$2" "$C" "$3"; }   # target requests out-file

echo "# nproc=$(nproc) rounds=$ROUNDS n=$N c=$C warm-up=$WARM/target binary=$BIN" >&2
for t in "${TARGETS[@]}"; do run_ab "$t" "$WARM" "$DIR/warm.txt"; done
printf "target\tround\treqs\trps\tcpu_us_per_req\tupstream_us_per_req\n" >"$DIR/raw.tsv"
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    p0=$(proc_ticks "${PROC[$t]}"); u0=$(up_ticks)
    run_ab "$t" "$N" "$DIR/ab.txt"
    p1=$(proc_ticks "${PROC[$t]}"); u1=$(up_ticks)
    rps=$(ab_rps "$DIR/ab.txt"); us=$(us_per_req $((p1 - p0)) "$N"); uus=$(us_per_req $((u1 - u0)) "$N")
    printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$t" "$round" "$N" "$rps" "$us" "$uus" >>"$DIR/raw.tsv"
    printf "  round %s %-9s %6s req/s  %7s µs/req  upstream %6s µs/req\n" "$round" "$t" "$rps" "$us" "$uus" >&2
  done
done

python3 - "$DIR/raw.tsv" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows: by.setdefault(r["target"], []).append(r)
col = lambda rs, k: [float(r[k]) for r in rs]
med = {k: st.median(col(rs, "cpu_us_per_req")) for k, rs in by.items()}
print(f"median (min-max) over {len(by['rg_plain'])} interleaved rounds; CPU = utime+stime of the proxy's processes")
print(f"{'target':<9} | {'req/s':>21} | {'CPU µs/req':>18} | {'vs nginx':>8} | {'upstream µs/req':>15}")
for k, rs in by.items():
    cpu, rps = col(rs, "cpu_us_per_req"), col(rs, "rps")
    print(f"{k:<9} | {'%.0f (%.0f-%.0f)' % (st.median(rps), min(rps), max(rps)):>21} | "
          f"{'%.1f (%.1f-%.1f)' % (med[k], min(cpu), max(cpu)):>18} | {med[k] / med['nginx']:>7.2f}x | "
          f"{st.median(col(rs, 'upstream_us_per_req')):>15.1f}")
PY
