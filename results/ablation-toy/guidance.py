"""Guidance sweep of the follow-up (README, "Guidance sweep: C-smsnr against E at every w";
designed after a pilot and before its runs): is E's far lower toy FID than C-smsnr's a property
of the one guidance scale w = 3 that every run was evaluated at, or does it hold when each model
gets its own best w?

Each checkpoint (``NAME=RUN_DIR``, NAME ending in ``-sSEED``) is sampled at every guidance
scale of ``--scales`` with the ablation's evaluation (2,048 samples, classes 0..7 in turn,
3M-SDE 50 steps, noise seed 1000 + seed: w = 3 repeats the run's own final evaluation), and
each (run, w) cell is written to ``<out>/<NAME>.json`` as it finishes (a rerun skips the cells
it holds). Per cell: toy FID against the 2,048 test images with its mean term, class accuracy,
coherence, and the spread of the classifier features (``hdit_edu.protocol``); the
first 16 samples (two per class, one class per column) go to ``<out>/grids/<NAME>-w<w>.png``.

    OMP_NUM_THREADS=1 python results/ablation-toy/guidance.py run \\
        C-smsnr-s0=runs/ablation-toy/followup/C-smsnr-s0 --out results/ablation-toy/guidance
    python results/ablation-toy/guidance.py floor --out results/ablation-toy/guidance
    python results/ablation-toy/guidance.py analyze results/ablation-toy/guidance

``floor`` puts real images through the same metrics, for scale: the first n training images of
each class, taken with classes 0..7 in turn as the samples are (``real_floor.json``).

``analyze`` writes ``summary.json``, ``summary.md`` and ``summary.png`` (FID against class
accuracy along w, one curve per run) beside the records: per w the seed-paired E − C-smsnr
differences of FID and class accuracy (95 % t CIs), each model's best w (lowest mean FID over
its seeds) and the pre-registered comparison at those two scales with its verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hdit_edu.ablation import cpu_model
from hdit_edu.checkpoints import atomic_write_text
from hdit_edu.data import save_grid
from hdit_edu.protocol import EvalProtocol, evaluate, measure
from hdit_edu.runs import load_run
from hdit_edu.sampling import grid_columns, sample_labels
from hdit_edu.stats import paired_difference
from hdit_edu.toy import ToyDataset

HERE = Path(__file__).resolve().parent
SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
METRICS = ("fid", "class_accuracy")
MODELS = ("C-smsnr", "E")  # the comparison E − C-smsnr: axial RoPE under soft-min-SNR

KEEP = ("class_accuracy", "coherence", "fid", "fid_mean_term", "fid_covariance_term", "spread",
        "spread_within_class", "spread_per_class")  # fmt: skip


def _metrics(measured: dict) -> dict:
    """Class accuracy, coherence, toy FID with its terms and the spread, as the records hold
    them (the protocol's :func:`~hdit_edu.protocol.measure`)."""
    return {k: measured[k] for k in KEEP}


def floor(ns: list[int], out: Path) -> None:
    """Real training images (classes in turn, as the samples) through the same metrics."""
    torch.set_num_threads(1)
    train = ToyDataset("train", resolution=32)
    by_class = [np.flatnonzero(train.labels == c) for c in range(train.num_classes)]
    rows = []
    for n in ns:
        labels = sample_labels(n, train.num_classes)
        index = [by_class[c][i // train.num_classes] for i, c in enumerate(labels.tolist())]
        images, _ = train.batch(np.array(index))
        measured = measure(images, labels, coherence=True, diversity_terms=True)
        rows.append({"n_samples": n, **_metrics(measured)})
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_floor.json").write_text(json.dumps({"split": "train", "rows": rows}, indent=1))


def run(specs: list[str], scales: list[float], n: int, out: Path) -> None:
    """Sample every (checkpoint, w) cell not yet in ``out``; one JSON per checkpoint."""
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        name, run_dir = spec.split("=", 1)
        seed = int(name.rsplit("-s", 1)[1])
        path = out / f"{name}.json"
        record = (
            json.loads(path.read_text())
            if path.exists()
            else {"name": name, "seed": seed, "run_dir": run_dir, "cpu": cpu_model(), "cells": []}
        )
        config, denoiser = load_run(run_dir)
        for w in scales:
            if any(c["cfg"] == w and c["n_samples"] == n for c in record["cells"]):
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            protocol = EvalProtocol(n=n, cfg=w, coherence=True, diversity=True)
            measured, images, _ = evaluate(denoiser, config, protocol, 1000 + seed)
            cell = {
                "cfg": w,
                "n_samples": n,
                **_metrics(measured),
                "sample_cpu_s": measured["sample_cpu_s"],
                "cpu_s": time.process_time() - c0,
                "wall_s": time.perf_counter() - t0,
            }
            record["cells"].append(cell)
            nrow = grid_columns(16, config.model.num_classes)  # one class per column
            save_grid(images[:16], out / "grids" / f"{name}-w{w:g}.png", nrow=nrow)
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            print(name, {k: round(v, 3) for k, v in cell.items() if isinstance(v, float)},
                  flush=True)  # fmt: skip


def values(records: list[dict]) -> dict:
    """``{model: {w: {metric: {seed: value}}}}`` of the records."""
    out: dict = {}
    for r in records:
        model = r["name"].rsplit("-s", 1)[0]
        for c in r["cells"]:
            cell = out.setdefault(model, {}).setdefault(c["cfg"], {})
            for m in (*METRICS, "fid_mean_term", "coherence", "spread_within_class"):
                cell.setdefault(m, {})[r["seed"]] = c[m]
    return out


def best_scale(by_w: dict) -> float:
    """The w of lowest mean FID over the model's seeds (among the scales every seed has)."""
    seeds = set.intersection(*(set(v["fid"]) for v in by_w.values()))
    complete = {w: v for w, v in by_w.items() if set(v["fid"]) == seeds}
    return min(complete, key=lambda w: np.mean(list(complete[w]["fid"].values())))


def verdict(ci: list[float]) -> str:
    """The pre-registered reading of E − C-smsnr's FID at each model's best w."""
    lo, hi = ci
    if hi < 0:
        return "robust: E is better at every model's own best w"
    if lo > 0:
        return "reversed: C-smsnr is better at every model's own best w"
    return "not robust: no resolved difference at each model's own best w"


def analyze(records: list[dict]) -> dict:
    v = values(records)
    cs, e = (v[m] for m in MODELS)
    per_w = [
        {"cfg": w, "metric": m, **paired_difference(cs[w][m], e[w][m])}
        for w in sorted(set(cs) & set(e))
        for m in METRICS
    ]
    best = {m: best_scale(v[m]) for m in MODELS}
    primary = {m: paired_difference(cs[best["C-smsnr"]][m], e[best["E"]][m]) for m in METRICS}
    means = {
        model: {
            w: {m: float(np.mean(list(s.values()))) for m, s in cell.items()}
            for w, cell in sorted(v[model].items())
        }
        for model in MODELS
    }
    return {
        "models": list(MODELS),
        "best_w": best,
        "primary": primary,
        "verdict": verdict(primary["fid"]["difference"]["ci95"]),
        "per_w": per_w,
        "means": means,
        "cpu_h": sum(c["cpu_s"] for r in records for c in r["cells"]) / 3600,
    }


def markdown(result: dict) -> str:
    def ci(d):
        lo, hi = d["difference"]["ci95"]
        return f"{d['difference']['mean']:+.3g} [{lo:+.3g}, {hi:+.3g}]"

    best = result["best_w"]
    lines = [
        f"Best w (lowest mean FID): C-smsnr {best['C-smsnr']:g}, E {best['E']:g}.",
        "",
        "| E − C-smsnr, seed-paired | toy FID | class accuracy |",
        "| --- | --- | --- |",
        f"| each at its best w (pre-registered) | {ci(result['primary']['fid'])} | "
        f"{ci(result['primary']['class_accuracy'])} |",
    ]
    rows = {(r["cfg"], r["metric"]): r for r in result["per_w"]}
    for w in sorted({r["cfg"] for r in result["per_w"]}):
        lines.append(f"| both at w = {w:g} | {ci(rows[w, 'fid'])} | "
                     f"{ci(rows[w, 'class_accuracy'])} |")  # fmt: skip
    lines += ["", f"**Verdict:** {result['verdict']}.", "", "Means over seeds:", "",
              "| model | w | toy FID | FID mean term | class accuracy | coherence "
              "| within-class spread |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for model, by_w in result["means"].items():
        for w, m in by_w.items():
            lines.append(
                f"| {model} | {w:g} | {m['fid']:.1f} | {m['fid_mean_term']:.1f} | "
                f"{m['class_accuracy']:.3f} | {m['coherence']:.3f} | "
                f"{m['spread_within_class']:.2f} |"
            )
    for r in result.get("real_floor", []):
        lines.append(f"| real: {r['n_samples']} training images | – | {r['fid']:.2f} | "
                     f"{r['fid_mean_term']:.2f} | {r['class_accuracy']:.3f} | {r['coherence']:.3f} | "
                     f"{r['spread_within_class']:.2f} |")  # fmt: skip
    lines += ["", f"{result['cpu_h']:.2f} CPU-hours of sampling."]
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    colours = {"C-smsnr": "tab:orange", "E": "tab:blue"}
    for r in sorted(records, key=lambda r: r["name"]):
        model = r["name"].rsplit("-s", 1)[0]
        cells = sorted(r["cells"], key=lambda c: c["cfg"])
        ax.plot([c["class_accuracy"] for c in cells], [c["fid"] for c in cells], "o-",
                color=colours[model], alpha=0.7, label=model if r["seed"] == 0 else None)  # fmt: skip
        for c in cells:
            ax.annotate(f"{c['cfg']:g}", (c["class_accuracy"], c["fid"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set(xlabel="class accuracy", ylabel="toy FID (lower is better)", yscale="log",
           title="guidance w along each curve (labels); one curve per seed")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("runs", nargs="+", help="NAME=RUN_DIR (NAME ends in -sSEED)")
    r.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    r.add_argument("--n", type=int, default=2048)
    r.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("floor")
    f.add_argument("--n", type=int, nargs="+", default=[512, 2048])
    f.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("analyze")
    a.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    if args.command == "run":
        run(args.runs, args.scales, args.n, args.out)
        return 0
    if args.command == "floor":
        floor(args.n, args.out)
        return 0
    records = [json.loads(f.read_text()) for f in sorted(args.folder.glob("*-s*.json"))]
    result = analyze(records)
    if (args.folder / "real_floor.json").exists():
        result["real_floor"] = json.loads((args.folder / "real_floor.json").read_text())["rows"]
    (args.folder / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.folder / "summary.md").write_text(markdown(result))
    plot(records, args.folder / "summary.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
