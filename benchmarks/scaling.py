"""Fig. 2 with wall-clock time: how HDiT-B/4 and DiT-B/4 scale with resolution, measured.

    python benchmarks/scaling.py                                   # CPU: HDiT 64–256², DiT 64–128²
    python benchmarks/scaling.py --device cuda --max-res 2048      # GPU: 64² … 2048² (DiT until
                                                                   # it runs out of memory/time)

The paper's headline (§1, Fig. 2, App. A): HDiT's cost grows linearly with the pixel count,
DiT's quadratically. Fig. 2 shows it in FLOPs; this script measures it in seconds and memory.

**Models** (§5.2, Table 1, both at patch size 4, batch 1 by default): *HDiT-B/4* is ablation step
E (:func:`hdit_edu.presets.ablation_step` ``("E", res)``: 128² has ``[2 @ 384 neighborhood, 11 @
768 global]``; every doubling of the resolution adds one more ``2 @ 384`` neighborhood level
— App. A — and every halving drops one: at 64² only the global core is left), *DiT-B/4* is
baseline R1 (``ablation_step("R1", res)``: 12 global layers at width 768 on all tokens).

**What is timed**, per model and resolution, ``--warmup`` untimed calls then ``--repeats``
timed ones (median reported):

* ``forward`` — ``F(x, σ, class)`` in eval mode under ``torch.no_grad()``;
* ``forward+backward`` — the same in train mode, then ``backward()`` of ``mean(F²)`` (every
  weight gradient is computed, as in a training step without the optimiser).

CUDA runs use bf16 autocast (the training precision, Table 6), CPU runs fp32. Peak memory is
that of the first (warm-up) call above the weights and inputs (:class:`common.PeakMemory`). Next
to each time: GFLOPs of the forward pass — fvcore's trace (:func:`hdit_edu.flops.count_gflops`:
on the meta device when the model traces there, else on the built model where that is cheap)
and the closed form (:func:`hdit_edu.flops.analytic_gflops`). A size whose predicted time (the previous size's time ×
the GFLOP ratio) exceeds ``--max-seconds`` is skipped, as is every size after an out-of-memory.

**The growth exponent**: ``time ∝ pixels^k`` fitted over ``--fit-range`` (default 256²–1024² on
CUDA, all measured sizes on the CPU), for each model and mode, next to the same fit of the
GFLOPs; ``local_k`` gives the exponent between consecutive sizes. Targets (issue 9, GPU):
k ≤ 1.15 for HDiT from 256² to 1024², ≈ 2 for DiT. At small sizes neither model is in its
asymptotic regime (the linear layers dominate DiT, HDiT's constant 16² core dominates HDiT), so
CPU exponents come out below both numbers; they show the trend, the GPU run the claim.

**k-diffusion side by side**: with ``HDIT_K_DIFFUSION_SRC`` set, each HDiT measurement is
repeated on the authors' model with the same config and weights (``reference`` in the JSON,
with ``ours_over_reference`` = our time ÷ theirs). On the CPU the reference runs NATTEN's flex
path, which is forward-only: its forward+backward is recorded as skipped.

Writes ``benchmarks/results/scaling-<device>-<date>.json`` and a ``.png`` next to it: GFLOPs
(left, Fig. 2) and measured seconds (right) against pixels, log-log, with the fitted k.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import torch

from hdit_edu.configs import at_resolution, token_grids
from hdit_edu.flops import analytic_gflops, analytic_params, count_gflops
from hdit_edu.models import build_model
from hdit_edu.presets import ablation_step
from hdit_edu.profiles import ToyScale

MODES = ("forward", "forward+backward")
# The two models of Fig. 2: label → ablation step of Table 1.
MODELS = {"HDiT-B/4": "E", "DiT-B/4": "R1"}
SIZES = ("b4", "toy")  # b4: the paper's models; toy: toy-scaled versions (smoke runs)
# When the meta trace fails (DiT), fvcore traces the built model — one real fp32 forward pass —
# only up to this many GFLOPs (above, the closed form alone; the two agree where both exist).
FVCORE_TRACE_MAX_GFLOPS = {"cpu": 40.0, "cuda": 10_000.0}
# The toy size of smoke runs: widths 32/64, depths 1/1, head dim 16, mapping width 64.
SMOKE_SCALE = ToyScale(
    widths=(32, 64), depths=(1, 1), head_dim=16, mapping_width=64, batch_size=16, steps=150
)


def model_config(step: str, resolution: int, size: str = "b4"):
    """Ablation ``step`` at ``resolution``: the paper's model (``size="b4"``) or, for smoke runs,
    the same architecture toy-scaled (:func:`hdit_edu.profiles.to_toy_scale` with
    :data:`SMOKE_SCALE`: widths 32/64, 32² base) and grown to ``resolution`` by the same rule
    (App. A)."""
    if size not in SIZES:
        raise ValueError(f"size: unknown value {size!r}; allowed: {', '.join(SIZES)}")
    if size == "b4":
        return ablation_step(step, resolution)
    from hdit_edu.profiles import to_toy_scale

    return at_resolution(to_toy_scale(ablation_step(step), SMOKE_SCALE), resolution)


def make_inputs(config, resolution: int, batch_size: int, device, seed: int = 0):
    """``(x, σ, cond)``: x ~ N(0, 1), σ log-normal, ``cond = {"class_cond": random classes}``
    for a class-conditional model (no augmentation input: zeros)."""
    g = torch.Generator().manual_seed(seed)
    m = config.model
    x = torch.randn(batch_size, m.in_channels, resolution, resolution, generator=g)
    sigma = torch.exp(torch.randn(batch_size, generator=g) * 1.2 - 1.2)
    classes = torch.randint(0, m.num_classes, (batch_size,), generator=g) if m.num_classes else None
    cond = {} if classes is None else {"class_cond": classes.to(device)}
    return x.to(device), sigma.to(device), cond


def step_fn(model, inputs, mode: str, device, precision: str):
    """A zero-argument callable running one ``mode`` pass of ``model`` on ``inputs = (x, σ,
    cond)`` (ours and k-diffusion's models both take ``(x, sigma, class_cond=...)``)."""
    x, sigma, cond = inputs
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    if mode == "forward":
        model.eval()

        def forward():
            with torch.no_grad(), autocast:
                return model(x, sigma, **cond)

        return forward

    model.train()

    def forward_backward():
        for p in model.parameters():
            p.grad = None
        with autocast:
            out = model(x, sigma, **cond)
        out.float().pow(2).mean().backward()

    return forward_backward


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return (
        isinstance(error, torch.cuda.OutOfMemoryError)
        or "out of memory" in text
        or ("can't allocate memory" in text)
    )


def measure(fn, device, *, warmup: int, repeats: int) -> dict:
    """Peak memory of the first call (the first warm-up call, or one extra call without
    warm-up), then the median time of ``repeats`` calls after the remaining warm-up."""
    with common.PeakMemory(device) as memory:
        fn()
    timing = common.time_call(fn, device, warmup=max(0, warmup - 1), repeats=repeats)
    return {**timing.to_dict(), "peak_memory_MiB": memory.peak_MiB, "memory_kind": memory.kind}


def fvcore_gflops(config, resolution: int, model, device, policy: str):
    """fvcore GFLOPs of one forward (batch 1): traced on the meta device (no compute); if that
    fails, on the built ``model`` when that is cheap (``policy="auto"``,
    :data:`FVCORE_TRACE_MAX_GFLOPS`)."""
    if policy == "never":
        return None, "not counted (--fvcore never)"
    try:
        return count_gflops(config, resolution, device="meta"), "fvcore (meta trace)"
    except RuntimeError as error:
        reason = f"meta trace failed: {str(error)[:120]}"
    limit = FVCORE_TRACE_MAX_GFLOPS[device.type]
    if policy == "auto" and analytic_gflops(config, resolution) <= limit:
        return count_gflops(model, resolution), f"fvcore ({device.type} trace; {reason})"
    return None, f"not counted ({reason}; a {device.type} trace above {limit:g} GFLOP)"


def _predicted_seconds(previous: dict | None, mode: str, gflops: float) -> float | None:
    """The time of ``mode`` at a size with ``gflops``, from the previous size (time ∝ GFLOPs)."""
    if previous is None or "median_s" not in previous.get(mode, {}):
        return None
    return previous[mode]["median_s"] * gflops / previous["analytic_gflops"]


def benchmark_model(label: str, step: str, resolutions, args, device) -> list[dict]:
    """Every resolution of one model: a row per resolution (see :func:`benchmark`)."""
    rows, previous, stopped = [], None, {}
    for res in resolutions:
        config = model_config(step, res, args.size)
        gflops = analytic_gflops(config, res)
        row = {
            "model": label,
            "config": config.name,
            "arch": config.model.arch,
            "resolution": res,
            "pixels": res * res,
            "tokens": token_grids(config.model, res)[0][0] * token_grids(config.model, res)[0][1],
            "levels": len(config.model.levels),
            "params": analytic_params(config),
            "batch_size": args.batch_size,
            "analytic_gflops": gflops,
        }
        plan = {}
        for mode in args.modes:
            predicted = _predicted_seconds(previous, mode, gflops)
            if mode in stopped:
                plan[mode] = {"skipped": stopped[mode]}
            elif (
                predicted is not None
                and predicted * (args.warmup + args.repeats) > args.max_seconds
            ):
                plan[mode] = {
                    "skipped": f"predicted {predicted:.1f} s per call × {args.warmup + args.repeats}"
                    f" calls > --max-seconds {args.max_seconds:g}"
                }
                stopped[mode] = f"a smaller size was already over --max-seconds ({res}²)"
        if len(plan) == len(args.modes):
            row.update(plan)
            rows.append(row)
            print(f"{label} {res}²: skipped ({'; '.join(p['skipped'] for p in plan.values())})")
            continue

        print(f"{label} {res}²: building ({row['params'] / 1e6:.1f}M parameters)...", flush=True)
        with torch.device(device):
            model = build_model(config, attention_backend=args.backend)
        row["na_backends"] = common.resolved_backends(config.model, res, args.backend, device)
        row["fvcore_gflops"], row["fvcore"] = fvcore_gflops(config, res, model, device, args.fvcore)
        inputs = make_inputs(config, res, args.batch_size, device)
        for mode in args.modes:
            if mode in plan:
                row[mode] = plan[mode]
                continue
            try:
                fn = step_fn(model, inputs, mode, device, args.precision)
                row[mode] = measure(fn, device, warmup=args.warmup, repeats=args.repeats)
                print(
                    f"  {mode}: {row[mode]['median_s']:.4f} s (median of {args.repeats}), "
                    f"peak {row[mode]['peak_memory_MiB']:.0f} MiB",
                    flush=True,
                )
            except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
                if not _is_oom(error):
                    raise
                row[mode] = {"skipped": "out of memory"}
                stopped[mode] = f"out of memory at {res}²"
                print(f"  {mode}: out of memory", flush=True)
            finally:
                for p in model.parameters():
                    p.grad = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if config.model.arch == "hdit" and common.k_diffusion_source():
            row["reference"] = benchmark_reference(model, inputs, row, args, device)
        del model, inputs
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        previous = row
    return rows


def benchmark_reference(model, inputs, row: dict, args, device) -> dict:
    """The same measurements on k-diffusion's model with our weights (HDIT_K_DIFFUSION_SRC)."""
    out: dict = {}
    with common.reference_model(model, device) as reference:
        for mode in args.modes:
            if "median_s" not in row.get(mode, {}):
                out[mode] = {"skipped": "not measured for ours"}
                continue
            if mode == "forward+backward" and device.type == "cpu":
                out[mode] = {"skipped": "NATTEN's CPU (flex) path is forward-only"}
                continue
            try:
                ref_fn = step_fn(reference, inputs, mode, device, args.precision)
                out[mode] = measure(ref_fn, device, warmup=args.warmup, repeats=args.repeats)
                out[mode]["ours_over_reference"] = row[mode]["median_s"] / out[mode]["median_s"]
            except Exception as error:  # noqa: BLE001 - record why the reference failed
                out[mode] = {"skipped": f"reference failed: {type(error).__name__}: {error}"[:300]}
    return out


def fits(rows: list[dict], fit_range: tuple[int, int], modes) -> dict:
    """``k`` of ``time ∝ pixels^k`` (and of GFLOPs) per model and mode over ``fit_range``, and
    the local exponents between consecutive measured sizes."""
    lo, hi = fit_range
    out: dict = {}
    for label in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == label]
        entry: dict = {}
        for mode in modes:
            points = [
                (r["pixels"], r[mode]["median_s"], r["analytic_gflops"], r["resolution"])
                for r in mine
                if "median_s" in r.get(mode, {})
            ]
            inside = [p for p in points if lo <= p[3] <= hi]
            fit = {"fit_resolutions": [p[3] for p in inside]}
            if len(inside) >= 2:
                fit["k_time"] = common.fit_exponent([p[0] for p in inside], [p[1] for p in inside])[
                    "k"
                ]
                fit["k_gflops"] = common.fit_exponent(
                    [p[0] for p in inside], [p[2] for p in inside]
                )["k"]
            fit["local_k_time"] = [
                {
                    "from": a[3],
                    "to": b[3],
                    "k_time": common.fit_exponent([a[0], b[0]], [a[1], b[1]])["k"],
                    "k_gflops": common.fit_exponent([a[0], b[0]], [a[2], b[2]])["k"],
                }
                for a, b in zip(points, points[1:])
            ]
            entry[mode] = fit
        out[label] = entry
    return out


