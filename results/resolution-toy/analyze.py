"""The pre-registered analysis of issue 19 (``README.md``): per model and cell, mean ± 95 % CI
over seeds; paired differences D − C and L − D per cell, and of each model's change from 32²;
a Markdown table, a JSON summary and the figure (metric against resolution, one line per
model, CI bands, one panel per metric and position reading).

    python results/resolution-toy/analyze.py results/resolution-toy/runs \\
        --out results/resolution-toy/summary.json

The statistics are the package's (``hdit_edu.stats``): :func:`t_interval` (mean, SD,
n, the 95 % t interval ``ci95`` = [low, high] and its half-width ``half``; NaN for one seed)
and :func:`paired_difference` (differences paired by seed, two-sided paired t-test ``p``).
A labelled post-hoc view (proposed after seeing seed 0, outside the registered rule) divides
out the floor instead of subtracting: the *fraction retained* of each model's 32² level —
accuracy above chance (1/8), coherence, and 32²-FID / cell-FID — so that a model already near
the floor at 32² cannot win by having less to lose; its D − C and L − D pairs get the same
verdict rule. The verdicts are the README's rule, applied to each model pair's *difference of the change
from 32²* per cell and metric: ``better`` (for D − C: the paper's claim *supported*) where its
95 % CI lies wholly on the better side of 0, ``worse`` (*contradicted*) where it lies wholly on
the worse side, ``not resolved`` otherwise (fewer than two seeds included). Descriptive, outside
the rule: the σ shift's own effect per model and cell (shift − no shift, paired by seed, the
same CI rule read as "the shift helps / hurts"); and the Markdown opens with the wide tables
(size × model × position reading, per metric and schedule) that the README shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hdit_edu.stats import ci_verdict, paired_difference, t_interval

METRICS = ("class_accuracy", "fid", "coherence")
BETTER = {"class_accuracy": 1, "fid": -1, "coherence": 1}  # sign of "better"
MODELS = ("C", "D", "L")
PAIRS = (("C", "D"), ("D", "L"))  # difference second − first
BASE = "32-normalised-noshift"  # the training configuration: the one 32² cell
VERDICTS = ("better", "worse", "not resolved")
CHANCE = 1 / 8  # class accuracy of a model that ignores the class (8 classes)
SIZES = (24, 32, 48, 64)
READINGS = ("normalised", "grid")
NAMES = {"class_accuracy": "class accuracy", "fid": "toy FID", "coherence": "coherence"}
DIGITS = {"class_accuracy": 3, "fid": 1, "coherence": 3}


def retained(cell: float, at32: float, metric: str) -> float:
    """Post-hoc: the fraction of the 32² level a cell keeps (1 = all, 0 = at the floor; higher
    is better for every metric): accuracy above chance, coherence, and FID as 32²-FID / FID."""
    floor = CHANCE if metric == "class_accuracy" else 0.0
    if metric == "fid":
        cell, at32 = at32, cell
    return float("nan") if at32 == floor else (cell - floor) / (at32 - floor)


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """b − a paired by seed (:func:`paired_difference`) as one entry: the differences'
    :func:`t_interval` with the ``seeds`` and the paired t-test's ``p``."""
    pair = paired_difference(a, b)
    return pair["difference"] | {"seeds": pair["seeds"], "p": pair["p"]}


def verdict(entry: dict, metric: str) -> str:
    """The README's rule on one :func:`t_interval` of a difference (second − first): ``better``
    where the 95 % CI excludes 0 on the better side of ``metric`` (:data:`BETTER`), ``worse``
    where it excludes 0 on the worse side, else ``not resolved`` (also for n < 2)."""
    return ci_verdict(entry, BETTER[metric])


