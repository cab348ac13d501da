#!/usr/bin/env bash
# CPU cost of telemetry per proxied request, in ONE run: three single-node raftgates side by side,
# each with route /plain -> the nginx upstream on :9001, that differ only in telemetry:
#   off        [telemetry] metrics = false, RUST_LOG=warn (no counting, no access log)
#   metrics    metrics on (the default),     RUST_LOG=warn (counters, histograms, /usage)
#   metrics_log metrics on, RUST_LOG=warn,raftgate::access=info: also one JSON access log line
#              per request, on stdout redirected to a file
#   bench/telemetry_cost.sh [path/to/raftgate]      (default: target/release/raftgate)
#   ROUNDS=3 N=20000 C=32 bench/telemetry_cost.sh   (the defaults; about 1 min)
# Nodes: workers = 1; proxies 127.0.0.1:8586/8587/8588 (admin +10, cluster -10). CPU is
# utime+stime of each raftgate process (/proc/PID/stat) around each bounded `ab -k -n N -c C`;
# rounds are interleaved (off, metrics, metrics_log, off, …) so drift hits every variant alike;
# medians are reported. It checks that each variant really counts (or not) and logs (or not).
# Everything it starts, it stops by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"
BIN="$(realpath "${1:-$HERE/../target/release/raftgate}")"
ROUNDS="${ROUNDS:-3}"
N="${N:-20000}"
C="${C:-32}"
WARM="${WARM:-2000}"
need_tools "nginx nginx" "ab apache2-utils"
[ -x "$BIN" ] || { echo "no raftgate binary at $BIN (cargo build --release)" >&2; exit 1; }

bench_init
DIR="$BENCH_DIR"
VARIANTS=(off metrics metrics_log)
declare -A PORT=([off]=8586 [metrics]=8587 [metrics_log]=8588) NODES
for v in "${VARIANTS[@]}"; do ports_free "${PORT[$v]}" $((PORT[$v] + 10)) $((PORT[$v] - 10)); done
upstream_or_reuse

for v in "${VARIANTS[@]}"; do
  p=${PORT[$v]}; adm="127.0.0.1:$((p + 10))"
  metrics=true; [ "$v" = off ] && metrics=false
  log=warn; [ "$v" = metrics_log ] && log="warn,raftgate::access=info"
  node_config "$DIR/$v.toml" "data-$v" "127.0.0.1:$p" "$adm" "127.0.0.1:$((p - 10))" "[telemetry]
metrics = $metrics"
  RUST_LOG="$log" start_node "$BIN" "$DIR/$v.toml" "$adm" "$DIR/$v.log" >"$DIR/$v.access.log"
  NODES[$v]=$NODE
  admin "$adm" PUT /services/bench '{"targets":[{"url":"http://127.0.0.1:9001"}]}'
  admin "$adm" PUT /routes/plain '{"service":"bench","paths":["/plain"]}'
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$v]}/plain")" = 200 ] \
    || { echo "$v: /plain does not answer 200" >&2; exit 1; }
done

run_ab() { ab_run "http://127.0.0.1:${PORT[$1]}/plain" "$2" "$C" "$3"; }   # variant requests out-file

echo "# nproc=$(nproc) rounds=$ROUNDS n=$N c=$C warm-up=$WARM/variant binary=$BIN" >&2
for v in "${VARIANTS[@]}"; do run_ab "$v" "$WARM" "$DIR/warm.txt"; done
printf "variant\tround\treqs\trps\tcpu_us_per_req\n" >"$DIR/raw.tsv"
for round in $(seq "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    t0=$(proc_ticks "${NODES[$v]}")
    run_ab "$v" "$N" "$DIR/ab.txt"
    t1=$(proc_ticks "${NODES[$v]}")
    rps=$(ab_rps "$DIR/ab.txt"); us=$(us_per_req $((t1 - t0)) "$N")
    printf "%s\t%s\t%s\t%s\t%s\n" "$v" "$round" "$N" "$rps" "$us" >>"$DIR/raw.tsv"
    printf "  round %s %-11s %6s req/s  %7s µs/req\n" "$round" "$v" "$rps" "$us" >&2
  done
done

# Each variant did what it says: counted (or not), logged (or not).
total=$((WARM + ROUNDS * N + 1))
for v in "${VARIANTS[@]}"; do
  adm="127.0.0.1:$((PORT[$v] + 10))"
  counted=$(curl -sf "http://$adm/metrics" | awk -F' ' '/^raftgate_requests_total\{route="plain",status="200"\}/{print $2}')
  lines=$(wc -l <"$DIR/$v.access.log")
  want_counted=$total; [ "$v" = off ] && want_counted=""
  want_lines=0; [ "$v" = metrics_log ] && want_lines=$total
  [ "${counted}" = "$want_counted" ] && [ "$lines" = "$want_lines" ] \
    || { echo "$v: counted '${counted}' (want '$want_counted'), $lines access log lines (want $want_lines)" >&2; exit 1; }
done
echo "# checks passed: off counted nothing and logged nothing; metrics counted $total; metrics_log counted and logged $total lines" >&2

python3 - "$DIR/raw.tsv" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows: by.setdefault(r["variant"], []).append(r)
col = lambda rs, k: [float(r[k]) for r in rs]
med = {k: st.median(col(rs, "cpu_us_per_req")) for k, rs in by.items()}
print(f"median (min-max) over {len(by['off'])} interleaved rounds; raftgate CPU = utime+stime of its process")
print(f"{'variant':<11} | {'req/s':>21} | {'CPU µs/req':>18} | {'vs off':>6} | {'+µs vs off':>10}")
for k, rs in by.items():
    cpu, rps = col(rs, "cpu_us_per_req"), col(rs, "rps")
    print(f"{k:<11} | {'%.0f (%.0f-%.0f)' % (st.median(rps), min(rps), max(rps)):>21} | {'%.1f (%.1f-%.1f)' % (med[k], min(cpu), max(cpu)):>18} | "
          f"{med[k] / med['off']:>5.2f}x | {med[k] - med['off']:>+10.1f}")
PY