# The resolutions of the GFLOP panel (closed form, next to the measured sizes): Fig. 2's range.
PLOT_GFLOP_RESOLUTIONS = (64, 128, 256, 512, 1024, 2048)


def plot(document: dict, path: Path) -> Path:
    """Fig. 2 with measured time: GFLOPs (left: closed form over Fig. 2's range, × where fvcore
    counted) and measured seconds (right) against pixels, log-log, with the fitted k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hdit_edu.viz import plot_flops_scaling

    rows = document["results"]
    settings = document["settings"]
    fits_ = document["summary"]["fits"]
    fig, (ax_flops, ax_time) = plt.subplots(1, 2, figsize=(13, 5))
    measured = {(r["model"], r["resolution"]): r for r in rows}
    flop_rows = []
    for label, step in zip(dict.fromkeys(r["model"] for r in rows), settings["models"].values()):
        sizes = sorted({*PLOT_GFLOP_RESOLUTIONS, *(r for m, r in measured if m == label)})
        for res in sizes:
            row = measured.get((label, res))
            counted = row is not None and row.get("fvcore_gflops")
            flop_rows.append(
                {
                    "name": label,
                    "resolution": res,
                    "gflops": counted or analytic_gflops(model_config(step, res, settings["size"])),
                    "method": "fvcore" if counted else "analytic",
                }
            )
    plot_flops_scaling(flop_rows, ax=ax_flops, fit_from=256, title="GFLOP per forward pass")
    styles = {"forward": "o-", "forward+backward": "s--"}
    for i, label in enumerate(dict.fromkeys(r["model"] for r in rows)):
        for mode in settings["modes"]:
            mine = [r for r in rows if r["model"] == label and "median_s" in r.get(mode, {})]
            if not mine:
                continue
            fit = fits_[label][mode]
            text = f"{label} {mode}"
            if fit.get("k_time") is not None:
                lo, hi = fit["fit_resolutions"][0], fit["fit_resolutions"][-1]
                text += f"  (k = {fit['k_time']:.2f}, {lo}²–{hi}²)"
            ax_time.loglog(
                [r["pixels"] for r in mine],
                [r[mode]["median_s"] for r in mine],
                styles.get(mode, "o-"),
                color=f"C{i}",
                label=text,
            )
    ax_time.set_xlabel("pixels per image (resolution²)")
    ax_time.set_ylabel(f"seconds per call (median, batch {settings['batch_size']})")
    env = document["environment"]
    threads = settings.get("threads")
    where = (
        f"{env['device']}, {threads} thread(s)" if env["device_type"] == "cpu" else env["device"]
    )
    ax_time.set_title(f"Measured: {where}, {settings['precision']}", fontsize=10)
    ax_time.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def default_resolutions(device, max_res: int | None, quick: bool) -> list[int]:
    if quick:
        return [32, 64]
    if device.type == "cuda":
        top = max_res or 2048
        return [r for r in (64, 128, 256, 512, 1024, 2048, 4096) if r <= top]
    top = max_res or 256
    return [r for r in (64, 128, 256, 512, 1024) if r <= top]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, repeats="CPU 5, CUDA 10", warmup="CPU 1, CUDA 3")
    parser.add_argument("--resolutions", type=int, nargs="+", help="square sizes to measure")
    parser.add_argument("--max-res", type=int, help="largest size (CPU 256, CUDA 2048)")
    parser.add_argument(
        "--dit-max-res", type=int, help="largest size for DiT (CPU 128; CUDA: until OOM/time)"
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--size", choices=SIZES, help="b4: the paper's models (default); toy")
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="CUDA bf16, CPU fp32")
    parser.add_argument("--backend", default="auto", help="neighborhood attention backend")
    parser.add_argument(
        "--fvcore",
        choices=("auto", "meta", "never"),
        help="GFLOP count (default auto; quick never)",
    )
    parser.add_argument(
        "--fit-range", type=int, nargs=2, metavar=("LO", "HI"), help="CUDA 256 1024; CPU all"
    )
    parser.add_argument(
        "--max-seconds", type=float, help="skip a size predicted to take longer (CPU 900, CUDA 120)"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--replot", metavar="JSON", help="only redraw the PNG of a result JSON")
    args = parser.parse_args(argv)
    if args.replot:
        return args, None
    device = common.resolve_device(args.device)
    cuda = device.type == "cuda"
    args.size = args.size or ("toy" if args.quick else "b4")
    args.threads = args.threads or (1 if args.quick else None)
    args.fvcore = args.fvcore or ("never" if args.quick else "auto")
    args.repeats = args.repeats or (1 if args.quick else 10 if cuda else 5)
    args.warmup = (
        args.warmup if args.warmup is not None else (0 if args.quick else 3 if cuda else 1)
    )
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    args.max_seconds = args.max_seconds or (120.0 if cuda else 900.0)
    args.resolutions = sorted(
        args.resolutions or default_resolutions(device, args.max_res, args.quick)
    )
    if args.max_res:
        args.resolutions = [r for r in args.resolutions if r <= args.max_res]
    if args.dit_max_res is None and not cuda and not args.quick:
        args.dit_max_res = 128
    if args.fit_range is None:
        args.fit_range = (256, 1024) if cuda and not args.quick else (0, 10**9)
    if not args.resolutions:
        parser.error("no resolution left to measure")
    return args, device


def run(args, device) -> tuple[dict, list, dict]:
    """Measure every model at every size; ``(settings, results, summary)`` of the result JSON."""
    rows = []
    for label in args.models:
        resolutions = args.resolutions
        if MODELS[label] == "R1" and args.dit_max_res:
            resolutions = [r for r in resolutions if r <= args.dit_max_res]
        shown = label if args.size == "b4" else f"{label} toy-scaled"
        rows += benchmark_model(shown, MODELS[label], resolutions, args, device)
    measured = [r["resolution"] for r in rows if "median_s" in r.get("forward", {})] or [0]
    fit_range = (max(args.fit_range[0], min(measured)), min(args.fit_range[1], max(measured)))
    settings = {
        "models": {label: MODELS[label] for label in args.models},
        "size": args.size,
        "resolutions": args.resolutions,
        "dit_max_res": args.dit_max_res,
        "batch_size": args.batch_size,
        "modes": args.modes,
        "precision": args.precision,
        "backend": args.backend,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "max_seconds": args.max_seconds,
        "fit_range": list(fit_range),
        "k_diffusion_source": common.k_diffusion_source(),
        "quick": args.quick,
        "threads": torch.get_num_threads(),
    }
    fitted = fits(rows, fit_range, args.modes)
    summary = {
        "k": {
            label: {
                **{mode: fit.get("k_time") for mode, fit in entry.items()},
                "gflops": next(iter(entry.values())).get("k_gflops"),
            }
            for label, entry in fitted.items()
        },
        "fit_range": list(fit_range),
        "fits": fitted,
        "targets": "GPU, 256²–1024²: k_time ≤ 1.15 for HDiT-B/4 (forward); ≈ 2 for DiT-B/4",
    }
    return settings, rows, summary


def main(argv=None) -> int:
    args, device = parse_args(argv)
    if args.replot:
        source = Path(args.replot)
        print(f"wrote {plot(json.loads(source.read_text()), source.with_suffix('.png'))}")
        return 0

    def draw(document, path):
        if not args.no_plot:
            print(f"wrote {plot(document, path.with_suffix('.png'))}")

    return common.run_script(
        "scaling",
        lambda _: (args, device),
        run,
        argv,
        show=lambda d: d["summary"]["k"],
        after_write=draw,
    )


if __name__ == "__main__":
    sys.exit(main())
