"""The pre-registered analysis of the toy ablation experiment (README.md, "Analysis").

    python results/ablation-toy/analyze.py results/ablation-toy/runs [--out summary.json]

Reads every finished run JSON (``status == "done"``) of a folder and writes

* per configuration and metric: mean, SD, n and the 95 % t confidence interval over seeds;
* per paper comparison X → Y: the seed-paired difference mean(Y_s − X_s) with its 95 % CI
  (t with n − 1 degrees of freedom over the seeds both configurations have), the two-sided
  paired t-test p-value, Holm's adjustment over the comparisons (per metric), whether the sign
  matches the paper's and whether the difference is significant (Holm-adjusted p < 0.05);
* Kendall's τ-b between the paper's FID order of A, B1, B2, C, D, E, R4 and our mean toy FIDs.

The paper has FIDs only; "better" is lower FID, lower held-out loss, higher class accuracy, so
the paper's sign for a metric is the sign of its FID difference, flipped for accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

# FID of the paper (Tables 1, 2, 5; ImageNet-128², 50k samples, 50 steps of DPM++(3M) SDE).
PAPER_FID = {
    "A": 50.76,
    "B1": 55.93,
    "B2": 51.07,
    "C": 44.36,
    "D": 41.41,
    "E": 27.74,
    "R4": 30.71,
    "E-add": 28.37,
    "E-concat": 33.75,
    "D-minsnr5": 36.65,
    "D-minsnr4": 35.62,
}
TABLE1 = ("A", "B1", "B2", "C", "D", "E", "R4")
# (X, Y, what): the difference is Y − X.
COMPARISONS = (
    ("A", "B1", "Table 1: + Swin attention"),
    ("A", "B2", "Table 1: + neighborhood attention"),
    ("B1", "B2", "Table 1: neighborhood vs Swin"),
    ("B2", "C", "Table 1: + GEGLU"),
    ("C", "D", "Table 1: + axial RoPE"),
    ("D", "E", "Table 1: + soft-min-SNR"),
    ("R4", "E", "Table 1: HDiT E vs single-level R4"),
    ("E", "E-add", "Table 2: lerp → add"),
    ("E", "E-concat", "Table 2: lerp → concat"),
    ("E-add", "E-concat", "Table 2: add → concat"),
    ("D", "D-minsnr5", "Table 5: SNR → min-SNR γ=5"),
    ("D-minsnr5", "D-minsnr4", "Table 5: min-SNR γ=5 → γ=4"),
    ("D-minsnr4", "E", "Table 5: min-SNR γ=4 → soft-min-SNR γ=4"),
)
METRICS = {"fid": +1, "class_accuracy": -1, "heldout_loss": +1}  # +1: lower is better
ALPHA = 0.05


def load_runs(folder: Path) -> dict[str, dict[int, dict]]:
    """{config: {seed: final metrics}} of the finished runs in ``folder``."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("status") != "done" or "config_name" not in r:
            continue
        runs.setdefault(r["config_name"], {})[r["seed"]] = r["final"]
    return runs


def t_interval(values) -> dict:
    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    sd = float(v.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "sd": sd, "n": n, "ci95": [mean - half, mean + half], "half": half}


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def analyze(runs: dict[str, dict[int, dict]]) -> dict:
    table = {
        c: {m: t_interval([s[m] for s in runs[c].values()]) for m in METRICS}
        for c in PAPER_FID
        if c in runs
    }
    comparisons = []
    for metric, lower_better in METRICS.items():
        rows = []
        for x, y, what in COMPARISONS:
            seeds = sorted(set(runs.get(x, {})) & set(runs.get(y, {})))
            diffs = [runs[y][s][metric] - runs[x][s][metric] for s in seeds]
            ci = t_interval(diffs)
            p = (
                float(stats.ttest_1samp(diffs, 0.0).pvalue)
                if len(diffs) > 1 and np.std(diffs) > 0
                else math.nan
            )
            paper_sign = int(np.sign(PAPER_FID[y] - PAPER_FID[x])) * lower_better
            rows.append(
                {
                    "metric": metric,
                    "x": x,
                    "y": y,
                    "what": what,
                    "seeds": seeds,
                    "difference": ci,
                    "p": p,
                    "paper_difference_fid": PAPER_FID[y] - PAPER_FID[x],
                    "paper_sign": paper_sign,
                    "sign_matches": bool(len(diffs)) and int(np.sign(ci["mean"])) == paper_sign,
                }
            )
        for row, p_holm in zip(rows, holm([r["p"] for r in rows])):
            row["p_holm"] = p_holm
            row["significant"] = bool(p_holm < ALPHA) if not math.isnan(p_holm) else False
        comparisons += rows
    present = [c for c in TABLE1 if c in table]
    tau = (
        stats.kendalltau(
            [PAPER_FID[c] for c in present], [table[c]["fid"]["mean"] for c in present]
        )
        if len(present) > 2
        else None
    )
    return {
        "table": table,
        "comparisons": comparisons,
        "kendall_tau": None
        if tau is None
        else {"configs": present, "tau": float(tau.statistic), "p": float(tau.pvalue)},
    }


def markdown(result: dict) -> str:
    lines = [
        "| config | n | toy FID | class accuracy | held-out loss | paper FID |",
        "|---|---|---|---|---|---|",
    ]
    for c, row in result["table"].items():
        cells = [
            f"{row[m]['mean']:.4g} ± {row[m]['half']:.2g}"
            if row[m]["n"] > 1
            else f"{row[m]['mean']:.4g}"
            for m in METRICS
        ]
        lines.append(f"| {c} | {row['fid']['n']} | " + " | ".join(cells) + f" | {PAPER_FID[c]} |")
    lines += [
        "",
        "| comparison | metric | difference (95 % CI) | p (Holm) | sign as paper | significant |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["comparisons"]:
        d = r["difference"]
        lines.append(
            f"| {r['x']} → {r['y']} ({r['what']}) | {r['metric']} | {d['mean']:.4g} "
            f"[{d['ci95'][0]:.3g}, {d['ci95'][1]:.3g}] | {r['p_holm']:.3g} | "
            f"{'yes' if r['sign_matches'] else 'no'} | {'yes' if r['significant'] else 'no'} |"
        )
    if result["kendall_tau"]:
        k = result["kendall_tau"]
        lines += [
            "",
            f"Kendall's τ-b (paper FID order vs ours, {', '.join(k['configs'])}): {k['tau']:.3f} (p = {k['p']:.3g})",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--out", default=None, help="summary JSON (the Markdown goes next to it)")
    args = p.parse_args(argv)
    result = analyze(load_runs(Path(args.folder)))
    text = markdown(result)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        Path(args.out).with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
