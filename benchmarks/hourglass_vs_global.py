"""Issue 30's wall-clock scaling: the training step of HDiT (step E) and of a single-level
global-attention transformer with the same blocks, from 32² up to 1024² or as far as the global
arm fits, on one CPU thread (the machine the study's runs train on).

    python benchmarks/hourglass_vs_global.py --costs                 # params and FLOPs only
    python benchmarks/hourglass_vs_global.py --max-res 64            # the 32²/64² check (~10 s)
    python benchmarks/hourglass_vs_global.py                         # 32² … 1024² (see README)

**Arms**: read from ``results/hourglass-vs-global/study.toml`` (the one place they are defined):
each is a registry name built at toy scale (:func:`hdit_edu.ablation.run_config`, task
``p4k3``), its ``--set`` overrides (:func:`hdit_edu.configs.apply_overrides`), then moved to
each resolution by App. A's rule (:func:`hdit_edu.configs.at_resolution`: E gains one 64-wide
neighborhood level per doubling; the single-level arm keeps its three global layers on every
token).

**What is measured** per arm and resolution: one training step — the loss, backward and AdamW
step of the network on a fixed random batch (``train_throughput.model_step``; a step's cost does
not depend on the pixels) — ``--warmup`` untimed, then the median of ``--repeats``; the peak
tensor memory of the second step above what was allocated before it (weights, inputs and
AdamW's state, which the first step creates: activations, gradients and the optimiser's
temporaries; :class:`hdit_edu.planner.PeakMemory`, the CPU allocator's events); the parameters and forward GFLOPs (multiply-adds, closed form,
:mod:`hdit_edu.flops`). ``torch.set_num_threads(--threads)``, 1 by default.

**Where an arm stops**: a size is skipped (and every larger one) when its predicted step time —
the previous size's time × the FLOP ratio — exceeds ``--max-seconds``, or its predicted peak
memory — the previous size's × the ratio of the attention matrices' size (tokens²·heads, the
global arm) or of the pixels (E) — exceeds ``--max-memory-gib``; the row says which and by how
much. The global arm at 1024² has 65,536 tokens: 3.3 TMAC per image forward.

**Exponents**: ``time ∝ pixels^k`` and ``memory ∝ pixels^k`` fitted (least squares, log-log,
``common.fit_exponent``) over every measured size of each arm, under the key ``exponent``, next
to the FLOPs' exponent over the same sizes. Writes
``benchmarks/results/hourglass_vs_global-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import torch
from train_throughput import model_step

from hdit_edu.ablation import ToyBudget, run_config
from hdit_edu.configs import apply_overrides, at_resolution, token_grids
from hdit_edu.flops import analytic_gflops, analytic_params
from hdit_edu.models import build_model
from hdit_edu.planner import PeakMemory

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SPEC = common.REPO_ROOT / "results" / "hourglass-vs-global" / "study.toml"
RESOLUTIONS = (32, 64, 128, 256, 512, 1024)


def read_arms(spec: Path = SPEC) -> dict[str, tuple[str, list[str]]]:
    """``{label: (registry name, --set overrides)}`` from the study file's ``[arms]`` table."""
    arms = tomllib.loads(spec.read_text())["arms"]
    out = {}
    for label, arm in arms.items():
        if isinstance(arm, str):
            out[label] = (arm, [])
        else:
            out[label] = (arm["config"], list(arm.get("set", [])))
    return out


def arm_config(name: str, overrides: list[str], resolution: int, task: str = "p4k3"):
    """An arm at toy scale on ``task``, overridden, at ``resolution`` (App. A)."""
    config = apply_overrides(run_config(name, 0, ToyBudget(task=task)), overrides)
    return at_resolution(config, resolution)


def costs(arms: dict, resolutions) -> list[dict]:
    """Per arm and resolution: parameters, token grids, forward GMAC per image (closed form) and
    a training step's ≈ 3 × forward."""
    rows = []
    for label, (name, overrides) in arms.items():
        for res in resolutions:
            config = arm_config(name, overrides, res)
            forward = analytic_gflops(config)
            rows.append(
                {
                    "arm": label,
                    "resolution": res,
                    "params": analytic_params(config),
                    "grids": [list(g) for g in token_grids(config.model)],
                    "forward_gmac_per_image": forward,
                    "train_gmac_per_image": 3 * forward,
                }
            )
    return rows


def _predicted(previous: dict | None, row: dict, key: str, scale: float) -> float | None:
    if previous is None or previous.get(key) is None:
        return None
    return previous[key] * scale


