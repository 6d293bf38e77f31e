"""The design numbers of the revisited toy ablation (issue 29; README.md here), from the shipped
records: ``python results/ablation-toy-revisited/design.py`` prints the CPU-hour estimate and
the smallest resolvable C → D-sized effect.

**Cost.**
Per run: training = the mean ``train_cpu_s`` of the arm's base in ``results/ablation-toy/runs``
(Intel Xeon; the new RoPE arms cost their base's: a scaled buffer, or a 4,096-entry table);
evaluation = ``EVAL_FACTOR`` × the base's ``sample_cpu_s`` (2,048 samples at w = 3): the
original protocol's evaluation at w = 3 (1), the selection sweep, 512 samples at each of
w = 1, 1.5, 2, 3, 4 (w = 1 needs one forward pass, the others two: 4.5 × 512/2048 = 1.125),
the test evaluation at the chosen w (1) and, 5 %, the held-out losses, the per-σ errors and
the second extractor's features. On AMD EPYC the costs
are scaled by the ratio measured for runs retrained there (guidance/E-retrained against E for
the RoPE arms, followup/C-smsnr against C for the additive ones: the same models).

**Power.** The SD of the seed-paired toy-FID difference D − C of the original records (seeds
0–2), and the smallest mean difference a paired t-test resolves with n seeds at two-sided
0.05/m (m = 13 or 5, Holm's first step over the design's 13 comparisons or the AMD
cut's 5; m = 1, its last).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from scipy import stats

TOY = Path(__file__).resolve().parents[1] / "ablation-toy"
EVAL_FACTOR = 2 + 4.5 * 512 / 2048 + 0.05
BASE = {"D-grid": "D", "D-table": "D", "E-grid": "E", "E-table": "E"}
ROPE = {"D", "E"}
SEEDS = {"A": 3, "B1": 3, "B2": 3, "C": 3, "D": 5, "E": 3, "R4": 3,
         "D-grid": 5, "D-table": 5, "E-grid": 3, "E-table": 3}  # the registered design
AMD_CUT = {"C": 5, "D": 5, "D-grid": 5, "D-table": 5}  # README: on AMD EPYC


def mean_cost(paths) -> tuple[float, float]:
    records = [json.loads(p.read_text()) for p in paths]
    return (statistics.mean(r["train_cpu_s"] for r in records),
            statistics.mean(r["final"]["sample_cpu_s"] for r in records))


def per_run() -> dict[str, dict[str, float]]:
    """CPU seconds of one run of each arm, on each CPU kind."""
    intel = {b: mean_cost(sorted((TOY / "runs").glob(f"{b}-s[0-9].json")))
             for b in ("A", "B1", "B2", "C", "D", "E", "R4")}
    amd = {"rope": mean_cost(sorted((TOY / "guidance" / "E-retrained").glob("E-s*.json"))),
           "additive": mean_cost(sorted((TOY / "followup").glob("C-smsnr-s*.json")))}
    ratio = {fam: [a / i for a, i in zip(amd[fam], intel["E" if fam == "rope" else "C"])]
             for fam in amd}
    out = {}
    for arm in SEEDS:
        base = BASE.get(arm, arm)
        train, sample = intel[base]
        r = ratio["rope" if base in ROPE else "additive"]
        out[arm] = {"intel": train + EVAL_FACTOR * sample,
                    "amd": train * r[0] + EVAL_FACTOR * sample * r[1]}
    return out


def resolvable(n_seeds: int, m: int) -> tuple[float, float]:
    """(SD of the original D − C toy-FID differences, the smallest resolvable |mean|)."""
    fid = {r: json.loads((TOY / "runs" / f"{r}.json").read_text())["final"]["fid"]
           for r in ("C-s0", "C-s1", "C-s2", "D-s0", "D-s1", "D-s2")}
    sd = statistics.stdev(fid[f"D-s{s}"] - fid[f"C-s{s}"] for s in range(3))
    return sd, stats.t.ppf(1 - 0.05 / m / 2, n_seeds - 1) * sd / n_seeds**0.5


if __name__ == "__main__":
    runs = per_run()
    print("arm       Intel CPU-s/run  AMD CPU-s/run")
    for arm, c in runs.items():
        print(f"{arm:9s} {c['intel']:15.0f} {c['amd']:14.0f}")
    for name, seeds in (("registered design", SEEDS), ("AMD cut", AMD_CUT)):
        hours = {k: sum(n * runs[a][k] for a, n in seeds.items()) / 3600 for k in ("intel", "amd")}
        print(f"{name}: {sum(seeds.values())} runs, Intel {hours['intel']:.2f} CPU-h, "
              f"AMD {hours['amd']:.2f} CPU-h")
    for n, m in ((3, 13), (5, 13), (5, 5)):
        sd, first = resolvable(n, m)
        print(f"{n} seeds, Holm over {m} (SD of D − C toy FID {sd:.2f}): resolvable |mean| ≥ "
              f"{first:.1f} at Holm's first step, ≥ {resolvable(n, 1)[1]:.1f} at its last")
