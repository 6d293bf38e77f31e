"""The follow-up experiment (README, "Follow-up: RoPE under soft-min-SNR"; designed after the
post-hoc per-σ look, before any of its runs): is axial RoPE still worse than additive positions
when both train with soft-min-SNR?

    python results/ablation-toy/followup.py [--runs results/ablation-toy/runs]
        [--followup results/ablation-toy/followup]

Reads the main experiment's C, D, E records and the follow-up's C-smsnr records (C + E's
weighting), and writes ``followup/summary.json`` and ``followup/summary.md``: per metric the
seed-paired differences C → D (RoPE under SNR; from the main experiment), C-smsnr → E (RoPE under
soft-min-SNR) and their difference (the interaction, (D − C) − (E − C-smsnr)), each with its 95 %
t CI and paired t-test p, Holm-adjusted over the three metrics of each comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hdit_edu.ablation import load_runs
from hdit_edu.stats import holm, paired_difference

HERE = Path(__file__).resolve().parent
METRICS = ("fid", "class_accuracy", "heldout_loss")


def analyze(main: dict, followup: dict) -> dict:
    """``main`` / ``followup``: :func:`load_runs` of the two folders."""

    def by_seed(runs, name, metric):
        return {s: r["final"][metric] for s, r in runs.get(name, {}).items()}

    rows = []
    for metric in METRICS:
        c, d, e = (by_seed(main, n, metric) for n in ("C", "D", "E"))
        cs = by_seed(followup, "C-smsnr", metric)
        under_snr = {s: d[s] - c[s] for s in set(c) & set(d)}
        under_smsnr = {s: e[s] - cs[s] for s in set(cs) & set(e)}
        for what, x, y in (
            ("C → D: RoPE under SNR", c, d),
            ("C-smsnr → E: RoPE under soft-min-SNR", cs, e),
            ("interaction: (D − C) − (E − C-smsnr)", under_smsnr, under_snr),
        ):
            rows.append({"metric": metric, "what": what, **paired_difference(x, y)})
    for what in {r["what"] for r in rows}:
        mine = [r for r in rows if r["what"] == what]
        for r, p in zip(mine, holm([r["p"] for r in mine])):
            r["p_holm"] = p
    return {"rows": rows, "seeds_c_smsnr": sorted(followup.get("C-smsnr", {}))}


def markdown(result: dict) -> str:
    lines = [
        "| comparison | metric | n | difference (95 % CI) | p (Holm over metrics) |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        d = r["difference"]
        ci = "" if math.isnan(d["half"]) else f" [{d['ci95'][0]:.4g}, {d['ci95'][1]:.4g}]"
        p = "–" if math.isnan(r["p_holm"]) else f"{r['p_holm']:.3g}"
        mean = "–" if not d["n"] else f"{d['mean']:.4g}"
        lines.append(f"| {r['what']} | {r['metric']} | {d['n']} | {mean}{ci} | {p} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=str(HERE / "runs"))
    p.add_argument("--followup", default=str(HERE / "followup"))
    args = p.parse_args(argv)
    result = analyze(load_runs(args.runs), load_runs(args.followup))
    out = Path(args.followup)
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
