#!/usr/bin/env bash
# The GPU machine's part of the test suite and the benchmarks, from prebuilt binaries.
#
#   benches/build-gpu-bundle.sh      (here: builds target/gpu/ with release binaries and plugins)
#   benches/gpu.sh                   (on the GPU machine: CUDA tests, then benchmarks)
#
# Results go to $OUT (default target/gpu-results): one file per step, JSON where possible.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${PASSAGE_GPU_BUNDLE:-target/gpu}"
OUT="${OUT:-target/gpu-results}"
ROUNDS="${ROUNDS:-3}"
mkdir -p "$OUT"
export PASSAGE_PLUGIN_DIR="$PWD/$BIN/plugins"

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv
  nproc
  uname -r
} > "$OUT/machine.txt" 2>&1 || true

echo "== CUDA tests (here a missing GPU fails them instead of skipping them)"
PASSAGE_TEST_CUDA=required "$BIN/cuda-tests" --nocapture --test-threads=1 > "$OUT/cuda-tests.txt" 2>&1 || echo "CUDA TESTS FAILED (see cuda-tests.txt)"
cat "$OUT/cuda-tests.txt"

echo "== a kernel fault fails its run; the next process is healthy"
if "$BIN/passage-agent" run "$BIN/plugins/test/misbehave.wasm" -p mode=fault > "$OUT/fault.txt" 2>&1; then
  echo "FAULT NOT REPORTED"; exit 1
fi
cat "$OUT/fault.txt"

echo "== vector-add, real verification"
"$BIN/passage-agent" run "$BIN/plugins/vector-add.wasm" --json > "$OUT/vector-add.json"
"$BIN/passage-agent" run "$BIN/plugins/vector-add.wasm" --json -p elements=4Mi > "$OUT/vector-add-4Mi.json"

echo "== the GPUs as the agent reports them to a portal, and a run as its job processes report it"
"$BIN/passage-agent" devices --json > "$OUT/devices.json"
cat "$OUT/devices.json"
"$BIN/passage-agent" run "$BIN/plugins/vector-add.wasm" --events -p elements=1Mi > "$OUT/vector-add-events.jsonl"
tail -c 600 "$OUT/vector-add-events.jsonl"; echo

echo "== p2p-bandwidth across every GPU (on one GPU: two contexts of it, peer access unavailable)"
gpus=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$OUT/devices.json" 2>/dev/null || echo 1)
devices=()
if [ "$gpus" -ge 2 ]; then
  for i in $(seq 0 $((gpus - 1))); do devices+=(--device "$i"); done
else
  devices=(--device 0 --device 0)
fi
"$BIN/passage-agent" run "$BIN/plugins/p2p-bandwidth.wasm" --json "${devices[@]}" > "$OUT/p2p-bandwidth.json" \
  || echo "P2P-BANDWIDTH FAILED (see p2p-bandwidth.json)"

echo "== launch rate: native cudarc and plugin, interleaved, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  "$BIN/passage-bench" launch-native > "$OUT/launch-native-$round.json"
  "$BIN/passage-agent" run "$BIN/plugins/launch-rate.wasm" --json > "$OUT/launch-plugin-$round.json"
done

echo "== plugin load from a warm cache and trivial runs"
"$BIN/passage-bench" instantiate "$BIN/plugins/launch-rate.wasm" > "$OUT/instantiate.json"
OUT="$OUT" ROUNDS="$ROUNDS" bash "$(dirname "$0")/gpu-languages.sh" || echo "LANGUAGES FAILED"
echo "done: $OUT"
