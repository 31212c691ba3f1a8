#!/usr/bin/env bash
# A native experiment on the GPU machine, end to end: a portal (`passage serve` on its embedded
# defaults: SQLite, the simulated libvirt host), this machine registered as a native host with
# `passage-agent serve` on the CUDA backend, and an experiment of the study's suite (or PLUGINS)
# over REPS repetitions. Its results (JSON, CSV) and every chart (SVG) go to $OUT/experiment.
#
#   benches/build-gpu-bundle.sh        (here: the bundle includes the portal)
#   REPS=3 benches/experiment.sh       (on the GPU machine)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="$PWD/${PASSAGE_GPU_BUNDLE:-target/gpu}"
OUT="${OUT:-target/gpu-results}/experiment"
REPS="${REPS:-3}"
PORT="${PORT:-18480}"
mkdir -p "$OUT"
# Libraries the portal links that the GPU machine may lack (libvirt and its own).
[ -d "$BIN/lib" ] && export LD_LIBRARY_PATH="$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

portal() {
  env $(env | awk -F= '/^PASSAGE_/ {print "-u", $1}') \
    PASSAGE_DATA_DIR="$work/portal" PASSAGE_LISTEN="127.0.0.1:$PORT" PASSAGE_LOG=warn \
    PASSAGE_PLUGIN_DIR="$BIN/plugins" PASSAGE_AGENT_BINARY="$BIN/passage-agent" \
    PASSAGE_SITE_DIR="$work/site" "$BIN/passage" "$@"
}
base="http://127.0.0.1:$PORT"
printf 'a long enough password\n' | portal user add ops --admin >/dev/null
token="$(portal token create experiment --user ops)"
agent_token="$(portal agent add "native-$(hostname -s)" --by ops)"
portal serve > "$OUT/portal.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
api() { curl -fsS -H "Authorization: Bearer $token" "$@"; }

PASSAGE_AGENT_TOKEN="$agent_token" "$BIN/passage-agent" serve --server "$base" --backend cuda \
  --cache-dir "$work/agent" > "$OUT/agent.log" 2>&1 &
pids+=($!)
agent=""
for _ in $(seq 150); do
  agent="$(api "$base/api/v1/agents" | python3 -c 'import json,sys
online = [a for a in json.load(sys.stdin) if a["status"] == "online" and a["devices"]]
print(online[0]["id"] if online else "")')"
  [ -n "$agent" ] && break
  sleep 0.2
done
[ -n "$agent" ] || { echo "the agent did not come online"; cat "$OUT/agent.log"; exit 1; }
api "$base/api/v1/agents" > "$OUT/agents.json"

if [ -n "${PLUGINS:-}" ]; then
  benchmarks="$(python3 -c 'import json,sys; print(json.dumps({"plugins": [{"plugin": p} for p in sys.argv[1].split(",")]}))' "$PLUGINS")"
else
  benchmarks='{"preset": "study"}'
fi
body="$(python3 -c 'import json,sys
b = json.loads(sys.argv[1])
b.update({"name": sys.argv[2], "targets": [{"agent": int(sys.argv[3])}], "repetitions": int(sys.argv[4])})
print(json.dumps(b))' "$benchmarks" "the study, native on $(hostname -s)" "$agent" "$REPS")"
id="$(api -X POST -H 'content-type: application/json' -d "$body" "$base/api/v1/experiments" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
echo "== experiment $id: $REPS repetition(s) on agent $agent"
began=$(date +%s)
state=""
while :; do
  line="$(api "$base/api/v1/experiments/$id" | python3 -c 'import json,sys
s = json.load(sys.stdin)["summary"]
print(s["state"], s["jobs_done"], s["jobs_total"], s["jobs_failed"])')"
  read -r state done total failed <<<"$line"
  case "$state" in succeeded|failed|cancelled) break ;; esac
  echo "   $state: $done of $total jobs ended ($failed failed), $(( $(date +%s) - began )) s"
  sleep 10
done
echo "== $state after $(( $(date +%s) - began )) s: $done of $total jobs ended, $failed failed"

api "$base/api/v1/experiments/$id/results.json" > "$OUT/results.json"
api "$base/api/v1/experiments/$id/results.csv" > "$OUT/results.csv"
python3 -c 'import json,sys; [print(c["name"]) for c in json.load(open(sys.argv[1]))["charts"]]' \
  "$OUT/results.json" | while read -r chart; do
  api "$base/api/v1/experiments/$id/charts/$chart.svg" > "$OUT/$chart.svg"
done
python3 - "$OUT/results.json" <<'EOF'
import json, sys
view = json.load(open(sys.argv[1]))
print("simulated:", view["summary"]["simulated"])
for f in view["figures"]:
    if f["metric"] in ("real time", "H2D bandwidth", "D2H bandwidth", "D2D bandwidth") or "Gflop" in f["unit"]:
        for c in f["cells"]:
            spread = (c["max"] - c["min"]) / c["median"] * 100 if c["median"] else 0
            print(f'{f["benchmark_label"]:<26} {f["metric"]:<22} {c["median"]:>12.4f} {f["unit"]:<8} '
                  f'[{c["min"]:.4f}-{c["max"]:.4f}] n={c["n"]} spread {spread:.1f}%')
EOF
