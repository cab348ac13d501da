#!/usr/bin/env bash
# The routes and credentials bench/auth_cost.sh measures, written through the admin API of the
# node at ADMIN (host:port, no admin token):
#   service bench -> http://127.0.0.1:9001; routes plain (/plain), key (/key, auth api_key),
#   jwt (/jwt, auth jwt); consumer bench with API key bench-key-0123456789abcdef and RS256
#   credential bench-rsa (tests/fixtures/jwt/rsa.pub).
#   bench/auth-setup.sh 127.0.0.1:8296
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/lib.sh"
ADMIN="$1"
PUB="$HERE/../tests/fixtures/jwt/rsa.pub"
api() { admin "$ADMIN" "$@"; }   # method path body; any answer but 2xx stops the script
if command -v jq >/dev/null; then
  JWT_BODY=$(jq -cn --rawfile pem "$PUB" '{algorithm: "RS256", public_key: $pem}')
else
  JWT_BODY=$(python3 -c 'import json,sys; print(json.dumps({"algorithm": "RS256", "public_key": open(sys.argv[1]).read()}))' "$PUB")
fi
api PUT /services/bench '{"targets":[{"url":"http://127.0.0.1:9001"}]}'
api PUT /routes/plain '{"service":"bench","paths":["/plain"]}'
api PUT /routes/key '{"service":"bench","paths":["/key"],"auth":"api_key"}'
api PUT /routes/jwt '{"service":"bench","paths":["/jwt"],"auth":"jwt"}'
api PUT /consumers/bench '{}'
api POST /consumers/bench/keys '{"key":"bench-key-0123456789abcdef"}'
api PUT /consumers/bench/jwt/bench-rsa "$JWT_BODY"
