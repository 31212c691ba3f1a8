#!/usr/bin/env bash
# Builds what benches/gpu.sh, benches/suite.sh and benches/experiment.sh need into target/gpu:
# release binaries of the agent, the portal, the benchmark driver and the CUDA tests (stripped),
# the libraries the portal links, the plugins (with the Python and JavaScript examples), and the scripts with the suite's table maker (so
# that the bundle also runs on its own). The GPU machine needs no Rust
# toolchain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BUNDLE="$TARGET/gpu"
./x plugins >/dev/null
./x examples >/dev/null
cargo build --release -p passage-agent -p passage-bench -p passage-server
tests=$(cargo test --release -p passage-plugin-host --test cuda --no-run --message-format=json \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "cuda" and m.get("executable"):
        print(m["executable"])')
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
cp "$TARGET/release/passage-agent" "$TARGET/release/passage-bench" "$TARGET/release/passage" "$BUNDLE/"
cp "$tests" "$BUNDLE/cuda-tests"
strip "$BUNDLE"/passage-agent "$BUNDLE"/passage-bench "$BUNDLE"/passage "$BUNDLE"/cuda-tests
# The portal links libvirt: its library and those it brings, but glibc's, go along.
mkdir -p "$BUNDLE/lib"
ldd "$BUNDLE/passage" | awk '/=> \// {print $3}' | grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' \
  | while read -r lib; do cp -L "$lib" "$BUNDLE/lib/"; done
cp -r "$TARGET/plugins" "$BUNDLE/plugins"
cp benches/gpu.sh benches/gpu-languages.sh benches/suite.sh benches/suite_table.py benches/languages_table.py benches/experiment.sh "$BUNDLE/"
du -sh "$BUNDLE"
