#!/usr/bin/env bash
# CPU cost of authentication per proxied request, in ONE run: raftgate's CPU µs per request on a
# plain route, an api_key route and an RS256 JWT route to the same nginx upstream on :9001.
#   bench/auth_cost.sh [path/to/raftgate]        (default: target/release/raftgate)
#   ROUNDS=3 N=20000 C=32 bench/auth_cost.sh     (the defaults; about 1 min)
#   CALLGRIND=1 bench/auth_cost.sh               (also instructions/request per route, via
#                                                 bench/callgrind.sh; about 2 more min)
# One node (workers = 1; proxy 127.0.0.1:8286, admin :8296, cluster :8276; callgrind's node on
# :8386/:8396/:8376), configured by bench/auth-setup.sh. CPU is utime+stime of the raftgate
# process (/proc/PID/stat) around each bounded `ab -k -n N -c C`; rounds are interleaved
# (plain, key, jwt, plain, …) so drift hits every route alike; medians are reported, with the
# schedstat on-CPU time as a cross-check. Everything it starts, it stops by PID.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"
BIN="$(realpath "${1:-$HERE/../target/release/raftgate}")"
ROUNDS="${ROUNDS:-3}"
N="${N:-20000}"
C="${C:-32}"
WARM="${WARM:-2000}"       # unmeasured requests per route before the first round
PORT=8286; ADMIN="127.0.0.1:8296"; CLUSTER="127.0.0.1:8276"
KEY="bench-key-0123456789abcdef"
RSA_KEY="$HERE/../tests/fixtures/jwt/rsa.key"
need_tools "nginx nginx" "ab apache2-utils"
[ "${CALLGRIND:-0}" != 1 ] || need_tools "valgrind valgrind"
[ -x "$BIN" ] || { echo "no raftgate binary at $BIN (cargo build --release)" >&2; exit 1; }

bench_init
DIR="$BENCH_DIR"
ports_free 8286 8296 8276
upstream_or_reuse   # e.g. a concurrent callgrind.sh: same fixed answer
node_config "$DIR/node.toml" data "127.0.0.1:$PORT" "$ADMIN" "$CLUSTER"
start_node "$BIN" "$DIR/node.toml" "$ADMIN" "$DIR/node.log"
"$HERE/auth-setup.sh" "$ADMIN"

# RS256 token: header {"alg":"RS256","typ":"JWT","kid":"bench-rsa"}, claims {"sub":"bench","exp":now+3600}.
# python3 + cryptography when present (JWT_SIGNER=openssl forces the openssl path).
jwt_python() {
  python3 - "$RSA_KEY" <<'PY'
import base64, json, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
part = lambda o: b64(json.dumps(o, separators=(",", ":")).encode())
signing = part({"alg": "RS256", "typ": "JWT", "kid": "bench-rsa"}) + "." + part({"sub": "bench", "exp": int(time.time()) + 3600})
print(signing + "." + b64(key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())))
PY
}
jwt_openssl() {
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  local h c
  h=$(printf '%s' '{"alg":"RS256","typ":"JWT","kid":"bench-rsa"}' | b64url)
  c=$(printf '{"sub":"bench","exp":%d}' $(($(date +%s) + 3600)) | b64url)
  printf '%s.%s.%s\n' "$h" "$c" "$(printf '%s.%s' "$h" "$c" | openssl dgst -sha256 -sign "$RSA_KEY" -binary | b64url)"
}
if [ "${JWT_SIGNER:-}" != openssl ] && python3 -c 'import cryptography' 2>/dev/null; then
  TOKEN=$(jwt_python); SIGNER=python3
else
  TOKEN=$(jwt_openssl); SIGNER=openssl
fi

ROUTES=(plain key jwt)
declare -A HDR=([plain]="" [key]="apikey: $KEY" [jwt]="Authorization: Bearer $TOKEN")

