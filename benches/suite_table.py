#!/usr/bin/env python3
"""Turns the JSON files of benches/suite.sh into the plugin/native table of docs/benchmarks.md.

    python3 benches/suite_table.py RESULTS_DIR > table.md

For every study run and every measured figure: the native median and the plugin median (the
median over rounds of each process's median), the smallest min and largest max seen in any round
(the spread of the samples), the ratio plugin/native (median over rounds, with its range), and the
plugin's cost in percent: how much slower the plugin is (time figures: ratio - 1; rates: 1 - ratio),
negative where the plugin was faster. Constant figures (sizes, counts) are left out.
"""
import json
import pathlib
import statistics
import sys

TIMES = {"ms", "msec", "clocks"}
RATES = {"GB/s", "GB/s (2^30 B)", "GFlop/s", "MPixels/s", "GOP/s", "Gigaoptions/s"}
# CPU-side figures of asyncAPI: not GPU work, compared for information only.
INFO = {"iterations"}


def load(path):
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not report.get("ok"):
        return None
    return {m["name"]: (m["value"], m["unit"]) for m in report["metrics"]}


def fmt(value):
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.3f}"
    return f"{value:.4g}"


def main():
    results = pathlib.Path(sys.argv[1])
    runs = [line.split("\t") for line in (results / "verification.txt").read_text().splitlines() if line]
    print("| run | figure | unit | native median [min–max] | plugin median [min–max] | plugin / native, median of rounds [range] | plugin cost | verification |")
    print("|---|---|---|---|---|---|---|---|")
    worst = []
    for label, plugin, params, verdict in runs:
        name = "".join(c if c.isalnum() else "-" for c in label)
        while "--" in name:
            name = name.replace("--", "-")
        name = name.strip("-")
        rounds = sorted(results.glob(f"{name}.plugin.*.json"))
        pairs = []
        for p in rounds:
            n = p.with_name(p.name.replace(".plugin.", ".native."))
            a, b = load(p), load(n)
            if a and b:
                pairs.append((a, b))
        if not pairs:
            print(f"| {label} | (no complete round) | | | | | | {verdict} |")
            continue
        first = pairs[0][0]
        for figure, (_, unit) in first.items():
            if figure.endswith(" min") or figure.endswith(" max") or figure == "verification":
                continue
            if unit not in TIMES | RATES | INFO:
                continue
            ratios, pv, nv, pmin, pmax, nmin, nmax = [], [], [], [], [], [], []
            for a, b in pairs:
                if figure not in a or figure not in b or b[figure][0] == 0:
                    continue
                ratios.append(a[figure][0] / b[figure][0])
                pv.append(a[figure][0])
                nv.append(b[figure][0])
                pmin.append(a.get(f"{figure} min", a[figure])[0])
                pmax.append(a.get(f"{figure} max", a[figure])[0])
                nmin.append(b.get(f"{figure} min", b[figure])[0])
                nmax.append(b.get(f"{figure} max", b[figure])[0])
            if not ratios:
                continue
            ratio = statistics.median(ratios)
            if unit in INFO:
                cost = "(CPU polling, see text)"
            else:
                percent = (ratio - 1) * 100 if unit in TIMES else (1 - ratio) * 100
                cost = f"{percent:+.1f}%"
                worst.append((percent, label, figure))
            print(
                f"| {label} | {figure} | {unit} "
                f"| {fmt(statistics.median(nv))} [{fmt(min(nmin))}–{fmt(max(nmax))}] "
                f"| {fmt(statistics.median(pv))} [{fmt(min(pmin))}–{fmt(max(pmax))}] "
                f"| {ratio:.3f} [{min(ratios):.3f}–{max(ratios):.3f}] | {cost} | {verdict} |"
            )
    worst.sort(reverse=True)
    print()
    within = sum(1 for w in worst if w[0] <= 3.0)
    print(f"{within} of {len(worst)} GPU figures within 3% of native.")
    for percent, label, figure in worst[:8]:
        if percent > 3.0:
            print(f"- {label}, {figure}: plugin {percent:+.1f}%")


if __name__ == "__main__":
    main()
