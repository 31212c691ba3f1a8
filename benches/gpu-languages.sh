#!/usr/bin/env bash
# vector-add in Rust (the suite's), Python and JavaScript (the kit's examples) on the GPU,
# interleaved, $ROUNDS rounds of each size; the table of kernel times and ratios to Rust goes to
# $OUT/languages.md. Part of benches/gpu.sh; runs on its own from the same bundle.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${PASSAGE_GPU_BUNDLE:-target/gpu}"
OUT="${OUT:-target/gpu-results}"
ROUNDS="${ROUNDS:-3}"
mkdir -p "$OUT"
echo "== plugin languages: vector-add in Rust, Python and JavaScript, interleaved, $ROUNDS rounds"
if [ ! -f "$BIN/plugins/examples/vector-add-python.wasm" ]; then
  echo "LANGUAGE EXAMPLES MISSING (build the bundle with benches/build-gpu-bundle.sh)"
  exit 1
fi
for size in 50000 1Mi; do
  for round in $(seq "$ROUNDS"); do
    for lang in rust python js; do
      plugin="$BIN/plugins/examples/vector-add-$lang.wasm"
      [ "$lang" = rust ] && plugin="$BIN/plugins/vector-add.wasm"
      "$BIN/passage-agent" run "$plugin" --json -p elements="$size" -p repetitions=200 \
        > "$OUT/languages-$size-$lang-$round.json" || echo "VECTOR-ADD ($lang) FAILED"
    done
  done
done
python3 benches/languages_table.py "$OUT" | tee "$OUT/languages.md"