def load(folder: str | Path) -> dict:
    """``{model: {seed: {cell_key: cell}}}`` of the run JSONs in ``folder``."""
    runs: dict = {}
    for path in sorted(Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        runs.setdefault(r["model"], {})[r["seed"]] = r["cells"]
    return runs


def by_seed_values(by_seed: dict, key: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` of ``metric`` at cell ``key`` over the seeds of one model that have it."""
    return {s: cells[key][metric] for s, cells in by_seed.items() if key in cells}


def summarise(runs: dict) -> dict:
    keys = sorted({k for m in runs.values() for cells in m.values() for k in cells})
    table, diffs = {}, {}
    for model, by_seed in runs.items():
        for key in keys:
            for metric in METRICS:
                vals = list(by_seed_values(by_seed, key, metric).values())
                if vals:
                    table.setdefault(model, {}).setdefault(key, {})[metric] = t_interval(vals)
    for first, second in PAIRS:
        if first not in runs or second not in runs:
            continue
        for key in keys:
            for metric in METRICS:
                a = by_seed_values(runs[first], key, metric)
                b = by_seed_values(runs[second], key, metric)
                # change from 32² (the extrapolation test proper): (x_cell − x_32) per seed
                a32 = by_seed_values(runs[first], BASE, metric)
                b32 = by_seed_values(runs[second], BASE, metric)
                da = {s: a[s] - a32[s] for s in a if s in a32}
                db = {s: b[s] - b32[s] for s in b if s in b32}
                entry = {"difference": paired(a, b), "difference_of_change": paired(da, db)}
                if key != BASE:
                    entry["verdict"] = verdict(entry["difference_of_change"], metric)
                    ra = {s: retained(a[s], a32[s], metric) for s in a if s in a32}
                    rb = {s: retained(b[s], b32[s], metric) for s in b if s in b32}
                    post = paired(ra, rb)
                    entry["post_hoc_retained"] = post | {
                        "verdict": verdict(post, "class_accuracy")  # higher is better
                    }
                diffs.setdefault(f"{second}-{first}", {}).setdefault(key, {})[metric] = entry
    # the σ shift's own effect (descriptive, not a registered test): shift − no shift per model,
    # size and reading, paired by seed, with the verdict rule read as "the shift helps / hurts"
    shift_effect: dict = {}
    for model, by_seed in runs.items():
        for key in keys:
            if not key.endswith("-noshift") or key == BASE:
                continue
            cell = key.removesuffix("-noshift")
            for metric in METRICS:
                a = by_seed_values(by_seed, key, metric)
                b = by_seed_values(by_seed, f"{cell}-shift", metric)
                if set(a) & set(b):
                    entry = paired(a, b)
                    entry["verdict"] = verdict(entry, metric)
                    shift_effect.setdefault(model, {}).setdefault(cell, {})[metric] = entry
    seeds = {m: sorted(by_seed) for m, by_seed in runs.items()}
    counts, post_counts = (
        {
            pair: {
                metric: {v: sum(get(m[metric]) == v for m in by_cell.values()) for v in VERDICTS}
                for metric in METRICS
            }
            for pair, by_cell in diffs.items()
        }
        for get in (
            lambda e: e.get("verdict"),
            lambda e: e.get("post_hoc_retained", {}).get("verdict"),
        )
    )
    return {
        "seeds": seeds,
        "cells": keys,
        "table": table,
        "paired": diffs,
        "verdict_counts": counts,
        "post_hoc_verdict_counts": post_counts,
        "shift_effect": shift_effect,
    }


def _fmt(c: dict, digits: int) -> str:
    """``mean ± half-width`` of a :func:`t_interval`; ``mean (n=1)`` for one seed, – for none."""
    if c["n"] == 0:
        return "–"
    if c["n"] == 1:
        return f"{c['mean']:.{digits}f} (n=1)"
    return f"{c['mean']:.{digits}f} ± {c['half']:.{digits}f}"


def _counts_table(counts: dict) -> list[str]:
    """Markdown lines: a blank line, then the verdict counts per pair and metric."""
    lines = [
        "",
        "| pair | metric | better | worse | not resolved |",
        "| --- | --- | --- | --- | --- |",
    ]
    for pair, by_metric in counts.items():
        for metric, c in by_metric.items():
            lines.append(f"| {pair} | {metric} | " + " | ".join(str(c[v]) for v in VERDICTS) + " |")
    return lines


def wide_tables(summary: dict, schedule: str) -> list[str]:
    """Markdown lines: per metric, a table of size (rows) × model and position reading
    (columns), mean ± 95 % CI half-width (n seeds), under one σ ``schedule`` (``noshift`` or
    ``shift``); 32² is the one training cell, shown under both readings."""
    models = [m for m in MODELS if m in summary["table"]]
    lines = []
    for metric in METRICS:
        lines += [
            f"**{NAMES[metric]}** (schedule: {schedule}; mean ± 95 % CI half-width (n seeds))",
            "",
            "| size | " + " | ".join(f"{m} {r}" for m in models for r in READINGS) + " |",
            "| --- |" + " --- |" * (len(models) * len(READINGS)),
        ]
        for res in SIZES:
            row = []
            for m in models:
                for r in READINGS:
                    key = BASE if res == 32 else f"{res}-{r}-{schedule}"
                    c = summary["table"][m].get(key, {}).get(metric)
                    if c is None:
                        row.append("–")
                    else:
                        n = f" ({c['n']})" if c["n"] > 1 else ""
                        row.append(_fmt(c, DIGITS[metric]) + n)
            lines.append(f"| {res}² | " + " | ".join(row) + " |")
        lines.append("")
    return lines


def markdown(summary: dict) -> str:
    lines = []
    for schedule in ("noshift", "shift"):
        lines += wide_tables(summary, schedule)
    lines += [
        "| cell | model | class accuracy | toy FID | coherence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in summary["cells"]:
        for model in MODELS:
            row = summary["table"].get(model, {}).get(key)
            if row:
                lines.append(
                    f"| {key} | {model} | {_fmt(row['class_accuracy'], 3)} | "
                    f"{_fmt(row['fid'], 1)} | {_fmt(row['coherence'], 3)} |"
                )
    lines += [
        "",
        "Paired differences (second − first) at each cell, and of the change from 32² (ΔΔ):",
        "",
        "| pair | cell | Δ accuracy | Δ FID | Δ coherence | ΔΔ accuracy | ΔΔ FID | ΔΔ coherence |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pair, by_cell in summary["paired"].items():
        for key, m in by_cell.items():
            row = [_fmt(m[x][kind], DIGITS[x]) for kind in ("difference", "difference_of_change")
                   for x in METRICS]  # fmt: skip
            lines.append(f"| {pair} | {key} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Verdicts (the README's rule on the difference of the change from 32², per metric: "
        "better / worse / not resolved; for D-C, better = the paper's claim supported):",
        "",
        "| pair | cell | accuracy | FID | coherence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for pair, by_cell in summary["paired"].items():
        for key, m in by_cell.items():
            if key != BASE:
                lines.append(
                    f"| {pair} | {key} | " + " | ".join(m[x]["verdict"] for x in METRICS) + " |"
                )
    lines += _counts_table(summary["verdict_counts"])
    lines += [
        "",
        "Post-hoc (proposed after seeing seed 0; not the registered rule): D-C and L-D in the "
        "fraction of the 32² level retained (accuracy above chance 1/8, coherence, "
        "32²-FID / FID; higher is better), mean ± 95 % CI half-width and verdict:",
        "",
        "| pair | cell | retained accuracy | retained FID | retained coherence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for pair, by_cell in summary["paired"].items():
        for key, m in by_cell.items():
            if key != BASE:
                row = [
                    f"{_fmt(m[x]['post_hoc_retained'], 3)} {m[x]['post_hoc_retained']['verdict']}"
                    for x in METRICS
                ]
                lines.append(f"| {pair} | {key} | " + " | ".join(row) + " |")
    lines += _counts_table(summary["post_hoc_verdict_counts"])
    lines += [
        "",
        "The σ shift's effect (descriptive): shift − no shift per model, size and reading, "
        "paired by seed, mean ± 95 % CI half-width, and the rule read as the shift helps "
        "(better) / hurts (worse):",
        "",
        "| model | cell | Δ accuracy | Δ FID | Δ coherence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for model, by_cell in summary["shift_effect"].items():
        for cell, m in by_cell.items():
            row = [f"{_fmt(m[x], DIGITS[x])} {m[x]['verdict']}" for x in METRICS]
            lines.append(f"| {model} | {cell} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def figure(summary: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    colours = {"C": "tab:orange", "D": "tab:blue", "L": "tab:green"}
    for row, positions in enumerate(("normalised", "grid")):
        for col, metric in enumerate(METRICS):
            ax = axes[row, col]
            for model in MODELS:
                cells = summary["table"].get(model)
                if not cells:
                    continue
                for shift, style in (("noshift", "-"), ("shift", "--")):
                    xs, ms, hs, ns = [], [], [], []
                    for key, c in cells.items():
                        res, pos, sh = key.split("-")
                        if res == "32" or (pos == positions and sh == shift):
                            xs.append(int(res))
                            ms.append(c[metric]["mean"])
                            hs.append(c[metric]["half"] if c[metric]["n"] > 1 else 0.0)
                            if res != "32":
                                ns.append(c[metric]["n"])
                    if not ns:  # only the shared 32² cell: no line for this schedule yet
                        continue
                    order = np.argsort(xs)
                    x, m, h = (np.asarray(v)[order] for v in (xs, ms, hs))
                    n = min(ns)  # seeds behind the fewest-seed cell of this line
                    ax.plot(x, m, style, marker="o", color=colours[model],
                            label=f"{model} {shift} (n={n})")  # fmt: skip
                    ax.fill_between(x, m - h, m + h, color=colours[model], alpha=0.12)
            ax.axvline(32, color="grey", lw=0.8)
            ax.set_title(f"{metric} — positions {positions}")
            ax.set_xticks([24, 32, 48, 64])
            if metric == "fid":
                ax.set_yscale("log")
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="summary JSON (.md and .png next to it)")
    args = p.parse_args(argv)
    summary = summarise(load(args.folder))
    out = Path(args.out)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(summary))
    figure(summary, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
