#!/usr/bin/env bash
# Builds what benches/gpu.sh needs into target/gpu: release binaries of the agent, the benchmark
# driver and the CUDA tests (stripped), and the plugins. The GPU machine needs no Rust toolchain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BUNDLE="$TARGET/gpu"
./x build >/dev/null
cargo build --release -p passage-agent -p passage-bench
tests=$(cargo test --release -p passage-plugin-host --test cuda --no-run --message-format=json \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "cuda" and m.get("executable"):
        print(m["executable"])')
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
cp "$TARGET/release/passage-agent" "$TARGET/release/passage-bench" "$BUNDLE/"
cp "$tests" "$BUNDLE/cuda-tests"
strip "$BUNDLE"/passage-agent "$BUNDLE"/passage-bench "$BUNDLE"/cuda-tests
cp -r "$TARGET/plugins" "$BUNDLE/plugins"
du -sh "$BUNDLE"
