#!/usr/bin/env bash
# The study's suite on a GPU machine, from prebuilt binaries (no Rust needed there):
#
#   benches/build-gpu-bundle.sh   (here: target/gpu/ with the agent, passage-bench and plugins)
#   benches/suite.sh              (on the GPU machine)
#
# For every run of the study (`passage-bench study`, from passage_suite::study::STUDY): the
# plugin through `passage-agent run --json`, with real verification, and its native twin
# (`passage-bench suite-native`: the same benchmark code and CUDA C, without the plugin
# boundary), alternately, ROUNDS rounds (the order flips every round). Then
# benches/suite_table.py turns the JSON files into the table of docs/benchmarks.md.
#
# Results: one JSON file per process in $RESULTS (default target/gpu-results/suite), a PASS/FAIL
# line per run in $RESULTS/verification.txt and the table in $RESULTS/table.md. Exits non-zero
# when any plugin run does not PASS.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/.."
BIN="${PASSAGE_GPU_BUNDLE:-target/gpu}"
RESULTS="${RESULTS:-target/gpu-results/suite}"
ROUNDS="${ROUNDS:-3}"
ONLY="${ONLY:-}"   # a plugin name: run only its study runs
mkdir -p "$RESULTS"
CACHE="$(mktemp -d)"

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,pcie.link.gen.current,pcie.link.width.current --format=csv
  echo "cpus: $(nproc)"
  echo "kernel: $(uname -r)"
  echo "rounds: $ROUNDS"
} > "$RESULTS/machine.txt" 2>&1
cat "$RESULTS/machine.txt"

slug() { tr -c 'A-Za-z0-9\n' '-' <<<"$1" | tr -s '-' | sed 's/-$//'; }

plugin_run() { # plugin file params...
  local plugin=$1 file=$2; shift 2
  local args=() p
  for p in "$@"; do args+=(--param "$p"); done
  "$BIN/passage-agent" run "$BIN/plugins/$plugin.wasm" --json --cache-dir "$CACHE" "${args[@]}" > "$file" 2> "$file.log"
}

native_run() { # plugin file params...
  local plugin=$1 file=$2; shift 2
  local args=() p
  for p in "$@"; do args+=(--param "$p"); done
  "$BIN/passage-bench" suite-native "$plugin" "${args[@]}" > "$file" 2> "$file.log"
}

failed=0
: > "$RESULTS/verification.txt"
while IFS=$'\t' read -r label plugin params; do
  [ -n "$ONLY" ] && [ "$plugin" != "$ONLY" ] && continue
  name="$(slug "$label")"
  read -r -a list <<<"$params"
  echo "== $label: $plugin ${params}"
  for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
      plugin_run "$plugin" "$RESULTS/$name.plugin.$round.json" "${list[@]}" || echo "   plugin run $round failed"
      native_run "$plugin" "$RESULTS/$name.native.$round.json" "${list[@]}" || echo "   native run $round failed"
    else
      native_run "$plugin" "$RESULTS/$name.native.$round.json" "${list[@]}" || echo "   native run $round failed"
      plugin_run "$plugin" "$RESULTS/$name.plugin.$round.json" "${list[@]}" || echo "   plugin run $round failed"
    fi
  done
  verdict="$(python3 - "$RESULTS/$name.plugin.1.json" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"FAIL (no report: {e})"); sys.exit()
if not report.get("ok"):
    print(f"FAIL ({report.get('error')})"); sys.exit()
v = [m["value"] for m in report["metrics"] if m["name"] == "verification"]
print({1.0: "PASS", 0.0: "FAIL", -1.0: "SKIPPED"}.get(v[0] if v else None, "FAIL (no verification)")
      + (" (SIMULATED)" if report.get("simulated") else ""))
PY
)"
  echo "   $verdict"
  printf '%s\t%s\t%s\t%s\n' "$label" "$plugin" "$params" "$verdict" >> "$RESULTS/verification.txt"
  [ "$verdict" = PASS ] || failed=1
done < <("$BIN/passage-bench" study)

python3 "$HERE/suite_table.py" "$RESULTS" > "$RESULTS/table.md" \
  || echo "the table could not be made"
cat "$RESULTS/table.md"
rm -rf "$CACHE"
exit "$failed"
