"""The vector-add of each plugin language against the Rust one: median kernel time over rounds,
its spread (min-max of the rounds' medians) and the ratio to Rust, as a Markdown table.

    python3 benches/languages_table.py RESULTS_DIR   (files languages-<size>-<lang>-<round>.json)
"""
import glob
import json
import os
import statistics
import sys

out = sys.argv[1]
rows = {}
for path in glob.glob(os.path.join(out, "languages-*-*-*.json")):
    _, size, lang, _ = os.path.basename(path)[: -len(".json")].split("-")
    try:
        result = json.load(open(path))
    except (OSError, ValueError):
        continue
    figures = {m["name"]: m["value"] for m in result.get("metrics", [])}
    if "kernel time" not in figures:
        continue
    rows.setdefault((size, lang), []).append(
        (figures["kernel time"], figures.get("verification"), result.get("time", {}).get("wall_s"))
    )

print("| elements | language | kernel time, median of rounds (ms) | spread of rounds (ms) | ratio to Rust (time) | verification | run wall time (s) |")
print("|---|---|---|---|---|---|---|")
for size in sorted({s for s, _ in rows}, key=lambda s: (len(s), s)):
    rust = rows.get((size, "rust"))
    base = statistics.median(t for t, _, _ in rust) if rust else None
    for lang in ["rust", "python", "js"]:
        samples = rows.get((size, lang))
        if not samples:
            print(f"| {size} | {lang} | missing | | | | |")
            continue
        times = [t for t, _, _ in samples]
        median = statistics.median(times)
        ratio = f"{median / base:.3f}" if base else "n/a"
        verdicts = {v for _, v, _ in samples}
        verdict = "PASS" if verdicts == {1.0} else f"{sorted(verdicts)}"
        wall = statistics.median(w for _, _, w in samples if w is not None)
        print(f"| {size} | {lang} | {median:.5f} | {min(times):.5f}-{max(times):.5f} | {ratio} | {verdict} | {wall:.3f} |")
