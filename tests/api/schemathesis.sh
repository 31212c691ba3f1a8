#!/usr/bin/env bash
# The JSON API against its own OpenAPI document: schemathesis reads /api/v1/openapi.json from a
# started portal (the bundled simulated host, a fresh SQLite file), generates requests for every
# operation, anonymous, with an admin's bearer token and (the agents' API) with a native host's
# agent token, and fails on any 5xx answer and on
# any answer the document does not describe (status code, content type, body schema).
#
#   tests/api/schemathesis.sh [PASSAGE_BIN]
#
# schemathesis comes from ./x setup --tests (a virtualenv under $PASSAGE_CACHE, default
# ~/.cache/passage). PASSAGE_API_EXAMPLES bounds the examples per operation (default 25), which
# keeps the three runs near a minute on two cores; the seed is fixed so that CI sees the same
# requests every time (PASSAGE_API_SEED=<n> tries others).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${1:-${PASSAGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/passage}}"
CACHE="${PASSAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/passage}"
ST="$CACHE/schemathesis/bin/st"
EXAMPLES="${PASSAGE_API_EXAMPLES:-25}"
SEED="${PASSAGE_API_SEED:-20261205}"

[ -x "$BIN" ] || { echo "schemathesis.sh: $BIN is missing: build it first (./x build)" >&2; exit 1; }
[ -x "$ST" ] || { echo "schemathesis.sh: $ST is missing: run ./x setup --tests" >&2; exit 1; }

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Only this portal's own settings: the test suite's PASSAGE_* variables are not for it.
portal() {
  env $(env | awk -F= '/^PASSAGE_/ {print "-u", $1}') \
    PASSAGE_DATA_DIR="$work/data" PASSAGE_LISTEN="127.0.0.1:$port" PASSAGE_LOG=warn \
    PASSAGE_SITE_DIR="$work/site" PASSAGE_AGENT_BINARY="$work/passage-agent" "$BIN" "$@"
}
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf '#!/bin/sh\n' > "$work/passage-agent"
printf 'a long enough password\n' | portal user add fuzz --admin >/dev/null
token="$(portal token create schemathesis --user fuzz)"
agent_token="$(portal agent add fuzz-native --by fuzz)"
portal serve > "$work/portal.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/portal.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { echo "the portal did not answer on $base" >&2; cat "$work/portal.log" >&2; exit 1; }

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
run() {
  local who="$1"; shift
  echo "==> schemathesis, $who ($EXAMPLES examples per operation, seed $SEED)"
  "$ST" run "$base/api/v1/openapi.json" --checks "$checks" --max-examples "$EXAMPLES" \
    --seed "$SEED" --phases examples,coverage,fuzzing --workers 1 --no-color \
    --generation-database none --request-timeout 30 "$@"
}
began=$(date +%s)
status=0
run anonymous || status=1
# The token is not fuzzed away: revoking tokens and signing out stay out of the bearer run.
run "as an admin with a bearer token" -H "Authorization: Bearer $token" \
  --exclude-path /api/v1/tokens/{id} --exclude-path /api/v1/logout || status=1
run "the agents' API with a native host's agent token" -H "Authorization: Bearer $agent_token" \
  --include-path-regex '^/api/v1/agent/' || status=1
echo "==> schemathesis took $(( $(date +%s) - began )) s"
if [ "$status" != 0 ]; then
  echo "the portal's log:" >&2; tail -n 40 "$work/portal.log" >&2
fi
exit "$status"
