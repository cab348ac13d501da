#!/usr/bin/env bash
# raftgate vs nginx vs HAProxy, side by side in ONE run (issue #8): for each scenario and each
# connection count, wrk req/s, p50, p99 and the proxy's CPU µs per request.
#
#   bench/compare.sh [path/to/raftgate]     (default target/release/raftgate; ~6 min with the defaults)
#   DUR=4 REPS=3 CONNS="64 256" bench/compare.sh       the defaults
#   TARGETS="nginx rg" CONNS=64 REPS=1 bench/compare.sh   a subset (names below)
#   PUBLISH=1 bench/compare.sh   also copies results.csv / results.json / results.png into bench/
#
# Scenarios and targets (every proxy: one worker / one thread, all on 127.0.0.1):
#   plain     nginx (upstream keepalive 64), nginx_ka (keepalive 1024), haproxy, rg      path /
#   gateway   rg_gw: api_key auth + rate_limit (10^9/s) + quota (10^12/day) + metrics;
#             nginx_key / haproxy_key: the same upstream behind a 401-unless-apikey check
#             (nginx `map`, HAProxy `req.hdr` ACL). wrk sends the `apikey` header to these three.
#   cache     rg_cache (route cache, ttl 3600 s), nginx_cache (proxy_cache), haproxy_cache: HITs
#   routes    rg_r10 (/r5 on the node with 10 routes), rg_10k (/r5000 on a node with 10,000
#             prefix routes), nginx_10k (10,000 `location`s, /r5000)
# Metrics are on in every raftgate target (the default). The binary is copied to a scratch path
# first, so a concurrent `cargo build` does not change what is measured.
#
# Repetitions are interleaved (rep -> conns -> target) so drift hits every target alike. CPU is
# utime+stime from /proc of the proxy's process and its direct children (nginx workers) around
# each `wrk -t1 -d DUR --latency`, divided by the requests wrk completed; the upstream's CPU too.
# foreign% is the CPU of both cores used meanwhile by anything but wrk, the proxy and the
# upstream (other sessions' builds): high values mean noisy req/s and latency.
# Knobs: DUR (4 s), REPS (3), CONNS ("64 256"), WARM (1 s per target), NICE (-20), ROUTES (10000),
# PORT_BASE (18100: uses PORT_BASE+1 .. +43), BENCH_OUT (/tmp/raftgate-compare).
# Output under $BENCH_OUT/<timestamp>/: raw.csv (one row per run), results.csv (medians),
# results.json (with the machine and the ratios), results.md (the tables), results.png, wrk/*.txt.
# Every process it starts, it stops by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"
DUR="${DUR:-4}"
REPS="${REPS:-3}"
CONNS="${CONNS:-64 256}"
WARM="${WARM:-1}"
NICE="${NICE:--20}"
ROUTES="${ROUTES:-10000}"
B="${PORT_BASE:-18100}"
KEY="bench-key-0123456789abcdef"
SRC_BIN="$(realpath "${1:-$HERE/../target/release/raftgate}")"
WANT_RG=1; [ -n "${TARGETS:-}" ] && [[ " $TARGETS " != *" rg"* ]] && WANT_RG=0   # nginx/HAProxy only
[ "$WANT_RG" = 0 ] || [ -x "$SRC_BIN" ] || { echo "no raftgate binary at $SRC_BIN: cargo build --release --bin raftgate" >&2; exit 1; }
need_tools "wrk wrk" "nginx nginx" "haproxy haproxy" "jq jq" "curl curl"
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib \
  || { echo "python3 has no matplotlib and pip could not install it; pip install matplotlib" >&2; exit 1; }

RES="${BENCH_OUT:-/tmp/raftgate-compare}/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RES/wrk"
bench_init
BIN="$BENCH_DIR/raftgate"; [ "$WANT_RG" = 0 ] || cp "$SRC_BIN" "$BIN"
RUN_PREFIX="nice -n $NICE"

# --- ports: every template port of the bench configs moved above PORT_BASE ---
UP=$((B + 1))
declare -A P=([nginx]=$((B + 11)) [nginx_ka]=$((B + 12)) [nginx_key]=$((B + 13)) [nginx_cache]=$((B + 14))
              [nginx_10k]=$((B + 15)) [haproxy]=$((B + 21)) [haproxy_key]=$((B + 22)) [haproxy_cache]=$((B + 23))
              [rg]=$((B + 31)) [rg_admin]=$((B + 32)) [rg_cluster]=$((B + 33))
              [rg10k]=$((B + 41)) [rg10k_admin]=$((B + 42)) [rg10k_cluster]=$((B + 43)))
