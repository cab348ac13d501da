#!/usr/bin/env bash
# End-to-end check of docker-compose.yml: builds the image with no registry
# (docker/build-image.sh), starts the 3 nodes and 2 demo upstreams, waits until node 1 is ready,
# creates a service pointing at up1 and a route through node 1's admin API, and waits until
# node 3's proxy serves that route from up1. Always removes its containers, network and volumes.
#
#   docker/compose-check.sh              # what .ci/run runs
#   NO_BUILD=1 docker/compose-check.sh   # reuse the image raftgate:local as it is
#
# Uses the host ports of docker-compose.yml (127.0.0.1:8081-8083, 9081-9083): nothing else
# (`raftgate dev`, another `docker compose up`) may hold them.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${COMPOSE_CHECK_PROJECT:-raftgate-ci}
TOKEN=raftgate-dev                      # config/compose/node*.toml
ADMIN1=http://127.0.0.1:9081
PROXY3=http://127.0.0.1:8083
START=$SECONDS

fail() { echo "compose-check: FAIL: $*" >&2; exit 1; }
step() { echo "==> [$((SECONDS - START))s] $*"; }

command -v docker >/dev/null ||
    fail "docker is not installed; this check needs Docker Engine with Compose (CI has it)"
docker info >/dev/null 2>&1 ||
    fail "cannot reach the docker daemon (docker info failed); is dockerd running, may this user use it?"
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    fail "neither 'docker compose' (the Compose plugin) nor 'docker-compose' is installed"
fi
command -v curl >/dev/null || fail "curl is not installed"
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml "$@"; }

if [[ -z ${NO_BUILD:-} ]]; then
    step "building the image (docker/build-image.sh)"
    docker/build-image.sh
fi
docker image inspect raftgate:local >/dev/null 2>&1 ||
    fail "no image raftgate:local: run docker/build-image.sh"

cleanup() {
    local rc=$?
    if ((rc != 0)); then
        echo "---- compose ps / logs (the check failed) ----" >&2
        compose ps >&2 || true
        compose logs --no-color --tail 60 >&2 || true
    fi
    step "compose down -v"
    compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose-check: compose down failed" >&2
    exit "$rc"
}
# Leftovers of an interrupted run of this project would hold the ports.
compose down -v --remove-orphans >/dev/null 2>&1 || true
trap cleanup EXIT
trap 'exit 130' INT TERM

step "compose up -d (project $PROJECT)"
compose up -d --no-build

# until DEADLINE_S CMD...: runs CMD every 0.5 s until it succeeds or DEADLINE_S seconds pass.
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

status_is() { # status_is CODE URL [curl args...]
    local want=$1 url=$2
    shift 2
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url") == "$want" ]]
}

step "waiting for node 1's $ADMIN1/readyz"
until_ok 60 status_is 200 "$ADMIN1/readyz" || fail "node 1's /readyz is not 200 after 60 s"

three_members_reachable() {
    local body
    body=$(curl -s --max-time 2 -H "Authorization: Bearer $TOKEN" "$ADMIN1/cluster") || return 1
    [[ $(grep -o '"reachable":true' <<<"$body" | wc -l) -eq 3 ]] && [[ $body == *'"leader_id":'[0-9]* ]]
}
step "waiting for a leader and 3 reachable members (GET /cluster)"
until_ok 60 three_members_reachable ||
    fail "no leader with 3 reachable members after 60 s: $(curl -s -H "Authorization: Bearer $TOKEN" "$ADMIN1/cluster")"

put() { # put PATH JSON: a write through node 1's admin API; 200 or 201, else the answer
    local out code
    out=$(mktemp)
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 10 -X PUT \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        "$ADMIN1$1" -d "$2") || true
    if [[ $code != 200 && $code != 201 ]]; then
        echo "PUT $1 -> $code: $(cat "$out")" >&2
        rm -f "$out"
        return 1
    fi
    rm -f "$out"
}
step "PUT /services/ci-echo (-> http://up1:9900) and /routes/ci-echo via node 1"
put /services/ci-echo '{"targets":[{"url":"http://up1:9900"}]}' || fail "PUT /services/ci-echo"
put /routes/ci-echo '{"service":"ci-echo","paths":["/ci"],"strip_path":true}' || fail "PUT /routes/ci-echo"

served_by_up1() {
    local body
    body=$(curl -s --max-time 2 -H 'X-Request-Id: compose-check' "$PROXY3/ci/hello?x=1") || return 1
    [[ $body == *'"name":"up1"'* && $body == *'"path":"/hello"'* ]]
}
step "waiting for node 3's proxy ($PROXY3/ci/hello) to be served by up1"
until_ok 30 served_by_up1 ||
    fail "node 3 does not serve /ci from up1 after 30 s; last answer: $(curl -s -i "$PROXY3/ci/hello")"
curl -s "$PROXY3/ci/hello?x=1"
echo

step "compose check passed"