def _memory_scale(previous: dict, row: dict) -> float:
    """How peak memory grows from the previous size: with the largest attention matrix
    (tokens² of the widest global grid) where that grows faster than the pixels."""
    pixels = row["resolution"] ** 2 / previous["resolution"] ** 2
    tokens = lambda r: max(g[0] * g[1] for g in r["grids"])  # noqa: E731
    return max(pixels, (tokens(row) / tokens(previous)) ** 2)


def measure_arm(label, name, overrides, resolutions, args, device) -> list[dict]:
    rows, previous = [], None
    for res in resolutions:
        config = arm_config(name, overrides, res)
        row = costs({label: (name, overrides)}, [res])[0]
        row["batch_size"] = args.batch_size
        if previous is not None and "skipped" not in previous:
            flop_ratio = row["forward_gmac_per_image"] / previous["forward_gmac_per_image"]
            t = _predicted(previous, row, "step_s", flop_ratio)
            m = _predicted(previous, row, "peak_memory_MiB", _memory_scale(previous, row))
            if t is not None and t > args.max_seconds:
                row["skipped"] = f"predicted step {t:.0f} s > --max-seconds {args.max_seconds:g}"
            elif m is not None and m / 1024 > args.max_memory_gib:
                row["skipped"] = (
                    f"predicted peak memory {m / 1024:.1f} GiB > --max-memory-gib "
                    f"{args.max_memory_gib:g}"
                )
        elif previous is not None:
            row["skipped"] = "a smaller size was skipped"
        if "skipped" not in row:
            torch.manual_seed(0)
            model = build_model(config.model).to(device)
            step = model_step(model, config, args.batch_size, device, compile_=False)
            step()  # the first step creates AdamW's state: not a step's own memory
            with PeakMemory(device) as memory:
                step()
            timing = common.time_call(step, device, warmup=args.warmup, repeats=args.repeats)
            row.update(step_s=timing.median, step_time=timing.to_dict())
            row.update(peak_memory_MiB=memory.peak_MiB, memory_kind=memory.kind)
            del model, step
            gc.collect()
        shown = row.get("skipped") or (
            f"{row['step_s'] * 1e3:.1f} ms/step, peak {row['peak_memory_MiB']:.1f} MiB"
        )
        print(f"{label:>7} {res:>5}²  {shown}", flush=True)
        rows.append(row)
        previous = row
    return rows


def exponents(rows: list[dict]) -> dict:
    """Per arm: ``exponent`` of step time, of peak memory and of FLOPs against pixels, over its
    measured sizes (at least two)."""
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        done = [r for r in rows if r["arm"] == arm and "step_s" in r]
        stopped = next((r["resolution"] for r in rows if r["arm"] == arm and "skipped" in r), None)
        if len(done) < 2:
            out[arm] = {"exponent": None, "why": "fewer than two measured sizes"}
            out[arm]["stopped_at"] = stopped
            continue
        pixels = [r["resolution"] ** 2 for r in done]
        keys = {"step_time": "step_s", "peak_memory": "peak_memory_MiB"}
        keys["flops"] = "forward_gmac_per_image"
        out[arm] = {
            "resolutions": [r["resolution"] for r in done],
            "exponent": {
                name: common.fit_exponent(pixels, [r[key] for r in done])["k"]
                for name, key in keys.items()
            },
            "stopped_at": stopped,
        }
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-res", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=120.0, help="per training step")
    p.add_argument("--max-memory-gib", type=float, default=48.0)
    p.add_argument("--costs", action="store_true", help="params and FLOPs only; nothing runs")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    arms = read_arms()
    resolutions = [r for r in RESOLUTIONS if r <= args.max_res]
    if args.costs:
        for row in costs(arms, resolutions):
            print(
                f"{row['arm']:>7} {row['resolution']:>5}²  params {row['params']:>9,}  "
                f"forward {row['forward_gmac_per_image']:10.3f} GMAC/image  grids {row['grids']}"
            )
        return 0
    device = torch.device("cpu")
    load_before = common.load_average()
    rows = []
    for label, (name, overrides) in arms.items():
        rows += measure_arm(label, name, overrides, resolutions, args, device)
    summary = exponents(rows)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings["arms"] = {k: {"config": n, "set": s} for k, (n, s) in arms.items()}
    document = common.make_result(
        "hourglass_vs_global",
        device,
        command=common.command_line("hourglass_vs_global.py", argv),
        settings=settings,
        results=rows,
        summary=summary,
        load_before=load_before,
    )
    path = common.write_result(document, device, args.out)
    for arm, s in summary.items():
        print(f"{arm}: exponent {s['exponent']}  (stopped at {s.get('stopped_at')})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
