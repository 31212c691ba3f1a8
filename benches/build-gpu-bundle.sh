#!/usr/bin/env bash
# Builds what benches/gpu.sh and benches/suite.sh need into target/gpu: release binaries of the
# agent, the benchmark driver and the CUDA tests (stripped), the plugins, and the two scripts with
# the suite's table maker (so that the bundle also runs on its own). The GPU machine needs no Rust
# toolchain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BUNDLE="$TARGET/gpu"
./x plugins >/dev/null
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
cp benches/gpu.sh benches/suite.sh benches/suite_table.py "$BUNDLE/"
du -sh "$BUNDLE"
