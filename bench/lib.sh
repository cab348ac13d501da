# Plumbing shared by the bench scripts: source it (`. "$HERE/lib.sh"`), never run it.
# Starting and stopping processes by PID, port checks, the nginx upstream, single raftgate nodes
# configured through the admin API, CPU time from /proc, and bounded `ab` runs that fail loudly.
# Every function stops the calling script (exit 1, one line on stderr saying what to do) on error.

TICK="$(getconf CLK_TCK)"
BENCH_PIDS=()

# Makes a scratch directory ($BENCH_DIR) and stops every tracked process (by PID) and removes
# the directory on exit.
bench_init() {
  BENCH_DIR="$(mktemp -d)"
  chmod 755 "$BENCH_DIR"   # nginx workers run as nobody: they must reach their cache directories
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# Remembers a PID we started so bench_cleanup stops it.
bench_track() { BENCH_PIDS+=("$1"); }

# SIGTERM to everything we started, up to 5 s to exit, then SIGKILL; removes the scratch dir.
bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${BENCH_PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  [ -n "${BENCH_DIR:-}" ] && rm -rf "$BENCH_DIR"
  return 0
}

# need_tools "tool pkg" ...: installs the Debian packages of the missing tools (apt-get update first).
need_tools() {
  local spec missing=()
  for spec in "$@"; do command -v "${spec%% *}" >/dev/null || missing+=("${spec#* }"); done
  [ "${#missing[@]}" = 0 ] && return 0
  echo "# installing ${missing[*]} (apt-get)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || { echo "could not install ${missing[*]}; install them and run again" >&2; exit 1; }
}

# ports_free PORT...: stops the script if anything listens on one of them.
ports_free() {
  local p
  for p in "$@"; do
    ! ss -Hltn "sport = :$p" | grep -q . \
      || { echo "port $p already in use (another bench running?); stop it or pick other ports" >&2; exit 1; }
  done
}

# wait_http URL: polls until anything answers (30 s), else stops the script.
wait_http() {
  for _ in $(seq 300); do curl -s -o /dev/null -m 1 "$1" && return 0; sleep 0.1; done
  echo "nothing answered on $1 within 30 s; see the logs under $BENCH_DIR" >&2; exit 1
}

# render_conf SRC DST OLD=NEW...: copies a bench config, moving each 127.0.0.1:OLD to :NEW.
render_conf() {
  local src=$1 dst=$2 expr=() m; shift 2
  for m in "$@"; do expr+=(-e "s/127\.0\.0\.1:${m%%=*}\b/127.0.0.1:${m#*=}/g"); done
  sed "${expr[@]}" "$src" >"$dst"
}

# start_nginx NAME CONF: nginx in the foreground (master + 1 worker) with its prefix under
# $BENCH_DIR/NAME; sets NGINX_PID. Run as root, nginx drops its worker to `nobody`, hence the
# world-writable tmp (proxy_cache lives there).
start_nginx() {
  local d="$BENCH_DIR/$1"
  mkdir -p "$d/tmp"; chmod 777 "$d" "$d/tmp"
  ${RUN_PREFIX:-} nginx -p "$d/" -e "$d/error.log" -c "$2" & NGINX_PID=$!; bench_track "$NGINX_PID"
}

# upstream_or_reuse: the nginx upstream on :9001 (bench/nginx-upstream.conf, 100-byte answer),
# or the one another bench script already runs there. Sets UPSTREAM_PID (empty when reused).
upstream_or_reuse() {
  UPSTREAM_PID=
  if ss -Hltn "sport = :9001" | grep -q .; then
    [ "$(curl -s -o /dev/null -w '%{http_code} %{size_download}' http://127.0.0.1:9001/)" = "200 100" ] \
      || { echo "port 9001 in use by something other than the bench upstream; stop it first" >&2; exit 1; }
    echo "# reusing the upstream already on :9001 (its CPU then counts other traffic too)" >&2
  else
    start_nginx up "$BENCH_LIB_DIR/nginx-upstream.conf"; UPSTREAM_PID=$NGINX_PID
  fi
}

# node_config FILE NAME PROXY ADMIN CLUSTER [EXTRA_TOML]: a single-node raftgate config with one
# proxy worker, its data under $BENCH_DIR/NAME.
node_config() {
  cat >"$1" <<TOML
node_id = 1
data_dir = "$BENCH_DIR/$2"
workers = 1
[listen]
proxy = "$3"
admin = "$4"
cluster = "$5"
${6:-}
TOML
}

# start_node BIN CONF ADMIN LOG: starts `raftgate serve` and waits for /readyz (30 s); sets NODE.
# RUST_LOG defaults to warn; set it in the environment of the call to change it.
start_node() {
  RUST_LOG="${RUST_LOG:-warn}" ${RUN_PREFIX:-} "$1" serve --config "$2" 2>"$4" & NODE=$!; bench_track "$NODE"
  for _ in $(seq 300); do curl -sf -o /dev/null "http://$3/readyz" && return 0; sleep 0.1; done
  echo "raftgate node ($2) not ready within 30 s; its log:" >&2; cat "$4" >&2; exit 1
}

# admin ADMIN METHOD PATH [BODY | @FILE]: one admin API call; anything but a 2xx stops the script.
admin() {
  local r
  r=$(curl -s -w '\n%{http_code}' -X "$2" "http://$1$3" -H 'content-type: application/json' --data-binary "${4:-}")
  case "${r##*$'\n'}" in 2??) ;; *) echo "admin $2 $3 -> ${r##*$'\n'}: ${r%$'\n'*}" >&2; exit 1 ;; esac
}

