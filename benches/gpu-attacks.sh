#!/usr/bin/env bash
# The sandbox's attacks that need a real GPU, run on the GPU machine from prebuilt binaries
# (benches/build-gpu-bundle.sh): each must end in a clear error within bounded time and memory,
# and a normal run must still work inside the job process's confinement. Prints one line per
# attack and fails when any attack gets through.
#
#   PASSAGE_GPU_BUNDLE=target/gpu benches/gpu-attacks.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${PASSAGE_GPU_BUNDLE:-target/gpu}"
OUT="${OUT:-target/gpu-results}"
mkdir -p "$OUT"
AGENT="$BIN/passage-agent"
PLUGIN="$BIN/plugins/test/misbehave.wasm"
failed=0

# Runs the agent with "$@", recording its output, wall time, exit code and peak RSS.
measure() {
  local name="$1"; shift
  python3 - "$OUT/attack-$name" "$@" <<'PY'
import json, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.monotonic()
proc = subprocess.run(cmd, capture_output=True)
wall = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
open(out + ".out", "wb").write(proc.stdout + b"\n--- stderr\n" + proc.stderr[-20000:])
json.dump({"cmd": cmd[2:], "exit": proc.returncode, "wall_s": round(wall, 2), "peak_rss_mib": peak},
          open(out + ".json", "w"))
print(f"exit {proc.returncode}, {wall:.1f} s, peak RSS {peak} MiB")
PY
}

# Fails the script unless the recorded output of attack $1 matches $2 and lacks $3.
expect() {
  local name="$1" want="$2" never="${3:-}"
  if ! grep -q -- "$want" "$OUT/attack-$name.out"; then
    echo "ATTACK $name: expected '$want'"; failed=1
  elif [ -n "$never" ] && grep -q -- "$never" "$OUT/attack-$name.out"; then
    echo "ATTACK $name GOT THROUGH: found '$never'"; failed=1
  else
    echo "attack $name: stopped ($want)"
  fi
}

echo "== a normal run inside the confinement (as root: switched to an unprivileged user)"
measure normal "$AGENT" run "$BIN/plugins/vector-add.wasm" --json -p elements=4Mi
expect normal '"ok": true'

for mode in include-file include-macro include-disguised; do
  echo "== $mode: NVRTC must not read host files"
  measure "$mode" "$AGENT" run "$PLUGIN" --events -p mode="$mode"
  expect "$mode" 'is refused\|literally' 'root:x:0'
done

echo "== a kernel that never ends, --timeout 20: the watchdog ends the process"
measure hang "$AGENT" run "$PLUGIN" --events --timeout 20 -p mode=hang
expect hang 'time limit of 20 s'

echo "== report floods"
for mode in metric-flood metric-bytes-flood log-flood huge-log; do
  measure "$mode" "$AGENT" run "$PLUGIN" --events --timeout 60 -p mode="$mode"
  expect "$mode" 'limit exceeded'
done

echo "== module variables of 64 GiB count against GPU memory"
measure global-hog "$AGENT" run "$PLUGIN" --events -p mode=global-hog
expect global-hog '__device__ variables: '
measure global-hog-ptx "$AGENT" run "$PLUGIN" --events -p mode=global-hog-ptx
expect global-hog-ptx '__device__ variables: '

echo "== pinned host memory has its own limit"
measure host-hog "$AGENT" run "$PLUGIN" --events --host-memory-mib 4096 -p mode=host-hog
expect host-hog 'host memory limit of 4294967296 bytes'

echo "== the job process cannot reach files or the network (escape mode inside the sandbox)"
measure escape "$AGENT" run "$PLUGIN" --events -p mode=escape
expect escape '"ok":true'

echo "== the next run is healthy"
measure after "$AGENT" run "$BIN/plugins/vector-add.wasm" --json
expect after '"ok": true'

[ "$failed" = 0 ] && echo "every attack was stopped" || { echo "SOME ATTACKS GOT THROUGH"; exit 1; }
