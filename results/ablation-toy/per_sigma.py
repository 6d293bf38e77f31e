"""Post-hoc (not pre-registered): where in σ does C → D lose? The denoising error of each EMA model
at fixed noise levels, and how the two training weightings of Table 5 weigh those errors.

    OMP_NUM_THREADS=1 python results/ablation-toy/per_sigma.py \\
        [--checkpoints runs/ablation-toy/runs] [--configs C,D,E,D-minsnr5,D-minsnr4] [--seeds 0,1,2]

Reads each (configuration, seed)'s final checkpoint (git-ignored; the runs of ``hdit-edu
ablate`` leave them in ``runs/ablation-toy/runs/NAME/``), skips the ones not there, and writes
``per-sigma.json`` and ``per-sigma.png`` beside this file: per σ, each model's unweighted error
E‖D(x₀ + σε, σ) − x₀‖² (:func:`hdit_edu.protocol.error_by_sigma`, 512 test images, one ε), the
seed-paired ratio of each configuration to C with its 95 % t CI (on the log ratio), and, for the
SNR (D) and soft-min-SNR (E) weightings, the share of the expected training loss
p(σ)·λ(σ)·error(σ) below σ = 0.2 (C's error curve; p the training σ density).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hdit_edu.ablation import run_name, versions
from hdit_edu.diffusion import loss_weight
from hdit_edu.protocol import error_by_sigma
from hdit_edu.runs import load_run
from hdit_edu.stats import t_interval
from hdit_edu.training import training_sigmas

HERE = Path(__file__).resolve().parent
SIGMAS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
)
LOW = 0.2  # the band where RoPE helps (measured: D's error below C's for σ ≤ 0.2 at every seed)


def loss_shares(config, error: list[float], weightings=("snr", "soft-min-snr"), n=200_000):
    """Per weighting, how the expected training loss E_σ[λ(σ)·error(σ)] spreads over σ: the
    fraction from σ ≤ LOW and a histogram over 24 log-σ bins (normalised to 1); σ drawn from the
    training density, error interpolated log-log on SIGMAS."""
    sigma = training_sigmas(config, n, generator=torch.Generator().manual_seed(0)).double()
    log_err = np.interp(np.log(sigma.numpy()), np.log(SIGMAS), np.log(error))
    edges = np.logspace(-3, 3, 25)
    share, hist = {}, {}
    for w in weightings:
        contrib = loss_weight(w, sigma).numpy() * np.exp(log_err)
        share[w] = float(contrib[sigma.numpy() <= LOW].sum() / contrib.sum())
        hist[w] = (np.histogram(sigma.numpy(), edges, weights=contrib)[0] / contrib.sum()).tolist()
    return share, {"edges": edges.tolist(), **hist}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in result["ratio_to_C"].items():
        m = np.array([r["mean"] for r in rows])
        lo = np.array([r["ci95"][0] for r in rows])
        hi = np.array([r["ci95"][1] for r in rows])
        (line,) = a.semilogx(SIGMAS, m, marker="o", ms=3, label=f"{name} (n={rows[0]['n']})")
        if not np.isnan(lo).all():
            a.fill_between(SIGMAS, lo, hi, color=line.get_color(), alpha=0.15)
    a.axhline(1, color="k", lw=0.8)
    a.axvspan(SIGMAS[0], LOW, color="0.9", zorder=0)
    a.set(
        xlabel="σ",
        ylabel="error / C's error (paired by seed, 95 % CI)",
        title="denoising error, relative to C",
    )
    a.legend(fontsize=8)
    h = result["loss_density"]
    centres = np.sqrt(np.array(h["edges"][:-1]) * np.array(h["edges"][1:]))
    for w, label in (("snr", "SNR 1/σ² (C, D)"), ("soft-min-snr", "soft-min-SNR (E)")):
        b.semilogx(centres, h[w], drawstyle="steps-mid", label=label)
    b.axvspan(h["edges"][0], LOW, color="0.9", zorder=0)
    b.set(
        xlabel="σ",
        ylabel="share of the training loss",
        title="where each weighting puts the training loss",
    )
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", default="runs/ablation-toy/runs")
    p.add_argument("--configs", default="C,D,E,D-minsnr5,D-minsnr4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--out", default=str(HERE / "per-sigma.json"))
    p.add_argument("--replot", action="store_true", help="only redraw the figure from --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return 0
    torch.set_num_threads(1)
    errors: dict[str, dict[int, list[float]]] = {}
    config = None
    for name in args.configs.split(","):
        for seed in map(int, args.seeds.split(",")):
            run = Path(args.checkpoints) / run_name(name, seed)
            try:
                cfg, denoiser = load_run(run)
            except ValueError as e:  # no run folder or checkpoint here (yet): report, go on
                print(f"skip {run}: {e}")
                continue
            config = config or cfg
            errors.setdefault(name, {})[seed] = error_by_sigma(denoiser, cfg, SIGMAS, n=args.n)
            print(name, seed, " ".join(f"{e:.3g}" for e in errors[name][seed]), flush=True)
    if "C" not in errors:
        print("C's checkpoints are needed (the ratios are to C)")
        return 1
    ratios = {}
    for name, row in errors.items():
        seeds = sorted(set(row) & set(errors["C"]))
        if name == "C" or not seeds:
            continue
        ratios[name] = []
        for i in range(len(SIGMAS)):
            t = t_interval([np.log(row[s][i] / errors["C"][s][i]) for s in seeds])
            ratios[name].append(
                {
                    "mean": float(np.exp(t["mean"])),
                    "ci95": [float(np.exp(x)) for x in t["ci95"]],
                    "n": t["n"],
                    "seeds": seeds,
                }
            )
    c_mean = [t_interval(v)["mean"] for v in zip(*errors["C"].values())]
    shares, density = loss_shares(config, c_mean)
    result = {
        "note": "post-hoc, exploratory: not part of the pre-registered analysis",
        "sigmas": list(SIGMAS),
        "n_images": args.n,
        "errors": {k: {str(s): v for s, v in row.items()} for k, row in errors.items()},
        "ratio_to_C": ratios,
        "low_sigma": LOW,
        "loss_share_low_sigma": shares,
        "loss_density": density,
        "versions": versions(),
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("loss_share_low_sigma",)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