ports_free "$UP" "${P[@]}"

# --- start everything ---
render_conf "$HERE/nginx-upstream.conf" "$BENCH_DIR/upstream.conf" "9001=$UP"
start_nginx up "$BENCH_DIR/upstream.conf"; UPSTREAM_PID=$NGINX_PID
render_conf "$HERE/nginx-proxy.conf" "$BENCH_DIR/proxy.conf" "9001=$UP" "8081=${P[nginx]}" "8084=${P[nginx_ka]}" "8088=${P[nginx_key]}"
start_nginx proxy "$BENCH_DIR/proxy.conf"; NGINX_MAIN=$NGINX_PID
render_conf "$HERE/nginx-cache.conf" "$BENCH_DIR/cache.conf" "9001=$UP" "8087=${P[nginx_cache]}"
start_nginx cache "$BENCH_DIR/cache.conf"; NGINX_CACHE=$NGINX_PID

# nginx with ROUTES prefix locations /r0 … /rN-1: the http block of nginx-proxy.conf (up to its
# first server) and one generated server.
nginx_routes_conf() {
  sed '/^    server {/,$d' "$BENCH_DIR/proxy.conf"
  echo "    server {"
  echo "        listen 127.0.0.1:${P[nginx_10k]} backlog=4096;"
  echo "        proxy_http_version 1.1;"
  echo "        proxy_set_header Connection \"\";"
  awk -v n="$ROUTES" 'BEGIN{for (i = 0; i < n; i++) printf "        location /r%d { proxy_pass http://backend; }\n", i}'
  echo "    }"
  echo "}"
}
nginx_routes_conf >"$BENCH_DIR/routes.conf"
start_nginx routes "$BENCH_DIR/routes.conf"; NGINX_10K=$NGINX_PID

mkdir -p "$BENCH_DIR/haproxy"
render_conf "$HERE/haproxy.cfg" "$BENCH_DIR/haproxy.cfg" "9001=$UP" "8082=${P[haproxy]}" "8089=${P[haproxy_key]}" "8090=${P[haproxy_cache]}"
$RUN_PREFIX haproxy -db -f "$BENCH_DIR/haproxy.cfg" >"$BENCH_DIR/haproxy/haproxy.log" 2>&1 & HAPROXY=$!; bench_track "$HAPROXY"

start_raftgate() {
  node_config "$BENCH_DIR/rg.toml" rg "127.0.0.1:${P[rg]}" "127.0.0.1:${P[rg_admin]}" "127.0.0.1:${P[rg_cluster]}"
  start_node "$BIN" "$BENCH_DIR/rg.toml" "127.0.0.1:${P[rg_admin]}" "$BENCH_DIR/rg.log"; RG=$NODE
  node_config "$BENCH_DIR/rg10k.toml" rg10k "127.0.0.1:${P[rg10k]}" "127.0.0.1:${P[rg10k_admin]}" "127.0.0.1:${P[rg10k_cluster]}"
  start_node "$BIN" "$BENCH_DIR/rg10k.toml" "127.0.0.1:${P[rg10k_admin]}" "$BENCH_DIR/rg10k.log"; RG10K=$NODE

  # --- raftgate configuration, each node in one PUT /config ---
  # Node rg: exactly 10 routes (/, /gw, /cached, /r0 … /r6). Node rg10k: ROUTES routes /r0 … /rN-1.
  rg_config() { # number of /rN routes, then "full" for the plain / gw / cached routes and the consumer
    jq -cn --arg up "http://127.0.0.1:$UP" --argjson n "$1" --arg full "$2" '
      {services: {bench: {targets: [{url: $up}]}},
       routes: (([range(0; $n) | {key: "r\(.)", value: {service: "bench", paths: ["/r\(.)"]}}] | from_entries)
         + (if $full == "full" then {
             plain: {service: "bench", paths: ["/"]},
             gw: {service: "bench", paths: ["/gw"], auth: "api_key",
                  rate_limit: {requests: 1000000000, per: "second", by: "consumer"},
                  quota: {requests: 1000000000000, per: "day", by: "consumer"}},
             cached: {service: "bench", paths: ["/cached"], cache: {ttl_s: 3600}}} else {} end)),
       consumers: (if $full == "full" then {bench: {}} else {} end)}'
  }
  rg_config 7 full >"$BENCH_DIR/rg.json"
  rg_config "$ROUTES" none >"$BENCH_DIR/rg10k.json"
  admin "127.0.0.1:${P[rg_admin]}" PUT /config "@$BENCH_DIR/rg.json"
  admin "127.0.0.1:${P[rg_admin]}" POST /consumers/bench/keys "{\"key\":\"$KEY\"}"
  admin "127.0.0.1:${P[rg10k_admin]}" PUT /config "@$BENCH_DIR/rg10k.json"
  ROUTES_SEEN=$(curl -sf "http://127.0.0.1:${P[rg10k_admin]}/routes" | jq '.data | length')
  [ "$ROUTES_SEEN" = "$ROUTES" ] || { echo "rg10k lists $ROUTES_SEEN routes, want $ROUTES" >&2; exit 1; }
}
RG=; RG10K=
[ "$WANT_RG" = 0 ] || start_raftgate

