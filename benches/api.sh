#!/usr/bin/env bash
# The portal's API and pages under load, against a ceiling measured beside them in the same run:
# bare axum (benches/api-ceiling) answering with the very JSON that `GET /api/v1/gpus` returned.
# Release builds; a portal on its defaults (a fresh SQLite file, the bundled simulated host with
# its 8 GPUs) with an admin's bearer token. wrk (Debian) with 2 threads and 64 connections, each
# endpoint for $SECONDS_EACH s, the endpoints interleaved, $ROUNDS rounds; prints the Markdown
# table of docs/benchmarks.md: median and spread (min-max) of the rounds, ratio to the ceiling.
#
#   benches/api.sh            (ROUNDS=3 SECONDS_EACH=15 CONNECTIONS=64 by default)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS="${ROUNDS:-3}"
SECONDS_EACH="${SECONDS_EACH:-15}"
CONNECTIONS="${CONNECTIONS:-64}"
TARGET="${CARGO_TARGET_DIR:-target}"

command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; } >&2
cargo build --quiet --release -p passage-server -p passage-api-ceiling --bin passage --bin passage-api-ceiling >&2

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
portal_port="$(free_port)"
ceiling_port="$(free_port)"
portal() {
  env $(env | awk -F= '/^PASSAGE_/ {print "-u", $1}') \
    PASSAGE_DATA_DIR="$work/data" PASSAGE_LISTEN="127.0.0.1:$portal_port" PASSAGE_LOG=warn \
    PASSAGE_SITE_DIR="$work/site" "$TARGET/release/passage" "$@"
}
wait_for() {
  for _ in $(seq 200); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "no answer from $1" >&2; exit 1
}

printf 'a long enough password\n' | portal user add bench --admin >/dev/null
token="$(portal token create api-bench --user bench)"
portal serve > "$work/portal.log" 2>&1 &
pids+=($!)
portal_url="http://127.0.0.1:$portal_port"
wait_for "$portal_url/healthz"
auth=(-H "Authorization: Bearer $token")
curl -fsS "${auth[@]}" "$portal_url/api/v1/gpus" > "$work/gpus.json"
gpus="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/gpus.json")"
"$TARGET/release/passage-api-ceiling" "$work/gpus.json" "127.0.0.1:$ceiling_port" &
pids+=($!)
ceiling_url="http://127.0.0.1:$ceiling_port"
wait_for "$ceiling_url/api/v1/gpus"

# name|url|with the token
endpoints=(
  "ceiling: bare axum, the same JSON|$ceiling_url/api/v1/gpus|no"
  "GET /api/v1/gpus (bearer)|$portal_url/api/v1/gpus|yes"
  "GET / (server-rendered GPU page, bearer)|$portal_url/|yes"
  "GET /api/v1/me (bearer)|$portal_url/api/v1/me|yes"
  "GET /healthz|$portal_url/healthz|no"
)
for round in $(seq "$ROUNDS"); do
  for i in "${!endpoints[@]}"; do
    IFS='|' read -r name url with_token <<< "${endpoints[$i]}"
    args=()
    [ "$with_token" = yes ] && args=("${auth[@]}")
    echo "round $round: $name" >&2
    wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency "${args[@]}" "$url" > "$work/wrk-$i-$round.txt"
  done
done

python3 - "$work" "$ROUNDS" "$gpus" "${endpoints[@]}" <<'PY'
import re, statistics, sys
work, rounds, gpus, endpoints = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]

def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def run(i, r):
    text = open(f"{work}/wrk-{i}-{r}.txt").read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = ms(re.search(r"99%\s+(\S+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if errors:
        sys.exit(f"{endpoints[i].split('|')[0]}: {errors.group(1)} answers were errors")
    return rate, p99

print(f"{gpus} GPUs in the JSON; median [min-max] of {rounds} rounds")
print()
print("| endpoint | req/s | p99 latency (ms) | ratio to the ceiling (req/s) |")
print("|---|---|---|---|")
ceiling = None
for i, entry in enumerate(endpoints):
    name = entry.split("|")[0]
    runs = [run(i, r) for r in range(1, rounds + 1)]
    rates = [r for r, _ in runs]
    p99s = [p for _, p in runs]
    rate = statistics.median(rates)
    if ceiling is None:
        ceiling = rate
    print(f"| {name} | {rate:,.0f} [{min(rates):,.0f}-{max(rates):,.0f}] | "
          f"{statistics.median(p99s):.2f} [{min(p99s):.2f}-{max(p99s):.2f}] | {rate / ceiling:.3f} |")
PY