# proc_ticks PID: utime+stime (clock ticks) of the process, all its threads, and its direct
# children (nginx workers).
proc_ticks() {
  local p sum=0 v
  for p in "$1" $(pgrep -P "$1" | tr '\n' ' '); do
    v=$(awk '{sub(/^.*\) /,""); printf "%.0f\n", $12+$13}' "/proc/$p/stat" 2>/dev/null || echo 0)
    sum=$((sum + v))
  done
  echo "$sum"
}

# us_per_req TICKS REQUESTS: CPU microseconds per request.
us_per_req() { awk -v d="$1" -v n="$2" -v k="$TICK" 'BEGIN{printf "%.2f", (n > 0) ? d / k * 1e6 / n : 0}'; }

# wrk_parse OUT: reads a `wrk --latency` report into WRK_REQS, WRK_RPS, WRK_P50 and WRK_P99
# (µs), and WRK_ERRS (socket errors / non-2xx lines, commas dropped; empty when none).
wrk_parse() {
  WRK_REQS=$(awk '/requests in/{print $1}' "$1")
  WRK_RPS=$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$1")
  WRK_P50=$(wrk_us "$(awk '$1=="50%"{print $2}' "$1")")
  WRK_P99=$(wrk_us "$(awk '$1=="99%"{print $2}' "$1")")
  WRK_ERRS=$(awk '/Socket errors|Non-2xx/{gsub(/^ +/, ""); gsub(/,/, ""); printf "%s; ", $0}' "$1")
}
# wrk_us TOKEN: a wrk latency (1.23ms / 456.00us / 1.02s) in µs.
wrk_us() {
  awk -v v="$1" 'BEGIN{m = (v ~ /us$/) ? 1 : (v ~ /ms$/) ? 1000 : (v ~ /s$/) ? 1e6 : 1; sub(/[a-z]+$/, "", v); printf "%.0f", v * m}'
}

# ab_run URL REQUESTS CONNS OUT [HEADER]: a bounded keep-alive `ab`; stops the script unless
# every request completed with a 2xx.
ab_run() {
  local url=$1 n=$2 c=$3 out=$4 hdr=() done bad non2xx
  [ -n "${5:-}" ] && hdr=(-H "$5")
  ab -k -n "$n" -c "$c" "${hdr[@]}" "$url" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
  done=$(awk '/^Complete requests/{print $3}' "$out"); bad=$(awk '/^Failed requests/{print $3}' "$out")
  non2xx=$(awk '/^Non-2xx responses/{print $3}' "$out")
  [ "$done" = "$n" ] && [ "$bad" = 0 ] && [ -z "$non2xx" ] \
    || { echo "$url: complete ${done:-?}/$n, failed ${bad:-?}, non-2xx ${non2xx:-0}" >&2; exit 1; }
}
# ab_rps OUT: requests per second of an ab run.
ab_rps() { awk '/^Requests per second/{printf "%.0f", $4}' "$1"; }

BENCH_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