# --- the targets: name scenario proxy pid port path header? ---
declare -A SCEN PROXY PROC URL HDR
target() { SCEN[$1]=$2; PROXY[$1]=$3; PROC[$1]=$4; URL[$1]="http://127.0.0.1:$5$6"; HDR[$1]="${7:-}"; ALL+=("$1"); }
ALL=()
target nginx         plain   nginx    "$NGINX_MAIN"  "${P[nginx]}"         /
target nginx_ka      plain   nginx_ka "$NGINX_MAIN"  "${P[nginx_ka]}"      /
target haproxy       plain   haproxy  "$HAPROXY"     "${P[haproxy]}"       /
target rg            plain   raftgate "$RG"          "${P[rg]}"            /
target nginx_key     gateway nginx    "$NGINX_MAIN"  "${P[nginx_key]}"     / "apikey: $KEY"
target haproxy_key   gateway haproxy  "$HAPROXY"     "${P[haproxy_key]}"   / "apikey: $KEY"
target rg_gw         gateway raftgate "$RG"          "${P[rg]}"            /gw "apikey: $KEY"
target nginx_cache   cache   nginx    "$NGINX_CACHE" "${P[nginx_cache]}"   /
target haproxy_cache cache   haproxy  "$HAPROXY"     "${P[haproxy_cache]}" /
target rg_cache      cache   raftgate "$RG"          "${P[rg]}"            /cached
target rg_r10        routes  raftgate "$RG"          "${P[rg]}"            /r5
target nginx_10k     routes  nginx    "$NGINX_10K"   "${P[nginx_10k]}"     "/r$((ROUTES / 2))"
target rg_10k        routes  raftgate "$RG10K"       "${P[rg10k]}"         "/r$((ROUTES / 2))"
read -r -a TARGETS <<<"${TARGETS:-${ALL[*]}}"
for t in "${TARGETS[@]}"; do [ -n "${SCEN[$t]:-}" ] || { echo "unknown target $t; known: ${ALL[*]}" >&2; exit 1; }; done
selected() { local t; for t in "$@"; do [[ " ${TARGETS[*]} " == *" $t "* ]] && echo "$t"; done; return 0; }
hdr_args() { [ -n "${HDR[$1]}" ] && printf '%s\n' -H "${HDR[$1]}"; return 0; }

# --- checks: the upstream's 100 bytes everywhere; keys enforced; cached answers are HITs ---
expect() { # target want-"code bytes" [curl args]
  local t=$1 want=$2 got; shift 2
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$@" "${URL[$t]}")
  [ "$got" = "$want" ] || { echo "check failed: $t ($*) answered '$got', want '$want'" >&2; exit 1; }
}
for t in "${TARGETS[@]}"; do wait_http "${URL[$t]}"; done
for t in "${TARGETS[@]}"; do mapfile -t h < <(hdr_args "$t"); expect "$t" "200 100" "${h[@]}"; done
for t in $(selected nginx_key haproxy_key rg_gw); do
  for bad in "" "apikey: ${KEY}x"; do   # no key, a wrong key
    got=$(curl -s -o /dev/null -w '%{http_code}' ${bad:+-H "$bad"} "${URL[$t]}")
    [ "$got" = 401 ] || { echo "check failed: $t with '${bad:-no key}' answered $got, want 401" >&2; exit 1; }
  done