# --- each route: 200 with its credential, 401 without (and with a wrong one) ---
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
expect() { # want description curl-args...
  local want=$1 what=$2 got; shift 2; got=$(status "$@")
  [ "$got" = "$want" ] || { echo "check failed: $what answered $got, want $want" >&2; exit 1; }
}
expect 200 "/plain"                  "http://127.0.0.1:$PORT/plain"
expect 200 "/key with its API key"   -H "${HDR[key]}" "http://127.0.0.1:$PORT/key"
expect 401 "/key without a key"      "http://127.0.0.1:$PORT/key"
expect 401 "/key with a wrong key"   -H "apikey: ${KEY}x" "http://127.0.0.1:$PORT/key"
expect 200 "/jwt with the token"     -H "${HDR[jwt]}" "http://127.0.0.1:$PORT/jwt"
expect 401 "/jwt without a token"    "http://127.0.0.1:$PORT/jwt"
expect 401 "/jwt with a bad signature" -H "Authorization: Bearer ${TOKEN%?????}AAAAA" "http://127.0.0.1:$PORT/jwt"
expect 401 "/jwt with the API key as bearer" -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/jwt"
echo "# checks passed: /plain 200; /key 200 with apikey, 401 without/wrong; /jwt 200 with RS256 bearer (signed by $SIGNER), 401 without/bad signature" >&2

sched_ns() { cat /proc/"$NODE"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%.0f\n", s}'; }
run_ab() { ab_run "http://127.0.0.1:$PORT/$1" "$2" "$C" "$3" "${HDR[$1]}"; }   # route requests out-file

echo "# nproc=$(nproc) rounds=$ROUNDS n=$N c=$C warm-up=$WARM/route binary=$BIN" >&2
for r in "${ROUTES[@]}"; do run_ab "$r" "$WARM" "$DIR/warm.txt"; done
printf "route\tround\treqs\trps\tcpu_us_per_req\tsched_us_per_req\n" >"$DIR/raw.tsv"
for round in $(seq "$ROUNDS"); do
  for r in "${ROUTES[@]}"; do
    t0=$(proc_ticks "$NODE"); s0=$(sched_ns)
    run_ab "$r" "$N" "$DIR/ab.txt"
    t1=$(proc_ticks "$NODE"); s1=$(sched_ns)
    rps=$(ab_rps "$DIR/ab.txt"); us=$(us_per_req $((t1 - t0)) "$N")
    sus=$(awk -v d=$((s1 - s0)) -v n="$N" 'BEGIN{printf "%.2f", d / 1e3 / n}')
    printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$r" "$round" "$N" "$rps" "$us" "$sus" >>"$DIR/raw.tsv"
    printf "  round %s %-6s %6s req/s  %7s µs/req (sched %7s)\n" "$round" "$r" "$rps" "$us" "$sus" >&2
  done
done

python3 - "$DIR/raw.tsv" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows: by.setdefault(r["route"], []).append(r)
col = lambda rs, k: [float(r[k]) for r in rs]
med = {k: st.median(col(rs, "cpu_us_per_req")) for k, rs in by.items()}
smed = {k: st.median(col(rs, "sched_us_per_req")) for k, rs in by.items()}
print(f"median (min-max) over {len(by['plain'])} interleaved rounds; raftgate CPU = utime+stime of its process")
print(f"{'route':<6} | {'req/s':>21} | {'CPU µs/req':>18} | {'vs plain':>8} | {'+µs vs plain':>12} | {'sched µs/req':>12}")
for k, rs in by.items():
    cpu, rps = col(rs, "cpu_us_per_req"), col(rs, "rps")
    print(f"{k:<6} | {'%.0f (%.0f-%.0f)' % (st.median(rps), min(rps), max(rps)):>21} | {'%.1f (%.1f-%.1f)' % (med[k], min(cpu), max(cpu)):>18} | "
          f"{med[k] / med['plain']:>7.2f}x | {med[k] - med['plain']:>+12.1f} | {smed[k]:>12.1f}")
PY

if [ "${CALLGRIND:-0}" = 1 ]; then
  echo "# callgrind: the same three routes on a node under valgrind (bench/callgrind.sh, port 8386)" >&2
  PORT=8386 SETUP="$HERE/auth-setup.sh" "$HERE/callgrind.sh" "$BIN" \
    "/plain" "/key|${HDR[key]}" "/jwt|${HDR[jwt]}"
fi