done
for t in $(selected rg_gw); do
  curl -s -D - -o /dev/null -H "apikey: $KEY" "${URL[$t]}" | grep -qi '^ratelimit-limit: 1000000000' \
    || { echo "check failed: rg_gw answers without RateLimit-Limit" >&2; exit 1; }
done
for t in $(selected nginx_cache rg_cache); do
  curl -s -D - -o /dev/null "${URL[$t]}" | grep -qi '^x-cache: HIT' || { echo "check failed: $t is not a cache HIT" >&2; exit 1; }
done
# HAProxy adds no X-Cache: a HIT is a request the upstream never sees.
for t in $(selected haproxy_cache); do
  u0=$(proc_ticks "$UPSTREAM_PID")
  wrk -t1 -c8 -d1s "${URL[$t]}" >"$RES/wrk/check-$t.txt"
  [ "$(proc_ticks "$UPSTREAM_PID")" -le $((u0 + 2)) ] || { echo "check failed: $t reaches the upstream (no HITs)" >&2; exit 1; }
done
echo "# checks passed: ${#TARGETS[@]} targets answer 200 with the upstream's 100 bytes; key targets 401 without / with a wrong key; rg_gw carries RateLimit-Limit; cache targets HIT$([ "$WANT_RG" = 0 ] || echo "; rg10k holds $ROUTES routes")" >&2

# --- the machine ---
cpu_busy() { awk '/^cpu /{t=0; for (i = 2; i <= NF; i++) t += $i; printf "%.0f %.0f\n", t - $5 - $6, t}' /proc/stat; }
meta() { # key value-as-json
  jq -c --arg k "$1" --argjson v "$2" '. + {($k): $v}' "$RES/meta.json" >"$RES/meta.tmp" && mv "$RES/meta.tmp" "$RES/meta.json"
}
echo '{}' >"$RES/meta.json"
meta date "\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
meta command "$(jq -n --arg c "DUR=$DUR REPS=$REPS CONNS=\"$CONNS\" bench/compare.sh" '$c')"
meta machine "$(jq -n --arg cpu "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" --argjson n "$(nproc)" \
  --arg mem "$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)" --arg k "$(uname -r)" \
  '{cpu: $cpu, cores: $n, memory: $mem, kernel: $k}')"
meta versions "$(jq -n --arg ng "$(nginx -v 2>&1 | sed 's/.*: //')" --arg hp "$(haproxy -v | awk 'NR==1{print $3}')" \
  --arg wrk "$(wrk -v 2>&1 | awk 'NR==1{print $2}')" --arg sum "$({ [ -f "$BIN" ] && sha256sum "$BIN" | cut -c1-16; } || echo none)" \
  --arg git "$(git -C "$HERE" describe --always --dirty 2>/dev/null || echo unknown)" \
  '{nginx: $ng, haproxy: $hp, wrk: $wrk, raftgate_sha256: $sum, git: $git}')"
meta settings "$(jq -n --argjson d "$DUR" --argjson r "$REPS" --arg c "$CONNS" --argjson n "$NICE" --argjson routes "$ROUTES" \
  '{dur_s: $d, reps: $r, conns: $c, nice: $n, routes: $routes}')"
meta targets "$(printf '%s\n' "${TARGETS[@]}" | jq -R . | jq -sc .)"
meta loadavg_before "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); dur=${DUR}s reps=$REPS conns=[$CONNS]; results: $RES" >&2

# --- warm-up: connection pools, quota leases, caches, code paths ---
for t in "${TARGETS[@]}"; do
  mapfile -t h < <(hdr_args "$t")
  $RUN_PREFIX wrk -t1 -c64 -d"${WARM}s" "${h[@]}" "${URL[$t]}" >"$RES/wrk/warm-$t.txt"
done

# One run of target $1 at $2 connections, repetition $3: one row of raw.csv.
measure() {
  local t=$1 c=$2 rep=$3 out h p0 p1 u0 u1 b0 T0 b1 T1 wt pcpu ucpu foreign
  out="$RES/wrk/$t-c$c-r$rep.txt"
  mapfile -t h < <(hdr_args "$t")
  p0=$(proc_ticks "${PROC[$t]}"); u0=$(proc_ticks "$UPSTREAM_PID"); read -r b0 T0 < <(cpu_busy)
  # `times` in the same subshell reports wrk's own user/sys CPU
  wt=$( { $RUN_PREFIX wrk -t1 -c"$c" -d"${DUR}s" --latency "${h[@]}" "${URL[$t]}" >"$out"; times; } | tail -1)
  p1=$(proc_ticks "${PROC[$t]}"); u1=$(proc_ticks "$UPSTREAM_PID"); read -r b1 T1 < <(cpu_busy)
  wrk_parse "$out"
  pcpu=$(us_per_req $((p1 - p0)) "$WRK_REQS"); ucpu=$(us_per_req $((u1 - u0)) "$WRK_REQS")
  foreign=$(echo "$wt" | awk -v b=$((b1 - b0)) -v g=$((p1 - p0 + u1 - u0)) -v t=$((T1 - T0)) -v k="$TICK" \
    '{split($1, a, /[ms]/); split($2, s, /[ms]/); w = a[1] * 60 + a[2] + s[1] * 60 + s[2];
      f = (b / k - g / k - w) / (t / k); printf "%.1f", (f < 0) ? 0 : 100 * f}')
  echo "${SCEN[$t]},$t,${PROXY[$t]},$c,$rep,$WRK_RPS,$WRK_P50,$WRK_P99,$WRK_REQS,$pcpu,$ucpu,$foreign,${WRK_ERRS:-none}" >>"$RES/raw.csv"
  printf "  rep %s c%-3s %-13s %6s req/s  p50 %6s µs  p99 %6s µs  proxy %6s µs/req  upstream %5s  foreign %4s%%  %s\n" \
    "$rep" "$c" "$t" "$WRK_RPS" "$WRK_P50" "$WRK_P99" "$pcpu" "$ucpu" "$foreign" "$WRK_ERRS" >&2
}

echo "scenario,target,proxy,conns,rep,rps,p50_us,p99_us,requests,proxy_cpu_us_per_req,upstream_cpu_us_per_req,foreign_pct,errors" >"$RES/raw.csv"
for rep in $(seq "$REPS"); do
  for c in $CONNS; do
    for t in "${TARGETS[@]}"; do measure "$t" "$c" "$rep"; done
  done
done
meta loadavg_after "\"$(cut -d' ' -f1-3 /proc/loadavg)\""

# The gateway features really ran: every measured rg_gw request was counted (metrics), spent
# from the quota, and none was refused by the rate limit or the quota.
gateway_check() {
  local adm="127.0.0.1:${P[rg_admin]}" measured counted refused used
  measured=$(awk -F, '$2 == "rg_gw" {n += $9} END {print n + 0}' "$RES/raw.csv")
  counted=$(curl -sf "http://$adm/metrics" | awk '/^raftgate_requests_total\{route="gw",status="200"\}/{print $2}')
  refused=$(curl -sf "http://$adm/metrics" | awk '/^raftgate_rate_limited_total\{route="gw"/{n += $2} END {print n + 0}')
  sleep 2   # nodes report quota spending about once a second
  used=$(curl -sf "http://$adm/quotas/bench" | jq '.data[] | select(.route == "gw") | .used')
  [ "${counted:-0}" -ge "$measured" ] && [ "${used:-0}" -ge "$measured" ] && [ "$refused" = 0 ] \
    || { echo "check failed: rg_gw measured $measured requests, metrics counted ${counted:-none}, quota used ${used:-none}, refused $refused" >&2; exit 1; }
  echo "# gateway check passed: $measured measured rg_gw requests; metrics counted $counted 200s, the quota $used, 0 refused" >&2
}
[ -z "$(selected rg_gw)" ] || gateway_check

python3 "$HERE/compare_report.py" "$RES"
python3 "$HERE/chart.py" "$RES/results.csv" "$RES/results.png"
if [ "${PUBLISH:-0}" = 1 ]; then
  cp "$RES/results.csv" "$RES/results.json" "$RES/results.png" "$HERE/"
  cp "$RES/raw.csv" "$HERE/results-raw.csv"
  echo "# published results.csv, results-raw.csv, results.json, results.png into $HERE" >&2
fi
echo "# results: $RES" >&2
